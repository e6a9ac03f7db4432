"""Scene inference: tiled, georeferenced prediction on whole SAR scenes.

:func:`predict_scene` segments a SAR scene of any size with bounded memory:

1. The scene is read window by window (:func:`di3cl_hf.data.sario.open_scene`), never whole.
2. Overlapping square tiles (``tile_size``, at least ``overlap`` pixels shared with each neighbour,
   spread evenly so every tile lies inside the scene) are batched through the model under
   ``torch.inference_mode`` with bf16 autocast where the device runs it natively
   (:func:`di3cl_hf.runtime.resolve_precision`).
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
   complete (:func:`di3cl_hf.data.sario.create_geotiff`), so an interrupted run (an error, Ctrl-C or
   SIGTERM) leaves nothing under the target name and no temporary file. Input nodata pixels stay
   nodata (255) in the output.

Sources and sinks: the scene may be a path, per-polarisation files, an open rasterio dataset or an
in-memory :class:`~di3cl_hf.data.sario.SARRaster` (:mod:`di3cl_hf.inference.sources`); without an output
path the uint8 bands are returned in :attr:`ScenePrediction.array` (bit for bit the file's values).

The output path is checked before anything is computed (:mod:`di3cl_hf.inference.outputs`): never the
input (also through a link), an existing file only with ``overwrite=True``, a writable folder.

Radiometry is resolved once per scene: the ``"auto"`` kind and percentile clipping bounds are
computed from a grid of sample windows spread over the scene, then applied to every tile, so that a
tile of open water cannot be read as a different radiometric kind than its neighbours.

Patch embeddings are in :mod:`di3cl_hf.inference.embeddings`; the ``di3cl predict`` / ``di3cl embed``
commands in :mod:`di3cl_hf.cli.predict`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from rasterio.windows import Window
from tqdm.auto import tqdm

from ..data.sario import create_geotiff
from ..image_processing_di3cl import DI3CLImageProcessor
from ..loading import check_channels
from ..memory import reuse_large_allocations
from ..radiometry import resolve_kind
from ..runtime import StopSignal, autocast_dtype, default_device, resolve_precision
from .blending import (
    BLEND_MODES,
    MIN_TILE_SIZE,
    OUTPUT_NODATA,
    PROBABILITY_SCALE,
    STRIDE,
    _Tile,
    _TileBlender,
    _weighted_region,
    argmax_planes,
    blend_weights,
    check_tiling,
    scene_tiling,
    tile_starts,
)
from .outputs import check_output_path
from .sources import SceneSource, open_source, source_files

OUTPUT_TYPES = ("classes", "probabilities")
_SAMPLE_WINDOW = 64
_SAMPLE_GRID = 8


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


def _processor_bands(processor: Any, scene: Any) -> list[int | str] | None:
    """The processor's saved band choice for ``scene``: names need the file's band descriptions; a file
    without them that already holds exactly that many bands is taken as the chosen bands (as the processor does)."""
    bands = getattr(processor, "bands", None)
    if not bands:
        return None
    names_known = any(name for name in getattr(scene, "band_names", ()))
    if all(isinstance(band, int) for band in bands) or names_known:
        return list(bands)
    return list(range(1, scene.count + 1)) if scene.count == len(bands) else list(bands)


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
        bands: 1-based bands or band names to read, e.g. ``bands=(1, 2)`` or ``("VV", "VH")``
            (``None``: the processor's ``bands`` when it has them, else all, 1 or 2).
    """

    def __init__(self, processor: Any, scene: Any, bands: Sequence[int | str] | None = None) -> None:
        self.processor = processor
        self.bands = list(bands) if bands is not None else _processor_bands(processor, scene)
        samples = [
            scene.read(window, bands=self.bands) for window in _sample_windows(scene.height, scene.width)
        ]
        arrays = np.concatenate([s.array.reshape(s.array.shape[0], 1, -1) for s in samples], axis=2)
        valid = np.concatenate([s.valid_mask.reshape(1, -1) for s in samples], axis=1)
        kind = getattr(processor, "input_kind", "auto")
        if kind == "auto":
            kind = resolve_kind(arrays, "auto", valid)
        self.input_kind = kind
        db, db_valid = processor.sar_to_db(arrays, valid, input_kind=kind)
        self.low, self.high = processor.clip_bounds(db, db_valid)
        self._normalise = self._numpy_normalisation(processor, db.shape[0])

    def _numpy_normalisation(self, processor: Any, channels: int) -> tuple[np.ndarray, ...] | None:
        """Per-channel float32 ``(low, high, high - low, mean, std)`` ``[C, 1, 1]`` for the numpy
        twin of ``DI3CLImageProcessor.db_to_pixel_values`` (the same float32 operations in the same
        order, so the same values), or ``None`` for another processor (its own method is used)."""
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
    """What :func:`predict_scene` did (and, without an output path, what it predicted).

    Attributes:
        path: The written GeoTIFF, or ``None`` when the prediction was returned in memory.
        height: Scene rows.
        width: Scene columns.
        num_tiles: Tiles in the grid.
        tiles_skipped: Tiles without any valid pixel (not run through the model).
        seconds: Wall time.
        autocast_dtype: ``"bfloat16"``, ``"float16"`` or ``"float32"``.
        input_kind: The radiometric kind used for the scene.
        array: Without an output path: the uint8 bands the GeoTIFF would hold, ``[1, H, W]`` class
            indices or ``[K, H, W]`` ``round(p * 254)``, 255 = nodata (the same values, bit for bit).
        output_type: ``"classes"`` or ``"probabilities"``.
        crs: The scene's CRS (``None`` when not georeferenced).
        transform: The scene's affine transform (``None`` when not georeferenced).
        gcps: The scene's ground control points ``(points, crs)`` when it is georeferenced by GCPs only
            (Sentinel-1 GRD), else ``None``.
    """

    path: Path | None
    height: int
    width: int
    num_tiles: int
    tiles_skipped: int
    seconds: float
    autocast_dtype: str
    input_kind: str
    array: np.ndarray | None = None
    output_type: str = "classes"
    crs: Any = None
    transform: Any = None
    gcps: Any = None

    @property
    def classes(self) -> np.ndarray | None:
        """The in-memory class map ``[H, W]`` uint8 (255 = nodata); for a probabilities output the
        argmax of the rounded probabilities (first class on ties). ``None`` when written to a file."""
        if self.array is None:
            return None
        if self.output_type == "classes":
            return self.array[0]
        classes = argmax_planes(self.array)
        classes[self.array[0] == OUTPUT_NODATA] = OUTPUT_NODATA
        return classes

    @property
    def probabilities(self) -> np.ndarray | None:
        """The in-memory probabilities ``[K, H, W]`` uint8 ``round(p * 254)`` (255 = nodata), or ``None``."""
        return self.array if self.output_type == "probabilities" else None

    @property
    def megapixels_per_second(self) -> float:
        """Scene pixels per second, in millions."""
        return self.height * self.width / 1e6 / max(self.seconds, 1e-9)


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
        # On CUDA the tiles go through one page-locked (pinned) host buffer: a copy from pageable memory
        # is staged by the driver and never overlaps anything, so ``non_blocking`` would do nothing.
        # Reusing it is safe: the result's synchronous device-to-host copy at the end of each call
        # follows the upload on the same stream, so the upload is finished when the call returns.
        self.pin_memory = device.type == "cuda"
        self._pinned: torch.Tensor | None = None

    def _upload(self, batch: torch.Tensor) -> torch.Tensor:
        """``batch`` on the device; through the pinned buffer (same memory format) on CUDA."""
        if not self.pin_memory:
            return batch.to(self.device, non_blocking=True)
        n, c, h, w = batch.shape
        pinned = self._pinned
        if pinned is None or pinned.shape[1:] != batch.shape[1:] or pinned.shape[0] < n:
            # channels-last storage ([N, H, W, C]) like the stack the scene loop builds: a plain copy
            pinned = torch.empty((n, h, w, c), dtype=batch.dtype, pin_memory=True).permute(0, 3, 1, 2)
            self._pinned = pinned
        staged = pinned[:n]
        staged.copy_(batch)
        return staged.to(self.device, non_blocking=True)

    def _host_buffer(self, shape: torch.Size) -> torch.Tensor:
        """The next float32 host buffer of the ring, ``[N, K, T, T]`` (grown when too small)."""
        slot = self._calls % len(self._ring)
        self._calls += 1
        buffer = self._ring[slot]
        if buffer is None or buffer.shape[1:] != shape[1:] or buffer.shape[0] < shape[0]:
            buffer = self._ring[slot] = torch.empty(shape, dtype=torch.float32, pin_memory=self.pin_memory)
        return buffer[: shape[0]]

    def _weigh(self, logits: torch.Tensor) -> None:
        if logits.shape[-2:] == self.weights.shape:
            for rows, cols in self.ramps:
                logits[..., rows, cols].mul_(self.weights[rows, cols])
        else:  # a scene smaller than the tile along an axis: its one tile there is shorter
            logits.mul_(self.weights[: logits.shape[-2], : logits.shape[-1]])

    def __call__(self, tiles: np.ndarray | torch.Tensor) -> np.ndarray:
        """``tiles`` float32 [N, C, T, T] (numpy, or a tensor in any memory format) -> weighted logits
        float32 [N, K, T, T] (numpy, one plane per class)."""
        batch = torch.from_numpy(tiles) if isinstance(tiles, np.ndarray) else tiles
        batch = self._upload(batch).contiguous(memory_format=self.memory_format)
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


