"""Two-view augmentation for DI3CL pre-training, in torch, with the geometry of every view tracked.

Each view is: random resized crop of the source (dB image) -> resize to ``image_size`` ->
horizontal flip -> vertical flip -> ``k`` counter-clockwise 90-degree rotations (``torch.rot90``
on the last two axes) -> photometric changes in the dB domain. :class:`ViewGeometry` records the
geometric part so box pairs can be mapped between views (``boxes.py``).

Coordinates are continuous pixel coordinates: a pixel with index ``(row, col)`` covers
``[col, col + 1] x [row, row + 1]``; x runs along the width, y along the height. The source crop
``[left, left + width] x [top, top + height]`` is stretched onto ``[0, output_width] x
[0, output_height]`` of the resized crop; flips mirror it (x -> W - x, y -> H - y); each rotation
maps ``(x, y) -> (y, W - x)`` and swaps W and H.

Presets (``TwoViewTransform(preset=...)``):

- ``"sar"`` (the default): crop scale (0.2, 1.0); horizontal flip p 0.5, vertical flip p 0.5,
  random 90-degree rotations (SAR scenes have no canonical "up" once geocoded or in slant range);
  with p 0.8 a gain of +/-2 dB (additive in dB = multiplicative calibration change) and a contrast
  factor in [0.8, 1.2] about the view's mean dB; with p 0.5 extra multiplicative Gamma speckle of
  ``L`` = 4 looks (``10 log10(G)``, ``G ~ Gamma(L, 1/L)``, added in dB); Gaussian blur sigma
  (0.1, 2.0) with p 0.5.
- ``"speckle"``: the geometry of ``"sar"`` (crop scale (0.2, 1.0), both flips, 90-degree rotations) with no
  gain or contrast change at all: the backscatter level is what separates water, so it is not jittered;
  with p 0.5 multiplicative Gamma speckle of ``L`` = 4 looks, with p 0.2 a light Gaussian blur sigma
  (0.1, 1.0). The real Sentinel-1 recipe uses it (``examples/pretrain_s1.sh``).
- ``"release"``: the original release's recipe (docs/method.md#views) mapped onto SAR in dB. RandomResizedCrop scale (0.2, 1.0) and
  horizontal flip p 0.5 as released; no vertical flip or rotation. ColorJitter(0.4, 0.4, 0.4, 0.1)
  p 0.8 acted on replicated-grey display values, i.e. on dB scaled linearly to [0, 1]: its
  brightness factor in [0.6, 1.4] multiplies those values, which in dB is a stretch by the same
  factor about the bottom of ``db_range`` (``brightness=0.4``); its contrast factor in [0.6, 1.4]
  blends with the mean, i.e. a stretch about the view's mean (``contrast=0.4``); saturation and hue
  do nothing to grey images and are dropped; greyscale p 0.2 is a no-op on replicated grey and is
  dropped; Gaussian blur sigma (0.1, 2.0) p 0.5 as released; no speckle; ImageNet normalisation
  belongs to the processor (``num_channels=3`` uses ImageNet statistics).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

_PRESETS: dict[str, dict[str, Any]] = {
    "sar": {
        "scale": (0.2, 1.0),
        "hflip_p": 0.5,
        "vflip_p": 0.5,
        "rot90": True,
        "photometric_p": 0.8,
        "gain_db": 2.0,
        "brightness": 0.0,
        "contrast": 0.2,
        "speckle_p": 0.5,
        "speckle_looks": 4,
        "blur_p": 0.5,
        "blur_sigma": (0.1, 2.0),
    },
    "speckle": {
        "scale": (0.2, 1.0),
        "hflip_p": 0.5,
        "vflip_p": 0.5,
        "rot90": True,
        "photometric_p": 0.0,
        "gain_db": 0.0,
        "brightness": 0.0,
        "contrast": 0.0,
        "speckle_p": 0.5,
        "speckle_looks": 4,
        "blur_p": 0.2,
        "blur_sigma": (0.1, 1.0),
    },
    "release": {
        "scale": (0.2, 1.0),
        "hflip_p": 0.5,
        "vflip_p": 0.0,
        "rot90": False,
        "photometric_p": 0.8,
        "gain_db": 0.0,
        "brightness": 0.4,
        "contrast": 0.4,
        "speckle_p": 0.0,
        "speckle_looks": 4,
        "blur_p": 0.5,
        "blur_sigma": (0.1, 2.0),
    },
}

GEOMETRY_FIELDS = (
    "top",
    "left",
    "height",
    "width",
    "output_height",
    "output_width",
    "hflip",
    "vflip",
    "rot90",
)


@dataclass(frozen=True)
class ViewGeometry:
    """Where a view came from in its source image.

    Attributes:
        top: First source row of the crop.
        left: First source column of the crop.
        height: Crop height in source pixels.
        width: Crop width in source pixels.
        output_height: Height of the resized crop (before any rotation).
        output_width: Width of the resized crop (before any rotation).
        hflip: Mirrored left-right (after resizing).
        vflip: Mirrored top-bottom (after the horizontal flip).
        rot90: Number of counter-clockwise quarter turns (``torch.rot90(view, k, dims=(-2, -1))``), 0..3.
    """

    top: int
    left: int
    height: int
    width: int
    output_height: int
    output_width: int
    hflip: bool = False
    vflip: bool = False
    rot90: int = 0

    @property
    def view_size(self) -> tuple[int, int]:
        """(height, width) of the final view (after rotation)."""
        if self.rot90 % 2:
            return self.output_width, self.output_height
        return self.output_height, self.output_width

    def to_tensor(self) -> torch.Tensor:
        """The fields in ``GEOMETRY_FIELDS`` order, as a float64 tensor [9]."""
        return torch.tensor([float(getattr(self, name)) for name in GEOMETRY_FIELDS], dtype=torch.float64)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields."""
        return asdict(self)

    def source_to_view(self, points_xy: torch.Tensor) -> torch.Tensor:
        """Map source points (x, y) [..., 2] to view coordinates [..., 2]."""
        return source_to_view(points_xy, self.to_tensor().to(points_xy.dtype))

    def view_to_source(self, points_xy: torch.Tensor) -> torch.Tensor:
        """Map view points (x, y) [..., 2] back to source coordinates [..., 2]."""
        return view_to_source(points_xy, self.to_tensor().to(points_xy.dtype))


