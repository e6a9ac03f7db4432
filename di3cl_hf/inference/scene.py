"""Scene inference: tiled, georeferenced prediction on whole SAR scenes, and patch embeddings.

:func:`predict_scene` segments a SAR scene of any size with bounded memory:

1. The scene is read window by window (:func:`di3cl_hf.sario.open_scene`), never whole.
2. Overlapping square tiles (``tile_size``, at least ``overlap`` pixels shared with each neighbour,
   spread evenly so every tile lies inside the scene) are batched through the model under
   ``torch.inference_mode`` with bf16 autocast where the device supports it.
3. The logits of overlapping tiles are blended with a separable raised-cosine window (1 in the tile
   centre, falling to near 0 over the ``overlap`` at the tile edges, clamped away from 0) and
   normalised by the summed weights, so no seams show. The class map is the argmax of the blended
   logits, the probabilities their softmax (computed once per output pixel, not per tile).
4. Tiles are blended in row-major order (batches may span rows of tiles); the columns of a tile that
   no later tile of its row reaches are written out as soon as it is added; sums are made in place in
   the tiles' own logits. Memory therefore holds a few batches of tiles, the ~``overlap`` columns
   shared with the next tile, and a full-width band of ~``overlap`` rows carried to the next row of
   tiles: it grows with the scene width only through that thin band.
5. The output GeoTIFF (tiled, compressed, Cloud-Optimized by default) gets the input's CRS and
   transform, is written window by window into a temporary file and moved into place only when
   complete (:func:`di3cl_hf.sario.create_geotiff`), so an interrupted run leaves nothing under the
   target name. Input nodata pixels stay nodata (255) in the output.

Radiometry is resolved once per scene: the ``"auto"`` kind and percentile clipping bounds are
computed from a grid of sample windows spread over the scene, then applied to every tile, so that a
tile of open water cannot be read as a different radiometric kind than its neighbours.

:func:`embed_files` computes pooled (``[D]``) or dense (``[D, H/32, W/32]``) encoder features of
SAR patches; :func:`save_embeddings` writes them to ``.npy`` or Parquet.

``register_cli`` adds the ``di3cl predict`` and ``di3cl embed`` commands.
"""

from __future__ import annotations

import argparse
import math
import os
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from rasterio.windows import Window
from tqdm.auto import tqdm

from ..atomic import atomic_path, write_text
from ..data.sario import create_geotiff, open_scene, read_sar
from ..memory import reuse_large_allocations

OUTPUT_TYPES = ("classes", "probabilities")
PRECISIONS = ("auto", "bf16", "fp32")
BLEND_MODES = ("cosine", "uniform")
OUTPUT_NODATA = 255
# Probabilities are written as round(p * PROBABILITY_SCALE) so that 255 stays free for nodata.
PROBABILITY_SCALE = 254
_SAMPLE_WINDOW = 64
_SAMPLE_GRID = 8

# ----------------------------------------------------------------------------------------- tiling


def tile_starts(length: int, tile_size: int, overlap: int) -> list[int]:
    """Offsets of tiles covering ``[0, length)`` with at least ``overlap`` pixels between neighbours.

    The first tile starts at 0 and the last ends at ``length``; the tiles in between are spread
    evenly, so every tile lies inside the scene and the actual overlap is ``overlap`` or slightly more.
    A scene shorter than a tile gets a single tile at 0 (padded by the caller).

    Args:
        length: Scene height or width in pixels.
        tile_size: Tile height/width.
        overlap: Minimum overlap, ``0 <= overlap < tile_size``.

    Returns:
        Sorted tile offsets.
    """
    if tile_size <= 0 or not 0 <= overlap < tile_size:
        raise ValueError(f"need tile_size > 0 and 0 <= overlap < tile_size, got {tile_size=} {overlap=}")
    if length <= tile_size:
        return [0]
    count = math.ceil((length - tile_size) / (tile_size - overlap)) + 1
    return [round(i * (length - tile_size) / (count - 1)) for i in range(count)]


def blend_weights(tile_size: int, overlap: int, mode: str = "cosine", min_weight: float = 1e-3) -> np.ndarray:
    """One axis of the separable blending window: float32 ``[tile_size]``.

    ``"cosine"``: a Tukey window, 1 in the centre and a raised-cosine ramp over ``overlap`` pixels at
    each end, clamped to ``min_weight`` so that a pixel only one tile covers keeps a usable weight.
    ``"uniform"``: all ones (plain averaging of overlaps; shows steps at tile edges, kept for
    comparison).
    """
    if mode not in BLEND_MODES:
        raise ValueError(f"blend mode must be one of {BLEND_MODES}, got {mode!r}")
    weights = np.ones(tile_size, dtype=np.float64)
    if mode == "cosine" and overlap > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap) + 0.5) / overlap)
        weights[:overlap] = ramp
        weights[tile_size - overlap :] = np.minimum(weights[tile_size - overlap :], ramp[::-1])
    return np.maximum(weights, min_weight).astype(np.float32)


def resolve_autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (``None`` = plain fp32).

    ``"auto"`` picks bf16 where the hardware runs it natively (CUDA with bf16 support; CPUs whose
    oneDNN has bf16 kernels, e.g. AVX-512 BF16 / AMX) and fp32 elsewhere, where bf16 would be
    emulated and slower.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        try:
            supported = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            supported = False
        return torch.bfloat16 if supported else None
    return None


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _logits_of(output: Any) -> torch.Tensor:
    """The logits of a model output (a tensor, a ``ModelOutput`` / dict with ``logits``)."""
    if isinstance(output, torch.Tensor):
        return output
    logits = output["logits"] if isinstance(output, dict) else getattr(output, "logits", None)
    if logits is None:
        raise ValueError(
            f"the model returned {type(output).__name__} without logits; expected [B, K, H, W] logits"
        )
    return logits