@dataclass(frozen=True, kw_only=True)
class SceneOptions:
    """How :func:`predict_scene` cuts, runs and writes a scene (``di3cl predict``'s flags of the same names).

    Attributes:
        tile_size: Tile height and width fed to the model (a multiple of 32 for DI3CL models; at least 32). A
            scene smaller than a tile is predicted at its own size, padded (by reflection) only up to a
            multiple of 32 (:func:`scene_tiling`), so its map does not depend on how much larger the tile is.
        overlap: Minimum overlap between neighbouring tiles, also the length of the blending ramp.
        batch_size: Tiles per forward pass.
        bands: Bands of the input to use (1-based indexes or names), e.g. ``(1, 2)`` or ``("VV", "VH")``.
        output_type: ``"classes"`` (uint8 class indices, one band) or ``"probabilities"`` (one uint8
            band per class, ``round(p * 254)``); 255 is nodata in both.
        precision: One of :data:`di3cl_hf.runtime.PRECISIONS`: ``"auto"`` (bf16 autocast where the
            device runs it natively, else fp32), ``"bf16"``, ``"fp16"`` or ``"fp32"``.
        device: Torch device; defaults to CUDA when available, else CPU.
        blend: ``"cosine"`` (smooth window, default) or ``"uniform"`` (plain averaging).
        cog: Write a Cloud-Optimized GeoTIFF (with overviews) instead of a plain tiled GeoTIFF.
        channels_last: Run the model in the channels-last memory format.
        progress: Show a tqdm progress bar over tiles.
        gdal_cache_mb: GDAL block cache limit while reading/writing (keeps memory flat for huge scenes).
    """

    tile_size: int = 512
    overlap: int = 64
    batch_size: int = 4
    bands: Sequence[int | str] | None = None
    output_type: str = "classes"
    precision: str = "auto"
    device: str | torch.device | None = None
    blend: str = "cosine"
    cog: bool = True
    channels_last: bool = True
    progress: bool = True
    gdal_cache_mb: int = 64

    def updated(self, **changes: Any) -> SceneOptions:
        """A copy with ``changes``; an unknown name is a ``TypeError`` naming it and the known ones."""
        unknown = sorted(set(changes) - {item.name for item in fields(self)})
        if unknown:
            names = ", ".join(item.name for item in fields(self))
            raise TypeError(f"predict_scene: unknown option(s) {', '.join(unknown)}; the options are {names}")
        return replace(self, **changes) if changes else self


