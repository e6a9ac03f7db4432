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
- **Release defaults** (METHOD.md §5): SGD, momentum 0.9, weight decay 1e-4, lr ``0.03 * global_batch / 256``,
  cosine decay, optional warm-up. The queue size must be a multiple of the number of keys enqueued per forward
  (``per_device_batch_size * num_processes``), checked before anything runs.
- **Speed**: bf16 autocast and channels_last by default where the device supports them.
- **Several processes**: :class:`~di3cl_hf.modeling_di3cl.DI3CLForPreTraining` gathers the keys of all processes
  and uses shuffle-BN whenever ``torch.distributed`` is initialised, so every process holds identical queues whose
  pointer advances by the global batch; the loop checks the queues' digests across processes at each checkpoint
  and at the end (a mismatch stops the run).
- **Long runs**: checkpoints with :meth:`accelerate.Accelerator.save_state` (model with its queues, optimiser,
  scheduler, RNG states, data position and counters), written into a temporary folder and renamed, the last
  ``save_total_limit`` kept; ``--resume_from_checkpoint latest`` continues from the exact step; SIGTERM / SIGINT
  finish the current step, save a checkpoint and exit cleanly; a non-finite loss skips the update (the keys it
  enqueued are taken out again) and ``max_consecutive_nonfinite`` of them in a row stop the run.
- **Outputs**: a tqdm bar on the main process, TensorBoard scalars through Accelerate's trackers, and at the end
  the encoder (:class:`~di3cl_hf.modeling_di3cl.DI3CLModel`, from the query side), the image processor and a
  model card in ``<output_dir>/encoder``; ``--push_to_hub`` uploads that folder.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import logging
import math
import os
import random
import re
import shutil
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, Sampler

from ..atomic import replace_directory, write_json
from ..memory import reuse_large_allocations

logger = logging.getLogger(__name__)

CHECKPOINTS_DIRNAME = "checkpoints"
CHECKPOINT_PREFIX = "checkpoint-"
ENCODER_DIRNAME = "encoder"
TRAINER_STATE_NAME = "trainer_state.json"
OPTIMIZER_ALIASES = {
    # Our names -> timm's ``create_optimizer_v2`` names. timm's "sgd" is Nesterov SGD; the release (like MoCo)
    # uses plain momentum SGD, which timm calls "momentum".
    "sgd": "momentum",
    "nesterov": "nesterov",
    "adamw": "adamw",
    "lars": "lars",
    "lamb": "lamb",
}


# --------------------------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------------------------


@dataclass
class PretrainingArguments:
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
    dataset_cache_dir: str | None = field(
        default=None, metadata={"help": "datasets cache folder (default: the Hugging Face datasets cache)."}
    )
    shuffle_buffer_size: int = field(default=1000, metadata={"help": "Shuffle buffer of streamed datasets."})
    num_workers: int = field(default=2, metadata={"help": "DataLoader workers per process (views + boxes)."})

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
    mixed_precision: str = field(
        default="auto",
        metadata={"help": "auto (bf16 where the device supports it), bf16, fp16, no."},
    )
    channels_last: bool = field(
        default=True, metadata={"help": "channels_last memory format (CNN speed-up)."}
    )

    # ---- run ------------------------------------------------------------------------------------------------
    output_dir: str = field(default="di3cl-pretrain", metadata={"help": "Checkpoints, logs and the encoder."})
    seed: int = field(default=0, metadata={"help": "Seed of the model, data order, views and boxes."})
    logging_steps: int = field(default=10, metadata={"help": "Tracker logging interval in updates."})
    save_steps: int = field(
        default=500, metadata={"help": "Checkpoint interval in updates (0: only at the end)."}
    )
    save_total_limit: int = field(default=3, metadata={"help": "Checkpoints kept (oldest deleted)."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "'latest' (in output_dir/checkpoints) or a checkpoint folder."}
    )
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
    disable_tqdm: bool = field(default=False, metadata={"help": "No progress bar."})

    def __post_init__(self) -> None:
        sources = [name for name in ("data_dir", "data_files", "dataset_name") if getattr(self, name)]
        if len(sources) > 1:
            raise ValueError(f"PretrainingArguments: give one data source, got {', '.join(sources)}")
        if self.per_device_batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise ValueError(
                "PretrainingArguments: per_device_batch_size and gradient_accumulation_steps must be >= 1, "
                f"got {self.per_device_batch_size} and {self.gradient_accumulation_steps}"
            )
        if self.mixed_precision not in ("auto", "bf16", "fp16", "no"):
            raise ValueError(
                f"PretrainingArguments: mixed_precision={self.mixed_precision!r}, expected auto, bf16, fp16 or no"
            )
        if self.max_consecutive_nonfinite < 1:
            raise ValueError("PretrainingArguments: max_consecutive_nonfinite must be >= 1")
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError(
                "PretrainingArguments: --push_to_hub needs --hub_model_id (e.g. my-lab/di3cl-resnet50)"
            )
        if isinstance(self.data_files, str):
            self.data_files = [self.data_files]


