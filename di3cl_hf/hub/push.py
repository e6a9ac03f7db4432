"""Pushing to the Hugging Face Hub: staging folders and uploading models, Parquet datasets and the Space.

Pushing goes through :class:`huggingface_hub.HfApi` (``create_repo`` + ``upload_folder``) from a
staging folder, as one commit (the client splits only very large uploads into parts).
``transformers``' ``push_to_hub`` is not used because it replaces ``README.md`` with its own template.
The model staging folder holds the weights, configs, our card (:mod:`di3cl_hf.hub.cards`) and — for
loading without this package (``trust_remote_code=True``) — the flat code files of the model and
processor with an ``auto_map``.

Example:
    >>> push_model("outputs/demo/models/water", "me/di3cl-water")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from huggingface_hub import DatasetCard, HfApi, ModelCard

from .. import modeling_di3cl
from ..atomic import write_json, write_text
from .cards import DEFAULT_LICENSE, build_dataset_card, build_model_card, read_json, read_model_config

_RELATIVE_IMPORT = re.compile(r"^\s*from\s+(\.+)([\w.]*)\s+import", flags=re.MULTILINE)
# The package root (di3cl_hf/): the remote-code files are its flat modules, never its subpackages.
PACKAGE_DIR = Path(__file__).resolve().parent.parent

# Files the remote-code path starts from; the modules they import with ``from .x import y`` follow.
REMOTE_CODE_ROOTS = ("configuration_di3cl.py", "modeling_di3cl.py", "image_processing_di3cl.py")
MODEL_AUTO_CLASSES = {
    "AutoConfig": "configuration_di3cl.DI3CLConfig",
    "AutoModel": "modeling_di3cl.DI3CLModel",
    "AutoBackbone": "modeling_di3cl.DI3CLBackbone",
    "AutoModelForSemanticSegmentation": "modeling_di3cl.DI3CLForSemanticSegmentation",
    "AutoModelForImageClassification": "modeling_di3cl.DI3CLForImageClassification",
}
PROCESSOR_AUTO_CLASSES = {"AutoImageProcessor": "image_processing_di3cl.DI3CLImageProcessor"}

# Left out of a pushed model folder: training state, logs and caches.
MODEL_IGNORE_PATTERNS = (
    "checkpoint*",
    "checkpoint*/**",
    "runs/**",
    "logs/**",
    "**/__pycache__/**",
    "*.pyc",
    "optimizer*",
    "scheduler*",
    "rng_state*",
    "*.ckpt",
    "*.pth.tar",
    ".git/**",
)
# `.gitignore` stays home: the Hub applies an uploaded one server-side and would drop bundled models.
SPACE_IGNORE_PATTERNS = (
    "**/__pycache__/**",
    "__pycache__/**",
    "*.pyc",
    "flagged/**",
    ".gradio/**",
    "examples/**",
    ".gitignore",
)


# ----------------------------------------------------------------------------------------------
# staging


def remote_code_files(package_dir: str | os.PathLike = PACKAGE_DIR) -> list[Path]:
    """The flat code files a repo needs for ``trust_remote_code``: the config, modeling and
    processor files and every module they import with ``from .x import y``, transitively.

    Only flat modules of ``package_dir`` qualify (a Hub repo's remote code is one flat folder):

    Raises:
        FileNotFoundError: a module imported by the remote-code files is missing.
        ValueError: a remote-code file imports from a subpackage or a parent package (``from .data.x``,
            ``from . import x``, ``from ..x``), which a flat repo folder cannot hold.
    """
    package_dir = Path(package_dir)
    pending = [name for name in REMOTE_CODE_ROOTS if (package_dir / name).is_file()]
    found: list[Path] = []
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        path = package_dir / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: imported by the remote-code files but missing")
        found.append(path)
        for dots, module in _RELATIVE_IMPORT.findall(path.read_text(encoding="utf-8")):
            if dots != "." or not re.fullmatch(r"\w+", module):
                raise ValueError(
                    f"{path}: 'from {dots}{module} import' is not a flat sibling module; the remote-code files "
                    "may import only each other (from .module import name)"
                )
            pending.append(f"{module}.py")
    return sorted(found)


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _copy_tree(source: Path, target: Path, ignore_patterns: Sequence[str]) -> None:
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source).as_posix()
        if path.is_dir() or any(fnmatch(relative, pattern) for pattern in ignore_patterns):
            continue
        _link_or_copy(path, target / relative)


def _available_auto_classes() -> dict[str, str]:
    return {
        key: value
        for key, value in MODEL_AUTO_CLASSES.items()
        if key == "AutoConfig" or hasattr(modeling_di3cl, value.split(".")[-1])
    }


def with_auto_map(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` (a ``config.json`` dict) with the remote-code ``auto_map`` filled in where missing."""
    return {**config, "auto_map": {**_available_auto_classes(), **(config.get("auto_map") or {})}}


def processor_with_auto_map(processor: dict[str, Any]) -> dict[str, Any]:
    """``processor`` (a ``preprocessor_config.json`` dict) with its remote-code ``auto_map`` filled in."""
    return {**processor, "auto_map": {**PROCESSOR_AUTO_CLASSES, **(processor.get("auto_map") or {})}}


def _is_shipped(model_dir: Path) -> bool:
    from .ship import is_shipped_folder  # ship imports this module

    return is_shipped_folder(model_dir)


def _stage_shipped(model_dir: Path, stage_dir: Path, include_code: bool, card_kwargs: dict[str, Any]) -> Path:
    """A folder written by :func:`di3cl_hf.hub.ship.ship_model`: every file as it is, its card included."""
    given = sorted(
        key
        for key, value in card_kwargs.items()
        if value not in (None, [], (), {})
        and key != "repo_id"
        and (key, value) != ("license", DEFAULT_LICENSE)
    )
    if given or not include_code:
        what = ", ".join(given + ([] if include_code else ["no code"]))
        raise ValueError(
            f"{model_dir}: a shipped folder (di3cl ship-model) is pushed unchanged, with its own card; {what} would "
            "change it. Rebuild it with di3cl ship-model, or pass card= explicitly."
        )
    _copy_tree(model_dir, stage_dir, MODEL_IGNORE_PATTERNS)
    return stage_dir


def stage_model(
    model_dir: str | os.PathLike,
    stage_dir: str | os.PathLike,
    *,
    card: ModelCard | str | None = None,
    include_code: bool = True,
    **card_kwargs: Any,
) -> Path:
    """Assemble what :func:`push_model` uploads, in ``stage_dir`` (a local "dry run").

    Weights and configs are hard-linked (or copied) from ``model_dir`` without training state
    (:data:`MODEL_IGNORE_PATTERNS`); ``README.md`` is our card; with ``include_code`` the remote-code
    files are added and ``auto_map`` is filled in ``config.json`` / ``preprocessor_config.json``
    where missing. A folder written by :func:`di3cl_hf.hub.ship.ship_model` (the package's shipped
    models) is staged unchanged, file for file, with its own card (unless ``card`` is given); card
    arguments that would change it are refused.

    Args:
        model_dir: a ``save_pretrained`` folder.
        stage_dir: an empty or new folder.
        card: a ready card (default: :func:`build_model_card` with ``card_kwargs``).
        include_code: add the code files for loading without this package.
        **card_kwargs: passed to :func:`build_model_card`.

    Returns:
        ``stage_dir``.
    """
    model_dir, stage_dir = Path(model_dir), Path(stage_dir)
    read_model_config(model_dir)  # fail early, naming the folder
    if stage_dir.exists() and any(stage_dir.iterdir()):
        raise ValueError(f"{stage_dir}: staging folder is not empty")
    if not any(model_dir.glob("*.safetensors")):
        raise FileNotFoundError(f"{model_dir}: no *.safetensors weights, expected save_pretrained output")
    if card is None and _is_shipped(model_dir):
        return _stage_shipped(model_dir, stage_dir, include_code, card_kwargs)
    _copy_tree(model_dir, stage_dir, MODEL_IGNORE_PATTERNS + ("README.md",))
    if include_code:
        for path in remote_code_files():
            shutil.copy2(path, stage_dir / path.name)
        config = read_json(stage_dir / "config.json")
        (stage_dir / "config.json").unlink()  # a hard link to the source: replace, never edit in place
        write_json(stage_dir / "config.json", with_auto_map(config))
        processor_path = stage_dir / "preprocessor_config.json"
        if processor_path.is_file():
            processor = read_json(processor_path)
            processor_path.unlink()
            write_json(processor_path, processor_with_auto_map(processor))
    if card is None:
        card = build_model_card(model_dir, has_code=include_code, **card_kwargs)
    write_text(stage_dir / "README.md", str(card))
    return stage_dir


# ----------------------------------------------------------------------------------------------
# pushing


def _upload(
    stage_dir: Path,
    repo_id: str,
    repo_type: str,
    *,
    token: str | None,
    private: bool | None,
    commit_message: str,
    revision: str | None = None,
    space_sdk: str | None = None,
    ignore_patterns: Sequence[str] = (),
) -> Any:
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True, space_sdk=space_sdk)
    return api.upload_folder(
        repo_id=repo_id,
        repo_type=repo_type,
        folder_path=stage_dir,
        commit_message=commit_message,
        revision=revision,
        ignore_patterns=list(ignore_patterns) or None,
    )


