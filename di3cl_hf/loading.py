"""The one way weights enter a DI3CL model, as timm's ``_builder``: every source resolves here.

| source | entry point |
|---|---|
| a folder written by ``save_pretrained`` or a Hub id (``model.safetensors`` or its shards) | :func:`load_model_and_processor`, :func:`load_model`; raw tensors: :func:`pretrained_state_dict` |
| the encoder of any DI3CL folder under a new head (fine-tuning) | :func:`segmentation_model_on_encoder` (:func:`encoder_state_dict`) |
| a local ImageNet ResNet file (timm / torchvision names) | :func:`load_imagenet_weights`, :func:`load_backbone_weights_into` |
| a checkpoint of the original release (:mod:`di3cl_hf.hub.convert` maps its keys) | :func:`read_weights_file` |
| the timm export and the ONNX export (``di3cl export-timm`` / ``export-onnx``) | :func:`load_model` / :func:`load_model_and_processor` |

The rules they share: nothing is unpickled beyond tensors and plain containers (``.safetensors`` files with
safetensors, anything else with ``torch.load(weights_only=True)``); code shipped with a model runs only when
asked (``trust_remote_code``); a task model whose head is missing from the weights is refused; a first
convolution built for another channel count is adapted with timm's rule; each refusal is one line (a
``ValueError`` subclass naming the file). Nothing is downloaded unless a Hub id is given.

:func:`find_encoder` is the one way to find the timm ResNet inside any DI3CL model (``model.base_model.encoder``;
for the pre-training model, the query encoder ``model.di3cl.encoder``).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub import try_to_load_from_cache
from safetensors import SafetensorError
from safetensors.torch import load_file
from timm.models import adapt_input_conv
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForPreTraining,
    AutoModelForSemanticSegmentation,
)
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, cached_file
from transformers.utils import logging as transformers_logging

from .configuration_di3cl import DI3CLConfig
from .di3cl_layers import adapt_input_conv_weight
from .image_processing_di3cl import DI3CLImageProcessor
from .modeling_di3cl import DI3CLForSemanticSegmentation

logger = logging.getLogger(__name__)

AUTO_CLASSES: dict[str, Any] = {
    "segmentation": AutoModelForSemanticSegmentation,
    "features": AutoModel,
    "pretraining": AutoModelForPreTraining,
    "classification": AutoModelForImageClassification,
}
"""Task name -> transformers Auto class. ``"features"`` loads the encoder from any DI3CL folder."""


class CorruptWeightsError(ValueError):
    """A weights file (``model.safetensors``) that cannot be read: truncated, overwritten or not safetensors."""


class ChannelMismatchError(ValueError):
    """The image processor prepares another number of channels than the model takes."""


class RemoteCodeError(ValueError):
    """The model folder needs its own Python code (``auto_map``) and ``trust_remote_code`` was not given."""


class UnsafeWeightsError(ValueError):
    """A pickle-based weights file (``pytorch_model.bin``) holding more than tensors: it would run code."""


class UntrainedHeadError(ValueError):
    """A task model (segmentation, classification) whose head is missing from the weights."""


class WeightsFormatError(ValueError):
    """A weights file that holds something else than a state dict (a mapping of names to tensors)."""


def _offline() -> bool:
    return bool(hub_constants.HF_HUB_OFFLINE)


def _weights_files(model_ref: str) -> list[str]:
    """The safetensors files of a local folder (or of a Hub id in the local cache), for error messages."""
    folder = Path(model_ref)
    if folder.is_dir():
        return [str(path) for path in sorted(folder.glob("*.safetensors"))]
    try:
        cached = try_to_load_from_cache(model_ref, "model.safetensors")
    except ValueError:  # not a valid repository id
        return []
    return [str(cached)] if isinstance(cached, str) else []


def _corrupt_weights(model_ref: str, error: Exception) -> CorruptWeightsError:
    files = _weights_files(model_ref) or [f"the weights of {model_ref}"]
    return CorruptWeightsError(
        f"{', '.join(files)}: cannot read the model weights, the file is corrupt or incomplete ({error}). "
        "Download or save the model again"
    )


def remote_code_error(model_ref: str | Path, error: ValueError) -> ValueError:
    """transformers' "pass trust_remote_code=True" error as one :class:`RemoteCodeError` line; others as they are."""
    if "trust_remote_code" not in str(error):
        return error
    return RemoteCodeError(
        f"{model_ref}: its config.json names a model type this package does not know and asks to run the Python "
        "code shipped with the model (auto_map); refused. Pass --trust-remote-code (trust_remote_code=True) "
        "only if you trust that code"
    )


