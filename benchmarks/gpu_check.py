"""The GPU check: CUDA tests, then throughput, written to ``results/gpu/<device name>.json`` (<= 8 min).

1. ``pytest -m gpu tests/test_gpu.py`` (pre-training step with bf16 autocast + channels_last, CUDA losses
   equal CPU losses in fp32, the shuffle-BN branch, ``predict_scene`` on CUDA equals CPU), in a subprocess.
2. Pre-training throughput (img/s) of ``DI3CLForPreTraining`` with ResNet-50 at 224 and 448 px: the precision
   ``di3cl_hf.runtime.resolve_precision("auto", device)`` picks (bf16 on cards that have it), channels_last,
   10 box pairs per image, SGD; the batch is the largest that fits, probed downward from ``--start-batch`` by
   halving on out-of-memory. The views and boxes are made on the GPU once (the loader's work is measured by
   ``benchmarks/feed_rate.py``), so this is the GPU's rate.
3. Scene inference (Mpx/s): ``predict_scene`` on an 8k x 8k dual-pol synthetic scene (ResNet-50 + UperNet,
   512 px tiles, overlap 64), reading and writing GeoTIFFs as in use.
4. Fine-tuning step time: ``DI3CLForSemanticSegmentation`` forward/backward + AdamW, ResNet-50, 512 px,
   batch 8, the default UperNet width (512).

Without CUDA it says so and exits 0 (``--require-gpu``: exit 2). ``--device cpu`` with tiny settings runs the
whole thing on a CPU (how ``tests/test_gpu_check.py`` checks it). Exit 1 when a test or a phase failed (the
JSON is written anyway, with the error).

    python benchmarks/gpu_check.py                       # on a GPU machine
    python benchmarks/gpu_check.py --skip-tests --sizes 224   # throughput only, one size
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from di3cl_hf.atomic import write_json
from di3cl_hf.configuration_di3cl import DI3CLConfig
from di3cl_hf.modeling_di3cl import DI3CLForPreTraining, DI3CLForSemanticSegmentation
from di3cl_hf.runtime import autocast_dtype, cpu_model, native_bf16, resolve_precision

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from scene import generate_scene  # noqa: E402  (the sibling scene benchmark's fast scene writer)

DEFAULT_START_BATCH = {224: 1024, 448: 256}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--require-gpu", action="store_true", help="exit 2 (not 0) when CUDA is unavailable")
    parser.add_argument(
        "--device", default="cuda", help="cuda (default) or cpu (a smoke run with tiny settings)"
    )
    parser.add_argument("--output-dir", type=Path, default=REPO / "results" / "gpu")
    parser.add_argument("--skip-tests", action="store_true", help="throughput only")
    parser.add_argument("--precision", default="auto", help="auto (default), bf16, fp16 or fp32")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 448], help="pre-training view sizes")
    parser.add_argument(
        "--start-batch",
        type=int,
        default=None,
        help="first batch tried (default 1024 at 224 px, 256 at 448 px)",
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per measurement")
    parser.add_argument("--iterations", type=int, default=10, help="timed steps per measurement")
    parser.add_argument(
        "--scene-size", type=int, default=8192, help="scene side in pixels (0: skip the phase)"
    )
    parser.add_argument("--scene-batch", type=int, default=16, help="tiles per forward in predict_scene")
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64, help="tile overlap in predict_scene")
    parser.add_argument("--finetune-size", type=int, default=512, help="fine-tuning crop (0: skip the phase)")
    parser.add_argument("--finetune-batch", type=int, default=8)
    parser.add_argument("--decoder-width", type=int, default=512, help="UperNet width (the paper's 512)")
    parser.add_argument(
        "--budget-s", type=float, default=450.0, help="phases starting after this are skipped"
    )
    args = parser.parse_args(argv)
    if args.device not in ("cuda", "cpu"):
        parser.error(f"--device must be cuda or cpu, got {args.device!r}")
    if args.warmup < 0 or args.iterations < 1:
        parser.error("--warmup must be >= 0 and --iterations >= 1")
    return args


# ------------------------------------------------------------------------------------------------------------
# Device-independent pieces (unit-tested on the CPU)
# ------------------------------------------------------------------------------------------------------------


def device_slug(name: str) -> str:
    """A file name for a device name: ``"NVIDIA H200"`` -> ``"NVIDIA-H200"``."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return slug or "unknown-device"


