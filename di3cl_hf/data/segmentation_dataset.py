"""Segmentation splits as the training loops read them: a torch ``Dataset`` view and the splits of a task.

- :class:`SegmentationDataset`: SAR image -> ``pixel_values`` through the model's image processor, nodata
  pixels -> the ignore label, random crops / flips / 90-degree rotations for training (fine-tuning, k-means and
  probes read the same samples the same way).
- :func:`task_splits`: the train (label-fraction subset), validation and test splits of a task folder.

Only the processor's interface is used (``sar_to_pixel_values``, ``bands``): no model or training code.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .segmentation import class_names as dataset_class_names
from .segmentation import label_fraction_subset, load_segmentation


class SegmentationDataset(Dataset):
    """Torch view of a segmentation split: SAR image -> ``pixel_values`` through the processor,
    nodata pixels -> ignore label, random crop / flips / 90-degree rotations when training.

    Args:
        dataset: a decoded ``datasets.Dataset`` (:func:`di3cl_hf.data.load_segmentation`) whose rows
            hold ``image`` (float ``[C, H, W]``, any radiometry the processor accepts), ``label``
            (int ``[H, W]``) and optionally ``valid_mask`` (bool ``[H, W]``).
        processor: the :class:`DI3CLImageProcessor` of the model.
        crop_size: side of the random crops when ``train`` (``None``: whole patches).
        train: apply the random geometric augmentation.
        ignore_index: label given to invalid (nodata) pixels.
        foreground_crop_probability: when training with crops, the chance that a crop is centred on a random
            pixel of a class other than 0 (and not ignored), as nnU-Net oversamples foreground; a sample without
            such a pixel gets a plain random crop. Rare classes (water in a few labelled tiles) otherwise
            reach the loss in too few crops for a model to predict them at all.
    """

    def __init__(
        self,
        dataset: Any,
        processor: Any,
        crop_size: int | None = None,
        train: bool = False,
        ignore_index: int = 255,
        foreground_crop_probability: float = 0.0,
    ) -> None:
        if not 0.0 <= foreground_crop_probability <= 1.0:
            raise ValueError(
                f"SegmentationDataset: foreground_crop_probability={foreground_crop_probability}, expected 0..1"
            )
        self.foreground_crop_probability = float(foreground_crop_probability)
        self.dataset = dataset
        self.processor = processor
        self.crop_size = crop_size
        self.train = train
        self.ignore_index = ignore_index

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.dataset[int(index)]
        # the source dtype: the processor's "auto" radiometry then reads uint8 (Pauli RGB, quick-looks)
        # as dn8 and integer DN as dn16, exactly as `di3cl predict` reads the same files
        image = np.asarray(sample["image"])
        if image.ndim == 2:
            image = image[None]
        valid = sample.get("valid_mask")
        valid = None if valid is None else np.asarray(valid, dtype=bool)
        # bands chosen by name (processor.bands, e.g. ("VV", "VH") of quad-pol rows) need the row's names
        names = {"band_names": sample.get("band_names")} if getattr(self.processor, "bands", None) else {}
        pixel_values, valid = self.processor.sar_to_pixel_values(image, valid, **names)
        labels = np.asarray(sample["label"], dtype=np.int64).copy()
        if labels.shape != pixel_values.shape[-2:]:
            raise ValueError(
                f"{sample.get('path', f'sample {index}')}: label of shape {labels.shape} for an image of "
                f"shape {pixel_values.shape}; expected the same height and width"
            )
        labels[~np.asarray(valid, dtype=bool)] = self.ignore_index
        pixel_values_t = torch.from_numpy(np.ascontiguousarray(pixel_values, dtype=np.float32))
        labels_t = torch.from_numpy(labels)
        if self.train:
            pixel_values_t, labels_t = self._augment(pixel_values_t, labels_t)
        return {"pixel_values": pixel_values_t.contiguous(), "labels": labels_t.contiguous()}

    def _augment(self, pixel_values: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = labels.shape
        if self.crop_size is not None:
            if height < self.crop_size or width < self.crop_size:
                pad_h, pad_w = max(self.crop_size - height, 0), max(self.crop_size - width, 0)
                pixel_values = F.pad(pixel_values, (0, pad_w, 0, pad_h))
                labels = F.pad(labels, (0, pad_w, 0, pad_h), value=self.ignore_index)
                height, width = labels.shape
            top, left = self._crop_corner(labels)
            pixel_values = pixel_values[:, top : top + self.crop_size, left : left + self.crop_size]
            labels = labels[top : top + self.crop_size, left : left + self.crop_size]
        # SAR has no preferred orientation: flips and 90-degree rotations are label-preserving.
        if torch.rand(()) < 0.5:
            pixel_values, labels = pixel_values.flip(-1), labels.flip(-1)
        if torch.rand(()) < 0.5:
            pixel_values, labels = pixel_values.flip(-2), labels.flip(-2)
        turns = int(torch.randint(0, 4, ()))
        if turns:
            pixel_values, labels = pixel_values.rot90(turns, (-2, -1)), labels.rot90(turns, (-2, -1))
        return pixel_values, labels

    def _crop_corner(self, labels: torch.Tensor) -> tuple[int, int]:
        """Top-left corner of a training crop: around a random foreground pixel with probability
        ``foreground_crop_probability`` (when the sample has one), else uniform."""
        height, width = labels.shape
        size = self.crop_size
        if self.foreground_crop_probability and torch.rand(()) < self.foreground_crop_probability:
            foreground = ((labels != 0) & (labels != self.ignore_index)).nonzero()
            if len(foreground):
                row, column = foreground[int(torch.randint(0, len(foreground), ()))].tolist()
                top = min(max(row - size // 2, 0), height - size)
                left = min(max(column - size // 2, 0), width - size)
                return top, left
        return int(torch.randint(0, height - size + 1, ())), int(torch.randint(0, width - size + 1, ()))


def task_splits(
    data_dir: str | os.PathLike,
    task: str,
    *,
    class_names: Sequence[str] | None = None,
    layout: str | None = None,
    nodata: float | None = None,
    label_fraction: float = 1.0,
    label_fraction_positive: bool = True,
    seed: int = 0,
) -> tuple[Any, Any, Any, list[str]]:
    """Train (label-fraction subset), validation and test splits of ``task`` under ``data_dir``, and the class names.

    A missing validation split falls back to the test split (the same object; it is only used for
    the optional periodic validation, never to select a model) and vice versa; a set with only a
    train split raises (evaluating on training samples would be meaningless). With ``label_fraction_positive``,
    binary tasks and flood layouts keep at least one sample with a foreground pixel
    (:func:`~di3cl_hf.data.segmentation.label_fraction_subset`).
    """
    splits = load_segmentation(
        data_dir, task=task, class_names=class_names, image_dtype=None, layout=layout, nodata=nodata
    )
    if "train" not in splits:
        raise ValueError(f"{data_dir}: no 'train' split for task {task!r} (found {list(splits)})")
    validation = splits.get("validation", splits.get("test"))
    test = splits.get("test", splits.get("validation"))
    if validation is None:
        raise ValueError(
            f"{data_dir}: task {task!r} has only a train split; expected a 'validation' or 'test' split"
        )
    train, names = splits["train"], dataset_class_names(splits["train"])
    if label_fraction < 1.0:
        foreground = label_fraction_positive and (len(names) == 2 or layout is not None)
        positive = list(range(1, len(names))) if foreground else None
        train = label_fraction_subset(train, label_fraction, seed=seed, positive_classes=positive)
    return train, validation, test, names


__all__ = ["SegmentationDataset", "task_splits"]
