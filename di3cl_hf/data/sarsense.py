"""The SARSense pre-training set as a 🤗 ``datasets`` builder: unlabelled SAR patches, stored losslessly.

``datasets`` 5 runs no dataset scripts, so the builder is an ordinary class used directly::

    builder = SARSense(data_dir="my_patches", cache_dir="cache")
    builder.download_and_prepare()
    ds = builder.as_dataset("train")          # raw columns (see below)
    ds = load_sarsense("my_patches")          # the same, decoded to numpy on access

Every band of every file is kept (quad-pol HH/HV/VH/VV, Pauli RGB, ...) in its source dtype (see
:mod:`di3cl_hf.data.parquet` for the storage), with its name in ``band_names`` (see
:func:`~di3cl_hf.data.builders.band_names`); which bands a model sees is chosen later, by the image
processor. Per-polarisation files ``{id}_vv.tif`` + ``{id}_vh.tif`` become one dual-pol patch
(:mod:`di3cl_hf.data.polarisation`). Georeferencing is kept as ``crs`` (WKT string) and ``transform``
(the 6 affine coefficients ``a, b, c, d, e, f``), ``None`` for plain images. Unreadable files are
skipped with a warning and counted, or raise with ``strict=True`` (:mod:`di3cl_hf.data.builders`).
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
from datasets import Features, List, Value
from datasets.builder import Key

from .builders import (
    ReportingBuilderMixin,
    band_names,
    crs_wkt,
    fingerprint,
    nodata_value,
    relative_path,
    shard_files,
    transform_list,
)
from .parquet import ARRAY_FEATURE, encode_array, with_decoding
from .polarisation import file_polarisations, group_polarisations, read_sample
from .sario import SARFileError, list_sar_files

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


# -- SARSense -----------------------------------------------------------------------------------------
@dataclass
class SARSenseConfig(datasets.BuilderConfig):
    """Configuration of :class:`SARSense`.

    Attributes:
        metadata: Metadata file (CSV, JSON Lines or JSON list of rows with a ``file_name`` column
            relative to ``data_dir``) or a dict of fields that apply to every patch; ``None`` uses
            ``data_dir/metadata.{csv,jsonl,json}`` when present.
        strict: Raise on the first unreadable file instead of skipping it with a warning.
        bands: 1-based band indexes to keep from every file (``None``: all of them).
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


_COLUMNS = ("image", "valid_mask", "crs", "transform", "nodata", "path", "band_names")


