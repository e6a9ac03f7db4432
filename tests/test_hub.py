"""Tests of di3cl_hf.hub (cards, push, export) and the `di3cl push` / `export-timm` commands: cards, staging,
push round trips against a local fake Hub, timm export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from hub_server import FakeHub
from huggingface_hub import DatasetCard, ModelCard

from di3cl_hf import DI3CLConfig, DI3CLForSemanticSegmentation, DI3CLImageProcessor, DI3CLModel
from di3cl_hf.hub.cards import CITATION, PAPER_TITLE, build_dataset_card, build_model_card, evaluation_results
from di3cl_hf.hub.export import export_timm
from di3cl_hf.hub.push import remote_code_files, stage_model, stage_space
from di3cl_hf.training.metrics import save_json, scores_from_confusion

REPO_ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
LABELS = {0: "land", 1: "water"}


def tiny_config(**kwargs) -> DI3CLConfig:
    defaults = dict(
        backbone="resnet18", num_channels=2, image_size=64, queue_size=64, projection_hidden_dim=64
    )
    return DI3CLConfig(**{**defaults, **kwargs})


@pytest.fixture(scope="module")
def segmentation_dir(tmp_path_factory) -> Path:
    """A fine-tuned-looking water model folder: weights, configs, processor, evaluation, training junk."""
    folder = tmp_path_factory.mktemp("water-model")
    torch.manual_seed(0)
    config = tiny_config(
        num_labels=2, id2label=LABELS, label2id={v: k for k, v in LABELS.items()}, decoder_hidden_size=64
    )
    DI3CLForSemanticSegmentation(config).eval().save_pretrained(folder)
    DI3CLImageProcessor(num_channels=2, input_kind="intensity").save_pretrained(folder)
    scores = scores_from_confusion(np.array([[90, 10], [5, 45]]), class_names=["land", "water"])
    save_json({"task": "water", "dataset": "synthetic-sar-water", **scores}, folder / "evaluation.json")
    (folder / "checkpoint-10").mkdir()
    (folder / "checkpoint-10" / "optimizer.pt").write_bytes(b"state")
    return folder


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("encoder")
    torch.manual_seed(1)
    DI3CLModel(tiny_config()).eval().save_pretrained(folder)
    DI3CLImageProcessor(num_channels=2).save_pretrained(folder)
    return folder


def hub_env(hub: FakeHub, hf_home: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(
        HF_ENDPOINT=hub.endpoint,
        HF_TOKEN="hf_fake_token_for_tests",
        HF_HOME=str(hf_home),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        TOKENIZERS_PARALLELISM="false",
    )
    env.update(extra)
    return env


# The push commands run through the parser di3cl_hf.cli.hub.register builds (the real `di3cl push` code path)
# without needing every other command module of `di3cl`.
CLI_PRELUDE = """
import argparse
from di3cl_hf.cli.hub import register

def main(argv):
    parser = argparse.ArgumentParser(prog="di3cl")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)
