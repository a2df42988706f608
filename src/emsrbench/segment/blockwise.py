"""Blockwise affinity prediction over a whole volume, Gaussian-blended, memory bounded by blocks.

Geometry (all per axis, z, y, x):

* the network maps an input block ``in_shape`` to an output block ``out_shape`` centred in it
  (equal for zero-padded networks, smaller for valid ones: the context ``(in - out) / 2``);
* the volume is extended by ``pad`` on both sides (the study's port of Superhuman pads
  4x48x48 so that the zero-padding artefacts of block borders fall outside the volume) and
  covered by output blocks at multiples of ``stride``; the last block may reach past the end;
* the raw volume is reflect-padded by ``pad`` + context (+ the overhang of the last block);
* every output block is weighted by a Gaussian window (sigma = 1/8 of the block side, as
  nnU-Net and the study's port blend), the weighted sum is normalised by the summed weights.

Lateral strides must be multiples of the network's pooling factor: pooling networks commute
with shifts by multiples of it only, so on that grid a valid-convolution network (MALA) gives
exactly what one pass over the whole padded volume gives.

Tilings (``BlockSpec.tiling``, config ``segmentation.inference.tiling`` via the preset):

* ``grid`` (ours, above);
* ``study``: the GPEMSR study's inference (``inference_code/data/provider_valid.py``): output
  blocks at multiples of ``stride`` from the start of the padded volume, the last one along
  each axis moved back so that it ends with the padded volume (no overhang); the stride may
  ignore the pooling grid (the study's MALA steps 56 voxels, its pooling grid is 27); a
  zero-padded network's blocks (input = output) are blended with the study's window
  (:func:`study_window`), a valid network's (MALA) are not blended: every block overwrites what
  the blocks before it wrote, in the study's order (z, then y, then x).  With released weights
  this reproduces the study's affinities; a valid network then no longer equals one pass.

Memory: blocks are predicted one row along z at a time; the accumulator holds one output
block depth x the padded section (``3 x out_z x Y x X`` floats plus weights), and finished
sections are written to ``out`` (a numpy array or an HDF5 dataset) as soon as no later block
reaches them.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .. import device as devices
from ..errors import EmsrError


@dataclass(frozen=True)
class BlockSpec:
    in_shape: tuple
    out_shape: tuple
    stride: tuple
    pad: tuple = (0, 0, 0)
    factor: int = 1  # lateral pooling factor of the network
    tiling: str = "grid"  # one of TILINGS (module docstring)

    @classmethod
    def make(
        cls,
        in_shape,
        out_shape,
        stride=None,
        pad=(0, 0, 0),
        factor: int = 1,
        where: str = "blockwise",
        tiling: str = "grid",
    ):
        """Checked geometry; ``stride`` None: the output block (``grid``: rounded down to the pooling grid)."""
        if tiling not in TILINGS:
            raise EmsrError(f"{where}: tiling '{tiling}' is not one of {list(TILINGS)}")
        ins = tuple(int(v) for v in in_shape)
        outs = tuple(int(v) for v in out_shape)
        if stride is None:
            grid = factor if tiling == "grid" else 1
            stride = (outs[0], (outs[1] // grid) * grid, (outs[2] // grid) * grid)
        st = tuple(int(v) for v in stride)
        pd = tuple(int(v) for v in pad)
        if not (len(ins) == len(outs) == len(st) == len(pd) == 3):
            raise EmsrError(f"{where}: in_shape, out_shape, stride and pad need 3 values (z, y, x)")
        if any(i < o or (i - o) % 2 for i, o in zip(ins, outs)):
            raise EmsrError(
                f"{where}: input block {list(ins)} must exceed output block {list(outs)} by an even context"
            )
        if any(not 1 <= s <= o for s, o in zip(st, outs)):
            raise EmsrError(f"{where}: stride {list(st)} must be between 1 and the output block {list(outs)}")
        if tiling == "grid" and (st[1] % factor or st[2] % factor):
            raise EmsrError(
                f"{where}: lateral stride {list(st[1:])} must be a multiple of the network's pooling factor {factor}"
            )
        if min(pd) < 0:
            raise EmsrError(f"{where}: pad {list(pd)} must be >= 0")
        return cls(ins, outs, st, pd, int(factor), tiling)

    @property
    def context(self) -> tuple:
        return tuple((i - o) // 2 for i, o in zip(self.in_shape, self.out_shape))

    def grid(self, shape) -> tuple[tuple, tuple]:
        """(blocks per axis, extent covered by the output blocks) for a volume ``shape``."""
        origins = self.origins(shape)
        return tuple(len(o) for o in origins), tuple(o[-1] + n for o, n in zip(origins, self.out_shape))

    def origins(self, shape) -> tuple[list, list, list]:
        """Per axis, where the output blocks start in the padded volume (sorted)."""
        out = []
        for size, p, o, s in zip(shape, self.pad, self.out_shape, self.stride):
            ext = size + 2 * p
            n = 1 if ext <= o else math.ceil((ext - o) / s) + 1
            starts = [k * s for k in range(n)]
            if self.tiling == "study" and ext > o:  # the last block ends with the padded volume
                starts[-1] = ext - o
            out.append(starts)
        return tuple(out)

    @property
    def overwrites(self) -> bool:
        """The study's valid network (MALA): blocks overwrite each other instead of blending."""
        return self.tiling == "study" and self.in_shape != self.out_shape

    def window(self) -> np.ndarray:
        """Blending weights of an output block (unused where blocks overwrite)."""
        return study_window(self.out_shape) if self.tiling == "study" else gaussian_window(self.out_shape)

    def padded_raw(self, raw: np.ndarray) -> np.ndarray:
        """The raw volume reflect-padded to the input that the block grid reads."""
        _, extents = self.grid(raw.shape)
        widths = []
        for size, p, c, e in zip(raw.shape, self.pad, self.context, extents):
            before = p + c
            widths.append((before, e + 2 * c - size - before))
        return np.pad(raw, widths, mode="reflect")


