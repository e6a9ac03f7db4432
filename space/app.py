"""DI3CL in the browser: upload a SAR patch, get land-cover / water / road maps or a feature view.

The app is a thin layer over the library: files are read with ``di3cl_hf.data.sario``, converted with
the model's ``DI3CLImageProcessor`` (radiometry declared or ``auto``) and segmented with
``di3cl_hf.inference.scene.predict_scene`` (tiled, blended, GeoTIFF output with the input's CRS and
transform). The feature view colours the first three principal components of the encoder's dense
(stride-32) features.

Models are looked up per task (``landcover``, ``water``, ``roads``), first match wins:

1. ``DI3CL_MODEL_LANDCOVER`` / ``DI3CL_MODEL_WATER`` / ``DI3CL_MODEL_ROADS``: a folder or Hub id;
2. ``$DI3CL_MODEL_DIR/<task>``;
3. ``models/<task>`` next to this file (``di3cl push space --models`` bundles them there);
4. water only: the model shipped inside the package (``di3cl_hf/weights/s1-water-resnet18``, real Sentinel-1
   VV + VH, :data:`di3cl_hf.weights.DEFAULT_WATER_MODEL`), so the Space opens on it;
5. ``../outputs/demo/models/<task>`` (what ``make demo`` writes in a checkout).

The page opens on the water task and says which model each task uses.

``DI3CL_MODEL_ENCODER`` optionally names a pre-trained encoder for the feature view (default: the
encoder of the first task model found).

Limits (environment variables; every refusal is a message, decided from the file header before any
pixel is read): ``DI3CL_SPACE_MAX_FILE_SIZE`` (upload size, default ``100mb``),
``DI3CL_SPACE_MAX_PIXELS`` (largest accepted raster, default 25 Mpx), ``DI3CL_SPACE_MAX_SIDE``
(longest side, default 10,000 px), ``DI3CL_SPACE_MAX_ASPECT`` (longest / shortest side, default 50),
``DI3CL_SPACE_MAX_TILES`` (model tiles per request after downscaling, default 64),
``DI3CL_SPACE_PREDICT_PIXELS`` (larger inputs are downscaled to about this many pixels, default
2 Mpx; inputs larger than a tile, ``DI3CL_SPACE_TILE_SIZE``, default 512 px, are predicted in
blended tiles), ``DI3CL_SPACE_TIME_BUDGET`` (seconds per request, default 120: the work stops between
two model batches and the user gets a message) and ``DI3CL_SPACE_QUEUE_SIZE`` (waiting requests,
default 16). One request runs at a time; when its client disconnects, the work stops at the next
model batch. Every request works in its own ``di3cl-space-*`` temporary folder, removed when it ends
(refused, failed or stopped requests too); the result GeoTIFF is handed to gradio's cache, which
deletes files older than an hour.

Run locally with ``python space/app.py`` (``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` as usual).
"""

from __future__ import annotations

import contextlib
import functools
import html
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from an offline demo
# In the pushed Space the package is bundled next to app.py; in a checkout it is one level up.
for _root in (APP_DIR, APP_DIR.parent):
    if (_root / "di3cl_hf" / "__init__.py").is_file():
        sys.path.insert(0, str(_root))
        break

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import rasterio  # noqa: E402
import torch  # noqa: E402
from affine import Affine  # noqa: E402
from gradio.processing_utils import save_file_to_cache  # noqa: E402
from gradio.utils import get_upload_folder  # noqa: E402
from PIL import Image  # noqa: E402
from rasterio.errors import RasterioError  # noqa: E402
from transformers.utils import logging as transformers_logging  # noqa: E402

from di3cl_hf import DI3CLForSemanticSegmentation, DI3CLImageProcessor  # noqa: E402
from di3cl_hf.data.georef import scaled_gcps  # noqa: E402
from di3cl_hf.data.sario import SARFileError, SARRaster, open_scene, read_sar, write_geotiff  # noqa: E402
from di3cl_hf.inference.scene import predict_scene, tile_starts  # noqa: E402
from di3cl_hf.loading import load_model_and_processor  # noqa: E402
from di3cl_hf.radiometry import RADIOMETRY_KINDS, resolve_kind  # noqa: E402
from di3cl_hf.weights import DEFAULT_WATER_MODEL, shipped_model_available  # noqa: E402

LOGGER = logging.getLogger("di3cl.space")
transformers_logging.set_verbosity_error()

