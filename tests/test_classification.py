"""DI3CLForImageClassification: Auto classes, loss, save/load, pre-trained encoders, pipeline, remote code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, pipeline
from transformers.modeling_outputs import ImageClassifierOutput

import di3cl_hf
from di3cl_hf import DI3CLForImageClassification, DI3CLForPreTraining, DI3CLImageProcessor, DI3CLModel

LABELS = {0: "2S1", 1: "BMP2", 2: "T72"}
LABEL2ID = {name: index for index, name in LABELS.items()}


def _classifier_config(tiny_config, **overrides):
    return tiny_config(num_labels=3, id2label=LABELS, label2id=LABEL2ID, **overrides)


def test_exported_and_registered_with_auto_classes(tiny_config):
    assert "DI3CLForImageClassification" in di3cl_hf.__all__
    config = _classifier_config(tiny_config)
    model = AutoModelForImageClassification.from_config(config)
    assert type(model) is DI3CLForImageClassification
    assert model.config.id2label == LABELS and model.config.label2id == LABEL2ID
    assert model.classifier.out_features == 3 and model.classifier.in_features == 512


def test_forward_logits_loss_and_tuple_output(tiny_config):
    torch.manual_seed(0)
    model = DI3CLForImageClassification(_classifier_config(tiny_config)).eval()
    pixel_values = torch.randn(4, 2, 64, 64)
    labels = torch.tensor([0, 2, 1, 2])
    with torch.no_grad():
        outputs = model(pixel_values, labels=labels, output_hidden_states=True)
        pooled = DI3CLModel.forward(model.di3cl, pixel_values).pooler_output
        as_tuple = model(pixel_values, labels=labels, return_dict=False)
    assert isinstance(outputs, ImageClassifierOutput)
    assert outputs.logits.shape == (4, 3)
    assert len(outputs.hidden_states) == 5
    # pooled encoder features -> linear head; the loss is plain cross-entropy
    torch.testing.assert_close(outputs.logits, model.classifier(pooled), rtol=0, atol=0)
    torch.testing.assert_close(outputs.loss, F.cross_entropy(outputs.logits, labels), rtol=0, atol=0)
    torch.testing.assert_close(as_tuple[0], outputs.loss, rtol=0, atol=0)
    torch.testing.assert_close(as_tuple[1], outputs.logits, rtol=0, atol=0)
    assert model(pixel_values).loss is None
    with pytest.raises(ValueError, match="labels"):
        model(pixel_values, labels=torch.tensor([0, 1]))


def test_loss_trains_the_head_and_encoder(tiny_config):
    torch.manual_seed(0)
    model = DI3CLForImageClassification(_classifier_config(tiny_config)).train()
    loss = model(torch.randn(2, 2, 64, 64), labels=torch.tensor([0, 1])).loss
    loss.backward()
    assert model.classifier.weight.grad.abs().sum() > 0
    assert model.di3cl.encoder.conv1.weight.grad.abs().sum() > 0


def test_classifier_dropout_from_config(tiny_config):
    model = DI3CLForImageClassification(_classifier_config(tiny_config, classifier_dropout=0.3))
    assert model.dropout.p == pytest.approx(0.3)
    assert DI3CLForImageClassification(_classifier_config(tiny_config)).dropout.p == 0.0


def test_save_load_is_exact(tiny_config, tmp_path, assert_reload_is_exact):
    model = DI3CLForImageClassification(_classifier_config(tiny_config)).train()
    model(torch.randn(4, 2, 64, 64), labels=torch.tensor([0, 1, 2, 0])).loss.backward()  # move BN statistics
    model.eval()
    model.save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForImageClassification"] == "modeling_di3cl.DI3CLForImageClassification"
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert type(loaded) is DI3CLForImageClassification
    assert loaded.config.id2label == LABELS and loaded.config.label2id == LABEL2ID
    assert_reload_is_exact(model, loaded, torch.randn(2, 2, 64, 64))


@pytest.mark.parametrize("source", ["encoder", "pretraining"])
def test_from_pretrained_encoder_reuses_encoder_and_makes_a_new_head(tiny_config, tmp_path, source):
    torch.manual_seed(0)
    if source == "encoder":
        pretrained = DI3CLModel(tiny_config()).eval()
        encoder_state = pretrained.encoder.state_dict()
    else:
        pretrained = DI3CLForPreTraining(tiny_config()).eval()
        encoder_state = pretrained.di3cl.encoder.state_dict()
    pretrained.save_pretrained(tmp_path)
    torch.manual_seed(1)
    model = DI3CLForImageClassification.from_pretrained(
        tmp_path, num_labels=3, id2label=LABELS, label2id=LABEL2ID, dtype=torch.float32
    )
    for key, value in encoder_state.items():
        assert torch.equal(model.di3cl.encoder.state_dict()[key], value), key
    assert model.config.id2label == LABELS
    assert model.classifier.weight.shape == (3, 512)
    # the head is freshly initialised (nn.Linear's default), not zeros or leftovers
    bound = 1 / np.sqrt(512)
    assert model.classifier.weight.abs().max() <= bound + 1e-6
    assert model.classifier.weight.std() > bound / 4
    assert not any(key.startswith("momentum_") for key in model.state_dict())
    # the classification folder also still loads as a plain encoder
    model.save_pretrained(tmp_path / "classifier")
    encoder = AutoModel.from_pretrained(tmp_path / "classifier", dtype=torch.float32)
    assert type(encoder) is DI3CLModel
    assert torch.equal(encoder.encoder.conv1.weight, model.di3cl.encoder.conv1.weight)


@pytest.fixture(scope="module")
def classifier_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved 1-channel classifier (weights, code files, config with label names) with its processor."""
    from di3cl_hf import DI3CLConfig

    root = tmp_path_factory.mktemp("classification")
    config = DI3CLConfig(
        backbone="resnet18", num_channels=1, image_size=64, num_labels=3, id2label=LABELS, label2id=LABEL2ID
    )
    torch.manual_seed(0)
    DI3CLForImageClassification(config).eval().save_pretrained(root / "model")
    DI3CLImageProcessor(num_channels=1, do_resize=True, size=64).save_pretrained(root / "model")
    return root / "model"


