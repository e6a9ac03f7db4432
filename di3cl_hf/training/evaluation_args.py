"""The arguments of ``di3cl evaluate``'s modes (each field a ``--name`` flag through ``transformers.HfArgumentParser``):

- :class:`EvaluationGridArguments` (``grid``, ``examples/evaluate.py``): initialisation x label fraction x task,
  every run fine-tuned with the same :class:`~di3cl_hf.training.finetuning_args.FinetuneBudget`;
- :class:`ProbeArguments` (``probe``): frozen encoders scored on labelled image chips (linear probe, k-NN,
  few-shot probes, :mod:`di3cl_hf.training.probing`);
- :class:`ModelEvaluationArguments` (``model``): a saved segmentation model scored on a labelled split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .common import parse_dataclass_args
from .finetuning_args import INITIALISATIONS, TASKS, FinetuneBudget

PROBE_RADIOMETRY = ("dn8", "amplitude")
PROBE_NORMALISATION = ("fit", "processor")


def _budget_default(name: str, default: Any) -> Any:
    """A FinetuneBudget field with another default (same help text)."""
    return field(default=default, metadata=FinetuneBudget.__dataclass_fields__[name].metadata)


@dataclass(kw_only=True)
class EvaluationGridArguments(FinetuneBudget):
    """Arguments of the evaluation grid (``di3cl evaluate grid``, ``examples/evaluate.py``). The budget every fine-tuning of the grid
    shares is a :class:`~di3cl_hf.training.finetuning.FinetuneBudget` (inherited, passed on as is); the defaults
    below are the grid's (a small, quick budget)."""

    output_dir: str = field(
        metadata={"help": "evaluation.json, evaluation.md and label_efficiency.png go here."}
    )
    pretrained_model: str | None = field(
        default=None, metadata={"help": "DI3CL checkpoint folder for the 'di3cl' initialisation."}
    )
    tasks: list[str] = field(default_factory=lambda: list(TASKS), metadata={"help": "Tasks of the grid."})
    initialisations: list[str] = field(
        default_factory=lambda: ["di3cl", "random"], metadata={"help": "Initialisations compared."}
    )
    label_fractions: list[float] = field(
        default_factory=lambda: [0.01, 0.1], metadata={"help": "Fractions of labelled training samples."}
    )
    seeds: list[int] = field(
        default_factory=lambda: [0],
        metadata={
            "help": "Seeds; each (task, init, fraction) runs once per seed (label subset, heads, data order)."
        },
    )
    kmeans: bool = field(
        default=True, metadata={"help": "Also score k-means clusters of the frozen encoder."}
    )
    save_models: bool = field(
        default=False,
        metadata={"help": "Keep every fine-tuned model (save_pretrained + processor + card) under runs/."},
    )
    kmeans_stage: str = field(default="stage3", metadata={"help": "Encoder stage clustered by k-means."})
    metric: str = field(
        default="miou", metadata={"help": "Metric of the curves: miou, overall_accuracy, kappa."}
    )
    num_threads: int = field(
        default=0,
        metadata={"help": "torch intra-op threads (0: torch's default; 1 is fastest on a small shared CPU)."},
    )
    # The grid's budget defaults (the fields themselves, with their help, are FinetuneBudget's).
    backbone: str = _budget_default("backbone", "resnet18")
    crop_size: int | None = _budget_default("crop_size", 128)
    batch_size: int = _budget_default("batch_size", 4)
    max_steps: int = _budget_default("max_steps", 100)
    learning_rate: float = _budget_default("learning_rate", 5e-4)
    decoder_hidden_size: int = _budget_default("decoder_hidden_size", 128)

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [name for name in self.initialisations if name not in INITIALISATIONS]
        if unknown:
            raise ValueError(
                f"EvaluationGridArguments: unknown initialisations {unknown}, expected {INITIALISATIONS}"
            )
        if "di3cl" in self.initialisations and not self.pretrained_model:
            raise ValueError("EvaluationGridArguments: the 'di3cl' initialisation needs --pretrained_model")
        if self.metric not in ("miou", "overall_accuracy", "kappa", "mean_f1"):
            raise ValueError(
                f"EvaluationGridArguments: metric={self.metric!r}, expected miou/overall_accuracy/kappa"
            )