"""


def run_python(code: str, env: dict[str, str], timeout: float = 240, cli: bool = True) -> str:
    """Run ``code`` in a fresh interpreter (``HF_*`` variables are read at import time)."""
    source = (CLI_PRELUDE if cli else "") + textwrap.dedent(code)
    result = subprocess.run(
        [PYTHON, "-c", source], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT
    )
    assert result.returncode == 0, (
        f"subprocess failed:\nSTDOUT:\n{result.stdout}\nSTDERR:\n{result.stderr[-4000:]}"
    )
    return result.stdout


# --------------------------------------------------------------------------------------- cards


def test_model_card_metadata_from_run(segmentation_dir: Path) -> None:
    card = build_model_card(
        segmentation_dir,
        repo_id="sar-lab/di3cl-water",
        datasets=["sar-lab/synthetic-water"],
        base_model="sar-lab/di3cl-r18",
        run_info={"data": "synthetic", "steps": 20, "label_fraction": 0.1},
    )
    reparsed = ModelCard(str(card))  # what the Hub reads back from README.md
    data = reparsed.data
    assert data.license == "apache-2.0"
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "image-segmentation"
    assert {"sar", "remote-sensing", "self-supervised", "resnet18", "synthetic-data"} <= set(data.tags)
    assert data.datasets == ["sar-lab/synthetic-water"]
    assert data.base_model == "sar-lab/di3cl-r18"
    results = {result.metric_type: result for result in data.eval_results}
    # confusion [[90, 10], [5, 45]]: OA = 135 / 150; IoU water = 45 / 60; IoU land = 90 / 105
    assert results["accuracy"].metric_value == pytest.approx(90.0)
    assert results["mean_iou"].metric_value == pytest.approx(round(100 * (45 / 60 + 90 / 105) / 2, 2))
    assert results["f1_water"].metric_value == pytest.approx(
        round(100 * 2 * 45 / (50 + 55), 2)
    )  # 2 TP / (support + predicted)
    assert results["accuracy"].task_name == "SAR water-body detection"
    assert results["accuracy"].dataset_type == "synthetic-sar-water"
    text = card.text
    assert PAPER_TITLE in text and "2511.07808" in text and CITATION in text
    assert "trust_remote_code=True" in text and "import di3cl_hf" in text
    assert "Demonstration weights" in text  # synthetic data is flagged
    assert "intensity" in text  # the processor's declared radiometry
    assert "0 = land, 1 = water" in text


def test_rebuilt_card_keeps_what_the_run_recorded(segmentation_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    for path in segmentation_dir.iterdir():
        if path.is_file():
            (folder / path.name).write_bytes(path.read_bytes())
    run_card = build_model_card(
        folder, base_model="sar-lab/di3cl-r18", run_info={"data": "water (synthetic)", "label_fraction": 0.05}
    )
    (folder / "README.md").write_text(str(run_card))  # what the fine-tuning run leaves
    rebuilt = build_model_card(folder, repo_id="sar-lab/di3cl-water")
    assert rebuilt.data.base_model == "sar-lab/di3cl-r18"
    assert "- **label_fraction**: 0.05" in rebuilt.text and "Demonstration weights" in rebuilt.text
    assert 'from_pretrained("sar-lab/di3cl-water")' in rebuilt.text
    assert f'from_pretrained("{folder.name}")' in run_card.text


def test_encoder_card_is_feature_extraction_without_model_index(encoder_dir: Path) -> None:
    card = build_model_card(encoder_dir, repo_id="sar-lab/di3cl-r18", has_code=False)
    data = ModelCard(str(card)).data
    assert data.pipeline_tag == "image-feature-extraction"
    assert not data.eval_results
    assert "trust_remote_code" not in card.text
    assert "Demonstration weights" not in card.text


def test_evaluation_results_grid_and_errors(tmp_path: Path) -> None:
    scores = scores_from_confusion(np.array([[3, 1], [0, 4]]))
    grid = {"results": {"1%": scores, "10%": scores}, "task": "landcover"}
    results = evaluation_results(grid)
    assert {result.dataset_config for result in results} == {"1%", "10%"}
    bad = tmp_path / "eval.json"
    bad.write_text(json.dumps({"loss": 0.3}))
    with pytest.raises(ValueError, match="no scores found"):
        evaluation_results(bad)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"eval\.json: not valid JSON"):
        evaluation_results(bad)


def test_card_rejects_non_di3cl_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no config.json"):
        build_model_card(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "resnet"}))
    with pytest.raises(ValueError, match="expected 'di3cl'"):
        build_model_card(tmp_path)


def test_stage_model_contents(segmentation_dir: Path, tmp_path: Path) -> None:
    source_files = {path.name: path.read_bytes() for path in segmentation_dir.iterdir() if path.is_file()}
    stage = stage_model(segmentation_dir, tmp_path / "stage", repo_id="sar-lab/di3cl-water")
    names = {path.relative_to(stage).as_posix() for path in stage.rglob("*") if path.is_file()}
    assert {
        "README.md",
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "evaluation.json",
    } <= names
    assert {path.name for path in remote_code_files()} <= names
    assert "radiometry.py" in names and "di3cl_layers.py" in names  # followed from the relative imports
    assert not any(name.startswith("checkpoint") for name in names)
    processor = json.loads((stage / "preprocessor_config.json").read_text())
    assert processor["auto_map"]["AutoImageProcessor"] == "image_processing_di3cl.DI3CLImageProcessor"
    config = json.loads((stage / "config.json").read_text())
    assert config["auto_map"]["AutoModelForSemanticSegmentation"].endswith("DI3CLForSemanticSegmentation")
    # the source folder is untouched (config.json was a hard link in the stage)
    assert {
        path.name: path.read_bytes() for path in segmentation_dir.iterdir() if path.is_file()
    } == source_files
    assert "README.md" not in os.listdir(segmentation_dir)
    with pytest.raises(ValueError, match="not empty"):
        stage_model(segmentation_dir, stage)


def write_parquet_dataset(folder: Path) -> None:
    """A small dataset exported the project's way (data/<split>-*.parquet + README.md)."""
    import datasets

    from di3cl_hf.data.parquet import export_parquet

    rng = np.random.default_rng(0)
    splits = {
        split: datasets.Dataset.from_dict(
            {
                "image": [
                    rng.gamma(1.0, 0.05, size=(2, 8, 8)).astype("float32").ravel().tolist() for _ in range(n)
                ],
                "path": [f"{split}-{i}.tif" for i in range(n)],
            }
        )
        for split, n in (("train", 3), ("test", 2))
    }
    export_parquet(datasets.DatasetDict(splits), folder, pretty_name="SAR patches")


