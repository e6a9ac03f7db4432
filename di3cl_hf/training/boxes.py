"""Box pairs over the overlap of two views (docs/method.md#boxes), vectorised, and the pre-training collator.

For each image of a batch, with the two views' :class:`~di3cl_hf.augmentation.ViewGeometry`:

1. The intersection of the two crops is taken in source pixels.
2. It is measured in a space scaled, per axis, by the smaller of the two views' zoom factors
   (output size / crop size), so a box of at least ``min_box_size`` there is at least that big in
   both views. If the scaled intersection is narrower or shorter than ``min_box_size``, the image
   contributes no boxes.
3. ``boxes_per_image`` boxes are drawn there, grid-based: per draw, a random number of cells per
   axis (1 .. floor(extent / min_box_size), so every cell fits a minimal box), a random cell, and a
   box of random size in [min_box_size, cell size] at a random position inside that cell
   (``box_sampling="uniform"``: always one cell, i.e. size and position uniform in the intersection).
4. A draw whose IoU with an already accepted box of the same image is >= ``iou_threshold`` is
   rejected and re-drawn, up to ``max_tries`` draws per box; if all fail, that box is dropped (the
   image gives fewer boxes), so accepted boxes of one image always overlap below the threshold.
5. Each box is mapped to source pixels and from there into each view (crop offset, per-axis zoom,
   horizontal / vertical flip, 90-degree rotations), optionally jittered (each view independently;
   jittered boxes may then overlap more than the threshold), and clipped to the view.

Everything is batched tensor work, with no Python loop over images or boxes: each image gets a
sequence of draws at once, the release's sequential accept / re-draw loop is replayed over it as
greedy suppression in draw order (see ``_greedy_accept``), and the rare images whose loop needs more
draws than the first short sequence get a longer one.
"""

from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.utils.data

from ..training.augmentation import GEOMETRY_FIELDS, ViewGeometry, geometries_to_tensor

_FIELDS = operator.attrgetter(*GEOMETRY_FIELDS)
# The geometry fields in (x, y) order: left, top, width, height, output_width, output_height, hflip, vflip, rot90.
_XY_ORDER = (1, 0, 3, 2, 5, 4, 6, 7, 8)
_XY_FIELDS = operator.attrgetter(*(GEOMETRY_FIELDS[i] for i in _XY_ORDER))
# Per quarter-turn count k: (mirror x, mirror y, swap axes) of the turn ``(x, y) -> (y, W - x)`` applied k times.
_TURNS = ((False, False, False), (True, False, True), (True, True, False), (False, True, True))


