"""Tiled scene prediction (di3cl_hf.inference.scene): equality with untiled prediction, seams, georeferencing,
nodata, odd sizes, atomic output, bf16, real Sentinel-1 files, bounded buffers, embeddings."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from torch import nn

from di3cl_hf.data.sario import write_geotiff
from di3cl_hf.image_processing_di3cl import DI3CLImageProcessor
from di3cl_hf.inference.embeddings import embed_files, save_embeddings
from di3cl_hf.inference.scene import (
    OUTPUT_NODATA,
    PROBABILITY_SCALE,
    _TileBlender,
    argmax_planes,
    blend_weights,
    predict_scene,
    tile_starts,
)

REAL_SAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real-sar"
CRS = "EPSG:32631"
TRANSFORM = from_origin(500000.0, 4600000.0, 10.0, 10.0)
WATER_DB, LAND_DB = -20.0, -6.0


class EdgeSensitiveNet(nn.Module):
    """Tiny conv net (receptive-field radius 4 px) that reacts strongly to zero padding at tile edges.

    The input is shifted by +3 before convolutions with zero padding, so a tile edge (where the padding
    zeros replace values near 3) changes the output a lot: a seam would show if blending were wrong.
    """

    def __init__(self, num_labels: int = 3) -> None:
        super().__init__()
        self.config = SimpleNamespace(num_labels=num_labels, num_channels=2, id2label={})
        self.layers = nn.Sequential(
            nn.Conv2d(2, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=2, dilation=2),
            nn.ReLU(),
            nn.Conv2d(8, num_labels, 3, padding=1),
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.layers(pixel_values + 3.0)


class ThresholdNet(nn.Module):
    """Known answer: class 0 ("water") where the 3x3-averaged VV pixel value is below ``threshold``."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1, padding_mode="replicate")
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0] = -8.0 / 9.0
            self.conv.weight[1, 0] = 8.0 / 9.0
            self.conv.bias.copy_(torch.tensor([8.0 * threshold, -8.0 * threshold]))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.conv(pixel_values)


