"""Builders on unusual but ordinary SAR inputs: 0/255 masks, quad-pol, Pauli RGB, one file per
polarisation, folders of unreadable files, and the real Sentinel-1 sample shipped in samples/."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from PIL import Image

from di3cl_hf.data import AllFilesSkippedError, PolarisationError, group_polarisations, sentinel1_sample
from di3cl_hf.data.classes import IGNORE_INDEX
from di3cl_hf.data.sario import read_sar, write_geotiff
from di3cl_hf.data.sarsense import load_sarsense
from di3cl_hf.data.segmentation import load_segmentation

T = Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 5000000.0)


def _binary_set(root: Path, masks: dict[str, np.ndarray], nodata: float | None = None) -> Path:
    for name, mask in masks.items():
        write_geotiff(root / "images" / f"{name}.tif", np.zeros((2, 8, 8), np.float32))
        write_geotiff(root / "masks" / f"{name}.tif", mask.astype(np.uint8), nodata=nodata)
    return root


def test_zero_255_binary_masks_are_read_as_0_1_with_one_warning(tmp_path):
    mask = np.zeros((8, 8), np.uint8)
    mask[:, :3] = 255
    root = _binary_set(tmp_path / "set", {"a": mask, "b": mask[::-1]})
    with pytest.warns(
        UserWarning, match=r"set/masks: every mask of binary task 'water'.*0 and 255"
    ) as caught:
        label = load_segmentation(root, "water", cache_dir=tmp_path / "c")["train"][0]["label"]
    assert sum("0 and 255" in str(w.message) for w in caught) == 1  # one warning for the folder
    np.testing.assert_array_equal(label, (mask == 255).astype(np.int64))
    # explicit override: 255 stays "no data" (and then water is absent: warned before training)
    with pytest.warns(UserWarning, match=r"class\(es\) 'water' absent from every labelled pixel"):
        kept = load_segmentation(root, "water", cache_dir=tmp_path / "c2", mask_values={0: 0, 255: 255})
    assert set(np.unique(kept["train"][0]["label"])) == {0, IGNORE_INDEX}
    # 255 declared as the masks' nodata (STAC Overflow chips) is no data, not water; 0/1 masks untouched
    nodata = _binary_set(tmp_path / "nodata", {"a": mask, "b": np.where(mask == 255, 255, 1)}, nodata=255)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        rows = load_segmentation(nodata, "water", cache_dir=tmp_path / "c3")["train"]
    assert set(np.unique(rows[0]["label"])) == {0, IGNORE_INDEX}


def test_sen1floods11_minus_one_is_still_ignored(tmp_path):
    mask = np.array([[-1, 0], [1, 1]], np.int16).repeat(4, 0).repeat(4, 1)
    write_geotiff(tmp_path / "s/S1Hand/x_S1Hand.tif", np.zeros((2, 8, 8), np.float32))
    write_geotiff(tmp_path / "s/LabelHand/x_LabelHand.tif", mask)
    label = load_segmentation(tmp_path / "s", "water", cache_dir=tmp_path / "c")["train"][0]["label"]
    np.testing.assert_array_equal(label, np.where(mask < 0, IGNORE_INDEX, mask))


def test_absent_class_is_warned_at_load_time(tmp_path):
    root = _binary_set(tmp_path / "dry", {"a": np.zeros((8, 8)), "b": np.zeros((8, 8))})
    with pytest.warns(UserWarning, match=r"dry: train split: class\(es\) 'water' absent"):
        load_segmentation(root, "water", cache_dir=tmp_path / "c")


def test_quad_pol_is_kept_whole_with_band_names(tmp_path):
    rng = np.random.default_rng(0)
    quad = rng.normal(-15, 5, (4, 12, 10)).astype(np.float32)
    write_geotiff(
        tmp_path / "q/named.tif", quad, crs="EPSG:32632", transform=T, band_names=("HH", "HV", "VH", "VV")
    )
    write_geotiff(tmp_path / "q/plain.tif", quad[::-1].copy())
    write_geotiff(tmp_path / "q/meta.tif", quad[:3].copy())
    (tmp_path / "q/metadata.csv").write_text("file_name,polarisation\nmeta.tif,HH+HV+VV\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # nothing skipped
        rows = {
            r["path"]: r for r in load_sarsense(tmp_path / "q", cache_dir=tmp_path / "c", image_dtype=None)
        }
    np.testing.assert_array_equal(rows["named.tif"]["image"], quad)
    assert rows["named.tif"]["band_names"] == ["HH", "HV", "VH", "VV"]
    assert rows["plain.tif"]["band_names"] == ["band_1", "band_2", "band_3", "band_4"]
    assert rows["meta.tif"]["band_names"] == ["HH", "HV", "VV"]
    picked = load_sarsense(tmp_path / "q", cache_dir=tmp_path / "c2", bands=(2, 3))
    assert picked[0]["image"].shape == (2, 12, 10)
    np.save(tmp_path / "q/quad.npy", quad)  # [C, H, W] with C = 4 is a 4-band patch, not a bad file
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        npy = [r for r in load_sarsense(tmp_path / "q", cache_dir=tmp_path / "c3") if r["path"] == "quad.npy"]
    np.testing.assert_array_equal(npy[0]["image"], quad)


def test_pauli_rgb_composite_loads_through_the_segmentation_builder(tmp_path):
    rng = np.random.default_rng(1)
    pauli = rng.integers(0, 256, (3, 16, 16), dtype=np.uint8)
    mask = rng.integers(0, 3, (16, 16), dtype=np.uint8)
    write_geotiff(tmp_path / "tif/images/a.tif", pauli)
    write_geotiff(tmp_path / "tif/masks/a.tif", mask)
    Image.fromarray(np.moveaxis(pauli, 0, -1)).save(tmp_path / "png_images.png")
    (tmp_path / "png/images").mkdir(parents=True)
    (tmp_path / "png_images.png").rename(tmp_path / "png/images/a.png")
    Image.fromarray(mask).save(tmp_path / "png/masks.png")
    (tmp_path / "png/masks").mkdir()
    (tmp_path / "png/masks.png").rename(tmp_path / "png/masks/a.png")
    names = ["urban", "vegetation", "water"]
    for folder, expected_names in (
        ("tif", ["band_1", "band_2", "band_3"]),
        ("png", ["red", "green", "blue"]),
    ):
        row = load_segmentation(
            tmp_path / folder, "pauli", class_names=names, cache_dir=tmp_path / f"c{folder}"
        )
        row = row["train"][0]
        np.testing.assert_array_equal(row["image"], pauli)
        np.testing.assert_array_equal(row["label"], mask)
        assert row["band_names"] == expected_names


def test_folder_whose_every_file_is_skipped_says_so(tmp_path):
    (tmp_path / "bad").mkdir()
    for name in ("a.tif", "b.tif", "c.tif", "d.tif"):
        (tmp_path / "bad" / name).write_bytes(b"II*\x00 not a tiff")
    for attempt in ("first", "from the cache"):
        with pytest.raises(
            AllFilesSkippedError, match=r"bad: every file of split\(s\) train was skipped"
        ) as error:
            load_sarsense(tmp_path / "bad", cache_dir=tmp_path / "c")
        message = str(error.value)
        assert "4 file(s) skipped" in message and "a.tif (unreadable" in message, attempt
    _binary_set(tmp_path / "seg", {"a": np.zeros((8, 8)), "b": np.zeros((8, 8))})
    for name in ("a", "b"):
        (tmp_path / "seg/images" / f"{name}.tif").write_bytes(b"")
    with pytest.raises(
        AllFilesSkippedError, match=r"seg: every file.*2 file\(s\) skipped.*a\.tif \(empty file"
    ):
        load_segmentation(tmp_path / "seg", "water", cache_dir=tmp_path / "c2")


def _pol_files(folder: Path, key: str, pols: tuple[str, ...], value: float = 0.0) -> None:
    for k, pol in enumerate(pols):
        array = np.full((1, 8, 8), value + k, np.float32)
        write_geotiff(folder / f"{key}_{pol}.tif", array, crs="EPSG:32632", transform=T, nodata=0.0)


def test_per_polarisation_files_make_one_sample(tmp_path):
    folder = tmp_path / "water"
    _pol_files(folder / "images", "a", ("VH", "vv"), 1.0)  # case-insensitive; order becomes VV, VH
    _pol_files(folder / "images", "b", ("vv", "vh"), 5.0)
    for key in ("a", "b"):
        write_geotiff(folder / "masks" / f"{key}.tif", np.ones((8, 8), np.uint8))
    groups = group_polarisations(sorted((folder / "images").iterdir()))
    assert [(g.key, g.polarisations) for g in groups] == [("a", ("VV", "VH")), ("b", ("VV", "VH"))]
    rows = load_segmentation(folder, "water", cache_dir=tmp_path / "c")["train"]
    assert len(rows) == 2 and rows[0]["band_names"] == ["VV", "VH"]
    assert rows[0]["image"][:, 0, 0].tolist() == [2.0, 1.0]  # a_vv holds 1 + 1, a_vh holds 1 + 0
    patches = load_sarsense(folder / "images", cache_dir=tmp_path / "c2")
    assert (
        len(patches) == 2
        and patches[1]["image"].shape == (2, 8, 8)
        and patches[1]["band_names"] == ["VV", "VH"]
    )
    hh = tmp_path / "hh"
    _pol_files(hh, "x", ("hv", "hh"))
    assert load_sarsense(hh, cache_dir=tmp_path / "c3")[0]["band_names"] == ["HH", "HV"]


def test_missing_polarisation_is_an_error_naming_the_sample(tmp_path):
    images = tmp_path / "set/images"
    _pol_files(images, "good", ("vv", "vh"))
    _pol_files(images, "lonely", ("vv",))
    for key in ("good", "lonely"):
        write_geotiff(tmp_path / "set/masks" / f"{key}.tif", np.ones((8, 8), np.uint8))
    with pytest.raises(
        PolarisationError, match=r"sample 'lonely' in .*images lacks VH \(has VV \(lonely_vv\.tif\)\)"
    ):
        load_segmentation(tmp_path / "set", "water", cache_dir=tmp_path / "c")
    with pytest.raises(PolarisationError, match="sample 'lonely'"):
        load_sarsense(images, cache_dir=tmp_path / "c2")
    # single-polarisation folders are fine: every sample has the same one
    vh_only = tmp_path / "vh"
    _pol_files(vh_only, "p", ("vh",))
    _pol_files(vh_only, "q", ("vh",))
    assert load_sarsense(vh_only, cache_dir=tmp_path / "c3")["band_names"] == [["VH"], ["VH"]]


needs_sample = pytest.mark.skipif(
    not Path(__file__).resolve().parents[1].joinpath("samples/sentinel1").is_dir(),
    reason="samples/sentinel1 not in this checkout",
)


@needs_sample
def test_embedded_water_sample_loads_as_five_dual_pol_chips(tmp_path):
    water = sentinel1_sample("water")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no skipped file, no 0/255 guess, water present
        rows = load_segmentation(water, "water", cache_dir=tmp_path)["train"]
    by_id = {Path(r["path"]).name.rsplit("_", 1)[0]: r for r in rows}
    assert sorted(by_id) == ["Spain_7370579", "awc00", "jja10", "pxs10", "qxb32"]
    for row in rows:
        assert row["image"].shape == (2, 512, 512) and row["band_names"] == ["VV", "VH"]
    spain = by_id["Spain_7370579"]
    values, counts = np.unique(spain["label"], return_counts=True)
    assert dict(zip(values.tolist(), counts.tolist())) == {0: 192010, 1: 70035, IGNORE_INDEX: 99}
    assert "4326" in spain["crs"]
    np.testing.assert_array_equal(spain["image"][1], read_sar(water / "images/Spain_7370579_vh.tif").array[0])
    assert 1 not in by_id["awc00"]["classes_present"] and 1 in by_id["jja10"]["classes_present"]
    assert sum(r["classes_present"] == [0, 1] for r in rows) >= 3


@needs_sample
def test_embedded_scenes_load_through_sarsense(tmp_path):
    scenes = load_sarsense(sentinel1_sample("scenes"), cache_dir=tmp_path, image_dtype=None)
    assert len(scenes) == 9
    row = scenes[0]
    assert row["image"].dtype == np.uint8 and row["image"].shape == (1, 1024, 1024)
    assert row["band_names"] == ["VH"] and "3395" in row["crs"]
    assert row["sensor"] == "Sentinel-1A IW GRD" and row["polarisation"] == "VH" and row["sar_date"]
    total = sum(f.stat().st_size for f in sentinel1_sample().rglob("*") if f.is_file())
    assert total <= 15 * 10**6
