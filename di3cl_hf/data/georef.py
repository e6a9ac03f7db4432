"""Ground control points (GCPs): the georeferencing of Sentinel-1 GRD / SLC products, which have no affine
transform. Scenes keep them as ``(points, crs)`` (rasterio's ``dataset.gcps``); a window or a downscaled copy of
a scene gets them moved into its own pixel grid, so a map written from it lies where the input does."""

from __future__ import annotations

from typing import Any

from rasterio.control import GroundControlPoint
from rasterio.windows import Window

GCPs = tuple[list[GroundControlPoint], Any]
"""``(points, crs)`` as rasterio's ``dataset.gcps``."""


def dataset_gcps(dataset: Any) -> GCPs | None:
    """The GCPs of an open rasterio dataset, or ``None`` when it has none."""
    points, crs = dataset.gcps
    return (list(points), crs) if points else None


def _moved(gcps: GCPs | None, row_off: float, col_off: float, scale: float) -> GCPs | None:
    if not gcps:
        return None
    points, crs = gcps
    moved = [
        GroundControlPoint(
            row=(p.row - row_off) / scale,
            col=(p.col - col_off) / scale,
            x=p.x,
            y=p.y,
            z=p.z,
            id=p.id,
            info=p.info,
        )
        for p in points
    ]
    return moved, crs


def window_gcps(gcps: GCPs | None, window: Window | None) -> GCPs | None:
    """``gcps`` in the pixel grid of ``window`` (unchanged for ``None``: the whole scene)."""
    if gcps is None or window is None:
        return gcps
    return _moved(gcps, window.row_off, window.col_off, 1.0)


def scaled_gcps(gcps: GCPs | None, factor: float) -> GCPs | None:
    """``gcps`` in the pixel grid of the scene downscaled by ``factor`` (pixel ``i`` covers ``factor`` input pixels)."""
    return _moved(gcps, 0.0, 0.0, float(factor)) if factor != 1 else gcps


__all__ = ["GCPs", "dataset_gcps", "scaled_gcps", "window_gcps"]
