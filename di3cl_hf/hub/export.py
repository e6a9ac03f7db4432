"""Export a DI3CL encoder as timm weights.

:func:`export_timm` writes the encoder as a timm ResNet (``model.safetensors`` + ``config.json``
with a ``pretrained_cfg`` carrying our processor's mean / std / input size) through timm's own
``save_for_hf``, so ``timm.create_model("local-dir:<folder>")`` or ``timm.create_model(<arch>,
pretrained=True, pretrained_cfg_overlay=dict(file=<folder>/model.safetensors), in_chans=C,
num_classes=0)`` gives the same features as :class:`~di3cl_hf.modeling_di3cl.DI3CLModel`.
(The original release's checkpoints are converted by :mod:`di3cl_hf.hub.convert`.)

Example:
    >>> export_timm("outputs/demo/models/landcover", "di3cl-timm")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import timm
from timm.models import save_for_hf
from torch import nn

from ..atomic import write_text
from ..loading import find_encoder, load_encoder_quietly
from .cards import DEFAULT_LICENSE, PAPER_URL, read_model_config, read_processor_config, timm_card

# The architecture's default pretrained_cfg describes ImageNet weights (tag, license, paper,
# download location, crop): none of that is true of these weights.
_IMAGENET_CFG_KEYS = (
    "tag",
    "url",
    "hf_hub_id",
    "hf_hub_filename",
    "origin_url",
    "paper_ids",
    "paper_name",
    "notes",
    "test_input_size",
    "test_crop_pct",
)


def _encoder_state_dict(model: nn.Module, timm_keys: Iterable[str]) -> dict[str, Any]:
    """The encoder's tensors under timm's ResNet names (the encoder keeps torchvision / timm names, see
    docs/method.md#release-checkpoints); the encoder is :func:`di3cl_hf.loading.find_encoder`'s."""
    state = find_encoder(model).state_dict()
    timm_keys = list(timm_keys)
    missing = [key for key in timm_keys if key not in state]
    if missing:
        raise ValueError(
            f"{type(model).__name__}: the encoder lacks {len(missing)} of timm's ResNet parameters "
            f"(e.g. {missing[:3]!r}); cannot export to timm"
        )
    return {key: state[key] for key in timm_keys}


def _timm_pretrained_cfg(timm_model: nn.Module, architecture: str, license: str) -> dict[str, Any]:
    return {
        **{key: value for key, value in timm_model.pretrained_cfg.items() if key not in _IMAGENET_CFG_KEYS},
        "architecture": architecture,
        "tag": "di3cl",
        "license": license,
        "paper_ids": "arXiv:2511.07808",
        "origin_url": PAPER_URL,
        "interpolation": "bilinear",
        "crop_pct": 1.0,
        "crop_mode": "center",
    }


def _data_config(
    model_dir: Path, config: Mapping[str, Any], processor: Mapping[str, Any], num_channels: int
) -> dict[str, Any]:
    """timm's ``data_config`` (input size, per-channel mean / std) from our processor's settings."""
    size = processor.get("size") or {}
    side = int(size.get("height") or size.get("shortest_edge") or config.get("image_size", 224))
    mean = processor.get("image_mean") or [0.5] * num_channels
    std = processor.get("image_std") or [0.5] * num_channels
    mean = [float(value) for value in (mean if isinstance(mean, list) else [mean] * num_channels)]
    std = [float(value) for value in (std if isinstance(std, list) else [std] * num_channels)]
    if len(mean) != num_channels or len(std) != num_channels:
        raise ValueError(
            f"{model_dir / 'preprocessor_config.json'}: image_mean/image_std have {len(mean)}/{len(std)} values, "
            f"expected {num_channels} (num_channels)"
        )
    return {"input_size": (num_channels, side, side), "mean": tuple(mean), "std": tuple(std)}


def export_timm(
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    architecture: str | None = None,
    license: str = DEFAULT_LICENSE,
) -> Path:
    """Write a DI3CL encoder as timm weights (``model.safetensors`` + ``config.json``).

    The ResNet is rebuilt with ``timm.create_model(arch, num_classes=0, in_chans=num_channels)``,
    the encoder weights are loaded into it strictly, and timm's ``save_for_hf`` writes the folder
    with a ``pretrained_cfg`` whose ``mean`` / ``std`` / ``input_size`` are our processor's. The
    numbers are for *pixel values after our radiometry* (dB clipped to ``db_range``, scaled to
    [0, 1]); ``config.json`` also records that radiometry under ``di3cl``.

    Args:
        model_dir: a saved DI3CL model (any DI3CL class; the encoder is taken).
        out_dir: output folder (created).
        architecture: timm architecture (default: the config's ``backbone``).
        license: license id recorded in the ``pretrained_cfg``.

    Returns:
        ``out_dir``; load it with ``timm.create_model("local-dir:<out_dir>", pretrained=True)`` or
        ``timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=<out_dir>/model.safetensors),
        in_chans=num_channels, num_classes=0)``.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    config = read_model_config(model_dir)
    processor = read_processor_config(model_dir)
    architecture = architecture or str(config.get("backbone", "resnet50"))
    num_channels = int(config.get("num_channels", 2))
    if not timm.is_model(architecture):
        raise ValueError(f"{model_dir / 'config.json'}: backbone {architecture!r} is not a timm architecture")
    model = load_encoder_quietly(model_dir)  # any DI3CL class; its heads are left out by design
    timm_model = timm.create_model(architecture, pretrained=False, num_classes=0, in_chans=num_channels)
    timm_model.load_state_dict(_encoder_state_dict(model, timm_model.state_dict()), strict=True)
    timm_model.eval()
    timm_model.pretrained_cfg = _timm_pretrained_cfg(timm_model, architecture, license)
    data_config = _data_config(model_dir, config, processor, num_channels)
    radiometry = {
        "input_kind": processor.get("input_kind", "auto"),
        "db_range": processor.get("db_range", [-30.0, 5.0]),
        "note": "mean/std apply to dB clipped to db_range and scaled to [0, 1]; use DI3CLImageProcessor",
        "source": str(model_dir.resolve().name),
    }
    with tempfile.TemporaryDirectory(dir=out_dir.parent if out_dir.parent.exists() else None) as temp:
        save_for_hf(
            timm_model,
            temp,
            model_config={"di3cl": radiometry},
            safe_serialization=True,
            data_config=data_config,
        )
        write_text(
            Path(temp) / "README.md", timm_card(architecture, num_channels, data_config, radiometry, license)
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in sorted(os.listdir(temp)):
            os.replace(Path(temp) / name, out_dir / name)
    return out_dir


__all__ = ["export_timm"]
