"""The bare-network ceiling of ``pretrain_step.py`` and ``scene.py``: the encoder alone, in the machine's best mode.

Training ceiling (``pretrain_step.py``): the DI3CL step pushes the batch's query views through the query encoder
(forward + backward) and the key views through the momentum encoder (forward, no gradients). The ceiling is
exactly that network work and nothing else: the same timm ResNet (``features_only``, the two stages DI3CL reads)
forward + backward on ``batch`` query images, plus a second copy's forward on ``batch`` key images under
``no_grad``. No heads, queues, EMA, ROI-Align, boxes or optimiser step: those are the DI3CL machinery whose cost
the ratio "ours / ceiling" measures.

Inference ceiling (``scene.py``): the segmentation model's forward alone on tiles already in memory (warm model,
no softmax, no reading, blending or writing).

Each is timed in every mode available *natively* on the machine: fp32 contiguous, fp32 channels_last and, where
:func:`di3cl_hf.runtime.native_bf16` says the device runs bf16 natively, bf16 autocast + channels_last; the
ceiling is the fastest. All run inside ``reuse_large_allocations`` (the heap setting of the training loops).
``--simulate-no-native-bf16`` makes torch report a CPU without AVX512_BF16/AMX, as on the Intel Xeon of issue 13
(a simulation: the fp32 kernels are this CPU's).

    python benchmarks/bare_network.py                      # ResNet-50, 448 px, batch 8, 2 channels
    python benchmarks/bare_network.py --backbone resnet18 --image_size 128
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import time
from collections.abc import Callable, Iterator

import timm
import torch

from di3cl_hf.memory import reuse_large_allocations
from di3cl_hf.runtime import cpu_description, native_bf16

MODES = ("fp32 contiguous", "fp32 channels_last", "bf16 channels_last")


@contextlib.contextmanager
def simulated_no_native_bf16(enabled: bool = True) -> Iterator[None]:
    """While active, torch reports no AVX512_BF16 and no AMX (what the resolver sees on the Intel Xeon of issue
    13), so ``resolve_precision("auto", "cpu")`` gives fp32 and :func:`available_modes` drops bf16."""
    if not enabled:
        yield
        return
    saved = {
        name: getattr(torch.cpu, name, None)
        for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    }
    for name in saved:
        setattr(torch.cpu, name, lambda: False)
    try:
        yield
    finally:
        for name, function in saved.items():
            if function is not None:
                setattr(torch.cpu, name, function)


def available_modes(device: torch.device | str) -> tuple[str, ...]:
    """The modes the ceiling may use on ``device``: bf16 only where it is native."""
    return MODES if native_bf16(device)[0] else MODES[:2]


def _mode(mode: str) -> tuple[torch.memory_format, torch.dtype | None]:
    channels_last = "channels_last" in mode
    return (torch.channels_last if channels_last else torch.contiguous_format), (
        torch.bfloat16 if mode.startswith("bf16") else None
    )


def median_seconds(step: Callable[[], None], warmup: int, iterations: int, synchronize=lambda: None) -> float:
    for _ in range(warmup):  # oneDNN primitive creation, allocator warm-up
        step()
    synchronize()
    times = []
    for _ in range(iterations):
        started = time.perf_counter()
        step()
        synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def training_ceiling_step(
    backbone: str,
    num_channels: int,
    batch_size: int,
    image_size: int,
    mode: str,
    *,
    device: torch.device | str = "cpu",
    out_indices: tuple[int, ...] = (3, 4),
) -> Callable[[], None]:
    """One step of the training ceiling (see the module docstring) in ``mode``, ready to call repeatedly."""
    device = torch.device(device)
    memory_format, dtype = _mode(mode)
    torch.manual_seed(0)
    query_encoder = timm.create_model(
        backbone, features_only=True, out_indices=out_indices, in_chans=num_channels
    ).to(device, memory_format=memory_format)
    key_encoder = copy.deepcopy(query_encoder).requires_grad_(False)
    generator = torch.Generator().manual_seed(0)
    views = torch.randn(2, batch_size, num_channels, image_size, image_size, generator=generator).to(device)
    query, key = (view.contiguous(memory_format=memory_format) for view in views)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            maps = query_encoder(query)
            with torch.no_grad():
                key_encoder(key)
        loss = sum(feature_map.float().mean() for feature_map in maps)
        loss.backward()
        query_encoder.zero_grad(set_to_none=True)

    return step


def training_ceiling(
    backbone: str,
    num_channels: int,
    batch_size: int,
    image_size: int,
    *,
    device: torch.device | str = "cpu",
    modes: tuple[str, ...] | None = None,
    warmup: int = 1,
    iterations: int = 3,
    out_indices: tuple[int, ...] = (3, 4),
    log: Callable[[str], None] = print,
) -> dict[str, float]:
    """Median seconds of the training ceiling (see the module docstring) in each of ``modes``."""
    device = torch.device(device)
    modes = modes or available_modes(device)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    results = {}
    for mode in modes:
        step = training_ceiling_step(
            backbone, num_channels, batch_size, image_size, mode, device=device, out_indices=out_indices
        )
        with reuse_large_allocations(device.type == "cpu"):
            results[mode] = median_seconds(step, warmup, iterations, synchronize)
        log(f"  ceiling ({mode}): {results[mode]:.3f} s")
    return results


def inference_ceiling(
    model: torch.nn.Module,
    tiles: torch.Tensor,
    batch_size: int,
    *,
    modes: tuple[str, ...] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, float]:
    """Seconds per tile of ``model``'s forward alone over ``tiles`` (in memory, warm model) in each mode."""
    device = tiles.device
    modes = modes or available_modes(device)
    results = {}
    for mode in modes:
        memory_format, dtype = _mode(mode)
        model.to(memory_format=memory_format)
        batches = [
            tiles[index : index + batch_size].contiguous(memory_format=memory_format)
            for index in range(0, len(tiles), batch_size)
        ]

        def run(batches=batches) -> None:
            for batch in batches:
                model(batch)

        with (
            reuse_large_allocations(device.type == "cpu", max_block_mib=64),
            torch.inference_mode(),
            torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None),
        ):
            model(batches[0])  # warm-up
            started = time.perf_counter()
            run()
            results[mode] = (time.perf_counter() - started) / len(tiles)
        log(f"  ceiling ({mode}): {results[mode]:.4f} s/tile")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image_size", type=int, default=448)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--num_channels", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument(
        "--simulate-no-native-bf16", action="store_true", help="as on a CPU without AVX512_BF16/AMX"
    )
    args = parser.parse_args()
    with simulated_no_native_bf16(args.simulate_no_native_bf16):
        print(
            f"CPU: {cpu_description()}"
            + ("  [SIMULATED: no native bf16]" if args.simulate_no_native_bf16 else "")
        )
        print(f"{args.backbone}, {args.image_size} px, batch {args.batch_size}, {args.num_channels} channels")
        results = training_ceiling(
            args.backbone, args.num_channels, args.batch_size, args.image_size, iterations=args.iterations
        )
    best = min(results, key=results.get)
    reference = results[MODES[0]]
    for mode, seconds in results.items():
        print(f"{mode:<20}: {seconds:.3f} s  ({reference / seconds:.2f}x fp32 contiguous)")
    print(f"ceiling: {best}, {results[best]:.3f} s")


if __name__ == "__main__":
    main()
