"""Segmentation metrics for SAR land-cover, water and road mapping.

Everything is derived from one confusion matrix (rows = ground truth, columns = prediction) that
is accumulated with ``bincount`` over batches, ignoring the ``ignore_index`` label:

- overall accuracy (OA), Cohen's kappa, mean IoU and mean F1, per-class IoU / F1 / precision /
  recall, the numbers of the paper's Table II (OA / Kappa / mIoU + per-class F1);
- for thin structures (roads) the *relaxed* precision / recall / F1 of road extraction
  (Mnih & Hinton, 2010; Wiedemann et al., 1998): a predicted road pixel is correct when a
  ground-truth road pixel lies within ``buffer`` pixels of it, and a ground-truth road pixel is
  found when a predicted road pixel lies within ``buffer`` pixels of it;
- for the unsupervised setting, clusters are matched one-to-one to classes with the Hungarian
  algorithm (maximum overlap) before the mIoU is computed.

Scores are stored as fractions in ``[0, 1]``; the markdown tables print them in percent, as the
paper does. Classes that occur neither in the ground truth nor in the prediction have an undefined
IoU / F1 (``nan``, written as ``null`` in JSON) and are left out of the means, as in mmsegmentation.

Example:
    >>> import numpy as np
    >>> metric = SegmentationMetrics(num_classes=2, class_names=["land", "water"])
    >>> metric.update(np.array([[0, 1], [1, 1]]), np.array([[0, 1], [0, 255]]))
    >>> round(metric.compute()["overall_accuracy"], 4)
    0.6667
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from ..atomic import write_json
from ..hub.cards import format_table  # the paper's Table II layout (cards, metrics.md, the grid)

ArrayLike = np.ndarray | torch.Tensor


def _as_numpy(array: ArrayLike) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def confusion_matrix(
    predictions: ArrayLike, labels: ArrayLike, num_classes: int, ignore_index: int | None = 255
) -> np.ndarray:
    """Confusion matrix of integer predictions against integer labels.

    Args:
        predictions: predicted class indices, any shape (e.g. ``[B, H, W]``), numpy or torch.
        labels: ground-truth class indices, same shape as ``predictions``.
        num_classes: number of classes ``K``.
        ignore_index: label value whose pixels are not counted (``None``: count everything).

    Returns:
        ``np.int64`` array ``[K, K]``; entry ``[i, j]`` counts pixels of true class ``i`` predicted
        as class ``j``.

    Raises:
        ValueError: shapes differ, or a label / prediction lies outside ``[0, K)`` (other than
            ``ignore_index`` in ``labels``).
    """
    if tuple(predictions.shape) != tuple(labels.shape):
        raise ValueError(
            f"confusion_matrix: predictions have shape {tuple(predictions.shape)}, labels {tuple(labels.shape)}; "
            "expected the same shape"
        )
    if isinstance(predictions, torch.Tensor) and isinstance(labels, torch.Tensor):
        # Stay on the tensors' device (GPU evaluation); only the K x K result is moved.
        predictions = predictions.reshape(-1).long()
        labels = labels.reshape(-1).to(predictions.device).long()
        keep = (
            labels != ignore_index if ignore_index is not None else torch.ones_like(labels, dtype=torch.bool)
        )
        predictions, labels = predictions[keep], labels[keep]
        _check_range(
            int(labels.min()) if labels.numel() else 0,
            int(labels.max()) if labels.numel() else 0,
            num_classes,
            "labels",
        )
        _check_range(
            int(predictions.min()) if predictions.numel() else 0,
            int(predictions.max()) if predictions.numel() else 0,
            num_classes,
            "predictions",
        )
        counts = torch.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
        return counts.reshape(num_classes, num_classes).cpu().numpy().astype(np.int64)
    predictions = _as_numpy(predictions).reshape(-1).astype(np.int64)
    labels = _as_numpy(labels).reshape(-1).astype(np.int64)
    if ignore_index is not None:
        keep = labels != ignore_index
        predictions, labels = predictions[keep], labels[keep]
    if labels.size:
        _check_range(int(labels.min()), int(labels.max()), num_classes, "labels")
        _check_range(int(predictions.min()), int(predictions.max()), num_classes, "predictions")
    counts = np.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _check_range(low: int, high: int, num_classes: int, what: str) -> None:
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"confusion_matrix: {what} contain values in [{low}, {high}], expected class indices in "
            f"[0, {num_classes}) (or the ignore index)"
        )


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1), np.nan)


def cohen_kappa(confusion: np.ndarray) -> float:
    """Cohen's kappa of a confusion matrix: ``(p_o - p_e) / (1 - p_e)``.

    ``p_o`` is the observed agreement (overall accuracy) and ``p_e`` the agreement expected by
    chance from the row and column marginals. When ``p_e == 1`` (a single class in both ground
    truth and prediction) kappa is undefined; it is returned as 1.0 for perfect agreement.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    total = confusion.sum()
    if total == 0:
        return float("nan")
    observed = np.trace(confusion) / total
    expected = float((confusion.sum(axis=1) * confusion.sum(axis=0)).sum() / (total * total))
    if math.isclose(expected, 1.0):
        return 1.0 if math.isclose(observed, 1.0) else 0.0
    return float((observed - expected) / (1.0 - expected))


