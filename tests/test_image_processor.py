"""DI3CLImageProcessor: every input kind, masking, layout rules, save/load, remote code, real Sentinel-1 files."""

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

from di3cl_hf.image_processing_di3cl import DI3CLImageProcessor

REAL_SAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real-sar"
RNG = np.random.default_rng(0)
DB = RNG.normal(-12.0, 5.0, size=(2, 24, 20)).astype(np.float32)


def _expected(db: np.ndarray, processor: DI3CLImageProcessor) -> np.ndarray:
    """Hand-written reference: clip to db_range, scale to [0, 1], normalise."""
    low, high = processor.db_range
    unit = (np.clip(db, low, high) - low) / (high - low)
    mean = np.asarray(processor.image_mean).reshape(-1, 1, 1)
    std = np.asarray(processor.image_std).reshape(-1, 1, 1)
    return ((unit - mean) / std).astype(np.float32)


def _pixels(processor, images, **kwargs) -> np.ndarray:
    out = processor(images, return_tensors="pt", **kwargs)
    assert out["pixel_values"].dtype == torch.float32 and out["pixel_values"].ndim == 4
    return out["pixel_values"].numpy()


def test_db_float_two_bands():
    processor = DI3CLImageProcessor(num_channels=2)
    np.testing.assert_allclose(_pixels(processor, DB)[0], _expected(DB, processor), atol=1e-5)


def test_linear_intensity_and_declared_amplitude_match_db():
    processor = DI3CLImageProcessor(num_channels=2)
    expected = _expected(DB, processor)
    np.testing.assert_allclose(_pixels(processor, 10 ** (DB / 10))[0], expected, atol=1e-4)
    amplitude = DI3CLImageProcessor(num_channels=2, input_kind="amplitude")
    np.testing.assert_allclose(_pixels(amplitude, 10 ** (DB / 20))[0], expected, atol=1e-4)
    # a per-call override works too
    np.testing.assert_allclose(
        _pixels(processor, 10 ** (DB / 20), input_kind="amplitude")[0], expected, atol=1e-4
    )


def test_uint16_dn():
    processor = DI3CLImageProcessor(num_channels=2, calibration_db=50.0)
    dn = np.round(10 ** ((DB + 50.0) / 20)).astype(np.uint16)
    expected = _expected(20 * np.log10(dn.astype(np.float64)) - 50.0, processor)
    np.testing.assert_allclose(_pixels(processor, dn)[0], expected, atol=1e-4)


def test_complex_slc():
    processor = DI3CLImageProcessor(num_channels=1)
    phase = RNG.uniform(0, 2 * np.pi, size=DB[:1].shape)
    slc = (10 ** (DB[:1] / 20) * np.exp(1j * phase)).astype(np.complex64)
    np.testing.assert_allclose(_pixels(processor, slc)[0], _expected(DB[:1], processor), atol=1e-4)


def test_8bit_rgb_from_pipelines_is_grey_dn8():
    processor = DI3CLImageProcessor(
        num_channels=2, input_kind="db"
    )  # an 8-bit RGB image is a display image (dn8) whatever the processor's default kind
    rgb = RNG.integers(0, 256, size=(24, 20, 3)).astype(np.uint8)
    values = _pixels(processor, Image.fromarray(rgb))[0]
    grey = rgb.astype(np.float32).mean(axis=-1) / 255.0
    mean, std = np.asarray(processor.image_mean), np.asarray(processor.image_std)
    expected = (grey[None] - mean.reshape(-1, 1, 1)) / std.reshape(-1, 1, 1)
    np.testing.assert_allclose(values, expected, atol=1e-5)
    # the same as an HWC uint8 array, an "L" image of the grey values gives dn8 too
    np.testing.assert_allclose(_pixels(processor, rgb)[0], expected, atol=1e-5)
    assert _pixels(processor, Image.fromarray(rgb).convert("L")).shape == (1, 2, 24, 20)
    # the release layout: 3 channels, ImageNet statistics; a grey image (R == G == B) gives replicated grey
    release = DI3CLImageProcessor(num_channels=3)
    grey_rgb = np.repeat(rgb[..., :1], 3, axis=-1)
    out = _pixels(release, Image.fromarray(grey_rgb))[0]
    assert out.shape == (3, 24, 20) and release.image_mean == [0.485, 0.456, 0.406]
    np.testing.assert_allclose(out[0] * 0.229 + 0.485, out[1] * 0.224 + 0.456, atol=1e-5)
    # a colour composite (Pauli RGB) keeps its channels in a 3-channel model: dn8 per channel
    colour = _pixels(release, Image.fromarray(rgb))[0]
    unit = colour * np.asarray(release.image_std).reshape(-1, 1, 1) + np.asarray(release.image_mean).reshape(
        -1, 1, 1
    )
    np.testing.assert_allclose(unit, np.moveaxis(rgb, -1, 0) / 255.0, atol=1e-5)
    # a per-call kind that cannot describe display values is refused, not silently dn8
    with pytest.raises(ValueError, match=r"'amplitude' does not apply to an 8-bit RGB\(A\) image"):
        processor(Image.fromarray(rgb), input_kind="amplitude")


