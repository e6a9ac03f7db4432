"""transformers pipelines ("image-segmentation", "image-feature-extraction") with DI3CL models, with the
package installed and through remote code in a process where importing di3cl_hf fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

from di3cl_hf import DI3CLConfig, DI3CLForSemanticSegmentation, DI3CLModel
from di3cl_hf.image_processing_di3cl import DI3CLImageProcessor

REPO_ROOT = Path(__file__).resolve().parents[1]
LABELS = {0: "water", 1: "land", 2: "urban"}


def _config(**overrides) -> DI3CLConfig:
    values = dict(
        backbone="resnet18", num_channels=2, image_size=64, decoder_hidden_size=16, auxiliary_channels=16
    )
    return DI3CLConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A segmentation folder and an encoder folder, each with weights, code files and processor."""
    root = tmp_path_factory.mktemp("pipelines")
    torch.manual_seed(0)
    segmentation = DI3CLForSemanticSegmentation(
        _config(num_labels=3, id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    ).eval()
    segmentation.save_pretrained(root / "segmentation")
    torch.manual_seed(1)
    DI3CLModel(_config()).eval().save_pretrained(root / "encoder")
    for name in ("segmentation", "encoder"):
        DI3CLImageProcessor(num_channels=2).save_pretrained(root / name)
    return {"segmentation": root / "segmentation", "encoder": root / "encoder", "root": root}


@pytest.fixture(scope="module")
def image(folders: dict[str, Path]) -> Path:
    """An 8-bit grey SAR quick-look saved as RGB PNG, the kind of file pipelines load."""
    rows, cols = np.mgrid[0:80, 0:96]
    grey = np.where((rows // 20 + cols // 24) % 2 == 0, 40, 170).astype(np.uint8)
    grey = np.clip(grey + np.random.default_rng(0).normal(0, 8, grey.shape), 0, 255).astype(np.uint8)
    path = folders["root"] / "quicklook.png"
    Image.fromarray(grey).convert("RGB").save(path)
    return path


def _segment(folder: Path, image: Path) -> list[dict]:
    segmenter = pipeline("image-segmentation", model=str(folder), device="cpu", dtype=torch.float32)
    return segmenter(str(image))


def test_image_segmentation_pipeline_installed(folders: dict[str, Path], image: Path) -> None:
    results = _segment(folders["segmentation"], image)
    assert results and {r["label"] for r in results} <= set(LABELS.values())
    masks = np.stack([np.asarray(r["mask"]) for r in results])
    assert masks.shape[1:] == (80, 96)
    assert (masks.astype(bool).sum(axis=0) == 1).all()  # every pixel in exactly one class mask

    # the same classes as running the model on the processor's output directly
    model = DI3CLForSemanticSegmentation.from_pretrained(folders["segmentation"], dtype=torch.float32).eval()
    processor = DI3CLImageProcessor.from_pretrained(folders["segmentation"])
    inputs = processor(Image.open(image).convert("RGB"), return_tensors="pt")
    with torch.inference_mode():
        expected = processor.post_process_semantic_segmentation(model(**inputs), target_sizes=[(80, 96)])[
            0
        ].numpy()
    by_label = {LABELS[k]: k for k in LABELS}
    predicted = np.full((80, 96), -1)
    for result in results:
        predicted[np.asarray(result["mask"]) > 0] = by_label[result["label"]]
    np.testing.assert_array_equal(predicted, expected)


def test_image_segmentation_pipeline_with_model_objects(folders: dict[str, Path], image: Path) -> None:
    model = DI3CLForSemanticSegmentation.from_pretrained(folders["segmentation"], dtype=torch.float32)
    segmenter = pipeline(
        "image-segmentation", model=model, image_processor=DI3CLImageProcessor(num_channels=2)
    )
    results = segmenter(Image.open(image))
    assert {r["label"] for r in results} <= set(LABELS.values())


def test_image_feature_extraction_pipeline_installed(folders: dict[str, Path], image: Path) -> None:
    extractor = pipeline(
        "image-feature-extraction", model=str(folders["encoder"]), device="cpu", dtype=torch.float32
    )
    dense = np.asarray(extractor(str(image)))
    pooled = np.asarray(extractor(str(image), pool=True))
    assert dense.shape == (1, 512, 3, 3)  # 80x96 input -> stride 32 map
    assert pooled.shape == (1, 512)
    np.testing.assert_allclose(pooled[0], dense[0].mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)


_BLOCK_PACKAGE = """
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "di3cl_hf" or name.startswith("di3cl_hf."):
            raise ImportError(f"{name} is blocked in this test: remote code must not need it")
sys.meta_path.insert(0, _Block())
"""


def test_pipelines_through_remote_code(folders: dict[str, Path], image: Path) -> None:
    """In a fresh process where ``import di3cl_hf`` fails, both pipelines load the folders as they are
    pushed to the Hub (``hub.stage_model``: code files + ``auto_map`` for model and processor) with
    ``trust_remote_code=True`` and give the same results as with the package."""
    from di3cl_hf.hub.push import stage_model

    staged = {
        name: stage_model(folders[name], folders["root"] / f"staged-{name}")
        for name in ("segmentation", "encoder")
    }
    code = _BLOCK_PACKAGE + textwrap.dedent(
        f"""
        import json, numpy as np, torch
        from transformers import pipeline
        try:
            import di3cl_hf
        except ImportError:
            pass
        else:
            raise SystemExit("di3cl_hf should not be importable here")
        segmenter = pipeline("image-segmentation", model={str(staged["segmentation"])!r}, trust_remote_code=True,
                             device="cpu", dtype=torch.float32)
        assert not type(segmenter.model).__module__.startswith("di3cl_hf"), type(segmenter.model).__module__
        results = segmenter({str(image)!r})
        extractor = pipeline("image-feature-extraction", model={str(staged["encoder"])!r}, trust_remote_code=True,
                             device="cpu", dtype=torch.float32)
        pooled = extractor({str(image)!r}, pool=True)
        print(json.dumps({{
            "labels": [r["label"] for r in results],
            "masks": [np.asarray(r["mask"]).tolist() for r in results],
            "pooled": pooled,
        }}))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(folders["root"] / "hf-home"), PYTHONPATH="")
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=folders["root"],
    )
    assert result.returncode == 0, f"remote-code pipelines failed:\n{result.stderr[-4000:]}"
    remote = json.loads(result.stdout.strip().splitlines()[-1])

    local = _segment(folders["segmentation"], image)
    assert remote["labels"] == [r["label"] for r in local]
    for mask, result_local in zip(remote["masks"], local):
        np.testing.assert_array_equal(np.asarray(mask), np.asarray(result_local["mask"]))
    extractor = pipeline(
        "image-feature-extraction", model=str(folders["encoder"]), device="cpu", dtype=torch.float32
    )
    np.testing.assert_allclose(remote["pooled"], extractor(str(image), pool=True), rtol=1e-5, atol=1e-6)
