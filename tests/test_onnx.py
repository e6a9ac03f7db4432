"""ONNX export (issue 14): ``di3cl export-onnx`` for DI3CLModel and DI3CLForSemanticSegmentation with dynamic
batch/height/width, the preprocessing in the metadata, atomic writes; onnxruntime vs torch fp32 within 1e-4 on
real Sentinel-1 chips (the embedded water sample always, the shared real-sar chip when present), and
``di3cl predict --backend onnxruntime`` giving torch's class map."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from di3cl_hf import DI3CLConfig, DI3CLForSemanticSegmentation, DI3CLModel
from di3cl_hf.cli import main
from di3cl_hf.data.samples import sentinel1_sample
from di3cl_hf.image_processing_di3cl import DI3CLImageProcessor
from di3cl_hf.inference.onnx import ONNX_OPSET, TraceableAdaptiveAvgPool2d, make_traceable
from di3cl_hf.inference.scene import ScenePreprocessor
from di3cl_hf.inference.sources import open_source

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

REAL_CHIP = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real-sar" / "Spain_7370579_S1Hand.tif"
)
WATER = sentinel1_sample("water") / "images"
TOLERANCE = 1e-4


def _config(**overrides) -> DI3CLConfig:
    settings = dict(
        backbone="resnet18", num_channels=2, num_labels=2, decoder_hidden_size=16, auxiliary_channels=16,
        id2label={0: "land", 1: "water"}, label2id={"land": 0, "water": 1},
    )  # fmt: skip
    return DI3CLConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A segmentation folder and an encoder folder (tiny resnet18, random weights, saved processors)."""
    root = tmp_path_factory.mktemp("onnx-models")
    torch.manual_seed(0)
    segmentation = DI3CLForSemanticSegmentation(_config()).eval()
    with torch.no_grad():  # trained-looking BatchNorm statistics instead of the identity
        for module in segmentation.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    processor = DI3CLImageProcessor(num_channels=2, db_range=(-28.0, 3.0))
    segmentation.save_pretrained(root / "seg")
    processor.save_pretrained(root / "seg")
    DI3CLModel(_config()).eval().save_pretrained(root / "enc")
    processor.save_pretrained(root / "enc")
    return {"seg": root / "seg", "enc": root / "enc"}


@pytest.fixture(scope="module")
def exported(folders: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("onnx")
    for name in ("seg", "enc"):
        assert main(["export-onnx", str(folders[name]), str(out / f"{name}.onnx")]) == 0
    return {"seg": out / "seg.onnx", "enc": out / "enc.onnx"}


@pytest.mark.parametrize("size", [(7, 9), (12, 12), (5, 17), (1, 3)])
def test_traceable_adaptive_pooling_equals_pytorch(size: tuple[int, int]) -> None:
    x = torch.randn(2, 3, *size)
    for bins in (1, 2, 3, 6):
        expected = nn.AdaptiveAvgPool2d(bins)(x)
        assert torch.allclose(TraceableAdaptiveAvgPool2d(bins)(x), expected, atol=1e-6)


def test_export_metadata_dynamic_shapes_and_atomic_write(
    folders: dict[str, Path], exported: dict[str, Path], tmp_path: Path, capsys
) -> None:
    model = onnx.load(str(exported["seg"]))
    meta = {p.key: p.value for p in model.metadata_props}
    assert model.opset_import[0].version == ONNX_OPSET and meta["di3cl.opset"] == str(ONNX_OPSET)
    assert meta["di3cl.output"] == "logits" and json.loads(meta["di3cl.id2label"]) == {
        "0": "land",
        "1": "water",
    }
    assert json.loads(meta["di3cl.db_range"]) == [-28.0, 3.0] and meta["di3cl.num_channels"] == "2"
    assert "image_mean" in meta["di3cl.normalisation"] and len(json.loads(meta["di3cl.image_mean"])) == 2
    assert list(DI3CLImageProcessor.from_dict(json.loads(meta["di3cl.processor"])).db_range) == [-28.0, 3.0]
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] == "batch" and dims[2:] == ["height", "width"]
    encoder = {p.key: p.value for p in onnx.load(str(exported["enc"])).metadata_props}
    assert encoder["di3cl.output"] == "last_hidden_state" and encoder["di3cl.task"] == "features"
    # never over an existing file unasked; nothing but the .onnx files in the folder
    before = exported["seg"].read_bytes()
    assert main(["export-onnx", str(folders["seg"]), str(exported["seg"])]) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err and exported["seg"].read_bytes() == before
    assert main(["export-onnx", str(folders["seg"]), str(exported["seg"]), "--overwrite", "--no-verify"]) == 0
    assert sorted(p.name for p in exported["seg"].parent.iterdir()) == ["enc.onnx", "seg.onnx"]


