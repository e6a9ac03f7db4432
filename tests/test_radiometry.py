"""SAR radiometry: kind detection, conversion to dB, masking, clipping, scaling, channel rules."""

from __future__ import annotations

import numpy as np
import pytest

from di3cl_hf.radiometry import (
    DEFAULT_DN16_CALIBRATION_DB,
    allowed_kinds,
    check_kind,
    clip_range,
    match_channels,
    resolve_kind,
    sar_to_unit,
    scale_to_unit,
    to_db,
    unit_to_db,
)

RNG = np.random.default_rng(0)
DB = RNG.normal(-12.0, 4.0, size=(2, 16, 16)).astype(np.float32)


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (DB, "db"),
        (10 ** (DB / 10), "intensity"),
        (10 ** (DB / 20), "intensity"),  # amplitude cannot be told from intensity: declare it
        (np.array([[[-0.5, -0.5, 0.5], [-0.2, 0.3, -0.4]]], np.float32), "db"),  # median < 0
        (np.array([[[-3.0, 0.5, 0.6], [0.2, 0.3, 0.4]]], np.float32), "db"),  # a value below -1
        (
            np.array([[[-0.001, 0.2], [0.3, 0.4]]], np.float32),
            "intensity",
        ),  # tiny negatives: noise subtraction
        (np.full((1, 4, 4), -3.0, np.float64), "db"),
        (RNG.integers(0, 255, (1, 4, 4)).astype(np.uint8), "dn8"),
        (RNG.integers(0, 4000, (2, 4, 4)).astype(np.uint16), "dn16"),
        (RNG.integers(0, 4000, (2, 4, 4)).astype(np.int16), "dn16"),
        ((RNG.normal(size=(1, 4, 4)) + 1j * RNG.normal(size=(1, 4, 4))).astype(np.complex64), "complex"),
        (np.full((1, 4, 4), np.nan, np.float32), "db"),
    ],
)
def test_auto_detection_rule(array, expected):
    assert resolve_kind(array) == expected


def test_detection_ignores_invalid_pixels():
    array = np.full((1, 4, 4), 0.1, np.float32)
    array[0, 0, 0] = -99.0  # a nodata value left in place
    assert resolve_kind(array) == "db"
    valid = np.ones((4, 4), bool)
    valid[0, 0] = False
    assert resolve_kind(array, valid_mask=valid) == "intensity"


def test_declared_kind_contradictions_raise():
    with pytest.raises(ValueError, match="complex"):
        resolve_kind(np.ones((1, 2, 2), np.complex64), "db")
    with pytest.raises(ValueError, match="real dtype"):
        resolve_kind(np.ones((1, 2, 2), np.float32), "complex")
    with pytest.raises(ValueError, match="unknown radiometry kind"):
        resolve_kind(np.ones((1, 2, 2), np.float32), "sigma0")


def test_conversions_to_db():
    intensity = np.array([[[0.1, 1.0], [0.01, 2.0]]], np.float32)
    db, valid = to_db(intensity, "intensity")
    np.testing.assert_allclose(db[0], [[-10, 0], [-20, 10 * np.log10(2)]], atol=1e-5)
    assert valid.all()
    db, _ = to_db(np.sqrt(intensity), "amplitude")
    np.testing.assert_allclose(db[0], [[-10, 0], [-20, 10 * np.log10(2)]], atol=1e-5)
    db, _ = to_db(np.array([[[3 + 4j]]], np.complex64))
    np.testing.assert_allclose(db, 20 * np.log10(5.0), atol=1e-5)
    db, _ = to_db(np.array([[[3 + 4j]]], np.complex64), calibration_db=20.0)
    np.testing.assert_allclose(db, 20 * np.log10(5.0) - 20, atol=1e-5)
    db, _ = to_db(np.array([[[1000]]], np.uint16))
    np.testing.assert_allclose(db, 60.0 - DEFAULT_DN16_CALIBRATION_DB, atol=1e-5)
    db, _ = to_db(np.array([[[0, 255, 51]]], np.uint8), db_range=(-30.0, 5.0))
    np.testing.assert_allclose(db[0, 0], [-30.0, 5.0, -30 + 0.2 * 35], atol=1e-4)
    db, _ = to_db(DB, "db")
    np.testing.assert_array_equal(db, DB)


def test_zero_linear_values_are_floored_not_masked():
    db, valid = to_db(np.zeros((1, 2, 2), np.float32), "intensity")
    assert valid.all() and (db <= -99).all()


def test_nodata_nan_inf_and_given_mask():
    array = DB.copy()
    array[0, 0, 0] = -99.0
    array[1, 1, 1] = np.nan
    array[0, 2, 2] = np.inf
    mask = np.ones((16, 16), bool)
    mask[3, 3] = False
    db, valid = to_db(array, "db", nodata=-99.0, valid_mask=mask)
    assert valid.sum() == 16 * 16 - 4
    for row, col in [(0, 0), (1, 1), (2, 2), (3, 3)]:
        assert not valid[row, col] and np.isnan(db[:, row, col]).all()
    assert np.isfinite(db[:, valid]).all()
    with pytest.raises(ValueError, match="valid_mask has shape"):
        to_db(array, valid_mask=np.ones((3, 3), bool))


