"""Output paths of scene inference and embeddings, checked before anything is computed.

An output is refused when it is the same file as an input (compared by resolved path and by
:func:`os.path.samefile`, so symlinks and hard links count), when it exists and ``overwrite`` is not
set, when it is a directory, or when its folder is missing or not writable. Every refusal is an
:class:`OutputPathError` (a ``ValueError``, so ``di3cl`` prints it as one line), raised before a model
runs: a bad output must not cost a whole scene's computation.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Iterable
from pathlib import Path

# A hidden temporary of an output untouched this long is a leftover of a killed run (a live writer touches
# its file every few seconds); the next run of that output removes it.
STALE_TEMPORARY_SECONDS = 15 * 60


class OutputPathError(ValueError):
    """An output path that cannot be written (directory, missing or read-only folder, an input)."""


class OutputExistsError(OutputPathError, FileExistsError):
    """The output exists and overwriting was not asked for."""


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether ``a`` and ``b`` name one file: equal resolved paths, or one inode (hard links, symlinks)."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): then they are not one file
        return False


def check_output_path(
    output: str | os.PathLike[str],
    inputs: Iterable[str | os.PathLike[str]] = (),
    *,
    overwrite: bool = False,
    flag: str = "overwrite=True",
) -> Path:
    """Refuse an output that would destroy an input, replace a file unasked, or fail only at the end.

    Args:
        output: The file to write.
        inputs: Files read by the same run; the output must be none of them (even with ``overwrite``).
        overwrite: Allow replacing an existing output.
        flag: How the caller spells "overwrite" in the message (``--overwrite`` on the command line).

    Returns:
        ``output`` as a ``Path``.

    Raises:
        OutputPathError: The output is an input, a directory, or its folder is missing / not writable.
        OutputExistsError: The output exists and ``overwrite`` is false.
    """
    output = Path(output)
    for source in inputs:
        if same_file(output, source):
            raise OutputPathError(
                f"{output}: the output is the input file {source} (same file); writing it would destroy "
                "the input. Choose another output name"
            )
    if output.is_dir():
        raise OutputPathError(f"{output}: is a directory; give the output a file name inside it")
    if output.exists() or output.is_symlink():
        if not overwrite:
            raise OutputExistsError(f"{output}: exists; pass {flag} to replace it")
    folder = output.parent
    if not folder.is_dir():
        raise OutputPathError(f"{output}: the folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(f"{output}: the folder {folder} is not writable")
    return output


def remove_stale_temporaries(
    output: str | os.PathLike[str], older_than: float = STALE_TEMPORARY_SECONDS
) -> list[Path]:
    """Remove the hidden temporaries ``.{name}.*.tmp.tif`` of ``output`` left by a killed run (SIGKILL, power
    loss: Ctrl-C and SIGTERM clean up themselves) and not modified for ``older_than`` seconds; returns them."""
    output = Path(output)
    removed = []
    for leftover in output.parent.glob(f".{glob.escape(output.name)}.*.tmp.tif"):
        try:
            if time.time() - leftover.stat().st_mtime >= older_than:
                leftover.unlink()
                removed.append(leftover)
        except OSError:
            continue
    return removed


__all__ = [
    "STALE_TEMPORARY_SECONDS",
    "OutputExistsError",
    "OutputPathError",
    "check_output_path",
    "remove_stale_temporaries",
    "same_file",
]
