"""The shared training infrastructure (di3cl_hf/training/common.py): one checkpoint system, no pickle executed on
resume, old checkpoints (written before the restructure, tests/fixtures/premove) still resume, output folders
checked before any work, deprecated flag spellings."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from di3cl_hf.training import common
from di3cl_hf.training.common import (
    UnsafeCheckpointError,
    check_checkpoint_files,
    list_checkpoints,
    read_training_state,
    resolve_checkpoint,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "premove"
MARKER_NAME = "pwned-by-pickle"


class _Payload:
    """Unpickling this runs ``open(marker, "w")``: a stand-in for arbitrary code in a shared checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _malicious_checkpoint(root: Path, name: str) -> tuple[Path, Path]:
    checkpoint = root / "checkpoints" / "checkpoint-2"
    shutil.copytree(FIXTURES / "pretrain" / "checkpoints" / "checkpoint-2", checkpoint)
    marker = root / MARKER_NAME
    with open(checkpoint / name, "wb") as handle:
        pickle.dump({"global_step": _Payload(marker)}, handle)
    return checkpoint, marker


@pytest.mark.parametrize("name", ["custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin"])
def test_foreign_pickle_in_a_checkpoint_is_refused_and_never_run(tmp_path, name):
    checkpoint, marker = _malicious_checkpoint(tmp_path, name)
    with pytest.raises(UnsafeCheckpointError, match=f"{name}: refused to load"):
        check_checkpoint_files(checkpoint)
    if name == "custom_checkpoint_0.pkl":
        with pytest.raises(UnsafeCheckpointError):
            read_training_state(checkpoint)
    assert not marker.exists(), "the pickle payload ran"


def test_resume_from_a_malicious_checkpoint_stops_before_training(tmp_path, sarsense_tiny, fresh_accelerate):
    from di3cl_hf.training import pretraining

    _, marker = _malicious_checkpoint(tmp_path / "run", "custom_checkpoint_0.pkl")
    args = pretraining.PretrainingArguments(
        **_TINY, data_dir=str(sarsense_tiny), output_dir=str(tmp_path / "run"),
        dataset_cache_dir=str(tmp_path / "cache"), max_steps=3, resume_from_checkpoint="latest",
    )  # fmt: skip
    with pytest.raises(UnsafeCheckpointError, match="refused to load"):
        pretraining.main(args)
    assert not marker.exists()
    assert not (tmp_path / "run" / "encoder").exists()


def test_checkpoint_listing_finds_both_old_spellings(tmp_path):
    folder = tmp_path / "checkpoints"
    for name in ("step-0000003", "checkpoint-10", ".tmp-checkpoint-12", "step-x"):
        (folder / name).mkdir(parents=True)
    (folder / "step-0000003" / "optimizer.bin").write_bytes(b"")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-0000003", "checkpoint-10"]
    assert resolve_checkpoint(str(folder / "step-0000003"), tmp_path).name == "step-0000003"
    assert read_training_state(folder / "step-0000003") == {"global_step": 3}


def test_old_pretraining_state_is_read_without_unpickling_code():
    state = read_training_state(FIXTURES / "pretrain" / "checkpoints" / "checkpoint-2")
    assert state["global_step"] == 2 and state["num_processes"] == 1


_TINY = {
    "backbone": "test_resnet", "image_size": 64, "queue_size": 8, "projection_dim": 8, "projection_hidden_dim": 16,
    "per_device_batch_size": 4, "min_box_size": 16, "boxes_per_image": 2, "num_workers": 0, "logging_steps": 1,
    "save_steps": 1, "save_total_limit": 1, "report_to": "none", "disable_tqdm": True, "mixed_precision": "fp32",
}  # fmt: skip


@pytest.fixture(scope="module")
def sarsense_tiny(tmp_path_factory) -> Path:
    from di3cl_hf.data.synthetic import generate_sarsense

    root = tmp_path_factory.mktemp("sarsense-tiny")
    generate_sarsense(root / "data", 8, size=64, seed=0)
    return root / "data"


