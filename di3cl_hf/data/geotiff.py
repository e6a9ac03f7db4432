"""Writing GeoTIFFs atomically: whole arrays (:func:`write_geotiff`) or window by window (:func:`create_geotiff`,
:class:`GeoTIFFWriter`), optionally Cloud-Optimized. Pixels go to a temporary file in the target folder, moved
into place only when complete. Re-exported by :mod:`di3cl_hf.data.sario`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning

from ..atomic import temporary_path
from .georef import GCPs
from .raster import _GDAL_BLOCK_IO, WindowLike, as_window

# Largest temporary (pre-COG) raster written uncompressed; bigger ones are compressed like the target.
_RAW_COG_SOURCE_BYTES = 2**30


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


__all__ = ["GeoTIFFWriter", "create_geotiff", "write_geotiff"]
