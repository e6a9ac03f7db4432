"""Real Sentinel-1 flood sets as they come: ETCI 2021 tiles and OMBRIA before/after triplets.

Both are read by the segmentation builder (:func:`di3cl_hf.data.load_segmentation` with ``layout=``, or
:func:`load_flood`) through :func:`~di3cl_hf.data.polarisation.read_sample`, without converting or moving
any file. The layouts (:data:`FLOOD_LAYOUTS`):

| layout | image channels | labels | splits |
|---|---|---|---|
| ``etci`` | VV, VH (255 = no data) | water = flood ∪ permanent water (0/1) | 5 x 5-tile blocks |
| ``etci-classes`` | VV, VH (255 = no data) | background / permanent_water / flood | 5 x 5-tile blocks |
| ``ombria-after`` | after VV | flooded (0/1) | ``train/``, ``test/`` |
| ``ombria-pair`` | before VV, after VV | flooded (0/1) | ``train/``, ``test/`` |

**ETCI 2021.** ``data_dir/images/{tile}_vv.png`` + ``{tile}_vh.png`` (one 8-bit band per polarisation,
grouped by the per-polarisation naming rule of :mod:`~di3cl_hf.data.polarisation`) and
``data_dir/labels/`` (or ``masks/``) ``{tile}_flood.png`` + ``{tile}_water_body.png``. Image value 255
is *no data*: a pixel that is 255 in either polarisation is invalid (``valid_mask`` False) and its label
is the ignore index (255), so losses and metrics skip it; ``nodata=`` overrides the value. With
``etci`` the two label files are merged into water (flood ∪ permanent water); with ``etci-classes``
they are classes 0 background, 1 permanent water (set in ``_water_body``, whether or not also in
``_flood``: the two overlap in the source) and 2 flood (set in ``_flood`` only). Tile names are
``{scene}_x-{column}_y-{row}``; neighbouring tiles touch, so a random split leaks. A folder without
split sub-folders is split by :func:`etci_block_split` (5 x 5-tile blocks of the grid:
``block = ((x - 1) // 5) * 7 + (y - 1) // 5``; ``test`` where ``block % 5 == 0``, ``validation``
where ``block % 5 == 1``, ``train`` otherwise; the 777 Bangladesh tiles of ``examples/evaluate_flood.py``
give 464 / 156 / 157);
``data_dir/{train,validation,test}/{images,labels}`` keeps its own splits.

**OMBRIA.** ``data_dir/{train,test}/BEFORE/S1_before_NNNN.png``, ``AFTER/S1_after_NNNN.png`` and
``MASK/S1_mask_NNNN.png`` (folder names case-insensitive; ``data_dir/{BEFORE,AFTER,MASK}`` is one
``train`` split). A sample's id is the file stem without its folder's role word (``before``,
``after``, ``mask``) and one adjacent underscore: ``S1_before_0001``, ``S1_after_0001`` and
``S1_mask_0001`` are sample ``S1_0001`` (identical names in the three folders work too).
``ombria-pair`` stacks before and after as two channels (band names ``before``, ``after``);
``ombria-after`` reads the after image alone (the ``BEFORE`` folder is not needed). Each image is
stretched to 0–255 on its own, so no value means no data.

**Masks.** Every label file of a layout is binary: values {0, 255} or {0, 1} (0/255 as the sets
come), any non-zero value set; another value is an error naming the file. ``mask_values`` does not
apply to layouts.

**Missing partners** are errors that count every case (naming up to five per kind): an ETCI tile with
``_vh`` but no ``_vv`` (or the reverse) raises :class:`~di3cl_hf.data.polarisation.PolarisationError`; a
tile without one of its two label files, a label without its image, an OMBRIA after image without its mask
or (``ombria-pair``) its before image raise :class:`~di3cl_hf.data.segmentation.PairingError`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .classes import WATER_CLASSES
from .polarisation import group_polarisations
from .sario import SARFileError, list_sar_files
from .segmentation import PairingError, load_segmentation  # segmentation imports this module lazily

ETCI_POSITION = re.compile(r"_x-(?P<x>\d+)_y-(?P<y>\d+)(?:_|$)")
"""Grid position in an ETCI tile name: ``..._x-{column}_y-{row}[_suffix]``."""

ETCI_BLOCK = 5
"""Side of an ETCI split block, in tiles."""

ETCI_LABEL_PARTS = ("flood", "water_body")
"""Suffixes of an ETCI tile's two label files: ``{tile}_flood.png``, ``{tile}_water_body.png``."""