def _unsafe_weights(model_ref: str) -> UnsafeWeightsError:
    folder = Path(model_ref)
    files = [str(p) for p in sorted(folder.glob("*.bin"))] if folder.is_dir() else []
    return UnsafeWeightsError(
        f"{', '.join(files) or model_ref}: not loadable safely: this pickle holds more than tensors and could run "
        "code (refused, nothing was run); use the model's model.safetensors, or re-save it from a trusted copy "
        "with save_pretrained (safetensors)"
    )


def _check_head_trained(model: nn.Module, missing_keys: Any, model_ref: str, task: str) -> None:
    """Refuse a task model whose head weights were not in the checkpoint (they would be random)."""
    prefix = f"{getattr(model, 'base_model_prefix', '')}."
    head = sorted({key.split(".")[0] for key in missing_keys if not key.startswith(prefix)})
    if head:
        raise UntrainedHeadError(
            f"{model_ref}: no trained {task} head ({', '.join(head)} missing from the weights: a pre-trained "
            "encoder, not a fine-tuned model), so its maps would be random. Fine-tune it first "
            f"(python examples/finetune.py --init di3cl --model_name_or_path {model_ref} ...), or use "
            "`di3cl embed` for its features"
        )


def check_channels(model: nn.Module, processor: Any, where: str | None = None) -> None:
    """Raise :class:`ChannelMismatchError` unless the processor prepares the channels the model takes.

    Found here, when a model is loaded or handed to inference, instead of as a shape error inside the
    first convolution. Models or processors that do not state their channels are not checked.
    """
    model_channels = getattr(getattr(model, "config", None), "num_channels", None)
    processor_channels = getattr(processor, "num_channels", None)
    if model_channels is None or processor_channels is None or int(model_channels) == int(processor_channels):
        return
    prefix = f"{where}: " if where else ""
    raise ChannelMismatchError(
        f"{prefix}the image processor prepares {processor_channels} channel(s) but the model takes "
        f"{model_channels} (config.json num_channels); make num_channels in preprocessor_config.json "
        "match the model, or pass a processor built for it"
    )


def load_model_and_processor(
    model_ref: str | Path,
    task: str = "segmentation",
    processor_overrides: dict[str, Any] | None = None,
    local_files_only: bool = False,
    trust_remote_code: bool = False,
    allow_untrained_head: bool = False,
    **model_kwargs: Any,
) -> tuple[nn.Module, DI3CLImageProcessor]:
    """Load a DI3CL model and its image processor from a local folder or a Hub id.

    A Hub id is resolved online unless ``HF_HUB_OFFLINE`` is set or ``local_files_only``; when the Hub
    cannot be reached, the local Hugging Face cache is used. Folders without a
    ``preprocessor_config.json`` get the default ``DI3CLImageProcessor`` for the model's channels.

    Args:
        model_ref: Folder written by ``save_pretrained`` or Hub id ``org/name``.
        task: A key of :data:`AUTO_CLASSES` (``"segmentation"``, ``"features"``, ``"pretraining"``, ...).
        processor_overrides: Processor settings to override (``input_kind``, ``db_range``,
            ``nodata_value``, ...); ``None`` values are ignored.
        local_files_only: Never contact the Hub.
        trust_remote_code: Run Python code shipped with the model (``auto_map``) for a model type this package
            does not register. Off: such a folder is refused (no interactive prompt).
        allow_untrained_head: Load a segmentation / classification model whose head is not in the weights
            (randomly initialised). Off: refused with :class:`UntrainedHeadError`.
        **model_kwargs: Passed to ``from_pretrained`` of the model (e.g. ``num_labels``, ``id2label``).

    Returns:
        ``(model, processor)``, the model in fp32 and eval mode.

    Raises:
        FileNotFoundError: Neither a folder nor a repository found online or in the cache.
        ValueError: Unknown ``task``.
        CorruptWeightsError: The weights file is corrupt or incomplete (a ``ValueError`` naming the file).
        ChannelMismatchError: The processor's ``num_channels`` is not the model's (a ``ValueError``).
        RemoteCodeError, UnsafeWeightsError, UntrainedHeadError: see ``trust_remote_code``, a pickled weights
            file that is more than tensors, ``allow_untrained_head`` (``ValueError`` subclasses).
    """
    model, offline = _load_model(
        model_ref, task, local_files_only, trust_remote_code, allow_untrained_head, model_kwargs
    )
    processor = _load_processor(str(model_ref), model, offline, processor_overrides)
    check_channels(model, processor, str(model_ref))
    return model, processor


