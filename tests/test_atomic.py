"""Atomic writes (di3cl_hf.atomic): a target is either the old or the new complete file, never a part."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from di3cl_hf.atomic import atomic_path, replace_directory, write_json, write_text


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "scores.json"
    write_json(target, {"miou": 0.5})
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text('{"miou": ')  # half written, then the writer crashes
        raise RuntimeError("crash")
    assert json.loads(target.read_text()) == {"miou": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.json"]


def test_written_files_get_the_usual_mode_and_content(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        target = write_text(tmp_path / "deep" / "card.md", "# card\n", durable=True)
    finally:
        os.umask(umask)
    assert target.read_text() == "# card\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # not mkstemp's owner-only 0o600
    assert (
        write_json(tmp_path / "a.json", {"b": 1, "a": 2}, sort_keys=True).read_text()
        == '{\n  "a": 2,\n  "b": 1\n}\n'
    )


def test_replace_directory_swaps_whole_folders_and_leaves_nothing_behind(tmp_path: Path) -> None:
    final, new = tmp_path / "model", tmp_path / ".model.tmp"
    final.mkdir()
    (final / "old.txt").write_text("old")
    new.mkdir()
    (new / "new.txt").write_text("new")
    assert replace_directory(new, final) == final
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
