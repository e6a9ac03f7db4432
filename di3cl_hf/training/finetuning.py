"""Fine-tuning DI3CL for SAR segmentation (land cover, water, roads) with Accelerate, and its evaluation.

The library behind ``examples/finetune.py``:

- :class:`FinetuneArguments` and :func:`finetune`: one run. Data from a segmentation folder
  (:func:`di3cl_hf.data.load_segmentation`, the three presets or any image/mask folder, or a flood set as it
  comes with ``layout``: ETCI, OMBRIA), a reproducible fraction of the labelled training samples
  (``label_fraction``; for binary tasks and flood layouts it holds at least one foreground sample, see
  :func:`~di3cl_hf.data.segmentation.label_fraction_subset`), SAR values turned into network input
  by the :class:`~di3cl_hf.image_processing_di3cl.DI3CLImageProcessor` (nodata pixels become the
  ignore label). Initialisation from a DI3CL checkpoint folder, from a local ImageNet timm weight
  file, or random (``num_channels`` other than a DI3CL encoder's adapts its first convolution); full
  fine-tuning, frozen backbone or linear probe (the models: :mod:`di3cl_hf.training.segmentation_models`). The
  loop runs under
  Accelerate (bf16 autocast where the hardware runs it natively, else fp32, ``accelerate launch`` for several processes), with a progress
  bar, a TensorBoard tracker, rotated atomic checkpoints and ``--resume_from_checkpoint``. At the end
  the model, its processor, the metrics (JSON + markdown in the paper's Table II layout) and a model
  card are written with ``save_pretrained``.
- The evaluation grid and k-means live in :mod:`di3cl_hf.training.evaluation`; checkpoints, precision and
  run flags in :mod:`di3cl_hf.training.common` (shared with pre-training).

UperNet's pyramid pooling has a BatchNorm after a global pool, which cannot train on a batch of one
image; the model falls back to running statistics for such a batch, and the training loader here drops
the last incomplete batch whenever the training set has at least two batches' worth of samples.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import ProjectConfiguration, set_seed
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import get_scheduler

from ..atomic import write_text
from ..configuration_di3cl import DI3CLConfig
from ..data.segmentation import class_names as dataset_class_names
from ..data.segmentation import label_fraction_subset, load_segmentation
from ..hub.cards import build_model_card
from ..image_processing_di3cl import DI3CLImageProcessor
from ..loading import find_encoder
from ..memory import reuse_large_allocations
from ..modeling_di3cl import DI3CLForSemanticSegmentation
from ..runtime import fused_optimizer
from .common import (
    TrainingArguments,
    check_output_dir,
    load_checkpoint,
    maybe_compile,
    parse_dataclass_args,
    resolve_checkpoint,
    run_precision,
    save_checkpoint,
    tracker_config,
    trackers,
    warn_deprecated,
)
from .metrics import SegmentationMetrics, format_table, save_json
from .segmentation_models import (
    MODES,
    LinearProbeHead,
    _LinearProbe,
    configure_trainable,
    load_imagenet_weights,
    segmentation_model_on_encoder,
    set_train_mode,
)
from .statistics import estimate_statistics, processor_statistics

logger = logging.getLogger(__name__)

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
    """Arguments of one fine-tuning run; ``examples/finetune.py`` parses them with
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


