"""PSNR/SSIM against scikit-image, LPIPS against the lpips package itself."""

import hashlib
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from emsrbench.degrade import Degradation, downsample_volume
from emsrbench.errors import EmsrError
from emsrbench.metrics import (
    ALEXNET_FILE,
    LpipsUnavailable,
    load_lpips,
    lpips_sections,
    psnr_sections,
    psnr_volume,
    ssim_sections,
    ssim_volume,
)
from emsrbench.resize import imresize_np

ISBI = Path(__file__).parent / "data" / "isbi2012_train.h5"


def _ssim_ref(a, b):
    return structural_similarity(a, b, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)


@pytest.fixture(scope="module")
def random_pair():
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (4, 48, 40), dtype=np.uint8)
    sr = np.clip(hr.astype(int) + rng.integers(-30, 31, hr.shape), 0, 255).astype(np.uint8)
    return hr, sr


@pytest.fixture(scope="module")
def em_pair():
    """Real EM sections and their 8x bicubic down-up reconstruction (a realistic SR error)."""
    with h5py.File(ISBI, "r") as f:
        hr = f["volumes/raw"][:6]
    lr = downsample_volume(hr, 8, Degradation())
    sr = np.floor(np.clip(imresize_np(lr, 8), 0, 255) + 0.5).astype(np.uint8)
    return hr, sr


@pytest.mark.parametrize("pair", ["random_pair", "em_pair"])
def test_psnr_ssim_match_skimage(pair, request):
    hr, sr = request.getfixturevalue(pair)
    ps = psnr_sections(hr, sr)
    ss = ssim_sections(hr, sr)
    assert ps.dtype == np.float64 and ps.shape == (hr.shape[0],)
    ref_ps = [peak_signal_noise_ratio(h, s, data_range=255) for h, s in zip(hr, sr)]
    ref_ss = [_ssim_ref(h, s) for h, s in zip(hr, sr)]
    np.testing.assert_allclose(ps, ref_ps, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ss, ref_ss, rtol=0, atol=1e-6)
    assert psnr_volume(hr, sr) == pytest.approx(peak_signal_noise_ratio(hr, sr, data_range=255), abs=1e-6)
    assert ssim_volume(hr, sr) == pytest.approx(np.mean(ref_ss), abs=1e-6)


def test_ssim_chunking_does_not_change_values(random_pair, monkeypatch):
    import emsrbench.metrics.image as image

    hr, sr = random_pair
    whole = ssim_sections(hr, sr)
    monkeypatch.setattr(image, "CHUNK_VOXELS", 1)  # one section per chunk
    np.testing.assert_array_equal(ssim_sections(hr, sr), whole)


def test_identical_and_2d(random_pair):
    hr, sr = random_pair
    assert np.isinf(psnr_sections(hr, hr)).all() and np.isinf(psnr_volume(hr, hr))
    np.testing.assert_allclose(ssim_sections(hr, hr), 1.0)
    # a section that differs only in one voxel
    sr1 = hr.copy()
    sr1[1, 0, 0] ^= 1
    p = psnr_sections(hr, sr1)
    assert np.isinf(p[[0, 2, 3]]).all() and np.isfinite(p[1])
    assert psnr_sections(hr[0], sr[0]).shape == (1,)


def test_metric_input_errors(random_pair):
    hr, sr = random_pair
    with pytest.raises(EmsrError, match="differs from SR shape"):
        psnr_sections(hr, sr[:, :-1])
    with pytest.raises(EmsrError, match="SR must be uint8"):
        ssim_sections(hr, sr.astype(np.float32))
    with pytest.raises(EmsrError, match="^run1/x8: HR shape"):
        psnr_volume(hr, sr[:2], what="run1/x8")
    with pytest.raises(EmsrError, match="at least 11x11"):
        ssim_sections(hr[:, :10], sr[:, :10])


# ---------------------------------------------------------------- LPIPS


@pytest.fixture(scope="module")
def random_alexnet(tmp_path_factory):
    """A random AlexNet saved where torch hub caches ImageNet weights under TORCH_HOME."""
    import torchvision

    home = tmp_path_factory.mktemp("torch_home")
    path = home / "hub" / "checkpoints" / ALEXNET_FILE
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    state = torchvision.models.alexnet(weights=None).state_dict()
    torch.save(state, path)
    return home, hashlib.sha256(path.read_bytes()).hexdigest(), state


def test_lpips_equals_lpips_package(random_alexnet, monkeypatch):
    import lpips

    home, sha, state = random_alexnet
    rng = np.random.default_rng(3)
    hr = rng.integers(0, 256, (3, 64, 72), dtype=np.uint8)
    sr = np.clip(hr.astype(int) + rng.integers(-40, 41, hr.shape), 0, 255).astype(np.uint8)

    model = load_lpips(home, sha, "cpu")
    ours = lpips_sections(hr, sr, model, "cpu", batch=2)

    # the reference: the package's own construction, with torchvision reading the cached file
    monkeypatch.setenv("TORCH_HOME", str(home))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ref_model = lpips.LPIPS(net="alex", verbose=False)
    assert torch.equal(
        getattr(ref_model.net.slice1, "0").weight, state["features.0.weight"]
    )  # not random, not downloaded
    assert torch.equal(getattr(ref_model.net.slice5, "10").bias, state["features.10.bias"])
    with torch.no_grad():
        ref = [
            ref_model(
                lpips.im2tensor(np.repeat(h[..., None], 3, 2)), lpips.im2tensor(np.repeat(s[..., None], 3, 2))
            ).item()
            for h, s in zip(hr, sr)
        ]
    assert ours.dtype == np.float64 and ours.shape == (3,)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)
    assert (ours > 0).all()
    np.testing.assert_allclose(lpips_sections(hr, hr, model), 0.0, atol=1e-7)

    # every backbone parameter came from the file
    for name, p in model.net.state_dict().items():
        _, idx, leaf = name.split(".")
        assert torch.equal(p, state[f"features.{idx}.{leaf}"]), name


def test_lpips_accepts_hub_dir_layout(random_alexnet):
    home, sha, _ = random_alexnet
    load_lpips(home / "hub", sha.upper(), "cpu")  # <dir>/checkpoints/<file>


def test_lpips_unavailable(tmp_path, random_alexnet):
    home, sha, _ = random_alexnet
    with pytest.raises(LpipsUnavailable, match=str(tmp_path / "checkpoints" / ALEXNET_FILE)) as err:
        load_lpips(tmp_path, sha, "cpu")
    assert "not found" in err.value.reason
    with pytest.raises(LpipsUnavailable, match="sha256 mismatch"):
        load_lpips(home, "0" * 64, "cpu")
    with pytest.raises(EmsrError, match="at least 8 hexadecimal digits"):
        load_lpips(home, "7be5be", "cpu")
    # torch hub's prefix convention: the random file's own 8-digit prefix passes, the real one fails
    load_lpips(home, sha[:8], "cpu")
    with pytest.raises(LpipsUnavailable, match="sha256 mismatch"):
        load_lpips(home, "7be5be79", "cpu")

    # a file with the right name and hash that is not AlexNet
    bogus = tmp_path / "bogus" / "checkpoints" / ALEXNET_FILE
    bogus.parent.mkdir(parents=True)
    torch.save({"features.0.weight": torch.zeros(3)}, bogus)
    with pytest.raises(LpipsUnavailable, match="features.0.bias|shape"):
        load_lpips(tmp_path / "bogus", hashlib.sha256(bogus.read_bytes()).hexdigest(), "cpu")
