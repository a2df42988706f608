"""Building blocks shared by the GPEMSR modules."""

from __future__ import annotations

import math

import torch
from torch import nn


def group_norm(channels: int, groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with ``groups`` groups (the study: 32), reduced to a divisor of ``channels``
    so that narrow presets still build."""
    return nn.GroupNorm(math.gcd(groups, channels), channels, eps=1e-6, affine=True)


class VQResBlock(nn.Module):
    """The VQGAN / indexer residual block: (conv3x3, GroupNorm, ReLU) twice, plus the input
    (through a 1x1 conv when the width changes). The study puts the last ReLU before the sum."""

    def __init__(self, c_in: int, c_out: int, groups: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, 1, 1),
            group_norm(c_out, groups),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, 1, 1),
            group_norm(c_out, groups),
            nn.ReLU(inplace=True),
        )
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class ResBlockNoBN(nn.Module):
    """conv3x3, ReLU, conv3x3, plus the input (EDVR's block, used by the stage III network).
    Kaiming init scaled by 0.1, as EDVR/basicsr initialise it, so a deep trunk starts near
    the identity."""

    def __init__(self, nf: int):
        super().__init__()
        self.conv1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.relu = nn.ReLU(inplace=True)
        for conv in (self.conv1, self.conv2):
            nn.init.kaiming_normal_(conv.weight, a=0, mode="fan_in")
            with torch.no_grad():
                conv.weight.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.relu(self.conv1(x)))


def res_blocks(n: int, nf: int) -> nn.Sequential:
    return nn.Sequential(*(ResBlockNoBN(nf) for _ in range(n)))


def lrelu() -> nn.LeakyReLU:
    return nn.LeakyReLU(0.1, inplace=True)


def frozen(module: nn.Module) -> bool:
    """True when no parameter of ``module`` is trained (its forward can skip autograd)."""
    return not any(p.requires_grad for p in module.parameters())