def _pixel_values(source, processor: DI3CLImageProcessor) -> torch.Tensor:
    with open_source(source) as scene:
        raster = scene.read()
        pixel_values, _ = ScenePreprocessor(processor, scene)(raster.array, raster.valid_mask)
    return torch.from_numpy(pixel_values)[None]


def _chips() -> list:
    chips = [
        pytest.param(
            [WATER / "Spain_7370579_vv.tif", WATER / "Spain_7370579_vh.tif"], id="embedded-water-chip"
        )
    ]
    skip = pytest.mark.skipif(not REAL_CHIP.exists(), reason=f"real Sentinel-1 chip not found at {REAL_CHIP}")
    chips.append(pytest.param(REAL_CHIP, id="real-sar-S1Hand", marks=skip))
    return chips


@pytest.mark.parametrize("chip", _chips())
def test_onnxruntime_matches_torch_fp32_on_real_sentinel1(folders, exported, chip) -> None:
    processor = DI3CLImageProcessor.from_pretrained(folders["seg"])
    pixel_values = _pixel_values(chip, processor)
    assert pixel_values.shape[-2:] == (512, 512)
    two = torch.cat([pixel_values, pixel_values.flip(-1)])  # batch of 2 (dynamic batch)
    for name, cls, output in (("seg", DI3CLForSemanticSegmentation, "logits"),
                              ("enc", DI3CLModel, "last_hidden_state")):  # fmt: skip
        model = cls.from_pretrained(folders[name]).eval()
        with torch.no_grad():
            expected = getattr(model(pixel_values=two), output).numpy()
        session = ort.InferenceSession(str(exported[name]), providers=["CPUExecutionProvider"])
        (got,) = session.run([output], {"pixel_values": two.numpy()})
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= TOLERANCE, (name, np.abs(got - expected).max())
    # another size than the export example: dynamic height and width
    crop = pixel_values[..., :192, :320]
    model = DI3CLForSemanticSegmentation.from_pretrained(folders["seg"]).eval()
    with torch.no_grad():
        expected = model(pixel_values=crop).logits.numpy()
    (got,) = ort.InferenceSession(str(exported["seg"])).run(["logits"], {"pixel_values": crop.numpy()})
    assert np.abs(got - expected).max() <= TOLERANCE


def _classes(path: Path) -> np.ndarray:
    with rasterio.open(path) as dataset:
        return dataset.read(1)


@pytest.mark.parametrize("chip", _chips())
def test_predict_with_onnxruntime_gives_the_torch_class_map(folders, exported, chip, tmp_path: Path) -> None:
    tiling = ["--tile-size", "256", "--overlap", "32", "--quiet"]
    if isinstance(chip, list):  # the VV + VH pair: the many-scenes form groups it into one scene
        files = [str(f) for f in chip]
        assert main(["predict", str(folders["seg"]), *files, "--output-dir", str(tmp_path / "torch"),
                     "--precision", "fp32", *tiling]) == 0  # fmt: skip
        assert main(["predict", str(exported["seg"]), *files, "--output-dir", str(tmp_path / "ort"),
                     "--backend", "onnxruntime", *tiling]) == 0  # fmt: skip
        torch_map = _classes(tmp_path / "torch" / "Spain_7370579_classes.tif")
        ort_map = _classes(tmp_path / "ort" / "Spain_7370579_classes.tif")
    else:
        assert main(["predict", str(folders["seg"]), str(chip), str(tmp_path / "t.tif"), "--precision", "fp32",
                     *tiling]) == 0  # fmt: skip
        assert main(["predict", str(exported["seg"]), str(chip), str(tmp_path / "o.tif"), "--backend",
                     "onnxruntime", *tiling]) == 0  # fmt: skip
        torch_map, ort_map = _classes(tmp_path / "t.tif"), _classes(tmp_path / "o.tif")
    assert (torch_map == ort_map).mean() >= 0.999
    assert len(np.unique(torch_map)) >= 2  # a map with both classes, not a trivial agreement


def test_traceable_copy_leaves_the_model_alone() -> None:
    model = DI3CLForSemanticSegmentation(_config()).eval()
    copy = make_traceable(model)
    assert any(isinstance(m, nn.AdaptiveAvgPool2d) for m in model.modules())
    assert not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in copy.modules())
    x = torch.randn(1, 2, 96, 64)
    with torch.no_grad():
        assert (copy(pixel_values=x).logits - model(pixel_values=x).logits).abs().max() < 1e-5