def _num_labels(model: torch.nn.Module, channels: int, device: torch.device) -> int:
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "num_labels", None):
        return int(config.num_labels)
    with torch.inference_mode():
        return int(_logits_of(model(torch.zeros(1, channels, 64, 64, device=device))).shape[1])


def _class_names(model: torch.nn.Module, num_labels: int) -> list[str]:
    id2label = getattr(getattr(model, "config", None), "id2label", None) or {}
    return [str(id2label.get(i, id2label.get(str(i), f"class_{i}"))) for i in range(num_labels)]


def _model_channels(model: torch.nn.Module, processor: Any) -> int:
    channels = getattr(processor, "num_channels", None) or getattr(
        getattr(model, "config", None), "num_channels", None
    )
    if channels is None:
        raise ValueError("cannot tell the model's input channels: pass a processor with num_channels")
    return int(channels)


# ---------------------------------------------------------------------------------- preprocessing


class ScenePreprocessor:
    """Applies an image processor to windows of one scene with scene-wide radiometry.

    :meth:`DI3CLImageProcessor.sar_to_pixel_values` decides the radiometric kind (when ``"auto"``)
    and the percentile clipping bounds (when set) per call; on a tiled scene that would let tiles
    disagree (an all-water tile may look like another kind). Here both are decided once, from a
    grid of small sample windows spread over the scene, and every window then goes through the
    processor's own steps (``sar_to_db`` -> ``db_to_pixel_values``) with those fixed settings.

    Args:
        processor: A :class:`~di3cl_hf.image_processing_di3cl.DI3CLImageProcessor`.
        scene: An open :class:`~di3cl_hf.sario.SARScene`.
        bands: 1-based bands to read (``None``: all, 1 or 2).
    """

    def __init__(self, processor: Any, scene: Any, bands: Sequence[int] | None = None) -> None:
        self.processor = processor
        self.bands = list(bands) if bands is not None else None
        samples = [
            scene.read(window, bands=self.bands) for window in _sample_windows(scene.height, scene.width)
        ]
        arrays = np.concatenate([s.array.reshape(s.array.shape[0], 1, -1) for s in samples], axis=2)
        valid = np.concatenate([s.valid_mask.reshape(1, -1) for s in samples], axis=1)
        kind = getattr(processor, "input_kind", "auto")
        if kind == "auto":
            from ..radiometry import resolve_kind

            kind = resolve_kind(arrays, "auto", valid)
        self.input_kind = kind
        db, db_valid = processor.sar_to_db(arrays, valid, input_kind=kind)
        self.low, self.high = processor.clip_bounds(db, db_valid)
        self._normalise = self._numpy_normalisation(processor, db.shape[0])

    def _numpy_normalisation(self, processor: Any, channels: int) -> tuple[np.ndarray, ...] | None:
        """Per-channel float32 ``(low, high, high - low, mean, std)`` ``[C, 1, 1]`` for the numpy
        twin of ``DI3CLImageProcessor.db_to_pixel_values`` (the same float32 operations in the same
        order, so the same values), or ``None`` for another processor (its own method is used)."""
        from ..image_processing_di3cl import DI3CLImageProcessor

        if getattr(type(processor), "db_to_pixel_values", None) is not DI3CLImageProcessor.db_to_pixel_values:
            return None

        def per_channel(values: Any) -> np.ndarray:
            array = np.asarray(values, dtype=np.float32)
            return np.ascontiguousarray(np.broadcast_to(array, (channels,)).reshape(channels, 1, 1))

        low, high = per_channel(self.low), per_channel(self.high)
        mean = per_channel(processor.image_mean if processor.do_normalize else 0.0)
        std = per_channel(processor.image_std if processor.do_normalize else 1.0)
        return low, high, high - low, mean, std

    def __call__(self, array: np.ndarray, valid_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(pixel_values float32 [C, H, W] with invalid pixels 0, valid bool [H, W])`` of a window."""
        db, valid = self.processor.sar_to_db(array, valid_mask, input_kind=self.input_kind)
        if self._normalise is None:
            pixel_values = self.processor.db_to_pixel_values(db, self.low, self.high)
        else:
            # float32, in place, on this (reader) thread alone: torch would start a second OpenMP
            # team competing with the model's for the same cores
            low, high, scale, mean, std = self._normalise
            pixel_values = np.asarray(db, dtype=np.float32)  # our own copy (sar_to_db returns a new array)
            np.maximum(pixel_values, low, out=pixel_values)
            np.minimum(pixel_values, high, out=pixel_values)
            pixel_values -= low
            pixel_values /= scale
            if self.processor.do_normalize:
                pixel_values -= mean
                pixel_values /= std
        if not valid.all():
            pixel_values[:, ~valid] = 0.0
        return np.ascontiguousarray(pixel_values, dtype=np.float32), valid


def _sample_windows(height: int, width: int) -> list[Window]:
    size_y, size_x = min(_SAMPLE_WINDOW, height), min(_SAMPLE_WINDOW, width)
    rows = np.unique(np.linspace(0, height - size_y, _SAMPLE_GRID).round().astype(int))
    cols = np.unique(np.linspace(0, width - size_x, _SAMPLE_GRID).round().astype(int))
    return [Window(int(c), int(r), size_x, size_y) for r in rows for c in cols]


# ---------------------------------------------------------------------------------- scene predictor


@dataclass
class ScenePrediction:
    """What :func:`predict_scene` did.

    Attributes:
        path: The written GeoTIFF.
        height: Scene rows.
        width: Scene columns.
        num_tiles: Tiles in the grid.
        tiles_skipped: Tiles without any valid pixel (not run through the model).
        seconds: Wall time.
        autocast_dtype: ``"bfloat16"`` or ``"float32"``.
        input_kind: The radiometric kind used for the scene.
    """

    path: Path
    height: int
    width: int
    num_tiles: int
    tiles_skipped: int
    seconds: float
    autocast_dtype: str
    input_kind: str

    @property
    def megapixels_per_second(self) -> float:
        """Scene pixels per second, in millions."""
        return self.height * self.width / 1e6 / max(self.seconds, 1e-9)


@dataclass
class _Tile:
    """One tile: its row and column in the tile grid and its window in the scene (clipped to it)."""

    row: int
    col: int
    window: Window


class _TileRunner:
    """Runs batches of tiles through a model: logits (upsampled if needed) times the blending window.

    The logits come back in host buffers that are reused: a result stays valid until ``buffers``
    more calls (the scene loop blends batch ``i`` while the model runs batch ``i + 1``). Fresh 40 MB
    arrays per batch would each be mapped and zero-filled by the kernel, page faults that stall the
    model's threads (~9 ms per 512 px tile measured with benchmarks/scene.py on 2 cores).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        device: torch.device,
        autocast_dtype: torch.dtype | None,
        weights_2d: np.ndarray,
        channels_last: bool,
        buffers: int = 2,
    ) -> None:
        self.model = model
        self.device = device
        self.autocast_dtype = autocast_dtype
        self.weights = torch.from_numpy(weights_2d).to(device)
        # The window is 1 in the tile centre: only the rows and columns where it is not 1 are
        # multiplied (a factor of exactly 1 changes nothing), ~44% of a 512 px tile with overlap 64.
        self.ramps = _weighted_region(weights_2d)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self._ring: list[torch.Tensor | None] = [None] * buffers
        self._calls = 0

    def _host_buffer(self, shape: torch.Size) -> torch.Tensor:
        """The next float32 host buffer of the ring, ``[N, K, T, T]`` (grown when too small)."""
        slot = self._calls % len(self._ring)
        self._calls += 1
        buffer = self._ring[slot]
        if buffer is None or buffer.shape[1:] != shape[1:] or buffer.shape[0] < shape[0]:
            buffer = self._ring[slot] = torch.empty(shape, dtype=torch.float32)
        return buffer[: shape[0]]

    def _weigh(self, logits: torch.Tensor) -> None:
        if logits.shape[-2:] == self.weights.shape:
            for rows, cols in self.ramps:
                logits[..., rows, cols].mul_(self.weights[rows, cols])
        else:
            logits.mul_(self.weights)

    def __call__(self, tiles: np.ndarray | torch.Tensor) -> np.ndarray:
        """``tiles`` float32 [N, C, T, T] (numpy, or a tensor in any memory format) -> weighted logits
        float32 [N, K, T, T] (numpy, one plane per class)."""
        batch = torch.from_numpy(tiles) if isinstance(tiles, np.ndarray) else tiles
        batch = batch.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        size = batch.shape[-2:]
        with torch.inference_mode():
            with torch.autocast(
                self.device.type,
                dtype=self.autocast_dtype or torch.float32,
                enabled=self.autocast_dtype is not None,
            ):
                logits = _logits_of(self.model(batch))
            if logits.shape[-2:] != size:
                logits = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
            # one contiguous float32 plane per class: the blender's sums, argmax and softmax then run
            # over whole planes, ~5x faster in numpy than over a short class axis per pixel. The copy
            # converts dtype, layout (channels-last) and device in one pass.
            if self.device.type != "cpu":
                logits = logits.float()
                self._weigh(logits)
            out = self._host_buffer(logits.shape)
            out.copy_(logits)
            if self.device.type == "cpu":
                self._weigh(out)
            return out.numpy()