@pytest.mark.parametrize("kind", ["amplitude", "intensity", "db"])
def test_declared_kind_is_applied_to_uint8_sar(kind):
    """Issue #16 item 4: uint8 SAR values declared amplitude / intensity / dB are converted as declared."""
    dn = RNG.integers(1, 256, size=(1, 24, 20)).astype(np.uint8)
    values = dn.astype(np.float64)
    db = {"amplitude": 20 * np.log10(values), "intensity": 10 * np.log10(values), "db": values}[kind]
    declared = DI3CLImageProcessor(num_channels=1, input_kind=kind, db_range=(0.0, 60.0))
    expected = _expected(db, declared)
    np.testing.assert_allclose(_pixels(declared, dn)[0], expected, atol=1e-4)
    per_call = DI3CLImageProcessor(num_channels=1, db_range=(0.0, 60.0))
    np.testing.assert_allclose(_pixels(per_call, dn, input_kind=kind)[0], expected, atol=1e-4)
    np.testing.assert_allclose(per_call.sar_to_db(dn, input_kind=kind)[0], db.astype(np.float32), rtol=1e-5)
    # "L" images are 8-bit SAR values too: the declared kind applies
    np.testing.assert_allclose(_pixels(declared, Image.fromarray(dn[0]))[0], expected, atol=1e-4)


def test_uint16_dn_declared_amplitude_and_complex_refusals():
    dn = RNG.integers(1, 5000, size=(2, 24, 20)).astype(np.uint16)
    amplitude = DI3CLImageProcessor(num_channels=2, input_kind="amplitude")
    np.testing.assert_allclose(
        _pixels(amplitude, dn)[0], _expected(20 * np.log10(dn.astype(np.float64)), amplitude), atol=1e-4
    )
    slc = (np.ones((1, 8, 8)) * np.exp(1j)).astype(np.complex64)
    for kind in ("amplitude", "intensity", "db"):
        with pytest.raises(ValueError, match=rf"'{kind}' does not apply to complex64 data.*auto, complex"):
            DI3CLImageProcessor(num_channels=1, input_kind=kind)(slc)
    with pytest.raises(ValueError, match=r"'dn8' does not apply to uint16 data"):
        DI3CLImageProcessor(num_channels=2)(dn, input_kind="dn8")


QUAD = RNG.normal(-15.0, 4.0, size=(4, 24, 20)).astype(np.float32)  # HH, HV, VH, VV
QUAD_NAMES = ("HH", "HV", "VH", "VV")


