"""SwinIR (Liang et al. 2021), classical-SR variant, through basicsr 1.4.2's architecture.

basicsr's ``SwinIR`` is used as is, with three adaptations for EM (see README.md):

- one grey channel (``in_chans=1``); basicsr's mean shift (the DIV2K RGB mean for 3 channels,
  zero otherwise) becomes a grey mean of 0.5 (``grey_mean``; None keeps basicsr's zero);
- inputs of any size: basicsr's ``forward`` does not pad to a multiple of the window size (the
  published test script does that outside the network), so :class:`SwinIRPadded` pads with
  mirrored copies, as that script does, and crops the output;
- ``num_feat`` (width of the pixel-shuffle reconstruction, hard-coded to 64 in basicsr) is a
  parameter so that the quick preset can shrink it; the paper preset keeps 64.
"""

from __future__ import annotations

import torch
from torch import nn

from emsrbench.compat import basicsr_arch


def mirror_pad(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the bottom/right of (B, C, h, w) up to multiples of ``multiple`` with mirrored copies
    of the image (SwinIR's test-time padding: concatenate the flipped image, repeat if needed)."""
    h, w = x.shape[-2:]
    th, tw = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    while x.shape[-2] < th:
        x = torch.cat([x, torch.flip(x, [2])], 2)
    while x.shape[-1] < tw:
        x = torch.cat([x, torch.flip(x, [3])], 3)
    return x[..., :th, :tw]


class SwinIRPadded(nn.Module):
    """basicsr's SwinIR plus the padding to window multiples that its own test script applies."""

    def __init__(self, swinir: nn.Module, scale: int, window_size: int):
        super().__init__()
        self.swinir, self.scale, self.window_size = swinir, scale, window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        out = self.swinir(mirror_pad(x, self.window_size))
        return out[..., : h * self.scale, : w * self.scale]


def build(
    scale: int,
    embed_dim=180,
    depths=(6, 6, 6, 6, 6, 6),
    num_heads=(6, 6, 6, 6, 6, 6),
    window_size=8,
    mlp_ratio=2.0,
    img_size=64,
    resi_connection="1conv",
    num_feat=64,
    drop_path_rate=0.1,
    in_chans=1,
    grey_mean=0.5,
) -> nn.Module:
    SwinIR = basicsr_arch("swinir_arch", "SwinIR")
    if scale & (scale - 1) or scale < 2:
        raise ValueError(f"SwinIR 'pixelshuffle' upsampler needs a power-of-two scale, got {scale}")
    model = SwinIR(
        img_size=img_size,
        patch_size=1,
        in_chans=in_chans,  # in = out channels in SwinIR; 1 for EM (3 only to compare with the paper)
        embed_dim=embed_dim,
        depths=list(depths),
        num_heads=list(num_heads),
        window_size=window_size,
        mlp_ratio=mlp_ratio,
        drop_path_rate=drop_path_rate,
        upscale=scale,  # basicsr's Upsample stacks log2(scale) conv + PixelShuffle(2) stages
        img_range=1.0,
        upsampler="pixelshuffle",  # classical SR reconstruction
        resi_connection=resi_connection,
    )
    if grey_mean is not None and in_chans == 1:
        model.mean = torch.full((1, 1, 1, 1), float(grey_mean))
    if num_feat != 64:
        # Same layers as basicsr builds (conv + LeakyReLU, Upsample, conv), at another width.
        Upsample = basicsr_arch("swinir_arch", "Upsample")
        model.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, num_feat, 3, 1, 1), nn.LeakyReLU(inplace=True))
        model.upsample = Upsample(scale, num_feat)
        model.conv_last = nn.Conv2d(num_feat, in_chans, 3, 1, 1)
    return SwinIRPadded(model, scale, window_size)
