"""Online monitor of pre-training: a linear probe of a labelled validation split on the frozen query encoder.

Contrastive losses say little about what an encoder is worth (and a collapsing run can keep a low loss), so
every ``monitor_steps`` updates :class:`ProbeMonitor` scores the encoder on a small labelled set, as solo-learn's
online k-NN / linear evaluation does, and the trainer keeps the best checkpoint by that score.

The probe: the query encoder (eval mode, no gradient) gives stage3 (stride 16) and stage4 (stride 32, upsampled
to stride 16) feature maps; each stride-16 cell is labelled by majority of its valid pixels (cells less than
half valid are ignored). A ridge regression on standardised features (closed form, deterministic) is fitted on
half of the tiles and thresholded at 0 on the other half; the score is the foreground IoU of that half at the
stride-16 resolution (``probe_iou``). A 1-channel encoder given multi-band tiles (e.g. VV + VH) embeds each band
on its own and concatenates the features. Nothing of the probe touches the model's weights or its queues.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data.classes import IGNORE_INDEX

CELL = 16
"""Stride of the probe's cells (stage3)."""


@dataclass
class ProbeData:
    """Normalised tiles and their cell labels.

    Attributes:
        pixel_values: ``[N, C, H, W]`` float32 (the pre-training processor's normalisation).
        cell_labels: ``[N, H/16, W/16]`` int64: 1 foreground, 0 background, -1 ignored.
        fit: ``[N]`` bool: tiles the probe is fitted on (the others are scored).
    """

    pixel_values: torch.Tensor
    cell_labels: torch.Tensor
    fit: torch.Tensor


