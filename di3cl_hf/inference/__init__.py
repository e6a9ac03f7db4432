"""Inference: whole georeferenced scenes and feature embeddings.

- :mod:`.scene`: tiled, blended prediction of scenes of any size into a Cloud-Optimized GeoTIFF (:func:`predict_scene`)
- :mod:`.embeddings`: pooled or dense encoder features of patches to ``.npy`` / Parquet (:func:`embed_files`)
- :mod:`.outputs`: output-path checks shared by both (never overwrite an input; existing outputs need ``overwrite``)
"""

from .embeddings import embed_files, save_embeddings
from .scene import ScenePrediction, predict_scene

__all__ = ["ScenePrediction", "embed_files", "predict_scene", "save_embeddings"]