def _weighted_region(weights_2d: np.ndarray) -> list[tuple[slice, slice]]:
    """Slices ``(rows, cols)`` of ``weights_2d`` that cover every weight other than exactly 1: the
    frame around the box of ones (the whole window when the ones do not form one box)."""
    height, width = weights_2d.shape
    ones = weights_2d == 1.0
    full_rows = np.flatnonzero(ones.any(axis=1))
    full_cols = np.flatnonzero(ones.any(axis=0))
    if not len(full_rows) or not len(full_cols):
        return [(slice(0, height), slice(0, width))]
    top, bottom = int(full_rows[0]), int(full_rows[-1]) + 1
    left, right = int(full_cols[0]), int(full_cols[-1]) + 1
    if not ones[top:bottom, left:right].all():
        return [(slice(0, height), slice(0, width))]
    regions = [
        (slice(0, top), slice(0, width)),
        (slice(bottom, height), slice(0, width)),
        (slice(top, bottom), slice(0, left)),
        (slice(top, bottom), slice(right, width)),
    ]
    return [(r, c) for r, c in regions if r.stop > r.start and c.stop > c.start]


def predict_scene(
    model: torch.nn.Module,
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    processor: Any = None,
    *,
    tile_size: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    bands: Sequence[int] | None = None,
    output_type: str = "classes",
    precision: str = "auto",
    device: str | torch.device | None = None,
    blend: str = "cosine",
    cog: bool = True,
    channels_last: bool = True,
    progress: bool = True,
    gdal_cache_mb: int = 64,
) -> ScenePrediction:
    """Segment a whole SAR scene tile by tile and write a georeferenced GeoTIFF.

    The model is any ``nn.Module`` mapping pixel values ``[B, C, T, T]`` to logits ``[B, K, h, w]``
    (a tensor, or an output with ``.logits`` such as ``SemanticSegmenterOutput``; logits at a lower
    resolution are upsampled bilinearly). It is put in eval mode and, with ``channels_last``,
    converted to the channels-last memory format (same values, faster convolutions on CPU).

    Example:
        >>> from di3cl_hf import DI3CLForSemanticSegmentation, DI3CLImageProcessor  # doctest: +SKIP
        >>> model = DI3CLForSemanticSegmentation.from_pretrained("outputs/water")  # doctest: +SKIP
        >>> processor = DI3CLImageProcessor.from_pretrained("outputs/water")  # doctest: +SKIP
        >>> predict_scene(model, "scene.tif", "water.tif", processor)  # doctest: +SKIP

    Args:
        model: The segmentation model.
        input_path: The SAR scene (GeoTIFF/TIFF, PNG/JPG or ``.npy``; 1 or 2 bands, or ``bands``).
        output_path: The GeoTIFF to write; it appears only once complete.
        processor: A ``DI3CLImageProcessor`` carrying the radiometry (kind, dB range, nodata value,
            normalisation). ``None`` builds the default one for ``model.config.num_channels``.
        tile_size: Tile height and width fed to the model (a multiple of 32 for DI3CL models).
        overlap: Minimum overlap between neighbouring tiles, also the length of the blending ramp.
        batch_size: Tiles per forward pass.
        bands: 1-based bands of the input to use, e.g. ``(1, 2)`` for VV, VH.
        output_type: ``"classes"`` (uint8 class indices, one band) or ``"probabilities"`` (one uint8
            band per class, ``round(p * 254)``); 255 is nodata in both.
        precision: ``"auto"`` (bf16 autocast where the device runs it natively), ``"bf16"`` or ``"fp32"``.
        device: Torch device; defaults to CUDA when available, else CPU.
        blend: ``"cosine"`` (smooth window, default) or ``"uniform"`` (plain averaging).
        cog: Write a Cloud-Optimized GeoTIFF (with overviews) instead of a plain tiled GeoTIFF.
        channels_last: Run the model in the channels-last memory format.
        progress: Show a tqdm progress bar over tiles.
        gdal_cache_mb: GDAL block cache limit while reading/writing (keeps memory flat for huge scenes).

    Returns:
        A :class:`ScenePrediction` summary.

    On a CPU under Linux/glibc, freed blocks of up to 64 MiB are kept on the heap for reuse while the
    scene runs (fresh mappings of the model's large activations each batch cost ~18 % here, see
    :func:`di3cl_hf.memory.reuse_large_allocations`); glibc's usual settings are restored afterwards.

    Raises:
        ValueError: Bad arguments, or a file that cannot be read as a SAR scene.
        FileNotFoundError: The input does not exist.
    """
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    weights_1d = blend_weights(tile_size, overlap, blend)
    device = torch.device(device) if device is not None else _default_device()
    autocast_dtype = resolve_autocast_dtype(precision, device)
    if processor is None:
        from ..image_processing_di3cl import DI3CLImageProcessor

        processor = DI3CLImageProcessor(num_channels=_model_channels(model, None))
    channels = _model_channels(model, processor)
    model.eval().to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    num_labels = _num_labels(model, channels, device)
    if output_type == "classes" and num_labels > OUTPUT_NODATA:
        raise ValueError(f"{num_labels} classes do not fit a uint8 class map with nodata {OUTPUT_NODATA}")
    weights_2d = np.outer(weights_1d, weights_1d)
    runner = _TileRunner(model, device, autocast_dtype, weights_2d, channels_last)
    start = time.perf_counter()
    with (
        reuse_large_allocations(device.type == "cpu", max_block_mib=64),
        rasterio.Env(GDAL_CACHEMAX=int(gdal_cache_mb)),
        open_scene(input_path) as scene,
    ):
        preprocess = ScenePreprocessor(processor, scene, bands)
        height, width = scene.height, scene.width
        row_starts = tile_starts(height, tile_size, overlap)
        col_starts = tile_starts(width, tile_size, overlap)
        band_names = _class_names(model, num_labels) if output_type == "probabilities" else ["class"]
        with create_geotiff(
            output_path,
            height,
            width,
            count=len(band_names),
            dtype="uint8",
            crs=scene.crs,
            transform=scene.transform,
            nodata=OUTPUT_NODATA,
            cog=cog,
            band_names=band_names,
        ) as writer:
            blender = _TileBlender(
                writer=writer,
                height=height,
                width=width,
                tile_size=tile_size,
                row_starts=row_starts,
                col_starts=col_starts,
                num_labels=num_labels,
                output_type=output_type,
                weights_2d=weights_2d,
            )
            skipped = _run_tiles(blender, scene, preprocess, runner, batch_size, progress=progress)
    seconds = time.perf_counter() - start
    return ScenePrediction(
        path=Path(output_path),
        height=height,
        width=width,
        num_tiles=len(row_starts) * len(col_starts),
        tiles_skipped=skipped,
        seconds=seconds,
        autocast_dtype=str(autocast_dtype or torch.float32).replace("torch.", ""),
        input_kind=preprocess.input_kind,
    )


