"""RCAN (basicsr's architecture, one grey channel): the paper preset's size and its x2 stages.
Shapes, training and tiled inference: test_method_contract.py."""

from __future__ import annotations

from emsrbench.methods import discover
from emsrbench.train import count_parameters

RCAN = discover()["rcan"]
PAPER = RCAN.preset("paper")["model"]
PUBLISHED_X4 = 15.59e6  # RCAN at x4 (the size quoted in the RCAN/SwinIR comparison tables)


def test_paper_parameter_count_matches_published():
    n = count_parameters(RCAN.module().build(4, **PAPER))
    assert abs(n - PUBLISHED_X4) / PUBLISHED_X4 < 0.02, n
    assert PAPER == {"num_feat": 64, "num_group": 10, "num_block": 20, "squeeze_factor": 16}


def test_8x_and_16x_add_one_x2_pixel_shuffle_stage_each():
    """Each extra x2 stage is a 64 -> 256 3x3 conv (weights + bias) before a pixel shuffle."""
    n4, n8, n16 = (count_parameters(RCAN.module().build(s, **PAPER)) for s in (4, 8, 16))
    stage = 64 * 256 * 9 + 256
    assert n8 - n4 == stage and n16 - n8 == stage