def is_oom(error: BaseException) -> bool:
    """Whether ``error`` is an out-of-memory error (CUDA's, or a RuntimeError saying so)."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def release_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def probe_batch(
    attempt: Callable[[int], Any], start: int, minimum: int = 1, on_oom: Callable[[], None] | None = None
) -> tuple[int, Any, list[int]]:
    """``attempt(batch)`` from ``start`` downward, halving on out-of-memory: (batch, its result, the sizes
    that did not fit). Other errors propagate; out-of-memory even at ``minimum`` raises ``RuntimeError``."""
    if start < minimum or minimum < 1:
        raise ValueError(f"need 1 <= minimum <= start, got minimum={minimum}, start={start}")
    batch, failed = start, []
    while True:
        try:
            return batch, attempt(batch), failed
        except Exception as error:
            if not is_oom(error):
                raise
        failed.append(batch)
        if on_oom is not None:
            on_oom()
        if batch == minimum:
            raise RuntimeError(f"out of memory at every batch size from {start} down to {minimum}")
        batch = max(minimum, batch // 2)


def time_steps(
    step: Callable[[], Any], warmup: int, iterations: int, synchronize: Callable[[], None]
) -> list[float]:
    """Seconds of each of ``iterations`` calls of ``step`` after ``warmup`` untimed ones (synchronised)."""
    for _ in range(warmup):
        step()
    synchronize()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        step()
        synchronize()
        times.append(time.perf_counter() - start)
    return times


def synchronizer(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def random_boxes(batch: int, image_size: int, per_image: int, generator: torch.Generator) -> torch.Tensor:
    """``batch * per_image`` boxes ``(index, x1, y1, x2, y2)`` of side 1/8..1/2 of the view, inside it."""
    sides = (torch.rand(batch * per_image, 2, generator=generator) * 0.375 + 0.125) * image_size
    corners = torch.rand(batch * per_image, 2, generator=generator) * (image_size - sides)
    index = torch.arange(batch).repeat_interleave(per_image).float().unsqueeze(1)
    return torch.cat([index, corners, corners + sides], dim=1)


def pretraining_config(backbone: str, image_size: int, num_channels: int = 2) -> DI3CLConfig:
    """The paper's pre-training setting at ``image_size`` (queue 65536, 10 boxes per image)."""
    return DI3CLConfig(backbone=backbone, num_channels=num_channels, image_size=image_size)


def pretraining_throughput(
    model: torch.nn.Module,
    image_size: int,
    *,
    device: torch.device,
    precision: str,
    start_batch: int,
    warmup: int,
    iterations: int,
    channels_last: bool = True,
    boxes_per_image: int = 10,
) -> dict[str, Any]:
    """Pre-training img/s of ``model`` (on ``device``) at the largest batch from ``start_batch`` down."""
    dtype = autocast_dtype(precision)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.03, momentum=0.9)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    num_channels = model.config.num_channels
    generator = torch.Generator().manual_seed(0)
    model.train()

    def attempt(batch_size: int) -> list[float]:
        views = torch.randn(2, batch_size, num_channels, image_size, image_size, generator=generator)
        views = views.to(device).contiguous(memory_format=torch.contiguous_format)
        inputs = {
            "pixel_values": views[0].contiguous(memory_format=memory_format),
            "key_pixel_values": views[1].contiguous(memory_format=memory_format),
            "query_boxes": random_boxes(batch_size, image_size, boxes_per_image, generator).to(device),
            "key_boxes": random_boxes(batch_size, image_size, boxes_per_image, generator).to(device),
        }
        del views

        def step() -> None:
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = model(**inputs).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        try:
            return time_steps(step, warmup, iterations, synchronizer(device))
        except Exception:
            optimizer.zero_grad(set_to_none=True)
            raise

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    batch_size, times, failed = probe_batch(attempt, start_batch, on_oom=lambda: release_memory(device))
    step_s = statistics.median(times)
    result = {
        "backbone": model.config.backbone,
        "image_size": image_size,
        "batch_size": batch_size,
        "out_of_memory_at": failed,
        "step_s": round(step_s, 5),
        "img_per_s": round(batch_size / step_s, 1),
        "precision": precision,
        "channels_last": channels_last,
        "boxes_per_image": boxes_per_image,
        "queue_size": model.config.queue_size,
    }
    if device.type == "cuda":
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return result


def segmentation_model(
    backbone: str, decoder_width: int, num_labels: int = 5
) -> DI3CLForSemanticSegmentation:
    torch.manual_seed(0)
    config = DI3CLConfig(
        backbone=backbone, num_channels=2, num_labels=num_labels, decoder_hidden_size=decoder_width
    )
    return DI3CLForSemanticSegmentation(config)


