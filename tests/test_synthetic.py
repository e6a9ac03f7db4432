"""Synthetic SAR (di3cl_hf.data.synthetic): determinism, radiometry, speckle, seamless windows, files."""

from __future__ import annotations

import csv
import time

import numpy as np
import pytest
import rasterio

from di3cl_hf.data import synthetic
from di3cl_hf.data.sario import read_sar
from di3cl_hf.data.synthetic import (
    CLASS_BACKSCATTER_DB,
    LANDCOVER_CLASSES,
    generate_sarsense,
    generate_scene,
    generate_segmentation_sets,
    make_layout,
    render_window,
    synthetic_patch,
)


def test_patches_are_deterministic_and_differ_by_seed_and_index():
    a = synthetic_patch(64, seed=3, index=1)
    b = synthetic_patch(64, seed=3, index=1)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.landcover, b.landcover)
    assert not np.array_equal(a.image, synthetic_patch(64, seed=4, index=1).image)
    assert not np.array_equal(a.image, synthetic_patch(64, seed=3, index=2).image)
    assert (
        a.transform != synthetic_patch(64, seed=3, index=2).transform
    )  # patches do not overlap on the ground
    assert a.image.dtype == np.float32 and a.image.shape == (2, 64, 64)
    assert synthetic_patch(32, polarisations=1).image.shape == (1, 32, 32)
    with pytest.raises(ValueError, match="polarisations"):
        synthetic_patch(32, polarisations=3)


def test_class_backscatter_matches_the_table():
    """Mean linear intensity per class (speckle has unit mean) is near the class's table value."""
    sums = np.zeros((10, 2))
    counts = np.zeros(10)
    for index in range(12):
        patch = synthetic_patch(128, seed=0, index=index)
        linear = 10 ** (patch.image.astype(np.float64) / 10)
        for c in range(10):
            m = patch.landcover == c
            sums[c] += linear[:, m].sum(axis=1)
            counts[c] += m.sum()
    assert (counts > 200).all(), dict(zip(LANDCOVER_CLASSES, counts))  # every class appears
    mean_db = 10 * np.log10(sums / counts[:, None])
    for c, name in enumerate(LANDCOVER_CLASSES):
        vv, vh = CLASS_BACKSCATTER_DB[name]
        tol = 3.0 if name in ("farmland", "city", "village") else 1.5  # parcels / point scatterers
        assert mean_db[c, 0] == pytest.approx(vv, abs=tol), name
        if name not in ("water", "road"):  # dark VH sits on the -28 dB noise floor
            assert mean_db[c, 1] == pytest.approx(vh, abs=tol), name
    order = [
        mean_db[LANDCOVER_CLASSES.index(n), 0]
        for n in ("water", "ground", "meadow", "forest", "village", "city")
    ]
    assert order == sorted(order)
    assert (mean_db[:, 1] < mean_db[:, 0]).all()  # cross-pol is darker everywhere


def test_speckle_follows_the_number_of_looks():
    """Equivalent number of looks (mean^2 / variance of intensity) on a homogeneous class."""
    layout = make_layout(256, 256, seed=5)
    for looks in (1.0, 4.4):
        image, classes = render_window(layout, 0, 0, 256, 256, polarisations=1, looks=looks)
        intensity = 10 ** (image[0].astype(np.float64) / 10)
        enl = []
        for r in range(0, 256, 16):
            for c in range(0, 256, 16):
                block = classes[r : r + 16, c : c + 16]
                if (block == synthetic.MEADOW).all() or (block == synthetic.GROUND).all():
                    values = intensity[r : r + 16, c : c + 16]
                    enl.append(values.mean() ** 2 / values.var())
        assert len(enl) >= 5
        assert np.median(enl) == pytest.approx(looks, rel=0.3)


def test_windows_of_a_scene_join_seamlessly():
    layout = make_layout(300, 300, seed=2)
    _, whole = render_window(layout, 0, 0, 300, 300)
    _, part = render_window(layout, 100, 150, 120, 90)
    np.testing.assert_array_equal(part, whole[100:220, 150:240])


def test_generate_scene_writes_georeferenced_tiles(tmp_path):
    path = generate_scene(
        tmp_path / "scene.tif", 300, 420, seed=1, labels_path=tmp_path / "labels.tif", tile_size=128
    )
    with rasterio.open(path) as ds:
        assert (ds.count, ds.height, ds.width) == (2, 300, 420)
        assert ds.crs.to_epsg() == 32631 and ds.transform.a == 10.0 and ds.transform.e == -10.0
        assert ds.descriptions == ("VV", "VH") and ds.profile["tiled"]
    labels = read_sar(tmp_path / "labels.tif")
    _, expected = render_window(make_layout(300, 420, seed=1), 0, 0, 300, 420)
    np.testing.assert_array_equal(labels.array[0], expected)
    image = read_sar(path)
    assert np.isfinite(image.array).all() and -45 < image.array.min() and image.array.max() < 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.tif", "scene.tif"]

    edged = read_sar(
        generate_scene(
            tmp_path / "swath.tif", 200, 200, labels_path=tmp_path / "swath_lc.tif", swath_edges=True
        )
    )
    assert not edged.valid_mask[0, 0] and not edged.valid_mask[-1, -1] and edged.valid_mask[100, 100]
    assert 0.6 < edged.valid_mask.mean() < 0.95
    np.testing.assert_array_equal(read_sar(tmp_path / "swath_lc.tif").valid_mask, edged.valid_mask)


def test_generate_sarsense_folder(tmp_path):
    paths = generate_sarsense(tmp_path, 5, size=32, polarisations=1, seed=7)
    assert [p.name for p in paths] == [f"synthetic_{i:05d}.tif" for i in range(5)]
    raster = read_sar(paths[0])
    assert raster.array.shape == (1, 32, 32) and raster.crs.to_epsg() == 32631
    with open(tmp_path / "metadata.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["file_name"] == "patches/synthetic_00000.tif"
    assert rows[0]["polarisation"] == "VV" and "synthetic" in rows[0]["sensor"]


def test_generate_segmentation_sets(tmp_path):
    folders = generate_segmentation_sets(tmp_path, 5, size=32, seed=0)
    assert sorted(folders) == ["landcover", "roads", "water"]
    for task, folder in folders.items():
        train = sorted(p.name for p in (folder / "train" / "images").iterdir())
        test = sorted(p.name for p in (folder / "test" / "images").iterdir())
        assert len(train) == 4 and len(test) == 1
        assert sorted(p.name for p in (folder / "train" / "masks").iterdir()) == train
        mask = read_sar(folder / "train" / "masks" / train[0])
        image = read_sar(folder / "train" / "images" / train[0])
        assert mask.array.dtype == np.uint8 and mask.transform == image.transform
        assert mask.array.max() < (10 if task == "landcover" else 2)


def test_a_few_hundred_patches_take_seconds():
    """About 20-70 ms per 256-px patch here; the bound leaves room for a busy shared machine."""
    start = time.perf_counter()
    for index in range(50):
        synthetic_patch(256, seed=0, index=index)
    elapsed = time.perf_counter() - start
    assert elapsed < 25.0, f"50 patches of 256 px took {elapsed:.1f} s"
