"""Lossless array storage of SAR datasets, decoding to numpy, and Parquet export with a dataset card.

**Storage (lossless).** Pixels are never quantised: each array column (``image``, ``valid_mask``,
``label``) is a struct ``{"bytes": binary, "dtype": "<f4", "shape": [C, H, W]}`` holding the raw
array in its source dtype (float32 dB, int16/uint16 DN, complex64 SLC, ...). These are plain Arrow
types, so Parquet export, ``load_dataset("parquet", ...)``, the Hub and streaming need no code from
this package; :func:`decode_example` / :func:`decode_batch` / :func:`with_decoding` turn them back
into numpy (``image`` as float32 ``[C, H, W]``, complex data as complex64; ``valid_mask`` bool
``[H, W]``; ``label`` int64 ``[H, W]``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from datasets import List, Value

from ..atomic import atomic_path, write_text
from ..hub.dataset_card import dataset_card
from .classes import IGNORE_INDEX

ARRAY_FEATURE = {"bytes": Value("binary"), "dtype": Value("string"), "shape": List(Value("int32"))}
"""Arrow type of a losslessly stored array: raw bytes, numpy dtype string, shape."""


# -- array encoding ------------------------------------------------------------------------------------
def encode_array(array: np.ndarray) -> dict[str, Any]:
    """Encode an array losslessly as ``{"bytes", "dtype", "shape"}`` (explicit byte order)."""
    array = np.ascontiguousarray(array)
    return {"bytes": array.tobytes(), "dtype": array.dtype.str, "shape": list(array.shape)}


def decode_array(value: Mapping[str, Any] | None) -> np.ndarray | None:
    """Inverse of :func:`encode_array` (a writable array in the stored dtype)."""
    if value is None:
        return None
    return np.frombuffer(value["bytes"], dtype=np.dtype(value["dtype"])).reshape(value["shape"]).copy()


def _image_to_float(array: np.ndarray, dtype: str | None) -> np.ndarray:
    if dtype is None or np.iscomplexobj(array):
        return array  # complex stays complex64: float32 cannot hold it
    return array.astype(dtype, copy=False)


def decode_example(example: Mapping[str, Any], image_dtype: str | None = "float32") -> dict[str, Any]:
    """Decode the array columns of one (raw) example to numpy.

    Args:
        example: A row of a SARSense / segmentation dataset (or of its Parquet export).
        image_dtype: dtype of ``image`` (float32 is exact for float32/int16/uint16/uint8 sources);
            ``None`` keeps the source dtype. Complex images stay complex64.

    Returns:
        A new dict: ``image`` ``[C, H, W]``, ``valid_mask`` bool ``[H, W]``, ``label`` int64 ``[H, W]``
        (when present), other columns unchanged.
    """
    out = dict(example)
    if "image" in out and isinstance(out["image"], Mapping):
        out["image"] = _image_to_float(decode_array(out["image"]), image_dtype)
    if "valid_mask" in out and isinstance(out["valid_mask"], Mapping):
        out["valid_mask"] = decode_array(out["valid_mask"]).astype(bool, copy=False)
    if "label" in out and isinstance(out["label"], Mapping):
        out["label"] = decode_array(out["label"]).astype(np.int64)
    return out


def decode_batch(batch: Mapping[str, list], image_dtype: str | None = "float32") -> dict[str, list]:
    """:func:`decode_example` for a batch (column -> list), as ``Dataset.set_transform`` passes it."""
    keys = list(batch)
    size = len(batch[keys[0]]) if keys else 0
    rows = [decode_example({k: batch[k][i] for k in keys}, image_dtype) for i in range(size)]
    return {k: [row[k] for row in rows] for k in keys}


def with_decoding(
    dataset: datasets.Dataset | datasets.IterableDataset | datasets.DatasetDict,
    image_dtype: str | None = "float32",
    transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Any:
    """Make a raw dataset yield numpy arrays (``Dataset.with_transform`` / ``IterableDataset.map``).

    Args:
        dataset: A raw SARSense/segmentation ``Dataset``, ``DatasetDict`` or ``IterableDataset``
            (e.g. from ``load_dataset("parquet", ...)``).
        image_dtype: See :func:`decode_example`.
        transform: Optional per-example function applied after decoding (e.g. a processor step).

    Returns:
        A dataset of the same kind whose rows hold decoded arrays.
    """

    decoder = SARDecoder(image_dtype, transform)
    if isinstance(dataset, datasets.DatasetDict):
        return datasets.DatasetDict({k: with_decoding(v, image_dtype, transform) for k, v in dataset.items()})
    if isinstance(dataset, datasets.IterableDataset):
        return dataset.map(decoder)
    return dataset.with_transform(decoder.batch)


class SARDecoder:
    """Picklable decoder (works in DataLoader workers under any start method).

    ``decoder(example)`` decodes one row (then applies ``transform``); ``decoder.batch(batch)`` does
    it for a column -> list batch, as ``Dataset.set_transform`` passes it.

    Args:
        image_dtype: See :func:`decode_example`.
        transform: Optional per-example function applied after decoding.
    """

    def __init__(
        self,
        image_dtype: str | None = "float32",
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.image_dtype = image_dtype
        self.transform = transform

    def __call__(self, example: Mapping[str, Any]) -> dict[str, Any]:
        decoded = decode_example(example, self.image_dtype)
        return self.transform(decoded) if self.transform is not None else decoded

    def batch(self, batch: Mapping[str, list]) -> dict[str, list]:
        keys = list(batch)
        rows = [self({k: batch[k][i] for k in keys}) for i in range(len(batch[keys[0]]))] if keys else []
        return {k: [row[k] for row in rows] for k in rows[0]} if rows else dict(batch)


# -- Parquet export + dataset card ---------------------------------------------------------------------
def _raw(dataset: datasets.Dataset) -> datasets.Dataset:
    return dataset.with_format(None)


def export_parquet(
    dataset: datasets.Dataset | datasets.DatasetDict,
    out_dir: str | os.PathLike[str],
    *,
    max_shard_size: int = 500 * 2**20,
    num_shards: int | None = None,
    pretty_name: str = "SAR patches",
    description: str | None = None,
    license: str = "other",
    tags: Sequence[str] = (),
    synthetic: bool | None = None,
) -> list[Path]:
    """Write a dataset as Parquet shards + a dataset card, readable with no script.

    Layout: ``out_dir/data/<split>-00000-of-0000N.parquet`` and ``out_dir/README.md``
    (:func:`di3cl_hf.hub.dataset_card.dataset_card`) whose YAML
    ``configs`` point at the shards, so ``load_dataset(out_dir)``, ``load_dataset("parquet",
    data_files=...)`` and a Hub dataset repo of this folder all work. Each file is written to a
    temporary name and renamed (:mod:`di3cl_hf.atomic`).

    Args:
        dataset: A ``Dataset`` (written as split ``train``) or ``DatasetDict``.
        out_dir: Output folder.
        max_shard_size: Target bytes per shard (ignored when ``num_shards`` is given).
        num_shards: Shards per split.
        pretty_name: Card title.
        description: Card text.
        license: Card license id.
        tags: Extra card tags.
        synthetic: Say on the card that the data are synthetic (``None``: detect it from the
            ``sensor`` / ``source_dataset`` columns, which :mod:`di3cl_hf.synthetic` fills).

    Returns:
        The Parquet files.
    """
    splits = dataset if isinstance(dataset, datasets.DatasetDict) else datasets.DatasetDict(train=dataset)
    out_dir = Path(out_dir)
    data_dir = out_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    counts = {}
    for split, part in splits.items():
        part = _raw(part)
        shards = num_shards or max(1, math.ceil(part.data.nbytes / max_shard_size))
        shards = max(1, min(shards, len(part))) if len(part) else 1
        for stale in data_dir.glob(f"{split}-*.parquet"):
            stale.unlink()
        for index in range(shards):
            target = data_dir / f"{split}-{index:05d}-of-{shards:05d}.parquet"
            with atomic_path(target) as tmp:
                part.shard(shards, index, contiguous=True).to_parquet(str(tmp))
            written.append(target)
        counts[split] = len(part)
    first = next(iter(splits.values()))
    if synthetic is None:
        synthetic = any(
            "synthetic" in str(value).lower()
            for part in splits.values()
            for column in ("sensor", "source_dataset")
            if column in part.column_names
            for value in set(_raw(part)[column])
        )
    card = dataset_card(
        features=first.features,
        splits=counts,
        pretty_name=pretty_name,
        description=description,
        license=license,
        tags=tags,
        synthetic=synthetic,
        ignore_index=IGNORE_INDEX,
    )
    write_text(out_dir / "README.md", card)
    return written


__all__ = [
    "ARRAY_FEATURE",
    "SARDecoder",
    "dataset_card",
    "decode_array",
    "decode_batch",
    "decode_example",
    "encode_array",
    "export_parquet",
    "with_decoding",
]
