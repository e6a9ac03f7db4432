"""Image processor for DI3CL: SAR values of any radiometric encoding -> normalised ``pixel_values``.

Loaded through ``trust_remote_code`` too, so it imports only ``.radiometry`` (relatively) plus
numpy / torch / PIL / transformers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.processing_utils import ImagesKwargs

from .radiometry import (
    DEFAULT_DB_RANGE,
    RADIOMETRY_KINDS,
    check_kind,
    clip_range,
    match_channels,
    resolve_kind,
    scale_to_unit,
    to_db,
)

# Typical C-band land backscatter (VV, VH) in dB and a typical spread, used for the default
# normalisation statistics of 1- and 2-channel models (fit your own with `fit_statistics`).
TYPICAL_BACKSCATTER_DB = (-11.0, -18.0)
TYPICAL_BACKSCATTER_STD_DB = 5.0
# The release fed replicated grey 8-bit images normalised with ImageNet statistics.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_SMALL_AXIS = (1, 2, 3, 4)


class DI3CLImageProcessorKwargs(ImagesKwargs, total=False):
    """Keyword arguments of :class:`DI3CLImageProcessor` beyond transformers' ``ImagesKwargs``."""

    num_channels: int
    input_kind: str
    bands: Sequence[int | str] | None
    band_names: Sequence[str | None] | None
    db_range: Sequence[float]
    clip_percentiles: Sequence[float] | None
    calibration_db: float | None
    nodata_value: float | None
    return_valid_mask: bool


