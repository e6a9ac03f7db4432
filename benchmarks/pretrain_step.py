"""One DI3CL pre-training step: ours against a naive fp32 reference and against the bare-network ceiling, in one run.

Ours (what ``di3cl_hf.training.pretraining`` runs): ``DI3CLForPreTraining`` prepared by Accelerate with the
precision of ``di3cl_hf.runtime.resolve_precision`` (``auto``: bf16 autocast only where the CPU/GPU runs it
natively, else fp32), channels_last weights/inputs, inside ``di3cl_hf.memory.reuse_large_allocations``; the batch
comes from ``PretrainingCollator``, which in training runs in the DataLoader workers, so its box sampling is not
on the step's critical path.

Reference (naive, written here the way the release does it): the same networks (timm ResNet encoder for query
and key, global / contour / instance projectors, predictor, two queues, EMA, ROI-Align, the three losses and
their weights) in float32 with contiguous memory, and box pairs sampled on the main process in a Python loop
between data loading and the forward pass (part of its step).

Ceiling (``benchmarks/bare_network.py``): the network work the DI3CL step cannot avoid, alone -- the same ResNet
forward + backward on the batch's query views plus a momentum copy's forward on its key views (no heads, queues,
EMA, ROI-Align, boxes or optimiser step), in the fastest of fp32 contiguous / fp32 channels_last / bf16 autocast
+ channels_last (bf16 only where native). "ours / ceiling" = ceiling time / our time: the share of the step that
is the unavoidable network (1.0 = the DI3CL machinery is free).

Targets (issue 13): ours >= 0.9x the ceiling; ours >= 4x the reference where bf16 is native, >= 1.3x where not.

All get the same views (made once, outside the timing). Order: reference; one probe step of the ceiling in each
mode; then the fastest ceiling mode and ours interleaved step by step (ceiling, ours, ceiling, ours, ...: a drifting
machine speed affects both alike); reference again (its median is over both passes). Each of our steps also
prints its page faults and system CPU time: after the first steps, heap reuse should leave ~0 of each.

    python benchmarks/pretrain_step.py                 # ResNet-50, 448 px, batch 8 (the issue's setting)
    python benchmarks/pretrain_step.py --backbone resnet18 --image_size 128 --iterations 2   # quick check
    python benchmarks/pretrain_step.py --simulate-no-native-bf16   # what a CPU without AVX512_BF16/AMX gets
"""

from __future__ import annotations

import argparse
import copy
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from di3cl_hf.configuration_di3cl import DI3CLConfig
from di3cl_hf.data.synthetic import synthetic_patch
from di3cl_hf.memory import reuse_large_allocations
from di3cl_hf.modeling_di3cl import DI3CLForPreTraining
from di3cl_hf.runtime import (
    PRECISIONS,
    accelerate_mixed_precision,
    cpu_description,
    native_bf16,
    resolve_precision,
)
from di3cl_hf.training.pretraining import PretrainingArguments, build_optimizer
from di3cl_hf.training.pretraining_data import build_transform_and_collator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bare_network import (  # noqa: E402  (sibling)
    available_modes,
    simulated_no_native_bf16,
    training_ceiling,
    training_ceiling_step,
)
from boxes import reference_box_pairs  # noqa: E402  (the sibling benchmark's Python loop)

# ----------------------------------------------------------------------------------------------------------------
# The reference: plain fp32 PyTorch, boxes in a Python loop
# ----------------------------------------------------------------------------------------------------------------


def mlp(dim_in: int, hidden: int, dim_out: int, batch_norm: bool = False) -> nn.Sequential:
    layers = [nn.Linear(dim_in, hidden)] + ([nn.BatchNorm1d(hidden)] if batch_norm else [])
    return nn.Sequential(*layers, nn.ReLU(inplace=True), nn.Linear(hidden, dim_out))