def parse_dataclass_args(dataclass_type: type, argv: list[str] | None = None) -> Any:
    """Parse ``argv`` (or ``sys.argv[1:]``) into one ``dataclass_type`` with ``transformers.HfArgumentParser``;
    a single ``.json`` argument is read as a file of those fields. Shared by the example scripts."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(dataclass_type)
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        (args,) = parser.parse_json_file(json_file=argv[0])
    else:
        (args,) = parser.parse_args_into_dataclasses(args=argv)
    return args


def parse_args(argv: list[str] | None = None) -> PretrainingArguments:
    """Parse ``argv`` (or ``sys.argv[1:]``) into :class:`PretrainingArguments`; a single ``.json`` file also works."""
    return parse_dataclass_args(PretrainingArguments, argv)


# --------------------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------------------


def resolve_mixed_precision(requested: str, device: torch.device) -> str:
    """Resolve ``"auto"`` to ``"bf16"`` where the device runs bf16 natively, else ``"no"``.

    On CPUs, bf16 autocast only pays off with native bf16 instructions (AVX-512 BF16 / AMX), which oneDNN reports;
    on CUDA it needs an Ampere-or-newer card. fp16 is never chosen automatically (it needs loss scaling).
    """
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    if device.type == "cpu":
        try:
            return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "no"
        except (AttributeError, RuntimeError):
            return "no"
    return "no"


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


def _mix_seed(*values: int) -> int:
    """A 63-bit seed derived from integers (stable across processes and Python versions)."""
    digest = hashlib.blake2b(",".join(str(int(v)) for v in values).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


@contextlib.contextmanager
def seeded_rng(seed: int) -> Iterator[None]:
    """Run a block with torch (CPU), numpy and ``random`` seeded from ``seed``, restoring their states after.

    Augmentations and box samplers draw from the global generators; seeding them per sample/batch from
    ``(seed, epoch, position)`` makes the data independent of worker count, worker start order and resumption.
    """
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % (2**32))
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def tensor_digest(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's bytes (exact equality test across processes)."""
    array = tensor.detach().to("cpu").contiguous()
    return hashlib.sha256(array.view(torch.uint8).numpy().tobytes() if array.numel() else b"").hexdigest()


# --------------------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------------------


def load_pretraining_dataset(args: PretrainingArguments):
    """Load the raw dataset named by ``args`` (map-style ``datasets.Dataset`` or streamed ``IterableDataset``).

    Only ``args.image_column`` is kept. Raises ValueError naming the source when nothing usable is found.
    """
    import datasets

    if args.data_dir:
        from ..data.sarsense import load_sarsense

        if not Path(args.data_dir).is_dir():
            raise ValueError(f"{args.data_dir}: not a folder (expected a SARSense folder of SAR patches)")
        # Raw storage columns: arrays are decoded per sample in the DataLoader workers (SampleFunction).
        dataset = load_sarsense(
            args.data_dir, decode=False, streaming=args.streaming, cache_dir=args.dataset_cache_dir
        )
    elif args.data_files:
        files: list[str] = []
        for pattern in args.data_files:
            matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
            files += [path for path in matches if Path(path).is_file()]
        if not files:
            raise ValueError(f"data_files {args.data_files}: no Parquet file found")
        dataset = datasets.load_dataset(
            "parquet",
            data_files=files,
            split="train",
            streaming=args.streaming,
            cache_dir=args.dataset_cache_dir,
        )
    elif args.dataset_name:
        dataset = datasets.load_dataset(
            args.dataset_name,
            args.dataset_config_name,
            split=args.dataset_split,
            streaming=args.streaming,
            cache_dir=args.dataset_cache_dir,
        )
    else:
        raise ValueError(
            "no data: give --data_dir (SARSense folder), --data_files (Parquet) or --dataset_name"
        )
    columns = dataset.column_names or list(dataset.features or {})
    if columns and args.image_column not in columns:
        raise ValueError(
            f"dataset has no column {args.image_column!r} (columns: {columns}); set --image_column"
        )
    if columns:
        keep = [args.image_column] + [c for c in (args.valid_mask_column,) if c and c in columns]
        dataset = dataset.select_columns(keep)
    return dataset


class SampleFunction:
    """Picklable ``(example, seed) -> sample dict``: seeds the global RNGs and applies the view transform."""

    def __init__(
        self, transform: Callable[..., dict], image_column: str, valid_mask_column: str | None = None
    ) -> None:
        self.transform = transform
        self.image_column = image_column
        self.valid_mask_column = valid_mask_column

    def __call__(self, example: dict, seed: int) -> dict:
        image = _decode(example[self.image_column])
        valid = _decode(example.get(self.valid_mask_column)) if self.valid_mask_column else None
        with seeded_rng(seed):
            return self.transform(image, None if valid is None else valid.astype(bool, copy=False))


def _decode(value: Any) -> np.ndarray | None:
    """A stored array: SARSense / ``export_parquet`` rows hold ``{"bytes", "dtype", "shape"}``, others arrays."""
    from ..data.sarsense import decode_array

    if value is None:
        return None
    if isinstance(value, dict):
        return decode_array(value)
    return np.asarray(value)


class SeededCollator:
    """Wrap a collator: drop the per-sample seeds and run the collator (box sampling) under a per-batch seed."""

    def __init__(self, collator: Callable[[list[dict]], dict]) -> None:
        self.collator = collator

    def __call__(self, items: list[tuple[int, dict]]) -> dict:
        seeds = [seed for seed, _ in items]
        with seeded_rng(_mix_seed(*seeds)):
            return self.collator([sample for _, sample in items])


