"""Converter of the original DI3CL release checkpoints (docs/method.md#release-checkpoints)."""

from __future__ import annotations

import argparse

import pytest
import torch

from di3cl_hf import DI3CLForPreTraining, DI3CLModel
from di3cl_hf.cli.convert import register
from di3cl_hf.hub.convert import (
    BUFFER_NAMES,
    KEY_PREFIXES,
    CheckpointConversionError,
    config_from_original,
    convert_original_checkpoint,
)


def release_state_dict(model: DI3CLForPreTraining) -> dict[str, torch.Tensor]:
    """The model's tensors under the release's names (DDP `module.` prefix included)."""
    inverse_prefixes = {new: old for old, new in KEY_PREFIXES.items()}
    inverse_buffers = {new: old for old, new in BUFFER_NAMES.items()}
    state_dict = {}
    for key, value in model.state_dict().items():
        if key == "queue_ids":  # ours only: the release does not record the queued keys' samples
            continue
        if key in inverse_buffers:
            name = inverse_buffers[key]
        else:
            prefix = next(new for new in inverse_prefixes if key.startswith(new))
            name = inverse_prefixes[prefix] + key[len(prefix) :]
        state_dict[f"module.{name}"] = value.clone()
    return state_dict


def write_release_checkpoint(path, state_dict, arch="resnet18"):
    optimizer = {
        "state": {},
        "param_groups": [{"lr": 0.03, "momentum": 0.9, "weight_decay": 1e-4, "params": [0]}],
    }
    torch.save({"epoch": 3, "arch": arch, "state_dict": state_dict, "optimizer": optimizer}, path)


@pytest.fixture
def reference(tiny_config):
    model = DI3CLForPreTraining(tiny_config(num_channels=3)).train()
    batch = torch.randn(4, 3, 64, 64)
    model(batch, torch.randn(4, 3, 64, 64))  # non-trivial queues, pointer, BN statistics, distinct twins
    with torch.no_grad():
        for parameter in model.momentum_global_projector.parameters():
            parameter.add_(0.01)
    return model.eval()


def run_cli(*argv):
    parser = argparse.ArgumentParser(prog="di3cl")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_round_trip_gives_identical_features(reference, tmp_path):
    checkpoint = tmp_path / "checkpoint_0003.pth.tar"
    state_dict = release_state_dict(reference)
    assert all(key.startswith("module.") for key in state_dict)
    assert "module.local_queue" in state_dict and "module.encoder_k.low_projector.net.2.bias" in state_dict
    write_release_checkpoint(checkpoint, state_dict)
    assert run_cli("convert-original", str(checkpoint), str(tmp_path / "converted")) == 0

    converted = DI3CLForPreTraining.from_pretrained(tmp_path / "converted", dtype=torch.float32).eval()
    assert converted.config.backbone == "resnet18" and converted.config.num_channels == 3
    assert converted.config.queue_size == 64 and converted.config.projection_dim == 16
    expected_state = reference.state_dict()
    for key, value in converted.state_dict().items():
        torch.testing.assert_close(value, expected_state[key], rtol=0, atol=0, msg=key)

    pixel_values = torch.randn(2, 3, 64, 64)
    key_pixel_values = torch.randn(2, 3, 64, 64)
    boxes = torch.tensor([[0.0, 0.0, 0.0, 40.0, 40.0], [1.0, 10.0, 5.0, 60.0, 64.0]])
    encoder = DI3CLModel.from_pretrained(tmp_path / "converted", dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            encoder(pixel_values).last_hidden_state,
            reference.di3cl(pixel_values).last_hidden_state,
            rtol=0,
            atol=0,
        )
        expected = reference(pixel_values, key_pixel_values, boxes, boxes)
        actual = converted(pixel_values, key_pixel_values, boxes, boxes)
    for name in ("loss", "global_logits", "contour_logits", "instance_loss"):
        torch.testing.assert_close(getattr(actual, name), getattr(expected, name), rtol=0, atol=0)
    assert not any(
        path.name.startswith(".") for path in tmp_path.iterdir()
    )  # no temporary folder left behind