def test_bands_by_index_and_by_name():
    reference = DI3CLImageProcessor(num_channels=2)
    vv_vh = _pixels(reference, QUAD[[3, 2]])
    by_index = DI3CLImageProcessor(num_channels=2, bands=(4, 3))
    np.testing.assert_array_equal(_pixels(by_index, QUAD), vv_vh)
    by_name = DI3CLImageProcessor(num_channels=2, bands=("vv", "VH"))  # case-insensitive
    np.testing.assert_array_equal(_pixels(by_name, QUAD, band_names=QUAD_NAMES), vv_vh)
    np.testing.assert_array_equal(by_name.sar_to_pixel_values(QUAD, band_names=QUAD_NAMES)[0], vv_vh[0])
    np.testing.assert_array_equal(
        _pixels(by_name, QUAD[[3, 2]]), vv_vh
    )  # already chosen (a file read with bands)
    assert DI3CLImageProcessor.from_dict(by_name.to_dict()).bands == ["vv", "VH"]
    with pytest.raises(ValueError, match=r"'vv' chosen by name but the input's bands have no names"):
        by_name(QUAD)
    with pytest.raises(ValueError, match=r"band 'VV' not found; the input's bands are: HH, HV"):
        DI3CLImageProcessor(num_channels=1, bands=("VV",))(QUAD[:2], band_names=("HH", "HV"))
    with pytest.raises(ValueError, match=r"band 5 requested but the input has 4"):
        DI3CLImageProcessor(num_channels=2, bands=(5, 1))(QUAD)
    with pytest.raises(ValueError, match="1-based indexes or band names"):
        DI3CLImageProcessor(bands=(0,))
    with pytest.raises(ValueError, match=r"4 bands .*bands=\(\"VV\", \"VH\"\)"):
        reference(QUAD)


def test_pauli_rgb_array_into_a_three_channel_model():
    pauli = RNG.integers(0, 256, size=(3, 24, 20)).astype(np.uint8)
    processor = DI3CLImageProcessor(num_channels=3)
    values = _pixels(processor, pauli)[0]
    unit = values * np.asarray(processor.image_std).reshape(-1, 1, 1) + np.asarray(
        processor.image_mean
    ).reshape(-1, 1, 1)
    np.testing.assert_allclose(unit, pauli / 255.0, atol=1e-5)
    # the same composite decoded as float32 (a datasets row) and declared dn8 gives the same input
    np.testing.assert_allclose(
        _pixels(processor, pauli.astype(np.float32), input_kind="dn8")[0], values, atol=1e-6
    )


