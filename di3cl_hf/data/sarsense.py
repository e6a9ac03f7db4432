"""🤗 ``datasets`` builders for SAR: the SARSense pre-training set and downstream segmentation sets.

``datasets`` 5 runs no dataset scripts, so the builders here are ordinary classes used directly::

    builder = SARSense(data_dir="my_patches", cache_dir="cache")
    builder.download_and_prepare()
    ds = builder.as_dataset("train")          # raw columns (see below)
    ds = load_sarsense("my_patches")          # the same, decoded to numpy on access

**Storage (lossless).** Pixels are never quantised: each array column (``image``, ``valid_mask``,
``label``) is a struct ``{"bytes": binary, "dtype": "<f4", "shape": [C, H, W]}`` holding the raw
array in its source dtype (float32 dB, int16/uint16 DN, complex64 SLC, ...). These are plain Arrow
types, so Parquet export, ``load_dataset("parquet", ...)``, the Hub and streaming need no code from
this package; :func:`decode_example` / :func:`decode_batch` / :func:`with_decoding` turn them back
into numpy (``image`` as float32 ``[C, H, W]``, complex data as complex64; ``valid_mask`` bool
``[H, W]``; ``label`` int64 ``[H, W]``). Georeferencing is kept as ``crs`` (WKT string) and
``transform`` (the 6 affine coefficients ``a, b, c, d, e, f``), ``None`` for plain images.

**Corrupt files** are skipped with a warning and counted (:attr:`SARSense.skipped_files`,
:func:`skipped_files`), or raise :class:`~di3cl_hf.sario.SARFileError` with ``strict=True``;
never silently.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from datasets import ClassLabel, Features, List, Value
from datasets.builder import Key
from datasets.exceptions import DatasetGenerationError

from ..data.sario import SARFileError, list_sar_files, open_scene, read_sar
from ..data.synthetic import LANDCOVER_CLASSES

logger = logging.getLogger(__name__)

IGNORE_INDEX = 255
"""Label value ignored by losses and metrics (unlabelled / nodata pixels)."""

ARRAY_FEATURE = {"bytes": Value("binary"), "dtype": Value("string"), "shape": List(Value("int32"))}
"""Arrow type of a losslessly stored array: raw bytes, numpy dtype string, shape."""

METADATA_FIELDS: dict[str, Value] = {
    "sensor": Value("string"),
    "band": Value("string"),
    "frequency_ghz": Value("float64"),
    "polarisation": Value("string"),
    "resolution_m": Value("float64"),
    "source_dataset": Value("string"),
}
"""Per-patch metadata columns of SARSense (``None`` where unknown)."""

METADATA_FILE_NAMES = ("metadata.csv", "metadata.jsonl", "metadata.json")


# -- array encoding ------------------------------------------------------------------------------------
def encode_array(array: np.ndarray) -> dict[str, Any]:
    """Encode an array losslessly as ``{"bytes", "dtype", "shape"}`` (explicit byte order)."""
    array = np.ascontiguousarray(array)
    return {"bytes": array.tobytes(), "dtype": array.dtype.str, "shape": list(array.shape)}


def decode_array(value: Mapping[str, Any] | None) -> np.ndarray | None:
    """Inverse of :func:`encode_array` (a writable array in the stored dtype)."""
    if value is None:
        return None
    return np.frombuffer(value["bytes"], dtype=np.dtype(value["dtype"])).reshape(value["shape"]).copy()


def _image_to_float(array: np.ndarray, dtype: str | None) -> np.ndarray:
    if dtype is None or np.iscomplexobj(array):
        return array  # complex stays complex64: float32 cannot hold it
    return array.astype(dtype, copy=False)


def decode_example(example: Mapping[str, Any], image_dtype: str | None = "float32") -> dict[str, Any]:
    """Decode the array columns of one (raw) example to numpy.

    Args:
        example: A row of a SARSense / segmentation dataset (or of its Parquet export).
        image_dtype: dtype of ``image`` (float32 is exact for float32/int16/uint16/uint8 sources);
            ``None`` keeps the source dtype. Complex images stay complex64.

    Returns:
        A new dict: ``image`` ``[C, H, W]``, ``valid_mask`` bool ``[H, W]``, ``label`` int64 ``[H, W]``
        (when present), other columns unchanged.
    """
    out = dict(example)
    if "image" in out and isinstance(out["image"], Mapping):
        out["image"] = _image_to_float(decode_array(out["image"]), image_dtype)
    if "valid_mask" in out and isinstance(out["valid_mask"], Mapping):
        out["valid_mask"] = decode_array(out["valid_mask"]).astype(bool, copy=False)
    if "label" in out and isinstance(out["label"], Mapping):
        out["label"] = decode_array(out["label"]).astype(np.int64)
    return out


def decode_batch(batch: Mapping[str, list], image_dtype: str | None = "float32") -> dict[str, list]:
    """:func:`decode_example` for a batch (column -> list), as ``Dataset.set_transform`` passes it."""
    keys = list(batch)
    size = len(batch[keys[0]]) if keys else 0
    rows = [decode_example({k: batch[k][i] for k in keys}, image_dtype) for i in range(size)]
    return {k: [row[k] for row in rows] for k in keys}


def with_decoding(
    dataset: datasets.Dataset | datasets.IterableDataset | datasets.DatasetDict,
    image_dtype: str | None = "float32",
    transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Any:
    """Make a raw dataset yield numpy arrays (``Dataset.with_transform`` / ``IterableDataset.map``).

    Args:
        dataset: A raw SARSense/segmentation ``Dataset``, ``DatasetDict`` or ``IterableDataset``
            (e.g. from ``load_dataset("parquet", ...)``).
        image_dtype: See :func:`decode_example`.
        transform: Optional per-example function applied after decoding (e.g. a processor step).

    Returns:
        A dataset of the same kind whose rows hold decoded arrays.
    """

    decoder = SARDecoder(image_dtype, transform)
    if isinstance(dataset, datasets.DatasetDict):
        return datasets.DatasetDict({k: with_decoding(v, image_dtype, transform) for k, v in dataset.items()})
    if isinstance(dataset, datasets.IterableDataset):
        return dataset.map(decoder)
    return dataset.with_transform(decoder.batch)


class SARDecoder:
    """Picklable decoder (works in DataLoader workers under any start method).

    ``decoder(example)`` decodes one row (then applies ``transform``); ``decoder.batch(batch)`` does
    it for a column -> list batch, as ``Dataset.set_transform`` passes it.

    Args:
        image_dtype: See :func:`decode_example`.
        transform: Optional per-example function applied after decoding.
    """

    def __init__(
        self,
        image_dtype: str | None = "float32",
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.image_dtype = image_dtype
        self.transform = transform

    def __call__(self, example: Mapping[str, Any]) -> dict[str, Any]:
        decoded = decode_example(example, self.image_dtype)
        return self.transform(decoded) if self.transform is not None else decoded

    def batch(self, batch: Mapping[str, list]) -> dict[str, list]:
        keys = list(batch)
        rows = [self({k: batch[k][i] for k in keys}) for i in range(len(batch[keys[0]]))] if keys else []
        return {k: [row[k] for row in rows] for k in rows[0]} if rows else dict(batch)


# -- shared helpers ------------------------------------------------------------------------------------
def _transform_list(transform: Any) -> list[float] | None:
    return None if transform is None else [float(v) for v in tuple(transform)[:6]]


def _crs_wkt(crs: Any) -> str | None:
    return None if crs is None else crs.to_wkt()


def _nodata(value: float | None) -> float | None:
    return None if value is None else float(value)


def _fingerprint(paths: Sequence[Path], *extra: Any) -> str:
    digest = hashlib.sha256()
    for path in paths:
        stat = path.stat()
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    digest.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


MAX_SHARDS = 1024
"""Files are grouped into at most this many shards (the unit ``num_proc`` and
``split_dataset_by_node`` distribute); small folders get one file per shard."""


def _shard_files(files: Sequence[Path | str]) -> list[list[str]]:
    per_shard = max(1, math.ceil(len(files) / MAX_SHARDS))
    names = [str(f) for f in files]
    return [names[i : i + per_shard] for i in range(0, len(names), per_shard)]


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


SKIPPED_FILES_NAME = "di3cl_skipped_files.jsonl"
"""Written beside a builder's Arrow cache: one JSON line ``{"path", "reason"}`` per skipped file."""


