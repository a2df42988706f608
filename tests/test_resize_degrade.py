"""MATLAB imresize port and the degradation models."""

import json
import sys
import warnings

import h5py
import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from emsrbench import io
from emsrbench.degrade import LR_KEY, Degradation, crop_to_multiple, degrade_file, downsample_volume
from emsrbench.errors import EmsrError
from emsrbench.resize import imresize, imresize_np


@pytest.fixture(scope="module")
def basicsr_imresize():
    """basicsr's independent port of MATLAB imresize (numpy HWC or HW in, float32 math)."""
    import torchvision.transforms.functional as F

    # basicsr 1.4.2 imports a torchvision module that was renamed; alias it for the reference only
    sys.modules.setdefault("torchvision.transforms.functional_tensor", F)
    with warnings.catch_warnings():  # basicsr's own scipy deprecation noise
        warnings.simplefilter("ignore", DeprecationWarning)
        from basicsr.utils.matlab_functions import imresize as ref

    return ref


# ---------------------------------------------------------------- resize


@pytest.mark.parametrize(
    "shape, scale",
    [((128, 96), 1 / 8), ((256, 160), 1 / 16), ((64, 48), 1 / 16), ((20, 13), 8), ((9, 11), 16), ((37, 29), 1 / 8)],
)
def test_imresize_matches_basicsr(basicsr_imresize, shape, scale):
    img = np.random.default_rng(1).random(shape)
    ref = basicsr_imresize(img.astype(np.float32), scale).astype(np.float64)
    ours = imresize_np(img, scale)
    assert ours.shape == ref.shape
    # basicsr computes in float32: its own rounding error is ~1e-7
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)


def test_imresize_without_antialias_is_plain_cubic_interpolation():
    # (basicsr's port breaks on this case.) Without antialiasing a 1/8 shrink samples at
    # u = 8x - 3.5, midway between two pixels: the 4-tap cubic weights are (-1, 9, 9, -1) / 16.
    img = np.random.default_rng(2).random((64, 40))
    out = imresize_np(img, 1 / 8, antialias=False)
    w = np.array([-1, 9, 9, -1]) / 16
    r, c = 3, 2  # interior output pixel; 0-based input taps 8r+2 .. 8r+5
    h_pass = w @ img[8 * r + 2 : 8 * r + 6]  # H first, then W, as MATLAB
    assert out[r, c] == pytest.approx(h_pass[8 * c + 2 : 8 * c + 6] @ w, abs=1e-12)


def test_imresize_batched_torch_shapes_and_dtype():
    x = torch.rand(2, 3, 40, 24, dtype=torch.float32)
    y = imresize(x, 1 / 8)
    assert y.shape == (2, 3, 5, 3) and y.dtype == torch.float32
    # every leading index is resized independently and identically
    np.testing.assert_allclose(y[1, 2].numpy(), imresize_np(x[1, 2].numpy(), 1 / 8), atol=1e-5)
    assert imresize(torch.rand(7, 5, dtype=torch.float64), 16).shape == (112, 80)
    assert imresize(torch.rand(1, 30, 30, dtype=torch.float64), 1 / 16).shape == (1, 2, 2)  # ceil(30/16)


@pytest.mark.parametrize("scale", [1 / 16, 1 / 8, 8, 16, 1.0])
def test_imresize_constant_stays_constant(scale):
    out = imresize_np(np.full((48, 32), 117.25), scale)
    np.testing.assert_allclose(out, 117.25, rtol=0, atol=1e-10)


def test_imresize_kernel_wider_than_image():
    # a 16x shrink has a 64-tap kernel; MATLAB folds indices repeatedly on a 5-pixel image
    out = imresize_np(np.arange(5.0)[None, :].repeat(3, 0), 1 / 16)
    assert out.shape == (1, 1) and np.isfinite(out).all()


def test_imresize_rejects_integer_tensors():
    with pytest.raises(TypeError):
        imresize(torch.zeros(8, 8, dtype=torch.uint8), 0.5)


# ---------------------------------------------------------------- degradation config


