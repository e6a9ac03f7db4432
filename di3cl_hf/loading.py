"""Loading a DI3CL model with its image processor, and finding the timm encoder inside any DI3CL model.

One implementation each, used by scene inference, fine-tuning, evaluation, the Hub export and the Space:

- :func:`load_model_and_processor`: a folder written by ``save_pretrained`` or a Hub id, through the Auto
  classes of the requested task, with the saved ``DI3CLImageProcessor`` or, for folders without one, the
  default processor for the model's channels (with a warning). Never runs code shipped with the model
  (``trust_remote_code=False`` unless asked: no prompt), never unpickles more than tensors, and refuses a
  task model whose head is missing from the weights (a pre-trained encoder is not a segmenter); each
  refusal is one line (a ``ValueError`` subclass).
- :func:`find_encoder`: the timm ResNet feature extractor (``model.base_model.encoder``; for the
  pre-training model, the query encoder ``model.di3cl.encoder``).
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub import try_to_load_from_cache
from safetensors import SafetensorError
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForPreTraining,
    AutoModelForSemanticSegmentation,
)

from .image_processing_di3cl import DI3CLImageProcessor

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
    if task not in AUTO_CLASSES:
        raise ValueError(f"task must be one of {sorted(AUTO_CLASSES)}, got {task!r}")
    auto_class = AUTO_CLASSES[task]
    model_ref = str(model_ref)
    overrides = {k: v for k, v in (processor_overrides or {}).items() if v is not None}
    is_local = Path(model_ref).exists()
    if is_local and not Path(model_ref, "config.json").is_file():
        raise FileNotFoundError(f"{model_ref}: no config.json; expected a folder written by save_pretrained")
    offline = is_local or local_files_only or _offline()

    def load(cls: Any, local_only: bool, **kwargs: Any) -> Any:
        return cls.from_pretrained(model_ref, local_files_only=local_only, **kwargs)

    model_kwargs.setdefault("dtype", torch.float32)
    model_kwargs.update(trust_remote_code=trust_remote_code, output_loading_info=True)
    try:
        try:
            model, info = load(auto_class, offline, **model_kwargs)
        except OSError:
            if offline:
                raise
            warnings.warn(f"{model_ref}: Hub not reachable, using the local cache", stacklevel=2)
            offline = True
            model, info = load(auto_class, True, **model_kwargs)
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
    try:
        processor = load(DI3CLImageProcessor, offline, **overrides)
    except OSError:
        warnings.warn(
            f"{model_ref}: no preprocessor_config.json; using the default DI3CLImageProcessor "
            f"(num_channels={model.config.num_channels}, dB range -30..5, auto radiometry)",
            stacklevel=2,
        )
        processor = DI3CLImageProcessor(num_channels=model.config.num_channels, **overrides)
    check_channels(model, processor, model_ref)
    return model.eval(), processor


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
    "check_channels",
    "find_encoder",
    "load_model_and_processor",
    "remote_code_error",
]
