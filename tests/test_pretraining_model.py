"""DI3CLForPreTraining: outputs, gradients, EMA, queues, losses, edge-case batches, save/load."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForPreTraining

from di3cl_hf import DI3CLForPreTraining, DI3CLModel
from di3cl_hf.di3cl_layers import enqueue, info_nce_logits, info_nce_loss, regression_loss

BOXES = torch.tensor(
    [[0, 0, 0, 32, 32], [1, 8, 8, 56, 40], [2, 16, 0, 64, 48], [3, 0, 20, 30, 64]], dtype=torch.float32
)


def make_batch(num_channels=2, batch_size=4, num_boxes=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(batch_size, num_channels, 64, 64, generator=generator)
    key_pixel_values = torch.randn(batch_size, num_channels, 64, 64, generator=generator)
    query_boxes = BOXES[:num_boxes].clone()
    key_boxes = query_boxes.clone()
    key_boxes[:, 1:] = (key_boxes[:, 1:] + 4).clamp(max=64)
    return {
        "pixel_values": pixel_values,
        "key_pixel_values": key_pixel_values,
        "query_boxes": query_boxes,
        "key_boxes": key_boxes,
    }


@pytest.mark.parametrize(
    ("backbone", "num_channels"), [("resnet18", 1), ("resnet18", 2), ("resnet18", 3), ("resnet50", 2)]
)
def test_outputs(tiny_config, backbone, num_channels):
    config = tiny_config(backbone=backbone, num_channels=num_channels)
    model = DI3CLForPreTraining(config).train()
    outputs = model(**make_batch(num_channels))
    assert outputs.global_logits.shape == (4, 1 + config.queue_size)
    assert outputs.contour_logits.shape == (4, 1 + config.queue_size)
    assert int(outputs.num_boxes) == 4
    for name in (
        "loss",
        "global_loss",
        "contour_loss",
        "instance_loss",
        "global_accuracy",
        "contour_accuracy",
    ):
        value = getattr(outputs, name)
        assert value.ndim == 0 and value.dtype == torch.float32 and torch.isfinite(value), name
    expected = 0.8 * outputs.global_loss + 0.2 * outputs.contour_loss + 5.0 * outputs.instance_loss
    torch.testing.assert_close(outputs.loss.detach(), expected)
    assert list(outputs.keys())[0] == "loss"
    assert model.global_queue.shape == (16, 64) and model.contour_queue.shape == (16, 64)
    assert model.queue_ptr.dtype == torch.long


def test_momentum_twins_start_as_copies(tiny_config):
    model = DI3CLForPreTraining(tiny_config())
    pairs = model._momentum_pairs(include_buffers=True)
    assert len(pairs) > 0
    assert all(torch.equal(key, query) for key, query in pairs)
    columns = model.global_queue.norm(dim=0)
    torch.testing.assert_close(columns, torch.ones_like(columns))


def test_gradients_reach_every_query_parameter_and_no_key_parameter(tiny_config):
    model = DI3CLForPreTraining(tiny_config()).train()
    model(**make_batch()).loss.backward()
    for name, parameter in model.named_parameters():
        if name.startswith("momentum_"):
            assert not parameter.requires_grad and parameter.grad is None, name
        else:
            assert parameter.grad is not None, name
            assert torch.isfinite(parameter.grad).all(), name
            assert parameter.grad.abs().sum() > 0, name


def test_ema_update_matches_the_formula_exactly(tiny_config):
    momentum = 0.9
    model = DI3CLForPreTraining(tiny_config(momentum=momentum)).train()
    with torch.no_grad():  # make the twins differ so that the update is visible
        for key, _ in model._momentum_pairs():
            key.add_(torch.randn_like(key))
    pairs = model._momentum_pairs()
    keys_before = [key.clone() for key, _ in pairs]
    queries_before = [query.detach().clone() for _, query in pairs]
    key_buffers_before = [buffer.clone() for buffer in model.momentum_global_projector.buffers()]
    model(**make_batch())
    for (key, _), key_before, query_before in zip(pairs, keys_before, queries_before, strict=True):
        expected = torch.add(key_before * momentum, query_before, alpha=1 - momentum)
        torch.testing.assert_close(key, expected, rtol=0, atol=0)
        torch.testing.assert_close(key, momentum * key_before + (1 - momentum) * query_before)
    assert key_buffers_before == []  # the projectors without BatchNorm have no buffers
    # BN running statistics are not averaged: the key encoder's come from its own forward pass only.
    bn_key = model.momentum_encoder.bn1.running_mean
    bn_query = model.di3cl.encoder.bn1.running_mean
    assert not torch.equal(bn_key, momentum * torch.zeros_like(bn_key) + (1 - momentum) * bn_query)


def test_ema_happens_before_the_keys(tiny_config):
    # momentum 0: after the update the key side equals the query side, so identical views give cosine 1.
    model = DI3CLForPreTraining(tiny_config(momentum=0.0)).train()
    with torch.no_grad():
        for key, _ in model._momentum_pairs():
            key.add_(torch.randn_like(key))
    batch = make_batch()
    batch["key_pixel_values"] = batch["pixel_values"].clone()
    outputs = model(**batch)
    positives = outputs.global_logits[:, 0] * model.config.temperature
    torch.testing.assert_close(positives, torch.ones_like(positives), rtol=0, atol=1e-5)


def test_eval_mode_leaves_state_untouched(tiny_config):
    model = DI3CLForPreTraining(tiny_config()).eval()
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with torch.no_grad():
        model(**make_batch())
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name]), name


def test_enqueue_write_and_wrap_around_are_exact():
    queue_a = torch.zeros(3, 10)
    queue_b = torch.zeros(3, 10)
    pointer = torch.tensor([8])
    keys_a = torch.arange(12, dtype=torch.float32).view(4, 3)
    keys_b = -keys_a
    enqueue([queue_a, queue_b], [keys_a, keys_b], pointer)
    assert pointer.item() == 2
    assert torch.equal(queue_a[:, [8, 9, 0, 1]], keys_a.t())
    assert torch.equal(queue_b[:, [8, 9, 0, 1]], keys_b.t())
    assert torch.equal(queue_a[:, 2:8], torch.zeros(3, 6))
    with pytest.raises(ValueError, match="do not fit"):
        enqueue([queue_a], [torch.zeros(11, 3)], pointer)


def test_model_enqueues_its_keys_with_wrap_around(tiny_config):
    model = DI3CLForPreTraining(tiny_config()).train()
    model.queue_ptr.fill_(62)
    untouched = model.global_queue[:, 2:62].clone()
    batch = make_batch()
    model(**batch)
    assert model.queue_ptr.item() == 2
    with torch.no_grad():  # the keys again, from the updated key side (train-mode BN: batch statistics)
        maps = model.momentum_encoder(batch["key_pixel_values"])
        global_keys = F.normalize(model.momentum_global_projector(maps[4].mean(dim=(2, 3))), dim=1)
        contour_keys = F.normalize(model.momentum_contour_projector(maps[3].mean(dim=(2, 3))), dim=1)
    torch.testing.assert_close(model.global_queue[:, [62, 63, 0, 1]], global_keys.t(), rtol=0, atol=0)
    torch.testing.assert_close(model.contour_queue[:, [62, 63, 0, 1]], contour_keys.t(), rtol=0, atol=0)
    assert torch.equal(model.global_queue[:, 2:62], untouched)
    assert model.global_queue.dtype == torch.float32


def reference_info_nce(query, key, queue, temperature):
    losses = []
    for i in range(query.shape[0]):
        positive = math.exp(float(query[i] @ key[i]) / temperature)
        negatives = sum(math.exp(float(query[i] @ queue[:, j]) / temperature) for j in range(queue.shape[1]))
        losses.append(-math.log(positive / (positive + negatives)))
    return sum(losses) / len(losses)


def test_info_nce_equals_a_hand_written_reference():
    generator = torch.Generator().manual_seed(3)
    query = F.normalize(torch.randn(5, 8, generator=generator, dtype=torch.float64), dim=1)
    key = F.normalize(torch.randn(5, 8, generator=generator, dtype=torch.float64), dim=1)
    queue = F.normalize(torch.randn(8, 12, generator=generator, dtype=torch.float64), dim=0)
    loss, accuracy = info_nce_loss(info_nce_logits(query, key, queue, 0.2))
    assert loss.item() == pytest.approx(reference_info_nce(query, key, queue, 0.2), rel=1e-5)
    logits = torch.cat([(query * key).sum(1, keepdim=True), query @ queue], dim=1)
    assert accuracy.item() == pytest.approx((logits.argmax(1) == 0).double().mean().item())


def test_info_nce_analytic_values():
    num_negatives, temperature = 16, 0.2
    query = F.normalize(torch.randn(3, 8), dim=1)
    # Every negative equal to the positive: uniform softmax over K + 1 entries -> log(K + 1).
    queue = query[0:1].t().repeat(1, num_negatives)
    loss, _ = info_nce_loss(info_nce_logits(query[0:1], query[0:1], queue, temperature))
    assert loss.item() == pytest.approx(math.log(num_negatives + 1), rel=1e-6)
    # Negatives orthogonal to the query, positive identical: log(1 + K exp(-1 / T)).
    query = torch.eye(8)[:1]
    queue = torch.eye(8)[:, 1:].repeat(1, 3)[:, :num_negatives]
    loss, accuracy = info_nce_loss(info_nce_logits(query, query, queue, temperature))
    assert loss.item() == pytest.approx(math.log(1 + num_negatives * math.exp(-1 / temperature)), rel=1e-6)
    assert accuracy.item() == 1.0


def test_regression_loss_analytic_values():
    target = torch.randn(4, 8)
    assert regression_loss(target * 3.0, target).item() == pytest.approx(0.0, abs=1e-6)
    assert regression_loss(-target, target).item() == pytest.approx(4.0, abs=1e-6)
    orthogonal = torch.eye(8)[:2], torch.eye(8)[2:4]
    assert regression_loss(*orthogonal).item() == pytest.approx(2.0, abs=1e-6)


@pytest.mark.parametrize("num_boxes", [0, 1])
def test_one_box_and_zero_box_batches(tiny_config, num_boxes):
    model = DI3CLForPreTraining(tiny_config()).train()
    outputs = model(**make_batch(num_boxes=num_boxes))
    outputs.loss.backward()
    assert int(outputs.num_boxes) == num_boxes
    assert torch.isfinite(outputs.loss)
    for name, parameter in model.named_parameters():
        if parameter.grad is not None:
            assert torch.isfinite(parameter.grad).all(), name
    if num_boxes == 0:
        assert outputs.instance_loss.item() == 0.0
        assert all(
            p.grad is not None and p.grad.abs().sum() == 0 for p in model.instance_predictor.parameters()
        )
    else:
        assert outputs.instance_loss.item() > 0.0
        assert model.instance_projector.net[0].weight.grad.abs().sum() > 0


def test_boxes_may_be_omitted(tiny_config):
    model = DI3CLForPreTraining(tiny_config()).train()
    batch = make_batch()
    outputs = model(batch["pixel_values"], batch["key_pixel_values"])
    assert outputs.instance_loss.item() == 0.0 and int(outputs.num_boxes) == 0


def test_box_mismatch_is_refused(tiny_config):
    model = DI3CLForPreTraining(tiny_config())
    batch = make_batch()
    batch["key_boxes"] = batch["key_boxes"][:2]
    with pytest.raises(ValueError, match="pair up"):
        model(**batch)


def test_bf16_autocast_and_channels_last(tiny_config):
    model = DI3CLForPreTraining(tiny_config()).train().to(memory_format=torch.channels_last)
    batch = make_batch()
    for name in ("pixel_values", "key_pixel_values"):
        batch[name] = batch[name].to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(**batch)
    outputs.loss.backward()
    assert outputs.loss.dtype == torch.float32 and torch.isfinite(outputs.loss)
    assert outputs.global_logits.dtype == torch.float32
    assert model.global_queue.dtype == torch.float32 and model.contour_queue.dtype == torch.float32
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_save_load_is_exact(tiny_config, tmp_path):
    model = DI3CLForPreTraining(tiny_config()).train()
    model(**make_batch())  # move the queues, pointer and BN statistics away from their initial values
    model.eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert type(loaded) is DI3CLForPreTraining
    expected_state, loaded_state = model.state_dict(), loaded.state_dict()
    assert expected_state.keys() == loaded_state.keys()
    for name, tensor in expected_state.items():
        torch.testing.assert_close(loaded_state[name], tensor, rtol=0, atol=0, msg=name)
    assert not any(p.requires_grad for module in loaded._momentum_modules() for p in module.parameters())
    batch = make_batch(seed=1)
    with torch.no_grad():
        expected, actual = model(**batch), loaded(**batch)
    for name in ("loss", "global_logits", "contour_logits", "instance_loss"):
        torch.testing.assert_close(getattr(actual, name), getattr(expected, name), rtol=0, atol=0)


def test_pretraining_from_an_encoder_folder_copies_the_query_side(tiny_config, tmp_path):
    encoder = DI3CLModel(tiny_config())
    encoder.save_pretrained(tmp_path)
    model = DI3CLForPreTraining.from_pretrained(tmp_path, dtype=torch.float32)
    assert torch.equal(model.di3cl.encoder.conv1.weight, encoder.encoder.conv1.weight)
    assert all(torch.equal(key, query) for key, query in model._momentum_pairs(include_buffers=True))
    assert not any(p.requires_grad for p in model.momentum_encoder.parameters())


DISTRIBUTED_CHILD = """
import sys

