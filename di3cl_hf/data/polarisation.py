"""One sample from one file per polarisation, as Sentinel-1 (and most SAR) products come.

**Naming rule.** Files in the same folder whose names differ only by a polarisation suffix,
``{id}_vv.tif`` and ``{id}_vh.tif`` (also ``_hh``, ``_hv``; case-insensitive; the same extension),
are one sample ``{id}`` whose bands are stacked in the order VV, VH, HH, HV (so VV, VH for
Sentinel-1 dual-pol and HH, HV for HH-led dual-pol); the band names are the polarisations. Files
without such a suffix are samples on their own (a stacked VV+VH file stays one sample). Every sample
of a folder must have the same polarisations: a sample lacking one is an error
(:class:`PolarisationError`) that names it, rather than a silently single-pol sample.

Example:
    >>> samples = group_polarisations(list_sar_files("water/images"))  # doctest: +SKIP
    >>> samples[0].key, samples[0].polarisations  # doctest: +SKIP
    ('awc00', ('VV', 'VH'))
    >>> raster = read_sample(samples[0].files)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .sario import SARFileError, SARRaster, WindowLike, read_sar

POLARISATION_ORDER = ("VV", "VH", "HH", "HV")
"""Band order of a per-polarisation file group."""

_SUFFIX = re.compile(r"^(?P<key>.+)[_](?P<pol>vv|vh|hh|hv)$", re.IGNORECASE)


class PolarisationError(ValueError):
    """Per-polarisation files that do not make complete samples (a polarisation missing or doubled)."""


@dataclass(frozen=True)
class SampleFiles:
    """The file(s) of one sample.

    Attributes:
        key: Sample id: the file stem without its polarisation suffix (the stem for single files).
        files: One file, or one per polarisation in :data:`POLARISATION_ORDER`.
        polarisations: The polarisations of ``files`` (``None`` for a file without a suffix).
    """

    key: str
    files: tuple[Path, ...]
    polarisations: tuple[str, ...] | None = None


def polarisation_of(path: str | os.PathLike[str]) -> tuple[str, str] | None:
    """``(sample id, "VV"|"VH"|"HH"|"HV")`` for a file named ``{id}_{pol}.ext``, else ``None``."""
    match = _SUFFIX.match(Path(path).stem)
    return (match["key"], match["pol"].upper()) if match else None


def file_polarisations(files: Sequence[str | os.PathLike[str]]) -> tuple[str, ...] | None:
    """The polarisations named by ``files``' suffixes, or ``None`` when one has no suffix."""
    found = [polarisation_of(f) for f in files]
    return None if any(f is None for f in found) else tuple(f[1] for f in found)  # type: ignore[index]


def group_polarisations(files: Sequence[str | os.PathLike[str]]) -> list[SampleFiles]:
    """Group per-polarisation files into samples (see the module docstring for the rule).

    Returns:
        Samples sorted by their first file.

    Raises:
        PolarisationError: A sample of a folder lacks a polarisation its neighbours have, or has one
            twice; every such sample is listed.
    """
    singles: list[SampleFiles] = []
    groups: dict[tuple[Path, str, str], dict[str, Path]] = defaultdict(dict)
    problems: list[str] = []
    for name in files:
        path = Path(name)
        found = polarisation_of(path)
        if found is None:
            singles.append(SampleFiles(path.stem, (path,)))
            continue
        key, pol = found
        group = groups[(path.parent, key, path.suffix.lower())]
        if pol in group:
            problems.append(
                f"sample {key!r} in {path.parent} has {pol} twice: {group[pol].name}, {path.name}"
            )
        group[pol] = path
    expected: dict[Path, set[str]] = defaultdict(set)
    for (folder, _, _), group in groups.items():
        expected[folder] |= set(group)
    samples = list(singles)
    for (folder, key, _), group in groups.items():
        missing = [p for p in POLARISATION_ORDER if p in expected[folder] and p not in group]
        if missing:
            have = ", ".join(f"{p} ({group[p].name})" for p in POLARISATION_ORDER if p in group)
            problems.append(
                f"sample {key!r} in {folder} lacks {', '.join(missing)} (has {have}); "
                f"other samples there have {', '.join(p for p in POLARISATION_ORDER if p in expected[folder])}"
            )
            continue
        pols = tuple(p for p in POLARISATION_ORDER if p in group)
        samples.append(SampleFiles(key, tuple(group[p] for p in pols), pols))
    if problems:
        raise PolarisationError(
            "per-polarisation files ({id}_vv/_vh/_hh/_hv) do not make complete samples: "
            + " | ".join(problems)
        )
    return sorted(samples, key=lambda s: s.files[0])