def scores_from_confusion(confusion: np.ndarray, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """All scores of a confusion matrix (rows = ground truth, columns = prediction).

    Args:
        confusion: ``[K, K]`` counts.
        class_names: ``K`` names for the per-class entries (default ``"0"``, ``"1"``, ...).

    Returns:
        A JSON-ready dict: ``overall_accuracy``, ``kappa``, ``miou``, ``mean_f1``, ``num_pixels``,
        ``per_class`` (name -> ``iou``, ``f1``, ``precision``, ``recall``, ``support``) and
        ``confusion_matrix`` (list of lists). Undefined values are ``nan``.
    """
    confusion = np.asarray(confusion, dtype=np.int64)
    num_classes = confusion.shape[0]
    if confusion.shape != (num_classes, num_classes):
        raise ValueError(f"scores_from_confusion: expected a square matrix, got shape {confusion.shape}")
    names = list(class_names) if class_names is not None else [str(index) for index in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"scores_from_confusion: {len(names)} class names for {num_classes} classes")
    true_positive = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1).astype(np.float64)  # ground-truth pixels per class
    predicted = confusion.sum(axis=0).astype(np.float64)
    total = confusion.sum()
    iou = _safe_divide(true_positive, support + predicted - true_positive)
    precision = _safe_divide(true_positive, predicted)
    recall = _safe_divide(true_positive, support)
    f1 = _safe_divide(2 * true_positive, support + predicted)
    present = (support + predicted) > 0
    return {
        "overall_accuracy": float(true_positive.sum() / total) if total else float("nan"),
        "kappa": cohen_kappa(confusion),
        "miou": float(np.nanmean(iou[present])) if present.any() else float("nan"),
        "mean_f1": float(np.nanmean(f1[present])) if present.any() else float("nan"),
        "num_pixels": int(total),
        "per_class": {
            name: {
                "iou": float(iou[index]),
                "f1": float(f1[index]),
                "precision": float(precision[index]),
                "recall": float(recall[index]),
                "support": int(support[index]),
            }
            for index, name in enumerate(names)
        },
        "confusion_matrix": confusion.tolist(),
    }