def geometries_to_tensor(geometries: Sequence[ViewGeometry | torch.Tensor | dict]) -> torch.Tensor:
    """Stack geometries (ViewGeometry, dict or [9] tensor) into a float64 tensor [B, 9]."""
    rows: list[list[float]] = []
    for geometry in geometries:
        if isinstance(geometry, ViewGeometry):
            g = geometry  # explicit attributes: this runs per sample in every collate call
            rows.append(
                [g.top, g.left, g.height, g.width, g.output_height, g.output_width, g.hflip, g.vflip, g.rot90]
            )
        elif isinstance(geometry, dict):
            rows.append([float(geometry[name]) for name in GEOMETRY_FIELDS])
        else:
            rows.append(torch.as_tensor(geometry, dtype=torch.float64).reshape(len(GEOMETRY_FIELDS)).tolist())
    return torch.tensor(rows, dtype=torch.float64).reshape(len(rows), len(GEOMETRY_FIELDS))


def _unpack(geometry: torch.Tensor) -> list[torch.Tensor]:
    return [geometry[..., i] for i in range(len(GEOMETRY_FIELDS))]


def source_to_view(points_xy: torch.Tensor, geometry: torch.Tensor) -> torch.Tensor:
    """Map source points to view coordinates, vectorised.

    Args:
        points_xy: [..., P, 2] source (x, y).
        geometry: [..., 9] (``GEOMETRY_FIELDS``) broadcastable against the leading dims of ``points_xy``.

    Returns:
        [..., P, 2] view (x, y).
    """
    top, left, height, width, out_h, out_w, hflip, vflip, k = (v.unsqueeze(-1) for v in _unpack(geometry))
    x = (points_xy[..., 0] - left) * (out_w / width)
    y = (points_xy[..., 1] - top) * (out_h / height)
    x = torch.where(hflip > 0.5, out_w - x, x)
    y = torch.where(vflip > 0.5, out_h - y, y)
    turns = torch.remainder(k.round(), 4)
    cur_w = out_w.expand_as(x)
    cur_h = out_h.expand_as(y)
    for step in range(3):
        rotate = turns > step
        x, y = torch.where(rotate, y, x), torch.where(rotate, cur_w - x, y)
        cur_w, cur_h = torch.where(rotate, cur_h, cur_w), torch.where(rotate, cur_w, cur_h)
    return torch.stack([x, y], dim=-1)