def predict_scene(
    model: torch.nn.Module,
    source: SceneSource,
    output_path: str | os.PathLike[str] | None = None,
    processor: Any = None,
    *,
    options: SceneOptions | None = None,
    overwrite: bool = False,
    tags: dict[str, str] | None = None,
    **option_values: Any,
) -> ScenePrediction:
    """Segment a whole SAR scene tile by tile into a georeferenced GeoTIFF, or into arrays in memory.

    The model is any ``nn.Module`` mapping pixel values ``[B, C, T, T]`` to logits ``[B, K, h, w]``
    (a tensor, or an output with ``.logits`` such as ``SemanticSegmenterOutput``; logits at a lower
    resolution are upsampled bilinearly). It is put in eval mode and, with ``channels_last``,
    converted to the channels-last memory format (same values, faster convolutions on CPU).

    Example:
        >>> model, processor = load_model_and_processor("outputs/water")  # doctest: +SKIP
        >>> predict_scene(model, "scene.tif", "water.tif", processor, options=SceneOptions(tile_size=256))  # doctest: +SKIP
        >>> predict_scene(model, read_sar("scene.tif"), None, processor, overlap=32).classes  # doctest: +SKIP

    Args:
        model: The segmentation model.
        source: The SAR scene (1 or 2 bands, or ``bands``): a path (GeoTIFF/TIFF, PNG/JPG or ``.npy``), a list of
            single-band per-polarisation files (``[vv.tif, vh.tif]``), an open rasterio dataset (left open), or an
            in-memory :class:`~di3cl_hf.data.sario.SARRaster` (:mod:`di3cl_hf.inference.sources`).
        output_path: The GeoTIFF to write; it appears only once complete. Never the input; an existing file only
            with ``overwrite``; its folder must exist. Checked before computing. ``None``: the prediction is
            returned in ``ScenePrediction.array`` (the uint8 values the file would hold) with ``crs``/``transform``.
        processor: A ``DI3CLImageProcessor`` carrying the radiometry (kind, dB range, nodata value,
            normalisation). ``None`` builds the default one for ``model.config.num_channels``.
        options: How the scene is tiled, run and written (:class:`SceneOptions`; default: its defaults).
        overwrite: Replace an existing output.
        tags: GeoTIFF metadata tags of the output (what made the map, :mod:`di3cl_hf.inference.provenance`).
        **option_values: Fields of :class:`SceneOptions` given one by one (``tile_size=256``), over ``options``.

    On a CPU under Linux/glibc, freed blocks of up to 64 MiB stay on the heap for reuse while the scene runs
    (:func:`di3cl_hf.memory.reuse_large_allocations`). In the main thread, SIGTERM is handled like Ctrl-C
    (``KeyboardInterrupt``), so the temporary output is removed either way.

    Raises:
        ValueError: Bad options, a processor whose channels are not the model's, or an unreadable scene.
        OutputPathError: The output is the input, a directory, or in a missing / read-only folder
            (a ``ValueError``); ``OutputExistsError`` when it exists without ``overwrite``.
        FileNotFoundError: The input does not exist.
        TypeError: An unknown option name.
    """
    opts = (options or SceneOptions()).updated(**option_values)
    output_path = _check_request(source, output_path, opts, overwrite)
    device = torch.device(opts.device) if opts.device is not None else default_device()
    dtype = autocast_dtype(resolve_precision(opts.precision, device))
    processor, num_labels = _prepare_model(model, processor, device, opts.channels_last, opts.output_type)
    start = time.perf_counter()
    with (
        StopSignal(raise_on_signal=True, message="stopping, removing the unfinished output"),
        reuse_large_allocations(device.type == "cpu", max_block_mib=64),
        rasterio.Env(GDAL_CACHEMAX=int(opts.gdal_cache_mb)),
        open_source(source) as scene,
    ):
        run = _SceneRun(model, processor, output_path, opts, device, dtype, num_labels, tags, start)
        return _predict_open_scene(scene, run)