def _read_skipped(directory: str | os.PathLike[str]) -> list[dict[str, str]]:
    target = os.path.join(os.fspath(directory), SKIPPED_FILES_NAME)
    if not os.path.isfile(target):
        return []
    with open(target, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _warn_skipped(entries: list[dict[str, str]], root: str | os.PathLike[str]) -> None:
    if entries:
        listing = "; ".join(f"{e['path']} ({e['reason']})" for e in entries[:10])
        more = f"; and {len(entries) - 10} more" if len(entries) > 10 else ""
        warnings.warn(
            f"{root}: skipped {len(entries)} unreadable SAR file(s): {listing}{more}. Pass strict=True to raise instead.",
            UserWarning,
            stacklevel=3,
        )


class _ReportingBuilderMixin:
    """Counts the corrupt files a builder skips, also across ``num_proc`` workers and cache reuse.

    While ``download_and_prepare`` runs, each skipped file is appended as a JSON line to
    :data:`SKIPPED_FILES_NAME` in the (temporary) output folder, which ``datasets`` then moves into
    the cache with the Arrow files; a later load from the cache reads it back and warns again.
    When streaming, every skipped file is warned about as it is met.
    """

    def download_and_prepare(self, *args: Any, **kwargs: Any) -> None:  # noqa: D102
        self._preparing = True
        try:
            super().download_and_prepare(*args, **kwargs)  # type: ignore[misc]
        except DatasetGenerationError as error:
            # datasets wraps what _generate_examples raised; surface our errors (they name the file)
            if isinstance(error.__cause__, ValueError):
                raise error.__cause__ from None
            raise
        finally:
            self._preparing = False
        self._skipped = _read_skipped(self._output_dir)  # type: ignore[attr-defined]
        _warn_skipped(self._skipped, self.config.data_dir)  # type: ignore[attr-defined]

    @property
    def skipped_files(self) -> list[dict[str, str]]:
        """Files skipped as unreadable: ``[{"path", "reason"}]`` (prepared data, or streamed so far)."""
        return list(getattr(self, "_skipped", []))

    @property
    def num_skipped(self) -> int:
        """Number of files skipped as unreadable."""
        return len(self.skipped_files)

    def _skip(self, path: str, error: Exception) -> None:
        reason = str(error)
        prefix = f"{Path(self.config.data_dir) / path}: "  # type: ignore[attr-defined]
        entry = {"path": path, "reason": reason[len(prefix) :] if reason.startswith(prefix) else reason}
        logger.warning("skipping %s: %s", path, entry["reason"])
        if getattr(self, "_preparing", False):
            # O_APPEND writes of one short line are atomic, so num_proc workers can share the file
            line = (json.dumps(entry) + "\n").encode("utf-8")
            target = os.path.join(self._output_dir, SKIPPED_FILES_NAME)  # type: ignore[attr-defined]
            fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        else:
            self._skipped = [*getattr(self, "_skipped", []), entry]
            warnings.warn(f"skipped unreadable SAR file {path}: {entry['reason']}", UserWarning, stacklevel=2)


# -- SARSense -----------------------------------------------------------------------------------------
@dataclass
class SARSenseConfig(datasets.BuilderConfig):
    """Configuration of :class:`SARSense`.

    Attributes:
        metadata: Metadata file (CSV, JSON Lines or JSON list of rows with a ``file_name`` column
            relative to ``data_dir``) or a dict of fields that apply to every patch; ``None`` uses
            ``data_dir/metadata.{csv,jsonl,json}`` when present.
        strict: Raise on the first unreadable file instead of skipping it with a warning.
        bands: 1-based band indexes to read from every file (``None``: all, which must be 1 or 2).
    """

    metadata: str | dict[str, Any] | None = None
    strict: bool = False
    bands: tuple[int, ...] | None = None


def _read_metadata(
    source: str | os.PathLike[str] | Mapping[str, Any] | None, data_dir: Path
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Return (per-file rows keyed by relative path, defaults for every file)."""
    if source is None:
        for name in METADATA_FILE_NAMES:
            if (data_dir / name).exists():
                source = data_dir / name
                break
        else:
            return {}, {}
    if isinstance(source, Mapping):
        return {}, dict(source)
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path}: metadata file not found")
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="") as handle:
                rows = list(csv.DictReader(handle))
        elif path.suffix.lower() == ".jsonl":
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        elif path.suffix.lower() == ".json":
            loaded = json.loads(path.read_text())
            if isinstance(loaded, dict) and "file_name" not in loaded:
                if all(isinstance(v, dict) for v in loaded.values()):
                    rows = [{"file_name": k, **v} for k, v in loaded.items()]
                else:
                    return {}, dict(loaded)
            else:
                rows = loaded if isinstance(loaded, list) else [loaded]
        else:
            raise ValueError(f"{path}: metadata must be .csv, .jsonl or .json")
    except (json.JSONDecodeError, csv.Error, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: unreadable metadata ({error})") from error
    per_file: dict[str, dict[str, Any]] = {}
    for number, row in enumerate(rows, start=1):
        if "file_name" not in row:
            raise ValueError(f"{path}: row {number} has no 'file_name' column")
        per_file[Path(str(row["file_name"])).as_posix()] = {k: v for k, v in row.items() if k != "file_name"}
    return per_file, {}


def _coerce(value: Any, feature: Value) -> Any:
    if value is None or value == "":
        return None
    if feature.dtype == "float64":
        try:
            return float(value)
        except (TypeError, ValueError):
            return None
    return str(value)


class SARSense(_ReportingBuilderMixin, datasets.GeneratorBasedBuilder):
    """SARSense-style unlabelled SAR patches from a local folder tree (any format :mod:`sario` reads).

    Columns: ``image`` and ``valid_mask`` (lossless array structs, see the module docstring), ``crs``
    (WKT), ``transform`` (6 floats), ``nodata``, ``path`` (relative to ``data_dir``), and the
    metadata fields :data:`METADATA_FIELDS` plus any extra metadata columns (as strings).

    Example:
        >>> builder = SARSense(data_dir="patches", cache_dir="cache")  # doctest: +SKIP
        >>> builder.download_and_prepare()  # doctest: +SKIP
        >>> raw = builder.as_dataset("train")  # doctest: +SKIP
        >>> streamed = builder.as_streaming_dataset("train")  # doctest: +SKIP
    """

    BUILDER_CONFIG_CLASS = SARSenseConfig
    VERSION = datasets.Version("1.0.0")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        data_dir = kwargs.get("data_dir")
        if data_dir is None:
            raise ValueError("SARSense needs data_dir=<folder of SAR patches>")
        root = Path(data_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such directory")
        kwargs["data_dir"] = str(root.resolve())
        if "hash" not in kwargs:
            files = list_sar_files(root)
            metadata = kwargs.get("metadata")
            meta_files = [root / n for n in METADATA_FILE_NAMES if (root / n).exists()]
            if isinstance(metadata, (str, os.PathLike)):
                meta_files.append(Path(metadata))
            kwargs["hash"] = _fingerprint(
                files + meta_files, metadata if isinstance(metadata, Mapping) else None
            )
        kwargs.setdefault("dataset_name", "sarsense")
        super().__init__(*args, **kwargs)

    def _metadata(self) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        return _read_metadata(self.config.metadata, Path(self.config.data_dir))

    def _info(self) -> datasets.DatasetInfo:
        per_file, defaults = self._metadata()
        extra = sorted(
            {k for row in [defaults, *per_file.values()] for k in row} - set(METADATA_FIELDS) - {"path"}
        )
        features = Features(
            {
                "image": ARRAY_FEATURE,
                "valid_mask": ARRAY_FEATURE,
                "crs": Value("string"),
                "transform": List(Value("float64")),
                "nodata": Value("float64"),
                "path": Value("string"),
                **METADATA_FIELDS,
                **{name: Value("string") for name in extra},
            }
        )
        return datasets.DatasetInfo(
            description="SAR patches stored losslessly (raw array bytes + dtype + shape) with georeferencing.",
            features=features,
        )

    def _split_generators(self, dl_manager: Any) -> list[datasets.SplitGenerator]:
        root = Path(self.config.data_dir)
        files = list_sar_files(root)
        if not files:
            raise FileNotFoundError(f"{root}: no SAR files (expected .tif/.tiff, .png/.jpg or .npy files)")
        per_file, _ = self._metadata()
        relative = {_relative(f, root) for f in files} | {f.name for f in files}
        orphans = sorted(set(per_file) - relative)
        if orphans:
            warnings.warn(
                f"{root}: {len(orphans)} metadata row(s) name files that are not there: {', '.join(orphans[:10])}"
                + (" ..." if len(orphans) > 10 else ""),
                UserWarning,
                stacklevel=2,
            )
        return [
            datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"shards": _shard_files(files)})
        ]

    def _generate_examples(self, shards: list[list[str]]) -> Iterator[tuple[Key, dict[str, Any]]]:
        root = Path(self.config.data_dir)
        per_file, defaults = self._metadata()
        extra = [
            k
            for k in self.info.features
            if k not in METADATA_FIELDS
            and k not in ("image", "valid_mask", "crs", "transform", "nodata", "path")
        ]
        for shard_index, name, item_index in (
            (i, n, j) for i, shard in enumerate(shards) for j, n in enumerate(shard)
        ):
            path = Path(name)
            relative = _relative(path, root)
            try:
                raster = read_sar(path, bands=self.config.bands)
            except SARFileError as error:
                if self.config.strict:
                    raise
                self._skip(relative, error)
                continue
            row = {**defaults, **per_file.get(relative, per_file.get(path.name, {}))}
            example = {
                "image": encode_array(raster.array),
                "valid_mask": encode_array(raster.valid_mask),
                "crs": _crs_wkt(raster.crs),
                "transform": _transform_list(raster.transform),
                "nodata": _nodata(raster.nodata),
                "path": relative,
                **{k: _coerce(row.get(k), v) for k, v in METADATA_FIELDS.items()},
                **{k: (None if row.get(k) is None else str(row.get(k))) for k in extra},
            }
            yield Key(shard_index, item_index), example


def load_sarsense(
    data_dir: str | os.PathLike[str],
    metadata: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    strict: bool = False,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    decode: bool = True,
    image_dtype: str | None = "float32",
    streaming: bool = False,
    bands: Sequence[int] | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """Load a folder of SAR patches as a ``datasets.Dataset`` (built once, then cached as Arrow).

    Args:
        data_dir: Folder tree of GeoTIFF/TIFF/PNG/JPG/NPY patches.
        metadata: Metadata file or dict (see :class:`SARSenseConfig`).
        strict: Raise on unreadable files instead of skipping them with a warning.
        cache_dir: ``datasets`` cache folder (default: the HF datasets cache).
        decode: Decode the array columns on access (:func:`with_decoding`); ``False`` returns the raw
            storage columns.
        image_dtype: dtype of the decoded ``image`` (``None``: source dtype).
        streaming: Return an ``IterableDataset`` that reads the files lazily (one shard per file,
            so ``datasets.distributed.split_dataset_by_node`` splits it across processes).
        bands: 1-based bands to read from each file.

    Returns:
        The ``train`` split.
    """
    builder = SARSense(
        data_dir=str(data_dir),
        metadata=str(metadata) if isinstance(metadata, os.PathLike) else metadata,
        strict=strict,
        bands=tuple(bands) if bands is not None else None,
        cache_dir=str(cache_dir) if cache_dir is not None else None,
    )
    if streaming:
        dataset = builder.as_streaming_dataset(split="train")
    else:
        builder.download_and_prepare()
        dataset = builder.as_dataset(split="train")
    return with_decoding(dataset, image_dtype) if decode else dataset


def skipped_files(builder: datasets.DatasetBuilder) -> list[dict[str, str]]:
    """Files a prepared :class:`SARSense` / :class:`SARSegmentation` builder skipped as corrupt."""
    return list(getattr(builder, "skipped_files", []))


# -- segmentation sets ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SegmentationTask:
    """A downstream segmentation task.

    Attributes:
        name: Task name.
        class_names: Class names; mask value ``i`` is class ``class_names[i]``.
        ignore_index: Label value ignored by losses/metrics; negative mask values (e.g. the −1
            "no data" of Sen1Floods11 masks), the mask's nodata value and pixels where the image is
            invalid are mapped to it.
    """

    name: str
    class_names: tuple[str, ...]
    ignore_index: int = IGNORE_INDEX

    @property
    def num_labels(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def id2label(self) -> dict[int, str]:
        """``{id: name}`` for model configs."""
        return dict(enumerate(self.class_names))


SEGMENTATION_PRESETS: dict[str, SegmentationTask] = {
    "landcover": SegmentationTask("landcover", LANDCOVER_CLASSES),
    "water": SegmentationTask("water", ("not_water", "water")),
    "roads": SegmentationTask("roads", ("background", "road")),
}
"""The paper's three downstream tasks."""

IMAGE_DIR_NAMES = ("images", "image", "imgs", "img", "sar", "S1Hand")
MASK_DIR_NAMES = ("masks", "mask", "labels", "label", "annotations", "gt", "LabelHand")
IMAGE_SUFFIXES_TO_STRIP = ("_S1Hand", "_image", "_img", "_sar")
MASK_SUFFIXES_TO_STRIP = ("_LabelHand", "_mask", "_masks", "_label", "_labels", "_gt")
SPLIT_DIR_NAMES = {
    "train": "train",
    "training": "train",
    "val": "validation",
    "valid": "validation",
    "validation": "validation",
    "test": "test",
}


class PairingError(ValueError):
    """Images and masks that do not pair up (missing partners or different sizes)."""


def _pair_key(path: Path, suffixes: Sequence[str]) -> str:
    stem = path.stem
    for suffix in suffixes:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def _find_dir(folder: Path, names: Sequence[str]) -> Path | None:
    for name in names:
        if (folder / name).is_dir():
            return folder / name
    return None


def find_segmentation_splits(
    data_dir: str | os.PathLike[str], task: str | None = None
) -> dict[str, tuple[Path, Path]]:
    """Locate ``{split: (image_dir, mask_dir)}`` under ``data_dir``.

    Accepted layouts: ``data_dir/{images,masks}`` (one ``train`` split),
    ``data_dir/<split>/{images,masks}`` with split in train/val(idation)/test, and either of those
    under ``data_dir/<task>/`` (what :func:`di3cl_hf.synthetic.generate_segmentation_sets` writes).
    Image folders may also be called image/img/sar/S1Hand, mask folders mask/labels/label/
    annotations/gt/LabelHand.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory")
    if task is not None and (root / task).is_dir() and _find_dir(root, IMAGE_DIR_NAMES) is None:
        root = root / task
    images, masks = _find_dir(root, IMAGE_DIR_NAMES), _find_dir(root, MASK_DIR_NAMES)
    if images is not None and masks is not None:
        return {"train": (images, masks)}
    splits = {}
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        split = SPLIT_DIR_NAMES.get(child.name.lower())
        if split is None:
            continue
        images, masks = _find_dir(child, IMAGE_DIR_NAMES), _find_dir(child, MASK_DIR_NAMES)
        if images is None or masks is None:
            raise FileNotFoundError(
                f"{child}: expected an images/ and a masks/ folder, found {sorted(p.name for p in child.iterdir())}"
            )
        splits[split] = (images, masks)
    if not splits:
        raise FileNotFoundError(
            f"{root}: no segmentation data; expected {root}/images + {root}/masks or {root}/<train|val|test>/images + masks"
        )
    return splits


def match_pairs(
    image_dir: str | os.PathLike[str], mask_dir: str | os.PathLike[str], check_sizes: bool = True
) -> list[tuple[Path, Path]]:
    """Pair images with masks by file name (suffixes like ``_mask``, ``_S1Hand``/``_LabelHand`` ignored).

    Raises:
        PairingError: Listing every image without a mask, mask without an image, duplicate name, and
            (with ``check_sizes``) pair whose raster sizes differ.
    """
    image_dir, mask_dir = Path(image_dir), Path(mask_dir)
    images: dict[str, Path] = {}
    masks: dict[str, Path] = {}
    problems: list[str] = []
    for files, suffixes, table, kind in (
        (list_sar_files(image_dir), IMAGE_SUFFIXES_TO_STRIP, images, "image"),
        (list_sar_files(mask_dir), MASK_SUFFIXES_TO_STRIP, masks, "mask"),
    ):
        for path in files:
            key = _pair_key(path, suffixes)
            if key in table:
                problems.append(f"two {kind}s named {key!r}: {table[key].name}, {path.name}")
            table[key] = path
    lonely_images = sorted(set(images) - set(masks))
    lonely_masks = sorted(set(masks) - set(images))
    if lonely_images:
        problems.append(
            f"{len(lonely_images)} image(s) in {image_dir} without a mask: "
            + ", ".join(images[k].name for k in lonely_images)
        )
    if lonely_masks:
        problems.append(
            f"{len(lonely_masks)} mask(s) in {mask_dir} without an image: "
            + ", ".join(masks[k].name for k in lonely_masks)
        )
    pairs = [(images[k], masks[k]) for k in sorted(set(images) & set(masks))]
    if check_sizes:
        mis_sized = []
        for image, mask in pairs:
            try:
                with open_scene(image) as a, open_scene(mask) as b:
                    if (a.height, a.width) != (b.height, b.width):
                        mis_sized.append(
                            f"{image.name} is {a.height}x{a.width} but {mask.name} is {b.height}x{b.width}"
                        )
            except SARFileError:
                continue  # unreadable files are reported (or raised) when the examples are generated
        if mis_sized:
            problems.append(f"{len(mis_sized)} pair(s) of different sizes: " + "; ".join(mis_sized))
    if problems:
        raise PairingError("image/mask pairs do not match: " + " | ".join(problems))
    if not pairs:
        raise PairingError(f"no image/mask pairs in {image_dir} and {mask_dir}")
    return pairs


def mask_to_label(
    mask: np.ndarray, task: SegmentationTask, nodata: float | None = None, path: str | Path = "mask"
) -> np.ndarray:
    """Map a raw mask to uint8 labels: ``0..num_labels-1`` or ``task.ignore_index``.

    Negative values and ``nodata`` become the ignore value; any other value outside the classes is
    an error.
    """
    if mask.ndim == 3:
        if mask.shape[0] != 1:
            raise SARFileError(f"{path}: mask with {mask.shape[0]} bands, expected 1")
        mask = mask[0]
    if np.iscomplexobj(mask):
        raise SARFileError(f"{path}: complex mask, expected integer class ids")
    values = mask.astype(np.float64)
    ignore = ~np.isfinite(values) | (values < 0)
    if nodata is not None and not np.isnan(nodata):
        ignore |= values == nodata
    ignore |= values == task.ignore_index
    known = values[~ignore]
    if known.size and not np.array_equal(known, np.round(known)):
        raise SARFileError(f"{path}: non-integer mask values, expected class ids 0..{task.num_labels - 1}")
    bad = np.unique(known[(known >= task.num_labels)])
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:10])
        raise SARFileError(
            f"{path}: mask values {shown} outside the {task.num_labels} classes of task {task.name!r} "
            f"(0..{task.num_labels - 1}; ignore value {task.ignore_index}, negatives = no data)"
        )
    label = np.where(ignore, task.ignore_index, np.nan_to_num(values)).astype(np.uint8)
    return label


@dataclass
class SARSegmentationConfig(datasets.BuilderConfig):
    """Configuration of :class:`SARSegmentation`.

    Attributes:
        task: ``"landcover"``, ``"water"`` or ``"roads"`` (see :data:`SEGMENTATION_PRESETS`).
        class_names: Override the preset's class names (custom tasks).
        ignore_index: Label value to ignore.
        strict: Raise on unreadable files instead of skipping the pair with a warning.
        bands: 1-based image bands to read.
    """

    task: str = "landcover"
    class_names: tuple[str, ...] | None = None
    ignore_index: int = IGNORE_INDEX
    strict: bool = False
    bands: tuple[int, ...] | None = None

    @property
    def segmentation_task(self) -> SegmentationTask:
        """The :class:`SegmentationTask` this config describes."""
        if self.class_names is not None:
            return SegmentationTask(self.task, tuple(self.class_names), self.ignore_index)
        if self.task not in SEGMENTATION_PRESETS:
            raise ValueError(
                f"unknown task {self.task!r}: expected one of {sorted(SEGMENTATION_PRESETS)} or pass class_names"
            )
        return SegmentationTask(self.task, SEGMENTATION_PRESETS[self.task].class_names, self.ignore_index)


class SARSegmentation(_ReportingBuilderMixin, datasets.GeneratorBasedBuilder):
    """Image/mask pairs for SAR semantic segmentation (folders found by :func:`find_segmentation_splits`).

    Columns: ``image``, ``valid_mask``, ``label`` (uint8, ``ignore_index`` for unlabelled pixels;
    lossless array structs), ``crs``, ``transform``, ``path`` (image, relative to ``data_dir``),
    ``mask_path`` and ``classes_present`` (a list of ``ClassLabel`` whose ``names`` are the task's
    class names).
    """

    BUILDER_CONFIG_CLASS = SARSegmentationConfig
    VERSION = datasets.Version("1.0.0")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        data_dir = kwargs.get("data_dir")
        if data_dir is None:
            raise ValueError("SARSegmentation needs data_dir=<folder with images/ and masks/>")
        task = kwargs.get("task", "landcover")
        root = Path(data_dir)
        splits = find_segmentation_splits(root, task)
        kwargs["data_dir"] = str(root.resolve())
        if "hash" not in kwargs:
            files = [
                f
                for image_dir, mask_dir in splits.values()
                for f in list_sar_files(image_dir) + list_sar_files(mask_dir)
            ]
            kwargs["hash"] = _fingerprint(files)
        kwargs.setdefault("dataset_name", f"sar_segmentation_{task}")
        super().__init__(*args, **kwargs)

    def _info(self) -> datasets.DatasetInfo:
        task = self.config.segmentation_task
        return datasets.DatasetInfo(
            description=f"SAR semantic segmentation ({task.name}): classes {list(task.class_names)}, ignore value {task.ignore_index}.",
            features=Features(
                {
                    "image": ARRAY_FEATURE,
                    "valid_mask": ARRAY_FEATURE,
                    "label": ARRAY_FEATURE,
                    "crs": Value("string"),
                    "transform": List(Value("float64")),
                    "path": Value("string"),
                    "mask_path": Value("string"),
                    "classes_present": List(ClassLabel(names=list(task.class_names))),
                }
            ),
        )

    def _split_generators(self, dl_manager: Any) -> list[datasets.SplitGenerator]:
        generators = []
        for split, (image_dir, mask_dir) in find_segmentation_splits(
            self.config.data_dir, self.config.task
        ).items():
            pairs = match_pairs(image_dir, mask_dir)
            generators.append(
                datasets.SplitGenerator(
                    name=split,
                    gen_kwargs={"images": [str(i) for i, _ in pairs], "masks": [str(m) for _, m in pairs]},
                )
            )
        return generators

    def _generate_examples(self, images: list[str], masks: list[str]) -> Iterator[tuple[Key, dict[str, Any]]]:
        root = Path(self.config.data_dir)
        task = self.config.segmentation_task
        for index, (image_name, mask_name) in enumerate(zip(images, masks)):
            image_path, mask_path = Path(image_name), Path(mask_name)
            try:
                image = read_sar(image_path, bands=self.config.bands)
                mask = read_sar(mask_path)
                if mask.array.shape[1:] != image.array.shape[1:]:
                    raise PairingError(
                        f"{image_path.name} is {image.height}x{image.width} but {mask_path.name} is {mask.height}x{mask.width}"
                    )
                label = mask_to_label(mask.array, task, mask.nodata, mask_path)
            except SARFileError as error:
                if self.config.strict:
                    raise
                self._skip(_relative(image_path, root), error)
                continue
            label[~image.valid_mask | ~mask.valid_mask] = task.ignore_index
            present = np.unique(label[label != task.ignore_index]).tolist()
            yield (
                Key(index, 0),
                {
                    "image": encode_array(image.array),
                    "valid_mask": encode_array(image.valid_mask),
                    "label": encode_array(label),
                    "crs": _crs_wkt(image.crs),
                    "transform": _transform_list(image.transform),
                    "path": _relative(image_path, root),
                    "mask_path": _relative(mask_path, root),
                    "classes_present": present,
                },
            )


def load_segmentation(
    data_dir: str | os.PathLike[str],
    task: str = "landcover",
    *,
    class_names: Sequence[str] | None = None,
    ignore_index: int = IGNORE_INDEX,
    strict: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    decode: bool = True,
    image_dtype: str | None = "float32",
    bands: Sequence[int] | None = None,
) -> datasets.DatasetDict:
    """Load a downstream segmentation set as a ``DatasetDict`` (splits from the folder layout).

    Args:
        data_dir: See :func:`find_segmentation_splits`.
        task: ``"landcover"`` (10 classes), ``"water"`` or ``"roads"`` (binary), or a custom name
            together with ``class_names``.
        class_names: Class names of a custom task.
        ignore_index: Label value for unlabelled pixels (−1 in masks, nodata, invalid image pixels).
        strict: Raise on unreadable files instead of skipping the pair with a warning.
        cache_dir: ``datasets`` cache folder.
        decode: Decode to numpy on access (``image`` float32 ``[C,H,W]``, ``label`` int64 ``[H,W]``).
        image_dtype: dtype of the decoded image.
        bands: 1-based image bands.

    Returns:
        ``DatasetDict`` with the splits found (``train`` and, when present, ``validation``/``test``).

    Raises:
        PairingError: Unmatched or mis-sized image/mask pairs (all listed).
    """
    builder = SARSegmentation(
        data_dir=str(data_dir),
        task=task,
        class_names=tuple(class_names) if class_names is not None else None,
        ignore_index=ignore_index,
        strict=strict,
        bands=tuple(bands) if bands is not None else None,
        cache_dir=str(cache_dir) if cache_dir is not None else None,
    )
    builder.download_and_prepare()
    dataset = builder.as_dataset()
    return with_decoding(dataset, image_dtype) if decode else dataset


def class_names(dataset: datasets.Dataset | datasets.IterableDataset) -> list[str]:
    """Class names of a segmentation dataset (from its ``classes_present`` ClassLabel)."""
    feature = dataset.features["classes_present"]
    return list(feature.feature.names)


# -- splits and label fractions ------------------------------------------------------------------------
PAPER_LABEL_FRACTIONS = (0.01, 0.05, 0.1, 1.0)
"""Fractions of labelled training samples used in the paper's fine-tuning experiments."""


def label_fraction_subset(dataset: datasets.Dataset, fraction: float, seed: int = 0) -> datasets.Dataset:
    """A reproducible random subset with ``fraction`` of the samples (at least one).

    The same seed draws one permutation for every fraction, so the subsets are nested
    (1 % ⊂ 5 % ⊂ 10 % ⊂ 100 %) and rows keep their original order.

    Args:
        dataset: Usually a ``train`` split.
        fraction: In ``(0, 1]``, e.g. one of :data:`PAPER_LABEL_FRACTIONS`.
        seed: Seed of the permutation.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    total = len(dataset)
    if total == 0:
        raise ValueError("cannot take a label fraction of an empty dataset")
    count = max(1, int(math.floor(fraction * total + 0.5)))
    order = np.random.default_rng(seed).permutation(total)
    return dataset.select(np.sort(order[:count]).tolist())


def train_validation_split(
    dataset: datasets.Dataset, validation_fraction: float = 0.1, seed: int = 0
) -> datasets.DatasetDict:
    """Split off a reproducible validation set: ``DatasetDict(train=..., validation=...)``."""
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    if len(dataset) < 2:
        raise ValueError(f"need at least 2 samples to split, got {len(dataset)}")
    parts = dataset.train_test_split(test_size=validation_fraction, seed=seed, shuffle=True)
    return datasets.DatasetDict(train=parts["train"], validation=parts["test"])


# -- Parquet export + dataset card ---------------------------------------------------------------------
def _raw(dataset: datasets.Dataset) -> datasets.Dataset:
    return dataset.with_format(None)


def export_parquet(
    dataset: datasets.Dataset | datasets.DatasetDict,
    out_dir: str | os.PathLike[str],
    *,
    max_shard_size: int = 500 * 2**20,
    num_shards: int | None = None,
    pretty_name: str = "SAR patches",
    description: str | None = None,
    license: str = "other",
    tags: Sequence[str] = (),
    synthetic: bool | None = None,
) -> list[Path]:
    """Write a dataset as Parquet shards + a dataset card, readable with no script.

    Layout: ``out_dir/data/<split>-00000-of-0000N.parquet`` and ``out_dir/README.md`` whose YAML
    ``configs`` point at the shards, so ``load_dataset(out_dir)``, ``load_dataset("parquet",
    data_files=...)`` and a Hub dataset repo of this folder all work. Each file is written to a
    temporary name and renamed.

    Args:
        dataset: A ``Dataset`` (written as split ``train``) or ``DatasetDict``.
        out_dir: Output folder.
        max_shard_size: Target bytes per shard (ignored when ``num_shards`` is given).
        num_shards: Shards per split.
        pretty_name: Card title.
        description: Card text.
        license: Card license id.
        tags: Extra card tags.
        synthetic: Say on the card that the data are synthetic (``None``: detect it from the
            ``sensor`` / ``source_dataset`` columns, which :mod:`di3cl_hf.synthetic` fills).

    Returns:
        The Parquet files.
    """
    splits = dataset if isinstance(dataset, datasets.DatasetDict) else datasets.DatasetDict(train=dataset)
    out_dir = Path(out_dir)
    data_dir = out_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    counts = {}
    for split, part in splits.items():
        part = _raw(part)
        shards = num_shards or max(1, math.ceil(part.data.nbytes / max_shard_size))
        shards = max(1, min(shards, len(part))) if len(part) else 1
        for stale in data_dir.glob(f"{split}-*.parquet"):
            stale.unlink()
        for index in range(shards):
            target = data_dir / f"{split}-{index:05d}-of-{shards:05d}.parquet"
            tmp = target.with_name(f".{target.name}.tmp")
            part.shard(shards, index, contiguous=True).to_parquet(str(tmp))
            os.replace(tmp, target)
            written.append(target)
        counts[split] = len(part)
    first = next(iter(splits.values()))
    if synthetic is None:
        synthetic = any(
            "synthetic" in str(value).lower()
            for part in splits.values()
            for column in ("sensor", "source_dataset")
            if column in part.column_names
            for value in set(_raw(part)[column])
        )
    card = dataset_card(
        features=first.features,
        splits=counts,
        pretty_name=pretty_name,
        description=description,
        license=license,
        tags=tags,
        synthetic=synthetic,
    )
    tmp = out_dir / ".README.md.tmp"
    tmp.write_text(card)
    os.replace(tmp, out_dir / "README.md")
    return written


def dataset_card(
    features: datasets.Features,
    splits: Mapping[str, int],
    pretty_name: str = "SAR patches",
    description: str | None = None,
    license: str = "other",
    tags: Sequence[str] = (),
    synthetic: bool = False,
) -> str:
    """The README.md (YAML header + text) of an exported dataset folder."""
    from huggingface_hub import DatasetCardData

    size = max(splits.values()) if splits else 0
    size_category = (
        "n<1K"
        if size < 1000
        else "1K<n<10K"
        if size < 10_000
        else "10K<n<100K"
        if size < 100_000
        else "100K<n<1M"
        if size < 10**6
        else "n>1M"
    )
    card_data = DatasetCardData(
        pretty_name=pretty_name,
        license=license,
        tags=[
            "sar",
            "remote-sensing",
            "earth-observation",
            "di3cl",
            *(["synthetic"] if synthetic else []),
            *tags,
        ],
        size_categories=[size_category],
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in splits],
            }
        ],
    )
    info = datasets.DatasetInfo(features=features)
    yaml_features = info._to_yaml_dict().get("features")
    card_data.dataset_info = {"features": yaml_features}
    columns = "\n".join(f"- `{name}`" for name in features)
    is_segmentation = "label" in features
    text = description or (
        "SAR patches stored losslessly for DI3CL pre-training and fine-tuning."
        if not is_segmentation
        else "SAR image/mask pairs for semantic segmentation."
    )
    if synthetic:
        text += (
            "\n\n> **Synthetic data.** Every pixel was generated by `di3cl_hf.synthetic` (class-typical C-band"
            " backscatter with Gamma speckle); no real sensor data. Use it to test pipelines, not to judge models."
        )
    classes = ""
    if is_segmentation and "classes_present" in features:
        names = features["classes_present"].feature.names
        classes = (
            "\n## Classes\n\n"
            + "\n".join(f"- {i}: {n}" for i, n in enumerate(names))
            + f"\n\nIgnore value: {IGNORE_INDEX}.\n"
        )
    body = f"""
# {pretty_name}

{text}

Splits: {", ".join(f"{s} ({n} rows)" for s, n in splits.items())}.

## Columns

{columns}

Array columns (`image`, `valid_mask`{", `label`" if is_segmentation else ""}) are structs
`{{bytes, dtype, shape}}`: the raw array bytes in the source numpy dtype (e.g. `<f4` float32 dB,
`<c8` complex64), so nothing is quantised. `crs` is a WKT string and `transform` the six affine
coefficients (a, b, c, d, e, f) of the patch, both empty for ungeoreferenced patches.
{classes}
## Loading

```python
import numpy as np
from datasets import load_dataset

ds = load_dataset("parquet", data_files="data/train-*.parquet", split="train")  # or load_dataset("<repo id>")
row = ds[0]
image = np.frombuffer(row["image"]["bytes"], dtype=row["image"]["dtype"]).reshape(row["image"]["shape"])

# with di3cl-hf installed:
from di3cl_hf.data import with_decoding
ds = with_decoding(ds)  # image float32 [C, H, W], valid_mask bool [H, W]
```

Streaming: `load_dataset(..., streaming=True)`, then `datasets.distributed.split_dataset_by_node`.
"""
    return f"---\n{card_data.to_yaml()}\n---\n{body}"


# -- CLI -----------------------------------------------------------------------------------------------
def _make_synthetic(args: argparse.Namespace) -> int:
    from ..data.synthetic import generate_sarsense, generate_scene, generate_segmentation_sets

    out = Path(args.output_dir)
    if args.kind in ("sarsense", "all"):
        paths = generate_sarsense(
            out / "sarsense", args.num_patches, args.size, args.polarisations, args.seed, args.looks
        )
        print(f"wrote {len(paths)} synthetic SARSense patches to {out / 'sarsense'}")
    if args.kind in ("segmentation", "all"):
        folders = generate_segmentation_sets(
            out / "segmentation", args.num_patches, args.size, args.seed, args.polarisations, args.looks
        )
        print(f"wrote synthetic segmentation sets: {', '.join(str(f) for f in folders.values())}")
    if args.kind in ("scene", "all"):
        path = generate_scene(
            out / "scene.tif",
            args.scene_size,
            args.scene_size,
            seed=args.seed,
            polarisations=args.polarisations,
            looks=args.looks,
            labels_path=out / "scene_landcover.tif",
        )
        print(f"wrote a {args.scene_size}x{args.scene_size} synthetic scene to {path}")
    return 0


def _export_parquet(args: argparse.Namespace) -> int:
    if args.task:
        dataset = load_segmentation(
            args.data_dir, args.task, strict=args.strict, cache_dir=args.cache_dir, decode=False
        )
    else:
        dataset = load_sarsense(
            args.data_dir, metadata=args.metadata, strict=args.strict, cache_dir=args.cache_dir, decode=False
        )
    files = export_parquet(
        dataset, args.output_dir, num_shards=args.num_shards, pretty_name=args.name, synthetic=args.synthetic
    )
    print(f"wrote {len(files)} Parquet shard(s) and README.md to {args.output_dir}")
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``make-synthetic`` and ``export-parquet`` to the ``di3cl`` command line."""
    make = subparsers.add_parser(
        "make-synthetic", help="write synthetic SAR patches, segmentation sets and a scene"
    )
    make.add_argument("output_dir", help="output folder")
    make.add_argument("--kind", choices=("sarsense", "segmentation", "scene", "all"), default="all")
    make.add_argument("--num-patches", type=int, default=64)
    make.add_argument("--size", type=int, default=256, help="patch size in pixels")
    make.add_argument("--polarisations", type=int, choices=(1, 2), default=2)
    make.add_argument("--looks", type=float, default=4.4, help="equivalent number of looks of the speckle")
    make.add_argument("--scene-size", type=int, default=2048, help="rows and columns of the synthetic scene")
    make.add_argument("--seed", type=int, default=0)
    make.set_defaults(func=_make_synthetic)

    export = subparsers.add_parser(
        "export-parquet", help="export a SAR patch folder (or segmentation set) to Parquet + dataset card"
    )
    export.add_argument("data_dir", help="folder of SAR patches (or of images/ + masks/ with --task)")
    export.add_argument("output_dir", help="output folder (data/*.parquet + README.md)")
    export.add_argument(
        "--task", choices=sorted(SEGMENTATION_PRESETS), default=None, help="export a segmentation set"
    )
    export.add_argument("--metadata", default=None, help="metadata CSV/JSON (SARSense)")
    export.add_argument("--num-shards", type=int, default=None)
    export.add_argument("--name", default="SAR patches", help="dataset card title")
    export.add_argument("--cache-dir", default=None)
    export.add_argument(
        "--strict", action="store_true", help="fail on unreadable files instead of skipping them"
    )
    export.add_argument(
        "--synthetic",
        action="store_true",
        default=None,
        help="mark the card as synthetic data (default: detected from the sensor/source_dataset columns)",
    )
    export.set_defaults(func=_export_parquet)


__all__ = [
    "ARRAY_FEATURE",
    "IGNORE_INDEX",
    "LANDCOVER_CLASSES",
    "METADATA_FIELDS",
    "PAPER_LABEL_FRACTIONS",
    "PairingError",
    "SARDecoder",
    "SARSegmentation",
    "SARSegmentationConfig",
    "SARSense",
    "SARSenseConfig",
    "SEGMENTATION_PRESETS",
    "SegmentationTask",
    "class_names",
    "dataset_card",
    "decode_array",
    "decode_batch",
    "decode_example",
    "encode_array",
    "export_parquet",
    "find_segmentation_splits",
    "label_fraction_subset",
    "load_sarsense",
    "load_segmentation",
    "mask_to_label",
    "match_pairs",
    "register_cli",
    "skipped_files",
    "train_validation_split",
    "with_decoding",
]
