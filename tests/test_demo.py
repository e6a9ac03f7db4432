"""The main job (``make demo``): its real-SAR parts (tiling the embedded Sentinel-1 scenes, the water fold, heads
built on a pre-trained encoder without transformers' load report) and, slow, the quick variant end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from di3cl_hf import demo
from di3cl_hf.demo import (
    DEMO_MARKER,
    QUICK,
    WATER_HELD_OUT,
    prepare_output_dir,
    results_table,
    run,
    tile_scenes,
    water_fold,
)

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "sentinel1"
needs_sample = pytest.mark.skipif(not SAMPLE.is_dir(), reason="the embedded Sentinel-1 sample is absent")


@needs_sample
def test_tile_scenes_cuts_georeferenced_256_tiles(tmp_path: Path):
    tiles = tile_scenes(SAMPLE / "scenes", tmp_path, 256, limit=1)
    scene = sorted((SAMPLE / "scenes").glob("*.tif"))[0]
    assert [t.name for t in tiles] == [f"{scene.stem}_{r}{c}.tif" for r in range(4) for c in range(4)]
    with rasterio.open(scene) as source, rasterio.open(tiles[5]) as tile:  # row 1, column 1
        assert (tile.width, tile.height, tile.count, tile.dtypes) == (256, 256, source.count, source.dtypes)
        assert tile.crs == source.crs
        assert tile.transform == source.transform @ source.transform.translation(256, 256)
        np.testing.assert_array_equal(tile.read(), source.read(window=((256, 512), (256, 512))))
        assert tile.descriptions == source.descriptions


@needs_sample
def test_water_fold_holds_one_real_chip_out_as_vh(tmp_path: Path):
    from di3cl_hf.data.segmentation import load_segmentation

    fold = water_fold(SAMPLE / "water", WATER_HELD_OUT, tmp_path / "fold")
    splits = load_segmentation(fold, task="water", cache_dir=str(tmp_path / "cache"))
    assert len(splits["train"]) == 4 and len(splits["test"]) == 1
    assert np.asarray(splits["test"][0]["image"]).shape[0] == 1  # VH only
    with rasterio.open(SAMPLE / "water" / "images" / f"{WATER_HELD_OUT}_vh.tif") as vh:
        np.testing.assert_array_equal(
            np.nan_to_num(np.asarray(splits["test"][0]["image"])[0]), np.nan_to_num(vh.read(1))
        )
    with pytest.raises(ValueError, match="no chip"):
        water_fold(SAMPLE / "water", "nope", tmp_path / "other")


@needs_sample
def test_water_fold_of_both_polarisations_reads_vv_vh_samples(tmp_path: Path):
    """The demo's water fold for the (VV + VH) shipped encoder: one file per polarisation, one 2-band sample."""
    from di3cl_hf.data.segmentation import load_segmentation

    fold = water_fold(SAMPLE / "water", WATER_HELD_OUT, tmp_path / "fold", band=("vv", "vh"))
    assert sorted(p.name for p in (fold / "test" / "images").iterdir()) == [
        f"{WATER_HELD_OUT}_vh.tif",
        f"{WATER_HELD_OUT}_vv.tif",
    ]
    splits = load_segmentation(fold, task="water", cache_dir=str(tmp_path / "cache"))
    assert len(splits["train"]) == 4 and np.asarray(splits["test"][0]["image"]).shape[0] == 2


