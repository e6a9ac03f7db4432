"""The main job (``make demo``) end to end, in its quick variant: every stage runs and leaves its outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path: Path) -> None:
    output = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "di3cl_hf.demo", "--quick", "--output-dir", str(output)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Results on SYNTHETIC data" in result.stdout

    from di3cl_hf import DI3CLForSemanticSegmentation, DI3CLModel

    encoder = DI3CLModel.from_pretrained(output / "pretrain" / "encoder")
    assert encoder.config.num_channels == 2
    for task, num_labels in (("landcover", 10), ("water", 2), ("roads", 2)):
        folder = output / "models" / task
        for name in ("config.json", "model.safetensors", "preprocessor_config.json", "README.md"):
            assert (folder / name).is_file(), f"{task}: {name} missing"
        model = DI3CLForSemanticSegmentation.from_pretrained(folder)
        assert model.config.num_labels == num_labels

    summary = json.loads((output / "evaluation" / "evaluation.json").read_text())
    assert set(summary["results"]) == {"landcover", "water", "roads"}
    for by_init in summary["results"].values():
        assert set(by_init) == {"di3cl", "random"}

    scene = output / "data" / "synthetic-scene.tif"
    prediction = output / "synthetic-scene-landcover.tif"
    with rasterio.open(scene) as source, rasterio.open(prediction) as predicted:
        assert predicted.crs == source.crs
        assert predicted.transform == source.transform
        assert (predicted.width, predicted.height) == (source.width, source.height)
        classes = predicted.read(1)
    assert np.unique(classes).size > 1
