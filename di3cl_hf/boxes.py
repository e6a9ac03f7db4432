"""Box pairs over the overlap of two views (METHOD.md section 4), vectorised, and the pre-training collator.

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

from collections.abc import Sequence
from typing import Any

import torch
import torch.utils.data

from .augmentation import GEOMETRY_FIELDS, ViewGeometry, geometries_to_tensor


def _as_geometry_tensor(geometry: torch.Tensor | Sequence[ViewGeometry | dict]) -> torch.Tensor:
    if isinstance(geometry, torch.Tensor):
        geometry = geometry.to(torch.float32)
        if geometry.ndim != 2 or geometry.shape[1] != len(GEOMETRY_FIELDS):
            raise ValueError(
                f"geometry tensor must be [B, {len(GEOMETRY_FIELDS)}], got {tuple(geometry.shape)}"
            )
        return geometry
    return geometries_to_tensor(geometry)


def _pairwise_iou(candidates: torch.Tensor, accepted: torch.Tensor) -> torch.Tensor:
    """IoU of candidates [B, T, 4] against accepted [B, J, 4] -> [B, T, J] (x1, y1, x2, y2 boxes)."""
    cand = candidates.unsqueeze(2)  # [B, T, 1, 4]
    acc = accepted.unsqueeze(1)  # [B, 1, J, 4]
    inter_w = (torch.minimum(cand[..., 2], acc[..., 2]) - torch.maximum(cand[..., 0], acc[..., 0])).clamp_min(
        0
    )
    inter_h = (torch.minimum(cand[..., 3], acc[..., 3]) - torch.maximum(cand[..., 1], acc[..., 1])).clamp_min(
        0
    )
    inter = inter_w * inter_h
    area_c = (cand[..., 2] - cand[..., 0]) * (cand[..., 3] - cand[..., 1])
    area_a = (acc[..., 2] - acc[..., 0]) * (acc[..., 3] - acc[..., 1])
    return inter / (area_c + area_a - inter).clamp_min(1e-12)


def _view_size(geometry: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(height, width) [B] of each final view (after rotation)."""
    out_h, out_w, k = geometry[:, 4], geometry[:, 5], torch.remainder(geometry[:, 8].round(), 4)
    odd = torch.remainder(k, 2) > 0.5
    return torch.where(odd, out_w, out_h), torch.where(odd, out_h, out_w)


def _to_view(source_boxes: torch.Tensor, geometry: torch.Tensor) -> torch.Tensor:
    """Map source boxes [N, 4] into their views' pixels [N, 4] (geometry [N, 9]); x1 < x2, y1 < y2.

    Closed form of :func:`~di3cl_hf.augmentation.source_to_view` for axis-aligned boxes: scale and
    offset, mirror the ranges for flips, then a quarter turn ``(x, y) -> (y, W - x)`` maps the
    x-range onto the mirrored y-range and the y-range onto the x-range.
    """
    top, left, height, width, out_h, out_w, hflip, vflip, turns = geometry.unbind(dim=-1)
    scale_x, scale_y = out_w / width, out_h / height
    xa, xb = (source_boxes[:, 0] - left) * scale_x, (source_boxes[:, 2] - left) * scale_x
    ya, yb = (source_boxes[:, 1] - top) * scale_y, (source_boxes[:, 3] - top) * scale_y
    hflip, vflip = hflip > 0.5, vflip > 0.5
    xa, xb = torch.where(hflip, out_w - xb, xa), torch.where(hflip, out_w - xa, xb)
    ya, yb = torch.where(vflip, out_h - yb, ya), torch.where(vflip, out_h - ya, yb)
    options = torch.stack(
        [
            torch.stack([xa, ya, xb, yb], dim=-1),  # k = 0
            torch.stack([ya, out_w - xb, yb, out_w - xa], dim=-1),  # k = 1
            torch.stack([out_w - xb, out_h - yb, out_w - xa, out_h - ya], dim=-1),  # k = 2
            torch.stack([out_h - yb, xa, out_h - ya, xb], dim=-1),  # k = 3
        ],
        dim=1,
    )  # [N, 4 (k), 4]
    k = torch.remainder(turns.round().long(), 4)
    return options[torch.arange(options.shape[0]), k]


