"""MPF: multi-scale prior fusion (stage III), with the learned mask of supplement Sec. 4.2.

Per section, the LR features F (nf channels, LR grid) are lifted by x2 transposed convs to a
pyramid F_1 = F (LR), F_2 (2 LR), ..., F_L (2^(L-1) LR), L = log2(scale) levels.  The frozen
VGG-Indexer prior gives decoder features at the same grids (the L finest decoder levels:
at 8x 256@LR, 128@2LR, 64@4LR of the study's decoder).  Fusion runs fine to coarse: level k
fuses F at that grid, the prior feature and everything fused so far (downsampled by stride-2
convs) with a conv and ``fusion_blocks`` residual blocks, then multiplies by the mask.  The
output concatenates the coarsest fused level, the downsampled finer ones and F, reduced by a
1x1 conv to nf channels: F^Out of the paper.

The mask says where the prior can be trusted: VGG19 relu1_2 features of the prior HR image and
of the bilinearly upsampled LR section, cut into ``mask_patch`` x ``mask_patch`` patches (the
latent cells; reflection padding to whole patches), each patch vector L2-normalised, their
inner product per patch, then three 3x3 convs (LeakyReLU after each, the study's order) and a
sigmoid; the map is resized bilinearly to every level.  As in the study the VGG input is the
grey image replicated to three channels, without ImageNet normalisation.

VGG: :class:`emsrbench.nets.vgg19.VGG19Features` (torchvision's VGG19 feature stack), weights
from the registry's ``vgg19`` entry (its parameter count, 20.02 M for the 16 convs, is the
study's "MPF" minus "MPF w/o VGG" in Tables 3/4).  ``vgg_full`` keeps all 16 convs as the
study's module does; only the first two (up to relu1_2) are ever run, which gives the same
output.  Without ``vgg_full`` only those two exist (the quick preset).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import EmsrError
from ..nets.vgg19 import ALL_CONVS, RELU1_2, VGG19Features
from .blocks import frozen, lrelu, res_blocks
from .config import GPEMSRConfig


def mask_vgg(full: bool) -> VGG19Features:
    """The mask's VGG19: all 16 convs (``vgg_full``, the study's module) or only the two up to
    relu1_2 (the quick preset); either way its forward runs to relu1_2, what the mask reads."""
    return VGG19Features(ALL_CONVS if full else RELU1_2, output=RELU1_2)


def patch_similarity(a: torch.Tensor, b: torch.Tensor, patch: int) -> torch.Tensor:
    """Cosine similarity of co-located ``patch`` x ``patch`` patches of two feature maps:
    (B, C, H, W) x 2 -> (B, 1, ceil(H/patch), ceil(W/patch))."""
    h, w = a.shape[-2:]
    gh, gw = -(-h // patch), -(-w // patch)
    ph, pw = gh * patch - h, gw * patch - w
    if ph or pw:  # "same" padding, split as evenly as possible (reflection, as the study pads)
        pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
        a, b = F.pad(a, pad, mode="reflect"), F.pad(b, pad, mode="reflect")

    # <a_p, b_p> / (|a_p| |b_p|) per patch p from patch sums of channel-summed products: the
    # same value as normalising the unfolded (C * patch^2)-vectors (F.normalize's eps too),
    # without materialising them (the unfold and its backward were most of a quick stage III step).
    def patch_sum(x):
        return F.avg_pool2d(x.sum(1, keepdim=True), patch, stride=patch) * (patch * patch)

    eps = 1e-12
    dot = patch_sum(a * b)
    na = patch_sum(a * a).sqrt().clamp_min(eps)
    nb = patch_sum(b * b).sqrt().clamp_min(eps)
    return (dot / (na * nb)).view(a.shape[0], 1, gh, gw)


class MPF(nn.Module):
    """(LR features (BT, nf, h, w), LR sections (BT, 1, h, w), prior features coarse to fine,
    prior image (BT, 1, s h, s w)) -> F^Out (BT, nf, h, w)."""

    def __init__(self, cfg: GPEMSRConfig, scale: int, decoder_channels: tuple):
        super().__init__()
        nf, self.scale = cfg.nf, scale
        self.levels = cfg.levels(scale)
        if self.levels > len(decoder_channels):
            raise EmsrError(
                f"gpemsr: MPF at x{scale} needs {self.levels} decoder levels, the decoder has {len(decoder_channels)}"
            )
        # prior widths used, fine to coarse (study, 8x: 64, 128, 256)
        self.prior_channels = tuple(reversed(decoder_channels))[: self.levels]
        self.lift = nn.ModuleList(nn.ConvTranspose2d(nf, nf, 3, 2, 1, output_padding=1) for _ in range(self.levels - 1))
        self.fuse = nn.ModuleList(nn.Conv2d(k * nf + c, nf, 3, 1, 1) for k, c in enumerate(self.prior_channels, 1))
        self.fuse_blocks = nn.ModuleList(res_blocks(cfg.fusion_blocks, nf) for _ in range(self.levels))
        self.down = nn.ModuleList(nn.Conv2d(k * nf, k * nf, 3, 2, 1) for k in range(1, self.levels))
        self.reduce = nn.Conv2d((self.levels + 1) * nf, nf, 1)
        self.act = lrelu()
        self.use_mask = cfg.mpf_mask
        if self.use_mask:
            self.vgg = mask_vgg(cfg.vgg_full)
            self.mask_patch = cfg.mask_patch
            self.mask_net = nn.Sequential(
                nn.Conv2d(1, nf, 3, 1, 1),
                lrelu(),
                nn.Conv2d(nf, nf, 3, 1, 1),
                lrelu(),
                nn.Conv2d(nf, 1, 3, 1, 1),
                lrelu(),
            )

    def mask(self, lr: torch.Tensor, prior_img: torch.Tensor) -> torch.Tensor:
        """The learned mask in [0, 1] on the patch grid (BT, 1, s h / p, s w / p)."""
        up = F.interpolate(lr, scale_factor=self.scale, mode="bilinear", align_corners=False)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen(self.vgg)):
            sim = patch_similarity(
                self.vgg(prior_img.expand(-1, 3, -1, -1)), self.vgg(up.expand(-1, 3, -1, -1)), self.mask_patch
            )
        return torch.sigmoid(self.mask_net(sim))

    def forward(
        self, feat: torch.Tensor, lr: torch.Tensor, prior_feats: list[torch.Tensor], prior_img: torch.Tensor
    ) -> torch.Tensor:
        pyramid = [feat]  # LR grid first
        for lift in self.lift:
            pyramid.append(self.act(lift(pyramid[-1])))
        prior_fine_first = list(reversed(prior_feats))[: self.levels]
        mask = self.mask(lr, prior_img) if self.use_mask else None
        carried = None  # the fused finer levels, downsampled to the current grid
        fused = None
        for k in range(self.levels):  # fine (level 0: 2^(L-1) LR) to coarse (LR grid)
            lr_feat = pyramid[self.levels - 1 - k]
            parts = [lr_feat, prior_fine_first[k]] + ([carried] if carried is not None else [])
            fused = self.fuse_blocks[k](self.fuse[k](torch.cat(parts, 1)))
            if mask is not None:
                fused = fused * F.interpolate(mask, size=fused.shape[-2:], mode="bilinear", align_corners=False)
            if k < self.levels - 1:
                both = fused if carried is None else torch.cat([fused, carried], 1)
                carried = self.down[k](both)
        out = [fused] + ([carried] if carried is not None else []) + [feat]
        return self.reduce(torch.cat(out, 1))
