"""Classical water / flood baselines for binary SAR segmentation, in pure numpy: what a learned model must beat.

- **Fitted threshold** (:func:`fit_threshold`): one feature per pixel, a weighted sum of the bands
  (``weights=(1, 0)``: VV; ``(0, 1)``: VH; :func:`fisher_weights`: the linear combination of Fisher's
  discriminant, fitted on the training labels), and the threshold and side (foreground below, as dark water,
  or above) that maximise the foreground IoU over the labelled training pixels. The search is exact up to a
  histogram of ``bins`` bins over the features' range.
- **Log ratio** (:data:`LOG_RATIO_WEIGHTS` with :func:`fit_threshold`): for a before/after pair in dB the
  difference ``after − before`` is the log ratio of the two intensities (10 log10(I_after / I_before)); a
  threshold fitted on the training labels as above (a flood darkens the after image: foreground below).
- **Otsu per tile** (:func:`otsu_threshold`, :func:`otsu_predict`): no labels at all; each tile's own
  threshold maximises the between-class variance of its histogram (256 bins), foreground below it (dark
  water). A tile without water is still split in two: the known weakness of per-tile Otsu.

Inputs are ``[C, H, W]`` float arrays in dB (NaN where invalid; :func:`images_in_db` converts dataset rows
with the model's processor, so 8-bit tiles map linearly onto its dB range) and ``[H, W]`` integer labels
(0 background, 1 foreground, ``ignore_index`` skipped). Scores are the foreground IoU and F1 of the summed
confusion matrix (:func:`binary_scores`), as in ``examples/evaluate_flood.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..data.classes import IGNORE_INDEX

LOG_RATIO_WEIGHTS = (-1.0, 1.0)
"""Feature weights of the log ratio ``after − before`` (dB) of a ``(before, after)`` pair."""

Sample = tuple[np.ndarray, np.ndarray]
"""``(image [C, H, W] float dB, NaN where invalid; label [H, W] int)``."""


@dataclass(frozen=True)
class ThresholdRule:
    """A fitted threshold on a weighted sum of the bands.

    Attributes:
        weights: Per-band weights of the feature ``sum_c weights[c] * image[c]``.
        threshold: Foreground where the feature is below it (``below``) or at or above it.
        below: Side of the foreground.
        train_iou: Foreground IoU of the rule on the labelled training pixels.
    """

    weights: tuple[float, ...]
    threshold: float
    below: bool
    train_iou: float

    def feature(self, image: np.ndarray) -> np.ndarray:
        """``[H, W]`` feature of a ``[C, H, W]`` image (NaN where a band is NaN)."""
        image = np.asarray(image, dtype=np.float64)
        if image.shape[0] != len(self.weights):
            raise ValueError(
                f"ThresholdRule: image with {image.shape[0]} band(s), the rule has {len(self.weights)}"
            )
        return np.tensordot(np.asarray(self.weights), image, axes=1)

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Foreground mask ``[H, W]`` (False where the feature is NaN)."""
        feature = self.feature(image)
        with np.errstate(invalid="ignore"):
            return feature < self.threshold if self.below else feature >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def _pixels(image: np.ndarray, label: np.ndarray, weights: Sequence[float], ignore_index: int):
    """``(feature, foreground)`` of the labelled, finite pixels of one sample."""
    feature = np.tensordot(np.asarray(weights, dtype=np.float64), np.asarray(image, dtype=np.float64), axes=1)
    label = np.asarray(label)
    keep = (label != ignore_index) & np.isfinite(feature)
    return feature[keep], label[keep] == 1