class SegmentationDataset(Dataset):
    """Torch view of a segmentation split: SAR image -> ``pixel_values`` through the processor,
    nodata pixels -> ignore label, random crop / flips / 90-degree rotations when training.

    Args:
        dataset: a decoded ``datasets.Dataset`` (:func:`di3cl_hf.data.load_segmentation`) whose rows
            hold ``image`` (float ``[C, H, W]``, any radiometry the processor accepts), ``label``
            (int ``[H, W]``) and optionally ``valid_mask`` (bool ``[H, W]``).
        processor: the :class:`DI3CLImageProcessor` of the model.
        crop_size: side of the random crops when ``train`` (``None``: whole patches).
        train: apply the random geometric augmentation.
        ignore_index: label given to invalid (nodata) pixels.
    """

    def __init__(
        self,
        dataset: Any,
        processor: Any,
        crop_size: int | None = None,
        train: bool = False,
        ignore_index: int = 255,
    ) -> None:
        self.dataset = dataset
        self.processor = processor
        self.crop_size = crop_size
        self.train = train
        self.ignore_index = ignore_index

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.dataset[int(index)]
        # the source dtype: the processor's "auto" radiometry then reads uint8 (Pauli RGB, quick-looks)
        # as dn8 and integer DN as dn16, exactly as `di3cl predict` reads the same files
        image = np.asarray(sample["image"])
        if image.ndim == 2:
            image = image[None]
        valid = sample.get("valid_mask")
        valid = None if valid is None else np.asarray(valid, dtype=bool)
        # bands chosen by name (processor.bands, e.g. ("VV", "VH") of quad-pol rows) need the row's names
        names = {"band_names": sample.get("band_names")} if getattr(self.processor, "bands", None) else {}
        pixel_values, valid = self.processor.sar_to_pixel_values(image, valid, **names)
        labels = np.asarray(sample["label"], dtype=np.int64).copy()
        if labels.shape != pixel_values.shape[-2:]:
            raise ValueError(
                f"{sample.get('path', f'sample {index}')}: label of shape {labels.shape} for an image of "
                f"shape {pixel_values.shape}; expected the same height and width"
            )
        labels[~np.asarray(valid, dtype=bool)] = self.ignore_index
        pixel_values_t = torch.from_numpy(np.ascontiguousarray(pixel_values, dtype=np.float32))
        labels_t = torch.from_numpy(labels)
        if self.train:
            pixel_values_t, labels_t = self._augment(pixel_values_t, labels_t)
        return {"pixel_values": pixel_values_t.contiguous(), "labels": labels_t.contiguous()}

    def _augment(self, pixel_values: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = labels.shape
        if self.crop_size is not None:
            if height < self.crop_size or width < self.crop_size:
                pad_h, pad_w = max(self.crop_size - height, 0), max(self.crop_size - width, 0)
                pixel_values = F.pad(pixel_values, (0, pad_w, 0, pad_h))
                labels = F.pad(labels, (0, pad_w, 0, pad_h), value=self.ignore_index)
                height, width = labels.shape
            top = int(torch.randint(0, height - self.crop_size + 1, ()))
            left = int(torch.randint(0, width - self.crop_size + 1, ()))
            pixel_values = pixel_values[:, top : top + self.crop_size, left : left + self.crop_size]
            labels = labels[top : top + self.crop_size, left : left + self.crop_size]
        # SAR has no preferred orientation: flips and 90-degree rotations are label-preserving.
        if torch.rand(()) < 0.5:
            pixel_values, labels = pixel_values.flip(-1), labels.flip(-1)
        if torch.rand(()) < 0.5:
            pixel_values, labels = pixel_values.flip(-2), labels.flip(-2)
        turns = int(torch.randint(0, 4, ()))
        if turns:
            pixel_values, labels = pixel_values.rot90(turns, (-2, -1)), labels.rot90(turns, (-2, -1))
        return pixel_values, labels


def load_task_splits(args: FinetuneArguments) -> tuple[Any, Any, Any, list[str]]:
    """Train (label-fraction subset), validation and test splits of ``args.task``, and the class names.

    A missing validation split falls back to the test split (the same object; it is only used for
    the optional periodic validation, never to select a model) and vice versa; a set with only a
    train split raises (evaluating on training samples would be meaningless).
    """
    splits = load_segmentation(
        args.data_dir, task=args.task, class_names=args.class_names, image_dtype=None, layout=args.layout,
        nodata=args.nodata,
    )  # fmt: skip
    if "train" not in splits:
        raise ValueError(f"{args.data_dir}: no 'train' split for task {args.task!r} (found {list(splits)})")
    validation = splits.get("validation", splits.get("test"))
    test = splits.get("test", splits.get("validation"))
    if validation is None:
        raise ValueError(
            f"{args.data_dir}: task {args.task!r} has only a train split; expected a 'validation' or 'test' split"
        )
    train, names = splits["train"], dataset_class_names(splits["train"])
    if args.label_fraction < 1.0:
        foreground = args.label_fraction_positive and (len(names) == 2 or args.layout is not None)
        positive = list(range(1, len(names))) if foreground else None
        train = label_fraction_subset(train, args.label_fraction, seed=args.seed, positive_classes=positive)
    return train, validation, test, names


def build_model(args: FinetuneArguments, class_names: Sequence[str]) -> tuple[nn.Module, Any]:
    """Segmentation model and image processor for ``args.init`` (encoder weights loaded, heads new)."""
    id2label = dict(enumerate(class_names))
    label2id = {name: index for index, name in id2label.items()}
    head_kwargs = {
        "num_labels": len(class_names),
        "id2label": id2label,
        "label2id": label2id,
        "segmentation_loss": args.segmentation_loss,
        "decoder_hidden_size": args.decoder_hidden_size,
    }
    if args.init == "di3cl":
        model, processor = segmentation_model_on_encoder(
            args.model_name_or_path, num_channels=args.num_channels, **head_kwargs
        )
        model.train()
    else:
        channels = 2 if args.num_channels is None else args.num_channels
        config = DI3CLConfig(backbone=args.backbone, num_channels=channels, **head_kwargs)
        model = DI3CLForSemanticSegmentation(config)
        processor = DI3CLImageProcessor(num_channels=channels)
        if args.init == "imagenet":
            missing = load_imagenet_weights(model, args.imagenet_weights)
            if missing:
                logger.warning(
                    "%s: %d encoder tensors kept random: %s", args.imagenet_weights, len(missing), missing
                )
    return model, processor


def _relaxed_class(class_names: Sequence[str], task: str) -> int | None:
    lowered = [name.lower() for name in class_names]
    if task == "roads" or (task != "landcover" and "road" in lowered):
        return lowered.index("road") if "road" in lowered else len(class_names) - 1
    return None


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataloader: DataLoader,
    accelerator: Any,
    class_names: Sequence[str],
    task: str,
    ignore_index: int = 255,
    relaxed_buffer: int = 3,
) -> dict[str, Any]:
    """Scores of ``model`` on ``dataloader`` (gathered from all processes), see :mod:`di3cl_hf.metrics`."""
    metrics = SegmentationMetrics(
        len(class_names),
        class_names,
        ignore_index=ignore_index,
        relaxed_class=_relaxed_class(class_names, task),
        relaxed_buffer=relaxed_buffer,
    )
    model.eval()
    for batch in dataloader:
        with accelerator.autocast():
            logits = model(pixel_values=batch["pixel_values"]).logits
        predictions = logits.argmax(dim=1)
        predictions, labels = accelerator.gather_for_metrics((predictions, batch["labels"]))
        metrics.update(predictions.cpu(), labels.cpu())
    return metrics.compute()


