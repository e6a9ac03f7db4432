"""Every card the project writes: the model card (with its ``model-index`` of evaluation results), the timm
card of an exported encoder and the dataset card of a Parquet folder.

Model cards are written from what a run leaves on disk (``config.json``, ``preprocessor_config.json``,
an evaluation JSON from :mod:`di3cl_hf.training.metrics`, an optional ``run_info`` dict) with
:class:`huggingface_hub.ModelCard` / :class:`~huggingface_hub.ModelCardData`, which produce the YAML
metadata (license, ``library_name: transformers``, pipeline tag, tags, datasets, base model and the
``model-index`` of evaluation results) in the layout the Hub validates; their results tables, ``metrics.md``
and the evaluation grid's tables use :func:`format_table` (the paper's Table II layout). Dataset cards are
built by :mod:`di3cl_hf.hub.dataset_card` (re-exported here). The Space's card is its own ``space/README.md`` (checked,
not written, by :func:`di3cl_hf.hub.push.stage_space`).

Example:
    >>> card = build_model_card("outputs/demo/models/water", repo_id="me/di3cl-water")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .dataset_card import build_dataset_card, dataset_card

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


_METRICS = (
    # (key in the evaluation JSON, model-index metric type, pretty name)
    ("overall_accuracy", "accuracy", "Overall accuracy (%)"),
    ("kappa", "kappa", "Cohen's kappa (%)"),
    ("miou", "mean_iou", "mIoU (%)"),
    ("mean_f1", "f1", "Mean F1 (%)"),
)
_EVALUATION_FILENAMES = ("evaluation.json", "eval_results.json", "evaluation_results.json", "scores.json")
_TASK_NAMES = {
    "landcover": "SAR land-cover mapping",
    "water": "SAR water-body detection",
    "roads": "SAR road extraction",
}


# ----------------------------------------------------------------------------------------------
# the paper's Table II layout


def _percent_cell(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{100 * value:.2f}"


def format_table(
    results: Mapping[str, Mapping[str, Any]],
    class_names: Sequence[str] | None = None,
    relaxed: bool | None = None,
) -> str:
    """Markdown table in the layout of the paper's Table II: one row per method, OA / Kappa /
    mIoU, then the F1 of every class, all in percent.

    Args:
        results: method name -> scores dict (from :meth:`SegmentationMetrics.compute` or
            :func:`scores_from_confusion`, possibly reloaded from JSON).
        class_names: columns to show (default: the classes of the first result).
        relaxed: add relaxed precision / recall / F1 columns (default: when any result has them).
    """
    if not results:
        raise ValueError("format_table: no results to format")
    first = next(iter(results.values()))
    names = list(class_names) if class_names is not None else list(first.get("per_class", {}))
    if relaxed is None:
        relaxed = any("relaxed" in scores for scores in results.values())
    header = ["Method", "OA", "Kappa", "mIoU", *(f"F1 {name}" for name in names)]
    if relaxed:
        header += ["relaxed P", "relaxed R", "relaxed F1"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for method, scores in results.items():
        per_class = scores.get("per_class", {})
        cells = [
            method,
            _percent_cell(scores.get("overall_accuracy")),
            _percent_cell(scores.get("kappa")),
            _percent_cell(scores.get("miou")),
            *(_percent_cell(per_class.get(name, {}).get("f1")) for name in names),
        ]
        if relaxed:
            relaxed_scores_ = scores.get("relaxed", {})
            cells += [_percent_cell(relaxed_scores_.get(key)) for key in ("precision", "recall", "f1")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# reading what a run knows


def read_json(path: str | os.PathLike) -> dict[str, Any]:
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


def read_model_config(model_dir: Path) -> dict[str, Any]:
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{model_dir}: no config.json, expected a folder written by save_pretrained")
    config = read_json(config_path)
    if config.get("model_type") != "di3cl":
        raise ValueError(f"{config_path}: model_type is {config.get('model_type')!r}, expected 'di3cl'")
    return config


def read_processor_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "preprocessor_config.json"
    return read_json(path) if path.is_file() else {}


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
        evaluation = read_json(evaluation)
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
    return format_table({name or "this model": scores for name, scores in sets.items()})


def _describe_radiometry(processor: Mapping[str, Any], num_channels: int) -> str:
    kind = processor.get("input_kind", "auto")
    db_range = processor.get("db_range", [-30.0, 5.0])
    mean = processor.get("image_mean")
    std = processor.get("image_std")
    nodata = processor.get("nodata_value")
    bands = {
        1: "1 band (one polarisation: VV, or the band it was trained on, e.g. VH, see Training)",
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


def _loading_snippets(
    repo_id: str, segmentation: bool, num_channels: int, has_code: bool, classification: bool = False
) -> str:
    model_class = (
        "AutoModelForSemanticSegmentation"
        if segmentation
        else "AutoModelForImageClassification"
        if classification
        else "AutoModel"
    )
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
    elif classification:
        parts += ["label = model.config.id2label[int(outputs.logits.argmax(-1)[0])]", "```"]
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


@dataclass
class _ModelFacts:
    """What a saved model folder (and its previous card, evaluation and run) says about the model."""

    repo_id: str
    processor: dict[str, Any]
    segmentation: bool
    pretraining: bool
    num_channels: int
    backbone: str
    id2label: dict[int, str]
    task: Any
    run_info: dict[str, Any]
    base_model: str | None
    dataset_ids: list[str]
    synthetic: bool
    evaluation: Mapping[str, Any] | None
    eval_results: list[EvalResult] | None
    classification: bool = False


def _model_facts(
    model_dir: Path,
    repo_id: str | None,
    evaluation: Mapping[str, Any] | str | os.PathLike | None,
    datasets: Sequence[str] | None,
    base_model: str | None,
    run_info: Mapping[str, Any] | None,
) -> _ModelFacts:
    config = read_model_config(model_dir)
    previous = _previous_card_facts(model_dir)
    run_info = dict(run_info if run_info is not None else previous.get("run_info", {}))
    architectures = config.get("architectures") or ["DI3CLModel"]
    task = run_info.get("task")
    if evaluation is None:
        evaluation = _find_evaluation(model_dir)
    if evaluation is not None and not isinstance(evaluation, Mapping):
        evaluation = read_json(evaluation)
    if isinstance(evaluation, Mapping):
        task = task or evaluation.get("task")
    dataset_ids = list(datasets or previous.get("datasets") or run_info.get("datasets") or [])
    return _ModelFacts(
        repo_id=repo_id or model_dir.resolve().name,
        processor=read_processor_config(model_dir),
        segmentation=any("SemanticSegmentation" in name for name in architectures),
        pretraining=any("PreTraining" in name for name in architectures),
        classification=any("ImageClassification" in name for name in architectures),
        num_channels=int(config.get("num_channels", 2)),
        backbone=str(config.get("backbone", "resnet50")),
        id2label={int(key): value for key, value in (config.get("id2label") or {}).items()},
        task=task,
        run_info=run_info,
        base_model=base_model or previous.get("base_model"),
        dataset_ids=dataset_ids,
        synthetic="synthetic" in str(run_info.get("data", "")).lower()
        or any("synthetic" in name.lower() for name in dataset_ids),
        evaluation=evaluation,
        eval_results=evaluation_results(evaluation, task=task) if evaluation is not None else None,
    )


def _card_data(facts: _ModelFacts, license: str, tags: Iterable[str]) -> ModelCardData:
    all_tags = list(DEFAULT_TAGS) + [facts.backbone, "sentinel-1"] + list(tags)
    if facts.segmentation:
        all_tags.append("semantic-segmentation")
    if facts.synthetic:
        all_tags.append("synthetic-data")
    return ModelCardData(
        license=license,
        library_name="transformers",
        pipeline_tag=(
            "image-segmentation"
            if facts.segmentation
            else "image-classification"
            if facts.classification
            else "image-feature-extraction"
        ),
        tags=all_tags,
        datasets=facts.dataset_ids or None,
        base_model=facts.base_model,
        model_name=facts.repo_id.split("/")[-1] if facts.eval_results else None,
        eval_results=facts.eval_results or None,
        metrics=["accuracy", "mean_iou", "f1"] if facts.eval_results else None,
    )


def _intro_section(facts: _ModelFacts) -> list[str]:
    if facts.segmentation:
        kind = "semantic segmentation"
    elif facts.classification:
        kind = "image classification"
    else:
        kind = "pre-training" if facts.pretraining else "feature extraction"
    task = facts.task
    sections = [
        f"# {facts.repo_id.split('/')[-1]}",
        "",
        f"DI3CL {facts.backbone} for SAR {kind}"
        + (f" ({_TASK_NAMES.get(str(task), str(task))})" if task else "")
        + f", {facts.num_channels}-channel input. DI3CL is a self-supervised SAR foundation model: a ResNet "
        "encoder pre-trained with MoCo v2 contrast plus Contour Consistency (a contrastive task on the stride-16 "
        "stage) and Dynamic Instances (region-level consistency between the overlap of two views), from the paper "
        f"[*{PAPER_TITLE}*]({PAPER_URL}). This is a re-implementation with 🤗 transformers, datasets, "
        "accelerate and timm (`di3cl-hf`), not the authors' release.",
        "",
    ]
    if facts.synthetic:
        sections += [
            "> **Demonstration weights.** This model was trained on *synthetic* SAR scenes generated by "
            "`di3cl_hf.synthetic` (class-typical backscatter with Gamma speckle). It shows that the pipeline "
            "works end to end; its outputs on real SAR imagery are not meaningful.",
            "",
        ]
    return sections


def _usage_section(facts: _ModelFacts, has_code: bool) -> list[str]:
    sections = ["## Intended use", ""]
    if facts.segmentation:
        labels = (
            ", ".join(f"{index} = {name}" for index, name in sorted(facts.id2label.items()))
            or "see config.json"
        )
        sections.append(
            f"Pixel-wise classification of SAR patches and scenes. Classes: {labels}. Large scenes are "
            "predicted window by window with blended overlaps (`di3cl predict`), keeping the input's CRS and "
            "geotransform."
        )
    else:
        sections.append(
            "A pre-trained SAR encoder to fine-tune for land-cover mapping, water-body detection or road "
            "extraction (e.g. with `DI3CLForSemanticSegmentation`, a UperNet head on this encoder), or to embed "
            "patches (`di3cl embed`); it is meant to need few labels (e.g. 1 %, 5 % or 10 % of a labelled set)."
        )
    sections += [
        "",
        "Out of scope: optical imagery, un-calibrated or non-detected (phase-only) products without "
        "declaring their radiometry, and any decision with safety or legal consequences without local "
        "validation.",
        "",
        "## Input radiometry",
        "",
        _describe_radiometry(facts.processor, facts.num_channels),
        "",
        "## How to use",
        "",
        _loading_snippets(
            facts.repo_id, facts.segmentation, facts.num_channels, has_code, facts.classification
        ),
        "",
    ]
    if facts.run_info:
        sections += ["## Training", ""]
        sections += [f"- **{key}**: {value}" for key, value in facts.run_info.items() if key != "datasets"]
        sections.append("")
    return sections


def _evaluation_section(evaluation: Mapping[str, Any] | None) -> list[str]:
    sections = ["## Evaluation", ""]
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
    ]
    return sections


_LIMITATIONS_AND_CITATION = [
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
    facts = _model_facts(Path(model_dir), repo_id, evaluation, datasets, base_model, run_info)
    sections = ["---", _card_data(facts, license, tags).to_yaml(), "---", ""]
    sections += _intro_section(facts)
    sections += _usage_section(facts, has_code)
    sections += _evaluation_section(facts.evaluation)
    sections += _LIMITATIONS_AND_CITATION
    return ModelCard("\n".join(sections))


# ----------------------------------------------------------------------------------------------
# timm card


def timm_card(
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


__all__ = [
    "CITATION",
    "DEFAULT_LICENSE",
    "DEFAULT_TAGS",
    "PAPER_TITLE",
    "PAPER_URL",
    "build_dataset_card",
    "build_model_card",
    "dataset_card",
    "evaluation_results",
    "format_table",
    "read_json",
    "read_model_config",
    "read_processor_config",
    "timm_card",
]