@pytest.fixture(scope="module")
def chip(classifier_folder: Path) -> Path:
    """An 8-bit grey magnitude chip as JPEG (an MSTAR-like target chip: bright target in clutter)."""
    rng = np.random.default_rng(0)
    grey = rng.gamma(1.0, 20.0, size=(72, 80))
    grey[30:42, 34:48] += 150
    path = classifier_folder.parent / "chip.jpeg"
    Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8), mode="L").save(path)
    return path


def test_image_classification_pipeline_returns_label_names(classifier_folder: Path, chip: Path) -> None:
    classifier = pipeline(
        "image-classification", model=str(classifier_folder), device="cpu", dtype=torch.float32
    )
    assert type(classifier.model) is DI3CLForImageClassification
    results = classifier(str(chip), top_k=3)
    assert [r["label"] for r in results] and {r["label"] for r in results} == set(LABELS.values())
    assert sum(r["score"] for r in results) == pytest.approx(1.0, abs=1e-5)
    # the same scores as the model on the processor's output of the grey chip
    model = DI3CLForImageClassification.from_pretrained(classifier_folder, dtype=torch.float32).eval()
    processor = DI3CLImageProcessor.from_pretrained(classifier_folder)
    inputs = processor(Image.open(chip), return_tensors="pt")
    with torch.inference_mode():
        probabilities = model(**inputs).logits.softmax(-1)[0]
    expected = {LABELS[i]: float(p) for i, p in enumerate(probabilities)}
    for result in results:
        assert result["score"] == pytest.approx(expected[result["label"]], abs=1e-5)
    # a batch of SAR arrays through the processor gives the same as one at a time
    batch = processor([np.asarray(Image.open(chip))] * 2, return_tensors="pt")
    torch.testing.assert_close(batch["pixel_values"][0], inputs["pixel_values"][0])


