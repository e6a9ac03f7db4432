"""The model shipped inside the package (issue #23) and its builder (:mod:`di3cl_hf.hub.ship`).

Two kinds of tests:

- the builder, ``di3cl push`` and ``di3cl predict``'s default, on a *stand-in* built with the builder into a
  temporary folder (random weights; never written into ``di3cl_hf/weights/``);
- the real shipped folder ``di3cl_hf/weights/s1-water-resnet18`` (Auto classes, fp32 loading, its encoder through
  ``AutoModel``, the pipeline, the fp16 round trip, the card's file sizes and numbers against ``results/real/``,
  ``di3cl predict`` on a real chip). These FAIL, naming the builder command, while the folder is missing.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from safetensors.torch import load_file, save_file

import di3cl_hf  # noqa: F401  (registers the DI3CL classes with the Auto classes)
from di3cl_hf import DI3CLConfig, DI3CLForSemanticSegmentation, DI3CLImageProcessor, DI3CLModel
from di3cl_hf.cli import main
from di3cl_hf.hub.ship import (
    MAX_SHIPPED_BYTES,
    SHIPPED_MARKER,
    ShipError,
    card_files,
    check_stored_weights,
    is_shipped_folder,
    ship_model,
)
from di3cl_hf.weights import DEFAULT_WATER_MODEL, WEIGHTS_DIR, shipped_model_available

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results" / "real"
FLOOD_JSON = RESULTS / "flood.json"
MODEL_EVALUATION = RESULTS / "flood-model.json"
CHIP = REPO / "samples" / "sentinel1" / "water" / "images" / "Spain_7370579"
LABELS = {0: "not_water", 1: "water"}
CARD_TEXT = dict(
    tables="## etci (etci: vv, vh)\n\n| initialisation / method | mode | 100 % IoU | 100 % F1 | runs |\n"
    "|---|---|---:|---:|---:|\n| random | full | 0.500 | 0.600 | 1 |\n",
    training_data="A stand-in: random weights, trained on nothing.",
    data_terms="No data.",
    wall_time="0 min",
    machine="the test machine",
    initialisation="random",
)


# ------------------------------------------------------------------------------------------------ fixtures


def _source(folder: Path, decoder: int = 32) -> Path:
    """A fine-tuned-like fp32 save_pretrained folder (random weights, BatchNorm statistics not at their init)."""
    config = DI3CLConfig(
        backbone="resnet18", num_channels=2, decoder_hidden_size=decoder, num_labels=2,
        id2label=LABELS, label2id={v: k for k, v in LABELS.items()},
    )  # fmt: skip
    torch.manual_seed(0)
    model = DI3CLForSemanticSegmentation(config).train()
    with torch.no_grad():
        model(pixel_values=torch.randn(2, 2, 64, 64))  # running stats and num_batches_tracked move
    model.eval().save_pretrained(folder)
    DI3CLImageProcessor(num_channels=2, image_mean=[0.45, 0.3], image_std=[0.15, 0.12]).save_pretrained(
        folder
    )
    return folder


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return _source(tmp_path_factory.mktemp("finetuned") / "model")


@pytest.fixture(scope="module")
def standin(source: Path, tmp_path_factory) -> Path:
    """A shipped folder written by the builder into a temporary folder (never into di3cl_hf/weights)."""
    target = tmp_path_factory.mktemp("shipped") / "s1-water-standin"
    ship_model(source, target, **CARD_TEXT)
    return target


@pytest.fixture(scope="module")
def shipped() -> Path:
    """The real shipped folder; a clear failure while it is missing."""
    if not shipped_model_available():
        pytest.fail(
            f"{DEFAULT_WATER_MODEL} is missing: the real model is written with `di3cl ship-model FINETUNED_FOLDER "
            "--tables @results/real/flood.md ...` (di3cl_hf.hub.ship.ship_model); see issue #23"
        )
    return DEFAULT_WATER_MODEL


# ------------------------------------------------------------------------------------------------ checks used twice


def assert_loads_as_fp32_with_its_encoder(folder: Path) -> None:
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForSemanticSegmentation

    config = AutoConfig.from_pretrained(folder)
    assert type(config).__name__ == "DI3CLConfig" and config.num_labels == 2
    model = AutoModelForSemanticSegmentation.from_pretrained(folder)
    assert isinstance(model, DI3CLForSemanticSegmentation)
    assert {v.dtype for v in model.state_dict().values() if v.is_floating_point()} == {torch.float32}
    processor = AutoImageProcessor.from_pretrained(folder)
    assert (
        isinstance(processor, DI3CLImageProcessor)
        and processor.num_channels == model.config.num_channels == 2
    )
    stored = load_file(str(folder / "model.safetensors"))
    for key, value in model.state_dict().items():
        assert torch.equal(value, stored[key].float() if stored[key].is_floating_point() else stored[key]), (
            key
        )
    encoder = AutoModel.from_pretrained(folder)  # one folder: its encoder, not a second copy
    assert isinstance(encoder, DI3CLModel) and next(encoder.parameters()).dtype == torch.float32
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, model.state_dict()[f"{model.base_model_prefix}.{key}"]), key


def assert_fp16_round_trip_is_bit_exact(folder: Path) -> None:
    stored = load_file(str(folder / "model.safetensors"))
    floats = {k: v for k, v in stored.items() if v.is_floating_point()}
    assert floats and {v.dtype for v in floats.values()} == {torch.float16}
    assert any("running_var" in key for key in floats)  # BatchNorm statistics are stored in fp16 too
    assert {v.dtype for k, v in stored.items() if k.endswith("num_batches_tracked")} == {torch.int64}
    for key, value in floats.items():
        assert torch.isfinite(value).all(), key
        assert torch.equal(value.float().half().view(torch.int16), value.view(torch.int16)), key
    assert check_stored_weights(folder / "model.safetensors")["float16"] == len(floats)
    config = json.loads((folder / "config.json").read_text())
    assert config["dtype"] == "float32" and config.get("torch_dtype", "float32") == "float32"


def assert_card_lists_files_with_true_sizes(folder: Path) -> None:
    card = (folder / "README.md").read_text(encoding="utf-8")
    actual = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file() and p.name != "README.md"}
    assert card_files(card) == actual
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "modeling_di3cl.py"} <= set(
        actual
    )
    assert SHIPPED_MARKER in card and is_shipped_folder(folder)
    assert sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) <= MAX_SHIPPED_BYTES


# ------------------------------------------------------------------------------------------------ the builder (stand-in)


def test_builder_writes_fp16_weights_that_load_as_fp32_with_the_encoder(source: Path, standin: Path) -> None:
    assert_fp16_round_trip_is_bit_exact(standin)
    assert_loads_as_fp32_with_its_encoder(standin)
    original, stored = (
        load_file(str(source / "model.safetensors")),
        load_file(str(standin / "model.safetensors")),
    )
    assert set(original) == set(stored)
    for key, value in original.items():
        if value.is_floating_point():
            assert torch.equal(stored[key], value.half()), key  # round to nearest, nothing else
        else:
            assert torch.equal(stored[key], value), key  # integer buffers unchanged
    assert int(stored["di3cl.encoder.bn1.num_batches_tracked"]) == 1
    processor = json.loads((standin / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == [0.45, 0.3] and "auto_map" in processor


def test_card_lists_the_files_with_their_sizes_and_the_given_texts(standin: Path) -> None:
    assert_card_lists_files_with_true_sizes(standin)
    card = (standin / "README.md").read_text(encoding="utf-8")
    for text in (CARD_TEXT["training_data"], CARD_TEXT["machine"], "### etci (etci: vv, vh)", "fp16"):
        assert text in card, text
    assert card.index("## Measured results") < card.index("## Limitations") < card.index("## Files")


def test_builder_never_overwrites_unasked_and_leaves_no_temporary(source: Path, tmp_path: Path) -> None:
    target = tmp_path / "shipped"
    ship_model(source, target, **CARD_TEXT)
    before = (target / "model.safetensors").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="overwrite"):
        ship_model(source, target, **CARD_TEXT)
    assert (target / "model.safetensors").stat().st_mtime_ns == before
    ship_model(source, target, overwrite=True, **{**CARD_TEXT, "machine": "another machine"})
    assert "another machine" in (target / "README.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shipped"]  # no .shipped.ship-* left


def test_builder_refuses_weights_fp16_cannot_hold(tmp_path: Path) -> None:
    folder = _source(tmp_path / "big", decoder=16)
    weights = load_file(str(folder / "model.safetensors"))
    weights["decode_head.classifier.bias"] = torch.tensor([1e6, 0.0])
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ShipError, match="decode_head.classifier.bias.*fp16"):
        ship_model(folder, tmp_path / "out", **CARD_TEXT)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_card_never_names_a_path_of_the_build_machine(source: Path, tmp_path: Path) -> None:
    """The card is committed: a local base_model recorded by the fine-tuning card is left out, and a text naming
    an absolute machine path (or a folder beside the repository) is refused before anything is written."""
    from huggingface_hub import ModelCard, ModelCardData

    local = "/" + "work/runs/encoder"  # written so that tests/test_docs.py does not flag this file
    run = tmp_path / "run"
    run.mkdir()
    for path in source.iterdir():
        (run / path.name).write_bytes(path.read_bytes())
    card = ModelCard(
        f"---\n{ModelCardData(base_model=local, tags=['di3cl']).to_yaml()}\n---\n\n## Training\n\n- **steps**: 3\n"
    )
    (run / "README.md").write_text(str(card))
    ship_model(run, tmp_path / "out", **CARD_TEXT)
    text = (tmp_path / "out" / "README.md").read_text()
    assert local not in text and "- **steps**: 3" in text
    with pytest.raises(ShipError, match="paths of this machine"):
        ship_model(source, tmp_path / "out2", **{**CARD_TEXT, "machine": "data in " + ".." + "/shared/data"})
    assert not (tmp_path / "out2").exists()


def test_cli_ship_model_reads_texts_from_files(source: Path, tmp_path: Path, capsys) -> None:
    tables = tmp_path / "flood.md"
    tables.write_text(CARD_TEXT["tables"])
    argv = ["ship-model", str(source), str(tmp_path / "out"), "--tables", f"@{tables}", "--input-kind", "db"]
    for key in ("training_data", "data_terms", "wall_time", "machine", "initialisation"):
        argv += [f"--{key.replace('_', '-')}", CARD_TEXT[key]]
    assert main(argv) == 0
    assert "bit-exact" in capsys.readouterr().out
    assert "| random | full | 0.500 | 0.600 | 1 |" in (tmp_path / "out" / "README.md").read_text()
    assert json.loads((tmp_path / "out" / "preprocessor_config.json").read_text())["input_kind"] == "db"


def test_push_stages_a_shipped_folder_unchanged(standin: Path, tmp_path: Path) -> None:
    from di3cl_hf.hub.push import stage_model

    staged = stage_model(standin, tmp_path / "stage", repo_id="sar-lab/s1-water")
    names = sorted(p.name for p in standin.iterdir())
    assert sorted(p.name for p in staged.iterdir()) == names
    for name in names:
        assert (staged / name).read_bytes() == (standin / name).read_bytes(), name
    with pytest.raises(ValueError, match="pushed unchanged"):
        stage_model(standin, tmp_path / "again", evaluation={"scores": {}})


def test_predict_without_a_model_uses_the_shipped_one(
    standin: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """`di3cl predict IN OUT` and `di3cl predict VV VH --output-dir` take the shipped model (here a stand-in)."""
    from di3cl_hf.cli import predict as predict_cli

    monkeypatch.setattr(predict_cli, "shipped_model_path", lambda: standin)
    out = tmp_path / "maps"
    assert (
        main(["predict", f"{CHIP}_vv.tif", f"{CHIP}_vh.tif", "--output-dir", str(out), "--tile-size", "256"])
        == 0
    )
    assert f"model: {standin} (the shipped default" in capsys.readouterr().out
    _assert_georeferenced_map(out / "Spain_7370579_classes.tif")
    # the original form and --model still name another model
    single = tmp_path / "one.tif"
    assert (
        main(["predict", str(standin), f"{CHIP}_vh.tif", str(single), "--quiet", "--tile-size", "256"]) == 0
    )
    assert (
        main(["predict", "--model", str(standin), f"{CHIP}_vh.tif", str(tmp_path / "two.tif"), "--quiet"])
        == 0
    )
    assert "shipped default" not in capsys.readouterr().out


def _assert_georeferenced_map(path: Path) -> None:
    with rasterio.open(f"{CHIP}_vv.tif") as chip, rasterio.open(path) as predicted:
        assert predicted.crs == chip.crs and predicted.transform == chip.transform
        assert (predicted.width, predicted.height) == (chip.width, chip.height)
        assert set(np.unique(predicted.read(1))) <= {0, 1, 255}


def test_predict_says_clearly_when_the_shipped_model_is_missing(tmp_path: Path, monkeypatch, capsys) -> None:
    from di3cl_hf import weights

    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    assert main(["predict", f"{CHIP}_vh.tif", str(tmp_path / "o.tif")]) == 1
    assert "shipped model is not installed" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ the Space (stand-in)


@pytest.fixture(scope="module")
def space_app():
    """space/app.py imported in this process (handler-level checks; the browser test is in test_space.py)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("di3cl_space_app_shipped", REPO / "space" / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_space_stacks_the_real_chip_into_one_vv_vh_example(space_app, tmp_path: Path) -> None:
    """The Space's first example for the (VV + VH) water model: the real chip's two files as one 2-band dB GeoTIFF,
    written into the cache folder (never into space/)."""
    path = space_app.real_dual_pol_example(tmp_path)
    assert path is not None and path.is_relative_to(tmp_path)
    with (
        rasterio.open(path) as stacked,
        rasterio.open(f"{CHIP}_vv.tif") as vv,
        rasterio.open(f"{CHIP}_vh.tif") as vh,
    ):
        assert stacked.count == 2 and stacked.descriptions == ("VV", "VH") and stacked.dtypes[0] == "float32"
        assert stacked.crs == vv.crs and stacked.transform == vv.transform
        for band, source in ((1, vv), (2, vh)):
            np.testing.assert_array_equal(np.nan_to_num(stacked.read(band)), np.nan_to_num(source.read(1)))


def test_space_water_task_defaults_to_the_shipped_model(
    space_app, standin: Path, tmp_path: Path, monkeypatch
):
    """Without DI3CL_MODEL_WATER and without a water model in DI3CL_MODEL_DIR, the Space's water task uses the
    shipped model (here the stand-in), the page names it, and the real VV + VH chip is mapped with it."""
    monkeypatch.setattr(space_app, "DEFAULT_WATER_MODEL", standin)
    monkeypatch.setattr(space_app, "shipped_model_available", lambda: True)
    (tmp_path / "models").mkdir()
    monkeypatch.setenv("DI3CL_MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.delenv("DI3CL_MODEL_WATER", raising=False)
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio-cache"))
    space_app.load_task_model.cache_clear()
    try:
        assert space_app.model_location("water") == str(standin)
        assert f"Water: `{standin.name}`, shipped with di3cl-hf" in space_app.models_markdown()
        chip = space_app.real_dual_pol_example(tmp_path / "examples")
        _, _, legend, result, notice = space_app.segment(str(chip), "Water", "auto")
        assert standin.name in notice and "water" in legend
        with rasterio.open(result) as output, rasterio.open(chip) as source:
            assert output.crs == source.crs and output.transform == source.transform
    finally:
        space_app.load_task_model.cache_clear()


# ------------------------------------------------------------------------------------------------ the real shipped model


def test_weights_folder_holds_only_shipped_models() -> None:
    entries = sorted(p.name for p in WEIGHTS_DIR.iterdir() if p.name != "__pycache__")
    assert set(entries) <= {"__init__.py", DEFAULT_WATER_MODEL.name}, entries
    for entry in WEIGHTS_DIR.iterdir():
        if entry.is_dir() and entry.name != "__pycache__":
            assert is_shipped_folder(entry), f"{entry}: not written by di3cl ship-model"
            assert "stand-in" not in (entry / "README.md").read_text().lower(), f"{entry}: a stand-in"


def test_shipped_folder_loads_through_the_auto_classes_as_fp32(shipped: Path) -> None:
    assert_loads_as_fp32_with_its_encoder(shipped)
    processor = json.loads((shipped / "preprocessor_config.json").read_text())
    assert processor["input_kind"] != "dn8", "a declared dn8 refuses dB GeoTIFFs: ship with --input-kind auto"


def test_shipped_fp16_values_round_trip_bit_exactly(shipped: Path) -> None:
    assert_fp16_round_trip_is_bit_exact(shipped)


def test_shipped_card_lists_the_files_with_their_true_sizes(shipped: Path) -> None:
    assert_card_lists_files_with_true_sizes(shipped)


def test_shipped_model_in_a_pipeline(shipped: Path) -> None:
    from PIL import Image
    from transformers import pipeline

    segmenter = pipeline("image-segmentation", model=str(shipped), device="cpu")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 96), dtype=np.uint8))
    results = segmenter(image)
    assert results and {r["label"] for r in results} <= set(LABELS.values()) | {"not-water", "not water"}
    masks = np.stack([np.asarray(r["mask"]) for r in results])
    assert masks.shape[1:] == (64, 96) and (masks.astype(bool).sum(axis=0) == 1).all()


