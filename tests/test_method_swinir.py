"""SwinIR: basicsr's architecture with one grey channel, window padding, x2 stages at 8x/16x."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from emsrbench.methods import METHODS_DIR, load_method
from emsrbench.train import count_parameters

SWINIR = load_method(METHODS_DIR / "swinir")
QUICK = SWINIR.preset("quick")["model"]
PAPER = SWINIR.preset("paper")["model"]
PUBLISHED_X4 = 11.9e6  # classical SR SwinIR, x4 (the paper; 11.8 M at x2)


def build(scale, **params):
    return SWINIR.module().build(scale, **params)


@pytest.mark.parametrize("scale, stages", [(8, 3), (16, 4)])
def test_is_basicsr_swinir_with_one_grey_channel_and_x2_stages(scale, stages):
    model = build(scale, **QUICK)
    inner = model.swinir
    assert type(inner).__module__ == "basicsr.archs.swinir_arch"
    assert inner.conv_first.in_channels == 1 and inner.conv_last.out_channels == 1
    assert inner.upsampler == "pixelshuffle"
    assert inner.mean.shape == (1, 1, 1, 1) and inner.mean.item() == 0.5
    shuffles = [m for m in inner.upsample if isinstance(m, nn.PixelShuffle)]
    assert [m.upscale_factor for m in shuffles] == [2] * stages
    # grey_mean=None keeps basicsr's own 1-channel mean (zero)
    assert build(scale, **{**QUICK, "grey_mean": None}).swinir.mean.abs().sum() == 0


def test_padding_is_swinir_mirror_padding_then_crop():
    torch.manual_seed(0)
    model = build(8, **QUICK).eval()
    x = torch.rand(1, 1, 6, 5)
    padded = torch.cat([x, x.flip(2)], 2)[:, :, :8]
    padded = torch.cat([padded, padded.flip(3)], 3)[:, :, :, :8]
    with torch.no_grad():
        assert torch.allclose(model(x), model.swinir(padded)[..., :48, :40])
        y = torch.rand(1, 1, 8, 12)  # already a multiple of the window: no padding at all
        assert torch.equal(model(y), model.swinir(y))


def test_paper_preset_window_8_on_a_small_tile():
    torch.manual_seed(0)
    model = build(8, **{**PAPER, "depths": [2], "num_heads": [6]}).eval()  # paper width/window, one shallow RSTB
    with torch.no_grad():
        sr = model(torch.rand(1, 1, 5, 11))
    assert sr.shape == (1, 1, 40, 88) and torch.isfinite(sr).all()


def test_paper_parameter_count_matches_published():
    rgb = count_parameters(build(4, **{**PAPER, "in_chans": 3}).swinir)
    grey = count_parameters(build(4, **PAPER))
    assert abs(rgb - PUBLISHED_X4) / PUBLISHED_X4 < 0.02, rgb
    assert abs(grey - PUBLISHED_X4) / PUBLISHED_X4 < 0.02, grey
    assert rgb == 11_900_199 and grey == 11_895_805
