"""The ceiling for ``pretrain_step.py``: the bare encoder's training step, fp32 vs bf16 autocast + channels_last.

A ResNet forward + backward on one batch (no DI3CL heads, no queues, no boxes), both ways in one run; the ratio
is the most that precision and memory format alone can give the full DI3CL step on this machine.

    python benchmarks/bare_network.py                      # ResNet-50, 448 px, batch 8, 2 channels
    python benchmarks/bare_network.py --backbone resnet18 --image_size 128
"""

import argparse
import statistics
import time

import timm
import torch


def training_step(model: torch.nn.Module, images: torch.Tensor, bf16: bool) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = model(images).float().square().mean()
    loss.backward()


def median_seconds(model: torch.nn.Module, images: torch.Tensor, bf16: bool, iterations: int) -> float:
    training_step(model, images, bf16)  # warm-up (oneDNN primitive creation)
    times = []
    for _ in range(iterations):
        started = time.perf_counter()
        training_step(model, images, bf16)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image_size", type=int, default=448)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = timm.create_model(args.backbone, in_chans=2, num_classes=0)
    images = torch.randn(args.batch_size, 2, args.image_size, args.image_size)
    reference = median_seconds(model, images, bf16=False, iterations=args.iterations)
    model = model.to(memory_format=torch.channels_last)
    fast = median_seconds(model, images.contiguous(memory_format=torch.channels_last), True, args.iterations)
    print(
        f"{args.backbone}, {args.image_size} px, batch {args.batch_size}, {torch.get_num_threads()} threads"
    )
    print(f"fp32, contiguous          : {reference:.3f} s")
    print(f"bf16 autocast + channels_last: {fast:.3f} s")
    print(f"ratio                     : {reference / fast:.2f}x")


if __name__ == "__main__":
    main()
