"""What pre-training, fine-tuning and evaluation share: arguments, checkpoints + resume, precision, trackers.

- :class:`TrainingArguments`: the one vocabulary of run flags (``output_dir``, ``seed``, ``mixed_precision``,
  ``save_steps``, ``save_total_limit``, ``resume_from_checkpoint``, ``logging_steps``, ``report_to``,
  ``disable_tqdm``); :func:`parse_dataclass_args` reads any argument dataclass from the command line or a JSON
  file. Old fine-tuning spellings (``save_every``, ``checkpoints_total_limit``, ``progress``) and the precision
  ``no`` still work for one release, with one deprecation warning each.
- Checkpoints (:func:`save_checkpoint`, :func:`list_checkpoints`, :func:`resolve_checkpoint`,
  :func:`load_checkpoint`): ``<output_dir>/checkpoints/checkpoint-<step>``, written by Accelerate's
  ``save_state`` into a temporary folder renamed into place, the newest ``save_total_limit`` kept. The trainer's
  counters are JSON (``training_state.json``), never pickle. Folders of the older systems (``checkpoint-N`` of
  pre-training with ``custom_checkpoint_0.pkl``, ``step-000000N`` of fine-tuning) are still found and resumed.
- **No pickle is executed on resume**: before Accelerate reads a folder, every pickle-based file in it
  (optimiser, scheduler, RNG states, sampler, the old ``custom_checkpoint_*.pkl``) is opened with
  ``torch.load(weights_only=True)`` (tensors, numpy arrays and plain containers only); anything else is refused
  with :class:`UnsafeCheckpointError`. Accelerate itself then loads those files with ``weights_only=True`` too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import shutil
import sys
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import load as accelerate_safe_load
from transformers import HfArgumentParser

from ..atomic import replace_directory, write_json
from ..runtime import PRECISIONS, accelerate_mixed_precision, normalise_precision, resolve_precision

logger = logging.getLogger(__name__)

CHECKPOINTS_DIRNAME = "checkpoints"
CHECKPOINT_PREFIX = "checkpoint-"
LEGACY_FINETUNE_PREFIX = "step-"
TRAINING_STATE_NAME = "training_state.json"
TRAINER_STATE_NAME = "trainer_state.json"
LEGACY_CUSTOM_STATE = "custom_checkpoint_0.pkl"
PICKLE_SUFFIXES = (".bin", ".pkl", ".pt", ".pth")

_WARNED: set[str] = set()


def warn_deprecated(old: str, new: str) -> None:
    """One ``FutureWarning`` per process for a deprecated flag spelling."""
    if old not in _WARNED:
        _WARNED.add(old)
        warnings.warn(
            f"--{old} is deprecated and will be removed in the next release; use {new}", FutureWarning, 3
        )


# --------------------------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class TrainingArguments:
    """Run flags shared by pre-training, fine-tuning and the evaluation grid (one spelling for one idea)."""

    output_dir: str = field(metadata={"help": "Checkpoints, logs and the trained model go here."})
    seed: int = field(default=0, metadata={"help": "Seed of the model initialisation and the data order."})
    mixed_precision: str = field(
        default="auto",
        metadata={
            "help": f"One of {', '.join(PRECISIONS)} (auto: bf16 only where it is native; 'no' = fp32)."
        },
    )
    logging_steps: int = field(default=10, metadata={"help": "Tracker logging interval in updates."})
    save_steps: int = field(
        default=500, metadata={"help": "Checkpoint interval in updates (0: see each trainer)."}
    )
    save_total_limit: int = field(default=3, metadata={"help": "Checkpoints kept (oldest deleted)."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "'latest' (in output_dir/checkpoints) or a checkpoint folder."}
    )
    report_to: str = field(
        default="tensorboard", metadata={"help": "Accelerate tracker(s), comma-separated, or 'none'."}
    )
    disable_tqdm: bool = field(default=False, metadata={"help": "No progress bar."})
    torch_compile: bool = field(
        default=False,
        metadata={
            "help": "Compile the model with torch.compile (inductor; needs a C++ compiler on CPU). Off by default: "
            "see benchmarks/pretrain_step.py and tests/test_compile.py for the measured gain."
        },
    )

    def __post_init__(self) -> None:
        if self.mixed_precision == "no":
            warn_deprecated("mixed_precision no", "--mixed_precision fp32")
        self.mixed_precision = normalise_precision(self.mixed_precision)
        if self.save_total_limit < 1:
            raise ValueError(
                f"{type(self).__name__}: save_total_limit must be >= 1, got {self.save_total_limit}"
            )


def parse_dataclass_args(dataclass_type: type, argv: list[str] | None = None) -> Any:
    """Parse ``argv`` (or ``sys.argv[1:]``) into one ``dataclass_type`` with ``transformers.HfArgumentParser``;
    a single ``.json`` argument is read as a file of those fields. Shared by the example scripts."""
    parser = HfArgumentParser(dataclass_type)
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        (args,) = parser.parse_json_file(json_file=argv[0])
    else:
        (args,) = parser.parse_args_into_dataclasses(args=argv)
    return args


def check_output_dir(output_dir: str | os.PathLike) -> Path:
    """Refuse, before any work, an ``output_dir`` that exists and is not a folder (or cannot be created)."""
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--output_dir {path}: exists and is not a folder; give a folder path")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"--output_dir {path}: {parent} is a file, not a folder")
            break
    return path


def run_precision(requested: str) -> tuple[str, str]:
    """``(resolved precision, Accelerate's mixed_precision)`` on the device Accelerate will use."""
    forced_cpu = os.environ.get("ACCELERATE_USE_CPU", "false").lower() in ("1", "true", "yes")
    device = torch.device("cuda" if torch.cuda.is_available() and not forced_cpu else "cpu")
    precision = resolve_precision(requested, device)
    return precision, accelerate_mixed_precision(precision)


def maybe_compile(model: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    """``--torch_compile``: compile ``model`` in place (``nn.Module.compile``, inductor). In place, not wrapped:
    parameter names, ``state_dict`` keys, checkpoints and ``save_pretrained`` stay exactly as without it."""
    if enabled:
        model.compile()
        logger.info(
            "torch.compile: %s compiled in place (inductor; first steps include compilation)",
            type(model).__name__,
        )
    return model


def trackers(report_to: str | None) -> list[str] | None:
    """Accelerate's ``log_with`` from ``--report_to`` (``None`` for ``none`` / empty)."""
    if not report_to or report_to == "none":
        return None
    return [name.strip() for name in report_to.split(",") if name.strip()] or None


def tracker_config(args: Any, **extra: Any) -> dict[str, Any]:
    """Hyper-parameters for the trackers: the argument dataclass flattened to scalars, plus ``extra``."""
    values = asdict(args) if hasattr(args, "__dataclass_fields__") else dict(vars(args))
    config = {k: (v if isinstance(v, int | float | str | bool) else str(v)) for k, v in values.items()}
    config.update(extra)
    return config


# --------------------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------------------


class UnsafeCheckpointError(ValueError):
    """A checkpoint file would need arbitrary unpickling (a foreign or tampered checkpoint)."""


def checkpoint_step(path: str | os.PathLike) -> int | None:
    """The step of a checkpoint folder name (``checkpoint-12``, old fine-tuning ``step-0000012``), else None."""
    name = Path(path).name
    for prefix in (CHECKPOINT_PREFIX, LEGACY_FINETUNE_PREFIX):
        suffix = name.removeprefix(prefix)
        if name.startswith(prefix) and suffix.isdigit():
            return int(suffix)
    return None


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary folders of interrupted saves are ignored)."""
    folder = Path(output_dir) / CHECKPOINTS_DIRNAME
    if not folder.is_dir():
        return []
    found = [(checkpoint_step(path), path) for path in folder.iterdir() if path.is_dir()]
    return [
        path
        for step, path in sorted(found, key=lambda item: (item[0] or 0, item[1].name))
        if step is not None
    ]


def _is_checkpoint(path: Path) -> bool:
    if (path / TRAINING_STATE_NAME).is_file() or (path / TRAINER_STATE_NAME).is_file():
        return True
    return path.name.startswith(LEGACY_FINETUNE_PREFIX) and (path / "optimizer.bin").is_file()


def resolve_checkpoint(resume: str, output_dir: str | os.PathLike) -> Path:
    """``'latest'`` -> newest checkpoint of ``output_dir``; anything else must be a checkpoint folder."""
    if resume == "latest":
        checkpoints = list_checkpoints(output_dir)
        if not checkpoints:
            raise ValueError(
                f"--resume_from_checkpoint latest: no checkpoint in {Path(output_dir) / CHECKPOINTS_DIRNAME}"
            )
        return checkpoints[-1]
    path = Path(resume)
    if not path.is_dir() or not _is_checkpoint(path):
        raise ValueError(
            f"{path}: not a DI3CL pre-training checkpoint or fine-tuning checkpoint "
            f"(no {TRAINING_STATE_NAME}; expected a folder written by --save_steps)"
        )
    return path


def save_checkpoint(
    accelerator: Any,
    output_dir: str | os.PathLike,
    step: int,
    state: dict[str, Any],
    save_total_limit: int,
    summary: dict[str, Any] | None = None,
) -> Path:
    """Save the full state atomically as ``checkpoints/checkpoint-<step>``, keeping the newest ``save_total_limit``.

    All processes write into ``checkpoints/.tmp-checkpoint-<step>`` (``save_state``: weights, optimiser,
    scheduler, one RNG file per process); the main process adds ``state`` as ``training_state.json`` (and
    ``summary`` as ``trainer_state.json``); then each node's first process renames the folder (a crash before
    the rename leaves only a temporary folder, which ``latest`` ignores) and deletes the oldest ones.
    """
    folder = Path(output_dir) / CHECKPOINTS_DIRNAME
    final = folder / f"{CHECKPOINT_PREFIX}{step}"
    tmp = folder / f".tmp-{CHECKPOINT_PREFIX}{step}"
    if final.is_dir():
        return final
    if accelerator.is_local_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_local_main_process and tmp.is_dir():
        if accelerator.is_main_process:
            write_json(
                tmp / TRAINING_STATE_NAME, {"global_step": step, **state}, durable=True, sort_keys=True
            )
            if summary is not None:
                write_json(tmp / TRAINER_STATE_NAME, summary, durable=True, sort_keys=True)
        try:
            replace_directory(tmp, final)
        except OSError:  # another node's first process renamed the shared folder already
            if not final.is_dir():
                raise
        _rotate(output_dir, save_total_limit)
    accelerator.wait_for_everyone()
    return final


def _rotate(output_dir: str | os.PathLike, keep: int) -> None:
    checkpoints = list_checkpoints(output_dir)
    for old in checkpoints[: max(0, len(checkpoints) - keep)]:
        trash = old.with_name(f".deleting-{old.name}")
        with contextlib.suppress(OSError):
            os.replace(old, trash)  # rename first: a half-deleted folder never looks like a checkpoint
            shutil.rmtree(trash, ignore_errors=True)


def _safe_unpickle(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with Accelerate's numpy allow-list; refuse anything else."""
    try:
        return accelerate_safe_load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, ValueError, EOFError) as error:
        raise UnsafeCheckpointError(
            f"{path}: refused to load: this file needs arbitrary unpickling (it may run code), which a checkpoint "
            f"written by DI3CL never does. Only resume checkpoints you trust; details: {str(error)[:300]}"
        ) from error


