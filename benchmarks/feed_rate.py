"""Feeding a GPU: pre-training input pipeline throughput per CPU core, and the loader cores one GPU needs.

Per patch: ``PretrainingTransform`` (dB conversion, clip bounds, two augmented views with their geometry,
normalisation) on a float32 dB patch; per batch: ``PretrainingCollator`` (stacking and the box-pair sampling).
That is what each DataLoader worker does in pre-training, minus reading/decoding the patch (see
``benchmarks/data.py`` for that part). One intra-op thread (``torch.set_num_threads(1)``), timed in process CPU
time, so the rate is per core (a worker process uses one core) even on a busy machine.

Source patches are synthetic (``di3cl_hf.data.synthetic.synthetic_patch``), single-band (VV) and dual-band
(VV, VH), of side ``8/7`` of the view (256 px for 224 px views, 512 px for 448 px views). The number of cores
one GPU needs is ``GPU img/s / patches/s per core``: at the published MoCo v2 rate (about 170 img/s per V100
at 224 px; 448 px scaled by the pixel count, 170 / 4) and at every rate measured by
``benchmarks/gpu_check.py`` in ``results/gpu/*.json``.

    python benchmarks/feed_rate.py                    # 224 and 448 px, 1 and 2 bands, ~8 s each
    python benchmarks/feed_rate.py --seconds 2        # quicker
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from di3cl_hf.configuration_di3cl import DI3CLConfig
from di3cl_hf.data.synthetic import synthetic_patch
from di3cl_hf.image_processing_di3cl import DI3CLImageProcessor
from di3cl_hf.runtime import cpu_capability, cpu_description
from di3cl_hf.training.augmentation import PretrainingTransform, TwoViewTransform
from di3cl_hf.training.boxes import PretrainingCollator

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

MOCO_V2_V100_224 = 170.0
"""Published MoCo v2 pre-training throughput, images/s per V100 at 224 px (ResNet-50, 8 GPUs, 53 h/200 ep)."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 448], help="view sizes")
    parser.add_argument("--bands", type=int, nargs="+", default=[1, 2], help="1 (VV) and/or 2 (VV, VH)")
    parser.add_argument("--seconds", type=float, default=8.0, help="measuring time per setting")
    parser.add_argument("--batch-size", type=int, default=32, help="samples per collated batch")
    parser.add_argument("--patches", type=int, default=8, help="distinct source patches cycled through")
    parser.add_argument("--gpu-results", type=Path, default=REPO / "results" / "gpu")
    args = parser.parse_args(argv)
    if any(band not in (1, 2) for band in args.bands):
        parser.error("--bands takes 1 and/or 2")
    return args


def source_size(view_size: int) -> int:
    """The source patch side for a view size (8/7 of it, a multiple of 32): 224 -> 256, 448 -> 512."""
    return int(math.ceil(view_size * 8 / 7 / 32) * 32)


def measure(view_size: int, bands: int, seconds: float, batch_size: int, patches: int) -> dict[str, Any]:
    """Transform + collation throughput for one setting, on one thread.

    Timed in process CPU time (one thread: the time of the one core it runs on), so that other processes
    on a busy machine do not lower the per-core rate; the wall-clock rate and the CPU share are kept too.
    """
    processor = DI3CLImageProcessor(num_channels=bands, input_kind="db")
    transform = PretrainingTransform(processor, TwoViewTransform(view_size, db_range=processor.db_range))
    config = DI3CLConfig(num_channels=bands, image_size=view_size)
    collator = PretrainingCollator.from_config(config, seed=0)
    size = source_size(view_size)
    sources = [synthetic_patch(size, bands, seed=1, index=i).image for i in range(patches)]
    collator([transform(source) for source in sources[:2]])  # warm-up

    transform_s = collate_s = 0.0
    count = boxes = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds or count == 0:
        start = time.process_time()
        samples = [transform(sources[(count + i) % patches]) for i in range(batch_size)]
        middle = time.process_time()
        batch = collator(samples)
        end = time.process_time()
        transform_s += middle - start
        collate_s += end - middle
        count += batch_size
        boxes += batch["query_boxes"].shape[0]
    wall_s, cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    return {
        "view_size": view_size,
        "source_size": size,
        "bands": bands,
        "patches": count,
        "transform_ms": 1e3 * transform_s / count,
        "collate_ms": 1e3 * collate_s / count,
        "patches_per_s": count / (transform_s + collate_s),
        "patches_per_wall_s": count / wall_s,
        "cpu_share": cpu_s / wall_s,
        "boxes_per_image": boxes / count,
    }


def gpu_rates(results_dir: Path) -> list[tuple[str, int, float]]:
    """(device, image size, img/s) of every pre-training measurement in ``results_dir/*.json``."""
    rates = []
    for path in sorted(results_dir.glob("*.json")) if results_dir.is_dir() else []:
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for entry in report.get("pretraining", []):
            if isinstance(entry, dict) and "img_per_s" in entry:
                rates.append(
                    (report.get("device", path.stem), int(entry["image_size"]), float(entry["img_per_s"]))
                )
    return rates


def published_rate(view_size: int) -> float:
    """MoCo v2's 170 img/s per V100 at 224 px, scaled by the pixel count to other sizes."""
    return MOCO_V2_V100_224 * (224 / view_size) ** 2


def cores_needed(gpu_img_per_s: float, patches_per_s_per_core: float) -> float:
    return gpu_img_per_s / patches_per_s_per_core


def table(rows: list[dict[str, Any]], measured: list[tuple[str, int, float]]) -> str:
    header = "| view px | bands | transform ms/patch | collate ms/patch | patches/s/core "
    header += "| cores for MoCo v2 V100 |"
    extra = sorted({device for device, _, _ in measured})
    header += "".join(f" cores for {device} |" for device in extra)
    lines = [header, "|" + "---|" * (6 + len(extra))]
    for row in rows:
        rate = row["patches_per_s"]
        published = published_rate(row["view_size"])
        cells = [
            str(row["view_size"]),
            str(row["bands"]),
            f"{row['transform_ms']:.2f}",
            f"{row['collate_ms']:.2f}",
            f"{rate:.1f}",
            f"{cores_needed(published, rate):.1f} (at {published:.0f} img/s)",
        ]
        for device in extra:
            matching = [r for d, size, r in measured if d == device and size == row["view_size"]]
            cells.append(
                f"{cores_needed(matching[0], rate):.1f} (at {matching[0]:.0f} img/s)" if matching else "—"
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    print(f"CPU: {cpu_description()}")
    print(f"torch {torch.__version__}, 1 thread; runtime.cpu_capability(): {cpu_capability()}")
    rows = []
    for view_size in args.sizes:
        for bands in args.bands:
            rows.append(measure(view_size, bands, args.seconds, args.batch_size, args.patches))
            row = rows[-1]
            print(
                f"  {view_size} px, {bands} band(s): {row['patches_per_s']:.1f} patches/s per core "
                f"({row['patches']} patches, {row['boxes_per_image']:.1f} box pairs per image; wall clock "
                f"{row['patches_per_wall_s']:.1f}/s at {100 * row['cpu_share']:.0f} % of a core)",
                flush=True,
            )
    print(table(rows, gpu_rates(args.gpu_results)))
    print(
        "Cores = GPU img/s / patches/s per core; reading and decoding the patches comes on top "
        "(benchmarks/data.py). 448 px published rate: 170 img/s scaled by (224/448)^2."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
