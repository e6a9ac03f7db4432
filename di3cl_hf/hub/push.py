"""Hugging Face Hub tools: model cards, pushing models / datasets / the Space, timm export.

Model cards are written from what a run leaves on disk (``config.json``, ``preprocessor_config.json``,
an evaluation JSON from :mod:`di3cl_hf.metrics`, an optional ``run_info`` dict) with
:class:`huggingface_hub.ModelCard` / :class:`~huggingface_hub.ModelCardData`, which produce the YAML
metadata (license, ``library_name: transformers``, pipeline tag, tags, datasets, base model and the
``model-index`` of evaluation results) in the layout the Hub validates. Dataset cards are
:func:`di3cl_hf.data.dataset_card`'s.

Pushing goes through :class:`huggingface_hub.HfApi` (``create_repo`` + ``upload_folder``) from a
staging folder, as one commit (the client splits only very large uploads into parts).
``transformers``' ``push_to_hub`` is not used because it replaces ``README.md`` with its own template. The model staging folder holds the weights, configs, our card
and — for loading without this package (``trust_remote_code=True``) — the flat code files of the
model and processor with an ``auto_map``.

:func:`export_timm` writes the encoder as a timm ResNet (``model.safetensors`` + ``config.json``
with a ``pretrained_cfg`` carrying our processor's mean / std / input size) through timm's own
``save_for_hf``, so ``timm.create_model("local-dir:<folder>")`` or ``timm.create_model(<arch>,
pretrained=True, pretrained_cfg_overlay=dict(file=<folder>/model.safetensors), in_chans=C,
num_classes=0)`` gives the same features as :class:`~di3cl_hf.modeling_di3cl.DI3CLModel`.

Example:
    >>> card = build_model_card("outputs/demo/models/water", repo_id="me/di3cl-water")  # doctest: +SKIP
    >>> push_model("outputs/demo/models/water", "me/di3cl-water")  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import DatasetCard, EvalResult, HfApi, ModelCard, ModelCardData

from ..atomic import write_json, write_text

PACKAGE_DIR = Path(__file__).resolve().parent.parent

DEFAULT_LICENSE = "apache-2.0"
DEFAULT_TAGS = ("sar", "remote-sensing", "self-supervised", "di3cl", "earth-observation")

PAPER_TITLE = (
    "Contrastive Learning With Dynamic Instances and Contour Consistency for SAR Land-Cover "
    "Classification Foundation Model"
)
PAPER_URL = "https://arxiv.org/abs/2511.07808"
CITATION = """@misc{ren2025di3cl,
  title         = {{DI3CL}: Contrastive Learning With Dynamic Instances and Contour Consistency for {SAR} Land-Cover Classification Foundation Model},
  author        = {Ren, Zhongle and Ding, Hui and Wang, Kai and Hou, Biao and Luo, Xingyu and Li, Weibin and Jiao, Licheng},
  year          = {2025},
  eprint        = {2511.07808},
  archivePrefix = {arXiv},
  primaryClass  = {cs.CV},
  url           = {https://arxiv.org/abs/2511.07808}
}"""

# The paper's Table II (pre-training methods compared on its land-cover set), in percent.
# Shown in cards as the published reference, never as this model's score.
PAPER_LANDCOVER_RESULTS = {"overall_accuracy": 84.25, "kappa": 79.57, "miou": 51.03}

# Files the remote-code path starts from; the modules they import with ``from .x import y`` follow.
REMOTE_CODE_ROOTS = ("configuration_di3cl.py", "modeling_di3cl.py", "image_processing_di3cl.py")
MODEL_AUTO_CLASSES = {
    "AutoConfig": "configuration_di3cl.DI3CLConfig",
    "AutoModel": "modeling_di3cl.DI3CLModel",
    "AutoBackbone": "modeling_di3cl.DI3CLBackbone",
    "AutoModelForSemanticSegmentation": "modeling_di3cl.DI3CLForSemanticSegmentation",
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

_METRICS = (
    # (key in the evaluation JSON, model-index metric type, pretty name)
    ("overall_accuracy", "accuracy", "Overall accuracy (%)"),
    ("kappa", "kappa", "Cohen's kappa (%)"),
    ("miou", "mean_iou", "mIoU (%)"),
    ("mean_f1", "f1", "Mean F1 (%)"),
)
_IMAGENET_CFG_KEYS = (
    "tag",
    "url",
    "hf_hub_id",
    "hf_hub_filename",
    "origin_url",
    "paper_ids",
    "paper_name",
    "notes",
    "test_input_size",
    "test_crop_pct",
)
_EVALUATION_FILENAMES = ("evaluation.json", "eval_results.json", "evaluation_results.json", "scores.json")
_TASK_NAMES = {
    "landcover": "SAR land-cover mapping",
    "water": "SAR water-body detection",
    "roads": "SAR road extraction",
}


# ----------------------------------------------------------------------------------------------
# reading what a run knows


def _read_json(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _model_config(model_dir: Path) -> dict[str, Any]:
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{model_dir}: no config.json, expected a folder written by save_pretrained")
    config = _read_json(config_path)
    if config.get("model_type") != "di3cl":
        raise ValueError(f"{config_path}: model_type is {config.get('model_type')!r}, expected 'di3cl'")
    return config


def _processor_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "preprocessor_config.json"
    return _read_json(path) if path.is_file() else {}


def _find_evaluation(model_dir: Path) -> Path | None:
    for name in _EVALUATION_FILENAMES:
        if (model_dir / name).is_file():
            return model_dir / name
    return None


def _is_scores(value: Any) -> bool:
    return isinstance(value, Mapping) and any(key in value for key, _, _ in _METRICS)


def _score_sets(evaluation: Mapping[str, Any]) -> dict[str | None, Mapping[str, Any]]:
    """Named score dicts of an evaluation JSON: one scores dict, ``{"scores": ...}`` or a grid."""
    if _is_scores(evaluation):
        return {None: evaluation}
    for key in ("scores", "metrics", "results"):
        if _is_scores(evaluation.get(key)):
            return {None: evaluation[key]}
        if isinstance(evaluation.get(key), Mapping):
            grid = {name: value for name, value in evaluation[key].items() if _is_scores(value)}
            if grid:
                return grid
    grid = {name: value for name, value in evaluation.items() if _is_scores(value)}
    if grid:
        return grid
    raise ValueError(
        "evaluation: no scores found; expected the JSON of di3cl_hf.metrics (overall_accuracy, kappa, miou, "
        "per_class, ...), possibly under 'scores' / 'metrics' / 'results' or as a {name: scores} grid"
    )


def _percent(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return round(100.0 * value, 2) if math.isfinite(value) else None


def evaluation_results(
    evaluation: Mapping[str, Any] | str | os.PathLike,
    *,
    task: str | None = None,
    dataset_name: str | None = None,
    dataset_type: str | None = None,
    dataset_split: str | None = None,
) -> list[EvalResult]:
    """Turn an evaluation JSON into the ``EvalResult`` entries of a card's ``model-index``.

    Args:
        evaluation: a path to, or the dict of, the scores written by :mod:`di3cl_hf.metrics`
            (fractions in ``[0, 1]``; reported in percent like the paper). Optional keys ``task``,
            ``dataset``, ``dataset_type``, ``split`` describe the evaluation set; a ``{name: scores}``
            grid gives one result per name (as ``dataset_config``).
        task: ``"landcover"``, ``"water"`` or ``"roads"`` (overrides the JSON's ``task``).
        dataset_name: pretty name of the evaluation set.
        dataset_type: Hub id of the evaluation set (or a short identifier).
        dataset_split: split evaluated on (default ``"test"``).

    Returns:
        One ``EvalResult`` per (score set, metric) present and finite; per-class F1 included as
        ``f1_<class>`` entries.
    """
    if not isinstance(evaluation, Mapping):
        evaluation = _read_json(evaluation)
    task = task or evaluation.get("task")
    dataset_type = (
        dataset_type or evaluation.get("dataset_type") or evaluation.get("dataset") or "synthetic-sar"
    )
    dataset_name = dataset_name or evaluation.get("dataset_name") or evaluation.get("dataset") or dataset_type
    dataset_split = dataset_split or evaluation.get("split") or "test"
    task_name = _TASK_NAMES.get(str(task), "SAR semantic segmentation")
    results: list[EvalResult] = []
    for config_name, scores in _score_sets(evaluation).items():
        common = dict(
            task_type="image-segmentation",
            task_name=task_name,
            dataset_type=str(dataset_type),
            dataset_name=str(dataset_name),
            dataset_split=str(dataset_split),
            dataset_config=config_name,
        )
        for key, metric_type, metric_name in _METRICS:
            value = _percent(scores.get(key))
            if value is not None:
                results.append(
                    EvalResult(metric_type=metric_type, metric_name=metric_name, metric_value=value, **common)
                )
        for class_name, class_scores in (scores.get("per_class") or {}).items():
            value = _percent(class_scores.get("f1")) if isinstance(class_scores, Mapping) else None
            if value is not None:
                results.append(
                    EvalResult(
                        metric_type=f"f1_{class_name}",
                        metric_name=f"F1 {class_name} (%)",
                        metric_value=value,
                        **common,
                    )
                )
        relaxed = scores.get("relaxed")
        if isinstance(relaxed, Mapping) and _percent(relaxed.get("f1")) is not None:
            results.append(
                EvalResult(
                    metric_type="relaxed_f1",
                    metric_name="Relaxed F1 (%)",
                    metric_value=_percent(relaxed.get("f1")),
                    **common,
                )
            )
    return results


# ----------------------------------------------------------------------------------------------
# model card


def _results_table(evaluation: Mapping[str, Any]) -> str:
    sets = _score_sets(evaluation)
    try:
        from ..training.metrics import format_table

        return format_table({name or "this model": scores for name, scores in sets.items()})
    except ImportError:  # metrics module not available: a plain table of the headline numbers
        lines = ["| | OA | Kappa | mIoU |", "|---|---:|---:|---:|"]
        for name, scores in sets.items():
            cells = [str(_percent(scores.get(key)) or "–") for key in ("overall_accuracy", "kappa", "miou")]
            lines.append(f"| {name or 'this model'} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"


def _describe_radiometry(processor: Mapping[str, Any], num_channels: int) -> str:
    kind = processor.get("input_kind", "auto")
    db_range = processor.get("db_range", [-30.0, 5.0])
    mean = processor.get("image_mean")
    std = processor.get("image_std")
    nodata = processor.get("nodata_value")
    bands = {
        1: "1 band (VV)",
        2: "2 bands (VV, VH)",
        3: "3 bands (replicated grey, as in the original release)",
    }
    lines = [
        f"- **Bands**: the encoder takes {bands.get(num_channels, f'{num_channels} bands')}. "
        "A single band given to a 2-channel model is replicated; 2 bands given to a 1-channel model use the "
        "first (VV). 8-bit RGB images (as `pipeline` hands them) become grey = mean of RGB, read as 8-bit DN.",
        f"- **Radiometry**: input kind `{kind}` (one of `auto`, `db`, `intensity`, `amplitude`, `dn8`, `dn16`, "
        "`complex`). Everything is converted to backscatter in dB, clipped to "
        f"[{db_range[0]}, {db_range[1]}] dB and scaled to [0, 1]"
        + (f", then normalised with mean {mean} and std {std}." if mean is not None else "."),
        "- **Invalid pixels** (NaN"
        + (f", nodata = {nodata}" if nodata is not None else ", the file's nodata value")
        + ") become 0 after normalisation (the normalised mean) and are masked in predictions.",
        "- Calibrated, terrain-corrected Sentinel-1 GRD (sigma0 or gamma0) in dB or linear power is the "
        "expected input; `auto` detects the kind from the data type and value range, declare it when you know it.",
    ]
    return "\n".join(lines)


def _loading_snippets(repo_id: str, segmentation: bool, num_channels: int, has_code: bool) -> str:
    model_class = "AutoModelForSemanticSegmentation" if segmentation else "AutoModel"
    parts = [
        "### With the `di3cl-hf` package",
        "",
        "```python",
        "import di3cl_hf  # registers DI3CL with the transformers Auto classes",
        "import numpy as np",
        "import torch",
        f"from transformers import AutoImageProcessor, {model_class}",
        "",
        f'processor = AutoImageProcessor.from_pretrained("{repo_id}")',
        f'model = {model_class}.from_pretrained("{repo_id}").eval()',
        f"sar = np.random.gamma(1.0, 0.05, size=({num_channels}, 256, 256)).astype('float32')  # linear power",
        'inputs = processor(sar, return_tensors="pt")',
        "with torch.inference_mode():",
        "    outputs = model(**inputs)",
    ]
    if segmentation:
        parts += [
            "mask = processor.post_process_semantic_segmentation(outputs, target_sizes=[sar.shape[-2:]])[0]",
            "```",
            "",
            "A whole scene of any size, written as a georeferenced GeoTIFF (tiled, blended windows):",
            "",
            "```bash",
            f"di3cl predict {repo_id} scene.tif mask.tif",
            "```",
        ]
    else:
        parts += ["features = outputs.last_hidden_state  # [B, C, H/32, W/32]", "```"]
    parts += ["", "### Without the package", ""]
    if has_code:
        parts += [
            "The repository carries the model and processor code, so plain transformers can load it:",
            "",
            "```python",
            f"from transformers import AutoImageProcessor, {model_class}",
            "",
            f'processor = AutoImageProcessor.from_pretrained("{repo_id}", trust_remote_code=True)',
            f'model = {model_class}.from_pretrained("{repo_id}", trust_remote_code=True)',
            "```",
            "",
        ]
    parts += [
        "The encoder is a standard ResNet: `di3cl export-timm` writes it as timm weights, usable in timm, "
        "TorchGeo or segmentation-models-pytorch:",
        "",
        "```python",
        "import timm",
        "",
        "# di3cl-timm/ is the folder `di3cl export-timm` writes",
        'encoder = timm.create_model("local-dir:di3cl-timm", pretrained=True, features_only=True)',
        "```",
    ]
    return "\n".join(parts)


def _previous_card_facts(model_dir: Path) -> dict[str, Any]:
    """``run_info`` / ``base_model`` / ``datasets`` of a DI3CL card already in ``model_dir`` (if any)."""
    path = model_dir / "README.md"
    if not path.is_file():
        return {}
    try:
        card = ModelCard.load(path)
    except Exception:  # not a card we can read: nothing to keep
        return {}
    if "di3cl" not in (card.data.tags or []):
        return {}
    facts: dict[str, Any] = {"base_model": card.data.base_model, "datasets": card.data.datasets}
    training = re.search(r"^## Training\n(.*?)(?=^## |\Z)", card.text, flags=re.MULTILINE | re.DOTALL)
    if training:
        facts["run_info"] = dict(
            re.findall(r"^- \*\*(.+?)\*\*: (.*)$", training.group(1), flags=re.MULTILINE)
        )
    return facts


def build_model_card(
    model_dir: str | os.PathLike,
    *,
    repo_id: str | None = None,
    evaluation: Mapping[str, Any] | str | os.PathLike | None = None,
    license: str = DEFAULT_LICENSE,
    datasets: Sequence[str] | None = None,
    base_model: str | None = None,
    tags: Iterable[str] = (),
    run_info: Mapping[str, Any] | None = None,
    has_code: bool = True,
) -> ModelCard:
    """Write the model card of a saved DI3CL model from what its run knows.

    Args:
        model_dir: folder written by ``save_pretrained`` (``config.json``, weights, optionally
            ``preprocessor_config.json`` and an evaluation JSON such as ``evaluation.json``).
        repo_id: the Hub id used in the loading snippets (default: the folder name).
        evaluation: scores (path or dict, :mod:`di3cl_hf.metrics` format) for the ``model-index``;
            default: the first of ``evaluation.json`` / ``eval_results.json`` / ... in ``model_dir``.
        license: SPDX-style license id of the weights.
        datasets: Hub ids of the pre-training / fine-tuning data.
        base_model: Hub id of the pre-trained encoder this model was fine-tuned from.
        tags: extra tags (``sar``, ``remote-sensing``, ``self-supervised`` are always there).
        run_info: free facts of the run (e.g. ``{"data": "synthetic", "steps": 200, "task":
            "water", "label_fraction": 0.1}``); shown in a "Training" section. ``"synthetic"`` in
            ``data`` or in a dataset name adds a demonstration-only warning.
        has_code: whether the pushed repo carries the remote code (adds the no-package snippet).

    A DI3CL card already in ``model_dir`` (e.g. the one the fine-tuning run wrote) supplies the
    defaults of ``run_info``, ``base_model`` and ``datasets``, so re-building it for a push (with
    the real ``repo_id`` in the snippets) keeps what the run recorded.

    Returns:
        A :class:`huggingface_hub.ModelCard` (``str(card)`` is the README.md text).

    Raises:
        FileNotFoundError: ``model_dir`` has no ``config.json``.
        ValueError: the config is not a DI3CL config, or the evaluation JSON holds no scores.
    """
    model_dir = Path(model_dir)
    config = _model_config(model_dir)
    processor = _processor_config(model_dir)
    previous = _previous_card_facts(model_dir)
    run_info = dict(run_info if run_info is not None else previous.get("run_info", {}))
    base_model = base_model or previous.get("base_model")
    datasets = datasets or previous.get("datasets")
    repo_id = repo_id or model_dir.resolve().name
    architectures = config.get("architectures") or ["DI3CLModel"]
    segmentation = any("SemanticSegmentation" in name for name in architectures)
    pretraining = any("PreTraining" in name for name in architectures)
    num_channels = int(config.get("num_channels", 2))
    backbone = str(config.get("backbone", "resnet50"))
    id2label = {int(key): value for key, value in (config.get("id2label") or {}).items()}
    task = run_info.get("task")

    if evaluation is None:
        evaluation = _find_evaluation(model_dir)
    if evaluation is not None and not isinstance(evaluation, Mapping):
        evaluation = _read_json(evaluation)
    if isinstance(evaluation, Mapping):
        task = task or evaluation.get("task")
    eval_results = evaluation_results(evaluation, task=task) if evaluation is not None else None

    dataset_ids = list(datasets or run_info.get("datasets") or [])
    synthetic = "synthetic" in str(run_info.get("data", "")).lower() or any(
        "synthetic" in name.lower() for name in dataset_ids
    )
    all_tags = list(DEFAULT_TAGS) + [backbone, "sentinel-1"] + list(tags)
    if segmentation:
        all_tags.append("semantic-segmentation")
    if synthetic:
        all_tags.append("synthetic-data")
    card_data = ModelCardData(
        license=license,
        library_name="transformers",
        pipeline_tag="image-segmentation" if segmentation else "image-feature-extraction",
        tags=all_tags,
        datasets=dataset_ids or None,
        base_model=base_model,
        model_name=repo_id.split("/")[-1] if eval_results else None,
        eval_results=eval_results or None,
        metrics=["accuracy", "mean_iou", "f1"] if eval_results else None,
    )

    kind = (
        "semantic segmentation" if segmentation else ("pre-training" if pretraining else "feature extraction")
    )
    sections: list[str] = [
        "---",
        card_data.to_yaml(),
        "---",
        "",
        f"# {repo_id.split('/')[-1]}",
        "",
        f"DI3CL {backbone} for SAR {kind}"
        + (f" ({_TASK_NAMES.get(str(task), str(task))})" if task else "")
        + f", {num_channels}-channel input. DI3CL is a self-supervised SAR foundation model: a ResNet encoder "
        "pre-trained with MoCo v2 contrast plus Contour Consistency (a contrastive task on the stride-16 stage) "
        "and Dynamic Instances (region-level consistency between the overlap of two views), from the paper "
        f"[*{PAPER_TITLE}*]({PAPER_URL}). This is a re-implementation with 🤗 transformers, datasets, "
        "accelerate and timm (`di3cl-hf`), not the authors' release.",
        "",
    ]
    if synthetic:
        sections += [
            "> **Demonstration weights.** This model was trained on *synthetic* SAR scenes generated by "
            "`di3cl_hf.synthetic` (class-typical backscatter with Gamma speckle). It shows that the pipeline "
            "works end to end; its outputs on real SAR imagery are not meaningful.",
            "",
        ]
    sections += ["## Intended use", ""]
    if segmentation:
        labels = (
            ", ".join(f"{index} = {name}" for index, name in sorted(id2label.items())) or "see config.json"
        )
        sections += [
            f"Pixel-wise classification of SAR patches and scenes. Classes: {labels}. Large scenes are "
            "predicted window by window with blended overlaps (`di3cl predict`), keeping the input's CRS and "
            "geotransform.",
        ]
    else:
        sections += [
            "A pre-trained SAR encoder to fine-tune for land-cover mapping, water-body detection or road "
            "extraction (e.g. with `DI3CLForSemanticSegmentation`, a UperNet head on this encoder), or to embed "
            "patches (`di3cl embed`); it is meant to need few labels (e.g. 1 %, 5 % or 10 % of a labelled set).",
        ]
    sections += [
        "",
        "Out of scope: optical imagery, un-calibrated or non-detected (phase-only) products without "
        "declaring their radiometry, and any decision with safety or legal consequences without local "
        "validation.",
        "",
        "## Input radiometry",
        "",
        _describe_radiometry(processor, num_channels),
        "",
        "## How to use",
        "",
        _loading_snippets(repo_id, segmentation, num_channels, has_code),
        "",
    ]
    if run_info:
        sections += ["## Training", ""]
        sections += [f"- **{key}**: {value}" for key, value in run_info.items() if key != "datasets"]
        sections.append("")
    sections += ["## Evaluation", ""]
    if evaluation is not None:
        sections += [
            "Scores of this model (percent; OA, Cohen's kappa, mean IoU, per-class F1):",
            "",
            _results_table(evaluation),
        ]
    else:
        sections += ["No evaluation of this model was recorded with the run.", ""]
    sections += [
        "For reference, the paper reports for DI3CL on its land-cover set "
        f"OA {PAPER_LANDCOVER_RESULTS['overall_accuracy']} %, Kappa {PAPER_LANDCOVER_RESULTS['kappa']} %, "
        f"mIoU {PAPER_LANDCOVER_RESULTS['miou']} % (Table II, pre-training methods compared) and 58.59 % mIoU "
        "for UperNet + DI3CL-R50 (Table III). Those numbers belong to the authors' weights and data, not to "
        "this model.",
        "",
        "## Limitations",
        "",
        "- Backscatter depends on sensor, band, incidence angle and calibration; a model trained on one sensor "
        "or processing chain may transfer poorly to another without fine-tuning.",
        "- Speckle, layover and shadow in mountains, and wind-roughened water confuse water and road classes; "
        "thin roads (a few pixels wide) are the hardest class.",
        "- The `auto` radiometry guess can be wrong for unusual products (e.g. dB stored as integers); declare "
        "the input kind when you know it.",
        "- Scores depend on the label set and the split; compare only on the same data.",
        "",
        "## Citation",
        "",
        "```bibtex",
        CITATION,
        "```",
        "",
    ]
    return ModelCard("\n".join(sections))


# ----------------------------------------------------------------------------------------------
# dataset card


def build_dataset_card(
    data_dir: str | os.PathLike,
    *,
    pretty_name: str = "SAR patches",
    description: str | None = None,
    license: str = "other",
    tags: Sequence[str] = (),
) -> str:
    """The card of a ``data/<split>-*.parquet`` folder that lacks its ``README.md``.

    :func:`di3cl_hf.data.export_parquet` writes the card itself; this rebuilds the same card with
    :func:`di3cl_hf.data.dataset_card` from the Parquet footers (features from the schema's
    ``huggingface`` metadata, row counts per split), for folders whose card was lost or removed.

    Raises:
        FileNotFoundError: no ``data/<split>-*.parquet`` shards under ``data_dir``.
    """
    import datasets
    import pyarrow.parquet as pq

    from ..data.sarsense import dataset_card

    data_dir = Path(data_dir)
    shards = sorted((data_dir / "data").glob("*-*.parquet"))
    if not shards:
        raise FileNotFoundError(
            f"{data_dir}: no data/<split>-*.parquet shards, expected the output of di3cl export-parquet"
        )
    splits: dict[str, int] = {}
    for shard in shards:
        split = re.sub(r"-\d{5}-of-\d{5}$", "", shard.stem)
        splits[split] = splits.get(split, 0) + pq.read_metadata(shard).num_rows
    order = {"train": 0, "validation": 1, "test": 2}
    splits = dict(sorted(splits.items(), key=lambda item: (order.get(item[0], 3), item[0])))
    features = datasets.Features.from_arrow_schema(pq.read_schema(shards[0]))
    return dataset_card(
        features, splits, pretty_name=pretty_name, description=description, license=license, tags=tags
    )


# ----------------------------------------------------------------------------------------------
# staging + pushing


def remote_code_files(package_dir: str | os.PathLike = PACKAGE_DIR) -> list[Path]:
    """The flat code files a repo needs for ``trust_remote_code``: the config, modeling and
    processor files and every module they import with ``from .x import y``, transitively.
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
        for module in re.findall(
            r"^\s*from \.(\w+) import", path.read_text(encoding="utf-8"), flags=re.MULTILINE
        ):
            pending.append(f"{module}.py")
    return sorted(found)


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _copy_tree(source: Path, target: Path, ignore_patterns: Sequence[str]) -> None:
    from fnmatch import fnmatch

    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source).as_posix()
        if path.is_dir() or any(fnmatch(relative, pattern) for pattern in ignore_patterns):
            continue
        _link_or_copy(path, target / relative)


def _available_auto_classes() -> dict[str, str]:
    try:
        from .. import modeling_di3cl
    except ImportError:
        return {key: value for key, value in MODEL_AUTO_CLASSES.items() if key in ("AutoConfig", "AutoModel")}
    return {
        key: value
        for key, value in MODEL_AUTO_CLASSES.items()
        if key == "AutoConfig" or hasattr(modeling_di3cl, value.split(".")[-1])
    }


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
    where missing.

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
    _model_config(model_dir)  # fail early, naming the folder
    if stage_dir.exists() and any(stage_dir.iterdir()):
        raise ValueError(f"{stage_dir}: staging folder is not empty")
    if not any(model_dir.glob("*.safetensors")):
        raise FileNotFoundError(f"{model_dir}: no *.safetensors weights, expected save_pretrained output")
    _copy_tree(model_dir, stage_dir, MODEL_IGNORE_PATTERNS + ("README.md",))
    if include_code:
        for path in remote_code_files():
            shutil.copy2(path, stage_dir / path.name)
        config = _read_json(stage_dir / "config.json")
        auto_map = {**_available_auto_classes(), **(config.get("auto_map") or {})}
        (stage_dir / "config.json").unlink()  # a hard link to the source: replace, never edit in place
        write_json(stage_dir / "config.json", {**config, "auto_map": auto_map})
        processor_path = stage_dir / "preprocessor_config.json"
        if processor_path.is_file():
            processor = _read_json(processor_path)
            processor_map = {**PROCESSOR_AUTO_CLASSES, **(processor.get("auto_map") or {})}
            processor_path.unlink()
            write_json(processor_path, {**processor, "auto_map": processor_map})
    if card is None:
        card = build_model_card(model_dir, has_code=include_code, **card_kwargs)
    write_text(stage_dir / "README.md", str(card))
    return stage_dir


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


# ----------------------------------------------------------------------------------------------
# timm export


def _encoder_state_dict(model: Any, timm_keys: Iterable[str]) -> dict[str, Any]:
    """Find the ResNet encoder inside ``model.state_dict()`` by the prefix under which every timm
    key exists (the encoder keeps torchvision / timm names, see METHOD.md §6)."""
    timm_keys = list(timm_keys)
    state = model.state_dict()
    prefixes = {key[: -len("conv1.weight")] for key in state if key.endswith("conv1.weight")}
    for prefix in sorted(prefixes, key=len):
        if all(prefix + key in state for key in timm_keys):
            return {key: state[prefix + key] for key in timm_keys}
    raise ValueError(
        f"{type(model).__name__}: no sub-module with timm's ResNet parameter names "
        f"(looked under {sorted(prefixes)!r}); cannot export to timm"
    )


def _timm_card(
    architecture: str,
    num_channels: int,
    data_config: Mapping[str, Any],
    radiometry: Mapping[str, Any],
    license: str,
) -> str:
    card_data = ModelCardData(
        license=license,
        library_name="timm",
        pipeline_tag="image-feature-extraction",
        tags=list(DEFAULT_TAGS) + [architecture, "timm"],
    )
    side = data_config["input_size"][1]
    return "\n".join(
        [
            "---",
            card_data.to_yaml(),
            "---",
            "",
            f"# DI3CL {architecture} encoder (timm weights)",
            "",
            f"The encoder of a DI3CL model ([*{PAPER_TITLE}*]({PAPER_URL})) as a timm `{architecture}` with "
            f"{num_channels} input channels and no classifier (`num_classes=0`).",
            "",
            "```python",
            "import timm",
            "",
            'model = timm.create_model("local-dir:.", pretrained=True)  # or "hf-hub:<org>/<name>" once pushed',
            "# the same weights, named explicitly:",
            f'model = timm.create_model("{architecture}", pretrained=True, in_chans={num_channels}, num_classes=0,',
            f'                          pretrained_cfg_overlay=dict(file="model.safetensors", input_size=({num_channels}, {side}, {side})))',
            "features = model.forward_features(pixel_values)  # [B, C, H/32, W/32]",
            "```",
            "",
            "**Input**: `pixel_values` as `DI3CLImageProcessor` makes them, not 8-bit photos: SAR backscatter "
            f"converted to dB (input kind `{radiometry['input_kind']}`), clipped to {list(radiometry['db_range'])} dB, "
            "scaled to [0, 1], then normalised with the `mean` / `std` of `pretrained_cfg` "
            f"({list(data_config['mean'])} / {list(data_config['std'])}).",
            "",
            "```bibtex",
            CITATION,
            "```",
            "",
        ]
    )


def export_timm(
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    architecture: str | None = None,
    license: str = DEFAULT_LICENSE,
) -> Path:
    """Write a DI3CL encoder as timm weights (``model.safetensors`` + ``config.json``).

    The ResNet is rebuilt with ``timm.create_model(arch, num_classes=0, in_chans=num_channels)``,
    the encoder weights are loaded into it strictly, and timm's ``save_for_hf`` writes the folder
    with a ``pretrained_cfg`` whose ``mean`` / ``std`` / ``input_size`` are our processor's. The
    numbers are for *pixel values after our radiometry* (dB clipped to ``db_range``, scaled to
    [0, 1]); ``config.json`` also records that radiometry under ``di3cl``.

    Args:
        model_dir: a saved DI3CL model (any DI3CL class; the encoder is taken).
        out_dir: output folder (created).
        architecture: timm architecture (default: the config's ``backbone``).
        license: license id recorded in the ``pretrained_cfg``.

    Returns:
        ``out_dir``; load it with ``timm.create_model("local-dir:<out_dir>", pretrained=True)`` or
        ``timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=<out_dir>/model.safetensors),
        in_chans=num_channels, num_classes=0)``.
    """
    import timm
    import torch
    from timm.models import save_for_hf
    from transformers.utils import logging as transformers_logging

    from ..modeling_di3cl import DI3CLModel

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    config = _model_config(model_dir)
    processor = _processor_config(model_dir)
    architecture = architecture or str(config.get("backbone", "resnet50"))
    num_channels = int(config.get("num_channels", 2))
    if not timm.is_model(architecture):
        raise ValueError(f"{model_dir / 'config.json'}: backbone {architecture!r} is not a timm architecture")
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # a task model's heads are expected to be left out
    try:
        model = DI3CLModel.from_pretrained(model_dir, dtype=torch.float32)
    finally:
        transformers_logging.set_verbosity(verbosity)
    timm_model = timm.create_model(architecture, pretrained=False, num_classes=0, in_chans=num_channels)
    timm_model.load_state_dict(_encoder_state_dict(model, timm_model.state_dict()), strict=True)
    timm_model.eval()
    # The architecture's default pretrained_cfg describes ImageNet weights (tag, license, paper,
    # download location, crop): none of that is true of these weights.
    timm_model.pretrained_cfg = {
        **{key: value for key, value in timm_model.pretrained_cfg.items() if key not in _IMAGENET_CFG_KEYS},
        "architecture": architecture,
        "tag": "di3cl",
        "license": license,
        "paper_ids": "arXiv:2511.07808",
        "origin_url": PAPER_URL,
        "interpolation": "bilinear",
        "crop_pct": 1.0,
        "crop_mode": "center",
    }

    size = processor.get("size") or {}
    side = int(size.get("height") or size.get("shortest_edge") or config.get("image_size", 224))
    mean = processor.get("image_mean") or [0.5] * num_channels
    std = processor.get("image_std") or [0.5] * num_channels
    mean = [float(value) for value in (mean if isinstance(mean, list) else [mean] * num_channels)]
    std = [float(value) for value in (std if isinstance(std, list) else [std] * num_channels)]
    if len(mean) != num_channels or len(std) != num_channels:
        raise ValueError(
            f"{model_dir / 'preprocessor_config.json'}: image_mean/image_std have {len(mean)}/{len(std)} values, "
            f"expected {num_channels} (num_channels)"
        )
    data_config = {"input_size": (num_channels, side, side), "mean": tuple(mean), "std": tuple(std)}
    radiometry = {
        "input_kind": processor.get("input_kind", "auto"),
        "db_range": processor.get("db_range", [-30.0, 5.0]),
        "note": "mean/std apply to dB clipped to db_range and scaled to [0, 1]; use DI3CLImageProcessor",
        "source": str(model_dir.resolve().name),
    }
    with tempfile.TemporaryDirectory(dir=out_dir.parent if out_dir.parent.exists() else None) as temp:
        save_for_hf(
            timm_model,
            temp,
            model_config={"di3cl": radiometry},
            safe_serialization=True,
            data_config=data_config,
        )
        write_text(
            Path(temp) / "README.md", _timm_card(architecture, num_channels, data_config, radiometry, license)
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in sorted(os.listdir(temp)):
            os.replace(Path(temp) / name, out_dir / name)
    return out_dir


# ----------------------------------------------------------------------------------------------
# command line


def _cmd_push(args: argparse.Namespace) -> int:
    kind = args.kind
    if kind == "model":
        run_info = _read_json(args.run_info) if args.run_info else None
        card_kwargs = dict(
            evaluation=args.evaluation,
            license=args.license,
            datasets=args.dataset or None,
            base_model=args.base_model,
            run_info=run_info,
        )
        if args.stage_only:
            stage_model(
                args.source,
                args.stage_only,
                include_code=not args.no_code,
                repo_id=args.repo_id,
                **card_kwargs,
            )
            print(f"staged {args.source} for {args.repo_id} in {args.stage_only} (nothing uploaded)")
            return 0
        info = push_model(
            args.source,
            args.repo_id,
            token=args.token,
            private=args.private,
            include_code=not args.no_code,
            commit_message=args.commit_message or "Upload DI3CL model",
            **card_kwargs,
        )
    elif kind == "dataset":
        info = push_dataset(
            args.source,
            args.repo_id,
            token=args.token,
            private=args.private,
            commit_message=args.commit_message or "Upload SAR dataset (Parquet)",
        )
    else:
        if args.stage_only:
            stage_space(args.source, args.stage_only, models_dir=args.models)
            print(f"staged {args.source} for {args.repo_id} in {args.stage_only} (nothing uploaded)")
            return 0
        info = push_space(
            args.source,
            args.repo_id,
            token=args.token,
            private=args.private,
            models_dir=args.models,
            commit_message=args.commit_message or "Upload DI3CL Gradio Space",
        )
    print(getattr(info, "commit_url", info))
    return 0


def _cmd_export_timm(args: argparse.Namespace) -> int:
    out = export_timm(args.model, args.out, architecture=args.arch)
    print(f"wrote timm weights to {out}; load with timm.create_model('local-dir:{out}', pretrained=True)")
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``di3cl push {model,dataset,space}`` and ``di3cl export-timm`` to the ``di3cl`` command."""
    push = subparsers.add_parser(
        "push",
        help="push a model, a Parquet dataset or the Gradio Space to the Hub (HF_ENDPOINT selects the server)",
        description="Push to the Hugging Face Hub with huggingface_hub (create_repo + upload_folder, one commit).",
    )
    push.add_argument("kind", choices=("model", "dataset", "space"), help="what to push")
    push.add_argument(
        "source", help="model folder (save_pretrained), Parquet folder (di3cl export-parquet), or space/"
    )
    push.add_argument("repo_id", help="target repository, org/name")
    push.add_argument("--token", default=None, help="write token (default: HF_TOKEN / the saved login)")
    push.add_argument("--private", action="store_true", default=None, help="create the repository private")
    push.add_argument("--commit-message", default=None)
    push.add_argument(
        "--license", default=None, help="license id (default apache-2.0 models, cc-by-4.0 data)"
    )
    push.add_argument("--evaluation", default=None, help="model: evaluation JSON for the model-index")
    push.add_argument(
        "--dataset", action="append", default=[], help="model: Hub id of training data (repeatable)"
    )
    push.add_argument("--base-model", default=None, help="model: Hub id of the pre-trained encoder")
    push.add_argument("--run-info", default=None, help="model: JSON of run facts shown in the card")
    push.add_argument("--no-code", action="store_true", help="model: leave out the remote-code files")
    push.add_argument(
        "--models", default=None, help="space: folder with landcover/water/roads models to bundle"
    )
    push.add_argument(
        "--stage-only", default=None, metavar="DIR", help="write what would be pushed to DIR; no upload"
    )

    def run_push(args: argparse.Namespace) -> int:
        if args.license is None and args.kind == "model":
            args.license = DEFAULT_LICENSE
        return _cmd_push(args)

    push.set_defaults(func=run_push)

    export = subparsers.add_parser(
        "export-timm",
        help="write the encoder as timm weights + pretrained_cfg",
        description="Export a DI3CL encoder as a timm ResNet folder (model.safetensors + config.json).",
    )
    export.add_argument("model", help="a saved DI3CL model folder")
    export.add_argument("out", help="output folder")
    export.add_argument("--arch", default=None, help="timm architecture (default: the config's backbone)")
    export.set_defaults(func=_cmd_export_timm)


__all__ = [
    "CITATION",
    "DEFAULT_TAGS",
    "build_dataset_card",
    "build_model_card",
    "evaluation_results",
    "export_timm",
    "push_dataset",
    "push_model",
    "push_space",
    "register_cli",
    "remote_code_files",
    "stage_model",
    "stage_space",
]
