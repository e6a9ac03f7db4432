"""Rebuild this folder from the original downloads (kept for provenance; pass the folder that holds them).

Copies are lossless: same dtype, values, georeferencing and nodata; only the compression changes
(DEFLATE, level 9, with the horizontal / floating-point predictor). The Sen1Floods11 chip, stored there
as one VV+VH file, is split into one file per polarisation, as Sentinel-1 products come.

    python samples/sentinel1/build_sample.py SOURCE_DIR
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.shutil import copy

HERE = Path(__file__).resolve().parent
# the smallest scenes once recompressed (the folder must stay under 15 MB in all)
SCENES = ("059", "199", "101", "102", "030", "003", "018", "196", "004")
CHIPS = ("awc00", "jja10", "pxs10", "qxb32")
SPAIN = "Spain_7370579"


def _options(dtype: str) -> dict[str, object]:
    predictor = 3 if np.dtype(dtype).kind == "f" else 2 if np.dtype(dtype).itemsize > 1 else 2
    return {"COMPRESS": "DEFLATE", "ZLEVEL": 9, "PREDICTOR": predictor, "TILED": "YES"}


def _copy(source: Path, target: Path) -> None:
    with rasterio.open(source) as src:
        dtype = src.dtypes[0]
    target.parent.mkdir(parents=True, exist_ok=True)
    copy(source, target, driver="GTiff", **_options(dtype))


def _split_bands(source: Path, targets: dict[int, Path]) -> None:
    with rasterio.open(source) as src:
        profile = src.profile | _options(src.dtypes[0]) | {"count": 1, "blockxsize": 256, "blockysize": 256}
        profile = {k.lower() if k.isupper() else k: v for k, v in profile.items()}
        for band, target in targets.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            with rasterio.open(target, "w", **profile) as dst:
                dst.write(src.read(band), 1)
                dst.set_band_description(1, src.descriptions[band - 1])
                dst.update_tags(**src.tags())


def main(shared: Path) -> None:
    scenes, chips, real = shared / "s1-vh-scenes", shared / "s1-water-chips", shared / "real-sar"
    rows = {row["file"]: row for row in csv.DictReader(open(scenes / "scenes.csv"))}
    with open(HERE / "scenes" / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "sensor", "band", "frequency_ghz", "polarisation", "resolution_m",
                         "source_dataset", "sar_product", "sar_date"])  # fmt: skip
        for scene in SCENES:
            _copy(scenes / f"{scene}.tif", HERE / "scenes" / f"{scene}.tif")
            row = rows[f"{scene}.tif"]
            writer.writerow([f"{scene}.tif", "Sentinel-1A IW GRD", "C", 5.405, "VH", 10.0,
                             "Optical-SAR-dataset (VolkovVl)", row["sar_product"], row["sar_date"]])  # fmt: skip
    for chip in CHIPS:
        for pol in ("vv", "vh"):
            _copy(chips / f"{chip}_{pol}.tif", HERE / "water" / "images" / f"{chip}_{pol}.tif")
        _copy(chips / f"{chip}.tif", HERE / "water" / "masks" / f"{chip}.tif")
    images = HERE / "water" / "images"
    _split_bands(real / f"{SPAIN}_S1Hand.tif", {1: images / f"{SPAIN}_vv.tif", 2: images / f"{SPAIN}_vh.tif"})
    _copy(real / f"{SPAIN}_LabelHand.tif", HERE / "water" / "masks" / f"{SPAIN}.tif")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python samples/sentinel1/build_sample.py SOURCE_DIR")
    main(Path(sys.argv[1]))
