"""SAR data: raster I/O, the SARSense and segmentation 🤗 datasets builders, Parquet export, synthetic data.

- :mod:`.sario`: read SAR rasters (GeoTIFF, PNG/JPG, ``.npy``), window by window for large scenes; re-exports
  the writers of :mod:`.geotiff` (atomic, window-by-window, Cloud-Optimized) and the shared types of
  :mod:`.raster` (:class:`SARRaster`, :class:`SARFileError`)
- :mod:`.polarisation`: one sample from one file per polarisation (``{id}_vv.tif`` + ``{id}_vh.tif``)
- :mod:`.classes`: the downstream tasks' class lists (:data:`LANDCOVER_CLASSES`, ...)
- :mod:`.builders`: what the builders share (fingerprints, shards, band names, skipped-file reports)
- :mod:`.sarsense`: the SARSense pre-training builder (:func:`load_sarsense`)
- :mod:`.segmentation`: the segmentation builder (:func:`load_segmentation`), label fractions, splits
- :mod:`.segmentation_dataset`: the torch view the training loops read (:class:`SegmentationDataset`) and the
  splits of a task (:func:`task_splits`)
- :mod:`.flood`: ETCI 2021 and OMBRIA flood sets as they come (:func:`load_flood`, ``layout=`` of the builder)
- :mod:`.parquet`: lossless array columns, decoding (:func:`with_decoding`), Parquet export (its card from
  :mod:`di3cl_hf.hub.dataset_card`)
- :mod:`.samples`: the real Sentinel-1 sample shipped in the repository
- :mod:`.synthetic`: synthetic SAR scenes, patches and segmentation sets
"""

from .builders import AllFilesSkippedError, skipped_files
from .classes import (
    IGNORE_INDEX,
    LANDCOVER_CLASSES,
    ROAD_CLASSES,
    SEGMENTATION_PRESETS,
    TASK_CLASSES,
    WATER_CLASSES,
    SegmentationTask,
)
from .flood import FLOOD_LAYOUTS, etci_block_split, load_flood
from .parquet import (
    SARDecoder,
    dataset_card,
    decode_array,
    decode_batch,
    decode_example,
    encode_array,
    export_parquet,
    with_decoding,
)
from .polarisation import PolarisationError, group_polarisations, read_sample
from .samples import sentinel1_sample
from .sario import SARFileError, list_sar_files, open_scene, read_sar, write_geotiff
from .sarsense import SARSense, load_sarsense
from .segmentation import (
    PAPER_LABEL_FRACTIONS,
    PairingError,
    SARSegmentation,
    check_class_coverage,
    class_names,
    find_segmentation_splits,
    label_fraction_subset,
    load_segmentation,
    mask_to_label,
    match_pairs,
    train_validation_split,
)
from .segmentation_dataset import SegmentationDataset, task_splits

__all__ = [
    "FLOOD_LAYOUTS",
    "IGNORE_INDEX",
    "LANDCOVER_CLASSES",
    "PAPER_LABEL_FRACTIONS",
    "ROAD_CLASSES",
    "SEGMENTATION_PRESETS",
    "TASK_CLASSES",
    "WATER_CLASSES",
    "AllFilesSkippedError",
    "PairingError",
    "PolarisationError",
    "SARDecoder",
    "SARFileError",
    "SARSegmentation",
    "SARSense",
    "SegmentationDataset",
    "SegmentationTask",
    "check_class_coverage",
    "class_names",
    "dataset_card",
    "decode_array",
    "decode_batch",
    "decode_example",
    "encode_array",
    "etci_block_split",
    "export_parquet",
    "find_segmentation_splits",
    "group_polarisations",
    "label_fraction_subset",
    "list_sar_files",
    "load_flood",
    "load_sarsense",
    "load_segmentation",
    "mask_to_label",
    "match_pairs",
    "open_scene",
    "read_sample",
    "read_sar",
    "sentinel1_sample",
    "skipped_files",
    "task_splits",
    "train_validation_split",
    "with_decoding",
    "write_geotiff",
]
