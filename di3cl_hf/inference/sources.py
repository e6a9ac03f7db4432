"""Scene sources of :func:`di3cl_hf.inference.scene.predict_scene`: anything it can read window by window.

A source is one of:

- a path (``str`` / ``os.PathLike``): a GeoTIFF/TIFF, PNG/JPG or ``.npy`` file, opened with
  :func:`di3cl_hf.data.sario.open_scene`;
- a sequence of paths: one single-band file per polarisation (``{id}_vv.tif``, ``{id}_vh.tif``, see
  :mod:`di3cl_hf.data.polarisation`), stacked band by band as :func:`~di3cl_hf.data.polarisation.read_sample`
  stacks them, but window by window (the files stay open, nothing is read whole);
- a :class:`~di3cl_hf.data.polarisation.SampleFiles` (its ``files``);
- an open rasterio dataset (``rasterio.open(...)`` or a ``MemoryFile`` dataset): read through the same
  code as a file (nodata, mask band, NaN), never closed here;
- an in-memory :class:`~di3cl_hf.data.sario.SARRaster` (array ``[C, H, W]``, valid mask, transform,
  CRS, nodata): windows are views of its array; pixels equal to its ``nodata`` or not finite are
  invalid as in a file.

:func:`open_source` turns any of them into a scene object with the interface predict_scene uses
(``height``, ``width``, ``crs``, ``transform``, ``read(window, bands=...) -> SARRaster``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio.io import DatasetReaderBase
from rasterio.windows import Window

from ..data.georef import window_gcps
from ..data.polarisation import SampleFiles, polarisation_of
from ..data.sario import (
    MAX_BANDS,
    SARFileError,
    SARRaster,
    SARScene,
    WindowLike,
    as_window,
    band_indexes,
    check_window,
    open_scene,
)

SceneSource = str | os.PathLike | Sequence | SampleFiles | DatasetReaderBase | SARRaster
"""What predict_scene reads (see the module docstring)."""


def _window_of(window: WindowLike | None, height: int, width: int, where: str) -> Window:
    """The window (whole raster for ``None``), checked with the file readers' own bounds check."""
    win = as_window(window)
    if win is None:
        return Window(0, 0, width, height)
    win = Window(
        int(round(win.col_off)), int(round(win.row_off)), int(round(win.width)), int(round(win.height))
    )
    check_window(Path(where), win, height, width)
    return win


class RasterScene:
    """A :class:`SARRaster` held in memory, read window by window like a file (windows are views)."""

    def __init__(self, raster: SARRaster) -> None:
        array = np.asarray(raster.array)
        if array.ndim == 2:
            array = array[None]
        if array.ndim != 3 or 0 in array.shape:
            raise SARFileError(f"in-memory raster: array of shape {array.shape}, expected [C, H, W]")
        self.raster = raster
        self.array = array
        self.count, self.height, self.width = (int(n) for n in array.shape)
        mask = raster.valid_mask
        self.valid_mask = np.ones((self.height, self.width), bool) if mask is None else np.asarray(mask, bool)
        if self.valid_mask.shape != (self.height, self.width):
            raise SARFileError(
                f"in-memory raster: valid_mask of shape {self.valid_mask.shape}, expected {(self.height, self.width)}"
            )
        self.crs, self.transform, self.nodata = raster.crs, raster.transform, raster.nodata
        self.gcps = getattr(raster, "gcps", None)
        self.path = Path(raster.path) if raster.path is not None else Path("<in-memory raster>")
        self.band_names = tuple(raster.band_names) or (None,) * self.count

    def read(
        self,
        window: WindowLike | None = None,
        bands: Sequence[int | str] | None = None,
        boundless: bool = False,
        max_bands: int | None = MAX_BANDS,
    ) -> SARRaster:
        """The window ``[C, h, w]`` (a view) with its validity: the raster's mask, finite, not nodata."""
        if boundless:
            raise ValueError("boundless reads are not supported on an in-memory raster")
        where = str(self.path)
        indexes = [b - 1 for b in band_indexes(Path(where), self.count, bands, max_bands, self.band_names)]
        win = _window_of(window, self.height, self.width, where)
        rows = slice(win.row_off, win.row_off + win.height)
        cols = slice(win.col_off, win.col_off + win.width)
        array = self.array[indexes, rows, cols]
        valid = self.valid_mask[rows, cols].copy()
        if array.dtype.kind in "fc":
            valid &= np.isfinite(array).all(axis=0)
        nodata = self.nodata
        if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)):
            valid &= (array != np.asarray(nodata).astype(array.dtype)).all(axis=0)
        transform = None
        if self.transform is not None:
            transform = self.transform @ Affine.translation(win.col_off, win.row_off)
        names = tuple(self.band_names[i] for i in indexes)
        return SARRaster(
            array, valid, self.crs, transform, nodata, self.path, names, window_gcps(self.gcps, win)
        )

    def close(self) -> None:
        """Nothing to close (the caller owns the raster)."""