@pytest.mark.parametrize(
    ("backbone", "num_channels"), [("resnet18", 3), ("resnet34", 3), ("resnet50", 3), ("resnet101", 1)]
)
def test_depth_and_sizes_are_detected(tiny_config, backbone, num_channels):
    from di3cl_hf.modeling_di3cl import build_encoder

    config = tiny_config(backbone=backbone, num_channels=num_channels)
    encoder = build_encoder(config)
    state_dict = {f"encoder_q.encoder.{key}": value for key, value in encoder.state_dict().items()}
    width = encoder.feature_info.channels()[-1]
    state_dict["encoder_q.global_projector.net.0.weight"] = torch.zeros(48, width)
    state_dict["encoder_q.global_projector.net.2.weight"] = torch.zeros(24, 48)
    state_dict["global_queue"] = torch.zeros(24, 96)
    inferred = config_from_original(state_dict)
    assert inferred.backbone == backbone and inferred.num_channels == num_channels
    assert (inferred.projection_hidden_dim, inferred.projection_dim, inferred.queue_size) == (48, 24, 96)


def test_unknown_key_is_refused(reference, tmp_path):
    state_dict = release_state_dict(reference)
    state_dict["module.encoder_q.encoder.fc.weight"] = torch.zeros(10, 512)
    state_dict["module.extra_head.weight"] = torch.zeros(1)
    checkpoint = tmp_path / "bad.pth"
    write_release_checkpoint(checkpoint, state_dict)
    with pytest.raises(CheckpointConversionError, match=r"bad\.pth: .*extra_head\.weight"):
        convert_original_checkpoint(checkpoint)


def test_missing_key_is_refused(reference, tmp_path):
    state_dict = release_state_dict(reference)
    del state_dict["module.local_predictor.net.3.bias"]
    del state_dict["module.local_queue"]
    checkpoint = tmp_path / "incomplete.pth"
    write_release_checkpoint(checkpoint, state_dict)
    with pytest.raises(CheckpointConversionError, match=r"incomplete\.pth: 2 tensor\(s\).*contour_queue"):
        convert_original_checkpoint(checkpoint)


def test_arbitrary_pickles_are_refused(tmp_path):
    checkpoint = tmp_path / "pickle.pth"
    torch.save(
        {"state_dict": {"global_queue": torch.zeros(2, 2)}, "args": argparse.Namespace(lr=0.1)}, checkpoint
    )
    with pytest.raises(CheckpointConversionError, match="weights-only"):
        convert_original_checkpoint(checkpoint)
    with pytest.raises(FileNotFoundError):
        convert_original_checkpoint(tmp_path / "absent.pth")


def test_conv1_adapted_to_one_channel(reference, tmp_path):
    checkpoint = tmp_path / "release.pth"
    write_release_checkpoint(checkpoint, release_state_dict(reference))
    model = convert_original_checkpoint(checkpoint, num_channels=1)
    assert model.config.num_channels == 1
    expected = reference.di3cl.encoder.conv1.weight.sum(dim=1, keepdim=True)
    torch.testing.assert_close(model.di3cl.encoder.conv1.weight, expected)
    torch.testing.assert_close(
        model.momentum_encoder.conv1.weight, reference.momentum_encoder.conv1.weight.sum(1, True)
    )


def test_existing_output_needs_overwrite(reference, tmp_path):
    checkpoint = tmp_path / "release.pth"
    write_release_checkpoint(checkpoint, release_state_dict(reference))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "old.txt").write_text("previous run")
    with pytest.raises(FileExistsError, match="overwrite"):
        run_cli("convert-original", str(checkpoint), str(out_dir))
    assert run_cli("convert-original", str(checkpoint), str(out_dir), "--overwrite") == 0
    assert (out_dir / "model.safetensors").is_file() and not (out_dir / "old.txt").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out", "release.pth"]


def test_console_command(reference, tmp_path):
    cli = pytest.importorskip("di3cl_hf.cli")
    checkpoint = tmp_path / "release.pth"
    write_release_checkpoint(checkpoint, release_state_dict(reference))
    assert cli.main(["convert-original", str(checkpoint), str(tmp_path / "converted")]) == 0
    assert (tmp_path / "converted" / "config.json").is_file()
    assert cli.main(["convert-original", str(tmp_path / "absent.pth"), str(tmp_path / "other")]) == 1