def best_threshold(
    positive_counts: np.ndarray, negative_counts: np.ndarray, edges: np.ndarray
) -> tuple[float, bool, float]:
    """``(threshold, below, iou)`` maximising the foreground IoU over histogram ``edges`` (``len(counts) + 1``).

    Foreground below ``edges[k]`` takes bins ``< k``; at or above it, bins ``>= k``. ``edges[0]`` and
    ``edges[-1]`` stand for minus and plus infinity.
    """
    cum_pos = np.concatenate([[0.0], np.cumsum(positive_counts, dtype=np.float64)])
    cum_neg = np.concatenate([[0.0], np.cumsum(negative_counts, dtype=np.float64)])
    total_pos, total_neg = cum_pos[-1], cum_neg[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        below = cum_pos / (total_pos + cum_neg)
        above = (total_pos - cum_pos) / (total_pos + total_neg - cum_neg)
    below, above = np.nan_to_num(below), np.nan_to_num(above)
    k_below, k_above = int(np.argmax(below)), int(np.argmax(above))
    bounds = np.asarray(edges, dtype=np.float64).copy()
    bounds[0], bounds[-1] = -np.inf, np.inf
    if below[k_below] >= above[k_above]:
        return float(bounds[k_below]), True, float(below[k_below])
    return float(bounds[k_above]), False, float(above[k_above])


def fit_threshold(
    samples: Sequence[Sample],
    weights: Sequence[float] = (1.0,),
    bins: int = 1024,
    ignore_index: int = IGNORE_INDEX,
) -> ThresholdRule:
    """Fit the threshold (and side) of feature ``sum_c weights[c] * image[c]`` maximising the training IoU.

    Args:
        samples: Training ``(image, label)`` pairs (read twice: range, then histograms).
        weights: Band weights (``(1, 0)``: first band; :data:`LOG_RATIO_WEIGHTS`; :func:`fisher_weights`).
        bins: Histogram bins of the search.
        ignore_index: Label value skipped.

    Raises:
        ValueError: No labelled pixel, or no foreground pixel, in ``samples``.
    """
    low, high, count, foreground = np.inf, -np.inf, 0, 0
    for image, label in samples:
        feature, positive = _pixels(image, label, weights, ignore_index)
        if feature.size:
            low, high = min(low, float(feature.min())), max(high, float(feature.max()))
            count, foreground = count + feature.size, foreground + int(positive.sum())
    if not count or not foreground:
        raise ValueError(
            f"fit_threshold: {count} labelled pixel(s), {foreground} foreground; need both classes in the training samples"
        )
    edges = np.linspace(low, high if high > low else low + 1.0, bins + 1)
    positive_counts, negative_counts = np.zeros(bins), np.zeros(bins)
    for image, label in samples:
        feature, positive = _pixels(image, label, weights, ignore_index)
        positive_counts += np.histogram(feature[positive], edges)[0]
        negative_counts += np.histogram(feature[~positive], edges)[0]
    threshold, below, iou = best_threshold(positive_counts, negative_counts, edges)
    return ThresholdRule(tuple(float(w) for w in weights), threshold, below, iou)


def fisher_weights(samples: Sequence[Sample], ignore_index: int = IGNORE_INDEX) -> tuple[float, ...]:
    """Fisher's discriminant direction ``Σ⁻¹ (μ_foreground − μ_background)`` of the labelled pixels' bands
    (pooled within-class covariance), scaled to unit length with a positive sum."""
    sums: dict[bool, np.ndarray] = {}
    outer: dict[bool, np.ndarray] = {}
    counts = {True: 0, False: 0}
    for image, label in samples:
        image = np.asarray(image, dtype=np.float64)
        pixels = image.reshape(image.shape[0], -1).T
        label = np.asarray(label).reshape(-1)
        keep = (label != ignore_index) & np.isfinite(pixels).all(axis=1)
        for side in (True, False):
            chosen = pixels[keep & ((label == 1) == side)]
            sums[side] = sums.get(side, 0) + chosen.sum(axis=0)
            outer[side] = outer.get(side, 0) + chosen.T @ chosen
            counts[side] += len(chosen)
    if not counts[True] or not counts[False]:
        raise ValueError("fisher_weights: need foreground and background pixels in the training samples")
    means = {side: sums[side] / counts[side] for side in (True, False)}
    scatter = sum(outer[side] - counts[side] * np.outer(means[side], means[side]) for side in (True, False))
    covariance = scatter / (counts[True] + counts[False] - 2) + 1e-9 * np.eye(len(means[True]))
    direction = np.linalg.solve(covariance, means[True] - means[False])
    direction = direction / (np.linalg.norm(direction) or 1.0)
    return tuple(float(v) for v in (direction if direction.sum() >= 0 else -direction))


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` (finite ones): the histogram split maximising the between-class variance
    (the middle of the best splits when several bins tie, e.g. an empty gap between two modes). NaN when fewer
    than two distinct values."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0 or values.min() == values.max():
        return float("nan")
    counts, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts, dtype=np.float64)
    mass = np.cumsum(counts * centres)
    total, total_mass = weight[-1], mass[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_low = mass / weight
        mean_high = (total_mass - mass) / (total - weight)
        between = weight * (total - weight) * (mean_low - mean_high) ** 2
    between = np.nan_to_num(between[:-1], nan=-1.0)
    # an empty gap between two modes is a plateau of equal splits: take its middle
    plateau = np.flatnonzero(between >= between.max() * (1 - 1e-9))
    last = (
        plateau[0] + int(np.argmin(np.diff(plateau) == 1)) if np.any(np.diff(plateau) != 1) else plateau[-1]
    )
    return float((edges[plateau[0] + 1] + edges[last + 1]) / 2)


def otsu_predict(image: np.ndarray, band: int = 0, bins: int = 256) -> np.ndarray:
    """Per-tile Otsu foreground ``[H, W]``: band ``band`` below the tile's own Otsu threshold (dark water)."""
    values = np.asarray(image, dtype=np.float64)[band]
    threshold = otsu_threshold(values, bins)
    if np.isnan(threshold):
        return np.zeros(values.shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        return values < threshold


def binary_confusion(
    prediction: np.ndarray, label: np.ndarray, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """``[2, 2]`` int64 confusion (rows truth, columns prediction) of a foreground mask against labels 0/1."""
    label = np.asarray(label)
    keep = label != ignore_index
    truth, predicted = label[keep] == 1, np.asarray(prediction, dtype=bool)[keep]
    return np.bincount(truth.astype(np.int64) * 2 + predicted, minlength=4).reshape(2, 2)


def binary_scores(confusion: np.ndarray) -> dict[str, float]:
    """Foreground (class 1) IoU and F1 of a ``[2, 2]`` confusion matrix; NaN when undefined."""
    confusion = np.asarray(confusion, dtype=np.float64)
    tp, fp, fn = confusion[1, 1], confusion[0, 1], confusion[1, 0]
    return {
        "iou": float(tp / (tp + fp + fn)) if tp + fp + fn else float("nan"),
        "f1": float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else float("nan"),
    }


def score_predictor(
    predict: Callable[[np.ndarray], np.ndarray], samples: Iterable[Sample], ignore_index: int = IGNORE_INDEX
) -> dict[str, Any]:
    """Summed confusion of ``predict(image) -> foreground mask`` over ``samples``, with its IoU and F1."""
    confusion = np.zeros((2, 2), dtype=np.int64)
    for image, label in samples:
        confusion += binary_confusion(predict(image), label, ignore_index)
    return {**binary_scores(confusion), "confusion_matrix": confusion.tolist()}


def images_in_db(rows: Iterable[dict[str, Any]], num_channels: int) -> list[Sample]:
    """``(dB image, label)`` of decoded segmentation rows (``image``, ``valid_mask``, ``label``), converted by a
    default :class:`~di3cl_hf.image_processing_di3cl.DI3CLImageProcessor` (8-bit tiles: linear onto its dB range)."""
    from ..image_processing_di3cl import DI3CLImageProcessor

    processor = DI3CLImageProcessor(num_channels=num_channels)
    samples = []
    for row in rows:
        image = np.asarray(row["image"])
        valid = row.get("valid_mask")
        db, _ = processor.sar_to_db(image, None if valid is None else np.asarray(valid, dtype=bool))
        samples.append((db.astype(np.float32), np.asarray(row["label"]).astype(np.uint8)))
    return samples


__all__ = [
    "LOG_RATIO_WEIGHTS",
    "ThresholdRule",
    "best_threshold",
    "binary_confusion",
    "binary_scores",
    "fisher_weights",
    "fit_threshold",
    "images_in_db",
    "otsu_predict",
    "otsu_threshold",
    "score_predictor",
]