class DatasetScene(SARScene):
    """An open rasterio dataset read through :class:`SARScene`'s own code; the caller keeps it open.

    Only the opening differs from a path (the dataset is given, not opened); the reads (nodata, mask
    band, NaN, complex data, quick-looks) are :class:`SARScene`'s, so a dataset and its file give the
    same pixels and validity.
    """

    def __init__(self, dataset: DatasetReaderBase) -> None:  # noqa: D107 (the attributes of SARScene)
        if dataset.closed:
            raise ValueError(f"{dataset.name}: the rasterio dataset is closed")
        self.path = Path(dataset.name)
        self._dataset = dataset
        self._array = None
        self._npy_shape = None
        self._take_header(dataset)  # the same header reading as a path

    def close(self) -> None:
        """Leave the dataset open: it belongs to the caller."""
        self._dataset = None


class StackedScene:
    """One single-band file per polarisation, stacked as bands (VV, VH, ...) window by window.

    The files must share size, CRS and transform (as :func:`~di3cl_hf.data.polarisation.read_sample`
    requires); a window's validity is the AND of the files' validity.
    """

    def __init__(self, files: Sequence[str | os.PathLike[str]]) -> None:
        self.files = [Path(f) for f in files]
        self._scenes: list[SARScene] = []
        try:
            for file in self.files:
                self._scenes.append(open_scene(file))
            first = self._scenes[0]
            for scene in self._scenes:
                if scene.count != 1:
                    raise SARFileError(
                        f"{scene.path}: {scene.count} bands, expected one band per polarisation file"
                    )
                if (scene.height, scene.width, scene.crs, scene.transform) != (
                    first.height,
                    first.width,
                    first.crs,
                    first.transform,
                ):
                    raise SARFileError(
                        f"{first.path}: not on the grid of {scene.path.name} (size {first.height}x{first.width} "
                        f"vs {scene.height}x{scene.width}, or a different CRS / transform); the files of one "
                        "sample must align"
                    )
        except BaseException:
            self.close()
            raise
        self.path = first.path
        self.count, self.height, self.width = len(self._scenes), first.height, first.width
        self.crs, self.transform, self.nodata = first.crs, first.transform, first.nodata
        self.gcps = first.gcps
        self.band_names = tuple((polarisation_of(f) or ("", None))[1] for f in self.files)

    def read(
        self,
        window: WindowLike | None = None,
        bands: Sequence[int | str] | None = None,
        boundless: bool = False,
        max_bands: int | None = MAX_BANDS,
    ) -> SARRaster:
        """The stacked window: band ``i`` from file ``i`` (only the files of the chosen ``bands`` are read)."""
        indexes = [b - 1 for b in band_indexes(self.path, self.count, bands, max_bands, self.band_names)]
        parts = [self._scenes[i].read(window, boundless=boundless, max_bands=None) for i in indexes]
        dtype = np.result_type(*[p.array for p in parts])
        array = np.concatenate([p.array.astype(dtype, copy=False) for p in parts])
        valid = np.logical_and.reduce([p.valid_mask for p in parts])
        names = tuple(self.band_names[i] for i in indexes)
        return SARRaster(
            array, valid, self.crs, parts[0].transform, self.nodata, self.path, names, parts[0].gcps
        )

    def close(self) -> None:
        """Close every file."""
        for scene in self._scenes:
            scene.close()
        self._scenes = []


def source_files(source: Any) -> list[Path]:
    """The files a source reads (for the output checks: an output must never be one of them)."""
    if isinstance(source, (str, os.PathLike)):
        return [Path(source)]
    if isinstance(source, SampleFiles):
        return list(source.files)
    if isinstance(source, DatasetReaderBase):
        return [Path(source.name)] if Path(source.name).exists() else []
    if isinstance(source, SARRaster):
        return [Path(source.path)] if source.path is not None and Path(source.path).exists() else []
    if isinstance(source, Sequence):
        return [Path(f) for f in source]
    return []


@contextlib.contextmanager
def open_source(source: Any) -> Iterator[Any]:
    """A scene object for ``source`` (see the module docstring), closed (or left open) as it should be."""
    if isinstance(source, SARRaster):
        scene: Any = RasterScene(source)
    elif isinstance(source, DatasetReaderBase):
        scene = DatasetScene(source)
    elif isinstance(source, (str, os.PathLike)):
        scene = open_scene(source)
    else:
        files = (
            list(source.files if isinstance(source, SampleFiles) else source)
            if isinstance(source, Iterable)
            else []
        )
        if not files or not all(isinstance(f, (str, os.PathLike)) for f in files):
            raise TypeError(
                "predict_scene reads a path, a list of per-polarisation paths, SampleFiles, an open rasterio "
                f"dataset or a SARRaster; got {type(source).__name__}"
            )
        scene = open_scene(files[0]) if len(files) == 1 else StackedScene(files)
    try:
        yield scene
    finally:
        scene.close()


__all__ = ["DatasetScene", "RasterScene", "SceneSource", "StackedScene", "open_source", "source_files"]