def gaussian_window(shape, sigma_scale: float = 1 / 8) -> np.ndarray:
    """Separable Gaussian weights (max 1) over a block; never 0, so every voxel is covered."""
    w = np.ones((), dtype=np.float64)
    for n in shape:
        c = (n - 1) / 2
        sigma = max(n * sigma_scale, 1e-6)
        axis = np.exp(-0.5 * ((np.arange(n) - c) / sigma) ** 2)
        w = np.multiply.outer(w, axis)
    w = np.maximum(w / w.max(), 1e-6)
    return w.astype(np.float32)


def study_window(shape, sigma: float = 0.2) -> np.ndarray:
    """The study's blending weights (``Provider_valid.get_weight``): 1e-6 + a Gaussian (sigma
    0.2) of the distance to the block centre, each axis running from -1 to 1 over the block.
    Narrower than :func:`gaussian_window` (sigma 0.1 (n - 1) voxels against n / 8)."""
    axes = np.meshgrid(*(np.linspace(-1, 1, n, dtype=np.float32) for n in shape), indexing="ij")
    d2 = sum(a * a for a in axes)
    return (1e-6 + np.exp(-d2 / (2.0 * sigma**2))).astype(np.float32)


TILINGS = ("grid", "study")


def _run(model: nn.Module, blocks: list[np.ndarray], dev: torch.device, out_shape, precision: str) -> np.ndarray:
    x = torch.from_numpy(np.stack(blocks)[:, None]).to(dev).float().div_(255.0)
    with torch.inference_mode(), devices.inference_precision(dev, precision, "config segmentation.inference"):
        y = model(x)
    y = y.float().cpu().numpy()
    expected = (len(blocks), 3) + tuple(out_shape)
    if y.shape != expected:
        raise EmsrError(f"blockwise: the network maps {tuple(x.shape)} to {y.shape}, expected {expected}")
    if not np.isfinite(y).all():
        raise EmsrError("blockwise: the network produced NaN or inf affinities")
    return y


