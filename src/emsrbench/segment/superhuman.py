"""Superhuman (Lee et al. 2017): the residual symmetric U-Net as ported in the GPEMSR study.

Architecture (``paper`` preset: filters 28-36-48-64-80, 1,477,659 parameters, the study's
released ``superhuman.pt``; :mod:`.released` maps its keys):

* embedding: a (1,5,5) conv to ``filters[0]`` channels + ELU;
* encoder: one residual block per level, (1,2,2) max pooling between levels (z is never
  downsampled: serial-section EM is anisotropic, 40 nm vs 4 nm);
* residual block (c_in -> c): a (1,3,3) conv (BN, ELU) gives ``x``; two 3x3x3 convs
  (BN + ELU between them, nothing after the second) give ``r``; out = ELU(BN(x + r)).  The
  block's convs have no bias (each feeds a BN, which has its own), as in the release;
* decoder: trilinear (1,2,2) upsampling (align_corners=True, the release's ``nn.Upsample``) +
  a 1x1x1 conv to the level's filters, the skip joined by addition, BN + ELU, one residual
  block;
* output: a (1,5,5) conv (+ ELU), a 1x1x1 conv to 3 channels, sigmoid: nearest-neighbour
  affinities (z, y, x).

All convs are zero-padded, so the input and output blocks have the same shape; the lateral
block size must be divisible by ``2 ** (len(filters) - 1)``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import EmsrError

NAME = "superhuman"
DISPLAY_NAME = "Superhuman"
CITATION = "Lee et al., Superhuman Accuracy on the SNEMI3D Connectomics Challenge, arXiv:1706.00120 (2017)"

# model: build() kwargs; block: the training patch = inference block (z, y, x), input = output;
# train: TrainSettings layers (the study's lineage: Adam 1e-4, batch 2, 200k iterations);
# infer: stride between blocks and reflect padding around the volume (the study's port:
# 18x160x160 blocks, stride 10x80x80, padding 4x48x48) and the study's tiling (its last block
# moved back inside the padded volume, its Gaussian window; blockwise.TILINGS).
PRESETS = {
    "paper": {
        "model": {"filters": [28, 36, 48, 64, 80]},
        "block": [18, 160, 160],
        "train": {
            "iterations": 200000,
            "batch_size": 2,
            "lr": 1.0e-4,
            "lr_schedule": "constant",
            "betas": [0.9, 0.999],
            "checkpoint_every": 1000,
            "log_every": 100,
        },
        "infer": {"stride": [10, 80, 80], "pad": [4, 48, 48], "tiling": "study"},
    },
    # Narrow (8-12-16-24, about 96 k parameters) and 3 poolings: on CPU, narrow 3D convs cost
    # in element-wise passes more than in multiply-adds, and ~30 volumes are segmented in the
    # default run. Batches of 2 (PyTorch takes its fast oneDNN 3D conv path from batch 2 for
    # such small tensors). Inference: two 208x208 blocks per axis over the 12x384x384 phantom.
    "quick": {
        "model": {"filters": [8, 12, 16, 24]},
        "block": [4, 48, 48],
        "train": {
            "iterations": 200,
            "batch_size": 2,
            "lr": 3.0e-3,
            "lr_schedule": "cosine",
            "lr_min": 1.0e-4,
            "betas": [0.9, 0.999],
            "checkpoint_every": 100,
            "log_every": 25,
        },
        "infer": {"block": [16, 208, 208], "stride": [16, 192, 192], "pad": [2, 8, 8]},
    },
}


def _conv(cin: int, cout: int, kernel, bias: bool = True) -> nn.Conv3d:
    pad = tuple(k // 2 for k in kernel)
    return nn.Conv3d(cin, cout, kernel, padding=pad, bias=bias)


class ResidualBlock(nn.Module):
    """The release's ``resBlock_pni``: its second 3x3x3 conv has no BN of its own (the BN of
    ``exit`` normalises the sum), and no conv has a bias."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.entry = nn.Sequential(_conv(cin, cout, (1, 3, 3), bias=False), nn.BatchNorm3d(cout), nn.ELU(inplace=True))
        self.body = nn.Sequential(
            _conv(cout, cout, (3, 3, 3), bias=False),
            nn.BatchNorm3d(cout),
            nn.ELU(inplace=True),
            _conv(cout, cout, (3, 3, 3), bias=False),
        )
        self.exit = nn.Sequential(nn.BatchNorm3d(cout), nn.ELU(inplace=True))

    def forward(self, x):
        x = self.entry(x)
        return self.exit(x + self.body(x))


class UpJoin(nn.Module):
    """Trilinear (1,2,2) upsampling, 1x1x1 conv to the skip's width, addition, BN + ELU.

    align_corners=True as the release's ``nn.Upsample``: it changes every upsampled value
    (corner-aligned sampling grid), so released weights need it."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.project = nn.Conv3d(cin, cout, 1)
        self.post = nn.Sequential(nn.BatchNorm3d(cout), nn.ELU(inplace=True))

    def forward(self, x, skip):
        x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=True)
        return self.post(self.project(x) + skip)


class Superhuman(nn.Module):
    def __init__(self, filters=(28, 36, 48, 64, 80), in_channels: int = 1, out_channels: int = 3):
        super().__init__()
        filters = [int(f) for f in filters]
        if len(filters) < 2 or min(filters) < 1:
            raise EmsrError(f"superhuman: filters must be two or more positive widths, got {filters}")
        self.filters = filters
        self.embed = nn.Sequential(_conv(in_channels, filters[0], (1, 5, 5)), nn.ELU(inplace=True))
        self.down = nn.ModuleList()
        prev = filters[0]
        for f in filters:
            self.down.append(ResidualBlock(prev, f))
            prev = f
        self.up = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for f in reversed(filters[:-1]):
            self.up.append(UpJoin(prev, f))
            self.up_blocks.append(ResidualBlock(f, f))
            prev = f
        self.head = nn.Sequential(
            _conv(filters[0], filters[0], (1, 5, 5)), nn.ELU(inplace=True), nn.Conv3d(filters[0], out_channels, 1)
        )

    @property
    def factor(self) -> int:
        """Lateral downsampling of the deepest level: block sides must be multiples of it."""
        return 2 ** (len(self.filters) - 1)

    def forward(self, x):
        if x.shape[-1] % self.factor or x.shape[-2] % self.factor:
            raise EmsrError(f"superhuman: lateral input size {tuple(x.shape[-2:])} is not a multiple of {self.factor}")
        x = self.embed(x)
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool3d(x, (1, 2, 2))
            x = block(x)
            skips.append(x)
        for up, block, skip in zip(self.up, self.up_blocks, reversed(skips[:-1])):
            x = block(up(x, skip))
        return torch.sigmoid(self.head(x))


def build(filters=(28, 36, 48, 64, 80)) -> Superhuman:
    return Superhuman(filters)


def shapes(model: Superhuman, block) -> tuple[tuple, tuple]:
    """(input, output) block shapes: the same for this zero-padded network."""
    block = tuple(int(b) for b in block)
    if len(block) != 3 or min(block) < 1 or block[1] % model.factor or block[2] % model.factor:
        raise EmsrError(
            f"superhuman: block {list(block)} must be 3 positive sizes (z, y, x) with y and x "
            f"multiples of {model.factor}"
        )
    return block, block


def input_shapes(model: Superhuman, in_block) -> tuple[tuple, tuple]:
    """(input, output) block shapes of an input block: the same as of that output block."""
    return shapes(model, in_block)