ETCI_CLASSES = ("background", "permanent_water", "flood")
"""Classes of the ``etci-classes`` layout."""

ETCI_NODATA = 255
"""ETCI image value meaning no data."""

OMBRIA_ROLES = ("before", "after", "mask")
"""OMBRIA folder names (case-insensitive), which are also the role words of its file names."""

_SPLITS = {"train": "train", "training": "train", "val": "validation", "valid": "validation"}
_SPLITS.update(validation="validation", test="test")
_LISTED = 5  # missing partners named per kind in an error


@dataclass(frozen=True)
class FloodLayout:
    """A flood set's layout (see the module docstring).

    Attributes:
        name: Layout name (a key of :data:`FLOOD_LAYOUTS`).
        task: Task name of the loaded set (``water`` or ``flood``).
        class_names: Label classes; value ``i`` is ``class_names[i]``.
        nodata: Image value meaning no data (``None``: none).
        channels: The image channels, in order.
    """

    name: str
    task: str
    class_names: tuple[str, ...]
    nodata: float | None
    channels: tuple[str, ...]


FLOOD_LAYOUTS: dict[str, FloodLayout] = {
    "etci": FloodLayout("etci", "water", WATER_CLASSES, ETCI_NODATA, ("VV", "VH")),
    "etci-classes": FloodLayout("etci-classes", "flood", ETCI_CLASSES, ETCI_NODATA, ("VV", "VH")),
    "ombria-after": FloodLayout("ombria-after", "water", WATER_CLASSES, None, ("after",)),
    "ombria-pair": FloodLayout("ombria-pair", "water", WATER_CLASSES, None, ("before", "after")),
}
"""The flood layouts the segmentation builder reads (``layout=`` of :func:`load_segmentation`)."""


@dataclass(frozen=True)
class FloodSample:
    """The files of one flood sample.

    Attributes:
        key: Sample id (ETCI tile name; OMBRIA name without its role word).
        images: Image files, one per channel, in the layout's channel order.
        masks: Label files (ETCI: ``_flood`` then ``_water_body``; OMBRIA: the mask).
        band_names: Names of the image channels.
    """

    key: str
    images: tuple[Path, ...]
    masks: tuple[Path, ...]
    band_names: tuple[str, ...]


def flood_layout(name: str) -> FloodLayout:
    """The :class:`FloodLayout` called ``name``; a ``ValueError`` listing the layouts otherwise."""
    if name not in FLOOD_LAYOUTS:
        raise ValueError(f"unknown flood layout {name!r}: expected one of {', '.join(FLOOD_LAYOUTS)}")
    return FLOOD_LAYOUTS[name]


# -- ETCI ------------------------------------------------------------------------------------------------
def etci_tile_position(name: str | os.PathLike[str]) -> tuple[int, int]:
    """``(column x, row y)`` of an ETCI tile from its file name or stem (1-based, as in the names).

    Raises:
        ValueError: The name carries no ``_x-{column}_y-{row}`` position.
    """
    stem = Path(name).stem
    match = ETCI_POSITION.search(stem)
    if match is None:
        raise ValueError(f"{name}: not an ETCI tile name (expected '..._x-<column>_y-<row>...')")
    return int(match["x"]), int(match["y"])


