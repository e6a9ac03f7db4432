"""The segmentation models fine-tuning trains: UperNet on a DI3CL encoder (input channels adapted when the data's
differ from the encoder's), ImageNet initialisation, frozen encoders and the linear probe.

**Channel adaptation** (:func:`segmentation_model_on_encoder` with ``num_channels``): an encoder pre-trained on
one channel (VH) can be fine-tuned on two (VV + VH, or OMBRIA's before + after), and the reverse. The first
convolution's kernel ``[O, I, kh, kw]`` is adapted with timm's rule (:func:`timm.models.adapt_input_conv`, with
``base_chans=I``): to 1 channel the kernels are summed over ``I``; to ``N`` channels they are repeated cyclically
and scaled by ``I / N``. So a band fed identically to all ``N`` channels gives exactly the pre-trained output of
that band fed to a 1-channel encoder (and, from ``I`` channels, whenever ``N`` is a multiple of ``I``). The
processor follows: ``image_mean`` / ``image_std`` are repeated from a 1-channel encoder (from several channels,
their mean is used for every channel), so identical bands are normalised identically; a ``bands`` choice of
another length is dropped.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from timm.models import adapt_input_conv
from torch import nn
from transformers.modeling_outputs import SemanticSegmenterOutput
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, cached_file

from ..configuration_di3cl import DI3CLConfig
from ..image_processing_di3cl import DI3CLImageProcessor
from ..loading import CorruptWeightsError, check_channels, find_encoder
from ..modeling_di3cl import DI3CLForSemanticSegmentation
from .imagenet import load_backbone_weights_into

logger = logging.getLogger(__name__)

MODES = ("full", "frozen", "linear")


def load_imagenet_weights(model: nn.Module, weights_file: str | os.PathLike) -> list[str]:
    """Load a local ImageNet ResNet weight file into the encoder of a DI3CL segmentation model.

    The file is read by :func:`di3cl_hf.training.imagenet.load_local_backbone_weights` (safetensors or
    ``torch.load(weights_only=True)``, classifier dropped); conv1 is adapted to the model's input
    channels with timm's rule (summed kernels for 1 channel, repeated and rescaled otherwise).

    Returns:
        The encoder keys the file did not provide (empty for a matching architecture).

    Raises:
        ValueError: no such file, or it does not match the encoder (no key in common, shape mismatch).
    """
    return load_backbone_weights_into(find_encoder(model), weights_file, model.config.backbone)


class LinearProbeHead(nn.Module):
    """BatchNorm + 1x1 convolution on the deepest encoder features, upsampled bilinearly: the linear
    probe of the frozen encoder. Shapes: ``[B, C4, h, w] -> [B, num_labels, h, w]``."""

    def __init__(self, in_channels: int, num_labels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels, affine=False)
        self.classifier = nn.Conv2d(in_channels, num_labels, kernel_size=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.norm(features))


def _encoder_weights(model_ref: str) -> dict[str, torch.Tensor]:
    """The ``DI3CLModel`` tensors (``encoder.*``) of a saved DI3CL folder or Hub id of any DI3CL class."""
    index = cached_file(model_ref, SAFE_WEIGHTS_INDEX_NAME, _raise_exceptions_for_missing_entries=False)
    if index:
        names = sorted(set(json.loads(Path(index).read_text())["weight_map"].values()))
        files = [cached_file(model_ref, name) for name in names]
    else:
        files = [cached_file(model_ref, SAFE_WEIGHTS_NAME)]
    state: dict[str, torch.Tensor] = {}
    for file in files:
        for key, tensor in load_file(file).items():
            key = key.removeprefix(f"{DI3CLForSemanticSegmentation.base_model_prefix}.")
            if key.startswith("encoder."):
                state[key] = tensor
    return state


def segmentation_model_on_encoder(
    model_ref: str, num_channels: int | None = None, **head_kwargs: Any
) -> tuple[nn.Module, Any]:
    """A new segmentation head on the encoder of ``model_ref`` (fp32, eval mode) and its processor.

    The model is built from the folder's config and the encoder weights are loaded into it explicitly and
    strictly (every encoder tensor present, none extra, same shapes): the UperNet heads are new by design,
    so transformers' load report of their ~60 missing tensors is not printed.

    Args:
        model_ref: DI3CL folder (pre-training output, encoder or any DI3CL model) or Hub id.
        num_channels: Input channels of the model (``None``: the encoder's). Another count than the
            encoder's adapts the first convolution and the processor (module docstring).
        head_kwargs: Config overrides of the heads (``num_labels``, ``decoder_hidden_size``, ...).

    Raises:
        RuntimeError: The folder's encoder tensors do not match its config (missing, unexpected, shape).
    """
    model_ref = str(model_ref)
    config = DI3CLConfig.from_pretrained(model_ref, **head_kwargs)
    source_channels = int(config.num_channels)
    target_channels = source_channels if num_channels is None else int(num_channels)
    config.num_channels = target_channels
    model = DI3CLForSemanticSegmentation(config)
    try:
        weights = _encoder_weights(model_ref)
    except SafetensorError as error:
        raise CorruptWeightsError(f"{model_ref}: cannot read the encoder weights ({error})") from error
    if target_channels != source_channels:
        weights = adapt_first_conv(weights, model.base_model.state_dict(), model_ref)
    model.base_model.load_state_dict(weights, strict=True)
    try:
        processor = DI3CLImageProcessor.from_pretrained(model_ref)
    except OSError:
        logger.warning("%s: no preprocessor_config.json; using the default DI3CLImageProcessor", model_ref)
        processor = DI3CLImageProcessor(num_channels=source_channels)
    if target_channels != source_channels:
        processor = adapt_processor_channels(processor, target_channels)
        logger.info("%s: input adapted from %d to %d channel(s)", model_ref, source_channels, target_channels)
    check_channels(model, processor, model_ref)
    return model.float().eval(), processor


def adapt_first_conv(
    weights: dict[str, torch.Tensor], target: dict[str, torch.Tensor], where: str = "encoder"
) -> dict[str, torch.Tensor]:
    """``weights`` with the first convolution's kernel adapted to the input channels of ``target`` (a state dict
    of the same encoder built for another channel count), by timm's rule (module docstring).

    Raises:
        RuntimeError: A tensor other than a first-convolution kernel differs in shape, naming it.
    """
    adapted = dict(weights)
    for key, tensor in weights.items():
        wanted = target.get(key)
        if wanted is None or wanted.shape == tensor.shape:
            continue
        if (
            tensor.ndim != 4
            or wanted.ndim != 4
            or tensor.shape[0] != wanted.shape[0]
            or tensor.shape[2:] != wanted.shape[2:]
        ):
            raise RuntimeError(
                f"{where}: {key} has shape {tuple(tensor.shape)}, the model needs {tuple(wanted.shape)}; only the "
                "first convolution can be adapted to another channel count"
            )
        # base_chans = the source's channels (timm's default 3 is for RGB kernels; 1 -> 2 needs base_chans=1)
        adapted[key] = adapt_input_conv(int(wanted.shape[1]), tensor, base_chans=int(tensor.shape[1]))
    return adapted


def adapt_processor_channels(processor: DI3CLImageProcessor, num_channels: int) -> DI3CLImageProcessor:
    """A copy of ``processor`` for ``num_channels`` inputs: statistics repeated from one channel (else their
    mean for every channel), other settings kept; a ``bands`` choice of another length is dropped."""
    settings = processor.to_dict()
    mean, std = list(processor.image_mean), list(processor.image_std)
    if len(mean) != 1:
        mean, std = [float(np.mean(mean))], [float(np.mean(std))]
    settings.update(num_channels=num_channels, image_mean=mean * num_channels, image_std=std * num_channels)
    if settings.get("bands") is not None and len(settings["bands"]) != num_channels:
        settings["bands"] = None
    for key in ("image_processor_type", "processor_class", "auto_map"):
        settings.pop(key, None)
    return DI3CLImageProcessor(**settings)


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
    return _LinearProbe(model, LinearProbeHead(model.base_model.num_features[-1], model.config.num_labels))


def set_train_mode(network: nn.Module, mode: str) -> None:
    """``train()`` what trains; a frozen encoder stays in ``eval()`` so its BatchNorm statistics are kept."""
    network.train()
    if mode != "full":
        base = network.model if isinstance(network, _LinearProbe) else network
        base.base_model.eval()


class _LinearProbe(nn.Module):
    """Frozen DI3CL encoder + :class:`LinearProbeHead`, returning logits at the input size."""

    def __init__(self, model: nn.Module, head: LinearProbeHead) -> None:
        super().__init__()
        self.model = model
        self.head = head
        self.ignore_index = model.config.semantic_loss_ignore_index

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> Any:
        with torch.no_grad():
            features = self.model.base_model(pixel_values=pixel_values).last_hidden_state
        logits = F.interpolate(self.head(features.float()), size=pixel_values.shape[-2:], mode="bilinear")
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits, labels, ignore_index=self.ignore_index)
        return SemanticSegmenterOutput(loss=loss, logits=logits)


__all__ = [
    "MODES",
    "LinearProbeHead",
    "adapt_first_conv",
    "adapt_processor_channels",
    "configure_trainable",
    "load_imagenet_weights",
    "segmentation_model_on_encoder",
    "set_train_mode",
]
