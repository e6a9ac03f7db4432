"""Two-view augmentation: geometry conventions, presets, photometric changes, the pre-training transform."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from di3cl_hf.image_processing_di3cl import DI3CLImageProcessor
from di3cl_hf.training.augmentation import (
    PretrainingTransform,
    TwoViewTransform,
    ViewGeometry,
    gamma_speckle_db,
    random_resized_crop_params,
    source_to_view,
    view_to_source,
)
from di3cl_hf.training.boxes import PretrainingCollator


def _coordinate_image(height: int, width: int) -> torch.Tensor:
    """Channel 0 holds each pixel centre's x, channel 1 its y (linear, so resampling keeps it exact)."""
    y, x = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    return torch.stack([x, y]).float()


ALL_ORIENTATIONS = [(h, v, k) for h in (False, True) for v in (False, True) for k in range(4)]


@pytest.mark.parametrize(("hflip", "vflip", "k"), ALL_ORIENTATIONS)
def test_view_pixels_come_from_where_the_geometry_says(hflip, vflip, k):
    source = _coordinate_image(90, 120)
    geometry = ViewGeometry(top=7, left=11, height=60, width=80, output_height=48, output_width=40,
                            hflip=hflip, vflip=vflip, rot90=k)  # fmt: skip
    view = TwoViewTransform.apply_geometry(source, geometry)
    assert tuple(view.shape[-2:]) == geometry.view_size
    rows, cols = view.shape[-2:]
    y, x = torch.meshgrid(torch.arange(rows) + 0.5, torch.arange(cols) + 0.5, indexing="ij")
    centres = torch.stack([x, y], dim=-1).reshape(-1, 2).double()
    expected = geometry.view_to_source(centres).reshape(rows, cols, 2)
    got = view.permute(1, 2, 0).double()
    inner = (slice(3, -3), slice(3, -3))  # antialiasing near the crop border sees clamped pixels
    assert torch.allclose(got[inner], expected[inner], atol=0.05)
    # and the forward map sends the source points back onto the view pixel centres
    assert torch.allclose(geometry.source_to_view(expected.reshape(-1, 2)), centres, atol=1e-9)


def test_source_to_view_batched_round_trip():
    generator = torch.Generator().manual_seed(0)
    transform = TwoViewTransform(64, hflip_p=0.5, vflip_p=0.5, rot90=True, generator=generator)
    geometries = torch.stack([transform.sample_geometry(100, 80).to_tensor() for _ in range(32)])
    points = torch.rand(32, 5, 2, dtype=torch.float64, generator=generator) * 100
    back = view_to_source(source_to_view(points, geometries), geometries)
    assert torch.allclose(back, points, atol=1e-9)


