"""Tiling and blending of scene inference (:func:`di3cl_hf.inference.scene.predict_scene`).

- :func:`tile_starts` / :func:`scene_tiling` / :func:`check_tiling`: where the overlapping square tiles go, a
  tile no smaller than the network's stride (32) and, on a scene smaller than a tile, the scene's own size.
- :func:`blend_weights`: the separable raised-cosine window that weighs each tile's logits.
- :class:`_TileBlender`: sums weighted tile logits in row-major order and writes finished pixels (class map
  or uint8 probabilities) with bounded memory; :func:`argmax_planes` is its class-axis argmax.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from rasterio.windows import Window

BLEND_MODES = ("cosine", "uniform")
OUTPUT_NODATA = 255
# Probabilities are written as round(p * PROBABILITY_SCALE) so that 255 stays free for nodata.
PROBABILITY_SCALE = 254
# The smallest tile: the network's output stride (a ResNet's 32). Below it a tile is less than one feature pixel
# (and a 256 px scene at tile size 1 would be 65,536 forward passes).
MIN_TILE_SIZE = 32
STRIDE = 32


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


def check_tiling(tile_size: int, overlap: int, batch_size: int = 1) -> None:
    """Raise a ``ValueError`` unless ``tile_size >= 32`` (:data:`MIN_TILE_SIZE`), ``0 <= overlap < tile_size`` and
    ``batch_size >= 1``."""
    if tile_size < MIN_TILE_SIZE:
        raise ValueError(
            f"tile_size must be a positive number of pixels, at least {MIN_TILE_SIZE} (the network's stride), "
            f"got {tile_size!r}"
        )
    if not 0 <= overlap < tile_size:
        raise ValueError(
            f"overlap must be at least 0 and smaller than tile_size={tile_size}, got {overlap!r}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")


# Long only through its docstring (the public API's reference); the body is ~40 lines of steps.
def scene_tiling(height: int, width: int, tile_size: int, overlap: int) -> tuple[int, int]:
    """``(tile_size, overlap)`` used on a ``height`` x ``width`` scene: a tile larger than the scene is shrunk
    to the scene's longer side rounded up to the stride (32), so a small scene is predicted at its own size
    (no blending window or padding sized by an oversized ``tile_size``); the overlap stays below the tile."""
    tile = min(tile_size, max(MIN_TILE_SIZE, STRIDE * math.ceil(max(height, width) / STRIDE)))
    return tile, min(overlap, tile // 2) if tile < tile_size else overlap


@dataclass
class _Tile:
    """One tile: its row and column in the tile grid and its window in the scene (clipped to it)."""

    row: int
    col: int
    window: Window


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


__all__ = [
    "BLEND_MODES",
    "MIN_TILE_SIZE",
    "OUTPUT_NODATA",
    "PROBABILITY_SCALE",
    "STRIDE",
    "argmax_planes",
    "blend_weights",
    "check_tiling",
    "scene_tiling",
    "tile_starts",
]
