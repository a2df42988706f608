"""Shared fixtures: tiny degraded volumes made here, so unit tests need no workflow run."""

from __future__ import annotations

import http.server
import re
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from emsrbench.io import write_cremi

REPO = Path(__file__).resolve().parents[1]
ISBI = REPO / "tests" / "data" / "isbi2012_train.h5"


def area_downsample(hr: np.ndarray, scale: int) -> np.ndarray:
    z, h, w = hr.shape
    lr = hr.reshape(z, h // scale, scale, w // scale, scale).mean(axis=(2, 4))
    return np.round(lr).astype(np.uint8)


def write_degraded(path: Path, hr: np.ndarray, scale: int, labels=None) -> Path:
    """A degraded-file lookalike (HR raw + LR next to it) built with plain area averaging."""
    write_cremi(path, hr, labels, resolution=(40, 4, 4), extra={"volumes/lr": area_downsample(hr, scale)})
    with h5py.File(path, "r+") as f:
        f["volumes/lr"].attrs["resolution"] = np.array([40.0, 4.0 * scale, 4.0 * scale])
    return path


@pytest.fixture
def one_thread():
    """For networks of many small ops (flow, deformable alignment): on a loaded 2-core machine
    two OpenMP threads stall on each other, so such tests run single-threaded."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def smooth_volume():
    """A smooth random uint8 volume (learnable, unlike white noise)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    vol = gaussian_filter(rng.random((6, 64, 64)), sigma=(0, 3, 3))
    vol = (vol - vol.min()) / (vol.max() - vol.min())
    return np.round(vol * 255).astype(np.uint8)


@pytest.fixture
def degraded_x8(tmp_path, smooth_volume) -> Path:
    return write_degraded(tmp_path / "train-0.h5", smooth_volume, 8)


class _State:
    """What the handler serves and what it saw; reset before every test."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.log: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.ignore_range = False
        self.truncate_to: int | None = None  # send only this many body bytes, then close


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``state.files`` with ``Range: bytes=N-`` support (206 / 416), 404 otherwise."""

    state: _State  # set on the subclass made by the fixture
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # keep pytest output clean
        pass

    def _send(self, code: int, body: bytes = b"", headers: dict | None = None, head_only: bool = False):
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if head_only:
            return
        if self.state.truncate_to is not None and code in (200, 206):
            body = body[: self.state.truncate_to]
        self.wfile.write(body)
        self.close_connection = True

    def _serve(self, head_only: bool):
        rng = self.headers.get("Range")
        self.state.log.append((self.command, self.path, rng))
        data = self.state.files.get(self.path)
        if data is None:
            return self._send(404, b"not found", head_only=head_only)
        size = len(data)
        if rng is None or self.state.ignore_range:
            return self._send(200, data, {"Content-Type": "application/octet-stream"}, head_only)
        m = re.fullmatch(r"bytes=(\d+)-", rng.strip())
        if not m:
            return self._send(400, b"unsupported range", head_only=head_only)
        start = int(m.group(1))
        if start >= size:
            return self._send(416, b"", {"Content-Range": f"bytes */{size}"}, head_only)
        return self._send(
            206,
            data[start:],
            {"Content-Type": "application/octet-stream", "Content-Range": f"bytes {start}-{size - 1}/{size}"},
            head_only,
        )

    def do_GET(self):
        self._serve(head_only=False)

    def do_HEAD(self):
        self._serve(head_only=True)


@pytest.fixture(scope="session")
def http_server():
    """A local HTTP server (127.0.0.1, ephemeral port) serving ``state.files`` with Range support."""
    state = _State()
    handler = type("Handler", (RangeHandler,), {"state": state})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd, state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture(scope="session")
def random_vgg19(tmp_path_factory):
    """A registry whose vgg19 entry is a checksum-valid file of randomly initialised
    torchvision VGG19 weights (the real ImageNet file cannot be downloaded here); its spynet
    entry names a file that is absent."""
    import hashlib

    import torchvision
    import yaml

    from emsrbench.pretrained import Pretrained

    root = tmp_path_factory.mktemp("vgg")
    torch.manual_seed(0)
    state = torchvision.models.vgg19(weights=None).state_dict()
    path = root / "w" / "vgg19-dcbb9e9d.pth"
    path.parent.mkdir()
    torch.save(state, path)
    reg = root / "registry.yaml"
    reg.write_text(
        yaml.safe_dump(
            {
                "vgg19": {
                    "file": path.name,
                    "url": "https://example.invalid/vgg19.pth",
                    "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                },
                "spynet": {
                    "file": "spynet_sintel_final-3d2a1287.pth",
                    "url": "https://example.invalid/spynet.pth",
                    "sha256": "3d2a1287",
                },
            }
        )
    )
    return Pretrained(root / "w", reg), state