def push_model(
    model_dir: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str = "Upload DI3CL model",
    include_code: bool = True,
    card: ModelCard | str | None = None,
    **card_kwargs: Any,
) -> Any:
    """Push a saved model (weights, configs, processor, code files and our card) in one commit.

    Args:
        model_dir: a ``save_pretrained`` folder (model + processor).
        repo_id: ``"org/name"`` on the Hub (``HF_ENDPOINT`` selects the server).
        token: a write token (default: the logged-in one / ``HF_TOKEN``).
        private: create the repo private (ignored when it exists).
        revision: branch to commit to (default ``main``).
        commit_message: the commit title.
        include_code: add the remote-code files (loading without this package).
        card: a ready card; default :func:`build_model_card` with ``repo_id`` and ``card_kwargs``.
        **card_kwargs: e.g. ``evaluation=``, ``datasets=``, ``base_model=``, ``run_info=``.

    Returns:
        The ``CommitInfo`` of the upload.
    """
    with tempfile.TemporaryDirectory(prefix="di3cl-push-") as temp:
        stage = stage_model(
            model_dir,
            Path(temp) / "stage",
            card=card,
            include_code=include_code,
            repo_id=repo_id,
            **card_kwargs,
        )
        return _upload(
            stage,
            repo_id,
            "model",
            token=token,
            private=private,
            commit_message=commit_message,
            revision=revision,
        )


