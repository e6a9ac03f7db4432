"""Tests of the Accelerate pre-training loop (di3cl_hf/pretraining.py, examples/pretrain.py).

Fast tests run the loop in-process on a tiny configuration (resnet18, 64 px, queue 64); the slow ones start real
processes: ``accelerate launch --multi_gpu --num_processes 2`` on the CPU (gloo) and a SIGTERM + resume run.
"""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from di3cl_hf.training import pretraining
from di3cl_hf.training.pretraining import (
    EpochShardSampler,
    PretrainingArguments,
    build_optimizer,
    check_queue_and_batch,
    initialise_backbone_from_imagenet,
    list_checkpoints,
    resolve_checkpoint,
    scaled_learning_rate,
)

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "backbone": "resnet18",
    "image_size": 64,
    "queue_size": 64,
    "projection_hidden_dim": 64,
    "projection_dim": 32,
    "per_device_batch_size": 4,
    "min_box_size": 16,
    "num_workers": 0,
    "logging_steps": 1,
    "report_to": "none",
    "disable_tqdm": True,
}


def _cli(options: dict) -> list[str]:
    argv = []
    for key, value in options.items():
        if isinstance(value, bool):
            argv += [f"--{key}", str(value)]
        else:
            argv += [f"--{key}", str(value)]
    return argv


@pytest.fixture(scope="module")
def sarsense(tmp_path_factory) -> Path:
    from di3cl_hf.data.synthetic import generate_sarsense

    root = tmp_path_factory.mktemp("sarsense")
    generate_sarsense(root / "data", 16, size=80, seed=0)
    return root / "data"


def _run_in_process(tmp_path: Path, sarsense: Path, **overrides) -> tuple[int, dict]:
    options = {**TINY, "data_dir": str(sarsense), "dataset_cache_dir": str(tmp_path / "cache")}
    options.update(overrides)
    args = PretrainingArguments(**options)
    code = pretraining.main(args)
    state_file = Path(args.output_dir) / "trainer_state.json"
    return code, json.loads(state_file.read_text())


def _env(tmp_path: Path) -> dict:
    env = dict(os.environ)
    env.update(
        HF_DATASETS_CACHE=str(tmp_path / "hf-datasets"),
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    return env


# ---------------------------------------------------------------------------------------------------------------
# Unit tests
# ---------------------------------------------------------------------------------------------------------------


def test_queue_must_be_multiple_of_global_batch():
    check_queue_and_batch(65536, 32, 8)  # 256 keys per forward
    with pytest.raises(ValueError, match=r"queue_size=100 must be a multiple .* = 24"):
        check_queue_and_batch(100, 12, 2)
    with pytest.raises(ValueError, match="queue_size=16"):
        check_queue_and_batch(16, 4, 8)


def test_release_learning_rate_scaling_and_sgd():
    args = PretrainingArguments()
    assert scaled_learning_rate(args, 256) == pytest.approx(0.03)
    assert scaled_learning_rate(args, 1024) == pytest.approx(0.12)
    assert scaled_learning_rate(PretrainingArguments(learning_rate=0.5), 1024) == 0.5
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    frozen = torch.nn.Linear(2, 2).requires_grad_(False)
    model.append(frozen)
    optimizer = build_optimizer(model, args, 0.06)
    assert type(optimizer) is torch.optim.SGD
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"], group["nesterov"]) == (
        0.06,
        0.9,
        1e-4,
        False,
    )
    # Only trainable parameters, weight decay on all of them (the release's SGD).
    assert sum(len(g["params"]) for g in optimizer.param_groups) == 4
    # torch's fused kernel on CPU / CUDA, the default loop elsewhere; same update up to rounding.
    assert optimizer.defaults["fused"] is True
    assert not build_optimizer(model, args, 0.06, device="meta").defaults["fused"]
    reference = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=0.06, momentum=0.9, weight_decay=1e-4
    )
    twin = copy.deepcopy(model)
    fused = build_optimizer(twin, args, 0.06)
    for module, opt in ((model, reference), (twin, fused)):
        for _ in range(3):
            torch.manual_seed(0)
            module[:2].train()(torch.randn(5, 3)).square().sum().backward()  # the trainable layers
            opt.step()
            opt.zero_grad()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b)
        assert not torch.equal(a, torch.zeros_like(a))
    adamw = build_optimizer(model, PretrainingArguments(optimizer="adamw"), 1e-3)
    decays = sorted(g["weight_decay"] for g in adamw.param_groups)
    assert decays == [0.0, 1e-4]
    with pytest.raises(ValueError, match="optimizer='nope'"):
        build_optimizer(model, PretrainingArguments(optimizer="nope"), 1e-3)


