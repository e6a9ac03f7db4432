"""Box pairs over the overlap of two views (METHOD.md section 4), vectorised, and the pre-training collator.

For each image of a batch, with the two views' :class:`~di3cl_hf.augmentation.ViewGeometry`:

1. The intersection of the two crops is taken in source pixels.
2. It is measured in a space scaled, per axis, by the smaller of the two views' zoom factors
   (output size / crop size), so a box of at least ``min_box_size`` there is at least that big in
   both views. If the scaled intersection is narrower or shorter than ``min_box_size``, the image
   contributes no boxes.
3. ``boxes_per_image`` boxes are drawn there, grid-based: per draw, a random number of cells per
   axis (1 .. floor(extent / min_box_size), so every cell fits a minimal box), a random cell, and a
   box of random size in [min_box_size, cell size] at a random position inside that cell.
4. A draw whose IoU with an already accepted box of the same image is >= ``iou_threshold`` is
   rejected and re-drawn, up to ``max_tries`` draws per box; if all fail, that box is dropped (the
   image gives fewer boxes), so accepted boxes of one image always overlap below the threshold.
5. Each box is mapped to source pixels and from there into each view (crop offset, per-axis zoom,
   horizontal / vertical flip, 90-degree rotations), optionally jittered, and clipped to the view.

Everything is batched tensor work: the only Python loop is over the ``boxes_per_image`` slots (the
IoU test needs the boxes accepted before); all ``max_tries`` re-draws of a slot are drawn at once
and the first acceptable one is taken, which has the same distribution as re-drawing one at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.utils.data

from .augmentation import GEOMETRY_FIELDS, ViewGeometry, geometries_to_tensor, source_to_view


def _as_geometry_tensor(geometry: torch.Tensor | Sequence[ViewGeometry | dict]) -> torch.Tensor:
    if isinstance(geometry, torch.Tensor):
        geometry = geometry.to(torch.float64)
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
    """Map source boxes [B, N, 4] into view boxes [B, N, 4] (any flip / rotation; x1 < x2, y1 < y2)."""
    corners = source_boxes.reshape(source_boxes.shape[0], -1, 2)  # [B, 2N, 2]: (x1, y1), (x2, y2), ...
    mapped = source_to_view(corners, geometry).reshape(source_boxes.shape[0], -1, 2, 2)
    low = torch.minimum(mapped[:, :, 0], mapped[:, :, 1])
    high = torch.maximum(mapped[:, :, 0], mapped[:, :, 1])
    return torch.cat([low, high], dim=-1)


def _jitter(boxes: torch.Tensor, amount: float, generator: torch.Generator | None) -> torch.Tensor:
    """Shift every coordinate by up to ``amount`` times the box's width / height."""
    size = torch.cat([boxes[..., 2:] - boxes[..., :2]] * 2, dim=-1)
    noise = torch.rand(boxes.shape, generator=generator, dtype=boxes.dtype) * 2.0 - 1.0
    moved = boxes + noise * amount * size
    low = torch.minimum(moved[..., :2], moved[..., 2:])
    high = torch.maximum(moved[..., :2], moved[..., 2:])
    return torch.cat([low, high], dim=-1)


def _clip(boxes: torch.Tensor, view_h: torch.Tensor, view_w: torch.Tensor) -> torch.Tensor:
    w = view_w.reshape(-1, 1)
    h = view_h.reshape(-1, 1)
    zero = torch.zeros_like(boxes[..., 0])
    x1 = torch.minimum(torch.maximum(boxes[..., 0], zero), w)
    y1 = torch.minimum(torch.maximum(boxes[..., 1], zero), h)
    x2 = torch.minimum(torch.maximum(boxes[..., 2], zero), w)
    y2 = torch.minimum(torch.maximum(boxes[..., 3], zero), h)
    return torch.stack([x1, y1, x2, y2], dim=-1)


