"""datasets builders (di3cl_hf.data): lossless round trips, Parquet, streaming, corrupt files, pairs, splits."""

from __future__ import annotations

import argparse
import json
import pickle
import shutil
import warnings
from pathlib import Path

import datasets
import numpy as np
import pytest
from affine import Affine
from datasets.distributed import split_dataset_by_node
from PIL import Image

import di3cl_hf.data as data
from di3cl_hf.cli import data as data_cli
from di3cl_hf.data.classes import IGNORE_INDEX
from di3cl_hf.data.parquet import decode_example, export_parquet, with_decoding
from di3cl_hf.data.sario import SARFileError, read_sar, write_geotiff
from di3cl_hf.data.sarsense import SARSense, load_sarsense
from di3cl_hf.data.segmentation import (
    PairingError,
    class_names,
    label_fraction_subset,
    load_segmentation,
    train_validation_split,
)
from di3cl_hf.data.synthetic import generate_sarsense, generate_segmentation_sets

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real-sar"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"real SAR samples not found at {REAL}")
TRANSFORM = Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 5000000.0)


def _rows(dataset) -> list[dict]:
    """Rows as plain Python, with NaN (the nodata of float patches) made comparable."""

    def fix(value):
        if isinstance(value, float) and np.isnan(value):
            return "nan"
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fix(v) for v in value]
        return value

    return [fix(row) for row in (dataset.to_list() if isinstance(dataset, datasets.Dataset) else dataset)]


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """One patch per supported format/dtype, with known arrays."""
    root = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(0)
    arrays = {
        "dual/float32_vv_vh.tif": rng.normal(-12, 6, (2, 24, 20)).astype(np.float32),
        "single/float32_vv.tif": rng.normal(-12, 6, (1, 24, 20)).astype(np.float32),
        "slc/complex.tif": (rng.normal(size=(2, 16, 16)) + 1j * rng.normal(size=(2, 16, 16))).astype(
            np.complex64
        ),
        "dn/int16.tif": rng.integers(-32768, 32767, (1, 16, 18)).astype(np.int16),
        "dn/uint16.tif": rng.integers(0, 65535, (2, 16, 18)).astype(np.uint16),
        "npy/patch.npy": rng.normal(size=(2, 12, 12)).astype(np.float32),
        "png/quicklook.png": rng.integers(0, 255, (1, 10, 14)).astype(np.uint8),
    }
    arrays["dual/float32_vv_vh.tif"][0, 0, 0] = np.nan  # a nodata pixel
    for name, array in arrays.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".tif"):
            write_geotiff(
                path,
                array,
                crs="EPSG:32632",
                transform=TRANSFORM,
                nodata=float("nan") if array.dtype == np.float32 else None,
            )
        elif name.endswith(".npy"):
            np.save(path, array)
        else:
            Image.fromarray(array[0]).save(path)
    (root / "metadata.csv").write_text(
        "file_name,sensor,band,frequency_ghz,polarisation,resolution_m,source_dataset,site\n"
        "dual/float32_vv_vh.tif,Sentinel-1,C,5.405,VV+VH,10,test,delta\n"
        "slc/complex.tif,GF-3,C,5.4,HH+HV,5,test,port\n"
    )
    return root, arrays


def test_builder_round_trip_is_bit_exact(mixed_folder, tmp_path):
    root, arrays = mixed_folder
    ds = load_sarsense(root, cache_dir=tmp_path, image_dtype=None)
    assert len(ds) == len(arrays)
    rows = {row["path"]: row for row in ds}
    assert sorted(rows) == sorted(arrays)
    for name, array in arrays.items():
        image = rows[name]["image"]
        assert image.dtype == array.dtype and image.shape == array.shape, name
        np.testing.assert_array_equal(image, array, err_msg=name)
    dual = rows["dual/float32_vv_vh.tif"]
    assert not dual["valid_mask"][0, 0] and dual["valid_mask"].sum() == 24 * 20 - 1
    assert "32632" in dual["crs"] and dual["transform"] == list(TRANSFORM)[:6] and np.isnan(dual["nodata"])
    assert dual["sensor"] == "Sentinel-1" and dual["frequency_ghz"] == 5.405 and dual["resolution_m"] == 10.0
    assert dual["site"] == "delta" and rows["slc/complex.tif"]["polarisation"] == "HH+HV"
    assert rows["npy/patch.npy"]["crs"] is None and rows["npy/patch.npy"]["transform"] is None
    assert rows["dn/int16.tif"]["sensor"] is None  # no metadata row

    as_float = load_sarsense(root, cache_dir=tmp_path)  # default: float32 images (complex stays complex64)
    for row in as_float:
        expected = arrays[row["path"]]
        assert row["image"].dtype == (np.complex64 if np.iscomplexobj(expected) else np.float32)
        np.testing.assert_array_equal(row["image"], expected)


