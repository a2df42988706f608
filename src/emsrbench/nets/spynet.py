"""SPyNet optical flow (Ranjan & Black, CVPR 2017) in basicsr's layout: the one implementation
behind GPEMSR's POD and BasicVSR.

Six basic modules (five 7x7 convs each: 8 -> 32 -> 64 -> 32 -> 16 -> 2, ReLU between), one
per level of an average-pooled image pyramid, each refining the x2-upsampled flow of the level
below from the reference, the warped supporting image and that flow.  Parameter names equal
basicsr's ``SpyNet`` (``basic_module.{level}.basic_module.{0,2,4,6,8}``), so the registry's
``spynet`` file (BasicSR's Sintel-final release) loads directly; inputs are RGB in [0, 1],
ImageNet-normalised inside (grey EM sections are replicated to three channels).

``levels`` < 6 runs only the finest ``levels`` modules on a shallower pyramid, for patches too
small for six levels.  basicsr resizes the frames to a multiple of 32 and fails below 33 px;
here the working size is a multiple of 2^(levels-1) and at least 2^levels, and the flow is
resized back and rescaled as basicsr does: with 6 levels and frames larger than 32 px this is
basicsr's SpyNet (tested against it).

basicsr keeps the ImageNet mean and std as buffers in its state dict; here they are constants
outside it.  A state dict that has them (basicsr's own, a model file saved when BasicVSR used
basicsr's class) still loads: their values are checked and dropped.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import EmsrError
from .imagenet import IMAGENET_MEAN, IMAGENET_STD

LEVELS = 6


class _BasicModule(nn.Module):
    def __init__(self):
        super().__init__()
        widths = (8, 32, 64, 32, 16, 2)
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Conv2d(c_in, c_out, 7, 1, 3))
            if i < len(widths) - 2:
                layers.append(nn.ReLU(inplace=False))
        self.basic_module = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.basic_module(x)


def flow_warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``x`` (B, C, H, W) at pixel positions + ``flow`` (B, 2, H, W; x then y),
    bilinear, border padding, corner-aligned coordinates (basicsr's ``flow_warp`` as SPyNet
    calls it)."""
    b, _, h, w = x.shape
    gy, gx = torch.meshgrid(
        torch.arange(h, device=x.device, dtype=x.dtype), torch.arange(w, device=x.device, dtype=x.dtype), indexing="ij"
    )
    px = gx + flow[:, 0]
    py = gy + flow[:, 1]
    grid = torch.stack([2.0 * px / max(w - 1, 1) - 1.0, 2.0 * py / max(h - 1, 1) - 1.0], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


class SpyNet(nn.Module):
    """(reference, supporting) RGB (B, 3, H, W) -> flow (B, 2, H, W) that warps the
    supporting image onto the reference."""

    def __init__(self, levels: int = LEVELS):
        super().__init__()
        if not 1 <= levels <= LEVELS:
            raise EmsrError(f"SPyNet has {LEVELS} levels, asked for {levels}")
        self.levels = levels
        self.basic_module = nn.ModuleList(_BasicModule() for _ in range(LEVELS))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def load(self, path: str | Path) -> None:
        """Weights from a SPyNet file: bare or under ``params`` (BasicSR's release)."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("params", state)
        own = self.state_dict()
        if set(own) - set(state):
            raise EmsrError(f"{path}: not a SPyNet checkpoint (no {sorted(set(own) - set(state))[0]})")
        self.load_state_dict({k: state[k] for k in own})

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors):
        # basicsr's persistent mean/std: accepted where they are ImageNet's, dropped (constants here)
        for name in ("mean", "std"):
            stored = state_dict.pop(prefix + name, None)
            own = getattr(self, name)
            if stored is not None and not torch.equal(stored.to(own.device, own.dtype), own):
                want = own.flatten().tolist()
                errors.append(f"{prefix}{name} is {stored.flatten().tolist()}, SPyNet's ImageNet {name} is {want}")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors)

    def _pyramid_flow(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        refs, supps = [(ref - self.mean) / self.std], [(supp - self.mean) / self.std]
        for _ in range(self.levels - 1):
            refs.insert(0, F.avg_pool2d(refs[0], 2, 2, count_include_pad=False))
            supps.insert(0, F.avg_pool2d(supps[0], 2, 2, count_include_pad=False))
        modules = self.basic_module[LEVELS - self.levels :]
        flow = refs[0].new_zeros(ref.shape[0], 2, refs[0].shape[2] // 2, refs[0].shape[3] // 2)
        for r, s, module in zip(refs, supps, modules):
            up = F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=True) * 2.0
            # odd sizes: the upsampled flow is one pixel short; replicate the last row/column
            up = F.pad(up, (0, r.shape[3] - up.shape[3], 0, r.shape[2] - up.shape[2]), mode="replicate")
            flow = module(torch.cat([r, flow_warp(s, up), up], 1)) + up
        return flow

    def forward(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        h, w = ref.shape[-2:]
        unit = 2 ** (self.levels - 1)
        hw = (max(math.ceil(h / unit) * unit, 2 * unit), max(math.ceil(w / unit) * unit, 2 * unit))
        ref = F.interpolate(ref, size=hw, mode="bilinear", align_corners=False)
        supp = F.interpolate(supp, size=hw, mode="bilinear", align_corners=False)
        flow = F.interpolate(self._pyramid_flow(ref, supp), size=(h, w), mode="bilinear", align_corners=False)
        return torch.cat([flow[:, :1] * (w / hw[1]), flow[:, 1:] * (h / hw[0])], 1)
