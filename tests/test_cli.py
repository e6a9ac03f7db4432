"""The ``di3cl`` command line: ``--help`` of the whole tool, ``predict`` and ``embed`` (local folders, a Hub id
resolved offline from the cache through the installed console script, errors), and the training commands
``pretrain``, ``finetune`` and ``evaluate`` (their ``--help`` lists the argument dataclasses' real defaults; one
tiny run each, ``evaluate grid`` excepted: it is a series of fine-tunings)."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from di3cl_hf.cli.predict import register
from di3cl_hf.data.sario import write_geotiff
from di3cl_hf.inference.scene import OUTPUT_NODATA

CRS = "EPSG:32631"
TRANSFORM = from_origin(600000.0, 5000000.0, 20.0, 20.0)
SCRIPT = Path(sys.executable).with_name("di3cl")


def run(argv: list[str]) -> int:
    """``di3cl <argv>`` through the parser ``cli.predict.register`` builds (the real command code path)."""
    parser = argparse.ArgumentParser(prog="di3cl")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    vv = np.where(np.arange(150)[:, None] < 70, -21.0, -7.0) + rng.normal(0, 1.5, (150, 170))
    data = np.stack([vv, vv - 6]).astype(np.float32)
    data[:, :12, :30] = -9999.0
    path = tmp_path_factory.mktemp("scene") / "scene.tif"
    write_geotiff(path, data, crs=CRS, transform=TRANSFORM, nodata=-9999.0)
    return path


def test_di3cl_help_lists_commands_and_sar_options(capsys: pytest.CaptureFixture[str]) -> None:
    from di3cl_hf.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for command in (
        "pretrain",
        "finetune",
        "evaluate",
        "predict",
        "embed",
        "convert-original",
        "push",
        "export-timm",
        "make-synthetic",
        "export-parquet",
    ):
        assert command in text, f"`di3cl --help` does not list {command}"
    for command in ("predict", "embed"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        for option in ("--input-kind", "--bands", "--nodata", "--db-range", "radiometry", "dn16", "VV, VH"):
            assert option in text, f"`di3cl {command} --help` does not explain {option}"


def test_predict_local_folder(
    model_dir: Path, scene: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "water.tif"
    code = run([
        "predict", str(model_dir), str(scene), str(out), "--tile-size", "96", "--overlap", "16", "--quiet",
    ])  # fmt: skip
    assert code == 0 and "Mpx/s" in capsys.readouterr().out
    with rasterio.open(out) as dst:
        assert dst.crs.to_string() == CRS and dst.transform == TRANSFORM and dst.nodata == OUTPUT_NODATA
        classes = dst.read(1)
    assert (classes[:12, :30] == OUTPUT_NODATA).all()
    assert np.isin(classes[12:], [0, 1]).all()


def test_predict_probabilities_with_sar_options(model_dir: Path, scene: Path, tmp_path: Path) -> None:
    out = tmp_path / "probabilities.tif"
    code = run([
        "predict", str(model_dir), str(scene), str(out), "--tile-size", "128", "--output-type", "probabilities",
        "--bands", "1", "--input-kind", "db", "--db-range", "-25", "0", "--precision", "fp32", "--no-cog", "--quiet",
    ])  # fmt: skip
    assert code == 0
    with rasterio.open(out) as dst:
        assert dst.count == 2 and dst.descriptions == ("land", "water")
        probabilities = dst.read().astype(int)
    valid = probabilities[0] != OUTPUT_NODATA
    assert np.abs(probabilities[:, valid].sum(axis=0) - 254).max() <= 1


def test_predict_bad_arguments_give_clear_errors(model_dir: Path, scene: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no-such-org/no-such-model"):
        run(
            [
                "predict",
                "no-such-org/no-such-model",
                str(scene),
                str(tmp_path / "x.tif"),
                "--local-files-only",
            ]
        )
    with pytest.raises(ValueError, match="--db-range"):
        run(["predict", str(model_dir), str(scene), str(tmp_path / "x.tif"), "--db-range", "5", "-30"])
    with pytest.raises(FileNotFoundError, match="missing.tif"):
        run(["predict", str(model_dir), str(tmp_path / "missing.tif"), str(tmp_path / "x.tif"), "--quiet"])
    assert not (tmp_path / "x.tif").exists()


def test_embed_folder_to_parquet_and_npy(model_dir: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    patches = tmp_path / "patches"
    rng = np.random.default_rng(1)
    for index in range(3):
        write_geotiff(
            patches / f"p{index}.tif",
            rng.normal(-12, 3, (2, 64, 64)).astype(np.float32),
            crs=CRS,
            transform=TRANSFORM,
        )
    assert run(["embed", str(model_dir), str(patches), "-o", str(tmp_path / "f.parquet"), "--quiet"]) == 0
    rows = pq.read_table(tmp_path / "f.parquet").to_pylist()
    assert [Path(r["path"]).name for r in rows] == ["p0.tif", "p1.tif", "p2.tif"] and rows[0]["shape"] == [
        512
    ]
    assert run(["embed", str(model_dir), str(patches / "p0.tif"), "-o", str(tmp_path / "d.npy"),
                "--pooling", "dense", "--quiet"]) == 0  # fmt: skip
    assert np.load(tmp_path / "d.npy").shape == (1, 512, 2, 2)


@pytest.mark.skipif(not SCRIPT.exists(), reason=f"console script {SCRIPT} not installed")
def test_console_script_predicts_with_a_hub_id_from_the_offline_cache(
    model_dir: Path, scene: Path, tmp_path: Path
) -> None:
    """`di3cl predict org/name ...` with HF_HUB_OFFLINE=1 resolves the id from a hand-built HF cache."""
    hf_home = tmp_path / "hf-home"
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = hf_home / "hub" / "models--sar-lab--di3cl-water-tiny"
    shutil.copytree(model_dir, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1")
    out = tmp_path / "hub-water.tif"
    result = subprocess.run(
        [str(SCRIPT), "predict", "sar-lab/di3cl-water-tiny", str(scene), str(out), "--tile-size", "128", "--quiet"],
        env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    with rasterio.open(out) as dst:
        assert dst.crs.to_string() == CRS and dst.transform == TRANSFORM
    missing = subprocess.run(
        [str(SCRIPT), "predict", "sar-lab/not-cached", str(scene), str(tmp_path / "none.tif")],
        env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path,
    )  # fmt: skip
    assert missing.returncode == 1 and "sar-lab/not-cached" in missing.stderr
    assert not (tmp_path / "none.tif").exists()


# ------------------------------------------------------------------ outputs, arguments, signals (issue 16)


def _predict_argv(model: Path | str, scene: Path, out: Path, *extra: str) -> list[str]:
    return [
        "predict",
        str(model),
        str(scene),
        str(out),
        "--tile-size",
        "96",
        "--overlap",
        "16",
        "--quiet",
        *extra,
    ]


def test_predict_never_writes_over_its_input(model_dir: Path, scene: Path, tmp_path: Path) -> None:
    """`di3cl predict MODEL x.tif x.tif` (also through a symlink or a hard link) is refused, --overwrite
    or not, and the input is left as it was."""
    source = tmp_path / "x.tif"
    shutil.copy(scene, source)
    before = source.read_bytes()
    symlink, hardlink = tmp_path / "link.tif", tmp_path / "hard.tif"
    symlink.symlink_to(source)
    os.link(source, hardlink)
    for target in (source, tmp_path / "." / "x.tif", symlink, hardlink):
        for extra in ((), ("--overwrite",)):
            with pytest.raises(ValueError, match="same file"):
                run(_predict_argv(model_dir, source, target, *extra))
    with pytest.raises(ValueError, match="same file"):  # the input given through the link
        run(_predict_argv(model_dir, symlink, source, "--overwrite"))
    assert source.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "hard.tif", "link.tif", "x.tif"
    ]  # fmt: skip


def test_predict_checks_the_output_before_loading_the_model(scene: Path, tmp_path: Path) -> None:
    """Bad outputs are refused up front: the model (here one that does not exist) is never loaded."""
    missing_model = "no-such-org/no-such-model"
    existing = tmp_path / "old.tif"
    existing.write_bytes(b"previous result")
    with pytest.raises(FileExistsError, match="--overwrite"):
        run(_predict_argv(missing_model, scene, existing, "--local-files-only"))
    assert existing.read_bytes() == b"previous result"
    with pytest.raises(ValueError, match="is a directory"):
        run(_predict_argv(missing_model, scene, tmp_path, "--local-files-only"))
    with pytest.raises(ValueError, match="does not exist"):
        run(_predict_argv(missing_model, scene, tmp_path / "no-folder" / "x.tif", "--local-files-only"))
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o555)
    if not os.access(read_only, os.W_OK):  # (root can write anywhere)
        with pytest.raises(ValueError, match="not writable"):
            run(_predict_argv(missing_model, scene, read_only / "x.tif", "--local-files-only"))
    # with --overwrite the output check passes and the (missing) model is what fails
    with pytest.raises(FileNotFoundError, match=missing_model):
        run(_predict_argv(missing_model, scene, existing, "--local-files-only", "--overwrite"))


def test_predict_overwrite_replaces_an_existing_output(model_dir: Path, scene: Path, tmp_path: Path) -> None:
    out = tmp_path / "water.tif"
    out.write_bytes(b"previous result")
    assert run(_predict_argv(model_dir, scene, out, "--overwrite")) == 0
    with rasterio.open(out) as dst:
        assert dst.crs.to_string() == CRS


def test_embed_never_writes_over_its_input_nor_an_existing_output(model_dir: Path, tmp_path: Path) -> None:
    patch = tmp_path / "a.npy"
    np.save(patch, np.random.default_rng(0).normal(-12, 3, (2, 64, 64)).astype(np.float32))
    before = patch.read_bytes()
    for extra in ((), ("--overwrite",)):
        with pytest.raises(ValueError, match="same file"):
            run(["embed", str(model_dir), str(patch), "-o", str(patch), "--quiet", *extra])
        with pytest.raises(ValueError, match="same file"):  # the input found in a folder
            run(["embed", str(model_dir), str(tmp_path), "-o", str(patch), "--quiet", *extra])
    assert patch.read_bytes() == before
    out = tmp_path / "features.parquet"
    out.write_bytes(b"previous result")
    with pytest.raises(FileExistsError, match="--overwrite"):
        run(["embed", "no-such-org/no-such-model", str(patch), "-o", str(out), "--local-files-only"])
    assert out.read_bytes() == b"previous result"
    assert run(["embed", str(model_dir), str(patch), "-o", str(out), "--quiet", "--overwrite"]) == 0
    assert out.read_bytes() != b"previous result"


@pytest.mark.parametrize(
    "tile, overlap, message",
    [("0", "16", "--tile-size"), ("-64", "16", "--tile-size"), ("64", "-1", "--overlap"), ("64", "64", None)],
)
def test_predict_tile_size_and_overlap_are_checked(
    model_dir: Path, scene: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], tile: str, overlap: str,
    message: str | None,
) -> None:  # fmt: skip
    argv = [
        "predict",
        str(model_dir),
        str(scene),
        str(tmp_path / "x.tif"),
        "--tile-size",
        tile,
        "--overlap",
        overlap,
    ]
    if message is None:  # parsed, then refused with a sentence (not a numpy broadcast error)
        with pytest.raises(ValueError, match=r"--overlap \(64\) must be smaller than --tile-size \(64\)"):
            run(argv)
    else:
        with pytest.raises(SystemExit):
            run(argv)
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x.tif").exists()


def test_band_count_advice_uses_the_command_line_spelling(model_dir: Path, tmp_path: Path) -> None:
    from di3cl_hf.cli.predict import command_line_message

    assert command_line_message("x.tif: 4 bands; pass bands=(1, 2) to pick two") == (
        "x.tif: 4 bands; pass --bands 1 2 to pick two"
    )
    assert command_line_message("pick bands=(3,)") == "pick --bands 3"
    data = np.random.default_rng(0).normal(-12, 3, (3, 64, 64)).astype(np.float32)
    three = write_geotiff(tmp_path / "three.tif", data, crs=CRS, transform=TRANSFORM)
    try:
        run(["predict", str(model_dir), str(three), str(tmp_path / "out.tif"), "--tile-size", "64", "--overlap", "0",
             "--quiet"])  # fmt: skip
    except ValueError as error:  # 3 bands for a 2-channel model: the advice must be a flag, not Python
        assert "bands=(" not in str(error) and "--bands" in str(error), str(error)
    try:
        run(["embed", str(model_dir), str(three), "-o", str(tmp_path / "e.npy"), "--quiet"])
    except ValueError as error:
        assert "bands=(" not in str(error) and "--bands" in str(error), str(error)


def test_sigterm_during_predict_leaves_no_temporary_file(model_dir: Path, tmp_path: Path) -> None:
    """SIGTERM in the middle of `di3cl predict` removes the hidden .OUT.*.tmp.tif (as Ctrl-C does) and
    exits with 128 + 15, without a traceback."""
    import signal
    import time

    rng = np.random.default_rng(0)
    big = tmp_path / "big.tif"
    write_geotiff(big, rng.normal(-12, 3, (2, 1536, 768)).astype(np.float32), crs=CRS, transform=TRANSFORM)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "water.tif"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env["HF_HUB_OFFLINE"] = "1"
    process = subprocess.Popen(
        [sys.executable, "-m", "di3cl_hf.cli", "predict", str(model_dir), str(big), str(out),
         "--tile-size", "64", "--overlap", "16", "--batch-size", "1", "--quiet", "--precision", "fp32"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while (
            not list(out_dir.glob(".water.tif.*")) and process.poll() is None and time.monotonic() < deadline
        ):
            time.sleep(0.02)
        assert process.poll() is None, "predict finished before it could be stopped: make the scene larger"
        time.sleep(0.3)  # some tiles into the scene
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "SIGTERM" in stderr and "Traceback" not in stderr
    assert list(out_dir.iterdir()) == []


# ---------------------------------------------------------------------------------------------------------------
# pretrain, finetune, evaluate
# ---------------------------------------------------------------------------------------------------------------


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    from di3cl_hf.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


@pytest.mark.parametrize(
    "argv, dataclass_path",
    [
        (["pretrain"], "di3cl_hf.training.pretraining_args.PretrainingArguments"),
        (["finetune"], "di3cl_hf.training.finetuning_args.FinetuneArguments"),
        (["evaluate", "model"], "di3cl_hf.training.evaluation_args.ModelEvaluationArguments"),
        (["evaluate", "grid"], "di3cl_hf.training.evaluation_args.EvaluationGridArguments"),
        (["evaluate", "probe"], "di3cl_hf.training.evaluation_args.ProbeArguments"),
    ],
)
def test_training_command_help_lists_every_field_with_its_real_default(
    argv: list[str], dataclass_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import dataclasses
    import importlib

    module, _, name = dataclass_path.rpartition(".")
    arguments = getattr(importlib.import_module(module), name)
    text = _help(argv, capsys)
    for item in dataclasses.fields(arguments):
        assert f"--{item.name}" in text, f"`di3cl {' '.join(argv)} --help` does not list --{item.name}"
        default = item.default
        if default is dataclasses.MISSING and item.default_factory is not dataclasses.MISSING:
            default = item.default_factory()
        if default is dataclasses.MISSING:
            assert "Required (unless ARGS.json is given)" in text
        elif default is not None:
            assert f"(default: {default})" in text, f"--{item.name}: default {default!r} not shown"


def test_evaluate_help_names_its_modes(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(["evaluate"], capsys)
    assert all(mode in text for mode in ("model", "grid", "probe")) and "labelled set" in text
    # the grid's own budget defaults, not the fine-tuning ones
    assert "(default: resnet18)" in _help(["evaluate", "grid"], capsys)


def test_training_command_without_a_required_flag_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from di3cl_hf.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["finetune", "--data_dir", "sets"])
    assert exit_info.value.code == 2
    assert "--output_dir" in capsys.readouterr().err


def test_pretrain_from_an_args_file_writes_the_run_folder(tmp_path: Path, fresh_accelerate) -> None:
    import json

    from di3cl_hf.cli import main
    from di3cl_hf.data.synthetic import generate_sarsense
    from di3cl_hf.training.common import RUN_LAYOUT

    generate_sarsense(tmp_path / "data", 8, size=80, seed=0)
    out = tmp_path / "run"
    arguments = {
        "data_dir": str(tmp_path / "data"), "output_dir": str(out), "dataset_cache_dir": str(tmp_path / "cache"),
        "backbone": "resnet18", "image_size": 64, "queue_size": 64, "projection_hidden_dim": 64,
        "projection_dim": 32, "per_device_batch_size": 4, "min_box_size": 16, "num_workers": 0, "max_steps": 2,
        "statistics_samples": 0, "disable_tqdm": True, "mixed_precision": "fp32",
    }  # fmt: skip
    (tmp_path / "args.json").write_text(json.dumps(arguments))
    assert main(["pretrain", str(tmp_path / "args.json")]) == 0
    for name in RUN_LAYOUT:  # marker, config.json, checkpoints/, logs/, metrics.json, README.md
        assert (out / name.rstrip("/")).exists(), name
    assert (out / "encoder" / "model.safetensors").is_file()
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 2
    assert json.loads((out / "config.json").read_text())["queue_size"] == 64


@pytest.fixture(scope="module")
def water_sets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from di3cl_hf.data.synthetic import generate_segmentation_sets

    root = tmp_path_factory.mktemp("seg")
    generate_segmentation_sets(root, num_patches=6, size=64, seed=0, tasks=("water",))
    return root


def test_finetune_then_evaluate_model_gives_the_same_test_scores(
    water_sets: Path, tmp_path: Path, fresh_accelerate, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from di3cl_hf.cli import main

    out = tmp_path / "water"
    code = main([
        "finetune", "--data_dir", str(water_sets), "--output_dir", str(out), "--task", "water",
        "--init", "random", "--backbone", "resnet18", "--crop_size", "64", "--batch_size", "2", "--max_steps", "1",
        "--decoder_hidden_size", "16", "--mixed_precision", "fp32", "--report_to", "none", "--disable_tqdm",
    ])  # fmt: skip
    assert code == 0 and "random (water, 1 labels)" in capsys.readouterr().out
    for name in (".di3cl-run", "config.json", "model.safetensors", "metrics.json", "README.md"):
        assert (out / name).is_file(), name
    finetuned = json.loads((out / "metrics.json").read_text())["test"]
    code = main([
        "evaluate", "model", "--model_name_or_path", str(out), "--data_dir", str(water_sets),
        "--task", "water", "--output_dir", str(tmp_path / "scores"), "--local_files_only",
    ])  # fmt: skip
    assert code == 0 and "| water |" in capsys.readouterr().out
    scored = json.loads((tmp_path / "scores" / "metrics.json").read_text())
    assert scored["split"] == "test" and scored["scores"]["confusion_matrix"] == finetuned["confusion_matrix"]


def test_evaluate_grid_writes_its_table_and_curves(
    water_sets: Path, tmp_path: Path, fresh_accelerate, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from di3cl_hf.cli import main

    code = main([
        "evaluate", "grid", "--data_dir", str(water_sets), "--output_dir", str(tmp_path / "grid"), "--tasks", "water",
        "--initialisations", "random", "--label_fractions", "1.0", "--max_steps", "1", "--crop_size", "64",
        "--batch_size", "2", "--decoder_hidden_size", "16", "--mixed_precision", "fp32",
    ])  # fmt: skip
    assert code == 0 and "| water | 100 % | random |" in capsys.readouterr().out
    summary = json.loads((tmp_path / "grid" / "evaluation.json").read_text())
    assert set(summary["results"]["water"]["random"]) == {"1"} and "random" in summary["kmeans"]["water"]
    assert (tmp_path / "grid" / "label_efficiency.png").stat().st_size > 0


def test_evaluate_probe_scores_a_random_encoder_on_labelled_chips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from PIL import Image

    from di3cl_hf.cli import main

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label, level in (("dark", 40), ("bright", 200)):
            folder = tmp_path / "chips" / split / label
            folder.mkdir(parents=True)
            for index in range(3):
                chip = np.clip(rng.normal(level, 10, (40, 40)), 0, 255).astype(np.uint8)
                Image.fromarray(chip).save(folder / f"{index}.png")
    code = main([
        "evaluate", "probe", "--data_dir", str(tmp_path / "chips"), "--encoders", "random=random",
        "--output_dir", str(tmp_path / "probes"), "--crop", "32", "--size", "32", "--epochs", "5",
        "--seeds", "0", "--shots", "1", "--knn_k", "1", "3", "--batch_size", "4",
    ])  # fmt: skip
    assert code == 0 and "| random |" in capsys.readouterr().out
    summary = json.loads((tmp_path / "probes" / "probes.json").read_text())
    entry = summary["encoders"]["random"]
    assert 0.0 <= entry["linear_probe"]["accuracy"] <= 1.0 and set(entry["few_shot"]) == {"1"}
