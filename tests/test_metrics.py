"""Segmentation metrics against hand-computed confusion matrices."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from di3cl_hf.training.metrics import (
    SegmentationMetrics,
    cohen_kappa,
    confusion_matrix,
    format_table,
    hungarian_match,
    hungarian_scores,
    relaxed_counts,
    save_json,
    scores_from_confusion,
)

# 10 pixels, the last one ignored. By hand (rows = truth, columns = prediction):
#   truth 0: predicted 0, 0, 1       -> [2, 1, 0]
#   truth 1: predicted 1, 1          -> [0, 2, 0]
#   truth 2: predicted 2, 2, 2, 1    -> [0, 1, 3]
LABELS = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 255])
PREDICTIONS = np.array([0, 0, 1, 1, 1, 2, 2, 2, 1, 2])
EXPECTED = np.array([[2, 1, 0], [0, 2, 0], [0, 1, 3]])


def test_confusion_matrix_numpy_and_torch_agree_with_hand_count():
    assert np.array_equal(confusion_matrix(PREDICTIONS, LABELS, 3), EXPECTED)
    from_torch = confusion_matrix(torch.from_numpy(PREDICTIONS), torch.from_numpy(LABELS), 3)
    assert np.array_equal(from_torch, EXPECTED)
    assert from_torch.dtype == np.int64


def test_scores_equal_hand_computed_values():
    scores = scores_from_confusion(EXPECTED, ["a", "b", "c"])
    # OA = 7/9; row sums 3, 2, 4; column sums 2, 4, 3; p_e = (6 + 8 + 12) / 81 = 26/81;
    # kappa = (63/81 - 26/81) / (1 - 26/81) = 37/55.
    assert scores["overall_accuracy"] == pytest.approx(7 / 9)
    assert scores["kappa"] == pytest.approx(37 / 55)
    # IoU = TP / (row + column - TP): 2/3, 2/4, 3/4; F1 = 2TP / (row + column): 4/5, 4/6, 6/7.
    assert scores["per_class"]["a"]["iou"] == pytest.approx(2 / 3)
    assert scores["per_class"]["b"]["iou"] == pytest.approx(1 / 2)
    assert scores["per_class"]["c"]["iou"] == pytest.approx(3 / 4)
    assert scores["miou"] == pytest.approx((2 / 3 + 1 / 2 + 3 / 4) / 3)
    assert scores["per_class"]["a"]["f1"] == pytest.approx(4 / 5)
    assert scores["per_class"]["b"]["f1"] == pytest.approx(4 / 6)
    assert scores["per_class"]["c"]["f1"] == pytest.approx(6 / 7)
    assert scores["per_class"]["b"]["precision"] == pytest.approx(2 / 4)
    assert scores["per_class"]["c"]["recall"] == pytest.approx(3 / 4)
    assert scores["per_class"]["c"]["support"] == 4
    assert scores["num_pixels"] == 9


def test_accumulator_over_batches_equals_one_shot():
    metric = SegmentationMetrics(num_classes=3, class_names=["a", "b", "c"])
    metric.update(PREDICTIONS[:5].reshape(1, 5), LABELS[:5].reshape(1, 5))
    metric.update(torch.from_numpy(PREDICTIONS[5:]).reshape(1, 5), torch.from_numpy(LABELS[5:]).reshape(1, 5))
    assert np.array_equal(metric.confusion, EXPECTED)
    assert metric.compute()["kappa"] == pytest.approx(37 / 55)
    metric.reset()
    assert metric.confusion.sum() == 0


def test_absent_class_is_left_out_of_the_mean_and_kappa_edge_cases():
    confusion = np.array([[3, 1, 0], [0, 4, 0], [0, 0, 0]])
    scores = scores_from_confusion(confusion)
    assert np.isnan(scores["per_class"]["2"]["iou"])
    assert scores["miou"] == pytest.approx((3 / 4 + 4 / 5) / 2)
    assert cohen_kappa(np.array([[5, 0], [0, 0]])) == 1.0  # one class, perfect agreement
    # Chance-level prediction: kappa 0.
    assert cohen_kappa(np.array([[1, 1], [1, 1]])) == pytest.approx(0.0)


def test_out_of_range_values_raise_clear_errors():
    with pytest.raises(ValueError, match="labels contain values"):
        confusion_matrix(np.array([0, 3]), np.array([0, 3]), 3)
    with pytest.raises(ValueError, match="predictions contain values"):
        confusion_matrix(torch.tensor([0, 5]), torch.tensor([0, 1]), 3)
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(np.zeros(3), np.zeros(4), 3)


def _road_example():
    target = np.zeros((7, 7), dtype=bool)
    target[:, 3] = True  # a vertical road, 7 px
    prediction = np.zeros((7, 7), dtype=bool)
    prediction[:, 4] = True  # the same road, one pixel off
    prediction[0, 0] = True  # a false detection 3 px away from the road
    return prediction, target


def test_relaxed_precision_recall_by_hand():
    prediction, target = _road_example()
    # Buffer 1: the 7 shifted pixels are matched, the stray one is not -> P = 7/8; every road
    # pixel has a predicted pixel within 1 px -> R = 7/7; F1 = 2 * 7/8 / (7/8 + 1) = 14/15.
    assert relaxed_counts(prediction, target, buffer=1) == (7, 8, 7, 7)
    # Strict (buffer 0): nothing overlaps.
    assert relaxed_counts(prediction, target, buffer=0) == (0, 8, 0, 7)
    # Ignoring the stray pixel removes the false positive.
    valid = np.ones((7, 7), dtype=bool)
    valid[0, 0] = False
    assert relaxed_counts(prediction, target, buffer=1, valid_mask=valid) == (7, 7, 7, 7)

    labels = np.where(target, 1, 0)
    predictions = np.where(prediction, 1, 0)
    metric = SegmentationMetrics(2, ["background", "road"], relaxed_class=1, relaxed_buffer=1)
    metric.update(predictions, labels)
    relaxed = metric.compute()["relaxed"]
    assert relaxed["precision"] == pytest.approx(7 / 8)
    assert relaxed["recall"] == pytest.approx(1.0)
    assert relaxed["f1"] == pytest.approx(14 / 15)
    assert relaxed["class"] == "road"
    # The strict F1 of the road class is 0 (no pixel overlaps).
    assert metric.compute()["per_class"]["road"]["f1"] == 0.0


def test_hungarian_matching_recovers_permuted_clusters():
    labels = np.array([0, 0, 1, 1, 2, 2])
    clusters = np.array([2, 2, 0, 0, 1, 1])
    assert hungarian_match(clusters, labels, 3, 3) == {0: 1, 1: 2, 2: 0}
    assert hungarian_scores(clusters, labels, 3, 3)["miou"] == pytest.approx(1.0)
    # A fourth cluster stays unmatched; its pixel counts as a miss for class 2.
    clusters = np.array([2, 2, 0, 0, 1, 3])
    scores = hungarian_scores(clusters, labels, 4, 3)
    assert scores["per_class"]["2"]["iou"] == pytest.approx(0.5)
    assert scores["miou"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert scores["overall_accuracy"] == pytest.approx(5 / 6)


def test_json_and_table_in_paper_layout(tmp_path):
    metric = SegmentationMetrics(3, ["water", "road", "city"], relaxed_class=1)
    metric.update(PREDICTIONS.reshape(1, 10), LABELS.reshape(1, 10))
    scores = metric.compute()
    path = save_json({"di3cl": scores, "undefined": float("nan")}, tmp_path / "scores.json")
    reloaded = json.loads(path.read_text())
    assert reloaded["undefined"] is None
    assert reloaded["di3cl"]["kappa"] == pytest.approx(37 / 55)
    assert not list(tmp_path.glob(".*.tmp"))
    table = format_table({"DI3CL": reloaded["di3cl"], "Random": scores})
    lines = table.strip().splitlines()
    assert lines[0] == (
        "| Method | OA | Kappa | mIoU | F1 water | F1 road | F1 city | relaxed P | relaxed R | relaxed F1 |"
    )
    assert lines[2].startswith("| DI3CL | 77.78 | 67.27 | 63.89 | 80.00 | 66.67 | 85.71 |")
    assert len(lines) == 4