class EpochShardSampler(Sampler):
    """Per-epoch global permutation of ``num_samples`` split across processes, yielding ``(epoch, index)``.

    Every process gets ``steps_per_epoch * batch_size`` different indices per epoch (the remainder is dropped so
    that all processes run the same number of forwards, as the queue gathering needs). ``start_batch`` skips the
    batches already consumed in the current epoch when resuming.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        rank: int,
        world_size: int,
        seed: int,
        epoch: int,
        start_batch: int = 0,
    ) -> None:
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.epoch = epoch
        self.start_batch = start_batch
        self.batches_per_epoch = num_samples // world_size // batch_size

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(_mix_seed(self.seed, self.epoch, 7919))
        order = torch.randperm(self.num_samples, generator=generator)
        mine = order[self.rank :: self.world_size][: self.batches_per_epoch * self.batch_size]
        for index in mine[self.start_batch * self.batch_size :].tolist():
            yield self.epoch, index


class MapPretrainingDataset(torch.utils.data.Dataset):
    """Map-style view dataset indexed by ``(epoch, index)`` pairs from :class:`EpochShardSampler`."""

    def __init__(self, dataset, sample_function: SampleFunction, seed: int) -> None:
        self.dataset = dataset
        self.sample_function = sample_function
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, dict]:
        epoch, index = key
        seed = _mix_seed(self.seed, epoch, index)
        return seed, self.sample_function(self.dataset[int(index)], seed)


class StreamPretrainingDataset(IterableDataset):
    """Iterable view dataset over this process's shard of a streamed dataset, for one epoch."""

    def __init__(self, dataset, sample_function: SampleFunction, seed: int, epoch: int, rank: int) -> None:
        self.dataset = dataset
        self.sample_function = sample_function
        self.seed = seed
        self.epoch = epoch
        self.rank = rank

    def __iter__(self) -> Iterator[tuple[int, dict]]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        self.dataset.set_epoch(self.epoch)
        for position, example in enumerate(self.dataset):
            seed = _mix_seed(self.seed, self.epoch, self.rank, worker, position)
            yield seed, self.sample_function(example, seed)