@dataclass
class _SceneRun:
    """The checked arguments of one :func:`predict_scene` call."""

    model: torch.nn.Module
    processor: Any
    output_path: Path | None
    opts: SceneOptions
    device: torch.device
    dtype: torch.dtype | None
    num_labels: int
    tags: dict[str, str] | None
    start: float


def _predict_open_scene(scene: Any, run: _SceneRun) -> ScenePrediction:
    """:func:`predict_scene` on an open scene, its arguments checked: tile, run, blend, write; the summary."""
    model, output_path, opts, dtype = run.model, run.output_path, run.opts, run.dtype
    preprocess = ScenePreprocessor(run.processor, scene, opts.bands)
    tile, tile_overlap = scene_tiling(scene.height, scene.width, opts.tile_size, opts.overlap)
    weights_1d = blend_weights(tile, tile_overlap, opts.blend)
    weights_2d = np.outer(weights_1d, weights_1d)
    runner = _TileRunner(model, run.device, dtype, weights_2d, opts.channels_last)
    layout = _Layout.for_scene(scene, model, tile, tile_overlap, weights_2d, run.num_labels, opts.output_type)
    sink = _ArraySink(scene, layout) if output_path is None else None
    skipped = _write_prediction(
        output_path, scene, preprocess, runner, layout, opts.batch_size, opts.cog, opts.progress, sink, run.tags
    )  # fmt: skip
    return ScenePrediction(
        path=output_path,
        height=scene.height,
        width=scene.width,
        num_tiles=len(layout.rows) * len(layout.cols),
        tiles_skipped=skipped,
        seconds=time.perf_counter() - run.start,
        autocast_dtype=str(dtype or torch.float32).replace("torch.", ""),
        input_kind=preprocess.input_kind,
        array=sink.array if sink is not None else None,
        output_type=opts.output_type,
        crs=scene.crs,
        transform=scene.transform,
        gcps=getattr(scene, "gcps", None),
    )


