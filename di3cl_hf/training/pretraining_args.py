"""The arguments of a DI3CL pre-training run (``examples/pretrain.py`` / ``di3cl pretrain`` flags) and what follows
from them alone: the model config, the learning rate and the queue/batch check."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..configuration_di3cl import DI3CLConfig
from .common import TrainingArguments, parse_dataclass_args
from .statistics import DEFAULT_MAX_IMAGES

OPTIMIZER_ALIASES = {
    # Our names -> timm's ``create_optimizer_v2`` names. timm's "sgd" is Nesterov SGD; the release (like MoCo)
    # uses plain momentum SGD, which timm calls "momentum".
    "sgd": "momentum",
    "nesterov": "nesterov",
    "adamw": "adamw",
    "lars": "lars",
    "lamb": "lamb",
}


@dataclass(kw_only=True)
class PretrainingArguments(TrainingArguments):
    """Everything a pre-training run needs; parsed from the command line by ``transformers.HfArgumentParser``.

    Exactly one data source must be given: ``data_dir`` (a SARSense folder), ``data_files`` (Parquet files or
    glob patterns) or ``dataset_name`` (anything ``datasets.load_dataset`` accepts, e.g. a local folder).
    """

    # ---- data -----------------------------------------------------------------------------------------------
    data_dir: str | None = field(
        default=None, metadata={"help": "SARSense folder (GeoTIFF/PNG/NPY patches)."}
    )
    data_files: list[str] | None = field(
        default=None, metadata={"help": "Parquet files or glob patterns (e.g. 'shards/*.parquet')."}
    )
    dataset_name: str | None = field(
        default=None, metadata={"help": "A dataset name or local path for datasets.load_dataset."}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of dataset_name."})
    dataset_split: str = field(default="train", metadata={"help": "Split to pre-train on."})
    streaming: bool = field(
        default=False,
        metadata={"help": "Stream data_files / dataset_name (each process reads its own shards)."},
    )
    image_column: str = field(default="image", metadata={"help": "Column with the [C, H, W] SAR arrays."})
    valid_mask_column: str = field(
        default="valid_mask",
        metadata={"help": "Optional column with [H, W] validity masks (used when present)."},
    )
    augmentation_preset: str = field(
        default="sar", metadata={"help": "TwoViewTransform preset: sar (SAR-aware) or release (the paper's)."}
    )
    input_kind: str = field(
        default="auto",
        metadata={
            "help": "Radiometry of the stored arrays: auto, db, intensity, amplitude, dn8, dn16, complex."
        },
    )
    statistics_samples: int = field(
        default=DEFAULT_MAX_IMAGES,
        metadata={
            "help": "Patches sampled before training to measure image_mean/image_std of the corpus (saved with "
            "the processor; 0: keep the nominal values)."
        },
    )
    dataset_cache_dir: str | None = field(
        default=None, metadata={"help": "datasets cache folder (default: the Hugging Face datasets cache)."}
    )
    shuffle_buffer_size: int = field(default=1000, metadata={"help": "Shuffle buffer of streamed datasets."})
    num_workers: int = field(default=2, metadata={"help": "DataLoader workers per process (views + boxes)."})
    sample_crop_size: int = field(
        default=0,
        metadata={
            "help": "Cut a random crop of this side from each image before making the views (0: whole images). "
            "Each image is then drawn once per crop-sized area per epoch, at a new place each time."
        },
    )
    mask_own_negatives: bool = field(
        default=True,
        metadata={"help": "Never use queued keys of a query's own image as its negatives (map-style data)."},
    )
    monitor_data_dir: str | None = field(
        default=None,
        metadata={
            "help": "Labelled binary segmentation folder (e.g. water) for the online linear probe; the best "
            "encoder by it is kept in <output_dir>/best-encoder."
        },
    )
    monitor_steps: int = field(default=250, metadata={"help": "Probe the encoder every N updates."})

    # ---- model ----------------------------------------------------------------------------------------------
    config_name: str | None = field(
        default=None,
        metadata={"help": "A DI3CLConfig folder / config.json; the model fields below are then ignored."},
    )
    backbone: str = field(default="resnet50", metadata={"help": "timm CNN name (resnet18/34/50/101, ...)."})
    num_channels: int = field(default=2, metadata={"help": "1 = VV, 2 = VV+VH, 3 = replicated grey."})
    image_size: int = field(default=448, metadata={"help": "Side of the pre-training views in pixels."})
    projection_dim: int = field(default=128, metadata={"help": "Embedding size of the projectors/queues."})
    projection_hidden_dim: int = field(
        default=2048, metadata={"help": "Hidden size of projectors/predictor."}
    )
    queue_size: int = field(default=65536, metadata={"help": "Negative keys per queue (K)."})
    momentum: float = field(default=0.999, metadata={"help": "EMA momentum of the key encoder."})
    temperature: float = field(default=0.2, metadata={"help": "InfoNCE temperature (release code: 0.07)."})
    boxes_per_image: int = field(default=10, metadata={"help": "Box pairs sampled per image."})
    min_box_size: int = field(default=32, metadata={"help": "Minimum box side in view pixels."})
    objective: str = field(
        default="di3cl",
        metadata={
            "help": "di3cl (global + contour + dynamic-instance losses, weights 0.8 / 0.2 / 5.0) or mocov2 (the "
            "global InfoNCE alone, weight 1: the ablation baseline; the other heads still run, same cost)."
        },
    )
    imagenet_weights: str | None = field(
        default=None,
        metadata={
            "help": "LOCAL timm/torchvision ResNet weight file (.safetensors, or .pth/.bin read with "
            "weights_only=True) to initialise the backbone; nothing is ever downloaded."
        },
    )

    # ---- optimisation -----------------------------------------------------------------------------------------
    per_device_batch_size: int = field(default=32, metadata={"help": "Images per process per forward."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Forwards per optimiser update."})
    num_train_epochs: float = field(default=400.0, metadata={"help": "Epochs (map-style data only)."})
    max_steps: int = field(
        default=-1, metadata={"help": "Optimiser updates; overrides num_train_epochs if > 0."}
    )
    optimizer: str = field(
        default="sgd",
        metadata={
            "help": "sgd (momentum SGD, the release's), nesterov, adamw, lars, lamb, or any timm optimiser."
        },
    )
    base_learning_rate: float = field(
        default=0.03, metadata={"help": "Learning rate for a global batch of 256 (scaled linearly)."}
    )
    learning_rate: float | None = field(
        default=None, metadata={"help": "Absolute learning rate; overrides base_learning_rate scaling."}
    )
    optimizer_momentum: float = field(default=0.9, metadata={"help": "SGD/LARS momentum."})
    weight_decay: float = field(default=1e-4, metadata={"help": "Weight decay (applied to all parameters)."})
    lr_scheduler_type: str = field(
        default="cosine", metadata={"help": "transformers scheduler name: cosine, linear, constant, ..."}
    )
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up updates."})
    warmup_ratio: float = field(default=0.0, metadata={"help": "Warm-up as a fraction of all updates."})
    max_grad_norm: float | None = field(default=None, metadata={"help": "Clip gradients to this norm."})

    # ---- precision ------------------------------------------------------------------------------------------
    channels_last: bool = field(
        default=True, metadata={"help": "channels_last memory format (CNN speed-up)."}
    )

    # ---- run (output_dir, seed, mixed_precision, logging/save steps, resume, report_to, disable_tqdm: see
    # TrainingArguments) ------------------------------------------------------------------------------------
    output_dir: str = field(default="di3cl-pretrain", metadata={"help": "Checkpoints, logs and the encoder."})
    max_consecutive_nonfinite: int = field(
        default=5, metadata={"help": "Stop after this many non-finite losses in a row (each one is skipped)."}
    )
    report_to: str = field(
        default="tensorboard", metadata={"help": "Accelerate tracker(s), comma-separated, or 'none'."}
    )
    run_name: str = field(default="di3cl-pretrain", metadata={"help": "Tracker project/run name."})
    push_to_hub: bool = field(default=False, metadata={"help": "Upload the final encoder folder to the Hub."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repo id for --push_to_hub."})
    hub_private: bool = field(default=False, metadata={"help": "Create the Hub repo as private."})

    def __post_init__(self) -> None:
        super().__post_init__()
        sources = [name for name in ("data_dir", "data_files", "dataset_name") if getattr(self, name)]
        if len(sources) > 1:
            raise ValueError(f"PretrainingArguments: give one data source, got {', '.join(sources)}")
        if self.per_device_batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise ValueError(
                "PretrainingArguments: per_device_batch_size and gradient_accumulation_steps must be >= 1, "
                f"got {self.per_device_batch_size} and {self.gradient_accumulation_steps}"
            )
        if self.max_consecutive_nonfinite < 1:
            raise ValueError("PretrainingArguments: max_consecutive_nonfinite must be >= 1")
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError(
                "PretrainingArguments: --push_to_hub needs --hub_model_id (e.g. my-lab/di3cl-resnet50)"
            )
        if isinstance(self.data_files, str):
            self.data_files = [self.data_files]
        if self.objective not in ("di3cl", "mocov2"):
            raise ValueError(f"PretrainingArguments: objective={self.objective!r}, expected di3cl or mocov2")


def parse_args(argv: list[str] | None = None) -> PretrainingArguments:
    """Parse ``argv`` (or ``sys.argv[1:]``) into :class:`PretrainingArguments`; a single ``.json`` file also works."""
    return parse_dataclass_args(PretrainingArguments, argv)


def scaled_learning_rate(args: PretrainingArguments, global_batch_size: int) -> float:
    """The learning rate: ``learning_rate`` if given, else ``base_learning_rate * global_batch_size / 256``."""
    if args.learning_rate is not None:
        return float(args.learning_rate)
    return args.base_learning_rate * global_batch_size / 256.0


def check_queue_and_batch(queue_size: int, per_device_batch_size: int, num_processes: int) -> None:
    """Raise ValueError unless ``queue_size`` is a multiple of the keys enqueued per forward.

    Every forward enqueues the keys of all processes (``per_device_batch_size * num_processes``). Keeping the queue a
    multiple of that (the release's rule) makes every key stay exactly ``queue_size / global_batch`` forwards and
    keeps each write in one contiguous block, which the non-finite-step rollback relies on.
    """
    global_batch = per_device_batch_size * num_processes
    if global_batch > queue_size or queue_size % global_batch != 0:
        raise ValueError(
            f"queue_size={queue_size} must be a multiple of the global batch per forward = per_device_batch_size "
            f"({per_device_batch_size}) x processes ({num_processes}) = {global_batch}; e.g. use queue_size="
            f"{max(global_batch, queue_size // global_batch * global_batch)} or change the batch size"
        )


OBJECTIVES = {
    "di3cl": {"global_loss_weight": 0.8, "contour_loss_weight": 0.2, "instance_loss_weight": 5.0},
    "mocov2": {"global_loss_weight": 1.0, "contour_loss_weight": 0.0, "instance_loss_weight": 0.0},
}
"""Loss weights of each ``--objective``."""


def build_config(args: PretrainingArguments):
    """The :class:`DI3CLConfig` of the run (from ``config_name`` or the model arguments)."""
    if args.config_name:
        return DI3CLConfig.from_pretrained(args.config_name)
    return DI3CLConfig(
        backbone=args.backbone,
        num_channels=args.num_channels,
        image_size=args.image_size,
        projection_dim=args.projection_dim,
        projection_hidden_dim=args.projection_hidden_dim,
        queue_size=args.queue_size,
        momentum=args.momentum,
        temperature=args.temperature,
        boxes_per_image=args.boxes_per_image,
        min_box_size=args.min_box_size,
        **OBJECTIVES[args.objective],
    )
