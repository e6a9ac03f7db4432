"""Fine-tuning DI3CL for SAR segmentation (land cover, water, roads) with Accelerate, and its evaluation.

The library behind ``examples/finetune.py`` and ``examples/evaluate.py``:

- :class:`FinetuneArguments` and :func:`finetune`: one run. Data from a segmentation folder
  (:func:`di3cl_hf.data.load_segmentation`, the three presets or any image/mask folder), a reproducible
  fraction of the labelled training samples (``label_fraction``), SAR values turned into network input
  by the :class:`~di3cl_hf.image_processing_di3cl.DI3CLImageProcessor` (nodata pixels become the
  ignore label). Initialisation from a DI3CL checkpoint folder, from a local ImageNet timm weight
  file, or random; full fine-tuning, frozen backbone or linear probe. The loop runs under
  Accelerate (bf16 autocast by default, ``accelerate launch`` for several processes), with a progress
  bar, a TensorBoard tracker, rotated atomic checkpoints and ``--resume_from_checkpoint``. At the end
  the model, its processor, the metrics (JSON + markdown in the paper's Table II layout) and a model
  card are written with ``save_pretrained``.
- :class:`EvaluationGridArguments` and :func:`run_evaluation_grid`: initialisation x label fraction x
  task, one comparison table and the label-efficiency curves as a PNG.
- :func:`evaluate_kmeans`: the unsupervised setting, k-means on dense encoder features scored with
  Hungarian-matched mIoU.

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
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..atomic import atomic_path, write_text
from ..memory import reuse_large_allocations
from ..training.metrics import SegmentationMetrics, format_table, hungarian_scores, save_json

logger = logging.getLogger(__name__)

TASKS = ("landcover", "water", "roads")
INITIALISATIONS = ("di3cl", "imagenet", "random")
MODES = ("full", "frozen", "linear")
CHECKPOINT_PREFIX = "step-"
METRIC_LABELS = {"miou": "mIoU", "overall_accuracy": "OA", "kappa": "Kappa", "mean_f1": "mean F1"}


@dataclass
class FinetuneArguments:
    """Arguments of one fine-tuning run; ``examples/finetune.py`` parses them with
    ``transformers.HfArgumentParser`` (each field is a ``--name`` flag; ``--help`` prints the texts below).
    """

    data_dir: str = field(
        metadata={
            "help": "Segmentation sets root (di3cl make-synthetic output or image/mask folders per task)."
        }
    )
    output_dir: str = field(
        metadata={"help": "Model, processor, metrics, card, checkpoints and logs go here."}
    )
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
    imagenet_weights: str | None = field(
        default=None,
        metadata={"help": "Local timm/torchvision ResNet weight file for init=imagenet (never downloaded)."},
    )
    backbone: str = field(default="resnet50", metadata={"help": "timm encoder for init=random/imagenet."})
    num_channels: int = field(
        default=2, metadata={"help": "Input channels for init=random/imagenet: 1 VV, 2 VV+VH."}
    )
    mode: str = field(
        default="full",
        metadata={
            "help": "full (all trains), frozen (encoder frozen, UperNet trains) or linear (linear probe)."
        },
    )
    label_fraction: float = field(
        default=1.0,
        metadata={"help": "Fraction of labelled training samples (0.01 = 1 percent), chosen from --seed."},
    )
    crop_size: int | None = field(
        default=256, metadata={"help": "Random training crop side (multiple of 32)."}
    )
    batch_size: int = field(default=8, metadata={"help": "Training batch per process."})
    eval_batch_size: int = field(default=8, metadata={"help": "Evaluation batch per process."})
    max_steps: int = field(default=2000, metadata={"help": "Optimisation steps."})
    learning_rate: float = field(default=2e-4, metadata={"help": "Peak AdamW learning rate of the heads."})
    backbone_learning_rate_scale: float = field(
        default=1.0, metadata={"help": "Encoder learning rate = learning_rate x this."}
    )
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up steps before the cosine decay."})
    segmentation_loss: str = field(default="ce", metadata={"help": "ce or ce+dice (Dice helps thin roads)."})
    decoder_hidden_size: int = field(default=512, metadata={"help": "UperNet decoder channels (paper: 512)."})
    mixed_precision: str = field(default="bf16", metadata={"help": "bf16, fp16 or no (Accelerate autocast)."})
    seed: int = field(default=0, metadata={"help": "Seed of the label subset, the heads and the data order."})
    num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})
    eval_every: int = field(default=0, metadata={"help": "Validate every N steps (0: only at the end)."})
    save_every: int = field(default=0, metadata={"help": "Resumable checkpoint every N steps (0: never)."})
    checkpoints_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept (oldest deleted)."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "Checkpoint folder, or 'latest' under output_dir/checkpoints."}
    )
    report_to: str = field(default="tensorboard", metadata={"help": "Accelerate tracker, or 'none'."})
    relaxed_buffer: int = field(
        default=3, metadata={"help": "Pixel buffer of relaxed road precision/recall/F1."}
    )
    save_model: bool = field(default=True, metadata={"help": "Write the final model, processor and card."})
    progress: bool = field(default=True, metadata={"help": "Progress bar on the main process."})

    def __post_init__(self) -> None:
        if self.task not in TASKS and not self.class_names:
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


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> FinetuneArguments:
    """Parse ``argv`` (default ``sys.argv[1:]``) into :class:`FinetuneArguments`; a single ``.json`` file works too."""
    from ..training.pretraining import parse_dataclass_args

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
        image = np.asarray(sample["image"], dtype=np.float32)
        if image.ndim == 2:
            image = image[None]
        valid = sample.get("valid_mask")
        valid = None if valid is None else np.asarray(valid, dtype=bool)
        pixel_values, valid = self.processor.sar_to_pixel_values(image, valid)
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
    from ..data.sarsense import class_names, label_fraction_subset, load_segmentation

    splits = load_segmentation(args.data_dir, task=args.task, class_names=args.class_names)
    if "train" not in splits:
        raise ValueError(f"{args.data_dir}: no 'train' split for task {args.task!r} (found {list(splits)})")
    validation = splits.get("validation", splits.get("test"))
    test = splits.get("test", splits.get("validation"))
    if validation is None:
        raise ValueError(
            f"{args.data_dir}: task {args.task!r} has only a train split; expected a 'validation' or 'test' split"
        )
    train = splits["train"]
    if args.label_fraction < 1.0:
        train = label_fraction_subset(train, args.label_fraction, seed=args.seed)
    return train, validation, test, class_names(splits["train"])


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------


def load_imagenet_weights(model: nn.Module, weights_file: str | os.PathLike) -> list[str]:
    """Load a local ImageNet ResNet weight file into the encoder of a DI3CL segmentation model.

    The file is read by :func:`di3cl_hf.pretraining.load_local_backbone_weights` (safetensors or
    ``torch.load(weights_only=True)``, classifier dropped); conv1 is adapted to the model's input
    channels with timm's rule (summed kernels for 1 channel, repeated and rescaled otherwise).

    Returns:
        The encoder keys the file did not provide (empty for a matching architecture).

    Raises:
        ValueError: no such file, or it does not match the encoder (no key in common, shape mismatch).
    """
    from ..training.pretraining import load_backbone_weights_into

    return load_backbone_weights_into(find_timm_encoder(model), weights_file, model.config.backbone)


def find_timm_encoder(model: nn.Module) -> nn.Module:
    """The timm feature extractor of a DI3CL model (``model.base_model.encoder``)."""
    encoder = getattr(getattr(model, "base_model", model), "encoder", None)
    if encoder is None or not hasattr(encoder, "feature_info"):
        raise ValueError(f"{type(model).__name__}: no timm encoder at base_model.encoder")
    return encoder


class LinearProbeHead(nn.Module):
    """BatchNorm + 1x1 convolution on the deepest encoder features, upsampled bilinearly: the linear
    probe of the frozen encoder. Shapes: ``[B, C4, h, w] -> [B, num_labels, h, w]``."""

    def __init__(self, in_channels: int, num_labels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels, affine=False)
        self.classifier = nn.Conv2d(in_channels, num_labels, kernel_size=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.norm(features))


def build_model(args: FinetuneArguments, class_names: Sequence[str]) -> tuple[nn.Module, Any]:
    """Segmentation model and image processor for ``args.init`` (encoder weights loaded, heads new)."""
    from ..configuration_di3cl import DI3CLConfig
    from ..image_processing_di3cl import DI3CLImageProcessor
    from ..modeling_di3cl import DI3CLForSemanticSegmentation

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
        source = Path(args.model_name_or_path)
        model = DI3CLForSemanticSegmentation.from_pretrained(str(source), dtype=torch.float32, **head_kwargs)
        if (source / "preprocessor_config.json").is_file():
            processor = DI3CLImageProcessor.from_pretrained(str(source))
        else:
            processor = DI3CLImageProcessor(num_channels=model.config.num_channels)
    else:
        config = DI3CLConfig(backbone=args.backbone, num_channels=args.num_channels, **head_kwargs)
        model = DI3CLForSemanticSegmentation(config)
        processor = DI3CLImageProcessor(num_channels=args.num_channels)
        if args.init == "imagenet":
            missing = load_imagenet_weights(model, args.imagenet_weights)
            if missing:
                logger.warning(
                    "%s: %d encoder tensors kept random: %s", args.imagenet_weights, len(missing), missing
                )
    return model, processor


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
        from transformers.modeling_outputs import SemanticSegmenterOutput

        with torch.no_grad():
            features = self.model.base_model(pixel_values=pixel_values).last_hidden_state
        logits = F.interpolate(self.head(features.float()), size=pixel_values.shape[-2:], mode="bilinear")
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits, labels, ignore_index=self.ignore_index)
        return SemanticSegmenterOutput(loss=loss, logits=logits)


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


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


def _checkpoints(directory: Path) -> list[Path]:
    found = [path for path in directory.glob(f"{CHECKPOINT_PREFIX}*") if path.is_dir()]
    return sorted(found, key=lambda path: int(path.name[len(CHECKPOINT_PREFIX) :]))


def _save_checkpoint(accelerator: Any, directory: Path, step: int, keep: int) -> Path:
    """``accelerator.save_state`` into a temporary folder renamed into place, the oldest rotated out."""
    target = directory / f"{CHECKPOINT_PREFIX}{step:07d}"
    temporary = directory / f".{target.name}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(target, ignore_errors=True)
        os.replace(temporary, target)
        for old in _checkpoints(directory)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return target


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


def _tracker_config(args: FinetuneArguments) -> dict[str, Any]:
    return {
        key: (value if isinstance(value, int | float | str | bool) else str(value))
        for key, value in asdict(args).items()
    }


def finetune(args: FinetuneArguments) -> dict[str, Any]:
    """Run one fine-tuning and return its results.

    Returns:
        dict with ``validation`` and ``test`` (scores of :mod:`di3cl_hf.metrics`), ``output_dir``,
        ``train_seconds``, ``start_step`` / ``steps_run`` (after a resume), ``final_train_loss``, ``num_train_samples``, ``class_names``, ``arguments``
        (all of which are also in ``metrics.json``), plus ``model`` (the trained network, unwrapped) and
        ``processor``.

    Writes under ``args.output_dir``: ``checkpoints/step-N`` (Accelerate state, when ``save_every``),
    ``logs/`` (TensorBoard), ``metrics.json``, ``metrics.md`` and, with ``save_model``, the model
    (``save_pretrained``), ``preprocessor_config.json`` and ``README.md`` (model card).
    """
    from accelerate import Accelerator, DataLoaderConfiguration
    from accelerate.utils import ProjectConfiguration, set_seed
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    output_dir = Path(args.output_dir)
    report_to = None if args.report_to in ("none", "", None) else args.report_to
    accelerator = Accelerator(
        mixed_precision=None if args.mixed_precision == "no" else args.mixed_precision,
        log_with=report_to,
        project_config=ProjectConfiguration(
            project_dir=str(output_dir), logging_dir=str(output_dir / "logs")
        ),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
    )
    set_seed(args.seed)
    train_set, validation_set, test_set, class_names = load_task_splits(args)
    model, processor = build_model(args, class_names)
    ignore_index = model.config.semantic_loss_ignore_index
    network = configure_trainable(model, args.mode)

    train_data = SegmentationDataset(
        train_set, processor, args.crop_size, train=True, ignore_index=ignore_index
    )
    if len(train_data) == 0:
        raise ValueError(f"{args.data_dir}: label_fraction={args.label_fraction} leaves no training sample")
    batch_size = min(args.batch_size, len(train_data))
    # A batch of one image cannot train BatchNorm on pooled features: drop an incomplete last batch
    # whenever a full batch exists (the model falls back to running statistics otherwise).
    train_loader = DataLoader(
        train_data,
        batch_size=batch_size,
        shuffle=True,
        drop_last=len(train_data) >= 2 * batch_size or len(train_data) % batch_size == 1,
        num_workers=args.num_workers,
    )
    eval_loaders = {
        name: DataLoader(
            SegmentationDataset(split, processor, ignore_index=ignore_index),
            batch_size=args.eval_batch_size,
            num_workers=args.num_workers,
        )
        for name, split in (("validation", validation_set), ("test", test_set))
    }

    encoder_parameters = [p for p in model.base_model.parameters() if p.requires_grad]
    encoder_ids = {id(p) for p in encoder_parameters}
    head_parameters = [p for p in network.parameters() if p.requires_grad and id(p) not in encoder_ids]
    groups = [{"params": head_parameters, "lr": args.learning_rate}]
    if encoder_parameters:
        groups.append(
            {"params": encoder_parameters, "lr": args.learning_rate * args.backbone_learning_rate_scale}
        )
    optimizer = torch.optim.AdamW(groups, weight_decay=args.weight_decay)
    scheduler = get_scheduler(
        "cosine", optimizer, num_warmup_steps=args.warmup_steps, num_training_steps=args.max_steps
    )
    network, optimizer, train_loader, scheduler = accelerator.prepare(
        network, optimizer, train_loader, scheduler
    )
    eval_loaders = {name: accelerator.prepare(loader) for name, loader in eval_loaders.items()}

    checkpoint_dir = output_dir / "checkpoints"
    start_step = 0
    if args.resume_from_checkpoint:
        resume = Path(args.resume_from_checkpoint)
        if args.resume_from_checkpoint == "latest":
            found = _checkpoints(checkpoint_dir)
            resume = found[-1] if found else None
        if resume is not None:
            if not resume.is_dir():
                raise FileNotFoundError(f"{resume}: checkpoint folder not found")
            accelerator.load_state(str(resume))
            start_step = int(resume.name[len(CHECKPOINT_PREFIX) :])
            accelerator.print(f"resumed from {resume} at step {start_step}")

    if report_to:
        accelerator.init_trackers("finetune", config=_tracker_config(args))
    set_train_mode(accelerator.unwrap_model(network), args.mode)
    bar = tqdm(
        total=args.max_steps,
        initial=start_step,
        disable=not (args.progress and accelerator.is_local_main_process),
        desc=f"fine-tune {args.task} ({args.init}, {args.label_fraction:g} labels)",
    )
    batches = _infinite_batches(train_loader, accelerator, start_step)
    started = time.perf_counter()
    history: list[dict[str, float]] = []
    with reuse_large_allocations(accelerator.device.type == "cpu"):  # see memory.py
        for step in range(start_step + 1, args.max_steps + 1):
            batch = next(batches)
            with accelerator.autocast():
                outputs = network(pixel_values=batch["pixel_values"], labels=batch["labels"])
            loss = outputs.loss
            if not torch.isfinite(loss):
                raise FloatingPointError(f"finetune: non-finite loss {loss.item()} at step {step}")
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            record = {"train/loss": float(loss.detach()), "train/lr": scheduler.get_last_lr()[0]}
            history.append(record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['train/loss']:.4f}", lr=f"{record['train/lr']:.2e}")
            if report_to:
                accelerator.log(record, step=step)
            if args.eval_every and step % args.eval_every == 0 and step < args.max_steps:
                scores = evaluate(
                    network,
                    eval_loaders["validation"],
                    accelerator,
                    class_names,
                    args.task,
                    ignore_index,
                    args.relaxed_buffer,
                )
                if report_to:
                    accelerator.log(_scalar_scores(scores, "validation"), step=step)
                bar.write(f"step {step}: validation mIoU {100 * scores['miou']:.2f}")
                set_train_mode(accelerator.unwrap_model(network), args.mode)
            if args.save_every and step % args.save_every == 0:
                _save_checkpoint(accelerator, checkpoint_dir, step, args.checkpoints_total_limit)
    bar.close()
    elapsed = time.perf_counter() - started

    results: dict[str, Any] = {
        "output_dir": str(output_dir),
        "train_seconds": elapsed,
        "start_step": start_step,
        "steps_run": args.max_steps - start_step,
        "class_names": list(class_names),
    }
    for name, loader in eval_loaders.items():
        if name == "validation" and validation_set is test_set:
            continue  # no validation split: the test scores below stand for both
        results[name] = evaluate(
            network, loader, accelerator, class_names, args.task, ignore_index, args.relaxed_buffer
        )
        if report_to:
            accelerator.log(_scalar_scores(results[name], name), step=args.max_steps)
    results["validation_is_test"] = validation_set is test_set
    if results["validation_is_test"]:
        results["validation"] = results["test"]
    results["final_train_loss"] = history[-1]["train/loss"] if history else None
    results["arguments"] = asdict(args)
    results["num_train_samples"] = len(train_data)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_json(results, output_dir / "metrics.json")
        write_text(
            output_dir / "metrics.md",
            format_table({f"{args.init} ({args.task}, {args.label_fraction:g} labels)": results["test"]}),
        )
        if args.save_model:
            save_finetuned(accelerator.unwrap_model(network), processor, output_dir)
            write_model_card(args, results, output_dir)
    if report_to:
        accelerator.end_training()
    accelerator.wait_for_everyone()
    results["model"] = accelerator.unwrap_model(network)
    results["processor"] = processor
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
    from safetensors.torch import save_file

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
    from ..hub.push import build_model_card

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


# ----------------------------------------------------------------------------------------------
# Unsupervised setting: k-means on dense encoder features
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def dense_features(encoder: nn.Module, pixel_values: torch.Tensor, stage: str = "stage3") -> torch.Tensor:
    """L2-normalised feature map of one encoder stage: ``[B, C, H, W] -> [B, D, H/s, W/s]``.

    Args:
        encoder: a :class:`DI3CLModel` (or any DI3CL model; its ``base_model`` is used).
        pixel_values: normalised input.
        stage: ``"stem"``, ``"stage1"`` ... ``"stage4"`` (strides 2 ... 32).
    """
    from ..configuration_di3cl import STAGE_NAMES

    if stage not in STAGE_NAMES:
        raise ValueError(f"dense_features: stage={stage!r}, expected one of {STAGE_NAMES}")
    base = getattr(encoder, "base_model", encoder)
    hidden_states = base(pixel_values=pixel_values, output_hidden_states=True).hidden_states
    return F.normalize(hidden_states[STAGE_NAMES.index(stage)].float(), dim=1)


@torch.no_grad()
def evaluate_kmeans(
    encoder: nn.Module,
    processor: Any,
    fit_split: Any,
    test_split: Any,
    class_names: Sequence[str],
    num_clusters: int | None = None,
    stage: str = "stage3",
    max_fit_pixels: int = 20000,
    batch_size: int = 8,
    seed: int = 0,
) -> dict[str, Any]:
    """Unsupervised segmentation: k-means on dense features, scored with Hungarian-matched mIoU.

    Features of ``fit_split`` (its labels are not used) are sampled (at most ``max_fit_pixels``
    feature vectors), clustered with :func:`scipy.cluster.vq.kmeans2` (k-means++ initialisation);
    every feature of ``test_split`` goes to its nearest centroid, the cluster map is upsampled
    (nearest) to the label size, and clusters are matched one-to-one to classes
    (:func:`di3cl_hf.metrics.hungarian_scores`).

    Returns:
        The scores dict of :func:`~di3cl_hf.metrics.hungarian_scores` plus ``num_clusters`` and ``stage``.
    """
    from scipy.cluster.vq import kmeans2

    num_clusters = num_clusters or len(class_names)
    encoder.eval()
    generator = torch.Generator().manual_seed(seed)

    def batches(split: Any) -> Iterator[dict[str, torch.Tensor]]:
        yield from DataLoader(SegmentationDataset(split, processor), batch_size=batch_size)

    fit_features = []
    per_image = max(1, max_fit_pixels // max(len(fit_split), 1))
    for batch in batches(fit_split):
        features = dense_features(encoder, batch["pixel_values"], stage)  # [B, D, h, w]
        for feature_map in features:
            flat = feature_map.flatten(1).T  # [h*w, D]
            chosen = torch.randperm(flat.shape[0], generator=generator)[:per_image]
            fit_features.append(flat[chosen])
    data = torch.cat(fit_features).numpy().astype(np.float64)
    centroids, _ = kmeans2(data, num_clusters, iter=30, minit="++", seed=seed)
    centroids_t = torch.from_numpy(centroids).float()

    cluster_maps, label_maps = [], []
    for batch in batches(test_split):
        features = dense_features(encoder, batch["pixel_values"], stage)
        b, d, h, w = features.shape
        distances = torch.cdist(features.permute(0, 2, 3, 1).reshape(-1, d), centroids_t)
        clusters = distances.argmin(dim=1).reshape(b, 1, h, w).float()
        clusters = F.interpolate(clusters, size=batch["labels"].shape[-2:], mode="nearest").long()[:, 0]
        cluster_maps.append(clusters)
        label_maps.append(batch["labels"])
    scores = hungarian_scores(
        torch.cat(cluster_maps), torch.cat(label_maps), num_clusters, len(class_names), class_names
    )
    scores.update(num_clusters=num_clusters, stage=stage)
    return scores


# ----------------------------------------------------------------------------------------------
# The evaluation grid: initialisation x label fraction x task
# ----------------------------------------------------------------------------------------------


@dataclass
class EvaluationGridArguments:
    """Arguments of the evaluation grid (``examples/evaluate.py``); every fine-tuning in the grid
    shares the budget set here."""

    data_dir: str = field(metadata={"help": "Segmentation sets root (landcover/, water/, roads/ inside)."})
    output_dir: str = field(
        metadata={"help": "evaluation.json, evaluation.md and label_efficiency.png go here."}
    )
    pretrained_model: str | None = field(
        default=None, metadata={"help": "DI3CL checkpoint folder for the 'di3cl' initialisation."}
    )
    imagenet_weights: str | None = field(
        default=None, metadata={"help": "Local timm ResNet file for the 'imagenet' initialisation."}
    )
    tasks: list[str] = field(default_factory=lambda: list(TASKS), metadata={"help": "Tasks of the grid."})
    initialisations: list[str] = field(
        default_factory=lambda: ["di3cl", "random"], metadata={"help": "Initialisations compared."}
    )
    label_fractions: list[float] = field(
        default_factory=lambda: [0.01, 0.1], metadata={"help": "Fractions of labelled training samples."}
    )
    mode: str = field(default="full", metadata={"help": "full, frozen or linear (same for every run)."})
    backbone: str = field(
        default="resnet18", metadata={"help": "Encoder for random/imagenet initialisation."}
    )
    num_channels: int = field(
        default=2, metadata={"help": "Input channels for random/imagenet initialisation."}
    )
    crop_size: int = field(default=128, metadata={"help": "Training crop side."})
    batch_size: int = field(default=4, metadata={"help": "Training batch."})
    max_steps: int = field(default=100, metadata={"help": "Steps of every fine-tuning."})
    learning_rate: float = field(default=5e-4, metadata={"help": "AdamW learning rate."})
    decoder_hidden_size: int = field(default=128, metadata={"help": "UperNet channels."})
    mixed_precision: str = field(default="bf16", metadata={"help": "bf16, fp16 or no."})
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

    def __post_init__(self) -> None:
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


def _grid_finetune_arguments(
    grid: EvaluationGridArguments, task: str, init: str, fraction: float, seed: int
) -> FinetuneArguments:
    return FinetuneArguments(
        data_dir=grid.data_dir,
        output_dir=str(
            Path(grid.output_dir) / "runs" / task / init / f"labels-{fraction:g}" / f"seed-{seed}"
        ),
        task=task,
        init=init,
        model_name_or_path=grid.pretrained_model if init == "di3cl" else None,
        imagenet_weights=grid.imagenet_weights if init == "imagenet" else None,
        backbone=grid.backbone,
        num_channels=grid.num_channels,
        mode=grid.mode,
        label_fraction=fraction,
        crop_size=grid.crop_size,
        batch_size=grid.batch_size,
        max_steps=grid.max_steps,
        learning_rate=grid.learning_rate,
        decoder_hidden_size=grid.decoder_hidden_size,
        segmentation_loss="ce+dice" if task == "roads" else "ce",
        mixed_precision=grid.mixed_precision,
        seed=seed,
        report_to="none",
        save_model=grid.save_models,
        progress=False,
    )


def _kmeans_encoder(grid: EvaluationGridArguments, init: str) -> tuple[nn.Module, Any]:
    from ..configuration_di3cl import DI3CLConfig
    from ..image_processing_di3cl import DI3CLImageProcessor
    from ..modeling_di3cl import DI3CLModel

    if init == "di3cl":
        encoder = DI3CLModel.from_pretrained(grid.pretrained_model, dtype=torch.float32)
        source = Path(grid.pretrained_model)
        processor = (
            DI3CLImageProcessor.from_pretrained(str(source))
            if (source / "preprocessor_config.json").is_file()
            else DI3CLImageProcessor(num_channels=encoder.config.num_channels)
        )
        return encoder, processor
    torch.manual_seed(grid.seeds[0])
    encoder = DI3CLModel(DI3CLConfig(backbone=grid.backbone, num_channels=grid.num_channels))
    if init == "imagenet":
        load_imagenet_weights(encoder, grid.imagenet_weights)
    return encoder, DI3CLImageProcessor(num_channels=grid.num_channels)


def run_evaluation_grid(grid: EvaluationGridArguments) -> dict[str, Any]:
    """Fine-tune every (task, initialisation, label fraction) with the same budget, score the test
    splits, optionally score k-means clusters of each initialisation's frozen encoder, and write
    ``evaluation.json``, ``evaluation.md`` (the comparison table + per-class tables) and
    ``label_efficiency.png`` under ``grid.output_dir``.

    Returns:
        ``{"results": {task: {init: {fraction: scores}}}, "kmeans": {task: {init: scores}}, "seconds": ...}``
        (fractions as strings, as in the JSON).
    """
    from tqdm.auto import tqdm

    if grid.num_threads > 0:
        torch.set_num_threads(grid.num_threads)
    output_dir = Path(grid.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    kmeans_results: dict[str, dict[str, Any]] = {}
    runs = [
        (t, i, f, seed)
        for t in grid.tasks
        for i in grid.initialisations
        for f in grid.label_fractions
        for seed in grid.seeds
    ]
    per_seed: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    started = time.perf_counter()
    for task, init, fraction, seed in tqdm(runs, desc="evaluation grid"):
        run = finetune(_grid_finetune_arguments(grid, task, init, fraction, seed))
        per_seed.setdefault((task, init, fraction), []).append(
            {
                **run["test"],
                "seed": seed,
                "num_train_samples": run["num_train_samples"],
                "train_seconds": run["train_seconds"],
                "final_train_loss": run["final_train_loss"],
            }
        )
    for (task, init, fraction), seed_runs in per_seed.items():
        results.setdefault(task, {}).setdefault(init, {})[f"{fraction:g}"] = mean_scores(seed_runs)
    if grid.kmeans:
        for task in grid.tasks:
            arguments = _grid_finetune_arguments(grid, task, "random", 1.0, grid.seeds[0])
            train, _, test, class_names = load_task_splits(arguments)
            for init in grid.initialisations:
                encoder, processor = _kmeans_encoder(grid, init)
                kmeans_results.setdefault(task, {})[init] = evaluate_kmeans(
                    encoder, processor, train, test, class_names, stage=grid.kmeans_stage, seed=grid.seeds[0]
                )
    summary = {
        "results": results,
        "kmeans": kmeans_results,
        "seconds": time.perf_counter() - started,
        "arguments": asdict(grid),
        "data": "synthetic" if "synthetic" in str(grid.data_dir).lower() else str(grid.data_dir),
    }
    save_json(summary, output_dir / "evaluation.json")
    write_text(output_dir / "evaluation.md", grid_markdown(summary))
    plot_label_efficiency(summary, output_dir / "label_efficiency.png", metric=grid.metric)
    return summary


HEADLINE_METRICS = ("overall_accuracy", "kappa", "miou", "mean_f1")


def mean_scores(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Average the scores of the same setting over seeds.

    Returns:
        A scores dict (headline metrics, per-class ``f1``/``iou``, ``relaxed`` precision/recall/F1, all
        means over seeds) plus ``std`` (headline metrics and ``relaxed_f1``; population standard
        deviation, 0 for one seed), ``num_seeds``, ``num_train_samples`` and ``seeds`` (each seed's
        headline metrics).
    """
    if not runs:
        raise ValueError("mean_scores: no runs to average")

    def mean(values: list[float]) -> float:
        finite = [value for value in values if value is not None and math.isfinite(value)]
        return float(np.mean(finite)) if finite else float("nan")

    def std(values: list[float]) -> float:
        finite = [value for value in values if value is not None and math.isfinite(value)]
        return float(np.std(finite)) if finite else float("nan")

    averaged: dict[str, Any] = {key: mean([run[key] for run in runs]) for key in HEADLINE_METRICS}
    averaged["std"] = {key: std([run[key] for run in runs]) for key in HEADLINE_METRICS}
    averaged["per_class"] = {
        name: {metric: mean([run["per_class"][name][metric] for run in runs]) for metric in ("f1", "iou")}
        for name in runs[0].get("per_class", {})
    }
    if all("relaxed" in run for run in runs):
        averaged["relaxed"] = {
            key: mean([run["relaxed"][key] for run in runs]) for key in ("precision", "recall", "f1")
        }
        averaged["std"]["relaxed_f1"] = std([run["relaxed"]["f1"] for run in runs])
    averaged["num_seeds"] = len(runs)
    averaged["num_train_samples"] = runs[0].get("num_train_samples")
    averaged["seeds"] = [
        {
            "seed": run.get("seed"),
            **{key: run[key] for key in HEADLINE_METRICS},
            "relaxed_f1": (run.get("relaxed") or {}).get("f1"),
            "num_train_samples": run.get("num_train_samples"),
            "train_seconds": run.get("train_seconds"),
            "final_train_loss": run.get("final_train_loss"),
        }
        for run in runs
    ]
    return averaged


