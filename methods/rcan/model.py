"""RCAN (Zhang et al. 2018) through basicsr's architecture, adapted to one grey channel."""

import torch
from torch import nn

from emsrbench.compat import basicsr_arch


def build(scale: int, num_feat=64, num_group=10, num_block=20, squeeze_factor=16, grey_mean=0.5) -> nn.Module:
    RCAN = basicsr_arch("rcan_arch", "RCAN")
    model = RCAN(
        num_in_ch=1,
        num_out_ch=1,
        num_feat=num_feat,
        num_group=num_group,
        num_block=num_block,
        squeeze_factor=squeeze_factor,
        upscale=scale,  # basicsr's Upsample stacks log2(scale) x2 pixel-shuffle stages
    )
    # basicsr hard-codes a 3-channel RGB mean (a plain attribute, not a buffer), which cannot
    # broadcast against one grey channel; EM has one channel with mean about 0.5.
    model.mean = torch.full((1, 1, 1, 1), float(grey_mean))
    return model