def _jitter(boxes: torch.Tensor, amount: float, generator: torch.Generator | None) -> torch.Tensor:
    """Shift every coordinate by up to ``amount`` times the box's width / height."""
    size = torch.cat([boxes[..., 2:] - boxes[..., :2]] * 2, dim=-1)
    noise = torch.rand(boxes.shape, generator=generator, dtype=boxes.dtype) * 2.0 - 1.0
    moved = boxes + noise * amount * size
    low = torch.minimum(moved[..., :2], moved[..., 2:])
    high = torch.maximum(moved[..., :2], moved[..., 2:])
    return torch.cat([low, high], dim=-1)


def _clip(boxes: torch.Tensor, view_h: torch.Tensor, view_w: torch.Tensor) -> torch.Tensor:
    """Clip boxes [N, 4] to their views ([N] heights and widths)."""
    limits = torch.stack([view_w, view_h, view_w, view_h], dim=-1)
    return torch.minimum(boxes.clamp_min(0.0), limits)


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
    extent_w, extent_h = extent_w.unsqueeze(1), extent_h.unsqueeze(1)
    max_cells_x = torch.floor(extent_w / min_box_size).clamp_min(1)
    max_cells_y = torch.floor(extent_h / min_box_size).clamp_min(1)
    if sampling == "uniform":
        max_cells_x, max_cells_y = torch.ones_like(max_cells_x), torch.ones_like(max_cells_y)
    u = torch.rand(extent_w.shape[0], count, 8, generator=generator, dtype=extent_w.dtype)
    cells_x = torch.minimum(torch.floor(u[..., 0] * max_cells_x), max_cells_x - 1) + 1
    cells_y = torch.minimum(torch.floor(u[..., 1] * max_cells_y), max_cells_y - 1) + 1
    cell_w = extent_w / cells_x
    cell_h = extent_h / cells_y
    cell_x0 = torch.minimum(torch.floor(u[..., 2] * cells_x), cells_x - 1) * cell_w
    cell_y0 = torch.minimum(torch.floor(u[..., 3] * cells_y), cells_y - 1) * cell_h
    box_w = min_box_size + u[..., 4] * (cell_w - min_box_size)
    box_h = min_box_size + u[..., 5] * (cell_h - min_box_size)
    x0 = cell_x0 + u[..., 6] * (cell_w - box_w)
    y0 = cell_y0 + u[..., 7] * (cell_h - box_h)
    return torch.stack([x0, y0, x0 + box_w, y0 + box_h], dim=-1)


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
    count = draws.shape[1]
    x1, y1, x2, y2 = (draws[..., i] for i in range(4))  # [b, M]
    inter_w = (
        torch.minimum(x2.unsqueeze(2), x2.unsqueeze(1)) - torch.maximum(x1.unsqueeze(2), x1.unsqueeze(1))
    ).clamp_min_(0)
    inter_h = (
        torch.minimum(y2.unsqueeze(2), y2.unsqueeze(1)) - torch.maximum(y1.unsqueeze(2), y1.unsqueeze(1))
    ).clamp_min_(0)
    inter = inter_w.mul_(inter_h)  # [b, M (later i), M (earlier j)]
    area = (x2 - x1) * (y2 - y1)
    # IoU >= t  <=>  inter >= t * (area_i + area_j - inter)  <=>  inter * (1 + t) >= t * (area_i + area_j)
    conflict = inter.mul_(1.0 + iou_threshold) >= (area.unsqueeze(2) + area.unsqueeze(1)).mul_(iou_threshold)
    conflict &= torch.ones(count, count, dtype=torch.bool).tril(diagonal=-1)
    conflict = conflict.to(draws.dtype)
    keep = torch.ones(draws.shape[:2], dtype=torch.bool)
    for _ in range(count):
        # kept earlier draws each draw conflicts with (a batched mat-vec; exact small integers in float)
        new_keep = torch.bmm(conflict, keep.to(draws.dtype).unsqueeze(-1)).squeeze(-1) == 0
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
    position = torch.arange(count).expand_as(keep)
    last_accept = torch.where(keep, position, torch.full_like(position, -1)).cummax(dim=1).values
    rejections = position - last_accept  # consecutive rejections up to and including each draw
    box_end = keep | (torch.remainder(rejections, max_tries) == 0)
    ends_before = box_end.long().cumsum(dim=1) - box_end.long()
    accepted = keep & (ends_before < boxes_per_image)
    finished = (box_end.long().sum(dim=1) >= boxes_per_image) | (count >= boxes_per_image * max_tries)
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
    g1 = _as_geometry_tensor(geometry1)
    g2 = _as_geometry_tensor(geometry2)
    if g1.shape != g2.shape:
        raise ValueError(
            f"geometry1 has {g1.shape[0]} rows, geometry2 {g2.shape[0]}: expected one per image each"
        )
    if boxes_per_image < 0 or max_tries < 1 or min_box_size <= 0:
        raise ValueError("boxes_per_image must be >= 0, max_tries >= 1 and min_box_size > 0")
    if box_sampling not in ("grid", "uniform"):
        raise ValueError(f"box_sampling must be 'grid' or 'uniform', got {box_sampling!r}")
    min_box_size = float(min_box_size)
    # float32 is exact to ~1e-3 px at SAR scene sizes and halves the memory traffic of the IoU tests.
    g1, g2 = g1.float(), g2.float()
    empty = torch.zeros(0, 5, dtype=torch.float32)
    no_boxes = (empty, empty.clone(), empty.clone()) if return_source_boxes else (empty, empty.clone())
    if g1.shape[0] == 0 or boxes_per_image == 0:
        return no_boxes

    top1, left1, height1, width1, out_h1, out_w1 = (g1[:, i] for i in range(6))
    top2, left2, height2, width2, out_h2, out_w2 = (g2[:, i] for i in range(6))
    # Intersection of the two crops in source pixels.
    ix0 = torch.maximum(left1, left2)
    iy0 = torch.maximum(top1, top2)
    ix1 = torch.minimum(left1 + width1, left2 + width2)
    iy1 = torch.minimum(top1 + height1, top2 + height2)
    # The scaled space: per axis, the smaller zoom of the two views.
    scale_x = torch.minimum(out_w1 / width1, out_w2 / width2)
    scale_y = torch.minimum(out_h1 / height1, out_h2 / height2)
    extent_w = (ix1 - ix0) * scale_x
    extent_h = (iy1 - iy0) * scale_y
    images = ((extent_w >= min_box_size) & (extent_h >= min_box_size)).nonzero().flatten()
    if images.numel() == 0:
        return no_boxes

    # Draw a short sequence per image first (most draws are accepted), then longer ones only for the
    # images whose loop has not stopped yet; acceptance is recomputed over the extended sequence.
    limit = boxes_per_image * max_tries
    length = min(2 * boxes_per_image, limit)
    draws = _draw_candidates(
        extent_w[images], extent_h[images], length, min_box_size, generator, box_sampling
    )
    image_parts, box_parts = [], []
    while True:
        accepted, finished = _greedy_accept(draws, boxes_per_image, iou_threshold, max_tries)
        done = finished.nonzero().flatten()
        where = accepted[done].nonzero()  # (row in done, draw index), in draw order
        image_parts.append(images[done][where[:, 0]])
        box_parts.append(draws[done][where[:, 0], where[:, 1]])
        pending = (~finished).nonzero().flatten()
        if pending.numel() == 0:
            break
        images = images[pending]
        extra = min(length * 2, limit) - length
        length += extra
        more = _draw_candidates(
            extent_w[images], extent_h[images], extra, min_box_size, generator, box_sampling
        )
        draws = torch.cat([draws[pending], more], dim=1)
    image_index, scaled = image_parts[0], box_parts[0]
    if len(image_parts) > 1:  # later rounds appended their images at the end: restore image-major order
        image_index, scaled = torch.cat(image_parts), torch.cat(box_parts)
        order = torch.sort(image_index, stable=True).indices
        image_index, scaled = image_index[order], scaled[order]
    if image_index.numel() == 0:
        return no_boxes

    # Scaled intersection space -> source pixels -> both views at once.
    origin = torch.stack([ix0, iy0, ix0, iy0], dim=-1)[image_index]
    scale = torch.stack([scale_x, scale_y, scale_x, scale_y], dim=-1)[image_index]
    source = origin + scaled / scale  # [N, 4]
    count = source.shape[0]
    geometry = torch.cat([g1[image_index], g2[image_index]])  # [2N, 9]
    boxes = _to_view(torch.cat([source, source]), geometry)  # [2N, 4]
    if box_jitter > 0:
        boxes = _jitter(boxes, box_jitter, generator)
    if clip:
        boxes = _clip(boxes, *_view_size(geometry))
    boxes1, boxes2 = boxes[:count], boxes[count:]
    batch_index = image_index.to(torch.float32).unsqueeze(1)
    query_boxes = torch.cat([batch_index, boxes1], dim=1)
    key_boxes = torch.cat([batch_index, boxes2], dim=1)
    if return_source_boxes:
        return query_boxes, key_boxes, torch.cat([batch_index, source], dim=1)
    return query_boxes, key_boxes


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
