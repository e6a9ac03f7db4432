"""The documentation site builds without a warning, and no committed file points outside the repository.

1. ``mkdocs build --strict`` (``mkdocs.yml``: every page in ``nav``, links and anchors validated, API pages
   from the docstrings) into a temporary folder; skipped with a reason when the docs packages of the ``dev``
   extra are not installed.
2. The files ``git ls-files`` lists (read from the working tree) name no file outside the repository: no design
   note of the development machines, no ``..``/shared folder, no absolute machine path such as a home, root,
   workspace or temporary folder. URLs and relative paths (``runs/tmp/...``) are not machine paths.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Written so that this file does not match itself.
OUTSIDE_REFERENCES = {
    "the design notes kept outside the repository": re.compile(re.escape("METHOD" + ".md")),
    "a folder beside the repository": re.compile(
        re.escape(".." + "/shared") + "|" + re.escape(".." + "\\shared")
    ),
    # An absolute path into a machine's home, root, workspace, temporary or mount folders. The lookbehind leaves
    # out URLs (``https://host/home/...``), relative paths (``runs/tmp/x``) and ``~/`` or ``$VAR/`` prefixes.
    "an absolute machine path": re.compile(r"(?<![\w.~$/\\-])/(?:work|root|home|tmp|Users|mnt|scratch)/"),
}

# Lines that mention such a path on purpose: (file, text of the line).
ALLOWED = {
    ("tests/test_space.py", '"/' + 'tmp/" not in text'),  # asserts that the Space never shows a server path
}


def _docs_packages_missing() -> str | None:
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -c constraints.txt -e '.[dev]')"
    return None


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    missing = _docs_packages_missing()
    if missing:
        pytest.skip(missing)
    site = tmp_path / "site"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(site),
        ],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    warnings = [
        line for line in output.splitlines() if re.match(r"\s*(\x1b\[[0-9;]*m)*\s*(WARNING|ERROR)\b", line)
    ]
    assert result.returncode == 0 and not warnings, f"mkdocs build --strict failed:\n{output[-6000:]}"
    for page in ("index.html", "method.html", "api/models.html"):
        assert (site / page).is_file(), f"{page} missing from the built site"


def _tracked_files() -> list[str]:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    result = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"not a git checkout: {result.stderr.decode(errors='replace').strip()}")
    return [name for name in result.stdout.decode().split("\0") if name]


def test_no_reference_outside_the_repository() -> None:
    found = []
    for name in _tracked_files():
        path = ROOT / name
        if not path.is_file():  # deleted in the working tree
            continue
        data = path.read_bytes()
        if b"\0" in data:  # binary (weights, images)
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            for what, pattern in OUTSIDE_REFERENCES.items():
                if pattern.search(line) and not any(name == f and allowed in line for f, allowed in ALLOWED):
                    found.append(f"{name}:{number}: {what}: {line.strip()[:160]}")
    assert not found, "committed files point outside the repository:\n" + "\n".join(found)