def test_random_resized_crop_params_respect_bounds_and_generator():
    for seed in range(50):
        top, left, h, w = random_resized_crop_params(
            70, 90, (0.2, 1.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(seed)
        )
        assert 0 <= top and 0 <= left and top + h <= 70 and left + w <= 90
        assert 0.2 * 70 * 90 * 0.9 <= h * w <= 70 * 90
    a = random_resized_crop_params(70, 90, (0.2, 1.0), (0.75, 1.33), torch.Generator().manual_seed(1))
    b = random_resized_crop_params(70, 90, (0.2, 1.0), (0.75, 1.33), torch.Generator().manual_seed(1))
    assert a == b


def test_two_views_shapes_geometry_and_determinism():
    image = torch.randn(2, 100, 120) * 3 - 12
    outs = [TwoViewTransform(64, generator=torch.Generator().manual_seed(3))(image) for _ in range(2)]
    view1, g1, view2, g2 = outs[0]
    assert view1.shape == (2, 64, 64) and view2.shape == (2, 64, 64) and view1.dtype == torch.float32
    assert isinstance(g1, ViewGeometry) and g1.output_height == 64
    assert torch.equal(outs[0][0], outs[1][0]) and outs[0][1] == outs[1][1] and outs[0][3] == outs[1][3]
    with pytest.raises(ValueError, match=r"\[C, H, W\]"):
        TwoViewTransform(64)(torch.zeros(100, 100))


def test_presets():
    release = TwoViewTransform(448, preset="release")
    assert release.scale == (0.2, 1.0) and release.hflip_p == 0.5
    assert release.vflip_p == 0.0 and not release.rot90 and release.speckle_p == 0.0
    assert (release.brightness, release.contrast, release.blur_p, release.blur_sigma) == (
        0.4,
        0.4,
        0.5,
        (0.1, 2.0),
    )
    sar = TwoViewTransform(448)
    assert sar.vflip_p > 0 and sar.rot90 and sar.speckle_p > 0
    assert (
        TwoViewTransform(448, preset="release", vflip_p=0.5).vflip_p == 0.5
    )  # explicit overrides the preset
    with pytest.raises(ValueError, match="preset"):
        TwoViewTransform(448, preset="imagenet")
    generator = torch.Generator().manual_seed(0)
    flips = [
        TwoViewTransform(32, preset="release", generator=generator).sample_geometry(64, 64)
        for _ in range(200)
    ]
    assert not any(g.vflip or g.rot90 for g in flips) and 60 < sum(g.hflip for g in flips) < 140


def test_speckle_statistics_match_gamma_looks():
    looks = 4
    noise = gamma_speckle_db((200_000,), looks, torch.Generator().manual_seed(0), torch.float64)
    to_db = 10 / math.log(10)
    digamma = sum(1 / i for i in range(1, looks)) - 0.5772156649
    trigamma = math.pi**2 / 6 - sum(1 / i**2 for i in range(1, looks))
    assert abs(float(noise.mean()) - to_db * (digamma - math.log(looks))) < 0.03
    assert abs(float(noise.std()) - to_db * math.sqrt(trigamma)) < 0.03


def test_photometric_changes_act_in_db():
    view = torch.full((1, 32, 32), -10.0)
    gain = TwoViewTransform(
        32, photometric_p=1.0, gain_db=3.0, contrast=0.0, brightness=0.0, speckle_p=0.0, blur_p=0.0
    )
    shifted = gain.photometric(view)
    assert shifted.std() < 1e-5 and 0 < abs(float(shifted.mean()) + 10) <= 3.0
    brightness = TwoViewTransform(32, preset="release", photometric_p=1.0, contrast=0.0, blur_p=0.0)
    stretched = brightness.photometric(view)
    factor = (float(stretched.mean()) - (-30.0)) / 20.0
    assert 0.6 <= factor <= 1.4
    off = TwoViewTransform(32, photometric_p=0.0, speckle_p=0.0, blur_p=0.0)
    assert torch.equal(off.photometric(view), view)


def test_pretraining_transform_any_radiometry_with_nodata():
    processor = DI3CLImageProcessor(num_channels=2)
    rng = np.random.default_rng(0)
    intensity = rng.gamma(4.0, 0.02, size=(2, 80, 90)).astype(np.float32)
    intensity[:, :10, :] = np.nan
    transform = PretrainingTransform(
        processor,
        TwoViewTransform(
            48,
            scale=(0.9, 1.0),
            photometric_p=0.0,
            speckle_p=0.0,
            blur_p=0.0,
            generator=torch.Generator().manual_seed(0),
        ),  # fmt: skip
    )
    sample = transform(intensity)
    assert set(sample) == {"view1", "geometry1", "view2", "geometry2"}
    assert sample["view1"].shape == (2, 48, 48) and sample["view1"].dtype == torch.float32
    assert torch.isfinite(sample["view1"]).all() and torch.isfinite(sample["view2"]).all()
    # the same scene through the processor's single-array path has the same value range
    pixel_values, valid = processor.sar_to_pixel_values(intensity)
    assert not valid[:10].any() and valid[10:].all()
    assert abs(float(sample["view1"].mean()) - float(pixel_values[:, valid].mean())) < 0.5
    # single band into a 2-channel model, and a complex SLC chip
    single = transform(intensity[:1])
    assert single["view1"].shape == (2, 48, 48)
    slc = (rng.normal(size=(1, 64, 64)) + 1j * rng.normal(size=(1, 64, 64))).astype(np.complex64) * 0.1
    assert torch.isfinite(transform(slc)["view2"]).all()


def test_pretraining_transform_and_collator_in_dataloader_workers():
    processor = DI3CLImageProcessor(num_channels=1)
    transform = PretrainingTransform(processor, TwoViewTransform(32, generator=None))
    arrays = [np.random.default_rng(i).normal(-12, 3, size=(2, 48, 48)).astype(np.float32) for i in range(4)]

    class Scenes(torch.utils.data.Dataset):
        def __len__(self):
            return len(arrays)

        def __getitem__(self, index):
            return transform(arrays[index])

    loader = torch.utils.data.DataLoader(
        Scenes(),
        batch_size=2,
        num_workers=1,
        collate_fn=PretrainingCollator(boxes_per_image=3, min_box_size=8),
    )
    batches = list(loader)
    assert len(batches) == 2
    assert batches[0]["pixel_values"].shape == (2, 1, 32, 32)
    assert batches[0]["query_boxes"].shape[1] == 5


def test_transform_batch_for_datasets():
    processor = DI3CLImageProcessor(num_channels=2)
    transform = PretrainingTransform(processor, TwoViewTransform(32))
    batch = {
        "image": [np.full((2, 40, 40), -12.0, np.float32)] * 2,
        "valid_mask": [np.ones((40, 40), bool)] * 2,
    }
    out = transform.transform_batch(batch)
    assert len(out["view1"]) == 2 and isinstance(out["geometry2"][0], ViewGeometry)
