"""Inference: whole georeferenced scenes and feature embeddings.

- :mod:`.scene`: tiled, blended prediction of scenes of any size into a Cloud-Optimized GeoTIFF (:func:`predict_scene`)
- :mod:`.embeddings`: pooled or dense encoder features of patches to ``.npy`` / Parquet (:func:`embed_files`)
- :mod:`.outputs`: output-path checks shared by both (never overwrite an input; existing outputs need ``overwrite``)
- :mod:`.sources`: what predict_scene reads (a path, per-polarisation files, an open rasterio dataset, a ``SARRaster``)
- :mod:`.batch`: many scenes, resumable, split between the processes of ``accelerate launch`` (``di3cl predict --output-dir``)
- :mod:`.onnx`: ONNX export and the onnxruntime model (optional ``[onnx]`` extra; imported only when used)
"""

from .embeddings import embed_files, save_embeddings
from .scene import ScenePrediction, predict_scene

__all__ = ["ScenePrediction", "embed_files", "predict_scene", "save_embeddings"]