def argmax_planes(planes: np.ndarray) -> np.ndarray:
    """``argmax(planes, axis=0)`` as uint8 for ``[K, H, W]`` float planes (K <= 255), first maximum on ties.

    A running maximum over whole planes: ~5x faster than numpy's argmax over the class axis (which
    runs one tiny reduction per pixel). NaN never wins (numpy's argmax would pick it).
    """
    best = planes[0].copy()
    index = np.zeros(best.shape, dtype=np.uint8)
    greater = np.empty(best.shape, dtype=bool)
    candidate = np.empty(best.shape, dtype=np.uint8)
    for k in range(1, planes.shape[0]):
        np.greater(planes[k], best, out=greater)
        np.maximum(best, planes[k], out=best)
        # indices only grow with k: "k where greater, else keep" is a maximum with k * greater
        np.multiply(greater.view(np.uint8), np.uint8(k), out=candidate)
        np.maximum(index, candidate, out=index)
    return index


class _TileBlender:
    """Accumulates weighted tile logits in row-major tile order and writes finished pixels.

    Tiles arrive row of tiles by row of tiles, left to right. When tile ``c`` of a row has been added,
    no later tile of that row reaches the columns left of tile ``c + 1``: those columns of the rows
    that the next row of tiles does not cover are final and written out at once; the rows it does
    cover go into the carry band. Sums are made in place in each tile's own logits ``[K, T, T]``
    (handed over by the runner, one plane per class); what persists between tiles is small
    (K = classes, T = tile size, W = scene width):

    - ``left``/``left_weight``: ``[K, T, ~overlap]``/``[T, ~overlap]``, the sums of the columns the
      next tile of the row overlaps;
    - ``carry``/``carry_weight``: ``[K, ~overlap, W]``/``[~overlap, W]``, the sums of the rows the next
      row of tiles overlaps, added in when that row's columns are flushed.

    Memory is therefore independent of the scene height, and grows with its width only through the
    thin carry band.
    """

    def __init__(
        self,
        writer: Any,
        height: int,
        width: int,
        tile_size: int,
        row_starts: list[int],
        col_starts: list[int],
        num_labels: int,
        output_type: str,
        weights_2d: np.ndarray,
    ) -> None:
        self.writer = writer
        self.weights_2d = weights_2d
        self.height, self.width, self.tile = height, width, tile_size
        self.row_starts, self.col_starts = row_starts, col_starts
        self.num_labels = num_labels
        self.output_type = output_type

        def overlaps(starts: list[int], length: int) -> int:
            return max(
                (min(length, s + tile_size) - starts[i + 1] for i, s in enumerate(starts[:-1])), default=0
            )

        rows, left_cols = min(tile_size, height), overlaps(col_starts, width)
        carry_rows = overlaps(row_starts, height)
        self.left = np.zeros((num_labels, rows, left_cols), dtype=np.float32)
        self.left_weight = np.zeros((rows, left_cols), dtype=np.float32)
        self.carry = np.zeros((num_labels, carry_rows, width), dtype=np.float32)
        self.carry_weight = np.zeros((carry_rows, width), dtype=np.float32)
        self.kept = 0  # leading columns of ``left`` holding sums of earlier tiles
        self.carry_rows = 0  # rows of ``carry`` in use (they start at the current row of tiles' first row)

    def tiles(self) -> list[_Tile]:
        """All tiles in the order :meth:`add` expects them."""
        return [
            _Tile(r, c, Window(x, y, min(self.tile, self.width - x), min(self.tile, self.height - y)))
            for r, y in enumerate(self.row_starts)
            for c, x in enumerate(self.col_starts)
        ]

    def add(self, tile: _Tile, logits: np.ndarray | None, valid: np.ndarray) -> None:
        """Add one tile's weighted logits ``[K, T, T]`` (``None``: skipped, all nodata); they are
        summed into in place."""
        rows, cols = tile.window.height, tile.window.width
        if logits is None:
            acc = np.zeros((self.num_labels, rows, cols), dtype=np.float32)
            weight = np.zeros((rows, cols), dtype=np.float32)
        else:
            acc = logits[:, :rows, :cols]
            weight = self.weights_2d[:rows, :cols].copy()
        kept = min(self.kept, cols)  # columns the previous tile of this row also covered
        if kept:
            acc[:, :, :kept] += self.left[:, :rows, :kept]
            weight[:, :kept] += self.left_weight[:rows, :kept]
        x0 = tile.window.col_off
        x1 = self.col_starts[tile.col + 1] if tile.col + 1 < len(self.col_starts) else self.width
        self._flush(tile.row, x0, x1, acc, weight, valid)

    def _flush(
        self, row: int, x0: int, x1: int, acc: np.ndarray, weight: np.ndarray, valid: np.ndarray
    ) -> None:
        """Write columns ``[x0, x1)`` of the finished rows of this row of tiles; carry the overlap rows
        and keep the overlap columns."""
        width, (rows, span) = x1 - x0, weight.shape
        y = self.row_starts[row]
        next_y = self.row_starts[row + 1] if row + 1 < len(self.row_starts) else self.height
        final = next_y - y
        done, done_weight = acc[:, :, :width], weight[:, :width]
        if self.carry_rows:
            done[:, : self.carry_rows] += self.carry[:, : self.carry_rows, x0:x1]
            done_weight[: self.carry_rows] += self.carry_weight[: self.carry_rows, x0:x1]
        # a pixel valid in the scene is covered by no skipped (all-nodata) tile: its weight is > 0
        valid = valid[:final, :width]
        if self.output_type == "classes":
            # the weight is a positive factor per pixel: the argmax needs no division. numpy runs on
            # this (writer) thread alone; torch would start a second OpenMP team competing with the
            # model's for the same cores
            out = argmax_planes(done[:, :final])[None]
        else:
            logits = done[:, :final] / np.maximum(done_weight[:final], 1e-12)
            logits -= logits.max(axis=0)
            probabilities = np.exp(logits, out=logits)
            probabilities /= probabilities.sum(axis=0)
            out = np.rint(probabilities * PROBABILITY_SCALE).astype(np.uint8)
        if not valid.all():
            out[:, ~valid] = OUTPUT_NODATA
        self.writer.write(out, Window(x0, y, width, final))
        carried = rows - final
        if carried > 0:
            self.carry[:, :carried, x0:x1] = done[:, final:rows]
            self.carry_weight[:carried, x0:x1] = done_weight[final:rows]
        keep = span - width  # what the next tile of this row adds to
        self.left[:, :rows, :keep] = acc[:, :, width:span]
        self.left_weight[:rows, :keep] = weight[:, width:span]
        self.kept = keep
        if x1 == self.width:  # row of tiles finished: the carry now starts at the next row's first row
            self.carry_rows = max(carried, 0)


