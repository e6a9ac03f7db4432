"""Optimiser step: torch's fused SGD / AdamW kernels against the default per-parameter loop, in one run.

The pre-training loop uses fused momentum SGD and fine-tuning fused AdamW where
:func:`di3cl_hf.runtime.fused_optimizer` says the device has the kernels (CPU, CUDA). Both update every parameter
of a timm ResNet (random gradients); the ratio is default-loop time / fused time.

    python benchmarks/optimizer_step.py                       # ResNet-50 (SGD) and ResNet-18 (AdamW)
    python benchmarks/optimizer_step.py --backbones resnet18 --iterations 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch

from di3cl_hf.runtime import cpu_description


def step_seconds(optimizer: torch.optim.Optimizer, iterations: int) -> float:
    optimizer.step()  # state (momentum buffers, moments) allocated outside the timing
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbones", nargs="+", default=["resnet50", "resnet18"])
    parser.add_argument("--iterations", type=int, default=10)
    args = parser.parse_args()
    print(f"device: {cpu_description()}; torch {torch.__version__}")
    optimizers = {
        "SGD (momentum 0.9, weight decay 1e-4)": lambda params, **kw: torch.optim.SGD(
            params, lr=0.03, momentum=0.9, weight_decay=1e-4, **kw
        ),
        "AdamW": lambda params, **kw: torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2, **kw),
    }
    for backbone in args.backbones:
        torch.manual_seed(0)
        parameters = list(timm.create_model(backbone, in_chans=2).parameters())
        for parameter in parameters:
            parameter.grad = torch.randn_like(parameter)
        count = sum(p.numel() for p in parameters) / 1e6
        for name, build in optimizers.items():
            loop = step_seconds(build(parameters, foreach=False), args.iterations)
            fused = step_seconds(build(parameters, fused=True), args.iterations)
            print(
                f"{backbone} ({count:.1f} M parameters), {name}: default loop {loop * 1e3:.1f} ms, "
                f"fused {fused * 1e3:.1f} ms -> {loop / fused:.2f}x"
            )


if __name__ == "__main__":
    main()
