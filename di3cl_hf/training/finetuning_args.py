"""The arguments of a fine-tuning run (``examples/finetune.py``, ``di3cl finetune``) and of the budget every run of
a comparison shares (the evaluation grid passes its :class:`FinetuneBudget` on as is).

Each field is a ``--name`` flag through ``transformers.HfArgumentParser`` (:func:`parse_args`); ``--help`` prints
the texts and defaults below.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .common import TrainingArguments, parse_dataclass_args, warn_deprecated
from .segmentation_models import MODES

TASKS = ("landcover", "water", "roads")
INITIALISATIONS = ("di3cl", "imagenet", "random")


@dataclass(kw_only=True)
class FinetuneBudget(TrainingArguments):
    """What every fine-tuning of a comparison shares (data, encoder shape, mode, crop, batch, steps, learning rate,
    decoder width, plus the run flags of :class:`~di3cl_hf.training.common.TrainingArguments`).
    :class:`FinetuneArguments` adds one run's choices; the evaluation grid passes its budget on as is."""

    data_dir: str = field(
        metadata={
            "help": "Segmentation sets root (di3cl make-synthetic output or image/mask folders per task)."
        }
    )
    imagenet_weights: str | None = field(
        default=None,
        metadata={"help": "Local timm/torchvision ResNet weight file for init=imagenet (never downloaded)."},
    )
    backbone: str = field(default="resnet50", metadata={"help": "timm encoder for init=random/imagenet."})
    num_channels: int | None = field(
        default=None,
        metadata={
            "help": "Input channels: 1 VV, 2 VV+VH (or before+after), 3 (e.g. an 8-bit Pauli RGB, dn8 per band). Default: "
            "2 for init=random/imagenet, the encoder's for init=di3cl; another count than the encoder's adapts its "
            "first convolution (timm's rule: identical channels give the pre-trained output)."
        },
    )
    mode: str = field(
        default="full",
        metadata={
            "help": "full (all trains), frozen (encoder frozen, UperNet trains) or linear (linear probe)."
        },
    )
    crop_size: int | None = field(
        default=256, metadata={"help": "Random training crop side (multiple of 32)."}
    )
    batch_size: int = field(default=8, metadata={"help": "Training batch per process."})
    max_steps: int = field(default=2000, metadata={"help": "Optimisation steps."})
    learning_rate: float = field(default=2e-4, metadata={"help": "Peak AdamW learning rate of the heads."})
    decoder_hidden_size: int = field(default=512, metadata={"help": "UperNet decoder channels (paper: 512)."})
    save_steps: int = field(default=0, metadata={"help": "Resumable checkpoint every N steps (0: never)."})
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept (oldest deleted)."})


