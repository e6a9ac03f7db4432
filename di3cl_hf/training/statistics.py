"""Measured input statistics: ``image_mean`` / ``image_std`` of the processor's [0, 1] range on a data set.

The :class:`~di3cl_hf.image_processing_di3cl.DI3CLImageProcessor` normalises clipped, [0, 1]-scaled dB values
with ``image_mean`` / ``image_std``. Its defaults are nominal (typical land backscatter mapped through
``db_range``), not measured. As timm keeps the mean/std of the data a network was trained on with its
weights, pre-training measures them on a sample of its corpus (:func:`estimate_statistics`, called by
:mod:`~di3cl_hf.training.pretraining` before the first step, so the views are normalised with them and the
encoder folder's ``preprocessor_config.json`` carries them), and fine-tuning can re-estimate them on its
labelled training set (``--estimate_statistics``).

The estimate is the per-channel mean and standard deviation of the valid pixels, exactly as the processor
computes them before normalising (``sar_to_db`` -> ``clip_bounds`` -> ``scale_to_unit``), over at most
``max_images`` images drawn without replacement from the seed, each subsampled on a ``pixel_stride`` grid.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.parquet import decode_array
from ..radiometry import scale_to_unit

DEFAULT_MAX_IMAGES = 2000
"""Images sampled for an estimate (a few seconds on one core for 256-pixel patches)."""


@dataclass(frozen=True)
class InputStatistics:
    """Per-channel mean / std of the processor's [0, 1] range, and what they were measured on."""

    image_mean: list[float]
    image_std: list[float]
    num_images: int
    num_pixels: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_mean": self.image_mean,
            "image_std": self.image_std,
            "num_images": self.num_images,
            "num_pixels": self.num_pixels,
        }


def measure_statistics(
    processor: Any, images: Iterable[Any], pixel_stride: int = 2, max_images: int | None = None
) -> InputStatistics:
    """Mean / std per channel of ``processor``'s [0, 1]-scaled values over the valid pixels of ``images``.

    Args:
        processor: A ``DI3CLImageProcessor`` (its radiometry, ``db_range``, clipping and channels are used).
        images: SAR arrays ([C, H, W] or [H, W], any radiometry the processor accepts), or
            ``(array, valid_mask)`` pairs.
        pixel_stride: Keep every ``pixel_stride``-th row and column (1: every pixel).
        max_images: Stop after this many images (``None``: all).

    Raises:
        ValueError: No valid pixel in ``images``.
    """
    channels = int(processor.num_channels)
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    pixels = 0
    count = 0
    for item in images:
        if max_images is not None and count >= max_images:
            break
        image, valid_mask = item if isinstance(item, tuple) else (item, None)
        db, valid = processor.sar_to_db(np.asarray(image), valid_mask)
        low, high = processor.clip_bounds(db, valid)
        db, valid = db[:, ::pixel_stride, ::pixel_stride], valid[::pixel_stride, ::pixel_stride]
        unit = scale_to_unit(db, low, high)[:, valid].astype(np.float64)
        total += unit.sum(axis=1)
        total_sq += (unit**2).sum(axis=1)
        pixels += unit.shape[1]
        count += 1
    if pixels == 0:
        raise ValueError("measure_statistics: no valid pixel in the given images")
    mean = total / pixels
    std = np.sqrt(np.maximum(total_sq / pixels - mean**2, 1e-12))
    return InputStatistics([float(v) for v in mean], [float(v) for v in std], count, pixels)


def sample_rows(
    dataset: Any, column: str, max_images: int, seed: int = 0, mask_column: str | None = "valid_mask"
) -> Iterator[tuple[Any, Any]]:
    """Up to ``max_images`` ``(image, valid_mask)`` pairs (mask ``None`` where the row has none): a seeded
    sample of a map-style dataset (``len`` and integer indexing, e.g. ``datasets.Dataset``), the first rows
    of an iterable (streamed) one. Stored SARSense / Parquet arrays (``{"bytes", "dtype", "shape"}``) are
    decoded."""

    def pair(row: Any) -> tuple[Any, Any]:
        image, mask = row[column], (row.get(mask_column) if mask_column else None)
        image = decode_array(image) if isinstance(image, dict) else np.asarray(image)
        if mask is not None:
            mask = (decode_array(mask) if isinstance(mask, dict) else np.asarray(mask)).astype(bool)
        return image, mask

    if hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__"):
        size = len(dataset)
        order = np.random.default_rng(seed).permutation(size)[: min(size, max_images)]
        for index in sorted(int(i) for i in order):
            yield pair(dataset[index])
        return
    for number, row in enumerate(dataset):
        if number >= max_images:
            return
        yield pair(row)


def estimate_statistics(
    processor: Any,
    dataset: Any,
    column: str = "image",
    max_images: int = DEFAULT_MAX_IMAGES,
    seed: int = 0,
    pixel_stride: int = 2,
    mask_column: str | None = "valid_mask",
) -> InputStatistics:
    """Measure the statistics of ``dataset[column]`` (see :func:`sample_rows`) and set them on ``processor``
    (``image_mean`` / ``image_std``, saved with it by ``save_pretrained``). Returns what was measured."""
    statistics = measure_statistics(
        processor, sample_rows(dataset, column, max_images, seed, mask_column), pixel_stride=pixel_stride
    )
    processor.image_mean = list(statistics.image_mean)
    processor.image_std = list(statistics.image_std)
    return statistics


def processor_statistics(processor: Any) -> dict[str, list[float]]:
    """The ``image_mean`` / ``image_std`` a processor normalises with now (for logs and result files)."""
    return {
        "image_mean": [float(v) for v in processor.image_mean],
        "image_std": [float(v) for v in processor.image_std],
    }


__all__ = [
    "DEFAULT_MAX_IMAGES",
    "InputStatistics",
    "estimate_statistics",
    "measure_statistics",
    "processor_statistics",
    "sample_rows",
]