def read_sample(
    files: Sequence[str | os.PathLike[str]],
    window: WindowLike | None = None,
    bands: Sequence[int] | None = None,
    boundless: bool = False,
    max_bands: int | None = None,
    nodata: float | None = None,
) -> SARRaster:
    """Read one sample: a single file, or one single-band file per polarisation stacked as bands.

    Args:
        files: The sample's files (:attr:`SampleFiles.files`).
        window: See :func:`~di3cl_hf.data.sario.read_sar`.
        bands: 1-based bands of the stacked sample.
        boundless: See :func:`~di3cl_hf.data.sario.read_sar`.
        max_bands: Most bands (``None``: any, lossless).
        nodata: A declared no-data value, for files that cannot say it themselves (8-bit PNG tiles where
            255 means no data, as ETCI's): a pixel equal to it in any (kept) band is invalid, on top of
            the files' own nodata / NaN / alpha mask, and the raster's ``nodata`` becomes this value.

    Raises:
        SARFileError: A file that cannot be read, a polarisation file with more than one band, or
            files not on the same grid (size, CRS, transform); the message names the first file.
    """
    paths = [Path(f) for f in files]
    if len(paths) == 1:
        raster = read_sar(paths[0], window=window, bands=bands, boundless=boundless, max_bands=max_bands)
        return declare_nodata(raster, nodata)
    parts = [read_sar(p, window=window, boundless=boundless, max_bands=None) for p in paths]
    first = parts[0]
    for part in parts:
        if part.num_bands != 1:
            raise SARFileError(
                f"{part.path}: {part.num_bands} bands, expected one band per polarisation file"
            )
        if (
            part.array.shape != first.array.shape
            or part.crs != first.crs
            or part.transform != first.transform
        ):
            raise SARFileError(
                f"{first.path}: not on the grid of {part.path.name} (size {first.height}x{first.width} vs "
                f"{part.height}x{part.width}, or a different CRS / transform); the files of one sample must align"
            )
    array = np.concatenate(
        [p.array.astype(np.result_type(*[q.array for q in parts]), copy=False) for p in parts]
    )
    names = tuple(pol for p in paths for pol in [(polarisation_of(p) or ("", None))[1]])
    same_nodata = all(p.nodata == first.nodata or np.isnan([p.nodata, first.nodata]).all() for p in parts)
    file_nodata = first.nodata if first.nodata is not None and same_nodata else None
    valid = np.logical_and.reduce([p.valid_mask for p in parts])
    if bands is not None:
        indexes = [int(b) for b in bands]
        bad = [b for b in indexes if not 1 <= b <= array.shape[0]]
        if bad or (max_bands is not None and len(indexes) > max_bands):
            raise SARFileError(f"{first.path}: bands {indexes} requested, the sample has {array.shape[0]}")
        array, names = array[[b - 1 for b in indexes]], tuple(names[b - 1] for b in indexes)
    elif max_bands is not None and array.shape[0] > max_bands:
        raise SARFileError(f"{first.path}: {array.shape[0]} polarisations, at most {max_bands}: choose bands")
    raster = SARRaster(array, valid, first.crs, first.transform, file_nodata, first.path, names)
    return declare_nodata(raster, nodata)


def declare_nodata(raster: SARRaster, nodata: float | None) -> SARRaster:
    """``raster`` with pixels equal to ``nodata`` in any band marked invalid (``None``: unchanged; NaN is
    invalid anyway)."""
    if nodata is None:
        return raster
    if not np.isnan(nodata):
        raster.valid_mask = raster.valid_mask & ~(raster.array == nodata).any(axis=0)
    raster.nodata = float(nodata)
    return raster


__all__ = [
    "POLARISATION_ORDER",
    "declare_nodata",
    "PolarisationError",
    "SampleFiles",
    "file_polarisations",
    "group_polarisations",
    "polarisation_of",
    "read_sample",
]
