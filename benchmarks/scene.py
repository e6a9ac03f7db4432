"""Scene inference benchmark: megapixels/s and peak memory of ``di3cl_hf.inference.scene.predict_scene``.

For each scene size (default 4096x4096 and 16384x16384) a synthetic dual-pol scene (float32 dB,
land-cover-like blocks with speckle-like noise) is generated on the fly, window by window, into an
uncompressed tiled GeoTIFF. Then a fresh Python process per size:

1. runs ``predict_scene`` (tiles of 512 px, overlap 64, batch 4, the resolver's precision,
   class map written as a COG) and records its wall time and peak resident memory
   (``resource.getrusage(RUSAGE_SELF).ru_maxrss``; tracemalloc does not see torch's allocations);
2. the reference, in its own fresh process just before and again just after (the load of a shared
   machine drifts; the two are averaged): the same tiles as one plain in-memory batch loop (tiles
   read and preprocessed into memory beforehand, then model + softmax, nothing else; timed from
   a cold model like ``predict_scene``). For the big scene the reference runs on
   the first ``--reference-tiles`` tiles and is scaled per tile (holding all 1,369 tiles of a 16k
   scene in memory would take ~2.9 GB and as long again as the scene itself).

3. the bare-network ceiling (``benchmarks/bare_network.py``), in its own fresh process before the first
   reference and again after the second (averaged; the machine's speed drifts by ~10 % over minutes): the
   model's forward alone over the same in-memory tiles (warm model, no softmax), in the fastest mode the
   machine runs natively (fp32 contiguous / fp32 channels_last / bf16 autocast + channels_last where bf16 is
   native; the fastest mode of the two runs' means).

Targets (ISSUE 7, issue 13): peak memory flat (largest scene within 1.25x of the smallest), throughput within
1.2x of the in-memory loop, and ``predict_scene`` >= 0.9x the bare-network ceiling.
Precision: ``--precision`` (default ``auto``: the runtime resolver, bf16 only where native) for
``predict_scene`` and the reference; ``--simulate-no-native-bf16`` makes torch report a CPU without
AVX512_BF16/AMX (auto -> fp32, no bf16 ceiling), as on the Intel Xeon of issue 13. Model: DI3CL resnet18 + UperNet (decoder width 64), 10 classes, random
weights (speed and memory do not depend on the weights).

The children run with ``OMP_WAIT_POLICY=PASSIVE`` (unless set): on a shared CPU, spinning OpenMP
threads that get descheduled made convolutions 3-4x slower and the timings meaningless.

Run: ``python benchmarks/scene.py`` (a few minutes on a quiet 2-core CPU; ``--sizes 1024 2048`` for
a quick look).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLASS_DB = np.array(
    [-20.0, -14.0, -10.0, -7.5, -3.0], dtype=np.float32
)  # water, farmland, meadow, forest, urban
CELL = 64
STRIP = 512


def generate_scene(path: Path, size: int, seed: int = 0) -> Path:
    """Write a ``size`` x ``size`` dual-pol float32 dB scene strip by strip (never whole in memory)."""
    from affine import Affine

    from di3cl_hf.data.sario import create_geotiff

    rng = np.random.default_rng(seed)
    cells = rng.integers(0, len(CLASS_DB), size=(size // CELL + 1, size // CELL + 1))
    transform = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)
    with create_geotiff(path, size, size, 2, "float32", "EPSG:32631", transform, None, compress=None) as out:
        for row0 in range(0, size, STRIP):
            rows = min(STRIP, size - row0)
            classes = cells[
                (np.arange(row0, row0 + rows) // CELL)[:, None], (np.arange(size) // CELL)[None, :]
            ]
            vv = CLASS_DB[classes] + 2.5 * rng.standard_normal((rows, size), dtype=np.float32)
            vh = vv - 7.0 + 1.5 * rng.standard_normal((rows, size), dtype=np.float32)
            out.write(np.stack([vv, vh]), (row0, 0, rows, size))
    return path


def _model(num_labels: int, decoder_width: int):
    import torch

    from di3cl_hf import DI3CLConfig, DI3CLForSemanticSegmentation

    torch.manual_seed(0)
    config = DI3CLConfig(
        backbone="resnet18",
        num_channels=2,
        num_labels=num_labels,
        decoder_hidden_size=decoder_width,
        auxiliary_channels=16,
        use_auxiliary_head=False,
    )
    return DI3CLForSemanticSegmentation(config).eval()


def child_predict(args: argparse.Namespace) -> dict:
    """One scene in a fresh process: ``predict_scene`` and the process's peak resident memory."""
    from di3cl_hf.image_processing_di3cl import DI3CLImageProcessor
    from di3cl_hf.inference.scene import predict_scene

    model = _model(args.num_labels, args.decoder_width)
    rss_model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = predict_scene(
        model, args.scene, args.output, DI3CLImageProcessor(num_channels=2), tile_size=args.tile_size,
        overlap=args.overlap, batch_size=args.batch_size, progress=False, overwrite=True, precision=args.precision,
    )  # fmt: skip
    return {
        "size": result.height,
        "tiles": result.num_tiles,
        "seconds": result.seconds,
        "seconds_per_tile": result.seconds / result.num_tiles,
        "mpx_per_s": result.height * result.width / 1e6 / result.seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # kB on Linux
        "rss_after_model_mb": rss_model / 1024,
        "autocast": result.autocast_dtype,
    }


