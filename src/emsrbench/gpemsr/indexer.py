"""Stage II: the latent vector indexer, per scale (supplement Sec. 1, Fig. 1).

An encoder of the stage I design reads the LR section and predicts, for every cell of the
latent grid (HR/16), logits over the ``codebook_size`` codes of the frozen stage I codebook.
The LR grid is HR/scale, so the indexer downsamples log2(16/scale) times (once at 8x, never at
16x) and changes width with residual blocks elsewhere: per scale ``idx_blocks - 1`` residual
blocks, then the transition to the next width (a stride-2 conv for the last log2(16/scale)
transitions, a width-changing residual block for the others), the self-attention block,
``idx_out_blocks`` residual blocks, a 1x1 conv to the latent dimension and a linear
classifier (a 1x1 conv) to the code logits.  This is the study's Indexer8 / Indexer16, which
is why the two differ by 2.49 M parameters: a residual block 256 -> 512 at 16x where 8x has a
stride-2 conv.

:class:`PriorNet` is what stage III keeps of stages I and II, frozen: indexer -> codes ->
decoder, giving the multi-level prior features and the prior HR image from LR input.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .blocks import VQResBlock, frozen
from .config import GPEMSRConfig
from .vqgan import Decoder, Quantizer, SelfAttention


class Indexer(nn.Module):
    """LR (B, 1, h, w) -> code logits (B, codebook_size, h / d, w / d), d = latent_factor / scale."""

    def __init__(self, cfg: GPEMSRConfig, scale: int):
        super().__init__()
        cfg.check_scale(scale)
        ch, g = cfg.channels, cfg.norm_groups
        self.scale = scale
        self.downsamplings = int(math.log2(cfg.latent_factor // scale))
        n_trans = len(ch) - 1
        self.conv_in = nn.Sequential(nn.Conv2d(1, ch[0], 3, 1, 1), nn.ReLU(inplace=True))
        body: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(ch[:-1], ch[1:])):
            body += [VQResBlock(c_in, c_in, g) for _ in range(cfg.idx_blocks - 1)]
            if i >= n_trans - self.downsamplings:
                body.append(nn.Conv2d(c_in, c_out, 3, 2, 1))
            else:
                body.append(VQResBlock(c_in, c_out, g))
        self.body = nn.Sequential(*body)
        self.attention = SelfAttention(ch[-1], g) if cfg.indexer_attention else nn.Identity()
        self.out = nn.Sequential(
            *(VQResBlock(ch[-1], ch[-1], g) for _ in range(cfg.idx_out_blocks)), nn.Conv2d(ch[-1], cfg.latent_dim, 1)
        )
        self.classifier = nn.Conv2d(cfg.latent_dim, cfg.codebook_size, 1)

    def latent(self, lr: torch.Tensor) -> torch.Tensor:
        """The predicted latent features (B, latent_dim, ...), before the classifier."""
        return self.out(self.attention(self.body(self.conv_in(lr))))

    def forward(self, lr: torch.Tensor, with_latent: bool = False):
        z = self.latent(lr)
        logits = self.classifier(z)
        return (logits, z) if with_latent else logits


class PriorNet(nn.Module):
    """The frozen VQGAN-Indexer of stage III: LR -> (prior features coarse to fine, prior image).

    Code choice is the arg-max of the indexer's logits (the study: top-1 of their softmax)."""

    def __init__(self, cfg: GPEMSRConfig, scale: int):
        super().__init__()
        self.indexer = Indexer(cfg, scale)
        self.quantizer = Quantizer(cfg.codebook_size, cfg.latent_dim, cfg.beta, cfg.codebook_ema)
        self.decoder = Decoder(cfg)
        self.requires_grad_(False)

    def forward(self, lr: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen(self)):
            codes = self.quantizer.lookup(self.indexer(lr).argmax(1))
            return self.decoder.features(codes)