def test_degradation_from_config_and_errors():
    d = Degradation.from_config(
        {"model": "gaussian_area", "sigma": 2, "noise": "gaussian", "noise_level": 3, "seed": 5}
    )
    assert (d.model, d.sigma, d.noise, d.noise_level, d.seed) == ("gaussian_area", 2.0, "gaussian", 3.0, 5)
    assert Degradation.from_config(None) == Degradation()
    assert Degradation().blur_sigma(8) is not None
    with pytest.raises(EmsrError, match=r"unknown key\(s\) sgima"):
        Degradation.from_config({"sgima": 1})
    bad = [
        ({"model": "lanczos"}, "degradation.model"),
        ({"sigma": 1.0}, "degradation.sigma"),  # sigma with bicubic
        ({"model": "gaussian_area", "sigma": -1}, "degradation.sigma"),
        ({"noise": "salt"}, "degradation.noise"),
        ({"noise": "poisson"}, "degradation.noise_level"),  # needs a level
        ({"noise_level": 2.0}, "degradation.noise_level"),  # level without noise
        ({"noise": "gaussian", "noise_level": "3"}, "degradation.noise_level"),
        ({"seed": -1}, "degradation.seed"),
        ({"seed": 1.5}, "degradation.seed"),
    ]
    for cfg, key in bad:
        with pytest.raises(EmsrError, match=key) as err:
            Degradation.from_config(cfg)
        assert "\n" not in str(err.value)
    with pytest.raises(EmsrError, match="mapping"):
        Degradation.from_config(["bicubic"])


# ---------------------------------------------------------------- downsampling


def _hr(z=3, y=64, x=48, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (z, y, x), dtype=np.uint8)


def test_crop_to_multiple():
    v = _hr(2, 70, 53)
    c = crop_to_multiple(v, 8)
    assert c.shape == (2, 64, 48) and np.array_equal(c, v[:, :64, :48])
    assert crop_to_multiple(v[:, :64, :48], 8).shape == (2, 64, 48)
    with pytest.raises(EmsrError, match="smaller than scale 16"):
        crop_to_multiple(v[:, :10], 16)


def test_downsample_requires_cropped_uint8():
    with pytest.raises(EmsrError, match="multiple of scale 8"):
        downsample_volume(_hr(1, 60, 48), 8, Degradation())
    with pytest.raises(EmsrError, match="uint8"):
        downsample_volume(_hr(1, 64, 48).astype(np.float32), 8, Degradation())