def _run_tiles(
    blender: _TileBlender,
    scene: Any,
    preprocess: ScenePreprocessor,
    runner: _TileRunner,
    batch_size: int,
    progress: bool = True,
) -> int:
    """Read, predict and blend every tile (batches may span rows of tiles); returns the skipped count."""
    tiles = blender.tiles()
    batches = [tiles[i : i + batch_size] for i in range(0, len(tiles), batch_size)]
    tile_size, bands = blender.tile, preprocess.bands

    def load(batch: list[_Tile]) -> list[tuple[np.ndarray, np.ndarray]]:
        loaded = []
        for tile in batch:
            raster = scene.read(tile.window, bands=bands)
            loaded.append(preprocess(raster.array, raster.valid_mask))
        return loaded

    def blend(batch: list[_Tile], loaded: list, results: list) -> None:
        for tile, (_, valid), logits in zip(batch, loaded, results):
            blender.add(tile, logits, valid)
        bar.update(len(batch))

    skipped = 0
    # Three stages overlap: a reader thread prefetches the next batch, the main thread runs the model,
    # a writer thread blends and writes the previous batch (GDAL, numpy and torch release the GIL).
    # At most one batch waits at each stage, so memory stays bounded.
    with (
        tqdm(total=len(tiles), unit="tile", disable=not progress) as bar,
        ThreadPoolExecutor(max_workers=1) as reader,
        ThreadPoolExecutor(max_workers=1) as writer,
    ):
        pending = reader.submit(load, batches[0])
        blending = None
        for index, batch in enumerate(batches):
            loaded = pending.result()
            if index + 1 < len(batches):
                pending = reader.submit(load, batches[index + 1])
            wanted = [i for i, (_, valid) in enumerate(loaded) if valid.any()]
            results: list[np.ndarray | None] = [None] * len(batch)
            if wanted:
                channels = loaded[wanted[0]][0].shape[0]
                # built channels-last ([N, T, T, C], the model's memory format): one copy per tile, none
                # in torch; zeros only where a tile at the scene edge is smaller than the tile size
                stack = np.empty((len(wanted), tile_size, tile_size, channels), dtype=np.float32)
                for slot, i in enumerate(wanted):
                    pixel_values = loaded[i][0]
                    rows, cols = pixel_values.shape[1:]
                    if rows < tile_size or cols < tile_size:
                        stack[slot] = 0.0
                    stack[slot, :rows, :cols] = pixel_values.transpose(1, 2, 0)
                for slot, logits in zip(wanted, runner(torch.from_numpy(stack).permute(0, 3, 1, 2))):
                    results[slot] = logits
            if blending is not None:
                blending.result()  # raises what the writer raised
            blending = writer.submit(blend, batch, loaded, results)
            skipped += len(batch) - len(wanted)
        if blending is not None:
            blending.result()
    return skipped