def check_checkpoint_files(path: str | os.PathLike) -> None:
    """Open every pickle-based file of a checkpoint folder with the restricted unpickler (raises
    :class:`UnsafeCheckpointError` naming the file when one needs more than tensors / arrays / plain types)."""
    for file in sorted(Path(path).iterdir()):
        if file.is_file() and file.suffix in PICKLE_SUFFIXES:
            _safe_unpickle(file)


def read_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """The trainer counters of a checkpoint: ``training_state.json``; for older folders the pickled
    ``custom_checkpoint_0.pkl`` read with the restricted unpickler (plain types only), else the step from the
    folder name (old fine-tuning)."""
    path = Path(path)
    if (path / TRAINING_STATE_NAME).is_file():
        return json.loads((path / TRAINING_STATE_NAME).read_text())
    if (path / LEGACY_CUSTOM_STATE).is_file():
        state = _safe_unpickle(path / LEGACY_CUSTOM_STATE)
        if not isinstance(state, dict):
            raise UnsafeCheckpointError(f"{path / LEGACY_CUSTOM_STATE}: expected a dict of counters")
        return dict(state)
    step = checkpoint_step(path)
    if step is None:
        raise ValueError(f"{path}: no {TRAINING_STATE_NAME} and no step in the folder name")
    return {"global_step": step}


