"""The benchmark scripts of issue 13 run end to end at a tiny size and print their ratios (not their speed: speed
targets are checked by running the scripts, see the README's benchmarks)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_pretrain_step_prints_both_ratios_and_page_faults():
    out = _run(
        "pretrain_step.py", "--backbone", "resnet18", "--image_size", "64", "--batch_size", "4",
        "--iterations", "1", "--threads", "1",
    )  # fmt: skip
    assert re.search(r"^precision: (fp32|bf16|fp16) \(auto: ", out, re.M)
    assert re.search(r"ours vs naive fp32 reference: \d+\.\d\dx \(target >= (4|1\.3)x", out)
    assert re.search(r"ours vs bare-network ceiling: \d+\.\d\dx \(target >= 0\.9x\)", out)
    # interleaved steps, each of ours with its page faults and system time
    steps = re.findall(
        r"step \d: ceiling \((fp32|bf16) [a-z_]+\) [\d.]+ s, ours [\d.]+ s \(ours: \d+ page faults", out
    )
    assert len(steps) == 2  # one warm-up + one timed


def test_optimizer_step_compares_fused_with_the_default_loop():
    out = _run("optimizer_step.py", "--backbones", "resnet18", "--iterations", "1")
    ratios = re.findall(r"fused [\d.]+ ms -> (\d+\.\d\d)x", out)
    assert len(ratios) == 2 and all(float(r) > 0 for r in ratios)