@pytest.mark.parametrize("bands", [3, 4])
def test_wrong_band_count_names_what_was_expected(bands):
    # the conversion runs band by band on any count (quad-pol, Pauli RGB); adapting to a 2-channel
    # model needs 1 or 2 bands and says how to choose them
    db, _ = to_db(np.full((bands, 4, 4), -10.0, np.float32), "db")
    assert db.shape == (bands, 4, 4)
    with pytest.raises(
        ValueError, match=rf"{bands} bands, expected 1 or 2 \(VV, VH\).*bands=\(\"VV\", \"VH\"\)"
    ):
        sar_to_unit(np.zeros((bands, 4, 4), np.float32), num_channels=2)
    with pytest.raises(ValueError, match=rf"{bands} bands, expected 1 or 2 \(VV, VH\)"):
        match_channels(np.zeros((bands, 4, 4), np.float32), 2)


def test_three_band_composite_into_three_channels_per_band():
    """A Pauli RGB (8-bit, 3 bands) into a 3-channel model: dn8 per band, no replication."""
    rgb = np.stack([np.full((4, 4), v, np.uint8) for v in (0, 128, 255)])
    unit, valid = sar_to_unit(rgb, num_channels=3)
    assert valid.all()
    np.testing.assert_allclose(unit[:, 0, 0], [0.0, 128 / 255, 1.0], atol=1e-6)


@pytest.mark.parametrize("kind", ["amplitude", "intensity", "db", "dn16"])
def test_declared_kind_applies_to_uint8(kind):
    """Issue #16 item 4: a declared kind is applied to 8-bit values, not silently dn8."""
    dn = np.array([[[10, 100]]], np.uint8)
    db, _ = to_db(dn, kind)
    expected = {
        "amplitude": 20 * np.log10([10.0, 100.0]),
        "intensity": 10 * np.log10([10.0, 100.0]),
        "db": [10.0, 100.0],
        "dn16": 20 * np.log10([10.0, 100.0]) - DEFAULT_DN16_CALIBRATION_DB,
    }[kind]
    np.testing.assert_allclose(db[0, 0], expected, rtol=1e-6)
    assert resolve_kind(dn, kind) == kind and resolve_kind(dn) == "dn8"


def test_allowed_kinds_per_dtype_and_messages():
    assert allowed_kinds("complex64") == ("auto", "complex")
    assert "amplitude" in allowed_kinds("uint16") and "dn8" not in allowed_kinds("uint16")
    assert "dn8" in allowed_kinds("uint8") and "dn8" in allowed_kinds("float32")
    with pytest.raises(
        ValueError,
        match=r"'amplitude' does not apply to complex64 data.*allowed for complex64: auto, complex",
    ):
        to_db(np.ones((1, 2, 2), np.complex64), "amplitude")
    with pytest.raises(
        ValueError, match=r"'dn8' does not apply to uint16 data.*auto, dn16, amplitude, intensity, db"
    ):
        check_kind(np.uint16, "dn8")
    with pytest.raises(ValueError, match="mask, not SAR"):
        resolve_kind(np.ones((1, 2, 2), bool))
    amplitude = np.array([[[1000, 10]]], np.uint16)  # 16-bit DN declared as amplitude: honoured
    np.testing.assert_allclose(to_db(amplitude, "amplitude")[0][0, 0], [60.0, 20.0], rtol=1e-6)


def test_clipping_fixed_and_percentiles():
    db = (
        np.stack([np.linspace(-40, 20, 101), np.linspace(-25, -5, 101)]).reshape(2, 1, 101).astype(np.float32)
    )
    low, high = clip_range(db, None, (-30.0, 5.0))
    np.testing.assert_array_equal(low, [-30, -30])
    unit = scale_to_unit(db, low, high)
    assert unit.min() == 0.0 and unit.max() == 1.0
    np.testing.assert_allclose(unit[0, 0, 50], (-10 + 30) / 35, atol=1e-6)
    low, high = clip_range(db, np.ones((1, 101), bool), (-30.0, 5.0), clip_percentiles=(10, 90))
    np.testing.assert_allclose(low, [-34.0, -23.0], atol=1e-4)
    np.testing.assert_allclose(high, [14.0, -7.0], atol=1e-4)
    np.testing.assert_allclose(
        unit_to_db(scale_to_unit(db, low, high), low, high)[1, 0, 50], -15.0, atol=1e-4
    )
    with pytest.raises(ValueError, match="clip_percentiles"):
        clip_range(db, None, (-30.0, 5.0), clip_percentiles=(90, 10))
    with pytest.raises(ValueError, match="db_range"):
        clip_range(db, None, (5.0, -30.0))


def test_channel_rules():
    vv, vh = np.full((1, 2, 2), 1.0), np.full((1, 2, 2), 2.0)
    dual = np.concatenate([vv, vh])
    assert match_channels(vv, 2).tolist() == np.concatenate([vv, vv]).tolist()  # replicated
    assert match_channels(dual, 1).tolist() == vv.tolist()  # VV kept
    assert match_channels(dual, 3).tolist() == np.concatenate([vv, vv, vv]).tolist()  # release's grey
    assert match_channels(dual, 2) is dual
    with pytest.raises(ValueError, match="num_channels"):
        match_channels(dual, 4)


def test_sar_to_unit_whole_chain():
    intensity = 10 ** (DB / 10)
    intensity[:, 0, :] = 0.0
    unit, valid = sar_to_unit(intensity, nodata=0.0, num_channels=2, fill_value=(0.25, 0.75))
    assert unit.dtype == np.float32 and unit.shape == (2, 16, 16)
    assert not valid[0].any() and valid[1:].all()
    np.testing.assert_allclose(unit[:, 0, :], np.array([[0.25] * 16, [0.75] * 16]))
    expected = np.clip((DB[:, 1:] + 30) / 35, 0, 1)
    np.testing.assert_allclose(unit[:, 1:], expected, atol=1e-5)
