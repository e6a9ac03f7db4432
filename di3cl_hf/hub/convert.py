"""Convert a checkpoint of the original DI3CL release (a DDP MoCo fork) into a `DI3CLForPreTraining` folder.

The release saves ``torch.save({"epoch", "arch", "state_dict", "optimizer"})`` with ``module.``-prefixed keys
(docs/method.md#release-checkpoints). Every key is mapped; unknown or missing keys are refused. The encoder's torchvision ResNet names are
timm's names, so the encoder weights are copied as they are.

Command line: ``di3cl convert-original CHECKPOINT.pth OUT_DIR`` (:mod:`di3cl_hf.cli.convert`).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch

from ..atomic import replace_directory
from ..configuration_di3cl import DI3CLConfig
from ..di3cl_layers import adapt_input_conv_weight
from ..loading import WeightsFormatError, read_weights_file
from ..modeling_di3cl import DI3CLForPreTraining

# Release prefix -> prefix in DI3CLForPreTraining (after the DDP "module." prefix is removed).
KEY_PREFIXES = {
    "encoder_q.encoder.": "di3cl.encoder.",
    "encoder_k.encoder.": "momentum_encoder.",
    "encoder_q.global_projector.": "global_projector.",
    "encoder_k.global_projector.": "momentum_global_projector.",
    "encoder_q.low_projector.": "contour_projector.",
    "encoder_k.low_projector.": "momentum_contour_projector.",
    "local_proj_q.": "instance_projector.",
    "local_proj_k.": "momentum_instance_projector.",
    "local_predictor.": "instance_predictor.",
}
BUFFER_NAMES = {"global_queue": "global_queue", "local_queue": "contour_queue", "queue_ptr": "queue_ptr"}

# (blocks per layer, bottleneck) -> timm / torchvision ResNet name
RESNET_DEPTHS = {
    ((2, 2, 2, 2), False): "resnet18",
    ((3, 4, 6, 3), False): "resnet34",
    ((3, 4, 6, 3), True): "resnet50",
    ((3, 4, 23, 3), True): "resnet101",
    ((3, 8, 36, 3), True): "resnet152",
}


class CheckpointConversionError(ValueError):
    """The file is not a DI3CL release checkpoint that can be converted (the message names the file)."""


def _list(keys, limit: int = 10) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_original_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a release checkpoint through :func:`di3cl_hf.loading.read_weights_file` (``torch.load(weights_only=True)``,
    the DDP ``module.`` prefix dropped).

    Accepts the release's ``{"state_dict": ...}`` dictionary or a bare state dict.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        CheckpointConversionError: if the file cannot be read safely or holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        return read_weights_file(path)
    except WeightsFormatError as error:
        raise CheckpointConversionError(
            f"{path}: expected a dict with a 'state_dict' of tensors (the release's layout)"
        ) from error
    except ValueError as error:  # unsafe or unreadable (UnsafeWeightsError, CorruptWeightsError)
        raise CheckpointConversionError(str(error)) from error


def map_original_keys(
    state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """Rename release keys (without ``module.``) to `DI3CLForPreTraining` keys; refuse unknown keys."""
    mapped, unknown = {}, []
    for key, value in state_dict.items():
        if key in BUFFER_NAMES:
            mapped[BUFFER_NAMES[key]] = value
            continue
        for old, new in KEY_PREFIXES.items():
            if key.startswith(old):
                mapped[new + key[len(old) :]] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointConversionError(
            f"{source}: {len(unknown)} key(s) not in the DI3CL release layout: {_list(unknown)}"
        )
    return mapped


def config_from_original(
    state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint", num_channels: int | None = None
) -> DI3CLConfig:
    """Infer depth, channels, projection sizes and queue size of a release state dict (without ``module.``).

    ``num_channels`` overrides the channel count read from conv1 (see :func:`convert_original_checkpoint`).
    """
    prefix = "encoder_q.encoder."
    required = [
        f"{prefix}conv1.weight",
        "encoder_q.global_projector.net.0.weight",
        "encoder_q.global_projector.net.2.weight",
        "global_queue",
    ]
    absent = [key for key in required if key not in state_dict]
    if absent:
        raise CheckpointConversionError(
            f"{source}: missing key(s) of the DI3CL release layout: {_list(absent)}"
        )
    blocks = []
    for layer in range(1, 5):
        indices = {
            int(match.group(1))
            for key in state_dict
            if (match := re.match(rf"{re.escape(prefix)}layer{layer}\.(\d+)\.", key))
        }
        blocks.append(max(indices) + 1 if indices else 0)
    bottleneck = f"{prefix}layer1.0.conv3.weight" in state_dict
    backbone = RESNET_DEPTHS.get((tuple(blocks), bottleneck))
    if backbone is None:
        kind = "bottleneck" if bottleneck else "basic"
        raise CheckpointConversionError(
            f"{source}: encoder with {blocks} {kind} blocks per layer is not a ResNet-18/34/50/101/152"
        )
    queue = state_dict["global_queue"]
    return DI3CLConfig(
        backbone=backbone,
        num_channels=num_channels or int(state_dict[f"{prefix}conv1.weight"].shape[1]),
        projection_dim=int(queue.shape[0]),
        projection_hidden_dim=int(state_dict["encoder_q.global_projector.net.0.weight"].shape[0]),
        queue_size=int(queue.shape[1]),
    )


def convert_original_checkpoint(
    checkpoint_path: str | os.PathLike, num_channels: int | None = None
) -> DI3CLForPreTraining:
    """Build a `DI3CLForPreTraining` holding every tensor of a release checkpoint.

    Args:
        checkpoint_path: The release's ``.pth`` file.
        num_channels: Optionally adapt the first convolution of both encoders from the release's 3 replicated grey
            channels to 1 (kernels summed) or 2 (timm's rule) channels; ``None`` keeps the checkpoint's channels.

    Raises:
        CheckpointConversionError: on unknown keys, missing keys or shapes that do not fit the inferred model.
    """
    source = str(checkpoint_path)
    original = load_original_state_dict(checkpoint_path)
    config = config_from_original(original, source, num_channels=num_channels)
    state_dict = map_original_keys(original, source)
    for key in ("di3cl.encoder.conv1.weight", "momentum_encoder.conv1.weight"):
        if key in state_dict and state_dict[key].shape[1] != config.num_channels:
            state_dict[key] = adapt_input_conv_weight(state_dict[key], config.num_channels)
    model = DI3CLForPreTraining(config)
    expected = model.state_dict()
    state_dict.setdefault("queue_ids", expected["queue_ids"])  # the release records no sample ids: none known
    missing = set(expected) - set(state_dict)
    if missing:
        raise CheckpointConversionError(
            f"{source}: {len(missing)} tensor(s) of the {config.backbone} DI3CL model are missing: {_list(missing)}"
        )
    wrong_shapes = [
        f"{key} {tuple(value.shape)} (expected {tuple(expected[key].shape)})"
        for key, value in state_dict.items()
        if tuple(value.shape) != tuple(expected[key].shape)
    ]
    if wrong_shapes:
        raise CheckpointConversionError(f"{source}: tensor shapes do not fit: {_list(wrong_shapes)}")
    state_dict["queue_ptr"] = state_dict["queue_ptr"].to(torch.long).reshape(1)
    model.load_state_dict(state_dict, strict=True)
    for module in model._momentum_modules():
        module.requires_grad_(False)
    return model.eval()


def save_atomically(model: DI3CLForPreTraining, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """``save_pretrained`` into a temporary sibling folder, then rename it to ``out_dir``.

    Raises:
        FileExistsError: if ``out_dir`` exists, is not empty and ``overwrite`` is false.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir}: exists and is not empty (pass --overwrite to replace it)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        model.save_pretrained(temporary)
        replace_directory(temporary, out_dir)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)
    return out_dir


__all__ = [
    "CheckpointConversionError",
    "config_from_original",
    "convert_original_checkpoint",
    "load_original_state_dict",
    "map_original_keys",
    "save_atomically",
]
