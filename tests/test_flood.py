"""Flood sets as they come (ETCI 2021 tiles, OMBRIA before/after), the positive label-fraction draw, conv1
adaptation of a DI3CL encoder to another channel count, the classical baselines and examples/evaluate_flood.py.

Every file here is a tiny synthetic PNG named as the real sets name theirs (no real data is read)."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from di3cl_hf.data import PairingError, PolarisationError
from di3cl_hf.data.classes import IGNORE_INDEX
from di3cl_hf.data.flood import etci_block_split, load_flood, ombria_key
from di3cl_hf.data.segmentation import label_fraction_subset
from di3cl_hf.training import baselines

ROOT = Path(__file__).resolve().parent.parent
SCENE = "bangladesh_20170314t115609"
# grid positions in blocks 0 (test), 1 (validation), 2 and 3 (train): block = ((x-1)//5)*7 + (y-1)//5
POSITIONS = {"test": [(1, 1)], "validation": [(1, 6)], "train": [(1, 11), (1, 16)]}


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def _tile_arrays(seed: int, size: int) -> dict[str, np.ndarray]:
    """VV, VH (dark water, 255 = no data in a corner of each band) and the two 0/255 label files."""
    rng = np.random.default_rng(seed)
    flood = np.zeros((size, size), np.uint8)
    water_body = np.zeros((size, size), np.uint8)
    flood[: size // 2, : size // 2] = 255
    water_body[size // 4 : size // 2, : size // 2] = 255  # overlaps the flood mask, as in the source
    water_body[size // 2 :, -4:] = 255  # permanent water only
    water = (flood > 0) | (water_body > 0)
    vv = np.where(water, rng.integers(10, 40, (size, size)), rng.integers(120, 200, (size, size)))
    vh = np.where(water, rng.integers(5, 30, (size, size)), rng.integers(90, 160, (size, size)))
    vv[0, :3] = 255
    vh[-1, -3:] = 255
    return {"vv": vv, "vh": vh, "flood": flood, "water_body": water_body}


def make_etci(root: Path, size: int = 32) -> Path:
    """Tiny ETCI folder: images/{tile}_vv.png + _vh.png, labels/{tile}_flood.png + _water_body.png."""
    for seed, (x, y) in enumerate(pos for split in POSITIONS.values() for pos in split):
        tile = f"{SCENE}_x-{x}_y-{y}"
        for name, array in _tile_arrays(seed, size).items():
            folder = "images" if name in ("vv", "vh") else "labels"
            _png(root / folder / f"{tile}_{name}.png", array)
    return root


def make_ombria(root: Path, size: int = 32, counts: dict[str, int] | None = None) -> Path:
    """Tiny OMBRIA folder: {train,test}/{BEFORE,AFTER,MASK}/S1_{before,after,mask}_NNNN.png (0/255 masks)."""
    number = 0
    for split, count in (counts or {"train": 2, "test": 2}).items():
        for _ in range(count):
            number += 1
            rng = np.random.default_rng(number)
            mask = np.zeros((size, size), np.uint8)
            mask[:, : size // 2] = 255
            before = rng.integers(100, 200, (size, size))
            after = np.where(mask > 0, rng.integers(0, 40, (size, size)), before)
            for role, array in (("before", before), ("after", after), ("mask", mask)):
                _png(root / split / role.upper() / f"S1_{role}_{number:04d}.png", array)
    return root


def _tile(split: str, index: int = 0) -> str:
    x, y = POSITIONS[split][index]
    return f"{SCENE}_x-{x}_y-{y}"


# -- ETCI --------------------------------------------------------------------------------------------------
def test_etci_block_split_counts_on_a_synthetic_grid(tmp_path):
    # a 10 x 10 grid covers blocks 0, 1 (x 1-5) and 7, 8 (x 6-10): block % 5 = 0, 1, 2, 3
    names = [f"{SCENE}_x-{x}_y-{y}_vv.png" for x in range(1, 11) for y in range(1, 11)]
    assert Counter(etci_block_split(n) for n in names) == {"train": 50, "validation": 25, "test": 25}
    # the shared copy's grid (columns 1-46, rows 1-40): each block of 25 tiles goes whole to one split
    blocks = Counter(etci_block_split(f"t_x-{x}_y-{y}") for x in range(1, 47) for y in range(1, 41))
    assert sum(blocks.values()) == 46 * 40 and blocks["train"] > blocks["test"] > 0
    rows = load_flood(make_etci(tmp_path / "etci"), "etci", cache_dir=tmp_path / "c")
    assert {name: len(split) for name, split in rows.items()} == {"train": 2, "validation": 1, "test": 1}
    assert Path(rows["test"][0]["path"]).name == f"{_tile('test')}_vv.png"


def test_etci_255_is_no_data_invalid_and_ignored_in_labels_and_metrics(tmp_path):
    from di3cl_hf.image_processing_di3cl import DI3CLImageProcessor
    from di3cl_hf.training.finetuning import SegmentationDataset
    from di3cl_hf.training.metrics import confusion_matrix

    rows = load_flood(make_etci(tmp_path / "etci"), "etci", cache_dir=tmp_path / "c", image_dtype=None)
    row = rows["test"][0]
    arrays = _tile_arrays(0, 32)
    nodata = (arrays["vv"] == 255) | (arrays["vh"] == 255)
    assert row["image"].dtype == np.uint8 and row["image"].shape == (2, 32, 32)
    assert row["band_names"] == ["VV", "VH"]
    np.testing.assert_array_equal(row["valid_mask"], ~nodata)
    water = (arrays["flood"] > 0) | (arrays["water_body"] > 0)
    np.testing.assert_array_equal(row["label"], np.where(nodata, IGNORE_INDEX, water))
    # what training and the metrics see: nodata pixels are ignore labels (and the normalised mean 0)
    sample = SegmentationDataset(rows["test"], DI3CLImageProcessor(num_channels=2))[0]
    assert (sample["labels"][torch.from_numpy(nodata)] == IGNORE_INDEX).all()
    assert (sample["pixel_values"][:, torch.from_numpy(nodata)] == 0).all()
    confusion = confusion_matrix(np.ones((32, 32), np.int64), sample["labels"].numpy(), 2)
    assert confusion.sum() == (~nodata).sum()
    # nodata= overrides the layout's value (no pixel is 0: all valid, 255 included)
    kept = load_flood(tmp_path / "etci", "etci", cache_dir=tmp_path / "c2", nodata=0)
    assert kept["test"][0]["valid_mask"].all()


def test_etci_two_label_files_as_classes_or_merged_water(tmp_path):
    make_etci(tmp_path / "etci")
    arrays = _tile_arrays(0, 32)
    flood, permanent = arrays["flood"] > 0, arrays["water_body"] > 0
    nodata = (arrays["vv"] == 255) | (arrays["vh"] == 255)
    merged = load_flood(tmp_path / "etci", "etci", cache_dir=tmp_path / "c")["test"][0]["label"]
    np.testing.assert_array_equal(merged, np.where(nodata, IGNORE_INDEX, flood | permanent))
    classes = load_flood(tmp_path / "etci", "etci-classes", cache_dir=tmp_path / "c2")
    assert classes["train"].features["classes_present"].feature.names == [
        "background",
        "permanent_water",
        "flood",
    ]
    expected = np.where(permanent, 1, np.where(flood, 2, 0))  # permanent water wins where both are set
    np.testing.assert_array_equal(classes["test"][0]["label"], np.where(nodata, IGNORE_INDEX, expected))
    assert {1, 2} <= set(np.unique(classes["test"][0]["label"]).tolist())


def test_etci_missing_partners_are_named(tmp_path):
    root = make_etci(tmp_path / "etci")
    (root / "images" / f"{_tile('train')}_vv.png").unlink()  # a _vh without its _vv
    with pytest.raises(PolarisationError, match=rf"{_tile('train')}.*lacks VV"):
        load_flood(root, "etci", cache_dir=tmp_path / "c")
    root = make_etci(tmp_path / "etci2")
    (root / "labels" / f"{_tile('test')}_water_body.png").unlink()
    with pytest.raises(
        PairingError, match=rf"1 tile\(s\) .* without labels/\{{tile\}}_water_body.png: {_tile('test')}"
    ):
        load_flood(root, "etci", cache_dir=tmp_path / "c")
    root = make_etci(tmp_path / "etci3")
    for name in ("vv", "vh"):
        (root / "images" / f"{_tile('validation')}_{name}.png").unlink()
    with pytest.raises(PairingError, match=rf"label\(s\) in .*labels without images: {_tile('validation')}"):
        load_flood(root, "etci", cache_dir=tmp_path / "c")
    _png(root / "labels" / "notes.png", np.zeros((4, 4)))
    with pytest.raises(PairingError, match="notes.png"):
        load_flood(root, "etci", cache_dir=tmp_path / "c")


def test_layout_masks_must_be_binary(tmp_path):
    root = make_etci(tmp_path / "etci")
    _png(root / "labels" / f"{_tile('test')}_flood.png", np.full((32, 32), 7))
    with pytest.raises(ValueError, match=r"_flood.png: mask values 7; layout 'etci' expects binary 0/255"):
        load_flood(root, "etci", cache_dir=tmp_path / "c", strict=True)
    with pytest.raises(ValueError, match="unknown flood layout 'etcii'"):
        load_flood(root, "etcii", cache_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="mask_values does not apply to layout='etci'"):
        load_flood(root, "etci", cache_dir=tmp_path / "c", mask_values={255: 1})


# -- OMBRIA ------------------------------------------------------------------------------------------------
def test_ombria_pairs_give_two_channels_and_the_after_image_one(tmp_path):
    root = make_ombria(tmp_path / "ombria")
    assert ombria_key("S1_before_0001.png", "before") == ombria_key("S1_mask_0001", "mask") == "S1_0001"
    assert ombria_key("before_7.png", "before") == "7" and ombria_key("0007.png", "after") == "0007"
    pair = load_flood(root, "ombria-pair", cache_dir=tmp_path / "c", image_dtype=None)
    assert {name: len(split) for name, split in pair.items()} == {"train": 2, "test": 2}
    row = pair["train"][0]
    before = np.asarray(Image.open(root / "train" / "BEFORE" / "S1_before_0001.png"))
    after = np.asarray(Image.open(root / "train" / "AFTER" / "S1_after_0001.png"))
    assert row["band_names"] == ["before", "after"]
    np.testing.assert_array_equal(row["image"], np.stack([before, after]))
    mask = np.asarray(Image.open(root / "train" / "MASK" / "S1_mask_0001.png"))
    np.testing.assert_array_equal(row["label"], mask == 255)  # 0/255 read as 0/1, nothing ignored
    single = load_flood(root, "ombria-after", cache_dir=tmp_path / "c", image_dtype=None)["test"][0]
    assert single["image"].shape == (1, 32, 32) and single["band_names"] == ["after"]


def test_ombria_missing_partners_are_named(tmp_path):
    root = make_ombria(tmp_path / "ombria")
    (root / "test" / "BEFORE" / "S1_before_0004.png").unlink()
    with pytest.raises(
        PairingError, match=r"1 after image\(s\) in .*test without a BEFORE/ partner: S1_0004"
    ):
        load_flood(root, "ombria-pair", cache_dir=tmp_path / "c")
    load_flood(root, "ombria-after", cache_dir=tmp_path / "c")  # the after-only variant needs no BEFORE image
    (root / "train" / "MASK" / "S1_mask_0001.png").unlink()
    with pytest.raises(PairingError, match=r"without a MASK/ partner: S1_0001"):
        load_flood(root, "ombria-after", cache_dir=tmp_path / "c")
    (root / "train" / "AFTER" / "S1_after_0002.png").unlink()
    (root / "train" / "AFTER" / "S1_after_0001.png").unlink()
    with pytest.raises(PairingError, match=r"mask file\(s\) in .*train without an AFTER/ image: S1_0002"):
        load_flood(root, "ombria-after", cache_dir=tmp_path / "c")


# -- label fractions ---------------------------------------------------------------------------------------
def test_label_fraction_subset_holds_a_foreground_sample_and_stays_nested():
    present = [[0]] * 99 + [[0, 1]]  # one water tile in 100
    rows = datasets.Dataset.from_dict({"index": list(range(100)), "classes_present": present})
    for seed in range(5):
        plain = label_fraction_subset(rows, 0.03, seed)["index"]
        subsets = [
            set(label_fraction_subset(rows, f, seed, positive_classes=[1])["index"]) for f in (0.03, 0.1, 0.5)
        ]
        assert all(99 in subset for subset in subsets)
        assert subsets[0] <= subsets[1] <= subsets[2]
        assert len(subsets[0]) == 3 and len(set(plain) & subsets[0]) >= 2  # at most one sample swapped
    wet = datasets.Dataset.from_dict({"index": list(range(10)), "classes_present": [[0, 1]] * 10})
    assert label_fraction_subset(wet, 0.2, 3, [1])["index"] == label_fraction_subset(wet, 0.2, 3)["index"]
    dry = datasets.Dataset.from_dict({"index": list(range(10)), "classes_present": [[0]] * 10})
    with pytest.warns(UserWarning, match=r"no sample holds class\(es\) \[1\]"):
        assert len(label_fraction_subset(dry, 0.2, 0, [1])) == 2


# -- conv1 adaptation --------------------------------------------------------------------------------------
def _one_channel_encoder(folder: Path) -> Path:
    from di3cl_hf import DI3CLConfig, DI3CLModel
    from di3cl_hf.image_processing_di3cl import DI3CLImageProcessor

    torch.manual_seed(0)
    DI3CLModel(DI3CLConfig(backbone="resnet18", num_channels=1)).save_pretrained(folder)
    DI3CLImageProcessor(num_channels=1, image_mean=[0.3], image_std=[0.1]).save_pretrained(folder)
    return folder


def test_one_channel_encoder_adapted_to_two_channels_gives_its_output_on_identical_channels(tmp_path):
    from di3cl_hf import DI3CLModel
    from di3cl_hf.training.finetuning import FinetuneArguments, build_model

    folder = _one_channel_encoder(tmp_path / "encoder")
    args = FinetuneArguments(
        data_dir="unused", task="water", init="di3cl", model_name_or_path=str(folder), num_channels=2,
        decoder_hidden_size=16, output_dir=str(tmp_path / "out"),
    )  # fmt: skip
    model, processor = build_model(args, ["not_water", "water"])
    assert model.config.num_channels == 2 and processor.num_channels == 2
    assert processor.image_mean == [0.3, 0.3] and processor.image_std == [0.1, 0.1]
    original = DI3CLModel.from_pretrained(folder).eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        expected = original(pixel_values=x).last_hidden_state
        adapted = model.eval().base_model(pixel_values=x.repeat(1, 2, 1, 1)).last_hidden_state
    torch.testing.assert_close(adapted, expected, rtol=1e-4, atol=1e-5)
    # the same channel count (default) loads the encoder unchanged
    same, _ = build_model(FinetuneArguments(**{**args.__dict__, "num_channels": None}), ["a", "b"])
    assert same.config.num_channels == 1


# -- classical baselines ----------------------------------------------------------------------------------
def test_fitted_threshold_otsu_and_log_ratio():
    rng = np.random.default_rng(0)
    permanent = np.zeros((32, 32), bool)
    permanent[:, :6] = True
    flood = np.zeros((32, 32), bool)
    flood[:16, 6:20] = True
    samples = []
    for _ in range(3):
        before = np.where(permanent, -24.0, -8.0) + rng.normal(0, 0.5, (32, 32))
        after = np.where(permanent | flood, -24.0, before) + rng.normal(0, 0.5, (32, 32))
        label = flood.astype(np.uint8)
        label[0, 0] = IGNORE_INDEX
        samples.append((np.stack([before, after]), label))
    after_only = baselines.fit_threshold(samples, (0.0, 1.0))
    ratio = baselines.fit_threshold(samples, baselines.LOG_RATIO_WEIGHTS)
    assert (
        ratio.below and ratio.train_iou == 1.0
    )  # flood darkens the after image; permanent water does not change
    assert after_only.train_iou < 0.75  # the after image alone confuses flood with permanent water
    scores = baselines.score_predictor(ratio.predict, samples)
    assert scores["iou"] == scores["f1"] == 1.0 and np.sum(scores["confusion_matrix"]) == 3 * (32 * 32 - 1)
    # two bands with independent noise tell water from land alike: Fisher's direction weights both, positively
    water = []
    for _ in range(2):
        base = np.where(permanent | flood, -24.0, -8.0)
        water.append((base + rng.normal(0, 0.5, (2, 32, 32)), (permanent | flood).astype(np.uint8)))
    weights = baselines.fisher_weights(water)
    assert min(weights) > 0.5 and baselines.fit_threshold(water, weights).train_iou == 1.0
    # Otsu per tile: the threshold between the two modes, foreground below it
    tile = np.where(permanent | flood, -24.0, -8.0) + rng.normal(0, 0.5, (32, 32))
    assert -20 < baselines.otsu_threshold(tile) < -12
    np.testing.assert_array_equal(baselines.otsu_predict(tile[None]), permanent | flood)
    assert not baselines.otsu_predict(np.full((1, 4, 4), -10.0)).any()  # a flat tile: nothing
    assert baselines.binary_scores(np.array([[5, 1], [2, 3]])) == pytest.approx({"iou": 0.5, "f1": 2 / 3})
    with pytest.raises(ValueError, match="need both classes"):
        baselines.fit_threshold([(np.zeros((1, 4, 4)), np.zeros((4, 4), np.uint8))])


# -- the ablation runner ------------------------------------------------------------------------------------
def _runner():
    spec = importlib.util.spec_from_file_location("evaluate_flood", ROOT / "examples" / "evaluate_flood.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["evaluate_flood"] = module
    spec.loader.exec_module(module)
    return module


def test_runner_end_to_end_resumes_and_merges(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    runner = _runner()
    etci, ombria = make_etci(tmp_path / "etci", size=64), make_ombria(tmp_path / "ombria", size=64)
    encoder = _one_channel_encoder(tmp_path / "encoder")
    common = [
        "--etci_dir", str(etci), "--ombria_dir", str(ombria), "--max_steps", "2", "--crop_size", "32",
        "--batch_size", "2", "--eval_batch_size", "2", "--decoder_hidden_size", "16", "--seeds", "0",
        "--mixed_precision", "fp32",
    ]  # fmt: skip
    first = [*common, "--tasks", "etci", "ombria-pair", "--init", f"s1={encoder}"]  # 1 -> 2 channels adapted
    first += ["--fractions", "1.0", "--modes", "full", "--output_dir", str(tmp_path / "a")]
    assert runner.main(first) == 0
    record = json.loads((tmp_path / "a" / "flood.json").read_text())
    learned = [r for r in record["runs"].values() if r["mode"] != "classical"]
    assert len(learned) == 2 and {r["init"] for r in learned} == {"s1"}
    assert all(
        0.0 <= r["iou"] <= 1.0 and r["wall_seconds"] > 0 and "avx512f" in r["machine"] for r in learned
    )
    assert "log ratio (after − before dB)" in record["classical"]["ombria-pair"]
    assert record["tasks"]["etci"]["splits"] == {"train": 2, "validation": 1, "test": 1}
    assert record["tasks"]["etci"]["validation"] == "unused"
    monkeypatch.setattr(runner, "finetune", None)  # resumed: every run is finished, nothing is trained again
    assert runner.main(first) == 0
    assert json.loads((tmp_path / "a" / "flood.json").read_text())["runs"] == record["runs"]
    monkeypatch.undo()
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    second = [*common, "--tasks", "ombria-after", "--fractions", "1.0", "--modes", "frozen", "--no_classical"]
    assert runner.main([*second, "--output_dir", str(tmp_path / "b")]) == 0
    assert (
        runner.main(
            ["--merge", str(tmp_path / "a"), str(tmp_path / "b"), "--output_dir", str(tmp_path / "m")]
        )
        == 0
    )
    merged = json.loads((tmp_path / "m" / "flood.json").read_text())
    assert len(merged["runs"]) == len(record["runs"]) + 1 and set(merged["tasks"]) == {
        "etci",
        "ombria-pair",
        "ombria-after",
    }
    table = (tmp_path / "m" / "flood.md").read_text()
    assert (
        "## ombria-after" in table
        and "| s1 | full |" in table
        and "| random | frozen |" in table
        and "| threshold VV | classical |" in table
    )
    assert (tmp_path / "m" / "flood_label_efficiency.png").stat().st_size > 1000
    with pytest.raises(SystemExit, match="budget"):
        runner.main([*first[:-1], str(tmp_path / "a"), "--max_steps", "3"])


def test_runner_budget_keeps_older_records_and_records_protocol_changes():
    """Protocol flags at their defaults leave the budget as older records wrote it; other values enter it, so a
    record of one protocol is never resumed or merged with runs of another."""
    runner = _runner()
    plain = runner.parse_args(["--tasks", "etci", "--etci_dir", str(ROOT)])
    assert set(runner.budget_of(plain)) == set(runner.BUDGET_KEYS)
    changed = runner.parse_args(
        ["--tasks", "etci", "--etci_dir", str(ROOT), "--segmentation_loss", "ce+dice",
         "--foreground_crop_probability", "0.5", "--backbone_learning_rate_scale", "0.1"]
    )  # fmt: skip
    budget = runner.budget_of(changed)
    assert budget["segmentation_loss"] == "ce+dice" and budget["foreground_crop_probability"] == 0.5
    assert budget["backbone_learning_rate_scale"] == 0.1 and budget != runner.budget_of(plain)


def test_figure_draws_curves_and_leaves_single_fraction_rows_to_the_tables() -> None:
    """An ablation encoder scored at one label fraction is not a curve; a task with one fraction keeps every row."""
    runner = _runner()

    def run(task, init, fraction, mode="frozen"):
        return {"task": task, "init": init, "mode": mode, "fraction": fraction, "seed": 0, "iou": 0.5}

    runs = [run("etci", init, f) for init in ("random", "di3cl") for f in (0.01, 0.1)]
    runs += [run("etci", "di3cl-ablation", 0.1), run("etci", "threshold VV", 0.01, "classical")]
    runs += [run("etci", "threshold VV", 0.1, "classical"), run("ombria-after", "random", 1.0)]
    record = {
        "runs": {str(index): r for index, r in enumerate(runs)},
        "order": ["random", "di3cl", "di3cl-ablation"],
        "modes": ["frozen"],
        "classical": {"etci": ["threshold VV"]},
    }
    drawn = [(init, mode) for init, mode, _ in runner.curve_rows(record, "etci")]
    assert drawn == [("random", "frozen"), ("di3cl", "frozen"), ("threshold VV", "classical")]
    assert [init for init, _, _ in runner.curve_rows(record, "ombria-after")] == ["random"]