def push_dataset(
    data_dir: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str = "Upload SAR dataset (Parquet)",
    card: DatasetCard | str | None = None,
) -> Any:
    """Push a Parquet dataset folder (as :func:`di3cl_hf.data.export_parquet` writes it) with its card.

    The folder's own ``README.md`` is kept unless ``card`` is given; a folder without one gets
    :func:`build_dataset_card`.

    Returns:
        The ``CommitInfo`` of the upload.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: not a folder")
    with tempfile.TemporaryDirectory(prefix="di3cl-push-") as temp:
        stage = Path(temp) / "stage"
        _copy_tree(data_dir, stage, ("**/__pycache__/**", ".git/**", "*.lock", ".cache/**", "**/.*.tmp"))
        if card is not None or not (stage / "README.md").is_file():
            text = str(card) if card is not None else build_dataset_card(data_dir)
            (stage / "README.md").unlink(missing_ok=True)
            write_text(stage / "README.md", text)
        return _upload(stage, repo_id, "dataset", token=token, private=private, commit_message=commit_message)


SPACE_REAL_EXAMPLES = ("water/images/Spain_7370579_vh.tif", "scenes/003.tif")
"""Real Sentinel-1 files the Space offers as examples (``space/app.py`` ``REAL_EXAMPLES``)."""
SPACE_REAL_FILES = (*SPACE_REAL_EXAMPLES, "water/images/Spain_7370579_vv.tif")
"""Every real file staged with the Space: its examples and the VV file of the chip it stacks into a VV + VH
example (``space/app.py`` ``REAL_DUAL_POL``)."""


def stage_space(
    space_dir: str | os.PathLike,
    stage_dir: str | os.PathLike,
    *,
    models_dir: str | os.PathLike | None = None,
    bundle_package: bool = True,
) -> Path:
    """Assemble what :func:`push_space` uploads: the ``space/`` folder, this package (so the Space
    needs no ``pip install`` of it) and optionally the task models under ``models/<task>``.

    Args:
        space_dir: folder with ``app.py``, ``requirements.txt`` and ``README.md`` (Space YAML).
        stage_dir: an empty or new folder.
        models_dir: folder with ``landcover`` / ``water`` / ``roads`` model folders to bundle.
        bundle_package: copy ``di3cl_hf`` next to ``app.py``.
    """
    space_dir, stage_dir = Path(space_dir), Path(stage_dir)
    for name in ("app.py", "requirements.txt", "README.md"):
        if not (space_dir / name).is_file():
            raise FileNotFoundError(f"{space_dir}: no {name}, expected a Gradio Space folder")
    if "sdk: gradio" not in (space_dir / "README.md").read_text(encoding="utf-8"):
        raise ValueError(f"{space_dir / 'README.md'}: the Space YAML must declare 'sdk: gradio'")
    _copy_tree(space_dir, stage_dir, SPACE_IGNORE_PATTERNS + ("models/**",))
    if bundle_package:
        _copy_tree(PACKAGE_DIR, stage_dir / "di3cl_hf", ("**/__pycache__/**", "__pycache__/**", "*.pyc"))
    samples = PACKAGE_DIR.parent / "samples" / "sentinel1"
    if samples.is_dir():  # the Space's real examples, with their attribution
        for name in (*SPACE_REAL_FILES, "README.md"):
            _link_or_copy(samples / name, stage_dir / "examples" / "sentinel1" / name)
    if models_dir is not None:
        models_dir = Path(models_dir)
        tasks = [path for path in sorted(models_dir.iterdir()) if (path / "config.json").is_file()]
        if not tasks:
            raise FileNotFoundError(
                f"{models_dir}: no model folders (landcover/, water/, roads/ with config.json)"
            )
        for task_dir in tasks:
            _copy_tree(task_dir, stage_dir / "models" / task_dir.name, MODEL_IGNORE_PATTERNS)
    return stage_dir


def push_space(
    space_dir: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    models_dir: str | os.PathLike | None = None,
    bundle_package: bool = True,
    commit_message: str = "Upload DI3CL Gradio Space",
) -> Any:
    """Push the Gradio Space (``space_sdk="gradio"``), see :func:`stage_space`.

    Returns:
        The ``CommitInfo`` of the upload.
    """
    with tempfile.TemporaryDirectory(prefix="di3cl-push-") as temp:
        stage = stage_space(
            space_dir, Path(temp) / "stage", models_dir=models_dir, bundle_package=bundle_package
        )
        return _upload(
            stage,
            repo_id,
            "space",
            token=token,
            private=private,
            commit_message=commit_message,
            space_sdk="gradio",
        )


__all__ = [
    "MODEL_AUTO_CLASSES",
    "MODEL_IGNORE_PATTERNS",
    "PACKAGE_DIR",
    "PROCESSOR_AUTO_CLASSES",
    "REMOTE_CODE_ROOTS",
    "SPACE_IGNORE_PATTERNS",
    "SPACE_REAL_EXAMPLES",
    "SPACE_REAL_FILES",
    "processor_with_auto_map",
    "push_dataset",
    "push_model",
    "push_space",
    "remote_code_files",
    "stage_model",
    "stage_space",
    "with_auto_map",
]
