"""Shared fixtures: tiny degraded volumes made here, so unit tests need no workflow run."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from emsrbench.io import write_cremi

REPO = Path(__file__).resolve().parents[1]
ISBI = REPO / "tests" / "data" / "isbi2012_train.h5"


def area_downsample(hr: np.ndarray, scale: int) -> np.ndarray:
    z, h, w = hr.shape
    lr = hr.reshape(z, h // scale, scale, w // scale, scale).mean(axis=(2, 4))
    return np.round(lr).astype(np.uint8)


def write_degraded(path: Path, hr: np.ndarray, scale: int, labels=None) -> Path:
    """A degraded-file lookalike (HR raw + LR next to it) built with plain area averaging."""
    write_cremi(path, hr, labels, resolution=(40, 4, 4), extra={"volumes/lr": area_downsample(hr, scale)})
    with h5py.File(path, "r+") as f:
        f["volumes/lr"].attrs["resolution"] = np.array([40.0, 4.0 * scale, 4.0 * scale])
    return path


@pytest.fixture
def smooth_volume():
    """A smooth random uint8 volume (learnable, unlike white noise)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    vol = gaussian_filter(rng.random((6, 64, 64)), sigma=(0, 3, 3))
    vol = (vol - vol.min()) / (vol.max() - vol.min())
    return np.round(vol * 255).astype(np.uint8)


@pytest.fixture
def degraded_x8(tmp_path, smooth_volume) -> Path:
    return write_degraded(tmp_path / "train-0.h5", smooth_volume, 8)
