"""SAR radiometry: turn SAR pixel values of any common encoding into clipped, scaled network input.

Pure numpy (this file travels with the image processor through ``trust_remote_code``; it must not
import rasterio, datasets or anything outside numpy).

The pipeline every SAR array goes through, shared by the image processor, the pre-training
transform and scene inference:

1. :func:`resolve_kind` decides the radiometric encoding (declared, or detected by the rule below).
2. :func:`to_db` converts to backscatter in decibels and builds the validity mask (nodata, NaN,
   +/-inf, non-positive linear values).
3. :func:`clip_range` picks the clipping range: a fixed dB range, or per-band percentiles of the
   valid pixels.
4. :func:`scale_to_unit` clips to that range and scales to ``[0, 1]``.
5. :func:`match_channels` adapts the band count to the model (1 = VV, 2 = VV+VH, 3 = the release's
   replicated grey).

Radiometric kinds (``RADIOMETRY_KINDS``):

- ``"db"``: backscatter already in decibels; kept as is.
- ``"intensity"``: linear power (sigma0, beta0, gamma0); ``dB = 10 log10(x)``.
- ``"amplitude"``: linear amplitude (square root of intensity); ``dB = 20 log10(x)``.
- ``"complex"``: single-look complex (SLC) values; ``amplitude = |z|`` then ``dB = 20 log10(|z|)``
  minus ``calibration_db`` (0 by default, i.e. the complex values are taken as calibrated).
- ``"dn16"``: 16-bit digital numbers proportional to amplitude (Sentinel-1 GRD style);
  ``dB = 20 log10(DN) - calibration_db`` where ``calibration_db`` defaults to
  ``DEFAULT_DN16_CALIBRATION_DB`` (60 dB, i.e. a nominal calibration constant of 1000). For absolute
  values pass ``20 log10(A)`` of the product's calibration constant ``A``.
- ``"dn8"``: 8-bit display values (the release's 8-bit grey PNGs, photos from pipelines, and 8-bit
  colour composites such as a Pauli RGB, each band separately). They are already-scaled quicklooks
  of dB data, so they map *linearly* onto ``db_range``: ``dB = lo + DN / 255 * (hi - lo)``; scaling
  with the same fixed range recovers ``DN / 255`` exactly.

Declared kinds per dtype (:func:`allowed_kinds`; anything else raises a ``ValueError`` naming the
dtype and the kinds it allows):

- complex (SLC): only ``"complex"`` (the amplitude of ``z`` is ``|z|``; "amplitude" or "intensity"
  would be a different, lossy reading of the same values);
- ``uint8``: ``"dn8"`` (the default), or ``"amplitude"``, ``"intensity"``, ``"db"``, ``"dn16"``
  (8-bit values that are physical quantities are converted as declared);
- other integers (``uint16``, ``int16``, ...): ``"dn16"`` (the default), ``"amplitude"``,
  ``"intensity"``, ``"db"`` (``"dn8"`` is for 8-bit display values only);
- floats: every real kind (``"dn8"`` / ``"dn16"`` for digital numbers stored as floats).

Auto-detection rule (``kind="auto"``), applied in this order:

1. complex dtype -> ``"complex"``;
2. ``uint8`` -> ``"dn8"``;
3. any other integer dtype (``uint16``, ``int16``, ``int32``, ``uint32``, ...) -> ``"dn16"``;
4. floating dtype: over the finite, valid pixels, if the median is below 0 or the minimum is below
   -1 -> ``"db"`` (backscatter in dB is mostly negative; linear values are never below 0 except for
   tiny negatives left by noise subtraction); otherwise -> ``"intensity"``. Amplitude cannot be told
   apart from intensity by value and must be declared. An array with no valid pixel -> ``"db"``.

Bands: the conversion (:func:`to_db`, :func:`clip_range`, :func:`scale_to_unit`) works band by band
on any band count (VV; VV, VH; quad-pol HH, HV, VH, VV; a Pauli RGB composite). Adapting to a model
(:func:`match_channels`) takes 1 or 2 bands (VV, VH) or exactly the model's channel count; anything
else raises a ``ValueError`` naming what was expected.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RADIOMETRY_KINDS = ("auto", "db", "intensity", "amplitude", "dn8", "dn16", "complex")
DEFAULT_DB_RANGE = (-30.0, 5.0)
DEFAULT_DN16_CALIBRATION_DB = 60.0
# Linear values at or below this are treated as "no signal" and floored before the logarithm.
_LINEAR_FLOOR = 1e-10


def _as_chw(array: np.ndarray, name: str = "array") -> np.ndarray:
    """Return ``array`` as [C, H, W] (a 2-D array gets a leading band axis)."""
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"{name}: expected a [C, H, W] or [H, W] array, got shape {tuple(array.shape)}")
    return array


def check_band_count(array: np.ndarray, name: str = "array") -> None:
    """Raise a ``ValueError`` unless ``array`` ([C, H, W]) has 1 or 2 bands (VV, VH).

    Args:
        array: The [C, H, W] array.
        name: What to call the array in the message (a file name, for instance).
    """
    bands = array.shape[0]
    if bands not in (1, 2):
        raise ValueError(f"{name}: {bands} bands, expected 1 or 2 (VV, VH)")


def allowed_kinds(dtype: np.dtype | str) -> tuple[str, ...]:
    """The radiometric kinds that can be declared for values of ``dtype`` (``"auto"`` first).

    See the module docstring: complex -> complex only; ``uint8`` -> dn8 or a physical kind; other
    integers -> dn16 or a physical kind; floats -> every real kind; booleans -> none (masks, not SAR).
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        return ("auto", "complex")
    if dtype.kind == "b":
        return ()
    if dtype == np.uint8:
        return ("auto", "dn8", "amplitude", "intensity", "db", "dn16")
    if dtype.kind in "iu":
        return ("auto", "dn16", "amplitude", "intensity", "db")
    return ("auto", "db", "intensity", "amplitude", "dn16", "dn8")