class FailingNet(EdgeSensitiveNet):
    """Raises on the third forward pass, as a crash in the middle of a scene."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("simulated failure mid-scene")
        return super().forward(pixel_values)


def _pattern(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Blocks of water (-20 dB) and land (-6 dB) with speckle-like noise; returns (dB [2,H,W], water mask)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    water = ((rows // 37) + (cols // 53)) % 2 == 0
    vv = np.where(water, WATER_DB, LAND_DB) + rng.normal(0.0, 1.0, (height, width))
    return np.stack([vv, vv - 7.0]).astype(np.float32), water


@pytest.fixture(scope="module")
def processor() -> DI3CLImageProcessor:
    return DI3CLImageProcessor(num_channels=2)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    """A 300x457 (not a multiple of any tile size) georeferenced scene with a NaN nodata block."""
    db, water = _pattern(300, 457)
    db[:, 20:45, 100:180] = np.nan
    path = tmp_path_factory.mktemp("scene") / "scene.tif"
    write_geotiff(path, db, crs=CRS, transform=TRANSFORM, nodata=float("nan"))
    return path, db, water


def _untiled_probabilities(model: nn.Module, processor: DI3CLImageProcessor, db: np.ndarray) -> np.ndarray:
    pixel_values, valid = processor.sar_to_pixel_values(db)
    with torch.inference_mode():
        probabilities = torch.softmax(model.eval()(torch.from_numpy(pixel_values)[None]), dim=1)[0].numpy()
    probabilities[:, ~valid] = np.nan
    return probabilities


def _read(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as src:
        return src.read(), {
            "crs": src.crs,
            "transform": src.transform,
            "nodata": src.nodata,
            "src": src.profile,
        }


def test_tile_starts_cover_the_scene_with_the_overlap() -> None:
    for length, tile, overlap in [
        (457, 128, 32),
        (300, 128, 0),
        (4096, 512, 64),
        (128, 128, 16),
        (50, 128, 16),
    ]:
        starts = tile_starts(length, tile, overlap)
        assert starts[0] == 0
        assert starts[-1] + min(tile, length) == length
        gaps = np.diff(starts)
        assert (tile - gaps >= overlap).all()  # neighbours share at least `overlap` pixels
        assert (gaps > 0).all()
    with pytest.raises(ValueError, match="overlap"):
        tile_starts(100, 64, 64)


def test_blend_weights_are_smooth_symmetric_and_positive() -> None:
    weights = blend_weights(128, 32)
    assert weights.shape == (128,)
    np.testing.assert_allclose(weights, weights[::-1])
    assert weights.min() > 0 and weights[32:96].min() == 1.0
    assert np.abs(np.diff(weights)).max() < 0.06  # no jumps inside the window
    assert (blend_weights(128, 32, "uniform") == 1).all()


def test_tiled_equals_untiled_without_seams(scene, processor, tmp_path: Path) -> None:
    """Tolerance: uint8 probabilities (round(p * 254)) within 1 of the untiled prediction everywhere
    (rounding, plus bf16-free fp32 tiles whose edge pixels get a cosine weight of at most ~0.05), and
    exactly equal class maps where the untiled top-2 margin exceeds 0.02."""
    path, db, _ = scene
    torch.manual_seed(0)
    model = EdgeSensitiveNet()
    reference = _untiled_probabilities(model, processor, db)
    valid = np.isfinite(reference[0])
    kwargs = dict(tile_size=96, overlap=32, batch_size=3, precision="fp32", progress=False, cog=False)
    out = tmp_path / "probabilities.tif"
    predict_scene(model, path, out, processor, output_type="probabilities", **kwargs)
    tiled, _ = _read(out)
    expected = np.rint(np.nan_to_num(reference) * PROBABILITY_SCALE)
    error = np.abs(tiled.astype(np.int32) - expected)[:, valid]
    assert error.max() <= 1, f"max uint8 error {error.max()}"

    classes_path = tmp_path / "classes.tif"
    predict_scene(model, path, classes_path, processor, **kwargs)
    classes = _read(classes_path)[0][0]
    top2 = np.sort(np.nan_to_num(reference), axis=0)[-2:]
    confident = valid & (top2[1] - top2[0] > 0.02)
    np.testing.assert_array_equal(classes[confident], reference.argmax(axis=0)[confident])

    # Seams: at tile edges the step between neighbouring pixels must be the untiled one. Plain averaging
    # ("uniform") of the same tiles does show steps there: the check can fail.
    starts = tile_starts(db.shape[2], 96, 32)
    edges = sorted({s for s in starts[1:]} | {s + 96 for s in starts[:-1]})

    def seam(blend: str) -> float:
        target = tmp_path / f"seam-{blend}.tif"
        predict_scene(model, path, target, processor, output_type="probabilities", blend=blend, **kwargs)
        probabilities = _read(target)[0].astype(np.float64) / PROBABILITY_SCALE
        step_tiled = np.diff(probabilities, axis=2)[:, :, [e - 1 for e in edges]]
        step_untiled = np.diff(reference, axis=2)[:, :, [e - 1 for e in edges]]
        return float(np.nanmax(np.abs(step_tiled - step_untiled)))

    assert seam("cosine") <= 2.5 / PROBABILITY_SCALE
    assert seam("uniform") > 10 / PROBABILITY_SCALE


def test_known_pattern_georeferencing_and_nodata(scene, processor, tmp_path: Path) -> None:
    path, db, water = scene
    # -13 dB, halfway between water and land, in normalised pixel values
    threshold = float(processor.db_to_pixel_values(np.full((2, 1, 1), -13.0, np.float32))[0, 0, 0])
    out = tmp_path / "water.tif"
    result = predict_scene(
        ThresholdNet(threshold), path, out, processor, tile_size=128, overlap=16, progress=False
    )
    classes, meta = _read(out)
    assert result.num_tiles == len(tile_starts(300, 128, 16)) * len(tile_starts(457, 128, 16))
    assert meta["crs"] == rasterio.crs.CRS.from_string(CRS)
    assert meta["transform"] == TRANSFORM
    assert meta["nodata"] == OUTPUT_NODATA
    assert classes.shape == (1, 300, 457) and classes.dtype == np.uint8
    nodata = np.isnan(db[0])
    assert (classes[0][nodata] == OUTPUT_NODATA).all()
    predicted_water = classes[0][~nodata] == 0
    assert (predicted_water == water[~nodata]).mean() > 0.99
    with rasterio.open(out) as src:  # Cloud-Optimized GeoTIFF, tiled and compressed
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert src.profile["tiled"] and src.profile["compress"] == "deflate"


def test_scene_smaller_than_a_tile_and_probabilities(processor, tmp_path: Path) -> None:
    db, _ = _pattern(50, 77, seed=1)
    path = tmp_path / "small.tif"
    write_geotiff(path, db, crs=CRS, transform=TRANSFORM)
    torch.manual_seed(0)
    model = EdgeSensitiveNet(num_labels=4)
    out = tmp_path / "small-probabilities.tif"
    result = predict_scene(
        model, path, out, processor, tile_size=128, overlap=32, output_type="probabilities", progress=False
    )
    probabilities, meta = _read(out)
    assert result.num_tiles == 1 and probabilities.shape == (4, 50, 77)
    assert np.abs(probabilities.astype(int).sum(axis=0) - PROBABILITY_SCALE).max() <= 4
    assert meta["transform"] == TRANSFORM


def test_all_nodata_tiles_are_skipped(processor, tmp_path: Path) -> None:
    db, _ = _pattern(256, 256, seed=2)
    db[:, :, :160] = -99.0  # nodata value in the file
    path = tmp_path / "edge.tif"
    write_geotiff(path, db, crs=CRS, transform=TRANSFORM, nodata=-99.0)
    model = EdgeSensitiveNet()
    calls = []
    model.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    out = tmp_path / "edge-classes.tif"
    result = predict_scene(
        model, path, out, processor, tile_size=64, overlap=16, batch_size=2, progress=False
    )
    classes = _read(out)[0][0]
    assert result.tiles_skipped > 0 and sum(calls) == result.num_tiles - result.tiles_skipped
    assert (classes[:, :160] == OUTPUT_NODATA).all() and (classes[:, 160:] < 3).all()


def test_interrupted_run_leaves_no_output(scene, processor, tmp_path: Path) -> None:
    path, _, _ = scene
    out = tmp_path / "crash.tif"
    with pytest.raises(RuntimeError, match="simulated failure"):
        predict_scene(
            FailingNet(), path, out, processor, tile_size=64, overlap=16, batch_size=2, progress=False
        )
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary files left behind either
    # an existing result is left untouched by a failing run (replacing it was asked for)
    out.write_bytes(b"previous result")
    with pytest.raises(RuntimeError, match="simulated failure"):
        predict_scene(
            FailingNet(), path, out, processor, tile_size=64, overlap=16, batch_size=2, progress=False,
            overwrite=True,
        )  # fmt: skip
    assert out.read_bytes() == b"previous result"
    assert [p.name for p in tmp_path.iterdir()] == ["crash.tif"]


def test_bf16_matches_fp32(scene, processor, tmp_path: Path) -> None:
    """bf16 autocast vs fp32: uint8 probabilities within 6 (p within ~0.024) and >= 99 % equal classes."""
    path, db, _ = scene
    torch.manual_seed(0)
    model = EdgeSensitiveNet()
    outputs = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.tif"
        result = predict_scene(
            model, path, out, processor, tile_size=128, overlap=32, output_type="probabilities",
            precision=precision, progress=False, cog=False,
        )  # fmt: skip
        assert result.autocast_dtype == {"fp32": "float32", "bf16": "bfloat16"}[precision]
        outputs[precision] = _read(out)[0].astype(np.int32)
    valid = np.isfinite(db[0])
    difference = np.abs(outputs["bf16"] - outputs["fp32"])[:, valid]
    assert difference.max() <= 6, difference.max()
    agreement = (outputs["bf16"].argmax(axis=0) == outputs["fp32"].argmax(axis=0))[valid].mean()
    assert agreement >= 0.99


def test_concurrent_scenes_equal_sequential_ones(scene, processor, tmp_path: Path) -> None:
    """Two scenes predicted at once from two threads (a Space serving two users) give the files that
    one at a time gives: GDAL I/O, the reused logits buffers and the heap settings are per call or locked."""
    import threading

    path, _, _ = scene
    torch.manual_seed(0)
    model = EdgeSensitiveNet()

    def run(name: str, output_type: str) -> None:
        predict_scene(
            model, path, tmp_path / name, processor, tile_size=64, overlap=16, batch_size=3,
            output_type=output_type, progress=False, cog=False,
        )  # fmt: skip

    run("classes.tif", "classes")
    run("probabilities.tif", "probabilities")
    threads = [
        threading.Thread(target=run, args=(f"{kind}-concurrent.tif", kind))
        for kind in ("classes", "probabilities")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for kind in ("classes", "probabilities"):
        np.testing.assert_array_equal(
            _read(tmp_path / f"{kind}-concurrent.tif")[0], _read(tmp_path / f"{kind}.tif")[0]
        )


def test_memory_is_bounded_by_a_tile_and_a_thin_band() -> None:
    """The accumulators do not grow with the scene height, and with its width only through the overlap band."""

    def buffers(height: int, width: int) -> _TileBlender:
        return _TileBlender(
            writer=None, height=height, width=width, tile_size=256, row_starts=tile_starts(height, 256, 32),
            col_starts=tile_starts(width, 256, 32), num_labels=10, output_type="classes",
            weights_2d=np.ones((256, 256), np.float32),
        )  # fmt: skip

    small, large = buffers(4096, 4096), buffers(16384, 16384)
    # the columns a tile shares with the next one: ~32 (tiles are spread evenly), whatever the scene size
    for blender in (small, large):
        assert blender.left.shape[:2] == (10, 256) and 32 <= blender.left.shape[2] <= 48
    assert large.carry.shape[1] <= 40  # the overlap band: ~32 rows, not a strip of 256
    assert large.carry.nbytes <= 10 * 40 * 16384 * 4


@pytest.mark.skipif(not REAL_SAR.is_dir(), reason=f"real Sentinel-1 samples not found at {REAL_SAR}")
@pytest.mark.parametrize(
    "name, expected_crs",
    [
        ("Spain_7370579_S1Hand.tif", "EPSG:4326"),
        ("S1A__IW___A_20150309T173017_VV_grd_mli_geo_norm_db.tif", "EPSG:32631"),
    ],
)
def test_real_sentinel1_scene_end_to_end(name: str, expected_crs: str, tmp_path: Path) -> None:
    from di3cl_hf import DI3CLConfig, DI3CLForSemanticSegmentation

    source = REAL_SAR / name
    if not source.is_file():
        pytest.skip(f"{source} missing")
    torch.manual_seed(0)
    config = DI3CLConfig(backbone="resnet18", num_channels=2, num_labels=2, decoder_hidden_size=16,
                         auxiliary_channels=16, id2label={0: "not water", 1: "water"})  # fmt: skip
    model = DI3CLForSemanticSegmentation(config)
    out = tmp_path / f"{source.stem}-water.tif"
    result = predict_scene(model, source, out, DI3CLImageProcessor(num_channels=2), tile_size=192, overlap=32,
                           batch_size=3, progress=False)  # fmt: skip
    assert result.input_kind == "db"
    with rasterio.open(source) as src:
        crs, transform, bounds, shape = src.crs, src.transform, src.bounds, src.shape
        data = src.read()
        invalid = ~np.isfinite(data).all(axis=0)
        if src.nodata is not None and np.isfinite(src.nodata):
            invalid |= (data == src.nodata).any(axis=0)
    with rasterio.open(out) as dst:
        assert dst.crs == crs and dst.crs.to_string() == expected_crs
        assert dst.transform == transform and dst.bounds == bounds and dst.shape == shape
        classes = dst.read(1)
    assert (classes[invalid] == OUTPUT_NODATA).all()  # (these two samples happen to have no nodata pixels)
    assert np.isin(classes[~invalid], [0, 1]).all()


def _tiny_encoder():
    from di3cl_hf import DI3CLConfig, DI3CLModel

    torch.manual_seed(0)
    return DI3CLModel(DI3CLConfig(backbone="resnet18", num_channels=2)).eval()


def test_embeddings_pooled_dense_npy_and_parquet(processor, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    paths = []
    for index, size in enumerate([64, 64, 96]):
        db, _ = _pattern(size, size, seed=index)
        paths.append(write_geotiff(tmp_path / f"patch{index}.tif", db, crs=CRS, transform=TRANSFORM))
    model = _tiny_encoder()
    pooled = embed_files(model, processor, paths, batch_size=2, precision="fp32", progress=False)
    assert [p.shape for p in pooled] == [(512,)] * 3
    pixel_values, _ = processor.sar_to_pixel_values(_pattern(96, 96, seed=2)[0])
    with torch.inference_mode():
        direct = model(torch.from_numpy(pixel_values)[None]).pooler_output[0].numpy()
    np.testing.assert_allclose(pooled[2], direct, rtol=1e-4, atol=1e-5)

    saved = save_embeddings(tmp_path / "pooled.npy", pooled, paths)
    np.testing.assert_array_equal(np.load(saved), np.stack(pooled))
    assert (tmp_path / "pooled.files.txt").read_text().split() == [str(p) for p in paths]

    dense = embed_files(model, processor, paths, pooling="dense", precision="fp32", progress=False)
    assert [d.shape for d in dense] == [(512, 2, 2), (512, 2, 2), (512, 3, 3)]
    with pytest.raises(ValueError, match="parquet"):
        save_embeddings(tmp_path / "dense.npy", dense, paths)
    assert not (tmp_path / "dense.npy").exists()
    table = pq.read_table(save_embeddings(tmp_path / "dense.parquet", dense, paths)).to_pylist()
    assert [row["path"] for row in table] == [str(p) for p in paths]
    restored = np.asarray(table[2]["embedding"], np.float32).reshape(table[2]["shape"])
    np.testing.assert_array_equal(restored, dense[2])


@pytest.mark.parametrize("num_classes", [1, 2, 10])
def test_argmax_planes_equals_numpy_argmax(num_classes: int) -> None:
    rng = np.random.default_rng(num_classes)
    planes = rng.normal(size=(num_classes, 37, 53)).astype(np.float32)
    planes[:, :5] = np.round(planes[:, :5])  # many ties: the first maximum wins, as in numpy
    result = argmax_planes(planes)
    assert result.dtype == np.uint8
    np.testing.assert_array_equal(result, planes.argmax(axis=0))


# ------------------------------------------------------------------------- outputs and arguments (issue 16)


class NeverRunNet(EdgeSensitiveNet):
    """Fails the test if the model is run: checks must come before any computation."""

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the model ran although the arguments were bad")


def test_output_path_is_checked_before_computing(scene, processor, tmp_path: Path) -> None:
    import os

    from di3cl_hf.inference.outputs import OutputExistsError, OutputPathError

    source, _, _ = scene
    local = tmp_path / "scene.tif"
    local.write_bytes(source.read_bytes())
    before = local.read_bytes()
    (tmp_path / "link.tif").symlink_to(local)
    os.link(local, tmp_path / "hard.tif")
    kwargs = dict(tile_size=64, overlap=16, progress=False)
    for target in (local, tmp_path / "link.tif", tmp_path / "hard.tif"):
        for overwrite in (False, True):
            with pytest.raises(OutputPathError, match="same file"):
                predict_scene(NeverRunNet(), local, target, processor, overwrite=overwrite, **kwargs)
    assert local.read_bytes() == before
    existing = tmp_path / "old.tif"
    existing.write_bytes(b"previous result")
    with pytest.raises(OutputExistsError, match="overwrite=True") as error:
        predict_scene(NeverRunNet(), local, existing, processor, **kwargs)
    assert isinstance(error.value, FileExistsError) and existing.read_bytes() == b"previous result"
    with pytest.raises(OutputPathError, match="is a directory"):
        predict_scene(NeverRunNet(), local, tmp_path, processor, **kwargs)
    with pytest.raises(OutputPathError, match="does not exist"):
        predict_scene(NeverRunNet(), local, tmp_path / "missing" / "x.tif", processor, **kwargs)
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize(
    "tile_size, overlap, match",
    [
        (0, 0, "tile_size must be a positive"),
        (-64, 16, "tile_size"),
        (64, 64, "overlap"),
        (64, -1, "overlap"),
    ],
)
def test_bad_tiling_is_a_clear_error(scene, processor, tmp_path: Path, tile_size, overlap, match) -> None:
    with pytest.raises(ValueError, match=match):
        predict_scene(NeverRunNet(), scene[0], tmp_path / "x.tif", processor, tile_size=tile_size, overlap=overlap,
                      progress=False)  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_processor_and_model_channels_must_agree(scene, tmp_path: Path) -> None:
    from di3cl_hf.loading import ChannelMismatchError

    with pytest.raises(ChannelMismatchError, match=r"prepares 1 channel\(s\) but the model takes 2"):
        predict_scene(NeverRunNet(), scene[0], tmp_path / "x.tif", DI3CLImageProcessor(num_channels=1),
                      tile_size=64, overlap=16, progress=False)  # fmt: skip
    with pytest.raises(ChannelMismatchError):
        embed_files(NeverRunNet(), DI3CLImageProcessor(num_channels=1), [scene[0]], progress=False)


def test_save_embeddings_never_replaces_an_input_or_an_existing_file(tmp_path: Path) -> None:
    from di3cl_hf.inference.outputs import OutputExistsError, OutputPathError

    patch = tmp_path / "a.npy"
    np.save(patch, np.zeros((2, 8, 8), np.float32))
    before = patch.read_bytes()
    features = [np.ones(4, np.float32)]
    for overwrite in (False, True):
        with pytest.raises(OutputPathError, match="same file"):
            save_embeddings(patch, features, [patch], overwrite=overwrite)
    assert patch.read_bytes() == before
    out = save_embeddings(tmp_path / "f.npy", features, [patch])
    with pytest.raises(OutputExistsError, match="overwrite"):
        save_embeddings(out, [np.zeros(4, np.float32)], [patch])
    np.testing.assert_array_equal(np.load(out), [features[0]])
    save_embeddings(out, [np.zeros(4, np.float32)], [patch], overwrite=True)
    np.testing.assert_array_equal(np.load(out), np.zeros((1, 4), np.float32))


def test_fp16_precision(scene, processor, tmp_path: Path) -> None:
    """--precision fp16 (inference needs no loss scaling) runs and agrees with fp32 on most pixels."""
    path, db, _ = scene
    torch.manual_seed(0)
    model = EdgeSensitiveNet()
    classes = {}
    for precision in ("fp32", "fp16"):
        out = tmp_path / f"{precision}.tif"
        result = predict_scene(model, path, out, processor, tile_size=128, overlap=32, precision=precision,
                               progress=False, cog=False)  # fmt: skip
        assert result.autocast_dtype == {"fp32": "float32", "fp16": "float16"}[precision]
        classes[precision] = _read(out)[0][0]
    valid = np.isfinite(db[0])
    assert (classes["fp16"] == classes["fp32"])[valid].mean() >= 0.99


# ------------------------------------------------------------------ sources and sinks (issue 14)


@pytest.mark.parametrize("output_type", ["classes", "probabilities"])
def test_every_source_and_the_in_memory_sink_equal_the_path_route(
    scene, processor, tmp_path: Path, output_type: str
) -> None:
    """A path, an open rasterio dataset (file and MemoryFile), an in-memory SARRaster and per-polarisation
    files give the file's prediction bit for bit; without an output path it comes back as arrays with the
    scene's CRS and transform."""
    from rasterio.io import MemoryFile

    from di3cl_hf.data.sario import SARRaster, read_sar

    path, db, _ = scene
    torch.manual_seed(0)
    model = EdgeSensitiveNet()
    options = dict(tile_size=96, overlap=24, batch_size=3, progress=False, output_type=output_type)
    written = predict_scene(model, path, tmp_path / "out.tif", processor, **options)
    expected, meta = _read(written.path)
    assert written.array is None and written.classes is None

    def check(result) -> None:
        assert result.path is None and result.array.dtype == np.uint8
        assert np.array_equal(result.array, expected)
        assert result.crs == meta["crs"] and result.transform == meta["transform"]

    check(predict_scene(model, read_sar(path), None, processor, **options))  # in memory, from a file
    raster = SARRaster(db.copy(), np.isfinite(db).all(axis=0), CRS, TRANSFORM, None, Path("mem"))
    check(predict_scene(model, raster, None, processor, **options))  # built in memory
    with rasterio.open(path) as dataset:
        check(predict_scene(model, dataset, None, processor, **options))
        assert not dataset.closed  # the caller's dataset stays open
    with MemoryFile(path.read_bytes()) as memory, memory.open() as dataset:
        check(predict_scene(model, dataset, None, processor, **options))
    vv, vh = tmp_path / "s_vv.tif", tmp_path / "s_vh.tif"
    write_geotiff(vv, db[:1], crs=CRS, transform=TRANSFORM, nodata=float("nan"))
    write_geotiff(vh, db[1:], crs=CRS, transform=TRANSFORM, nodata=float("nan"))
    check(predict_scene(model, [vv, vh], None, processor, **options))
    result = predict_scene(model, [vv, vh], None, processor, **options)
    if output_type == "classes":
        assert np.array_equal(result.classes, expected[0]) and result.probabilities is None
    else:
        assert result.probabilities.shape == (3, *db.shape[1:])
        classes = result.classes
        assert (classes[~np.isfinite(db).all(axis=0)] == OUTPUT_NODATA).all()
        assert np.array_equal(classes == OUTPUT_NODATA, expected[0] == OUTPUT_NODATA)