TASKS = {"Land cover": "landcover", "Water": "water", "Roads": "roads", "Features (PCA)": "features"}
MODEL_TASKS = ("landcover", "water", "roads")
SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".npy")
MAX_FILE_SIZE = os.environ.get("DI3CL_SPACE_MAX_FILE_SIZE", "100mb")
MAX_PIXELS = int(os.environ.get("DI3CL_SPACE_MAX_PIXELS", 25_000_000))
PREDICT_PIXELS = int(os.environ.get("DI3CL_SPACE_PREDICT_PIXELS", 2_000_000))
TILE_SIZE = int(os.environ.get("DI3CL_SPACE_TILE_SIZE", 512))
MAX_SIDE = int(os.environ.get("DI3CL_SPACE_MAX_SIDE", 10_000))
MAX_ASPECT = float(os.environ.get("DI3CL_SPACE_MAX_ASPECT", 50))
MAX_TILES = int(os.environ.get("DI3CL_SPACE_MAX_TILES", 64))
TIME_BUDGET = float(os.environ.get("DI3CL_SPACE_TIME_BUDGET", 120))
QUEUE_SIZE = int(os.environ.get("DI3CL_SPACE_QUEUE_SIZE", 16))
WORK_DIR_PREFIX = "di3cl-space-"
RESULT_MAX_AGE = 3600  # seconds gradio keeps a result in its cache
OVERLAP = 64
DISPLAY_SIDE = 1024
NODATA = 255

# Colours by class name (RGB); unknown names take the next colour of PALETTE.
CLASS_COLOURS = {
    "water": (31, 119, 180),
    "wetland": (23, 190, 207),
    "farmland": (255, 221, 87),
    "forest": (20, 110, 40),
    "meadow": (140, 210, 90),
    "road": (214, 39, 40),
    "roads": (214, 39, 40),
    "village": (255, 140, 0),
    "city": (200, 50, 160),
    "ground": (170, 130, 90),
    "other": (128, 128, 128),
    "background": (60, 60, 60),
    "land": (60, 60, 60),
    "no water": (60, 60, 60),
    "not_water": (60, 60, 60),
    "not-water": (60, 60, 60),
    "not water": (60, 60, 60),
    "no road": (60, 60, 60),
}
PALETTE = [(228, 26, 28), (55, 126, 184), (77, 175, 74), (152, 78, 163), (255, 127, 0), (166, 86, 40)]


class SpaceInputError(ValueError):
    """A problem with the user's file or choices; its message is shown in the UI as is."""


class RequestStopped(Exception):
    """The request ran past its time budget or lost its client; the message is shown in the UI."""


# The running app (set by build_demo): its queue tells whether a request's client is still connected.
DEMO: gr.Blocks | None = None


def client_connected(session_hash: str | None) -> bool:
    """False once gradio has marked the request of ``session_hash`` dead (its client disconnected).

    Gradio sets ``alive = False`` on the queued events of a session whose event stream closed; a
    synchronous handler runs on in its thread, so the work checks this between model batches.
    """
    queue = getattr(DEMO, "_queue", None)
    if session_hash is None or queue is None:
        return True
    events = [
        event
        for jobs in list(getattr(queue, "active_jobs", []))
        if jobs
        for event in jobs
        if getattr(event, "session_hash", None) == session_hash
    ]
    return not events or any(getattr(event, "alive", True) for event in events)


@dataclass
class Budget:
    """The time budget and the client of one request; :meth:`check` raises once either is gone."""

    deadline: float
    session_hash: str | None = None

    @classmethod
    def start(cls, request: gr.Request | None = None) -> Budget:
        return cls(time.monotonic() + TIME_BUDGET, getattr(request, "session_hash", None))

    def check(self) -> None:
        if not client_connected(self.session_hash):
            raise RequestStopped("The client disconnected; the request was stopped.")
        if time.monotonic() > self.deadline:
            raise RequestStopped(
                f"This request took longer than the demo's {TIME_BUDGET:.0f} s budget and was stopped; "
                "try a smaller crop, or run `di3cl predict` locally, which has no time limit"
            )


class BudgetedModel(torch.nn.Module):
    """A segmentation model that checks the request's :class:`Budget` before every batch."""

    def __init__(self, model: torch.nn.Module, budget: Budget) -> None:
        super().__init__()
        self.model = model
        self.config = model.config
        self.budget = budget

    def forward(self, pixel_values: torch.Tensor, *args, **kwargs):
        self.budget.check()
        return self.model(pixel_values, *args, **kwargs)


