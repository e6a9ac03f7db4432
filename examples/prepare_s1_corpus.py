"""Build the real Sentinel-1 pre-training corpus and the online-monitor folder (issue #24).

    python examples/prepare_s1_corpus.py --scenes S1_VH_SCENES --etci ETCI_DIR --ombria OMBRIA_DIR --output runs/s1-data

Writes ``OUTPUT/corpus/`` (unlabelled, one band per image, for ``examples/pretrain.py --data_dir``):

- ``scenes/*.tif``: links to the whole Sentinel-1 VH scenes (1024² uint8 quick-looks); the recipe cuts random
  256² crops from them (``--sample_crop_size 256``), each scene drawn once per 256² of its area per epoch;
- ``etci/{tile}-vv.tif``, ``etci/{tile}-vh.tif``: the ETCI 2021 tiles of the **train** blocks only
  (:func:`di3cl_hf.data.flood.etci_block_split`), one single-band GeoTIFF per polarisation with nodata 255 (the
  source's no-data value) so that no-data pixels are masked; labels are not used;
- ``ombria/before-NNNN.png``, ``ombria/after-NNNN.png``: links to the OMBRIA **train** images (labels unused).

No test image of the evaluations (ETCI test and validation blocks, OMBRIA test, the five water chips, MSTAR) is
in the corpus. ``OUTPUT/monitor/`` holds the ETCI **validation** blocks as ``images/{tile}.tif`` (VV, VH; nodata
255) + ``masks/{tile}.tif`` (water = flood ∪ permanent water, 0/1; 255 where the image has no data): the labelled
folder of the online probe (``--monitor_data_dir``). Existing files are never overwritten.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from di3cl_hf.data.flood import etci_block_split

NODATA = 255


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        target.symlink_to(source.resolve())


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as dataset:
        return dataset.read(1)


def _write(array: np.ndarray, target: Path, nodata: int | None) -> None:
    """A plain (ungeoreferenced) GeoTIFF, written to a temporary name then renamed; never overwrites."""
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    array = array if array.ndim == 3 else array[None]
    temporary = target.with_name(f".{target.name}.tmp")
    profile = {"driver": "GTiff", "height": array.shape[1], "width": array.shape[2], "count": array.shape[0]}
    profile |= {"dtype": array.dtype.name, "nodata": nodata, "compress": "deflate"}
    with rasterio.open(temporary, "w", **profile) as dataset:
        dataset.write(array)
    os.replace(temporary, target)


def etci_tiles(etci: Path) -> list[str]:
    """ETCI tile stems (without the polarisation suffix) that have both polarisations."""
    vv = {p.name[: -len("_vv.png")] for p in (etci / "images").glob("*_vv.png")}
    vh = {p.name[: -len("_vh.png")] for p in (etci / "images").glob("*_vh.png")}
    missing = sorted(vv ^ vh)
    if missing:
        raise SystemExit(f"{etci}/images: tiles without both _vv and _vh files: {missing[:5]}")
    return sorted(vv)


def build(scenes: Path, etci: Path, ombria: Path, output: Path) -> dict[str, int]:
    counts = {"scenes": 0, "etci_train_images": 0, "ombria_train_images": 0, "monitor_tiles": 0}
    for scene in sorted(scenes.glob("*.tif")):
        _link(scene, output / "corpus" / "scenes" / scene.name)
        counts["scenes"] += 1
    for tile in etci_tiles(etci):
        split = etci_block_split(tile)
        bands = [_read(etci / "images" / f"{tile}_{pol}.png") for pol in ("vv", "vh")]
        if split == "train":
            for pol, band in zip(("vv", "vh"), bands, strict=True):
                _write(band, output / "corpus" / "etci" / f"{tile}-{pol}.tif", NODATA)
                counts["etci_train_images"] += 1
        elif split == "validation":
            labels = [_read(etci / "labels" / f"{tile}_{kind}.png") for kind in ("flood", "water_body")]
            water = ((labels[0] > 0) | (labels[1] > 0)).astype(np.uint8)
            water[(bands[0] == NODATA) | (bands[1] == NODATA)] = NODATA
            _write(np.stack(bands), output / "monitor" / "images" / f"{tile}.tif", NODATA)
            _write(water, output / "monitor" / "masks" / f"{tile}.tif", NODATA)
            counts["monitor_tiles"] += 1
    for kind, folder in (("before", "BEFORE"), ("after", "AFTER")):
        for image in sorted((ombria / "train" / folder).glob("*.png")):
            number = image.stem.rsplit("_", 1)[-1]
            _link(image, output / "corpus" / "ombria" / f"{kind}-{number}.png")
            counts["ombria_train_images"] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenes", type=Path, required=True, help="Folder of Sentinel-1 scenes (*.tif).")
    parser.add_argument("--etci", type=Path, required=True, help="ETCI 2021 folder (images/, labels/).")
    parser.add_argument(
        "--ombria", type=Path, required=True, help="OMBRIA folder (train/BEFORE, train/AFTER)."
    )
    parser.add_argument("--output", type=Path, required=True, help="Where corpus/ and monitor/ are written.")
    args = parser.parse_args()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        counts = build(args.scenes, args.etci, args.ombria, args.output)
    print(", ".join(f"{key} {value}" for key, value in counts.items()))


if __name__ == "__main__":
    main()