def load_model(
    model_ref: str | Path,
    task: str = "segmentation",
    local_files_only: bool = False,
    trust_remote_code: bool = False,
    allow_untrained_head: bool = False,
    **model_kwargs: Any,
) -> nn.Module:
    """The model of :func:`load_model_and_processor` alone (fp32, eval mode), with the same checks and errors."""
    model, _ = _load_model(
        model_ref, task, local_files_only, trust_remote_code, allow_untrained_head, model_kwargs
    )
    return model


def _load_model(
    model_ref: str | Path,
    task: str,
    local_files_only: bool,
    trust_remote_code: bool,
    allow_untrained_head: bool,
    model_kwargs: dict[str, Any],
) -> tuple[nn.Module, bool]:
    """``(model in eval mode, whether the processor must be read offline too)``; errors as one line each."""
    if task not in AUTO_CLASSES:
        raise ValueError(f"task must be one of {sorted(AUTO_CLASSES)}, got {task!r}")
    model_ref = str(model_ref)
    is_local = Path(model_ref).exists()
    if is_local and not Path(model_ref, "config.json").is_file():
        raise FileNotFoundError(f"{model_ref}: no config.json; expected a folder written by save_pretrained")
    offline = is_local or local_files_only or _offline()
    kwargs = {"dtype": torch.float32, **model_kwargs}
    kwargs.update(trust_remote_code=trust_remote_code, output_loading_info=True)
    try:
        try:
            model, info = AUTO_CLASSES[task].from_pretrained(model_ref, local_files_only=offline, **kwargs)
        except OSError:
            if offline:
                raise
            warnings.warn(f"{model_ref}: Hub not reachable, using the local cache", stacklevel=3)
            offline = True
            model, info = AUTO_CLASSES[task].from_pretrained(model_ref, local_files_only=True, **kwargs)
    except SafetensorError as error:
        raise _corrupt_weights(model_ref, error) from error
    except pickle.UnpicklingError as error:
        raise _unsafe_weights(model_ref) from error
    except OSError as error:
        where = "folder" if is_local else "Hub repository (online or in the local Hugging Face cache)"
        raise FileNotFoundError(
            f"{model_ref}: cannot load a DI3CL model from this {where}: {error}"
        ) from error
    except ValueError as error:
        raise remote_code_error(model_ref, error) from None
    if task in ("segmentation", "classification") and not allow_untrained_head:
        _check_head_trained(model, info.get("missing_keys", ()), model_ref, task)
    return model.eval(), offline


