"""The Gradio Space, launched on 127.0.0.1 in a subprocess and driven like a user would.

- ``gradio_client``: a GeoTIFF upload returns a class map with the input's CRS (and, since the
  test lowers the pixel budget, a downscaled transform and a tiled prediction, both announced);
  corrupt or wrong-layout uploads return a readable message, never a stack trace.
- headless Chromium (Debian's ``chromium``), through the DevTools protocol over a pipe: upload a
  file in the page, press Run, wait for the map and save a screenshot to ``test-artifacts/``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from di3cl_hf import DI3CLConfig, DI3CLForSemanticSegmentation, DI3CLImageProcessor
from di3cl_hf.data.sario import write_geotiff
from di3cl_hf.data.synthetic import LANDCOVER_CLASSES, synthetic_patch

REPO_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
INPUT_CRS = "EPSG:32633"  # not the synthetic generator's default, so the output must copy it
STARTUP_SECONDS = 180


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_models(folder: Path, only: tuple[str, ...] | None = None) -> None:
    tasks = {
        "landcover": list(LANDCOVER_CLASSES),
        "water": ["background", "water"],
        "roads": ["background", "road"],
    }
    for task, labels in tasks.items():
        if only is not None and task not in only:
            continue
        config = DI3CLConfig(
            backbone="resnet18",
            num_channels=2,
            image_size=64,
            queue_size=64,
            projection_hidden_dim=64,
            decoder_hidden_size=32,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={name: index for index, name in enumerate(labels)},
        )
        torch.manual_seed(0)
        DI3CLForSemanticSegmentation(config).eval().save_pretrained(folder / task)
        DI3CLImageProcessor(num_channels=2).save_pretrained(folder / task)


@contextlib.contextmanager
def _running_space(root: Path, only: tuple[str, ...] | None = None, **settings: str):
    """Start space/app.py on a free port with tiny models under ``root`` (``only`` these tasks: the others fall
    back to their defaults, water to the shipped model); yield its URL, log and folders."""
    _write_models(root / "models", only)
    port = _free_port()
    env = {
        **os.environ,
        "DI3CL_MODEL_DIR": str(root / "models"),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "GRADIO_TEMP_DIR": str(root / "gradio-tmp"),
        "TMPDIR": str(root / "server-tmp"),  # the Space's di3cl-space-* request folders are counted here
        **settings,
    }
    (root / "server-tmp").mkdir()
    log = (root / "space.log").open("w")
    process = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "space" / "app.py")], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + STARTUP_SECONDS
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"the Space exited with {process.returncode}:\n{(root / 'space.log').read_text()[-4000:]}"
                )
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the Space did not start in {STARTUP_SECONDS} s:\n{(root / 'space.log').read_text()[-4000:]}"
                )
            time.sleep(1)
        yield {"url": url, "root": root, "log": root / "space.log"}
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)
        log.close()


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """URL of the running Space (tiny random models; small pixel and tile budgets)."""
    with _running_space(
        tmp_path_factory.mktemp("space"),
        DI3CL_SPACE_PREDICT_PIXELS="40000",  # a 256 x 256 upload is downscaled by 2 ...
        DI3CL_SPACE_TILE_SIZE="64",  # ... and its 128 x 128 remainder predicted in 3 x 3 tiles
        DI3CL_SPACE_MAX_PIXELS="100000",
        DI3CL_SPACE_MAX_FILE_SIZE="2mb",
        DI3CL_SPACE_MAX_SIDE="1000",  # a 1 x 90 000 strip passes the pixel limit, not the side limit
        DI3CL_SPACE_MAX_TILES="16",
    ) as running:
        yield running


@pytest.fixture(scope="module")
def client(space):
    from gradio_client import Client

    return Client(space["url"], verbose=False, download_files=str(space["root"] / "client-downloads"))


@pytest.fixture(scope="module")
def geotiff(tmp_path_factory) -> Path:
    """A 256 x 256 dual-pol backscatter patch (linear intensity) in UTM 33N."""
    folder = tmp_path_factory.mktemp("inputs")
    patch = synthetic_patch(256, 2, seed=5, style="water")
    path = folder / "s1_patch.tif"
    transform = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5300000.0)
    write_geotiff(path, (10 ** (patch.image / 10)).astype(np.float32), crs=INPUT_CRS, transform=transform)
    return path


def _predict(client, path: Path, task: str, radiometry: str = "auto"):
    from gradio_client import handle_file

    return client.predict(handle_file(str(path)), task, radiometry, api_name="/segment")


def test_geotiff_upload_returns_georeferenced_mask(client, geotiff: Path) -> None:
    quick, mapped, legend, result, notice = _predict(client, geotiff, "Water")
    with rasterio.open(geotiff) as source, rasterio.open(result) as mask:
        assert mask.crs == source.crs == rasterio.crs.CRS.from_string(INPUT_CRS)
        # downscaled by 2 to meet the pixel budget: same origin, twice the pixel size
        assert mask.transform == source.transform @ Affine.scale(2)
        assert (mask.width, mask.height) == (128, 128)
        assert mask.count == 1 and mask.dtypes[0] == "uint8" and mask.nodata == 255
        classes = mask.read(1)
        assert set(np.unique(classes)) <= {0, 1}
        assert mask.colormap(1)[1][:3] == (31, 119, 180)  # water is blue in GIS viewers too
    assert "downscaled by 2" in notice and "9 tiles" in notice
    assert "background" in legend and "water" in legend
    shares = [
        float(cell.split("%")[0].split(">")[-1]) for cell in legend.split("</td>") if cell.endswith(" %")
    ]
    assert len(shares) == 2 and sum(shares) == pytest.approx(100.0, abs=0.2)
    for image in (quick, mapped):
        assert Path(image).is_file() and Path(image).stat().st_size > 0


def test_feature_view_and_npy_without_georeferencing(client, tmp_path: Path) -> None:
    path = tmp_path / "vv_db.npy"
    np.save(path, synthetic_patch(96, 1, seed=6).image)
    _, _, legend, result, notice = _predict(client, path, "Features (PCA)", "db")
    with rasterio.open(result) as features:
        assert features.count == 3 and features.crs is None and (features.width, features.height) == (96, 96)
        assert features.read().std() > 0
    assert "principal components" in notice and "no georeferencing" in notice


REAL_SAR = REPO_ROOT.parent / "shared" / "data" / "real-sar"


@pytest.mark.skipif(not REAL_SAR.is_dir(), reason=f"real Sentinel-1 samples not found at {REAL_SAR}")
def test_real_sentinel1_file_keeps_crs_and_nodata(client, tmp_path: Path) -> None:
    """pyroSAR's geocoded VV (dB, nodata -99, EPSG:32631) with a corner blanked to nodata:
    the radiometry is detected as dB and nodata pixels stay nodata (255) in the map."""
    with rasterio.open(REAL_SAR / "S1A__IW___A_20150309T173017_VV_grd_mli_geo_norm_db.tif") as source:
        profile, values = source.profile, source.read()
    values[:, :40, :60] = profile["nodata"]
    path = tmp_path / "s1_vv_db_with_nodata.tif"
    with rasterio.open(path, "w", **profile) as target:
        target.write(values)
    _, _, legend, result, notice = _predict(client, path, "Land cover")
    with rasterio.open(result) as mask:
        assert mask.crs == profile["crs"]
        classes = mask.read(1)
    invalid = values[0, ::2, ::2] == profile["nodata"]  # downscaled by 2 (58 156 px > 40 000)
    assert classes.shape == invalid.shape
    np.testing.assert_array_equal(classes == 255, invalid)
    assert "Radiometry: `db`" in notice and "%" in legend


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("corrupt.tif", b"II*\x00this is not a GeoTIFF" * 20, "corrupt.tif: cannot be read as a SAR raster"),
        ("notes.txt", b"hello", "Invalid file type"),  # refused by gradio's own file_types check
        ("empty.npy", b"", "empty.npy: the file is empty"),
    ],
)
def test_bad_uploads_get_a_readable_message(
    client, tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    from gradio_client.exceptions import AppError

    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(AppError) as error:
        _predict(client, path, "Land cover")
    text = str(error.value)
    assert message in text
    assert "Traceback" not in text and "/tmp/" not in text  # no stack trace, no server paths


def test_size_limits(client, tmp_path: Path) -> None:
    from gradio_client.exceptions import AppError

    too_many_pixels = tmp_path / "big_scene.npy"
    np.save(too_many_pixels, np.zeros((1, 400, 400), np.float32))  # 160 000 px > 100 000, 640 kB < 2 MB
    with pytest.raises(AppError, match=r"big_scene.npy: 400 x 400 pixels is more than this demo accepts"):
        _predict(client, too_many_pixels, "Water")
    too_big = tmp_path / "huge_file.npy"
    np.save(too_big, np.zeros((1, 1000, 1000), np.float32))  # 4 MB > max_file_size 2 MB
    with pytest.raises(Exception, match=r"(?i)too large|exceeds|maximum"):
        _predict(client, too_big, "Water")


def test_wrong_band_count_is_explained(client, tmp_path: Path) -> None:
    from gradio_client.exceptions import AppError

    path = tmp_path / "three_bands.tif"
    write_geotiff(path, np.random.default_rng(0).random((3, 32, 32), dtype=np.float32))
    with pytest.raises(AppError, match=r"three_bands.tif: 3 bands, expected 1 \(VV\) or 2 \(VV, VH\)"):
        _predict(client, path, "Roads")


@pytest.fixture(scope="module")
def app_module():
    """space/app.py imported in this process (for handler-level checks without a server)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("di3cl_space_app", REPO_ROOT / "space" / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_unexpected_failures_and_missing_models_are_messages(app_module, geotiff: Path, monkeypatch) -> None:
    import gradio as gr

    def broken(*args, **kwargs):
        raise RuntimeError("tile runner exploded")

    monkeypatch.setattr(app_module, "run_segmentation", broken)
    with pytest.raises(gr.Error, match="Could not process s1_patch.tif: RuntimeError: tile runner exploded"):
        app_module.segment(str(geotiff), "Water", "auto")
    monkeypatch.undo()
    monkeypatch.setattr(app_module, "model_location", lambda task: None)
    app_module.load_task_model.cache_clear()
    with pytest.raises(gr.Error, match="No roads model is installed. Set DI3CL_MODEL_DIR"):
        app_module.segment(str(geotiff), "Roads", "auto")
    with pytest.raises(gr.Error, match="Unknown task 'Clouds'"):
        app_module.segment(str(geotiff), "Clouds", "auto")


def test_model_location_order(app_module, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "water").mkdir()
    (tmp_path / "water" / "config.json").write_text("{}")
    monkeypatch.setenv("DI3CL_MODEL_DIR", str(tmp_path))
    monkeypatch.delenv("DI3CL_MODEL_WATER", raising=False)
    assert app_module.model_location("water") == str(tmp_path / "water")
    monkeypatch.setenv("DI3CL_MODEL_WATER", "sar-lab/di3cl-water")
    assert app_module.model_location("water") == "sar-lab/di3cl-water"


def _write_strip(path: Path, width: int) -> Path:
    """A 1-row GeoTIFF of ``width`` pixels, a few kB on disk (deflate), e.g. 1 x 24 000 000."""
    profile = {"driver": "GTiff", "height": 1, "width": width, "count": 1, "dtype": "uint8"}
    with rasterio.open(path, "w", **profile, compress="deflate", blockysize=1) as target:
        step = 1_000_000
        for start in range(0, width, step):
            part = min(step, width - start)
            target.write(np.full((1, 1, part), 7, np.uint8), window=((0, 1), (start, start + part)))
    return path


def _request_folders(root: Path) -> list[Path]:
    return sorted(root.glob("di3cl-space-*"))


def test_stalling_upload_is_refused_fast_and_a_good_request_still_answers(
    space, client, geotiff: Path, tmp_path: Path
) -> None:
    """Issue #16 item 5: a tiny strip that would become thousands of tiles is refused from its header,
    the next request answers, and no request leaves a di3cl-space-* folder behind."""
    from gradio_client.exceptions import AppError

    server_tmp = space["root"] / "server-tmp"
    before = _request_folders(server_tmp)
    strip = _write_strip(tmp_path / "strip.tif", 90_000)  # 90 000 px < the 100 000 px limit
    assert strip.stat().st_size < 50_000
    start = time.monotonic()
    with pytest.raises(
        AppError, match=r"strip.tif: 90000 x 1 pixels; this demo accepts at most 1000 pixels per side"
    ):
        _predict(client, strip, "Water")
    assert time.monotonic() - start < 30
    _, _, legend, result, notice = _predict(client, geotiff, "Water")
    assert Path(result).is_file() and "water" in legend
    with pytest.raises(AppError, match="cannot be read as a SAR raster"):  # a failed request cleans up too
        bad = tmp_path / "bad.tif"
        bad.write_bytes(b"II*\x00 not a tiff" * 10)
        _predict(client, bad, "Water")
    assert _request_folders(server_tmp) == before == []


_DISCONNECTING_CLIENT = """
import os, sys, time
from gradio_client import Client, handle_file
from gradio_client.utils import Status
job = Client(sys.argv[1], verbose=False).submit(handle_file(sys.argv[2]), "Water", "auto", api_name="/segment")
deadline = time.monotonic() + 60
while job.status().code != Status.PROCESSING and time.monotonic() < deadline:
    time.sleep(0.2)
time.sleep(float(sys.argv[3]))  # the work is under way
os._exit(0)  # the browser tab closes: the event stream ends without a goodbye
"""


@pytest.mark.slow
def test_work_stops_when_the_client_disconnects(tmp_path_factory) -> None:
    """A long request (a 4000 x 4000 scene in 64 px tiles, ~5,000 tiles: 37 s to its end on a 2-core AMD
    EPYC with native bf16) whose client process dies 2 s into the work: the Space stops at the next model
    batch (gradio marks the session's event dead) and cleans up.

    The work must outlast the client by far: a 1500 x 1500 scene took 8 s here, and a client dying at 6 s
    raced with the request's own end (1 run in 4 failed).
    """
    root = tmp_path_factory.mktemp("space-disconnect")
    scene = root / "scene.tif"
    write_geotiff(scene, np.random.default_rng(0).normal(-12, 4, (1, 4000, 4000)).astype(np.float32))
    settings = {"DI3CL_SPACE_PREDICT_PIXELS": "16000000", "DI3CL_SPACE_TILE_SIZE": "64"}
    with _running_space(root, DI3CL_SPACE_MAX_TILES="100000", OMP_NUM_THREADS="1", **settings) as running:
        start = time.monotonic()
        client = [sys.executable, "-c", _DISCONNECTING_CLIENT, running["url"], str(scene), "2"]
        subprocess.run(client, check=True, timeout=120)
        while "request stopped" not in running["log"].read_text() and time.monotonic() - start < 60:
            time.sleep(0.5)
        log = running["log"].read_text()
        assert "request stopped: The client disconnected" in log, log[-3000:]
        assert time.monotonic() - start < 30  # the whole scene takes longer (see above)
        time.sleep(1)
        assert _request_folders(root / "server-tmp") == []


@pytest.fixture()
def local_space(app_module, tmp_path: Path, monkeypatch):
    """The app module with tiny models and its own temporary folder (request folders are counted there)."""
    _write_models(tmp_path / "models")
    monkeypatch.setenv("DI3CL_MODEL_DIR", str(tmp_path / "models"))
    for task in ("LANDCOVER", "WATER", "ROADS", "ENCODER"):
        monkeypatch.delenv(f"DI3CL_MODEL_{task}", raising=False)
    app_module.load_task_model.cache_clear()
    app_module.load_encoder.cache_clear()
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio-cache"))
    yield app_module, temp
    app_module.load_task_model.cache_clear()
    app_module.load_encoder.cache_clear()


def test_one_by_24_million_geotiff_is_refused_before_any_work(local_space, tmp_path: Path) -> None:
    """The 25 kB 1 x 24 000 000 GeoTIFF of issue #16 (below the default 25 Mpx limit): refused from
    the header in well under a second, with the side limit named, and no folder left behind."""
    import gradio as gr

    app, temp = local_space
    assert app.MAX_PIXELS == 25_000_000 and app.MAX_SIDE == 10_000  # the defaults
    strip = _write_strip(tmp_path / "strip.tif", 24_000_000)
    assert strip.stat().st_size < 100_000
    start = time.monotonic()
    with pytest.raises(
        gr.Error, match=r"strip.tif: 24000000 x 1 pixels; this demo accepts at most 10000 pixels per side"
    ):
        app.segment(str(strip), "Water", "auto")
    assert time.monotonic() - start < 5
    assert _request_folders(temp) == []


def test_aspect_and_tile_limits(local_space, monkeypatch) -> None:
    app, _ = local_space
    with pytest.raises(
        app.SpaceInputError, match=r"a strip \(80:1\); this demo accepts sides at most 50 times"
    ):
        app.check_dimensions(100, 8000, "strip.tif")
    monkeypatch.setattr(app, "MAX_ASPECT", 1000.0)
    # 20 x 8000 px: no downscaling (160 000 px < 2 Mpx), 512 px tiles every 448 px -> 18 tiles
    assert app.tiling(20, 8000)[2] == 18
    monkeypatch.setattr(app, "MAX_TILES", 17)
    with pytest.raises(app.SpaceInputError, match=r"would take 18 model tiles; this demo runs at most 17"):
        app.check_dimensions(20, 8000, "strip.tif")
    app.check_dimensions(256, 256, "patch.tif")  # a normal patch passes


def test_time_budget_and_disconnect_stop_the_work_and_clean_up(
    local_space, geotiff: Path, monkeypatch
) -> None:
    import gradio as gr

    app, temp = local_space
    calls = []
    original = app.Budget.check

    def counting(self):
        calls.append(time.monotonic())
        return original(self)

    monkeypatch.setattr(app.Budget, "check", counting)
    monkeypatch.setattr(app, "TIME_BUDGET", 0.0)
    with pytest.raises(gr.Error, match=r"took longer than the demo's 0 s budget and was stopped"):
        app.segment(str(geotiff), "Water", "auto")
    assert len(calls) == 1  # stopped at the first model batch
    assert _request_folders(temp) == []
    monkeypatch.setattr(app, "TIME_BUDGET", 600.0)
    monkeypatch.setattr(app, "client_connected", lambda session_hash: False)
    with pytest.raises(gr.Error, match="The client disconnected; the request was stopped"):
        app.segment(str(geotiff), "Features (PCA)", "auto")
    assert _request_folders(temp) == []
    monkeypatch.undo()


def test_client_connected_reads_gradio_queue_events(app_module, monkeypatch) -> None:
    """gradio marks the events of a session whose stream closed ``alive = False``; the work polls that."""

    class Event:
        def __init__(self, session_hash: str, alive: bool) -> None:
            self.session_hash, self.alive = session_hash, alive

    class Queue:
        active_jobs = [None, [Event("a", True)], [Event("b", False)]]

    class Demo:
        _queue = Queue()

    monkeypatch.setattr(app_module, "DEMO", Demo())
    assert app_module.client_connected("a") and not app_module.client_connected("b")
    assert app_module.client_connected("unknown") and app_module.client_connected(None)


def test_declared_radiometry_is_applied_in_the_space(local_space, tmp_path: Path) -> None:
    """Issue #16 item 4 in the Space: uint8 declared amplitude is converted as amplitude (not dn8) and
    the notice names it; complex data declared amplitude gets a message naming what is allowed."""
    import gradio as gr

    app, temp = local_space
    values = np.random.default_rng(2).integers(1, 256, size=(1, 64, 64), dtype=np.uint8)
    valid = np.ones((64, 64), bool)
    assert not np.array_equal(app.quicklook(values, valid, "amplitude"), app.quicklook(values, valid, "dn8"))
    path = tmp_path / "amplitude8.tif"
    write_geotiff(path, values)
    *_, notice = app.segment(str(path), "Water", "amplitude")
    assert "Radiometry: `amplitude`" in notice
    *_, notice = app.segment(str(path), "Features (PCA)", "amplitude")
    assert "Radiometry: `amplitude`" in notice
    slc = tmp_path / "slc.tif"
    write_geotiff(slc, (np.ones((1, 32, 32)) * np.exp(1j)).astype(np.complex64))
    with pytest.raises(gr.Error, match=r"slc.tif: input kind 'amplitude' does not apply to complex64 data"):
        app.segment(str(slc), "Water", "amplitude")
    assert _request_folders(temp) == []


# ------------------------------------------------------------------------------ headless Chromium


class DevTools:
    """Chrome DevTools protocol over ``--remote-debugging-pipe`` (fd 3: commands in, fd 4: replies out)."""

    def __init__(self, user_data_dir: Path, timeout: float = 60) -> None:
        command_read, self._command_write = os.pipe()
        self._reply_read, reply_write = os.pipe()
        arguments = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={user_data_dir}",
            "--remote-debugging-pipe",
            "--window-size=1400,1500",
            "about:blank",
        ]
        # the shell puts our pipe ends on the fds Chromium expects (3: commands, 4: replies)
        wiring = f'exec "$0" "$@" 3<&{command_read} 4>&{reply_write} {command_read}<&- {reply_write}>&-'
        self.process = subprocess.Popen(
            ["bash", "-c", wiring, str(CHROMIUM), *arguments],
            pass_fds=(command_read, reply_write),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(command_read)
        os.close(reply_write)
        self._buffer = b""
        self._next_id = 0
        self.timeout = timeout
        self.session: str | None = None

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.process.poll() is not None:
                raise TimeoutError("Chromium did not answer in time (or exited)")
            ready, _, _ = select.select([self._reply_read], [], [], min(remaining, 1.0))
            if ready:
                chunk = os.read(self._reply_read, 1 << 20)
                if not chunk:
                    raise ConnectionError("Chromium closed the DevTools pipe")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: bool = True) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._command_write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def attach_to_page(self) -> None:
        targets = self.send("Target.getTargets", session=False)["targetInfos"]
        page = next(target for target in targets if target["type"] == "page")
        self.session = self.send(
            "Target.attachToTarget", {"targetId": page["targetId"], "flatten": True}, False
        )["sessionId"]

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while not self.evaluate(expression):
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {seconds} s for {what}")
            time.sleep(0.5)

    def close(self) -> None:
        try:
            self.send("Browser.close", session=False)
        except (OSError, RuntimeError, TimeoutError, ConnectionError):
            pass
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)
        os.close(self._command_write)
        os.close(self._reply_read)


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless Chromium missing: apt-get install -y chromium")
def test_browser_screenshot_after_prediction(space, geotiff: Path, tmp_path: Path) -> None:
    browser = DevTools(tmp_path / "chromium-profile")
    try:
        browser.attach_to_page()
        browser.send("Page.enable")
        browser.send("Page.navigate", {"url": space["url"]})
        browser.wait_for("!!document.querySelector('#sar-file input[type=file]')", 90, "the upload widget")
        document = browser.send("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
        node = browser.send(
            "DOM.querySelector", {"nodeId": document, "selector": "#sar-file input[type=file]"}
        )
        browser.send("DOM.setFileInputFiles", {"files": [str(geotiff)], "nodeId": node["nodeId"]})
        browser.wait_for(
            "document.querySelector('#sar-file').innerText.includes('s1_patch')", 60, "the upload"
        )
        browser.evaluate(
            "[...document.querySelectorAll('#task label')].find(l => l.innerText.includes('Water')).click()"
        )
        browser.evaluate("document.querySelector('#run-button').click()")
        browser.wait_for(
            "!!document.querySelector('#map img') && document.querySelector('#legend').innerText.includes('%')",
            120,
            "the map and legend",
        )
        time.sleep(1.0)  # let the images finish painting
        legend = browser.evaluate("document.querySelector('#legend').innerText")
        shot = browser.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    finally:
        browser.close()
    assert "water" in legend and "%" in legend
    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / "space_after_prediction.png"
    target.write_bytes(base64.b64decode(shot["data"]))
    assert target.stat().st_size > 10_000
    from PIL import Image

    with Image.open(target) as image:
        assert image.width >= 1000 and len(set(image.convert("RGB").getdata())) > 50  # a rendered page


def test_chromium_is_installed_or_reason_is_clear() -> None:
    """Documents the requirement: CI installs Debian's chromium for the screenshot test."""
    if not CHROMIUM.exists():
        pytest.skip("headless Chromium missing: apt-get install -y chromium (needed by the screenshot test)")
    assert shutil.which(str(CHROMIUM))


def test_real_sentinel1_examples_come_first_and_are_staged(app_module, tmp_path: Path) -> None:
    """Issue #15: the Space offers real Sentinel-1 files of the embedded sample, also once staged for the Hub."""
    from di3cl_hf.hub.push import SPACE_REAL_EXAMPLES, stage_space

    real = app_module.real_example_files()
    assert [p.relative_to(REPO_ROOT / "samples" / "sentinel1").as_posix() for p in real] == list(
        app_module.REAL_EXAMPLES
    )
    assert tuple(app_module.REAL_EXAMPLES) == SPACE_REAL_EXAMPLES
    staged = stage_space(REPO_ROOT / "space", tmp_path / "stage")
    for name in (*SPACE_REAL_EXAMPLES, "README.md"):
        assert (staged / "examples" / "sentinel1" / name).is_file(), name
    assert "Copernicus" in (staged / "examples" / "sentinel1" / "README.md").read_text()
    raster = app_module.prepare_input(real[1], "003.tif", tmp_path)  # the 8-bit real scene reads as a upload
    assert raster.array.shape[0] == 1 and raster.crs is not None


def test_gcp_georeferenced_upload_keeps_its_gcps(local_space, tmp_path: Path) -> None:
    """Issue #21: a GeoTIFF georeferenced by ground control points only (as Sentinel-1 GRD products are) gives
    a map with the same GCPs and CRS, and the notice says so (not "no georeferencing")."""
    from rasterio.control import GroundControlPoint
    from rasterio.crs import CRS

    app, _ = local_space
    corners = [(0, 0), (0, 63), (63, 0), (63, 63)]
    points = [
        GroundControlPoint(r, c, 10 + c / 1e3, 50 - r / 1e3, 0.0, str(i)) for i, (r, c) in enumerate(corners)
    ]
    path = tmp_path / "grd.tif"
    values = np.random.default_rng(4).normal(-12, 3, (2, 64, 64)).astype(np.float32)
    with rasterio.open(path, "w", driver="GTiff", count=2, height=64, width=64, dtype="float32") as dataset:
        dataset.gcps = (points, CRS.from_epsg(4326))
        dataset.write(values)
    *_, result, notice = app.segment(str(path), "Water", "auto")
    with rasterio.open(result) as output:
        gcps, crs = output.gcps
    assert crs == CRS.from_epsg(4326) and [(p.row, p.col, p.x, p.y) for p in gcps] == [
        (p.row, p.col, p.x, p.y) for p in points
    ]
    assert "ground control points" in notice and "no georeferencing" not in notice


def test_synthetic_examples_are_rendered_outside_the_app_folder(
    app_module, tmp_path: Path, monkeypatch
) -> None:
    """Issue #21: start-up never writes into space/ (which `di3cl push space` uploads)."""
    monkeypatch.setenv("DI3CL_SPACE_CACHE", str(tmp_path))
    before = sorted(p.relative_to(REPO_ROOT / "space") for p in (REPO_ROOT / "space").rglob("*"))
    files = app_module.example_files()
    assert all(path.is_file() and path.is_relative_to(tmp_path) for path in files)
    after = sorted(p.relative_to(REPO_ROOT / "space") for p in (REPO_ROOT / "space").rglob("*"))
    assert before == after


# ------------------------------------------------------------------------------ the shipped model (issue #23)


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless Chromium missing: apt-get install -y chromium")
def test_browser_screenshot_opens_on_the_shipped_model(tmp_path_factory, tmp_path: Path) -> None:
    """The Space as a user first sees it: the water task, the shipped model named on the page, a real VV + VH
    chip mapped with it (screenshot in test-artifacts/space_shipped_model.png). Needs the real shipped model."""
    from di3cl_hf.weights import DEFAULT_WATER_MODEL, shipped_model_available

    assert shipped_model_available(), (
        f"{DEFAULT_WATER_MODEL} is missing (written by di3cl ship-model, issue #23)"
    )
    from di3cl_hf.data.polarisation import read_sample

    root = tmp_path_factory.mktemp("space-shipped")
    stem = REPO_ROOT / "samples" / "sentinel1" / "water" / "images" / "Spain_7370579"
    raster = read_sample([f"{stem}_vv.tif", f"{stem}_vh.tif"])  # the real chip as one VV + VH upload
    chip = write_geotiff(
        root / "Spain_7370579_vv_vh_db.tif",
        np.where(raster.valid_mask, raster.array, np.nan).astype(np.float32),
        crs=raster.crs,
        transform=raster.transform,
        nodata=float("nan"),
        band_names=("VV", "VH"),
    )
    settings = {"DI3CL_SPACE_CACHE": str(root / "cache"), "DI3CL_MODEL_WATER": ""}  # no override: the default
    with _running_space(root, only=("landcover", "roads"), **settings) as running:
        browser = DevTools(tmp_path / "chromium-profile")
        try:
            browser.attach_to_page()
            browser.send("Page.enable")
            browser.send("Page.navigate", {"url": running["url"]})
            browser.wait_for(
                "!!document.querySelector('#sar-file input[type=file]')", 90, "the upload widget"
            )
            info = browser.evaluate("document.querySelector('#model-info').innerText")
            checked = browser.evaluate(
                "(() => { const i = document.querySelector('#task input:checked');"
                " return i ? (i.closest('label') || i.parentElement).innerText.trim() : null; })()"
            )
            document = browser.send("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
            node = browser.send(
                "DOM.querySelector", {"nodeId": document, "selector": "#sar-file input[type=file]"}
            )
            browser.send("DOM.setFileInputFiles", {"files": [str(chip)], "nodeId": node["nodeId"]})
            browser.wait_for(
                "document.querySelector('#sar-file').innerText.includes('Spain')", 60, "the upload"
            )
            browser.evaluate("document.querySelector('#run-button').click()")  # the task is already Water
            browser.wait_for(
                "!!document.querySelector('#map img') && document.querySelector('#legend').innerText.includes('%')",
                180,
                "the map and legend",
            )
            time.sleep(1.0)
            notice = browser.evaluate("document.querySelector('#notice').innerText")
            shot = browser.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        finally:
            browser.close()
    assert DEFAULT_WATER_MODEL.name in info and "shipped with di3cl-hf" in info
    assert checked and "Water" in checked and DEFAULT_WATER_MODEL.name in notice
    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / "space_shipped_model.png"
    target.write_bytes(base64.b64decode(shot["data"]))
    from PIL import Image

    with Image.open(target) as image:
        assert image.width >= 1000 and len(set(image.convert("RGB").getdata())) > 50
