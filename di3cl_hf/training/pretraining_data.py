"""The pre-training data pipeline: raw dataset loading, per-epoch shard samplers, seeded views and box batches.

The random state of each sample and each batch is derived from ``(seed, epoch, position)``, so a resumed run sees
exactly the views and boxes an uninterrupted one would, whatever the number of DataLoader workers.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import math
import random
import signal
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
import torch
from datasets.distributed import split_dataset_by_node
from torch.utils.data import DataLoader, IterableDataset, Sampler

from ..data.parquet import decode_array
from ..data.sarsense import load_sarsense
from ..image_processing_di3cl import DI3CLImageProcessor
from .augmentation import PretrainingTransform, TwoViewTransform
from .boxes import PretrainingCollator

if TYPE_CHECKING:
    from .pretraining_args import PretrainingArguments


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


def load_pretraining_dataset(args: PretrainingArguments):
    """Load the raw dataset named by ``args`` (map-style ``datasets.Dataset`` or streamed ``IterableDataset``).

    Only ``args.image_column`` is kept. Raises ValueError naming the source when nothing usable is found.
    """
    if args.data_dir:
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
    """Picklable ``(example, seed) -> sample dict``: seeds the global RNGs and applies the view transform.

    With ``crop_size`` > 0 a random ``crop_size``² window of the image (uniform position, drawn from ``seed``) is
    cut first and the two views are made from it: a large scene then gives a different region every time it is
    drawn, at its own pixel size, instead of being shrunk whole into a view. Images smaller than the crop are
    used whole.
    """

    def __init__(
        self,
        transform: Callable[..., dict],
        image_column: str,
        valid_mask_column: str | None = None,
        crop_size: int = 0,
    ) -> None:
        self.transform = transform
        self.image_column = image_column
        self.valid_mask_column = valid_mask_column
        self.crop_size = int(crop_size)

    def __call__(self, example: dict, seed: int) -> dict:
        image = _decode(example[self.image_column])
        valid = _decode(example.get(self.valid_mask_column)) if self.valid_mask_column else None
        with seeded_rng(seed):
            if self.crop_size > 0:
                image, valid = random_crop(image, valid, self.crop_size)
            return self.transform(image, None if valid is None else valid.astype(bool, copy=False))


def random_crop(
    image: np.ndarray, valid: np.ndarray | None, size: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """A uniformly placed ``size``² window of ``image`` (``[C, H, W]``) and of ``valid`` (``[H, W]``), drawn from
    the global ``random`` generator; a side shorter than ``size`` is kept whole."""
    height, width = image.shape[-2:]
    top = random.randint(0, max(0, height - size))
    left = random.randint(0, max(0, width - size))
    rows, cols = slice(top, top + size), slice(left, left + size)
    return image[..., rows, cols], (None if valid is None else valid[..., rows, cols])


def image_shapes(dataset, image_column: str) -> list[tuple[int, ...]]:
    """The stored ``shape`` of every image of a map-style dataset with raw array columns, without decoding."""
    if getattr(dataset, "_indices", None) is not None:  # a selected / shuffled view: rows in its own order
        dataset = dataset.flatten_indices()
    column = dataset.data.column(image_column)  # chunk by chunk: combining would copy every image's bytes
    return [tuple(shape) for chunk in column.chunks for shape in chunk.field("shape").to_pylist()]


def crops_per_image(shapes: list[tuple[int, ...]], crop_size: int) -> list[int]:
    """How often each image is drawn per epoch when crops of ``crop_size``² are cut from it: its area in crops,
    rounded up (at least once), so that every pixel of the corpus weighs the same whatever its image's size."""
    if crop_size <= 0:
        return [1] * len(shapes)
    return [max(1, math.ceil(shape[-2] * shape[-1] / crop_size**2)) for shape in shapes]