@dataclass(kw_only=True)
class ProbeArguments:
    """Arguments of the probes (``di3cl evaluate probe``): frozen encoders scored on labelled image chips laid out as
    ``<data_dir>/<split>/<class name>/<image>`` (e.g. MSTAR-10, 17 degrees train / 15 degrees test). The protocol
    is :mod:`di3cl_hf.training.probing`'s (the one behind ``examples/evaluate_mstar.py``)."""

    data_dir: str = field(metadata={"help": "Labelled chips: <data_dir>/<split>/<class name>/<image>."})
    encoders: list[str] = field(
        metadata={
            "help": "NAME=FOLDER (a DI3CL folder written by save_pretrained) or NAME=random, one or more."
        }
    )
    output_dir: str = field(metadata={"help": "probes.json and probes.md go here."})
    train_split: str = field(default="train", metadata={"help": "Split the probes are fitted on."})
    test_split: str = field(default="test", metadata={"help": "Split the probes are scored on."})
    crop: int = field(default=128, metadata={"help": "Centre crop of every chip, pixels."})
    size: int = field(default=128, metadata={"help": "Encoder input size after the crop, pixels."})
    radiometry: str = field(
        default="dn8",
        metadata={
            "help": "dn8: the 8-bit values as a display quick-look; amplitude: 8-bit magnitude -> 20 log10 dB, "
            "per-chip 1-99.9 percentile clip."
        },
    )
    normalisation: str = field(
        default="fit",
        metadata={
            "help": "fit: mean/std measured on 500 train chips (the same inputs for every encoder); processor: "
            "each folder's."
        },
    )
    backbone: str = field(default="resnet18", metadata={"help": "Backbone of NAME=random."})
    num_channels: int = field(default=1, metadata={"help": "Channels of NAME=random."})
    random_seed: int = field(default=0, metadata={"help": "Seed of NAME=random's initialisation."})
    batch_size: int = field(default=64, metadata={"help": "Chips per forward pass."})
    epochs: int = field(default=300, metadata={"help": "Full-batch Adam steps of every linear probe."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "Probe seeds."})
    shots: list[int] = field(default_factory=lambda: [1, 5, 10], metadata={"help": "k of the k-shot probes."})
    knn_k: list[int] = field(
        default_factory=lambda: [1, 20],
        metadata={"help": "k of the k-NN classifiers (at most the train chips)."},
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "Feature cache folder (default: none, features are recomputed)."}
    )
    num_threads: int = field(default=0, metadata={"help": "torch intra-op threads (0: torch's default)."})

    def __post_init__(self) -> None:
        if self.radiometry not in PROBE_RADIOMETRY:
            raise ValueError(
                f"ProbeArguments: radiometry={self.radiometry!r}, expected one of {PROBE_RADIOMETRY}"
            )
        if self.normalisation not in PROBE_NORMALISATION:
            raise ValueError(
                f"ProbeArguments: normalisation={self.normalisation!r}, expected one of {PROBE_NORMALISATION}"
            )
        bad = [spec for spec in self.encoders if not spec.partition("=")[2]]
        if bad:
            raise ValueError(f"ProbeArguments: encoders {bad}: expected NAME=FOLDER or NAME=random")


@dataclass(kw_only=True)
class ModelEvaluationArguments:
    """Arguments of ``di3cl evaluate model``: a saved segmentation model (``save_pretrained`` folder or Hub id)
    scored on one split of a labelled segmentation folder, with the fine-tuning metrics."""

    model_name_or_path: str = field(metadata={"help": "Segmentation model folder (or Hub id) to score."})
    data_dir: str = field(metadata={"help": "Segmentation sets root (image/mask folders per task)."})
    output_dir: str = field(metadata={"help": "metrics.json and metrics.md go here."})
    task: str = field(
        default="landcover",
        metadata={"help": "landcover, water, roads, or a custom task name with --class_names."},
    )
    class_names: list[str] | None = field(
        default=None, metadata={"help": "Class names of a custom task (index order of the mask values)."}
    )
    layout: str | None = field(
        default=None,
        metadata={"help": "Flood set read as it comes: etci, etci-classes, ombria-after, ombria-pair."},
    )
    nodata: float | None = field(
        default=None, metadata={"help": "Image value meaning no data (default: the files' or layout's)."}
    )
    split: str = field(default="test", metadata={"help": "Split scored: test or validation."})
    batch_size: int = field(default=8, metadata={"help": "Evaluation batch."})
    relaxed_buffer: int = field(
        default=3, metadata={"help": "Pixel buffer of relaxed road precision/recall/F1."}
    )
    local_files_only: bool = field(default=False, metadata={"help": "Never contact the Hub."})

    def __post_init__(self) -> None:
        if self.split not in ("test", "validation"):
            raise ValueError(f"ModelEvaluationArguments: split={self.split!r}, expected test or validation")


def parse_grid_args(argv: Sequence[str] | None = None) -> EvaluationGridArguments:
    """Parse ``argv`` (default ``sys.argv[1:]``) into :class:`EvaluationGridArguments`; a single ``.json`` file works too."""
    return parse_dataclass_args(EvaluationGridArguments, None if argv is None else list(argv))


def parse_probe_args(argv: Sequence[str] | None = None) -> ProbeArguments:
    """Parse ``argv`` (default ``sys.argv[1:]``) into :class:`ProbeArguments`; a single ``.json`` file works too."""
    return parse_dataclass_args(ProbeArguments, None if argv is None else list(argv))


__all__ = [
    "EvaluationGridArguments",
    "ModelEvaluationArguments",
    "ProbeArguments",
    "parse_grid_args",
    "parse_probe_args",
]
