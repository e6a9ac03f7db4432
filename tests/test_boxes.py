"""Box pairs from two views' geometry: mapping, containment, sizes, IoU rejection, physical content."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import box_iou, roi_align

from di3cl_hf.training.augmentation import (
    TwoViewTransform,
    ViewGeometry,
    geometries_to_tensor,
    view_to_source,
)
from di3cl_hf.training.boxes import PretrainingCollator, _draw_candidates, _greedy_accept, sample_box_pairs

SEEDS = range(40)


def _random_geometries(seed: int, batch: int = 16, size: int = 96, source: tuple[int, int] = (150, 130)):
    """Geometries with every flip / rotation, non-square crops and a non-square source."""
    transform = TwoViewTransform(
        size,
        scale=(0.2, 1.0),
        hflip_p=0.5,
        vflip_p=0.5,
        rot90=True,
        generator=torch.Generator().manual_seed(seed),
    )
    g1 = [transform.sample_geometry(*source) for _ in range(batch)]
    g2 = [transform.sample_geometry(*source) for _ in range(batch)]
    return g1, g2


def _back_to_source(boxes: torch.Tensor, geometries: list[ViewGeometry]) -> torch.Tensor:
    geometry = geometries_to_tensor(geometries)[boxes[:, 0].long()]
    corners = boxes[:, 1:].double().reshape(-1, 2, 2)
    points = view_to_source(corners, geometry)
    return torch.cat([points.min(dim=1).values, points.max(dim=1).values], dim=-1)


@pytest.mark.parametrize("seed", SEEDS)
def test_box_pairs_map_back_to_the_same_source_region(seed):
    g1, g2 = _random_geometries(seed)
    query, key, source = sample_box_pairs(
        g1,
        g2,
        boxes_per_image=6,
        min_box_size=16,
        generator=torch.Generator().manual_seed(seed),
        clip=False,
        return_source_boxes=True,
    )
    assert query.shape == key.shape and query.shape[1] == 5
    assert torch.equal(query[:, 0], key[:, 0])
    if query.shape[0] == 0:
        return
    from_query = _back_to_source(query, g1)
    from_key = _back_to_source(key, g2)
    assert torch.allclose(from_query, from_key, atol=1.0, rtol=0)
    assert torch.allclose(from_query, source[:, 1:].double(), atol=1.0, rtol=0)


@pytest.mark.parametrize("seed", SEEDS)
def test_boxes_inside_views_large_enough_and_not_overlapping(seed):
    g1, g2 = _random_geometries(seed)
    min_size, threshold = 16.0, 0.5
    query, key = sample_box_pairs(
        g1,
        g2,
        boxes_per_image=8,
        min_box_size=min_size,
        iou_threshold=threshold,
        generator=torch.Generator().manual_seed(seed),
        box_sampling="grid" if seed % 2 else "uniform",
    )
    for boxes, geometries in ((query, g1), (key, g2)):
        sizes = torch.tensor(
            [geometries[int(i)].view_size for i in boxes[:, 0]], dtype=torch.float32
        ).reshape(-1, 2)
        x1, y1, x2, y2 = boxes[:, 1:].unbind(dim=1)
        assert (x1 >= 0).all() and (y1 >= 0).all()
        assert (x2 <= sizes[:, 1]).all() and (y2 <= sizes[:, 0]).all()
        assert ((x2 - x1) >= min_size - 1e-3).all() and ((y2 - y1) >= min_size - 1e-3).all()
        for image in boxes[:, 0].unique():
            own = boxes[boxes[:, 0] == image, 1:]
            iou = box_iou(own, own)
            iou.fill_diagonal_(0)
            assert (iou < threshold).all()
    # at most boxes_per_image per image
    assert torch.bincount(query[:, 0].long()).max() <= 8 if query.numel() else True


def test_non_overlapping_or_too_small_overlap_gives_no_boxes():
    left = ViewGeometry(0, 0, 50, 50, 64, 64)
    right = ViewGeometry(0, 60, 50, 50, 64, 64, hflip=True, rot90=1)
    sliver = ViewGeometry(0, 40, 50, 50, 64, 64)  # overlap 10 source px = 12.8 view px < 32
    query, key = sample_box_pairs([left, left], [right, sliver], boxes_per_image=10, min_box_size=32)
    assert query.shape == (0, 5) and key.shape == (0, 5)
    # an image with a good overlap next to one without: only the good one gets boxes, with its batch index
    query, key = sample_box_pairs([left, left], [right, left], boxes_per_image=10, min_box_size=16)
    assert query.shape[0] > 0 and set(query[:, 0].tolist()) == {1.0}


def test_identical_views_give_identical_boxes_and_batch_order():
    g = ViewGeometry(10, 20, 80, 60, 64, 64)
    query, key = sample_box_pairs([g] * 3, [g] * 3, boxes_per_image=5, min_box_size=16)
    assert torch.allclose(query, key)
    assert torch.equal(query[:, 0], torch.sort(query[:, 0]).values)


def test_deterministic_given_generator_and_tensor_input():
    g1, g2 = _random_geometries(3)
    a = sample_box_pairs(g1, g2, generator=torch.Generator().manual_seed(7), min_box_size=16)
    b = sample_box_pairs(
        geometries_to_tensor(g1),
        geometries_to_tensor(g2),
        generator=torch.Generator().manual_seed(7),
        min_box_size=16,
    )
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    c = sample_box_pairs(g1, g2, generator=torch.Generator().manual_seed(8), min_box_size=16)
    assert not torch.equal(a[0], c[0])


def _release_loop(draws: torch.Tensor, boxes_per_image: int, threshold: float, max_tries: int) -> list[int]:
    """The release's loop over one image's sequence of draws: accepted draw indices."""
    accepted: list[int] = []
    position = 0
    for _ in range(boxes_per_image):
        for _try in range(max_tries):
            if position >= draws.shape[0]:
                return accepted
            box = draws[position : position + 1]
            ok = not accepted or bool((box_iou(box, draws[accepted]) < threshold).all())
            position += 1
            if ok:
                accepted.append(position - 1)
                break
    return accepted


@pytest.mark.parametrize("max_tries", [1, 2, 3, 50])
def test_greedy_replay_equals_the_sequential_loop(max_tries):
    generator = torch.Generator().manual_seed(max_tries)
    # small intersections make rejections (and exhausted tries) frequent
    extent = torch.tensor([40.0, 50.0, 70.0, 200.0] * 8)
    boxes_per_image = 6
    draws = _draw_candidates(extent, extent.flip(0), boxes_per_image * max_tries, 16.0, generator)
    accepted, finished = _greedy_accept(draws, boxes_per_image, 0.3, max_tries)
    assert finished.all()
    for image in range(draws.shape[0]):
        expected = _release_loop(draws[image], boxes_per_image, 0.3, max_tries)
        assert accepted[image].nonzero().flatten().tolist() == expected


def test_unfinished_short_sequences_are_reported():
    draws = _draw_candidates(
        torch.tensor([33.0]), torch.tensor([33.0]), 3, 32.0, torch.Generator().manual_seed(0)
    )
    # a 33x33 area with boxes >= 32: every later draw overlaps the first heavily
    accepted, finished = _greedy_accept(draws, 4, 0.5, 50)
    assert accepted[0].tolist() == [True, False, False] and not finished[0]


def _smooth_image(height: int, width: int) -> torch.Tensor:
    y = torch.arange(height, dtype=torch.float32).reshape(-1, 1) + 0.5
    x = torch.arange(width, dtype=torch.float32).reshape(1, -1) + 0.5
    first = torch.sin(2 * math.pi * x / 53) + torch.cos(2 * math.pi * y / 41) + 0.01 * x
    second = torch.cos(2 * math.pi * (x + y) / 67) - 0.02 * y
    return torch.stack([first, second])


def _unorient(pooled: torch.Tensor, geometry: ViewGeometry) -> torch.Tensor:
    """Undo a view's rotation / flips on pooled grids [N, C, k, k] so they read in source orientation."""
    out = torch.rot90(pooled, -(geometry.rot90 % 4), dims=(-2, -1))
    if geometry.vflip:
        out = out.flip(-2)
    if geometry.hflip:
        out = out.flip(-1)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_same_physical_content_under_each_box_pair(seed):
    image = _smooth_image(160, 140)
    transform = TwoViewTransform(
        96,
        scale=(0.3, 1.0),
        hflip_p=0.5,
        vflip_p=0.5,
        rot90=True,
        photometric_p=0.0,
        speckle_p=0.0,
        blur_p=0.0,
        generator=torch.Generator().manual_seed(seed),
    )
    samples = [transform(image) for _ in range(8)]
    view1 = torch.stack([s[0] for s in samples])
    view2 = torch.stack([s[2] for s in samples])
    g1 = [s[1] for s in samples]
    g2 = [s[3] for s in samples]
    query, key, source = sample_box_pairs(
        g1,
        g2,
        boxes_per_image=5,
        min_box_size=16,
        generator=torch.Generator().manual_seed(seed),
        return_source_boxes=True,
    )
    assert query.shape[0] > 0
    grid = 3
    pooled1 = roi_align(view1, query, grid, spatial_scale=1.0, sampling_ratio=2, aligned=True)
    pooled2 = roi_align(view2, key, grid, spatial_scale=1.0, sampling_ratio=2, aligned=True)
    truth = roi_align(image[None].expand(len(samples), -1, -1, -1), source.float(), grid, 1.0, 2, True)
    index = query[:, 0].long().tolist()
    pooled1 = torch.cat([_unorient(pooled1[i : i + 1], g1[b]) for i, b in enumerate(index)])
    pooled2 = torch.cat([_unorient(pooled2[i : i + 1], g2[b]) for i, b in enumerate(index)])
    value_range = float(image.max() - image.min())
    assert (pooled1 - pooled2).abs().max() < 0.05 * value_range
    assert (pooled1 - truth).abs().max() < 0.05 * value_range
    # the check can fail: pairing each query box with another image region disagrees clearly
    if query.shape[0] > 2:
        shuffled = pooled2.roll(1, dims=0)
        assert (pooled1 - shuffled).abs().amax(dim=(1, 2, 3)).mean() > 0.1 * value_range


