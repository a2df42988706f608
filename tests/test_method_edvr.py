"""EDVR (basicsr's architecture on 5 adjacent EM sections): upsampler stages, the paper's
parameter count, equality with basicsr's own forward at 4x, neighbour use. Shapes, training
and tiled inference: test_method_contract.py."""

from __future__ import annotations

import pytest
import torch

from emsrbench.compat import basicsr_arch
from emsrbench.methods import discover
from emsrbench.train import count_parameters

EDVR = discover()["edvr"]
QUICK = EDVR.preset("quick")["model"]
PAPER = EDVR.preset("paper")["model"]
TINY = {"num_feat": 8, "num_extract_block": 1, "num_reconstruct_block": 1, "deformable_groups": 2, "hr_feat": 8}
EDVR_M_PARAMS = 3.3e6  # EDVR-M as published (3.3 M; also the figure in the BasicVSR paper's comparison table)

pytestmark = pytest.mark.usefixtures("one_thread")


def build(scale, **params):
    torch.manual_seed(0)
    return EDVR.module().build(scale, **params)


def test_method_metadata():
    assert EDVR.family == "multi-slice" and EDVR.slices == 5 and EDVR.trains
    assert {8, 16} <= set(EDVR.scales)


def test_upsampler_has_log2_scale_pixel_shuffle_stages():
    for scale, stages in [(2, 1), (4, 2), (8, 3), (16, 4)]:
        model = build(scale, **TINY)
        assert model.num_up == stages
        assert [n for n, _ in model.named_children() if n.startswith("upconv")] == [
            f"upconv{i}" for i in range(1, stages + 1)
        ]
    m = build(8, **TINY)
    assert m.conv_first.in_channels == 1 and m.conv_last.out_channels == 1


def test_paper_parameter_count_matches_edvr_m():
    """EDVR-M at 4x (where the published figure is given); one grey channel instead of RGB
    removes a few hundred weights of 3.3 M."""
    n = count_parameters(build(4, **PAPER))
    assert abs(n - EDVR_M_PARAMS) / EDVR_M_PARAMS < 0.02, n
    assert PAPER["num_feat"] == 64 and PAPER["num_reconstruct_block"] == 10 and PAPER["num_extract_block"] == 5
    assert PAPER["deformable_groups"] == 8 and PAPER["with_tsa"] and not PAPER["with_predeblur"]


@pytest.mark.parametrize("with_tsa", [True, False])
def test_equals_basicsr_edvr_at_4x(with_tsa):
    """At 4x the network is basicsr's EDVR (same parameter names), with the 5 sections as
    1-channel frames: same weights, same output (basicsr hard-codes 3 output channels in
    conv_last, swapped for 1 here)."""
    params = {**TINY, "hr_feat": 64, "with_tsa": with_tsa}
    ours = build(4, **params).eval()
    ref = basicsr_arch("edvr_arch", "EDVR")(
        num_in_ch=1,
        num_out_ch=1,
        num_feat=8,
        num_extract_block=1,
        num_reconstruct_block=1,
        deformable_groups=2,
        with_tsa=with_tsa,
    )
    ref.conv_last = torch.nn.Conv2d(64, 1, 3, 1, 1)
    ref.load_state_dict(ours.state_dict())
    x = torch.rand(2, 5, 8, 12)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x.unsqueeze(2)), rtol=1e-5, atol=1e-6)


def test_kaiming_init_starts_at_the_bilinear_base():
    model = build(8, **{**TINY, "init": "kaiming"}).eval()
    x = torch.rand(1, 5, 8, 8)
    base = torch.nn.functional.interpolate(x[:, 2:3], scale_factor=8, mode="bilinear", align_corners=False)
    with torch.no_grad():
        torch.testing.assert_close(model(x), base)
    with pytest.raises(ValueError, match="init"):
        build(8, **{**TINY, "init": "xavier"})


def test_output_uses_the_neighbour_sections():
    """Changing a neighbour section (not the centre) changes the centre prediction."""
    model = build(8, **QUICK).eval()
    torch.nn.init.normal_(model.conv_last.weight, std=0.1)  # the quick init zeroes the last conv
    x = torch.rand(1, 5, 8, 8)
    with torch.no_grad():
        a = model(x)
        for z in (0, 1, 3, 4):
            y = x.clone()
            y[:, z] = torch.rand(8, 8)
            assert (model(y) - a).abs().max() > 1e-4, z
