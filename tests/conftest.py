"""Shared pytest fixtures."""

from __future__ import annotations

import os

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