def test_channel_rules_and_layouts():
    dual = DI3CLImageProcessor(num_channels=2)
    single = DI3CLImageProcessor(num_channels=1)
    one_band = _pixels(dual, DB[:1])[0]
    np.testing.assert_allclose(one_band[1] * dual.image_std[1] + dual.image_mean[1], one_band[0] * dual.image_std[0] + dual.image_mean[0], atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(_pixels(single, DB)[0], _expected(DB[:1], single), atol=1e-5)  # VV kept
    hwc = np.moveaxis(DB, 0, -1)
    np.testing.assert_allclose(_pixels(dual, hwc), _pixels(dual, DB), atol=0)
    np.testing.assert_allclose(_pixels(dual, torch.from_numpy(DB)), _pixels(dual, DB), atol=0)
    np.testing.assert_allclose(_pixels(dual, DB[0]), _pixels(dual, DB[:1]), atol=0)  # [H, W]
    tiny = np.zeros((2, 3, 2), np.float32) - 10  # both axes short: channels first
    assert _pixels(dual, tiny).shape == (1, 2, 3, 2)
    assert _pixels(dual, tiny, input_data_format="channels_last").shape == (1, 2, 2, 3)
    batch = np.stack([DB, DB + 1])
    assert _pixels(dual, batch).shape == (2, 2, 24, 20)
    assert _pixels(dual, [DB, torch.from_numpy(DB)]).shape == (2, 2, 24, 20)
    with pytest.raises(ValueError, match=r"expected 1 or 2 SAR bands \(VV, VH\)"):
        dual(np.zeros((3, 24, 20), np.float32))
    with pytest.raises(ValueError, match="different sizes"):
        dual([DB, DB[:, :10]])


def test_nan_and_nodata_become_zero_with_valid_mask():
    array = DB.copy()
    array[:, :2] = np.nan
    array[:, -1, -1] = -99.0
    processor = DI3CLImageProcessor(num_channels=2, nodata_value=-99.0)
    out = processor(array, return_tensors="np", return_valid_mask=True)
    values, valid = out["pixel_values"][0], out["valid_mask"][0]
    assert np.isfinite(values).all()
    assert not valid[:2].any() and not valid[-1, -1] and valid[2:-1].all()
    assert (values[:, ~valid] == 0).all()
    np.testing.assert_allclose(values[:, valid], _expected(DB, processor)[:, valid], atol=1e-5)
    # a given mask is honoured
    mask = np.ones(DB.shape[1:], bool)
    mask[5, 5] = False
    assert (processor(DB, valid_mask=mask, return_tensors="np")["pixel_values"][0][:, 5, 5] == 0).all()
    # the single-array path agrees with the batch path
    single, single_valid = processor.sar_to_pixel_values(array)
    np.testing.assert_array_equal(single, values)
    np.testing.assert_array_equal(single_valid, valid)


def test_resize_keeps_invalid_pixels_out():
    array = np.full((1, 32, 32), -10.0, np.float32)
    array[:, :, :16] = np.nan
    processor = DI3CLImageProcessor(num_channels=1, do_resize=True, size=16)
    out = processor(array, return_tensors="np", return_valid_mask=True)
    assert out["pixel_values"].shape == (1, 1, 16, 16)
    right = out["pixel_values"][0, 0, :, 8:]
    np.testing.assert_allclose(right, _expected(np.full((1, 1, 1), -10.0), processor)[0, 0, 0], atol=1e-5)
    assert not out["valid_mask"][0][:, :8].any()


def test_percentile_clipping_uses_the_image():
    processor = DI3CLImageProcessor(num_channels=2, clip_percentiles=(2, 98), do_normalize=False)
    values = _pixels(processor, DB + 100.0)[0]  # far outside db_range: percentiles still spread it
    assert values.min() == 0.0 and values.max() == 1.0 and 0.3 < values.mean() < 0.7


def test_save_load_round_trip_exact(tmp_path):
    processor = DI3CLImageProcessor(
        num_channels=2, input_kind="intensity", db_range=(-25.0, 0.0), clip_percentiles=(1, 99),
        nodata_value=0.0, do_resize=True, size={"height": 16, "width": 12}, image_mean=[0.4, 0.3], image_std=[0.2, 0.1],
    )  # fmt: skip
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "DI3CLImageProcessor" and saved["db_range"] == [-25.0, 0.0]
    loaded = DI3CLImageProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == processor.to_dict()
    linear = 10 ** (DB / 10)
    assert torch.equal(
        loaded(linear, return_tensors="pt")["pixel_values"],
        processor(linear, return_tensors="pt")["pixel_values"],
    )
    # overriding a setting at load time
    assert DI3CLImageProcessor.from_pretrained(tmp_path, nodata_value=-1.0).nodata_value == -1.0


def test_fit_statistics():
    processor = DI3CLImageProcessor(num_channels=2)
    mean, std = processor.fit_statistics([DB, DB - 2])
    values = processor(np.stack([DB, DB - 2]), return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(values.mean(axis=(0, 2, 3)), 0.0, atol=1e-4)
    np.testing.assert_allclose(values.std(axis=(0, 2, 3)), 1.0, atol=1e-3)


def test_invalid_settings_raise():
    with pytest.raises(ValueError, match="num_channels"):
        DI3CLImageProcessor(num_channels=4)
    with pytest.raises(ValueError, match="input_kind"):
        DI3CLImageProcessor(input_kind="sigma0")
    with pytest.raises(ValueError, match="image_mean has 3 values"):
        DI3CLImageProcessor(num_channels=2, image_mean=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="size"):
        DI3CLImageProcessor(do_resize=True)


def test_post_process_semantic_segmentation():
    processor = DI3CLImageProcessor()
    logits = torch.randn(2, 4, 8, 8)
    plain = processor.post_process_semantic_segmentation({"logits": logits})
    assert [m.shape for m in plain] == [(8, 8), (8, 8)] and torch.equal(plain[0], logits[0].argmax(0))
    sized = processor.post_process_semantic_segmentation({"logits": logits}, target_sizes=[(16, 16), (5, 7)])
    assert sized[0].shape == (16, 16) and sized[1].shape == (5, 7) and sized[0].dtype == torch.long
    upsampled = torch.nn.functional.interpolate(
        logits[:1], size=(16, 16), mode="bilinear", align_corners=False
    )
    assert torch.equal(sized[0], upsampled[0].argmax(0))
    with pytest.raises(ValueError, match="target sizes"):
        processor.post_process_semantic_segmentation({"logits": logits}, target_sizes=[(4, 4)])


def test_image_segmentation_pipeline(tmp_path, tiny_config):
    from transformers import pipeline

    from di3cl_hf.modeling_di3cl import DI3CLForSemanticSegmentation

    labels = {0: "water", 1: "land"}
    config = tiny_config(num_labels=2, id2label=labels, label2id={v: k for k, v in labels.items()})
    torch.manual_seed(0)
    model = DI3CLForSemanticSegmentation(config).eval()
    segmenter = pipeline(
        "image-segmentation", model=model, image_processor=DI3CLImageProcessor(num_channels=2)
    )
    grey = (np.indices((40, 48)).sum(axis=0) % 256).astype(np.uint8)
    result = segmenter(Image.fromarray(grey).convert("RGB"))
    assert result and all(r["mask"].size == (48, 40) and r["label"] in labels.values() for r in result)


REMOTE_CHILD = textwrap.dedent(
    """
    import sys

    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name == "di3cl_hf" or name.startswith("di3cl_hf."):
                raise ImportError("di3cl_hf blocked")
            return None

    sys.meta_path.insert(0, _Block())
    import numpy as np
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(sys.argv[1], trust_remote_code=True)
    assert type(processor).__name__ == "DI3CLImageProcessor", type(processor)
    assert not type(processor).__module__.startswith("di3cl_hf"), type(processor).__module__
    values = processor(np.load(sys.argv[2]), return_tensors="np")["pixel_values"]
    np.save(sys.argv[3], values)
    """
)


def test_loads_through_remote_code_without_the_package(tmp_path):
    folder = tmp_path / "processor"
    DI3CLImageProcessor(num_channels=2).save_pretrained(folder)  # a plain save: code + auto_map by default
    assert {"image_processing_di3cl.py", "radiometry.py"} <= {p.name for p in folder.iterdir()}
    auto_map = json.loads((folder / "preprocessor_config.json").read_text())["auto_map"]
    assert auto_map["AutoImageProcessor"] == "image_processing_di3cl.DI3CLImageProcessor"
    np.save(tmp_path / "x.npy", DB)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_CHILD, str(folder), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        env=env, cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    expected = DI3CLImageProcessor(num_channels=2)(DB, return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected)


@pytest.mark.skipif(not REAL_SAR.is_dir(), reason=f"real SAR samples not found at {REAL_SAR}")
@pytest.mark.parametrize(
    "name", ["Spain_7370579_S1Hand.tif", "S1A__IW___A_20150309T173017_VV_grd_mli_geo_norm_db.tif"]
)
def test_real_sentinel1_files(name):
    rasterio = pytest.importorskip("rasterio")
    path = REAL_SAR / name
    if not path.exists():
        pytest.skip(f"{path} missing")
    with rasterio.open(path) as src:
        array = src.read()
        nodata = src.nodata
        valid = src.dataset_mask() > 0
    from di3cl_hf.radiometry import resolve_kind

    assert resolve_kind(array, valid_mask=valid) == "db"  # both files hold backscatter in dB
    processor = DI3CLImageProcessor(
        num_channels=2, nodata_value=None if nodata is None or np.isnan(nodata) else nodata
    )
    values, valid_out = processor.sar_to_pixel_values(array, valid_mask=valid)
    assert values.shape == (2, *array.shape[1:]) and np.isfinite(values).all()
    assert valid_out.mean() > 0.9
    low = (0 - np.asarray(processor.image_mean)) / np.asarray(processor.image_std)
    high = (1 - np.asarray(processor.image_mean)) / np.asarray(processor.image_std)
    for band in range(2):
        band_values = values[band][valid_out]
        assert low[band] - 1e-5 <= band_values.min() and band_values.max() <= high[band] + 1e-5
        # typical land / water backscatter sits well inside the range: medians within 2 std of the mean
        assert abs(float(np.median(band_values))) < 2.0
        assert 0.3 < float(band_values.std()) < 3.0
    batch = processor(array, valid_mask=valid, return_tensors="pt")["pixel_values"]
    np.testing.assert_array_equal(batch[0].numpy(), values)
