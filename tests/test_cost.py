"""Cost measurement: MACs by torch's flop counter against hand formulas, uncounted ops reported,
peak memory, and the cost fields of inference stats, evaluation rows and the leaderboard."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import emsrbench.cost as cost
from emsrbench.cost import PeakMemory, count_macs, model_bytes
from emsrbench.evaluate import COLUMNS, cost_rows, evaluate
from emsrbench.infer import InferSettings, infer_file
from emsrbench.leaderboard import markdown
from emsrbench.methods import discover, load_method

MIB = 2**20


class ConvNet(nn.Module):
    """conv 1->8 3x3, grouped conv 8->8 (4 groups) 3x3, conv 8->s*s 3x3, pixel shuffle."""

    def __init__(self, scale=4):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, groups=4),
            nn.ReLU(),
            nn.Conv2d(8, scale * scale, 3, padding=1),
            nn.PixelShuffle(scale),
        )

    def forward(self, x):
        return self.body(x)


def hand_macs(h, w, scale=4):
    # per LR pixel: c_out * (c_in / groups) * k * k for each conv; biases are not MACs
    return h * w * (8 * 1 * 9 + 8 * 2 * 9 + scale * scale * 8 * 9)


def test_conv_net_macs_equal_the_hand_formula():
    h, w = 12, 20
    count = count_macs(ConvNet(), torch.rand(1, 1, h, w))
    assert count.macs == hand_macs(h, w) and count.complete and count.note == ""
    assert count.by_op == {"aten.convolution": hand_macs(h, w)}


def test_linear_and_attention_are_counted():
    lin = nn.Linear(16, 5)
    assert count_macs(lin, torch.rand(3, 7, 16)).macs == 3 * 7 * 16 * 5

    class Attn(nn.Module):
        def forward(self, q):
            return nn.functional.scaled_dot_product_attention(q, q, q)

    # QK^T and AV: 2 * heads * L * L * d
    assert count_macs(Attn(), torch.rand(1, 2, 10, 8)).macs == 2 * 2 * 10 * 10 * 8


def test_uncounted_mac_ops_are_reported_not_dropped():
    @torch.library.custom_op("emsrtest::fancy_conv", mutates_args=())
    def fancy_conv(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    class Net(nn.Module):
        def forward(self, x):
            y = fancy_conv(nn.functional.conv2d(x, torch.ones(2, 1, 3, 3)))
            return nn.functional.interpolate(y, scale_factor=2, mode="bilinear")

    count = count_macs(Net(), torch.rand(1, 1, 6, 6))
    assert count.macs == 2 * 9 * 4 * 4
    assert count.uncounted == {"emsrtest.fancy_conv": 1} and not count.complete
    assert "lower bound: no MAC formula for emsrtest.fancy_conv (1 calls)" in count.note
    assert "interpolation not counted: aten.upsample_bilinear2d" in count.note


def test_deform_conv2d_counted_as_its_convolution_and_reported_without_the_formula(monkeypatch):
    torchvision = pytest.importorskip("torchvision")

    class Deform(nn.Module):
        def forward(self, x):
            w = torch.ones(8, 4, 3, 3)
            return torchvision.ops.deform_conv2d(
                x, torch.zeros(1, 18, 10, 10), w, padding=1, mask=torch.ones(1, 9, 10, 10)
            )

    x = torch.rand(1, 4, 10, 10)
    count = count_macs(Deform(), x)
    assert count.macs == 10 * 10 * 8 * 4 * 9 and count.complete
    assert "deform_conv2d counted as its convolution" in count.note
    monkeypatch.setattr(cost, "_custom_formulas", lambda: {})
    bare = count_macs(Deform(), x)
    assert bare.macs == 0 and bare.uncounted == {"torchvision.deform_conv2d": 1}


@pytest.mark.skipif(not cost._reset_peak_rss(), reason="needs Linux /proc/self/clear_refs to reset the peak RSS")
def test_cpu_peak_memory_is_reset_and_includes_the_weights():
    big = torch.ones(128 * MIB // 4)  # 128 MiB, then freed: an earlier peak must not count
    del big
    with PeakMemory(torch.device("cpu"), resident_bytes=3 * MIB) as pm:
        buf = torch.ones(48 * MIB // 4)  # 48 MiB touched
        buf += 1
        del buf
    assert pm.note.startswith("CPU: peak RSS growth")
    assert 48 + 3 - 2 <= pm.mib <= 48 + 3 + 40, pm.mib  # slack for allocator and interpreter noise


def test_model_bytes():
    net = ConvNet()
    n = sum(p.numel() for p in net.parameters())
    assert model_bytes(net) == 4 * n
    net.register_buffer("extra", torch.zeros(10, dtype=torch.float64))
    assert model_bytes(net) == 4 * n + 80


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_memory():
    dev = torch.device("cuda")
    with PeakMemory(dev) as pm:
        x = torch.ones(64 * MIB // 4, device=dev)
        del x
    assert 64 <= pm.mib <= 64 + 8 and "CUDA" in pm.note


def conv_method(folder):
    folder.mkdir()
    (folder / "method.yaml").write_text(
        "display_name: Conv\ncitation: x\nfamily: single-image\nscales: [8]\ntrains: false\n"
        "presets: {quick: {}, paper: {}}\n"
    )
    (folder / "model.py").write_text(
        "import torch\nfrom torch import nn\n"
        "def build(scale):\n"
        "    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, scale * scale, 1),"
        " nn.PixelShuffle(scale), nn.Sigmoid())\n"
    )
    return load_method(folder)


def test_infer_stats_carry_macs_and_peak_memory(tmp_path, degraded_x8):
    out = tmp_path / "sr.h5"
    settings = InferSettings.merged({"tile": 6, "overlap": 4, "margin": 1})
    stats = infer_file(conv_method(tmp_path / "conv"), 8, {}, settings, degraded_x8, out)
    with h5py.File(out) as f:
        stored = json.loads(f.attrs["stats"])
    assert stored == stats  # JSON round-trips Python floats exactly
    # per LR pixel 4*1*9 + 64*4*1 MACs, for 64 output pixels
    assert stats["macs_per_mp"] == pytest.approx((36 + 256) * 1e6 / 64)
    assert stats["macs_tile"] == [1, 6, 6] and stats["macs_complete"] is True
    # 8x8 LR sections in 6-pixel tiles with overlap 4: starts [0, 2] per axis, 4 tiles of 36 px for 64 px
    assert stats["macs_per_mp_tiled"] == pytest.approx(stats["macs_per_mp"] * 4 * 36 / 64)
    assert stats["peak_mem_mib"] > 0 and stats["peak_mem_note"]
    assert stats["device"].startswith(("cpu:", "cuda:"))


def test_evaluate_emits_cost_rows_and_the_leaderboard_shows_them(tmp_path, degraded_x8):
    out = tmp_path / "sr.h5"
    method = discover()["bicubic"]
    infer_file(method, 8, {}, InferSettings.merged({"tile": 6, "overlap": 5, "margin": 2}), degraded_x8, out)
    df = evaluate(method, 8, "quick", out, degraded_x8, None)
    rows = df.set_index("metric")
    assert rows.loc["macs_per_mp", "value"] > 0  # bicubic resizing runs as a convolution/matmul
    # CPU peak = growth of the process's resident peak during inference (+ weights; bicubic has
    # none): zero when the allocator reuses pages an earlier test left resident.
    assert rows.loc["peak_mem_mib", "value"] >= 0
    assert rows.loc["peak_mem_mib", "note"].startswith(("cpu:", "cuda:"))  # the device is named
    md = markdown(df)
    assert "GMAC/MP" in md and "Peak MiB" in md


def test_cost_rows_of_files_without_cost_fields_are_missing_with_a_reason():
    rows = dict((m, (v, n)) for m, v, n in cost_rows({"device": "cpu:x"}))
    assert np.isnan(rows["macs_per_mp"][0]) and "rerun infer" in rows["macs_per_mp"][1]
    assert np.isnan(rows["peak_mem_mib"][0]) and "rerun infer" in rows["peak_mem_mib"][1]
    failed = dict(
        (m, (v, n))
        for m, v, n in cost_rows(
            {
                "device": "cpu:x",
                "macs_per_mp": None,
                "macs_note": "missing: MAC counter failed: X",
                "peak_mem_mib": 5.0,
                "peak_mem_note": "CPU: peak",
            }
        )
    )
    assert np.isnan(failed["macs_per_mp"][0]) and failed["macs_per_mp"][1] == "missing: MAC counter failed: X"
    assert failed["peak_mem_mib"] == (5.0, "cpu:x; CPU: peak")
    df = pd.DataFrame(
        [
            {
                "method": "m",
                "display_name": "M",
                "family": "single-image",
                "preset": "quick",
                "scale": 8,
                "metric": k,
                "value": v,
                "note": n,
            }
            for k, (v, n) in rows.items()
        ],
        columns=COLUMNS,
    )
    assert "rerun infer" in markdown(df)  # listed under missing values