class SARSense(ReportingBuilderMixin, datasets.GeneratorBasedBuilder):
    """SARSense-style unlabelled SAR patches from a local folder tree (any format :mod:`sario` reads).

    Columns: ``image`` and ``valid_mask`` (lossless array structs, see :mod:`di3cl_hf.data.parquet`),
    ``crs`` (WKT), ``transform`` (6 floats), ``nodata``, ``path`` (relative to ``data_dir``; the
    first file of a per-polarisation group), ``band_names`` (one per band of ``image``), and the
    metadata fields :data:`METADATA_FIELDS` plus any extra metadata columns (as strings).

    Example:
        >>> builder = SARSense(data_dir="patches", cache_dir="cache")  # doctest: +SKIP
        >>> builder.download_and_prepare()  # doctest: +SKIP
        >>> raw = builder.as_dataset("train")  # doctest: +SKIP
        >>> streamed = builder.as_streaming_dataset("train")  # doctest: +SKIP
    """

    BUILDER_CONFIG_CLASS = SARSenseConfig
    VERSION = datasets.Version("1.1.0")  # 1.1: band_names column, any band count, polarisation groups

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
            kwargs["hash"] = fingerprint(
                files + meta_files, metadata if isinstance(metadata, Mapping) else None
            )
        kwargs.setdefault("dataset_name", "sarsense")
        super().__init__(*args, **kwargs)

    def _metadata(self) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        return _read_metadata(self.config.metadata, Path(self.config.data_dir))

    def _info(self) -> datasets.DatasetInfo:
        per_file, defaults = self._metadata()
        extra = sorted(
            {k for row in [defaults, *per_file.values()] for k in row} - set(METADATA_FIELDS) - set(_COLUMNS)
        )
        features = Features(
            {
                "image": ARRAY_FEATURE,
                "valid_mask": ARRAY_FEATURE,
                "crs": Value("string"),
                "transform": List(Value("float64")),
                "nodata": Value("float64"),
                "path": Value("string"),
                "band_names": List(Value("string")),
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
        samples = group_polarisations(files)
        per_file, _ = self._metadata()
        known = {relative_path(f, root) for f in files} | {f.name for f in files}
        known |= {relative_path(s.files[0].parent / s.key, root) for s in samples} | {s.key for s in samples}
        orphans = sorted(set(per_file) - known)
        if orphans:
            warnings.warn(
                f"{root}: {len(orphans)} metadata row(s) name files that are not there: {', '.join(orphans[:10])}"
                + (" ..." if len(orphans) > 10 else ""),
                UserWarning,
                stacklevel=2,
            )
        groups = [[str(f) for f in s.files] for s in samples]
        return [
            datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"shards": shard_files(groups)})
        ]

    def _metadata_row(self, files: Sequence[Path], per_file: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
        root = Path(self.config.data_dir)
        group = group_polarisations(files)[0] if len(files) > 1 else None
        names = [relative_path(f, root) for f in files] + [f.name for f in files]
        if group is not None:
            names += [relative_path(files[0].parent / group.key, root), group.key]
        return next((per_file[n] for n in names if n in per_file), {})

    def _generate_examples(self, shards: list[list[list[str]]]) -> Iterator[tuple[Key, dict[str, Any]]]:
        root = Path(self.config.data_dir)
        per_file, defaults = self._metadata()
        extra = [k for k in self.info.features if k not in METADATA_FIELDS and k not in _COLUMNS]
        for shard_index, names, item_index in (
            (i, n, j) for i, shard in enumerate(shards) for j, n in enumerate(shard)
        ):
            paths = [Path(n) for n in names]
            relative = relative_path(paths[0], root)
            try:
                raster = read_sample(paths, bands=self.config.bands, max_bands=None)
            except SARFileError as error:
                if self.config.strict:
                    raise
                self._skip(relative, error)
                continue
            row = {**defaults, **self._metadata_row(paths, per_file)}
            pols = file_polarisations(paths)
            example = {
                "image": encode_array(raster.array),
                "valid_mask": encode_array(raster.valid_mask),
                "crs": crs_wkt(raster.crs),
                "transform": transform_list(raster.transform),
                "nodata": nodata_value(raster.nodata),
                "path": relative,
                "band_names": band_names(raster.num_bands, raster.band_names, pols, row),
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
        data_dir: Folder tree of GeoTIFF/TIFF/PNG/JPG/NPY patches (``{id}_vv``/``{id}_vh`` files are
            one dual-pol patch, see :mod:`di3cl_hf.data.polarisation`).
        metadata: Metadata file or dict (see :class:`SARSenseConfig`).
        strict: Raise on unreadable files instead of skipping them with a warning.
        cache_dir: ``datasets`` cache folder (default: the HF datasets cache).
        decode: Decode the array columns on access (:func:`with_decoding`); ``False`` returns the raw
            storage columns.
        image_dtype: dtype of the decoded ``image`` (``None``: source dtype).
        streaming: Return an ``IterableDataset`` that reads the files lazily (one shard per patch,
            so ``datasets.distributed.split_dataset_by_node`` splits it across processes).
        bands: 1-based bands to keep from each patch (``None``: all).

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


__all__ = [
    "METADATA_FIELDS",
    "SARSense",
    "SARSenseConfig",
    "load_sarsense",
]