def test_collator_outputs_model_inputs_and_is_seeded():
    transform = TwoViewTransform(64, generator=torch.Generator().manual_seed(0))
    image = torch.randn(2, 100, 90) * 3 - 12
    samples = []
    for _ in range(4):
        v1, g1, v2, g2 = transform(image)
        samples.append({"view1": v1, "geometry1": g1, "view2": v2, "geometry2": g2})
    batch = PretrainingCollator(boxes_per_image=4, min_box_size=16, seed=5)(samples)
    assert set(batch) == {"pixel_values", "key_pixel_values", "query_boxes", "key_boxes"}
    assert batch["pixel_values"].shape == (4, 2, 64, 64) and batch["key_pixel_values"].shape == (4, 2, 64, 64)
    assert (
        batch["query_boxes"].dtype == torch.float32 and batch["query_boxes"].shape == batch["key_boxes"].shape
    )
    again = PretrainingCollator(boxes_per_image=4, min_box_size=16, seed=5)(samples)
    assert torch.equal(batch["query_boxes"], again["query_boxes"])
    # geometries as dicts work too (e.g. after a datasets round trip)
    dict_samples = [
        {**s, "geometry1": s["geometry1"].to_dict(), "geometry2": s["geometry2"].to_dict()} for s in samples
    ]
    again = PretrainingCollator(boxes_per_image=4, min_box_size=16, seed=5)(dict_samples)
    assert torch.equal(batch["key_boxes"], again["key_boxes"])
    with pytest.raises(KeyError, match="view1"):
        PretrainingCollator()([{"view1": samples[0]["view1"]}])