def sample_box_pairs(
    geometry1: torch.Tensor | Sequence[ViewGeometry | dict],
    geometry2: torch.Tensor | Sequence[ViewGeometry | dict],
    boxes_per_image: int = 10,
    min_box_size: float = 32.0,
    iou_threshold: float = 0.5,
    max_tries: int = 50,
    box_jitter: float = 0.0,
    generator: torch.Generator | None = None,
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
        clip: Clip boxes to their view (``False`` is for tests of the exact mapping).
        return_source_boxes: Also return the boxes in source pixels.

    Returns:
        ``(query_boxes, key_boxes)`` float32 [N, 5] rows ``(batch_index, x1, y1, x2, y2)`` in each
        view's pixel coordinates, row i of one paired with row i of the other (N may be 0); plus
        ``source_boxes`` [N, 5] (float64) when ``return_source_boxes``.
    """
    g1 = _as_geometry_tensor(geometry1)
    g2 = _as_geometry_tensor(geometry2)
    if g1.shape != g2.shape:
        raise ValueError(
            f"geometry1 has {g1.shape[0]} rows, geometry2 {g2.shape[0]}: expected one per image each"
        )
    if boxes_per_image < 0 or max_tries < 1 or min_box_size <= 0:
        raise ValueError("boxes_per_image must be >= 0, max_tries >= 1 and min_box_size > 0")
    batch = g1.shape[0]
    dtype = torch.float64
    empty = torch.zeros(0, 5, dtype=torch.float32)
    if batch == 0 or boxes_per_image == 0:
        return (empty, empty.clone(), empty.double()) if return_source_boxes else (empty, empty.clone())

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
    usable = (extent_w >= min_box_size) & (extent_h >= min_box_size)
    extent_w = torch.where(usable, extent_w, torch.full_like(extent_w, float(min_box_size)))
    extent_h = torch.where(usable, extent_h, torch.full_like(extent_h, float(min_box_size)))
    max_cells_x = torch.floor(extent_w / min_box_size).clamp_min(1).unsqueeze(1)  # [B, 1]
    max_cells_y = torch.floor(extent_h / min_box_size).clamp_min(1).unsqueeze(1)
    extent_w, extent_h = extent_w.unsqueeze(1), extent_h.unsqueeze(1)

    accepted = torch.zeros(batch, boxes_per_image, 4, dtype=dtype)
    kept = torch.zeros(batch, boxes_per_image, dtype=torch.bool)
    rows = torch.arange(batch)
    for slot in range(boxes_per_image):
        tries = 1 if slot == 0 else max_tries
        u = torch.rand(batch, tries, 8, generator=generator, dtype=dtype)
        cells_x = torch.floor(u[..., 0] * max_cells_x).clamp(max=max_cells_x - 1) + 1
        cells_y = torch.floor(u[..., 1] * max_cells_y).clamp(max=max_cells_y - 1) + 1
        cell_w = extent_w / cells_x
        cell_h = extent_h / cells_y
        cell_x0 = torch.floor(u[..., 2] * cells_x).clamp(max=cells_x - 1) * cell_w
        cell_y0 = torch.floor(u[..., 3] * cells_y).clamp(max=cells_y - 1) * cell_h
        box_w = min_box_size + u[..., 4] * (cell_w - min_box_size)
        box_h = min_box_size + u[..., 5] * (cell_h - min_box_size)
        x0 = cell_x0 + u[..., 6] * (cell_w - box_w)
        y0 = cell_y0 + u[..., 7] * (cell_h - box_h)
        candidates = torch.stack([x0, y0, x0 + box_w, y0 + box_h], dim=-1)  # [B, T, 4]
        if slot == 0:
            choice = torch.zeros(batch, dtype=torch.long)
            found = torch.ones(batch, dtype=torch.bool)
        else:
            iou = _pairwise_iou(candidates, accepted[:, :slot])  # [B, T, slot]
            iou = torch.where(kept[:, :slot].unsqueeze(1), iou, torch.zeros_like(iou))
            acceptable = (iou < iou_threshold).all(dim=-1)  # [B, T]
            found = acceptable.any(dim=-1)
            choice = acceptable.to(torch.uint8).argmax(dim=-1)  # first acceptable draw
        accepted[:, slot] = candidates[rows, choice]
        kept[:, slot] = found & usable

    # Scaled intersection space -> source pixels.
    origin = torch.stack([ix0, iy0, ix0, iy0], dim=-1).unsqueeze(1)
    scale = torch.stack([scale_x, scale_y, scale_x, scale_y], dim=-1).unsqueeze(1)
    source = origin + accepted / scale  # [B, N, 4]
    boxes1 = _to_view(source, g1)
    boxes2 = _to_view(source, g2)
    if box_jitter > 0:
        boxes1 = _jitter(boxes1, box_jitter, generator)
        boxes2 = _jitter(boxes2, box_jitter, generator)
    if clip:
        boxes1 = _clip(boxes1, *_view_size(g1))
        boxes2 = _clip(boxes2, *_view_size(g2))

    index = kept.nonzero(as_tuple=False)  # [N, 2] (image, slot), image-major
    batch_index = index[:, :1].to(dtype)
    query_boxes = torch.cat([batch_index, boxes1[index[:, 0], index[:, 1]]], dim=1).float()
    key_boxes = torch.cat([batch_index, boxes2[index[:, 0], index[:, 1]]], dim=1).float()
    if return_source_boxes:
        return query_boxes, key_boxes, torch.cat([batch_index, source[index[:, 0], index[:, 1]]], dim=1)
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
        seed: Optional seed (see above).
    """

    def __init__(
        self,
        boxes_per_image: int = 10,
        min_box_size: float = 32.0,
        iou_threshold: float = 0.5,
        max_tries: int = 50,
        box_jitter: float = 0.0,
        seed: int | None = None,
    ) -> None:
        self.boxes_per_image = int(boxes_per_image)
        self.min_box_size = float(min_box_size)
        self.iou_threshold = float(iou_threshold)
        self.max_tries = int(max_tries)
        self.box_jitter = float(box_jitter)
        self.seed = seed
        self._generator: torch.Generator | None = None

    @classmethod
    def from_config(cls, config: Any, **kwargs: Any) -> PretrainingCollator:
        """Build from a ``DI3CLConfig`` (``boxes_per_image``, ``min_box_size``, ``box_iou_threshold``, ``box_jitter``)."""
        settings = {
            "boxes_per_image": getattr(config, "boxes_per_image", 10),
            "min_box_size": getattr(config, "min_box_size", 32),
            "iou_threshold": getattr(config, "box_iou_threshold", 0.5),
            "box_jitter": getattr(config, "box_jitter", 0.0),
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
            generator=self._get_generator(),
        )
        return {
            "pixel_values": pixel_values,
            "key_pixel_values": key_pixel_values,
            "query_boxes": query_boxes,
            "key_boxes": key_boxes,
        }


__all__ = ["PretrainingCollator", "sample_box_pairs"]
