"""DI3CL pre-training with 🤗 Accelerate: one loop for CPU, one GPU, several GPUs and several nodes.

``accelerate launch examples/pretrain.py --data_dir sarsense/ ...`` (or plain ``python``) runs :func:`main` with a
:class:`PretrainingArguments`. What the loop guarantees:

- **Data**: a SARSense folder (:func:`di3cl_hf.data.load_sarsense`), Parquet shards or any ``datasets`` dataset,
  map-style or streamed. Map-style data goes through a per-epoch global permutation split across processes (each
  process reads different samples, the same number of them); streams are split with
  :func:`datasets.distributed.split_dataset_by_node`. Views are made in DataLoader workers by
  :class:`~di3cl_hf.augmentation.PretrainingTransform`; box pairs are sampled there too by
  :class:`~di3cl_hf.boxes.PretrainingCollator`. The random state of each sample and each batch is derived from
  ``(seed, epoch, position)`` so that a resumed run sees exactly the views and boxes an uninterrupted one would.
- **Release defaults** (docs/method.md#optimisation): SGD, momentum 0.9, weight decay 1e-4, lr ``0.03 * global_batch / 256``,
  cosine decay, optional warm-up. The queue size must be a multiple of the number of keys enqueued per forward
  (``per_device_batch_size * num_processes``), checked before anything runs.
- **Speed**: channels_last always; bf16 autocast only where the device runs it natively (:mod:`di3cl_hf.runtime`).
- **Several processes**: :class:`~di3cl_hf.modeling_di3cl.DI3CLForPreTraining` gathers the keys of all processes
  and uses shuffle-BN whenever ``torch.distributed`` is initialised, so every process holds identical queues whose
  pointer advances by the global batch; the loop checks the queues' digests across processes at each checkpoint
  and at the end (a mismatch stops the run).
- **Long runs**: checkpoints through :mod:`di3cl_hf.training.common` (Accelerate's ``save_state``: model with its
  queues, optimiser, scheduler, RNG states; data position and counters as JSON), written into a temporary folder and renamed, the last
  ``save_total_limit`` kept; ``--resume_from_checkpoint latest`` continues from the exact step; SIGTERM / SIGINT
  finish the current step, save a checkpoint and exit cleanly; a non-finite loss skips the update (the keys it
  enqueued are taken out again, :meth:`DI3CLForPreTraining.restore_queues`) and ``max_consecutive_nonfinite`` of them in a row stop the run.
- **Outputs** (the run folder of every loop, :data:`~di3cl_hf.training.common.RUN_LAYOUT`): the run marker,
  ``config.json`` (the pre-training model's config), ``checkpoints/``, TensorBoard scalars in ``logs/``, and at the
  end the encoder (:class:`~di3cl_hf.modeling_di3cl.DI3CLModel`, from the query side), the image processor and a
  model card in ``<output_dir>/encoder`` (:mod:`.run_outputs`), the same card as ``README.md`` and the run summary
  as ``metrics.json``; ``--push_to_hub`` uploads the encoder folder.

Layout: :func:`main` = :func:`setup` (accelerator from :func:`~di3cl_hf.training.common.build_accelerator`, data
from :mod:`.pretraining_data`, model, optimiser, resume), :func:`train` (:func:`train_step` per update,
:func:`log_metrics`, checkpoints), :func:`finish` (final checkpoint, encoder, card) — the steps of fine-tuning too.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import gather_object, set_seed
from timm.optim import create_optimizer_v2, list_optimizers
from tqdm.auto import tqdm
from transformers import get_scheduler

from ..atomic import write_json, write_text
from ..configuration_di3cl import DI3CLConfig
from ..loading import find_encoder, load_backbone_weights_into, load_local_backbone_weights
from ..memory import reuse_large_allocations
from ..modeling_di3cl import DI3CLForPreTraining, DI3CLModel
from ..runtime import StopSignal, accelerate_mixed_precision, fused_optimizer
from .common import (
    CARD_NAME,
    METRICS_NAME,
    TRAINER_STATE_NAME,
    build_accelerator,
    check_output_dir,
    list_checkpoints,
    load_checkpoint,
    maybe_compile,
    parse_dataclass_args,
    resolve_checkpoint,
    save_checkpoint,
    tracker_config,
    trackers,
    write_run_config,
)
from .monitor import ProbeMonitor, load_probe_data
from .pretraining_args import (
    OPTIMIZER_ALIASES,
    PretrainingArguments,
    build_config,
    check_queue_and_batch,
    parse_args,
    scaled_learning_rate,
)
from .pretraining_data import (
    EpochShardSampler,
    PretrainingBatches,
    SampleFunction,
    build_transform_and_collator,
    crops_per_image,
    image_shapes,
    load_pretraining_dataset,
    seeded_rng,
    warn_queue_vs_corpus,
)
from .run_outputs import (
    BEST_ENCODER_DIRNAME,
    ENCODER_DIRNAME,
    push_folder_to_hub,
    run_info,
    save_encoder,
)
from .statistics import estimate_statistics, processor_statistics

logger = logging.getLogger(__name__)


def build_optimizer(
    model: torch.nn.Module,
    args: PretrainingArguments,
    learning_rate: float,
    device: torch.device | str | None = None,
) -> torch.optim.Optimizer:
    """The optimiser over the trainable (query-side) parameters, via ``timm.optim.create_optimizer_v2``.

    Weight decay applies to every parameter as in the release (MoCo) for SGD; adaptive optimisers (AdamW, LARS,
    LAMB) exclude biases and normalisation weights, as is usual for them. SGD uses torch's fused kernel where
    ``device`` (the training device; default: the parameters') supports it (:func:`di3cl_hf.runtime.fused_optimizer`).
    """
    name = OPTIMIZER_ALIASES.get(args.optimizer.lower(), args.optimizer.lower())
    if name not in list_optimizers():
        raise ValueError(
            f"optimizer={args.optimizer!r} is unknown; use sgd, nesterov, adamw, lars, lamb or a timm name"
        )
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    filter_bias_and_bn = name not in ("momentum", "nesterov", "sgd")
    if filter_bias_and_bn:
        decay = [p for n, p in named if p.ndim > 1]
        no_decay = [p for n, p in named if p.ndim <= 1]
        params: Any = [
            {"params": decay, "weight_decay": args.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
    else:
        params = [p for _, p in named]
    kwargs: dict[str, Any] = {
        "lr": learning_rate,
        "weight_decay": args.weight_decay,
        "filter_bias_and_bn": False,
    }
    if name in ("momentum", "nesterov", "sgd", "lars", "nlars", "larc", "nlarc", "rmsprop"):
        kwargs["momentum"] = args.optimizer_momentum
    if name in ("momentum", "nesterov") and fused_optimizer(device or named[0][1].device):
        kwargs["fused"] = True  # torch's own SGD class (timm's "momentum" / "nesterov"), fused kernel
    return create_optimizer_v2(params, opt=name, **kwargs)


def build_scheduler(optimizer: torch.optim.Optimizer, args: PretrainingArguments, total_steps: int):
    """transformers' learning-rate schedule (cosine by default) with optional linear warm-up."""
    warmup = args.warmup_steps or int(math.ceil(args.warmup_ratio * total_steps))
    return get_scheduler(
        args.lr_scheduler_type, optimizer, num_warmup_steps=warmup, num_training_steps=max(1, total_steps)
    )


METRIC_NAMES = (
    "loss",
    "global_loss",
    "contour_loss",
    "instance_loss",
    "global_top1",
    "contour_top1",
    "num_boxes",
)


def _to_device(batch: dict, device: torch.device, channels_last: bool) -> dict:
    moved = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if channels_last and value.ndim == 4:
                value = value.contiguous(memory_format=torch.channels_last)
        moved[key] = value
    return moved


def _output_metrics(output) -> list[torch.Tensor]:
    def scalar(value) -> torch.Tensor:
        if value is None:
            return torch.tensor(float("nan"))
        return torch.as_tensor(value).detach().float().reshape(-1)[0].cpu()

    return [
        scalar(output.loss),
        scalar(output.global_loss),
        scalar(output.contour_loss),
        scalar(output.instance_loss),
        scalar(output.global_accuracy),
        scalar(output.contour_accuracy),
        scalar(output.num_boxes),
    ]


def initialise_backbone_from_imagenet(model: DI3CLForPreTraining, path: str | os.PathLike) -> list[str]:
    """Load a local ImageNet ResNet into the query encoder and copy it to the key encoder.

    conv1 is adapted to ``config.num_channels`` with timm's rule (summed kernels for one channel, repeated and
    rescaled otherwise). Returns the encoder parameters that were not in the file (empty for a matching ResNet);
    raises ValueError when nothing matches.
    """
    missing = load_backbone_weights_into(find_encoder(model), path, model.config.backbone)
    model.copy_query_encoder_to_key()
    return missing


def export_encoder(model: DI3CLForPreTraining) -> DI3CLModel:
    """A standalone :class:`DI3CLModel` holding the query encoder's weights (see
    :meth:`DI3CLForPreTraining.export_encoder`)."""
    return model.export_encoder()


# --------------------------------------------------------------------------------------------------------------
# The loop: setup, train_step, logging, finish
# --------------------------------------------------------------------------------------------------------------


@dataclass
class TrainerState:
    """Counters and data positions saved with every checkpoint (as JSON: ``training_state.json``)."""

    global_step: int = 0
    images_seen: int = 0
    nonfinite_total: int = 0
    nonfinite_consecutive: int = 0
    num_processes: int = 1
    data_positions: list[list[int]] = field(default_factory=list)
    monitor: dict[str, Any] = field(default_factory=dict)

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            if key in self.__dataclass_fields__:
                setattr(self, key, value)


@dataclass
class PretrainingRun:
    """Everything the loop works on, built by :func:`setup` (one object instead of 20 locals)."""

    args: PretrainingArguments
    accelerator: Accelerator
    model: torch.nn.Module  # prepared (DDP-wrapped when distributed)
    unwrapped: DI3CLForPreTraining
    optimizer: torch.optim.Optimizer
    scheduler: Any
    batches: PretrainingBatches
    processor: Any
    precision: str
    log_with: list[str] | None
    total_steps: int
    num_images: int | None
    learning_rate: float
    state: TrainerState = field(default_factory=TrainerState)
    last_metrics: dict[str, float] = field(default_factory=dict)
    stopped_by: str | None = None
    monitor: ProbeMonitor | None = None

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def keys_per_forward(self) -> int:
        return self.args.per_device_batch_size * self.world

    @property
    def global_batch(self) -> int:
        return self.keys_per_forward * self.args.gradient_accumulation_steps

    def summary(self) -> dict[str, Any]:
        return {
            "global_step": self.state.global_step,
            "total_steps": self.total_steps,
            "images_seen": self.state.images_seen,
            "nonfinite_total": self.state.nonfinite_total,
            "num_processes": self.world,
            "per_device_batch_size": self.args.per_device_batch_size,
            "gradient_accumulation_steps": self.args.gradient_accumulation_steps,
            "global_batch_size": self.global_batch,
            "learning_rate": self.learning_rate,
            "mixed_precision": accelerate_mixed_precision(self.precision),
            "num_images": self.num_images,
            "last_metrics": self.last_metrics,
            "stopped_by": self.stopped_by,
        }


def _build_batches(args: PretrainingArguments, config: DI3CLConfig, rank: int, world: int):
    processor, transform, collator = build_transform_and_collator(args, config)
    raw = load_pretraining_dataset(args)
    if args.statistics_samples > 0:  # before any DataLoader worker copies the processor (views use them)
        measured = estimate_statistics(processor, raw, args.image_column, args.statistics_samples, args.seed)
        logger.info(
            "corpus statistics (%d patches): %s", measured.num_images, processor_statistics(processor)
        )
    sample_function = SampleFunction(
        transform, args.image_column, args.valid_mask_column, crop_size=args.sample_crop_size
    )
    streaming = isinstance(raw, datasets.IterableDataset)
    draws = None
    if args.sample_crop_size > 0 and not streaming:
        draws = crops_per_image(image_shapes(raw, args.image_column), args.sample_crop_size)
    batches = PretrainingBatches(
        raw, sample_function, collator, args.per_device_batch_size, rank, world, args.seed,
        args.num_workers, args.shuffle_buffer_size, draws,
    )  # fmt: skip
    if not streaming:
        logger.info("corpus: %d images, %d draws per epoch", len(raw), len(batches.dataset))
        warn_queue_vs_corpus(config.queue_size, len(raw), args.mask_own_negatives)
    if args.max_steps > 0:
        total_steps = args.max_steps
    elif batches.streaming:
        raise ValueError("a streamed dataset has no length: give --max_steps")
    else:
        updates = args.num_train_epochs * batches.batches_per_epoch // args.gradient_accumulation_steps
        total_steps = max(1, int(updates))
    return processor, batches, (None if batches.streaming else len(raw)), total_steps


def _build_model(args: PretrainingArguments, config: DI3CLConfig) -> DI3CLForPreTraining:
    set_seed(args.seed)
    model = DI3CLForPreTraining(config)
    if args.imagenet_weights:
        missing = initialise_backbone_from_imagenet(model, args.imagenet_weights)
        if missing:
            logger.warning(
                "%s: %d encoder tensors not in the file: %s", args.imagenet_weights, len(missing), missing[:8]
            )
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return maybe_compile(model.train(), args.torch_compile)


def setup(args: PretrainingArguments) -> PretrainingRun:
    """Accelerator, data, model, optimiser and scheduler of a run, resumed from a checkpoint if asked."""
    check_output_dir(
        args.output_dir,
        overwrite_output_dir=args.overwrite_output_dir,
        resume_from_checkpoint=args.resume_from_checkpoint,
    )
    log_with = trackers(args.report_to)
    accelerator, precision = build_accelerator(
        args,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        # Queues and BN statistics need no broadcast every step: queues are identical by construction (gathered
        # keys); BN runs in train mode. Every trainable parameter is in each graph (the model ties the instance
        # heads in with a zero when a batch has no box), so no unused-parameter search is needed.
        kwargs_handlers=[
            DistributedDataParallelKwargs(broadcast_buffers=False, find_unused_parameters=False)
        ],
        step_scheduler_with_optimizer=False,
    )
    logging.basicConfig(level=logging.WARNING)
    logger.setLevel(logging.INFO if accelerator.is_main_process else logging.WARNING)
    rank, world = accelerator.process_index, accelerator.num_processes
    config = build_config(args)
    check_queue_and_batch(config.queue_size, args.per_device_batch_size, world)
    write_run_config(accelerator, args.output_dir, config)
    processor, batches, num_images, total_steps = _build_batches(args, config, rank, world)
    model = _build_model(args, config)
    monitor = None
    if args.monitor_data_dir and accelerator.is_main_process:
        monitor = ProbeMonitor(load_probe_data(args.monitor_data_dir, processor), args.monitor_steps)
    global_batch = args.per_device_batch_size * world * args.gradient_accumulation_steps
    learning_rate = scaled_learning_rate(args, global_batch)
    optimizer = build_optimizer(model, args, learning_rate, accelerator.device)
    scheduler = build_scheduler(optimizer, args, total_steps)
    with warnings.catch_warnings():
        # torch >= 2.14 suggests forward_sync_buffers, which Accelerate's DDP kwargs do not expose yet; the
        # behaviour wanted (no per-step buffer broadcast) is the same.
        warnings.filterwarnings(
            "ignore", message=".*broadcast_buffers. is deprecated", category=FutureWarning
        )
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    run = PretrainingRun(
        args, accelerator, model, accelerator.unwrap_model(model), optimizer, scheduler, batches, processor,
        precision, log_with, total_steps, num_images, learning_rate,
    )  # fmt: skip
    run.state.num_processes = world
    run.monitor = monitor
    if args.resume_from_checkpoint:
        _resume(run, resolve_checkpoint(args.resume_from_checkpoint, args.output_dir))
        if monitor is not None:
            monitor.load_state_dict(run.state.monitor)
    if log_with:
        config_values = tracker_config(
            args, num_processes=world, global_batch_size=global_batch, learning_rate_scaled=learning_rate
        )
        accelerator.init_trackers(args.run_name, config=config_values)
    return run


def _resume(run: PretrainingRun, checkpoint: Path) -> None:
    """Load a checkpoint (no pickle executed, see common.load_checkpoint) and place the data position."""
    state, world, rank = run.state, run.world, run.accelerator.process_index
    state.load_state_dict(load_checkpoint(run.accelerator, checkpoint))
    if state.num_processes == world and len(state.data_positions) == world:
        run.batches.set_state(*state.data_positions[rank])
    else:
        epoch = state.data_positions[0][0] + 1 if state.data_positions else 0
        logger.warning(
            "%s was saved by %d processes, this run has %d: the data order restarts at epoch %d (not exact)",
            checkpoint, state.num_processes, world, epoch,
        )  # fmt: skip
        run.batches.set_state(epoch, 0)
    state.num_processes = world
    run.accelerator.print(f"resumed from {checkpoint} at update {state.global_step}")


def _step_scheduler(run: PretrainingRun) -> None:
    with warnings.catch_warnings():
        # A skipped (non-finite) first update makes torch warn that the scheduler steps before the optimiser;
        # advancing the schedule anyway is intended (it follows updates attempted).
        warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
        run.scheduler.step()


def train_step(run: PretrainingRun, meter: IntervalMeter, stop: StopSignal) -> tuple[bool, bool]:
    """One optimiser update (``gradient_accumulation_steps`` forwards); returns ``(non-finite, stop requested)``.

    A non-finite loss in any process zeroes the update everywhere and takes the keys it enqueued out again
    (:meth:`DI3CLForPreTraining.queue_snapshot` / ``restore_queues``); the stop flag is agreed across processes.
    """
    args, accelerator, model = run.args, run.accelerator, run.model
    nonfinite, stop_requested = False, False
    for _ in range(args.gradient_accumulation_steps):
        batch = _to_device(next(run.batches), accelerator.device, args.channels_last)
        if not args.mask_own_negatives:
            batch.pop("sample_ids", None)
        snapshot = run.unwrapped.queue_snapshot(run.keys_per_forward)
        with accelerator.accumulate(model):
            output = model(**batch)
            values = torch.stack(_output_metrics(output))
            flags = torch.tensor(
                [0.0 if torch.isfinite(output.loss).item() else 1.0, 1.0 if stop.received else 0.0]
            )
            reduced = accelerator.reduce(torch.cat([values, flags]).to(accelerator.device), "sum").cpu()
            accelerator.backward(output.loss)  # always (DDP expects it); a bad window is zeroed below
            if reduced[-2] > 0:
                run.unwrapped.restore_queues(snapshot)
                nonfinite = True
            else:
                meter.add(reduced[: len(METRIC_NAMES)] / run.world)
            stop_requested = stop_requested or bool(reduced[-1] > 0)
            if accelerator.sync_gradients:
                if args.max_grad_norm and not nonfinite:
                    grad_norm = accelerator.clip_grad_norm_(run.unwrapped.parameters(), args.max_grad_norm)
                    nonfinite = not bool(torch.isfinite(torch.as_tensor(grad_norm)))
                if not nonfinite:
                    run.optimizer.step()
                run.optimizer.zero_grad(set_to_none=True)
    _step_scheduler(run)
    run.state.global_step += 1
    run.state.images_seen += run.global_batch
    meter.images += run.global_batch
    return nonfinite, stop_requested


class IntervalMeter:
    """Sums of the loop metrics between two log lines, and the images seen in that interval."""

    def __init__(self) -> None:
        self.sums = torch.zeros(len(METRIC_NAMES))
        self.count = 0
        self.images = 0
        self.start = time.perf_counter()

    def add(self, values: torch.Tensor) -> None:
        self.sums += values
        self.count += 1

    def means(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self.start
        metrics = dict(zip(METRIC_NAMES, (self.sums / self.count).tolist()))
        metrics["images_per_second"] = self.images / max(elapsed, 1e-9)
        self.__init__()
        return metrics


def log_metrics(run: PretrainingRun, meter: IntervalMeter, progress: Any) -> None:
    """Tracker scalars / a log line every ``logging_steps`` updates, and the progress bar's postfix."""
    state, args = run.state, run.args
    if meter.count and (state.global_step % args.logging_steps == 0 or state.global_step == run.total_steps):
        metrics = meter.means()
        metrics["lr"] = run.scheduler.get_last_lr()[0]
        metrics["nonfinite_total"] = float(state.nonfinite_total)
        run.last_metrics = {
            k: metrics[k] for k in (*METRIC_NAMES, "lr", "images_per_second", "nonfinite_total")
        }
        if run.log_with:
            run.accelerator.log(
                {f"train/{k}": v for k, v in run.last_metrics.items()}, step=state.global_step
            )
        if progress.disable and run.accelerator.is_main_process:  # plain log lines for batch jobs
            text = " ".join(f"{k}={v:.4g}" for k, v in run.last_metrics.items())
            logger.info("step %d/%d %s", state.global_step, run.total_steps, text)
    progress.update(1)
    m = run.last_metrics
    if m:
        progress.set_postfix(
            loss=f"{m['loss']:.3f}", g=f"{m['global_loss']:.3f}", c=f"{m['contour_loss']:.3f}",
            i=f"{m['instance_loss']:.3f}", top1_g=f"{m['global_top1']:.2f}", top1_c=f"{m['contour_top1']:.2f}",
            lr=f"{m['lr']:.2e}", img_s=f"{m['images_per_second']:.1f}", refresh=False,
        )  # fmt: skip


def _count_nonfinite(run: PretrainingRun, nonfinite: bool) -> bool:
    """Update the non-finite counters; True when the limit in a row is reached (the run stops)."""
    state, args = run.state, run.args
    if not nonfinite:
        state.nonfinite_consecutive = 0
        return False
    state.nonfinite_total += 1
    state.nonfinite_consecutive += 1
    run.accelerator.print(
        f"update {state.global_step}: non-finite loss, update skipped "
        f"({state.nonfinite_consecutive} in a row, {state.nonfinite_total} in total)"
    )
    if state.nonfinite_consecutive < args.max_consecutive_nonfinite:
        return False
    run.accelerator.print(
        f"stopping: {state.nonfinite_consecutive} non-finite losses in a row (limit --max_consecutive_nonfinite "
        f"{args.max_consecutive_nonfinite}); lower the learning rate, check the data for NaN/Inf or disable "
        "mixed precision"
    )
    return True


def verify_queues(run: PretrainingRun) -> list[str]:
    """The queue digests of all processes; raises RuntimeError when they differ (broken key gathering)."""
    digests = gather_object([run.unwrapped.queue_digest()])
    if len(set(digests)) != 1:
        raise RuntimeError(f"queues differ across processes (digests {digests}); the key gathering is broken")
    return digests


def checkpoint_now(run: PretrainingRun) -> Path:
    """Gather the data positions, check the queues and save ``checkpoints/checkpoint-<step>``."""
    run.state.data_positions = [list(p) for p in gather_object([list(run.batches.state())])]
    verify_queues(run)
    state = run.state.state_dict()
    return save_checkpoint(
        run.accelerator, run.args.output_dir, state.pop("global_step"), state, run.args.save_total_limit,
        run.summary(),
    )  # fmt: skip


def train(run: PretrainingRun) -> int:
    """The update loop until ``total_steps``, a signal or too many non-finite losses; returns the exit code."""
    args, state = run.args, run.state
    meter = IntervalMeter()
    disable = args.disable_tqdm or not run.accelerator.is_local_main_process
    progress = tqdm(
        total=run.total_steps,
        initial=state.global_step,
        disable=disable,
        desc="pre-training",
        dynamic_ncols=True,
    )
    stop = StopSignal(message="finishing the current step, saving a checkpoint")
    # large activations reused from the heap instead of mapped afresh every step (see memory.py)
    with stop, reuse_large_allocations(run.accelerator.device.type == "cpu"):
        try:
            while state.global_step < run.total_steps:
                nonfinite, stop_requested = train_step(run, meter, stop)
                if _count_nonfinite(run, nonfinite):
                    run.stopped_by = "nonfinite"
                    return 3
                log_metrics(run, meter, progress)
                if run.monitor is not None and run.monitor.due(state.global_step, run.total_steps):
                    monitor_now(run)
                if stop_requested:
                    run.stopped_by = "signal"
                    path = checkpoint_now(run)
                    run.accelerator.print(
                        f"stopped by a signal at update {state.global_step}; checkpoint {path}; continue with "
                        "--resume_from_checkpoint latest"
                    )
                    return 0
                periodic = args.save_steps > 0 and state.global_step % args.save_steps == 0
                if periodic and state.global_step < run.total_steps:
                    checkpoint_now(run)
        finally:
            progress.close()
    return 0


def monitor_now(run: PretrainingRun) -> float:
    """Score the query encoder with the online probe (main process); a new best writes ``best-encoder/``."""
    step = run.state.global_step
    value, improved = run.monitor.score(run.unwrapped.di3cl.encoder, step)
    run.state.monitor = run.monitor.state_dict()
    run.last_metrics[ProbeMonitor.metric] = value
    if run.log_with:
        run.accelerator.log({f"monitor/{ProbeMonitor.metric}": value}, step=step)
    logger.info("monitor step %d %s=%.4f%s", step, ProbeMonitor.metric, value, " (best)" if improved else "")
    if improved:
        summary = run.summary()
        summary["monitor"] = run.monitor.state_dict()
        save_encoder(
            run.unwrapped, run.processor, run.args, summary, run.args.output_dir, BEST_ENCODER_DIRNAME
        )
    return value


def finish(run: PretrainingRun) -> None:
    """Final checkpoint, queue check, encoder + card (+ Hub upload), ``metrics.json`` (also as
    ``trainer_state.json``) and the card at the top of the run folder."""
    accelerator, args = run.accelerator, run.args
    if run.stopped_by != "signal":
        checkpoint_now(run)
    digests = verify_queues(run)
    if accelerator.is_main_process:
        summary = run.summary()
        summary["queue_digests"] = digests
        summary["queue_ptr"] = int(run.unwrapped.queue_ptr)
        if run.monitor is not None:
            summary["monitor"] = run.monitor.state_dict()
        if run.stopped_by is None:
            path = save_encoder(run.unwrapped, run.processor, args, summary, args.output_dir)
            summary["encoder_dir"] = str(path)
            write_text(Path(args.output_dir) / CARD_NAME, (path / CARD_NAME).read_text())
            accelerator.print(f"encoder, image processor and model card saved to {path}")
            if args.push_to_hub:
                commit = push_folder_to_hub(path, args.hub_model_id, private=args.hub_private)
                accelerator.print(f"pushed to {getattr(commit, 'commit_url', args.hub_model_id)}")
        for name in (
            TRAINER_STATE_NAME,
            METRICS_NAME,
        ):  # trainer_state.json: its name before the shared layout
            write_json(Path(args.output_dir) / name, summary, durable=True, sort_keys=True)
    accelerator.wait_for_everyone()
    # trackers finished and the process group destroyed: a gloo group left to the interpreter's exit can abort a
    # rank in its destructor ("terminate called without an active exception") after a successful run
    accelerator.end_training()


def main(args: PretrainingArguments) -> int:
    """Run (or resume) a pre-training; returns the process exit code (0 also after a signal-triggered save)."""
    run = setup(args)
    exit_code = train(run)
    finish(run)
    return exit_code


__all__ = [
    "BEST_ENCODER_DIRNAME",
    "ENCODER_DIRNAME",
    "EpochShardSampler",
    "IntervalMeter",
    "PretrainingArguments",
    "PretrainingBatches",
    "PretrainingRun",
    "SampleFunction",
    "TrainerState",
    "build_config",
    "build_optimizer",
    "build_scheduler",
    "check_queue_and_batch",
    "checkpoint_now",
    "export_encoder",
    "finish",
    "initialise_backbone_from_imagenet",
    "list_checkpoints",
    "load_backbone_weights_into",
    "load_local_backbone_weights",
    "load_pretraining_dataset",
    "log_metrics",
    "main",
    "parse_args",
    "parse_dataclass_args",
    "push_folder_to_hub",
    "resolve_checkpoint",
    "run_info",
    "save_checkpoint",
    "save_encoder",
    "scaled_learning_rate",
    "seeded_rng",
    "setup",
    "train",
    "train_step",
    "verify_queues",
]
