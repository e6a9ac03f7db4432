"""Shared pytest fixtures: tiny configs and a saved tiny model, a clean Accelerate state, and the exact
save/load check of task models."""

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


@pytest.fixture()
def fresh_accelerate():
    """Accelerate keeps process-wide singletons; reset them around each in-process training run."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def _assert_reload_is_exact(
    model: torch.nn.Module, loaded: torch.nn.Module, pixel_values: torch.Tensor
) -> None:
    """``loaded`` (from ``model.save_pretrained``) holds the trained tensors bit for bit and computes the same
    logits as ``model`` (both in eval mode)."""
    saved = loaded.state_dict()
    assert set(saved) == set(model.state_dict())
    for key, value in model.state_dict().items():  # the files hold the trained tensors bit for bit
        assert torch.equal(saved[key], value), key
    # Tensors that from_pretrained reads from safetensors sit at the file's offsets (not 64-byte aligned), and
    # oneDNN/MKL sum in another order (~1e-7 apart) for unaligned weights; in fresh memory the outputs are exact.
    with torch.no_grad():
        for tensor in [*loaded.parameters(), *loaded.buffers()]:
            tensor.data = tensor.data.clone()
        torch.testing.assert_close(loaded(pixel_values).logits, model(pixel_values).logits, rtol=0, atol=0)


@pytest.fixture
def assert_reload_is_exact():
    """The exact save/load check: ``assert_reload_is_exact(model, loaded, pixel_values)``."""
    return _assert_reload_is_exact