import torch
import torch.distributed as dist

from di3cl_hf import DI3CLConfig, DI3CLForPreTraining

torch.set_num_threads(1)
rank, out = int(sys.argv[1]), sys.argv[2]
dist.init_process_group("gloo", rank=rank, world_size=2)
torch.manual_seed(0)  # same initial weights and queues on both processes
config = DI3CLConfig(backbone="resnet18", num_channels=2, projection_dim=16, projection_hidden_dim=64, queue_size=64)
model = DI3CLForPreTraining(config).train()
generator = torch.Generator().manual_seed(100 + rank)
images = torch.randn(3, 2, 64, 64, generator=generator)
boxes = torch.tensor([[0.0, 0.0, 0.0, 40.0, 40.0], [2.0, 8.0, 8.0, 64.0, 48.0]])
outputs = model(images, images.flip(-1), boxes, boxes)
outputs.loss.backward()
torch.save(
    {
        "loss": outputs.loss.detach(),
        "queue_ptr": model.queue_ptr.clone(),
        "global_queue": model.global_queue.clone(),
        "contour_queue": model.contour_queue.clone(),
        "positives": outputs.global_logits[:, 0].clone(),
    },
    out,
)
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_two_processes_gather_keys_and_shuffle_bn(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script = tmp_path / "child.py"
    script.write_text(DISTRIBUTED_CHILD)
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    processes = [
        subprocess.Popen(
            [sys.executable, str(script), str(rank), str(tmp_path / f"rank{rank}.pt")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(2)
    ]
    logs = [process.communicate(timeout=240)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], "\n".join(logs)[-4000:]
    results = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    for result in results:
        assert torch.isfinite(result["loss"])
        assert result["queue_ptr"].item() == 6  # the keys of both processes (2 x 3) were enqueued
    # Both processes enqueued the same gathered keys, in rank order; the rest of the queues is the shared init.
    torch.testing.assert_close(results[0]["global_queue"], results[1]["global_queue"], rtol=0, atol=0)
    torch.testing.assert_close(results[0]["contour_queue"], results[1]["contour_queue"], rtol=0, atol=0)
    from di3cl_hf import DI3CLConfig

    torch.manual_seed(0)
    initial = DI3CLForPreTraining(
        DI3CLConfig(
            backbone="resnet18", num_channels=2, projection_dim=16, projection_hidden_dim=64, queue_size=64
        )
    ).global_queue
    queue = results[0]["global_queue"]
    assert torch.equal(queue[:, 6:], initial[:, 6:])
    assert not torch.isclose(queue[:, :6], initial[:, :6]).all(dim=0).any()
    torch.testing.assert_close(queue[:, :6].norm(dim=0), torch.ones(6))


def test_queue_snapshot_restore_undoes_one_enqueue_and_digest_tracks_it():
    """The trainer's skipped-step rollback and cross-process check are model methods (buffer names unchanged)."""
    from di3cl_hf import DI3CLConfig

    config = DI3CLConfig(
        backbone="resnet18", image_size=64, queue_size=8, projection_dim=8, projection_hidden_dim=16
    )
    model = DI3CLForPreTraining(config)
    before = model.queue_digest()
    snapshot = model.queue_snapshot(num_keys=6)
    enqueue(
        [model.global_queue, model.contour_queue], [torch.randn(6, 8), torch.randn(6, 8)], model.queue_ptr
    )
    assert model.queue_digest() != before and int(model.queue_ptr) == 6
    model.restore_queues(snapshot)
    assert model.queue_digest() == before and int(model.queue_ptr) == 0
    model.copy_query_encoder_to_key()
    for key, query in zip(
        model.momentum_encoder.state_dict().values(), model.di3cl.encoder.state_dict().values()
    ):
        assert torch.equal(key, query)
    encoder = model.export_encoder()
    assert isinstance(encoder, DI3CLModel) and not encoder.training