def etci_block(name: str | os.PathLike[str]) -> int:
    """The 5 x 5-tile block index of an ETCI tile: ``((x - 1) // 5) * 7 + (y - 1) // 5``."""
    x, y = etci_tile_position(name)
    return ((x - 1) // ETCI_BLOCK) * 7 + (y - 1) // ETCI_BLOCK


def etci_block_split(name: str | os.PathLike[str]) -> str:
    """``"test"`` (block % 5 == 0), ``"validation"`` (block % 5 == 1) or ``"train"`` for an ETCI tile name."""
    block = etci_block(name) % 5
    return "test" if block == 0 else "validation" if block == 1 else "train"


def _child(folder: Path, names: Sequence[str]) -> Path | None:
    """The first sub-folder of ``folder`` whose name is one of ``names`` (case-insensitive)."""
    if not folder.is_dir():
        return None
    children = {p.name.lower(): p for p in sorted(folder.iterdir()) if p.is_dir()}
    return next((children[n] for n in names if n in children), None)


def _split_folders(root: Path, needed: Sequence[Sequence[str]], what: str) -> dict[str, Path]:
    """``{split: folder}``: ``root`` itself (one ``train`` split) when it holds the ``needed`` folders, else
    its train/val(idation)/test sub-folders that do."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory")
    if all(_child(root, names) for names in needed):
        return {"train": root}
    found = {}
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        split = _SPLITS.get(child.name.lower())
        if split and all(_child(child, names) for names in needed):
            found[split] = child
    if not found:
        raise FileNotFoundError(
            f"{root}: no {what} folders; expected {root}/<{'|'.join(n[0] for n in needed)}>"
        )
    return found


def _problems(kind: str, keys: Sequence[str], detail: str) -> list[str]:
    if not keys:
        return []
    shown = ", ".join(keys[:_LISTED]) + (f" and {len(keys) - _LISTED} more" if len(keys) > _LISTED else "")
    return [f"{len(keys)} {kind} {detail}: {shown}"]


def _etci_split(image_dir: Path, label_dir: Path) -> list[FloodSample]:
    """The tiles of one ETCI image/label folder pair, partners checked."""
    images = {}
    for sample in group_polarisations(list_sar_files(image_dir)):
        if sample.polarisations != ("VV", "VH"):
            raise PairingError(
                f"{sample.files[0]}: ETCI images must be {{tile}}_vv.png + {{tile}}_vh.png; rename or remove it"
            )
        images[sample.key] = sample.files
    labels: dict[str, dict[str, Path]] = {}
    strays = []
    for path in list_sar_files(label_dir):
        part = next((p for p in ETCI_LABEL_PARTS if path.stem.endswith(f"_{p}")), None)
        if part is None:
            strays.append(path.name)
            continue
        labels.setdefault(path.stem[: -len(part) - 1], {})[part] = path
    problems = _problems("label file(s)", strays, f"in {label_dir} are neither _flood nor _water_body")
    for part in ETCI_LABEL_PARTS:
        lacking = sorted(k for k in images if part not in labels.get(k, {}))
        problems += _problems("tile(s)", lacking, f"in {image_dir} without labels/{{tile}}_{part}.png")
    problems += _problems("label(s)", sorted(set(labels) - set(images)), f"in {label_dir} without images")
    if problems:
        raise PairingError(f"ETCI tiles do not pair up with their two label files: {' | '.join(problems)}")
    if not images:
        raise PairingError(f"{image_dir}: no ETCI tiles ({{tile}}_vv.png + {{tile}}_vh.png)")
    return [
        FloodSample(key, images[key], tuple(labels[key][p] for p in ETCI_LABEL_PARTS), ("VV", "VH"))
        for key in sorted(images)
    ]


def _etci_samples(root: Path) -> dict[str, list[FloodSample]]:
    folders = _split_folders(root, (("images",), ("labels", "masks")), "ETCI images/ + labels/")

    def tiles(folder: Path) -> list[FloodSample]:
        images, labels = _child(folder, ("images",)), _child(folder, ("labels", "masks"))
        assert images is not None and labels is not None  # _split_folders checked them
        return _etci_split(images, labels)

    if list(folders) != ["train"] or folders["train"] != root:
        return {split: tiles(folder) for split, folder in folders.items()}
    splits: dict[str, list[FloodSample]] = {"train": [], "validation": [], "test": []}
    for sample in tiles(root):
        splits[etci_block_split(sample.key)].append(sample)
    return {name: split for name, split in splits.items() if split}


# -- OMBRIA ----------------------------------------------------------------------------------------------
def ombria_key(name: str | os.PathLike[str], role: str) -> str:
    """Sample id of an OMBRIA file: its stem without the role word and one adjacent underscore
    (``S1_before_0001`` -> ``S1_0001``); the stem itself when it has no role word."""
    stem = Path(name).stem
    match = re.search(rf"(?:^|_){role}(?=_|$)", stem, flags=re.IGNORECASE)
    if match is None:
        return stem
    key = stem[: match.start()] + stem[match.end() :]
    return key[1:] if match.start() == 0 and key.startswith("_") else key


def _ombria_split(folder: Path, pair: bool) -> list[FloodSample]:
    roles = ("before", "after", "mask") if pair else ("after", "mask")
    files: dict[str, dict[str, Path]] = {}
    for role in roles:
        role_dir = _child(folder, (role,))
        if role_dir is None:
            raise FileNotFoundError(f"{folder}: no {role.upper()}/ folder (OMBRIA: BEFORE/, AFTER/, MASK/)")
        for path in list_sar_files(role_dir):
            files.setdefault(role, {})[ombria_key(path, role)] = path
    after, problems = files.get("after", {}), []
    for role in roles:
        if role != "after":
            lacking = sorted(set(after) - set(files.get(role, {})))
            problems += _problems("after image(s)", lacking, f"in {folder} without a {role.upper()}/ partner")
            extra = sorted(set(files.get(role, {})) - set(after))
            problems += _problems(f"{role} file(s)", extra, f"in {folder} without an AFTER/ image")
    if problems:
        raise PairingError(f"OMBRIA files do not pair up: {' | '.join(problems)}")
    if not after:
        raise PairingError(f"{folder}: no OMBRIA samples in AFTER/")
    channels = ("before", "after") if pair else ("after",)
    return [
        FloodSample(key, tuple(files[c][key] for c in channels), (files["mask"][key],), channels)
        for key in sorted(after)
    ]


def _ombria_samples(root: Path, pair: bool) -> dict[str, list[FloodSample]]:
    needed = (("before",), ("after",), ("mask",)) if pair else (("after",), ("mask",))
    folders = _split_folders(root, needed, "OMBRIA BEFORE/ AFTER/ MASK/")
    return {split: _ombria_split(folder, pair) for split, folder in folders.items()}


# -- what the builder uses -------------------------------------------------------------------------------
def find_flood_samples(data_dir: str | os.PathLike[str], layout: str) -> dict[str, list[FloodSample]]:
    """``{split: [FloodSample]}`` of a flood set in ``layout`` (see the module docstring).

    Raises:
        FileNotFoundError: ``data_dir`` lacks the layout's folders.
        PolarisationError: An ETCI tile lacks a polarisation.
        PairingError: Missing partners (all listed, up to five named per kind).
    """
    root = Path(data_dir)
    name = flood_layout(layout).name
    if name.startswith("etci"):
        return _etci_samples(root)
    return _ombria_samples(root, pair=name == "ombria-pair")


def flood_label(masks: Sequence[np.ndarray], layout: str, paths: Sequence[Path | str] = ()) -> np.ndarray:
    """Label ``[H, W]`` uint8 of one sample from its mask arrays (``[1, H, W]`` or ``[H, W]`` each).

    Each mask is binary (0/255 or 0/1, non-zero set). ``etci``: water = flood ∪ permanent water;
    ``etci-classes``: 1 where ``_water_body`` is set, 2 where only ``_flood`` is, else 0; OMBRIA: 1 where
    the mask is set.

    Raises:
        SARFileError: A mask with another value, naming its file.
    """
    kind = flood_layout(layout).name
    binary = []
    for index, mask in enumerate(masks):
        mask = np.asarray(mask)
        mask = mask[0] if mask.ndim == 3 else mask
        values = set(np.unique(mask).tolist())
        if not (values <= {0, 255} or values <= {0, 1}):
            where = paths[index] if index < len(paths) else f"mask {index}"
            shown = ", ".join(str(v) for v in sorted(values)[:6])
            raise SARFileError(
                f"{where}: mask values {shown}; layout {kind!r} expects binary 0/255 (or 0/1) masks"
            )
        binary.append(mask != 0)
    if kind == "etci":
        return (binary[0] | binary[1]).astype(np.uint8)
    if kind == "etci-classes":
        return np.where(binary[1], 1, np.where(binary[0], 2, 0)).astype(np.uint8)
    return binary[0].astype(np.uint8)


def load_flood(data_dir: str | os.PathLike[str], layout: str = "etci", **kwargs: Any) -> Any:
    """Load a flood set as a ``DatasetDict``: :func:`~di3cl_hf.data.segmentation.load_segmentation` with
    ``layout`` and its task (keyword arguments passed on, e.g. ``cache_dir``, ``decode``, ``nodata``).

    Example:
        >>> etci = load_flood("s1-flood-etci", "etci")  # doctest: +SKIP
        >>> {name: len(split) for name, split in etci.items()}  # doctest: +SKIP
        {'train': 464, 'validation': 156, 'test': 157}
    """
    return load_segmentation(data_dir, task=flood_layout(layout).task, layout=layout, **kwargs)


__all__ = [
    "ETCI_BLOCK",
    "ETCI_CLASSES",
    "ETCI_LABEL_PARTS",
    "ETCI_NODATA",
    "FLOOD_LAYOUTS",
    "FloodLayout",
    "FloodSample",
    "etci_block",
    "etci_block_split",
    "etci_tile_position",
    "find_flood_samples",
    "flood_label",
    "flood_layout",
    "load_flood",
    "ombria_key",
]