def _ignore_interrupt(worker_id: int) -> None:
    """DataLoader workers ignore SIGINT: Ctrl-C reaches the whole process group, and the main process must be
    able to finish its step and save a checkpoint with its workers alive."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class PretrainingBatches:
    """Endless stream of collated batches for one process, with a resumable ``(epoch, batch)`` position."""

    def __init__(
        self,
        dataset,
        sample_function: SampleFunction,
        collator: Callable[[list[dict]], dict],
        batch_size: int,
        rank: int,
        world_size: int,
        seed: int,
        num_workers: int,
        shuffle_buffer_size: int = 1000,
    ) -> None:
        import datasets
        from datasets.distributed import split_dataset_by_node

        self.streaming = isinstance(dataset, datasets.IterableDataset)
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.num_workers = num_workers
        self.collate = SeededCollator(collator)
        self.epoch = 0
        self.batch_in_epoch = 0
        if self.streaming:
            # Same seed on every process: the shard order must agree for split_dataset_by_node to be a partition.
            dataset = dataset.shuffle(seed=seed, buffer_size=shuffle_buffer_size)
            self.dataset = split_dataset_by_node(dataset, rank=rank, world_size=world_size)
            self.num_workers = min(num_workers, max(1, self.dataset.num_shards))
            self.batches_per_epoch = None
        else:
            self.dataset = MapPretrainingDataset(dataset, sample_function, seed)
            self.batches_per_epoch = len(dataset) // world_size // batch_size
            if self.batches_per_epoch < 1:
                raise ValueError(
                    f"dataset of {len(dataset)} images is too small for {world_size} process(es) x "
                    f"per_device_batch_size {batch_size}"
                )
        self.sample_function = sample_function
        self._iterator: Iterator[dict] | None = None

    def state(self) -> tuple[int, int]:
        """``(epoch, batches consumed in that epoch)`` of this process."""
        return self.epoch, self.batch_in_epoch

    def set_state(self, epoch: int, batch_in_epoch: int) -> None:
        """Continue from ``(epoch, batch_in_epoch)`` (the next batch is the one an uninterrupted run would get)."""
        self.epoch, self.batch_in_epoch = int(epoch), int(batch_in_epoch)
        self._iterator = None

    def _loader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(_mix_seed(self.seed, self.epoch, self.rank, 104729))
        common = {
            "batch_size": self.batch_size,
            "collate_fn": self.collate,
            "num_workers": self.num_workers,
            "drop_last": True,
            "generator": generator,  # worker seeds from here, never from the global RNG (exact resumption)
            "persistent_workers": False,
            "worker_init_fn": _ignore_interrupt if self.num_workers > 0 else None,
            "pin_memory": torch.cuda.is_available(),
        }
        if self.streaming:
            stream = StreamPretrainingDataset(
                self.dataset, self.sample_function, self.seed, self.epoch, self.rank
            )
            return DataLoader(stream, **common)
        sampler = EpochShardSampler(
            len(self.dataset),
            self.batch_size,
            self.rank,
            self.world_size,
            self.seed,
            self.epoch,
            self.batch_in_epoch,
        )
        return DataLoader(self.dataset, sampler=sampler, **common)

    def _new_iterator(self) -> Iterator[dict]:
        iterator = iter(self._loader())
        if self.streaming and self.batch_in_epoch:
            # A stream cannot seek; replay this epoch's first batches (deterministic, see StreamPretrainingDataset).
            for _ in range(self.batch_in_epoch):
                next(iterator)
        return iterator

    def __next__(self) -> dict:
        for _ in range(3):
            if self._iterator is None:
                self._iterator = self._new_iterator()
            try:
                batch = next(self._iterator)
            except StopIteration:
                if self.batch_in_epoch == 0:
                    break
                self.epoch += 1
                self.batch_in_epoch = 0
                self._iterator = None
                continue
            self.batch_in_epoch += 1
            return batch
        raise RuntimeError(
            f"process {self.rank}: its shard of the dataset gives no full batch of {self.batch_size}"
        )

    def __iter__(self) -> PretrainingBatches:
        return self


# --------------------------------------------------------------------------------------------------------------
# Model, optimiser, scheduler
# --------------------------------------------------------------------------------------------------------------


def build_config(args: PretrainingArguments):
    """The :class:`DI3CLConfig` of the run (from ``config_name`` or the model arguments)."""
    from ..configuration_di3cl import DI3CLConfig

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
    )


def load_local_backbone_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a local ResNet weight file (timm / torchvision names) without unpickling arbitrary objects.

    ``.safetensors`` files are read with safetensors; anything else with ``torch.load(weights_only=True)``. A
    ``{"state_dict": ...}`` / ``{"model": ...}`` wrapper and ``module.`` prefixes are removed; the classifier
    (``fc.*``) is dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such weight file (ImageNet weights are only read from a local file)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a dict of tensors (a ResNet state dict)")
    cleaned = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith(("fc.", "head.fc.", "classifier.")):
            continue
        cleaned[key] = value
    return cleaned


def load_backbone_weights_into(encoder: torch.nn.Module, path: str | os.PathLike, backbone: str) -> list[str]:
    """Load a local ImageNet ResNet file (:func:`load_local_backbone_weights`) into a timm ``encoder``.

    conv1 is adapted to the encoder's input channels with timm's rule (summed kernels for one channel, repeated
    and rescaled otherwise). Returns the encoder parameters that were not in the file (empty for a matching
    ResNet); raises ValueError naming the file on a shape mismatch or when nothing matches ``backbone``.
    """
    from ..di3cl_layers import adapt_input_conv_weight

    target = encoder.state_dict()
    loaded = {}
    for key, value in load_local_backbone_weights(path).items():
        if key not in target:
            continue
        if key.endswith("conv1.weight") and value.ndim == 4 and value.shape[1] != target[key].shape[1]:
            value = adapt_input_conv_weight(value, target[key].shape[1])
        if value.shape != target[key].shape:
            raise ValueError(
                f"{path}: {key} has shape {tuple(value.shape)}, the encoder expects {tuple(target[key].shape)}"
            )
        loaded[key] = value.to(target[key].dtype)
    if not loaded:
        raise ValueError(f"{path}: no tensor matches the {backbone} encoder (expected timm ResNet names)")
    encoder.load_state_dict(loaded, strict=False)
    return sorted(set(target) - set(loaded))


def initialise_backbone_from_imagenet(model, path: str | os.PathLike) -> list[str]:
    """Load a local ImageNet ResNet into the query encoder and copy it to the key encoder.

    conv1 is adapted to ``config.num_channels`` with timm's rule (summed kernels for one channel, repeated and
    rescaled otherwise). Returns the encoder parameters that were not in the file (empty for a matching ResNet);
    raises ValueError when nothing matches.
    """
    missing = load_backbone_weights_into(_query_encoder_module(model), path, model.config.backbone)
    _copy_query_to_key(model)
    return missing


def build_optimizer(
    model: torch.nn.Module, args: PretrainingArguments, learning_rate: float
) -> torch.optim.Optimizer:
    """The optimiser over the trainable (query-side) parameters, via ``timm.optim.create_optimizer_v2``.

    Weight decay applies to every parameter as in the release (MoCo) for SGD; adaptive optimisers (AdamW, LARS,
    LAMB) exclude biases and normalisation weights, as is usual for them.
    """
    from timm.optim import create_optimizer_v2, list_optimizers

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
    return create_optimizer_v2(params, opt=name, **kwargs)


def build_scheduler(optimizer: torch.optim.Optimizer, args: PretrainingArguments, total_steps: int):
    """transformers' learning-rate schedule (cosine by default) with optional linear warm-up."""
    from transformers import get_scheduler

    warmup = args.warmup_steps or int(math.ceil(args.warmup_ratio * total_steps))
    return get_scheduler(
        args.lr_scheduler_type, optimizer, num_warmup_steps=warmup, num_training_steps=max(1, total_steps)
    )


# --------------------------------------------------------------------------------------------------------------
# Adapters to the model's internals (kept in one place)
# --------------------------------------------------------------------------------------------------------------


def _query_encoder_module(model) -> torch.nn.Module:
    """The query-side timm feature encoder (timm ResNet parameter names)."""
    return model.di3cl.encoder


def _copy_query_to_key(model) -> None:
    """Re-initialise the key encoder as a copy of the query encoder (after loading ImageNet weights)."""
    model.momentum_encoder.load_state_dict(model.di3cl.encoder.state_dict())


