"""BSRN (Li et al., CVPRW 2022), written from the paper's description for one grey channel.

Blueprint Separable Residual Network, in four parts:

1. shallow features: the LR input is replicated ``replicate`` (n = 4) times along channels and
   one blueprint separable convolution (BSConv-U) maps it to ``num_feat`` features, F0;
2. deep features: ``num_blocks`` Efficient Separable Distillation Blocks (ESDB) in a chain;
3. fusion: the outputs of all ESDBs are concatenated, fused by a 1x1 convolution + GELU and a
   3x3 BSConv, and added to F0 (long skip);
4. reconstruction: one 3x3 convolution to ``out_channels * scale**2`` channels and a
   PixelShuffle(scale), ESPCN-style, for every scale (8x and 16x included).

BSConv-U (Haase & Amthor, CVPR 2020) is a pointwise 1x1 convolution (no bias) followed by a
depthwise kxk convolution (with bias).  An ESDB is a residual feature distillation block
whose refinement convolutions are BSConvs:  three stages each split the features into a
distilled part (1x1 convolution to half the channels) and a refined part (a blueprint
separable residual block, BSConv + identity, then GELU); a last BSConv halves the refined
features; the four halves are concatenated, fused by a 1x1 convolution, re-weighted by
enhanced spatial attention (ESA) and contrast-aware channel attention (CCA), and added to the
block input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BSConvU(nn.Module):
    """Blueprint separable convolution, unconstrained: pointwise 1x1 then depthwise kxk."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, padding: int | None = None):
        super().__init__()
        if padding is None:
            padding = kernel_size // 2
        self.pw = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.dw = nn.Conv2d(out_ch, out_ch, kernel_size, stride, padding, groups=out_ch, bias=True)

    def forward(self, x):
        return self.dw(self.pw(x))


class ESA(nn.Module):
    """Enhanced spatial attention (Liu et al., RFANet 2020) with BSConvs for its 3x3 convolutions:
    1x1 reduction, strided 3x3, 7x7/3 max pooling, two 3x3 convolutions, bilinear upsampling,
    a 1x1 skip from the reduced features, 1x1 expansion and a sigmoid mask."""

    POOL = 7

    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.skip = nn.Conv2d(reduced, reduced, 1)
        self.strided = BSConvU(reduced, reduced, 3, stride=2, padding=0)
        self.after_pool = BSConvU(reduced, reduced, 3)
        self.conv_a = BSConvU(reduced, reduced, 3)
        self.conv_b = BSConvU(reduced, reduced, 3)
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x):
        h, w = x.shape[-2:]
        r = self.reduce(x)
        s = self.strided(r)
        # The 7x7 pooling window needs a strided map of >= 7 px (an LR input of >= 15 px); smaller
        # tiles are padded by edge replication, where the max equals the max over the clipped window.
        ph, pw = max(0, self.POOL - s.shape[-2]), max(0, self.POOL - s.shape[-1])
        if ph or pw:
            s = F.pad(s, (0, pw, 0, ph), mode="replicate")
        v = F.max_pool2d(s, kernel_size=self.POOL, stride=3)
        v = F.relu(self.after_pool(v))
        v = F.relu(self.conv_a(v))
        v = self.conv_b(v)
        v = F.interpolate(v, size=(h, w), mode="bilinear", align_corners=False)
        return x * torch.sigmoid(self.expand(v + self.skip(r)))


class CCA(nn.Module):
    """Contrast-aware channel attention (Hui et al., IMDN 2019): per-channel standard deviation
    plus mean, squeezed and excited through two 1x1 convolutions, sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        mid = max(1, channels // reduction)
        self.squeeze = nn.Conv2d(channels, mid, 1)
        self.excite = nn.Conv2d(mid, channels, 1)

    def forward(self, x):
        mean = x.mean(dim=(2, 3), keepdim=True)
        # eps keeps the gradient of the square root finite on a constant feature map
        std = ((x - mean).pow(2).mean(dim=(2, 3), keepdim=True) + 1e-12).sqrt()
        y = torch.sigmoid(self.excite(F.relu(self.squeeze(std + mean))))
        return x * y


class BSRB(nn.Module):
    """Blueprint separable residual block: BSConv 3x3 plus identity."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = BSConvU(channels, channels, 3)

    def forward(self, x):
        return self.conv(x) + x


class ESDB(nn.Module):
    """Efficient separable distillation block."""

    def __init__(self, channels: int, esa_reduction: int = 4, cca_reduction: int = 16):
        super().__init__()
        half = channels // 2
        self.distill = nn.ModuleList(nn.Conv2d(channels, half, 1) for _ in range(3))
        self.refine = nn.ModuleList(BSRB(channels) for _ in range(3))
        self.last = BSConvU(channels, half, 3)
        self.act = nn.GELU()
        self.fuse = nn.Conv2d(4 * half, channels, 1)
        self.esa = ESA(channels, channels // esa_reduction)
        self.cca = CCA(channels, cca_reduction)

    def forward(self, x):
        parts, r = [], x
        for distill, refine in zip(self.distill, self.refine):
            parts.append(self.act(distill(r)))
            r = self.act(refine(r))
        parts.append(self.act(self.last(r)))
        out = self.fuse(torch.cat(parts, dim=1))
        return self.cca(self.esa(out)) + x


class BSRN(nn.Module):
    def __init__(
        self,
        scale: int,
        in_channels: int = 1,
        out_channels: int = 1,
        num_feat: int = 64,
        num_blocks: int = 8,
        replicate: int = 4,
        esa_reduction: int = 4,
        cca_reduction: int = 16,
    ):
        super().__init__()
        self.scale, self.replicate = scale, replicate
        self.shallow = BSConvU(in_channels * replicate, num_feat, 3)
        self.blocks = nn.ModuleList(ESDB(num_feat, esa_reduction, cca_reduction) for _ in range(num_blocks))
        self.fuse = nn.Sequential(nn.Conv2d(num_feat * num_blocks, num_feat, 1), nn.GELU())
        self.fuse_conv = BSConvU(num_feat, num_feat, 3)
        # ESPCN-style one-step reconstruction, the paper's, at any integer scale.
        self.upsample = nn.Sequential(
            nn.Conv2d(num_feat, out_channels * scale * scale, 3, 1, 1), nn.PixelShuffle(scale)
        )

    def forward(self, x):
        f0 = self.shallow(torch.cat([x] * self.replicate, dim=1))
        feats, f = [], f0
        for block in self.blocks:
            f = block(f)
            feats.append(f)
        fused = self.fuse_conv(self.fuse(torch.cat(feats, dim=1))) + f0
        return self.upsample(fused)


def build(
    scale: int, num_feat=64, num_blocks=8, replicate=4, esa_reduction=4, cca_reduction=16, in_channels=1, out_channels=1
) -> nn.Module:
    return BSRN(
        scale,
        in_channels=in_channels,
        out_channels=out_channels,
        num_feat=num_feat,
        num_blocks=num_blocks,
        replicate=replicate,
        esa_reduction=esa_reduction,
        cca_reduction=cca_reduction,
    )
