"""The stage III network: 2N+1 LR sections -> the centre HR section, at 8x or 16x.

Per section: conv3x3 + LeakyReLU and ``front_blocks`` residual blocks (LR features); MPF fuses
them with the frozen VQGAN-Indexer prior (:class:`~.indexer.PriorNet`) into F^Out; two
stride-2 conv pairs make the POD pyramid F_1, F_2; POD aligns every section to the centre;
3DA fuses the aligned stack; ``back_blocks`` residual blocks, log2(scale) conv + pixel-shuffle
x2 stages, an HR conv and a last conv give the residual over the bilinearly upsampled centre
section (the study's reconstruction, EDVR's).

Ablation switches (``GPEMSRConfig``): ``mpf=False`` drops the prior, the VGG and MPF (the LR
features go to POD directly); ``mpf_mask=False`` fuses without the mask (no VGG); ``pod=False``
stacks the sections' features unaligned; ``tda=False`` fuses by one 1x1 conv.  The stage I
attention switches act on the decoder held here and on the stage I encoder.

The harness contract: ``forward`` maps LR (B, 2N+1, h, w) in [0, 1] to (B, 1, s h, s w).  Any
h, w work: the sections are padded (edge replication) to the multiple the pyramids need and
the output is cropped.  :meth:`GPEMSR.forward_with_prior` also returns the prior HR images,
which the stage III reference loss compares with the output.
"""

from __future__ import annotations

import math
import sys

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import EmsrError
from ..pretrained import missing_flag
from .blocks import ResBlockNoBN, lrelu, res_blocks
from .config import GPEMSRConfig, make_config
from .indexer import PriorNet
from .mpf import MPF
from .pod import LEVELS as POD_LEVELS
from .pod import POD, ModulatedDeformConv
from .tda import ConcatFusion, ThreeDA


