"""Local ImageNet ResNet weights into a timm encoder (pre-training and fine-tuning initialisation).

Weights are only ever read from a local file: ``.safetensors`` with safetensors, anything else with
``torch.load(weights_only=True)`` (no arbitrary unpickling); nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..di3cl_layers import adapt_input_conv_weight


def load_local_backbone_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a local ResNet weight file (timm / torchvision names) without unpickling arbitrary objects.

    ``.safetensors`` files are read with safetensors; anything else with ``torch.load(weights_only=True)``. A
    ``{"state_dict": ...}`` / ``{"model": ...}`` wrapper and ``module.`` prefixes are removed; the classifier
    (``fc.*``) is dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such weight file (ImageNet weights are only read from a local file)")
    if path.suffix == ".safetensors":
        state = load_file(str(path))
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a dict of tensors (a ResNet state dict)")
    cleaned = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith(("fc.", "head.fc.", "classifier.")):
            continue
        cleaned[key] = value
    return cleaned


def load_backbone_weights_into(encoder: torch.nn.Module, path: str | os.PathLike, backbone: str) -> list[str]:
    """Load a local ImageNet ResNet file (:func:`load_local_backbone_weights`) into a timm ``encoder``.

    conv1 is adapted to the encoder's input channels with timm's rule (summed kernels for one channel, repeated
    and rescaled otherwise). Returns the encoder parameters that were not in the file (empty for a matching
    ResNet); raises ValueError naming the file on a shape mismatch or when nothing matches ``backbone``.
    """

    target = encoder.state_dict()
    loaded = {}
    for key, value in load_local_backbone_weights(path).items():
        if key not in target:
            continue
        if key.endswith("conv1.weight") and value.ndim == 4 and value.shape[1] != target[key].shape[1]:
            value = adapt_input_conv_weight(value, target[key].shape[1])
        if value.shape != target[key].shape:
            raise ValueError(
                f"{path}: {key} has shape {tuple(value.shape)}, the encoder expects {tuple(target[key].shape)}"
            )
        loaded[key] = value.to(target[key].dtype)
    if not loaded:
        raise ValueError(f"{path}: no tensor matches the {backbone} encoder (expected timm ResNet names)")
    encoder.load_state_dict(loaded, strict=False)
    return sorted(set(target) - set(loaded))


__all__ = ["load_backbone_weights_into", "load_local_backbone_weights"]