def test_old_pretraining_checkpoint_resumes(tmp_path, sarsense_tiny, fresh_accelerate):
    from di3cl_hf.training import pretraining

    out = tmp_path / "run"
    shutil.copytree(FIXTURES / "pretrain", out)
    args = pretraining.PretrainingArguments(
        **_TINY, data_dir=str(sarsense_tiny), output_dir=str(out), dataset_cache_dir=str(tmp_path / "cache"),
        max_steps=3, resume_from_checkpoint="latest",
    )  # fmt: skip
    assert pretraining.main(args) == 0
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-3"]
    assert (out / "checkpoints" / "checkpoint-3" / "training_state.json").is_file()
    assert not list((out / "checkpoints" / "checkpoint-3").glob("custom_checkpoint_*"))


def test_old_finetuning_checkpoint_resumes(tmp_path, fresh_accelerate):
    from di3cl_hf.data.synthetic import generate_segmentation_sets
    from di3cl_hf.training.finetuning import FinetuneArguments, finetune

    encoder = tmp_path / "encoder"
    shutil.copytree(FIXTURES / "encoder", encoder)
    config = json.loads((encoder / "config.json").read_text())
    config["use_auxiliary_head"] = False  # as the fixture's fine-tuning was run
    (encoder / "config.json").write_text(json.dumps(config))
    generate_segmentation_sets(tmp_path / "seg", num_patches=4, size=64, seed=0, tasks=("landcover",))
    out = tmp_path / "finetune"
    shutil.copytree(FIXTURES / "finetune", out)
    args = FinetuneArguments(
        data_dir=str(tmp_path / "seg"), output_dir=str(out), init="di3cl", model_name_or_path=str(encoder),
        crop_size=64, batch_size=2, max_steps=2, decoder_hidden_size=8, mixed_precision="fp32",
        report_to="none", save_model=False, disable_tqdm=True, resume_from_checkpoint="latest",
    )  # fmt: skip
    results = finetune(args)
    assert (results["start_step"], results["steps_run"]) == (1, 1)


def test_old_encoder_folder_loads():
    from di3cl_hf.loading import load_model_and_processor

    model, processor = load_model_and_processor(FIXTURES / "encoder", task="features")
    output = model(pixel_values=torch.zeros(1, processor.num_channels, 64, 64))
    assert output.last_hidden_state.shape[0] == 1


@pytest.mark.parametrize("script", ["pretrain", "finetune"])
def test_output_dir_that_is_a_file_fails_before_any_work(tmp_path, script, fresh_accelerate):
    import subprocess
    import sys

    existing = tmp_path / "a-file"
    existing.write_text("keep me")
    argv = [sys.executable, str(Path(__file__).resolve().parents[1] / "examples" / f"{script}.py")]
    argv += ["--output_dir", str(existing), "--data_dir", str(tmp_path / "no-data")]
    if script == "finetune":
        argv += ["--init", "random"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode != 0
    assert "exists and is not a folder" in result.stderr
    assert existing.read_text() == "keep me"


def test_deprecated_spellings_map_to_the_one_vocabulary():
    from di3cl_hf.training.finetuning import FinetuneArguments

    common._WARNED.clear()
    with pytest.warns(FutureWarning, match="save_every"):
        args = FinetuneArguments(
            data_dir="d", output_dir="o", init="random", save_every=5, checkpoints_total_limit=4, progress=False,
            mixed_precision="no",
        )  # fmt: skip
    assert (args.save_steps, args.save_total_limit, args.disable_tqdm, args.mixed_precision) == (
        5,
        4,
        True,
        "fp32",
    )
    with pytest.raises(ValueError, match="precision must be one of"):
        FinetuneArguments(data_dir="d", output_dir="o", init="random", mixed_precision="fp64")