def test_epoch_shard_sampler_partitions_and_resumes():
    samplers = [EpochShardSampler(103, 4, rank, 3, seed=1, epoch=2) for rank in range(3)]
    shards = [[index for _, index in sampler] for sampler in samplers]
    assert all(len(shard) == 103 // 3 // 4 * 4 == 32 for shard in shards)
    assert not set(shards[0]) & set(shards[1]) and not set(shards[1]) & set(shards[2])
    other_epoch = [index for _, index in EpochShardSampler(103, 4, 0, 3, seed=1, epoch=3)]
    assert other_epoch != shards[0]
    resumed = [index for _, index in EpochShardSampler(103, 4, 0, 3, seed=1, epoch=2, start_batch=5)]
    assert resumed == shards[0][20:]


def _value_transform(image, valid_mask=None):
    return {"value": float(image.flat[0])}


def _value_collate(samples):
    return torch.tensor([sample["value"] for sample in samples])


@pytest.mark.parametrize("streaming", [False, True])
def test_each_process_reads_different_samples_and_resumes_exactly(streaming):
    import datasets
    import numpy as np

    dataset = datasets.Dataset.from_dict({"image": [np.full((1, 2, 2), i, np.float32) for i in range(40)]})
    if streaming:
        dataset = dataset.to_iterable_dataset(num_shards=4)
    sample_function = pretraining.SampleFunction(_value_transform, "image", None)

    def make(rank):
        return pretraining.PretrainingBatches(dataset, sample_function, _value_collate, 4, rank, 2, 0, 0, 8)

    per_rank = []
    for rank in (0, 1):
        batches = make(rank)
        epoch0 = [next(batches).tolist() for _ in range(5)]
        epoch1 = [next(batches).tolist() for _ in range(2)]
        assert batches.state() == (1, 2)
        per_rank.append({v for batch in epoch0 for v in batch})
        # Resuming at (epoch 1, batch 1) gives exactly the batches an uninterrupted run gets next.
        resumed = make(rank)
        resumed.set_state(1, 1)
        assert next(resumed).tolist() == epoch1[1]
    assert len(per_rank[0]) == len(per_rank[1]) == 20
    assert not per_rank[0] & per_rank[1]


def test_checkpoint_lookup_ignores_unfinished_saves(tmp_path):
    folder = tmp_path / "checkpoints"
    for name in ("checkpoint-2", "checkpoint-10", ".tmp-checkpoint-12", "checkpoint-x"):
        (folder / name).mkdir(parents=True)
    (folder / "checkpoint-10" / "trainer_state.json").write_text("{}")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-10"]
    assert resolve_checkpoint("latest", str(tmp_path)).name == "checkpoint-10"
    with pytest.raises(ValueError, match="not a DI3CL pre-training checkpoint"):
        resolve_checkpoint(str(folder / "checkpoint-2"), str(tmp_path))
    with pytest.raises(ValueError, match="no checkpoint"):
        resolve_checkpoint("latest", str(tmp_path / "empty"))


def test_imagenet_initialisation_from_local_file(tmp_path):
    import timm

    from di3cl_hf.configuration_di3cl import DI3CLConfig
    from di3cl_hf.modeling_di3cl import DI3CLForPreTraining

    reference = timm.create_model("resnet18", pretrained=False, num_classes=1000)
    weights = {k: v.clone() for k, v in reference.state_dict().items()}
    save_file(weights, str(tmp_path / "resnet18.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in weights.items()}}, tmp_path / "resnet18.pth")
    config = DI3CLConfig(backbone="resnet18", num_channels=2, queue_size=64, projection_hidden_dim=64)
    for name in ("resnet18.safetensors", "resnet18.pth"):
        model = DI3CLForPreTraining(config)
        missing = initialise_backbone_from_imagenet(model, tmp_path / name)
        assert missing == []
        query = model.di3cl.encoder.state_dict()
        key = model.momentum_encoder.state_dict()
        torch.testing.assert_close(
            query["layer3.1.conv2.weight"], weights["layer3.1.conv2.weight"], rtol=0, atol=0
        )
        # conv1: 3 input channels -> 2 with timm's rule (repeat, rescale by 3/2).
        expected_conv1 = weights["conv1.weight"].repeat(1, 1, 1, 1)[:, :2] * (3 / 2)
        torch.testing.assert_close(query["conv1.weight"], expected_conv1)
        for k in query:
            torch.testing.assert_close(key[k], query[k], rtol=0, atol=0)
    with pytest.raises(ValueError, match="no such weight file"):
        initialise_backbone_from_imagenet(model, tmp_path / "missing.pth")


# ---------------------------------------------------------------------------------------------------------------
# In-process runs
# ---------------------------------------------------------------------------------------------------------------


def test_short_run_saves_encoder_processor_card_and_rotates_checkpoints(tmp_path, sarsense, fresh_accelerate):
    from transformers import AutoImageProcessor, AutoModel

    import di3cl_hf  # noqa: F401  (Auto registration)

    out = tmp_path / "run"
    code, state = _run_in_process(
        tmp_path, sarsense, output_dir=str(out), max_steps=4, save_steps=1, save_total_limit=2
    )
    assert code == 0 and state["global_step"] == 4 and state["stopped_by"] is None
    assert state["queue_ptr"] == 4 * 4 % 64
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-3", "checkpoint-4"]
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    assert all(math.isfinite(v) for v in state["last_metrics"].values())
    encoder = AutoModel.from_pretrained(out / "encoder", dtype=torch.float32)
    assert type(encoder).__name__ == "DI3CLModel"
    checkpoint = load_file(str(out / "checkpoints" / "checkpoint-4" / "model.safetensors"))
    for name, value in encoder.state_dict().items():
        torch.testing.assert_close(value, checkpoint[f"di3cl.{name}"], rtol=0, atol=0)
    processor = AutoImageProcessor.from_pretrained(out / "encoder")
    assert processor.num_channels == 2
    card = (out / "encoder" / "README.md").read_text()
    assert "library_name: transformers" in card and "**updates / images seen**: 4 / 16" in card
    assert "**processes x per-device batch x accumulation**: 1 x 4 x 1 = 4" in card
    # TensorBoard is off here (report_to none); the trainer state is the machine-readable record.
    assert state["queue_digests"][0].endswith("@16")


def test_gradient_accumulation_counts_global_batch(tmp_path, sarsense, fresh_accelerate):
    code, state = _run_in_process(
        tmp_path,
        sarsense,
        output_dir=str(tmp_path / "acc"),
        max_steps=2,
        save_steps=0,
        gradient_accumulation_steps=2,
    )
    assert code == 0 and state["global_batch_size"] == 8 and state["images_seen"] == 16
    assert state["learning_rate"] == pytest.approx(0.03 * 8 / 256)
    assert state["queue_ptr"] == 16  # every forward enqueues its 4 keys


def test_nonfinite_losses_are_skipped_rolled_back_and_stop_the_run(
    tmp_path, sarsense, fresh_accelerate, monkeypatch
):
    from di3cl_hf.modeling_di3cl import DI3CLForPreTraining

    original = DI3CLForPreTraining.forward
    calls = {"n": 0}
    bad_calls = {2}

    def forward(self, *args, **kwargs):
        output = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] in bad_calls:
            output.loss = output.loss * float("nan")
        return output

    monkeypatch.setattr(DI3CLForPreTraining, "forward", forward)
    code, state = _run_in_process(
        tmp_path, sarsense, output_dir=str(tmp_path / "a"), max_steps=4, save_steps=0
    )
    assert code == 0 and state["nonfinite_total"] == 1 and state["global_step"] == 4
    # The skipped step's keys were taken out of the queues again: 3 good forwards of 4 keys.
    assert state["queue_ptr"] == 12

    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    calls["n"] = 0
    bad_calls.update(range(1, 100))
    code, state = _run_in_process(
        tmp_path,
        sarsense,
        output_dir=str(tmp_path / "b"),
        max_steps=10,
        save_steps=0,
        max_consecutive_nonfinite=3,
    )
    assert code == 3 and state["stopped_by"] == "nonfinite"
    assert state["global_step"] == 3 and state["nonfinite_total"] == 3 and state["queue_ptr"] == 0
    assert not (tmp_path / "b" / "encoder").exists()


# ---------------------------------------------------------------------------------------------------------------
# Real processes
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_accelerate_launch_two_processes_share_identical_queues(tmp_path, sarsense):
    from transformers import AutoModel

    import di3cl_hf  # noqa: F401

    out = tmp_path / "ddp"
    steps = 3
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(29500 + os.getpid() % 1000),
        str(REPO / "examples" / "pretrain.py"),
        *_cli({**TINY, "data_dir": str(sarsense), "output_dir": str(out), "max_steps": steps, "save_steps": 2}),
    ]  # fmt: skip
    result = subprocess.run(command, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["num_processes"] == 2 and state["global_batch_size"] == 8
    # Both ranks hold byte-identical queues, and the pointer advanced by the GLOBAL batch (2 x 4) per step.
    assert len(state["queue_digests"]) == 2 and len(set(state["queue_digests"])) == 1
    assert state["queue_ptr"] == steps * 8 % 64
    assert all(math.isfinite(v) for v in state["last_metrics"].values())
    checkpoint = out / "checkpoints" / f"checkpoint-{steps}"
    assert (checkpoint / "random_states_0.pkl").is_file() and (checkpoint / "random_states_1.pkl").is_file()
    weights = load_file(str(checkpoint / "model.safetensors"))
    assert int(weights["queue_ptr"]) == steps * 8 % 64
    encoder = AutoModel.from_pretrained(out / "encoder", dtype=torch.float32)
    for name, value in encoder.state_dict().items():
        torch.testing.assert_close(value, weights[f"di3cl.{name}"], rtol=0, atol=0)


@pytest.mark.slow
def test_sigterm_then_resume_matches_uninterrupted_run(tmp_path, sarsense):
    steps = 14
    options = {**TINY, "data_dir": str(sarsense), "max_steps": steps, "save_steps": 0, "num_workers": 1}
    env = _env(tmp_path)
    script = str(REPO / "examples" / "pretrain.py")

    reference = tmp_path / "reference"
    result = subprocess.run(
        [sys.executable, script, *_cli({**options, "output_dir": str(reference)})],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(
        [sys.executable, script, *_cli({**options, "output_dir": str(interrupted)})],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    log = []
    for line in process.stdout:
        log.append(line)
        if "step 3/" in line:
            process.send_signal(signal.SIGTERM)
            break
    log += process.stdout.readlines()
    assert process.wait(timeout=120) == 0, "".join(log[-50:])
    state = json.loads((interrupted / "trainer_state.json").read_text())
    assert state["stopped_by"] == "signal" and 3 <= state["global_step"] < steps, state
    assert not (interrupted / "encoder").exists()
    assert [p.name for p in list_checkpoints(interrupted)] == [f"checkpoint-{state['global_step']}"]

    result = subprocess.run(
        [sys.executable, script, *_cli({**options, "output_dir": str(interrupted)}), "--resume_from_checkpoint", "latest"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stdout + result.stderr
    resumed_state = json.loads((interrupted / "trainer_state.json").read_text())
    assert resumed_state["global_step"] == steps

    # Exact equality: same views, boxes (seeded per sample/batch), optimiser state, RNG and queues.
    expected = load_file(str(reference / "checkpoints" / f"checkpoint-{steps}" / "model.safetensors"))
    actual = load_file(str(interrupted / "checkpoints" / f"checkpoint-{steps}" / "model.safetensors"))
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)
    encoder_a = load_file(str(reference / "encoder" / "model.safetensors"))
    encoder_b = load_file(str(interrupted / "encoder" / "model.safetensors"))
    for name in encoder_a:
        torch.testing.assert_close(encoder_b[name], encoder_a[name], rtol=0, atol=0, msg=name)


@pytest.mark.slow
def test_push_to_hub_uploads_encoder_with_run_card(tmp_path, sarsense):
    sys.path.insert(0, str(Path(__file__).parent))
    from hub_server import FakeHub

    out = tmp_path / "push"
    options = {**TINY, "data_dir": str(sarsense), "output_dir": str(out), "max_steps": 1, "save_steps": 0}
    with FakeHub(max_requests=40, max_seconds=200) as hub:
        env = {k: v for k, v in _env(tmp_path).items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
        env.update(
            HF_ENDPOINT=hub.endpoint,
            HF_TOKEN="hf_fake_token_for_tests",
            HF_HOME=str(tmp_path / "home"),
            HF_DATASETS_CACHE=str(tmp_path / "hf-datasets"),
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
        )
        command = [
            sys.executable, str(REPO / "examples" / "pretrain.py"), *_cli(options),
            "--push_to_hub", "True", "--hub_model_id", "sar-lab/di3cl-tiny",
        ]  # fmt: skip
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert not hub.errors, hub.errors
        files = hub.repo("sar-lab/di3cl-tiny").files
    assert {"README.md", "model.safetensors", "config.json", "preprocessor_config.json"} <= set(files)
    assert files["README.md"].decode() == (out / "encoder" / "README.md").read_text()
    assert files["model.safetensors"] == (out / "encoder" / "model.safetensors").read_bytes()


@pytest.mark.slow
def test_sigterm_to_accelerate_launch_saves_and_two_processes_resume_exactly(tmp_path, sarsense):
    steps = 8
    options = {**TINY, "data_dir": str(sarsense), "max_steps": steps, "save_steps": 0}

    def launch(output_dir: Path, *extra: str) -> list[str]:
        return [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(29000 + (os.getpid() + len(extra) * 7 + len(str(output_dir))) % 500),
            str(REPO / "examples" / "pretrain.py"), *_cli({**options, "output_dir": str(output_dir)}), *extra,
        ]  # fmt: skip

    env = _env(tmp_path)
    reference = tmp_path / "reference"
    result = subprocess.run(launch(reference), env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(
        launch(interrupted), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    log = []
    for line in process.stdout:
        log.append(line)
        if "step 2/" in line:
            process.send_signal(signal.SIGTERM)  # the launcher forwards it to both processes
            break
    log += process.stdout.readlines()
    process.wait(timeout=200)
    state = json.loads((interrupted / "trainer_state.json").read_text())
    assert state["stopped_by"] == "signal" and 2 <= state["global_step"] < steps, "".join(log[-40:])
    assert len(set(state["queue_digests"])) == 1

    result = subprocess.run(
        launch(interrupted, "--resume_from_checkpoint", "latest"), env=env, capture_output=True, text=True,
        timeout=400,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    expected = load_file(str(reference / "checkpoints" / f"checkpoint-{steps}" / "model.safetensors"))
    actual = load_file(str(interrupted / "checkpoints" / f"checkpoint-{steps}" / "model.safetensors"))
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)
