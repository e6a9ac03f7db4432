"""Class lists of the downstream tasks: the one place every module (data, synthetic, Space) takes them from."""

from __future__ import annotations

from dataclasses import dataclass

IGNORE_INDEX = 255
"""Label value ignored by losses and metrics (unlabelled / nodata pixels)."""

LANDCOVER_CLASSES: tuple[str, ...] = (
    "water",
    "wetland",
    "farmland",
    "forest",
    "meadow",
    "road",
    "village",
    "city",
    "ground",
    "other",
)
"""The paper's 10 land-cover classes; a class's id is its index here."""

WATER_CLASSES: tuple[str, ...] = ("not_water", "water")
"""Binary water segmentation (mask 0/1)."""

ROAD_CLASSES: tuple[str, ...] = ("background", "road")
"""Binary road segmentation (mask 0/1)."""

TASK_CLASSES: dict[str, tuple[str, ...]] = {
    "landcover": LANDCOVER_CLASSES,
    "water": WATER_CLASSES,
    "roads": ROAD_CLASSES,
}
"""Class names of the paper's three downstream tasks."""


@dataclass(frozen=True)
class SegmentationTask:
    """A downstream segmentation task.

    Attributes:
        name: Task name.
        class_names: Class names; mask value ``i`` is class ``class_names[i]``.
        ignore_index: Label value ignored by losses/metrics; negative mask values (e.g. the −1
            "no data" of Sen1Floods11 masks), the mask's nodata value and pixels where the image is
            invalid are mapped to it.
    """

    name: str
    class_names: tuple[str, ...]
    ignore_index: int = IGNORE_INDEX

    @property
    def num_labels(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def id2label(self) -> dict[int, str]:
        """``{id: name}`` for model configs."""
        return dict(enumerate(self.class_names))


SEGMENTATION_PRESETS: dict[str, SegmentationTask] = {
    name: SegmentationTask(name, classes) for name, classes in TASK_CLASSES.items()
}
"""The paper's three downstream tasks."""

__all__ = [
    "IGNORE_INDEX",
    "LANDCOVER_CLASSES",
    "ROAD_CLASSES",
    "SEGMENTATION_PRESETS",
    "TASK_CLASSES",
    "WATER_CLASSES",
    "SegmentationTask",
]
