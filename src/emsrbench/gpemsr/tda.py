"""3DA: fusion of the aligned 2N+1 sections (supplement Sec. 2, Fig. 3).

1. Axial masks: embeddings (3x3 convs) of every aligned section and of the centre; their
   per-pixel inner product through a sigmoid is a mask in [0, 1] per section and pixel that
   suppresses neighbour features unrelated to the centre (the masks run along the z axis).
2. Fusion of the masked stack: a 1x1 conv over the concatenated sections, plus two branches of
   3D convolutions (1x1x1 convs across the section axis, i.e. mixing sections per feature
   channel and pixel, each followed by a 1x1 conv over the stack), plus a 1x1 conv of the sum.
3. Spatial attention: a two-level pyramid (max and average pooling, convs, bilinear
   upsampling) giving a multiplicative sigmoid attention and an additive term.

F^Fused = 2 fused * attention + additive + 3D branch 2 + conv(fused + 3D branch 1), as in the
study's module (its parameter count, 0.3697 M, matches supp. Tables 3/4 exactly).
:class:`ConcatFusion` is the "without 3DA" ablation: one 1x1 conv over the stacked sections.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import lrelu


class ThreeDA(nn.Module):
    """Aligned features (B, T, nf, h, w), h and w multiples of 4 -> fused (B, nf, h, w)."""

    def __init__(self, nf: int, frames: int):
        super().__init__()
        self.centre = frames // 2
        self.embed_ref = nn.Conv2d(nf, nf, 3, 1, 1)
        self.embed = nn.Conv2d(nf, nf, 3, 1, 1)
        self.fusion = nn.Conv2d(frames * nf, nf, 1)
        self.conv3d_1 = nn.Conv3d(frames, frames, 1)
        self.conv3d_2 = nn.Conv3d(frames, frames, 1)
        self.fusion3d_1 = nn.Conv2d(frames * nf, nf, 1)
        self.fusion3d_2 = nn.Conv2d(frames * nf, nf, 1)
        self.fusion_out = nn.Conv2d(nf, nf, 1)
        self.sa1 = nn.Conv2d(frames * nf, nf, 1)
        self.sa2 = nn.Conv2d(2 * nf, nf, 1)
        self.sa3 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.sa4 = nn.Conv2d(nf, nf, 1)
        self.sa5 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.sa_l1 = nn.Conv2d(nf, nf, 1)
        self.sa_l2 = nn.Conv2d(2 * nf, nf, 3, 1, 1)
        self.sa_l3 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.sa_add1 = nn.Conv2d(nf, nf, 1)
        self.sa_add2 = nn.Conv2d(nf, nf, 1)
        self.act = lrelu()

    def axial_masks(self, aligned: torch.Tensor) -> torch.Tensor:
        """(B, T, nf, h, w) -> masks (B, T, 1, h, w) in [0, 1]."""
        b, t, c, h, w = aligned.shape
        ref = self.embed_ref(aligned[:, self.centre])
        emb = self.embed(aligned.reshape(b * t, c, h, w)).view(b, t, c, h, w)
        return torch.sigmoid((emb * ref.unsqueeze(1)).sum(2, keepdim=True))

    def _pool2(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.max_pool2d(x, 3, 2, 1), F.avg_pool2d(x, 3, 2, 1)], 1)

    def forward(self, aligned: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = aligned.shape
        masked = aligned * self.axial_masks(aligned)
        stack = masked.reshape(b, t * c, h, w)

        feat = self.act(self.fusion(stack))
        f3d_1 = self.act(self.fusion3d_1(self.act(self.conv3d_1(masked)).reshape(b, t * c, h, w)))
        f3d_2 = self.act(self.fusion3d_2(self.act(self.conv3d_2(masked)).reshape(b, t * c, h, w)))
        feat = feat + f3d_1
        f3d_3 = self.fusion_out(feat)

        attn = self.act(self.sa1(stack))
        attn = self.act(self.sa2(self._pool2(attn)))
        level = self.act(self.sa_l1(attn))
        level = self.act(self.sa_l2(self._pool2(level)))
        level = F.interpolate(self.act(self.sa_l3(level)), size=attn.shape[-2:], mode="bilinear", align_corners=False)
        attn = self.act(self.sa3(attn)) + level
        attn = self.act(self.sa4(attn))
        attn = self.sa5(F.interpolate(attn, size=(h, w), mode="bilinear", align_corners=False))
        attn_add = self.sa_add2(self.act(self.sa_add1(attn)))
        return feat * torch.sigmoid(attn) * 2 + attn_add + f3d_2 + f3d_3


class ConcatFusion(nn.Module):
    """The "without 3DA" ablation: (B, T, nf, h, w) -> (B, nf, h, w) by a 1x1 conv over the
    concatenated sections (EDVR's fusion when its TSA module is off)."""

    def __init__(self, nf: int, frames: int):
        super().__init__()
        self.fusion = nn.Conv2d(frames * nf, nf, 1)

    def forward(self, aligned: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = aligned.shape
        return self.fusion(aligned.reshape(b, t * c, h, w))
