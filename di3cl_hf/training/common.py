"""What pre-training, fine-tuning and evaluation share: arguments, the Accelerator, the run folder, checkpoints.

- :class:`TrainingArguments`: the one vocabulary of run flags (``output_dir``, ``seed``, ``mixed_precision``,
  ``save_steps``, ``save_total_limit``, ``resume_from_checkpoint``, ``logging_steps``, ``report_to``,
  ``disable_tqdm``); :func:`parse_dataclass_args` reads any argument dataclass from the command line or a JSON
  file. Old fine-tuning spellings (``save_every``, ``checkpoints_total_limit``, ``progress``) and the precision
  ``no`` still work for one release, with one deprecation warning each.
- :func:`build_accelerator`: the one device rule (:func:`training_device`), precision (:func:`run_precision`),
  trackers and log folder of every loop; the run folder's layout is :data:`RUN_LAYOUT` (marker, ``config.json``,
  ``checkpoints/``, ``logs/``, ``metrics.json``, card).
- Checkpoints (:func:`save_checkpoint`, :func:`list_checkpoints`, :func:`resolve_checkpoint`,
  :func:`load_checkpoint`): ``<output_dir>/checkpoints/checkpoint-<step>``, written by Accelerate's
  ``save_state`` into a temporary folder renamed into place, the newest ``save_total_limit`` kept. The trainer's
  counters are JSON (``training_state.json``), never pickle. Folders of the older systems (``checkpoint-N`` of
  pre-training with ``custom_checkpoint_0.pkl``, ``step-000000N`` of fine-tuning) are still found and resumed.
- **Nothing of the user's is replaced or deleted** (:func:`check_output_dir`, :func:`save_checkpoint`): a run
  claims its ``output_dir`` with a :data:`RUN_MARKER` file (a run id) and refuses, before any work, a non-empty
  folder without one, unless ``--overwrite_output_dir`` or ``--resume_from_checkpoint`` (``latest`` or a
  checkpoint inside the folder) says it is the user's wish. Each checkpoint carries the run id
  (:data:`CHECKPOINT_MARKER`); ``save_total_limit`` rotation deletes only checkpoints of the same run family
  (the run and its resumptions), never a folder someone else put under ``checkpoints/``.
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
import uuid
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration
from accelerate.utils import load as accelerate_safe_load
from transformers import HfArgumentParser

from ..atomic import replace_directory, write_json, write_text
from ..runtime import PRECISIONS, accelerate_mixed_precision, normalise_precision, resolve_precision

logger = logging.getLogger(__name__)

CHECKPOINTS_DIRNAME = "checkpoints"
CHECKPOINT_PREFIX = "checkpoint-"
LEGACY_FINETUNE_PREFIX = "step-"
TRAINING_STATE_NAME = "training_state.json"
TRAINER_STATE_NAME = "trainer_state.json"
LEGACY_CUSTOM_STATE = "custom_checkpoint_0.pkl"
PICKLE_SUFFIXES = (".bin", ".pkl", ".pt", ".pth")
RUN_MARKER = ".di3cl-run"
CHECKPOINT_MARKER = ".di3cl-checkpoint"
LOGS_DIRNAME = "logs"
RUN_CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.json"
CARD_NAME = "README.md"
RUN_LAYOUT = {
    RUN_MARKER: "the run id: this folder is the run's (later runs of the family may replace its files)",
    RUN_CONFIG_NAME: "the DI3CLConfig of the model the run trains",
    f"{CHECKPOINTS_DIRNAME}/": "checkpoint-<step> folders (resume with --resume_from_checkpoint)",
    f"{LOGS_DIRNAME}/": "tracker logs (TensorBoard by default)",
    METRICS_NAME: "the final metrics and the run summary",
    CARD_NAME: "the model card of what the run produced",
}
"""The run folder (``--output_dir``) of every loop. Pre-training adds ``encoder/`` (and ``best-encoder/``, each a
model folder with its processor and card) and ``trainer_state.json``; fine-tuning writes its model's files
(``model.safetensors``, ``preprocessor_config.json``) beside ``config.json``, and ``metrics.md``."""

# output_dir (absolute) -> (overwrite_output_dir, resume_from_checkpoint) of the TrainingArguments built for it:
# what check_output_dir(args.output_dir) falls back to when its caller does not pass the flags.
_OUTPUT_DIR_FLAGS: dict[str, tuple[bool, str | None]] = {}

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
    save_total_limit: int = field(
        default=3,
        metadata={
            "help": "Checkpoints of this run kept (its oldest deleted; never a checkpoint it did not write)."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Write into a non-empty output_dir that no DI3CL run wrote (its files may be replaced; "
            "checkpoints already there are kept). Without it such a folder is refused."
        },
    )
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
        _OUTPUT_DIR_FLAGS[os.path.abspath(self.output_dir)] = (
            bool(self.overwrite_output_dir),
            self.resume_from_checkpoint,
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


def check_output_dir(
    output_dir: str | os.PathLike,
    *,
    overwrite_output_dir: bool | None = None,
    resume_from_checkpoint: str | None = None,
) -> Path:
    """Check ``output_dir`` before any work and claim it for this run (:data:`RUN_MARKER`); return it as a Path.

    Refused (``ValueError``, one line): an existing file or a file among its parents, a folder that cannot be
    written, and a non-empty folder that no DI3CL run wrote (no marker) unless ``overwrite_output_dir`` or
    ``resume_from_checkpoint`` (``"latest"`` or a checkpoint inside the folder) is given. The flags default to
    those of the :class:`TrainingArguments` built for this ``output_dir`` (so ``check_output_dir(args.output_dir)``
    honours ``--overwrite_output_dir`` / ``--resume_from_checkpoint``). When a run resumes in a folder without
    marker (written before markers existed), its checkpoints are adopted: rotation may then delete them.
    """
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--output_dir {path}: exists and is not a folder; give a folder path")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"--output_dir {path}: {parent} is a file, not a folder")
            break
    if overwrite_output_dir is None and resume_from_checkpoint is None:
        overwrite_output_dir, resume_from_checkpoint = _OUTPUT_DIR_FLAGS.get(
            os.path.abspath(path), (False, None)
        )
    resumes_here = _resumes_inside(resume_from_checkpoint, path)
    if path.is_dir() and not (path / RUN_MARKER).is_file() and any(path.iterdir()):
        if not (overwrite_output_dir or resumes_here):
            raise ValueError(
                f"--output_dir {path}: is not empty and was not written by a DI3CL training run (no {RUN_MARKER} "
                "file); its files would be replaced. Choose a new or empty folder, or pass --overwrite_output_dir "
                "to write into it (checkpoints already there are kept)"
            )
    try:
        path.mkdir(parents=True, exist_ok=True)
        _claim(path, adopt=resumes_here)
    except OSError as error:
        raise ValueError(f"--output_dir {path}: cannot write there ({error.strerror or error})") from error
    return path


def _resumes_inside(resume: str | None, output_dir: Path) -> bool:
    """Whether ``--resume_from_checkpoint`` continues a run of ``output_dir`` (``latest`` or a folder inside it)."""
    if not resume:
        return False
    if resume == "latest":
        return True
    return Path(resume).resolve().is_relative_to(output_dir.resolve())


def _claim(output_dir: Path, adopt: bool = False) -> str:
    """The run id of ``output_dir``, writing :data:`RUN_MARKER` first if it has none (exclusive create: of
    several processes starting together, one writes it and all read it). ``adopt``: the complete checkpoints
    already in the folder become this run family's (a run resumed in a folder written before markers)."""
    marker = output_dir / RUN_MARKER
    if not marker.is_file():
        adopted = [p.name for p in list_checkpoints(output_dir) if _is_checkpoint(p)] if adopt else []
        content = {
            "run_id": uuid.uuid4().hex,
            "adopted_checkpoints": adopted,
            "note": "Written by a DI3CL training run: this folder is the run's, later runs may replace its files.",
        }
        with contextlib.suppress(FileExistsError):
            descriptor = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(json.dumps(content, indent=1) + "\n")
    return str(_run_marker(output_dir).get("run_id", ""))


