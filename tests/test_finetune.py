"""Fine-tuning: a 2-step run saves a model that the Auto classes and the pipeline reload exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from di3cl_hf.training.evaluation import (
    EvaluationGridArguments,
    evaluate_kmeans,
    grid_markdown,
    mean_scores,
    plot_label_efficiency,
)
from di3cl_hf.training.finetuning import (
    FinetuneArguments,
    SegmentationDataset,
    configure_trainable,
    finetune,
)

LANDCOVER = ["water", "wetland", "farmland", "forest", "meadow", "road", "village", "city", "ground", "other"]


@pytest.fixture(scope="module")
def segmentation_dir(tmp_path_factory):
    from di3cl_hf.data.synthetic import generate_segmentation_sets

    root = tmp_path_factory.mktemp("synthetic-seg")
    generate_segmentation_sets(root, num_patches=6, size=64, seed=0, tasks=("landcover",))
    return root


@pytest.fixture(scope="module")
def finetuned(segmentation_dir, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("finetuned")
    args = FinetuneArguments(
        data_dir=str(segmentation_dir),
        output_dir=str(output_dir),
        task="landcover",
        init="random",
        backbone="resnet18",
        crop_size=64,
        batch_size=2,
        max_steps=2,
        decoder_hidden_size=32,
        mixed_precision="no",
        save_every=1,
        checkpoints_total_limit=1,
        progress=False,
    )
    return finetune(args)


def test_two_step_finetune_writes_model_processor_metrics_card_and_checkpoints(finetuned):
    output_dir = finetuned["output_dir"]
    from pathlib import Path

    output_dir = Path(output_dir)
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "metrics.json", "README.md"):
        assert (output_dir / name).is_file(), name
    assert [path.name for path in (output_dir / "checkpoints").iterdir()] == ["checkpoint-2"]  # rotated
    assert list((output_dir / "logs").rglob("events.out.tfevents.*")), "no TensorBoard events"
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert (
        metrics["test"]["num_pixels"] == 64 * 64
    )  # one test patch of 64 x 64 (the synthetic set has no nodata)
    assert set(metrics["test"]["per_class"]) == set(LANDCOVER)
    assert 0.0 <= metrics["test"]["overall_accuracy"] <= 1.0
    card = (output_dir / "README.md").read_text()
    assert "image-segmentation" in card and "synthetic" in card.lower()
    assert finetuned["num_train_samples"] == 5
    assert np.isfinite(finetuned["final_train_loss"])


def test_resume_from_latest_checkpoint_continues_at_its_step(finetuned, tmp_path):
    import dataclasses
    import shutil

    from di3cl_hf.training.finetuning import FinetuneArguments

    output_dir = tmp_path / "resumed"
    shutil.copytree(finetuned["output_dir"], output_dir)
    arguments = dataclasses.replace(
        FinetuneArguments(**finetuned["arguments"]),
        output_dir=str(output_dir),
        max_steps=3,
        resume_from_checkpoint="latest",
        save_model=False,
        report_to="none",
    )
    resumed = finetune(arguments)
    assert (resumed["start_step"], resumed["steps_run"]) == (2, 1)


def test_saved_model_reloads_with_identical_outputs(finetuned):
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    output_dir = finetuned["output_dir"]
    reloaded = AutoModelForSemanticSegmentation.from_pretrained(output_dir, dtype=torch.float32).eval()
    processor = AutoImageProcessor.from_pretrained(output_dir)
    assert reloaded.config.id2label[5] == "road"
    model = finetuned["model"].eval()
    image = np.random.default_rng(0).normal(-12.0, 4.0, size=(2, 64, 64)).astype(np.float32)
    pixel_values = processor(image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = model(pixel_values=pixel_values).logits
        actual = reloaded(pixel_values=pixel_values).logits
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_pipeline_returns_masks_named_by_class(finetuned):
    from PIL import Image
    from transformers import pipeline

    segmenter = pipeline(
        "image-segmentation", model=finetuned["model"].eval(), image_processor=finetuned["processor"]
    )
    grey = np.random.default_rng(1).integers(0, 255, size=(64, 64), dtype=np.uint8)
    outputs = segmenter(Image.fromarray(grey).convert("RGB"))
    assert outputs, "no segment returned"
    for segment in outputs:
        assert segment["label"] in LANDCOVER
        assert segment["mask"].size == (64, 64)


def test_loss_ignores_the_ignore_index(tiny_config):
    from di3cl_hf import DI3CLForSemanticSegmentation

    torch.manual_seed(0)
    model = DI3CLForSemanticSegmentation(tiny_config(num_labels=3, use_auxiliary_head=False)).eval()
    pixel_values = torch.randn(2, 2, 64, 64)
    labels = torch.randint(0, 3, (2, 64, 64))
    labels[:, :20] = 255
    output = model(pixel_values=pixel_values, labels=labels)
    valid = labels != 255
    log_probabilities = output.logits.detach().log_softmax(dim=1)
    by_hand = -log_probabilities.permute(0, 2, 3, 1)[valid].gather(1, labels[valid][:, None]).mean()
    torch.testing.assert_close(output.loss.detach(), by_hand)
    torch.testing.assert_close(
        output.loss.detach(), F.cross_entropy(output.logits.detach(), labels, ignore_index=255)
    )
    # The logits of ignored pixels get no gradient; the others do.
    (gradient,) = torch.autograd.grad(output.loss, output.logits)
    assert gradient.permute(0, 2, 3, 1)[~valid].abs().max() == 0
    assert gradient.permute(0, 2, 3, 1)[valid].abs().sum() > 0


def test_dataset_turns_nodata_into_the_ignore_label():
    from datasets import Dataset

    from di3cl_hf import DI3CLImageProcessor

    image = np.full((2, 64, 64), -10.0, dtype=np.float32)
    image[:, :8, :8] = np.nan
    rows = Dataset.from_dict({"index": [0]}).with_transform(
        lambda batch: {"image": [image], "label": [np.ones((64, 64), dtype=np.int64)]}
    )
    sample = SegmentationDataset(rows, DI3CLImageProcessor(num_channels=2))[0]
    assert sample["pixel_values"].shape == (2, 64, 64)
    assert (sample["labels"][:8, :8] == 255).all()
    assert (sample["labels"][8:, 8:] == 1).all()
    assert torch.isfinite(sample["pixel_values"]).all()
    cropped = SegmentationDataset(rows, DI3CLImageProcessor(num_channels=2), crop_size=32, train=True)[0]
    assert cropped["pixel_values"].shape == (2, 32, 32) and cropped["labels"].shape == (32, 32)


def test_frozen_and_linear_modes_train_only_the_heads(tiny_config):
    from di3cl_hf import DI3CLForSemanticSegmentation

    model = DI3CLForSemanticSegmentation(tiny_config(num_labels=4))
    network = configure_trainable(model, "frozen")
    assert network is model
    assert not any(p.requires_grad for p in model.base_model.parameters())
    assert all(p.requires_grad for p in model.decode_head.parameters())
    probe = configure_trainable(model, "linear")
    trainable = {name for name, p in probe.named_parameters() if p.requires_grad}
    assert trainable == {"head.classifier.weight", "head.classifier.bias"}
    output = probe(pixel_values=torch.randn(2, 2, 64, 64), labels=torch.randint(0, 4, (2, 64, 64)))
    assert output.logits.shape == (2, 4, 64, 64)
    output.loss.backward()
    assert probe.head.classifier.weight.grad is not None


def test_kmeans_grid_table_and_curves(segmentation_dir, tiny_config, tmp_path):
    from di3cl_hf import DI3CLImageProcessor, DI3CLModel
    from di3cl_hf.data.segmentation import load_segmentation

    splits = load_segmentation(segmentation_dir, task="landcover")
    torch.manual_seed(0)
    scores = evaluate_kmeans(
        DI3CLModel(tiny_config()).eval(),
        DI3CLImageProcessor(num_channels=2),
        splits["train"],
        splits["test"],
        LANDCOVER,
        num_clusters=4,
        stage="stage2",
        max_fit_pixels=500,
    )
    assert 0.0 <= scores["miou"] <= 1.0 and scores["num_pixels"] == 64 * 64
    assert len(scores["cluster_to_class"]) == 4

    fake = {
        "overall_accuracy": 0.8,
        "kappa": 0.7,
        "miou": 0.5,
        "mean_f1": 0.6,
        "per_class": {"water": {"f1": 0.9}},
        "num_train_samples": 2,
    }
    summary = {
        "results": {"water": {"di3cl": {"0.01": fake, "0.1": fake}, "random": {"0.01": fake, "0.1": fake}}},
        "kmeans": {"water": {"di3cl": {**fake, "num_clusters": 2}}},
        "data": "synthetic",
    }
    text = grid_markdown(summary)
    assert "| water | 1 % | di3cl | 2 | 1 | 80.00 | 70.00 | 50.00 | 60.00 | – |" in text
    assert "| water | 0 (k-means, 2 clusters) | di3cl | 0 | 1 | 80.00 |" in text
    # Two seeds: means with the spread.
    second = {**fake, "miou": 0.7, "per_class": {"water": {"f1": 0.5, "iou": 0.4}}, "seed": 1}
    averaged = mean_scores([{**fake, "per_class": {"water": {"f1": 0.9, "iou": 0.8}}, "seed": 0}, second])
    assert averaged["miou"] == pytest.approx(0.6) and averaged["std"]["miou"] == pytest.approx(0.1)
    assert averaged["per_class"]["water"]["f1"] == pytest.approx(0.7)
    summary["results"]["water"]["random"]["0.1"] = averaged
    assert "| water | 10 % | random | 2 | 2 | 80.00 ± 0.00 | 70.00 ± 0.00 | 60.00 ± 10.00 |" in grid_markdown(
        summary
    )
    path = plot_label_efficiency(summary, tmp_path / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="needs --pretrained_model"):
        EvaluationGridArguments(data_dir="x", output_dir="y")


def test_command_line_parsing_and_help():
    from transformers import HfArgumentParser

    from di3cl_hf.training.evaluation import parse_grid_args
    from di3cl_hf.training.finetuning import parse_args

    for arguments in (FinetuneArguments, EvaluationGridArguments):
        assert "--label_fraction" in HfArgumentParser(arguments).format_help()
    args = parse_args(
        ["--data_dir", "d", "--output_dir", "o", "--init", "random", "--label_fraction", "0.01"]
    )
    # issue #13: the default never picks emulated bf16 (auto = bf16 only where it is native)
    assert (args.init, args.label_fraction, args.mixed_precision) == ("random", 0.01, "auto")
    grid = parse_grid_args(
        ["--data_dir", "d", "--output_dir", "o", "--initialisations", "random", "--seeds", "0", "1"]
    )
    assert grid.seeds == [0, 1] and grid.label_fractions == [0.01, 0.1]
    with pytest.raises(ValueError, match="needs --model_name_or_path"):
        parse_args(["--data_dir", "d", "--output_dir", "o"])


def test_imagenet_initialisation_from_a_local_timm_file(tmp_path):
    """A local timm ResNet file fills the encoder (conv1 adapted to 2 channels); a foreign file is refused."""
    import timm
    from safetensors.torch import save_file

    from di3cl_hf import DI3CLConfig, DI3CLForSemanticSegmentation
    from di3cl_hf.training.finetuning import load_imagenet_weights

    reference = timm.create_model("resnet18", pretrained=False)
    weights = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(weights))
    model = DI3CLForSemanticSegmentation(DI3CLConfig(backbone="resnet18", num_channels=2, num_labels=3))
    missing = load_imagenet_weights(model, weights)
    assert missing == []
    encoder = model.di3cl.encoder
    torch.testing.assert_close(
        encoder.layer4[1].conv2.weight, reference.layer4[1].conv2.weight, rtol=0, atol=0
    )
    assert encoder.conv1.weight.shape[1] == 2
    foreign = tmp_path / "foreign.safetensors"
    save_file({"something.weight": torch.zeros(3)}, str(foreign))
    with pytest.raises(ValueError, match="foreign.safetensors: no tensor matches the resnet18 encoder"):
        load_imagenet_weights(model, foreign)


def test_foreground_crops_find_a_rare_class():
    """With foreground_crop_probability=1 every training crop holds the one water pixel-block of a large tile;
    with 0 most uniform crops miss it; out-of-range probabilities are refused."""
    from datasets import Dataset

    from di3cl_hf import DI3CLImageProcessor

    label = np.zeros((256, 256), dtype=np.int64)
    label[200:204, 10:14] = 1  # 16 water pixels in 65,536
    label[:4, :4] = 255  # ignored pixels never count as foreground
    image = np.full((1, 256, 256), -10.0, dtype=np.float32)
    rows = Dataset.from_dict({"index": [0]}).with_transform(
        lambda batch: {"image": [image], "label": [label]}
    )
    processor = DI3CLImageProcessor(num_channels=1)

    def water_crops(probability: float) -> int:
        torch.manual_seed(0)
        data = SegmentationDataset(
            rows, processor, crop_size=32, train=True, foreground_crop_probability=probability
        )
        return sum(int((data[0]["labels"] == 1).any()) for _ in range(40))

    assert water_crops(1.0) == 40
    assert water_crops(0.0) < 10  # a uniform 32² crop holds the block with probability (35 × 14) / 225² ≈ 1 %
    assert 10 < water_crops(0.5) < 40
    with pytest.raises(ValueError, match="foreground_crop_probability"):
        SegmentationDataset(rows, processor, crop_size=32, train=True, foreground_crop_probability=1.5)
    with pytest.raises(ValueError, match="foreground_crop_probability"):  # refused before any data is read
        FinetuneArguments(
            data_dir="unused", output_dir="unused", init="random", foreground_crop_probability=-0.1
        )
