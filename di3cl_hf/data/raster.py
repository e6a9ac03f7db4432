"""What every SAR reader and writer shares: :class:`SARRaster`, :class:`SARFileError`, windows, and the one lock
of GDAL block I/O. Readers are in :mod:`.sario`, GeoTIFF writers in :mod:`.geotiff` (both re-exported by
:mod:`.sario`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from .georef import GCPs

WindowLike = Window | tuple[int, int, int, int]


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


__all__ = ["SARFileError", "SARRaster", "WindowLike", "as_window", "check_window"]