def check_kind(dtype: np.dtype | str, kind: str) -> None:
    """Raise a ``ValueError`` unless radiometric ``kind`` can be declared for values of ``dtype``."""
    if kind not in RADIOMETRY_KINDS:
        raise ValueError(f"unknown radiometry kind {kind!r}, expected one of {RADIOMETRY_KINDS}")
    dtype = np.dtype(dtype)
    allowed = allowed_kinds(dtype)
    if not allowed:
        raise ValueError(f"{dtype} array is a mask, not SAR data")
    if kind not in allowed:
        if dtype.kind == "c":
            why = " (complex SLC values: the amplitude is |z|, declare 'complex' or 'auto')"
        elif kind == "complex":
            why = " (a real dtype, not complex)"
        else:
            why = " ('dn8' is for 8-bit display values)"
        raise ValueError(
            f"input kind {kind!r} does not apply to {dtype} data{why}; kinds allowed for {dtype}: "
            + ", ".join(allowed)
        )


def check_kind_values(array: np.ndarray, kind: str, valid_mask: np.ndarray | None = None) -> None:
    """Refuse a declared ``kind`` that float ``array`` cannot hold: digital numbers (``dn8``, ``dn16``) below 0
    or ``dn8`` above 255, linear ``intensity`` / ``amplitude`` with a negative median (dB values declared as
    linear). Only valid, finite pixels count; integer arrays are checked by :func:`check_kind` alone."""
    if kind not in ("dn8", "dn16", "intensity", "amplitude"):
        return
    values = _as_chw(np.asarray(array))
    if valid_mask is not None:
        values = values[:, np.asarray(valid_mask, dtype=bool)]
    values = values[np.isfinite(values)]
    if values.size == 0:
        return
    low, high = float(values.min()), float(values.max())
    if kind in ("dn8", "dn16") and low < 0:
        why = f"digital numbers are never negative, these go down to {low:.4g}; they look like dB"
    elif kind == "dn8" and high > 255:
        why = f"8-bit digital numbers end at 255, these reach {high:.4g}"
    elif kind in ("intensity", "amplitude") and float(np.median(values)) < 0:
        why = f"linear {kind} is never negative, the median here is {float(np.median(values)):.4g}; they look like dB"
    else:
        return
    raise ValueError(f"input kind {kind!r} does not fit the data ({why}); declare the right kind or 'auto'")


