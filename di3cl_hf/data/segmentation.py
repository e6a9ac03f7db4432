"""Downstream SAR segmentation sets (image/mask pairs) as a 🤗 ``datasets`` builder, plus label fractions.

Folder layouts are found by :func:`find_segmentation_splits` (``images/`` + ``masks/``, optionally per
split and per task; Sen1Floods11's ``S1Hand/`` + ``LabelHand/`` too). Images may have any band count
(a 3-band Pauli RGB composite, quad-pol) and may come as one file per polarisation (``{id}_vv.tif`` +
``{id}_vh.tif`` beside mask ``{id}.tif``, see :mod:`di3cl_hf.data.polarisation`).

**Mask values.** Mask value ``i`` is class ``i``; negative values (Sen1Floods11's −1), the mask's
nodata value and 255 (:data:`~di3cl_hf.data.classes.IGNORE_INDEX`) are ignored. Binary masks stored
as 0/255 (the common convention for water, road and building masks) would lose every foreground
pixel that way: when every mask of a binary task's folder holds exactly the values {0, 255} (nodata
excluded), 255 is read as class 1 with one warning naming the folder. ``mask_values`` overrides the
rule (``{0: 0, 255: 1}``, or ``{}`` to read raw values). A class that no labelled training pixel has
gets a warning when the set is loaded, before any training.

**Image no data.** Pixels that are nodata in the image files (GeoTIFF nodata, NaN, alpha) are invalid;
``nodata=`` declares a value for files that cannot say it (8-bit PNG tiles where 255 means no data):
a pixel equal to it in any band is invalid too. Invalid pixels get the ignore label.

**Flood layouts.** ``layout="etci"``, ``"etci-classes"``, ``"ombria-after"`` or ``"ombria-pair"`` reads
the ETCI 2021 and OMBRIA sets as they come (two label files per tile, BEFORE/AFTER/MASK folders, ETCI's
255 = no data, split by grid blocks); the rules are in :mod:`di3cl_hf.data.flood`.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from datasets import ClassLabel, Features, List, Value
from datasets.builder import Key

from .builders import ReportingBuilderMixin, band_names, crs_wkt, fingerprint, relative_path, transform_list
from .classes import IGNORE_INDEX, SEGMENTATION_PRESETS, SegmentationTask
from .parquet import ARRAY_FEATURE, encode_array, with_decoding
from .polarisation import file_polarisations, group_polarisations, read_sample
from .sario import SARFileError, list_sar_files, open_scene, read_sar

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


def _pair_key(path: Path | str, suffixes: Sequence[str]) -> str:
    stem = path.stem if isinstance(path, Path) else path
    for suffix in suffixes:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def _find_dir(folder: Path, names: Sequence[str]) -> Path | None:
    for name in names:
        if (folder / name).is_dir():
            return folder / name
    return None


def _flood() -> Any:
    """:mod:`di3cl_hf.data.flood`, imported on use (it imports this module)."""
    from . import flood

    return flood


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
) -> list[tuple[tuple[Path, ...], Path]]:
    """Pair images with masks by file name (suffixes like ``_mask``, ``_S1Hand``/``_LabelHand`` ignored).

    An image may be one file per polarisation (``{id}_vv.tif`` + ``{id}_vh.tif`` with mask
    ``{id}.tif``; see :mod:`di3cl_hf.data.polarisation`).

    Returns:
        ``[(image files, mask file)]`` sorted by sample id; one image file unless per-polarisation.

    Raises:
        PolarisationError: A per-polarisation sample lacks a polarisation (named).
        PairingError: Listing every image without a mask, mask without an image, duplicate name, and
            (with ``check_sizes``) pair whose raster sizes differ.
    """
    image_dir, mask_dir = Path(image_dir), Path(mask_dir)
    images: dict[str, tuple[Path, ...]] = {}
    masks: dict[str, tuple[Path, ...]] = {}
    problems: list[str] = []
    image_samples = [(s.key, s.files) for s in group_polarisations(list_sar_files(image_dir))]
    mask_samples = [(p.stem, (p,)) for p in list_sar_files(mask_dir)]
    for samples, suffixes, table, kind in (
        (image_samples, IMAGE_SUFFIXES_TO_STRIP, images, "image"),
        (mask_samples, MASK_SUFFIXES_TO_STRIP, masks, "mask"),
    ):
        for stem, files in samples:
            key = _pair_key(stem, suffixes)
            if key in table:
                problems.append(f"two {kind}s named {key!r}: {table[key][0].name}, {files[0].name}")
            table[key] = files
    lonely_images = sorted(set(images) - set(masks))
    lonely_masks = sorted(set(masks) - set(images))
    if lonely_images:
        problems.append(
            f"{len(lonely_images)} image(s) in {image_dir} without a mask: "
            + ", ".join("+".join(f.name for f in images[k]) for k in lonely_images)
        )
    if lonely_masks:
        problems.append(
            f"{len(lonely_masks)} mask(s) in {mask_dir} without an image: "
            + ", ".join(masks[k][0].name for k in lonely_masks)
        )
    pairs = [(images[k], masks[k][0]) for k in sorted(set(images) & set(masks))]
    if check_sizes:
        mis_sized = []
        for image, mask in pairs:
            try:
                with open_scene(image[0]) as a, open_scene(mask) as b:
                    if (a.height, a.width) != (b.height, b.width):
                        mis_sized.append(
                            f"{image[0].name} is {a.height}x{a.width} but {mask.name} is {b.height}x{b.width}"
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
    mask: np.ndarray,
    task: SegmentationTask,
    nodata: float | None = None,
    path: str | Path = "mask",
    mask_values: Mapping[int, int] | None = None,
) -> np.ndarray:
    """Map a raw mask to uint8 labels: ``0..num_labels-1`` or ``task.ignore_index``.

    ``mask_values`` first replaces raw values (``{255: 1}``: a 0/255 mask); then negative values,
    ``nodata`` and ``task.ignore_index`` become the ignore value; any other value outside the classes
    is an error.
    """
    if mask.ndim == 3:
        if mask.shape[0] != 1:
            raise SARFileError(f"{path}: mask with {mask.shape[0]} bands, expected 1")
        mask = mask[0]
    if np.iscomplexobj(mask):
        raise SARFileError(f"{path}: complex mask, expected integer class ids")
    values = mask.astype(np.float64)
    mapped = np.zeros(values.shape, dtype=bool)
    if mask_values:
        replaced = values.copy()
        for raw, new in mask_values.items():
            hit = values == float(raw)
            replaced[hit] = float(new)
            mapped |= hit
        values = replaced
    ignore = ~np.isfinite(values) | (values < 0)
    if nodata is not None and not np.isnan(nodata):
        ignore |= (values == nodata) & ~mapped
    ignore |= values == task.ignore_index
    known = values[~ignore]
    if known.size and not np.array_equal(known, np.round(known)):
        raise SARFileError(f"{path}: non-integer mask values, expected class ids 0..{task.num_labels - 1}")
    bad = np.unique(known[(known >= task.num_labels)])
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:10])
        raise SARFileError(
            f"{path}: mask values {shown} outside the {task.num_labels} classes of task {task.name!r} "
            f"(0..{task.num_labels - 1}; ignore value {task.ignore_index}, negatives = no data; "
            "mask_values={raw: class} maps other conventions)"
        )
    label = np.where(ignore, task.ignore_index, np.nan_to_num(values)).astype(np.uint8)
    return label


def detect_mask_values(mask_files: Sequence[Path], task: SegmentationTask) -> dict[int, int] | None:
    """``{255: 1}`` when ``task`` is binary and the masks' values (nodata excluded) are exactly {0, 255}.

    Reads every mask once; unreadable masks are left to the builder (skipped or raised there).
    """
    if task.num_labels != 2 or task.ignore_index != IGNORE_INDEX:
        return None
    seen: set[float] = set()
    for path in mask_files:
        try:
            mask = read_sar(path, max_bands=None)
        except SARFileError:
            continue
        values = mask.array[0][mask.valid_mask] if mask.num_bands == 1 else mask.array
        seen.update(np.unique(values).tolist())
        if not seen <= {0, 255}:
            return None
    return {255: 1} if seen == {0, 255} else None


@dataclass
class SARSegmentationConfig(datasets.BuilderConfig):
    """Configuration of :class:`SARSegmentation`.

    Attributes:
        task: ``"landcover"``, ``"water"`` or ``"roads"`` (see :data:`SEGMENTATION_PRESETS`).
        class_names: Override the preset's class names (custom tasks).
        ignore_index: Label value to ignore.
        strict: Raise on unreadable files instead of skipping the pair with a warning.
        bands: 1-based image bands to keep (``None``: all).
        mask_values: Raw mask value -> class id (or ``ignore_index``), applied before the usual
            rules; ``None`` detects 0/255 binary masks (module docstring), ``{}`` reads raw values.
        layout: A flood layout of :mod:`di3cl_hf.data.flood` (``"etci"``, ``"etci-classes"``,
            ``"ombria-after"``, ``"ombria-pair"``), or ``None`` for image/mask folders.
        nodata: Image value meaning no data (``None``: the files' own, or the layout's: 255 for ETCI).
    """

    task: str = "landcover"
    class_names: tuple[str, ...] | None = None
    ignore_index: int = IGNORE_INDEX
    strict: bool = False
    bands: tuple[int, ...] | None = None
    mask_values: dict[int, int] | None = field(default=None)
    layout: str | None = None
    nodata: float | None = None

    @property
    def segmentation_task(self) -> SegmentationTask:
        """The :class:`SegmentationTask` this config describes (a layout's classes unless ``class_names``)."""
        if self.class_names is not None:
            return SegmentationTask(self.task, tuple(self.class_names), self.ignore_index)
        if self.layout is not None:
            return SegmentationTask(
                self.task, _flood().flood_layout(self.layout).class_names, self.ignore_index
            )
        if self.task not in SEGMENTATION_PRESETS:
            raise ValueError(
                f"unknown task {self.task!r}: expected one of {sorted(SEGMENTATION_PRESETS)} or pass class_names"
            )
        return SegmentationTask(self.task, SEGMENTATION_PRESETS[self.task].class_names, self.ignore_index)


class SARSegmentation(ReportingBuilderMixin, datasets.GeneratorBasedBuilder):
    """Image/mask pairs for SAR semantic segmentation (folders found by :func:`find_segmentation_splits`).

    Columns: ``image``, ``valid_mask``, ``label`` (uint8, ``ignore_index`` for unlabelled pixels;
    lossless array structs), ``crs``, ``transform``, ``path`` (image, relative to ``data_dir``; the
    first file of a per-polarisation group), ``mask_path``, ``band_names`` (one per image band) and
    ``classes_present`` (a list of ``ClassLabel`` whose ``names`` are the task's class names). With a flood
    ``layout`` (:mod:`di3cl_hf.data.flood`) ``mask_path`` is the first label file and ``band_names`` the
    layout's channels.
    """

    BUILDER_CONFIG_CLASS = SARSegmentationConfig
    VERSION = datasets.Version("1.1.0")  # 1.1: band_names column, any band count, polarisation groups

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        data_dir = kwargs.get("data_dir")
        if data_dir is None:
            raise ValueError("SARSegmentation needs data_dir=<folder with images/ and masks/>")
        task = kwargs.get("task", "landcover")
        root = Path(data_dir)
        if kwargs.get("layout") is not None:
            if kwargs.get("mask_values") is not None:
                raise ValueError(
                    f"mask_values does not apply to layout={kwargs['layout']!r} (its masks are read by the "
                    "layout's rule, see di3cl_hf.data.flood); drop mask_values"
                )
            samples = _flood().find_flood_samples(root, kwargs["layout"])
            files = [f for split in samples.values() for s in split for f in s.images + s.masks]
        else:
            splits = find_segmentation_splits(root, task)
            files = [
                f
                for image_dir, mask_dir in splits.values()
                for f in list_sar_files(image_dir) + list_sar_files(mask_dir)
            ]
        kwargs["data_dir"] = str(root.resolve())
        if "hash" not in kwargs:
            kwargs["hash"] = fingerprint(files)
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
                    "band_names": List(Value("string")),
                    "classes_present": List(ClassLabel(names=list(task.class_names))),
                }
            ),
        )

    def _mask_values(self, mask_dir: Path, masks: Sequence[Path]) -> dict[int, int] | None:
        if self.config.mask_values is not None:
            return {int(k): int(v) for k, v in self.config.mask_values.items()}
        task = self.config.segmentation_task
        detected = detect_mask_values(masks, task)
        if detected:
            warnings.warn(
                f"{mask_dir}: every mask of binary task {task.name!r} holds only the values 0 and 255; "
                f"reading 255 as class 1 ({task.class_names[1]!r}), not as the ignore value. Pass "
                "mask_values={0: 0, 255: 255} to keep 255 as 'no data' (or mask_values={} for raw values).",
                UserWarning,
                stacklevel=2,
            )
        return detected

    def _split_generators(self, dl_manager: Any) -> list[datasets.SplitGenerator]:
        if self.config.layout is not None:
            found = _flood().find_flood_samples(self.config.data_dir, self.config.layout)
            return [
                datasets.SplitGenerator(
                    name=split,
                    gen_kwargs={
                        "images": [[str(f) for f in s.images] for s in samples],
                        "masks": [[str(f) for f in s.masks] for s in samples],
                        "mask_values": [[] for _ in samples],
                        "names": [list(s.band_names) for s in samples],
                    },
                )
                for split, samples in found.items()
            ]
        generators = []
        for split, (image_dir, mask_dir) in find_segmentation_splits(
            self.config.data_dir, self.config.task
        ).items():
            pairs = match_pairs(image_dir, mask_dir)
            value_map = self._mask_values(mask_dir, [m for _, m in pairs])
            generators.append(
                datasets.SplitGenerator(
                    name=split,
                    gen_kwargs={
                        "images": [[str(f) for f in i] for i, _ in pairs],
                        "masks": [[str(m)] for _, m in pairs],
                        "mask_values": [sorted((value_map or {}).items())] * len(pairs),
                        "names": [[] for _ in pairs],
                    },
                )
            )
        return generators

    def _read_label(
        self, image: Any, mask_paths: list[Path], value_map: dict[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(label, valid)`` of one sample from its mask file(s), checked against the image size."""
        masks = [read_sar(path, max_bands=None) for path in mask_paths]
        for path, mask in zip(mask_paths, masks):
            if mask.array.shape[1:] != image.array.shape[1:]:
                raise PairingError(
                    f"{image.path.name} is {image.height}x{image.width} but {path.name} is {mask.height}x{mask.width}"
                )
        valid = np.logical_and.reduce([mask.valid_mask for mask in masks])
        if self.config.layout is not None:
            return _flood().flood_label([m.array for m in masks], self.config.layout, mask_paths), valid
        task, mask = self.config.segmentation_task, masks[0]
        return mask_to_label(mask.array, task, mask.nodata, mask_paths[0], value_map), valid

    def _generate_examples(
        self,
        images: list[list[str]],
        masks: list[list[str]],
        mask_values: list[list[tuple[int, int]]],
        names: list[list[str]],
    ) -> Iterator[tuple[Key, dict[str, Any]]]:
        root = Path(self.config.data_dir)
        task = self.config.segmentation_task
        nodata = self.config.nodata
        if nodata is None and self.config.layout is not None:
            nodata = _flood().flood_layout(self.config.layout).nodata
        for index, (image_names, mask_names, value_map) in enumerate(zip(images, masks, mask_values)):
            image_paths, mask_paths = [Path(n) for n in image_names], [Path(n) for n in mask_names]
            try:
                image = read_sample(image_paths, bands=self.config.bands, max_bands=None, nodata=nodata)
                label, mask_valid = self._read_label(image, mask_paths, dict(value_map))
            except SARFileError as error:
                if self.config.strict:
                    raise
                self._skip(relative_path(image_paths[0], root), error)
                continue
            label[~image.valid_mask | ~mask_valid] = task.ignore_index
            present = np.unique(label[label != task.ignore_index]).tolist()
            pols = file_polarisations(image_paths)
            channel_names = names[index] if names[index] and image.num_bands == len(names[index]) else None
            yield (
                Key(index, 0),
                {
                    "image": encode_array(image.array),
                    "valid_mask": encode_array(image.valid_mask),
                    "label": encode_array(label),
                    "crs": crs_wkt(image.crs),
                    "transform": transform_list(image.transform),
                    "path": relative_path(image_paths[0], root),
                    "mask_path": relative_path(mask_paths[0], root),
                    "band_names": channel_names or band_names(image.num_bands, image.band_names, pols),
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
    mask_values: Mapping[int, int] | None = None,
    layout: str | None = None,
    nodata: float | None = None,
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
        bands: 1-based image bands to keep (``None``: all).
        mask_values: Raw mask value -> class id, e.g. ``{0: 0, 255: 1}`` (see the module docstring;
            ``None`` detects 0/255 binary masks, ``{}`` reads raw values).
        layout: Read a flood set as it comes (``"etci"``, ``"etci-classes"``, ``"ombria-after"``,
            ``"ombria-pair"``; :mod:`di3cl_hf.data.flood`); its classes unless ``class_names``.
        nodata: Image value meaning no data, e.g. 255 for 8-bit PNG tiles (``None``: the files' own,
            or the layout's).

    Returns:
        ``DatasetDict`` with the splits found (``train`` and, when present, ``validation``/``test``).
        A class that no labelled pixel of ``train`` has is warned about (:func:`check_class_coverage`).

    Raises:
        PairingError: Unmatched or mis-sized image/mask pairs (all listed).
        PolarisationError: A per-polarisation sample lacks a polarisation (named).
    """
    if layout is not None:
        _flood().flood_layout(layout)  # unknown names fail here, with the list
    builder = SARSegmentation(
        data_dir=str(data_dir),
        task=task,
        class_names=tuple(class_names) if class_names is not None else None,
        ignore_index=ignore_index,
        strict=strict,
        bands=tuple(bands) if bands is not None else None,
        mask_values=dict(mask_values) if mask_values is not None else None,
        layout=layout,
        nodata=None if nodata is None else float(nodata),
        cache_dir=str(cache_dir) if cache_dir is not None else None,
    )
    builder.download_and_prepare()
    dataset = builder.as_dataset()
    if "train" in dataset:
        check_class_coverage(dataset["train"], where=f"{data_dir}: train split")
    return with_decoding(dataset, image_dtype) if decode else dataset


def check_class_coverage(dataset: datasets.Dataset, where: str = "dataset") -> list[str]:
    """Warn about (and return) the classes that no labelled pixel of ``dataset`` has.

    A model cannot learn such a class, and its scores are meaningless: usually the masks use another
    value convention (0/255, 1/2, ...) or the split is too small.
    """
    names = class_names(dataset)
    present = {c for row in dataset.with_format(None)["classes_present"] for c in row}
    absent = [name for i, name in enumerate(names) if i not in present]
    if absent:
        warnings.warn(
            f"{where}: class(es) {', '.join(repr(a) for a in absent)} absent from every labelled pixel "
            f"({len(dataset)} sample(s)); a model cannot learn them. Check the mask values "
            f"(0..{len(names) - 1}; mask_values={{raw: class}} maps other conventions).",
            UserWarning,
            stacklevel=2,
        )
    return absent


def class_names(dataset: datasets.Dataset | datasets.IterableDataset) -> list[str]:
    """Class names of a segmentation dataset (from its ``classes_present`` ClassLabel)."""
    feature = dataset.features["classes_present"]
    return list(feature.feature.names)


# -- splits and label fractions ------------------------------------------------------------------------
PAPER_LABEL_FRACTIONS = (0.01, 0.05, 0.1, 1.0)
"""Fractions of labelled training samples used in the paper's fine-tuning experiments."""


def label_fraction_subset(
    dataset: datasets.Dataset,
    fraction: float,
    seed: int = 0,
    positive_classes: Sequence[int] | None = None,
) -> datasets.Dataset:
    """A reproducible random subset with ``fraction`` of the samples (at least one).

    The same seed draws one permutation for every fraction; a subset is the first
    ``max(1, round(fraction * len))`` samples of it, so the subsets are nested
    (1 % ⊂ 5 % ⊂ 10 % ⊂ 100 %) and rows keep their original order.

    **Positive guarantee** (``positive_classes``, e.g. ``[1]`` for water): a small draw can miss every
    foreground sample (5 of 464 ETCI tiles may hold no water, and then IoU is 0). When none of the drawn
    samples has a labelled pixel of ``positive_classes`` (column ``classes_present``), the last drawn
    sample is replaced by the first sample later in the same permutation that has one. A draw that holds
    one is unchanged, and the subsets stay nested. When no sample of ``dataset`` has one, the plain draw
    is returned with a warning.

    Args:
        dataset: Usually a ``train`` split (needs ``classes_present`` for ``positive_classes``).
        fraction: In ``(0, 1]``, e.g. one of :data:`PAPER_LABEL_FRACTIONS`.
        seed: Seed of the permutation.
        positive_classes: Class ids of which the subset must hold at least one labelled pixel.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    total = len(dataset)
    if total == 0:
        raise ValueError("cannot take a label fraction of an empty dataset")
    count = max(1, int(math.floor(fraction * total + 0.5)))
    order = np.random.default_rng(seed).permutation(total)
    chosen = order[:count].copy()
    if positive_classes and count < total:
        wanted = {int(c) for c in positive_classes}
        present = dataset.with_format(None)["classes_present"]
        positive = [i for i in order.tolist() if wanted & set(present[i])]
        if not positive:
            warnings.warn(
                f"label_fraction_subset: no sample holds class(es) {sorted(wanted)}; the subset cannot hold one",
                UserWarning,
                stacklevel=2,
            )
        elif not set(positive) & set(chosen.tolist()):
            chosen[-1] = positive[0]
    return dataset.select(np.sort(chosen).tolist())


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


__all__ = [
    "IMAGE_DIR_NAMES",
    "MASK_DIR_NAMES",
    "PAPER_LABEL_FRACTIONS",
    "PairingError",
    "SARSegmentation",
    "SARSegmentationConfig",
    "check_class_coverage",
    "class_names",
    "detect_mask_values",
    "find_segmentation_splits",
    "label_fraction_subset",
    "load_segmentation",
    "mask_to_label",
    "match_pairs",
    "train_validation_split",
]
