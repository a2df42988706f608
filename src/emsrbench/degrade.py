"""Degradation models that turn an HR EM volume into its LR input, section by section.

Serial-section EM is anisotropic: super-resolution here is *lateral* only, so every model
acts on each (y, x) section independently and leaves z alone.

Models
------
``bicubic``
    MATLAB ``imresize(section, 1/scale, 'bicubic')`` with antialiasing (:mod:`emsrbench.resize`),
    the convention of the SR literature, so numbers are comparable with published ones.
``gaussian_area``
    A physical acquisition model: a Gaussian blur (beam/optics PSF) followed by averaging each
    ``scale x scale`` block (the LR pixel integrates the signal over its area, as a longer
    pixel dwell on a coarser raster does).  The default blur is ``sigma = (scale - 1) / 2`` HR
    pixels, the anti-aliasing sigma of ``skimage.transform.resize``: it vanishes at scale 1
    (the model is then the identity) and grows in proportion to the LR pixel, so the beam spot
    is modelled as matched to the coarser raster.  Blur and box together have a standard
    deviation of 0.52 (scale 8) to 0.55 (scale 16) LR pixels, a FWHM of about 1.25 LR pixels.
    The blur uses ``scipy.ndimage.gaussian_filter`` (truncate 4, half-sample symmetric
    'reflect' boundary, the same mirroring as MATLAB's).

Noise (added in float to the LR image, before rounding)
-----
``gaussian``  additive, ``noise_level`` = standard deviation in grey levels (0-255 scale).
``poisson``   shot noise, ``noise_level`` = photons (detected electrons) per grey level:
              an LR value ``v`` becomes ``Poisson(v * noise_level) / noise_level``, so the SNR
              of a pixel is ``sqrt(v * noise_level)``; larger means cleaner.

The result is rounded like MATLAB ``im2uint8`` (clip to [0, 255], then round half away from
zero).  Noise is drawn from a generator seeded with ``(seed, scale, absolute section index)``,
so any z-range of a volume degrades to exactly the same sections as the whole volume.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np
import scipy.ndimage as ndi
import torch

from . import io
from .errors import EmsrError
from .resize import imresize

__all__ = ["Degradation", "LR_KEY", "crop_to_multiple", "downsample_volume", "degrade_file"]

LR_KEY = io.LR_KEY
MODELS = ("bicubic", "gaussian_area")
NOISES = ("none", "gaussian", "poisson")
CHUNK_BYTES = 256 * 2**20  # float64 working set per z-chunk (a few arrays of this size live at once)


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


@dataclass
class Degradation:
    """Parameters of one degradation, normally built from ``config['degradation']``."""

    model: str = "bicubic"
    sigma: float | None = None  # gaussian_area only; None -> (scale - 1) / 2 HR pixels
    noise: str = "none"
    noise_level: float = 0.0
    seed: int = 0

    def __post_init__(self):
        where = "config degradation"
        if self.model not in MODELS:
            raise EmsrError(f"{where}.model: unknown model {self.model!r}, expected one of {', '.join(MODELS)}")
        if self.sigma is not None:
            if self.model != "gaussian_area":
                raise EmsrError(f"{where}.sigma: only used by model 'gaussian_area', not {self.model!r}")
            if not _is_number(self.sigma) or not np.isfinite(self.sigma) or self.sigma < 0:
                raise EmsrError(f"{where}.sigma: must be a number >= 0 (HR pixels), got {self.sigma!r}")
            self.sigma = float(self.sigma)
        if self.noise not in NOISES:
            raise EmsrError(f"{where}.noise: unknown noise {self.noise!r}, expected one of {', '.join(NOISES)}")
        if not _is_number(self.noise_level) or not np.isfinite(self.noise_level) or self.noise_level < 0:
            raise EmsrError(f"{where}.noise_level: must be a number >= 0, got {self.noise_level!r}")
        self.noise_level = float(self.noise_level)
        if self.noise == "none" and self.noise_level != 0:
            raise EmsrError(
                f"{where}.noise_level: is {self.noise_level} but noise is 'none'; set noise or remove noise_level"
            )
        if self.noise != "none" and self.noise_level <= 0:
            raise EmsrError(f"{where}.noise_level: must be > 0 for noise {self.noise!r}")
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool) or self.seed < 0:
            raise EmsrError(f"{where}.seed: must be an integer >= 0, got {self.seed!r}")
        self.seed = int(self.seed)

    @classmethod
    def from_config(cls, cfg: dict | None) -> "Degradation":
        """Build from a config mapping; unknown keys or bad values raise a one-line EmsrError."""
        if cfg is None:
            return cls()
        if not isinstance(cfg, dict):
            raise EmsrError(f"config degradation: expected a mapping, got {type(cfg).__name__}")
        known = cls.__dataclass_fields__.keys()
        unknown = sorted(map(str, set(cfg) - set(known)))
        if unknown:
            raise EmsrError(f"config degradation: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
        return cls(**cfg)

    def blur_sigma(self, scale: int) -> float:
        """The gaussian_area blur in HR pixels for ``scale`` (the documented default when unset)."""
        return self.sigma if self.sigma is not None else (scale - 1) / 2.0

    def describe(self, scale: int) -> dict:
        """Parameters as stored with the LR data (effective sigma filled in)."""
        d = asdict(self)
        if self.model == "gaussian_area":
            d["sigma"] = self.blur_sigma(scale)
        return d


def _check_scale(scale) -> int:
    if not isinstance(scale, (int, np.integer)) or isinstance(scale, bool) or scale < 1:
        raise EmsrError(f"scale: must be a positive integer, got {scale!r}")
    return int(scale)


def crop_to_multiple(vol: np.ndarray, scale: int) -> np.ndarray:
    """Crop y and x (bottom/right) to multiples of ``scale`` so LR pixels tile HR exactly.

    Cropping at the far side keeps HR and LR pixel (0, 0) aligned, so coordinates need no offset.
    Returns a view.
    """
    scale = _check_scale(scale)
    if vol.ndim != 3:
        raise EmsrError(f"crop_to_multiple: expected a (z,y,x) volume, got shape {vol.shape}")
    y, x = (vol.shape[1] // scale) * scale, (vol.shape[2] // scale) * scale
    if y == 0 or x == 0:
        raise EmsrError(f"crop_to_multiple: lateral size {vol.shape[1]}x{vol.shape[2]} is smaller than scale {scale}")
    return vol[:, :y, :x]


def _to_uint8(a: np.ndarray) -> np.ndarray:
    # MATLAB im2uint8 rounds half away from zero; after clipping to [0, 255] that is floor(v + 0.5)
    return np.floor(np.clip(a, 0.0, 255.0) + 0.5).astype(np.uint8)


def _add_noise(lr: np.ndarray, deg: Degradation, scale: int, z0: int) -> np.ndarray:
    if deg.noise == "none":
        return lr
    out = np.empty_like(lr)
    for i in range(lr.shape[0]):
        rng = np.random.default_rng([deg.seed, scale, z0 + i])
        if deg.noise == "gaussian":
            out[i] = lr[i] + rng.normal(0.0, deg.noise_level, size=lr[i].shape)
        else:  # poisson; bicubic overshoot below 0 carries no signal
            k = deg.noise_level
            out[i] = rng.poisson(np.clip(lr[i], 0.0, None) * k) / k
    return out


def _downsample_float(hr: np.ndarray, scale: int, deg: Degradation) -> np.ndarray:
    """float64 LR of a (z,y,x) float64 stack, before noise and rounding."""
    z, y, x = hr.shape
    if deg.model == "bicubic":
        with torch.no_grad():
            t = imresize(torch.from_numpy(hr), 1.0 / scale, antialias=True, out_shape=(y // scale, x // scale))
        return t.numpy()
    sigma = deg.blur_sigma(scale)
    if sigma > 0:
        hr = ndi.gaussian_filter(hr, sigma=(0.0, sigma, sigma), mode="reflect", truncate=4.0)
    return hr.reshape(z, y // scale, scale, x // scale, scale).mean(axis=(2, 4))


def downsample_volume(hr: np.ndarray, scale: int, deg: Degradation, z0: int = 0) -> np.ndarray:
    """Degrade a uint8 (z,y,x) HR volume (y, x multiples of ``scale``) to uint8 (z, y/scale, x/scale).

    ``z0`` is the absolute index of ``hr[0]`` in its source volume; it seeds the noise so a
    z-subset reproduces the full volume's sections.  Works in z-chunks to bound memory.
    """
    scale = _check_scale(scale)
    if not isinstance(hr, np.ndarray) or hr.ndim != 3 or hr.dtype != np.uint8:
        got = f"{getattr(hr, 'dtype', type(hr).__name__)} {getattr(hr, 'shape', '')}"
        raise EmsrError(f"downsample_volume: expected a uint8 (z,y,x) array, got {got}")
    z, y, x = hr.shape
    if y % scale or x % scale or y == 0 or x == 0:
        raise EmsrError(
            f"downsample_volume: lateral size {y}x{x} is not a positive multiple of scale {scale}; crop first"
        )
    lr = np.empty((z, y // scale, x // scale), dtype=np.uint8)
    step = max(1, CHUNK_BYTES // (y * x * 8))
    for s in range(0, z, step):
        chunk = hr[s : s + step].astype(np.float64)
        low = _add_noise(_downsample_float(chunk, scale, deg), deg, scale, z0 + s)
        lr[s : s + step] = _to_uint8(low)
    return lr


def crop_center(vol: np.ndarray, size, where: str) -> np.ndarray:
    """The central ``size`` = (y, x) window of every section (the study's 1024x1024 crops)."""
    (h, w), (ch, cw) = vol.shape[1:], (int(size[0]), int(size[1]))
    if ch > h or cw > w:
        raise EmsrError(f"{where}: center_crop {ch}x{cw} is larger than the sections ({h}x{w})")
    y, x = (h - ch) // 2, (w - cw) // 2
    return vol[:, y : y + ch, x : x + cw]


def _abs_z0(path, z, raw_key, labels_key) -> int:
    """Absolute index of the first section read for ``z`` (negative starts count from the end)."""
    if z is None or z[0] is None or int(z[0]) >= 0:
        return 0 if z is None or z[0] is None else int(z[0])
    store = io._open_store(Path(path))
    try:
        depth = None
        if labels_key is not None:
            try:
                depth = store[labels_key].shape[0]
            except KeyError:
                pass
        if depth is None:
            depth = store[raw_key].shape[0]
    finally:
        if hasattr(store, "close"):
            store.close()
    return int(z[0]) + int(depth)


def degrade_file(
    hr_path: str | os.PathLike,
    out_path: str | os.PathLike,
    scale: int,
    deg: Degradation,
    z: tuple[int, int] | None = None,
    raw_key: str = io.RAW_KEY,
    labels_key: str | None = io.LABELS_KEY,
    center_crop: tuple[int, int] | None = None,
    min_yx: int | None = None,
    resolution=None,
) -> None:
    """Write one HDF5 with the cropped HR raw, its labels (if any) and the LR volume.

    Keeping HR, labels and LR in one file makes every later step read a consistent triple
    (same crop, same sections).  Output keys are always the CREMI defaults plus ``volumes/lr``
    whatever the input keys were; file attributes record ``scale``, the degradation
    (``degradation``, JSON), the absolute first section ``z_offset`` and ``source``.
    ``resolution`` (z, y, x nm; config ``data.resolution``) stands in for a missing
    ``resolution`` attribute of the input (see :func:`emsrbench.io.read_cremi`).
    """
    scale = _check_scale(scale)
    vol = io.read_cremi(
        hr_path, z=z, raw_key=raw_key, labels_key=labels_key, min_yx=max(scale, min_yx or 0), resolution=resolution
    )
    z0 = _abs_z0(hr_path, z, raw_key, labels_key)
    raw, labels = vol.raw, vol.labels
    if center_crop is not None:
        raw = crop_center(raw, center_crop, f"{hr_path}:{raw_key}")
        labels = crop_center(labels, center_crop, f"{hr_path}:{labels_key}") if labels is not None else None
    raw = crop_to_multiple(raw, scale)
    labels = crop_to_multiple(labels, scale) if labels is not None else None
    lr = downsample_volume(np.ascontiguousarray(raw), scale, deg, z0=z0)
    rz, ry, rx = vol.resolution
    datasets = [(io.RAW_KEY, raw, vol.resolution), (LR_KEY, lr, (rz, ry * scale, rx * scale))]
    if labels is not None:
        datasets.insert(1, (io.LABELS_KEY, labels, vol.resolution))
    with io.atomic_path(out_path) as tmp, h5py.File(tmp, "w") as f:
        for key, arr, res in datasets:
            chunks = (1, min(arr.shape[1], 256), min(arr.shape[2], 256)) if arr.size else None
            ds = f.create_dataset(key, data=arr, chunks=chunks, compression="gzip", compression_opts=1)
            ds.attrs["resolution"] = np.asarray(res, dtype=float)
        f.attrs["scale"] = scale
        f.attrs["degradation"] = json.dumps(deg.describe(scale), sort_keys=True)
        f.attrs["z_offset"] = z0
        f.attrs["source"] = str(hr_path)
