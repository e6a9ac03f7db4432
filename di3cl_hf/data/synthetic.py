"""Synthetic SAR: deterministic, georeferenced, Sentinel-1-like scenes and patches with label masks.

Everything this module writes is **synthetic**: no pixel comes from a real sensor. The data exist so
that the demo, the tests and the Space run without a copy of SARSense or of the downstream sets.
They are built to look plausible to a SAR analyst, not to match any real site:

- **Land cover** in the paper's 10 classes (water, wetland, farmland, forest, meadow, road, village,
  city, ground, other): irregular regions from coordinate-hashed value noise (so any window of an
  arbitrarily large scene is generated independently and still joins its neighbours seamlessly),
  farmland split into rectangular parcels with per-parcel crop offsets, lakes, meandering rivers with
  wetland banks, thin road lines (highways, street grids in built-up areas, farm tracks).
- **Backscatter** per class in dB for VV and VH (C band, ~35° incidence), e.g. calm water ≈ −20 dB
  VV / −27 dB VH, forest ≈ −7.5 / −13, bare ground ≈ −13 / −21, city ≈ −1.5 / −9 with bright point
  scatterers, plus slow within-class variation, a weak incidence-angle trend across range and a
  noise floor (≈ −28 dB).
- **Texture and speckle**: heterogeneous classes (city, village, forest, wetland) get a Gamma
  texture (a K-distributed clutter); every pixel gets multiplicative Gamma speckle with ``looks``
  looks (unit mean) applied to the *linear intensity*, independently per polarisation; the result
  is written in dB (float32) like Sentinel-1 GRD products after calibration.
- **Files**: tiled, compressed GeoTIFFs in UTM zone 31N (EPSG:32631) at 10 m pixels; label masks
  are uint8 (land cover 0..9 in :data:`LANDCOVER_CLASSES` order, water 0/1, roads 0/1).

Everything is a function of ``seed`` (and of the window position), so runs are reproducible.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from affine import Affine

from .classes import LANDCOVER_CLASSES
from .sario import create_geotiff, write_geotiff

WATER, WETLAND, FARMLAND, FOREST, MEADOW, ROAD, VILLAGE, CITY, GROUND, OTHER = range(10)

# Mean backscatter (dB) of each class at C band, VV and VH, ~35 deg incidence (typical Sentinel-1 IW
# values: calm open water is specular and dark, forest has strong VH volume scattering, built-up
# areas are bright from double bounce).
CLASS_BACKSCATTER_DB: dict[str, tuple[float, float]] = {
    "water": (-20.0, -27.0),
    "wetland": (-13.0, -20.0),
    "farmland": (-10.0, -17.0),
    "forest": (-7.5, -13.0),
    "meadow": (-11.5, -18.5),
    "road": (-18.0, -25.0),
    "village": (-5.5, -12.0),
    "city": (-1.5, -9.0),
    "ground": (-13.0, -21.0),
    "other": (-15.0, -22.0),
}
"""Class-typical mean backscatter in dB as ``(VV, VH)``."""

# Shape parameter of the Gamma texture (K-distributed clutter); 0 means homogeneous (speckle only).
CLASS_TEXTURE_SHAPE: dict[str, float] = {
    "water": 0.0,
    "wetland": 6.0,
    "farmland": 0.0,
    "forest": 15.0,
    "meadow": 0.0,
    "road": 0.0,
    "village": 2.5,
    "city": 1.2,
    "ground": 0.0,
    "other": 8.0,
}

SYNTHETIC_CRS = "EPSG:32631"
"""CRS of the synthetic files (WGS 84 / UTM zone 31N)."""
SYNTHETIC_ORIGIN = (500000.0, 4800000.0)
"""Upper-left corner (easting, northing) of the synthetic world, in metres."""
POLARISATION_NAMES = ("VV", "VH")

_LAND_CLASSES = (FARMLAND, FOREST, MEADOW, VILLAGE, CITY, GROUND, OTHER)


@dataclass(frozen=True)
class SceneStyle:
    """How much of each structure a synthetic layout has.

    Attributes:
        land_bias: Added to the noise potential of each land class (farmland, forest, meadow,
            village, city, ground, other); higher means more of that class.
        region_cell: Size in pixels of the coarse noise lattice that shapes land-cover regions.
        landscape_weight: Weight of the landscape-scale octave (8 x ``region_cell``) that groups
            regions into forested, farmed, urban or lake-rich districts.
        lake_threshold: Lakes where the lake potential exceeds this (in [-1, 1]; lower = more lakes).
        river_rate: Expected rivers crossing a 256-px patch (grows with the square root of scene size).
        highway_rate: Expected long roads crossing a 256-px patch.
        track_probability: Fraction of farmland parcel edges that carry a farm track.
        pixel_size: Ground sampling distance in metres.
        noise_floor_db: Noise-equivalent sigma nought added before speckle.
        incidence_trend_db_per_km: Backscatter change across range (columns).
    """

    land_bias: tuple[float, ...] = (0.30, 0.18, 0.10, -0.25, -0.35, 0.0, -0.35)
    region_cell: int = 56
    landscape_weight: float = 0.8
    lake_threshold: float = 0.62
    river_rate: float = 0.35
    highway_rate: float = 0.6
    track_probability: float = 0.25
    pixel_size: float = 10.0
    noise_floor_db: float = -28.0
    incidence_trend_db_per_km: float = -0.012


STYLES: dict[str, SceneStyle] = {
    "landcover": SceneStyle(),
    "water": SceneStyle(lake_threshold=0.45, river_rate=1.0),
    "roads": SceneStyle(
        land_bias=(0.30, 0.05, 0.10, 0.0, -0.25, 0.0, -0.40), highway_rate=2.0, track_probability=0.5
    ),
}
"""Styles of the three downstream sets: water-rich scenes for ``water``, road-rich ones for ``roads``."""


# -- coordinate-hashed value noise -------------------------------------------------------------------
_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)


def _hash_uniform(seed: int, channel: int, *coords: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) values that depend only on (seed, channel, integer coordinates): splitmix64."""
    start = (seed * 0x9E3779B97F4A7C15 + (channel + 1) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    h = np.full(np.broadcast_shapes(*(np.shape(c) for c in coords)), start, np.uint64)
    for c in coords:
        h = (h ^ (np.asarray(c).astype(np.int64).astype(np.uint64) + np.uint64(0x632BE59BD9B4E019))) * _M1
        h ^= h >> np.uint64(30)
        h *= _M2
        h ^= h >> np.uint64(27)
        h *= _M3
        h ^= h >> np.uint64(31)
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _catmull_rom(start: int, length: int, cell: float) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Catmull-Rom interpolation from lattice nodes to pixels ``start .. start+length-1``.

    Returns ``(node_index [length, 4] relative to the first node, weights [length, 4], first node,
    number of nodes)``.
    """
    t = (np.arange(start, start + length) + 0.5) / cell
    base = np.floor(t).astype(np.int64)
    f = t - base
    first = int(base.min()) - 1
    nodes = int(base.max()) + 3 - first
    f2, f3 = f * f, f * f * f
    weights = np.stack(
        [
            -0.5 * f3 + f2 - 0.5 * f,
            1.5 * f3 - 2.5 * f2 + 1.0,
            -1.5 * f3 + 2.0 * f2 + 0.5 * f,
            0.5 * f3 - 0.5 * f2,
        ],
        axis=1,
    )
    index = (base - first - 1)[:, None] + np.arange(4)[None, :]
    return index, weights, first, nodes


def value_noise(
    seed: int, channel: int, row0: int, col0: int, height: int, width: int, cell: float
) -> np.ndarray:
    """Smooth noise in about [-1, 1] on a window of an infinite plane (lattice spacing ``cell`` px).

    The value at a pixel depends only on its global coordinates, so windows join seamlessly.
    """
    # separable interpolation as 4-tap gathers (no BLAS: its threads thrash on a busy machine)
    ri, rw, r0, ny = _catmull_rom(row0, height, cell)
    ci, cw, c0, nx = _catmull_rom(col0, width, cell)
    iy = np.arange(r0, r0 + ny)[:, None]
    ix = np.arange(c0, c0 + nx)[None, :]
    lattice = (2.0 * _hash_uniform(seed, channel, iy, ix) - 1.0).astype(np.float32)  # [ny, nx]
    rw, cw = rw.astype(np.float32), cw.astype(np.float32)
    rows = sum(rw[:, k, None] * lattice[ri[:, k]] for k in range(4))  # [height, nx]
    return sum(cw[None, :, k] * rows[:, ci[:, k]] for k in range(4))  # [height, width]


# -- layout (geometry of the whole scene, cheap to hold) -------------------------------------------------
@dataclass
class _Curve:
    """A meandering line across the scene: centre v = offset + sum A sin(2 pi u / wavelength + phase)."""

    angle: float
    offset: float
    amplitudes: np.ndarray
    wavelengths: np.ndarray
    phases: np.ndarray
    width: float

    def mask(self, rows: np.ndarray, cols: np.ndarray, width_scale: float = 1.0) -> np.ndarray:
        """Boolean mask of the curve on the pixel grid ``rows [h, 1]`` x ``cols [1, w]``."""
        cos, sin = np.cos(self.angle), np.sin(self.angle)
        shape = (rows.shape[0], cols.shape[1])
        # skip windows the curve cannot reach (most windows of a big scene)
        corners = [-c * sin + r * cos for r in (rows[0, 0], rows[-1, 0]) for c in (cols[0, 0], cols[0, -1])]
        reach = float(np.abs(self.amplitudes).sum()) + 0.5 * self.width * width_scale + 1.0
        if min(corners) > self.offset + reach or max(corners) < self.offset - reach:
            return np.zeros(shape, dtype=bool)
        u = cols * cos + rows * sin
        v = -cols * sin + rows * cos
        centre = self.offset + np.zeros_like(u)
        for a, lam, ph in zip(self.amplitudes, self.wavelengths, self.phases):
            centre = centre + a * np.sin(2 * np.pi * u / lam + ph)
        return np.abs(v - centre) < 0.5 * self.width * width_scale


@dataclass
class SyntheticLayout:
    """Everything that defines a synthetic scene of ``height`` x ``width`` pixels except speckle.

    Build it with :func:`make_layout`; render windows with :func:`render_window`.
    """

    seed: int
    height: int
    width: int
    style: SceneStyle
    rivers: list[_Curve] = field(default_factory=list)
    highways: list[_Curve] = field(default_factory=list)
    grid_angle: float = 0.0
    parcel_size: tuple[float, float] = (24.0, 16.0)


def _random_curves(
    rng: np.random.Generator, count: int, height: int, width: int, widths: tuple[float, float], wiggle: float
) -> list[_Curve]:
    curves = []
    diag = float(np.hypot(height, width))
    for _ in range(count):
        angle = rng.uniform(0, np.pi)
        cos, sin = np.cos(angle), np.sin(angle)
        # offset so that the line crosses the scene: v of the scene centre +- half the extent
        centre_v = -(width / 2) * sin + (height / 2) * cos
        offset = centre_v + rng.uniform(-0.4, 0.4) * diag
        n = 3
        wavelengths = rng.uniform(0.3, 1.2, n) * max(height, width, 256) * np.array([1.0, 0.45, 0.2])
        amplitudes = wiggle * wavelengths * rng.uniform(0.03, 0.12, n)
        curves.append(
            _Curve(
                angle=angle,
                offset=offset,
                amplitudes=amplitudes,
                wavelengths=wavelengths,
                phases=rng.uniform(0, 2 * np.pi, n),
                width=float(np.exp(rng.uniform(np.log(widths[0]), np.log(widths[1])))),
            )
        )
    return curves


def make_layout(
    height: int, width: int, seed: int = 0, style: SceneStyle | str = "landcover"
) -> SyntheticLayout:
    """Draw the large-scale structure (rivers, highways, parcel grid) of a synthetic scene.

    Args:
        height: Scene rows.
        width: Scene columns.
        seed: Random seed; the same seed gives the same scene.
        style: A :class:`SceneStyle` or the name of one in :data:`STYLES`.
    """
    style = STYLES[style] if isinstance(style, str) else style
    rng = np.random.default_rng([seed, 7919])
    scale = np.sqrt(max(height, width) / 256.0)
    big = max(height, width) > 1024
    rivers = _random_curves(
        rng, rng.poisson(style.river_rate * scale), height, width, (3.0, 30.0 if big else 14.0), 1.0
    )
    highways = _random_curves(rng, rng.poisson(style.highway_rate * scale), height, width, (1.0, 2.2), 0.15)
    return SyntheticLayout(
        seed=seed,
        height=height,
        width=width,
        style=style,
        rivers=rivers,
        highways=highways,
        grid_angle=float(rng.uniform(-0.6, 0.6)),
        parcel_size=(float(rng.uniform(15, 40)), float(rng.uniform(10, 28))),
    )


def _landcover(
    layout: SyntheticLayout, row0: int, col0: int, height: int, width: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Land-cover ids [h, w] plus helper fields (parcel ids, urban streets)."""
    style, seed = layout.style, layout.seed
    cell = style.region_cell
    potentials = np.stack(
        [
            # three octaves: landscape (forested hills vs. farmed plains), region and boundary detail
            style.landscape_weight * value_noise(seed, 40 + k, row0, col0, height, width, cell * 8)
            + value_noise(seed, 10 + k, row0, col0, height, width, cell)
            + 0.35 * value_noise(seed, 30 + k, row0, col0, height, width, cell / 4)
            + style.land_bias[k]
            for k in range(len(_LAND_CLASSES))
        ]
    )
    classes = np.asarray(_LAND_CLASSES, dtype=np.uint8)[potentials.argmax(axis=0)]

    rows = np.arange(row0, row0 + height, dtype=np.float64)[:, None]
    cols = np.arange(col0, col0 + width, dtype=np.float64)[None, :]

    # lakes, with a wetland fringe
    lake = (
        value_noise(seed, 50, row0, col0, height, width, cell * 0.9)
        + 0.2 * value_noise(seed, 51, row0, col0, height, width, cell / 5)
        + style.landscape_weight * 0.5 * value_noise(seed, 53, row0, col0, height, width, cell * 8)
    )
    water = lake > style.lake_threshold
    wet = (lake > style.lake_threshold - 0.12) & ~water
    # rivers, with wetland banks where a noise field says so
    bank_noise = value_noise(seed, 52, row0, col0, height, width, 12) > 0.1
    for river in layout.rivers:
        water |= river.mask(rows, cols)
        wet |= river.mask(rows, cols, width_scale=3.0) & bank_noise
    classes[wet & ~water] = WETLAND

    # farmland parcels on a rotated grid (crop-type offsets are drawn per parcel when rendering)
    cos, sin = np.cos(layout.grid_angle), np.sin(layout.grid_angle)
    u = cols * cos + rows * sin
    v = -cols * sin + rows * cos
    pw, ph = layout.parcel_size
    parcel_u, parcel_v = np.floor(u / pw), np.floor(v / ph)
    farmland = classes == FARMLAND
    on_u_edge = (u - parcel_u * pw) < 1.0
    on_v_edge = (v - parcel_v * ph) < 1.0
    track = farmland & (
        (on_u_edge & (_hash_uniform(seed, 60, parcel_u, parcel_v) < style.track_probability))
        | (on_v_edge & (_hash_uniform(seed, 61, parcel_u, parcel_v) < style.track_probability))
    )
    # street grids in built-up areas (denser in cities)
    city, village = classes == CITY, classes == VILLAGE
    streets = (city & (((u % 11.0) < 1.2) | ((v % 13.0) < 1.2))) | (
        village & (((u % 23.0) < 1.0) | ((v % 29.0) < 1.0))
    )
    roads = track | streets
    for highway in layout.highways:
        roads |= highway.mask(rows, cols)
    roads &= ~water
    classes[roads] = ROAD
    classes[water] = WATER
    parcel_id = parcel_u.astype(np.int64) * 1_000_003 + parcel_v.astype(np.int64)
    return classes, {"parcel_id": np.broadcast_to(parcel_id, classes.shape)}


def render_window(
    layout: SyntheticLayout,
    row0: int,
    col0: int,
    height: int,
    width: int,
    polarisations: int = 2,
    looks: float = 4.4,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render a window of a synthetic scene.

    Args:
        layout: From :func:`make_layout`.
        row0: First row of the window in scene pixels.
        col0: First column.
        height: Window rows.
        width: Window columns.
        polarisations: 1 (VV) or 2 (VV, VH).
        looks: Equivalent number of looks of the Gamma speckle (Sentinel-1 IW GRD is about 4.4).
        rng: Generator for texture and speckle; default one seeded by (seed, row0, col0).

    Returns:
        ``(backscatter_db float32 [P, h, w], landcover uint8 [h, w])``.
    """
    if polarisations not in (1, 2):
        raise ValueError(f"polarisations must be 1 (VV) or 2 (VV, VH), got {polarisations}")
    if looks <= 0:
        raise ValueError(f"looks must be positive, got {looks}")
    style, seed = layout.style, layout.seed
    rng = rng if rng is not None else np.random.default_rng([seed, row0, col0, 1])
    classes, helpers = _landcover(layout, row0, col0, height, width)

    mean_db = np.array(
        [CLASS_BACKSCATTER_DB[name] for name in LANDCOVER_CLASSES], dtype=np.float32
    )  # [10, 2]
    texture_shape = np.array([CLASS_TEXTURE_SHAPE[name] for name in LANDCOVER_CLASSES], dtype=np.float32)

    # slow within-class variation (moisture, biomass, wind over water), shared by VV and VH
    variation = 1.2 * value_noise(seed, 70, row0, col0, height, width, 40)
    variation += np.where(classes == WATER, 2.0 * value_noise(seed, 71, row0, col0, height, width, 60), 0.0)
    # crop type per parcel: VV offset and a VH/VV ratio change
    parcel = helpers["parcel_id"]
    farmland = classes == FARMLAND
    crop = _hash_uniform(seed, 72, parcel)
    crop_vv = np.where(farmland, -3.5 + 6.5 * crop, 0.0)
    crop_vh = np.where(farmland, crop_vv + 2.0 * (_hash_uniform(seed, 73, parcel) - 0.5), 0.0)
    trend = (
        style.incidence_trend_db_per_km * style.pixel_size / 1000.0 * np.arange(col0, col0 + width)[None, :]
    )

    texture = np.ones((height, width), dtype=np.float32)
    shape = texture_shape[classes]
    textured = shape > 0
    if textured.any():
        k = shape[textured]
        texture[textured] = rng.gamma(k, 1.0 / k).astype(np.float32)
    # bright point scatterers (corners of buildings, pylons) in built-up areas
    built = (classes == CITY) | (classes == VILLAGE)
    points = built & (rng.random((height, width)) < np.where(classes == CITY, 0.03, 0.01))
    texture[points] *= (10 ** (rng.uniform(8.0, 16.0, int(points.sum())) / 10)).astype(
        np.float32
    )  # +8..16 dB

    noise_floor = 10 ** (style.noise_floor_db / 10)
    out = np.empty((polarisations, height, width), dtype=np.float32)
    for p in range(polarisations):
        offset = crop_vv if p == 0 else crop_vh
        db = mean_db[classes, p] + variation + offset + trend
        intensity = 10 ** (db / 10) * texture + noise_floor
        speckle = rng.gamma(looks, 1.0 / looks, size=(height, width))
        out[p] = (10 * np.log10(intensity * speckle)).astype(np.float32)
    return out, classes


@dataclass
class SyntheticPatch:
    """An in-memory synthetic patch.

    Attributes:
        image: Backscatter in dB, float32 ``[P, H, W]`` (P = 1: VV; 2: VV, VH).
        landcover: uint8 ``[H, W]``, ids into :data:`LANDCOVER_CLASSES`.
        transform: Affine transform of the patch in :data:`SYNTHETIC_CRS`.
    """

    image: np.ndarray
    landcover: np.ndarray
    transform: Affine

    @property
    def water(self) -> np.ndarray:
        """Binary water mask (uint8)."""
        return (self.landcover == WATER).astype(np.uint8)

    @property
    def roads(self) -> np.ndarray:
        """Binary road mask (uint8)."""
        return (self.landcover == ROAD).astype(np.uint8)


def _patch_transform(index: int, size: int, pixel_size: float) -> Affine:
    # patches tile the synthetic world 64 per row with a one-patch gap, so none overlap
    row, col = divmod(index, 64)
    x0 = SYNTHETIC_ORIGIN[0] + col * 2 * size * pixel_size
    y0 = SYNTHETIC_ORIGIN[1] - row * 2 * size * pixel_size
    return Affine(pixel_size, 0.0, x0, 0.0, -pixel_size, y0)


def synthetic_patch(
    size: int = 256,
    polarisations: int = 2,
    seed: int = 0,
    index: int = 0,
    looks: float = 4.4,
    style: SceneStyle | str = "landcover",
) -> SyntheticPatch:
    """Render one synthetic patch in memory (no files).

    Args:
        size: Height and width in pixels.
        polarisations: 1 (VV) or 2 (VV, VH).
        seed: Random seed of the collection.
        index: Patch number inside the collection (each index is a different scene).
        looks: Equivalent number of looks of the speckle.
        style: A :class:`SceneStyle` or a name in :data:`STYLES`.
    """
    style = STYLES[style] if isinstance(style, str) else style
    layout = make_layout(size, size, seed=seed * 1_000_003 + index, style=style)
    image, landcover = render_window(layout, 0, 0, size, size, polarisations, looks)
    return SyntheticPatch(image, landcover, _patch_transform(index, size, style.pixel_size))


def _metadata_row(name: str, polarisations: int, pixel_size: float) -> dict[str, str]:
    return {
        "file_name": name,
        "sensor": "synthetic (Sentinel-1-like)",
        "band": "C",
        "frequency_ghz": "5.405",
        "polarisation": "+".join(POLARISATION_NAMES[:polarisations]),
        "resolution_m": f"{pixel_size:g}",
        "source_dataset": "di3cl_hf.synthetic",
    }


def generate_sarsense(
    out_dir: str | os.PathLike[str],
    num_patches: int,
    size: int = 256,
    polarisations: int = 2,
    seed: int = 0,
    looks: float = 4.4,
) -> list[Path]:
    """Write a synthetic, SARSense-like folder of unlabelled patches (GeoTIFF, dB, float32).

    Layout: ``out_dir/patches/synthetic_00000.tif`` ... plus ``out_dir/metadata.csv`` (columns
    ``file_name, sensor, band, frequency_ghz, polarisation, resolution_m, source_dataset``) that
    :func:`di3cl_hf.data.load_sarsense` reads.

    Args:
        out_dir: Output folder (created).
        num_patches: Number of patches.
        size: Patch height and width in pixels.
        polarisations: 1 (VV) or 2 (VV, VH).
        seed: Random seed; the same seed writes the same pixels.
        looks: Equivalent number of looks of the speckle.

    Returns:
        The written patch paths.
    """
    if num_patches < 1:
        raise ValueError(f"num_patches must be >= 1, got {num_patches}")
    out_dir = Path(out_dir)
    paths = []
    rows = []
    for index in range(num_patches):
        patch = synthetic_patch(size, polarisations, seed, index, looks)
        name = f"patches/synthetic_{index:05d}.tif"
        paths.append(
            write_geotiff(
                out_dir / name,
                patch.image,
                crs=SYNTHETIC_CRS,
                transform=patch.transform,
                nodata=float("nan"),
                band_names=POLARISATION_NAMES[:polarisations],
            )
        )
        rows.append(_metadata_row(name, polarisations, STYLES["landcover"].pixel_size))
    _write_csv(out_dir / "metadata.csv", rows)
    return paths


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


SEGMENTATION_TASKS = ("landcover", "water", "roads")


def generate_segmentation_sets(
    out_dir: str | os.PathLike[str],
    num_patches: int,
    size: int = 256,
    seed: int = 0,
    polarisations: int = 2,
    looks: float = 4.4,
    test_fraction: float = 0.2,
    tasks: Sequence[str] = SEGMENTATION_TASKS,
) -> dict[str, Path]:
    """Write synthetic downstream sets: ``out_dir/<task>/<split>/{images,masks}/<name>.tif``.

    Tasks: ``landcover`` (masks 0..9, :data:`LANDCOVER_CLASSES`), ``water`` (0/1, water-rich
    scenes) and ``roads`` (0/1, road-rich scenes). Splits: ``train`` and ``test`` (the last
    ``test_fraction`` of the patches). Images are float32 dB GeoTIFFs, masks uint8 GeoTIFFs with the
    same CRS and transform.

    Args:
        out_dir: Output folder.
        num_patches: Patches per task.
        size: Patch size in pixels.
        seed: Random seed.
        polarisations: 1 (VV) or 2 (VV, VH).
        looks: Speckle looks.
        test_fraction: Fraction of patches in the ``test`` split.
        tasks: Which of the three sets to write.

    Returns:
        ``{task: folder}``.
    """
    if num_patches < 1:
        raise ValueError(f"num_patches must be >= 1, got {num_patches}")
    unknown = set(tasks) - set(SEGMENTATION_TASKS)
    if unknown:
        raise ValueError(f"unknown task(s) {sorted(unknown)}, expected some of {SEGMENTATION_TASKS}")
    out_dir = Path(out_dir)
    num_test = int(round(num_patches * test_fraction)) if num_patches > 1 else 0
    folders = {}
    for task_index, task in enumerate(tasks):
        folder = out_dir / task
        for index in range(num_patches):
            split = "test" if index >= num_patches - num_test else "train"
            patch = synthetic_patch(size, polarisations, seed * 31 + task_index + 1, index, looks, style=task)
            mask = {"landcover": patch.landcover, "water": patch.water, "roads": patch.roads}[task]
            name = f"{task}_{index:05d}.tif"
            write_geotiff(
                folder / split / "images" / name,
                patch.image,
                crs=SYNTHETIC_CRS,
                transform=patch.transform,
                nodata=float("nan"),
                band_names=POLARISATION_NAMES[:polarisations],
            )
            write_geotiff(
                folder / split / "masks" / name,
                mask,
                crs=SYNTHETIC_CRS,
                transform=patch.transform,
                nodata=255,
            )
        folders[task] = folder
    return folders


def _outside_swath(
    row0: int, col0: int, height: int, width: int, scene_height: int, scene_width: int
) -> np.ndarray:
    """Pixels left/right of a strip whose edges lean by 12 % of the scene width over its height."""
    rows = np.arange(row0, row0 + height)[:, None] / max(scene_height - 1, 1)
    cols = np.arange(col0, col0 + width)[None, :] / max(scene_width - 1, 1)
    return (cols < 0.12 * (1.0 - rows)) | (cols > 0.88 + 0.12 * (1.0 - rows))


def generate_scene(
    path: str | os.PathLike[str],
    height: int,
    width: int,
    seed: int = 0,
    polarisations: int = 2,
    looks: float = 4.4,
    style: SceneStyle | str = "landcover",
    labels_path: str | os.PathLike[str] | None = None,
    tile_size: int = 1024,
    cog: bool = False,
    swath_edges: bool = False,
) -> Path:
    """Write a big georeferenced synthetic scene window by window (never whole in memory).

    With ``swath_edges=True`` the scene is a slanted strip, as a geocoded swath inside its
    north-up bounding box: the corners outside it are nodata (NaN in the image, 255 in the labels).

    Args:
        path: Output GeoTIFF (float32 dB, ``polarisations`` bands, NaN nodata).
        height: Rows (16k x 16k works; memory stays at a few tiles).
        width: Columns.
        seed: Random seed.
        polarisations: 1 (VV) or 2 (VV, VH).
        looks: Speckle looks.
        style: A :class:`SceneStyle` or a name in :data:`STYLES`.
        labels_path: Also write the land-cover mask (uint8, ids into :data:`LANDCOVER_CLASSES`) here.
        tile_size: Rows/columns rendered at once.
        cog: Write Cloud-Optimized GeoTIFFs.
        swath_edges: Leave nodata wedges on the left and right like a geocoded satellite swath.

    Returns:
        ``path``.
    """
    if height < 1 or width < 1:
        raise ValueError(f"scene size must be positive, got {height}x{width}")
    style = STYLES[style] if isinstance(style, str) else style
    layout = make_layout(height, width, seed=seed, style=style)
    transform = Affine(
        style.pixel_size, 0.0, SYNTHETIC_ORIGIN[0], 0.0, -style.pixel_size, SYNTHETIC_ORIGIN[1]
    )
    image_writer = create_geotiff(
        path,
        height,
        width,
        polarisations,
        "float32",
        SYNTHETIC_CRS,
        transform,
        float("nan"),
        cog=cog,
        band_names=POLARISATION_NAMES[:polarisations],
    )
    label_writer = None
    try:
        if labels_path is not None:
            label_writer = create_geotiff(
                labels_path, height, width, 1, "uint8", SYNTHETIC_CRS, transform, 255, cog=cog
            )
        for row0 in range(0, height, tile_size):
            for col0 in range(0, width, tile_size):
                h, w = min(tile_size, height - row0), min(tile_size, width - col0)
                image, classes = render_window(layout, row0, col0, h, w, polarisations, looks)
                if swath_edges:
                    outside = _outside_swath(row0, col0, h, w, height, width)
                    image[:, outside] = np.nan
                    classes[outside] = 255
                window = (row0, col0, h, w)
                image_writer.write(image, window)
                if label_writer is not None:
                    label_writer.write(classes, window)
    except BaseException:
        image_writer.abort()
        if label_writer is not None:
            label_writer.abort()
        raise
    image_writer.close()
    if label_writer is not None:
        label_writer.close()
    return Path(path)


__all__ = [
    "CLASS_BACKSCATTER_DB",
    "CLASS_TEXTURE_SHAPE",
    "LANDCOVER_CLASSES",
    "POLARISATION_NAMES",
    "SEGMENTATION_TASKS",
    "STYLES",
    "SYNTHETIC_CRS",
    "SceneStyle",
    "SyntheticLayout",
    "SyntheticPatch",
    "generate_scene",
    "generate_sarsense",
    "generate_segmentation_sets",
    "make_layout",
    "render_window",
    "synthetic_patch",
    "value_noise",
]