def _load_processor(
    model_ref: str, model: nn.Module, offline: bool, overrides: dict[str, Any] | None
) -> DI3CLImageProcessor:
    """The folder's processor with ``overrides`` (``None`` values ignored), else the default for the model."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    try:
        return DI3CLImageProcessor.from_pretrained(model_ref, local_files_only=offline, **overrides)
    except OSError:
        warnings.warn(
            f"{model_ref}: no preprocessor_config.json; using the default DI3CLImageProcessor "
            f"(num_channels={model.config.num_channels}, dB range -30..5, auto radiometry)",
            stacklevel=3,
        )
        return DI3CLImageProcessor(num_channels=model.config.num_channels, **overrides)


def load_encoder_quietly(model_ref: str | os.PathLike, local_files_only: bool = True) -> nn.Module:
    """The ``DI3CLModel`` (encoder) of any DI3CL folder, fp32, without transformers' report of the task heads
    it leaves out (they are left out by design). Used by the timm export."""
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        return load_model(model_ref, "features", local_files_only=local_files_only)
    finally:
        transformers_logging.set_verbosity(verbosity)


# --------------------------------------------------------------------------------------------------------------
# Weight files and raw state dicts
# --------------------------------------------------------------------------------------------------------------


def read_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of one local weights file, never running code.

    ``.safetensors`` is read with safetensors; anything else with ``torch.load(weights_only=True)`` (tensors,
    numpy arrays and plain containers only), then a ``{"state_dict": ...}`` / ``{"model": ...}`` wrapper is
    removed. DDP's ``module.`` prefixes are removed from the names.

    Raises:
        FileNotFoundError: No such file.
        CorruptWeightsError: An unreadable safetensors file.
        UnsafeWeightsError: A pickle that needs more than the weights-only unpickler (it could run code).
        WeightsFormatError: The file holds something else than a mapping of names to tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        try:
            state: Any = load_file(str(path))
        except SafetensorError as error:
            raise _corrupt_weights(str(path), error) from error
    else:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as error:  # unpickling errors of many kinds
            raise UnsafeWeightsError(
                f"{path}: cannot be read as a weights-only PyTorch checkpoint ({type(error).__name__}: {error})"
            ) from error
        for key in ("state_dict", "model"):
            if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
                state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsFormatError(f"{path}: expected a dict of tensors (a state dict)")
    return {key.removeprefix("module."): value for key, value in state.items()}


def pretrained_state_dict(model_ref: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor of a saved model folder or Hub id: ``model.safetensors`` or the shards its
    ``model.safetensors.index.json`` names (resolved by transformers' ``cached_file``)."""
    model_ref = str(model_ref)
    index = cached_file(model_ref, SAFE_WEIGHTS_INDEX_NAME, _raise_exceptions_for_missing_entries=False)
    if index:
        names = sorted(set(json.loads(Path(index).read_text())["weight_map"].values()))
        files = [cached_file(model_ref, name) for name in names]
    else:
        files = [cached_file(model_ref, SAFE_WEIGHTS_NAME)]
    state: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            state.update(load_file(file))
        except SafetensorError as error:
            raise CorruptWeightsError(f"{model_ref}: cannot read the weights ({error})") from error
    return state


