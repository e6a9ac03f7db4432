"""DI3CLConfig: defaults, validation, backbone stages, serialisation."""

from __future__ import annotations

import pytest
from transformers import AutoConfig

from di3cl_hf import DI3CLConfig


def test_defaults_follow_the_method():
    config = DI3CLConfig()
    assert config.model_type == "di3cl"
    assert config.backbone == "resnet50"
    assert config.num_channels == 2
    assert (config.image_size, config.projection_dim, config.projection_hidden_dim) == (448, 128, 2048)
    assert (config.queue_size, config.momentum, config.temperature) == (65536, 0.999, 0.2)
    assert (config.global_loss_weight, config.contour_loss_weight, config.instance_loss_weight) == (
        0.8,
        0.2,
        5.0,
    )
    assert (config.boxes_per_image, config.min_box_size, config.box_iou_threshold) == (10, 32, 0.5)
    assert (config.box_sampling, config.box_jitter) == ("grid", 0.0)
    assert config.stage_names == ["stem", "stage1", "stage2", "stage3", "stage4"]
    assert config.out_features == ["stage4"] and config.out_indices == [4]
    assert config.semantic_loss_ignore_index == 255 and config.segmentation_loss == "ce"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"backbone": "no_such_cnn"},
        {"num_channels": 0},
        {"num_channels": 4},
        {"projection_dim": 0},
        {"projection_hidden_dim": -1},
        {"queue_size": 0},
        {"momentum": 1.5},
        {"momentum": -0.1},
        {"temperature": 0.0},
        {"global_loss_weight": -1.0},
        {"instance_loss_weight": -0.5},
        {"boxes_per_image": 0},
        {"min_box_size": 0},
        {"box_iou_threshold": 0.0},
        {"box_sampling": "random-walk"},
        {"box_jitter": 1.0},
        {"pool_scales": (0, 2)},
        {"segmentation_loss": "focal"},
        {"out_features": ["stage5"]},
        {"out_indices": [7]},
        {"out_features": ["stage4", "stage3"]},
        {"out_features": ["stage3"], "out_indices": [4]},
    ],
)
def test_invalid_values_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        DI3CLConfig(**kwargs)


def test_error_names_the_argument():
    with pytest.raises(ValueError, match="num_channels=5"):
        DI3CLConfig(num_channels=5)


def test_out_features_and_indices_are_aligned():
    config = DI3CLConfig(out_features=["stage1", "stage3"])
    assert config.out_indices == [1, 3]
    config = DI3CLConfig(out_indices=[0, -1])
    assert config.out_features == ["stem", "stage4"]
    config.out_features = ["stage2"]
    assert config.out_indices == [2]


def test_round_trip_through_json(tmp_path):
    config = DI3CLConfig(
        backbone="resnet18",
        num_channels=1,
        queue_size=128,
        out_features=["stage2", "stage4"],
        pool_scales=(1, 2),
        id2label={0: "water", 1: "land"},
        segmentation_loss="ce+dice",
    )
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, DI3CLConfig)
    for name in ("backbone", "num_channels", "queue_size", "out_features", "out_indices", "pool_scales"):
        assert getattr(loaded, name) == getattr(config, name), name
    assert loaded.id2label == {0: "water", 1: "land"} and loaded.num_labels == 2
    assert loaded.segmentation_loss == "ce+dice"


def test_auto_config_knows_di3cl():
    config = AutoConfig.for_model("di3cl", backbone="resnet34")
    assert isinstance(config, DI3CLConfig) and config.backbone == "resnet34"
