"""Tiled inference: coverage, blending weights, equality with whole-image inference, errors."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from emsrbench.errors import EmsrError
from emsrbench.infer import (
    InferSettings,
    TiledUpscaler,
    edge_window,
    infer_file,
    neighbour_indices,
    tile_starts,
    to_uint8,
)
from emsrbench.methods import discover, load_method
from emsrbench.resize import imresize

METHODS = discover()


@pytest.mark.parametrize("length,tile,overlap", [(10, 64, 16), (64, 64, 16), (100, 32, 8), (129, 32, 8)])
def test_tiles_cover_everything_with_at_least_the_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered.all() and starts[0] == 0 and starts[-1] + min(tile, length) == length
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))


def test_blend_weights_of_regular_neighbours_sum_to_one():
    ramp, margin, tile = 16, 4, 48
    a = edge_window(tile, ramp, margin, open_before=False, open_after=True)
    b = edge_window(tile, ramp, margin, open_before=True, open_after=False)
    np.testing.assert_allclose(a[-ramp:] + b[:ramp], 1.0)
    assert (a[-margin:] == 0).all() and (b[:margin] == 0).all() and (a[:-ramp] == 1).all()


class LocalNet(nn.Module):
    """Receptive field of 2 LR pixels: tiles with a margin >= 2 must reproduce whole-image output."""

    def __init__(self, scale, in_ch=1):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(in_ch, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, scale * scale, 3, padding=1),
            nn.PixelShuffle(scale),
            nn.Sigmoid(),
        )

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("shape", [(1, 40, 52), (3, 33, 70)])
def test_tiled_equals_whole_image(shape):
    scale = 4
    rng = np.random.default_rng(1)
    stack = rng.integers(0, 256, shape, dtype=np.uint8)
    model = LocalNet(scale, shape[0]).eval()
    settings = InferSettings.merged({"tile": 16, "overlap": 8, "margin": 2, "batch": 3})
    tiled = TiledUpscaler(model, scale, settings, torch.device("cpu"))(stack[None])[0]
    with torch.no_grad():
        whole = model(torch.from_numpy(stack).float()[None] / 255.0)[0, 0].numpy()
    assert tiled.shape == whole.shape
    np.testing.assert_allclose(tiled, whole, atol=1e-5, rtol=0)


def test_neighbours_replicate_at_the_edges():
    assert neighbour_indices(0, 10, 5).tolist() == [0, 0, 0, 1, 2]
    assert neighbour_indices(9, 10, 5).tolist() == [7, 8, 9, 9, 9]
    assert neighbour_indices(4, 10, 1).tolist() == [4]


def test_settings_errors():
    with pytest.raises(EmsrError, match="unknown inference setting 'tiles'"):
        InferSettings.merged({"tiles": 3})
    with pytest.raises(EmsrError, match="overlap < tile"):
        InferSettings.merged({"tile": 16, "overlap": 16})
    with pytest.raises(
        EmsrError, match=r"^rcan inference settings: precision must be one of fp32, bf16, fp16, got 'half'$"
    ):
        InferSettings.merged({"precision": "half"}, source="rcan inference settings")
    assert InferSettings.merged({}).precision == "fp32"


def precision_probe(folder):
    """A method whose model records (dtype of a conv output, cuDNN TF32 allowed) at every forward."""
    folder.mkdir()
    (folder / "method.yaml").write_text(
        "display_name: Probe\ncitation: x\nfamily: single-image\nscales: [8]\ntrains: false\n"
        "presets: {quick: {}, paper: {}}\n"
    )
    (folder / "model.py").write_text(
        "import torch\nSEEN = []\nclass M(torch.nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.conv = torch.nn.Conv2d(1, 1, 1)\n"
        "    def forward(self, x):\n        y = self.conv(x)\n"
        "        SEEN.append((y.dtype, torch.backends.cudnn.allow_tf32))\n"
        "        return x.repeat_interleave(8, 2).repeat_interleave(8, 3)\n"
        "def build(scale):\n    return M()\n"
    )
    return load_method(folder)


def test_inference_and_its_mac_count_run_in_the_configured_precision(tmp_path, degraded_x8):
    method = precision_probe(tmp_path / "probe")
    seen = method.module().SEEN
    stats = infer_file(method, 8, {}, InferSettings.merged({}), degraded_x8, tmp_path / "fp32.h5")
    assert set(seen) == {(torch.float32, False)}  # every forward, the MAC counter's included: fp32, no TF32
    assert stats["precision"] == "fp32" and stats["flags"] == []
    seen.clear()
    stats = infer_file(method, 8, {}, InferSettings.merged({"precision": "bf16"}), degraded_x8, tmp_path / "bf16.h5")
    assert {dtype for dtype, _ in seen} == {torch.bfloat16}
    assert stats["precision"] == "bf16" and stats["flags"] == [
        "flag: inference in bf16 autocast, not comparable with fp32 rows"
    ]
    with h5py.File(tmp_path / "bf16.h5") as f:
        assert json.loads(f.attrs["stats"])["precision"] == "bf16"
    with pytest.raises(EmsrError, match="^probe inference settings: precision fp16 needs a CUDA device, got cpu"):
        infer_file(
            method,
            8,
            {},
            InferSettings.merged({"precision": "fp16", "device": "cpu"}),
            degraded_x8,
            tmp_path / "fp16.h5",
        )
    assert not (tmp_path / "fp16.h5").exists()


def test_bicubic_inference_file(tmp_path, degraded_x8):
    out = tmp_path / "sr.h5"
    stats = infer_file(
        METHODS["bicubic"], 8, {}, InferSettings.merged({"tile": 6, "overlap": 5, "margin": 2}), degraded_x8, out
    )
    with h5py.File(degraded_x8) as f:
        lr, hr = f["volumes/lr"][:], f["volumes/raw"][:]
    with h5py.File(out) as f:
        sr = f["volumes/raw"][:]
        np.testing.assert_allclose(f["volumes/raw"].attrs["resolution"], (40, 4, 4))
        assert json.loads(f.attrs["stats"])["method"] == "bicubic"
    assert sr.shape == hr.shape and sr.dtype == np.uint8
    # Bicubic reaches 2 LR pixels: with a margin of 2 tiles reproduce whole-section resizing.
    expect = to_uint8(imresize(torch.from_numpy(lr).double() / 255, 8, antialias=False).numpy())
    assert np.abs(sr.astype(int) - expect).max() <= 1
    assert stats["parameters"] == 0 and stats["infer_seconds_per_mp"] > 0


def test_nan_output_is_an_error_and_leaves_no_file(tmp_path, degraded_x8):
    folder = tmp_path / "nanny"
    folder.mkdir()
    (folder / "method.yaml").write_text(
        "display_name: Nan\ncitation: x\nfamily: single-image\nscales: [8]\ntrains: false\n"
        "presets: {quick: {}, paper: {}}\n"
    )
    (folder / "model.py").write_text(
        "import torch\nclass M(torch.nn.Module):\n    def forward(self, x):\n"
        "        return torch.full((x.shape[0], 1, x.shape[2] * 8, x.shape[3] * 8), float('nan'))\n"
        "def build(scale):\n    return M()\n"
    )
    out = tmp_path / "sr.h5"
    with pytest.raises(EmsrError, match="NaN") as info:
        infer_file(load_method(folder), 8, {}, InferSettings.merged({}), degraded_x8, out)
    assert "nanny" in str(info.value) and "section 0" in str(info.value)
    assert not out.exists() and not list(tmp_path.glob(".sr.h5*"))


def test_missing_model_file(tmp_path, degraded_x8):
    with pytest.raises(EmsrError, match="trained model file not found"):
        infer_file(
            METHODS["rcan"],
            8,
            {},
            InferSettings.merged({}),
            degraded_x8,
            tmp_path / "o.h5",
            model_file=tmp_path / "nope.pt",
        )


def test_multi_slice_methods_get_their_neighbours(tmp_path, degraded_x8):
    """A 5-slice method that returns its first input channel upsampled: section z of the output
    must be the LR section max(z-2, 0), i.e. the stack is ordered z-2..z+2 and edge-replicated."""
    folder = tmp_path / "first"
    folder.mkdir()
    (folder / "method.yaml").write_text(
        "display_name: First\ncitation: x\nfamily: multi-slice\nslices: 5\nscales: [8]\ntrains: false\n"
        "presets: {quick: {}, paper: {}}\n"
    )
    (folder / "model.py").write_text(
        "import torch\nclass M(torch.nn.Module):\n    def forward(self, x):\n        assert x.shape[1] == 5\n"
        "        return x[:, :1].repeat_interleave(8, 2).repeat_interleave(8, 3)\n"
        "def build(scale):\n    return M()\n"
    )
    out = tmp_path / "sr.h5"
    infer_file(load_method(folder), 8, {}, InferSettings.merged({}), degraded_x8, out)
    with h5py.File(degraded_x8) as f:
        lr = f["volumes/lr"][:]
    with h5py.File(out) as f:
        sr = f["volumes/raw"][:]
    for z in range(lr.shape[0]):
        np.testing.assert_array_equal(sr[z, ::8, ::8], lr[max(z - 2, 0)])


def test_batches_across_sections_equal_one_section_at_a_time():
    """Tiles of several sections share a forward batch (batch 5 over 4 tiles per section):
    each section's blend equals its own pass, and a NaN is traced to its section."""
    scale = 4
    stacks = np.random.default_rng(2).integers(0, 256, (3, 1, 20, 20), dtype=np.uint8)
    model = LocalNet(scale).eval()
    settings = InferSettings.merged({"tile": 12, "overlap": 4, "margin": 1, "batch": 5})
    up = TiledUpscaler(model, scale, settings, torch.device("cpu"))
    assert up.tiles_per_section(20, 20) == 4
    together = up(stacks)
    alone = np.stack([up(stacks[k : k + 1])[0] for k in range(3)])
    np.testing.assert_array_equal(together, alone)

    class NaNOnBright(nn.Module):
        def forward(self, x):
            y = model(x)
            return torch.where(x.amax(dim=(1, 2, 3), keepdim=True) > 0.99, torch.nan, y)

    dark = stacks // 2
    dark[2] = 255  # only the third section is bright
    from emsrbench.infer import NonFiniteOutput

    with pytest.raises(NonFiniteOutput) as err:
        TiledUpscaler(NaNOnBright(), scale, settings, torch.device("cpu"))(dark)
    assert err.value.index == 2