def test_metadata_dict_applies_to_every_patch(mixed_folder, tmp_path):
    root, _ = mixed_folder
    ds = load_sarsense(
        root, metadata={"sensor": "TerraSAR-X", "band": "X", "resolution_m": 3}, cache_dir=tmp_path
    )
    assert set(ds["sensor"]) == {"TerraSAR-X"} and set(ds["resolution_m"]) == {3.0}
    listing = tmp_path / "rows.json"
    listing.write_text(
        json.dumps([{"file_name": "npy/patch.npy", "sensor": "ALOS-2"}, {"file_name": "gone.tif"}])
    )
    with pytest.warns(UserWarning, match=r"1 metadata row\(s\) name files that are not there: gone\.tif"):
        ds = load_sarsense(root, metadata=listing, cache_dir=tmp_path / "c2")
    sensors = dict(zip(ds.with_format(None)["path"], ds.with_format(None)["sensor"]))
    assert sensors["npy/patch.npy"] == "ALOS-2" and sensors["dn/int16.tif"] is None


def test_parquet_export_reloads_the_same_rows(mixed_folder, tmp_path):
    root, _ = mixed_folder
    raw = load_sarsense(root, cache_dir=tmp_path / "cache", decode=False)
    files = export_parquet(raw, tmp_path / "export", num_shards=3, pretty_name="Mixed SAR")
    assert [f.name for f in files] == [f"train-0000{i}-of-00003.parquet" for i in range(3)]
    reloaded = datasets.load_dataset(
        "parquet",
        data_files=str(tmp_path / "export/data/train-*.parquet"),
        split="train",
        cache_dir=tmp_path / "c2",
    )
    assert reloaded.features == raw.features
    assert _rows(reloaded) == _rows(raw)
    # the card's YAML configs make the folder loadable with no script (as a Hub repo would be)
    by_card = datasets.load_dataset(str(tmp_path / "export"), split="train", cache_dir=tmp_path / "c3")
    assert _rows(by_card) == _rows(raw)
    card = (tmp_path / "export/README.md").read_text()
    assert card.startswith("---\n") and "path: data/train-*.parquet" in card and "# Mixed SAR" in card
    assert "synthetic" not in card.lower()
    # decoding the export gives the original arrays
    for row, expected in zip(with_decoding(reloaded, image_dtype=None), with_decoding(raw, image_dtype=None)):
        np.testing.assert_array_equal(row["image"], expected["image"])
    # a decoded dataset exports its raw storage
    export_parquet(with_decoding(raw), tmp_path / "export2")
    assert _rows(
        datasets.load_dataset(str(tmp_path / "export2"), split="train", cache_dir=tmp_path / "c4")
    ) == _rows(raw)