def export_encoder(model):
    """A standalone :class:`DI3CLModel` holding the query encoder's weights (float32, on CPU)."""
    from ..modeling_di3cl import DI3CLModel

    query = model.di3cl
    encoder = DI3CLModel(model.config)
    state = {
        k: v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.cpu()
        for k, v in query.state_dict().items()
    }
    encoder.load_state_dict(state, strict=True)
    return encoder.to(memory_format=torch.contiguous_format).eval()


class QueueRollback:
    """Remember the queue columns the next forward will overwrite, to undo them if the step is skipped."""

    def __init__(self, model, num_keys: int) -> None:
        self.model = model
        pointer = int(model.queue_ptr.item())
        queue_size = model.global_queue.shape[1]
        self.pointer = model.queue_ptr.clone()
        self.columns = (torch.arange(num_keys, device=model.queue_ptr.device) + pointer) % queue_size
        self.saved = [
            queue.index_select(1, self.columns).clone() for queue in (model.global_queue, model.contour_queue)
        ]

    @torch.no_grad()
    def undo(self) -> None:
        for queue, saved in zip((self.model.global_queue, self.model.contour_queue), self.saved):
            queue.index_copy_(1, self.columns, saved)
        self.model.queue_ptr.copy_(self.pointer)


# --------------------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------------------


class TrainerState:
    """Counters and data positions saved with every checkpoint (registered with ``register_for_checkpointing``)."""

    def __init__(self) -> None:
        self.global_step = 0
        self.images_seen = 0
        self.nonfinite_total = 0
        self.nonfinite_consecutive = 0
        self.num_processes = 1
        self.data_positions: list[list[int]] = []

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary folders of interrupted saves are ignored)."""
    folder = Path(output_dir) / CHECKPOINTS_DIRNAME
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        suffix = path.name.removeprefix(CHECKPOINT_PREFIX)
        if path.is_dir() and path.name.startswith(CHECKPOINT_PREFIX) and suffix.isdigit():
            found.append((int(suffix), path))
    return [path for _, path in sorted(found)]


def resolve_checkpoint(resume: str, output_dir: str) -> Path:
    """``'latest'`` -> newest checkpoint of ``output_dir``; anything else must be a checkpoint folder."""
    if resume == "latest":
        checkpoints = list_checkpoints(output_dir)
        if not checkpoints:
            raise ValueError(
                f"--resume_from_checkpoint latest: no checkpoint in {Path(output_dir) / CHECKPOINTS_DIRNAME}"
            )
        return checkpoints[-1]
    path = Path(resume)
    if not (path / TRAINER_STATE_NAME).is_file():
        raise ValueError(f"{path}: not a DI3CL pre-training checkpoint (no {TRAINER_STATE_NAME})")
    return path


def save_checkpoint(
    accelerator, output_dir: str, state: TrainerState, save_total_limit: int, summary: dict
) -> Path:
    """Save the full state atomically as ``checkpoints/checkpoint-<step>``, keeping the newest ``save_total_limit``.

    All processes write into ``checkpoints/.tmp-checkpoint-<step>`` (``save_state``: weights + queues, optimiser,
    scheduler, one RNG file per process, :class:`TrainerState`); then each node's first process renames it (a
    crash before the rename leaves only a temporary folder, which ``latest`` ignores) and deletes old ones.
    """
    folder = Path(output_dir) / CHECKPOINTS_DIRNAME
    final = folder / f"{CHECKPOINT_PREFIX}{state.global_step}"
    tmp = folder / f".tmp-{CHECKPOINT_PREFIX}{state.global_step}"
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
            write_json(tmp / TRAINER_STATE_NAME, summary, durable=True, sort_keys=True)
        try:
            os.replace(tmp, final)
        except OSError:  # another node's first process renamed the shared folder already
            if not final.is_dir():
                raise
        checkpoints = list_checkpoints(output_dir)
        for old in checkpoints[: max(0, len(checkpoints) - save_total_limit)]:
            trash = old.with_name(f".deleting-{old.name}")
            with contextlib.suppress(OSError):
                os.replace(old, trash)  # rename first: a half-deleted folder never looks like a checkpoint
                shutil.rmtree(trash, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


class StopSignal:
    """Turns SIGTERM / SIGINT into a flag that the loop checks between updates (a second signal is not caught)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not in the main thread
                self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame) -> None:
        self.received = signum
        logger.warning(
            "received %s: finishing the current step, saving a checkpoint", signal.Signals(signum).name
        )
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signum, handler)


# --------------------------------------------------------------------------------------------------------------
# Model card and Hub
# --------------------------------------------------------------------------------------------------------------


