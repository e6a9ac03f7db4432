"""Patch embeddings: pooled (``[D]``) or dense (``[D, H/32, W/32]``) encoder features of SAR patches.

:func:`embed_files` runs the encoder over SAR patch files (radiometry per patch, consecutive patches of
one size batched); :func:`save_embeddings` writes them atomically to ``.npy`` (plus a list of the
source files) or Parquet. ``di3cl embed`` (:mod:`di3cl_hf.cli.predict`) chains the two.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from ..atomic import atomic_path, write_text
from ..data.sario import read_sar
from ..loading import check_channels
from ..runtime import autocast_dtype as precision_dtype
from ..runtime import default_device, resolve_precision
from .outputs import check_output_path

POOLINGS = ("pooled", "dense")
EMBEDDING_SUFFIXES = (".npy", ".parquet")


def embed_files(
    model: torch.nn.Module,
    processor: Any,
    paths: Sequence[str | os.PathLike[str]],
    *,
    pooling: str = "pooled",
    batch_size: int = 8,
    bands: Sequence[int] | None = None,
    precision: str = "auto",
    device: str | torch.device | None = None,
    progress: bool = True,
) -> list[np.ndarray]:
    """Encoder features of SAR patches.

    Each file is read with :func:`di3cl_hf.data.sario.read_sar` and converted by
    ``processor.sar_to_pixel_values`` (radiometry per patch); consecutive patches of equal size are
    batched.

    Args:
        model: A model returning ``last_hidden_state`` ``[B, D, h, w]`` and ``pooler_output`` ``[B, D]``
            (``DI3CLModel``, e.g. ``AutoModel.from_pretrained(folder)``).
        processor: A ``DI3CLImageProcessor`` (its ``num_channels`` must be the model's).
        paths: SAR patch files (GeoTIFF/TIFF, PNG/JPG, ``.npy``).
        pooling: ``"pooled"`` (float32 ``[D]`` per patch, the global average) or ``"dense"``
            (float32 ``[D, H/32, W/32]``).
        batch_size: Patches per forward pass.
        bands: 1-based bands to read, e.g. ``bands=(1, 2)`` (``None``: all, 1 or 2).
        precision: One of :data:`di3cl_hf.runtime.PRECISIONS` (``"auto"``: bf16 where native, else fp32).
        device: Torch device; defaults to CUDA when available, else CPU.
        progress: Show a tqdm progress bar.

    Returns:
        One float32 array per path, in order.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    check_channels(model, processor)
    device = torch.device(device) if device is not None else default_device()
    dtype = precision_dtype(resolve_precision(precision, device))
    model.eval().to(device)
    features: list[np.ndarray] = []

    def run(batch: list[np.ndarray]) -> None:
        pixel_values = torch.from_numpy(np.stack(batch)).to(device)
        with torch.inference_mode():
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                output = model(pixel_values)
            key = "pooler_output" if pooling == "pooled" else "last_hidden_state"
            values = output[key] if isinstance(output, dict) else getattr(output, key)
            features.extend(values.float().cpu().numpy())

    batch: list[np.ndarray] = []
    for path in tqdm(list(paths), unit="patch", disable=not progress):
        raster = read_sar(path, bands=bands)
        pixel_values, _ = processor.sar_to_pixel_values(raster.array, raster.valid_mask)
        if batch and (len(batch) == batch_size or batch[0].shape != pixel_values.shape):
            run(batch)
            batch = []
        batch.append(pixel_values)
    if batch:
        run(batch)
    return features


def files_list_path(path: str | os.PathLike[str]) -> Path:
    """``NAME.files.txt`` beside a ``NAME.npy`` output: the source file of each row."""
    path = Path(path)
    return path.with_name(path.stem + ".files.txt")


def check_embeddings_output(
    path: str | os.PathLike[str],
    paths: Sequence[str | os.PathLike[str]] = (),
    *,
    overwrite: bool = False,
    flag: str = "overwrite=True",
) -> Path:
    """Check an embeddings output before computing: suffix, not an input, not existing unless ``overwrite``
    (also the ``.files.txt`` list of a ``.npy``), a writable folder (see
    :func:`di3cl_hf.inference.outputs.check_output_path`)."""
    path = Path(path)
    if path.suffix.lower() not in EMBEDDING_SUFFIXES:
        raise ValueError(
            f"{path}: unsupported output, expected a name ending in {' or '.join(EMBEDDING_SUFFIXES)}"
        )
    check_output_path(path, paths, overwrite=overwrite, flag=flag)
    if path.suffix.lower() == ".npy":
        check_output_path(files_list_path(path), paths, overwrite=overwrite, flag=flag)
    return path


def save_embeddings(
    path: str | os.PathLike[str],
    embeddings: Sequence[np.ndarray],
    paths: Sequence[str | os.PathLike[str]],
    *,
    overwrite: bool = False,
) -> Path:
    """Write embeddings atomically to ``.npy`` or Parquet.

    ``.npy``: one float32 array ``[N, ...]`` (all embeddings must have one shape), plus
    ``<name>.files.txt`` beside it listing the source file of each row. ``.parquet``: columns
    ``path`` (string), ``embedding`` (float32 list, the flattened features) and ``shape`` (int list),
    readable with ``datasets.load_dataset("parquet", data_files=...)`` or pandas/pyarrow.

    Args:
        path: The output file (``.npy`` or ``.parquet``); never one of ``paths``.
        embeddings: One array per source file.
        paths: The source files, in order.
        overwrite: Replace an existing output (refused otherwise).

    Returns:
        ``path``.
    """
    path = check_embeddings_output(path, paths, overwrite=overwrite)
    if len(embeddings) != len(paths):
        raise ValueError(f"{len(embeddings)} embeddings for {len(paths)} files")
    with atomic_path(path, suffix=path.suffix) as temporary:
        if path.suffix.lower() == ".npy":
            shapes = {tuple(e.shape) for e in embeddings}
            if len(shapes) > 1:
                raise ValueError(
                    f"{path}: embeddings of different shapes {sorted(shapes)} (patches of different sizes with "
                    "dense features) cannot be stacked into one .npy; write a .parquet file instead"
                )
            with open(temporary, "wb") as handle:
                np.save(handle, np.stack([np.asarray(e, dtype=np.float32) for e in embeddings]))
            write_text(files_list_path(path), "".join(f"{p}\n" for p in paths))
        else:
            table = pa.table(
                {
                    "path": pa.array([str(p) for p in paths], pa.string()),
                    "embedding": pa.array(
                        [np.asarray(e, dtype=np.float32).ravel() for e in embeddings], pa.list_(pa.float32())
                    ),
                    "shape": pa.array([list(e.shape) for e in embeddings], pa.list_(pa.int32())),
                }
            )
            pq.write_table(table, temporary)
    return path


__all__ = [
    "EMBEDDING_SUFFIXES",
    "POOLINGS",
    "check_embeddings_output",
    "embed_files",
    "files_list_path",
    "save_embeddings",
]
