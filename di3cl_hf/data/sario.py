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
by window through :func:`create_geotiff`.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from ..atomic import temporary_path
from .georef import GCPs, dataset_gcps, window_gcps

TIFF_SUFFIXES = (".tif", ".tiff", ".gtif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
NPY_SUFFIXES = (".npy",)
SUPPORTED_SUFFIXES = TIFF_SUFFIXES + IMAGE_SUFFIXES + NPY_SUFFIXES
MAX_BANDS = 2

WindowLike = Window | tuple[int, int, int, int]
_NPY_LAYOUTS = "expected [H, W], [C, H, W] or [H, W, C] (the band axis C shorter than H and W)"


class SARFileError(ValueError):
    """A SAR file that cannot be used: unreadable, empty, truncated or of an unsupported layout.

    The message always starts with the offending file path.
    """


# GDAL's block cache is shared by all datasets of the process: a thread reading one file can evict and
# flush a dirty block of another file that a second thread is writing, and a pixel-interleaved GeoTIFF
# then loses the newest pixels of some bands (GDAL issue #2011, still reproducible with GDAL 3.10 and a
# reader thread beside a writer thread: tests/test_sario.py::test_concurrent_read_and_write_lose_nothing).
# Every block read or write of this module holds this lock, so threads using it never overlap in GDAL.
_GDAL_BLOCK_IO = threading.RLock()
# Largest temporary (pre-COG) raster written uncompressed; bigger ones are compressed like the target.
_RAW_COG_SOURCE_BYTES = 2**30


@dataclass
class SARRaster:
    """A SAR raster (or a window of one) read from disk.

    Attributes:
        array: Pixel values ``[C, H, W]`` in the source dtype (e.g. VV, VV+VH, or any band count
            read with ``max_bands=None``).
        valid_mask: Boolean ``[H, W]``; ``False`` where any band is nodata, NaN/inf or masked.
        crs: Coordinate reference system, or ``None`` for files without georeferencing.
        transform: Affine pixel-to-CRS transform of ``array`` (of the window when one was read),
            or ``None`` without georeferencing.
        nodata: The file's nodata value, or ``None``.
        path: The file the raster was read from.
        band_names: Band descriptions from the file (e.g. ``("VV", "VH")``); ``None`` entries when unset.
        gcps: Ground control points ``(points, crs)`` in the pixel grid of ``array`` (Sentinel-1 GRD
            products are georeferenced by GCPs only), or ``None``.
    """

    array: np.ndarray
    valid_mask: np.ndarray
    crs: CRS | None
    transform: Affine | None
    nodata: float | None
    path: Path
    band_names: tuple[str | None, ...] = ()
    gcps: GCPs | None = None

    @property
    def num_bands(self) -> int:
        """Number of bands (polarisations)."""
        return int(self.array.shape[0])

    @property
    def height(self) -> int:
        """Height in pixels."""
        return int(self.array.shape[1])

    @property
    def width(self) -> int:
        """Width in pixels."""
        return int(self.array.shape[2])


def _error(path: Path | str, message: str) -> SARFileError:
    return SARFileError(f"{path}: {message}")


def as_window(window: WindowLike | None) -> Window | None:
    if window is None or isinstance(window, Window):
        return window
    if len(window) != 4:
        raise ValueError(
            f"window must be a rasterio Window or (row_off, col_off, height, width), got {window!r}"
        )
    row_off, col_off, height, width = (int(v) for v in window)
    return Window(col_off, row_off, width, height)


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


def check_window(path: Path, window: Window, height: int, width: int) -> None:
    if window.width <= 0 or window.height <= 0:
        raise _error(path, f"empty window {window}")
    if (
        window.row_off < 0
        or window.col_off < 0
        or window.row_off + window.height > height
        or window.col_off + window.width > width
    ):
        raise _error(
            path,
            f"window (row_off={window.row_off}, col_off={window.col_off}, height={window.height}, "
            f"width={window.width}) outside the {height}x{width} raster; pass boundless=True to pad",
        )


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


# -- writing ---------------------------------------------------------------------------------------
def _gdal_dtype(dtype: np.dtype) -> str:
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return "uint8"
    if dtype == np.complex128:
        return "complex128"
    return dtype.name


def _profile(
    count: int,
    height: int,
    width: int,
    dtype: np.dtype,
    crs: CRS | str | None,
    transform: Affine | None,
    nodata: float | None,
    compress: str | None,
    blocksize: int,
) -> dict[str, Any]:
    dtype_name = _gdal_dtype(dtype)
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "count": count,
        "height": height,
        "width": width,
        "dtype": dtype_name,
        "crs": CRS.from_user_input(crs) if crs is not None else None,
        "transform": transform if transform is not None else Affine.identity(),
        "nodata": nodata,
        "BIGTIFF": "IF_SAFER",
    }
    tiled = height >= 16 and width >= 16
    if tiled:
        block = max(16, min(blocksize, 1 << (max(height, width) - 1).bit_length()) // 16 * 16)
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    if compress:
        profile["compress"] = compress
        kind = np.dtype(dtype).kind
        if compress.lower() in ("deflate", "lzw", "zstd"):
            if kind == "f":
                profile["predictor"] = 3
            elif kind in "iu" and np.dtype(dtype).itemsize > 1:
                profile["predictor"] = 2
    return profile


class GeoTIFFWriter:
    """Write a GeoTIFF window by window, atomically; use :func:`create_geotiff`.

    Pixels go to a temporary file in the target directory; :meth:`close` (or leaving the ``with``
    block without an exception) moves it into place with :func:`os.replace` (after converting it to a
    Cloud-Optimized GeoTIFF when ``cog=True``). On an exception the temporary file is removed and
    the target is left untouched.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        height: int,
        width: int,
        count: int = 1,
        dtype: np.dtype | str = "float32",
        crs: CRS | str | None = None,
        transform: Affine | None = None,
        nodata: float | None = None,
        compress: str | None = "deflate",
        blocksize: int = 256,
        cog: bool = False,
        band_names: Sequence[str] | None = None,
        *,
        gcps: GCPs | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.cog = cog
        self.compress = compress
        # COG overviews: integer rasters (class maps, masks, uint8 probabilities) keep real values (nearest);
        # GDAL's default (cubic) would invent classes in the zoomed-out levels. Floats are averaged.
        self.overview_resampling = "NEAREST" if np.dtype(dtype).kind in "iub" else "AVERAGE"
        self._tmp = temporary_path(self.path, ".tmp.tif")
        # The COG driver re-encodes every tile of the temporary file: compressing it too would be spent
        # twice (plus once decompressing). It stays uncompressed unless that would take a lot of disk.
        raw_bytes = height * width * count * np.dtype(dtype).itemsize
        temporary_compress = None if cog and raw_bytes <= _RAW_COG_SOURCE_BYTES else compress
        profile = _profile(
            count, height, width, np.dtype(dtype), crs, transform, nodata, temporary_compress, blocksize
        )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self._dataset = rasterio.open(self._tmp, "w", **profile)
            if band_names is not None:
                for index, name in enumerate(band_names, start=1):
                    self._dataset.set_band_description(index, name)
            if gcps:  # GCP-georeferenced input (no transform): the output keeps its GCPs and their CRS
                self._dataset.gcps = gcps
            if tags:
                self._dataset.update_tags(**tags)
        except Exception:
            self._tmp.unlink(missing_ok=True)
            raise
        self._closed = False

    def write(self, array: np.ndarray, window: WindowLike | None = None) -> None:
        """Write ``array`` (``[C, h, w]`` or ``[h, w]``) at ``window`` (``None``: the whole raster)."""
        array = np.asarray(array)
        if array.ndim == 2:
            array = array[None]
        if array.dtype == np.bool_:
            array = array.astype(np.uint8)
        with _GDAL_BLOCK_IO:
            self._dataset.write(array, window=as_window(window))

    def close(self) -> None:
        """Finish the file and move it into place."""
        if self._closed:
            return
        self._closed = True
        with _GDAL_BLOCK_IO:  # flushes the last dirty blocks
            self._dataset.close()
        try:
            if self.cog:
                cog_tmp = temporary_path(self.path, ".tmp.tif")
                try:
                    options = {"COMPRESS": self.compress.upper()} if self.compress else {}
                    options["OVERVIEW_RESAMPLING"] = self.overview_resampling
                    options["NUM_THREADS"] = "ALL_CPUS"  # compression of the tiles on every core
                    with _GDAL_BLOCK_IO:
                        rasterio.shutil.copy(self._tmp, cog_tmp, driver="COG", BIGTIFF="IF_SAFER", **options)
                    os.replace(cog_tmp, self.path)
                finally:
                    cog_tmp.unlink(missing_ok=True)
            else:
                os.replace(self._tmp, self.path)
        finally:
            self._tmp.unlink(missing_ok=True)

    def abort(self) -> None:
        """Discard everything written so far."""
        if not self._closed:
            self._closed = True
            with _GDAL_BLOCK_IO:
                self._dataset.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> GeoTIFFWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def create_geotiff(
    path: str | os.PathLike[str],
    height: int,
    width: int,
    count: int = 1,
    dtype: np.dtype | str = "float32",
    crs: CRS | str | None = None,
    transform: Affine | None = None,
    nodata: float | None = None,
    compress: str | None = "deflate",
    blocksize: int = 256,
    cog: bool = False,
    band_names: Sequence[str] | None = None,
    *,
    gcps: GCPs | None = None,
    tags: dict[str, str] | None = None,
) -> GeoTIFFWriter:
    """Start an atomic, tiled, compressed GeoTIFF to be written window by window.

    Example:
        >>> with create_geotiff("mask.tif", 20000, 20000, dtype="uint8", crs=crs, transform=t) as out:  # doctest: +SKIP
        ...     out.write(tile, window)

    Args:
        path: Target file; it appears only once the writer is closed successfully.
        height: Rows.
        width: Columns.
        count: Bands.
        dtype: Pixel dtype (bool is written as uint8; complex64 as CFloat32).
        crs: Coordinate reference system (anything :meth:`rasterio.crs.CRS.from_user_input` takes).
        transform: Affine transform; ``None`` writes an ungeoreferenced file.
        nodata: Nodata value.
        compress: GDAL compression ("deflate", "lzw", "zstd", ... or ``None``).
        blocksize: Tile size (multiple of 16; shrunk for small rasters).
        cog: Convert to a Cloud-Optimized GeoTIFF (GDAL's COG driver) on close.
        band_names: Band descriptions, e.g. ``("VV", "VH")``.
        gcps: Ground control points ``(points, crs)`` for a raster georeferenced by GCPs (no transform).
        tags: GeoTIFF metadata tags (e.g. what made the map, :mod:`di3cl_hf.inference.provenance`).
    """
    return GeoTIFFWriter(
        path, height, width, count, dtype, crs, transform, nodata, compress, blocksize, cog, band_names,
        gcps=gcps, tags=tags,
    )  # fmt: skip


def write_geotiff(
    path: str | os.PathLike[str],
    array: np.ndarray,
    crs: CRS | str | None = None,
    transform: Affine | None = None,
    nodata: float | None = None,
    *,
    compress: str | None = "deflate",
    blocksize: int = 256,
    cog: bool = False,
    band_names: Sequence[str] | None = None,
    gcps: GCPs | None = None,
    tags: dict[str, str] | None = None,
) -> Path:
    """Write ``array`` (``[C, H, W]`` or ``[H, W]``) as a tiled, compressed GeoTIFF, atomically.

    Args:
        path: Target file (parent directories are created).
        array: Pixels; float32/float64, (u)int8/16/32, complex64 or bool (written as uint8).
        crs: Coordinate reference system (EPSG code string, WKT, :class:`~rasterio.crs.CRS`).
        transform: Affine transform; ``None`` writes an ungeoreferenced file.
        nodata: Nodata value stored in the file.
        compress: GDAL compression, ``None`` for none.
        blocksize: Tile size.
        cog: Write a Cloud-Optimized GeoTIFF (GDAL's COG driver, with overviews).
        band_names: Band descriptions, e.g. ``("VV", "VH")``.
        gcps: Ground control points ``(points, crs)`` (a GCP-georeferenced raster).
        tags: GeoTIFF metadata tags.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or 0 in array.shape:
        raise ValueError(f"{path}: array of shape {array.shape}, expected non-empty [H, W] or [C, H, W]")
    with create_geotiff(
        path,
        array.shape[1],
        array.shape[2],
        array.shape[0],
        array.dtype,
        crs,
        transform,
        nodata,
        compress,
        blocksize,
        cog,
        band_names,
        gcps=gcps,
        tags=tags,
    ) as writer:
        writer.write(array)
    return Path(path)


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
