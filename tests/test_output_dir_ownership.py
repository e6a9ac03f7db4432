"""Training never replaces or deletes what it did not write (issue 21, data loss): a non-empty ``--output_dir``
without the run marker is refused before any work unless ``--overwrite_output_dir`` / ``--resume_from_checkpoint``,
and ``save_total_limit`` rotation deletes only checkpoints of the same run family."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from di3cl_hf.training.common import (
    CHECKPOINT_MARKER,
    RUN_MARKER,
    TrainingArguments,
    check_output_dir,
    list_checkpoints,
    save_checkpoint,
)

REPO = Path(__file__).resolve().parents[1]


class _FakeAccelerator:
    """One process; ``save_state`` writes a stand-in weights file."""

    is_main_process = is_local_main_process = True

    def wait_for_everyone(self) -> None:
        pass

    def save_state(self, path: str) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "model.safetensors").write_bytes(b"weights")


def _users_folder(root: Path) -> Path:
    """A folder holding the user's own ``encoder/`` and ``checkpoints/checkpoint-0/``."""
    (root / "encoder").mkdir(parents=True)
    (root / "encoder" / "config.json").write_text("mine")
    (root / "checkpoints" / "checkpoint-0").mkdir(parents=True)
    (root / "checkpoints" / "checkpoint-0" / "training_state.json").write_text('{"global_step": 0}')
    return root


@pytest.mark.parametrize("script", ["pretrain", "finetune"])
def test_foreign_output_dir_is_refused_in_one_line_before_any_work(tmp_path: Path, script: str) -> None:
    out = _users_folder(tmp_path / "out")
    argv = [sys.executable, str(REPO / "examples" / f"{script}.py"), "--output_dir", str(out)]
    argv += ["--data_dir", str(tmp_path / "no-data")] + (["--init", "random"] if script == "finetune" else [])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "--output_dir" in result.stderr and "--overwrite_output_dir" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "encoder"]  # nothing added, nothing gone
    assert (out / "encoder" / "config.json").read_text() == "mine"


def test_rotation_keeps_checkpoints_the_run_did_not_write(tmp_path: Path) -> None:
    out = _users_folder(tmp_path / "out")
    with pytest.raises(ValueError, match="not empty and was not written by a DI3CL training run"):
        check_output_dir(out)
    # the flag of the arguments built for this folder reaches check_output_dir(path)
    TrainingArguments(output_dir=str(out), overwrite_output_dir=True)
    check_output_dir(out)
    assert (out / RUN_MARKER).is_file()
    for step in (1, 2, 3):
        save_checkpoint(_FakeAccelerator(), out, step, {}, save_total_limit=1)
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-0", "checkpoint-3"]
    assert (out / "checkpoints" / "checkpoint-3" / CHECKPOINT_MARKER).is_file()
    # the run's own folder is accepted again without a flag (the marker says it is the run's)
    check_output_dir(out, overwrite_output_dir=False)


def test_resume_adopts_the_checkpoints_of_an_unmarked_run(tmp_path: Path) -> None:
    out = _users_folder(tmp_path / "out")
    outside = tmp_path / "elsewhere" / "checkpoint-5"
    with pytest.raises(ValueError, match="--overwrite_output_dir"):
        check_output_dir(out, resume_from_checkpoint=str(outside))  # resuming another run's checkpoint here
    check_output_dir(out, resume_from_checkpoint="latest")
    assert json.loads((out / RUN_MARKER).read_text())["adopted_checkpoints"] == ["checkpoint-0"]
    save_checkpoint(_FakeAccelerator(), out, 1, {}, save_total_limit=1)
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-1"]


def test_empty_or_new_folders_are_claimed(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "empty", tmp_path / "new" / "run"):
        assert check_output_dir(out) == out and (out / RUN_MARKER).is_file()
        (out / RUN_MARKER).unlink()
        assert check_output_dir(out) == out  # empty again: claimed again