class ReferenceDI3CL(nn.Module):
    """MoCo v2 + contour consistency + dynamic instances, float32, single process (docs/method.md#overview)."""

    def __init__(self, config: DI3CLConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder_q = timm.create_model(
            config.backbone, features_only=True, out_indices=(3, 4), in_chans=config.num_channels
        )
        c3, c4 = self.encoder_q.feature_info.channels()
        hidden, dim = config.projection_hidden_dim, config.projection_dim
        self.global_q, self.low_q = mlp(c4, hidden, dim), mlp(c3, hidden, dim)
        self.local_q, self.predictor = mlp(c4, hidden, dim, True), mlp(dim, hidden, dim, True)
        self.encoder_k = copy.deepcopy(self.encoder_q)
        self.global_k, self.low_k, self.local_k = (
            copy.deepcopy(self.global_q),
            copy.deepcopy(self.low_q),
            copy.deepcopy(self.local_q),
        )
        for module in (self.encoder_k, self.global_k, self.low_k, self.local_k):
            module.requires_grad_(False)
        self.register_buffer("global_queue", F.normalize(torch.randn(dim, config.queue_size), dim=0))
        self.register_buffer("local_queue", F.normalize(torch.randn(dim, config.queue_size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @torch.no_grad()
    def momentum_update(self) -> None:
        m = self.config.momentum
        for k_module, q_module in (
            (self.encoder_k, self.encoder_q),
            (self.global_k, self.global_q),
            (self.low_k, self.low_q),
            (self.local_k, self.local_q),
        ):
            for param_k, param_q in zip(k_module.parameters(), q_module.parameters()):
                param_k.data = param_k.data * m + param_q.data * (1.0 - m)

    def roi(self, feature_map: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return roi_align(
            feature_map, boxes, output_size=1, spatial_scale=1 / 32, sampling_ratio=0, aligned=True
        )

    def forward(self, im_q, im_k, boxes_q, boxes_k):
        t = self.config.temperature
        q3, q4 = self.encoder_q(im_q)
        q = F.normalize(self.global_q(q4.mean(dim=(2, 3))), dim=1)
        q_low = F.normalize(self.low_q(q3.mean(dim=(2, 3))), dim=1)
        prediction = self.predictor(self.local_q(self.roi(q4, boxes_q).flatten(1)))
        with torch.no_grad():
            self.momentum_update()
            k3, k4 = self.encoder_k(im_k)
            k = F.normalize(self.global_k(k4.mean(dim=(2, 3))), dim=1)
            k_low = F.normalize(self.low_k(k3.mean(dim=(2, 3))), dim=1)
            target = self.local_k(self.roi(k4, boxes_k).flatten(1))
        losses = []
        for query, key, queue in ((q, k, self.global_queue), (q_low, k_low, self.local_queue)):
            logits = (
                torch.cat([(query * key).sum(1, keepdim=True), query @ queue.clone().detach()], dim=1) / t
            )
            losses.append(F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long)))
        instance = (2 - 2 * F.cosine_similarity(prediction, target.detach(), dim=1)).mean()
        c = self.config
        loss = (
            c.global_loss_weight * losses[0]
            + c.contour_loss_weight * losses[1]
            + c.instance_loss_weight * instance
        )
        with torch.no_grad():
            ptr = int(self.queue_ptr)
            self.global_queue[:, ptr : ptr + len(k)] = k.T
            self.local_queue[:, ptr : ptr + len(k)] = k_low.T
            self.queue_ptr[0] = (ptr + len(k)) % c.queue_size
        return loss


# ----------------------------------------------------------------------------------------------------------------
# Benchmark
# ----------------------------------------------------------------------------------------------------------------


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return cpu_description()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image_size", type=int, default=448)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=3, help="timed steps of each (after one warm-up)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's; 1 is steadier on a busy CPU)",
    )
    parser.add_argument(
        "--precision", default="auto", choices=PRECISIONS, help="ours' precision (auto: the runtime resolver)"
    )
    parser.add_argument(
        "--simulate-no-native-bf16",
        action="store_true",
        help="torch reports no AVX512_BF16/AMX (the Intel Xeon of issue 13): auto -> fp32, no bf16 ceiling",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with simulated_no_native_bf16(args.simulate_no_native_bf16):
        run(args)


@dataclass
class Bench:
    """What the timed phases share: the setting, the samples, our prepared model and the reference."""

    args: argparse.Namespace
    config: DI3CLConfig
    device: torch.device
    precision: str
    why: str
    native: bool
    modes: list
    samples: list
    collator: Any
    our_batch: Callable[[], dict[str, torch.Tensor]]
    our_step: Callable[[dict[str, torch.Tensor]], None]
    reference_step: Callable[[], float]
    python_boxes: Callable[[], Any]


def run(args: argparse.Namespace) -> None:
    """Set up, time the reference, ours interleaved with the ceiling, the reference again; print the report."""
    bench = setup(args)
    box_loop = [_seconds(bench.python_boxes) for _ in range(5)]
    collate = [_seconds(lambda: bench.collator(bench.samples)) for _ in range(5)]
    reference_times = phase(args, "reference", bench.reference_step)
    probe, best_mode, ours_times, ceiling_times = time_ours_and_ceiling(bench)
    reference_times += phase(args, "reference", bench.reference_step)
    report(bench, reference_times, ours_times, ceiling_times, probe, best_mode, box_loop, collate)


def setup(args: argparse.Namespace) -> Bench:
    """The release-size model (ours, prepared by Accelerate) and the naive reference, on the same samples."""
    from accelerate import Accelerator

    torch.manual_seed(0)
    random.seed(0)
    config = DI3CLConfig(
        backbone=args.backbone, image_size=args.image_size
    )  # release sizes: K 65536, 2048 hidden
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(args.precision, device, log=False)
    native, why = native_bf16(device)
    why = why if args.precision == "auto" else "requested explicitly"
    modes = available_modes(device)
    run_args = PretrainingArguments(backbone=args.backbone, image_size=args.image_size)
    _, transform, collator = build_transform_and_collator(run_args, config)
    images = [
        synthetic_patch(size=int(args.image_size * 1.25), seed=0, index=i).image
        for i in range(args.batch_size)
    ]
    samples = [transform(np.asarray(image)) for image in images]
    geometries1 = [s["geometry1"] for s in samples]
    geometries2 = [s["geometry2"] for s in samples]

    def python_boxes():
        """The release's per-image Python box sampling (the reference of benchmarks/boxes.py)."""
        return reference_box_pairs(
            geometries1, geometries2, config.boxes_per_image, config.min_box_size, config.box_iou_threshold
        )

    # Ours.
    accelerator = Accelerator(mixed_precision=accelerate_mixed_precision(precision))
    ours = DI3CLForPreTraining(config).to(memory_format=torch.channels_last).train()
    ours_optimizer = build_optimizer(ours, run_args, 0.03 * args.batch_size / 256)
    ours, ours_optimizer = accelerator.prepare(ours, ours_optimizer)

    def our_batch() -> dict[str, torch.Tensor]:
        """In training the collator runs in DataLoader workers: made outside the timed step (timed below)."""
        return {
            k: v.to(accelerator.device).contiguous(memory_format=torch.channels_last)
            if v.ndim == 4
            else v.to(device)
            for k, v in collator(samples).items()
        }

    def our_step(batch: dict[str, torch.Tensor]) -> None:
        output = ours(**batch)
        accelerator.backward(output.loss)
        ours_optimizer.step()
        ours_optimizer.zero_grad(set_to_none=True)

    reference_step = _reference_step(args, config, device, samples, python_boxes)
    return Bench(
        args, config, device, precision, why, native, modes, samples, collator, our_batch, our_step,
        reference_step, python_boxes,
    )  # fmt: skip


def _reference_step(
    args: argparse.Namespace, config: DI3CLConfig, device: torch.device, samples: list, python_boxes: Callable
) -> Callable[[], float]:
    """One timed step of the naive reference (fp32, contiguous, boxes in a Python loop)."""
    reference = ReferenceDI3CL(config).to(device).train()
    reference_optimizer = torch.optim.SGD(
        [p for p in reference.parameters() if p.requires_grad], lr=0.03 * args.batch_size / 256, momentum=0.9,
        weight_decay=1e-4,
    )  # fmt: skip
    views_q = torch.stack([s["view1"] for s in samples]).to(device)
    views_k = torch.stack([s["view2"] for s in samples]).to(device)

    def reference_step() -> float:
        start = time.perf_counter()
        boxes_q, boxes_k = python_boxes()
        loss = reference(views_q, views_k, boxes_q.to(device), boxes_k.to(device))
        loss.backward()
        reference_optimizer.step()
        reference_optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return reference_step


def _seconds(step: Callable[[], Any]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def phase(args: argparse.Namespace, name: str, step: Callable[[], float]) -> list[float]:
    """``warmup + iterations`` calls of ``step`` (which returns its seconds); the times after the warm-up."""
    times = []
    for iteration in range(args.warmup + args.iterations):
        seconds = step()
        print(f"  {name} step {iteration}: {seconds:.3f} s", flush=True)
        if iteration >= args.warmup:
            times.append(seconds)
    return times


def time_ours_and_ceiling(bench: Bench) -> tuple[dict[str, float], str, list[float], list[float]]:
    """The ceiling: every mode the machine runs natively, once, then the fastest interleaved step by step with
    ours (ceiling, ours, ceiling, ours, ...) so that a drifting machine speed affects both alike."""
    args, device = bench.args, bench.device
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed(step) -> tuple[float, int, float]:
        """Seconds, minor page faults and system CPU seconds of one call of ``step``."""
        before = resource.getrusage(resource.RUSAGE_SELF)
        synchronize()
        start = time.perf_counter()
        step()
        synchronize()
        seconds = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
        return seconds, after.ru_minflt - before.ru_minflt, after.ru_stime - before.ru_stime

    channels = bench.config.num_channels
    probe = training_ceiling(
        args.backbone, channels, args.batch_size, args.image_size, device=device, modes=bench.modes,
        warmup=args.warmup, iterations=1,
    )  # fmt: skip
    best_mode = min(probe, key=probe.get)
    ceiling_step = training_ceiling_step(
        args.backbone, channels, args.batch_size, args.image_size, best_mode, device=device
    )
    ours_times, ceiling_times = [], []
    with reuse_large_allocations(device.type == "cpu"):  # what the training loops run in
        for iteration in range(args.warmup + args.iterations):
            ceiling_seconds, _, _ = timed(ceiling_step)
            batch = bench.our_batch()
            ours_seconds, faults, system = timed(lambda batch=batch: bench.our_step(batch))
            print(
                f"  step {iteration}: ceiling ({best_mode}) {ceiling_seconds:.3f} s, ours {ours_seconds:.3f} s "
                f"(ours: {faults} page faults, {system:.2f} s system CPU)",
                flush=True,
            )
            if iteration >= args.warmup:
                ceiling_times.append(ceiling_seconds)
                ours_times.append(ours_seconds)
    return probe, best_mode, ours_times, ceiling_times


def report(
    bench: Bench,
    reference_times: list[float],
    ours_times: list[float],
    ceiling_times: list[float],
    probe: dict[str, float],
    best_mode: str,
    box_loop: list[float],
    collate: list[float],
) -> None:
    """The medians, the ratios and whether each target is met."""
    args, config, precision = bench.args, bench.config, bench.precision
    t_reference, t_ours = statistics.median(reference_times), statistics.median(ours_times)
    t_ceiling = statistics.median(ceiling_times)
    simulated = (
        "  [SIMULATED: torch told the CPU has no AVX512_BF16/AMX]" if args.simulate_no_native_bf16 else ""
    )
    print(f"device: {device_name()}; torch {torch.__version__}{simulated}")
    print(f"precision: {precision} ({args.precision}: {bench.why})")
    print(
        f"setting: {args.backbone}, {args.image_size} px, batch {args.batch_size}, {config.num_channels} channels, "
        f"queue {config.queue_size}, hidden {config.projection_hidden_dim}; medians of {args.iterations} steps "
        f"(ours) and 2 x {args.iterations} (reference, before and after)"
    )
    print(f"reference step (fp32, contiguous, boxes in a Python loop): {t_reference:.3f} s")
    print(f"   of which the Python box loop: {statistics.median(box_loop) * 1e3:.1f} ms")
    print(f"our step ({precision}, channels_last, heap reuse, collator boxes): {t_ours:.3f} s")
    print(
        f"   collator box sampling (in DataLoader workers, off the step): {statistics.median(collate) * 1e3:.1f} ms"
    )
    print(
        "ceiling (bare ResNet: query forward+backward + key forward), one probe step per mode: "
        + ", ".join(f"{mode} {seconds:.3f} s" for mode, seconds in probe.items())
        + f" -> best {best_mode}, interleaved with ours: {t_ceiling:.3f} s"
    )
    vs_reference, vs_ceiling = t_reference / t_ours, t_ceiling / t_ours
    native_bf16_step = bench.native and precision == "bf16"
    target_reference = 4.0 if native_bf16_step else 1.3
    print(
        f"ours vs naive fp32 reference: {vs_reference:.2f}x (target >= {target_reference:g}x: ours "
        f"{'runs native bf16' if native_bf16_step else 'runs without native bf16'}) "
        f"{'PASS' if vs_reference >= target_reference else 'FAIL'}"
    )
    print(
        f"ours vs bare-network ceiling: {vs_ceiling:.2f}x (target >= 0.9x) {'PASS' if vs_ceiling >= 0.9 else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
