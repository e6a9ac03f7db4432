"""Issue #16 items 4 and 7, end to end: quad-pol bands chosen by name on the command line, an 8-bit
Pauli RGB composite through the segmentation builder, ``examples/finetune.py`` (3-channel model) and
``di3cl predict``, and the radiometry summary naming the kind actually used."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from di3cl_hf import DI3CLConfig, DI3CLForSemanticSegmentation, DI3CLImageProcessor
from di3cl_hf.cli import main as di3cl
from di3cl_hf.data.sario import write_geotiff

REPO_ROOT = Path(__file__).resolve().parents[1]
T = Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 5000000.0)
PAULI_CLASSES = ["urban", "vegetation", "water"]


def _tiny_model(folder: Path, num_channels: int, **processor_kwargs) -> Path:
    config = DI3CLConfig(
        backbone="resnet18",
        num_channels=num_channels,
        image_size=64,
        queue_size=64,
        projection_hidden_dim=64,
        decoder_hidden_size=32,
        num_labels=2,
    )
    torch.manual_seed(0)
    DI3CLForSemanticSegmentation(config).eval().save_pretrained(folder)
    DI3CLImageProcessor(num_channels=num_channels, **processor_kwargs).save_pretrained(folder)
    return folder


def _quad_pol(path: Path) -> np.ndarray:
    rng = np.random.default_rng(0)
    quad = (10 ** (rng.normal(-15, 4, size=(4, 64, 64)) / 10)).astype(np.float32)  # linear intensity
    write_geotiff(path, quad, crs="EPSG:32631", transform=T, band_names=("HH", "HV", "VH", "VV"))
    return quad


def test_predict_quad_pol_with_bands_by_name(tmp_path: Path, capsys) -> None:
    model = _tiny_model(tmp_path / "model", 2)
    quad = _quad_pol(tmp_path / "quad.tif")
    by_name, by_index = tmp_path / "by_name.tif", tmp_path / "by_index.tif"
    common = ["--tile-size", "64", "--overlap", "0", "--quiet", "--local-files-only", "--precision", "fp32"]
    assert (
        di3cl(
            ["predict", str(model), str(tmp_path / "quad.tif"), str(by_name), "--bands", "VV", "vh", *common]
        )
        == 0
    )
    assert (
        di3cl(
            ["predict", str(model), str(tmp_path / "quad.tif"), str(by_index), "--bands", "4", "3", *common]
        )
        == 0
    )
    with rasterio.open(by_name) as a, rasterio.open(by_index) as b:
        np.testing.assert_array_equal(a.read(), b.read())
        assert a.crs == rasterio.crs.CRS.from_string("EPSG:32631") and a.shape == quad.shape[1:]
    assert "input intensity" in capsys.readouterr().out
    # a missing name lists the file's bands; no output is written
    assert (
        di3cl(
            [
                "predict",
                str(model),
                str(tmp_path / "quad.tif"),
                str(tmp_path / "x.tif"),
                "--bands",
                "VV",
                "RR",
                *common,
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "no band named 'RR'; the file's bands are: HH (1), HV (2), VH (3), VV (4)" in err
    assert not (tmp_path / "x.tif").exists()
    # a processor saved with bands=("VV", "VH") chooses them without --bands
    saved = _tiny_model(tmp_path / "model_vv_vh", 2, bands=("VV", "VH"))
    out = tmp_path / "from_processor.tif"
    assert di3cl(["predict", str(saved), str(tmp_path / "quad.tif"), str(out), *common]) == 0
    with rasterio.open(out) as a, rasterio.open(by_name) as b:
        np.testing.assert_array_equal(a.read(), b.read())


def test_predict_summary_prints_the_declared_kind_it_applied(tmp_path: Path, capsys) -> None:
    """uint8 amplitude declared with --input-kind: applied (the map differs from dn8) and printed."""
    model = _tiny_model(tmp_path / "model", 1)
    rng = np.random.default_rng(3)
    write_geotiff(tmp_path / "amp8.tif", rng.integers(1, 256, size=(1, 64, 64), dtype=np.uint8))
    common = [
        "--tile-size",
        "64",
        "--overlap",
        "0",
        "--quiet",
        "--output-type",
        "probabilities",
        "--precision",
        "fp32",
    ]
    outputs = {}
    for kind in ("amplitude", "dn8"):
        outputs[kind] = tmp_path / f"{kind}.tif"
        assert (
            di3cl(
                [
                    "predict",
                    str(model),
                    str(tmp_path / "amp8.tif"),
                    str(outputs[kind]),
                    "--input-kind",
                    kind,
                    *common,
                ]
            )
            == 0
        )
        assert f"input {kind}" in capsys.readouterr().out
    with rasterio.open(outputs["amplitude"]) as a, rasterio.open(outputs["dn8"]) as b:
        assert not np.array_equal(a.read(), b.read())
    slc = (np.ones((1, 64, 64)) * np.exp(1j)).astype(np.complex64)
    write_geotiff(tmp_path / "slc.tif", slc)
    code = di3cl(
        [
            "predict",
            str(model),
            str(tmp_path / "slc.tif"),
            str(tmp_path / "slc_map.tif"),
            "--input-kind",
            "amplitude",
            *common,
        ]
    )
    assert code == 1
    assert "'amplitude' does not apply to complex64 data" in capsys.readouterr().err


def _pauli_set(root: Path) -> None:
    """A synthetic Pauli RGB composite per class region: |HH-VV| red, |HV| green, |HH+VV| blue."""
    rng = np.random.default_rng(7)
    colours = np.array([[200, 60, 60], [60, 200, 60], [40, 40, 200]], np.float64)
    for split, count in (("train", 3), ("test", 1)):
        for index in range(count):
            label = np.zeros((64, 64), np.uint8)
            label[:, 20:44] = 1
            label[40:, :] = 2
            label = np.roll(label, index * 7, axis=1)
            pauli = np.clip(colours[label].transpose(2, 0, 1) + rng.normal(0, 20, (3, 64, 64)), 0, 255)
            write_geotiff(
                root / split / "images" / f"p{index}.tif",
                pauli.astype(np.uint8),
                crs="EPSG:32631",
                transform=T,
            )
            write_geotiff(root / split / "masks" / f"p{index}.tif", label)


def test_pauli_rgb_finetune_and_predict_with_a_three_channel_model(tmp_path: Path, monkeypatch) -> None:
    data, output = tmp_path / "pauli", tmp_path / "finetuned"
    _pauli_set(data)
    seen = []
    original = DI3CLImageProcessor.sar_to_pixel_values

    def spy(self, array_chw, *args, **kwargs):
        seen.append((np.asarray(array_chw).dtype, np.asarray(array_chw).shape[0]))
        return original(self, array_chw, *args, **kwargs)

    monkeypatch.setattr(DI3CLImageProcessor, "sar_to_pixel_values", spy)
    argv = [
        "finetune.py", "--data_dir", str(data), "--output_dir", str(output), "--task", "pauli",
        "--class_names", *PAULI_CLASSES, "--init", "random", "--backbone", "resnet18", "--num_channels", "3",
        "--crop_size", "64", "--batch_size", "2", "--max_steps", "2", "--decoder_hidden_size", "32",
        "--mixed_precision", "fp32", "--disable_tqdm", "true",
    ]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_code:
        runpy.run_path(str(REPO_ROOT / "examples" / "finetune.py"), run_name="__main__")
    assert exit_code.value.code == 0
    # the composite reached the processor as 8-bit RGB (dn8 per channel), not replicated or refused
    assert seen and all(dtype == np.uint8 and bands == 3 for dtype, bands in seen)
    monkeypatch.undo()
    processor = DI3CLImageProcessor.from_pretrained(output)
    assert processor.num_channels == 3
    scene = data / "test" / "images" / "p0.tif"
    result = tmp_path / "pauli_map.tif"
    code = di3cl(["predict", str(output), str(scene), str(result), "--bands", "1", "2", "3",
                  "--tile-size", "64", "--overlap", "0", "--quiet", "--precision", "fp32"])  # fmt: skip
    assert code == 0
    with rasterio.open(result) as classes:
        values = classes.read(1)
        assert values.shape == (64, 64) and set(np.unique(values)) <= {0, 1, 2}
        assert classes.crs == rasterio.crs.CRS.from_string("EPSG:32631")
