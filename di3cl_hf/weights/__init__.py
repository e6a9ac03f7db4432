"""Models shipped inside the package: found by editable and regular installs alike (package data).

``s1-water-resnet18/`` is a Hub-layout folder (``config.json``, fp16 ``model.safetensors`` loaded as fp32,
``preprocessor_config.json``, the remote-code files and a model card ``README.md`` with its measured scores,
training data and terms): a DI3CL ResNet-18 + UperNet water / flood segmentation model for Sentinel-1 VV + VH,
trained on real data. It is the default model of ``di3cl predict``, the Space's water model and the encoder
``make demo`` fine-tunes from. Its encoder loads with ``AutoModel`` from the same folder (one folder, no
second copy). Only the real model is ever written here, by :func:`di3cl_hf.hub.ship.ship_model`
(``di3cl ship-model``).

Example:
    >>> from transformers import AutoModel, pipeline
    >>> import di3cl_hf
    >>> from di3cl_hf.weights import shipped_model_path
    >>> segmenter = pipeline("image-segmentation", model=str(shipped_model_path()))  # doctest: +SKIP
    >>> encoder = AutoModel.from_pretrained(shipped_model_path())  # the same folder's encoder  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent
"""The folder holding the shipped model folders (inside the installed package)."""

WATER_MODEL_NAME = "s1-water-resnet18"
"""Folder name of the shipped Sentinel-1 water / flood model."""

DEFAULT_WATER_MODEL = WEIGHTS_DIR / WATER_MODEL_NAME
"""Path of the shipped water / flood model (``di3cl predict``'s default model)."""

SHIP_COMMAND = (
    "di3cl ship-model FINETUNED_FOLDER --tables results/real/flood.md ... (see di3cl ship-model --help)"
)


class ShippedModelMissingError(FileNotFoundError):
    """The shipped model folder is not installed (a checkout before the model was committed, or a broken install)."""


def shipped_model_path(name: str = WATER_MODEL_NAME, *, check: bool = True) -> Path:
    """Path of a shipped model folder (default: the water / flood model).

    Args:
        name: folder name under :data:`WEIGHTS_DIR`.
        check: raise :class:`ShippedModelMissingError` when the folder has no ``config.json`` or weights.

    Raises:
        ShippedModelMissingError: the folder is missing or incomplete (and ``check``).
    """
    path = WEIGHTS_DIR / name
    complete = (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    if check and not complete:
        raise ShippedModelMissingError(
            f"{path}: the shipped model is not installed (no config.json / model.safetensors). It is written by "
            f"`{SHIP_COMMAND}` and is part of the package data; reinstall the package or pass a model folder."
        )
    return path


def shipped_model_available(name: str = WATER_MODEL_NAME) -> bool:
    """Whether the shipped model folder ``name`` is installed and complete."""
    try:
        shipped_model_path(name)
    except ShippedModelMissingError:
        return False
    return True


def shipped_model_names() -> list[str]:
    """Names of the complete shipped model folders."""
    return sorted(
        entry.name
        for entry in os.scandir(WEIGHTS_DIR)
        if entry.is_dir() and not entry.name.startswith((".", "_")) and shipped_model_available(entry.name)
    )


__all__ = [
    "DEFAULT_WATER_MODEL",
    "WATER_MODEL_NAME",
    "WEIGHTS_DIR",
    "ShippedModelMissingError",
    "shipped_model_available",
    "shipped_model_names",
    "shipped_model_path",
]
