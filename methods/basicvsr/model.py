"""BasicVSR (Chan et al., CVPR 2021) through basicsr's architecture, adapted to EM sections.

The 2N+1 adjacent sections are BasicVSR's frames (one grey channel each).  SPyNet (basicsr's
network as :class:`emsrbench.nets.spynet.SpyNet`, shared with GPEMSR's POD; ImageNet-normalised
RGB input) sees each grey section replicated to three channels; the propagation trunks take
one image channel plus the propagated features; the upsampler has log2(scale) upconv +
pixel-shuffle stages (basicsr: two, for 4x) and, as in basicsr, a bilinearly upsampled input
frame is added.  The bidirectional recurrence runs over the whole window and the output of the
centre section is returned.
"""

from __future__ import annotations

import math
import sys
from functools import lru_cache

import torch
from torch import nn
from torch.nn import functional as F

from emsrbench.compat import basicsr_arch
from emsrbench.nets.spynet import SpyNet
from emsrbench.pretrained import missing_flag
from emsrbench.weight_init import start_at_base


@lru_cache(maxsize=None)
def _basicvsr_class():
    BasicVSR = basicsr_arch("basicvsr_arch", "BasicVSR")
    ConvResidualBlocks = basicsr_arch("basicvsr_arch", "ConvResidualBlocks")
    flow_warp = basicsr_arch("arch_util", "flow_warp")

    class EMBasicVSR(BasicVSR):
        """basicsr's BasicVSR with one channel per frame and a log2(scale)-stage upsampler."""

        def __init__(
            self, scale: int, num_feat=64, num_block=30, num_frame=5, hr_feat=64, spynet_levels=6, grey_mean=0.0
        ):
            if scale < 2 or scale & (scale - 1):
                raise ValueError(f"BasicVSR: scale must be a power of two >= 2, got {scale}")
            nn.Module.__init__(self)  # the parts are basicsr's, sized for one channel below
            self.scale, self.num_feat, self.num_frame = scale, num_feat, num_frame
            self.center_frame_idx = num_frame // 2
            self.grey_mean = float(grey_mean)

            # alignment: SPyNet (basicsr's network and keys, any pyramid depth), random until
            # init_pretrained loads the published flow weights
            self.spynet = SpyNet(spynet_levels)
            # propagation: one grey channel + num_feat propagated features (basicsr: 3 + num_feat)
            self.backward_trunk = ConvResidualBlocks(num_feat + 1, num_feat, num_block)
            self.forward_trunk = ConvResidualBlocks(num_feat + 1, num_feat, num_block)
            # reconstruction: fusion, log2(scale) x2 stages (the last to hr_feat, basicsr: 64),
            # conv_hr, conv_last to one channel
            self.fusion = nn.Conv2d(num_feat * 2, num_feat, 1, 1, 0, bias=True)
            self.num_up = int(math.log2(scale))
            for i in range(1, self.num_up + 1):
                out = hr_feat if i == self.num_up else num_feat
                setattr(self, f"upconv{i}", nn.Conv2d(num_feat, out * 4, 3, 1, 1, bias=True))
            self.conv_hr = nn.Conv2d(hr_feat, hr_feat, 3, 1, 1)
            self.conv_last = nn.Conv2d(hr_feat, 1, 3, 1, 1)
            self.pixel_shuffle = nn.PixelShuffle(2)
            self.lrelu = nn.LeakyReLU(negative_slope=0.1, inplace=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            """(B, T, h, w) sections in [0, 1] -> (B, 1, s h, s w), the centre section.

            basicsr's forward, restricted to what the centre frame's output depends on: the
            backward branch from the last frame down to the centre, the forward branch from
            the first frame up to the centre, and the SPyNet flows these two use (computed
            in one batch).  Equal to basicsr's output for the centre frame (tested).
            """
            x = x.unsqueeze(2)  # (B, T, 1, h, w): each section a one-channel frame
            b, n, _, h, w = x.shape
            c = self.center_frame_idx
            # basicsr: flows_backward[i] = spynet(x_i, x_i+1), flows_forward[i-1] = spynet(x_i, x_i-1)
            ref = torch.cat([x[:, c : n - 1], x[:, 1 : c + 1]], dim=1)
            supp = torch.cat([x[:, c + 1 : n], x[:, 0:c]], dim=1)
            k = ref.shape[1]
            # SPyNet takes ImageNet-normalised RGB: the grey section replicated to 3 channels
            flows = self.spynet(
                ref.reshape(b * k, 1, h, w).expand(-1, 3, -1, -1), supp.reshape(b * k, 1, h, w).expand(-1, 3, -1, -1)
            ).view(b, k, 2, h, w)
            flows_backward, flows_forward = flows[:, : n - 1 - c], flows[:, n - 1 - c :]

            base = F.interpolate(x[:, c], scale_factor=self.scale, mode="bilinear", align_corners=False)
            x = x - self.grey_mean  # what the trunks see (SPyNet and the base use the raw sections)

            # backward branch, last frame down to the centre
            feat_prop = x.new_zeros(b, self.num_feat, h, w)
            for i in range(n - 1, c - 1, -1):
                if i < n - 1:
                    feat_prop = flow_warp(feat_prop, flows_backward[:, i - c].permute(0, 2, 3, 1))
                feat_prop = self.backward_trunk(torch.cat([x[:, i], feat_prop], dim=1))
            feat_back = feat_prop

            # forward branch, first frame up to the centre
            feat_prop = torch.zeros_like(feat_prop)
            for i in range(0, c + 1):
                if i > 0:
                    feat_prop = flow_warp(feat_prop, flows_forward[:, i - 1].permute(0, 2, 3, 1))
                feat_prop = self.forward_trunk(torch.cat([x[:, i], feat_prop], dim=1))

            # reconstruction: fusion, log2(scale) upsampling stages, plus the bilinear base
            out = self.lrelu(self.fusion(torch.cat([feat_back, feat_prop], dim=1)))
            for i in range(1, self.num_up + 1):
                out = self.lrelu(self.pixel_shuffle(getattr(self, f"upconv{i}")(out)))
            out = self.lrelu(self.conv_hr(out))
            out = self.conv_last(out)
            return out + base

    return EMBasicVSR


def build(
    scale: int,
    num_feat=64,
    num_block=30,
    num_frame=5,
    hr_feat=64,
    spynet_levels=6,
    fix_flow=True,
    grey_mean=0.0,
    init="basicsr",
) -> nn.Module:
    """BasicVSR for ``scale``.  ``spynet_levels``: SPyNet pyramid levels (published: 6);
    ``fix_flow``: keep a loaded pretrained SPyNet frozen (see README; without the pretrained
    file SPyNet is trained); ``grey_mean`` is subtracted from the sections the propagation
    trunks see (not from SPyNet's input or the bilinear base), 0 is the published network;
    ``init``: "basicsr" (the published code's init) or "kaiming" (see :func:`emsrbench.weight_init.start_at_base`)."""
    if init not in ("basicsr", "kaiming"):
        raise ValueError(f"BasicVSR: init must be 'basicsr' or 'kaiming', got {init!r}")
    model = _basicvsr_class()(
        scale,
        num_feat=num_feat,
        num_block=num_block,
        num_frame=num_frame,
        hr_feat=hr_feat,
        spynet_levels=spynet_levels,
        grey_mean=grey_mean,
    )
    model.fix_flow = bool(fix_flow)
    if init == "kaiming":
        start_at_base(model, skip_prefixes=("spynet",))
    return model


def init_pretrained(model: nn.Module, pretrained) -> list[str]:
    """Load the published SPyNet flow weights (basicsr's spynet_sintel_final checkpoint,
    ``{'params': state_dict}`` holding ``basic_module.*`` only) into ``model.spynet``; flag
    it if absent."""
    path, why = pretrained.status("spynet")
    if path is None:
        print(f"basicvsr: {why}; SPyNet is trained from scratch", file=sys.stderr)
        return [missing_flag("spynet", "SPyNet flow trained from scratch")]
    model.spynet.load(path)
    if model.fix_flow:
        model.spynet.requires_grad_(False)
    return []
