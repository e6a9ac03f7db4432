"""The real Sentinel-1 sample shipped in the repository (``samples/sentinel1``, see its README)."""

from __future__ import annotations

from pathlib import Path

SENTINEL1_SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "sentinel1"
"""``samples/sentinel1`` of a source checkout: ``scenes/`` (9 VH scenes) and ``water/`` (5 labelled chips)."""


def sentinel1_sample(part: str = "") -> Path:
    """Path of the embedded sample (``part``: ``"scenes"`` or ``"water"``; ``""`` for the folder).

    Raises:
        FileNotFoundError: Not a source checkout (the sample is not part of the installed package).
    """
    path = SENTINEL1_SAMPLE / part if part else SENTINEL1_SAMPLE
    if not path.is_dir():
        raise FileNotFoundError(
            f"{path}: the real Sentinel-1 sample is in the repository's samples/ folder, not in the installed "
            "package; run from a clone of the repository"
        )
    return path


__all__ = ["SENTINEL1_SAMPLE", "sentinel1_sample"]