def _decode(value: Any) -> np.ndarray | None:
    """A stored array: SARSense / ``export_parquet`` rows hold ``{"bytes", "dtype", "shape"}``, others arrays."""

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
        samples = [sample for _, sample in items]
        ids = [sample.pop("sample_id", None) if isinstance(sample, dict) else None for sample in samples]
        with seeded_rng(_mix_seed(*seeds)):
            batch = self.collator(samples)
        if isinstance(batch, dict) and all(i is not None for i in ids):
            batch["sample_ids"] = torch.tensor(ids, dtype=torch.long)
        return batch


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
    """Map-style view dataset indexed by ``(epoch, draw)`` pairs from :class:`EpochShardSampler`.

    ``draws[i]`` is how often image ``i`` is drawn per epoch (:func:`crops_per_image`; default once). Every sample
    carries ``sample_id``, the index of its image in ``dataset``: the model never uses queued keys of the same
    image as negatives of its queries (``DI3CLForPreTraining(sample_ids=...)``).
    """

    def __init__(
        self, dataset, sample_function: SampleFunction, seed: int, draws: list[int] | None = None
    ) -> None:
        self.dataset = dataset
        self.sample_function = sample_function
        self.seed = seed
        counts = [1] * len(dataset) if draws is None else list(draws)
        if len(counts) != len(dataset):
            raise ValueError(f"draws: {len(counts)} counts for {len(dataset)} images")
        self.images = np.repeat(np.arange(len(counts)), counts)

    @property
    def num_images(self) -> int:
        """Distinct images (sample ids) of an epoch."""
        return len(self.dataset)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, dict]:
        epoch, draw = key
        index = int(self.images[int(draw)])
        seed = _mix_seed(self.seed, epoch, draw)
        sample = self.sample_function(self.dataset[index], seed)
        if isinstance(sample, dict):
            sample["sample_id"] = index
        return seed, sample


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
        draws: list[int] | None = None,
    ) -> None:

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
            self.dataset = MapPretrainingDataset(dataset, sample_function, seed, draws)
            self.batches_per_epoch = len(self.dataset) // world_size // batch_size
            if self.batches_per_epoch < 1:
                raise ValueError(
                    f"dataset of {len(self.dataset)} draws is too small for {world_size} process(es) x "
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


def warn_queue_vs_corpus(queue_size: int, num_images: int, masked: bool) -> str | None:
    """Warn (and return the text) when the queue holds more keys than an epoch has distinct images.

    Each image then sits in the queue more than once; without ``mask_own_negatives`` its own keys are among its
    negatives (false negatives that grow as the two encoders converge)."""
    if queue_size <= num_images:
        return None
    text = (
        f"queue_size {queue_size} > {num_images} distinct images per epoch: every image sits in the queue "
        f"{queue_size / num_images:.1f} times"
    )
    text += (
        " (its own keys are masked out of its negatives)"
        if masked
        else "; its own keys are among its negatives: lower --queue_size or keep --mask_own_negatives"
    )
    warnings.warn(text, stacklevel=2)
    return text


def build_transform_and_collator(args: PretrainingArguments, config):
    """The image processor, the per-sample view transform and the box collator for ``config``."""
    processor = DI3CLImageProcessor(num_channels=config.num_channels, input_kind=args.input_kind)
    views = TwoViewTransform(config.image_size, preset=args.augmentation_preset, db_range=processor.db_range)
    transform = PretrainingTransform(processor, views)
    # seed=None: boxes come from the global RNG, which SeededCollator seeds per batch.
    collator = PretrainingCollator.from_config(config, seed=None)
    return processor, transform, collator


__all__ = [
    "EpochShardSampler",
    "MapPretrainingDataset",
    "PretrainingBatches",
    "SampleFunction",
    "SeededCollator",
    "StreamPretrainingDataset",
    "build_transform_and_collator",
    "crops_per_image",
    "image_shapes",
    "load_pretraining_dataset",
    "random_crop",
    "seeded_rng",
    "warn_queue_vs_corpus",
]
