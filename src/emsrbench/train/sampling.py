"""Where training batches come from: random aligned LR/HR patches of the degraded volumes,
drawn only from a seeded generator (so a resumed run replays the same batches), and the fixed
validation patches of the learning curve."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import device as devices
from ..errors import EmsrError
from ..io import LR_KEY, RAW_KEY, read_dataset
from ..metrics.image import psnr_from_mse


class PatchSampler:
    """Random aligned LR/HR patches (with 2N+1 neighbouring LR sections) from degraded files."""

    def __init__(self, files: list[str], scale: int, slices: int):
        self.scale, self.half = scale, slices // 2
        self.pieces = []
        for f in files:
            hr, _ = read_dataset(f, RAW_KEY, dtype=np.uint8, ndim=3)
            lr, _ = read_dataset(f, LR_KEY, dtype=np.uint8, ndim=3)
            if hr.shape != (lr.shape[0], lr.shape[1] * scale, lr.shape[2] * scale):
                raise EmsrError(f"{f}:{LR_KEY}: shape {lr.shape} is not {RAW_KEY} {hr.shape} divided by {scale}")
            self.pieces.append((hr, lr))
        if not self.pieces:
            raise EmsrError("train: no training volumes given")
        sizes = np.array([lr.size for _, lr in self.pieces], dtype=float)
        self.weights = sizes / sizes.sum()

    def batch(self, rng: np.random.Generator, batch: int, patch: int, augment: bool):
        s = self.scale
        lrs, hrs = [], []
        for _ in range(batch):
            hr, lr = self.pieces[rng.choice(len(self.pieces), p=self.weights)]
            z, h, w = lr.shape
            if h < patch or w < patch:
                raise EmsrError(f"train: LR sections {h}x{w} are smaller than patch_size {patch}")
            k = rng.integers(z)
            y, x = rng.integers(h - patch + 1), rng.integers(w - patch + 1)
            # Edge replication at the ends of the stack, as at inference.
            zs = np.clip(np.arange(k - self.half, k + self.half + 1), 0, z - 1)
            lp = lr[zs, y : y + patch, x : x + patch]
            hp = hr[k : k + 1, y * s : (y + patch) * s, x * s : (x + patch) * s]
            if augment:
                rot, flip = rng.integers(4), rng.integers(2)
                lp, hp = (np.rot90(a, rot, axes=(1, 2)) for a in (lp, hp))
                if flip:
                    lp, hp = lp[:, :, ::-1], hp[:, :, ::-1]
            lrs.append(np.ascontiguousarray(lp))
            hrs.append(np.ascontiguousarray(hp))
        to_t = lambda a: torch.from_numpy(np.stack(a)).float().div_(255.0)  # noqa: E731
        return to_t(lrs), to_t(hrs)


VAL_PATCHES = 32


@torch.no_grad()
def validation_psnr(model: nn.Module, sampler: PatchSampler, patch: int, seed: int, dev: torch.device) -> float:
    """PSNR (dB, range 1) over a fixed, seeded set of validation patches: the same patches at
    every checkpoint, so the values form a learning curve."""
    rng = np.random.default_rng([seed, 2**31])
    lr_b, hr_b = sampler.batch(rng, VAL_PATCHES, patch, augment=False)
    was_training = model.training
    model.eval()
    with devices.autocast(dev):
        sr = torch.cat([model(lr_b[i : i + 8].to(dev)).float().cpu() for i in range(0, VAL_PATCHES, 8)])
    model.train(was_training)
    return psnr_from_mse(torch.mean((sr.clamp(0, 1) - hr_b) ** 2).item(), data_range=1.0)
