"""CUDA checks (marker ``gpu``; skipped without CUDA). Run them with ``python benchmarks/gpu_check.py``.

- one pre-training step forward/backward on CUDA with bf16 autocast and channels_last;
- the DI3CL losses on CUDA equal the CPU losses in fp32 (same weights, views and boxes; TF32 off);
- the shuffle-BN branch (gather, broadcast permutation, un-shuffle) in a one-process NCCL group;
- ``predict_scene`` on CUDA gives the CPU class map (>= 99.9 % of the pixels, fp32).

The helpers take the device as an argument: ``tests/test_gpu_check.py`` runs them on the CPU, so the code
these tests run is exercised on every machine, even where no GPU ever runs them.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import rasterio
import torch

from di3cl_hf import DI3CLConfig, DI3CLForPreTraining, DI3CLForSemanticSegmentation, modeling_di3cl
from di3cl_hf.data.synthetic import generate_scene
from di3cl_hf.image_processing_di3cl import DI3CLImageProcessor
from di3cl_hf.inference.scene import predict_scene
from di3cl_hf.runtime import autocast_dtype, resolve_precision

CUDA = torch.cuda.is_available()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not CUDA, reason="needs CUDA (no GPU here); run `python benchmarks/gpu_check.py` on a GPU"
    ),
]

LOSS_NAMES = ("loss", "global_loss", "contour_loss", "instance_loss")
# fp32 on both sides, TF32 off: the convolution algorithms differ (cuDNN vs oneDNN), so features differ by
# ~1e-6 relative; InfoNCE at temperature 0.2 over 1 + 64 logits keeps that well below 1e-3.
LOSS_TOLERANCE = {"rtol": 1e-3, "atol": 1e-3}
SCENE_AGREEMENT = 0.999


def tiny_pretraining_config(image_size: int = 128) -> DI3CLConfig:
    """ResNet-18, ``image_size`` px, dual-pol, queue 64 (the tests' scale)."""
    return DI3CLConfig(
        backbone="resnet18",
        num_channels=2,
        image_size=image_size,
        projection_dim=16,
        projection_hidden_dim=64,
        queue_size=64,
        boxes_per_image=4,
    )


def pretraining_batch(
    batch_size: int = 4, image_size: int = 128, num_channels: int = 2, seed: int = 0
) -> dict:
    """Two random views and ``batch_size`` box pairs (one per image, key box shifted by 8 px), on the CPU."""
    generator = torch.Generator().manual_seed(seed)
    views = torch.randn(2, batch_size, num_channels, image_size, image_size, generator=generator)
    half = image_size // 2
    query_boxes = torch.tensor(
        [
            [i, (4 * i) % half, (8 * i) % half, (4 * i) % half + half, (8 * i) % half + half]
            for i in range(batch_size)
        ],
        dtype=torch.float32,
    )
    key_boxes = query_boxes.clone()
    key_boxes[:, 1:] = (key_boxes[:, 1:] + 8).clamp(max=image_size)
    return {
        "pixel_values": views[0],
        "key_pixel_values": views[1],
        "query_boxes": query_boxes,
        "key_boxes": key_boxes,
    }


def to_device(batch: dict, device: torch.device | str, channels_last: bool = False) -> dict:
    moved = {}
    for name, value in batch.items():
        value = value.to(device)
        if channels_last and value.ndim == 4:
            value = value.contiguous(memory_format=torch.channels_last)
        moved[name] = value
    return moved


@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    """Plain fp32 matmuls and convolutions on CUDA (cuDNN allows TF32 convolutions by default)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def pretraining_step(
    model: DI3CLForPreTraining, batch: dict, device: torch.device | str, precision: str
) -> dict:
    """One SGD step of ``model`` on ``device`` with ``precision``'s autocast; the losses as floats."""
    device = torch.device(device)
    dtype = autocast_dtype(precision)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    model.train()
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        outputs = model(**batch)
    outputs.loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {name: float(getattr(outputs, name).detach()) for name in LOSS_NAMES}


def check_pretraining_step(device: torch.device | str, precision: str, channels_last: bool = True) -> dict:
    """A pre-training step on ``device``: finite losses in fp32, gradients on every trainable parameter."""
    torch.manual_seed(0)
    model = DI3CLForPreTraining(tiny_pretraining_config()).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    batch = to_device(pretraining_batch(), device, channels_last)
    dtype = autocast_dtype(precision)
    model.train()
    with torch.autocast(torch.device(device).type, dtype=dtype or torch.float32, enabled=dtype is not None):
        outputs = model(**batch)
    for name in LOSS_NAMES:
        value = getattr(outputs, name)
        assert value.dtype == torch.float32 and torch.isfinite(value), (name, value)
    assert int(outputs.num_boxes) == batch["query_boxes"].shape[0]
    outputs.loss.backward()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    assert model.queue_ptr.item() == batch["pixel_values"].shape[0]
    return {name: float(getattr(outputs, name).detach()) for name in LOSS_NAMES}


def compare_losses(device: torch.device | str, steps: int = 2) -> list[tuple[dict, dict]]:
    """The same model (weights, queues), views and boxes on the CPU and on ``device`` in fp32: losses."""
    torch.manual_seed(0)
    cpu_model = DI3CLForPreTraining(tiny_pretraining_config(image_size=64))
    other = copy.deepcopy(cpu_model).to(device)
    pairs = []
    for step in range(steps):
        batch = pretraining_batch(image_size=64, seed=step)
        with no_tf32():
            pairs.append(
                (
                    pretraining_step(cpu_model, batch, "cpu", "fp32"),
                    pretraining_step(other, to_device(batch, device), device, "fp32"),
                )
            )
    return pairs


class _ForcedShuffle(int):
    """A world size of 1 that is not ``== 1``: ``_key_feature_maps`` takes its shuffle-BN branch."""

    def __eq__(self, other: object) -> bool:
        return False if other == 1 else int(self) == other

    __hash__ = int.__hash__


def shuffle_bn_losses(device: torch.device | str, backend: str, init_file: Path) -> tuple[dict, dict]:
    """Losses of one step with and without the shuffle-BN branch (one-process group): BN in train mode is
    invariant to the permutation, so both must agree."""
    torch.manual_seed(0)
    plain = DI3CLForPreTraining(tiny_pretraining_config(image_size=64)).to(device)
    shuffled = copy.deepcopy(plain)
    batch = to_device(pretraining_batch(image_size=64), device)
    with no_tf32():
        expected = pretraining_step(plain, batch, device, "fp32")
        torch.distributed.init_process_group(backend, init_method=f"file://{init_file}", rank=0, world_size=1)
        try:
            with mock.patch.object(modeling_di3cl, "_world_size", lambda: _ForcedShuffle(1)):
                got = pretraining_step(shuffled, batch, device, "fp32")
        finally:
            torch.distributed.destroy_process_group()
    return expected, got


def scene_class_maps(
    device: torch.device | str, tmp_path: Path, size: int = 320, precision: str = "fp32"
) -> tuple[np.ndarray, np.ndarray]:
    """Class maps of the same tiny segmentation model on the CPU and on ``device`` for a synthetic scene."""
    scene = generate_scene(tmp_path / "scene.tif", size, size, seed=3, tile_size=256)
    torch.manual_seed(0)
    config = DI3CLConfig(
        backbone="resnet18",
        num_channels=2,
        num_labels=5,
        decoder_hidden_size=32,
        auxiliary_channels=16,
        use_auxiliary_head=False,
    )
    model = DI3CLForSemanticSegmentation(config).eval()
    maps = []
    for name, target, model_precision in (("cpu", "cpu", "fp32"), ("device", device, precision)):
        out = tmp_path / f"classes-{name}.tif"
        with no_tf32():
            predict_scene(
                copy.deepcopy(model),
                scene,
                out,
                DI3CLImageProcessor(num_channels=2),
                tile_size=128,
                overlap=32,
                batch_size=4,
                precision=model_precision,
                device=target,
                cog=False,
                progress=False,
            )
        with rasterio.open(out) as dataset:
            maps.append(dataset.read(1))
    return maps[0], maps[1]


# ------------------------------------------------------------------------------------------------------------
# The tests
# ------------------------------------------------------------------------------------------------------------


def test_pretraining_step_bf16_channels_last():
    if not torch.cuda.is_bf16_supported():
        pytest.skip(f"{torch.cuda.get_device_name(0)} has no bf16")
    assert resolve_precision("auto", "cuda") == "bf16"
    check_pretraining_step("cuda", "bf16", channels_last=True)


def test_pretraining_step_fp32_contiguous():
    check_pretraining_step("cuda", "fp32", channels_last=False)


def test_losses_on_cuda_equal_cpu_losses_fp32():
    for cpu_losses, cuda_losses in compare_losses("cuda"):
        for name in LOSS_NAMES:
            torch.testing.assert_close(
                torch.tensor(cuda_losses[name]), torch.tensor(cpu_losses[name]), **LOSS_TOLERANCE, msg=name
            )


def test_shuffle_bn_branch_in_one_process(tmp_path):
    expected, got = shuffle_bn_losses("cuda", "nccl", tmp_path / "process-group")
    for name in LOSS_NAMES:
        torch.testing.assert_close(
            torch.tensor(got[name]), torch.tensor(expected[name]), **LOSS_TOLERANCE, msg=name
        )


def test_predict_scene_on_cuda_equals_cpu(tmp_path):
    cpu_map, cuda_map = scene_class_maps("cuda", tmp_path)
    agreement = float((cpu_map == cuda_map).mean())
    assert agreement >= SCENE_AGREEMENT, f"only {agreement:.5f} of the pixels agree"


def test_predict_scene_on_cuda_bf16_runs(tmp_path):
    if not torch.cuda.is_bf16_supported():
        pytest.skip(f"{torch.cuda.get_device_name(0)} has no bf16")
    cpu_map, cuda_map = scene_class_maps("cuda", tmp_path, precision="bf16")
    # an untrained model has near-tied class scores, so bf16 may flip some pixels: only validity is checked
    assert cuda_map.shape == cpu_map.shape
    assert np.isin(cuda_map, [0, 1, 2, 3, 4, 255]).all()
    print(f"bf16 CUDA vs fp32 CPU: {float((cpu_map == cuda_map).mean()):.4f} of the pixels agree")
