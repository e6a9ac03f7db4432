"""di3cl_hf.loading: corrupt weights and processor/model channel mismatches are clear errors of ours, found
when the model is loaded (issue 16)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from di3cl_hf import DI3CLConfig, DI3CLForSemanticSegmentation
from di3cl_hf.image_processing_di3cl import DI3CLImageProcessor
from di3cl_hf.loading import (
    ChannelMismatchError,
    CorruptWeightsError,
    check_channels,
    load_model_and_processor,
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    config = DI3CLConfig(
        backbone="resnet18", num_channels=2, num_labels=2, decoder_hidden_size=16, auxiliary_channels=16
    )
    DI3CLForSemanticSegmentation(config).eval().save_pretrained(folder)
    DI3CLImageProcessor(num_channels=2).save_pretrained(folder)
    return folder


def _copy(folder: Path, target: Path) -> Path:
    target.mkdir()
    for path in folder.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


def test_loads_model_and_processor(model_dir: Path) -> None:
    model, processor = load_model_and_processor(model_dir)
    assert isinstance(model, DI3CLForSemanticSegmentation) and not model.training
    assert processor.num_channels == model.config.num_channels == 2


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "data-cut"])
def test_corrupt_safetensors_is_a_clear_error_naming_the_file(
    model_dir: Path, tmp_path: Path, damage: str
) -> None:
    folder = _copy(model_dir, tmp_path / "model")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    header = 8 + int.from_bytes(data[:8], "little")
    weights.write_bytes(
        {"truncated": data[:100], "garbage": b"not a safetensors file " * 40, "empty": b"",
         "data-cut": data[: header + 64]}[damage]
    )  # fmt: skip
    with pytest.raises(CorruptWeightsError, match="model.safetensors") as error:
        load_model_and_processor(folder)
    assert str(weights) in str(error.value) and "corrupt or incomplete" in str(error.value)
    assert isinstance(error.value, ValueError)  # `di3cl` prints ValueErrors as one line


def test_channel_mismatch_is_found_when_loading(model_dir: Path, tmp_path: Path) -> None:
    folder = _copy(model_dir, tmp_path / "model")
    DI3CLImageProcessor(num_channels=1).save_pretrained(folder)
    with pytest.raises(ChannelMismatchError, match=r"prepares 1 channel\(s\) but the model takes 2"):
        load_model_and_processor(folder)
    (folder / "preprocessor_config.json").unlink()  # the default processor follows the model
    assert load_model_and_processor(folder)[1].num_channels == 2
    model, _ = load_model_and_processor(model_dir)
    check_channels(model, DI3CLImageProcessor(num_channels=2))
    check_channels(torch.nn.Conv2d(2, 2, 1), DI3CLImageProcessor(num_channels=1))  # no config: not checked