def test_streaming_yields_the_same_samples(tmp_path):
    generate_sarsense(tmp_path / "sar", 6, size=16)
    mapped = load_sarsense(tmp_path / "sar", cache_dir=tmp_path / "cache", decode=False)
    streamed = load_sarsense(tmp_path / "sar", cache_dir=tmp_path / "cache", decode=False, streaming=True)
    assert isinstance(streamed, datasets.IterableDataset) and streamed.num_shards == 6
    assert _rows(streamed) == _rows(mapped)
    decoded = next(iter(load_sarsense(tmp_path / "sar", cache_dir=tmp_path / "cache", streaming=True)))
    assert decoded["image"].dtype == np.float32 and decoded["image"].shape == (2, 16, 16)
    # two processes see disjoint halves that together are the whole set
    paths = [[row["path"] for row in split_dataset_by_node(streamed, rank=r, world_size=2)] for r in (0, 1)]
    assert not set(paths[0]) & set(paths[1]) and sorted(paths[0] + paths[1]) == sorted(mapped["path"])
    # the same from the Parquet export
    export_parquet(mapped, tmp_path / "pq", num_shards=2)
    card = (tmp_path / "pq/README.md").read_text()
    assert "- synthetic" in card and "**Synthetic data.**" in card  # detected from the metadata columns
    parquet_stream = datasets.load_dataset(str(tmp_path / "pq"), split="train", streaming=True)
    assert _rows(parquet_stream) == _rows(mapped)
    ranks = [list(split_dataset_by_node(parquet_stream, rank=r, world_size=2)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 3 and _rows(ranks[0] + ranks[1]) == _rows(mapped)


def test_corrupt_and_empty_files_are_skipped_counted_or_raise(tmp_path):
    generate_sarsense(tmp_path / "sar", 3, size=16)
    (tmp_path / "sar/patches/empty.tif").write_bytes(b"")
    (tmp_path / "sar/patches/junk.tif").write_bytes(b"II*\x00 not really a tiff")
    np.save(tmp_path / "sar/patches/flat.npy", np.zeros(64, np.float32))  # not an image
    builder = SARSense(data_dir=str(tmp_path / "sar"), cache_dir=str(tmp_path / "cache"))
    with pytest.warns(UserWarning, match=r"skipped 3 unreadable SAR file\(s\): patches/empty\.tif"):
        builder.download_and_prepare()
    assert len(builder.as_dataset("train")) == 3
    assert builder.num_skipped == 3
    assert {e["path"] for e in builder.skipped_files} == {
        "patches/empty.tif",
        "patches/junk.tif",
        "patches/flat.npy",
    }
    assert any("expected" in e["reason"] for e in data.skipped_files(builder))
    # the count survives a reload from the cache
    again = SARSense(data_dir=str(tmp_path / "sar"), cache_dir=str(tmp_path / "cache"))
    with pytest.warns(UserWarning, match="skipped 3"):
        again.download_and_prepare()
    assert again.num_skipped == 3
    # several worker processes: every skip is still counted
    parallel = SARSense(data_dir=str(tmp_path / "sar"), cache_dir=str(tmp_path / "cache_mp"))
    with pytest.warns(UserWarning, match="skipped 3"):
        parallel.download_and_prepare(num_proc=2)
    assert parallel.num_skipped == 3 and len(parallel.as_dataset("train")) == 3
    # streaming warns as it meets each one
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert len(list(load_sarsense(tmp_path / "sar", streaming=True, decode=False))) == 3
    streamed = sorted(str(w.message) for w in caught if "skipped unreadable SAR file" in str(w.message))
    assert len(streamed) == 3 and streamed[1].startswith(
        "skipped unreadable SAR file patches/flat.npy: array shape"
    )
    with pytest.raises(SARFileError, match=r"(empty|junk)\.tif"):
        load_sarsense(tmp_path / "sar", strict=True, cache_dir=tmp_path / "strict")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(FileNotFoundError, match="no SAR files"):
        load_sarsense(tmp_path / "nothing", cache_dir=tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_sarsense(tmp_path / "absent", cache_dir=tmp_path / "cache")


def test_clean_folder_warns_nothing(tmp_path):
    generate_sarsense(tmp_path / "sar", 2, size=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert len(load_sarsense(tmp_path / "sar", cache_dir=tmp_path / "cache")) == 2


@pytest.fixture(scope="module")
def segmentation_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("seg")
    generate_segmentation_sets(root, 10, size=32, seed=1)
    return root


def test_segmentation_presets(segmentation_root, tmp_path):
    expected = {"landcover": 10, "water": 2, "roads": 2}
    for task, num_classes in expected.items():
        splits = load_segmentation(segmentation_root, task, cache_dir=tmp_path)
        assert sorted(splits) == ["test", "train"] and (len(splits["train"]), len(splits["test"])) == (8, 2)
        names = class_names(splits["train"])
        assert len(names) == num_classes
        row = splits["train"][0]
        assert row["image"].dtype == np.float32 and row["image"].shape == (2, 32, 32)
        assert row["label"].dtype == np.int64 and row["label"].shape == (32, 32)
        assert set(np.unique(row["label"])) <= set(range(num_classes)) | {IGNORE_INDEX}
        assert row["classes_present"] == sorted(set(np.unique(row["label"]).tolist()) - {IGNORE_INDEX})
        mask = read_sar(segmentation_root / task / "train" / "masks" / Path(row["path"]).name)
        np.testing.assert_array_equal(row["label"], mask.array[0])
    assert class_names(load_segmentation(segmentation_root, "landcover", cache_dir=tmp_path)["train"])[
        :3
    ] == [
        "water",
        "wetland",
        "farmland",
    ]


def _pair_folder(root: Path, images: dict[str, tuple[int, int]], masks: dict[str, tuple[int, int]]) -> Path:
    for kind, entries in (("images", images), ("masks", masks)):
        (root / kind).mkdir(parents=True, exist_ok=True)
        for name, (h, w) in entries.items():
            array = np.zeros(
                (2 if kind == "images" else 1, h, w), np.float32 if kind == "images" else np.uint8
            )
            write_geotiff(root / kind / name, array)
    return root


def test_pair_matching_errors_are_precise(tmp_path):
    ok = _pair_folder(
        tmp_path / "ok",
        {"a_S1Hand.tif": (8, 8), "b.tif": (8, 8)},
        {"a_LabelHand.tif": (8, 8), "b_mask.tif": (8, 8)},
    )
    assert len(load_segmentation(ok, "water", cache_dir=tmp_path / "c")["train"]) == 2

    bad = _pair_folder(
        tmp_path / "bad",
        {"a.tif": (8, 8), "b.tif": (8, 8), "c.tif": (8, 8), "d.tif": (8, 8)},
        {"a.tif": (8, 8), "b.tif": (8, 9), "e.tif": (8, 8), "d_mask.tif": (6, 8)},
    )
    with pytest.raises(PairingError) as error:
        load_segmentation(bad, "water", cache_dir=tmp_path / "c")
    message = str(error.value)
    assert "1 image(s)" in message and "without a mask: c.tif" in message
    assert "1 mask(s)" in message and "without an image: e.tif" in message
    assert "b.tif is 8x8 but b.tif is 8x9" in message and "d.tif is 8x8 but d_mask.tif is 6x8" in message
    assert "a.tif" not in message.replace("data", "")


def test_mask_values_and_ignore_mapping(tmp_path):
    root = _pair_folder(tmp_path / "vals", {"x.tif": (4, 4)}, {})
    mask = np.array([[0, 1, -1, 255], [1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], np.int16)
    write_geotiff(root / "masks/x.tif", mask)
    label = load_segmentation(root, "water", cache_dir=tmp_path / "c")["train"][0]["label"]
    np.testing.assert_array_equal(label, np.where(mask < 0, 255, mask))
    write_geotiff(root / "masks/x.tif", np.full((4, 4), 3, np.uint8))
    with pytest.raises(SARFileError, match=r"x\.tif: mask values 3 outside the 2 classes of task 'water'"):
        load_segmentation(root, "water", strict=True, cache_dir=tmp_path / "c2")
    custom = load_segmentation(
        root, "sea_ice", class_names=["open", "thin", "thick", "ridged"], cache_dir=tmp_path / "c3"
    )
    assert class_names(custom["train"]) == ["open", "thin", "thick", "ridged"]
    with pytest.raises(ValueError, match="unknown task"):
        load_segmentation(root, "buildings", cache_dir=tmp_path / "c4")


@needs_real
def test_real_sentinel1_pair(tmp_path):
    (tmp_path / "real/S1Hand").mkdir(parents=True)
    (tmp_path / "real/LabelHand").mkdir(parents=True)
    shutil.copy(REAL / "Spain_7370579_S1Hand.tif", tmp_path / "real/S1Hand")
    shutil.copy(REAL / "Spain_7370579_LabelHand.tif", tmp_path / "real/LabelHand")
    row = load_segmentation(tmp_path / "real", "water", cache_dir=tmp_path / "cache")["train"][0]
    values, counts = np.unique(row["label"], return_counts=True)
    assert dict(zip(values.tolist(), counts.tolist())) == {0: 192010, 1: 70035, IGNORE_INDEX: 99}
    assert "4326" in row["crs"] and row["image"].shape == (2, 512, 512)
    np.testing.assert_array_equal(row["image"], read_sar(REAL / "Spain_7370579_S1Hand.tif").array)

    shutil.copy(REAL / "S1A__IW___A_20150309T173017_VV_grd_mli_geo_norm_db.tif", tmp_path / "real/S1Hand")
    patches = load_sarsense(tmp_path / "real/S1Hand", cache_dir=tmp_path / "cache")
    vv = next(r for r in patches if r["path"].startswith("S1A"))
    assert "32631" in vv["crs"] and vv["nodata"] == -99.0 and vv["transform"][0] == 20.0
    assert vv["image"].shape == (1, 217, 268) and float(vv["image"].max()) == pytest.approx(1.4326, abs=1e-3)


def test_label_fractions_and_splits_are_reproducible():
    ds = datasets.Dataset.from_dict({"i": list(range(200))})
    sizes = {f: len(label_fraction_subset(ds, f, seed=0)) for f in data.PAPER_LABEL_FRACTIONS}
    assert sizes == {0.01: 2, 0.05: 10, 0.1: 20, 1.0: 200}
    one = label_fraction_subset(ds, 0.05, seed=0)["i"]
    assert one == label_fraction_subset(ds, 0.05, seed=0)["i"] and one == sorted(one)
    assert one != label_fraction_subset(ds, 0.05, seed=1)["i"]
    assert set(label_fraction_subset(ds, 0.01)["i"]) <= set(one) <= set(label_fraction_subset(ds, 0.1)["i"])
    assert len(label_fraction_subset(datasets.Dataset.from_dict({"i": [1, 2, 3]}), 0.01)) == 1
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        label_fraction_subset(ds, 0.0)
    parts = train_validation_split(ds, 0.1, seed=3)
    assert (len(parts["train"]), len(parts["validation"])) == (180, 20)
    assert parts["validation"]["i"] == train_validation_split(ds, 0.1, seed=3)["validation"]["i"]
    assert not set(parts["train"]["i"]) & set(parts["validation"]["i"])


def test_decode_example_helpers():
    array = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    row = {
        "image": data.encode_array(array),
        "valid_mask": data.encode_array(np.ones((3, 4), bool)),
        "path": "x",
    }
    decoded = decode_example(row)
    assert decoded["image"].dtype == np.float32 and decoded["valid_mask"].dtype == bool
    np.testing.assert_array_equal(decoded["image"], array)
    assert decode_example(row, image_dtype=None)["image"].dtype == np.int16
    json.dumps(row["image"]["shape"])  # plain types only
    # decoded datasets pickle (DataLoader workers with the spawn start method)
    decoded_ds = with_decoding(datasets.Dataset.from_list([row, row]))
    clone = pickle.loads(pickle.dumps(decoded_ds))
    np.testing.assert_array_equal(clone[1]["image"], array)


def test_cli_make_synthetic_and_export(tmp_path):
    parser = argparse.ArgumentParser()
    data_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["make-synthetic", str(tmp_path / "syn"), "--kind", "sarsense", "--num-patches", "3", "--size", "16"]
    )
    assert args.func(args) == 0
    args = parser.parse_args(
        [
            "export-parquet",
            str(tmp_path / "syn/sarsense"),
            str(tmp_path / "pq"),
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    assert args.func(args) == 0
    assert len(datasets.load_dataset(str(tmp_path / "pq"), split="train", cache_dir=tmp_path / "c")) == 3
