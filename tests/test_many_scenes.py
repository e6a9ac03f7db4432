"""Many scenes (issue 14): ``di3cl predict MODEL INPUT... --output-dir DIR``: inputs (files, globs, @lists,
per-polarisation pairs), atomic resumable outputs, failures that do not stop the run, and the split between
the processes of ``accelerate launch`` (2 CPU processes, gloo)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from di3cl_hf.cli import main
from di3cl_hf.data.sario import write_geotiff
from di3cl_hf.inference.batch import (
    ProcessShare,
    collect_inputs,
    output_is_complete,
    plan_scenes,
    process_share,
)

REPO = Path(__file__).resolve().parents[1]
CRS = "EPSG:32631"
TILING = ["--tile-size", "64", "--overlap", "16", "--quiet"]


def _scene(seed: int, height: int = 80, width: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vv = np.where(np.arange(height)[:, None] < height // 2, -20.0, -8.0) + rng.normal(0, 1.5, (height, width))
    return np.stack([vv, vv - 6]).astype(np.float32)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """a.tif, c.tif (stacked VV+VH), b_vv.tif + b_vh.tif (one scene), b_stacked/b.tif (the same, stacked),
    bad.tif (not a raster)."""
    root = tmp_path_factory.mktemp("archive")
    for seed, name in ((0, "a"), (2, "c")):
        write_geotiff(root / f"{name}.tif", _scene(seed), crs=CRS, transform=from_origin(0, 0, 10, 10))
    b = _scene(1, 70, 100)
    transform = from_origin(500000, 4e6, 10, 10)
    write_geotiff(root / "b_vv.tif", b[:1], crs=CRS, transform=transform, nodata=-9999.0)
    write_geotiff(root / "b_vh.tif", b[1:], crs=CRS, transform=transform, nodata=-9999.0)
    (root / "b_stacked").mkdir()
    write_geotiff(root / "b_stacked" / "b.tif", b, crs=CRS, transform=transform, nodata=-9999.0)
    (root / "bad.tif").write_bytes(b"not a tiff at all")
    return root


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as dataset:
        return dataset.read()


def test_inputs_globs_lists_and_polarisation_pairs(archive: Path, tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text(f"# scenes\n{archive / 'c.tif'}\n\nmissing.tif\n")
    files, failures = collect_inputs(
        [str(archive / "a.tif"), str(archive / "b_v?.tif"), f"@{listing}", "nope*.tif"]
    )
    assert [f.name for f in files] == ["a.tif", "b_vh.tif", "b_vv.tif", "c.tif"]
    assert sorted(f.reason for f in failures) == ["no such file or directory", "the pattern matches no file"]
    assert failures[0].inputs[0].endswith("missing.tif") or failures[1].inputs[0].endswith("missing.tif")
    jobs, unplanned = plan_scenes(files, tmp_path / "out", "classes")
    assert not unplanned
    assert [(j.key, [f.name for f in j.files], j.output.name) for j in jobs] == [
        ("a", ["a.tif"], "a_classes.tif"),
        ("b", ["b_vv.tif", "b_vh.tif"], "b_classes.tif"),  # VV first, whatever the listing order
        ("c", ["c.tif"], "c_classes.tif"),
    ]
    # a VV file without its VH (beside complete pairs) fails alone; two scenes named b collide
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    for name in ("d_vv.tif", "e_vv.tif", "e_vh.tif"):
        (pairs / name).write_bytes(b"")
    more = [*files, *sorted(pairs.iterdir()), archive / "b_stacked" / "b.tif"]
    jobs, unplanned = plan_scenes(more, tmp_path / "out", "classes")
    assert [j.key for j in jobs] == ["a", "c", "e"]
    reasons = {o.key: o.reason for o in unplanned}
    assert "lacks VH" in reasons["d"] and "2 scenes would write" in reasons["b"]


def test_many_scenes_resume_and_failures(model_dir: Path, archive: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "maps"
    argv = ["predict", str(model_dir), str(archive / "a.tif"), str(archive / "b_v*.tif"), str(archive / "bad.tif"),
            "--output-dir", str(out), *TILING]  # fmt: skip
    assert main(argv) == 1  # bad.tif failed, the others ran
    text = capsys.readouterr().out
    assert "2 done, 0 skipped, 1 failed" in text and "FAILED bad" in text and "bad.tif" in text
    assert sorted(p.name for p in out.iterdir()) == ["a_classes.tif", "b_classes.tif"]  # no temporary file
    # the VV + VH pair is the same scene as the stacked file, bit for bit, with its georeferencing
    single = tmp_path / "b_single.tif"
    assert main(["predict", str(model_dir), str(archive / "b_stacked" / "b.tif"), str(single), *TILING]) == 0
    assert np.array_equal(_read(out / "b_classes.tif"), _read(single))
    with rasterio.open(out / "b_classes.tif") as dataset:
        assert dataset.crs.to_string() == CRS and dataset.transform == from_origin(500000, 4e6, 10, 10)
    assert output_is_complete(out / "a_classes.tif", 80, 96, 1)
    assert not output_is_complete(out / "a_classes.tif", 80, 96, 2)

    # resume: complete outputs are skipped; a leftover temporary file is not complete (recomputed)
    a_before = _read(out / "a_classes.tif")
    (out / "a_classes.tif").rename(out / ".a_classes.tif.x1y2.tmp.tif")
    good = [a for a in argv if "bad" not in a]
    assert main(good) == 0
    assert "1 done, 1 skipped, 0 failed" in capsys.readouterr().out
    assert np.array_equal(_read(out / "a_classes.tif"), a_before)
    # an output that is not a complete prediction is refused without --overwrite, replaced with it
    (out / "b_classes.tif").write_bytes(b"truncated")
    assert main(good) == 1
    assert "exists but is not a complete prediction" in capsys.readouterr().out
    assert main([*good, "--overwrite"]) == 0
    assert "2 done, 0 skipped, 0 failed" in capsys.readouterr().out
    assert np.array_equal(_read(out / "b_classes.tif"), _read(single))


def test_single_scene_form_needs_input_and_output(
    model_dir: Path, archive: Path, tmp_path: Path, capsys
) -> None:
    argv = [
        "predict",
        str(model_dir),
        str(archive / "a.tif"),
        str(archive / "c.tif"),
        str(tmp_path / "x.tif"),
    ]
    assert main(argv) == 1
    assert "INPUT... --output-dir DIR for several (3 paths given)" in capsys.readouterr().err
    assert not (tmp_path / "x.tif").exists()


def test_processes_split_scenes_without_overlap(monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = list(range(11))
    shares = []
    for rank in range(3):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "3")
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        share = process_share()
        assert (share.rank, share.world_size, share.is_main) == (rank, 3, rank == 0)
        shares.append(jobs[share.rank :: share.world_size])
    assert sorted(j for share in shares for j in share) == jobs
    assert ProcessShare().device(None) is None and ProcessShare(1, 2, 1).device("cpu") == "cpu"


@pytest.mark.slow
def test_accelerate_launch_two_processes(model_dir: Path, archive: Path, tmp_path: Path) -> None:
    """Two CPU processes (gloo): each scene predicted once, by one process; rank 0 prints the summary;
    outputs equal the single-process ones."""
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    for seed in range(4):
        write_geotiff(
            scenes / f"s{seed}.tif", _scene(10 + seed), crs=CRS, transform=from_origin(0, 0, 10, 10)
        )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}  # fmt: skip
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(29600 + os.getpid() % 1000),
        "-m", "di3cl_hf.cli", "predict", str(model_dir), str(scenes), str(archive / "bad.tif"),
        "--output-dir", str(tmp_path / "maps"), *TILING,
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0, "bad.tif failed: the run must say so"
    text = result.stdout
    assert text.count("4 done, 0 skipped, 1 failed") == 1, text + result.stderr[-3000:]
    lines = [line for line in text.splitlines() if line.startswith("[")]
    # 5 scenes (bad.tif is one, it fails when read): process 0 takes scenes 0, 2, 4, process 1 scenes 1, 3
    assert sorted(line.split()[0] for line in lines) == ["[0/2]"] * 3 + ["[1/2]"] * 2
    assert len({line.split()[2] for line in lines}) == 5  # every scene handled by exactly one process
    for seed in range(4):
        single = tmp_path / f"single{seed}.tif"
        assert main(["predict", str(model_dir), str(scenes / f"s{seed}.tif"), str(single), *TILING]) == 0
        assert np.array_equal(_read(tmp_path / "maps" / f"s{seed}_classes.tif"), _read(single))
    # run again: everything skipped, nothing failed but bad.tif
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.stdout.count("0 done, 4 skipped, 1 failed") == 1, result.stdout + result.stderr[-3000:]


def test_previous_outputs_inside_an_input_folder_are_not_scenes(archive: Path) -> None:
    """An input folder that holds the output folder: the previous run's maps are never taken as scenes."""
    out = archive / "maps"
    out.mkdir()
    write_geotiff(
        out / "a_classes.tif", np.zeros((1, 8, 8), np.uint8), crs=CRS, transform=from_origin(0, 0, 10, 10)
    )
    files = [archive / "a.tif", out / "a_classes.tif"]
    jobs, unplanned = plan_scenes(files, out, "classes")
    assert [j.key for j in jobs] == ["a"] and not unplanned
