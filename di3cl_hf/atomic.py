"""Atomic writes: every file and folder the package produces appears complete or not at all.

A file is written under a temporary name beside its target (same folder, so the same file system)
and renamed over it with :func:`os.replace` only once complete; on any error the temporary file is
removed and the target is left as it was. Temporary files get the usual ``0o666 & ~umask`` mode
(``tempfile.mkstemp`` alone creates files only their owner can read). Folders (a converted model,
an exported encoder) are swapped whole by :func:`replace_directory`.

Example:
    >>> from di3cl_hf.atomic import atomic_path, write_json
    >>> write_json("out/scores.json", {"miou": 0.5})  # doctest: +SKIP
    >>> with atomic_path("out/features.npy") as temporary:  # doctest: +SKIP
    ...     np.save(temporary, features)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def temporary_path(path: str | os.PathLike[str], suffix: str = ".tmp") -> Path:
    """Create an empty temporary file beside ``path`` (hidden, unique, usual permissions) and return it.

    The caller replaces ``path`` with it when done and removes it on failure; :func:`atomic_path`
    does both.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(descriptor)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)
    return Path(name)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = ".tmp", durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; it replaces ``path`` when the block ends without an error.

    Args:
        path: The target file.
        suffix: Suffix of the temporary name (some writers pick the format from it, e.g. ``".png"``).
        durable: ``fsync`` the file before the rename, so that a crash of the machine cannot leave an
            empty file under the target name (for checkpoints and run state).
    """
    temporary = temporary_path(path, suffix)
    try:
        yield temporary
        if durable:
            descriptor = os.open(temporary, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text(path: str | os.PathLike[str], text: str, durable: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path, durable=durable) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike[str], data: Any, durable: bool = False, **dumps: Any) -> Path:
    """Write ``data`` as JSON (``indent=2`` unless given, a final newline) to ``path`` atomically;
    other keyword arguments go to :func:`json.dumps`."""
    return write_text(path, json.dumps(data, **{"indent": 2, **dumps}) + "\n", durable=durable)


def replace_directory(temporary: str | os.PathLike[str], final: str | os.PathLike[str]) -> Path:
    """Move a finished ``temporary`` folder onto ``final`` by renames only: an existing ``final`` is moved
    aside first and deleted after, so ``final`` is always either the old or the new complete folder."""
    temporary, final = Path(temporary), Path(final)
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(temporary, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(temporary, final)
    return final