def comparison_table(summary: Mapping[str, Any]) -> str:
    """One markdown table of the whole grid: task, labels, initialisation, OA / Kappa / mIoU / mean F1
    (and relaxed F1 for roads) in percent, ``mean ± std`` over seeds when there are several; k-means
    rows have ``0 (k-means)`` labels."""

    def percent(value: Any, spread: Any = None) -> str:
        if value is None or not math.isfinite(float(value)):
            return "–"
        if spread is not None and math.isfinite(float(spread)):
            return f"{100 * float(value):.2f} ± {100 * float(spread):.2f}"
        return f"{100 * float(value):.2f}"

    def cells(scores: Mapping[str, Any], relaxed: bool) -> list[str]:
        spread = (scores.get("std") or {}) if scores.get("num_seeds", 1) > 1 else {}
        row = [percent(scores.get(key), spread.get(key)) for key in HEADLINE_METRICS]
        relaxed_f1 = (scores.get("relaxed") or {}).get("f1")
        row.append(percent(relaxed_f1, spread.get("relaxed_f1")) if relaxed else "–")
        return row

    lines = [
        "| Task | Labels | Init | Train samples | Seeds | OA | Kappa | mIoU | mean F1 | relaxed F1 |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for task, by_init in summary["results"].items():
        fractions = sorted({fraction for runs in by_init.values() for fraction in runs}, key=float)
        for fraction in fractions:
            for init in by_init:
                scores = by_init[init].get(fraction)
                if scores is None:
                    continue
                lines.append(
                    f"| {task} | {100 * float(fraction):g} % | {init} | {scores.get('num_train_samples', '')} | "
                    f"{scores.get('num_seeds', 1)} | " + " | ".join(cells(scores, "relaxed" in scores)) + " |"
                )
        for init, scores in (summary.get("kmeans") or {}).get(task, {}).items():
            lines.append(
                f"| {task} | 0 (k-means, {scores.get('num_clusters')} clusters) | {init} | 0 | 1 | "
                + " | ".join(cells(scores, relaxed=False))
                + " |"
            )
    return "\n".join(lines) + "\n"


def grid_markdown(summary: Mapping[str, Any]) -> str:
    """The comparison table followed by one Table II-style table (per-class F1) per task."""
    parts = ["## Comparison\n", comparison_table(summary)]
    for task, by_init in summary["results"].items():
        rows = {
            f"{init}, {100 * float(fraction):g} % labels": scores
            for init, runs in by_init.items()
            for fraction, scores in sorted(runs.items(), key=lambda item: float(item[0]))
        }
        parts += [f"\n## {task}: per-class F1 (Table II layout, %)\n\n", format_table(rows)]
    return "".join(parts)


def plot_label_efficiency(
    summary: Mapping[str, Any], path: str | os.PathLike, metric: str = "miou", relaxed_for_roads: bool = True
) -> Path:
    """Label-efficiency curves: ``metric`` (%) against the label fraction (log scale), one panel per
    task and one line per initialisation (error bars: standard deviation over seeds); k-means scores
    as dashed horizontal lines. With ``relaxed_for_roads``, tasks scored with the relaxed measure
    (roads) show the relaxed F1 instead: their mIoU is dominated by the background class. Written
    as PNG (matplotlib, Agg backend) atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(summary["results"])
    figure, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False)
    colours = {"di3cl": "tab:blue", "random": "tab:orange", "imagenet": "tab:green"}
    for axis, task in zip(axes[0], tasks):
        relaxed = relaxed_for_roads and all(
            "relaxed" in scores for runs in summary["results"][task].values() for scores in runs.values()
        )

        def value(scores: Mapping[str, Any], relaxed: bool = relaxed) -> tuple[float, float]:
            spread = scores.get("std") or {}
            if relaxed:
                return scores["relaxed"]["f1"], spread.get("relaxed_f1") or 0.0
            return scores[metric], spread.get(metric) or 0.0

        for init, runs in summary["results"][task].items():
            points = sorted((float(fraction), *value(scores)) for fraction, scores in runs.items())
            axis.errorbar(
                [100 * x for x, _, _ in points],
                [100 * y for _, y, _ in points],
                yerr=[100 * e for _, _, e in points],
                marker="o",
                capsize=3,
                color=colours.get(init),
                label=f"{init} (fine-tuned)",
            )
        for init, scores in (summary.get("kmeans") or {}).get(task, {}).items():
            if relaxed:
                continue  # k-means scores carry no relaxed measure
            axis.axhline(
                100 * scores[metric],
                linestyle="--",
                color=colours.get(init),
                alpha=0.6,
                label=f"{init} (k-means)",
            )
        fractions = sorted({float(f) for runs in summary["results"][task].values() for f in runs})
        axis.set_xscale("log")
        axis.set_xticks([100 * f for f in fractions], [f"{100 * f:g}" for f in fractions])
        axis.minorticks_off()
        axis.set_xlabel("labelled training samples (%)")
        axis.set_ylabel("relaxed F1 (%)" if relaxed else f"{METRIC_LABELS.get(metric, metric)} (%)")
        axis.set_title(task)
        axis.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=8)
    figure.suptitle("Label efficiency" + (" (synthetic data)" if summary.get("data") == "synthetic" else ""))
    figure.tight_layout()
    path = Path(path)
    try:
        with atomic_path(path, suffix=".png") as temporary:
            figure.savefig(temporary, dpi=120)
    finally:
        plt.close(figure)
    return path


def parse_grid_args(argv: Sequence[str] | None = None) -> EvaluationGridArguments:
    """Parse ``argv`` (default ``sys.argv[1:]``) into :class:`EvaluationGridArguments`; a single ``.json`` file works too."""
    from ..training.pretraining import parse_dataclass_args

    return parse_dataclass_args(EvaluationGridArguments, None if argv is None else list(argv))


__all__ = [
    "EvaluationGridArguments",
    "FinetuneArguments",
    "LinearProbeHead",
    "SegmentationDataset",
    "build_model",
    "comparison_table",
    "configure_trainable",
    "dense_features",
    "evaluate",
    "evaluate_kmeans",
    "find_timm_encoder",
    "finetune",
    "grid_markdown",
    "load_imagenet_weights",
    "load_task_splits",
    "mean_scores",
    "metrics_summary",
    "parse_args",
    "parse_grid_args",
    "plot_label_efficiency",
    "run_evaluation_grid",
    "save_finetuned",
    "set_train_mode",
    "write_model_card",
]