@contextlib.contextmanager
def work_folder() -> Iterator[Path]:
    """A ``di3cl-space-*`` temporary folder for one request, removed however the request ends."""
    folder = Path(tempfile.mkdtemp(prefix=WORK_DIR_PREFIX))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def keep_result(path: Path) -> str:
    """Copy a result out of the request's folder into gradio's cache (served from there, aged out)."""
    return save_file_to_cache(path, get_upload_folder())


# ------------------------------------------------------------------------------------------ models


def model_location(task: str) -> str | None:
    """Folder or Hub id of the ``task`` model (see the module docstring for the search order)."""
    explicit = os.environ.get(f"DI3CL_MODEL_{task.upper()}")
    if explicit:
        return explicit
    candidates = []
    if os.environ.get("DI3CL_MODEL_DIR"):
        candidates.append(Path(os.environ["DI3CL_MODEL_DIR"]) / task)
    candidates.append(APP_DIR / "models" / task)
    if task == "water" and shipped_model_available():
        candidates.append(DEFAULT_WATER_MODEL)
    candidates.append(APP_DIR.parent / "outputs" / "demo" / "models" / task)
    for candidate in candidates:
        if (candidate / "config.json").is_file():
            return str(candidate)
    return None


def is_shipped(location: str | None) -> bool:
    """Whether ``location`` is the model shipped inside the package."""
    return location is not None and Path(location).resolve() == DEFAULT_WATER_MODEL.resolve()


def describe_model(task: str) -> str:
    """One line naming the model of ``task`` (and, for the shipped one, what it was trained on)."""
    location = model_location(task)
    if location is None:
        return "not installed"
    if not is_shipped(location):
        return f"`{location}`"
    trained_on = ""
    card = DEFAULT_WATER_MODEL / "README.md"
    if card.is_file():
        found = re.search(
            r"^- \*\*Trained on\*\*: (.+)$", card.read_text(encoding="utf-8"), flags=re.MULTILINE
        )
        trained_on = f"; trained on {found.group(1).strip()}" if found else ""
    return f"`{DEFAULT_WATER_MODEL.name}`, shipped with di3cl-hf (real Sentinel-1, VV + VH{trained_on})"


def models_markdown() -> str:
    """The models each task uses, shown under the title."""
    names = {"water": "Water", "landcover": "Land cover", "roads": "Roads"}
    return "**Models.** " + "; ".join(f"{names[task]}: {describe_model(task)}" for task in MODEL_TASKS) + "."


def _missing_model(task: str) -> SpaceInputError:
    return SpaceInputError(
        f"No {task} model is installed. Set DI3CL_MODEL_DIR to a folder with landcover/, water/ and roads/ "
        f"model folders (`make demo` writes outputs/demo/models), or DI3CL_MODEL_{task.upper()} to a model."
    )


@functools.lru_cache(maxsize=4)
def load_task_model(task: str) -> tuple[DI3CLForSemanticSegmentation, DI3CLImageProcessor]:
    """The segmentation model and processor of ``task`` (cached; the default processor for the model's
    channels when the folder has no preprocessor_config.json)."""
    location = model_location(task)
    if location is None:
        raise _missing_model(task)
    return load_model_and_processor(location, "segmentation")


@functools.lru_cache(maxsize=1)
def load_encoder() -> tuple[torch.nn.Module, DI3CLImageProcessor]:
    """The encoder for the feature view: ``DI3CL_MODEL_ENCODER`` or the first task model's encoder."""
    location = os.environ.get("DI3CL_MODEL_ENCODER")
    if location:
        return load_model_and_processor(location, "features")
    for task in MODEL_TASKS:
        if model_location(task) is not None:
            model, processor = load_task_model(task)
            return model.base_model, processor
    raise SpaceInputError(
        "No model is installed for the feature view. Set DI3CL_MODEL_ENCODER or DI3CL_MODEL_DIR "
        "(`make demo` writes outputs/demo/models)."
    )


# ------------------------------------------------------------------------------------- input files


@dataclass
class PreparedInput:
    """The uploaded raster, possibly downscaled, ready for prediction (in memory: nothing is re-written)."""

    raster: SARRaster  # handed to predict_scene as an in-memory source
    array: np.ndarray  # [C, H, W] as read (after downscaling)
    valid: np.ndarray  # [H, W]
    crs: object
    transform: object
    notes: list[str]


def _readable(error: Exception, path: Path, name: str) -> str:
    """An error message with the server-side temporary path replaced by the uploaded file's name."""
    return str(error).replace(str(path), name).replace(str(path.parent), "").strip()


