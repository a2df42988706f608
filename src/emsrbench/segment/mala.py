"""MALA (Funke et al. 2018): the valid-convolution 3D U-Net as ported in the GPEMSR study.

Architecture (``paper`` preset: feature maps 12-60-300-1500, 81,489,387 parameters,
53x268x268 in -> 25x56x56 out; the study's released ``MALA.pt``, :mod:`.released` maps its keys):

* every level: two unpadded ("valid") convs + LeakyReLU(0.005), in the encoder and decoder;
* three (1,3,3) max poolings (z is never downsampled);
* upsampling: a per-channel transposed conv (kernel = stride = (1,3,3), no bias, as the
  release) followed by a 1x1x1 conv to the next level's width; the encoder's output at that
  level is centre-cropped to the upsampled size and added (the original TensorFlow MALA
  concatenates; the study's port adds);
* a 1x1x1 conv to 3 channels, sigmoid: nearest-neighbour affinities (z, y, x).

Valid convolutions mean that the output block is smaller than the input block; inference
reflect-pads the volume by the context so that the output covers it.  Because of the
poolings the network is translation-equivariant only for shifts that are multiples of the
total pooling factor, so blocks are placed on that grid (see :mod:`.blockwise`) -- except in
the ``paper`` preset, which tiles as the study did (``tiling: study``: output blocks 25x56x56
at a stride of 56, off that grid, the last one moved back inside the volume, later blocks
overwriting earlier ones), so that released weights give the study's affinities.

Quick preset (a documented change): 3 levels (two (1,3,3) poolings), widths 8-24-72, and
3x3x3 convs only on the top level (the deeper levels use (1,3,3)), which cuts the z context
from 28 sections (paper) to 8, so a 4-section output block needs 12 input sections (the
default phantom test volume has 12) instead of 53.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import EmsrError

NAME = "mala"
DISPLAY_NAME = "MALA"
CITATION = (
    "Funke et al., Large Scale Image Segmentation with Structured Loss based Deep Learning for "
    "Connectome Reconstruction, TPAMI 2018"
)

PRESETS = {
    "paper": {
        "model": {"fmaps": [12, 60, 300, 1500], "z_kernels": [3, 3, 3, 3]},
        "block": [25, 56, 56],  # output block; input 53x268x268
        # Adam 0.5e-4, beta1 0.95 as in MALA; the reference gives no length for the study's
        # MALA, so it trains as long as Superhuman.
        "train": {
            "iterations": 200000,
            "batch_size": 1,
            "lr": 0.5e-4,
            "lr_schedule": "constant",
            "betas": [0.95, 0.999],
            "checkpoint_every": 1000,
            "log_every": 100,
        },
        # The study's tiling: the volume reflect-padded by the context only (14x106x106),
        # output blocks at a stride of the block, 25x56x56 (off the 27-voxel pooling grid).
        "infer": {"stride": [25, 56, 56], "pad": [0, 0, 0], "tiling": "study"},
    },
    "quick": {
        "model": {"fmaps": [8, 24, 72], "z_kernels": [3, 1, 1]},
        "block": [4, 38, 38],  # output block; input 12x106x106
        "train": {
            "iterations": 200,
            "batch_size": 2,
            "lr": 2.0e-3,
            "lr_schedule": "cosine",
            "lr_min": 1.0e-4,
            "betas": [0.95, 0.999],
            "checkpoint_every": 100,
            "log_every": 25,
        },
        # Large output blocks at inference: the valid network's input/output ratio drops from
        # 23x (training block) to 3x.
        "infer": {"block": [12, 200, 200], "stride": None, "pad": [0, 0, 0]},
    },
}

POOL = 3  # lateral pooling factor of every level


def _act():
    return nn.LeakyReLU(0.005, inplace=True)


def _two_convs(cin: int, cout: int, kz: int) -> nn.Sequential:
    k = (kz, 3, 3)
    return nn.Sequential(nn.Conv3d(cin, cout, k), _act(), nn.Conv3d(cout, cout, k), _act())


def _crop_to(x: torch.Tensor, shape) -> torch.Tensor:
    offsets = [(a - b) // 2 for a, b in zip(x.shape[2:], shape)]
    return x[(..., *(slice(o, o + s) for o, s in zip(offsets, shape)))]


class Mala(nn.Module):
    def __init__(self, fmaps=(12, 60, 300, 1500), z_kernels=(3, 3, 3, 3), in_channels: int = 1, out_channels: int = 3):
        super().__init__()
        fmaps = [int(f) for f in fmaps]
        z_kernels = [int(k) for k in z_kernels]
        if len(fmaps) < 2 or min(fmaps) < 1:
            raise EmsrError(f"mala: fmaps must be two or more positive widths, got {fmaps}")
        if len(z_kernels) != len(fmaps) or any(k not in (1, 3) for k in z_kernels):
            raise EmsrError(f"mala: z_kernels must give 1 or 3 for each of the {len(fmaps)} levels, got {z_kernels}")
        self.fmaps, self.z_kernels = fmaps, z_kernels
        self.down = nn.ModuleList()
        prev = in_channels
        for f, kz in zip(fmaps, z_kernels):
            self.down.append(_two_convs(prev, f, kz))
            prev = f
        self.pool = nn.MaxPool3d((1, POOL, POOL))
        self.up = nn.ModuleList()
        self.up_convs = nn.ModuleList()
        for level in reversed(range(len(fmaps) - 1)):
            c = fmaps[level + 1]
            self.up.append(
                nn.Sequential(
                    nn.ConvTranspose3d(c, c, (1, POOL, POOL), stride=(1, POOL, POOL), groups=c, bias=False),
                    nn.Conv3d(c, fmaps[level], 1),
                )
            )
            self.up_convs.append(_two_convs(fmaps[level], fmaps[level], z_kernels[level]))
        self.head = nn.Conv3d(fmaps[0], out_channels, 1)

    @property
    def factor(self) -> int:
        """Total lateral pooling: the network commutes with lateral shifts by multiples of it."""
        return POOL ** (len(self.fmaps) - 1)

    def output_shape(self, in_shape) -> tuple[int, int, int]:
        """The output block of an input block, or an error naming why the input does not fit."""
        z, y, x = (int(v) for v in in_shape)
        levels = len(self.fmaps)
        for level in range(levels):
            kz = self.z_kernels[level]
            z, y, x = z - 2 * (kz - 1), y - 4, x - 4
            if min(z, y, x) < 1:
                break
            if level < levels - 1:
                if y % POOL or x % POOL:
                    raise EmsrError(f"mala: input {list(in_shape)} does not pool evenly at level {level}")
                y, x = y // POOL, x // POOL
        else:
            for level in reversed(range(levels - 1)):
                kz = self.z_kernels[level]
                z, y, x = z - 2 * (kz - 1), y * POOL - 4, x * POOL - 4
            if min(z, y, x) >= 1:
                return z, y, x
        raise EmsrError(f"mala: input {list(in_shape)} is too small for this network")

    def input_shape(self, out_shape) -> tuple[int, int, int]:
        """The input block whose output is ``out_shape`` (lateral sizes rounded up to a valid one)."""
        oz, oy, ox = (int(v) for v in out_shape)
        z = oz + 4 * sum(k - 1 for k in self.z_kernels[:-1]) + 2 * (self.z_kernels[-1] - 1)

        # Lateral: search the smallest valid input whose output is >= the wanted size; the
        # valid sizes form an arithmetic progression with step ``factor``.
        def lateral(o: int) -> int:
            s = 1
            while True:
                try:
                    _, out, _ = self.output_shape((z, s, s))
                except EmsrError:
                    s += 1
                    continue
                if out >= o:
                    return s
                s += self.factor

        return z, lateral(oy), lateral(ox)

    def forward(self, x):
        skips = []
        for level, convs in enumerate(self.down):
            if level:
                x = self.pool(x)
            x = convs(x)
            skips.append(x)
        for up, convs, skip in zip(self.up, self.up_convs, reversed(skips[:-1])):
            x = up(x)
            x = convs(x + _crop_to(skip, x.shape[2:]))
        return torch.sigmoid(self.head(x))


def build(fmaps=(12, 60, 300, 1500), z_kernels=(3, 3, 3, 3)) -> Mala:
    return Mala(fmaps, z_kernels)


def input_shapes(model: Mala, in_block) -> tuple[tuple, tuple]:
    """(input, output) block shapes for the input block ``in_block`` (the study's 53x268x268
    gives 25x56x56)."""
    in_block = tuple(int(b) for b in in_block)
    if len(in_block) != 3 or min(in_block) < 1:
        raise EmsrError(f"mala: input block {list(in_block)} must be 3 positive sizes (z, y, x)")
    return in_block, model.output_shape(in_block)


def shapes(model: Mala, block) -> tuple[tuple, tuple]:
    """(input, output) block shapes for the output block ``block`` (it must be reachable exactly)."""
    block = tuple(int(b) for b in block)
    if len(block) != 3 or min(block) < 1:
        raise EmsrError(f"mala: block {list(block)} must be 3 positive sizes (z, y, x)")
    in_shape = model.input_shape(block)
    if model.output_shape(in_shape) != block:
        valid = model.output_shape(in_shape)
        raise EmsrError(f"mala: no input gives the output block {list(block)}; the nearest valid one is {list(valid)}")
    return in_shape, block