@functools.lru_cache(maxsize=32)
def _pairs(count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw pairs (i, j) with j < i of a sequence of ``count``: (i [P], j [P], i * count + j [P]); cached."""
    later, earlier = torch.tril_indices(count, count, offset=-1)
    return later, earlier, later * count + earlier


@functools.lru_cache(maxsize=1)
def _turn_table() -> torch.Tensor:
    return torch.tensor(_TURNS, dtype=torch.bool)


def _as_geometry_tensor(geometry: torch.Tensor | Sequence[ViewGeometry | dict]) -> torch.Tensor:
    if isinstance(geometry, torch.Tensor):
        if geometry.ndim != 2 or geometry.shape[1] != len(GEOMETRY_FIELDS):
            raise ValueError(
                f"geometry tensor must be [B, {len(GEOMETRY_FIELDS)}], got {tuple(geometry.shape)}"
            )
        return geometry.to(torch.float32)
    try:  # ViewGeometry objects (the collator's case): one numpy conversion, no per-element torch work
        rows = [_FIELDS(g) for g in geometry]
    except AttributeError:  # dicts or tensors
        return geometries_to_tensor(geometry).to(torch.float32)
    return torch.from_numpy(np.array(rows, dtype=np.float32).reshape(len(rows), len(GEOMETRY_FIELDS)))


def _as_geometry_pair(geometry1: Any, geometry2: Any) -> torch.Tensor | None:
    """Both views' :class:`ViewGeometry` lists -> [2, B, 9] float32, fields in ``_XY_ORDER``, in one conversion.

    Returns None for other inputs (tensors, dicts), which take the general path.
    """
    if isinstance(geometry1, torch.Tensor) or isinstance(geometry2, torch.Tensor):
        return None
    try:
        count = len(geometry1)
        if len(geometry2) != count:
            return None
        values = itertools.chain.from_iterable(map(_XY_FIELDS, itertools.chain(geometry1, geometry2)))
        array = np.fromiter(values, dtype=np.float32, count=2 * count * len(GEOMETRY_FIELDS))
    except (AttributeError, TypeError, ValueError):  # dicts, tensors, ...: the general path
        return None
    return torch.from_numpy(array).view(2, count, len(GEOMETRY_FIELDS))


def _jitter(boxes: torch.Tensor, amount: float, generator: torch.Generator | None) -> torch.Tensor:
    """Shift every coordinate by up to ``amount`` times the box's width / height."""
    size = torch.cat([boxes[..., 2:] - boxes[..., :2]] * 2, dim=-1)
    noise = torch.rand(boxes.shape, generator=generator, dtype=boxes.dtype) * 2.0 - 1.0
    moved = boxes + noise * amount * size
    low = torch.minimum(moved[..., :2], moved[..., 2:])
    high = torch.maximum(moved[..., :2], moved[..., 2:])
    return torch.cat([low, high], dim=-1)


def _draw_planar(
    extent: torch.Tensor, count: int, min_box_size: float, generator: torch.Generator | None, sampling: str
) -> torch.Tensor:
    """:func:`_draw_candidates` for extents [2 (x, y), b] -> draws [4 (x1, y1, x2, y2), count, b].

    Both axes go through each tensor op at once, with the images along the contiguous last dimension
    (long rows vectorise; rows of ``count`` draws are too short).
    """
    extent = extent.unsqueeze(1)  # [2, 1, b]
    if sampling == "uniform":
        max_cells = torch.ones_like(extent)
    else:
        max_cells = torch.floor(extent / min_box_size).clamp_min_(1)
    b = extent.shape[2]
    # the 8 uniforms of a draw are (x, y) pairs: cell count, cell, box size, box position
    u = (
        torch.rand(b, count, 8, generator=generator, dtype=extent.dtype)
        .permute(2, 1, 0)
        .reshape(4, 2, count, b)
    )
    cells = torch.minimum(torch.floor(u[0] * max_cells), max_cells - 1).add_(1)
    cell = extent / cells
    cell0 = torch.minimum(torch.floor(u[1] * cells), cells - 1).mul_(cell)
    box = (u[2] * (cell - min_box_size)).add_(min_box_size)
    start = (u[3] * (cell - box)).add_(cell0)
    return torch.cat([start, start + box])


def _draw_candidates(
    extent_w: torch.Tensor,
    extent_h: torch.Tensor,
    count: int,
    min_box_size: float,
    generator: torch.Generator | None,
    sampling: str = "grid",
) -> torch.Tensor:
    """Draws for [b] scaled-intersection extents -> candidate boxes [b, count, 4] there.

    ``"grid"``: random cells per axis, random cell, random box in it; ``"uniform"``: the same with a
    single cell, i.e. a box of uniform size in [min_box_size, extent] at a uniform position.
    """
    extent = torch.stack([extent_w, extent_h])
    return _draw_planar(extent, count, float(min_box_size), generator, sampling).permute(2, 1, 0)


def _greedy_accept(
    draws: torch.Tensor, boxes_per_image: int, iou_threshold: float, max_tries: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replay the release's loop over a sequence of draws [b, M, 4], without a Python loop over boxes.

    The loop: for each of ``boxes_per_image`` boxes, draw until the draw's IoU with every accepted
    box is below the threshold, giving up on that box after ``max_tries`` draws. A draw's fate
    depends only on the boxes accepted before it, so acceptance over the whole sequence is greedy
    non-maximum suppression in draw order. That is computed as the fixed point of
    ``keep[i] = no kept j < i with IoU(j, i) >= threshold`` (Cluster-NMS, Zheng et al. 2020: the
    iteration is exact at convergence and converges in a few steps). The per-box try limit then only
    decides where the loop stops: a box "ends" at an acceptance or at every ``max_tries``-th
    consecutive rejection, and draws after the ``boxes_per_image``-th end are not made.

    Returns:
        ``(accepted [b, M] bool, finished [b] bool)``; ``finished`` is False where the sequence ran
        out before the loop would have stopped (more draws are needed to decide).
    """
    accepted, finished = _greedy_planar(draws.permute(2, 1, 0), boxes_per_image, iou_threshold, max_tries)
    return accepted.t(), finished


def _greedy_planar(
    draws: torch.Tensor, boxes_per_image: int, iou_threshold: float, max_tries: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_greedy_accept` on draws [4 (x1, y1, x2, y2), M, b] -> (accepted [M, b], finished [b])."""
    count = draws.shape[1]
    later, earlier, flat = _pairs(count)
    # only the pairs (i, j < i): half the work of the full matrix, and no mask
    first, second = draws.index_select(1, later), draws.index_select(1, earlier)  # [4, P, b]
    inter = torch.minimum(first[2:], second[2:]).sub_(torch.maximum(first[:2], second[:2])).clamp_min_(0)
    inter = inter[0].mul_(inter[1])  # [P, b]
    side = draws[2:] - draws[:2]
    area = side[0] * side[1]  # [M, b]
    # IoU >= t  <=>  inter >= t * (area_i + area_j - inter)  <=>  inter * (1 + t) >= t * (area_i + area_j)
    both = area.index_select(0, later).add_(area.index_select(0, earlier))
    found = inter.mul_(1.0 + iou_threshold) >= both.mul_(iou_threshold)
    conflict = area.new_zeros(count * count, area.shape[1], dtype=torch.uint8)
    conflict = conflict.index_copy_(0, flat, found.view(torch.uint8)).view(count, count, -1)  # [i, j, b]
    keep = torch.ones_like(area, dtype=torch.uint8)
    for _ in range(count):
        # a draw is kept when no kept earlier draw conflicts with it; exact once it stops changing
        new_keep = (conflict * keep).amax(dim=1).bitwise_xor_(1)
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
    keep = keep.view(torch.bool)
    if 0 < count < max_tries:
        # no run of max_tries rejections fits in the sequence: boxes end exactly at acceptances
        ends = keep.cumsum(dim=0)
        return keep & (ends <= boxes_per_image), ends[-1] >= boxes_per_image
    position = torch.arange(count).unsqueeze(1).expand_as(keep)
    last_accept = torch.where(keep, position, torch.full_like(position, -1)).cummax(dim=0).values
    rejections = position - last_accept  # consecutive rejections up to and including each draw
    box_end = keep | (torch.remainder(rejections, max_tries) == 0)
    ends_before = box_end.long().cumsum(dim=0) - box_end.long()
    accepted = keep & (ends_before < boxes_per_image)
    finished = (box_end.long().sum(dim=0) >= boxes_per_image) | (count >= boxes_per_image * max_tries)
    return accepted, finished


def sample_box_pairs(
    geometry1: torch.Tensor | Sequence[ViewGeometry | dict],
    geometry2: torch.Tensor | Sequence[ViewGeometry | dict],
    boxes_per_image: int = 10,
    min_box_size: float = 32.0,
    iou_threshold: float = 0.5,
    max_tries: int = 50,
    box_jitter: float = 0.0,
    generator: torch.Generator | None = None,
    box_sampling: str = "grid",
    clip: bool = True,
    return_source_boxes: bool = False,
) -> tuple[torch.Tensor, ...]:
    """Sample box pairs over the overlap of two views for a whole batch (see the module docstring).

    Args:
        geometry1: Query-view geometries: B :class:`ViewGeometry` (or dicts), or a [B, 9] tensor.
        geometry2: Key-view geometries, same form.
        boxes_per_image: Boxes wanted per image.
        min_box_size: Minimum box side, in view pixels.
        iou_threshold: A box overlapping an accepted box of its image with IoU >= this is re-drawn.
        max_tries: Draws per box before giving up on it.
        box_jitter: Optional independent jitter per view, as a fraction of the box size (0 = off).
        generator: Optional ``torch.Generator`` for reproducible sampling.
        box_sampling: ``"grid"`` (the release's) or ``"uniform"`` (size and position uniform in the
            whole intersection).
        clip: Clip boxes to their view (``False`` is for tests of the exact mapping).
        return_source_boxes: Also return the boxes in source pixels.

    Returns:
        ``(query_boxes, key_boxes)`` float32 [N, 5] rows ``(batch_index, x1, y1, x2, y2)`` in each
        view's pixel coordinates, row i of one paired with row i of the other, image-major (N may
        be 0); plus ``source_boxes`` [N, 5] (source pixels) when ``return_source_boxes``.
    """
    if boxes_per_image < 0 or max_tries < 1 or min_box_size <= 0:
        raise ValueError("boxes_per_image must be >= 0, max_tries >= 1 and min_box_size > 0")
    if box_sampling not in ("grid", "uniform"):
        raise ValueError(f"box_sampling must be 'grid' or 'uniform', got {box_sampling!r}")
    min_box_size = float(min_box_size)
    # float32 is exact to ~1e-3 px at SAR scene sizes and halves the memory traffic of the IoU tests.
    both = _as_geometry_pair(geometry1, geometry2)
    g1, g2 = both if both is not None else (_as_geometry_tensor(geometry1), _as_geometry_tensor(geometry2))
    if g1.shape != g2.shape:
        raise ValueError(
            f"geometry1 has {g1.shape[0]} rows, geometry2 {g2.shape[0]}: expected one per image each"
        )
    empty = torch.zeros(0, 5, dtype=torch.float32)
    no_boxes = (empty, empty.clone(), empty.clone()) if return_source_boxes else (empty, empty.clone())
    if g1.shape[0] == 0 or boxes_per_image == 0:
        return no_boxes
    # inference mode skips the autograd bookkeeping of every small op
    with torch.inference_mode():
        found = _sample(
            torch.stack([g1, g2])[..., list(_XY_ORDER)] if both is None else both,
            boxes_per_image,
            min_box_size,
            float(iou_threshold),
            int(max_tries),
            float(box_jitter),
            generator,
            box_sampling,
            clip,
            return_source_boxes,
        )
    if found is None:
        return no_boxes
    # inference tensors cannot be saved for backward (roi_align in the model does): hand back normal ones
    return tuple(boxes.clone() for boxes in found)


# One vectorised pass over the whole batch (draw, IoU, greedy accept, gather) in three steps that pass planar
# tensors ([axis, image] / [4, N]) between them, which is what makes it fast (benchmarks/boxes.py).
def _sample(
    geometry: torch.Tensor,
    boxes_per_image: int,
    min_box_size: float,
    iou_threshold: float,
    max_tries: int,
    box_jitter: float,
    generator: torch.Generator | None,
    box_sampling: str,
    clip: bool,
    return_source_boxes: bool,
) -> tuple[torch.Tensor, ...] | None:
    """:func:`sample_box_pairs` on both views' geometries [2, B, 9] (float32, ``_XY_ORDER``); None: no boxes."""
    space = _Intersection.of(geometry, min_box_size)
    if space is None:
        return None
    image_index, scaled = _accepted_boxes(
        space, boxes_per_image, min_box_size, iou_threshold, max_tries, generator, box_sampling
    )
    if image_index.shape[0] == 0:
        return None
    return _boxes_in_views(
        geometry, space, image_index, scaled, box_jitter, generator, clip, return_source_boxes
    )


@dataclass
class _Intersection:
    """Per image, the intersection of the two crops in the scaled space where boxes are drawn (planar tensors)."""

    offset: torch.Tensor  # [2 (view), 2 (x, y), B] crop offsets in source pixels
    output: torch.Tensor  # [2, 2, B] view sizes
    origin: torch.Tensor  # [2, B] intersection origin in source pixels
    zoom: torch.Tensor  # [2, 2, B] output / crop
    scale: torch.Tensor  # [2, B] per axis, the smaller zoom
    extent: torch.Tensor  # [2, B] intersection size in the scaled space
    images: torch.Tensor | None  # the images with room for a box (None: every image)

    @classmethod
    def of(cls, geometry: torch.Tensor, min_box_size: float) -> _Intersection | None:
        """From geometries [2, B, 9]; ``None`` when no image has room for a box of ``min_box_size``."""
        # [view, (offset, crop, output), axis (x, y), image]
        fields = geometry[..., :6].transpose(1, 2).reshape(2, 3, 2, -1)
        offset, crop, output = fields.unbind(dim=1)  # [2 (view), 2 (x, y), B]
        # Intersection of the two crops in source pixels, and the scaled space: per axis, the smaller zoom.
        origin = offset.amax(dim=0)  # [2, B]
        zoom = output / crop  # [2, 2, B]
        scale = zoom.amin(dim=0)
        extent = ((offset + crop).amin(dim=0) - origin) * scale
        usable = (extent >= min_box_size).all(dim=0)
        images = None  # None: every image
        if not bool(usable.all()):
            images = usable.nonzero().flatten()
            if images.numel() == 0:
                return None
        return cls(offset, output, origin, zoom, scale, extent, images)


def _accepted_boxes(
    space: _Intersection,
    boxes_per_image: int,
    min_box_size: float,
    iou_threshold: float,
    max_tries: int,
    generator: torch.Generator | None,
    box_sampling: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw and greedily accept boxes in the scaled space: (image index [N], boxes [4, N]), image-major."""
    extent, images = space.extent, space.images
    # Draw a short sequence per image first (most draws are accepted), then longer ones only for the
    # images whose loop has not stopped yet; acceptance is recomputed over the extended sequence.
    limit = boxes_per_image * max_tries
    length = min(2 * boxes_per_image, limit)
    draws = _draw_planar(
        extent if images is None else extent.index_select(1, images),
        length,
        min_box_size,
        generator,
        box_sampling,
    )  # [4, length, b]
    accepted, finished = _greedy_planar(draws, boxes_per_image, iou_threshold, max_tries)
    if bool(finished.all()):  # the usual case: one round
        return _take(draws, accepted, images)
    if images is None:
        images = torch.arange(extent.shape[1])
    image_parts, box_parts = [], []
    while True:
        done = finished.nonzero().flatten()
        parts = _take(draws.index_select(2, done), accepted.index_select(1, done), images[done])
        image_parts.append(parts[0])
        box_parts.append(parts[1])
        pending = (~finished).nonzero().flatten()
        if pending.numel() == 0:
            break
        images = images[pending]
        extra = min(length * 2, limit) - length
        length += extra
        more = _draw_planar(extent.index_select(1, images), extra, min_box_size, generator, box_sampling)
        draws = torch.cat([draws.index_select(2, pending), more], dim=1)
        accepted, finished = _greedy_planar(draws, boxes_per_image, iou_threshold, max_tries)
    # later rounds appended their images at the end: restore image-major order
    image_index, scaled = torch.cat(image_parts), torch.cat(box_parts, dim=1)
    order = torch.sort(image_index, stable=True).indices
    return image_index[order], scaled[:, order]


def _boxes_in_views(
    geometry: torch.Tensor,
    space: _Intersection,
    image_index: torch.Tensor,
    scaled: torch.Tensor,
    box_jitter: float,
    generator: torch.Generator | None,
    clip: bool,
    return_source_boxes: bool,
) -> tuple[torch.Tensor, ...]:
    """Boxes of the scaled intersection space -> source pixels -> both views' rows ``[N, 5]`` (image, x1, y1, x2,
    y2), plus the source boxes when asked."""
    count = image_index.shape[0]
    # Scaled intersection space -> source pixels -> both views at once, as [corner, axis, N] points.
    turns = torch.remainder(geometry[..., 8].round().long(), 4)  # [2, B]
    flags = torch.cat([geometry[..., 6:8], _turn_table()[turns]], dim=-1).transpose(1, 2)  # [2, 5, B]
    # everything per box comes from its image: one gather of a per-image table
    table = torch.cat(
        [
            space.scale,
            space.origin,
            space.offset.flatten(0, 1),
            space.zoom.flatten(0, 1),
            space.output.flatten(0, 1),
            flags.flatten(0, 1),
        ]
    )
    table = table.index_select(1, image_index)  # [26, N]
    source = scaled.view(2, 2, count) / table[0:2] + table[2:4]
    views = table[4:16].reshape(3, 2, 1, 2, count)  # (offset, zoom, output), [2, 1, 2, N] each
    offset, zoom, output = views.unbind(0)
    flags = (table[16:26] > 0.5).view(2, 1, 5, count)
    points = (source - offset) * zoom  # [2 (view), 2 (corner), 2 (axis), N]
    # Flips mirror an axis (and swap its low / high corner); a quarter turn (x, y) -> (y, W - x),
    # applied k times, mirrors the axes given by _TURNS then, for odd k, swaps x and y.
    points = torch.where(flags[:, :, 0:2], output - points.flip(1), points)
    points = torch.where(flags[:, :, 2:4], output - points.flip(1), points)
    swap = flags[:, :, 4:5]
    points = torch.where(swap, points.flip(2), points)
    if box_jitter > 0:
        boxes = _jitter(points.permute(0, 3, 1, 2).reshape(2 * count, 4), box_jitter, generator)
        points = boxes.view(2, count, 2, 2).permute(0, 2, 3, 1)
    if clip:  # to the view: (output width, height), swapped by odd quarter turns
        points = torch.minimum(points.clamp_min(0.0), torch.where(swap, output.flip(2), output))
    pairs = torch.empty(2, count, 5)
    pairs[..., 0] = image_index
    pairs[..., 1:].view(2, count, 2, 2).copy_(points.permute(0, 3, 1, 2))
    if return_source_boxes:
        source_rows = torch.empty(count, 5)
        source_rows[:, 0] = image_index
        source_rows[:, 1:].view(count, 2, 2).copy_(source.permute(2, 0, 1))
        return pairs[0], pairs[1], source_rows
    return pairs[0], pairs[1]


def _take(
    draws: torch.Tensor, accepted: torch.Tensor, images: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Accepted draws of [4, M, b] draws -> (image index [N], boxes [4, N]), image-major, in draw order."""
    count = draws.shape[1]
    flat = accepted.t().reshape(-1).nonzero().squeeze(1)  # image * M + draw
    rows = torch.div(flat, count, rounding_mode="floor")
    boxes = draws.transpose(1, 2).reshape(4, -1).index_select(1, flat)
    return (rows if images is None else images.index_select(0, rows)), boxes


class PretrainingCollator:
    """``collate_fn`` for pre-training: stacks the views and samples the box pairs in the DataLoader worker.

    Takes a list of samples ``{"view1", "geometry1", "view2", "geometry2"}`` (what
    :class:`~di3cl_hf.augmentation.PretrainingTransform` returns; views are float [C, S, S], geometries
    :class:`~di3cl_hf.augmentation.ViewGeometry`, dicts or [9] tensors) and returns
    ``{"pixel_values", "key_pixel_values", "query_boxes", "key_boxes"}``, ready for
    ``DI3CLForPreTraining(**batch)``.

    Randomness: with ``seed=None`` boxes come from torch's global RNG, which ``DataLoader`` seeds
    per worker (so ``torch.manual_seed`` in the main process makes runs reproducible). With a
    ``seed``, each process gets its own ``torch.Generator`` seeded with ``seed + worker id``.

    Args:
        boxes_per_image: Boxes per image (config ``boxes_per_image``).
        min_box_size: Minimum box side in view pixels (config ``min_box_size``).
        iou_threshold: IoU rejection threshold (config ``box_iou_threshold``).
        max_tries: Draws per box before it is dropped.
        box_jitter: Optional jitter fraction (config ``box_jitter``).
        box_sampling: ``"grid"`` or ``"uniform"`` (config ``box_sampling``).
        seed: Optional seed (see above).
    """

    def __init__(
        self,
        boxes_per_image: int = 10,
        min_box_size: float = 32.0,
        iou_threshold: float = 0.5,
        max_tries: int = 50,
        box_jitter: float = 0.0,
        box_sampling: str = "grid",
        seed: int | None = None,
    ) -> None:
        if box_sampling not in ("grid", "uniform"):
            raise ValueError(f"box_sampling must be 'grid' or 'uniform', got {box_sampling!r}")
        self.boxes_per_image = int(boxes_per_image)
        self.min_box_size = float(min_box_size)
        self.iou_threshold = float(iou_threshold)
        self.max_tries = int(max_tries)
        self.box_jitter = float(box_jitter)
        self.box_sampling = box_sampling
        self.seed = seed
        self._generator: torch.Generator | None = None

    @classmethod
    def from_config(cls, config: Any, **kwargs: Any) -> PretrainingCollator:
        """Build from a ``DI3CLConfig`` (boxes_per_image, min_box_size, box_iou_threshold, box_jitter, box_sampling)."""
        settings = {
            "boxes_per_image": getattr(config, "boxes_per_image", 10),
            "min_box_size": getattr(config, "min_box_size", 32),
            "iou_threshold": getattr(config, "box_iou_threshold", 0.5),
            "box_jitter": getattr(config, "box_jitter", 0.0),
            "box_sampling": getattr(config, "box_sampling", "grid"),
        }
        settings.update(kwargs)
        return cls(**settings)

    def _get_generator(self) -> torch.Generator | None:
        if self.seed is None:
            return None
        if self._generator is None:
            info = torch.utils.data.get_worker_info()
            worker = 0 if info is None else info.id
            self._generator = torch.Generator().manual_seed(int(self.seed) + worker)
        return self._generator

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not samples:
            raise ValueError("PretrainingCollator got an empty list of samples")
        missing = {"view1", "geometry1", "view2", "geometry2"} - set(samples[0])
        if missing:
            raise KeyError(
                f"pre-training samples need keys view1, geometry1, view2, geometry2; missing {sorted(missing)}"
            )
        pixel_values = torch.stack([torch.as_tensor(s["view1"], dtype=torch.float32) for s in samples])
        key_pixel_values = torch.stack([torch.as_tensor(s["view2"], dtype=torch.float32) for s in samples])
        query_boxes, key_boxes = sample_box_pairs(
            [s["geometry1"] for s in samples],
            [s["geometry2"] for s in samples],
            boxes_per_image=self.boxes_per_image,
            min_box_size=self.min_box_size,
            iou_threshold=self.iou_threshold,
            max_tries=self.max_tries,
            box_jitter=self.box_jitter,
            box_sampling=self.box_sampling,
            generator=self._get_generator(),
        )
        return {
            "pixel_values": pixel_values,
            "key_pixel_values": key_pixel_values,
            "query_boxes": query_boxes,
            "key_boxes": key_boxes,
        }


__all__ = ["PretrainingCollator", "sample_box_pairs"]
