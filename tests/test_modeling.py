"""DI3CLModel and DI3CLBackbone: shapes, stages, Auto classes, save/load equality."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoBackbone, AutoModel
from transformers.backbone_utils import load_backbone

from di3cl_hf import DI3CLBackbone, DI3CLForPreTraining, DI3CLModel

WIDTHS = {"resnet18": [64, 64, 128, 256, 512], "resnet50": [64, 256, 512, 1024, 2048]}


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])
@pytest.mark.parametrize("num_channels", [1, 2, 3])
def test_model_output_shapes(tiny_config, backbone, num_channels):
    model = DI3CLModel(tiny_config(backbone=backbone, num_channels=num_channels)).eval()
    pixel_values = torch.randn(2, num_channels, 64, 96)
    with torch.no_grad():
        outputs = model(pixel_values, output_hidden_states=True)
    widths = WIDTHS[backbone]
    assert outputs.last_hidden_state.shape == (2, widths[-1], 2, 3)
    assert outputs.pooler_output.shape == (2, widths[-1])
    torch.testing.assert_close(outputs.pooler_output, outputs.last_hidden_state.mean(dim=(2, 3)))
    assert len(outputs.hidden_states) == 5
    for hidden_state, width, stride in zip(outputs.hidden_states, widths, [2, 4, 8, 16, 32], strict=True):
        assert hidden_state.shape == (2, width, 64 // stride, 96 // stride)
    assert model.num_features == widths
    assert model(pixel_values).hidden_states is None


def test_wrong_channel_count_is_refused(tiny_config):
    model = DI3CLModel(tiny_config(num_channels=2))
    with pytest.raises(ValueError, match=r"expected \[batch, 2, height, width\]"):
        model(torch.randn(1, 3, 64, 64))


def test_return_tuple(tiny_config):
    model = DI3CLModel(tiny_config()).eval()
    last, pooled = model(torch.randn(1, 2, 64, 64), return_dict=False)
    assert last.shape == (1, 512, 2, 2) and pooled.shape == (1, 512)


def test_bf16_autocast_and_channels_last(tiny_config):
    model = DI3CLModel(tiny_config()).eval().to(memory_format=torch.channels_last)
    pixel_values = torch.randn(2, 2, 64, 64).to(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(pixel_values)
    assert outputs.last_hidden_state.dtype == torch.bfloat16
    assert torch.isfinite(outputs.pooler_output.float()).all()


def test_model_save_load_is_exact(tiny_config, tmp_path):
    model = DI3CLModel(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert type(loaded) is DI3CLModel
    pixel_values = torch.randn(2, 2, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(pixel_values).last_hidden_state, model(pixel_values).last_hidden_state, rtol=0, atol=0
        )


def test_model_from_pretraining_folder_is_the_query_encoder(tiny_config, tmp_path):
    pretraining = DI3CLForPreTraining(tiny_config()).eval()
    pretraining.save_pretrained(tmp_path)
    encoder = DI3CLModel.from_pretrained(tmp_path, dtype=torch.float32).eval()
    pixel_values = torch.randn(2, 2, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            encoder(pixel_values).last_hidden_state,
            pretraining.di3cl(pixel_values).last_hidden_state,
            rtol=0,
            atol=0,
        )


def test_backbone_feature_maps_and_channels(tiny_config):
    config = tiny_config(out_features=["stage1", "stage2", "stage3", "stage4"])
    backbone = DI3CLBackbone(config).eval()
    assert backbone.channels == [64, 128, 256, 512]
    with torch.no_grad():
        outputs = backbone(torch.randn(2, 2, 64, 64))
    assert [tuple(f.shape) for f in outputs.feature_maps] == [
        (2, 64, 16, 16),
        (2, 128, 8, 8),
        (2, 256, 4, 4),
        (2, 512, 2, 2),
    ]
    assert outputs.hidden_states is None


def test_backbone_through_auto_backbone_and_load_backbone(tiny_config):
    config = tiny_config(out_indices=[2, 4])
    for backbone in (AutoBackbone.from_config(config), load_backbone(config)):
        assert isinstance(backbone, DI3CLBackbone)
        assert backbone.out_features == ["stage2", "stage4"]
        assert backbone.channels == [128, 512]


def test_backbone_from_pretraining_folder(tiny_config, tmp_path):
    pretraining = DI3CLForPreTraining(tiny_config()).eval()
    pretraining.save_pretrained(tmp_path)
    backbone = DI3CLBackbone.from_pretrained(tmp_path, dtype=torch.float32, out_features=["stage3", "stage4"])
    pixel_values = torch.randn(1, 2, 64, 64)
    with torch.no_grad():
        features = backbone.eval()(pixel_values).feature_maps
        reference = pretraining.di3cl(pixel_values, output_hidden_states=True).hidden_states
    torch.testing.assert_close(features[0], reference[3], rtol=0, atol=0)
    torch.testing.assert_close(features[1], reference[4], rtol=0, atol=0)