def _infinite_batches(
    dataloader: Any, accelerator: Any, start_step: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches epoch after epoch (reshuffled per epoch from the seed), starting at ``start_step``."""
    per_epoch = len(dataloader)
    if per_epoch == 0:
        raise ValueError(
            "finetune: the training loader yields no batch (training set smaller than the batch size?)"
        )
    epoch, skip = divmod(start_step, per_epoch)
    while True:
        dataloader.set_epoch(epoch)
        loader = accelerator.skip_first_batches(dataloader, skip) if skip else dataloader
        yield from loader
        epoch, skip = epoch + 1, 0


@dataclass
class FinetuneRun:
    """What the fine-tuning loop works on, built by :func:`_setup`."""

    args: FinetuneArguments
    accelerator: Accelerator
    network: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_loader: Any
    eval_loaders: dict[str, Any]
    processor: Any
    class_names: list[str]
    ignore_index: int
    log_with: list[str] | None
    num_train_samples: int
    validation_is_test: bool
    start_step: int = 0
    input_statistics: dict[str, Any] = field(default_factory=dict)


def _loaders(args: FinetuneArguments, splits: tuple, processor: Any, ignore_index: int):
    train_set, validation_set, test_set = splits
    train_data = SegmentationDataset(
        train_set, processor, args.crop_size, train=True, ignore_index=ignore_index
    )
    if len(train_data) == 0:
        raise ValueError(f"{args.data_dir}: label_fraction={args.label_fraction} leaves no training sample")
    batch_size = min(args.batch_size, len(train_data))
    # A batch of one image cannot train BatchNorm on pooled features: drop an incomplete last batch
    # whenever a full batch exists (the model falls back to running statistics otherwise).
    drop_last = len(train_data) >= 2 * batch_size or len(train_data) % batch_size == 1
    train_loader = DataLoader(
        train_data, batch_size=batch_size, shuffle=True, drop_last=drop_last, num_workers=args.num_workers
    )
    eval_loaders = {
        name: DataLoader(
            SegmentationDataset(split, processor, ignore_index=ignore_index),
            batch_size=args.eval_batch_size,
            num_workers=args.num_workers,
        )
        for name, split in (("validation", validation_set), ("test", test_set))
    }
    return train_loader, eval_loaders


def _optimizer(args: FinetuneArguments, model: nn.Module, network: nn.Module, device: torch.device):
    """AdamW over the heads (``learning_rate``) and the trainable encoder (scaled), cosine schedule; torch's fused
    kernel where ``device`` supports it (:func:`di3cl_hf.runtime.fused_optimizer`)."""
    encoder_parameters = [p for p in model.base_model.parameters() if p.requires_grad]
    encoder_ids = {id(p) for p in encoder_parameters}
    head_parameters = [p for p in network.parameters() if p.requires_grad and id(p) not in encoder_ids]
    groups = [{"params": head_parameters, "lr": args.learning_rate}]
    if encoder_parameters:
        groups.append(
            {"params": encoder_parameters, "lr": args.learning_rate * args.backbone_learning_rate_scale}
        )
    optimizer = torch.optim.AdamW(
        groups, weight_decay=args.weight_decay, fused=fused_optimizer(device) or None
    )
    scheduler = get_scheduler(
        "cosine", optimizer, num_warmup_steps=args.warmup_steps, num_training_steps=args.max_steps
    )
    return optimizer, scheduler


def _setup(args: FinetuneArguments) -> FinetuneRun:
    """Accelerator, data, model, optimiser; resumed from a checkpoint if asked."""
    output_dir = check_output_dir(
        args.output_dir,
        overwrite_output_dir=args.overwrite_output_dir,
        resume_from_checkpoint=args.resume_from_checkpoint,
    )
    _, mixed_precision = run_precision(args.mixed_precision)
    log_with = trackers(args.report_to)
    accelerator = Accelerator(
        mixed_precision=mixed_precision,
        log_with=log_with,
        project_config=ProjectConfiguration(
            project_dir=str(output_dir), logging_dir=str(output_dir / "logs")
        ),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
    )
    set_seed(args.seed)
    train_set, validation_set, test_set, class_names = load_task_splits(args)
    model, processor = build_model(args, class_names)
    input_statistics: dict[str, Any] = {"encoder": processor_statistics(processor)}
    if args.estimate_statistics:
        input_statistics["labelled"] = estimate_statistics(processor, train_set, seed=args.seed).to_dict()
    ignore_index = model.config.semantic_loss_ignore_index
    network = configure_trainable(model, args.mode).to(memory_format=torch.channels_last)  # CNN speed-up
    network = maybe_compile(network, args.torch_compile)
    train_loader, eval_loaders = _loaders(
        args, (train_set, validation_set, test_set), processor, ignore_index
    )
    num_train_samples = len(train_loader.dataset)
    optimizer, scheduler = _optimizer(args, model, network, accelerator.device)
    network, optimizer, train_loader, scheduler = accelerator.prepare(
        network, optimizer, train_loader, scheduler
    )
    eval_loaders = {name: accelerator.prepare(loader) for name, loader in eval_loaders.items()}
    run = FinetuneRun(
        args, accelerator, network, optimizer, scheduler, train_loader, eval_loaders, processor,
        list(class_names), ignore_index, log_with, num_train_samples, validation_set is test_set,
        input_statistics=input_statistics,
    )  # fmt: skip
    if args.resume_from_checkpoint:
        checkpoint = resolve_checkpoint(args.resume_from_checkpoint, output_dir)
        run.start_step = int(load_checkpoint(accelerator, checkpoint)["global_step"])
        accelerator.print(f"resumed from {checkpoint} at step {run.start_step}")
    if log_with:
        accelerator.init_trackers("finetune", config=tracker_config(args))
    return run


def _validate(run: FinetuneRun, step: int, bar: Any) -> None:
    args = run.args
    scores = evaluate(
        run.network, run.eval_loaders["validation"], run.accelerator, run.class_names, args.task,
        run.ignore_index, args.relaxed_buffer,
    )  # fmt: skip
    if run.log_with:
        run.accelerator.log(_scalar_scores(scores, "validation"), step=step)
    bar.write(f"step {step}: validation mIoU {100 * scores['miou']:.2f}")
    set_train_mode(run.accelerator.unwrap_model(run.network), args.mode)


def _train(run: FinetuneRun) -> list[dict[str, float]]:
    """The optimisation steps from ``start_step + 1`` to ``max_steps``; returns the per-step records."""
    args, accelerator = run.args, run.accelerator
    set_train_mode(accelerator.unwrap_model(run.network), args.mode)
    bar = tqdm(
        total=args.max_steps,
        initial=run.start_step,
        disable=args.disable_tqdm or not accelerator.is_local_main_process,
        desc=f"fine-tune {args.task} ({args.init}, {args.label_fraction:g} labels)",
    )
    batches = _infinite_batches(run.train_loader, accelerator, run.start_step)
    history: list[dict[str, float]] = []
    with reuse_large_allocations(accelerator.device.type == "cpu"):  # see memory.py
        for step in range(run.start_step + 1, args.max_steps + 1):
            batch = next(batches)
            with accelerator.autocast():
                pixel_values = batch["pixel_values"].contiguous(memory_format=torch.channels_last)
                loss = run.network(pixel_values=pixel_values, labels=batch["labels"]).loss
            if not torch.isfinite(loss):
                raise FloatingPointError(f"finetune: non-finite loss {loss.item()} at step {step}")
            accelerator.backward(loss)
            run.optimizer.step()
            run.scheduler.step()
            run.optimizer.zero_grad(set_to_none=True)
            record = {"train/loss": float(loss.detach()), "train/lr": run.scheduler.get_last_lr()[0]}
            history.append(record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['train/loss']:.4f}", lr=f"{record['train/lr']:.2e}")
            if run.log_with:
                accelerator.log(record, step=step)
            if args.eval_every and step % args.eval_every == 0 and step < args.max_steps:
                _validate(run, step, bar)
            if args.save_steps and step % args.save_steps == 0:
                save_checkpoint(accelerator, args.output_dir, step, {}, args.save_total_limit)
    bar.close()
    # Back to the default layout: the returned model computes bit-for-bit what its saved and reloaded copy does.
    accelerator.unwrap_model(run.network).to(memory_format=torch.contiguous_format)
    return history


def _final_scores(run: FinetuneRun) -> dict[str, Any]:
    args, results = run.args, {}
    for name, loader in run.eval_loaders.items():
        if name == "validation" and (run.validation_is_test or not args.final_validation):
            continue  # no validation split: the test scores below stand for both (or it is left unused)
        results[name] = evaluate(
            run.network,
            loader,
            run.accelerator,
            run.class_names,
            args.task,
            run.ignore_index,
            args.relaxed_buffer,
        )
        if run.log_with:
            run.accelerator.log(_scalar_scores(results[name], name), step=args.max_steps)
    if run.validation_is_test and args.final_validation:
        results["validation"] = results["test"]
    return results


def finetune(args: FinetuneArguments) -> dict[str, Any]:
    """Run one fine-tuning and return its results.

    Returns:
        dict with ``validation`` and ``test`` (scores of :mod:`di3cl_hf.metrics`), ``output_dir``,
        ``train_seconds``, ``start_step`` / ``steps_run`` (after a resume), ``final_train_loss``,
        ``num_train_samples``, ``class_names``, ``arguments`` (all of which are also in ``metrics.json``), plus
        ``model`` (the trained network, unwrapped) and ``processor``.

    Writes under ``args.output_dir``: ``checkpoints/checkpoint-N`` (see :mod:`~di3cl_hf.training.common`, when
    ``save_steps``), ``logs/`` (TensorBoard), ``metrics.json``, ``metrics.md`` and, with ``save_model``, the model
    (``save_pretrained``), ``preprocessor_config.json`` and ``README.md`` (model card).
    """
    run = _setup(args)
    started = time.perf_counter()
    history = _train(run)
    elapsed = time.perf_counter() - started
    results: dict[str, Any] = {
        "output_dir": str(args.output_dir),
        "train_seconds": elapsed,
        "start_step": run.start_step,
        "steps_run": args.max_steps - run.start_step,
        "class_names": run.class_names,
        **_final_scores(run),
    }
    results["validation_is_test"] = run.validation_is_test
    results["final_train_loss"] = history[-1]["train/loss"] if history else None
    results["arguments"] = asdict(args)
    results["num_train_samples"] = run.num_train_samples
    results["input_statistics"] = run.input_statistics
    accelerator, output_dir = run.accelerator, Path(args.output_dir)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_json(results, output_dir / "metrics.json")
        name = f"{args.init} ({args.task}, {args.label_fraction:g} labels)"
        write_text(output_dir / "metrics.md", format_table({name: results["test"]}))
        if args.save_model:
            save_finetuned(accelerator.unwrap_model(run.network), run.processor, output_dir)
            write_model_card(args, results, output_dir)
    if run.log_with:
        accelerator.end_training()
    accelerator.wait_for_everyone()
    results["model"] = accelerator.unwrap_model(run.network)
    results["processor"] = run.processor
    return results


def metrics_summary(results: Mapping[str, Any]) -> str:
    """Human-readable end of a run: the test scores in the paper's Table II layout and where things are."""
    arguments = results.get("arguments", {})
    name = f"{arguments.get('init', 'model')} ({arguments.get('task', '')}, {arguments.get('label_fraction', 1):g} labels)"
    return (
        format_table({name: results["test"]})
        + f"\ntest pixels: {results['test']['num_pixels']}, training samples: {results.get('num_train_samples')}, "
        f"training time: {results.get('train_seconds', 0):.1f} s\noutputs: {results['output_dir']}"
    )


def save_finetuned(network: nn.Module, processor: Any, output_dir: str | os.PathLike) -> Path:
    """``save_pretrained`` of the model and its processor, written into a temporary folder whose files
    are then renamed into ``output_dir`` (a crash never leaves a half-written weight file there).

    A linear probe is saved as its (frozen) segmentation model plus ``linear_probe.safetensors``
    (the BatchNorm + 1x1 convolution head).
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=output_dir, prefix=".save-"))
    try:
        model = network.model if isinstance(network, _LinearProbe) else network
        model.save_pretrained(str(temporary))
        processor.save_pretrained(str(temporary))
        if isinstance(network, _LinearProbe):
            state = {
                key: tensor.detach().cpu().contiguous() for key, tensor in network.head.state_dict().items()
            }
            save_file(state, str(temporary / "linear_probe.safetensors"))
        for path in sorted(temporary.iterdir()):
            os.replace(path, output_dir / path.name)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return output_dir


def _scalar_scores(scores: Mapping[str, Any], prefix: str) -> dict[str, float]:
    scalars = {
        f"{prefix}/{key}": float(scores[key]) for key in ("overall_accuracy", "kappa", "miou", "mean_f1")
    }
    if "relaxed" in scores:
        scalars[f"{prefix}/relaxed_f1"] = float(scores["relaxed"]["f1"])
    return {key: value for key, value in scalars.items() if math.isfinite(value)}


def write_model_card(args: FinetuneArguments, results: Mapping[str, Any], output_dir: Path) -> Path:
    """Write ``evaluation.json`` (test scores, task, dataset) and the model card ``README.md`` of a
    saved run with :func:`di3cl_hf.hub.build_model_card`."""
    synthetic = "synthetic" in str(args.data_dir).lower()
    dataset = Path(args.data_dir).name + (
        " (synthetic)" if synthetic and "synthetic" not in Path(args.data_dir).name else ""
    )
    save_json(
        {"task": args.task, "dataset": dataset, "split": "test", "scores": results["test"]},
        output_dir / "evaluation.json",
    )
    card = build_model_card(
        output_dir,
        base_model=args.model_name_or_path if args.init == "di3cl" else None,
        run_info={
            "data": f"{dataset}{' — synthetic' if synthetic else ''}",
            "task": args.task,
            "initialisation": args.init,
            "mode": args.mode,
            "label_fraction": args.label_fraction,
            "steps": args.max_steps,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
        },
    )
    path = output_dir / "README.md"
    write_text(path, str(card))
    return path


find_timm_encoder = find_encoder
"""Deprecated name of :func:`di3cl_hf.loading.find_encoder` (kept for one release)."""


__all__ = [
    "FinetuneArguments",
    "FinetuneBudget",
    "FinetuneRun",
    "INITIALISATIONS",
    "LinearProbeHead",
    "MODES",
    "SegmentationDataset",
    "TASKS",
    "build_model",
    "configure_trainable",
    "evaluate",
    "find_timm_encoder",
    "finetune",
    "load_imagenet_weights",
    "load_task_splits",
    "metrics_summary",
    "parse_args",
    "save_finetuned",
    "segmentation_model_on_encoder",
    "set_train_mode",
    "write_model_card",
]