def view_to_source(points_xy: torch.Tensor, geometry: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`source_to_view`: view (x, y) [..., P, 2] -> source (x, y)."""
    top, left, height, width, out_h, out_w, hflip, vflip, k = (v.unsqueeze(-1) for v in _unpack(geometry))
    turns = torch.remainder(k.round(), 4)
    x, y = points_xy[..., 0], points_xy[..., 1]
    # Undo the rotations last-to-first. Before rotation step s the image was (out_h, out_w) for even s.
    for step in (2, 1, 0):
        rotate = turns > step
        prev_w = out_w if step % 2 == 0 else out_h  # width before this rotation step
        # forward: (x', y') = (y, prev_w - x)  =>  x = prev_w - y', y = x'
        x, y = torch.where(rotate, prev_w - y, x), torch.where(rotate, x, y)
    y = torch.where(vflip > 0.5, out_h - y, y)
    x = torch.where(hflip > 0.5, out_w - x, x)
    return torch.stack([x * (width / out_w) + left, y * (height / out_h) + top], dim=-1)


def random_resized_crop_params(
    height: int,
    width: int,
    scale: Sequence[float],
    ratio: Sequence[float],
    generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params, drawing from ``generator`` (torchvision's uses the global RNG).

    Returns:
        (top, left, crop_height, crop_width).
    """
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio, dtype=torch.float64))
    for _ in range(10):
        target_area = area * float(
            torch.empty(1, dtype=torch.float64).uniform_(scale[0], scale[1], generator=generator)
        )
        aspect = math.exp(
            float(torch.empty(1, dtype=torch.float64).uniform_(*log_ratio.tolist(), generator=generator))
        )
        crop_w = int(round(math.sqrt(target_area * aspect)))
        crop_h = int(round(math.sqrt(target_area / aspect)))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(torch.randint(0, height - crop_h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - crop_w + 1, (1,), generator=generator))
            return top, left, crop_h, crop_w
    in_ratio = width / height
    if in_ratio < min(ratio):
        crop_w, crop_h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        crop_h, crop_w = height, int(round(height * max(ratio)))
    else:
        crop_w, crop_h = width, height
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def gamma_speckle_db(
    shape: Sequence[int],
    looks: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Multiplicative speckle of ``looks`` looks, in dB: ``10 log10(G)`` with ``G ~ Gamma(looks, 1/looks)``.

    An integer-shape Gamma variable is a sum of exponentials, which lets it be drawn from ``generator``
    (``torch.distributions.Gamma`` cannot take one).
    """
    looks = int(looks)
    if looks < 1:
        raise ValueError(f"speckle looks must be a positive integer, got {looks}")
    uniform = torch.rand((looks, *shape), generator=generator, dtype=torch.float64).clamp_min(1e-12)
    gamma = -torch.log(uniform).sum(dim=0) / looks
    return (10.0 * torch.log10(gamma)).to(dtype)


class TwoViewTransform:
    """Make two augmented views of one SAR image in dB, each with its :class:`ViewGeometry`.

    Args:
        image_size: Output size (int for a square, or (height, width)).
        preset: ``"sar"`` (default) or ``"release"`` (see the module docstring); explicit arguments
            below override the preset's values.
        scale: RandomResizedCrop area fraction range.
        ratio: RandomResizedCrop aspect-ratio range.
        hflip_p: Probability of a horizontal flip.
        vflip_p: Probability of a vertical flip.
        rot90: Draw k uniformly in {0, 1, 2, 3} quarter turns (False: k = 0).
        photometric_p: Probability of the gain / brightness / contrast change.
        gain_db: Additive gain drawn uniformly in [-gain_db, gain_db] dB.
        brightness: Stretch factor in [1 - b, 1 + b] about ``db_range[0]`` (ColorJitter brightness on display values).
        contrast: Stretch factor in [1 - c, 1 + c] about the view's mean dB.
        speckle_p: Probability of adding Gamma speckle.
        speckle_looks: Looks L of that speckle.
        blur_p: Probability of a Gaussian blur.
        blur_sigma: Blur sigma range in output pixels.
        db_range: The dB range the processor clips to (reference for ``brightness``).
        generator: Optional ``torch.Generator`` (default: torch's global RNG, which DataLoader seeds per worker).

    Call: ``transform(image_db [C, H, W]) -> (view1 [C, S, S], geometry1, view2, geometry2)``.
    NaN pixels should be filled before (the pre-training transform fills them with the normalised mean).
    """

    def __init__(
        self,
        image_size: int | Sequence[int] = 448,
        preset: str = "sar",
        *,
        scale: Sequence[float] | None = None,
        ratio: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0),
        hflip_p: float | None = None,
        vflip_p: float | None = None,
        rot90: bool | None = None,
        photometric_p: float | None = None,
        gain_db: float | None = None,
        brightness: float | None = None,
        contrast: float | None = None,
        speckle_p: float | None = None,
        speckle_looks: int | None = None,
        blur_p: float | None = None,
        blur_sigma: Sequence[float] | None = None,
        db_range: Sequence[float] = (-30.0, 5.0),
        generator: torch.Generator | None = None,
    ) -> None:
        if preset not in _PRESETS:
            raise ValueError(f"unknown augmentation preset {preset!r}, expected one of {sorted(_PRESETS)}")
        settings = dict(_PRESETS[preset])
        overrides = {
            "scale": scale,
            "hflip_p": hflip_p,
            "vflip_p": vflip_p,
            "rot90": rot90,
            "photometric_p": photometric_p,
            "gain_db": gain_db,
            "brightness": brightness,
            "contrast": contrast,
            "speckle_p": speckle_p,
            "speckle_looks": speckle_looks,
            "blur_p": blur_p,
            "blur_sigma": blur_sigma,
        }
        settings.update({key: value for key, value in overrides.items() if value is not None})
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.preset = preset
        self.scale = tuple(float(v) for v in settings["scale"])
        if not 0.0 < self.scale[0] <= self.scale[1] <= 1.0:
            raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {self.scale}")
        self.ratio = tuple(float(v) for v in ratio)
        self.hflip_p = float(settings["hflip_p"])
        self.vflip_p = float(settings["vflip_p"])
        self.rot90 = bool(settings["rot90"])
        self.photometric_p = float(settings["photometric_p"])
        self.gain_db = float(settings["gain_db"])
        self.brightness = float(settings["brightness"])
        self.contrast = float(settings["contrast"])
        self.speckle_p = float(settings["speckle_p"])
        self.speckle_looks = int(settings["speckle_looks"])
        self.blur_p = float(settings["blur_p"])
        self.blur_sigma = tuple(float(v) for v in settings["blur_sigma"])
        self.db_range = (float(db_range[0]), float(db_range[1]))
        self.generator = generator

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k != "generator")
        return f"{type(self).__name__}({fields})"

    def _uniform(self, low: float, high: float) -> float:
        return float(torch.empty(1, dtype=torch.float64).uniform_(low, high, generator=self.generator))

    def _chance(self, p: float) -> bool:
        if p <= 0.0:
            return False
        return float(torch.rand(1, generator=self.generator, dtype=torch.float64)) < p

    def sample_geometry(self, height: int, width: int) -> ViewGeometry:
        """Draw the geometric part of one view for a source of ``height`` x ``width`` pixels."""
        top, left, crop_h, crop_w = random_resized_crop_params(
            height, width, self.scale, self.ratio, self.generator
        )
        hflip = self._chance(self.hflip_p)
        vflip = self._chance(self.vflip_p)
        k = int(torch.randint(0, 4, (1,), generator=self.generator)) if self.rot90 else 0
        return ViewGeometry(
            top, left, crop_h, crop_w, self.image_size[0], self.image_size[1], hflip, vflip, k
        )

    @staticmethod
    def apply_geometry(image: torch.Tensor, geometry: ViewGeometry) -> torch.Tensor:
        """Crop, resize (bilinear, antialiased), flip and rotate ``image`` [C, H, W] as ``geometry`` says."""
        view = TF.resized_crop(
            image,
            geometry.top,
            geometry.left,
            geometry.height,
            geometry.width,
            [geometry.output_height, geometry.output_width],
            antialias=True,
        )
        if geometry.hflip:
            view = view.flip(-1)
        if geometry.vflip:
            view = view.flip(-2)
        if geometry.rot90 % 4:
            view = torch.rot90(view, geometry.rot90 % 4, dims=(-2, -1))
        return view

    def photometric(self, view: torch.Tensor) -> torch.Tensor:
        """Photometric changes in the dB domain (gain, brightness, contrast, speckle, blur)."""
        if self._chance(self.photometric_p):
            if self.brightness > 0:
                factor = self._uniform(max(0.0, 1.0 - self.brightness), 1.0 + self.brightness)
                view = self.db_range[0] + (view - self.db_range[0]) * factor
            if self.contrast > 0:
                factor = self._uniform(max(0.0, 1.0 - self.contrast), 1.0 + self.contrast)
                mean = view.mean(dim=(-2, -1), keepdim=True)
                view = mean + (view - mean) * factor
            if self.gain_db > 0:
                view = view + self._uniform(-self.gain_db, self.gain_db)
        if self._chance(self.speckle_p):
            view = view + gamma_speckle_db(view.shape, self.speckle_looks, self.generator, view.dtype)
        if self._chance(self.blur_p):
            sigma = self._uniform(*self.blur_sigma)
            kernel = 2 * math.ceil(3.0 * sigma) + 1
            view = TF.gaussian_blur(view, [kernel, kernel], [sigma, sigma])
        return view

    def make_view(self, image_db: torch.Tensor) -> tuple[torch.Tensor, ViewGeometry]:
        """One augmented view and its geometry."""
        geometry = self.sample_geometry(image_db.shape[-2], image_db.shape[-1])
        view = self.photometric(self.apply_geometry(image_db, geometry))
        return view, geometry

    def __call__(
        self, image_db: torch.Tensor
    ) -> tuple[torch.Tensor, ViewGeometry, torch.Tensor, ViewGeometry]:
        """Two independent views of ``image_db`` [C, H, W] (float, dB)."""
        if not isinstance(image_db, torch.Tensor):
            image_db = torch.as_tensor(np.asarray(image_db))
        if image_db.ndim != 3:
            raise ValueError(f"expected a [C, H, W] image, got shape {tuple(image_db.shape)}")
        image_db = image_db.float()
        view1, geometry1 = self.make_view(image_db)
        view2, geometry2 = self.make_view(image_db)
        return view1, geometry1, view2, geometry2


class PretrainingTransform:
    """Raw SAR array (any radiometry) -> the sample dict :class:`~di3cl_hf.boxes.PretrainingCollator` takes.

    ``processor.sar_to_db`` converts to dB with the model's channel count; invalid pixels are
    filled with the dB value that normalises to 0; ``two_view_transform`` makes the views; each view
    is clipped, scaled and normalised with ``processor.db_to_pixel_values`` using the image's clip
    bounds (so percentile clipping is decided once per source image, not per view).

    Args:
        processor: A :class:`~di3cl_hf.image_processing_di3cl.DI3CLImageProcessor`.
        two_view_transform: A :class:`TwoViewTransform`.

    Call: ``transform(array [C, H, W], valid_mask=None) -> {"view1", "geometry1", "view2", "geometry2"}``
    with float32 views [num_channels, S, S] and :class:`ViewGeometry` objects.
    """

    def __init__(self, processor: Any, two_view_transform: TwoViewTransform) -> None:
        self.processor = processor
        self.two_view_transform = two_view_transform

    def __call__(self, array: Any, valid_mask: Any | None = None) -> dict[str, Any]:
        if isinstance(array, torch.Tensor):
            array = array.detach().cpu().numpy()
        array = np.asarray(array)
        if valid_mask is not None:
            valid_mask = np.asarray(valid_mask, dtype=bool)
        db, valid = self.processor.sar_to_db(array, valid_mask)
        low, high = self.processor.clip_bounds(db, valid)
        fill = self.processor.neutral_db(low, high).reshape(-1, 1, 1)
        db = np.where(valid[None], db, fill).astype(np.float32)
        view1, geometry1, view2, geometry2 = self.two_view_transform(torch.from_numpy(db))
        return {
            "view1": self.processor.db_to_pixel_values(view1, low, high).contiguous(),
            "geometry1": geometry1,
            "view2": self.processor.db_to_pixel_values(view2, low, high).contiguous(),
            "geometry2": geometry2,
        }

    def transform_batch(
        self, examples: dict[str, list[Any]], image_column: str = "image"
    ) -> dict[str, list[Any]]:
        """``datasets.Dataset.set_transform`` helper: maps a batch dict's ``image_column`` to sample columns.

        Uses ``valid_mask`` from the batch when present.
        """
        masks = examples.get("valid_mask")
        if masks is None:
            masks = [None] * len(examples[image_column])
        samples = [self(image, mask) for image, mask in zip(examples[image_column], masks)]
        return {
            key: [sample[key] for sample in samples] for key in ("view1", "geometry1", "view2", "geometry2")
        }


__all__ = [
    "GEOMETRY_FIELDS",
    "PretrainingTransform",
    "TwoViewTransform",
    "ViewGeometry",
    "gamma_speckle_db",
    "geometries_to_tensor",
    "random_resized_crop_params",
    "source_to_view",
    "view_to_source",
]
