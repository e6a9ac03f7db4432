"""The CPU side of ``benchmarks/gpu_check.py`` (arguments, batch probing with a fake out-of-memory, timing,
JSON report, skip path) and the device-independent helpers of ``tests/test_gpu.py``, run on the CPU."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from di3cl_hf import DI3CLConfig, DI3CLForPreTraining, DI3CLForSemanticSegmentation

ROOT = Path(__file__).resolve().parent.parent


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


gpu_check = _load(ROOT / "benchmarks" / "gpu_check.py", "benchmark_gpu_check")
gpu_tests = _load(ROOT / "tests" / "test_gpu.py", "gpu_test_helpers")
CPU = torch.device("cpu")


def _tiny_segmentation(backbone: str = "resnet18", decoder_width: int = 16, num_labels: int = 5):
    torch.manual_seed(0)
    config = DI3CLConfig(
        backbone="resnet18",
        num_channels=2,
        num_labels=num_labels,
        decoder_hidden_size=16,
        auxiliary_channels=16,
    )
    return DI3CLForSemanticSegmentation(config)


# ------------------------------------------------------------------------------------------------------------
# Arguments, skip path
# ------------------------------------------------------------------------------------------------------------


def test_defaults_are_the_issue_settings():
    args = gpu_check.parse_args([])
    assert args.device == "cuda" and args.backbone == "resnet50" and args.sizes == [224, 448]
    assert (args.scene_size, args.finetune_size, args.finetune_batch, args.decoder_width) == (
        8192,
        512,
        8,
        512,
    )
    assert gpu_check.DEFAULT_START_BATCH[224] > gpu_check.DEFAULT_START_BATCH[448]
    assert args.output_dir == ROOT / "results" / "gpu"
    for bad in (["--device", "tpu"], ["--iterations", "0"]):
        with pytest.raises(SystemExit):
            gpu_check.parse_args(bad)


def test_without_cuda_it_skips_with_exit_0_or_fails_when_required(tmp_path, capsys):
    assert gpu_check.main(["--output-dir", str(tmp_path)], cuda_available=lambda: False) == 0
    assert "skipped" in capsys.readouterr().out
    assert gpu_check.main(["--require-gpu", "--output-dir", str(tmp_path)], cuda_available=lambda: False) == 2
    assert "--require-gpu" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------------------
# Batch probing, timing
# ------------------------------------------------------------------------------------------------------------


def test_probe_batch_halves_on_out_of_memory_until_it_fits():
    tried, cleared = [], []

    def attempt(batch):
        tried.append(batch)
        if batch > 12:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return f"ran {batch}"

    batch, result, failed = gpu_check.probe_batch(attempt, 100, on_oom=lambda: cleared.append(1))
    assert (batch, result) == (12, "ran 12")
    assert tried == [100, 50, 25, 12] and failed == [100, 50, 25] and len(cleared) == 3


def test_probe_batch_reads_runtime_oom_messages_and_propagates_other_errors():
    def runtime_oom(batch):
        if batch > 1:
            raise RuntimeError("CUDA error: out of memory")
        return batch

    assert gpu_check.probe_batch(runtime_oom, 4)[:2] == (1, 1)
    with pytest.raises(ValueError, match="shape"):
        gpu_check.probe_batch(lambda batch: (_ for _ in ()).throw(ValueError("bad shape")), 8)
    with pytest.raises(RuntimeError, match="every batch size from 8 down to 2"):
        gpu_check.probe_batch(
            lambda batch: (_ for _ in ()).throw(torch.OutOfMemoryError("oom")), 8, minimum=2
        )
    with pytest.raises(ValueError, match="minimum"):
        gpu_check.probe_batch(lambda batch: batch, 2, minimum=4)
    assert gpu_check.is_oom(torch.OutOfMemoryError("x")) and not gpu_check.is_oom(ValueError("out of memory"))


def test_time_steps_runs_warmup_untimed_and_synchronises_each_step():
    calls, syncs = [], []
    times = gpu_check.time_steps(lambda: calls.append(1), 2, 3, lambda: syncs.append(1))
    assert len(calls) == 5 and len(times) == 3 and len(syncs) == 4 and all(t >= 0 for t in times)


def test_random_boxes_lie_inside_the_view_with_their_batch_index():
    boxes = gpu_check.random_boxes(3, 224, 10, torch.Generator().manual_seed(0))
    assert boxes.shape == (30, 5)
    assert torch.equal(boxes[:, 0], torch.arange(3).repeat_interleave(10).float())
    assert (boxes[:, 1:] >= 0).all() and (boxes[:, 1:] <= 224).all()
    assert (boxes[:, 3] - boxes[:, 1] >= 28 - 1e-4).all() and (boxes[:, 4] > boxes[:, 2]).all()


# ------------------------------------------------------------------------------------------------------------
# The phases with tiny models on the CPU
# ------------------------------------------------------------------------------------------------------------


def test_pretraining_throughput_probes_down_past_a_fake_oom(tiny_config):
    torch.manual_seed(0)
    model = DI3CLForPreTraining(tiny_config(queue_size=64))
    original = model.forward

    def forward(**inputs):
        if inputs["pixel_values"].shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (fake)")
        return original(**inputs)

    model.forward = forward
    result = gpu_check.pretraining_throughput(
        model, 64, device=CPU, precision="fp32", start_batch=8, warmup=0, iterations=1, boxes_per_image=2
    )
    assert result["batch_size"] == 2 and result["out_of_memory_at"] == [8, 4]
    assert result["img_per_s"] > 0 and result["step_s"] > 0 and result["channels_last"]
    assert model.queue_ptr.item() == 2  # exactly one timed step ran
    assert all(p.grad is None for p in model.parameters())


def test_finetuning_step_time_on_a_tiny_model():
    result = gpu_check.finetuning_step_time(
        _tiny_segmentation(), device=CPU, precision="fp32", crop=64, batch_size=2, warmup=0, iterations=1
    )
    assert result["crop"] == 64 and result["batch_size"] == 2 and result["decoder_width"] == 16
    assert result["step_s"] > 0


def test_scene_throughput_on_a_small_scene(tmp_path):
    model = _tiny_segmentation().eval()
    result = gpu_check.scene_throughput(
        model, 128, tmp_path, device=CPU, precision="fp32", tile_size=64, batch_size=2, overlap=16
    )
    assert result["size"] == 128 and result["tiles"] >= 4 and result["mpx_per_s"] > 0
    assert (tmp_path / "classes.tif").is_file()


# ------------------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------------------


def test_device_slug_makes_a_file_name():
    assert gpu_check.device_slug("NVIDIA H200") == "NVIDIA-H200"
    assert gpu_check.device_slug("Tesla V100-SXM2-16GB") == "Tesla-V100-SXM2-16GB"
    assert gpu_check.device_slug("NVIDIA A100 80GB PCIe / MIG 1g.10gb") == "NVIDIA-A100-80GB-PCIe-MIG-1g.10gb"
    assert gpu_check.device_slug("///") == "unknown-device"


def test_report_is_written_atomically_and_failures_are_found(tmp_path):
    report = {
        "device": "NVIDIA H200",
        "precision": "bf16",
        "sizes": [224, 448],
        "tests": {"returncode": 0, "summary": "6 passed in 40.1s"},
        "pretraining": [
            {"image_size": 224, "img_per_s": 2000.0, "batch_size": 512},
            {"image_size": 448, "error": "x"},
        ],
        "scene": {"mpx_per_s": 30.5},
        "finetuning": {"step_s": 0.25},
    }
    path = gpu_check.write_report(report, tmp_path / "gpu")
    assert path == tmp_path / "gpu" / "NVIDIA-H200.json"
    assert json.loads(path.read_text()) == report
    assert [p.name for p in path.parent.iterdir()] == ["NVIDIA-H200.json"]  # no temporary file left
    table = gpu_check.markdown_table(report)
    assert "| NVIDIA H200 | bf16 | 6 passed in 40.1s | 2000.0 (batch 512) | — | 30.5 | 0.25 s |" in table
    assert gpu_check.failures(report) == ["pre-training 448 px"]
    report["tests"] = {"returncode": 1, "summary": "1 failed, 5 passed"}
    report["scene"] = {"error": "RuntimeError: boom"}
    assert gpu_check.failures(report) == ["tests (1 failed, 5 passed)", "pre-training 448 px", "scene"]
    report["tests"] = {"returncode": None, "summary": "timed out after 300 s"}
    assert gpu_check.failures(report)[0] == "tests (timed out after 300 s)"


def test_main_end_to_end_on_the_cpu_with_tiny_models(tmp_path, tiny_config, monkeypatch, capsys):
    monkeypatch.setattr(gpu_check, "pretraining_config", lambda backbone, size: tiny_config(queue_size=64))
    monkeypatch.setattr(gpu_check, "segmentation_model", lambda backbone, width: _tiny_segmentation())
    monkeypatch.setattr(gpu_check, "run_gpu_tests", lambda: {"returncode": 0, "summary": "6 passed"})
    argv = [
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--sizes",
        "64",
        "--start-batch",
        "2",
        "--warmup",
        "0",
        "--iterations",
        "1",
        "--scene-size",
        "128",
        "--tile-size",
        "64",
        "--overlap",
        "16",
        "--scene-batch",
        "2",
        "--finetune-size",
        "64",
        "--finetune-batch",
        "2",
        "--output-dir",
        str(tmp_path),
    ]
    assert gpu_check.main(argv) == 0
    (path,) = tmp_path.glob("*.json")
    report = json.loads(path.read_text())
    assert path.name == gpu_check.device_slug(report["device"]) + ".json"
    for key in ("torch", "cuda", "precision", "precision_reason", "host_cpu", "command", "wall_s"):
        assert key in report, key
    assert report["precision"] == "fp32" and report["tests"]["summary"] == "6 passed"
    assert report["pretraining"][0]["batch_size"] == 2 and report["scene"]["size"] == 128
    assert report["finetuning"]["crop"] == 64
    assert "| fp32 | 6 passed |" in capsys.readouterr().out

    monkeypatch.setattr(gpu_check, "run_gpu_tests", lambda: {"returncode": 1, "summary": "1 failed"})
    monkeypatch.setattr(
        gpu_check, "segmentation_model", lambda *a: (_ for _ in ()).throw(RuntimeError("boom"))
    )
    assert gpu_check.main([*argv, "--sizes", "32"]) == 1
    report = json.loads(path.read_text())
    assert report["scene"] == report["finetuning"] == {"error": "RuntimeError: boom"}
    assert report["pretraining"][0]["image_size"] == 32  # a failed phase does not stop the others
    assert "failed: tests (1 failed), scene, finetuning" in capsys.readouterr().err

    assert gpu_check.main([*argv, "--budget-s", "0"]) == 0  # every phase skipped by the time budget
    report = json.loads(path.read_text())
    assert report["tests"] == report["scene"] == {"skipped": "time budget of 0 s spent"}


# ------------------------------------------------------------------------------------------------------------
# tests/test_gpu.py's helpers, on the CPU (the GPU tests run the same code with device="cuda")
# ------------------------------------------------------------------------------------------------------------


def test_gpu_test_pretraining_step_helper_runs_on_cpu():
    losses = gpu_tests.check_pretraining_step("cpu", "fp32", channels_last=True)
    assert set(losses) == set(gpu_tests.LOSS_NAMES)
    ((first, second),) = gpu_tests.compare_losses("cpu", steps=1)
    assert first == second


def test_gpu_test_shuffle_bn_branch_agrees_with_the_plain_path_on_cpu(tmp_path, monkeypatch):
    calls = []
    original = torch.distributed.broadcast
    monkeypatch.setattr(torch.distributed, "broadcast", lambda *a, **k: calls.append(1) or original(*a, **k))
    expected, got = gpu_tests.shuffle_bn_losses("cpu", "gloo", tmp_path / "process-group")
    assert calls == [1]  # the shuffle branch ran (it broadcasts the permutation)
    assert not torch.distributed.is_initialized()
    for name in gpu_tests.LOSS_NAMES:
        torch.testing.assert_close(
            torch.tensor(got[name]), torch.tensor(expected[name]), **gpu_tests.LOSS_TOLERANCE
        )


def test_gpu_test_scene_helper_runs_on_cpu(tmp_path):
    first, second = gpu_tests.scene_class_maps("cpu", tmp_path, size=160)
    assert first.shape == (160, 160) and np.array_equal(first, second)


# ----------------------------------------------------------------------------------------------------------------
# benchmarks/feed_rate.py
# ----------------------------------------------------------------------------------------------------------------

feed_rate = _load(ROOT / "benchmarks" / "feed_rate.py", "benchmark_feed_rate")


def test_feed_rate_measures_and_reads_gpu_results(tmp_path):
    assert (feed_rate.source_size(224), feed_rate.source_size(448)) == (256, 512)
    assert feed_rate.published_rate(224) == 170.0 and feed_rate.published_rate(448) == 42.5
    row = feed_rate.measure(64, 2, seconds=0.0, batch_size=2, patches=2)
    assert row["patches"] == 2 and row["patches_per_s"] > 0 and row["boxes_per_image"] > 0
    report = {
        "device": "NVIDIA H200",
        "pretraining": [{"image_size": 64, "img_per_s": 10 * row["patches_per_s"]}],
    }
    gpu_check.write_report(report, tmp_path)
    measured = feed_rate.gpu_rates(tmp_path)
    assert measured == [("NVIDIA H200", 64, 10 * row["patches_per_s"])]
    table = feed_rate.table([row], measured)
    assert "cores for NVIDIA H200" in table and "| 10.0 (at " in table
    assert feed_rate.gpu_rates(tmp_path / "missing") == []