def load_checkpoint(accelerator: Any, path: str | os.PathLike) -> dict[str, Any]:
    """Resume the prepared objects of ``accelerator`` from ``path`` and return the trainer counters.

    Every pickle-based file is checked first (:func:`check_checkpoint_files`); nothing is registered with
    ``register_for_checkpointing``, so Accelerate never unpickles a custom state object.
    """
    path = Path(path)
    check_checkpoint_files(path)
    state = read_training_state(path)
    legacy = sorted(path.glob("custom_checkpoint_*.pkl"))
    if not legacy:
        accelerator.load_state(str(path), load_kwargs={"weights_only": True})
        return state
    # Older checkpoints hold the counters in custom_checkpoint_0.pkl (read above, restricted); Accelerate refuses
    # a folder with more custom files than registered objects, so it reads a view of the folder without them.
    with tempfile.TemporaryDirectory(prefix=".resume-", dir=path.parent) as view:
        for file in path.iterdir():
            if file not in legacy:
                os.symlink(file.resolve(), Path(view) / file.name)
        accelerator.load_state(view, load_kwargs={"weights_only": True})
    return state


__all__ = [
    "CHECKPOINTS_DIRNAME",
    "CHECKPOINT_PREFIX",
    "TRAINER_STATE_NAME",
    "TRAINING_STATE_NAME",
    "TrainingArguments",
    "UnsafeCheckpointError",
    "check_checkpoint_files",
    "check_output_dir",
    "checkpoint_step",
    "list_checkpoints",
    "load_checkpoint",
    "parse_dataclass_args",
    "read_training_state",
    "resolve_checkpoint",
    "run_precision",
    "save_checkpoint",
    "tracker_config",
    "trackers",
    "warn_deprecated",
]
