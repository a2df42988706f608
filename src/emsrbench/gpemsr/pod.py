"""POD: prior-guided optical-flow and deformable alignment (supplement Sec. 2, Eq. 2, Fig. 2).

For each section z of the window and the centre section 0, on three levels l = 2, 1, 0
(features and LR sections downsampled by 2^l):

    O_l^z     = < [I^z]_{down 2^l}, [I^0]_{down 2^l}, F_l^{Out,z}, F_l^{Out,0}, FL_l^1, FL_l^2 >
    dP_l^z    = Conv_l^2( < Conv_l^1(O_l^z), [dP_{l+1}^z]_{up 2} > )     (l = 2: Conv_2^2(Conv_2^1(O)))
    F^_l^z    = DFconv_l(F_l^{Out,z}, dP_l^z)

then the levels are fused with 2D convs (coarse to fine, each aligned level concatenated with
the x2-upsampled fused coarser one) and refined by one more deformable conv whose offsets come
from the fused features and F^{Out,0}.  Output: F^{Align,z}.

Details as in the study's module: Conv_l^1 is one 3x3 conv; Conv_l^2 is one 3x3 conv at l = 2
and two at l < 2 (the first on the concatenation with the upsampled offset features, which are
doubled like a flow); dP are nf-channel offset *features* from which each modulated deformable
conv (DCNv2: ``deform_groups`` groups, offsets and sigmoid modulation masks predicted by its own
3x3 conv, zero-initialised) computes its offsets; LeakyReLU 0.1 throughout.  The flows: frozen
SPyNet on the LR sections upsampled by ``flow_upsample`` (the study: 4), brought to the three
grids by learned stride convs, 16 channels per flow and level (2 x 16 + 1 + 1 = 34 extra input
channels of Conv_l^1).  The study's code feeds the *same* flow, SPyNet(I^z, I^0), to both flow
branches FL^1 and FL^2 (``flows: study``, what its trained models saw); ``flows:
bidirectional`` makes FL^2 = SPyNet(I^0, I^z).

The feature pyramid F_1, F_2 (stride-2 convs of F^Out) belongs to the stage III network, not
to this module (its parameters are not in the study's POD count).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from ..deform_guard import guard_deformable_convs
from ..nets.spynet import SpyNet
from .blocks import frozen, lrelu
from .config import GPEMSRConfig

FLOW_FEAT = 16  # channels of each flow's learned downsampling branch
LEVELS = 3


class ModulatedDeformConv(nn.Module):
    """DCNv2 (modulated deformable 3x3 conv) through ``torchvision.ops.deform_conv2d``, which
    has CPU and CUDA kernels.  ``forward(x, feat)``: offsets and masks from ``feat``."""

    def __init__(self, c_in: int, c_out: int, deform_groups: int, kernel: int = 3):
        super().__init__()
        self.padding = kernel // 2
        self.weight = nn.Parameter(torch.empty(c_out, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.empty(c_out))
        self.offset_conv = nn.Conv2d(c_in, deform_groups * 3 * kernel * kernel, kernel, 1, self.padding)
        bound = 1.0 / math.sqrt(c_in * kernel * kernel)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.zeros_(self.bias)
        # zero offsets and masks of 0.5 at the start: a plain (half-weighted) conv
        nn.init.zeros_(self.offset_conv.weight)
        nn.init.zeros_(self.offset_conv.bias)

    def offsets_and_mask(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        o1, o2, m = torch.chunk(self.offset_conv(feat), 3, dim=1)
        return torch.cat([o1, o2], 1), torch.sigmoid(m)

    def forward(self, x: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        offset, mask = self.offsets_and_mask(feat)
        # deform_conv2d has no bf16 kernel: run it in fp32 under autocast (the meta device, used
        # for shape-only MAC counts, has no autocast to turn off)
        no_autocast = torch.amp.is_autocast_available(x.device.type)
        with torch.autocast(x.device.type, enabled=False) if no_autocast else contextlib.nullcontext():
            return torchvision.ops.deform_conv2d(
                x.float(), offset.float(), self.weight, self.bias, padding=self.padding, mask=mask.float()
            )


class POD(nn.Module):
    """(neighbour / centre feature pyramids [F_0, F_1, F_2] (BT, nf, h / 2^l, ...), neighbour
    and centre LR sections (BT, 1, h, w)) -> aligned features (BT, nf, h, w)."""

    def __init__(self, cfg: GPEMSRConfig):
        super().__init__()
        nf, dg = cfg.nf, cfg.deform_groups
        self.flows = cfg.flows
        self.flow_upsample = cfg.flow_upsample
        self.spynet = SpyNet(cfg.spynet_levels)
        self.spynet.requires_grad_(False)  # frozen; init_pretrained loads it, or unfreezes it if absent
        # per flow: a stride conv to the LR grid (the flow is at flow_upsample x LR), then x2 down twice
        self.flow_down = nn.ModuleList(
            nn.ModuleList(
                [
                    nn.Conv2d(2, FLOW_FEAT, 3, cfg.flow_upsample, 1),
                    nn.Conv2d(FLOW_FEAT, FLOW_FEAT, 3, 2, 1),
                    nn.Conv2d(FLOW_FEAT, FLOW_FEAT, 3, 2, 1),
                ]
            )
            for _ in range(2)
        )
        o_ch = 2 * nf + 2 * FLOW_FEAT + 2
        self.conv1 = nn.ModuleList(nn.Conv2d(o_ch, nf, 3, 1, 1) for _ in range(LEVELS))
        # Conv_l^2: l = 2 one conv; l < 2 one on <Conv^1, up(dP_{l+1})> then one more
        self.conv2 = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(2 * nf, nf, 3, 1, 1), lrelu(), nn.Conv2d(nf, nf, 3, 1, 1), lrelu())
                for _ in range(LEVELS - 1)
            ]
            + [nn.Sequential(nn.Conv2d(nf, nf, 3, 1, 1), lrelu())]
        )
        self.dcn = nn.ModuleList(ModulatedDeformConv(nf, nf, dg) for _ in range(LEVELS))
        self.fuse = nn.ModuleList(nn.Conv2d(2 * nf, nf, 3, 1, 1) for _ in range(LEVELS - 1))
        self.refine_offset = nn.Sequential(nn.Conv2d(2 * nf, nf, 3, 1, 1), lrelu(), nn.Conv2d(nf, nf, 3, 1, 1), lrelu())
        self.refine_dcn = ModulatedDeformConv(nf, nf, dg)
        self.act = lrelu()
        # NaN offsets crash torchvision's CPU kernel: a one-line error instead (deform_guard)
        guard_deformable_convs(self, "gpemsr", "pod.")

    def flow_pair(self, nbr: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """FL^1, FL^2 on the flow grid (flow_upsample x LR), from frozen SPyNet."""
        if self.flow_upsample > 1:
            nbr, ref = (
                F.interpolate(t, scale_factor=self.flow_upsample, mode="bilinear", align_corners=False)
                for t in (nbr, ref)
            )
        rgb = lambda t: t.expand(-1, 3, -1, -1)  # noqa: E731
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen(self.spynet)):
            if self.flows == "study":
                fl1 = self.spynet(rgb(nbr), rgb(ref))
                return fl1, fl1
            both = self.spynet(rgb(torch.cat([nbr, ref])), rgb(torch.cat([ref, nbr])))
            return both[: nbr.shape[0]], both[nbr.shape[0] :]

    def offset_features(self, nbr_feats, ref_feats, nbr, ref) -> list[torch.Tensor]:
        """dP_l for l = 0, 1, 2 (nf channels each, on the grids of the pyramid)."""
        fl1, fl2 = self.flow_pair(nbr, ref)
        flow_feats = []
        for branch, fl in zip(self.flow_down, (fl1, fl2)):
            levels, x = [], fl
            for conv in branch:
                x = conv(x)
                levels.append(x)
            flow_feats.append(levels)
        imgs_n, imgs_r = [nbr], [ref]
        for _ in range(LEVELS - 1):
            imgs_n.append(F.interpolate(imgs_n[-1], scale_factor=0.5, mode="bilinear", align_corners=False))
            imgs_r.append(F.interpolate(imgs_r[-1], scale_factor=0.5, mode="bilinear", align_corners=False))
        offsets: list[torch.Tensor] = [None] * LEVELS
        for lvl in reversed(range(LEVELS)):
            o = torch.cat(
                [nbr_feats[lvl], ref_feats[lvl], flow_feats[0][lvl], flow_feats[1][lvl], imgs_n[lvl], imgs_r[lvl]], 1
            )
            o = self.act(self.conv1[lvl](o))
            if lvl < LEVELS - 1:
                up = F.interpolate(offsets[lvl + 1], size=o.shape[-2:], mode="bilinear", align_corners=False)
                o = torch.cat([o, up * 2], 1)
            offsets[lvl] = self.conv2[lvl](o)
        return offsets

    def forward(
        self, nbr_feats: list[torch.Tensor], ref_feats: list[torch.Tensor], nbr: torch.Tensor, ref: torch.Tensor
    ) -> torch.Tensor:
        offsets = self.offset_features(nbr_feats, ref_feats, nbr, ref)
        fea = self.act(self.dcn[LEVELS - 1](nbr_feats[LEVELS - 1], offsets[LEVELS - 1]))
        for lvl in reversed(range(LEVELS - 1)):
            aligned = self.dcn[lvl](nbr_feats[lvl], offsets[lvl])
            coarser = F.interpolate(fea, size=aligned.shape[-2:], mode="bilinear", align_corners=False)
            fea = self.fuse[lvl](torch.cat([aligned, coarser], 1))
            if lvl > 0:  # the study applies no activation after the finest fusion conv
                fea = self.act(fea)
        refine = self.refine_offset(torch.cat([fea, ref_feats[0]], 1))
        return self.act(self.refine_dcn(fea, refine))
