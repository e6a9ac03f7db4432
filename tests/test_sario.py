"""Reading and writing SAR rasters (di3cl_hf.data.sario): round trips, masks, windows, errors, real files."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image
from rasterio.windows import Window

from di3cl_hf.data.sario import (
    SARFileError,
    create_geotiff,
    list_sar_files,
    open_scene,
    read_sar,
    write_geotiff,
)

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real-sar"
S1_CHIP = REAL / "Spain_7370579_S1Hand.tif"
S1_LABEL = REAL / "Spain_7370579_LabelHand.tif"
PYROSAR = REAL / "S1A__IW___A_20150309T173017_VV_grd_mli_geo_norm_db.tif"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"real SAR samples not found at {REAL}")

TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4800000.0)


def _random(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == "complex64":
        return (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
    if dtype.startswith("float"):
        return (rng.normal(-12, 5, size=shape)).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)


@pytest.mark.parametrize(
    ("dtype", "bands"),
    [
        ("float32", 2),
        ("float32", 1),
        ("int16", 1),
        ("uint16", 2),
        ("uint8", 1),
        ("complex64", 2),
        ("float64", 1),
    ],
)
def test_geotiff_round_trip_is_bit_exact(tmp_path, dtype, bands):
    array = _random(dtype, (bands, 37, 53))
    path = write_geotiff(
        tmp_path / "x.tif", array, crs="EPSG:32631", transform=TRANSFORM, band_names=["VV", "VH"][:bands]
    )
    raster = read_sar(path)
    assert raster.array.dtype == np.dtype(dtype)
    assert raster.array.shape == (bands, 37, 53)
    np.testing.assert_array_equal(raster.array, array)
    assert raster.crs.to_epsg() == 32631
    assert raster.transform == TRANSFORM
    assert raster.band_names == ("VV", "VH")[:bands]
    assert raster.valid_mask.all()
    assert raster.path == path
    with rasterio.open(path) as ds:
        assert ds.profile["tiled"] and ds.profile["compress"] == "deflate"
    assert [p.name for p in tmp_path.iterdir()] == ["x.tif"]  # no temporary file left behind


def test_cint16_is_read_as_exact_complex64(tmp_path):
    rng = np.random.default_rng(1)
    real, imag = rng.integers(-3000, 3000, (2, 20, 24))
    path = tmp_path / "slc.tif"
    with rasterio.open(path, "w", driver="GTiff", width=24, height=20, count=1, dtype="complex_int16") as ds:
        ds.write((real + 1j * imag).astype(np.complex64)[None])
    raster = read_sar(path)
    assert raster.array.dtype == np.complex64
    np.testing.assert_array_equal(raster.array[0].real, real)
    np.testing.assert_array_equal(raster.array[0].imag, imag)
    assert raster.transform is None and raster.crs is None


def test_valid_mask_from_nodata_nan_and_inf(tmp_path):
    array = np.full((2, 8, 9), -10.0, np.float32)
    array[0, 1, 1] = -99.0  # nodata in one band invalidates the pixel
    array[1, 2, 2] = np.nan
    array[0, 3, 3] = np.inf
    raster = read_sar(write_geotiff(tmp_path / "n.tif", array, nodata=-99.0))
    assert raster.nodata == -99.0
    expected = np.ones((8, 9), bool)
    expected[1, 1] = expected[2, 2] = expected[3, 3] = False
    np.testing.assert_array_equal(raster.valid_mask, expected)

    nan_nodata = read_sar(write_geotiff(tmp_path / "nan.tif", array, nodata=float("nan")))
    assert np.isnan(nan_nodata.nodata)
    assert nan_nodata.valid_mask.sum() == 8 * 9 - 2  # NaN and inf; -99 is data here


def test_valid_mask_from_an_internal_mask_band(tmp_path):
    path = tmp_path / "masked.tif"
    array = np.full((1, 16, 16), 7, np.uint16)
    mask = np.ones((16, 16), np.uint8) * 255
    mask[:4] = 0
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=16,
            height=16,
            count=1,
            dtype="uint16",
            crs="EPSG:32631",
            transform=TRANSFORM,
        ) as ds:
            ds.write(array)
            ds.write_mask(mask)
    raster = read_sar(path)
    np.testing.assert_array_equal(raster.array, array)  # masked pixels keep their values
    np.testing.assert_array_equal(raster.valid_mask, mask > 0)


def test_windows_transforms_and_boundless_reads(tmp_path):
    array = _random("float32", (2, 100, 130))
    path = write_geotiff(tmp_path / "scene.tif", array, crs="EPSG:32631", transform=TRANSFORM, nodata=-99.0)
    part = read_sar(path, window=(10, 20, 30, 40))
    np.testing.assert_array_equal(part.array, array[:, 10:40, 20:60])
    assert part.transform == TRANSFORM @ Affine.translation(20, 10)
    with pytest.raises(SARFileError, match=r"scene\.tif: window .* outside the 100x130 raster"):
        read_sar(path, window=(90, 120, 30, 40))
    edge = read_sar(path, window=(90, 120, 30, 40), boundless=True)
    assert edge.array.shape == (2, 30, 40)
    np.testing.assert_array_equal(edge.array[:, :10, :10], array[:, 90:, 120:])
    assert edge.valid_mask[:10, :10].all() and edge.valid_mask.sum() == 100
    assert read_sar(path, bands=[2]).array.shape == (1, 100, 130)

    with open_scene(path) as scene:
        assert (scene.height, scene.width, scene.count) == (100, 130, 2)
        windows = list(scene.windows(64))
        covered = np.zeros((100, 130), int)
        for window in windows:
            tile = scene.read(window)
            r, c = int(window.row_off), int(window.col_off)
            np.testing.assert_array_equal(tile.array, array[:, r : r + tile.height, c : c + tile.width])
            covered[r : r + tile.height, c : c + tile.width] += 1
        assert (covered == 1).all() and len(windows) == 6


def test_npy_layouts_and_errors(tmp_path):
    chw = _random("float32", (2, 16, 18))
    np.save(tmp_path / "chw.npy", chw)
    np.save(tmp_path / "hwc.npy", np.moveaxis(chw, 0, -1))
    np.save(tmp_path / "hw.npy", chw[0])
    np.testing.assert_array_equal(read_sar(tmp_path / "chw.npy").array, chw)
    np.testing.assert_array_equal(read_sar(tmp_path / "hwc.npy").array, chw)
    np.testing.assert_array_equal(read_sar(tmp_path / "hw.npy").array, chw[:1])
    np.testing.assert_array_equal(read_sar(tmp_path / "chw.npy", window=(2, 3, 4, 5)).array, chw[:, 2:6, 3:8])
    np.save(tmp_path / "bad.npy", np.zeros((5, 16, 18), np.float32))
    with pytest.raises(SARFileError, match=r"bad\.npy: array shape \(5, 16, 18\), expected"):
        read_sar(tmp_path / "bad.npy")
    data = (tmp_path / "chw.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(SARFileError, match=r"cut\.npy: unreadable or truncated"):
        read_sar(tmp_path / "cut.npy")


def test_png_and_jpg_quicklooks(tmp_path):
    grey = np.random.default_rng(0).integers(0, 256, (20, 30), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "rgb.png")
    rgba = np.stack([grey] * 3 + [np.where(grey > 100, 255, 0).astype(np.uint8)], -1)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    Image.fromarray(np.stack([grey, rgba[..., 3]], -1), mode="LA").save(tmp_path / "la.png")
    Image.fromarray(grey).save(tmp_path / "q.jpg", quality=95)
    for name in ("grey.png", "rgb.png", "rgba.png", "la.png"):
        raster = read_sar(tmp_path / name)
        assert raster.array.dtype == np.uint8 and raster.array.shape == (1, 20, 30)
        np.testing.assert_array_equal(raster.array[0], grey)
    np.testing.assert_array_equal(read_sar(tmp_path / "rgba.png").valid_mask, grey > 100)
    np.testing.assert_array_equal(read_sar(tmp_path / "la.png").valid_mask, grey > 100)
    assert read_sar(tmp_path / "q.jpg").array.shape == (1, 20, 30)


def test_unreadable_empty_truncated_and_band_count_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.tif"):
        read_sar(tmp_path / "missing.tif")
    (tmp_path / "empty.tif").write_bytes(b"")
    with pytest.raises(SARFileError, match=r"empty\.tif: empty file"):
        read_sar(tmp_path / "empty.tif")
    (tmp_path / "junk.tif").write_bytes(b"this is not a tiff at all")
    with pytest.raises(SARFileError, match=r"junk\.tif: unreadable"):
        read_sar(tmp_path / "junk.tif")
    good = write_geotiff(tmp_path / "good.tif", _random("float32", (1, 64, 64)), compress=None, blocksize=16)
    data = good.read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    with pytest.raises(SARFileError, match=r"cut\.tif: (truncated|unreadable)"):
        read_sar(tmp_path / "cut.tif")
    write_geotiff(tmp_path / "scene.tif", _random("float32", (4, 8, 8)))
    with pytest.raises(SARFileError, match=r"scene\.tif: 4 bands, expected 1 or 2 \(VV, VH\)"):
        read_sar(tmp_path / "scene.tif")
    assert read_sar(tmp_path / "scene.tif", bands=(1, 3)).array.shape == (2, 8, 8)
    with pytest.raises(SARFileError, match=r"band\(s\) \[5\] requested but the file has 4"):
        read_sar(tmp_path / "scene.tif", bands=(5,))
    assert issubclass(SARFileError, ValueError)


def test_atomic_writer_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.tif"
    write_geotiff(target, np.ones((1, 16, 16), np.float32))
    before = target.read_bytes()
    with pytest.raises(RuntimeError):
        with create_geotiff(target, 32, 32, dtype="float32") as writer:
            writer.write(np.zeros((1, 16, 16), np.float32), (0, 0, 16, 16))
            raise RuntimeError("interrupted")
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif"]


def test_cog_option(tmp_path):
    array = _random("float32", (2, 300, 300))
    path = write_geotiff(
        tmp_path / "cog.tif", array, crs="EPSG:32631", transform=TRANSFORM, nodata=-99.0, cog=True
    )
    with rasterio.open(path) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.nodata == -99.0 and ds.crs.to_epsg() == 32631
    np.testing.assert_array_equal(read_sar(path).array, array)
    assert [p.name for p in tmp_path.iterdir()] == ["cog.tif"]


def test_list_sar_files(tmp_path):
    for name in ("a/x.tif", "b.npy", "c.PNG", "notes.txt", ".hidden/y.tif"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in list_sar_files(tmp_path)] == [
        "a/x.tif",
        "b.npy",
        "c.PNG",
    ]


@needs_real
def test_real_sentinel1_chip():
    raster = read_sar(S1_CHIP)
    assert raster.array.shape == (2, 512, 512) and raster.array.dtype == np.float32
    assert raster.crs.to_epsg() == 4326
    assert raster.nodata is not None and np.isnan(raster.nodata)
    assert raster.band_names == ("VV", "VH")
    vv, vh = (np.median(raster.array[b][raster.valid_mask]) for b in (0, 1))
    assert vv == pytest.approx(-10.5, abs=0.3) and vh == pytest.approx(-17.7, abs=0.3)
    assert -48 < raster.array.min() < -46 and 24 < raster.array.max() < 26
    window = read_sar(S1_CHIP, window=(100, 200, 64, 64))
    np.testing.assert_array_equal(window.array, raster.array[:, 100:164, 200:264])
    assert window.transform.c == pytest.approx(raster.transform.c + 200 * raster.transform.a)


@needs_real
def test_real_label_and_geocoded_vv():
    label = read_sar(S1_LABEL)
    assert label.array.dtype == np.int16 and label.crs.to_epsg() == 4326
    values, counts = np.unique(label.array, return_counts=True)
    assert dict(zip(values.tolist(), counts.tolist())) == {-1: 99, 0: 192010, 1: 70035}

    vv = read_sar(PYROSAR)
    assert vv.array.shape == (1, 217, 268)
    assert vv.crs.to_epsg() == 32631 and vv.nodata == -99.0
    assert vv.transform.a == 20.0 and vv.transform.e == -20.0
    data = vv.array[0][vv.valid_mask]
    assert data.min() == pytest.approx(-26.65, abs=0.05) and data.max() == pytest.approx(1.43, abs=0.05)


def test_cog_overviews_of_a_class_map_hold_only_real_classes(tmp_path):
    """Class maps get nearest-neighbour overviews: no class value is invented in the zoomed-out levels."""
    blocks = (np.indices((1024, 1024)).sum(axis=0) // 3) % 2  # fine stripes: cubic would interpolate them
    classes = np.where(blocks == 1, 9, 0).astype(np.uint8)
    path = tmp_path / "classes.tif"
    write_geotiff(path, classes[None], cog=True)
    with rasterio.open(path) as dataset:
        assert dataset.overviews(1), "a COG of 1024 px should have overviews"
        for factor in dataset.overviews(1):
            zoomed = dataset.read(1, out_shape=(1024 // factor, 1024 // factor))
            assert set(np.unique(zoomed)) <= {0, 9}, f"overview 1/{factor} invented classes"


def test_concurrent_read_and_write_lose_nothing(tmp_path: Path) -> None:
    """Threads reading one scene beside a thread writing a 3-band pixel-interleaved GeoTIFF in partial
    blocks (what predict_scene does): without sario's lock GDAL's shared block cache loses pixels of
    some band in ~5-15 % of the files here (GDAL issue #2011); 80 files must all come back exact."""
    source = tmp_path / "source.tif"
    write_geotiff(source, np.random.default_rng(1).normal(size=(2, 512, 512)).astype(np.float32))
    stop = threading.Event()

    def read_forever() -> None:
        with open_scene(source) as scene:
            while not stop.is_set():
                for row in range(0, 512, 64):
                    for col in range(0, 512, 64):
                        scene.read(Window(col, row, 64, 64))

    readers = [threading.Thread(target=read_forever) for _ in range(2)]
    rng = np.random.default_rng(0)
    height, width, step = 300, 457, 40
    corrupted = 0
    with rasterio.Env(GDAL_CACHEMAX=1):  # a small cache makes the eviction (and the race) frequent
        for reader in readers:
            reader.start()
        try:
            for _ in range(80):
                data = rng.integers(0, 255, (3, height, width), dtype=np.uint8)
                target = tmp_path / "written.tif"
                with create_geotiff(target, height, width, count=3, dtype="uint8") as writer:
                    for row in range(0, height, step):
                        for col in range(0, width, step):
                            window = Window(col, row, min(step, width - col), min(step, height - row))
                            writer.write(data[:, row : row + step, col : col + step], window)
                with rasterio.open(target) as written:
                    corrupted += int((written.read() != data).any())
        finally:
            stop.set()
            for reader in readers:
                reader.join()
    assert corrupted == 0, f"{corrupted} of 80 files lost pixels"


def test_bands_by_name_from_band_descriptions(tmp_path: Path) -> None:
    """Issue #16 item 7: quad-pol bands chosen by name (the GeoTIFF's band descriptions, any case)."""
    quad = _random("float32", (4, 16, 16))
    path = write_geotiff(tmp_path / "quad.tif", quad, band_names=("HH", "HV", "VH", "VV"))
    raster = read_sar(path, bands=("VV", "vh"))
    np.testing.assert_array_equal(raster.array, quad[[3, 2]])
    assert raster.band_names == ("VV", "VH")
    with open_scene(path) as scene:
        window = scene.read((0, 0, 8, 8), bands=["hh", 4, "2"])  # names, indexes, digit strings
        np.testing.assert_array_equal(window.array, quad[[0, 3, 1], :8, :8])
    with pytest.raises(
        SARFileError,
        match=r"quad\.tif: no band named 'RR'; the file's bands are: HH \(1\), HV \(2\), VH \(3\), VV \(4\)",
    ):
        read_sar(path, bands=("VV", "RR"))
    with pytest.raises(
        SARFileError,
        match=r"4 bands, expected 1 or 2 \(VV, VH\); choose bands: by name \(the file's bands: HH, HV, VH, VV\)",
    ):
        read_sar(path)
    unnamed = write_geotiff(tmp_path / "unnamed.tif", quad)
    with pytest.raises(
        SARFileError,
        match=r"unnamed\.tif: band 'VV' requested by name but the file has no band descriptions; choose by 1-based index \(1\.\.4\)",
    ):
        read_sar(unnamed, bands=("VV",))
    np.save(tmp_path / "quad.npy", quad)
    with pytest.raises(SARFileError, match="no band descriptions"):
        read_sar(tmp_path / "quad.npy", bands=("VV",))


def test_explicit_band_choice_is_not_limited_to_two(tmp_path: Path) -> None:
    """A 3-band 8-bit Pauli RGB GeoTIFF read with bands=(1, 2, 3) for a 3-channel model."""
    pauli = _random("uint8", (3, 16, 16))
    path = write_geotiff(tmp_path / "pauli.tif", pauli)
    np.testing.assert_array_equal(read_sar(path, bands=(1, 2, 3)).array, pauli)
    with pytest.raises(SARFileError, match=r"pauli\.tif: 3 bands, expected 1 or 2"):
        read_sar(path)
