"""EDVR (Wang et al., CVPRW 2019) through basicsr's architecture, adapted to EM sections.

The 2N+1 adjacent sections are EDVR's frames (one grey channel each), the centre section is
the reference frame.  basicsr's EDVR is fixed at 4x (two hard-coded upconv + pixel-shuffle
stages, then conv_hr, conv_last, plus a bilinearly upsampled centre frame); here the
upsampler has log2(scale) such stages, built the way basicsr builds its two: every stage
but the last keeps num_feat channels, the last one maps to 64 (``hr_feat``) channels, then
conv_hr and conv_last.  At 4x with hr_feat=64 the parameter names and shapes are basicsr's.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import nn
from torch.nn import functional as F

from emsrbench.compat import basicsr_arch
from emsrbench.deform_guard import guard_deformable_convs
from emsrbench.weight_init import start_at_base


def _pad_to_multiple(x: torch.Tensor, k: int) -> tuple[torch.Tensor, int, int]:
    """Pad the last two dims of (B, C, h, w) at the bottom/right to multiples of k
    (reflection where the tile is large enough, replication otherwise)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % k, (-w) % k
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, h, w


@lru_cache(maxsize=None)
def _edvr_class():
    EDVR = basicsr_arch("edvr_arch", "EDVR")
    PredeblurModule = basicsr_arch("edvr_arch", "PredeblurModule")

    class EMEDVR(EDVR):
        """basicsr's EDVR with one channel per frame, a log2(scale)-stage upsampler and an
        optional grey mean subtracted from the sections the network sees."""

        def __init__(
            self,
            scale: int,
            num_feat=64,
            num_frame=5,
            deformable_groups=8,
            num_extract_block=5,
            num_reconstruct_block=10,
            with_tsa=True,
            with_predeblur=False,
            hr_feat=64,
            grey_mean=0.0,
        ):
            if scale < 2 or scale & (scale - 1):
                raise ValueError(f"EDVR: scale must be a power of two >= 2, got {scale}")
            super().__init__(
                num_in_ch=1,
                num_out_ch=1,
                num_feat=num_feat,
                num_frame=num_frame,
                deformable_groups=deformable_groups,
                num_extract_block=num_extract_block,
                num_reconstruct_block=num_reconstruct_block,
                hr_in=False,
                with_predeblur=with_predeblur,
                with_tsa=with_tsa,
            )
            self.scale = scale
            self.grey_mean = float(grey_mean)
            if with_predeblur:  # basicsr builds the pre-deblur module for 3 input channels
                self.predeblur = PredeblurModule(num_in_ch=1, num_feat=num_feat, hr_in=False)
            # The upsampler: basicsr's upconv1 (num_feat -> 4 num_feat) repeated, the last stage
            # mapping to 4 hr_feat (basicsr: 64 * 4), then conv_hr and conv_last.
            del self.upconv1, self.upconv2
            self.num_up = int(math.log2(scale))
            for i in range(1, self.num_up + 1):
                out = hr_feat if i == self.num_up else num_feat
                setattr(self, f"upconv{i}", nn.Conv2d(num_feat, out * 4, 3, 1, 1))
            self.conv_hr = nn.Conv2d(hr_feat, hr_feat, 3, 1, 1)
            self.conv_last = nn.Conv2d(hr_feat, 1, 3, 1, 1)
            # NaN offsets crash torchvision's CPU kernel: a one-line error instead (deform_guard)
            guard_deformable_convs(self, "edvr")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            """(B, T, h, w) sections in [0, 1] -> (B, 1, s h, s w), the centre section."""
            b, t = x.shape[:2]
            features = self.section_features(x.flatten(0, 1))
            return self.forward_features(x, tuple(f.unflatten(0, (b, t)) for f in features))

        # The multi-slice feature-reuse hook (docs/adding-a-method.md#feature-reuse): the
        # feature extraction and its L2/L3 pyramid depend on one section only, so tiled
        # inference computes them once per section; PCD (per neighbour/centre pair), fusion
        # and reconstruction run per window in forward_features.

        def section_features(self, sections: torch.Tensor) -> tuple[torch.Tensor, ...]:
            """(N, h, w) sections in [0, 1] -> the L1, L2, L3 feature pyramid of each, on the
            grid padded to a multiple of 4: (N, C, h, w), (N, C, h/2, w/2), (N, C, h/4, w/4)."""
            # The three-level pyramid (strides 2, 2) and TSA's pooling need multiples of 4.
            x, _, _ = _pad_to_multiple(sections.unsqueeze(1), 4)
            x = x - self.grey_mean  # each section a one-channel frame
            # Feature extraction, as basicsr's EDVR.forward.
            if self.with_predeblur:
                feat_l1 = self.conv_1x1(self.predeblur(x))
            else:
                feat_l1 = self.lrelu(self.conv_first(x))
            feat_l1 = self.feature_extraction(feat_l1)
            feat_l2 = self.lrelu(self.conv_l2_2(self.lrelu(self.conv_l2_1(feat_l1))))
            feat_l3 = self.lrelu(self.conv_l3_2(self.lrelu(self.conv_l3_1(feat_l2))))
            return feat_l1, feat_l2, feat_l3

        def forward_features(self, x: torch.Tensor, features: tuple[torch.Tensor, ...]) -> torch.Tensor:
            """(B, T, h, w) sections and their :meth:`section_features` stacked to (B, T, ...)
            -> (B, 1, s h, s w), the centre section; equal to ``forward(x)``."""
            b, t, h0, w0 = x.shape
            # EDVR's bilinear base: the centre section, upsampled (before any padding)
            base = F.interpolate(
                x[:, self.center_frame_idx : self.center_frame_idx + 1],
                scale_factor=self.scale,
                mode="bilinear",
                align_corners=False,
            )
            h, w = features[0].shape[-2:]

            # PCD alignment of every section to the centre one.  basicsr loops over the frames;
            # PCD treats each (neighbour, reference) pair independently, so all T pairs go
            # through in one batch of B*T (same result, far fewer deformable-conv calls on CPU).
            i0 = self.center_frame_idx
            nbr_feat_l = [f.reshape(b * t, *f.shape[2:]) for f in features]
            ref_feat_l = [f[:, i0 : i0 + 1].expand(-1, t, -1, -1, -1).reshape(b * t, *f.shape[2:]) for f in features]
            aligned = self.pcd_align(nbr_feat_l, ref_feat_l).view(b, t, -1, h, w)  # (B, T, C, h, w)
            if not self.with_tsa:
                aligned = aligned.view(b, -1, h, w)
            feat = self.fusion(aligned)

            # Reconstruction and the log2(scale)-stage pixel-shuffle upsampler.
            out = self.reconstruction(feat)
            for i in range(1, self.num_up + 1):
                out = self.lrelu(self.pixel_shuffle(getattr(self, f"upconv{i}")(out)))
            out = self.lrelu(self.conv_hr(out))
            out = self.conv_last(out)
            return out[:, :, : h0 * self.scale, : w0 * self.scale] + base

    return EMEDVR


def build(
    scale: int,
    num_feat=64,
    num_frame=5,
    deformable_groups=8,
    num_extract_block=5,
    num_reconstruct_block=10,
    with_tsa=True,
    with_predeblur=False,
    hr_feat=64,
    grey_mean=0.0,
    init="basicsr",
) -> nn.Module:
    """EDVR for ``scale``.  ``grey_mean`` is subtracted from the sections the network sees
    (not from the bilinear base); 0 is the published network.  ``init``: "basicsr" (the
    published code's init) or "kaiming" (see :func:`emsrbench.weight_init.start_at_base`)."""
    if init not in ("basicsr", "kaiming"):
        raise ValueError(f"EDVR: init must be 'basicsr' or 'kaiming', got {init!r}")
    model = _edvr_class()(
        scale,
        num_feat=num_feat,
        num_frame=num_frame,
        deformable_groups=deformable_groups,
        num_extract_block=num_extract_block,
        num_reconstruct_block=num_reconstruct_block,
        with_tsa=with_tsa,
        with_predeblur=with_predeblur,
        hr_feat=hr_feat,
        grey_mean=grey_mean,
    )
    if init == "kaiming":
        start_at_base(model)
    return model