class GPEMSR(nn.Module):
    def __init__(self, cfg: GPEMSRConfig, scale: int):
        super().__init__()
        cfg = cfg.validate(scale)
        self.cfg, self.scale = cfg, scale
        nf, t = cfg.nf, cfg.frames
        self.centre = t // 2
        self.conv_first = nn.Conv2d(1, nf, 3, 1, 1)
        self.front = res_blocks(cfg.front_blocks, nf)
        if cfg.mpf:
            self.prior = PriorNet(cfg, scale)
            self.mpf = MPF(cfg, scale, self.prior.decoder.feature_channels)
        if cfg.pod:
            self.pyramid = nn.ModuleList(
                nn.Sequential(nn.Conv2d(nf, nf, 3, 2, 1), lrelu(), nn.Conv2d(nf, nf, 3, 1, 1), lrelu())
                for _ in range(POD_LEVELS - 1)
            )
            self.pod = POD(cfg)
        self.fusion = ThreeDA(nf, t) if cfg.tda else ConcatFusion(nf, t)
        self.trunk = res_blocks(cfg.back_blocks, nf)
        n_up = cfg.levels(scale)
        self.upconvs = nn.ModuleList(
            nn.Conv2d(nf if i == 0 else cfg.hr_feat, cfg.hr_feat * 4, 3, 1, 1) for i in range(n_up)
        )
        self.shuffle = nn.PixelShuffle(2)
        self.hr_conv = nn.Conv2d(cfg.hr_feat, cfg.hr_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(cfg.hr_feat, 1, 3, 1, 1)
        self.act = lrelu()
        if cfg.init == "kaiming":
            self._kaiming_init()

    def _kaiming_init(self) -> None:
        """Kaiming-normal (fan-in, zero bias) for the trainable convs outside the residual
        blocks (0.1-scaled already), the frozen prior, VGG and SPyNet; deformable offset convs
        stay zero (a plain conv at the start); ``conv_last`` zero, so training starts exactly
        at the bilinear base and only adds to it."""
        skip = set()
        for name, mod in self.named_modules():
            if isinstance(mod, ResBlockNoBN) or name.split(".")[0] == "prior" or name.endswith(("vgg", "spynet")):
                skip.update(id(m) for m in mod.modules())
        for name, mod in self.named_modules():
            if id(mod) in skip or name.endswith("offset_conv"):
                continue
            if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d, nn.Conv3d)):
                nn.init.kaiming_normal_(mod.weight, a=0, mode="fan_in")
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)
            elif isinstance(mod, ModulatedDeformConv):
                nn.init.kaiming_normal_(mod.weight, a=0, mode="fan_in")
                nn.init.zeros_(mod.bias)
        nn.init.zeros_(self.conv_last.weight)
        nn.init.zeros_(self.conv_last.bias)
        if self.cfg.mpf:
            # F^Out starts as the LR features alone (identity on them, zero on the fused prior
            # levels): the network starts as its "without MPF" ablation and takes in the prior
            # only as far as it helps, so a weak prior cannot pull it below that (README).
            reduce, nf = self.mpf.reduce, self.cfg.nf
            with torch.no_grad():
                reduce.weight.zero_()
                reduce.weight[:, -nf:, 0, 0].copy_(torch.eye(nf))
                reduce.bias.zero_()

    @property
    def multiple(self) -> int:
        """LR sides are padded to a multiple of this: 4 for the POD pyramid and the 3DA
        pooling, and the indexer's downsampling (latent grid = LR / multiple_latent)."""
        m = 4 if (self.cfg.pod or self.cfg.tda) else 1
        if self.cfg.mpf:
            m = math.lcm(m, self.cfg.latent_factor // self.scale)
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_prior(x)[0]

    def forward_with_prior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """LR (B, T, h, w) -> (SR (B, 1, s h, s w), prior images (B, T, 1, s h, s w) or None)."""
        if x.dim() != 4 or x.shape[1] != self.cfg.frames:
            raise EmsrError(f"gpemsr: expects LR (B, {self.cfg.frames}, h, w) sections, got {tuple(x.shape)}")
        b, t, h, w = x.shape
        m, s = self.multiple, self.scale
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        sr, prior = self._forward(x)
        if ph or pw:
            sr = sr[..., : h * s, : w * s]
            prior = prior[..., : h * s, : w * s] if prior is not None else None
        return sr, prior

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, t, h, w = x.shape
        c, nf = self.centre, self.cfg.nf
        flat = x.reshape(b * t, 1, h, w)
        feat = self.front(self.act(self.conv_first(flat - self.cfg.grey_mean if self.cfg.grey_mean else flat)))

        prior_img = None
        if self.cfg.mpf:
            prior_feats, prior_img = self.prior(flat)
            feat = self.mpf(feat, flat, prior_feats, prior_img)
            prior_img = prior_img.view(b, t, 1, h * self.scale, w * self.scale)

        if self.cfg.pod:
            pyr = [feat]
            for down in self.pyramid:
                pyr.append(down(pyr[-1]))
            # every section against the centre, in one batch (the study loops over sections)
            centre = [p.view(b, t, *p.shape[1:])[:, c : c + 1].expand(-1, t, -1, -1, -1).reshape(p.shape) for p in pyr]
            ref = x[:, c : c + 1].expand(-1, t, -1, -1).reshape(b * t, 1, h, w)
            aligned = self.pod(pyr, centre, flat, ref)
        else:
            aligned = feat
        fused = self.fusion(aligned.view(b, t, nf, h, w))

        out = self.trunk(fused)
        for conv in self.upconvs:
            out = self.act(self.shuffle(conv(out)))
        out = self.conv_last(self.act(self.hr_conv(out)))
        base = F.interpolate(x[:, c : c + 1], scale_factor=self.scale, mode="bilinear", align_corners=False)
        return out + base, prior_img


def build(scale: int, preset: str = "paper", variant: str = "full", **overrides) -> GPEMSR:
    """The stage III network of ``preset`` + ``variant`` (+ model setting overrides)."""
    return GPEMSR(make_config(preset, variant, scale, **overrides), scale)


def attach_pretrained(model: GPEMSR, pretrained) -> list[str]:
    """Load the frozen pretrained parts from the registry (``emsrbench.pretrained.Pretrained``):
    VGG19 into the MPF mask, SPyNet into POD.  A part whose file is absent is trained jointly
    from scratch instead (unfrozen) and named in the returned flags."""
    flags = []
    parts = []
    if model.cfg.mpf and model.cfg.mpf_mask:
        parts.append(("vgg19", model.mpf.vgg, "MPF mask VGG trained from scratch"))
    if model.cfg.pod:
        parts.append(("spynet", model.pod.spynet, "POD SPyNet flow trained from scratch"))
    for name, module, consequence in parts:
        path, why = pretrained.status(name)
        if path is None:
            print(f"gpemsr: {why}; {consequence}", file=sys.stderr)
            module.requires_grad_(True)
            flags.append(missing_flag(name, consequence))
        else:
            module.load(path)
            module.requires_grad_(False)
    return flags