def test_model_card_and_staged_folder_of_a_classifier(classifier_folder: Path, tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    from di3cl_hf.hub.cards import build_model_card
    from di3cl_hf.hub.push import stage_model

    card = ModelCard(str(build_model_card(classifier_folder, repo_id="sar-lab/di3cl-mstar")))
    assert card.data.pipeline_tag == "image-classification"
    assert "image classification" in card.text
    assert 'AutoModelForImageClassification.from_pretrained("sar-lab/di3cl-mstar")' in card.text
    staged = stage_model(classifier_folder, tmp_path / "staged")
    auto_map = json.loads((staged / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForImageClassification"] == "modeling_di3cl.DI3CLForImageClassification"


_BLOCK_PACKAGE = """
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "di3cl_hf" or name.startswith("di3cl_hf."):
            raise ImportError(f"{name} is blocked in this test: remote code must not need it")
sys.meta_path.insert(0, _Block())
"""


def test_remote_code_without_the_package(classifier_folder: Path, chip: Path, tmp_path: Path) -> None:
    """In a process where ``import di3cl_hf`` fails, the saved folder loads through
    ``AutoModelForImageClassification`` and the ``image-classification`` pipeline with ``trust_remote_code``."""
    pixel_values = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    torch.save(pixel_values, tmp_path / "inputs.pt")
    code = _BLOCK_PACKAGE + textwrap.dedent(
        f"""
        import json, torch
        from transformers import AutoModelForImageClassification, pipeline
        try:
            import di3cl_hf
        except ImportError:
            pass
        else:
            raise SystemExit("di3cl_hf should not be importable here")
        torch.set_num_threads(1)
        model = AutoModelForImageClassification.from_pretrained(
            {str(classifier_folder)!r}, trust_remote_code=True, dtype=torch.float32
        ).eval()
        with torch.no_grad():
            logits = model(torch.load({str(tmp_path / "inputs.pt")!r})).logits
        classifier = pipeline("image-classification", model={str(classifier_folder)!r}, trust_remote_code=True,
                              device="cpu", dtype=torch.float32)
        results = classifier({str(chip)!r}, top_k=3)
        print(json.dumps({{
            "class": type(model).__module__ + "." + type(model).__name__,
            "pipeline_class": type(classifier.model).__module__,
            "logits": logits.tolist(),
            "results": results,
        }}))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"), PYTHONPATH="", OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path
    )
    assert result.returncode == 0, f"remote-code classification failed:\n{result.stderr[-4000:]}"
    remote = json.loads(result.stdout.strip().splitlines()[-1])
    assert remote["class"].startswith("transformers_modules.")
    assert remote["class"].endswith("modeling_di3cl.DI3CLForImageClassification")
    assert not remote["pipeline_class"].startswith("di3cl_hf")

    # Reference: the package's class on the same saved files (same layout in memory -> same summation order).
    local = AutoModelForImageClassification.from_pretrained(classifier_folder, dtype=torch.float32).eval()
    with torch.no_grad():
        expected = local(pixel_values).logits
    torch.testing.assert_close(torch.tensor(remote["logits"]), expected, rtol=1e-5, atol=1e-6)
    classifier = pipeline(
        "image-classification", model=str(classifier_folder), device="cpu", dtype=torch.float32
    )
    local_results = classifier(str(chip), top_k=3)
    assert [r["label"] for r in remote["results"]] == [r["label"] for r in local_results]
    for remote_result, local_result in zip(remote["results"], local_results):
        assert remote_result["score"] == pytest.approx(local_result["score"], abs=1e-5)


def test_config_round_trip_keeps_label_names(tiny_config, tmp_path):
    _classifier_config(tiny_config).save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert config.id2label == LABELS and config.num_labels == 3


# ---------------------------------------------------------------- frozen-feature probes (examples/evaluate_mstar.py)
def _toy_features(seed: int = 0, per_class: int = 30, noise: float = 0.3):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, 16, generator=generator) * 2
    labels = torch.arange(4).repeat_interleave(per_class)
    return centres[labels] + noise * torch.randn(len(labels), 16, generator=generator), labels


def test_probes_separate_separable_features_and_not_random_labels():
    from di3cl_hf.training.probing import evaluate_features

    train, train_labels = _toy_features(0)
    test, test_labels = _toy_features(0, per_class=10)
    test = test + 0.1 * torch.randn(test.shape, generator=torch.Generator().manual_seed(1))
    results = evaluate_features(
        train, train_labels, test, test_labels, shots=(1, 5), seeds=(0, 1), epochs=100
    )
    assert results["linear_probe"]["accuracy"] == 1.0
    assert results["knn"]["1"] == 1.0 and results["knn"]["20"] == 1.0
    assert results["few_shot"]["5"]["accuracy"] >= 0.95
    assert len(results["few_shot"]["1"]["per_seed"]) == 2
    assert set(results["linear_probe"]["holdout_accuracy_by_weight_decay"]) == {
        "1e-05",
        "0.0001",
        "0.001",
        "0.01",
        "0.1",
    }
    shuffled = test_labels[torch.randperm(len(test_labels), generator=torch.Generator().manual_seed(2))]
    chance = evaluate_features(train, train_labels, test, shuffled, shots=(1,), seeds=(0,), epochs=100)
    assert chance["linear_probe"]["accuracy"] < 0.6


def test_shots_holdout_and_knn_ties():
    from di3cl_hf.training.probing import knn_accuracy, sample_shots, stratified_holdout

    labels = torch.tensor([0] * 10 + [1] * 5 + [2] * 3)
    fit, held = stratified_holdout(labels, 0.2, seed=0)
    assert set(fit.tolist()).isdisjoint(held.tolist()) and len(fit) + len(held) == len(labels)
    assert torch.bincount(labels[held]).tolist() == [2, 1, 1]
    shots = sample_shots(labels, 4, seed=3)
    assert torch.bincount(labels[shots]).tolist() == [4, 4, 3]  # all of a class when it has fewer
    assert torch.equal(shots, sample_shots(labels, 4, seed=3))
    # one vote each for classes 0 and 1: the more similar neighbour (class 1) wins the tie
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert (
        knn_accuracy(train, torch.tensor([0, 1]), torch.tensor([[0.4, 0.6]]), torch.tensor([1]), k=2) == 1.0
    )


def test_read_chip_crops_and_pads(tmp_path):
    from di3cl_hf.training.probing import list_chips, read_chip

    for split, name, shape in (
        ("train", "A", (130, 140)),
        ("train", "B", (100, 90)),
        ("test", "A", (128, 128)),
    ):
        (tmp_path / split / name).mkdir(parents=True, exist_ok=True)
        values = np.arange(np.prod(shape)).reshape(shape) % 251
        Image.fromarray(values.astype(np.uint8), mode="L").save(tmp_path / split / name / "x.png")
    train = list_chips(tmp_path, "train")
    assert train.class_names == ["A", "B"] and train.labels.tolist() == [0, 1]
    big = read_chip(train.paths[0], 128)
    assert big.shape == (128, 128) and big.dtype == np.uint8
    original = np.asarray(Image.open(train.paths[0]))
    np.testing.assert_array_equal(big, original[1:129, 6:134])
    small = read_chip(train.paths[1], 128)
    assert small.shape == (128, 128) and small[0, 0] == 0  # zero-padded around the 100 x 90 chip
    with pytest.raises(FileNotFoundError):
        list_chips(tmp_path, "validation")
