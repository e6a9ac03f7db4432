"""What ``di3cl`` refuses, and the silently wrong results it no longer gives (issue 21): foreign code, inputs
inside ``--output-dir``, maps made by another model taken as done, GCP georeferencing lost, impossible input
kinds, encoder folders used as segmenters, oversized configs and tiles, late or unclear errors. Every refusal
is one line on stderr (exit 1 or 2), before the model loads where the check allows."""

from __future__ import annotations

import json
import pickle
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.transform import from_origin

from di3cl_hf.cli import main
from di3cl_hf.data.sario import read_sar, write_geotiff
from di3cl_hf.inference.provenance import PROVENANCE_TAG
from di3cl_hf.inference.scene import predict_scene
from di3cl_hf.loading import RemoteCodeError, load_model_and_processor

QUIET = ["--quiet", "--tile-size", "64", "--overlap", "16"]


def _db_scene(seed: int = 0, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vv = np.where(np.arange(size)[:, None] < size // 2, -20.0, -8.0) + rng.normal(0, 1.5, (size, size))
    return np.stack([vv, vv - 6]).astype(np.float32)


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    path = tmp_path / "scenes" / "s.tif"
    write_geotiff(path, _db_scene(), crs="EPSG:32631", transform=from_origin(600000, 5e6, 20, 20))
    return path


def _refusal(capsys: pytest.CaptureFixture[str], argv: list[str], code: int = 1) -> str:
    """Run ``di3cl argv``; assert the exit code and a one-line message without traceback; return it."""
    capsys.readouterr()  # what the test's own set-up printed
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _no_model_load(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the check")

    monkeypatch.setattr("di3cl_hf.cli.predict.load_model_and_processor", refuse)


# ------------------------------------------------------------------------------------------------ code execution


def test_folder_with_foreign_code_is_refused_without_running_it(
    model_dir: Path, scene: Path, tmp_path: Path, capsys
) -> None:
    folder = tmp_path / "foreign"
    shutil.copytree(model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="foreign-sar", auto_map={"AutoConfig": "evil.Config"})
    config["auto_map"]["AutoModelForSemanticSegmentation"] = "evil.Model"
    (folder / "config.json").write_text(json.dumps(config))
    ran = tmp_path / "code-ran"
    (folder / "evil.py").write_text(f"open({str(ran)!r}, 'w').close()\n")
    message = _refusal(capsys, ["predict", str(folder), str(scene), str(tmp_path / "o.tif"), *QUIET])
    assert "--trust-remote-code" in message and "auto_map" in message
    message = _refusal(capsys, ["export-onnx", str(folder), str(tmp_path / "m.onnx")])
    assert "--trust-remote-code" in message
    with pytest.raises(RemoteCodeError):  # the Space's and the Python API's route
        load_model_and_processor(folder)
    assert not ran.exists()


# ------------------------------------------------------------------------------------------ silently wrong maps


def test_inputs_inside_the_output_dir_are_refused(model_dir: Path, scene: Path, capsys, monkeypatch) -> None:
    _no_model_load(monkeypatch)
    folder = scene.parent
    for inputs in ([str(folder)], [str(scene)], [str(folder / "*.tif")]):
        message = _refusal(capsys, ["predict", str(model_dir), *inputs, "--output-dir", str(folder), *QUIET])
        assert "inside it" in message and str(folder) in message


def test_rerun_with_another_model_or_options_recomputes(
    model_dir: Path, scene: Path, tmp_path: Path, capsys
) -> None:
    from di3cl_hf import DI3CLForSemanticSegmentation

    other = tmp_path / "other-model"
    shutil.copytree(model_dir, other)
    model = DI3CLForSemanticSegmentation.from_pretrained(model_dir)
    with torch.no_grad():
        model.decode_head.classifier.weight.mul_(-1.0)  # the same encoder, another head
    model.save_pretrained(other)
    maps = tmp_path / "maps"

    def run(model_path: Path, *extra: str) -> str:
        capsys.readouterr()
        assert main(["predict", str(model_path), str(scene), "--output-dir", str(maps), *QUIET, *extra]) == 0
        return capsys.readouterr().out

    def provenance() -> str:
        with rasterio.open(maps / "s_classes.tif") as dataset:
            return dataset.tags()[PROVENANCE_TAG]

    assert "1 done" in run(model_dir)
    first = provenance()
    assert "1 skipped" in run(model_dir)
    out = run(other)
    assert "1 done" in out and "another model" in out and provenance() != first
    assert "1 done" in run(other, "--tile-size", "96")  # other options: recomputed too
    assert "1 skipped" in run(other, "--tile-size", "96")


def _gcp_scene(path: Path) -> list[GroundControlPoint]:
    points = [
        GroundControlPoint(row, col, 10.0 + col / 1000, 50.0 - row / 1000, 0.0, str(i))
        for i, (row, col) in enumerate([(0, 0), (0, 63), (63, 0), (63, 63)])
    ]
    profile = dict(driver="GTiff", count=2, height=64, width=64, dtype="float32")
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.gcps = (points, CRS.from_epsg(4326))
        dataset.write(_db_scene())
    return points


def test_gcp_georeferencing_is_kept(model_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "grd.tif"
    points = _gcp_scene(source)
    output = tmp_path / "map.tif"
    assert main(["predict", str(model_dir), str(source), str(output), *QUIET]) == 0
    with rasterio.open(output) as dataset:
        gcps, crs = dataset.gcps
        assert crs == CRS.from_epsg(4326) and [(p.row, p.col, p.x, p.y) for p in gcps] == [
            (p.row, p.col, p.x, p.y) for p in points
        ]
    model, processor = load_model_and_processor(model_dir)
    in_memory = predict_scene(
        model, read_sar(source), None, processor, tile_size=64, overlap=16, progress=False
    )
    assert in_memory.gcps is not None and in_memory.gcps[1] == CRS.from_epsg(4326)  # what the Space writes


@pytest.mark.parametrize("kind", ["dn16", "dn8", "intensity"])
def test_impossible_input_kind_is_refused(
    model_dir: Path, scene: Path, tmp_path: Path, kind: str, capsys
) -> None:
    argv = ["predict", str(model_dir), str(scene), str(tmp_path / "o.tif"), "--input-kind", kind, *QUIET]
    assert "does not fit the data" in _refusal(capsys, argv)
    assert not (tmp_path / "o.tif").exists()


def test_encoder_without_trained_head_is_refused(tiny_config, scene: Path, tmp_path: Path, capsys) -> None:
    from di3cl_hf import DI3CLImageProcessor, DI3CLModel

    encoder = tmp_path / "encoder"
    DI3CLModel(tiny_config()).save_pretrained(encoder)
    DI3CLImageProcessor(num_channels=2).save_pretrained(encoder)
    message = _refusal(capsys, ["predict", str(encoder), str(scene), str(tmp_path / "o.tif"), *QUIET])
    assert "no trained segmentation head" in message and "finetune.py" in message


# ---------------------------------------------------------------------------------------- stalls, exhaustion


@pytest.mark.parametrize(
    "change",
    [
        {"num_labels": 3_000_000, "id2label": None, "label2id": None},
        {"num_labels": 10**9, "id2label": None, "label2id": None},
        {"decoder_hidden_size": 10**6},
        {"pool_scales": [1, 2, 10**6]},
        {"queue_size": 10**11},
    ],
)
def test_oversized_config_is_refused_quickly(
    model_dir: Path, scene: Path, tmp_path: Path, change, capsys
) -> None:
    folder = tmp_path / "big"
    shutil.copytree(model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(change)
    (folder / "config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not None}))
    start = time.perf_counter()
    message = _refusal(capsys, ["predict", str(folder), str(scene), str(tmp_path / "o.tif"), *QUIET])
    assert "above the limit" in message or "expected integers from 1 to" in message
    assert time.perf_counter() - start < 30


def test_tile_size_has_a_floor_and_is_clamped_to_the_scene(
    model_dir: Path, scene: Path, tmp_path: Path, capsys
):
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "predict",
                str(model_dir),
                str(scene),
                str(tmp_path / "o.tif"),
                "--tile-size",
                "1",
                "--overlap",
                "0",
            ]
        )
    assert exit_info.value.code == 2 and "at least 32" in capsys.readouterr().err
    model, processor = load_model_and_processor(model_dir)
    with pytest.raises(ValueError, match="at least 32 .the network"):
        predict_scene(model, scene, None, processor, tile_size=8, overlap=0, progress=False)
    huge = predict_scene(model, scene, None, processor, tile_size=100_000, overlap=0, progress=False)
    assert huge.num_tiles == 1
    assert np.array_equal(huge.array, predict_scene(model, scene, None, processor, progress=False).array)


def test_map_of_a_scene_smaller_than_a_tile_does_not_depend_on_the_tile_size(model_dir: Path, tmp_path: Path):
    """A 80 px scene: predicted at 96 px (its side rounded up to the stride, reflection-padded), whatever the
    tile size above that; before, a 512 or 1024 px tile fed the network a border of zeros 6-12x its area."""
    path = tmp_path / "small.tif"
    write_geotiff(path, _db_scene(3, 80), crs="EPSG:32631", transform=from_origin(0, 0, 10, 10))
    model, processor = load_model_and_processor(model_dir)
    maps = [
        predict_scene(
            model, path, None, processor, tile_size=t, output_type="probabilities", progress=False
        ).array
        for t in (96, 512, 1024)
    ]
    assert np.array_equal(maps[0], maps[1]) and np.array_equal(maps[0], maps[2])


# ---------------------------------------------------------------------------------------- late, unclear errors


def test_output_dir_problems_are_refused_before_loading(
    model_dir: Path, scene: Path, tmp_path: Path, capsys, monkeypatch
):
    _no_model_load(monkeypatch)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    message = _refusal(capsys, ["predict", str(model_dir), str(scene), "--output-dir", str(a_file), *QUIET])
    assert "not a folder" in message
    monkeypatch.setattr("di3cl_hf.inference.batch.os.access", lambda *args: False)  # read-only (also as root)
    message = _refusal(
        capsys, ["predict", str(model_dir), str(scene), "--output-dir", str(tmp_path / "ro"), *QUIET]
    )
    assert "not writable" in message


def test_unreadable_inputs_are_found_before_the_model_loads(
    model_dir: Path, tmp_path: Path, capsys, monkeypatch
):
    _no_model_load(monkeypatch)
    bad = tmp_path / "in" / "bad.tif"
    bad.parent.mkdir()
    bad.write_bytes(b"not a tiff")
    assert "unreadable" in _refusal(
        capsys, ["predict", str(model_dir), str(bad), str(tmp_path / "o.tif"), *QUIET]
    )
    assert main(["predict", str(model_dir), str(bad), "--output-dir", str(tmp_path / "maps"), *QUIET]) == 1
    assert "1 failed" in capsys.readouterr().out


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("form", ["zip", "raw"])
def test_pickled_weights_that_would_run_code_are_one_line(
    model_dir: Path, scene: Path, tmp_path: Path, form: str, capsys
) -> None:
    folder = tmp_path / "pickled"
    shutil.copytree(model_dir, folder)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "code-ran"
    if form == "zip":
        torch.save({"weight": _Payload(marker)}, folder / "pytorch_model.bin")
    else:
        (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"weight": _Payload(marker)}))
    message = _refusal(capsys, ["predict", str(folder), str(scene), str(tmp_path / "o.tif"), *QUIET])
    assert "not loadable safely" in message and "safetensors" in message
    assert not marker.exists()


def test_garbage_onnx_is_one_line(scene: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("onnxruntime")
    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(b"\x00garbage, not a protobuf" * 10)
    argv = ["predict", str(garbage), str(scene), str(tmp_path / "o.tif"), "--backend", "onnxruntime", *QUIET]
    assert "not a loadable ONNX model" in _refusal(capsys, argv)


def test_a_killed_runs_temporary_is_removed_by_the_next_run(
    model_dir: Path, scene: Path, tmp_path: Path
) -> None:
    import os

    output = tmp_path / "map.tif"
    leftover = tmp_path / ".map.tif.abc123.tmp.tif"  # what a SIGKILLed writer leaves
    leftover.write_bytes(b"partial")
    old = time.time() - 3600
    os.utime(leftover, (old, old))
    assert main(["predict", str(model_dir), str(scene), str(output), *QUIET]) == 0
    assert output.is_file() and not leftover.exists()