def _memory_tiles(args: argparse.Namespace):
    """The scene's first ``--reference-tiles`` tiles, read and preprocessed into one in-memory tensor."""
    import torch

    from di3cl_hf.data.sario import open_scene
    from di3cl_hf.image_processing_di3cl import DI3CLImageProcessor
    from di3cl_hf.inference.scene import ScenePreprocessor, tile_starts

    with open_scene(args.scene) as scene:
        preprocess = ScenePreprocessor(DI3CLImageProcessor(num_channels=2), scene)
        rows = tile_starts(scene.height, args.tile_size, args.overlap)
        cols = tile_starts(scene.width, args.tile_size, args.overlap)
        positions = [(y, x) for y in rows for x in cols][: args.reference_tiles]
        tiles = []
        for y, x in positions:
            raster = scene.read((y, x, args.tile_size, args.tile_size))
            tiles.append(preprocess(raster.array, raster.valid_mask)[0])
    return torch.from_numpy(np.stack(tiles))


def child_reference(args: argparse.Namespace) -> dict:
    """The reference in a fresh process: the scene's first tiles, read and preprocessed into memory
    first, then one plain batch loop (model + softmax, nothing else), timed from a cold model."""
    import torch

    from di3cl_hf.inference.scene import _logits_of
    from di3cl_hf.runtime import autocast_dtype as precision_dtype
    from di3cl_hf.runtime import resolve_precision

    model = _model(args.num_labels, args.decoder_width).to(memory_format=torch.channels_last)
    autocast_dtype = precision_dtype(resolve_precision(args.precision, torch.device("cpu")))
    tiles = _memory_tiles(args)
    autocast = dict(
        device_type="cpu", dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None
    )
    with torch.inference_mode(), torch.autocast(**autocast):
        # timed from a cold model, like predict_scene (whose time includes its first batches)
        start = time.perf_counter()
        for index in range(0, len(tiles), args.batch_size):
            batch = tiles[index : index + args.batch_size].contiguous(memory_format=torch.channels_last)
            torch.softmax(_logits_of(model(batch)).float(), dim=1).numpy()
    return {"tiles": len(tiles), "seconds_per_tile": (time.perf_counter() - start) / len(tiles)}


def child_ceiling(args: argparse.Namespace) -> dict:
    """The bare-network ceiling in a fresh process: the model's forward alone over the same in-memory tiles,
    in each mode the machine runs natively (see benchmarks/bare_network.py); the fastest is the ceiling."""
    from bare_network import inference_ceiling  # torch-heavy sibling: imported in the child only

    model = _model(args.num_labels, args.decoder_width)
    modes = inference_ceiling(model, _memory_tiles(args), args.batch_size, log=lambda line: None)
    best = min(modes, key=modes.get)
    return {"seconds_per_tile": modes[best], "mode": best, "modes": modes}