def test_in_memory_output_checks_the_sink_path_only_when_given(scene, processor, tmp_path: Path) -> None:
    path, _, _ = scene
    with pytest.raises(ValueError, match="same file"):
        predict_scene(EdgeSensitiveNet(), path, path, processor, tile_size=96, overlap=24, progress=False)
    with pytest.raises(TypeError, match="SARRaster"):
        predict_scene(EdgeSensitiveNet(), 12345, None, processor, tile_size=96, overlap=24, progress=False)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tile_runner_stages_tiles_in_pinned_memory_on_cuda() -> None:
    from di3cl_hf.inference.scene import _TileRunner

    model = EdgeSensitiveNet().eval()
    weights = np.outer(blend_weights(64, 16), blend_weights(64, 16))
    tiles = torch.randn(3, 64, 64, 2).permute(0, 3, 1, 2)  # channels-last, as the scene loop builds them
    cuda = _TileRunner(model.cuda(), torch.device("cuda"), None, weights, channels_last=True)
    got = cuda(tiles).copy()
    assert cuda._pinned is not None and cuda._pinned.is_pinned() and cuda._ring[0].is_pinned()
    cpu = _TileRunner(model.cpu(), torch.device("cpu"), None, weights, channels_last=True)
    assert cpu._pinned is None
    np.testing.assert_allclose(got, cpu(tiles), atol=1e-4)