def downscale_factor(height: int, width: int) -> int:
    """Keep 1 pixel in this many along each axis to bring the input to about ``PREDICT_PIXELS``."""
    pixels = height * width
    return math.ceil(math.sqrt(pixels / PREDICT_PIXELS)) if pixels > PREDICT_PIXELS else 1


def tiling(height: int, width: int) -> tuple[int, int, int]:
    """``(tile size, overlap, number of tiles)`` of the prediction of a ``height`` x ``width`` input."""
    tile = _tile_size(height, width)
    overlap = min(OVERLAP, tile // 4)
    return tile, overlap, len(tile_starts(height, tile, overlap)) * len(tile_starts(width, tile, overlap))


def check_dimensions(height: int, width: int, name: str) -> None:
    """Refuse a raster whose size, side, shape or tile count is beyond the demo's limits (header only).

    Raises:
        SpaceInputError: With the limit that was exceeded and what to do instead.
    """
    local = "crop it, or run `di3cl predict` locally, which handles scenes of any size"
    if max(height, width) > MAX_SIDE:
        raise SpaceInputError(
            f"{name}: {width} x {height} pixels; this demo accepts at most {MAX_SIDE} pixels per side; {local}"
        )
    if max(height, width) > MAX_ASPECT * min(height, width):
        raise SpaceInputError(
            f"{name}: {width} x {height} pixels is a strip ({max(height, width) / min(height, width):.0f}:1); "
            f"this demo accepts sides at most {MAX_ASPECT:.0f} times longer than the other; {local}"
        )
    if height * width > MAX_PIXELS:
        raise SpaceInputError(
            f"{name}: {width} x {height} pixels is more than this demo accepts ({MAX_PIXELS / 1e6:.0f} Mpx); {local}"
        )
    factor = downscale_factor(height, width)
    tiles = tiling(math.ceil(height / factor), math.ceil(width / factor))[2]
    if tiles > MAX_TILES:
        raise SpaceInputError(
            f"{name}: {width} x {height} pixels would take {tiles} model tiles; this demo runs at most "
            f"{MAX_TILES} per request; {local}"
        )


def prepare_input(path: Path, name: str, work_dir: Path) -> PreparedInput:
    """Check and read an uploaded file; downscale it (every k-th pixel) above ``PREDICT_PIXELS``.

    The size limits (:func:`check_dimensions`) are checked from the header, before any pixel is read.

    Raises:
        SpaceInputError: unsupported type, unreadable, wrong band count or too large.
    """
    if path.suffix.lower() not in SUFFIXES:
        raise SpaceInputError(
            f"{name}: unsupported file type {path.suffix or '(none)'}; expected GeoTIFF/TIFF, PNG, JPG or NPY"
        )
    if path.stat().st_size == 0:
        raise SpaceInputError(f"{name}: the file is empty")
    try:
        with open_scene(path) as scene:
            height, width, bands = scene.height, scene.width, scene.count
        if bands not in (1, 2) and not (path.suffix.lower() in (".png", ".jpg", ".jpeg") and bands in (3, 4)):
            raise SpaceInputError(f"{name}: {bands} bands, expected 1 (VV) or 2 (VV, VH)")
        check_dimensions(height, width, name)
        raster = read_sar(path)
    except SpaceInputError:
        raise
    except (SARFileError, RasterioError, ValueError, OSError) as error:
        raise SpaceInputError(
            f"{name}: cannot be read as a SAR raster ({_readable(error, path, name)})"
        ) from None
    if not raster.valid_mask.any():
        raise SpaceInputError(f"{name}: every pixel is nodata / NaN")
    notes: list[str] = []
    array, valid, transform = raster.array, raster.valid_mask, raster.transform
    pixels = raster.height * raster.width
    if pixels > PREDICT_PIXELS:
        factor = downscale_factor(raster.height, raster.width)
        array, valid = array[:, ::factor, ::factor], valid[::factor, ::factor]
        if transform is not None:
            transform = transform @ Affine.scale(factor)
        notes.append(
            f"Large input ({raster.width} x {raster.height} px): downscaled by {factor} (1 pixel in {factor} kept "
            "along each axis) "
            f"to {array.shape[2]} x {array.shape[1]} px before prediction; the GeoTIFF's pixel size is "
            f"{factor}x the input's. `di3cl predict` runs full resolution."
        )
        array, valid = np.ascontiguousarray(array), np.ascontiguousarray(valid)
        gcps = scaled_gcps(raster.gcps, factor)
        raster = replace(raster, array=array, valid_mask=valid, transform=transform, gcps=gcps)
    if raster.gcps is not None and raster.transform is None:
        notes.append(
            "The input is georeferenced by ground control points (GCPs); the output GeoTIFF keeps them."
        )
    elif raster.crs is None:
        notes.append("The input has no georeferencing, so neither has the output GeoTIFF.")
    return PreparedInput(raster, array, valid, raster.crs, transform, notes)


# ------------------------------------------------------------------------------------------ images


def _stretch(band: np.ndarray, valid: np.ndarray) -> np.ndarray:
    values = band[valid & np.isfinite(band)]
    if values.size == 0:
        return np.zeros(band.shape, np.uint8)
    low, high = np.percentile(values, (2, 98))
    scaled = (band - low) / max(high - low, 1e-6)
    return (np.clip(np.nan_to_num(scaled), 0, 1) * 255).astype(np.uint8)


def quicklook(array: np.ndarray, valid: np.ndarray, input_kind: str) -> np.ndarray:
    """RGB uint8 [H, W, 3]: grey dB for one band; VV, VH, VV - VH for two (a common S1 composite)."""
    bands = min(array.shape[0], 2) if array.shape[0] in (1, 2) else 1
    db, db_valid = DI3CLImageProcessor(num_channels=bands, input_kind="auto").sar_to_db(
        array, valid, input_kind=input_kind
    )
    if bands == 1:
        grey = _stretch(db[0], db_valid)
        rgb = np.stack([grey] * 3, axis=-1)
    else:
        rgb = np.stack(
            [_stretch(db[0], db_valid), _stretch(db[1], db_valid), _stretch(db[0] - db[1], db_valid)], -1
        )
    rgb[~db_valid] = 0
    return rgb


def _display(rgb: np.ndarray) -> np.ndarray:
    image = Image.fromarray(rgb)
    image.thumbnail((DISPLAY_SIDE, DISPLAY_SIDE), Image.Resampling.BILINEAR)
    return np.asarray(image)


def class_colours(names: list[str]) -> list[tuple[int, int, int]]:
    """A colour per class name (fixed ones for known names, then a palette)."""
    spare = iter(PALETTE * 4)
    return [CLASS_COLOURS.get(name.lower()) or next(spare) for name in names]


def overlay(base: np.ndarray, classes: np.ndarray, colours: list[tuple[int, int, int]]) -> np.ndarray:
    """Blend the class colours over the quick-look; nodata pixels show the quick-look only."""
    lut = np.zeros((256, 3), np.float32)
    lut[: len(colours)] = colours
    coloured = lut[classes]
    alpha = np.where(classes == NODATA, 0.0, 0.6)[..., None]
    return (base * (1 - alpha) + coloured * alpha).astype(np.uint8)


def legend_html(names: list[str], colours: list[tuple[int, int, int]], shares: list[float] | None) -> str:
    """HTML legend with colour swatches and, when given, the share of valid pixels per class."""
    rows = []
    for index, (name, colour) in enumerate(zip(names, colours)):
        share = f"{100 * shares[index]:.1f} %" if shares is not None else ""
        rows.append(
            "<tr>"
            f'<td><span style="display:inline-block;width:1.1em;height:1.1em;border:1px solid #444;'
            f'background:rgb{tuple(colour)}"></span></td>'
            f"<td>{html.escape(name)}</td><td style='text-align:right'>{share}</td></tr>"
        )
    header = "<tr><th></th><th>class</th><th>area</th></tr>" if shares is not None else ""
    return f'<table class="di3cl-legend">{header}{"".join(rows)}</table>'


# ------------------------------------------------------------------------------------------ tasks


def _tile_size(height: int, width: int) -> int:
    return min(TILE_SIZE, 32 * math.ceil(max(height, width) / 32))


def run_segmentation(
    task: str,
    prepared: PreparedInput,
    radiometry: str,
    work_dir: Path,
    stem: str,
    budget: Budget | None = None,
):
    model, processor = load_task_model(task)
    if radiometry != "auto":
        processor = DI3CLImageProcessor.from_dict({**processor.to_dict(), "input_kind": radiometry})
    height, width = prepared.array.shape[1:]
    tile, overlap, _ = tiling(height, width)
    output = work_dir / f"{stem}_{task}.tif"
    summary = predict_scene(  # in memory: the upload is not re-read, the map is written once below
        BudgetedModel(model, budget or Budget.start()),
        prepared.raster,
        None,
        processor,
        tile_size=tile,
        overlap=overlap,
        batch_size=2,
        cog=False,
        progress=False,
        precision="auto",  # di3cl_hf.runtime: bf16 only where the hardware runs it natively
    )
    num_labels = model.config.num_labels
    names = [str(model.config.id2label.get(index, index)) for index in range(num_labels)]
    colours = class_colours(names)
    classes = summary.classes
    write_geotiff(
        output, summary.array, crs=summary.crs, transform=summary.transform, nodata=NODATA, gcps=summary.gcps
    )
    with rasterio.open(output, "r+") as dataset:
        dataset.write_colormap(1, {index: (*colour, 255) for index, colour in enumerate(colours)})
    counts = np.bincount(classes[classes != NODATA].ravel(), minlength=num_labels)[:num_labels]
    shares = (counts / max(counts.sum(), 1)).tolist()
    notes = [f"Model: {describe_model(task)}.", f"Radiometry: `{summary.input_kind}`."]
    if int(model.config.num_channels) == 2 and prepared.array.shape[0] == 1:
        notes.append("One band given to a VV + VH model: it was fed as both channels (less accurate).")
    if summary.num_tiles > 1:
        notes.append(f"Predicted in {summary.num_tiles} tiles of {tile} px with blended overlaps.")
    return classes, names, colours, shares, output, notes


def run_features(
    prepared: PreparedInput, radiometry: str, work_dir: Path, stem: str, budget: Budget | None = None
):
    encoder, processor = load_encoder()
    (budget or Budget.start()).check()
    kind = None if radiometry == "auto" else radiometry
    db, valid = processor.sar_to_db(prepared.array, prepared.valid, input_kind=kind)
    low, high = processor.clip_bounds(db, valid)
    pixel_values = processor.db_to_pixel_values(db, low, high)
    pixel_values[:, ~valid] = 0.0
    height, width = pixel_values.shape[1:]
    pad_h, pad_w = (-height) % 32, (-width) % 32
    tensor = torch.nn.functional.pad(torch.from_numpy(pixel_values)[None], (0, pad_w, 0, pad_h))
    with torch.inference_mode():
        features = encoder(pixel_values=tensor).last_hidden_state[0]  # [D, h, w]
    dims, rows, cols = features.shape
    flat = features.reshape(dims, -1).T  # [h*w, D]
    flat = flat - flat.mean(dim=0, keepdim=True)
    _, _, components = torch.linalg.svd(flat, full_matrices=False)
    projected = (flat @ components[:3].T).T.reshape(-1, rows, cols)  # [<=3, h, w]
    if projected.shape[0] < 3:
        projected = torch.cat([projected, projected.new_zeros(3 - projected.shape[0], rows, cols)])
    upsampled = torch.nn.functional.interpolate(
        projected[None], size=(height + pad_h, width + pad_w), mode="bilinear"
    )
    upsampled = upsampled[0, :, :height, :width].numpy()
    rgb = np.stack([_stretch(channel, valid) for channel in upsampled], axis=-1)
    rgb[~valid] = 0
    output = work_dir / f"{stem}_features_pca.tif"
    write_geotiff(
        output,
        np.moveaxis(rgb, -1, 0),
        crs=prepared.crs,
        transform=prepared.transform,
        nodata=None,
        gcps=prepared.raster.gcps,
    )
    notes = [
        f"Radiometry: `{resolve_kind(prepared.array, radiometry, prepared.valid)}`.",
        f"Colours are the first 3 principal components of the {dims}-dimensional stride-32 encoder features "
        "(similar colour = similar features).",
    ]
    return rgb, output, notes


def segment(file: str | None, task: str, radiometry: str, request: gr.Request | None = None):
    """Gradio handler: quick-look, coloured map, legend, GeoTIFF to download, notes.

    Works in a ``di3cl-space-*`` folder removed when the request ends (whatever the outcome), within
    the time budget, and stops when the client disconnects.
    """
    budget = Budget.start(request)
    try:
        with work_folder() as work_dir:
            return _segment(file, task, radiometry, work_dir, budget)
    except (SpaceInputError, RequestStopped) as error:
        if isinstance(error, RequestStopped):
            LOGGER.info("request stopped: %s", error)
        raise gr.Error(html.escape(str(error), quote=False), print_exception=False) from None
    except gr.Error:
        raise
    except Exception as error:  # never a stack trace in the UI; the log keeps it
        LOGGER.exception("prediction failed")
        name = Path(file).name if file else "the input"
        raise gr.Error(
            html.escape(f"Could not process {name}: {type(error).__name__}: {error}", quote=False)
        ) from None


def _segment(file: str | None, task: str, radiometry: str, work_dir: Path, budget: Budget):
    if not file:
        raise SpaceInputError("Upload a SAR patch first (GeoTIFF/TIFF, PNG, JPG or NPY with 1 or 2 bands).")
    if task not in TASKS:
        raise SpaceInputError(f"Unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if radiometry not in RADIOMETRY_KINDS:
        raise SpaceInputError(
            f"Unknown radiometry {radiometry!r}; choose one of {', '.join(RADIOMETRY_KINDS)}"
        )
    path = Path(file)
    name = path.name
    start = time.perf_counter()
    prepared = prepare_input(path, name, work_dir)
    kind = None if radiometry == "auto" else radiometry
    try:
        base = quicklook(prepared.array, prepared.valid, kind or "auto")
    except ValueError as error:
        raise SpaceInputError(f"{name}: {_readable(error, path, name)}") from None
    stem = path.stem[:60] or "result"
    task_key = TASKS[task]
    if task_key == "features":
        rgb, output, notes = run_features(prepared, radiometry, work_dir, stem, budget)
        legend = "<p>Feature view: no classes; colours are feature principal components.</p>"
        mapped = (0.4 * base + 0.6 * rgb).astype(np.uint8)
    else:
        classes, names, colours, shares, output, notes = run_segmentation(
            task_key, prepared, radiometry, work_dir, stem, budget
        )
        legend = legend_html(names, colours, shares)
        mapped = overlay(base, classes, colours)
    notes = prepared.notes + notes + [f"Done in {time.perf_counter() - start:.1f} s."]
    notice = "\n".join(f"- {note}" for note in notes)
    return _display(base), _display(mapped), legend, keep_result(output), notice


# --------------------------------------------------------------------------------------- examples


REAL_EXAMPLES = ("water/images/Spain_7370579_vh.tif", "scenes/003.tif")
"""Real Sentinel-1 files of the embedded sample (``samples/sentinel1``; staged into ``examples/sentinel1``)."""


def real_example_files() -> list[Path]:
    """The real Sentinel-1 examples (a VH water chip in dB, an 8-bit VH scene), from the staged Space's
    ``examples/sentinel1`` or the repository's ``samples/sentinel1``; empty when neither is there."""
    for root in (APP_DIR / "examples" / "sentinel1", APP_DIR.parent / "samples" / "sentinel1"):
        files = [root / name for name in REAL_EXAMPLES]
        if all(path.is_file() for path in files):
            return files
    return []


REAL_DUAL_POL = ("water/images/Spain_7370579_vv.tif", "water/images/Spain_7370579_vh.tif")
"""The real labelled chip's two polarisation files, stacked into one VV + VH example for the (VV + VH) water model."""


def _cache_folder(folder: Path | None = None) -> Path:
    folder = folder or Path(os.environ.get("DI3CL_SPACE_CACHE") or tempfile.gettempdir()) / "di3cl-examples"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def real_dual_pol_example(folder: Path | None = None) -> Path | None:
    """The real Sentinel-1 chip as one VV + VH float32 dB GeoTIFF (stacked from its two files into the cache
    folder, never into the app folder), or ``None`` when the sample is absent."""
    from di3cl_hf.data.polarisation import read_sample

    for root in (APP_DIR / "examples" / "sentinel1", APP_DIR.parent / "samples" / "sentinel1"):
        files = [root / name for name in REAL_DUAL_POL]
        if all(path.is_file() for path in files):
            break
    else:
        return None
    target = _cache_folder(folder) / "Spain_7370579_vv_vh_db.tif"
    if not target.is_file():
        raster = read_sample(files)
        array = np.where(raster.valid_mask, raster.array, np.nan).astype(np.float32)
        write_geotiff(
            target,
            array,
            crs=raster.crs,
            transform=raster.transform,
            nodata=float("nan"),
            band_names=("VV", "VH"),
        )
    return target


def example_files(folder: Path | None = None) -> list[Path]:
    """Synthetic examples, rendered once by the synthetic generator (nothing binary in the repo) into a cache
    folder outside the app (``DI3CL_SPACE_CACHE``, else the system's temporary folder, which Gradio serves):
    never into ``space/``, so ``di3cl push space`` uploads only the app."""
    from di3cl_hf.data.synthetic import SYNTHETIC_CRS, synthetic_patch

    folder = _cache_folder(folder)
    landcover = folder / "synthetic_landcover_vv_vh_db.tif"
    water = folder / "synthetic_water_intensity.tif"
    roads = folder / "synthetic_roads_vv_db.npy"
    if not landcover.is_file():
        patch = synthetic_patch(256, 2, seed=11, style="landcover")
        write_geotiff(
            landcover, patch.image, crs=SYNTHETIC_CRS, transform=patch.transform, nodata=float("nan")
        )
    if not water.is_file():
        patch = synthetic_patch(256, 2, seed=12, style="water")
        intensity = (10 ** (patch.image / 10)).astype(np.float32)
        write_geotiff(water, intensity, crs=SYNTHETIC_CRS, transform=patch.transform, nodata=float("nan"))
    if not roads.is_file():
        patch = synthetic_patch(256, 1, seed=13, style="roads")
        np.save(roads, patch.image)
    return [landcover, water, roads]


# ------------------------------------------------------------------------------------------ UI

DESCRIPTION = """# DI3CL: SAR land cover, water and roads

Upload a SAR patch (GeoTIFF/TIFF, PNG, JPG or NPY; 1 band VV or 2 bands VV, VH; backscatter in dB,
linear intensity, amplitude, 8/16-bit DN or complex, or let `auto` decide), pick a task and press
**Run**. The map comes back as a GeoTIFF with the input's georeferencing. DI3CL is a self-supervised SAR
foundation model (*Contrastive Learning With Dynamic Instances and Contour Consistency for SAR Land-Cover
Classification Foundation Model*, [arXiv:2511.07808](https://arxiv.org/abs/2511.07808)).
The water model is the one **shipped with di3cl-hf**: trained on real Sentinel-1 VV + VH flood tiles (its card,
`di3cl_hf/weights/s1-water-resnet18/README.md`, gives its scores and training data). The first examples are **real
Sentinel-1** data (contains modified Copernicus Sentinel data): a labelled chip as VV + VH in dB, its VH band alone
and an 8-bit VH quick-look scene (one band is fed to the VV + VH model as both channels: less accurate). The land
cover and road examples and models are **synthetic** (no real labels were available)."""


def build_demo() -> gr.Blocks:
    """The Gradio app."""
    global DEMO
    examples = example_files()
    dual_pol = real_dual_pol_example()
    real = [[str(path), "Water", "auto"] for path in ([dual_pol] if dual_pol else []) + real_example_files()]
    with gr.Blocks(title="DI3CL SAR demo", delete_cache=(RESULT_MAX_AGE, RESULT_MAX_AGE)) as demo:
        gr.Markdown(DESCRIPTION)
        gr.Markdown(models_markdown(), elem_id="model-info")
        with gr.Row():
            with gr.Column(scale=1):
                file = gr.File(
                    label="SAR patch", file_types=list(SUFFIXES), type="filepath", elem_id="sar-file"
                )
                task = gr.Radio(list(TASKS), value="Water", label="Task", elem_id="task")
                radiometry = gr.Dropdown(list(RADIOMETRY_KINDS), value="auto", label="Input radiometry")
                run = gr.Button("Run", variant="primary", elem_id="run-button")
                gr.Examples(
                    examples=[
                        *real,
                        [str(examples[0]), "Land cover", "auto"],
                        [str(examples[1]), "Water", "intensity"],
                        [str(examples[2]), "Roads", "db"],
                        [str(examples[0]), "Features (PCA)", "auto"],
                    ],
                    inputs=[file, task, radiometry],
                    cache_examples=False,
                )
            with gr.Column(scale=2):
                with gr.Row():
                    quick = gr.Image(
                        label="Quick-look (dB)",
                        type="numpy",
                        elem_id="quicklook",
                        interactive=False,
                        height=420,
                    )
                    mapped = gr.Image(label="Map", type="numpy", elem_id="map", interactive=False, height=420)
                legend = gr.HTML(label="Legend", elem_id="legend")
                download = gr.File(label="Result (GeoTIFF)", elem_id="download")
                notice = gr.Markdown(elem_id="notice")
        run.click(
            segment,
            inputs=[file, task, radiometry],
            outputs=[quick, mapped, legend, download, notice],
            concurrency_limit=1,
        )
    DEMO = demo
    return demo


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    build_demo().queue(default_concurrency_limit=1, max_size=QUEUE_SIZE).launch(
        max_file_size=MAX_FILE_SIZE, show_error=True
    )