class DI3CLImageProcessor(BaseImageProcessor):
    r"""Turns SAR images (and the 8-bit RGB images pipelines hand over) into DI3CL ``pixel_values``.

    Steps per image: layout to [C, H, W] -> radiometric kind (declared or detected, see
    ``radiometry``) -> dB + validity mask (nodata / NaN / inf) -> clip (fixed dB range or
    percentiles) -> scale to [0, 1] -> channel adaptation -> optional resize -> normalise with
    ``image_mean`` / ``image_std`` -> invalid pixels set to 0 (the normalised mean).

    Accepted inputs (single image or list, or a batched 4-D array/tensor):

    - numpy arrays / torch tensors, [H, W], [C, H, W] or [H, W, C], C in {1, 2} (VV, VH) or
      ``num_channels``, of any radiometry (float dB / intensity / amplitude, integer DN, complex
      SLC); ``uint8`` arrays with 3 or 4 channels are RGB(A) images. More bands (quad-pol HH, HV,
      VH, VV, ...) are reduced with ``bands``. Layout rule for 3-D arrays: ``input_data_format``
      ("channels_first" / "channels_last") if given; else channels-first when the first axis is at
      most 4 long and the last is longer, channels-last when the last axis is at most 4 long and the
      first is longer, and channels-first when both are at most 4 (tiny images).
    - PIL images: "L" (8-bit) -> dn8, "I;16" / "I" -> dn16, "F" -> float (auto); any other mode
      (RGB from ``transformers.pipeline``'s ``load_image``, RGBA, P, ...) is converted to RGB.

    Radiometry rules: the declared ``input_kind`` (per call, else the processor's) is applied to
    every dtype it fits (``radiometry.allowed_kinds``): ``uint8`` SAR arrays declared
    ``"amplitude"`` / ``"intensity"`` / ``"db"`` are converted as declared (``"auto"``: dn8);
    16-bit DN declared ``"amplitude"`` / ``"intensity"`` too (``"auto"``: dn16); complex SLC
    takes only ``"complex"``; a kind that does not fit the dtype raises a ``ValueError`` naming the
    dtype and the allowed kinds. 8-bit RGB(A) *images* (PIL colour images, what pipelines hand
    over, and ``uint8`` arrays of 3 or 4 channels) are display images: ``"dn8"`` per channel; the
    processor's default kind does not apply to them and a per-call kind other than ``"auto"`` /
    ``"dn8"`` is refused.

    Channel rules: 8-bit RGB -> grey = mean of R, G, B for 1- and 2-channel models; a 3-channel
    model keeps R, G, B (a Pauli RGB composite: dn8 per channel). 1 band into a 2-channel model ->
    the band is replicated (VV used as VH); 2 bands into a 1-channel model -> the first band (VV);
    3-channel models get VV replicated 3 times from 1- or 2-band input; an input with exactly
    ``num_channels`` bands is used as is.

    Band choice (``bands``): 1-based indexes (``bands=(1, 2)``) or names (``bands=("VV", "VH")``,
    matched case-insensitively against the ``band_names`` given with the input, e.g. a dataset row's
    ``band_names`` or a GeoTIFF's band descriptions). Bands are picked from inputs that have a
    different band count than ``bands`` or come with ``band_names``; an input with exactly
    ``len(bands)`` bands and no names is taken as already chosen (a file read with those bands).

    Args:
        num_channels (`int`, *optional*, defaults to 2):
            Channels of the model input: 1 (VV), 2 (VV, VH) or 3 (the release's replicated grey).
        input_kind (`str`, *optional*, defaults to `"auto"`):
            Radiometric kind of the inputs: one of ``"auto"``, ``"db"``, ``"intensity"``,
            ``"amplitude"``, ``"dn8"``, ``"dn16"``, ``"complex"`` (see the radiometry rules above).
        bands (`list[int | str]`, *optional*):
            Bands to use from multi-band inputs, by 1-based index or by name (see above).
        db_range (`tuple[float, float]`, *optional*, defaults to `(-30.0, 5.0)`):
            Clipping range in dB (also the range 8-bit values map onto).
        clip_percentiles (`tuple[float, float]`, *optional*):
            Per-image, per-band percentile clipping instead of the fixed ``db_range``.
        calibration_db (`float`, *optional*):
            dB subtracted after converting dn16 / complex values (see ``radiometry.to_db``).
        nodata_value (`float`, *optional*):
            Value marking missing pixels in the input.
        do_resize (`bool`, *optional*, defaults to `False`):
            Resize to ``size`` (bilinear with antialiasing).
        size (`dict[str, int]`, *optional*):
            ``{"height": h, "width": w}`` (an int means a square).
        do_normalize (`bool`, *optional*, defaults to `True`):
            Subtract ``image_mean`` and divide by ``image_std`` (values in [0, 1] space).
        image_mean (`list[float]`, *optional*):
            Per-channel mean of the [0, 1]-scaled input. Defaults: ImageNet's for 3 channels, else
            typical land backscatter (VV -11 dB, VH -18 dB) mapped through ``db_range``.
        image_std (`list[float]`, *optional*):
            Per-channel standard deviation; defaults as ``image_mean`` (5 dB spread for SAR).
        return_valid_mask (`bool`, *optional*, defaults to `False`):
            Also return ``valid_mask`` (bool [B, H, W]) in the output (not a model input).

    Example:

    ```python
    >>> import numpy as np
    >>> from di3cl_hf.image_processing_di3cl import DI3CLImageProcessor
    >>> processor = DI3CLImageProcessor(num_channels=2)
    >>> scene_db = np.random.default_rng(0).normal(-12, 4, size=(2, 64, 64)).astype("float32")
    >>> processor(scene_db, return_tensors="pt")["pixel_values"].shape
    torch.Size([1, 2, 64, 64])
    ```
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = DI3CLImageProcessorKwargs

    def __init__(
        self,
        num_channels: int = 2,
        input_kind: str = "auto",
        db_range: Sequence[float] = DEFAULT_DB_RANGE,
        clip_percentiles: Sequence[float] | None = None,
        calibration_db: float | None = None,
        nodata_value: float | None = None,
        bands: Sequence[int | str] | None = None,
        do_resize: bool = False,
        size: int | dict[str, int] | None = None,
        do_normalize: bool = True,
        image_mean: float | Sequence[float] | None = None,
        image_std: float | Sequence[float] | None = None,
        return_valid_mask: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_channels not in (1, 2, 3):
            raise ValueError(
                f"num_channels must be 1 (VV), 2 (VV, VH) or 3 (replicated grey), got {num_channels}"
            )
        if input_kind not in RADIOMETRY_KINDS:
            raise ValueError(f"input_kind must be one of {RADIOMETRY_KINDS}, got {input_kind!r}")
        db_range = [float(v) for v in db_range]
        if len(db_range) != 2 or not db_range[0] < db_range[1]:
            raise ValueError(f"db_range must be (low, high) with low < high, got {db_range}")
        if clip_percentiles is not None:
            clip_percentiles = [float(v) for v in clip_percentiles]
            if len(clip_percentiles) != 2 or not 0.0 <= clip_percentiles[0] < clip_percentiles[1] <= 100.0:
                raise ValueError(f"clip_percentiles must be (low, high) in [0, 100], got {clip_percentiles}")
        self.num_channels = int(num_channels)
        self.input_kind = input_kind
        self.bands = self._check_bands(bands)
        self.db_range = db_range
        self.clip_percentiles = clip_percentiles
        self.calibration_db = None if calibration_db is None else float(calibration_db)
        self.nodata_value = None if nodata_value is None else float(nodata_value)
        self.do_resize = bool(do_resize)
        if isinstance(size, int):
            size = {"height": size, "width": size}
        if size is not None:
            size = {"height": int(size["height"]), "width": int(size["width"])}
        if self.do_resize and size is None:
            raise ValueError("do_resize=True needs size={'height': h, 'width': w}")
        self.size = size
        self.do_normalize = bool(do_normalize)
        default_mean, default_std = self._default_statistics()
        self.image_mean = self._per_channel(image_mean, default_mean, "image_mean")
        self.image_std = self._per_channel(image_std, default_std, "image_std")
        if any(s <= 0 for s in self.image_std):
            raise ValueError(f"image_std must be positive, got {self.image_std}")
        self.return_valid_mask = bool(return_valid_mask)

    # ------------------------------------------------------------------ settings helpers
    @staticmethod
    def _check_bands(bands: Sequence[int | str] | None) -> list[int | str] | None:
        if bands is None:
            return None
        if isinstance(bands, (str, int)):
            bands = [bands]
        checked: list[int | str] = []
        for band in bands:
            if isinstance(band, str) and band.strip().lstrip("-").isdigit():
                band = int(band)  # "2" from a command line or a JSON file
            if isinstance(band, str) and band.strip():
                checked.append(band.strip())
            elif isinstance(band, (int, np.integer)) and not isinstance(band, bool) and band >= 1:
                checked.append(int(band))
            else:
                raise ValueError(f"bands must be 1-based indexes or band names, got {list(bands)}")
        if not checked:
            raise ValueError("bands is empty; pass None to use every band")
        return checked

    def select_bands(self, array: np.ndarray, band_names: Sequence[str | None] | None = None) -> np.ndarray:
        """The ``bands`` of a [C, H, W] array (see the class docstring); ``array`` itself without ``bands``.

        Args:
            array: [C, H, W] values.
            band_names: One name per band of ``array`` (``None`` entries for unnamed bands), or None.

        Raises:
            ValueError: An index past the band count, a name that is not in ``band_names`` (the
                message lists the available names), or names without ``band_names``.
        """
        if self.bands is None:
            return array
        count = array.shape[0]
        if band_names is None and count == len(self.bands):
            return array  # already chosen (a file read with these bands)
        if band_names is not None and len(band_names) != count:
            raise ValueError(f"{len(band_names)} band names for an input with {count} bands")
        lookup = {str(n).strip().lower(): i for i, n in enumerate(band_names or ()) if n}
        indexes = []
        for band in self.bands:
            if isinstance(band, int):
                if band > count:
                    raise ValueError(f"band {band} requested but the input has {count} band(s) (1-based)")
                indexes.append(band - 1)
            elif not lookup:
                raise ValueError(
                    f"band {band!r} chosen by name but the input's bands have no names; pass band_names= "
                    f"with the input, or choose by 1-based index (1..{count})"
                )
            elif band.lower() not in lookup:
                available = ", ".join(str(n) for n in band_names or () if n)
                raise ValueError(f"band {band!r} not found; the input's bands are: {available}")
            else:
                indexes.append(lookup[band.lower()])
        return array[indexes]

    def _default_statistics(self) -> tuple[list[float], list[float]]:
        if self.num_channels == 3:
            return list(IMAGENET_MEAN), list(IMAGENET_STD)
        low, high = self.db_range
        span = high - low
        mean = [(db - low) / span for db in TYPICAL_BACKSCATTER_DB[: self.num_channels]]
        return mean, [TYPICAL_BACKSCATTER_STD_DB / span] * self.num_channels

    def _per_channel(
        self, value: float | Sequence[float] | None, default: list[float], name: str
    ) -> list[float]:
        if value is None:
            return default
        values = [float(value)] if np.isscalar(value) else [float(v) for v in value]
        if len(values) == 1:
            values = values * self.num_channels
        if len(values) != self.num_channels:
            raise ValueError(f"{name} has {len(values)} values, expected {self.num_channels} (num_channels)")
        return values

    # ------------------------------------------------------------------ input layout
    def _to_chw_array(
        self, image: Any, input_data_format: str | None, band_names: Sequence[str | None] | None = None
    ) -> tuple[np.ndarray, bool]:
        """Return ([C, H, W] array, whether it is an 8-bit colour image) for one input image."""
        if isinstance(image, Image.Image):
            if image.mode in ("L", "I;16", "I;16B", "I;16L", "I", "F"):
                array = np.asarray(image)
                return (array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)), False
            rgb = np.moveaxis(np.asarray(image.convert("RGB")), -1, 0)
            return self._colour(rgb), True
        if isinstance(image, torch.Tensor):
            image = image.detach().cpu()
            if image.dtype == torch.bfloat16 or image.dtype == torch.float16:
                image = image.float()
            image = image.numpy()
        array = np.asarray(image)
        if array.ndim == 2:
            array = array[None]
        elif array.ndim == 3:
            array = self._channels_first(array, input_data_format)
        else:
            raise ValueError(f"expected an image of shape [H, W], [C, H, W] or [H, W, C], got {array.shape}")
        if array.dtype == np.bool_:
            raise ValueError("boolean arrays are masks, not SAR images")
        if self.bands is not None:
            array = self.select_bands(array, band_names)
        elif array.dtype == np.uint8 and array.shape[0] in (3, 4) and array.shape[0] != self.num_channels:
            return self._colour(array), True
        if array.shape[0] not in (1, 2, self.num_channels):
            raise ValueError(
                f"image with {array.shape[0]} bands (shape {tuple(array.shape)}): expected 1 or 2 SAR bands "
                f"(VV, VH), {self.num_channels} (the model's channels) or an 8-bit RGB image; choose bands "
                'with bands=("VV", "VH") or bands=(1, 2)'
            )
        return array, False

    def _colour(self, rgba: np.ndarray) -> np.ndarray:
        """An 8-bit RGB(A) image [3|4, H, W]: R, G, B for a 3-channel model, else their mean (grey)."""
        if self.num_channels == 3:
            return rgba[:3]
        return rgba[:3].astype(np.float32).mean(axis=0, keepdims=True)

    def _kind(self, array: np.ndarray, colour: bool, input_kind: str | None) -> str:
        """The declared kind for ``array``: per call, else the processor's; ``"dn8"`` for colour images."""
        if colour:
            if input_kind not in (None, "auto", "dn8"):
                raise ValueError(
                    f"input kind {input_kind!r} does not apply to an 8-bit RGB(A) image (display values, "
                    "read as 'dn8' per channel); pass 'auto' or 'dn8', or the SAR values as an array"
                )
            return "dn8"
        kind = input_kind or self.input_kind
        check_kind(array.dtype, kind)
        return kind

    @staticmethod
    def _channels_first(array: np.ndarray, input_data_format: str | None) -> np.ndarray:
        fmt = str(getattr(input_data_format, "value", input_data_format)) if input_data_format else None
        if fmt == "channels_first":
            return array
        if fmt == "channels_last":
            return np.moveaxis(array, -1, 0)
        if fmt is not None:
            raise ValueError(f"input_data_format must be 'channels_first' or 'channels_last', got {fmt!r}")
        if array.shape[0] in _SMALL_AXIS:
            return array
        if array.shape[-1] in _SMALL_AXIS:
            return np.moveaxis(array, -1, 0)
        return array

    def _flatten_images(self, images: Any) -> list[Any]:
        if isinstance(images, (list, tuple)):
            flat: list[Any] = []
            for item in images:
                flat.extend(self._flatten_images(item) if isinstance(item, (list, tuple)) else [item])
            return flat
        if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
            return list(images)
        return [images]

    # ------------------------------------------------------------------ single-array path
    def sar_to_db(
        self,
        array_chw: np.ndarray,
        valid_mask: np.ndarray | None = None,
        input_kind: str | None = None,
        band_names: Sequence[str | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Convert one SAR array to dB with the model's channel count.

        Args:
            array_chw: [C, H, W] or [H, W] SAR values (C in {1, 2}, ``num_channels``, or more with
                ``bands``; uint8 RGB(A) also accepted).
            valid_mask: Optional bool [H, W] of known-valid pixels.
            input_kind: Override of ``self.input_kind`` for this call.
            band_names: Names of the bands of ``array_chw`` (for ``bands`` chosen by name).

        Returns:
            ``(db, valid)``: float32 [num_channels, H, W] (NaN where invalid) and bool [H, W].
        """
        array, colour = self._to_chw_array(array_chw, "channels_first", band_names)
        return self._chw_to_db(array, self._kind(array, colour, input_kind), valid_mask)

    def _chw_to_db(
        self, array: np.ndarray, kind: str, valid_mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """[C, H, W] values of radiometric ``kind`` (or "auto") -> dB with the model's channel count + validity."""
        db, valid = to_db(
            array,
            resolve_kind(array, kind, valid_mask),
            self.nodata_value,
            valid_mask=valid_mask,
            db_range=self.db_range,
            calibration_db=self.calibration_db,
        )
        return match_channels(db, self.num_channels), valid

    def clip_bounds(self, db: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel clipping bounds (low [C], high [C]) in dB for ``db`` (fixed range or percentiles)."""
        return clip_range(db, valid, self.db_range, self.clip_percentiles)

    def neutral_db(self, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """dB value per channel that normalises to 0 (the normalised mean), for filling invalid pixels."""
        mean = np.asarray(
            self.image_mean if self.do_normalize else [0.0] * self.num_channels, dtype=np.float32
        )
        return (
            np.asarray(low, np.float32) + mean * (np.asarray(high, np.float32) - np.asarray(low, np.float32))
        ).astype(np.float32)

    def db_to_pixel_values(
        self, db: torch.Tensor | np.ndarray, low: np.ndarray | None = None, high: np.ndarray | None = None
    ) -> torch.Tensor | np.ndarray:
        """Clip dB values ([C, H, W] or [B, C, H, W]), scale them to [0, 1] and normalise.

        NaN inputs stay NaN. Works on numpy arrays and torch tensors (returns the same type).

        Args:
            db: dB values with ``num_channels`` channels.
            low: Per-channel lower bounds (defaults to ``db_range[0]``).
            high: Per-channel upper bounds (defaults to ``db_range[1]``).
        """
        is_numpy = isinstance(db, np.ndarray)
        values = torch.from_numpy(np.asarray(db, dtype=np.float32)) if is_numpy else db.float()
        channels = values.shape[-3]
        low_t = torch.as_tensor(self.db_range[0] if low is None else low, dtype=torch.float32)
        high_t = torch.as_tensor(self.db_range[1] if high is None else high, dtype=torch.float32)
        low_t = low_t.expand(channels).reshape(channels, 1, 1)
        high_t = high_t.expand(channels).reshape(channels, 1, 1)
        unit = (torch.minimum(torch.maximum(values, low_t), high_t) - low_t) / (high_t - low_t)
        if self.do_normalize:
            mean = torch.tensor(self.image_mean, dtype=torch.float32).reshape(channels, 1, 1)
            std = torch.tensor(self.image_std, dtype=torch.float32).reshape(channels, 1, 1)
            unit = (unit - mean) / std
        return unit.numpy() if is_numpy else unit

    def sar_to_pixel_values(
        self,
        array_chw: np.ndarray,
        valid_mask: np.ndarray | None = None,
        band_names: Sequence[str | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The single-array path used by data loading and scene inference (no resize).

        Args:
            array_chw: [C, H, W] or [H, W] SAR values of any radiometry (see :meth:`sar_to_db`).
            valid_mask: Optional bool [H, W] of pixels known to be valid.
            band_names: Names of the bands of ``array_chw`` (for ``bands`` chosen by name).

        Returns:
            ``(pixel_values, valid)``: float32 [num_channels, H, W], invalid pixels 0; bool [H, W].
        """
        db, valid = self.sar_to_db(array_chw, valid_mask, band_names=band_names)
        low, high = self.clip_bounds(db, valid)
        pixel_values = self.db_to_pixel_values(db, low, high)
        pixel_values[:, ~valid] = 0.0
        return pixel_values.astype(np.float32), valid

    def fit_statistics(self, images: Sequence[Any]) -> tuple[list[float], list[float]]:
        """Set ``image_mean`` / ``image_std`` from the valid pixels of ``images`` (in [0, 1] space).

        Args:
            images: SAR arrays accepted by :meth:`sar_to_db`.

        Returns:
            The new ``(image_mean, image_std)``.
        """
        total = np.zeros(self.num_channels)
        total_sq = np.zeros(self.num_channels)
        count = 0
        for image in images:
            db, valid = self.sar_to_db(image)
            low, high = self.clip_bounds(db, valid)
            unit = scale_to_unit(db, low, high)[:, valid].astype(np.float64)
            total += unit.sum(axis=1)
            total_sq += (unit**2).sum(axis=1)
            count += unit.shape[1]
        if count == 0:
            raise ValueError("fit_statistics: no valid pixel in the given images")
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-12))
        self.image_mean = [float(v) for v in mean]
        self.image_std = [float(v) for v in std]
        return self.image_mean, self.image_std

    # ------------------------------------------------------------------ batch API
    def preprocess(
        self,
        images: Any,
        return_tensors: str | None = None,
        input_kind: str | None = None,
        valid_mask: np.ndarray | Sequence[np.ndarray] | None = None,
        do_resize: bool | None = None,
        size: int | dict[str, int] | None = None,
        input_data_format: str | None = None,
        return_valid_mask: bool | None = None,
        band_names: Sequence[str | None] | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Process one image or a batch into ``pixel_values`` float32 [B, C, H, W].

        Args:
            images: See the class docstring.
            return_tensors: ``"pt"``, ``"np"`` or None (numpy).
            input_kind: Override of the radiometric kind for this call.
            valid_mask: Optional bool [H, W] per image (a single mask for a single image).
            do_resize: Override of ``self.do_resize``.
            size: Override of ``self.size``.
            input_data_format: ``"channels_first"`` / ``"channels_last"`` for 3-D arrays.
            return_valid_mask: Override of ``self.return_valid_mask``.
            band_names: Names of the input bands (the same for every image), for ``bands`` by name.

        Returns:
            ``BatchFeature`` with ``pixel_values`` (and ``valid_mask`` if asked for).
        """
        do_resize = self.do_resize if do_resize is None else do_resize
        size = (
            self.size
            if size is None
            else ({"height": size, "width": size} if isinstance(size, int) else size)
        )
        if do_resize and size is None:
            raise ValueError("do_resize=True needs size={'height': h, 'width': w}")
        return_valid_mask = self.return_valid_mask if return_valid_mask is None else return_valid_mask
        image_list = self._flatten_images(images)
        if not image_list:
            raise ValueError("no images given")
        if valid_mask is None:
            masks: list[Any] = [None] * len(image_list)
        elif isinstance(valid_mask, (list, tuple)):
            masks = list(valid_mask)
        else:
            valid_mask_arr = np.asarray(valid_mask)
            masks = [valid_mask_arr] if valid_mask_arr.ndim == 2 else list(valid_mask_arr)
        if len(masks) != len(image_list):
            raise ValueError(f"{len(masks)} valid masks for {len(image_list)} images")

        pixel_values, valid_masks = [], []
        for image, mask in zip(image_list, masks):
            array, colour = self._to_chw_array(image, input_data_format, band_names)
            kind = self._kind(array, colour, input_kind)
            mask = None if mask is None else np.asarray(mask, dtype=bool)
            values, valid = self._array_to_pixel_values(array, kind, mask, size if do_resize else None)
            pixel_values.append(values)
            valid_masks.append(valid)
        shapes = {v.shape for v in pixel_values}
        if len(shapes) > 1:
            raise ValueError(f"images have different sizes {sorted(shapes)}; pass do_resize=True and a size")
        data: dict[str, Any] = {"pixel_values": np.stack(pixel_values)}
        if return_valid_mask:
            data["valid_mask"] = np.stack(valid_masks)
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _array_to_pixel_values(
        self, array: np.ndarray, kind: str, valid_mask: np.ndarray | None, size: dict[str, int] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        db, valid = self._chw_to_db(array, kind, valid_mask)
        low, high = self.clip_bounds(db, valid)
        unit = scale_to_unit(db, low, high)
        if size is not None and (unit.shape[1], unit.shape[2]) != (size["height"], size["width"]):
            target = (size["height"], size["width"])
            filled = torch.from_numpy(np.nan_to_num(unit, nan=0.0))[None]
            weight = torch.from_numpy(valid.astype(np.float32))[None, None]
            # Resize valid-weighted values and the weights so invalid pixels do not bleed into valid ones.
            num = F.interpolate(
                filled * weight, size=target, mode="bilinear", align_corners=False, antialias=True
            )
            den = F.interpolate(weight, size=target, mode="bilinear", align_corners=False, antialias=True)
            unit = (num / den.clamp_min(1e-6))[0].numpy()
            valid = (den[0, 0] > 0.5).numpy()
        if self.do_normalize:
            mean = np.asarray(self.image_mean, dtype=np.float32).reshape(-1, 1, 1)
            std = np.asarray(self.image_std, dtype=np.float32).reshape(-1, 1, 1)
            unit = (unit - mean) / std
        pixel_values = np.where(valid[None], unit, 0.0).astype(np.float32)
        return pixel_values, valid

    # ------------------------------------------------------------------ post-processing
    def post_process_semantic_segmentation(
        self, outputs: Any, target_sizes: Sequence[Sequence[int]] | torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """Turn segmentation logits into one label map per image.

        Args:
            outputs: A model output with ``logits`` [B, num_labels, h, w] (or the tensor itself).
            target_sizes: Optional (H, W) per image; logits are resized bilinearly to it before the argmax.

        Returns:
            A list of B long tensors [H, W] (or [h, w] without target sizes).
        """
        logits = outputs if isinstance(outputs, torch.Tensor) else outputs["logits"]
        if target_sizes is not None and len(target_sizes) != logits.shape[0]:
            raise ValueError(f"{len(target_sizes)} target sizes for a batch of {logits.shape[0]} logits")
        results = []
        for index in range(logits.shape[0]):
            item = logits[index : index + 1].float()
            if target_sizes is not None:
                height, width = (int(v) for v in target_sizes[index])
                if (item.shape[-2], item.shape[-1]) != (height, width):
                    item = F.interpolate(item, size=(height, width), mode="bilinear", align_corners=False)
            results.append(item[0].argmax(dim=0))
        return results


# save_pretrained writes this file (+ radiometry.py) and an ``auto_map``: the folder loads without the package.
DI3CLImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = ["DI3CLImageProcessor"]
