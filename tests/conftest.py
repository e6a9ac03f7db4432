"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# The tests use tiny tensors on a shared machine: several intra-op threads only contend with each other
# (measured here: a tiny resnet18 step takes ~15x longer with 2 threads on a loaded 2-core machine than with 1).
torch.set_num_threads(int(os.environ.get("DI3CL_TEST_THREADS", "1")))

TINY_CONFIG = {
    "backbone": "resnet18",
    "num_channels": 2,
    "image_size": 64,
    "projection_dim": 16,
    "projection_hidden_dim": 64,
    "queue_size": 64,
    "decoder_hidden_size": 32,
    "auxiliary_channels": 16,
}


@pytest.fixture
def tiny_config():
    """Factory of tiny `DI3CLConfig`s (resnet18, 64 px, queue 64, hidden 64); keyword arguments override."""
    from di3cl_hf import DI3CLConfig

    def make(**overrides):
        return DI3CLConfig(**{**TINY_CONFIG, **overrides})

    return make


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny 2-channel land/water segmentation model with a dB processor (seed 0)."""
    from di3cl_hf import DI3CLConfig, DI3CLForSemanticSegmentation, DI3CLImageProcessor

    folder = tmp_path_factory.mktemp("water-model")
    torch.manual_seed(0)
    config = DI3CLConfig(
        backbone="resnet18", num_channels=2, num_labels=2, decoder_hidden_size=16, auxiliary_channels=16,
        id2label={0: "land", 1: "water"}, label2id={"land": 0, "water": 1},
    )  # fmt: skip
    DI3CLForSemanticSegmentation(config).eval().save_pretrained(folder)
    DI3CLImageProcessor(num_channels=2, input_kind="db").save_pretrained(folder)
    return folder