def _check_request(
    source: SceneSource,
    output_path: str | os.PathLike[str] | None,
    options: SceneOptions,
    overwrite: bool,
) -> Path | None:
    """Check :func:`predict_scene`'s options before any work; the checked output path (``None``: in memory)."""
    if options.output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {options.output_type!r}")
    check_tiling(options.tile_size, options.overlap, options.batch_size)
    checked = (
        None
        if output_path is None
        else check_output_path(output_path, source_files(source), overwrite=overwrite)
    )
    blend_weights(options.tile_size, options.overlap, options.blend)  # checks ``blend`` before any work
    return checked


def _prepare_model(
    model: torch.nn.Module, processor: Any, device: torch.device, channels_last: bool, output_type: str
) -> tuple[Any, int]:
    """Check the model against the processor and the output type, move it to ``device`` in eval mode;
    returns ``(processor, num_labels)`` (the default processor when ``processor`` is ``None``)."""
    if processor is None:
        processor = DI3CLImageProcessor(num_channels=_model_channels(model, None))
    check_channels(model, processor)
    channels = _model_channels(model, processor)
    model.eval().to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    num_labels = _num_labels(model, channels, device)
    if output_type == "classes" and num_labels > OUTPUT_NODATA:
        raise ValueError(f"{num_labels} classes do not fit a uint8 class map with nodata {OUTPUT_NODATA}")
    return processor, num_labels


@dataclass
class _Layout:
    """How a scene is cut and written: the tile grid, the blending window, the classes and output bands."""

    tile_size: int
    rows: list[int]  # tile offsets along the scene's rows (y)
    cols: list[int]  # tile offsets along its columns (x)
    weights_2d: np.ndarray
    num_labels: int
    output_type: str
    band_names: list[str]

    @classmethod
    def for_scene(
        cls,
        scene: Any,
        model: torch.nn.Module,
        tile_size: int,
        overlap: int,
        weights_2d: np.ndarray,
        num_labels: int,
        output_type: str,
    ) -> _Layout:
        """Tiles of ``tile_size`` covering ``scene`` with at least ``overlap`` between neighbours; one output band
        (``class``) or one per class (named from the model's ``id2label``) for ``probabilities``."""
        return cls(
            tile_size=tile_size,
            rows=tile_starts(scene.height, tile_size, overlap),
            cols=tile_starts(scene.width, tile_size, overlap),
            weights_2d=weights_2d,
            num_labels=num_labels,
            output_type=output_type,
            band_names=_class_names(model, num_labels) if output_type == "probabilities" else ["class"],
        )


