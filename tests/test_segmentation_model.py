"""DI3CLForSemanticSegmentation: UperNet head shapes, losses, batch of one, loading from pre-training folders."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForSemanticSegmentation
from transformers.modeling_outputs import SemanticSegmenterOutput

from di3cl_hf import DI3CLConfig, DI3CLForPreTraining, DI3CLForSemanticSegmentation
from di3cl_hf.modeling_di3cl import dice_loss


@pytest.mark.parametrize(
    ("backbone", "num_channels", "size"),
    [
        ("resnet18", 1, (64, 64)),
        ("resnet18", 2, (72, 88)),
        ("resnet34", 3, (64, 96)),
        ("resnet50", 2, (64, 64)),
    ],
)
def test_logits_at_input_resolution(tiny_config, backbone, num_channels, size):
    model = DI3CLForSemanticSegmentation(
        tiny_config(backbone=backbone, num_channels=num_channels, num_labels=4)
    )
    model.eval()
    with torch.no_grad():
        outputs = model(torch.randn(2, num_channels, *size))
    assert isinstance(outputs, SemanticSegmenterOutput)
    assert outputs.logits.shape == (2, 4, *size)
    assert outputs.loss is None and torch.isfinite(outputs.logits).all()


def test_training_step_with_a_batch_of_one(tiny_config):
    model = DI3CLForSemanticSegmentation(tiny_config(num_labels=3)).train()
    labels = torch.randint(0, 3, (1, 64, 64))
    outputs = model(torch.randn(1, 2, 64, 64), labels=labels)
    outputs.loss.backward()
    assert torch.isfinite(outputs.loss)
    assert model.decode_head.classifier.weight.grad is not None
    assert model.auxiliary_head.classifier.weight.grad is not None
    assert model.di3cl.encoder.conv1.weight.grad is not None


def test_loss_is_cross_entropy_plus_weighted_auxiliary(tiny_config):
    model = DI3CLForSemanticSegmentation(tiny_config(num_labels=3)).eval()
    pixel_values = torch.randn(2, 2, 64, 64)
    labels = torch.randint(0, 3, (2, 64, 64))
    with torch.no_grad():
        outputs = model(pixel_values, labels=labels, output_hidden_states=True)
        features = list(outputs.hidden_states[1:])
        auxiliary = F.interpolate(
            model.auxiliary_head(features), size=(64, 64), mode="bilinear", align_corners=False
        )
    expected = F.cross_entropy(outputs.logits, labels) + 0.4 * F.cross_entropy(auxiliary, labels)
    torch.testing.assert_close(outputs.loss, expected)


def test_ignore_index_is_ignored(tiny_config):
    model = DI3CLForSemanticSegmentation(tiny_config(num_labels=3, use_auxiliary_head=False)).eval()
    pixel_values = torch.randn(2, 2, 64, 64)
    labels = torch.randint(0, 3, (2, 64, 64))
    labels[:, :20] = 255
    with torch.no_grad():
        loss = model(pixel_values, labels=labels).loss
        logits = model(pixel_values).logits
        all_ignored = model(pixel_values, labels=torch.full((2, 64, 64), 255)).loss
    valid = labels != 255
    manual = F.cross_entropy(logits.permute(0, 2, 3, 1)[valid], labels[valid])
    torch.testing.assert_close(loss, manual)
    # The ignored rows, labelled with a real class instead, would change the loss.
    assert not torch.isclose(F.cross_entropy(logits, labels.clamp(max=2)), manual)
    assert all_ignored.item() == 0.0


def test_custom_ignore_index_and_dice(tiny_config):
    model = DI3CLForSemanticSegmentation(
        tiny_config(
            num_labels=2,
            semantic_loss_ignore_index=-100,
            segmentation_loss="ce+dice",
            use_auxiliary_head=False,
        )
    ).eval()
    pixel_values = torch.randn(1, 2, 64, 64)
    labels = torch.randint(0, 2, (1, 64, 64))
    labels[0, 0] = -100
    with torch.no_grad():
        logits = model(pixel_values).logits
        loss = model(pixel_values, labels=labels).loss
    expected = F.cross_entropy(logits, labels, ignore_index=-100) + dice_loss(logits, labels, -100)
    torch.testing.assert_close(loss, expected)


def test_dice_loss_analytic_values():
    labels = torch.tensor([[[0, 1], [1, 255]]])
    perfect = F.one_hot(labels.clamp(max=1), 2).permute(0, 3, 1, 2).float() * 100.0
    assert dice_loss(perfect, labels, 255).item() == pytest.approx(0.0, abs=1e-6)
    wrong = -perfect
    # class 0: |P|=2 (two wrong pixels predicted 0), |T|=1, overlap 0 -> 1/(3+1); class 1: |P|=1, |T|=2 -> 1/4.
    assert dice_loss(wrong, labels, 255).item() == pytest.approx(1.0 - 0.25, abs=1e-6)


def test_from_pretraining_folder_loads_the_encoder_and_new_heads(tiny_config, tmp_path):
    pretraining = DI3CLForPreTraining(tiny_config()).eval()
    pretraining.save_pretrained(tmp_path / "pretraining")
    id2label = {0: "water", 1: "forest", 2: "city"}
    model = DI3CLForSemanticSegmentation.from_pretrained(
        tmp_path / "pretraining",
        num_labels=3,
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    assert model.config.id2label == id2label and model.decode_head.classifier.out_channels == 3
    for key, value in pretraining.di3cl.state_dict().items():
        torch.testing.assert_close(model.di3cl.state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_save_load_is_exact(tiny_config, tmp_path, assert_reload_is_exact):
    model = DI3CLForSemanticSegmentation(tiny_config(num_labels=5, segmentation_loss="ce+dice")).train()
    model(
        torch.randn(2, 2, 64, 64), labels=torch.randint(0, 5, (2, 64, 64))
    ).loss.backward()  # move BN statistics
    model.eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSemanticSegmentation.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert type(loaded) is DI3CLForSemanticSegmentation
    assert_reload_is_exact(model, loaded, torch.randn(2, 2, 64, 64))


def test_pixel_classifiers_start_small_also_when_reinitialised_by_from_pretrained(tmp_path):
    """New per-pixel classifiers get N(0, 0.01) and zero bias, so the first softmax is not saturated."""
    config = DI3CLConfig(backbone="resnet18", num_labels=3, decoder_hidden_size=32, auxiliary_channels=16)
    model = DI3CLForSemanticSegmentation(config)
    for classifier in (model.decode_head.classifier, model.auxiliary_head.classifier):
        assert 0.005 < classifier.weight.std().item() < 0.015
        assert torch.count_nonzero(classifier.bias) == 0
    model.save_pretrained(tmp_path)
    grown = DI3CLForSemanticSegmentation.from_pretrained(
        tmp_path, num_labels=5, ignore_mismatched_sizes=True, dtype=torch.float32
    )
    assert 0.005 < grown.decode_head.classifier.weight.std().item() < 0.015
    torch.testing.assert_close(
        grown.di3cl.encoder.conv1.weight, model.di3cl.encoder.conv1.weight, rtol=0, atol=0
    )