def finetuning_step_time(
    model: DI3CLForSemanticSegmentation,
    *,
    device: torch.device,
    precision: str,
    crop: int,
    batch_size: int,
    warmup: int,
    iterations: int,
    channels_last: bool = True,
) -> dict[str, Any]:
    """Median seconds of a fine-tuning step (forward with labels, backward, AdamW) of ``model``."""
    dtype = autocast_dtype(precision)
    model.train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(batch_size, model.config.num_channels, crop, crop, generator=generator).to(
        device
    )
    if channels_last:
        pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, model.config.num_labels, (batch_size, crop, crop), generator=generator).to(
        device
    )

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model(pixel_values=pixel_values, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step_s = statistics.median(time_steps(step, warmup, iterations, synchronizer(device)))
    return {
        "backbone": model.config.backbone,
        "crop": crop,
        "batch_size": batch_size,
        "decoder_width": model.config.decoder_hidden_size,
        "auxiliary_head": model.config.use_auxiliary_head,
        "step_s": round(step_s, 5),
        "img_per_s": round(batch_size / step_s, 1),
        "precision": precision,
        "channels_last": channels_last,
    }


def scene_throughput(
    model: torch.nn.Module,
    size: int,
    work_dir: Path,
    *,
    device: torch.device,
    precision: str,
    tile_size: int,
    batch_size: int,
    overlap: int = 64,
) -> dict[str, Any]:
    """Mpx/s of ``predict_scene`` on a ``size`` x ``size`` dual-pol synthetic scene (class map written)."""
    from di3cl_hf.image_processing_di3cl import DI3CLImageProcessor
    from di3cl_hf.inference.scene import predict_scene

    scene = generate_scene(work_dir / "scene.tif", size)
    result = predict_scene(
        model,
        scene,
        work_dir / "classes.tif",
        DI3CLImageProcessor(num_channels=2),
        tile_size=tile_size,
        overlap=overlap,
        batch_size=batch_size,
        precision=precision,
        device=device,
        progress=False,
    )
    return {
        "size": size,
        "tiles": result.num_tiles,
        "tile_size": tile_size,
        "overlap": overlap,
        "batch_size": batch_size,
        "seconds": round(result.seconds, 3),
        "mpx_per_s": round(size * size / 1e6 / result.seconds, 2),
        "backbone": model.config.backbone,
        "decoder_width": model.config.decoder_hidden_size,
        "precision": precision,
    }


def run_gpu_tests(timeout_s: float = 300.0) -> dict[str, Any]:
    """``pytest -m gpu tests`` in a subprocess: return code, summary line and the time taken."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        "gpu",
        "tests",  # every gpu-marked test (tests/test_gpu.py, the pinned-memory test in test_inference.py, ...)
        "-q",
        "-rs",
        "-p",
        "no:cacheprovider",
    ]
    start = time.perf_counter()
    try:
        completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"returncode": None, "summary": f"timed out after {timeout_s:.0f} s", "seconds": timeout_s}
    print(completed.stdout[-6000:] + completed.stderr[-2000:], flush=True)
    lines = [line for line in completed.stdout.splitlines() if line.strip()]
    return {
        "returncode": completed.returncode,
        "summary": lines[-1].strip("= ") if lines else "",
        "seconds": round(time.perf_counter() - start, 1),
        "command": " ".join(command[1:]),
    }


def environment(device: torch.device, precision: str) -> dict[str, Any]:
    """Versions, the device and the precision (with ``di3cl_hf.runtime``'s reason)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU {cpu_model()}"
    _, reason = native_bf16(device)
    info = {
        "device": name,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "precision": precision,
        "precision_reason": reason,
        "host_cpu": cpu_model(),
        "host_cpu_cores": os.cpu_count(),
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info["memory_gib"] = round(properties.total_memory / 2**30, 1)
        info["capability"] = f"{properties.major}.{properties.minor}"
    return info


def markdown_table(report: dict[str, Any]) -> str:
    """The README table row (with its header) of one report."""

    def cell(entry: Any, key: str, unit: str = "") -> str:
        if not isinstance(entry, dict) or key not in entry:
            return "—"
        extra = f" (batch {entry['batch_size']})" if key == "img_per_s" and "batch_size" in entry else ""
        return f"{entry[key]}{unit}{extra}"

    pretraining = {
        entry.get("image_size"): entry for entry in report.get("pretraining", []) if isinstance(entry, dict)
    }
    tests = report.get("tests", {})
    columns = [
        report["device"],
        report["precision"],
        tests.get("summary", "not run") if isinstance(tests, dict) else "not run",
        *(cell(pretraining.get(size), "img_per_s") for size in report.get("sizes", [])),
        cell(report.get("scene"), "mpx_per_s"),
        cell(report.get("finetuning"), "step_s", " s"),
    ]
    header = ["device", "precision", "gpu tests"] + [
        f"pre-training {s} px img/s" for s in report.get("sizes", [])
    ]
    header += ["scene Mpx/s", "fine-tuning step"]
    return "\n".join(
        ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), "| " + " | ".join(columns) + " |"]
    )


def failures(report: dict[str, Any]) -> list[str]:
    """The parts of ``report`` that failed: GPU tests not passing (or timed out), phases with an error."""
    failed = []
    tests = report.get("tests")
    if isinstance(tests, dict) and ("error" in tests or tests.get("returncode", 0) != 0):
        failed.append(f"tests ({tests.get('summary') or tests.get('error')})")
    phases = [
        (f"pre-training {entry.get('image_size', '?')} px", entry) for entry in report.get("pretraining", [])
    ]
    phases += [(key, report.get(key)) for key in ("scene", "finetuning")]
    failed += [name for name, entry in phases if isinstance(entry, dict) and "error" in entry]
    return failed


def write_report(report: dict[str, Any], output_dir: Path) -> Path:
    """``output_dir/<device slug>.json``, written atomically (temporary file, then rename)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    return write_json(output_dir / f"{device_slug(report['device'])}.json", report, indent=2)


# ------------------------------------------------------------------------------------------------------------
# The command
# ------------------------------------------------------------------------------------------------------------


def _phase(report: dict, key: str, started: float, budget_s: float, run: Callable[[], Any]) -> Any:
    """Run one phase; its result, or ``{"error"|"skipped": ...}`` (recorded, the next phases still run)."""
    if time.perf_counter() - started > budget_s:
        outcome = {"skipped": f"time budget of {budget_s:.0f} s spent"}
    else:
        try:
            outcome = run()
        except Exception as error:  # a phase that fails must not lose the others' numbers
            outcome = {"error": f"{type(error).__name__}: {error}"}
    print(f"{key}: {outcome}", flush=True)
    return outcome


def run_phases(
    report: dict, args: argparse.Namespace, device: torch.device, precision: str, started: float
) -> None:
    """The GPU tests, pre-training at each size, the scene and the fine-tuning step, each recorded in ``report``
    (a failing or skipped phase is recorded too, and the next ones still run)."""
    if not args.skip_tests:
        report["tests"] = _phase(report, "tests", started, args.budget_s, run_gpu_tests)
    report["pretraining"] = []
    for size in args.sizes:
        start_batch = args.start_batch or DEFAULT_START_BATCH.get(size, 64)

        def pretrain(size: int = size, start_batch: int = start_batch) -> dict:
            model = DI3CLForPreTraining(pretraining_config(args.backbone, size)).to(device)
            model = model.to(memory_format=torch.channels_last)
            try:
                return pretraining_throughput(
                    model,
                    size,
                    device=device,
                    precision=precision,
                    start_batch=start_batch,
                    warmup=args.warmup,
                    iterations=args.iterations,
                )
            finally:
                del model
                release_memory(device)

        report["pretraining"].append(
            _phase(report, f"pre-training {size} px", started, args.budget_s, pretrain)
        )
    if args.scene_size:

        def scene() -> dict:
            with tempfile.TemporaryDirectory(prefix="gpu-check-scene-") as work_dir:
                model = segmentation_model(args.backbone, args.decoder_width)
                return scene_throughput(
                    model,
                    args.scene_size,
                    Path(work_dir),
                    device=device,
                    precision=precision,
                    tile_size=args.tile_size,
                    batch_size=args.scene_batch,
                    overlap=args.overlap,
                )

        report["scene"] = _phase(report, "scene", started, args.budget_s, scene)
        release_memory(device)
    if args.finetune_size:

        def finetune() -> dict:
            model = segmentation_model(args.backbone, args.decoder_width).to(device)
            return finetuning_step_time(
                model,
                device=device,
                precision=precision,
                crop=args.finetune_size,
                batch_size=args.finetune_batch,
                warmup=args.warmup,
                iterations=args.iterations,
            )

        report["finetuning"] = _phase(report, "fine-tuning", started, args.budget_s, finetune)


def main(
    argv: Sequence[str] | None = None, cuda_available: Callable[[], bool] = torch.cuda.is_available
) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not cuda_available():
        message = "gpu_check: CUDA is not available on this machine"
        if args.require_gpu:
            print(f"{message} (--require-gpu): failing", file=sys.stderr)
            return 2
        print(f"{message}: skipped (nothing measured, nothing written)")
        return 0
    started = time.perf_counter()
    device = torch.device(args.device)
    precision = resolve_precision(args.precision, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    report = environment(device, precision)
    report.update(
        command=" ".join(
            ["python", "benchmarks/gpu_check.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        sizes=list(args.sizes),
    )
    print(
        f"gpu_check on {report['device']}: precision {precision} ({report['precision_reason']})", flush=True
    )

    run_phases(report, args, device, precision, started)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    path = write_report(report, args.output_dir)
    print(markdown_table(report))
    print(f"wrote {path} ({report['wall_s']} s)")
    failed = failures(report)
    if failed:
        print(f"gpu_check: failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