def predict_affinities(
    model: nn.Module,
    raw: np.ndarray,
    spec: BlockSpec,
    device: torch.device | None = None,
    batch: int = 1,
    out=None,
    log_every: float = 30.0,
    precision: str = "fp32",
):
    """Affinities (3, z, y, x) float32 of a uint8 raw volume (z, y, x), blockwise.

    ``out``: where the result goes (array or HDF5 dataset of that shape); default a new array.
    ``precision``: fp32 (TF32 off), bf16 or fp16 autocast (emsrbench.device.precision_plan).
    Returns ``out``.
    """
    raw = np.asarray(raw)
    if raw.ndim != 3 or raw.dtype != np.uint8:
        raise EmsrError(f"blockwise: raw must be a uint8 (z, y, x) volume, got {raw.dtype} {raw.shape}")
    dev = device or devices.pick_device()
    depth, height, width = raw.shape
    if out is None:
        out = np.zeros((3,) + raw.shape, dtype=np.float32)
    elif tuple(out.shape) != (3,) + raw.shape:
        raise EmsrError(f"blockwise: output shape {tuple(out.shape)} is not (3,) + {raw.shape}")
    z_origins, y_origins, x_origins = spec.origins(raw.shape)
    _, extents = spec.grid(raw.shape)
    padded = spec.padded_raw(raw)
    win = None if spec.overwrites else spec.window()
    oz, oy, ox = spec.out_shape
    iz, iy, ix = spec.in_shape
    pz, py, px = spec.pad
    acc = np.zeros((3, oz, extents[1], extents[2]), dtype=np.float32)
    wsum = np.zeros((oz, extents[1], extents[2]), dtype=np.float32)
    model = model.to(dev).eval()
    t0 = last = time.perf_counter()

    def emit(z_ext0: int, n: int) -> None:
        """Write extended-volume sections [z_ext0, z_ext0 + n) of the accumulator to ``out``."""
        v0, v1 = max(z_ext0 - pz, 0), min(z_ext0 + n - pz, depth)
        if v0 >= v1:
            return
        a0 = v0 + pz - z_ext0
        sl = (slice(a0, a0 + v1 - v0), slice(py, py + height), slice(px, px + width))
        out[:, v0:v1] = acc[(slice(None),) + sl] / wsum[sl]

    origins = [(y0, x0) for y0 in y_origins for x0 in x_origins]
    for row, z0 in enumerate(z_origins):
        for i in range(0, len(origins), batch):
            chunk = origins[i : i + batch]
            blocks = [padded[z0 : z0 + iz, y0 : y0 + iy, x0 : x0 + ix] for y0, x0 in chunk]
            pred = _run(model, blocks, dev, spec.out_shape, precision)
            for (y0, x0), p in zip(chunk, pred):
                if win is None:  # the study's valid network: the later block wins
                    acc[:, :, y0 : y0 + oy, x0 : x0 + ox] = p
                    wsum[:, y0 : y0 + oy, x0 : x0 + ox] = 1.0
                else:
                    acc[:, :, y0 : y0 + oy, x0 : x0 + ox] += p * win
                    wsum[:, y0 : y0 + oy, x0 : x0 + ox] += win
        last_row = row == len(z_origins) - 1
        step = oz if last_row else z_origins[row + 1] - z0
        emit(z0, step)
        if not last_row:  # shift the accumulator down to the next row's origin
            acc[:, : oz - step] = acc[:, step:]
            acc[:, oz - step :] = 0
            wsum[: oz - step] = wsum[step:]
            wsum[oz - step :] = 0
        now = time.perf_counter()
        if now - last > log_every:
            print(f"blockwise: row {row + 1}/{len(z_origins)} ({now - t0:.0f} s)", file=sys.stderr)
            last = now
    return out
