"""Fine-tuning step time vs UperNet decoder width and crop size, in each precision the machine runs natively.

One step = ``DI3CLForSemanticSegmentation`` forward + backward (UperNet decoder + auxiliary FCN head, cross
entropy) + ``AdamW`` step, the work of one iteration of ``di3cl_hf.training.finetuning`` (random weights and
random dual-pol inputs: the speed does not depend on them), channels_last, inside
``di3cl_hf.memory.reuse_large_allocations`` as in the loop. fp32 always; bf16 autocast only where
:func:`di3cl_hf.runtime.native_bf16` says the device runs it natively (elsewhere it is emulated at about half
the fp32 speed and the fine-tuning loop's ``auto`` never picks it), or when ``--precisions`` names it.

The paper's UperNet width is 512; at stride 4 its fused 3x3 convolution (4 x width -> width channels on a
crop/4 grid) dominates the step on a CPU, so the cost grows about with width squared.

    python benchmarks/finetune_step.py                                   # resnet18 + resnet50, widths 128/256/512
    python benchmarks/finetune_step.py --backbones resnet18 --widths 128 512 --crops 256 --iterations 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import torch

from di3cl_hf.configuration_di3cl import DI3CLConfig
from di3cl_hf.memory import reuse_large_allocations
from di3cl_hf.modeling_di3cl import DI3CLForSemanticSegmentation
from di3cl_hf.runtime import autocast_dtype, cpu_description, native_bf16

NUM_LABELS = 6


def step_seconds(
    backbone: str,
    width: int,
    crop: int,
    precision: str,
    *,
    batch_size: int,
    warmup: int,
    iterations: int,
    channels_last: bool = True,
) -> float:
    """Median seconds of one fine-tuning step (see the module docstring)."""
    torch.manual_seed(0)
    config = DI3CLConfig(backbone=backbone, num_channels=2, num_labels=NUM_LABELS, decoder_hidden_size=width)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = DI3CLForSemanticSegmentation(config).to(memory_format=memory_format).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(batch_size, 2, crop, crop, generator=generator).contiguous(
        memory_format=memory_format
    )
    labels = torch.randint(0, NUM_LABELS, (batch_size, crop, crop), generator=generator)
    dtype = autocast_dtype(precision)
    times = []
    with reuse_large_allocations():
        for iteration in range(warmup + iterations):
            started = time.perf_counter()
            with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = model(pixel_values=pixel_values, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if iteration >= warmup:
                times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbones", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--crops", type=int, nargs="+", default=[128, 256])
    parser.add_argument(
        "--precisions", nargs="+", default=None, help="default: fp32, plus bf16 where it is native"
    )
    parser.add_argument("--batch_size", type=int, default=8, help="fine-tuning's default batch")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument(
        "--contiguous", action="store_true", help="contiguous memory instead of channels_last"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    native, why = native_bf16("cpu")
    precisions = args.precisions or (["fp32", "bf16"] if native else ["fp32"])
    print(f"CPU: {cpu_description()}")
    print(f"bf16 {'native' if native else 'NOT native'} ({why}); precisions: {', '.join(precisions)}")
    print(
        f"step = forward + backward + AdamW, batch {args.batch_size}, 2 channels, {NUM_LABELS} classes, "
        f"{'contiguous' if args.contiguous else 'channels_last'}, median of {args.iterations} after {args.warmup} "
        f"warm-up; seconds per step"
    )
    header = ["backbone", "crop"] + [f"w{width} {p}" for p in precisions for width in args.widths]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for backbone in args.backbones:
        for crop in args.crops:
            cells = [backbone, str(crop)]
            for precision in precisions:
                for width in args.widths:
                    seconds = step_seconds(
                        backbone, width, crop, precision, batch_size=args.batch_size, warmup=args.warmup,
                        iterations=args.iterations, channels_last=not args.contiguous,
                    )  # fmt: skip
                    cells.append(f"{seconds:.2f}")
            print("| " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