def encoder_state_dict(model_ref: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ``DI3CLModel`` tensors (``encoder.*``) of a saved DI3CL folder or Hub id of any DI3CL class (the
    pre-training model's query encoder, a task model's encoder)."""
    prefix = f"{DI3CLForSemanticSegmentation.base_model_prefix}."
    state: dict[str, torch.Tensor] = {}
    for key, tensor in pretrained_state_dict(model_ref).items():
        key = key.removeprefix(prefix)
        if key.startswith("encoder."):
            state[key] = tensor
    return state


# --------------------------------------------------------------------------------------------------------------
# ImageNet weights (local files only)
# --------------------------------------------------------------------------------------------------------------


def load_local_backbone_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a local ResNet weight file (timm / torchvision names) with :func:`read_weights_file`; the classifier
    (``fc.*``, ``head.fc.*``, ``classifier.*``) is dropped. ImageNet weights are never downloaded."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such weight file (ImageNet weights are only read from a local file)")
    state = read_weights_file(path)
    return {
        key: value for key, value in state.items() if not key.startswith(("fc.", "head.fc.", "classifier."))
    }


def load_backbone_weights_into(encoder: nn.Module, path: str | os.PathLike, backbone: str) -> list[str]:
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


def load_imagenet_weights(model: nn.Module, weights_file: str | os.PathLike) -> list[str]:
    """Load a local ImageNet ResNet weight file into the encoder of any DI3CL model (:func:`find_encoder`).

    Returns:
        The encoder keys the file did not provide (empty for a matching architecture).

    Raises:
        ValueError: no such file, or it does not match the encoder (no key in common, shape mismatch).
    """
    return load_backbone_weights_into(find_encoder(model), weights_file, model.config.backbone)


# --------------------------------------------------------------------------------------------------------------
# An encoder under a new head
# --------------------------------------------------------------------------------------------------------------


def segmentation_model_on_encoder(
    model_ref: str, num_channels: int | None = None, **head_kwargs: Any
) -> tuple[nn.Module, Any]:
    """A new segmentation head on the encoder of ``model_ref`` (fp32, eval mode) and its processor.

    The model is built from the folder's config and the encoder weights (:func:`encoder_state_dict`) are loaded
    into it explicitly and strictly (every encoder tensor present, none extra, same shapes): the UperNet heads are
    new by design, so transformers' load report of their ~60 missing tensors is not printed.

    **Channel adaptation** (``num_channels`` other than the encoder's): an encoder pre-trained on one channel
    (VH) can be fine-tuned on two (VV + VH, or OMBRIA's before + after), and the reverse. The first
    convolution's kernel ``[O, I, kh, kw]`` is adapted with timm's rule (:func:`timm.models.adapt_input_conv`,
    with ``base_chans=I``): to 1 channel the kernels are summed over ``I``; to ``N`` channels they are repeated
    cyclically and scaled by ``I / N``. So a band fed identically to all ``N`` channels gives exactly the
    pre-trained output of that band fed to a 1-channel encoder (and, from ``I`` channels, whenever ``N`` is a
    multiple of ``I``). The processor follows (:func:`adapt_processor_channels`).

    Args:
        model_ref: DI3CL folder (pre-training output, encoder or any DI3CL model) or Hub id.
        num_channels: Input channels of the model (``None``: the encoder's).
        head_kwargs: Config overrides of the heads (``num_labels``, ``decoder_hidden_size``, ...).

    Raises:
        RuntimeError: The folder's encoder tensors do not match its config (missing, unexpected, shape).
        CorruptWeightsError: The weights cannot be read.
    """
    model_ref = str(model_ref)
    config = DI3CLConfig.from_pretrained(model_ref, **head_kwargs)
    source_channels = int(config.num_channels)
    target_channels = source_channels if num_channels is None else int(num_channels)
    config.num_channels = target_channels
    model = DI3CLForSemanticSegmentation(config)
    weights = encoder_state_dict(model_ref)
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
    of the same encoder built for another channel count), by timm's rule (:func:`segmentation_model_on_encoder`).

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
    mean for every channel), so identical bands are normalised identically; other settings kept; a ``bands``
    choice of another length is dropped."""
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


def find_encoder(model: nn.Module) -> nn.Module:
    """The timm ResNet feature extractor inside a DI3CL model (timm parameter names, ``feature_info``).

    ``DI3CLModel`` / ``DI3CLBackbone`` / task heads keep it at ``base_model.encoder``; the pre-training
    model's query encoder is ``di3cl.encoder``.
    """
    for owner in (getattr(model, "base_model", model), getattr(model, "di3cl", None), model):
        encoder = getattr(owner, "encoder", None) if owner is not None else None
        if encoder is not None and hasattr(encoder, "feature_info"):
            return encoder
    raise ValueError(f"{type(model).__name__}: no timm encoder at base_model.encoder or di3cl.encoder")


__all__ = [
    "AUTO_CLASSES",
    "ChannelMismatchError",
    "CorruptWeightsError",
    "RemoteCodeError",
    "UnsafeWeightsError",
    "UntrainedHeadError",
    "WeightsFormatError",
    "adapt_first_conv",
    "adapt_processor_channels",
    "check_channels",
    "encoder_state_dict",
    "find_encoder",
    "load_backbone_weights_into",
    "load_encoder_quietly",
    "load_imagenet_weights",
    "load_local_backbone_weights",
    "load_model",
    "load_model_and_processor",
    "pretrained_state_dict",
    "read_weights_file",
    "remote_code_error",
    "segmentation_model_on_encoder",
]