def resolve_kind(array: np.ndarray, kind: str = "auto", valid_mask: np.ndarray | None = None) -> str:
    """Return the radiometric kind of ``array``: ``kind`` if declared, else the detected one.

    See the module docstring for the detection rule.

    Args:
        array: SAR values, [C, H, W] or [H, W].
        kind: One of ``RADIOMETRY_KINDS``.
        valid_mask: Optional bool [H, W]; only these pixels are looked at for detection.

    Returns:
        One of ``"db"``, ``"intensity"``, ``"amplitude"``, ``"dn8"``, ``"dn16"``, ``"complex"``.

    Raises:
        ValueError: For an unknown kind, or a declared kind that does not apply to the dtype (see
            :func:`allowed_kinds`; the message names the dtype and the kinds it allows).
    """
    array = np.asarray(array)
    check_kind(array.dtype, kind)
    if kind != "auto":
        return kind
    if np.iscomplexobj(array):
        return "complex"
    if array.dtype == np.uint8:
        return "dn8"
    if np.issubdtype(array.dtype, np.integer):
        return "dn16"
    values = _as_chw(array)
    if valid_mask is not None:
        values = values[:, np.asarray(valid_mask, dtype=bool)]
    values = values[np.isfinite(values)]
    if values.size == 0:
        return "db"
    if float(np.median(values)) < 0.0 or float(values.min()) < -1.0:
        return "db"
    return "intensity"