def run_info(args: PretrainingArguments, config, summary: dict) -> dict[str, Any]:
    """Facts of the run for the model card's "Training" section (:func:`di3cl_hf.hub.build_model_card`)."""
    data = args.data_dir or ", ".join(args.data_files or []) or args.dataset_name or "?"
    metrics = summary.get("last_metrics") or {}
    chance = 1.0 / (config.queue_size + 1)
    info: dict[str, Any] = {
        "data": f"{data} ({summary.get('num_images') or 'streamed'} images"
        + (", streamed)" if args.streaming else ")"),
        "objective": "DI3CL: global InfoNCE (stage4) + contour InfoNCE (stage3) + dynamic-instance regression, "
        f"weights {config.global_loss_weight} / {config.contour_loss_weight} / {config.instance_loss_weight}",
        "backbone, channels, view size": f"{config.backbone}, {config.num_channels}, {config.image_size} px "
        f"(augmentation preset {args.augmentation_preset})",
        "queue size, temperature, key momentum": f"{config.queue_size}, {config.temperature}, {config.momentum}",
        "processes x per-device batch x accumulation": f"{summary.get('num_processes')} x "
        f"{args.per_device_batch_size} x {args.gradient_accumulation_steps} = {summary.get('global_batch_size')}",
        "optimiser": f"{args.optimizer}, lr {summary.get('learning_rate', 0.0):.5g}, momentum "
        f"{args.optimizer_momentum}, weight decay {args.weight_decay}, {args.lr_scheduler_type} schedule, "
        f"warm-up {args.warmup_steps or args.warmup_ratio}",
        "updates / images seen": f"{summary.get('global_step')} / {summary.get('images_seen')}",
        "precision / memory format": f"{summary.get('mixed_precision')} / "
        + ("channels_last" if args.channels_last else "contiguous"),
        "ImageNet initialisation": Path(args.imagenet_weights).name if args.imagenet_weights else "none",
        "skipped non-finite steps": summary.get("nonfinite_total", 0),
        "seed": args.seed,
    }
    if metrics:
        info["final training metrics"] = (
            f"loss {metrics.get('loss', float('nan')):.4f}, global top-1 {metrics.get('global_top1', float('nan')):.3f}, "
            f"contour top-1 {metrics.get('contour_top1', float('nan')):.3f} (chance 1/(K+1) = {chance:.2e}), "
            f"instance loss {metrics.get('instance_loss', float('nan')):.4f}"
        )
    return info


def push_folder_to_hub(folder: str | os.PathLike, repo_id: str, private: bool = False) -> Any:
    """Push the encoder folder with :func:`di3cl_hf.hub.push_model`, keeping its README.md (our run's card)."""
    from ..hub.push import push_model

    card = (Path(folder) / "README.md").read_text()
    return push_model(folder, repo_id, private=private, card=card, commit_message="DI3CL pre-trained encoder")


def save_encoder(model, processor, args: PretrainingArguments, summary: dict, output_dir: str) -> Path:
    """Write ``<output_dir>/encoder`` (DI3CLModel + image processor + README.md) atomically."""
    final = Path(output_dir) / ENCODER_DIRNAME
    tmp = Path(output_dir) / f".tmp-{ENCODER_DIRNAME}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    encoder = export_encoder(model)
    encoder.save_pretrained(str(tmp))
    processor.save_pretrained(str(tmp))
    from ..hub.push import build_model_card

    card = build_model_card(
        tmp, repo_id=args.hub_model_id, run_info=run_info(args, model.config, summary), tags=["pretraining"]
    )
    (tmp / "README.md").write_text(str(card))
    return replace_directory(tmp, final)


# --------------------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------------------

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


def build_transform_and_collator(args: PretrainingArguments, config):
    """The image processor, the per-sample view transform and the box collator for ``config``."""
    from ..image_processing_di3cl import DI3CLImageProcessor
    from ..training.augmentation import PretrainingTransform, TwoViewTransform
    from ..training.boxes import PretrainingCollator

    processor = DI3CLImageProcessor(num_channels=config.num_channels, input_kind=args.input_kind)
    views = TwoViewTransform(config.image_size, preset=args.augmentation_preset, db_range=processor.db_range)
    transform = PretrainingTransform(processor, views)
    # seed=None: boxes come from the global RNG, which SeededCollator seeds per batch.
    collator = PretrainingCollator.from_config(config, seed=None)
    return processor, transform, collator