def relaxed_counts(
    prediction: ArrayLike, target: ArrayLike, buffer: int = 3, valid_mask: ArrayLike | None = None
) -> tuple[int, int, int, int]:
    """Counts behind the relaxed (buffered) precision and recall of one binary mask.

    A predicted positive pixel is a relaxed true positive when a ground-truth positive pixel lies
    within Euclidean distance ``buffer`` of it; a ground-truth positive pixel is found when a
    predicted positive lies within ``buffer`` of it. ``buffer=0`` gives the strict counts.

    Args:
        prediction: ``[H, W]`` boolean (or 0/1) predicted mask.
        target: ``[H, W]`` boolean ground-truth mask.
        buffer: tolerance in pixels.
        valid_mask: ``[H, W]`` boolean; pixels outside it are not counted (ignore index).

    Returns:
        ``(matched_predictions, predicted_positives, matched_targets, target_positives)``.
    """
    prediction = _as_numpy(prediction).astype(bool)
    target = _as_numpy(target).astype(bool)
    if prediction.ndim != 2 or prediction.shape != target.shape:
        raise ValueError(
            f"relaxed_counts: expected two [H, W] masks of the same shape, got {prediction.shape} and {target.shape}"
        )
    valid = np.ones_like(target) if valid_mask is None else _as_numpy(valid_mask).astype(bool)
    prediction = prediction & valid
    target = target & valid

    def near(mask: np.ndarray) -> np.ndarray:
        if not mask.any():
            return np.zeros_like(mask)
        # Distance from every pixel to the nearest positive pixel of ``mask``.
        return ndimage.distance_transform_edt(~mask) <= buffer

    matched_predictions = int((prediction & near(target)).sum())
    matched_targets = int((target & near(prediction)).sum())
    return matched_predictions, int(prediction.sum()), matched_targets, int(target.sum())


def relaxed_scores(
    matched_predictions: int, predicted_positives: int, matched_targets: int, target_positives: int
) -> dict[str, float]:
    """Relaxed precision, recall and F1 from the (summed) counts of :func:`relaxed_counts`."""
    precision = matched_predictions / predicted_positives if predicted_positives else float("nan")
    recall = matched_targets / target_positives if target_positives else float("nan")
    if math.isnan(precision) or math.isnan(recall) or precision + recall == 0:
        f1 = 0.0 if precision == 0 or recall == 0 else float("nan")
    else:
        f1 = 2 * precision * recall / (precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1}


class SegmentationMetrics:
    """Accumulates a confusion matrix (and relaxed road counts) over batches.

    Args:
        num_classes: number of classes.
        class_names: names of the classes, in index order.
        ignore_index: label value that is not scored.
        relaxed_class: index of the class scored with the relaxed (buffered) measure, e.g. the
            road class; ``None`` disables it.
        relaxed_buffer: tolerance of the relaxed measure, in pixels.
    """

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        ignore_index: int | None = 255,
        relaxed_class: int | None = None,
        relaxed_buffer: int = 3,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"SegmentationMetrics: num_classes must be >= 1, got {num_classes}")
        if relaxed_class is not None and not 0 <= relaxed_class < num_classes:
            raise ValueError(f"SegmentationMetrics: relaxed_class {relaxed_class} not in [0, {num_classes})")
        self.num_classes = num_classes
        self.class_names = (
            list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        )
        if len(self.class_names) != num_classes:
            raise ValueError(
                f"SegmentationMetrics: {len(self.class_names)} class names given for {num_classes} classes"
            )
        self.ignore_index = ignore_index
        self.relaxed_class = relaxed_class
        self.relaxed_buffer = relaxed_buffer
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self.relaxed = np.zeros(4, dtype=np.int64)

    def update(self, predictions: ArrayLike, labels: ArrayLike) -> None:
        """Add a batch of predicted and true label maps (``[H, W]`` or ``[B, H, W]``)."""
        self.confusion += confusion_matrix(predictions, labels, self.num_classes, self.ignore_index)
        if self.relaxed_class is None:
            return
        predictions = _as_numpy(predictions)
        labels = _as_numpy(labels)
        if predictions.ndim not in (2, 3):
            raise ValueError(
                f"SegmentationMetrics.update: the relaxed measure needs [H, W] or [B, H, W] maps, "
                f"got shape {predictions.shape}"
            )
        if predictions.ndim == 2:
            predictions, labels = predictions[None], labels[None]
        for prediction, label in zip(predictions, labels):
            valid = label != self.ignore_index if self.ignore_index is not None else None
            self.relaxed += np.array(
                relaxed_counts(
                    prediction == self.relaxed_class, label == self.relaxed_class, self.relaxed_buffer, valid
                ),
                dtype=np.int64,
            )

    def compute(self) -> dict[str, Any]:
        """Scores of everything accumulated (see :func:`scores_from_confusion`), plus ``relaxed``
        (``precision``, ``recall``, ``f1``, ``buffer``, ``class``) when a relaxed class is set."""
        scores = scores_from_confusion(self.confusion, self.class_names)
        if self.relaxed_class is not None:
            scores["relaxed"] = {
                **relaxed_scores(*(int(count) for count in self.relaxed)),
                "buffer": self.relaxed_buffer,
                "class": self.class_names[self.relaxed_class],
            }
        return scores