# ------------------------------------------------------------------------------------ embeddings

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

    Each file is read with :func:`di3cl_hf.sario.read_sar` and converted by
    ``processor.sar_to_pixel_values`` (radiometry per patch); consecutive patches of equal size are
    batched.

    Args:
        model: A model returning ``last_hidden_state`` ``[B, D, h, w]`` and ``pooler_output`` ``[B, D]``
            (``DI3CLModel``, e.g. ``AutoModel.from_pretrained(folder)``).
        processor: A ``DI3CLImageProcessor``.
        paths: SAR patch files (GeoTIFF/TIFF, PNG/JPG, ``.npy``).
        pooling: ``"pooled"`` (float32 ``[D]`` per patch, the global average) or ``"dense"``
            (float32 ``[D, H/32, W/32]``).
        batch_size: Patches per forward pass.
        bands: 1-based bands to read (``None``: all, 1 or 2).
        precision: ``"auto"``, ``"bf16"`` or ``"fp32"`` (see :func:`resolve_autocast_dtype`).
        device: Torch device; defaults to CUDA when available, else CPU.
        progress: Show a tqdm progress bar.

    Returns:
        One float32 array per path, in order.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    device = torch.device(device) if device is not None else _default_device()
    autocast_dtype = resolve_autocast_dtype(precision, device)
    model.eval().to(device)
    features: list[np.ndarray] = []

    def run(batch: list[np.ndarray]) -> None:
        pixel_values = torch.from_numpy(np.stack(batch)).to(device)
        with torch.inference_mode():
            with torch.autocast(
                device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None
            ):
                output = model(pixel_values)
            if pooling == "pooled":
                values = output["pooler_output"] if isinstance(output, dict) else output.pooler_output
            else:
                values = output["last_hidden_state"] if isinstance(output, dict) else output.last_hidden_state
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


def save_embeddings(
    path: str | os.PathLike[str], embeddings: Sequence[np.ndarray], paths: Sequence[str | os.PathLike[str]]
) -> Path:
    """Write embeddings atomically to ``.npy`` or Parquet.

    ``.npy``: one float32 array ``[N, ...]`` (all embeddings must have one shape), plus
    ``<name>.files.txt`` beside it listing the source file of each row. ``.parquet``: columns
    ``path`` (string), ``embedding`` (float32 list, the flattened features) and ``shape`` (int list),
    readable with ``datasets.load_dataset("parquet", data_files=...)`` or pandas/pyarrow.

    Returns:
        ``path``.
    """
    path = Path(path)
    if path.suffix.lower() not in EMBEDDING_SUFFIXES:
        raise ValueError(
            f"{path}: unsupported output, expected a name ending in {' or '.join(EMBEDDING_SUFFIXES)}"
        )
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
            write_text(path.with_name(path.stem + ".files.txt"), "".join(f"{p}\n" for p in paths))
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

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