class _ArraySink:
    """Where the blender writes when no output file is given: the uint8 bands ``[B, H, W]`` in memory."""

    def __init__(self, scene: Any, layout: _Layout) -> None:
        self.array = np.full((len(layout.band_names), scene.height, scene.width), OUTPUT_NODATA, np.uint8)

    def write(self, array: np.ndarray, window: Window) -> None:
        rows = slice(window.row_off, window.row_off + window.height)
        self.array[:, rows, window.col_off : window.col_off + window.width] = array

    def __enter__(self) -> _ArraySink:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _write_prediction(
    output_path: Path | None,
    scene: Any,
    preprocess: ScenePreprocessor,
    runner: _TileRunner,
    layout: _Layout,
    batch_size: int,
    cog: bool,
    progress: bool,
    sink: _ArraySink | None = None,
    tags: dict[str, str] | None = None,
) -> int:
    """Predict every tile of ``scene`` into the atomic GeoTIFF ``output_path`` (or into ``sink`` when it
    is given); returns the skipped tiles."""
    destination = (
        sink
        if sink is not None
        else create_geotiff(
            output_path,
            scene.height,
            scene.width,
            count=len(layout.band_names),
            dtype="uint8",
            crs=scene.crs,
            transform=scene.transform,
            nodata=OUTPUT_NODATA,
            cog=cog,
            band_names=layout.band_names,
            gcps=getattr(scene, "gcps", None),
            tags=tags,
        )
    )
    with destination as writer:
        blender = _TileBlender(
            writer=writer,
            height=scene.height,
            width=scene.width,
            tile_size=layout.tile_size,
            row_starts=layout.rows,
            col_starts=layout.cols,
            num_labels=layout.num_labels,
            output_type=layout.output_type,
            weights_2d=layout.weights_2d,
        )
        return _run_tiles(blender, scene, preprocess, runner, batch_size, progress=progress)


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
    bands = preprocess.bands
    # A tile is the tile size, or along an axis shorter than a tile the whole axis padded to the stride
    tile_rows, tile_cols = (
        min(blender.tile, STRIDE * math.ceil(length / STRIDE)) for length in (blender.height, blender.width)
    )

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
                # in torch; a tile shorter than the stack (a scene side not a multiple of 32) is padded by
                # reflection, so the network sees no artificial border
                stack = np.empty((len(wanted), tile_rows, tile_cols, channels), dtype=np.float32)
                for slot, i in enumerate(wanted):
                    pixel_values = loaded[i][0].transpose(1, 2, 0)
                    rows, cols = pixel_values.shape[:2]
                    if rows < tile_rows or cols < tile_cols:
                        pad = ((0, tile_rows - rows), (0, tile_cols - cols), (0, 0))
                        pixel_values = np.pad(pixel_values, pad, mode="symmetric")
                    stack[slot] = pixel_values
                for slot, logits in zip(wanted, runner(torch.from_numpy(stack).permute(0, 3, 1, 2))):
                    results[slot] = logits
            if blending is not None:
                blending.result()  # raises what the writer raised
            blending = writer.submit(blend, batch, loaded, results)
            skipped += len(batch) - len(wanted)
        if blending is not None:
            blending.result()
    return skipped


__all__ = [
    "BLEND_MODES",
    "MIN_TILE_SIZE",
    "OUTPUT_NODATA",
    "OUTPUT_TYPES",
    "PROBABILITY_SCALE",
    "SceneOptions",
    "ScenePrediction",
    "ScenePreprocessor",
    "argmax_planes",
    "blend_weights",
    "check_tiling",
    "predict_scene",
    "scene_tiling",
    "tile_starts",
]