def hungarian_match(
    cluster_ids: ArrayLike,
    labels: ArrayLike,
    num_clusters: int,
    num_classes: int,
    ignore_index: int | None = 255,
) -> dict[int, int]:
    """One-to-one mapping of clusters to classes that maximises the number of overlapping pixels.

    Uses :func:`scipy.optimize.linear_sum_assignment` on the cluster x class overlap matrix. With
    more clusters than classes the surplus clusters stay unmatched (they are absent from the
    returned dict).

    Returns:
        dict cluster index -> class index.
    """
    size = max(num_clusters, num_classes)
    overlap = confusion_matrix(cluster_ids, labels, size, ignore_index).T[:num_clusters, :num_classes]
    cluster_rows, class_columns = linear_sum_assignment(overlap, maximize=True)
    return {int(cluster): int(label) for cluster, label in zip(cluster_rows, class_columns)}


def hungarian_scores(
    cluster_ids: ArrayLike,
    labels: ArrayLike,
    num_clusters: int,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    ignore_index: int | None = 255,
) -> dict[str, Any]:
    """Scores of an unsupervised clustering after Hungarian matching of clusters to classes.

    Pixels of unmatched clusters (when ``num_clusters > num_classes``) count as wrong for their
    true class. The result is :func:`scores_from_confusion`'s dict (its confusion matrix has one extra
    "unmatched" prediction column and row) plus ``unmatched_pixels`` and ``cluster_to_class``.
    """
    mapping = hungarian_match(cluster_ids, labels, num_clusters, num_classes, ignore_index)
    cluster_ids = _as_numpy(cluster_ids).astype(np.int64)
    labels = _as_numpy(labels).astype(np.int64)
    lookup = np.full(max(num_clusters, 1), -1, dtype=np.int64)
    for cluster, label in mapping.items():
        lookup[cluster] = label
    mapped = lookup[cluster_ids]
    keep = labels != ignore_index if ignore_index is not None else np.ones_like(labels, dtype=bool)
    mapped, labels = mapped[keep], labels[keep]
    # Unmatched clusters are scored as an extra "unmatched" class: a miss for the true class.
    names = list(class_names) if class_names is not None else [str(index) for index in range(num_classes)]
    confusion = confusion_matrix(np.where(mapped < 0, num_classes, mapped), labels, num_classes + 1, None)
    scores = scores_from_confusion(confusion, [*names, "<unmatched>"])
    del scores["per_class"]["<unmatched>"]
    iou = np.array([entry["iou"] for entry in scores["per_class"].values()])
    f1 = np.array([entry["f1"] for entry in scores["per_class"].values()])
    scores["miou"] = float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
    scores["mean_f1"] = float(np.nanmean(f1)) if np.isfinite(f1).any() else float("nan")
    scores["unmatched_pixels"] = int(confusion[:, num_classes].sum())
    scores["cluster_to_class"] = {str(cluster): label for cluster, label in sorted(mapping.items())}
    return scores


def _json_ready(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(item) for item in value]
    if isinstance(value, np.generic):
        return _json_ready(value.item())
    return value


def save_json(scores: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``scores`` as indented JSON (``nan`` -> ``null``), atomically (temp file + rename)."""
    return write_json(path, _json_ready(scores), allow_nan=False)


__all__ = [
    "SegmentationMetrics",
    "cohen_kappa",
    "confusion_matrix",
    "format_table",
    "hungarian_match",
    "hungarian_scores",
    "relaxed_counts",
    "relaxed_scores",
    "save_json",
    "scores_from_confusion",
]