def test_heads_on_a_pretrained_encoder_load_it_strictly_without_a_load_report(tmp_path: Path, capfd):
    from safetensors.torch import load_file, save_file

    from di3cl_hf import DI3CLConfig, DI3CLModel
    from di3cl_hf.image_processing_di3cl import DI3CLImageProcessor
    from di3cl_hf.training.finetuning import FinetuneArguments, build_model

    encoder = DI3CLModel(DI3CLConfig(backbone="resnet18", num_channels=1))
    encoder.save_pretrained(tmp_path / "encoder")
    DI3CLImageProcessor(num_channels=1, image_mean=[0.3], image_std=[0.1]).save_pretrained(
        tmp_path / "encoder"
    )
    capfd.readouterr()
    args = FinetuneArguments(
        data_dir="unused", task="water", init="di3cl", model_name_or_path=str(tmp_path / "encoder"),
        decoder_hidden_size=16, output_dir=str(tmp_path / "out"),
    )  # fmt: skip
    model, processor = build_model(args, ["not_water", "water"])
    output = "".join(capfd.readouterr())
    assert "LOAD REPORT" not in output and "MISSING" not in output
    for key, value in encoder.state_dict().items():
        torch.testing.assert_close(model.base_model.state_dict()[key], value, rtol=0, atol=0)
    assert model.config.num_labels == 2 and processor.image_mean == [0.3]
    # the encoder's own keys are still checked: a missing one is an error, not a silently random tensor
    weights = load_file(str(tmp_path / "encoder" / "model.safetensors"))
    weights.pop("encoder.conv1.weight")
    save_file(weights, str(tmp_path / "encoder" / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(RuntimeError, match="conv1.weight"):
        build_model(args, ["not_water", "water"])


def test_results_table_says_real_or_synthetic_row_by_row():
    water = {init: {"water IoU": 0.5, "water F1": 0.6} for init in ("shipped", "random")}
    shipped = {"water IoU": 0.7, "water F1": 0.8}
    scores = {"miou": 0.25, "mean_f1": 0.3}
    synthetic = {
        "results": {t: {i: {"0.1": scores} for i in ("di3cl", "random")} for t in ("landcover", "roads")}
    }
    rows = [row.split("|") for row in results_table(water, synthetic, shipped).splitlines()[2:]]
    assert [row[2].strip() for row in rows] == ["real (Sentinel-1 VV + VH)"] * 4 + ["synthetic"] * 4
    assert [row[5].strip() for row in rows[:4]] == ["shipped encoder (4 chips fine-tuned)"] * 2 + [
        "shipped model as is (no fine-tuning)"
    ] * 2
    assert rows[0][6].strip() == "50.0" and rows[2][6].strip() == "70.0" and rows[2][7].strip() == "–"
    assert {row[5].strip() for row in rows[4:]} == {"continued pre-training (VH)"}


@pytest.mark.slow
@needs_sample
def test_quick_demo_end_to_end(tmp_path: Path) -> None:
    output = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "di3cl_hf.demo", "--quick", "--output-dir", str(output)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (
        "| water | real (Sentinel-1 VV + VH) |" in result.stdout and "| roads | synthetic |" in result.stdout
    )
    assert "shipped model as is" in result.stdout
    assert "LOAD REPORT" not in result.stdout + result.stderr

    from di3cl_hf import DI3CLForSemanticSegmentation, DI3CLImageProcessor, DI3CLModel

    encoder_dir = output / "pretrain" / "encoder"
    assert DI3CLModel.from_pretrained(encoder_dir).config.num_channels == 1
    processor = DI3CLImageProcessor.from_pretrained(encoder_dir)
    assert (
        processor.image_mean != DI3CLImageProcessor(num_channels=1).image_mean
    )  # measured on the real tiles
    for task, num_labels, channels in (("landcover", 10, 1), ("water", 2, 2), ("roads", 2, 1)):
        folder = output / "models" / task
        for name in ("config.json", "model.safetensors", "preprocessor_config.json", "README.md"):
            assert (folder / name).is_file(), f"{task}: {name} missing"
        model = DI3CLForSemanticSegmentation.from_pretrained(folder)
        assert model.config.num_labels == num_labels and model.config.num_channels == channels

    summary = json.loads((output / "summary.json").read_text())
    assert summary["water"]["data"] == "real" and set(summary["water"]["scores"]) == {"shipped", "random"}
    assert summary["shipped"]["data"] == "real" and 0 <= summary["shipped"]["water IoU"] <= 1
    assert set(summary["synthetic"]["results"]) == {"landcover", "roads"}

    chip = SAMPLE / "water" / "images" / f"{WATER_HELD_OUT}_vv.tif"
    prediction = next(output.glob("s1-*-water-shipped.tif"))
    with rasterio.open(chip) as source, rasterio.open(prediction) as predicted:
        assert predicted.crs == source.crs
        assert predicted.transform == source.transform
        assert (predicted.width, predicted.height) == (source.width, source.height)
        assert set(np.unique(predicted.read(1))) <= {0, 1, 255}


@pytest.mark.parametrize(
    ("device", "precision", "expected"),
    [
        ("cpu", "bf16", "full"),
        ("cpu", "fp32", "full-fp32"),
        ("cuda", "bf16", "full"),
        ("cuda", "fp32", "full"),
    ],
)
def test_demo_budget_follows_native_precision(monkeypatch, device, precision, expected):
    """A CPU without native bf16 (auto -> fp32) gets the smaller budget so that `make demo` fits 15 minutes."""
    monkeypatch.setattr(demo, "resolve_precision", lambda requested, device, log=True: precision)
    assert demo.choose_budget("auto", torch.device(device)).name == expected
    assert demo.choose_budget("full", torch.device(device)) is demo.FULL
    fp32, full = demo.FULL_FP32, demo.FULL
    compute = fp32.pretrain_steps * fp32.pretrain_batch / (full.pretrain_steps * full.pretrain_batch)
    assert compute <= 0.4  # about a third of the full budget's pre-training
    assert fp32.water_steps * fp32.water_crop**2 <= 0.4 * full.water_steps * full.water_crop**2


def test_output_dir_is_never_a_foreign_folder(tmp_path: Path, capsys) -> None:
    """The demo only ever deletes a folder it wrote itself: a user's non-empty folder (or a file) is refused before
    any work and left exactly as it was; an earlier demo run's folder is replaced (and said so)."""
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "field-survey.tif").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="not written by the demo"):
        run(foreign, QUICK)
    assert [path.name for path in foreign.iterdir()] == ["field-survey.tif"]
    assert (foreign / "field-survey.tif").read_bytes() == b"precious"

    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep")
    with pytest.raises(FileExistsError, match="is a file"):
        run(a_file, QUICK)
    assert a_file.read_text() == "keep"

    earlier = tmp_path / "demo"
    prepare_output_dir(earlier)  # a new folder: used and marked
    (earlier / "summary.json").write_text("{}")
    prepare_output_dir(earlier)  # an earlier run's: replaced
    assert "Replacing the previous demo run" in capsys.readouterr().out
    assert sorted(path.name for path in earlier.iterdir()) == [DEMO_MARKER]

    empty = tmp_path / "empty"
    empty.mkdir()
    prepare_output_dir(empty)
    assert (empty / DEMO_MARKER).is_file()


def test_a_missing_shipped_model_is_one_clear_error_before_any_work(tmp_path: Path, monkeypatch) -> None:
    """The demo builds on the shipped model: without it, it stops first, naming the builder, writing nothing."""
    from di3cl_hf import weights
    from di3cl_hf.weights import ShippedModelMissingError

    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path / "no-weights")
    with pytest.raises(ShippedModelMissingError, match="ship-model"):
        run(tmp_path / "demo", QUICK)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        run(tmp_path / "demo", QUICK, shipped=tmp_path)
    assert not (tmp_path / "demo").exists()
