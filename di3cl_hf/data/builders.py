"""What the SAR ``datasets`` builders share: cache fingerprints, shards, georeferencing columns, band
names, and the reporting of skipped (unreadable) files.

**Corrupt files** are skipped with a warning and counted (``builder.skipped_files``,
:func:`skipped_files`), or raise :class:`~di3cl_hf.data.sario.SARFileError` with ``strict=True``;
never silently. A split whose every file was skipped is an error naming the folder, the count and the
first reasons (:class:`AllFilesSkippedError`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
from datasets.exceptions import DatasetGenerationError

logger = logging.getLogger(__name__)


def transform_list(transform: Any) -> list[float] | None:
    return None if transform is None else [float(v) for v in tuple(transform)[:6]]


def crs_wkt(crs: Any) -> str | None:
    return None if crs is None else crs.to_wkt()


def nodata_value(value: float | None) -> float | None:
    return None if value is None else float(value)


def fingerprint(paths: Sequence[Path], *extra: Any) -> str:
    digest = hashlib.sha256()
    for path in paths:
        stat = path.stat()
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    digest.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


MAX_SHARDS = 1024
"""Files are grouped into at most this many shards (the unit ``num_proc`` and
``split_dataset_by_node`` distribute); small folders get one file per shard."""


def shard_files(items: Sequence[Any]) -> list[list[Any]]:
    """Group files (or per-polarisation file groups) into at most :data:`MAX_SHARDS` shards of names."""
    per_shard = max(1, math.ceil(len(items) / MAX_SHARDS))
    names = [str(f) if isinstance(f, (str, os.PathLike)) else [str(x) for x in f] for f in items]
    return [names[i : i + per_shard] for i in range(0, len(names), per_shard)]


def relative_path(path: Path, root: Path) -> str:
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


class ReportingBuilderMixin:
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
        empty = [name for name, split in self.info.splits.items() if split.num_examples == 0]  # type: ignore[attr-defined]
        if empty and self._skipped:
            raise AllFilesSkippedError(self.config.data_dir, empty, self._skipped)  # type: ignore[attr-defined]
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


class AllFilesSkippedError(ValueError):
    """Every file of a split was unreadable: nothing to build (instead of an empty dataset)."""

    def __init__(
        self, root: str | os.PathLike[str], splits: Sequence[str], skipped: list[dict[str, str]]
    ) -> None:
        reasons = "; ".join(f"{e['path']} ({e['reason']})" for e in skipped[:3])
        more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        super().__init__(
            f"{root}: every file of split(s) {', '.join(splits)} was skipped as unreadable "
            f"({len(skipped)} file(s) skipped): {reasons}{more}. Fix or remove them, or pass strict=True "
            "to stop at the first one."
        )
        self.skipped = skipped


def skipped_files(builder: datasets.DatasetBuilder) -> list[dict[str, str]]:
    """Files a prepared :class:`SARSense` / :class:`SARSegmentation` builder skipped as corrupt."""
    return list(getattr(builder, "skipped_files", []))


_NAME_SEPARATORS = re.compile(r"[+,;/ ]+")


def band_names(
    count: int,
    descriptions: Sequence[str | None] = (),
    polarisations: Sequence[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> list[str]:
    """Names of the ``count`` bands of a sample, first found of:

    1. the polarisations of a per-polarisation file group (``x_vv.tif`` + ``x_vh.tif`` -> VV, VH);
    2. the file's band descriptions (GeoTIFF), when every band has one;
    3. the metadata row: ``band_names`` or ``polarisation`` (``"HH,HV,VH,VV"``, ``"VV+VH"``) with
       ``count`` names;
    4. ``band_1`` ... ``band_N``.
    """
    if polarisations is not None and len(polarisations) == count:
        return list(polarisations)
    if len(descriptions) == count and all(descriptions):
        return [str(d) for d in descriptions]
    for key in ("band_names", "polarisation"):
        value = (metadata or {}).get(key)
        if value:
            names = [n for n in _NAME_SEPARATORS.split(str(value).strip()) if n]
            if len(names) == count:
                return names
    return [f"band_{i}" for i in range(1, count + 1)]


__all__ = [
    "MAX_SHARDS",
    "SKIPPED_FILES_NAME",
    "AllFilesSkippedError",
    "ReportingBuilderMixin",
    "band_names",
    "crs_wkt",
    "fingerprint",
    "nodata_value",
    "relative_path",
    "shard_files",
    "skipped_files",
    "transform_list",
]