# -------------------------------------------------------------------------------------- loading


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def load_pretrained(
    model_ref: str,
    task: str = "segmentation",
    processor_overrides: dict[str, Any] | None = None,
    local_files_only: bool = False,
) -> tuple[torch.nn.Module, Any]:
    """Load a DI3CL model and its image processor from a local folder or a Hub id.

    A Hub id is resolved online unless ``HF_HUB_OFFLINE`` is set or ``local_files_only``; when the Hub
    cannot be reached, the local Hugging Face cache is used. Folders without a
    ``preprocessor_config.json`` get the default ``DI3CLImageProcessor`` for the model's channels.

    Args:
        model_ref: Folder written by ``save_pretrained`` or Hub id ``org/name``.
        task: ``"segmentation"`` (``AutoModelForSemanticSegmentation``) or ``"features"``
            (``AutoModel``: the encoder, also from a segmentation or pre-training folder).
        processor_overrides: Processor settings to override (``input_kind``, ``db_range``,
            ``nodata_value``, ...).
        local_files_only: Never contact the Hub.

    Returns:
        ``(model, processor)``, the model in fp32 and eval mode.

    Raises:
        FileNotFoundError: Neither a folder nor a repository found online or in the cache.
    """
    from transformers import AutoModel, AutoModelForSemanticSegmentation

    from ..image_processing_di3cl import DI3CLImageProcessor

    if task not in ("segmentation", "features"):
        raise ValueError(f"task must be 'segmentation' or 'features', got {task!r}")
    auto_class = AutoModelForSemanticSegmentation if task == "segmentation" else AutoModel
    overrides = {k: v for k, v in (processor_overrides or {}).items() if v is not None}
    is_local = Path(model_ref).exists()
    if is_local and not Path(model_ref, "config.json").is_file():
        raise FileNotFoundError(f"{model_ref}: no config.json; expected a folder written by save_pretrained")
    offline = is_local or local_files_only or _offline()

    def load(cls: Any, local_only: bool, **kwargs: Any) -> Any:
        return cls.from_pretrained(model_ref, local_files_only=local_only, **kwargs)

    try:
        try:
            model = load(auto_class, offline, dtype=torch.float32)
        except OSError:
            if offline:
                raise
            warnings.warn(f"{model_ref}: Hub not reachable, using the local cache", stacklevel=2)
            offline = True
            model = load(auto_class, True, dtype=torch.float32)
    except OSError as error:
        where = "folder" if is_local else "Hub repository (online or in the local Hugging Face cache)"
        raise FileNotFoundError(
            f"{model_ref}: cannot load a DI3CL model from this {where}: {error}"
        ) from error
    try:
        processor = load(DI3CLImageProcessor, offline, **overrides)
    except OSError:
        warnings.warn(
            f"{model_ref}: no preprocessor_config.json; using the default DI3CLImageProcessor "
            f"(num_channels={model.config.num_channels}, dB range -30..5, auto radiometry)",
            stacklevel=2,
        )
        processor = DI3CLImageProcessor(num_channels=model.config.num_channels, **overrides)
    return model.eval(), processor


# ------------------------------------------------------------------------------------------- CLI

_SAR_HELP = """\
SAR input:
  files     GeoTIFF/TIFF (float32 dB, linear intensity or amplitude; int16/uint16 digital numbers;
            complex SLC), PNG/JPG (8-bit quick-looks) or .npy ([C, H, W] or [H, W]).
  bands     1 band (VV, or any single polarisation) or 2 bands (VV, VH in that order); pick them in
            files with more bands with --bands, e.g. --bands 1 2. A single band fed to a dual-pol
            model is replicated; a 2-band input to a single-pol model uses the first band.
  radiometry  --input-kind auto|db|intensity|amplitude|dn8|dn16|complex. "auto" (default, unless the
            model's processor declares one) decides once per file: complex -> complex, uint8 -> dn8,
            other integers -> dn16, floats with a negative median -> dB, other floats -> linear
            intensity. Amplitude cannot be told from intensity and must be declared.
  dB range  values are converted to dB, clipped to --db-range LOW HIGH (default: the model
            processor's, normally -30 5) and normalised with the processor's statistics.
  nodata    the file's nodata value, NaN/inf and the --nodata value are invalid; they are zero
            (the normalised mean) in the model input and 255 in predicted maps.
"""


def _add_sar_arguments(parser: argparse.ArgumentParser) -> None:
    from ..radiometry import RADIOMETRY_KINDS

    group = parser.add_argument_group("SAR input options (see below)")
    group.add_argument(
        "--bands", type=int, nargs="+", metavar="N", help="1-based bands to use, e.g. 1 2 (VV VH)"
    )
    group.add_argument(
        "--input-kind",
        choices=RADIOMETRY_KINDS,
        default=None,
        help="radiometric kind of the pixel values (default: the processor's, normally auto)",
    )
    group.add_argument(
        "--db-range", type=float, nargs=2, metavar=("LOW", "HIGH"), default=None, help="dB clipping range"
    )
    group.add_argument("--nodata", type=float, default=None, help="extra value marking missing pixels")


def _add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("runtime")
    group.add_argument("--batch-size", type=int, default=4, help="tiles/patches per forward pass (default 4)")
    group.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="bf16 autocast where supported (auto), or force",
    )
    group.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    group.add_argument("--local-files-only", action="store_true", help="never contact the Hub for MODEL")
    group.add_argument("--quiet", action="store_true", help="no progress bar")