def _run_child(kind: str, scene: Path, output: Path, args: argparse.Namespace) -> dict:
    command = [
        sys.executable, __file__, "--child", kind, "--scene", str(scene), "--output", str(output),
        "--tile-size", str(args.tile_size), "--overlap", str(args.overlap), "--batch-size", str(args.batch_size),
        "--num-labels", str(args.num_labels), "--decoder-width", str(args.decoder_width),
        "--reference-tiles", str(args.reference_tiles), "--precision", args.precision,
    ] + (["--simulate-no-native-bf16"] if args.simulate_no_native_bf16 else [])  # fmt: skip
    # Passive OpenMP waiting: on a shared CPU, spinning worker threads that get descheduled slow
    # convolutions down 3-4x (measured here); every child runs with it.
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child {kind} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def scenes_throughput(args: argparse.Namespace) -> int:
    """``--scenes N``: ``di3cl predict ... --output-dir`` over N scenes of ``--sizes[0]`` px, as 1 process x 2
    threads and as 2 processes x 1 thread (``accelerate launch --multi_gpu --num_processes 2``, gloo on the
    CPU); wall time of the whole command (start-up and model loading included)."""
    from di3cl_hf.image_processing_di3cl import DI3CLImageProcessor

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="di3cl-scenes-bench-"))
    size, model_dir = args.sizes[0], workdir / "model"
    (workdir / "scenes").mkdir(parents=True, exist_ok=True)
    try:
        for index in range(args.scenes):
            generate_scene(workdir / "scenes" / f"scene{index:03d}.tif", size, seed=index)
        _model(args.num_labels, args.decoder_width).save_pretrained(model_dir)
        DI3CLImageProcessor(num_channels=2).save_pretrained(model_dir)
        predict = ["-m", "di3cl_hf.cli", "predict", str(model_dir), str(workdir / "scenes"), "--quiet",
                   "--tile-size", str(args.tile_size), "--overlap", str(args.overlap),
                   "--batch-size", str(args.batch_size), "--precision", args.precision]  # fmt: skip
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                  "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                  "--main_process_port", str(29700 + os.getpid() % 1000)]  # fmt: skip
        runs = {"1 process x 2 threads": ([sys.executable], "2"), "2 processes x 1 thread": (launch, "1")}
        print(f"# {args.scenes} scenes of {size}x{size} px; tiles {args.tile_size}, overlap {args.overlap}, "
              f"batch {args.batch_size}; wall time includes start-up and model loading")  # fmt: skip
        for label, (prefix, threads) in runs.items():
            out = workdir / f"out-{threads}"
            env = {
                **os.environ,
                "OMP_NUM_THREADS": threads,
                "OMP_WAIT_POLICY": "PASSIVE",
                "HF_HUB_OFFLINE": "1",
            }
            start = time.perf_counter()
            done = subprocess.run(
                [*prefix, *predict, "--output-dir", str(out)], env=env, capture_output=True, text=True
            )
            seconds = time.perf_counter() - start
            if done.returncode != 0:
                raise RuntimeError(f"{label} failed:\n{done.stdout[-2000:]}{done.stderr[-4000:]}")
            megapixels = args.scenes * size * size / 1e6
            print(f"{label:>24}: {seconds:7.1f} s  {megapixels / seconds:.3f} Mpx/s  "
                  f"{args.scenes / seconds * 3600:.0f} scenes/h", flush=True)  # fmt: skip
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``--child`` and its file arguments are for the measuring subprocesses)."""
    from di3cl_hf.runtime import PRECISIONS

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384], help="square scene sizes")
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--num-labels", type=int, default=10)
    parser.add_argument("--decoder-width", type=int, default=64, help="UperNet decoder_hidden_size")
    parser.add_argument(
        "--reference-tiles", type=int, default=96, help="tiles in the in-memory reference loop"
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where scenes go (default: a temp dir, removed)"
    )
    parser.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="auto: the runtime resolver (bf16 only where native)",
    )
    parser.add_argument(
        "--simulate-no-native-bf16",
        action="store_true",
        help="torch reports no AVX512_BF16/AMX (the Intel Xeon of issue 13): auto -> fp32, no bf16 ceiling",
    )
    parser.add_argument(
        "--scenes",
        type=int,
        default=0,
        help="N scenes of --sizes[0] px: 1 process x 2 threads vs 2 processes x 1",
    )
    parser.add_argument("--child", choices=("predict", "reference", "ceiling"), help=argparse.SUPPRESS)
    parser.add_argument("--scene", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from bare_network import (
        simulated_no_native_bf16,
    )  # sibling (torch-heavy); the script folder is sys.path[0]

    from di3cl_hf.runtime import cpu_description, native_bf16, resolve_precision

    args = parse_args(argv)
    with simulated_no_native_bf16(args.simulate_no_native_bf16):
        if args.child:
            child = {"predict": child_predict, "reference": child_reference, "ceiling": child_ceiling}[
                args.child
            ]
            print(json.dumps(child(args)))
            return 0
        if args.scenes:
            return scenes_throughput(args)
        precision = resolve_precision(args.precision, "cpu", log=False)
        why = native_bf16("cpu")[1] if args.precision == "auto" else "requested explicitly"
        simulated = (
            "  [SIMULATED: torch told the CPU has no AVX512_BF16/AMX]" if args.simulate_no_native_bf16 else ""
        )
        print(f"# CPU: {cpu_description()}{simulated}")
        print(f"# precision: {precision} ({args.precision}: {why})")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="di3cl-scene-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"# scene benchmark, {os.cpu_count()} CPUs, torch threads default")
    print(f"# model: DI3CL resnet18 + UperNet({args.decoder_width}), {args.num_labels} classes; tiles {args.tile_size} "
          f"px, overlap {args.overlap}, batch {args.batch_size}")  # fmt: skip
    try:
        results = [bench_size(size, workdir, args) for size in args.sizes]
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print_targets(results)
    return 0


def bench_size(size: int, workdir: Path, args: argparse.Namespace) -> dict:
    """One square scene of ``size`` px: ceiling, reference, predict_scene, reference, ceiling (each its own process)."""
    scene = workdir / f"scene-{size}.tif"
    start = time.perf_counter()
    generate_scene(scene, size)
    print(
        f"generated {size}x{size} scene ({scene.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - start:.1f} s",
        flush=True,
    )
    # reference before and after the scene run (each in its own process), averaged: the
    # load on a shared machine drifts over the minutes a big scene takes
    # the ceiling likewise, outermost: ceiling, reference, predict_scene, reference, ceiling
    ceiling_before = _run_child("ceiling", scene, workdir / "unused.tif", args)
    before = _run_child("reference", scene, workdir / "unused.tif", args)
    result = _run_child("predict", scene, workdir / f"classes-{size}.tif", args)
    after = _run_child("reference", scene, workdir / "unused.tif", args)
    ceiling_after = _run_child("ceiling", scene, workdir / "unused.tif", args)
    reference = (before["seconds_per_tile"] + after["seconds_per_tile"]) / 2
    modes = {
        mode: (seconds + ceiling_after["modes"][mode]) / 2
        for mode, seconds in ceiling_before["modes"].items()
    }
    best = min(modes, key=modes.get)
    ceiling = {"mode": best, "modes": modes, "seconds_per_tile": modes[best]}
    result.update(
        reference_tiles=before["tiles"],
        reference_seconds_per_tile=reference,
        reference_spread=(before["seconds_per_tile"], after["seconds_per_tile"]),
        reference_mpx_per_s=size * size / 1e6 / (reference * result["tiles"]),
        ceiling_seconds_per_tile=ceiling["seconds_per_tile"],
        ceiling_mode=ceiling["mode"],
        ceiling_mpx_per_s=size * size / 1e6 / (ceiling["seconds_per_tile"] * result["tiles"]),
    )
    print(
        f"{size:>6}x{size:<6} tiles {result['tiles']:>5}  predict_scene {result['mpx_per_s']:.3f} Mpx/s "
        f"({result['seconds']:.1f} s, {result['seconds_per_tile']:.3f} s/tile)  in-memory loop "
        f"{result['reference_mpx_per_s']:.3f} Mpx/s ({reference:.3f} s/tile over {before['tiles']} tiles; "
        f"before {before['seconds_per_tile']:.3f}, after {after['seconds_per_tile']:.3f})  peak RSS "
        f"{result['peak_rss_mb']:.0f} MiB (model loaded: {result['rss_after_model_mb']:.0f} MiB)  "
        f"{result['autocast']}; ceiling {result['ceiling_mpx_per_s']:.3f} Mpx/s "
        f"({ceiling['seconds_per_tile']:.3f} s/tile, {ceiling['mode']}; "
        + ", ".join(f"{mode} {seconds:.3f}" for mode, seconds in ceiling["modes"].items())
        + ")",
        flush=True,
    )
    scene.unlink()
    return result


def print_targets(results: list[dict]) -> None:
    """Peak memory of the largest vs the smallest scene; throughput vs the in-memory loop and the ceiling."""
    smallest, largest = results[0], results[-1]
    memory_ratio = largest["peak_rss_mb"] / smallest["peak_rss_mb"]
    print(
        f"peak memory {largest['size']} vs {smallest['size']}: {memory_ratio:.2f}x (target <= 1.25x) "
        f"{'OK' if memory_ratio <= 1.25 else 'MISSED'}"
    )
    for result in results:
        slowdown = result["reference_mpx_per_s"] / result["mpx_per_s"]
        print(
            f"throughput {result['size']}: in-memory loop / predict_scene = {slowdown:.2f}x (target <= 1.2x) "
            f"{'OK' if slowdown <= 1.2 else 'MISSED'}"
        )
        vs_ceiling = result["mpx_per_s"] / result["ceiling_mpx_per_s"]
        print(
            f"throughput {result['size']}: predict_scene vs bare-network ceiling ({result['ceiling_mode']}) = "
            f"{vs_ceiling:.2f}x (target >= 0.9x) {'PASS' if vs_ceiling >= 0.9 else 'FAIL'}"
        )


if __name__ == "__main__":
    sys.exit(main())
