"""The pretrained-weights registry: lookup, checksum, fetch, and the flags of absent weights."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
import yaml

from emsrbench.errors import EmsrError
from emsrbench.evaluate import lpips_value
from emsrbench.leaderboard import markdown
from emsrbench.methods import load_method
from emsrbench.metrics.lpips_metric import load_lpips, lpips_sections
from emsrbench.pretrained import Pretrained, missing_flag, registry
from emsrbench.train import TrainJob, TrainSettings, fit


def test_registry_entries_are_complete():
    reg = registry()
    assert {"alexnet", "vgg19", "spynet"} <= set(reg)
    for w in reg.values():
        assert w.url.startswith("https://") and w.file and w.used_by
        # no checksum only where the publishers give none and the file is fetched by hand
        assert len(w.sha256) >= 8 if w.verified else w.manual


def fake_registry(tmp_path: Path, name: str, data: bytes, url="http://127.0.0.1:9/x") -> Path:
    path = tmp_path / "registry.yaml"
    path.write_text(
        yaml.safe_dump(
            {name: {"file": f"{name}.pth", "url": url, "sha256": hashlib.sha256(data).hexdigest(), "used_by": ["test"]}}
        )
    )
    return path


def test_status_absent_present_mismatch_and_hub_layout(tmp_path):
    reg = fake_registry(tmp_path, "net", b"weights")
    pre = Pretrained(tmp_path / "w", reg)
    path, why = pre.status("net")
    assert path is None and "net weights not found" in why and "fetch_weights" in why
    (tmp_path / "w" / "checkpoints").mkdir(parents=True)
    (tmp_path / "w" / "checkpoints" / "net.pth").write_bytes(b"weights")
    assert pre.path("net") == tmp_path / "w" / "checkpoints" / "net.pth"
    (tmp_path / "w" / "net.pth").write_bytes(b"tampered")
    path, why = pre.status("net")
    assert path is None and "sha256 mismatch" in why
    with pytest.raises(EmsrError, match="no pretrained entry 'vgg'"):
        pre.status("vgg")


def test_fetch_downloads_and_verifies(tmp_path, http_server):
    httpd, state = http_server
    state.__init__()
    state.files["/net.pth"] = b"some weights"
    host, port = httpd.server_address[:2]
    reg = fake_registry(tmp_path, "net", b"some weights", url=f"http://{host}:{port}/net.pth")
    pre = Pretrained(tmp_path / "w", reg)
    assert pre.fetch("net") == tmp_path / "w" / "net.pth"
    assert pre.path("net") == tmp_path / "w" / "net.pth"


@pytest.fixture
def random_alexnet(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "w" / "alexnet-owt-7be5be79.pth"
    path.parent.mkdir()
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    reg = tmp_path / "registry.yaml"
    reg.write_text(
        yaml.safe_dump(
            {
                "alexnet": {
                    "file": path.name,
                    "url": "https://example.invalid/a.pth",
                    "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                }
            }
        )
    )
    return Pretrained(tmp_path / "w", reg)


def test_lpips_through_the_registry(random_alexnet, tmp_path):
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (2, 64, 64), dtype=np.uint8)
    sr = np.clip(hr.astype(int) + rng.integers(-20, 20, hr.shape), 0, 255).astype(np.uint8)
    value, note = lpips_value(hr, sr, random_alexnet)
    model = load_lpips(random_alexnet.path("alexnet"), random_alexnet.entry("alexnet").sha256, "cpu")
    assert value == pytest.approx(float(np.mean(lpips_sections(hr, sr, model, "cpu"))), abs=1e-9)
    assert note.startswith("AlexNet LPIPS")
    value, note = lpips_value(hr, sr, Pretrained(tmp_path / "empty"))
    assert np.isnan(value) and note.startswith("missing: alexnet weights not found")
    value, note = lpips_value(hr, sr, None)
    assert np.isnan(value) and "disabled" in note


def test_absent_weights_flag_the_model_and_the_leaderboard(tmp_path, degraded_x8):
    folder = tmp_path / "flagged"
    folder.mkdir()
    (folder / "method.yaml").write_text(
        "display_name: Flagged\ncitation: x\nfamily: single-image\nscales: [8]\ntrains: true\n"
        "presets: {quick: {}, paper: {}}\n"
    )
    (folder / "model.py").write_text(
        "import torch\nfrom emsrbench.pretrained import missing_flag\n"
        "def build(scale):\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(1, 64, 3, padding=1), torch.nn.PixelShuffle(8))\n"
        "def init_pretrained(model, pretrained):\n    path, why = pretrained.status('spynet')\n"
        "    if path is None:\n        return [missing_flag('spynet', 'flow trained from scratch')]\n"
        "    return []\n"
    )
    job = TrainJob(
        method=load_method(folder),
        scale=8,
        preset="quick",
        model_params={},
        settings=TrainSettings.merged({"iterations": 2, "batch_size": 1, "patch_size": 4}),
        train_files=[str(degraded_x8)],
        out_path=tmp_path / "m" / "model.pt",
        ckpt_dir=tmp_path / "m" / "ck",
        pretrained=Pretrained(tmp_path / "no-weights"),
    )
    fit(job)
    flags = torch.load(job.out_path)["flags"]
    assert flags == [missing_flag("spynet", "flow trained from scratch")]
    tidy = pd.DataFrame(
        [
            {
                "method": "flagged",
                "display_name": "Flagged",
                "family": "single-image",
                "preset": "quick",
                "scale": 8,
                "metric": m,
                "value": 20.0,
                "note": f"some note; {flags[0]}",
            }
            for m in ("psnr", "ssim")
        ]
    )
    md = markdown(tidy)
    assert md.count("- flagged x8: flag: pretrained spynet missing, flow trained from scratch") == 1
