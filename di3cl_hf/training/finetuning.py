"""Fine-tuning DI3CL for SAR segmentation (land cover, water, roads) with Accelerate: the loop.

:func:`finetune` runs one :class:`~di3cl_hf.training.finetuning_args.FinetuneArguments` (``examples/finetune.py``,
``di3cl finetune``) as :func:`setup` (accelerator, data, model, optimiser, resume), :func:`train`
(:func:`train_step` per update, periodic validation and checkpoints) and :func:`finish` (final scores, the run
folder's ``metrics.json`` / ``metrics.md``, the model and its card) — the same steps as pre-training
(:mod:`di3cl_hf.training.pretraining`), in the same run-folder layout
(:data:`di3cl_hf.training.common.RUN_LAYOUT`).

- Data: a segmentation folder (:func:`di3cl_hf.data.load_segmentation`, the three presets or any image/mask
  folder, or a flood set as it comes with ``layout``: ETCI, OMBRIA), a reproducible fraction of the labelled
  training samples (``label_fraction``; for binary tasks and flood layouts it holds at least one foreground
  sample), read through :class:`~di3cl_hf.data.segmentation_dataset.SegmentationDataset` (the model's
  :class:`~di3cl_hf.image_processing_di3cl.DI3CLImageProcessor`; nodata pixels become the ignore label).
- Model: a DI3CL encoder under a new UperNet head, local ImageNet weights or random initialisation, all through
  :mod:`di3cl_hf.loading` (``num_channels`` other than a DI3CL encoder's adapts its first convolution); full
  fine-tuning, frozen backbone or linear probe (:mod:`di3cl_hf.training.segmentation_models`).
- Loop: Accelerate (:func:`~di3cl_hf.training.common.build_accelerator`: bf16 autocast where the hardware runs it
  natively, else fp32; ``accelerate launch`` for several processes), a progress bar, a TensorBoard tracker,
  rotated atomic checkpoints and ``--resume_from_checkpoint``; what the run leaves behind is written by
  :mod:`di3cl_hf.training.run_outputs`.

The evaluation grid and k-means live in :mod:`di3cl_hf.training.evaluation`.

UperNet's pyramid pooling has a BatchNorm after a global pool, which cannot train on a batch of one
image; the model falls back to running statistics for such a batch, and the training loader here drops
the last incomplete batch whenever the training set has at least two batches' worth of samples.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from ..atomic import write_text
from ..configuration_di3cl import DI3CLConfig
from ..data.segmentation_dataset import SegmentationDataset, task_splits
from ..image_processing_di3cl import DI3CLImageProcessor
from ..loading import find_encoder
from ..memory import reuse_large_allocations
from ..modeling_di3cl import DI3CLForSemanticSegmentation
from ..runtime import fused_optimizer
from .common import (
    METRICS_NAME,
    build_accelerator,
    check_output_dir,
    load_checkpoint,
    maybe_compile,
    resolve_checkpoint,
    save_checkpoint,
    tracker_config,
    trackers,
    write_run_config,
)
from .finetuning_args import INITIALISATIONS, TASKS, FinetuneArguments, FinetuneBudget, parse_args
from .metrics import SegmentationMetrics, format_table, save_json
from .run_outputs import metrics_summary, save_finetuned, write_model_card
from .segmentation_models import (
    MODES,
    LinearProbeHead,
    configure_trainable,
    load_imagenet_weights,
    segmentation_model_on_encoder,
    set_train_mode,
)
from .statistics import estimate_statistics, processor_statistics

logger = logging.getLogger(__name__)


def load_task_splits(args: FinetuneBudget) -> tuple[Any, Any, Any, list[str]]:
    """Train (label-fraction subset), validation and test splits of ``args.task`` and the class names
    (:func:`di3cl_hf.data.segmentation_dataset.task_splits` with the run's arguments)."""
    return task_splits(
        args.data_dir, args.task, class_names=args.class_names, layout=args.layout, nodata=args.nodata,
        label_fraction=args.label_fraction, label_fraction_positive=args.label_fraction_positive, seed=args.seed,
    )  # fmt: skip


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


def relaxed_class(class_names: Sequence[str], task: str) -> int | None:
    """The class scored with relaxed precision / recall / F1 (roads), else ``None``."""
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
        relaxed_class=relaxed_class(class_names, task),
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
    """What the fine-tuning loop works on, built by :func:`setup`."""

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
    batches: Iterator[dict[str, torch.Tensor]] | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0


def _loaders(args: FinetuneArguments, splits: tuple, processor: Any, ignore_index: int):
    train_set, validation_set, test_set = splits
    train_data = SegmentationDataset(
        train_set,
        processor,
        args.crop_size,
        train=True,
        ignore_index=ignore_index,
        foreground_crop_probability=args.foreground_crop_probability,
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


def setup(args: FinetuneArguments) -> FinetuneRun:
    """Accelerator, data, model, optimiser; resumed from a checkpoint if asked; ``config.json`` of the run folder."""
    output_dir = check_output_dir(
        args.output_dir,
        overwrite_output_dir=args.overwrite_output_dir,
        resume_from_checkpoint=args.resume_from_checkpoint,
    )
    accelerator, _ = build_accelerator(
        args, dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed)
    )
    log_with = trackers(args.report_to)
    set_seed(args.seed)
    train_set, validation_set, test_set, class_names = load_task_splits(args)
    model, processor = build_model(args, class_names)
    write_run_config(accelerator, output_dir, model.config)
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
    run.batches = _infinite_batches(run.train_loader, accelerator, run.start_step)
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


def train_step(run: FinetuneRun, step: int) -> dict[str, float]:
    """One optimisation step on the next batch; returns its record (``train/loss``, ``train/lr``).

    Raises:
        FloatingPointError: A non-finite loss (fine-tuning stops; pre-training skips such an update instead).
    """
    accelerator = run.accelerator
    batch = next(run.batches)
    with accelerator.autocast():
        pixel_values = batch["pixel_values"].contiguous(memory_format=torch.channels_last)
        loss = run.network(pixel_values=pixel_values, labels=batch["labels"]).loss
    if not torch.isfinite(loss):
        raise FloatingPointError(f"finetune: non-finite loss {loss.item()} at step {step}")
    accelerator.backward(loss)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return {"train/loss": float(loss.detach()), "train/lr": run.scheduler.get_last_lr()[0]}


def train(run: FinetuneRun) -> list[dict[str, float]]:
    """The optimisation steps from ``start_step + 1`` to ``max_steps`` (:func:`train_step`), validation every
    ``eval_every`` and checkpoints every ``save_steps``; returns the per-step records (also ``run.history``)."""
    args, accelerator = run.args, run.accelerator
    started = time.perf_counter()
    set_train_mode(accelerator.unwrap_model(run.network), args.mode)
    bar = tqdm(
        total=args.max_steps,
        initial=run.start_step,
        disable=args.disable_tqdm or not accelerator.is_local_main_process,
        desc=f"fine-tune {args.task} ({args.init}, {args.label_fraction:g} labels)",
    )
    with reuse_large_allocations(accelerator.device.type == "cpu"):  # see memory.py
        for step in range(run.start_step + 1, args.max_steps + 1):
            record = train_step(run, step)
            run.history.append(record)
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
    run.train_seconds += time.perf_counter() - started
    return run.history


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


def finish(run: FinetuneRun) -> dict[str, Any]:
    """Final scores, ``metrics.json`` / ``metrics.md`` and, with ``save_model``, the model, processor and card;
    returns the results (:func:`finetune`)."""
    args, accelerator, output_dir = run.args, run.accelerator, Path(run.args.output_dir)
    results: dict[str, Any] = {
        "output_dir": str(args.output_dir),
        "train_seconds": run.train_seconds,
        "start_step": run.start_step,
        "steps_run": args.max_steps - run.start_step,
        "class_names": run.class_names,
        **_final_scores(run),
    }
    results["validation_is_test"] = run.validation_is_test
    results["final_train_loss"] = run.history[-1]["train/loss"] if run.history else None
    results["arguments"] = asdict(args)
    results["num_train_samples"] = run.num_train_samples
    results["input_statistics"] = run.input_statistics
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_json(results, output_dir / METRICS_NAME)
        name = f"{args.init} ({args.task}, {args.label_fraction:g} labels)"
        write_text(output_dir / "metrics.md", format_table({name: results["test"]}))
        if args.save_model:
            save_finetuned(accelerator.unwrap_model(run.network), run.processor, output_dir)
            write_model_card(args, results, output_dir)
    accelerator.wait_for_everyone()  # before end_training: a barrier needs the process group it may destroy
    if run.log_with:
        accelerator.end_training()
    results["model"] = accelerator.unwrap_model(run.network)
    results["processor"] = run.processor
    return results


def finetune(args: FinetuneArguments) -> dict[str, Any]:
    """Run one fine-tuning (:func:`setup`, :func:`train`, :func:`finish`) and return its results.

    Returns:
        dict with ``validation`` and ``test`` (scores of :mod:`di3cl_hf.metrics`), ``output_dir``,
        ``train_seconds``, ``start_step`` / ``steps_run`` (after a resume), ``final_train_loss``,
        ``num_train_samples``, ``class_names``, ``arguments`` (all of which are also in ``metrics.json``), plus
        ``model`` (the trained network, unwrapped) and ``processor``.

    Writes under ``args.output_dir`` (:data:`~di3cl_hf.training.common.RUN_LAYOUT`): the run marker,
    ``config.json``, ``checkpoints/checkpoint-N`` (when ``save_steps``), ``logs/`` (TensorBoard), ``metrics.json``,
    ``metrics.md`` and, with ``save_model``, the model (``save_pretrained``), ``preprocessor_config.json`` and
    ``README.md`` (model card).
    """
    run = setup(args)
    train(run)
    return finish(run)


def _scalar_scores(scores: Mapping[str, Any], prefix: str) -> dict[str, float]:
    scalars = {
        f"{prefix}/{key}": float(scores[key]) for key in ("overall_accuracy", "kappa", "miou", "mean_f1")
    }
    if "relaxed" in scores:
        scalars[f"{prefix}/relaxed_f1"] = float(scores["relaxed"]["f1"])
    return {key: value for key, value in scalars.items() if math.isfinite(value)}


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
    "finish",
    "load_imagenet_weights",
    "load_task_splits",
    "metrics_summary",
    "parse_args",
    "relaxed_class",
    "save_finetuned",
    "segmentation_model_on_encoder",
    "set_train_mode",
    "setup",
    "train",
    "train_step",
    "write_model_card",
]
