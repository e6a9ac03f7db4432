"""Patches/s read and decoded: through the SARSense builder's Parquet export vs the source GeoTIFFs.

Both paths end with the same thing, a float32 ``[C, H, W]`` array plus a bool ``[H, W]`` validity mask
per patch, and are measured in the same run on the same synthetic patches (written first, then read
once to warm the page cache):

- ``geotiff``: :func:`di3cl_hf.data.sario.read_sar` on every file (rasterio, deflate-compressed tiles).
- ``parquet``: ``load_dataset("parquet", ...)`` of :func:`di3cl_hf.data.export_parquet`'s shards,
  iterated through :func:`di3cl_hf.data.with_decoding` (map-style, memory-mapped Arrow cache).
- ``parquet-stream``: the same shards with ``streaming=True`` (read straight from Parquet).

Usage::

    python benchmarks/data.py --num-patches 256 --size 256
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import datasets
import numpy as np

from di3cl_hf.data.parquet import export_parquet, with_decoding
from di3cl_hf.data.sario import list_sar_files, read_sar
from di3cl_hf.data.sarsense import load_sarsense
from di3cl_hf.data.synthetic import generate_sarsense


def _consume(samples: Iterable[tuple[np.ndarray, np.ndarray]]) -> tuple[int, float]:
    count, checksum = 0, 0.0
    for image, valid in samples:
        assert image.dtype == np.float32 and valid.dtype == bool
        checksum += float(image[0, 0, 0])
        count += 1
    return count, checksum


def _best_rate(
    run: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]], repeats: int
) -> tuple[float, int, float]:
    best, count, checksum = float("inf"), 0, 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        count, checksum = _consume(run())
        best = min(best, time.perf_counter() - start)
    return count / best, count, checksum


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-patches", type=int, default=256)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--polarisations", type=int, default=2, choices=(1, 2))
    parser.add_argument("--repeats", type=int, default=3, help="best of this many passes")
    parser.add_argument("--workdir", default=None, help="keep files here (default: a temporary folder)")
    args = parser.parse_args(argv)
    datasets.disable_progress_bars()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        start = time.perf_counter()
        generate_sarsense(work / "sar", args.num_patches, args.size, args.polarisations, seed=0)
        generated = time.perf_counter() - start
        raw = load_sarsense(work / "sar", cache_dir=work / "cache", decode=False)
        export_parquet(raw, work / "parquet")
        shards = sorted(str(p) for p in (work / "parquet" / "data").glob("train-*.parquet"))
        files = list_sar_files(work / "sar")

        def geotiff() -> Iterable[tuple[np.ndarray, np.ndarray]]:
            for path in files:
                raster = read_sar(path)
                yield raster.array.astype(np.float32, copy=False), raster.valid_mask

        parquet_ds = with_decoding(
            datasets.load_dataset("parquet", data_files=shards, split="train", cache_dir=str(work / "cache2"))
        )

        def parquet() -> Iterable[tuple[np.ndarray, np.ndarray]]:
            for row in parquet_ds:
                yield row["image"], row["valid_mask"]

        def parquet_stream() -> Iterable[tuple[np.ndarray, np.ndarray]]:
            stream = with_decoding(
                datasets.load_dataset("parquet", data_files=shards, split="train", streaming=True)
            )
            for row in stream:
                yield row["image"], row["valid_mask"]

        results = {}
        for name, run in (("geotiff", geotiff), ("parquet", parquet), ("parquet-stream", parquet_stream)):
            _consume(run())  # warm the page cache and the Arrow cache
            results[name] = _best_rate(run, args.repeats)
        counts = {name: r[1] for name, r in results.items()}
        sums = {name: r[2] for name, r in results.items()}
        assert len(set(counts.values())) == 1, f"different sample counts: {counts}"
        assert len({round(v, 3) for v in sums.values()}) == 1, f"different pixels read: {sums}"

        tif_bytes = sum(p.stat().st_size for p in files)
        parquet_bytes = sum(Path(p).stat().st_size for p in shards)
        print(
            f"synthetic patches: {args.num_patches} x {args.polarisations}x{args.size}x{args.size} float32 "
            f"(generated + written in {generated:.1f} s)"
        )
        print(
            f"on disk: GeoTIFF {tif_bytes / 2**20:.1f} MiB, Parquet {parquet_bytes / 2**20:.1f} MiB ({len(shards)} shard(s))"
        )
        reference = results["geotiff"][0]
        for name, (rate, _, _) in results.items():
            print(f"{name:>15}: {rate:8.1f} patches/s  ({rate / reference:.2f}x GeoTIFF)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
