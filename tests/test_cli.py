"""The ``di3cl`` command line: ``--help`` of the whole tool, ``predict`` and ``embed`` (local folders, a Hub id
resolved offline from the cache through the installed console script, errors)."""

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