def _run_marker(output_dir: str | os.PathLike) -> dict[str, Any]:
    try:
        content = json.loads((Path(output_dir) / RUN_MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def accelerate_forced_cpu() -> bool:
    """Whether Accelerate is told to use the CPU (``ACCELERATE_USE_CPU``, as ``accelerate launch --cpu`` sets it)."""
    return os.environ.get("ACCELERATE_USE_CPU", "false").lower() in ("1", "true", "yes")


def training_device() -> torch.device:
    """The device rule of every loop: CUDA when available and not forced off (:func:`accelerate_forced_cpu`),
    else the CPU: the device Accelerate will use."""
    return torch.device("cuda" if torch.cuda.is_available() and not accelerate_forced_cpu() else "cpu")


def run_precision(requested: str) -> tuple[str, str]:
    """``(resolved precision, Accelerate's mixed_precision)`` on :func:`training_device`."""
    precision = resolve_precision(requested, training_device())
    return precision, accelerate_mixed_precision(precision)


def build_accelerator(args: TrainingArguments, **options: Any) -> tuple[Accelerator, str]:
    """The one ``Accelerator`` of every loop and the resolved precision (:func:`run_precision`).

    Device by :func:`training_device`; with several processes on the CPU (``accelerate launch --multi_gpu`` on a
    machine without GPUs) Accelerate is told to use the CPU so that it builds a gloo process group (MULTI_CPU)
    instead of every process training alone. Trackers from ``--report_to``, their logs in
    ``<output_dir>/logs`` (:data:`LOGS_DIRNAME`). ``options`` go to ``Accelerator`` as they are
    (``gradient_accumulation_steps``, ``kwargs_handlers``, ``dataloader_config``, ...).
    """
    precision, mixed_precision = run_precision(args.mixed_precision)
    several_cpu_processes = training_device().type == "cpu" and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(
        cpu=several_cpu_processes,
        mixed_precision=mixed_precision,
        log_with=trackers(args.report_to),
        project_config=ProjectConfiguration(
            project_dir=str(args.output_dir), logging_dir=str(Path(args.output_dir) / LOGS_DIRNAME)
        ),
        **options,
    )
    return accelerator, precision


def write_run_config(accelerator: Any, output_dir: str | os.PathLike, config: Any) -> None:
    """Write :data:`RUN_CONFIG_NAME` (the model's ``PretrainedConfig``, as ``save_pretrained`` writes it) into the
    run folder, on the main process, atomically."""
    if accelerator.is_main_process:
        write_text(Path(output_dir) / RUN_CONFIG_NAME, config.to_json_string())


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
    """Save the full state atomically as ``checkpoints/checkpoint-<step>``, keeping the newest ``save_total_limit``
    of this run family (the run id of ``output_dir``'s :data:`RUN_MARKER`, recorded in each checkpoint).

    All processes write into ``checkpoints/.tmp-checkpoint-<step>`` (``save_state``: weights, optimiser,
    scheduler, one RNG file per process); the main process adds ``state`` as ``training_state.json`` (and
    ``summary`` as ``trainer_state.json``); then each node's first process renames the folder (a crash before
    the rename leaves only a temporary folder, which ``latest`` ignores) and deletes the oldest ones.
    """
    folder = Path(output_dir) / CHECKPOINTS_DIRNAME
    final = folder / f"{CHECKPOINT_PREFIX}{step}"
    tmp = folder / f".tmp-{CHECKPOINT_PREFIX}{step}"
    if final.is_dir():
        marker = _run_marker(output_dir)
        if not _written_by_this_run(
            final, str(marker.get("run_id", "")), marker.get("adopted_checkpoints", [])
        ):
            logger.warning(
                "%s: not written by this run, left as it is (this step's state is not saved)", final
            )
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
            write_json(tmp / CHECKPOINT_MARKER, {"run_id": _claim(Path(output_dir))})
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


def _written_by_this_run(checkpoint: Path, run_id: str, adopted: list[str]) -> bool:
    if checkpoint.name in adopted:
        return True
    try:
        return (
            bool(run_id) and json.loads((checkpoint / CHECKPOINT_MARKER).read_text()).get("run_id") == run_id
        )
    except (OSError, ValueError, AttributeError):
        return False


def _rotate(output_dir: str | os.PathLike, keep: int) -> None:
    """Delete the oldest checkpoints of this run family beyond ``keep``; others' checkpoints are never touched."""
    marker = _run_marker(output_dir)
    run_id, adopted = str(marker.get("run_id", "")), list(marker.get("adopted_checkpoints", []))
    checkpoints = [p for p in list_checkpoints(output_dir) if _written_by_this_run(p, run_id, adopted)]
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
    "CARD_NAME",
    "CHECKPOINTS_DIRNAME",
    "CHECKPOINT_MARKER",
    "CHECKPOINT_PREFIX",
    "LOGS_DIRNAME",
    "METRICS_NAME",
    "RUN_CONFIG_NAME",
    "RUN_LAYOUT",
    "RUN_MARKER",
    "TRAINER_STATE_NAME",
    "TRAINING_STATE_NAME",
    "TrainingArguments",
    "UnsafeCheckpointError",
    "accelerate_forced_cpu",
    "build_accelerator",
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
    "training_device",
    "warn_deprecated",
    "write_run_config",
]
