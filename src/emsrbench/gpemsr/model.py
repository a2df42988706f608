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
which the stage III reference loss compares with the output.  Inference can compute the
per-section part once per section instead of once per window (:meth:`GPEMSR.section_features`,
:meth:`GPEMSR.forward_features`; docs/adding-a-method.md#feature-reuse).
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
        self.pretrained_parts: set[str] = set()  # registry files loaded by attach_pretrained
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
        self._check_windows(x)
        b, t, h, w = x.shape
        x = self._pad(x)
        feats, prior_img = self._section_features(x.reshape(b * t, 1, *x.shape[-2:]))
        sr = self._fuse_window(x, tuple(f.view(b, t, *f.shape[1:]) for f in feats))
        if prior_img is not None:
            prior_img = prior_img.view(b, t, 1, *prior_img.shape[-2:])[..., : h * self.scale, : w * self.scale]
        return self._crop(sr, h, w), prior_img

    # The multi-slice feature-reuse hook (docs/adding-a-method.md#feature-reuse): everything up
    # to the POD pyramid depends on one section only (LR features, the prior, the VGG mask and
    # MPF, the pyramid), so tiled inference computes it once per section and tile instead of
    # once per window the section is in.  What depends on a (neighbour, centre) pair (SPyNet
    # flow, POD offsets and deformable convs) or on the whole window (3DA, reconstruction)
    # stays in forward_features.  forward_with_prior is the composition of the two.

    def section_features(self, sections: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """LR sections (B, h, w) in [0, 1] -> per-section features, each (B, ...): F^Out and,
        with POD, its coarser pyramid levels (on the padded grid)."""
        if sections.dim() != 3:
            raise EmsrError(f"gpemsr: section_features expects LR sections (B, h, w), got {tuple(sections.shape)}")
        x = self._pad(sections[:, None])
        return self._section_features(x)[0]

    def forward_features(self, x: torch.Tensor, features: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """LR windows (B, T, h, w) and their sections' :meth:`section_features`, each stacked
        to (B, T, ...) -> SR (B, 1, s h, s w); equal to ``forward(x)``."""
        self._check_windows(x)
        h, w = x.shape[-2:]
        return self._crop(self._fuse_window(self._pad(x), features), h, w)

    def _check_windows(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.cfg.frames:
            raise EmsrError(f"gpemsr: expects LR (B, {self.cfg.frames}, h, w) sections, got {tuple(x.shape)}")

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """Edge-replicate (B, C, h, w) to the multiple the pyramids need (per section, so a
        padded window is the stack of its padded sections)."""
        m = self.multiple
        ph, pw = (-x.shape[-2]) % m, (-x.shape[-1]) % m
        return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x

    def _crop(self, sr: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return sr[..., : h * self.scale, : w * self.scale]

    def _section_features(self, flat: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor | None]:
        """Padded sections (N, 1, h, w) -> (F^Out pyramid, each (N, nf, h / 2^l, w / 2^l);
        prior images (N, 1, s h, s w) or None)."""
        feat = self.front(self.act(self.conv_first(flat - self.cfg.grey_mean if self.cfg.grey_mean else flat)))
        prior_img = None
        if self.cfg.mpf:
            prior_feats, prior_img = self.prior(flat)
            feat = self.mpf(feat, flat, prior_feats, prior_img)
        pyr = [feat]
        if self.cfg.pod:
            for down in self.pyramid:
                pyr.append(down(pyr[-1]))
        return tuple(pyr), prior_img

    def _fuse_window(self, x: torch.Tensor, pyr: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Padded LR windows (B, T, h, w) and their sections' F^Out pyramids (B, T, nf, ...)
        -> SR (B, 1, s h, s w): POD alignment to the centre, 3DA, reconstruction."""
        b, t, h, w = x.shape
        c, nf = self.centre, self.cfg.nf
        flat_pyr = [p.reshape(b * t, *p.shape[2:]) for p in pyr]
        if self.cfg.pod:
            # every section against the centre, in one batch (the study loops over sections)
            centre = [p[:, c : c + 1].expand(-1, t, -1, -1, -1).reshape(b * t, *p.shape[2:]) for p in pyr]
            ref = x[:, c : c + 1].expand(-1, t, -1, -1).reshape(b * t, 1, h, w)
            aligned = self.pod(flat_pyr, centre, x.reshape(b * t, 1, h, w), ref)
        else:
            aligned = flat_pyr[0]
        fused = self.fusion(aligned.view(b, t, nf, h, w))

        out = self.trunk(fused)
        for conv in self.upconvs:
            out = self.act(self.shuffle(conv(out)))
        out = self.conv_last(self.act(self.hr_conv(out)))
        base = F.interpolate(x[:, c : c + 1], scale_factor=self.scale, mode="bilinear", align_corners=False)
        return out + base


def build(scale: int, preset: str = "paper", variant: str = "full", **overrides) -> GPEMSR:
    """The stage III network of ``preset`` + ``variant`` (+ model setting overrides)."""
    return GPEMSR(make_config(preset, variant, scale, **overrides), scale)


def attach_pretrained(model: GPEMSR, pretrained) -> list[str]:
    """Load the frozen pretrained parts from the registry (``emsrbench.pretrained.Pretrained``):
    VGG19 into the MPF mask, SPyNet into POD, and record in ``model.pretrained_parts`` which
    were loaded.  Without its file, each part is a substitute named in the returned flags:

    - the mask's VGG19 stays at its random initialisation, frozen, as the study freezes its
      VGG in stage III.  Training it instead would run its backward pass at HR resolution on
      every section (about half of a quick stage III step) for no measured gain: 8x validation
      PSNR at steps 100/200 was 21.432/21.568 dB frozen vs 21.445/21.575 trained, inside the
      0.06 dB spread between seeds;
    - SPyNet is trained jointly from scratch (a random frozen flow would misalign every
      neighbour)."""
    flags = []
    parts = []
    if model.cfg.mpf and model.cfg.mpf_mask:
        parts.append(("vgg19", model.mpf.vgg, False, "MPF mask VGG random and frozen"))
    if model.cfg.pod:
        parts.append(("spynet", model.pod.spynet, True, "POD SPyNet flow trained from scratch"))
    for name, module, trains_without, consequence in parts:
        path, why = pretrained.status(name)
        if path is None:
            print(f"gpemsr: {why}; {consequence}", file=sys.stderr)
            module.requires_grad_(trains_without)
            flags.append(missing_flag(name, consequence))
        else:
            module.load(path)
            module.requires_grad_(False)
            model.pretrained_parts.add(name)
    return flags