def test_predict_without_a_model_maps_a_real_chip(shipped: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "maps"
    assert main(["predict", f"{CHIP}_vv.tif", f"{CHIP}_vh.tif", "--output-dir", str(out)]) == 0
    assert f"model: {shipped} (the shipped default" in capsys.readouterr().out
    _assert_georeferenced_map(out / "Spain_7370579_classes.tif")


def _card_tables(card: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """``(heading, header cells, rows)`` of every results table (first header cell "initialisation / method")."""
    tables, heading, lines = [], "", card.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        if line.startswith("| initialisation / method |"):
            header = [c.strip() for c in line.strip().strip("|").split("|")]
            rows = []
            for row in lines[index + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append([c.strip() for c in row.strip().strip("|").split("|")])
            tables.append((heading, header, rows))
    return tables


def _expected_cell(values: list[float]) -> str:
    """evaluate_flood.py's cell: mean, or mean ± sample std (ddof 1), 3 decimals; "–" without runs."""
    if not values:
        return "–"
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return "n/a"
    mean = float(np.mean(values))
    return f"{mean:.3f}" if len(values) == 1 else f"{mean:.3f} ± {float(np.std(values, ddof=1)):.3f}"


def test_shipped_card_numbers_match_results(shipped: Path) -> None:
    """Every IoU / F1 cell and run count of the card's tables is recomputed from results/real/flood.json (keys:
    ``tasks``, ``runs[*].task / init / mode / fraction / iou / f1``); the model-index (the model's own test
    scores) matches results/real/flood-model.json."""
    from huggingface_hub import ModelCard

    from di3cl_hf.hub.cards import evaluation_results

    assert FLOOD_JSON.is_file(), f"{FLOOD_JSON}: missing (examples/evaluate_flood.py writes it)"
    record = json.loads(FLOOD_JSON.read_text())
    text = (shipped / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Measured results\n(.*?)(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    assert section, "the card has no '## Measured results' section"
    tables = _card_tables(section.group(1))
    assert tables, "the card has no results table (| initialisation / method | mode | ...)"
    for heading, header, rows in tables:
        task = next((t for t in record["tasks"] if re.match(rf"{re.escape(t)}\b", heading)), None)
        assert task, f"table under {heading!r}: no task of flood.json {list(record['tasks'])} named there"
        runs = [run for run in record["runs"].values() if run["task"] == task]
        for row in rows:
            chosen = [run for run in runs if run["init"] == row[0] and run["mode"] == row[1]]
            assert chosen, f"{task}: row {row[:2]} has no runs in flood.json"
            for column, cell in zip(header[2:], row[2:]):
                found = re.fullmatch(r"([\d.]+) % (IoU|F1)", column)
                if found:
                    fraction, metric = float(found[1]) / 100, found[2].lower()
                    values = [r[metric] for r in chosen if math.isclose(float(r["fraction"]), fraction)]
                    assert cell == _expected_cell(values), f"{task} {row[:2]} {column}: card {cell}"
                elif column == "runs":
                    assert int(cell) == len(chosen), f"{task} {row[:2]}: {cell} runs in the card"
    results = ModelCard(text).data.eval_results or []
    if results:
        assert MODEL_EVALUATION.is_file(), (
            f"the card has a model-index: {MODEL_EVALUATION} must hold its scores"
        )
        expected = evaluation_results(json.loads(MODEL_EVALUATION.read_text()))
        assert sorted((r.metric_type, round(r.metric_value, 2)) for r in results) == sorted(
            (r.metric_type, round(r.metric_value, 2)) for r in expected
        )


def test_tracked_files_stay_under_64_mb() -> None:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    files = {REPO / name for name in listed.decode().split("\0") if name}
    files |= {
        p for p in WEIGHTS_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }  # once committed
    total = sum(path.stat().st_size for path in files if path.is_file())
    assert total <= 64_000_000, f"tracked files hold {total / 1e6:.1f} MB"