@pytest.mark.parametrize("scale", [8, 16])
def test_bicubic_is_imresize_rounded_like_matlab(scale):
    hr = _hr(3, 64, 48)
    lr = downsample_volume(hr, scale, Degradation())
    assert lr.shape == (3, 64 // scale, 48 // scale) and lr.dtype == np.uint8
    ref = imresize_np(hr.astype(np.float64), 1 / scale)
    np.testing.assert_array_equal(lr, np.floor(np.clip(ref, 0, 255) + 0.5).astype(np.uint8))


def test_rounding_half_away_from_zero():
    # a constant 2.5-grey image can't be built from uint8, so test the helper MATLAB-style rule
    from emsrbench.degrade import _to_uint8

    np.testing.assert_array_equal(_to_uint8(np.array([0.5, 1.5, 2.5, -3.0, 254.5, 300.0])), [1, 2, 3, 0, 255, 255])


def test_gaussian_area_constant_and_scipy_reference():
    const = np.full((2, 32, 48), 93, dtype=np.uint8)
    d = Degradation(model="gaussian_area")
    assert np.array_equal(downsample_volume(const, 8, d), np.full((2, 4, 6), 93, np.uint8))

    hr = _hr(3, 64, 48, seed=3)
    for sigma, scale in [(None, 8), (1.3, 8), (0.0, 16)]:
        d = Degradation(model="gaussian_area", sigma=sigma)
        s = d.blur_sigma(scale)
        f = hr.astype(np.float64)
        if s > 0:
            f = np.stack([ndi.gaussian_filter(sec, s, mode="reflect") for sec in f])
        ref = f.reshape(3, 64 // scale, scale, 48 // scale, scale).mean(axis=(2, 4))
        np.testing.assert_array_equal(downsample_volume(hr, scale, d), np.floor(np.clip(ref, 0, 255) + 0.5))
    assert Degradation(model="gaussian_area").blur_sigma(8) == 3.5


def test_noise_statistics_and_determinism():
    hr = np.full((4, 256, 256), 120, dtype=np.uint8)
    d = Degradation(noise="gaussian", noise_level=4.0, seed=7)
    lr = downsample_volume(hr, 8, d).astype(np.float64)
    assert abs(lr.mean() - 120) < 0.3
    assert abs(lr.std() - 4.0) < 0.3  # rounding adds ~1/12 variance
    assert np.array_equal(downsample_volume(hr, 8, d), downsample_volume(hr, 8, d))
    other_seed = Degradation(noise="gaussian", noise_level=4.0, seed=8)
    assert not np.array_equal(downsample_volume(hr, 8, d), downsample_volume(hr, 8, other_seed))
    assert not np.array_equal(lr[0], lr[1])  # sections get different noise

    k = 0.5  # photons per grey level: variance of v is v / k
    lp = downsample_volume(hr, 8, Degradation(noise="poisson", noise_level=k)).astype(np.float64)
    assert abs(lp.mean() - 120) < 1.0
    assert abs(lp.var() - 120 / k) / (120 / k) < 0.1


def test_z_subset_gives_identical_sections(monkeypatch):
    import emsrbench.degrade as deg_mod

    hr = _hr(7, 32, 32)
    d = Degradation(noise="gaussian", noise_level=5.0, seed=1)
    full = downsample_volume(hr, 8, d)
    assert np.array_equal(downsample_volume(hr[2:5], 8, d, z0=2), full[2:5])
    monkeypatch.setattr(deg_mod, "CHUNK_BYTES", 32 * 32 * 8 * 2)  # force 2-section chunks
    assert np.array_equal(downsample_volume(hr, 8, d), full)


# ---------------------------------------------------------------- files


def test_degrade_file_round_trip(tmp_path):
    raw = _hr(5, 70, 53, seed=4)
    labels = np.random.default_rng(5).integers(0, 9, raw.shape).astype(np.uint64)
    src = tmp_path / "hr.h5"
    io.write_cremi(src, raw, labels, resolution=(40.0, 4.0, 4.0))
    d = Degradation(noise="gaussian", noise_level=2.0, seed=3)
    out = tmp_path / "out" / "lr.h5"
    degrade_file(src, out, 8, d)

    with h5py.File(out, "r") as f:
        assert np.array_equal(f[io.RAW_KEY][:], raw[:, :64, :48])
        assert np.array_equal(f[io.LABELS_KEY][:], labels[:, :64, :48])
        lr = f[LR_KEY][:]
        assert lr.dtype == np.uint8 and lr.shape == (5, 8, 6)
        assert np.array_equal(lr, downsample_volume(raw[:, :64, :48].copy(), 8, d))
        np.testing.assert_array_equal(f[LR_KEY].attrs["resolution"], [40, 32, 32])
        np.testing.assert_array_equal(f[io.RAW_KEY].attrs["resolution"], [40, 4, 4])
        assert int(f.attrs["scale"]) == 8 and int(f.attrs["z_offset"]) == 0
        assert json.loads(f.attrs["degradation"]) == {
            "model": "bicubic",
            "sigma": None,
            "noise": "gaussian",
            "noise_level": 2.0,
            "seed": 3,
        }
    assert [p.name for p in out.parent.iterdir()] == ["lr.h5"]  # no temporary left behind

    # a z-range (also counted from the end) reproduces the same LR sections
    sub = tmp_path / "sub.h5"
    degrade_file(src, sub, 8, d, z=(-3, None))
    with h5py.File(sub, "r") as f:
        assert np.array_equal(f[LR_KEY][:], lr[2:])
        assert int(f.attrs["z_offset"]) == 2


def test_degrade_file_without_labels(tmp_path):
    src = tmp_path / "hr.h5"
    io.write_cremi(src, _hr(2, 32, 32))
    out = tmp_path / "lr.h5"
    degrade_file(src, out, 16, Degradation(model="gaussian_area"))
    with h5py.File(out, "r") as f:
        assert io.LABELS_KEY not in f and f[LR_KEY].shape == (2, 2, 2)
        assert json.loads(f.attrs["degradation"])["sigma"] == 7.5


def test_degrade_file_too_small(tmp_path):
    src = tmp_path / "hr.h5"
    io.write_cremi(src, _hr(2, 12, 32))
    with pytest.raises(EmsrError, match="smaller than the largest scale factor 16"):
        degrade_file(src, tmp_path / "lr.h5", 16, Degradation())
    assert not (tmp_path / "lr.h5").exists()
