"""BSRN (written from the paper): structure, published parameter counts, tiny tiles, training."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from emsrbench.methods import METHODS_DIR, load_method
from emsrbench.train import count_parameters

BSRN = load_method(METHODS_DIR / "bsrn")
QUICK = BSRN.preset("quick")["model"]
PAPER = BSRN.preset("paper")["model"]
PUBLISHED = {2: 332e3, 3: 340e3, 4: 352e3}  # BSRN, the paper's model table (3 channels)


def build(scale, **params):
    return BSRN.module().build(scale, **params)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_paper_parameter_count_matches_published(scale):
    rgb = count_parameters(build(scale, **PAPER, in_channels=3, out_channels=3))
    assert abs(rgb - PUBLISHED[scale]) / PUBLISHED[scale] < 0.02, rgb


def test_paper_parameter_counts_exact():
    assert count_parameters(build(4, **PAPER, in_channels=3, out_channels=3)) == 352_400
    # One grey channel: 4 instead of 12 replicated input channels, 16 instead of 48 channels
    # before the shuffle at 4x; at 8x and 16x the one-step reconstruction grows with scale**2.
    assert count_parameters(build(4, **PAPER)) == 333_424
    assert count_parameters(build(8, **PAPER)) == 361_120
    assert count_parameters(build(16, **PAPER)) == 471_904


def test_structure_follows_the_paper():
    model = build(16, **PAPER)
    assert len(model.blocks) == 8 and model.replicate == 4
    # BSConv-U: pointwise 1x1 without bias, then depthwise 3x3 with bias
    pw, dw = model.shallow.pw, model.shallow.dw
    assert pw.kernel_size == (1, 1) and pw.bias is None and pw.in_channels == 4 and pw.out_channels == 64
    assert dw.kernel_size == (3, 3) and dw.groups == 64 and dw.bias is not None
    block = model.blocks[0]
    assert [d.out_channels for d in block.distill] == [32, 32, 32] and block.last.pw.out_channels == 32
    assert block.fuse.in_channels == 128 and block.esa.reduce.out_channels == 16
    assert block.cca.squeeze.out_channels == 4 and isinstance(block.act, nn.GELU)
    assert model.fuse[0].in_channels == 8 * 64
    # one-step reconstruction at every scale: conv to scale**2 channels + PixelShuffle(scale)
    conv, shuffle = model.upsample
    assert conv.out_channels == 256 and conv.kernel_size == (3, 3) and shuffle.upscale_factor == 16


def test_tiny_tiles_and_constant_input_train_with_finite_gradients():
    torch.manual_seed(0)
    model = build(8, **QUICK)
    for x in (torch.rand(2, 1, 4, 4), torch.full((2, 1, 6, 5), 0.5)):
        model.zero_grad()
        model(x).square().mean().backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_esa_padding_only_for_small_maps():
    esa = BSRN.module().ESA(16, 4)
    big = torch.rand(1, 16, 15, 15)  # stride-2 map is 7x7: no padding
    s = esa.strided(esa.reduce(big))
    assert s.shape[-2:] == (7, 7)
    small = torch.rand(1, 16, 5, 9)
    assert esa(small).shape == small.shape