def test_dataset_card_fallback_is_the_data_modules_card(tmp_path: Path) -> None:
    folder = tmp_path / "parquet"
    write_parquet_dataset(folder)
    written = (folder / "README.md").read_text()
    (folder / "README.md").unlink()
    rebuilt = build_dataset_card(folder)
    assert rebuilt == written  # one card writer: di3cl_hf.data.dataset_card
    configs = DatasetCard(rebuilt).data.to_dict()["configs"][0]["data_files"]
    assert {entry["split"] for entry in configs} == {"train", "test"}
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty: no data/<split>-\*\.parquet shards"):
        build_dataset_card(tmp_path / "empty")


def test_cli_registers_push_and_export() -> None:
    try:
        from di3cl_hf.cli import build_parser

        parser = build_parser()
    except ModuleNotFoundError as error:  # another command module of `di3cl` is not there yet
        pytest.skip(f"di3cl CLI incomplete: {error}")
    args = parser.parse_args(["push", "model", "out/m", "org/name", "--evaluation", "e.json", "--private"])
    assert (
        args.kind == "model" and args.repo_id == "org/name" and args.private is True and callable(args.func)
    )
    args = parser.parse_args(["export-timm", "out/m", "out/timm"])
    assert args.model == "out/m" and callable(args.func)
    with pytest.raises(SystemExit):
        parser.parse_args(["push", "weights", "a", "b"])


# ---------------------------------------------------------------------------------------- timm


def test_export_timm_gives_identical_features(encoder_dir: Path, tmp_path: Path) -> None:
    out = export_timm(encoder_dir, tmp_path / "timm")
    assert {"model.safetensors", "config.json", "README.md"} <= set(os.listdir(out))
    model = DI3CLModel.from_pretrained(encoder_dir, dtype=torch.float32).eval()
    processor = DI3CLImageProcessor.from_pretrained(encoder_dir)
    pixel_values = torch.randn(2, 2, 64, 96, generator=torch.Generator().manual_seed(0))
    explicit = timm.create_model(
        "resnet18",
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(out / "model.safetensors"), input_size=(2, 64, 64)),
        in_chans=2,
        num_classes=0,
    ).eval()
    local_dir = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    stages = timm.create_model(f"local-dir:{out}", pretrained=True, features_only=True).eval()
    with torch.inference_mode():
        expected = model(pixel_values).last_hidden_state
        # same weights, same ops: identical features (rtol=0, atol=0)
        torch.testing.assert_close(explicit.forward_features(pixel_values), expected, rtol=0, atol=0)
        torch.testing.assert_close(local_dir.forward_features(pixel_values), expected, rtol=0, atol=0)
        torch.testing.assert_close(stages(pixel_values)[-1], expected, rtol=0, atol=0)
    assert local_dir.num_classes == 0 and local_dir.conv1.in_channels == 2
    cfg = local_dir.pretrained_cfg
    assert list(cfg["mean"]) == pytest.approx(processor.image_mean)
    assert list(cfg["std"]) == pytest.approx(processor.image_std)
    assert tuple(cfg["input_size"]) == (2, 64, 64)
    assert cfg["tag"] == "di3cl" and "in1k" not in json.dumps(cfg)
    saved = json.loads((out / "config.json").read_text())
    assert saved["num_classes"] == 0 and saved["di3cl"]["db_range"] == processor.db_range


