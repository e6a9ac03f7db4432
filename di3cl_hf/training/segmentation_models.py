"""What fine-tuning trains on a segmentation model: everything, the heads on a frozen encoder, or a linear probe.

:func:`configure_trainable` freezes what a ``mode`` freezes and returns the network to train;
:func:`set_train_mode` keeps a frozen encoder's BatchNorm statistics. The models themselves come from
:mod:`di3cl_hf.loading` (an encoder under a new head, ImageNet weights) and the model files (the linear probe's
:class:`~di3cl_hf.di3cl_layers.LinearProbeHead` and :class:`~di3cl_hf.di3cl_layers.LinearProbeModel`).
"""

from __future__ import annotations

from torch import nn

from ..di3cl_layers import LinearProbeHead, LinearProbeModel
from ..loading import (
    adapt_first_conv,
    adapt_processor_channels,
    load_imagenet_weights,
    segmentation_model_on_encoder,
)

MODES = ("full", "frozen", "linear")


def configure_trainable(model: nn.Module, mode: str) -> nn.Module:
    """Freeze what ``mode`` freezes and return the network to train: ``model`` itself for ``"full"``
    and ``"frozen"`` (encoder frozen), a linear probe around the frozen encoder for ``"linear"``."""
    if mode not in MODES:
        raise ValueError(f"configure_trainable: mode={mode!r}, expected one of {MODES}")
    model.requires_grad_(True)
    if mode == "full":
        return model
    model.base_model.requires_grad_(False)
    if mode == "frozen":
        return model
    model.requires_grad_(False)
    return LinearProbeModel(
        model, LinearProbeHead(model.base_model.num_features[-1], model.config.num_labels)
    )


def set_train_mode(network: nn.Module, mode: str) -> None:
    """``train()`` what trains; a frozen encoder stays in ``eval()`` so its BatchNorm statistics are kept."""
    network.train()
    if mode != "full":
        base = network.model if isinstance(network, LinearProbeModel) else network
        base.base_model.eval()


__all__ = [
    "MODES",
    "LinearProbeHead",
    "LinearProbeModel",
    "adapt_first_conv",
    "adapt_processor_channels",
    "configure_trainable",
    "load_imagenet_weights",
    "segmentation_model_on_encoder",
    "set_train_mode",
]
