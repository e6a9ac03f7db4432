"""Scoring models on labelled sets (``di3cl evaluate``): one saved model, the label-fraction grid, k-means.

- :func:`evaluate_model` (``di3cl evaluate model``): a saved segmentation model scored on one split with the
  fine-tuning metrics.
- :class:`EvaluationGridArguments` and :func:`run_evaluation_grid` (``di3cl evaluate grid``,
  ``examples/evaluate.py``): every (task, initialisation, label fraction, seed) fine-tuned with the same budget
  (:class:`~di3cl_hf.training.finetuning_args.FinetuneBudget`), one comparison table and the label-efficiency
  curves as a PNG.
- :func:`evaluate_kmeans`: the unsupervised setting, k-means on dense encoder features scored with
  Hungarian-matched mIoU.

Frozen encoders on labelled chips (``di3cl evaluate probe``) are :mod:`di3cl_hf.training.probing`'s; the
arguments of every mode are in :mod:`di3cl_hf.training.evaluation_args`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.cluster.vq import kmeans2
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..atomic import atomic_path, write_text
from ..configuration_di3cl import STAGE_NAMES, DI3CLConfig
from ..data.segmentation import class_names as dataset_class_names
from ..data.segmentation import load_segmentation
from ..data.segmentation_dataset import SegmentationDataset
from ..image_processing_di3cl import DI3CLImageProcessor
from ..loading import load_imagenet_weights, load_model_and_processor
from ..modeling_di3cl import DI3CLModel
from .common import METRICS_NAME
from .evaluation_args import (
    EvaluationGridArguments,
    ModelEvaluationArguments,
    ProbeArguments,
    parse_grid_args,
    parse_probe_args,
)
from .finetuning import finetune, load_task_splits, relaxed_class
from .finetuning_args import FinetuneArguments, FinetuneBudget
from .metrics import SegmentationMetrics, format_table, hungarian_scores, save_json

METRIC_LABELS = {"miou": "mIoU", "overall_accuracy": "OA", "kappa": "Kappa", "mean_f1": "mean F1"}


@torch.no_grad()
def dense_features(encoder: nn.Module, pixel_values: torch.Tensor, stage: str = "stage3") -> torch.Tensor:
    """L2-normalised feature map of one encoder stage: ``[B, C, H, W] -> [B, D, H/s, W/s]``.

    Args:
        encoder: a :class:`DI3CLModel` (or any DI3CL model; its ``base_model`` is used).
        pixel_values: normalised input.
        stage: ``"stem"``, ``"stage1"`` ... ``"stage4"`` (strides 2 ... 32).
    """
    if stage not in STAGE_NAMES:
        raise ValueError(f"dense_features: stage={stage!r}, expected one of {STAGE_NAMES}")
    base = getattr(encoder, "base_model", encoder)
    hidden_states = base(pixel_values=pixel_values, output_hidden_states=True).hidden_states
    return F.normalize(hidden_states[STAGE_NAMES.index(stage)].float(), dim=1)


@torch.no_grad()
def evaluate_kmeans(
    encoder: nn.Module,
    processor: Any,
    fit_split: Any,
    test_split: Any,
    class_names: Sequence[str],
    num_clusters: int | None = None,
    stage: str = "stage3",
    max_fit_pixels: int = 20000,
    batch_size: int = 8,
    seed: int = 0,
) -> dict[str, Any]:
    """Unsupervised segmentation: k-means on dense features, scored with Hungarian-matched mIoU.

    Features of ``fit_split`` (its labels are not used) are sampled (at most ``max_fit_pixels``
    feature vectors), clustered with :func:`scipy.cluster.vq.kmeans2` (k-means++ initialisation);
    every feature of ``test_split`` goes to its nearest centroid, the cluster map is upsampled
    (nearest) to the label size, and clusters are matched one-to-one to classes
    (:func:`di3cl_hf.metrics.hungarian_scores`).

    Returns:
        The scores dict of :func:`~di3cl_hf.metrics.hungarian_scores` plus ``num_clusters`` and ``stage``.
    """
    num_clusters = num_clusters or len(class_names)
    encoder.eval()
    generator = torch.Generator().manual_seed(seed)

    def batches(split: Any) -> Iterator[dict[str, torch.Tensor]]:
        yield from DataLoader(SegmentationDataset(split, processor), batch_size=batch_size)

    fit_features = []
    per_image = max(1, max_fit_pixels // max(len(fit_split), 1))
    for batch in batches(fit_split):
        features = dense_features(encoder, batch["pixel_values"], stage)  # [B, D, h, w]
        for feature_map in features:
            flat = feature_map.flatten(1).T  # [h*w, D]
            chosen = torch.randperm(flat.shape[0], generator=generator)[:per_image]
            fit_features.append(flat[chosen])
    data = torch.cat(fit_features).numpy().astype(np.float64)
    centroids, _ = kmeans2(data, num_clusters, iter=30, minit="++", seed=seed)
    centroids_t = torch.from_numpy(centroids).float()

    cluster_maps, label_maps = [], []
    for batch in batches(test_split):
        features = dense_features(encoder, batch["pixel_values"], stage)
        b, d, h, w = features.shape
        distances = torch.cdist(features.permute(0, 2, 3, 1).reshape(-1, d), centroids_t)
        clusters = distances.argmin(dim=1).reshape(b, 1, h, w).float()
        clusters = F.interpolate(clusters, size=batch["labels"].shape[-2:], mode="nearest").long()[:, 0]
        cluster_maps.append(clusters)
        label_maps.append(batch["labels"])
    scores = hungarian_scores(
        torch.cat(cluster_maps), torch.cat(label_maps), num_clusters, len(class_names), class_names
    )
    scores.update(num_clusters=num_clusters, stage=stage)
    return scores


@torch.no_grad()
def evaluate_model(args: ModelEvaluationArguments) -> dict[str, Any]:
    """Score a saved segmentation model on one split of a labelled folder (``di3cl evaluate model``).

    The model and its processor load through :func:`di3cl_hf.loading.load_model_and_processor`; the split is read
    as fine-tuning reads it (:class:`~di3cl_hf.data.segmentation_dataset.SegmentationDataset`, nodata pixels
    ignored) and scored with :class:`~di3cl_hf.training.metrics.SegmentationMetrics` (relaxed road scores for
    roads). Writes ``metrics.json`` (model, data, split, scores) and ``metrics.md`` (the paper's Table II layout)
    under ``args.output_dir``.

    Returns:
        The scores dict of :meth:`SegmentationMetrics.compute`.
    """
    model, processor = load_model_and_processor(
        args.model_name_or_path, "segmentation", local_files_only=args.local_files_only
    )
    splits = load_segmentation(
        args.data_dir, task=args.task, class_names=args.class_names, image_dtype=None, layout=args.layout,
        nodata=args.nodata,
    )  # fmt: skip
    if args.split not in splits:
        raise ValueError(
            f"{args.data_dir}: no {args.split!r} split for task {args.task!r} (found {list(splits)})"
        )
    names = dataset_class_names(splits[args.split])
    if int(model.config.num_labels) != len(names):
        raise ValueError(
            f"{args.model_name_or_path}: {model.config.num_labels} classes, the {args.task!r} set has {len(names)}"
        )
    ignore_index = model.config.semantic_loss_ignore_index
    metrics = SegmentationMetrics(
        len(names), names, ignore_index=ignore_index, relaxed_class=relaxed_class(names, args.task),
        relaxed_buffer=args.relaxed_buffer,
    )  # fmt: skip
    dataset = SegmentationDataset(splits[args.split], processor, ignore_index=ignore_index)
    for batch in DataLoader(dataset, batch_size=args.batch_size):
        metrics.update(model(pixel_values=batch["pixel_values"]).logits.argmax(dim=1), batch["labels"])
    scores = metrics.compute()
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    record = {"model": args.model_name_or_path, "data": args.data_dir, "task": args.task, "split": args.split}
    save_json({**record, "scores": scores}, output_dir / METRICS_NAME)
    write_text(output_dir / "metrics.md", format_table({Path(args.model_name_or_path).name: scores}))
    return scores


def _grid_finetune_arguments(
    grid: EvaluationGridArguments, task: str, init: str, fraction: float, seed: int
) -> FinetuneArguments:
    """One run of the grid: the grid's budget as is, plus this run's task, initialisation, fraction and seed."""
    budget = {item.name: getattr(grid, item.name) for item in fields(FinetuneBudget)}
    budget.update(
        output_dir=str(
            Path(grid.output_dir) / "runs" / task / init / f"labels-{fraction:g}" / f"seed-{seed}"
        ),
        seed=seed,
        report_to="none",
        disable_tqdm=True,
        resume_from_checkpoint=None,
    )
    return FinetuneArguments(
        **budget,
        task=task,
        init=init,
        model_name_or_path=grid.pretrained_model if init == "di3cl" else None,
        label_fraction=fraction,
        segmentation_loss="ce+dice" if task == "roads" else "ce",
        save_model=grid.save_models,
    )


def _kmeans_encoder(grid: EvaluationGridArguments, init: str) -> tuple[nn.Module, Any]:
    if init == "di3cl":
        return load_model_and_processor(grid.pretrained_model, task="features")
    torch.manual_seed(grid.seeds[0])
    # FinetuneBudget's default for random/imagenet: 2 channels
    channels = 2 if grid.num_channels is None else grid.num_channels
    encoder = DI3CLModel(DI3CLConfig(backbone=grid.backbone, num_channels=channels))
    if init == "imagenet":
        load_imagenet_weights(encoder, grid.imagenet_weights)
    return encoder, DI3CLImageProcessor(num_channels=channels)


def run_evaluation_grid(grid: EvaluationGridArguments) -> dict[str, Any]:
    """Fine-tune every (task, initialisation, label fraction) with the same budget, score the test
    splits, optionally score k-means clusters of each initialisation's frozen encoder, and write
    ``evaluation.json``, ``evaluation.md`` (the comparison table + per-class tables) and
    ``label_efficiency.png`` under ``grid.output_dir``.

    Returns:
        ``{"results": {task: {init: {fraction: scores}}}, "kmeans": {task: {init: scores}}, "seconds": ...}``
        (fractions as strings, as in the JSON).
    """
    if grid.num_threads > 0:
        torch.set_num_threads(grid.num_threads)
    output_dir = Path(grid.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    kmeans_results: dict[str, dict[str, Any]] = {}
    runs = [
        (t, i, f, seed)
        for t in grid.tasks
        for i in grid.initialisations
        for f in grid.label_fractions
        for seed in grid.seeds
    ]
    per_seed: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    started = time.perf_counter()
    for task, init, fraction, seed in tqdm(runs, desc="evaluation grid"):
        run = finetune(_grid_finetune_arguments(grid, task, init, fraction, seed))
        per_seed.setdefault((task, init, fraction), []).append(
            {
                **run["test"],
                "seed": seed,
                "num_train_samples": run["num_train_samples"],
                "train_seconds": run["train_seconds"],
                "final_train_loss": run["final_train_loss"],
            }
        )
    for (task, init, fraction), seed_runs in per_seed.items():
        results.setdefault(task, {}).setdefault(init, {})[f"{fraction:g}"] = mean_scores(seed_runs)
    if grid.kmeans:
        for task in grid.tasks:
            arguments = _grid_finetune_arguments(grid, task, "random", 1.0, grid.seeds[0])
            train, _, test, class_names = load_task_splits(arguments)
            for init in grid.initialisations:
                encoder, processor = _kmeans_encoder(grid, init)
                kmeans_results.setdefault(task, {})[init] = evaluate_kmeans(
                    encoder, processor, train, test, class_names, stage=grid.kmeans_stage, seed=grid.seeds[0]
                )
    summary = {
        "results": results,
        "kmeans": kmeans_results,
        "seconds": time.perf_counter() - started,
        "arguments": asdict(grid),
        "data": "synthetic" if "synthetic" in str(grid.data_dir).lower() else str(grid.data_dir),
    }
    save_json(summary, output_dir / "evaluation.json")
    write_text(output_dir / "evaluation.md", grid_markdown(summary))
    plot_label_efficiency(summary, output_dir / "label_efficiency.png", metric=grid.metric)
    return summary


HEADLINE_METRICS = ("overall_accuracy", "kappa", "miou", "mean_f1")


def mean_scores(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Average the scores of the same setting over seeds.

    Returns:
        A scores dict (headline metrics, per-class ``f1``/``iou``, ``relaxed`` precision/recall/F1, all
        means over seeds) plus ``std`` (headline metrics and ``relaxed_f1``; population standard
        deviation, 0 for one seed), ``num_seeds``, ``num_train_samples`` and ``seeds`` (each seed's
        headline metrics).
    """
    if not runs:
        raise ValueError("mean_scores: no runs to average")

    def mean(values: list[float]) -> float:
        finite = [value for value in values if value is not None and math.isfinite(value)]
        return float(np.mean(finite)) if finite else float("nan")

    def std(values: list[float]) -> float:
        finite = [value for value in values if value is not None and math.isfinite(value)]
        return float(np.std(finite)) if finite else float("nan")

    averaged: dict[str, Any] = {key: mean([run[key] for run in runs]) for key in HEADLINE_METRICS}
    averaged["std"] = {key: std([run[key] for run in runs]) for key in HEADLINE_METRICS}
    averaged["per_class"] = {
        name: {metric: mean([run["per_class"][name][metric] for run in runs]) for metric in ("f1", "iou")}
        for name in runs[0].get("per_class", {})
    }
    if all("relaxed" in run for run in runs):
        averaged["relaxed"] = {
            key: mean([run["relaxed"][key] for run in runs]) for key in ("precision", "recall", "f1")
        }
        averaged["std"]["relaxed_f1"] = std([run["relaxed"]["f1"] for run in runs])
    averaged["num_seeds"] = len(runs)
    averaged["num_train_samples"] = runs[0].get("num_train_samples")
    averaged["seeds"] = [
        {
            "seed": run.get("seed"),
            **{key: run[key] for key in HEADLINE_METRICS},
            "relaxed_f1": (run.get("relaxed") or {}).get("f1"),
            "num_train_samples": run.get("num_train_samples"),
            "train_seconds": run.get("train_seconds"),
            "final_train_loss": run.get("final_train_loss"),
        }
        for run in runs
    ]
    return averaged


def comparison_table(summary: Mapping[str, Any]) -> str:
    """One markdown table of the whole grid: task, labels, initialisation, OA / Kappa / mIoU / mean F1
    (and relaxed F1 for roads) in percent, ``mean ± std`` over seeds when there are several; k-means
    rows have ``0 (k-means)`` labels."""

    def percent(value: Any, spread: Any = None) -> str:
        if value is None or not math.isfinite(float(value)):
            return "–"
        if spread is not None and math.isfinite(float(spread)):
            return f"{100 * float(value):.2f} ± {100 * float(spread):.2f}"
        return f"{100 * float(value):.2f}"

    def cells(scores: Mapping[str, Any], relaxed: bool) -> list[str]:
        spread = (scores.get("std") or {}) if scores.get("num_seeds", 1) > 1 else {}
        row = [percent(scores.get(key), spread.get(key)) for key in HEADLINE_METRICS]
        relaxed_f1 = (scores.get("relaxed") or {}).get("f1")
        row.append(percent(relaxed_f1, spread.get("relaxed_f1")) if relaxed else "–")
        return row

    lines = [
        "| Task | Labels | Init | Train samples | Seeds | OA | Kappa | mIoU | mean F1 | relaxed F1 |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for task, by_init in summary["results"].items():
        fractions = sorted({fraction for runs in by_init.values() for fraction in runs}, key=float)
        for fraction in fractions:
            for init in by_init:
                scores = by_init[init].get(fraction)
                if scores is None:
                    continue
                lines.append(
                    f"| {task} | {100 * float(fraction):g} % | {init} | {scores.get('num_train_samples', '')} | "
                    f"{scores.get('num_seeds', 1)} | " + " | ".join(cells(scores, "relaxed" in scores)) + " |"
                )
        for init, scores in (summary.get("kmeans") or {}).get(task, {}).items():
            lines.append(
                f"| {task} | 0 (k-means, {scores.get('num_clusters')} clusters) | {init} | 0 | 1 | "
                + " | ".join(cells(scores, relaxed=False))
                + " |"
            )
    return "\n".join(lines) + "\n"


def grid_markdown(summary: Mapping[str, Any]) -> str:
    """The comparison table followed by one Table II-style table (per-class F1) per task."""
    parts = ["## Comparison\n", comparison_table(summary)]
    for task, by_init in summary["results"].items():
        rows = {
            f"{init}, {100 * float(fraction):g} % labels": scores
            for init, runs in by_init.items()
            for fraction, scores in sorted(runs.items(), key=lambda item: float(item[0]))
        }
        parts += [f"\n## {task}: per-class F1 (Table II layout, %)\n\n", format_table(rows)]
    return "".join(parts)


def plot_label_efficiency(
    summary: Mapping[str, Any], path: str | os.PathLike, metric: str = "miou", relaxed_for_roads: bool = True
) -> Path:
    """Label-efficiency curves: ``metric`` (%) against the label fraction (log scale), one panel per
    task and one line per initialisation (error bars: standard deviation over seeds); k-means scores
    as dashed horizontal lines. With ``relaxed_for_roads``, tasks scored with the relaxed measure
    (roads) show the relaxed F1 instead: their mIoU is dominated by the background class. Written
    as PNG (matplotlib, Agg backend) atomically."""
    import matplotlib  # optional dependency (only for the curves)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(summary["results"])
    figure, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False)
    colours = {"di3cl": "tab:blue", "random": "tab:orange", "imagenet": "tab:green"}
    for axis, task in zip(axes[0], tasks):
        relaxed = relaxed_for_roads and all(
            "relaxed" in scores for runs in summary["results"][task].values() for scores in runs.values()
        )

        def value(scores: Mapping[str, Any], relaxed: bool = relaxed) -> tuple[float, float]:
            spread = scores.get("std") or {}
            if relaxed:
                return scores["relaxed"]["f1"], spread.get("relaxed_f1") or 0.0
            return scores[metric], spread.get(metric) or 0.0

        for init, runs in summary["results"][task].items():
            points = sorted((float(fraction), *value(scores)) for fraction, scores in runs.items())
            axis.errorbar(
                [100 * x for x, _, _ in points],
                [100 * y for _, y, _ in points],
                yerr=[100 * e for _, _, e in points],
                marker="o",
                capsize=3,
                color=colours.get(init),
                label=f"{init} (fine-tuned)",
            )
        for init, scores in (summary.get("kmeans") or {}).get(task, {}).items():
            if relaxed:
                continue  # k-means scores carry no relaxed measure
            axis.axhline(
                100 * scores[metric],
                linestyle="--",
                color=colours.get(init),
                alpha=0.6,
                label=f"{init} (k-means)",
            )
        fractions = sorted({float(f) for runs in summary["results"][task].values() for f in runs})
        axis.set_xscale("log")
        axis.set_xticks([100 * f for f in fractions], [f"{100 * f:g}" for f in fractions])
        axis.minorticks_off()
        axis.set_xlabel("labelled training samples (%)")
        axis.set_ylabel("relaxed F1 (%)" if relaxed else f"{METRIC_LABELS.get(metric, metric)} (%)")
        axis.set_title(task)
        axis.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=8)
    figure.suptitle("Label efficiency" + (" (synthetic data)" if summary.get("data") == "synthetic" else ""))
    figure.tight_layout()
    path = Path(path)
    try:
        with atomic_path(path, suffix=".png") as temporary:
            figure.savefig(temporary, dpi=120)
    finally:
        plt.close(figure)
    return path


__all__ = [
    "EvaluationGridArguments",
    "HEADLINE_METRICS",
    "ModelEvaluationArguments",
    "ProbeArguments",
    "comparison_table",
    "dense_features",
    "evaluate_kmeans",
    "evaluate_model",
    "grid_markdown",
    "mean_scores",
    "parse_grid_args",
    "parse_probe_args",
    "plot_label_efficiency",
    "run_evaluation_grid",
]
