"""What made a map: a fingerprint of the model plus the options, stored in the output GeoTIFF's tags.

``di3cl predict`` writes :data:`PROVENANCE_TAG` into every map it writes; many-scene runs skip a scene only
when its existing map carries the same provenance (same weights, same processor settings, same tiling, bands,
output type, backend and precision). A map made by another model or with other options is recomputed.

Example:
    >>> tags = {PROVENANCE_TAG: prediction_provenance(model, processor, {"tile_size": 512})}  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import rasterio
import torch
from rasterio.errors import RasterioError

PROVENANCE_TAG = "DI3CL_PROVENANCE"


def model_fingerprint(model: Any) -> str:
    """A digest of what the model computes: every parameter and buffer (names, dtypes, shapes, values) and its
    config; for an ONNX model (``model.path`` to a ``.onnx`` file) the file's bytes."""
    digest = hashlib.blake2b(digest_size=16)
    path = getattr(model, "path", None)
    if isinstance(path, Path) and path.suffix.lower() == ".onnx" and path.is_file():
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    config = getattr(model, "config", None)
    if hasattr(config, "to_json_string"):
        digest.update(config.to_json_string(use_diff=False).encode())
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{data.dtype}:{tuple(tensor.shape)};".encode())
        if data.numel():
            digest.update(data.view(torch.uint8).numpy())
    return digest.hexdigest()


def prediction_provenance(model: Any, processor: Any, options: dict[str, Any]) -> str:
    """The :data:`PROVENANCE_TAG` value: model fingerprint, processor settings digest and the map's options."""
    settings = processor.to_json_string() if hasattr(processor, "to_json_string") else repr(processor)
    record = {
        "model": model_fingerprint(model),
        "processor": hashlib.blake2b(settings.encode(), digest_size=8).hexdigest(),
        "options": options,
    }
    return json.dumps(record, sort_keys=True, default=str)


def read_provenance(path: str | Path) -> str | None:
    """The :data:`PROVENANCE_TAG` of a GeoTIFF (``None``: no tag, or not readable)."""
    try:
        with rasterio.open(path) as dataset:
            return dataset.tags().get(PROVENANCE_TAG)
    except (RasterioError, OSError):
        return None


__all__ = ["PROVENANCE_TAG", "model_fingerprint", "prediction_provenance", "read_provenance"]