@dataclass(kw_only=True)
class FinetuneArguments(FinetuneBudget):
    """Arguments of one fine-tuning run; ``di3cl finetune`` and ``examples/finetune.py`` parse them with
    ``transformers.HfArgumentParser`` (each field is a ``--name`` flag; ``--help`` prints the texts below).
    """

    task: str = field(
        default="landcover",
        metadata={"help": "landcover, water, roads, or a custom task name with --class_names."},
    )
    class_names: list[str] | None = field(
        default=None, metadata={"help": "Class names of a custom task (index order of the mask values)."}
    )
    init: str = field(
        default="di3cl",
        metadata={
            "help": "di3cl (--model_name_or_path), imagenet (--imagenet_weights, local file) or random."
        },
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "DI3CL checkpoint folder (pre-training output or encoder) for init=di3cl."},
    )
    label_fraction: float = field(
        default=1.0,
        metadata={"help": "Fraction of labelled training samples (0.01 = 1 percent), chosen from --seed."},
    )
    label_fraction_positive: bool = field(
        default=True,
        metadata={
            "help": "Binary tasks and flood layouts: the label-fraction subset holds at least one sample with a "
            "foreground pixel (class > 0; rule in di3cl_hf.data.label_fraction_subset)."
        },
    )
    layout: str | None = field(
        default=None,
        metadata={
            "help": "Flood set read as it comes: etci, etci-classes, ombria-after, ombria-pair (di3cl_hf.data.flood); "
            "its classes unless --class_names."
        },
    )
    nodata: float | None = field(
        default=None,
        metadata={
            "help": "Image value meaning no data (e.g. 255 in 8-bit PNG tiles; default: the files' or layout's)."
        },
    )
    final_validation: bool = field(
        default=True,
        metadata={"help": "Score the validation split at the end (besides test); off leaves it unused."},
    )
    eval_batch_size: int = field(default=8, metadata={"help": "Evaluation batch per process."})
    backbone_learning_rate_scale: float = field(
        default=1.0, metadata={"help": "Encoder learning rate = learning_rate x this."}
    )
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up steps before the cosine decay."})
    segmentation_loss: str = field(default="ce", metadata={"help": "ce or ce+dice (Dice helps thin roads)."})
    foreground_crop_probability: float = field(
        default=0.0,
        metadata={
            "help": "Chance that a training crop is centred on a labelled pixel of a class other than 0 (nnU-Net's "
            "foreground oversampling; helps rare classes such as water in a few labelled tiles)."
        },
    )
    num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})
    eval_every: int = field(default=0, metadata={"help": "Validate every N steps (0: only at the end)."})
    save_every: int | None = field(default=None, metadata={"help": "Deprecated spelling of --save_steps."})
    checkpoints_total_limit: int | None = field(
        default=None, metadata={"help": "Deprecated spelling of --save_total_limit."}
    )
    relaxed_buffer: int = field(
        default=3, metadata={"help": "Pixel buffer of relaxed road precision/recall/F1."}
    )
    save_model: bool = field(default=True, metadata={"help": "Write the final model, processor and card."})
    estimate_statistics: bool = field(
        default=False,
        metadata={
            "help": "Re-measure the processor's image_mean/image_std on the labelled training set (default: keep "
            "the encoder's, measured on its pre-training corpus)."
        },
    )
    progress: bool | None = field(
        default=None,
        metadata={"help": "Deprecated: use --disable_tqdm (progress False = disable_tqdm True)."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for old, new in (("save_every", "save_steps"), ("checkpoints_total_limit", "save_total_limit")):
            if getattr(self, old) is not None:
                warn_deprecated(old, f"--{new}")
                setattr(self, new, getattr(self, old))
                setattr(self, old, None)
        if self.progress is not None:
            warn_deprecated("progress", "--disable_tqdm")
            self.disable_tqdm, self.progress = not self.progress, None
        if self.task not in TASKS and not self.class_names and not self.layout:
            raise ValueError(
                f"FinetuneArguments: task={self.task!r} is not one of {TASKS}; a custom task needs --class_names"
            )
        if self.init not in INITIALISATIONS:
            raise ValueError(f"FinetuneArguments: init={self.init!r}, expected one of {INITIALISATIONS}")
        if self.init == "di3cl" and not self.model_name_or_path:
            raise ValueError(
                "FinetuneArguments: init='di3cl' needs --model_name_or_path (a DI3CL checkpoint folder)"
            )
        if self.init == "imagenet" and not self.imagenet_weights:
            raise ValueError(
                "FinetuneArguments: init='imagenet' needs --imagenet_weights (a local timm weight file)"
            )
        if self.mode not in MODES:
            raise ValueError(f"FinetuneArguments: mode={self.mode!r}, expected one of {MODES}")
        if not 0.0 < self.label_fraction <= 1.0:
            raise ValueError(
                f"FinetuneArguments: label_fraction={self.label_fraction!r}, expected a value in (0, 1]"
            )
        if self.segmentation_loss not in ("ce", "ce+dice"):
            raise ValueError(
                f"FinetuneArguments: segmentation_loss={self.segmentation_loss!r}, expected ce or ce+dice"
            )
        if not 0.0 <= self.foreground_crop_probability <= 1.0:
            raise ValueError(
                f"FinetuneArguments: foreground_crop_probability={self.foreground_crop_probability!r}, "
                "expected a value in [0, 1]"
            )
        for name in ("batch_size", "eval_batch_size", "max_steps"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"FinetuneArguments: {name}={getattr(self, name)!r}, expected a positive integer"
                )
        if self.crop_size is not None and self.crop_size % 32:
            raise ValueError(f"FinetuneArguments: crop_size={self.crop_size!r}, expected a multiple of 32")


def parse_args(argv: Sequence[str] | None = None) -> FinetuneArguments:
    """Parse ``argv`` (default ``sys.argv[1:]``) into :class:`FinetuneArguments`; a single ``.json`` file works too."""
    return parse_dataclass_args(FinetuneArguments, None if argv is None else list(argv))


__all__ = ["FinetuneArguments", "FinetuneBudget", "INITIALISATIONS", "TASKS", "parse_args"]