def test_export_timm_from_a_task_model_takes_its_encoder(segmentation_dir: Path, tmp_path: Path) -> None:
    out = export_timm(segmentation_dir, tmp_path / "timm")
    model = DI3CLForSemanticSegmentation.from_pretrained(segmentation_dir, dtype=torch.float32).eval()
    encoder = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    pixel_values = torch.randn(1, 2, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = model.base_model(pixel_values).last_hidden_state
        torch.testing.assert_close(encoder.forward_features(pixel_values), expected, rtol=0, atol=0)
    assert encoder.pretrained_cfg["input_size"][0] == 2


def test_export_timm_rejects_unknown_architecture(encoder_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a timm architecture"):
        export_timm(encoder_dir, tmp_path / "timm", architecture="resnet_does_not_exist")


# --------------------------------------------------------------------------- push round trips


@pytest.mark.slow
def test_push_model_round_trip_offline_reload(segmentation_dir: Path, tmp_path: Path) -> None:
    """Push with the real client (CLI, subprocess) to the fake Hub, lay the received files out as an
    HF cache, then load them back offline: with this package and with remote code only."""
    pixel_values = torch.randn(1, 2, 64, 64, generator=torch.Generator().manual_seed(3))
    np.save(tmp_path / "input.npy", pixel_values.numpy())
    model = DI3CLForSemanticSegmentation.from_pretrained(segmentation_dir, dtype=torch.float32).eval()
    with torch.inference_mode():
        expected = model(pixel_values).logits.numpy()
    (tmp_path / "run.json").write_text(json.dumps({"data": "synthetic", "task": "water"}))

    with FakeHub(max_requests=60, max_seconds=300) as hub:
        run_python(
            f"""
            assert main(["push", "model", {str(segmentation_dir)!r}, "sar-lab/di3cl-water",
                         "--dataset", "sar-lab/synthetic-water", "--run-info", {str(tmp_path / "run.json")!r}]) == 0
            # pushing again to an existing repo works (exist_ok) and makes a second commit
            assert main(["push", "model", {str(segmentation_dir)!r}, "sar-lab/di3cl-water",
                         "--commit-message", "again"]) == 0
            """,
            hub_env(hub, tmp_path / "push-home"),
        )
        assert not hub.errors, hub.errors
        repo = hub.repo("sar-lab/di3cl-water")
        # the client may split a push into "(part N)" commits (100 MB of inline content per commit)
        assert repo.commit_messages[0] == "Upload DI3CL model" and repo.commit_messages[-1].startswith(
            "again"
        )
        assert {"README.md", "model.safetensors", "config.json", "modeling_di3cl.py"} <= set(repo.files)
        assert not any(name.startswith("checkpoint") for name in repo.files)
        readme = repo.files["README.md"].decode()
        assert "library_name: transformers" in readme and "model-index" in readme
        paths = [path for _, path in hub.requests]
        assert paths.count("/api/repos/create") == 2
        assert "/api/models/sar-lab/di3cl-water/preupload/main" in paths
        assert "/api/models/sar-lab/di3cl-water/commit/main" in paths
        hf_home = tmp_path / "load-home"
        snapshot = hub.write_cache(hf_home, "sar-lab/di3cl-water")
    assert (snapshot / "model.safetensors").read_bytes() == (
        segmentation_dir / "model.safetensors"
    ).read_bytes()

    out = run_python(
        f"""
        import numpy as np, torch
        from transformers import AutoImageProcessor, AutoModel, AutoModelForSemanticSegmentation
        x = torch.from_numpy(np.load({str(tmp_path / "input.npy")!r}))
        # 1. without the package: remote code from the repo
        remote = AutoModelForSemanticSegmentation.from_pretrained(
            "sar-lab/di3cl-water", trust_remote_code=True, dtype=torch.float32).eval()
        assert not type(remote).__module__.startswith("di3cl_hf"), type(remote).__module__
        processor = AutoImageProcessor.from_pretrained("sar-lab/di3cl-water", trust_remote_code=True)
        assert processor.input_kind == "intensity", processor
        with torch.inference_mode():
            np.save({str(tmp_path / "remote.npy")!r}, remote(x).logits.numpy())
        # 2. with the package: AutoModel by model_type, no remote code
        import di3cl_hf
        encoder = AutoModel.from_pretrained("sar-lab/di3cl-water", dtype=torch.float32).eval()
        seg = AutoModelForSemanticSegmentation.from_pretrained("sar-lab/di3cl-water", dtype=torch.float32).eval()
        assert type(encoder) is di3cl_hf.DI3CLModel and type(seg) is di3cl_hf.DI3CLForSemanticSegmentation
        with torch.inference_mode():
            np.save({str(tmp_path / "package.npy")!r}, seg(x).logits.numpy())
        print("loaded", type(remote).__module__)
        """,
        hub_env(hub, hf_home, HF_HUB_OFFLINE="1", HF_ENDPOINT="http://127.0.0.1:9"),
        cli=False,  # nothing may import di3cl_hf before the remote-code load
    )
    assert "loaded transformers_modules" in out
    package, remote = np.load(tmp_path / "package.npy"), np.load(tmp_path / "remote.npy")
    # same process, same weights: remote code and the package compute the very same logits
    np.testing.assert_array_equal(remote, package)
    # against this process: the weights are byte-identical (checked above); CPU kernels may sum in
    # another order in another process, so logits of magnitude ~30 agree to ~1e-4
    np.testing.assert_allclose(package, expected, rtol=0, atol=1e-3)


@pytest.mark.slow
def test_push_dataset_and_space(tmp_path: Path, encoder_dir: Path) -> None:
    write_parquet_dataset(tmp_path / "parquet")
    (tmp_path / "parquet" / "README.md").unlink()  # pushed without a card: the fallback writes it
    models = tmp_path / "models"
    (models / "water").mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        (models / "water" / name).write_bytes((encoder_dir / name).read_bytes())
    with FakeHub(max_requests=40, max_seconds=300) as hub:
        run_python(
            f"""
            assert main(["push", "dataset", {str(tmp_path / "parquet")!r}, "sar-lab/sarsense-mini"]) == 0
            assert main(["push", "space", {str(REPO_ROOT / "space")!r}, "sar-lab/di3cl-demo",
                         "--models", {str(models)!r}]) == 0
            """,
            hub_env(hub, tmp_path / "home"),
        )
        assert not hub.errors, hub.errors
        dataset = hub.repo("sar-lab/sarsense-mini", "dataset")
        space = hub.repo("sar-lab/di3cl-demo", "space")
        dataset_snapshot = hub.write_cache(tmp_path / "cache", "sar-lab/sarsense-mini", "dataset")
    assert {"data/train-00000-of-00001.parquet", "data/test-00000-of-00001.parquet", "README.md"} <= set(
        dataset.files
    )
    assert space.space_sdk == "gradio"
    assert {
        "app.py",
        "requirements.txt",
        "README.md",
        "di3cl_hf/hub/push.py",
        "models/water/config.json",
    } <= set(space.files)
    assert b"sdk: gradio" in space.files["README.md"]
    assert not any("__pycache__" in name for name in space.files)
    # the pushed card's `configs` are what `datasets` reads to find the splits
    from datasets import load_dataset

    loaded = load_dataset(str(dataset_snapshot), cache_dir=str(tmp_path / "datasets-cache"))
    assert loaded["train"].num_rows == 3 and loaded["test"].num_rows == 2


def test_stage_space_requires_gradio_yaml(tmp_path: Path) -> None:
    (tmp_path / "space").mkdir()
    for name in ("app.py", "requirements.txt"):
        (tmp_path / "space" / name).write_text("")
    with pytest.raises(FileNotFoundError, match="no README.md"):
        stage_space(tmp_path / "space", tmp_path / "stage")
    (tmp_path / "space" / "README.md").write_text("---\nsdk: docker\n---\n")
    with pytest.raises(ValueError, match="sdk: gradio"):
        stage_space(tmp_path / "space", tmp_path / "stage")


def test_remote_code_files_are_exactly_the_flat_set(tmp_path: Path) -> None:
    """PACKAGE_DIR is the package root: the remote-code set is its five flat modules, nothing from subpackages."""
    assert {path.name for path in remote_code_files()} == {
        "configuration_di3cl.py",
        "modeling_di3cl.py",
        "di3cl_layers.py",
        "image_processing_di3cl.py",
        "radiometry.py",
    }
    assert all(path.parent.name == "di3cl_hf" for path in remote_code_files())
    (tmp_path / "configuration_di3cl.py").write_text("from .data.sario import read_sar\n")
    with pytest.raises(ValueError, match="flat sibling"):
        remote_code_files(tmp_path)