def to_db(
    array: np.ndarray,
    kind: str = "auto",
    nodata: float | None = None,
    *,
    valid_mask: np.ndarray | None = None,
    db_range: Sequence[float] = DEFAULT_DB_RANGE,
    calibration_db: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Convert SAR values to backscatter in dB and compute the validity mask.

    A pixel is invalid when any band is equal to ``nodata``, NaN or +/-inf (before conversion),
    or where ``valid_mask`` is False. Linear values (intensity, amplitude, DN, |complex|) at or
    below zero stay valid but are floored to 1e-10 (-100 dB, far below any clipping range): zero
    backscatter is a real measurement floor, not missing data, unless it is the declared ``nodata``.
    Invalid pixels hold NaN in the returned dB array.

    Args:
        array: SAR values, [C, H, W] or [H, W], any band count (converted band by band).
        kind: One of ``RADIOMETRY_KINDS`` (``"auto"`` detects, see the module docstring).
        nodata: Value marking missing pixels (compared before conversion), or None.
        valid_mask: Optional bool [H, W] of pixels already known to be valid (e.g. from the file's mask).
        db_range: (low, high) dB; only used by ``"dn8"``, which maps 0..255 linearly onto it.
        calibration_db: dB subtracted after converting ``"dn16"`` / ``"complex"`` values (defaults:
            ``DEFAULT_DN16_CALIBRATION_DB`` for dn16, 0 for complex). Ignored for other kinds.

    Returns:
        ``(db, valid)``: float32 [C, H, W] backscatter in dB (NaN where invalid) and bool [H, W].

    Raises:
        ValueError: On a wrong shape, or an unknown kind / one that does not apply to the dtype.
    """
    chw = _as_chw(array)
    if chw.shape[0] == 0:
        raise ValueError(f"array of shape {tuple(chw.shape)} has no band")
    if valid_mask is not None:
        valid_mask = np.asarray(valid_mask, dtype=bool)
        if valid_mask.shape != chw.shape[1:]:
            raise ValueError(
                f"valid_mask has shape {valid_mask.shape}, expected {chw.shape[1:]} (the image's H, W)"
            )
    kind = resolve_kind(chw, kind, valid_mask)

    if kind == "complex":
        magnitude = np.abs(chw).astype(np.float64)
        bad = ~np.isfinite(magnitude)
        if nodata is not None:
            bad |= chw == nodata
    else:
        # float32 dB needs no arithmetic: no float64 round trip (the largest part of the time here)
        values = chw if kind == "db" and chw.dtype == np.float32 else chw.astype(np.float64)
        bad = ~np.isfinite(values)
        if nodata is not None and not np.isnan(nodata):
            bad |= chw == nodata
    valid = ~bad.any(axis=0)
    if valid_mask is not None:
        valid &= valid_mask
    if kind != "complex" and chw.dtype.kind == "f":
        check_kind_values(values, kind, valid)

    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "db":
            db = values
        elif kind == "intensity":
            db = 10.0 * np.log10(np.maximum(values, _LINEAR_FLOOR))
        elif kind == "amplitude":
            db = 20.0 * np.log10(np.maximum(values, _LINEAR_FLOOR))
        elif kind == "dn16":
            offset = DEFAULT_DN16_CALIBRATION_DB if calibration_db is None else float(calibration_db)
            db = 20.0 * np.log10(np.maximum(values, _LINEAR_FLOOR)) - offset
        elif kind == "complex":
            offset = 0.0 if calibration_db is None else float(calibration_db)
            db = 20.0 * np.log10(np.maximum(magnitude, _LINEAR_FLOOR)) - offset
        else:  # dn8
            low, high = float(db_range[0]), float(db_range[1])
            db = low + values / 255.0 * (high - low)
    db = db.astype(np.float32)  # a copy also of float32 dB input, which is not modified
    if not valid.all():
        db[:, ~valid] = np.nan
    return db, valid


def clip_range(
    db: np.ndarray,
    valid: np.ndarray | None = None,
    db_range: Sequence[float] | None = DEFAULT_DB_RANGE,
    clip_percentiles: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return the per-band clipping range (low [C], high [C]) in dB.

    With ``clip_percentiles=(p_low, p_high)`` the range is each band's percentiles over the valid,
    finite pixels (falling back to ``db_range`` for a band without valid pixels or with a
    degenerate range); otherwise it is ``db_range`` for every band.

    Args:
        db: float [C, H, W] values in dB.
        valid: Optional bool [H, W].
        db_range: Fixed (low, high) in dB.
        clip_percentiles: Optional (low, high) percentiles in [0, 100].

    Returns:
        ``(low, high)`` float32 arrays of shape [C].
    """
    channels = db.shape[0]
    fallback = DEFAULT_DB_RANGE if db_range is None else db_range
    low = np.full(channels, float(fallback[0]), dtype=np.float32)
    high = np.full(channels, float(fallback[1]), dtype=np.float32)
    if not low[0] < high[0]:
        raise ValueError(f"db_range must be (low, high) with low < high, got {tuple(fallback)}")
    if clip_percentiles is None:
        return low, high
    p_low, p_high = float(clip_percentiles[0]), float(clip_percentiles[1])
    if not 0.0 <= p_low < p_high <= 100.0:
        raise ValueError(
            f"clip_percentiles must satisfy 0 <= low < high <= 100, got {tuple(clip_percentiles)}"
        )
    for band in range(channels):
        values = db[band] if valid is None else db[band][valid]
        values = values[np.isfinite(values)]
        if values.size == 0:
            continue
        lo, hi = np.percentile(values, [p_low, p_high])
        if hi > lo:
            low[band], high[band] = lo, hi
    return low, high


def scale_to_unit(db: np.ndarray, low: np.ndarray | float, high: np.ndarray | float) -> np.ndarray:
    """Clip dB values to [low, high] (per band) and scale them linearly to [0, 1].

    NaN stays NaN (callers replace invalid pixels afterwards).

    Args:
        db: float [C, H, W] in dB.
        low: Scalar or [C] lower bound in dB.
        high: Scalar or [C] upper bound in dB.

    Returns:
        float32 [C, H, W] in [0, 1].
    """
    low = np.asarray(low, dtype=np.float32).reshape(-1, 1, 1)
    high = np.asarray(high, dtype=np.float32).reshape(-1, 1, 1)
    scaled = (np.clip(db, low, high) - low) / (high - low)
    return scaled.astype(np.float32)


def unit_to_db(unit: np.ndarray | float, low: np.ndarray | float, high: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`scale_to_unit` (without the clipping): ``low + unit * (high - low)``."""
    low = np.asarray(low, dtype=np.float32)
    high = np.asarray(high, dtype=np.float32)
    unit = np.asarray(unit, dtype=np.float32)
    if unit.ndim == 3:
        low, high = low.reshape(-1, 1, 1), high.reshape(-1, 1, 1)
    return (low + unit * (high - low)).astype(np.float32)


def match_channels(array: np.ndarray, num_channels: int) -> np.ndarray:
    """Adapt a [C, H, W] SAR array to a model's channel count.

    - as many bands as channels (e.g. a 3-band Pauli RGB into a 3-channel model): unchanged.
    - 1 band into 2 channels: the band is replicated (VV used as VH).
    - 2 bands into 1 channel: the first band (VV) is kept.
    - 1 or 2 bands into 3 channels (the release's replicated grey): the first band (VV) replicated 3 times.

    Args:
        array: [C, H, W] with C in {1, 2} or C == ``num_channels``.
        num_channels: 1, 2 or 3.

    Returns:
        [num_channels, H, W] (a view or copy of ``array``).

    Raises:
        ValueError: Another band count (choose bands first, e.g. ``bands=("VV", "VH")``).
    """
    if num_channels not in (1, 2, 3):
        raise ValueError(
            f"num_channels must be 1 (VV), 2 (VV, VH) or 3 (replicated grey), got {num_channels}"
        )
    bands = array.shape[0]
    if bands == num_channels:
        return array
    if bands not in (1, 2):
        raise ValueError(
            f"{bands} bands, expected 1 or 2 (VV, VH) or {num_channels} for a {num_channels}-channel "
            'model; choose bands by name or 1-based index, e.g. bands=("VV", "VH") or bands=(1, 2)'
        )
    if num_channels == 1:
        return array[:1]
    if num_channels == 2:
        return np.concatenate([array, array], axis=0)
    return np.repeat(array[:1], 3, axis=0)


def sar_to_unit(
    array: np.ndarray,
    kind: str = "auto",
    nodata: float | None = None,
    *,
    valid_mask: np.ndarray | None = None,
    db_range: Sequence[float] = DEFAULT_DB_RANGE,
    clip_percentiles: Sequence[float] | None = None,
    calibration_db: float | None = None,
    num_channels: int | None = None,
    fill_value: float | Sequence[float] = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The whole radiometric chain: any SAR encoding -> clipped dB -> [0, 1], with validity mask.

    Args:
        array: SAR values, [C, H, W] or [H, W] (C in {1, 2}, or ``num_channels``).
        kind: Radiometric kind or ``"auto"``.
        nodata: Nodata value, or None.
        valid_mask: Optional bool [H, W].
        db_range: Fixed clipping range in dB (and the dn8 mapping range).
        clip_percentiles: Optional per-band percentile clipping instead of ``db_range``.
        calibration_db: See :func:`to_db`.
        num_channels: If given, adapt the band count with :func:`match_channels`.
        fill_value: Value (scalar or per output channel) written into invalid pixels.

    Returns:
        ``(unit, valid)``: float32 [C', H, W] in [0, 1] and bool [H, W].
    """
    db, valid = to_db(
        array, kind, nodata, valid_mask=valid_mask, db_range=db_range, calibration_db=calibration_db
    )
    low, high = clip_range(db, valid, db_range, clip_percentiles)
    unit = scale_to_unit(db, low, high)
    if num_channels is not None:
        unit = match_channels(unit, num_channels)
    fill = np.broadcast_to(np.asarray(fill_value, dtype=np.float32).reshape(-1), (unit.shape[0],))
    unit = np.where(valid[None], unit, fill.reshape(-1, 1, 1)).astype(np.float32)
    return unit, valid


__all__ = [
    "DEFAULT_DB_RANGE",
    "DEFAULT_DN16_CALIBRATION_DB",
    "RADIOMETRY_KINDS",
    "allowed_kinds",
    "check_band_count",
    "check_kind",
    "check_kind_values",
    "clip_range",
    "match_channels",
    "resolve_kind",
    "sar_to_unit",
    "scale_to_unit",
    "to_db",
    "unit_to_db",
]