def _processor_overrides(args: argparse.Namespace) -> dict[str, Any]:
    if args.db_range is not None and not args.db_range[0] < args.db_range[1]:
        raise ValueError(f"--db-range: LOW must be below HIGH, got {args.db_range}")
    return {"input_kind": args.input_kind, "db_range": args.db_range, "nodata_value": args.nodata}


def _run_predict(args: argparse.Namespace) -> int:
    model, processor = load_pretrained(
        args.model, "segmentation", _processor_overrides(args), local_files_only=args.local_files_only
    )
    result = predict_scene(
        model,
        args.input,
        args.output,
        processor,
        tile_size=args.tile_size,
        overlap=args.overlap,
        batch_size=args.batch_size,
        bands=args.bands,
        output_type=args.output_type,
        precision=args.precision,
        device=args.device,
        cog=not args.no_cog,
        progress=not args.quiet,
    )
    print(
        f"{result.path}: {result.height}x{result.width} px, {result.num_tiles} tiles "
        f"({result.tiles_skipped} all-nodata skipped), {result.seconds:.1f} s, "
        f"{result.megapixels_per_second:.2f} Mpx/s, {result.autocast_dtype}, input {result.input_kind}"
    )
    return 0


def _expand_inputs(inputs: Sequence[str]) -> list[Path]:
    from ..data.sario import list_sar_files

    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(list_sar_files(path))
        elif path.exists():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")
    if not files:
        raise ValueError(f"no SAR files found in {', '.join(inputs)}")
    return files


def _run_embed(args: argparse.Namespace) -> int:
    files = _expand_inputs(args.inputs)
    model, processor = load_pretrained(
        args.model, "features", _processor_overrides(args), local_files_only=args.local_files_only
    )
    embeddings = embed_files(
        model,
        processor,
        files,
        pooling=args.pooling,
        batch_size=args.batch_size,
        bands=args.bands,
        precision=args.precision,
        device=args.device,
        progress=not args.quiet,
    )
    save_embeddings(args.output, embeddings, files)
    print(f"{args.output}: {len(embeddings)} {args.pooling} embeddings of shape {tuple(embeddings[0].shape)}")
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``di3cl predict`` and ``di3cl embed`` to the ``di3cl`` command line."""
    formatter = argparse.RawDescriptionHelpFormatter
    predict = subparsers.add_parser(
        "predict",
        help="segment a whole SAR scene (any size) into a georeferenced GeoTIFF",
        description=(
            "Segment a SAR scene of any size tile by tile (overlapping tiles, smooth blending, bounded\n"
            "memory) and write a Cloud-Optimized GeoTIFF with the input's CRS and transform: a uint8 class\n"
            "map (default) or one uint8 band per class with round(p * 254); 255 is nodata.\n"
            "MODEL is a folder written by save_pretrained or a Hub id (from the local cache when offline)."
        ),
        epilog=_SAR_HELP
        + "\nexample:\n  di3cl predict outputs/water scene_vv_vh.tif water.tif --tile-size 512 --overlap 64\n",
        formatter_class=formatter,
    )
    predict.add_argument(
        "model", metavar="MODEL", help="model folder or Hub id (DI3CLForSemanticSegmentation)"
    )
    predict.add_argument("input", metavar="INPUT", help="SAR scene file")
    predict.add_argument("output", metavar="OUTPUT", help="GeoTIFF to write (appears only when complete)")
    predict.add_argument("--tile-size", type=int, default=512, help="tile size in pixels (default 512)")
    predict.add_argument(
        "--overlap", type=int, default=64, help="minimum tile overlap / blending ramp (default 64)"
    )
    predict.add_argument(
        "--output-type", choices=OUTPUT_TYPES, default="classes", help="class map (default) or probabilities"
    )
    predict.add_argument("--no-cog", action="store_true", help="plain tiled GeoTIFF instead of a COG")
    _add_sar_arguments(predict)
    _add_runtime_arguments(predict)
    predict.set_defaults(func=_run_predict)

    embed = subparsers.add_parser(
        "embed",
        help="encoder features of SAR patches to .npy or Parquet",
        description=(
            "Compute DI3CL encoder features of SAR patches: pooled ([D] per patch, the global average of\n"
            "the deepest map) or dense ([D, H/32, W/32]). Writes .npy (plus NAME.files.txt listing the rows)\n"
            "or .parquet (columns path, embedding, shape). MODEL is any DI3CL folder or Hub id."
        ),
        epilog=_SAR_HELP + "\nexample:\n  di3cl embed outputs/pretrain patches/ --output features.parquet\n",
        formatter_class=formatter,
    )
    embed.add_argument("model", metavar="MODEL", help="model folder or Hub id (any DI3CL checkpoint)")
    embed.add_argument("inputs", metavar="INPUT", nargs="+", help="SAR patch files or folders of them")
    embed.add_argument("--output", "-o", required=True, help="output file ending in .npy or .parquet")
    embed.add_argument(
        "--pooling", choices=POOLINGS, default="pooled", help="pooled (default) or dense features"
    )
    _add_sar_arguments(embed)
    _add_runtime_arguments(embed)
    embed.set_defaults(func=_run_embed)


__all__ = [
    "BLEND_MODES",
    "OUTPUT_NODATA",
    "OUTPUT_TYPES",
    "POOLINGS",
    "PRECISIONS",
    "PROBABILITY_SCALE",
    "ScenePrediction",
    "ScenePreprocessor",
    "blend_weights",
    "embed_files",
    "load_pretrained",
    "predict_scene",
    "register_cli",
    "resolve_autocast_dtype",
    "save_embeddings",
    "tile_starts",
]
