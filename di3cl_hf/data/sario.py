"""Reading and writing SAR rasters with rasterio.

Every reader returns a :class:`SARRaster`: the pixel array as ``[C, H, W]`` in the *source* dtype
(float32/float64 backscatter, int16/uint16/uint8 digital numbers, complex64 for single-look complex
data; GDAL's ``CInt16`` is read as complex64, which holds it exactly), a boolean validity mask
``[H, W]`` built from the nodata value, NaN/inf values and the dataset's own mask band, and the
georeferencing (CRS and affine transform) when the file has one.

Supported inputs: GeoTIFF/TIFF (any number of bands, e.g. VV, VV+VH, quad-pol HH/HV/VH/VV or a Pauli
RGB composite), PNG/JPG (8-bit quick-looks; alpha becomes the validity mask) and NumPy ``.npy`` arrays
(``[H, W]``, ``[C, H, W]`` or ``[H, W, C]``; the band axis is the short one).

**Band count.** Readers take ``max_bands``: by default (:data:`MAX_BANDS`, the model's VV/VH input) a
file with more bands must be read with ``bands=``; ``max_bands=None`` reads every band (the lossless
dataset builders do this: choosing bands is a training / inference decision). ``bands`` are 1-based
indexes (``bands=(1, 2)``) or names matched case-insensitively against the GeoTIFF band descriptions
(``bands=("VV", "VH")`` on a quad-pol HH, HV, VH, VV file); an explicit choice may name any number of
bands (e.g. ``bands=(1, 2, 3)`` of a Pauli RGB composite for a 3-channel model). In the
default mode an RGB(A) quick-look is reduced to one grey band (exact when R == G == B); with
``max_bands=None`` its colour bands are kept unless they are equal.

Problems with the *content* of a file (unreadable, empty, truncated, wrong band count, wrong array
shape) raise :class:`SARFileError`, a :class:`ValueError` whose message starts with the file path.
A missing file raises :class:`FileNotFoundError`.

Large scenes are read window by window through :func:`open_scene`; GeoTIFFs are written atomically
(temporary file in the target directory, then :func:`os.replace`) by :func:`write_geotiff`, or window
by window through :func:`create_geotiff` (both in :mod:`.geotiff`, re-exported here; the types every reader and
writer shares are in :mod:`.raster`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from .georef import dataset_gcps, window_gcps
from .geotiff import GeoTIFFWriter, create_geotiff, write_geotiff
from .raster import _GDAL_BLOCK_IO, SARFileError, SARRaster, WindowLike, _error, as_window, check_window

TIFF_SUFFIXES = (".tif", ".tiff", ".gtif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
NPY_SUFFIXES = (".npy",)
SUPPORTED_SUFFIXES = TIFF_SUFFIXES + IMAGE_SUFFIXES + NPY_SUFFIXES
MAX_BANDS = 2

_NPY_LAYOUTS = "expected [H, W], [C, H, W] or [H, W, C] (the band axis C shorter than H and W)"


def band_indexes(
    path: Path,
    count: int,
    bands: Sequence[int | str] | None,
    max_bands: int | None = MAX_BANDS,
    names: Sequence[str | None] = (),
) -> list[int]:
    """Return the 1-based band indexes to read, validating the band count (``max_bands=None``: any).

    ``bands`` may hold 1-based indexes or band names (matched case-insensitively against ``names``,
    the file's band descriptions); an explicit choice is not limited by ``max_bands``.
    """
    if bands is None:
        if count == 0:
            raise _error(path, "no bands")
        if max_bands is not None and count > max_bands:
            described = [n for n in names if n]
            by_name = f"by name (the file's bands: {', '.join(described)}) or " if described else ""
            raise _error(
                path,
                f"{count} bands, expected 1 or 2 (VV, VH); choose bands: {by_name}by 1-based index "
                "bands=(1, 2) in Python, --bands 1 2 on the command line",
            )
        return list(range(1, count + 1))
    if isinstance(bands, (str, int)):
        bands = [bands]
    if not list(bands):
        raise _error(path, "no bands requested")
    return [_band_index(path, count, band, names) for band in bands]


def _band_index(path: Path, count: int, band: int | str, names: Sequence[str | None]) -> int:
    """1-based index of ``band`` (an index, a digit string or a band name) in a file of ``count`` bands."""
    if isinstance(band, str) and band.strip().isdigit():
        band = int(band)
    if not isinstance(band, str):
        index = int(band)
        if not 1 <= index <= count:
            raise _error(
                path, f"band(s) [{index}] requested but the file has {count} band(s) (1-based indexes)"
            )
        return index
    lookup = {str(n).strip().lower(): i for i, n in enumerate(names, start=1) if n}
    if not lookup:
        raise _error(
            path,
            f"band {band!r} requested by name but the file has no band descriptions; "
            f"choose by 1-based index (1..{count})",
        )
    if band.strip().lower() not in lookup:
        available = ", ".join(f"{n} ({i})" for i, n in enumerate(names, start=1) if n)
        raise _error(path, f"no band named {band!r}; the file's bands are: {available}")
    return lookup[band.strip().lower()]


def _finite_mask(array: np.ndarray) -> np.ndarray:
    if np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.complexfloating):
        return np.isfinite(array).all(axis=0)
    return np.ones(array.shape[1:], dtype=bool)


def _nodata_mask(array: np.ndarray, nodata: float | None) -> np.ndarray:
    if nodata is None or (isinstance(nodata, float) and np.isnan(nodata)):
        return np.ones(array.shape[1:], dtype=bool)
    return (array != np.asarray(nodata).astype(array.dtype)).all(axis=0)


class SARScene:
    """An open SAR file for window-by-window reads of large scenes; use :func:`open_scene`.

    Attributes:
        path: The file.
        height: Rows of the full scene.
        width: Columns of the full scene.
        count: Number of bands in the file.
        dtype: Source dtype of the pixels (as numpy reads them).
        crs: Coordinate reference system or ``None``.
        transform: Affine transform of the full scene or ``None``.
        nodata: Nodata value or ``None``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no such file")
        if self.path.is_dir():
            raise _error(self.path, "is a directory, expected a SAR raster file")
        if self.path.stat().st_size == 0:
            raise _error(self.path, "empty file (0 bytes)")
        self._dataset: Any = None
        self._array: np.ndarray | None = None
        self._npy_shape: tuple[int, ...] | None = None
        suffix = self.path.suffix.lower()
        if suffix in NPY_SUFFIXES:
            self._open_npy()
        else:
            self._open_rasterio()

    # -- opening -----------------------------------------------------------------------------------
    def _open_npy(self) -> None:
        try:
            array = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:
            raise _error(self.path, f"unreadable or truncated .npy file ({error})") from error
        if array.ndim == 2:
            array = array[None]
        elif array.ndim == 3:
            first, rows, last = array.shape
            if first <= MAX_BANDS or (first < rows and first < last):
                pass  # [C, H, W]
            elif last <= MAX_BANDS or (last < first and last < rows):
                array = np.moveaxis(array, -1, 0)  # [H, W, C]
            else:
                raise _error(self.path, f"array shape {tuple(array.shape)}, {_NPY_LAYOUTS}")
            # more than MAX_BANDS bands: only a reader asking for every band (max_bands=None) takes it
            shape = (int(first), int(rows), int(last))
            self._npy_shape = shape if min(first, last) > MAX_BANDS else None
        else:
            raise _error(
                self.path, f"array shape {tuple(array.shape)}, expected [H, W], [C, H, W] or [H, W, C]"
            )
        if array.dtype.kind not in "fciub":
            raise _error(self.path, f"array dtype {array.dtype}, expected a numeric dtype")
        if 0 in array.shape:
            raise _error(self.path, f"empty array of shape {tuple(array.shape)}")
        self._array = array
        self.count = int(array.shape[0])
        self.height = int(array.shape[1])
        self.width = int(array.shape[2])
        self.dtype = np.dtype(array.dtype)
        self.crs = None
        self.transform = None
        self.gcps = None
        self.nodata = None
        self.band_names: tuple[str | None, ...] = (None,) * self.count

    def _open_rasterio(self) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter(
                    "ignore", NotGeoreferencedWarning
                )  # PNG/JPG/.tif without georeferencing
                self._dataset = rasterio.open(self.path)
        except RasterioError as error:
            raise _error(self.path, f"unreadable as a raster ({error})") from error
        self._take_header(self._dataset)

    def _take_header(self, ds: Any) -> None:
        """Size, dtype, georeferencing, nodata and band names of an open rasterio dataset."""
        self.count = int(ds.count)
        self.height = int(ds.height)
        self.width = int(ds.width)
        if self.count == 0 or self.height == 0 or self.width == 0:
            self.close()
            raise _error(self.path, f"empty raster ({self.count} bands, {self.height}x{self.width})")
        dtype = ds.dtypes[0]
        self.dtype = np.dtype("complex64") if dtype == "complex_int16" else np.dtype(dtype)
        self.crs = ds.crs
        georeferenced = ds.crs is not None or ds.transform != Affine.identity()
        self.transform = ds.transform if georeferenced else None
        self.gcps = dataset_gcps(ds)
        self.nodata = ds.nodata
        self.band_names = tuple(ds.descriptions)
        self._is_photo = self.path.suffix.lower() in IMAGE_SUFFIXES or ds.driver in ("PNG", "JPEG")
        self._has_alpha = self._is_photo and self.count in (2, 4) and ds.colorinterp[-1] == ColorInterp.alpha

    # -- reading -----------------------------------------------------------------------------------
    def read(
        self,
        window: WindowLike | None = None,
        bands: Sequence[int | str] | None = None,
        boundless: bool = False,
        max_bands: int | None = MAX_BANDS,
    ) -> SARRaster:
        """Read the whole scene or a window of it.

        Args:
            window: A :class:`rasterio.windows.Window` or ``(row_off, col_off, height, width)``;
                ``None`` reads everything.
            bands: Bands to read: 1-based indexes or band names (the file's band descriptions,
                case-insensitive), any number; ``None`` reads all bands and requires the file to
                have at most ``max_bands``.
            boundless: Allow windows that extend past the scene; the outside is filled with the
                nodata value (or 0) and marked invalid.
            max_bands: Most bands read at once (default 2, VV + VH); ``None``: any number, colour
                quick-looks keep their colour bands (lossless).

        Returns:
            The :class:`SARRaster` of the window.

        Raises:
            SARFileError: Wrong band count, a window outside the scene, or unreadable/truncated data.
        """
        win = as_window(window)
        if win is not None:
            win = Window(
                int(round(win.col_off)),
                int(round(win.row_off)),
                int(round(win.width)),
                int(round(win.height)),
            )
            if not boundless:
                check_window(self.path, win, self.height, self.width)
        if self._array is not None:
            return self._read_npy(win, bands, max_bands)
        return self._read_rasterio(win, bands, boundless, max_bands)

    def _read_npy(
        self, window: Window | None, bands: Sequence[int | str] | None, max_bands: int | None
    ) -> SARRaster:
        if self._npy_shape is not None and bands is None and max_bands is not None and self.count > max_bands:
            raise _error(self.path, f"array shape {self._npy_shape}, {_NPY_LAYOUTS} and C in 1..{max_bands}")
        indexes = [b - 1 for b in band_indexes(self.path, self.count, bands, max_bands, self.band_names)]
        assert self._array is not None
        if window is None:
            rows, cols = slice(0, self.height), slice(0, self.width)
        else:
            rows = slice(window.row_off, window.row_off + window.height)
            cols = slice(window.col_off, window.col_off + window.width)
        try:
            array = np.array(self._array[indexes, rows, cols])
        except (ValueError, OSError) as error:
            raise _error(self.path, f"truncated or unreadable data ({error})") from error
        if window is not None and array.shape[1:] != (window.height, window.width):
            # boundless read of an array: pad with zeros, mark invalid.
            padded = np.zeros((array.shape[0], window.height, window.width), dtype=array.dtype)
            valid = np.zeros((window.height, window.width), dtype=bool)
            r0, c0 = max(0, -window.row_off), max(0, -window.col_off)
            src = np.array(
                self._array[
                    indexes,
                    max(0, window.row_off) : window.row_off + window.height,
                    max(0, window.col_off) : window.col_off + window.width,
                ]
            )
            padded[:, r0 : r0 + src.shape[1], c0 : c0 + src.shape[2]] = src
            valid[r0 : r0 + src.shape[1], c0 : c0 + src.shape[2]] = _finite_mask(src)
            return SARRaster(padded, valid, None, None, None, self.path, (None,) * len(indexes))
        return SARRaster(array, _finite_mask(array), None, None, None, self.path, (None,) * len(indexes))

    def _read_rasterio(
        self, window: Window | None, bands: Sequence[int | str] | None, boundless: bool, max_bands: int | None
    ) -> SARRaster:
        ds = self._dataset
        if self._is_photo and bands is None and (self.count in (3, 4) or self._has_alpha):
            return self._read_photo(window, boundless, keep_colour=max_bands is None)
        indexes = band_indexes(self.path, self.count, bands, max_bands, self.band_names)
        # fill_value only when padding: rasterio also writes it into masked pixels, altering the data
        options: dict[str, Any] = {}
        if boundless:
            options = {"boundless": True, "fill_value": self.nodata if self.nodata is not None else 0}
        if ds.dtypes[0] == "complex_int16":
            options["out_dtype"] = "complex64"
        try:
            with _GDAL_BLOCK_IO:
                array = ds.read(indexes, window=window, **options)
                # no nodata value and no mask band: every mask is 255, nothing to read
                all_valid = all(ds.mask_flag_enums[i - 1] == [MaskFlags.all_valid] for i in indexes)
                masks = None if all_valid else ds.read_masks(indexes, window=window, boundless=boundless)
        except RasterioError as error:
            raise _error(self.path, f"truncated or unreadable pixel data ({error})") from error
        valid = _finite_mask(array)
        if masks is not None:
            valid &= (masks > 0).all(axis=0)
        if self.nodata is not None and not np.isnan(self.nodata):
            valid &= _nodata_mask(array, self.nodata)
        if boundless and window is not None:
            valid &= _inside_mask(window, self.height, self.width)
        transform = None
        if self.transform is not None:
            transform = (
                ds.transform @ Affine.translation(window.col_off, window.row_off)
                if window is not None
                else ds.transform
            )
        names = tuple(self.band_names[i - 1] for i in indexes)
        gcps = window_gcps(self.gcps, window)
        return SARRaster(array, valid, self.crs, transform, self.nodata, self.path, names, gcps)

    def _read_photo(self, window: Window | None, boundless: bool, keep_colour: bool = False) -> SARRaster:
        """Quick-look (grey+alpha, RGB, RGBA): one grey band (exact when R == G == B), alpha -> validity.

        With ``keep_colour`` an RGB(A) image whose colour bands differ (e.g. a Pauli composite) keeps them.
        """
        ds = self._dataset
        try:
            with _GDAL_BLOCK_IO:
                rgba = ds.read(window=window, **({"boundless": True, "fill_value": 0} if boundless else {}))
        except RasterioError as error:
            raise _error(self.path, f"truncated or unreadable pixel data ({error})") from error
        colour = rgba[:-1] if self._has_alpha else rgba
        names: tuple[str, ...] = ("grey",)
        if (colour == colour[:1]).all():
            grey = colour[:1].copy()
        elif keep_colour:
            grey, names = colour.copy(), ("red", "green", "blue")[: colour.shape[0]]
        else:
            grey = np.rint(colour.astype(np.float32).mean(axis=0, keepdims=True)).astype(rgba.dtype)
        valid = rgba[-1] > 0 if self._has_alpha else np.ones(grey.shape[1:], dtype=bool)
        if boundless and window is not None:
            valid &= _inside_mask(window, self.height, self.width)
        return SARRaster(grey, valid, None, None, None, self.path, names)

    def windows(self, size: int | tuple[int, int], overlap: int = 0) -> Iterator[Window]:
        """Windows of ``size`` covering the scene row by row (edge windows are clipped to the scene).

        Args:
            size: Window height and width (an int for squares).
            overlap: Pixels shared by neighbouring windows.
        """
        height, width = (size, size) if isinstance(size, int) else size
        if height <= overlap or width <= overlap:
            raise ValueError(f"window size {size} must exceed the overlap {overlap}")
        for row in range(0, self.height, height - overlap):
            for col in range(0, self.width, width - overlap):
                yield Window(col, row, min(width, self.width - col), min(height, self.height - row))
                if col + width >= self.width:
                    break
            if row + height >= self.height:
                break

    def close(self) -> None:
        """Close the underlying file."""
        if self._dataset is not None:
            with _GDAL_BLOCK_IO:
                self._dataset.close()
            self._dataset = None
        self._array = None

    def __enter__(self) -> SARScene:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SARScene({str(self.path)!r}, bands={self.count}, {self.height}x{self.width}, dtype={self.dtype}, crs={self.crs})"


def _inside_mask(window: Window, height: int, width: int) -> np.ndarray:
    rows = np.arange(window.row_off, window.row_off + window.height)
    cols = np.arange(window.col_off, window.col_off + window.width)
    return ((rows >= 0) & (rows < height))[:, None] & ((cols >= 0) & (cols < width))[None, :]


def open_scene(path: str | os.PathLike[str]) -> SARScene:
    """Open a (possibly huge) SAR file for window-by-window reads.

    Example:
        >>> with open_scene("scene.tif") as scene:  # doctest: +SKIP
        ...     for window in scene.windows(1024):
        ...         tile = scene.read(window)

    Raises:
        FileNotFoundError: The file does not exist.
        SARFileError: The file is empty or unreadable.
    """
    return SARScene(path)


def read_sar(
    path: str | os.PathLike[str],
    window: WindowLike | None = None,
    bands: Sequence[int | str] | None = None,
    boundless: bool = False,
    max_bands: int | None = MAX_BANDS,
) -> SARRaster:
    """Read a SAR file (GeoTIFF/TIFF, PNG/JPG or ``.npy``) or a window of it.

    Args:
        path: The file.
        window: A :class:`rasterio.windows.Window` or ``(row_off, col_off, height, width)``.
        bands: 1-based band indexes or band names (e.g. ``("VV", "VH")``); ``None`` reads all bands.
        boundless: Allow windows past the raster edge (padding is marked invalid).
        max_bands: Most bands read at once (default 2); ``None`` for any number (lossless archives).

    Returns:
        A :class:`SARRaster` with ``array`` ``[C, H, W]`` in the source dtype.

    Raises:
        FileNotFoundError: The file does not exist.
        SARFileError: Unreadable, empty or truncated file, unsupported band count or array shape.
    """
    with SARScene(path) as scene:
        return scene.read(window=window, bands=bands, boundless=boundless, max_bands=max_bands)


def list_sar_files(root: str | os.PathLike[str]) -> list[Path]:
    """All files under ``root`` (recursively) with a supported suffix, sorted, hidden files skipped."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory")
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in SUPPORTED_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


__all__ = [
    "WindowLike",
    "as_window",
    "band_indexes",
    "check_window",
    "MAX_BANDS",
    "GeoTIFFWriter",
    "SARFileError",
    "SARRaster",
    "SARScene",
    "SUPPORTED_SUFFIXES",
    "create_geotiff",
    "list_sar_files",
    "open_scene",
    "read_sar",
    "write_geotiff",
]