def test_collator_from_config(tiny_config):
    config = tiny_config(boxes_per_image=3, min_box_size=8, box_iou_threshold=0.3, box_sampling="uniform")
    collator = PretrainingCollator.from_config(config)
    assert (collator.boxes_per_image, collator.min_box_size, collator.iou_threshold) == (3, 8.0, 0.3)
    assert collator.box_sampling == "uniform"
    with pytest.raises(ValueError, match="box_sampling"):
        PretrainingCollator(box_sampling="random")


def test_box_jitter_moves_boxes_but_keeps_them_in_view():
    g1, g2 = _random_geometries(1)
    plain = sample_box_pairs(g1, g2, min_box_size=16, generator=torch.Generator().manual_seed(0))
    jittered = sample_box_pairs(
        g1, g2, min_box_size=16, box_jitter=0.1, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(plain[0][:, 0], jittered[0][:, 0])
    assert not torch.allclose(plain[0], jittered[0]) and (jittered[0][:, 1:] >= 0).all()
    moved = (plain[0][:, 1:] - jittered[0][:, 1:]).abs()
    sizes = (plain[0][:, 3:] - plain[0][:, 1:3]).repeat(1, 2)
    assert (moved <= 0.1 * sizes + 1e-4).all()


def test_uniform_sampling_draws_larger_boxes_than_grid():
    g = [ViewGeometry(0, 0, 128, 128, 128, 128)] * 64
    areas = {}
    for sampling in ("grid", "uniform"):
        query, _ = sample_box_pairs(
            g,
            g,
            boxes_per_image=1,
            min_box_size=16,
            box_sampling=sampling,
            generator=torch.Generator().manual_seed(0),
        )
        areas[sampling] = float(((query[:, 3] - query[:, 1]) * (query[:, 4] - query[:, 2])).mean())
    assert areas["uniform"] > 1.5 * areas["grid"]


def test_images_needing_more_draws_keep_image_major_order():
    small = ViewGeometry(0, 0, 40, 40, 40, 40)  # 40x40 overlap, boxes >= 16: frequent rejections
    large = ViewGeometry(0, 0, 128, 128, 128, 128)
    g = [small, large] * 8
    query, key = sample_box_pairs(
        g,
        g,
        boxes_per_image=10,
        min_box_size=16,
        iou_threshold=0.3,
        generator=torch.Generator().manual_seed(0),
    )
    index = query[:, 0]
    assert torch.equal(index, torch.sort(index).values) and torch.equal(query, key)
    counts = torch.bincount(index.long(), minlength=16)
    assert (counts[1::2] == 10).all() and (counts[0::2] < 10).all() and (counts[0::2] >= 1).all()