def cell_labels(label: np.ndarray, cell: int = CELL, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Majority label of each ``cell``² block of a binary ``[H, W]`` label (-1 where under half is labelled)."""
    height, width = (label.shape[0] // cell) * cell, (label.shape[1] // cell) * cell
    blocks = label[:height, :width].reshape(height // cell, cell, width // cell, cell).swapaxes(1, 2)
    labelled = blocks != ignore_index
    counts = labelled.sum(axis=(2, 3))
    foreground = ((blocks == 1) & labelled).sum(axis=(2, 3))
    result = (foreground * 2 > counts).astype(np.int64)
    result[counts * 2 < cell * cell] = -1
    return result


def load_probe_data(data_dir: str | os.PathLike[str], processor, max_tiles: int = 256) -> ProbeData:
    """Read a binary segmentation folder (any layout :func:`~di3cl_hf.data.load_segmentation` reads, task
    ``water``; every split) into :class:`ProbeData`, normalised by ``processor`` (bands one by one for a
    1-channel processor). Tiles alternate between the fit half and the scored half in file order.

    Raises:
        ValueError: No labelled tile, or tiles of different sizes.
    """
    from ..data.segmentation import load_segmentation

    splits = load_segmentation(data_dir, task="water", image_dtype=None)
    images, labels = [], []
    for split in splits.values():
        for example in split:
            if len(images) >= max_tiles:
                break
            image = np.asarray(example["image"])
            valid = example.get("valid_mask")
            bands = (
                [image[i : i + 1] for i in range(image.shape[0])] if processor.num_channels == 1 else [image]
            )
            values = [processor.sar_to_pixel_values(band, valid)[0] for band in bands]
            images.append(np.concatenate(values, axis=0))
            labels.append(cell_labels(np.asarray(example["label"])))
    if not images:
        raise ValueError(f"{data_dir}: no labelled tile for the pre-training monitor")
    if len({image.shape for image in images}) != 1:
        raise ValueError(
            f"{data_dir}: monitor tiles must share one size, got {sorted({i.shape for i in images})}"
        )
    fit = torch.arange(len(images)) % 2 == 0
    return ProbeData(torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(labels)), fit)


@torch.no_grad()
def probe_features(
    encoder: torch.nn.Module, pixel_values: torch.Tensor, batch_size: int = 16
) -> torch.Tensor:
    """``[N, D, H/16, W/16]`` stage3 + upsampled stage4 features of a timm ``features_only`` encoder (a 1-channel
    encoder given C-band inputs embeds each band and concatenates)."""
    in_channels = _in_channels(encoder)
    outputs = []
    was_training = encoder.training
    encoder.eval()
    try:
        device = next(encoder.parameters()).device
        for start in range(0, pixel_values.shape[0], batch_size):
            batch = pixel_values[start : start + batch_size].to(device)
            groups = batch.split(1, dim=1) if in_channels == 1 and batch.shape[1] > 1 else [batch]
            parts = []
            for group in groups:
                maps = encoder(group.contiguous())
                stage3, stage4 = maps[-2].float(), maps[-1].float()
                stage4 = F.interpolate(stage4, size=stage3.shape[-2:], mode="bilinear", align_corners=False)
                parts += [stage3, stage4]
            outputs.append(torch.cat(parts, dim=1).cpu())
    finally:
        encoder.train(was_training)
    return torch.cat(outputs)


def _in_channels(encoder: torch.nn.Module) -> int:
    for module in encoder.modules():
        if isinstance(module, torch.nn.Conv2d):
            return module.in_channels
    raise ValueError("probe_features: the encoder has no convolution")


def ridge_probe_iou(
    features: torch.Tensor, labels: torch.Tensor, fit: torch.Tensor, ridge: float = 1.0
) -> float:
    """Fit a ridge regression of ±1 labels on the ``fit`` tiles' cells, score foreground IoU on the others.

    Args:
        features: ``[N, D, h, w]`` cell features.
        labels: ``[N, h, w]`` 1 / 0 / -1 (ignored).
        fit: ``[N]`` bool, tiles to fit on.
        ridge: L2 penalty (on standardised features, relative to the number of fitted cells).

    Returns:
        IoU of the foreground on the scored tiles; NaN when they hold no foreground and none is predicted.
    """
    cells = features.permute(0, 2, 3, 1).double()
    x_fit, y_fit = _labelled(cells[fit], labels[fit])
    x_test, y_test = _labelled(cells[~fit], labels[~fit])
    mean, std = x_fit.mean(0), x_fit.std(0).clamp_min(1e-6)
    x_fit, x_test = (x_fit - mean) / std, (x_test - mean) / std
    x_fit = torch.cat([x_fit, torch.ones_like(x_fit[:, :1])], dim=1)
    x_test = torch.cat([x_test, torch.ones_like(x_test[:, :1])], dim=1)
    # balanced weights: each class weighs the same in the fit (water is a few percent of the cells)
    positive = (y_fit == 1).double().mean().clamp(1e-3, 1 - 1e-3)
    weights = torch.where(y_fit == 1, 0.5 / positive, 0.5 / (1 - positive))
    targets = y_fit.double() * 2 - 1
    gram = (x_fit * weights[:, None]).T @ x_fit
    gram += ridge * x_fit.shape[0] * torch.eye(gram.shape[0], dtype=gram.dtype)
    coefficients = torch.linalg.solve(gram, (x_fit * weights[:, None]).T @ targets)
    predicted = (x_test @ coefficients) > 0
    truth = y_test == 1
    union = (predicted | truth).sum().item()
    return (predicted & truth).sum().item() / union if union else math.nan


def _labelled(cells: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    keep = labels >= 0
    return cells[keep], labels[keep]


class ProbeMonitor:
    """Scores an encoder with :func:`ridge_probe_iou` on fixed :class:`ProbeData`; remembers the best score.

    Args:
        data: The labelled tiles.
        every: Score every this many updates (the trainer asks :meth:`due`).
    """

    metric = "probe_iou"

    def __init__(self, data: ProbeData, every: int) -> None:
        if every <= 0:
            raise ValueError(f"ProbeMonitor: every={every}, expected a positive number of updates")
        self.data = data
        self.every = int(every)
        self.best_score = -math.inf
        self.best_step: int | None = None
        self.history: list[tuple[int, float]] = []

    def due(self, step: int, last_step: int) -> bool:
        """Whether update ``step`` is scored (every ``every`` updates, and the last one)."""
        return step % self.every == 0 or step == last_step

    def score(self, encoder: torch.nn.Module, step: int) -> tuple[float, bool]:
        """``(probe IoU, whether it is the best so far)``; a NaN score is never the best."""
        features = probe_features(encoder, self.data.pixel_values)
        value = ridge_probe_iou(features, self.data.cell_labels, self.data.fit)
        self.history.append((int(step), float(value)))
        improved = not math.isnan(value) and value > self.best_score
        if improved:
            self.best_score, self.best_step = float(value), int(step)
        return value, improved

    def state_dict(self) -> dict:
        """JSON-able state (best score and step, history) for the trainer state of a checkpoint."""
        return {"best_score": self.best_score, "best_step": self.best_step, "history": self.history}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (a resumed run keeps its best checkpoint)."""
        self.best_score = float(state.get("best_score", -math.inf))
        self.best_step = state.get("best_step")
        self.history = [(int(s), float(v)) for s, v in state.get("history", [])]


__all__ = [
    "CELL",
    "ProbeData",
    "ProbeMonitor",
    "cell_labels",
    "load_probe_data",
    "probe_features",
    "ridge_probe_iou",
]