def main(args: PretrainingArguments) -> int:
    """Run (or resume) a pre-training; returns the process exit code (0 also after a signal-triggered save)."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.utils import ProjectConfiguration, gather_object, set_seed
    from tqdm.auto import tqdm

    from ..modeling_di3cl import DI3CLForPreTraining

    output_dir = Path(args.output_dir)
    forced_cpu = os.environ.get("ACCELERATE_USE_CPU", "false").lower() in ("1", "true", "yes")
    probe_device = torch.device("cuda" if torch.cuda.is_available() and not forced_cpu else "cpu")
    mixed_precision = resolve_mixed_precision(args.mixed_precision, probe_device)
    log_with = (
        None
        if args.report_to in ("none", "")
        else [t.strip() for t in args.report_to.split(",") if t.strip()]
    )
    # `accelerate launch --multi_gpu` on a machine without GPUs starts N processes, but Accelerate only builds a
    # gloo process group (MULTI_CPU) when told to use the CPU; otherwise every process would train alone.
    launched_world = int(os.environ.get("WORLD_SIZE", "1"))
    run_on_cpu = probe_device.type == "cpu" and launched_world > 1
    accelerator = Accelerator(
        cpu=run_on_cpu,
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=log_with,
        project_config=ProjectConfiguration(
            project_dir=str(output_dir), logging_dir=str(output_dir / "runs")
        ),
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
    keys_per_forward = args.per_device_batch_size * world
    global_batch = keys_per_forward * args.gradient_accumulation_steps

    # ---- data ----
    processor, transform, collator = build_transform_and_collator(args, config)
    raw = load_pretraining_dataset(args)
    batches = PretrainingBatches(
        raw,
        SampleFunction(transform, args.image_column, args.valid_mask_column),
        collator,
        args.per_device_batch_size,
        rank,
        world,
        args.seed,
        args.num_workers,
        args.shuffle_buffer_size,
    )
    num_images = None if batches.streaming else len(raw)
    if args.max_steps > 0:
        total_steps = args.max_steps
    elif batches.streaming:
        raise ValueError("a streamed dataset has no length: give --max_steps")
    else:
        total_steps = max(
            1, int(args.num_train_epochs * batches.batches_per_epoch // args.gradient_accumulation_steps)
        )

    # ---- model / optimiser ----
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
    model.train()
    learning_rate = scaled_learning_rate(args, global_batch)
    optimizer = build_optimizer(model, args, learning_rate)
    scheduler = build_scheduler(optimizer, args, total_steps)
    with warnings.catch_warnings():
        # torch >= 2.14 suggests forward_sync_buffers, which Accelerate's DDP kwargs do not expose yet; the
        # behaviour wanted (no per-step buffer broadcast) is the same.
        warnings.filterwarnings(
            "ignore", message=".*broadcast_buffers. is deprecated", category=FutureWarning
        )
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    unwrapped = accelerator.unwrap_model(model)
    state = TrainerState()
    state.num_processes = world
    accelerator.register_for_checkpointing(state)

    if args.resume_from_checkpoint:
        checkpoint = resolve_checkpoint(args.resume_from_checkpoint, str(output_dir))
        accelerator.load_state(str(checkpoint))
        if state.num_processes == world and len(state.data_positions) == world:
            batches.set_state(*state.data_positions[rank])
        else:
            epoch = state.data_positions[0][0] + 1 if state.data_positions else 0
            logger.warning(
                "%s was saved by %d processes, this run has %d: the data order restarts at epoch %d (not exact)",
                checkpoint,
                state.num_processes,
                world,
                epoch,
            )
            batches.set_state(epoch, 0)
        state.num_processes = world
        accelerator.print(f"resumed from {checkpoint} at update {state.global_step}")

    hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in vars(args).items()}
    hparams.update(num_processes=world, global_batch_size=global_batch, learning_rate_scaled=learning_rate)
    if log_with:
        accelerator.init_trackers(args.run_name, config=hparams)

    stop = StopSignal()
    stop.install()
    progress = tqdm(
        total=total_steps,
        initial=state.global_step,
        disable=args.disable_tqdm or not accelerator.is_local_main_process,
        desc="pre-training",
        dynamic_ncols=True,
    )
    interval_sums = torch.zeros(len(METRIC_NAMES))
    interval_count = 0
    last_metrics: dict[str, float] = {}
    interval_start = time.perf_counter()
    interval_images = 0
    exit_code = 0
    stopped_by: str | None = None

    def summary() -> dict:
        return {
            "global_step": state.global_step,
            "total_steps": total_steps,
            "images_seen": state.images_seen,
            "nonfinite_total": state.nonfinite_total,
            "num_processes": world,
            "per_device_batch_size": args.per_device_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "global_batch_size": global_batch,
            "learning_rate": learning_rate,
            "mixed_precision": mixed_precision,
            "num_images": num_images,
            "last_metrics": last_metrics,
            "stopped_by": stopped_by,
        }

    def checkpoint_now() -> Path:
        state.data_positions = [list(p) for p in gather_object([list(batches.state())])]
        verify_queues()
        return save_checkpoint(accelerator, str(output_dir), state, args.save_total_limit, summary())

    def verify_queues() -> list[str]:
        digests = gather_object(
            [
                tensor_digest(unwrapped.global_queue)
                + tensor_digest(unwrapped.contour_queue)
                + f"@{int(unwrapped.queue_ptr)}"
            ]
        )
        if len(set(digests)) != 1:
            raise RuntimeError(
                f"queues differ across processes (digests {digests}); the key gathering is broken"
            )
        return digests

    # large activations reused from the heap instead of mapped afresh every step (see memory.py)
    with reuse_large_allocations(accelerator.device.type == "cpu"):
        try:
            while state.global_step < total_steps:
                window_nonfinite = False
                stop_requested = torch.zeros(())
                for _ in range(args.gradient_accumulation_steps):
                    batch = _to_device(next(batches), accelerator.device, args.channels_last)
                    rollback = QueueRollback(unwrapped, keys_per_forward)
                    with accelerator.accumulate(model):
                        output = model(**batch)
                        values = torch.stack(_output_metrics(output))
                        flags = torch.tensor(
                            [
                                0.0 if torch.isfinite(output.loss).item() else 1.0,
                                1.0 if stop.received else 0.0,
                            ]
                        )
                        reduced = accelerator.reduce(
                            torch.cat([values, flags]).to(accelerator.device), "sum"
                        ).cpu()
                        accelerator.backward(
                            output.loss
                        )  # always (DDP expects it); a bad window is zeroed below
                        if reduced[-2] > 0:
                            rollback.undo()
                            window_nonfinite = True
                        else:
                            interval_sums += reduced[: len(METRIC_NAMES)] / world
                            interval_count += 1
                        stop_requested = torch.maximum(stop_requested, reduced[-1])
                        if accelerator.sync_gradients:
                            grad_norm = None
                            if args.max_grad_norm and not window_nonfinite:
                                grad_norm = accelerator.clip_grad_norm_(
                                    unwrapped.parameters(), args.max_grad_norm
                                )
                                if not torch.isfinite(torch.as_tensor(grad_norm)):
                                    window_nonfinite = True
                            if not window_nonfinite:
                                optimizer.step()
                            optimizer.zero_grad(set_to_none=True)
                with warnings.catch_warnings():
                    # A skipped (non-finite) first update makes torch warn that the scheduler steps before the
                    # optimiser; advancing the schedule anyway is intended (it follows updates attempted).
                    warnings.filterwarnings(
                        "ignore", message=re.escape("Detected call of `lr_scheduler.step()`")
                    )
                    scheduler.step()
                state.global_step += 1
                state.images_seen += global_batch
                interval_images += global_batch
                if window_nonfinite:
                    state.nonfinite_total += 1
                    state.nonfinite_consecutive += 1
                    accelerator.print(
                        f"update {state.global_step}: non-finite loss, update skipped "
                        f"({state.nonfinite_consecutive} in a row, {state.nonfinite_total} in total)"
                    )
                    if state.nonfinite_consecutive >= args.max_consecutive_nonfinite:
                        stopped_by = "nonfinite"
                        accelerator.print(
                            f"stopping: {state.nonfinite_consecutive} non-finite losses in a row (limit "
                            f"--max_consecutive_nonfinite {args.max_consecutive_nonfinite}); lower the learning rate, "
                            "check the data for NaN/Inf or disable mixed precision"
                        )
                        exit_code = 3
                        break
                else:
                    state.nonfinite_consecutive = 0

                elapsed = time.perf_counter() - interval_start
                if interval_count and (
                    state.global_step % args.logging_steps == 0 or state.global_step == total_steps
                ):
                    means = (interval_sums / interval_count).tolist()
                    last_metrics = dict(zip(METRIC_NAMES, means))
                    last_metrics["lr"] = scheduler.get_last_lr()[0]
                    last_metrics["images_per_second"] = interval_images / max(elapsed, 1e-9)
                    last_metrics["nonfinite_total"] = float(state.nonfinite_total)
                    if log_with:
                        accelerator.log(
                            {f"train/{k}": v for k, v in last_metrics.items()}, step=state.global_step
                        )
                    if progress.disable and accelerator.is_main_process:  # plain log lines for batch jobs
                        logger.info(
                            "step %d/%d %s",
                            state.global_step,
                            total_steps,
                            " ".join(f"{k}={v:.4g}" for k, v in last_metrics.items()),
                        )
                    interval_sums.zero_()
                    interval_count = 0
                    interval_images = 0
                    interval_start = time.perf_counter()
                progress.update(1)
                if last_metrics:
                    progress.set_postfix(
                        loss=f"{last_metrics['loss']:.3f}",
                        g=f"{last_metrics['global_loss']:.3f}",
                        c=f"{last_metrics['contour_loss']:.3f}",
                        i=f"{last_metrics['instance_loss']:.3f}",
                        top1_g=f"{last_metrics['global_top1']:.2f}",
                        top1_c=f"{last_metrics['contour_top1']:.2f}",
                        lr=f"{last_metrics['lr']:.2e}",
                        img_s=f"{last_metrics['images_per_second']:.1f}",
                        refresh=False,
                    )
                if stop_requested > 0:
                    stopped_by = "signal"
                    path = checkpoint_now()
                    accelerator.print(
                        f"stopped by a signal at update {state.global_step}; checkpoint {path}; continue with "
                        f"--resume_from_checkpoint latest"
                    )
                    break
                if (
                    args.save_steps > 0
                    and state.global_step % args.save_steps == 0
                    and state.global_step < total_steps
                ):
                    checkpoint_now()
        finally:
            progress.close()
            stop.restore()

    if stopped_by != "signal":
        checkpoint_now()
    digests = verify_queues()
    if accelerator.is_main_process:
        final_summary = summary()
        final_summary["queue_digests"] = digests
        final_summary["queue_ptr"] = int(unwrapped.queue_ptr)
        if stopped_by is None:
            path = save_encoder(unwrapped, processor, args, final_summary, str(output_dir))
            final_summary["encoder_dir"] = str(path)
            accelerator.print(f"encoder, image processor and model card saved to {path}")
            if args.push_to_hub:
                commit = push_folder_to_hub(path, args.hub_model_id, private=args.hub_private)
                accelerator.print(f"pushed to {getattr(commit, 'commit_url', args.hub_model_id)}")
        write_json(output_dir / TRAINER_STATE_NAME, final_summary, durable=True, sort_keys=True)
    accelerator.wait_for_everyone()
    if log_with:
        accelerator.end_training()
    return exit_code


__all__ = [
    "PretrainingArguments",
    "PretrainingBatches",
    "TrainerState",
    "build_config",
    "build_optimizer",
    "build_scheduler",
    "check_queue_and_batch",
    "export_encoder",
    "initialise_backbone_from_imagenet",
    "load_backbone_weights_into",
    "list_checkpoints",
    "load_local_backbone_weights",
    "load_pretraining_dataset",
    "main",
    "run_info",
    "parse_args",
    "parse_dataclass_args",
    "push_folder_to_hub",
    "resolve_checkpoint",
    "resolve_mixed_precision",
    "save_checkpoint",
    "save_encoder",
    "scaled_learning_rate",
    "seeded_rng",
]
