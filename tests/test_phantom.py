"""The embedded phantom: determinism, chunk independence, CREMI layout and EM-like statistics."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from scipy import ndimage

from emsrbench import phantom
from emsrbench.errors import EmsrError
from emsrbench.io import LABELS_KEY, RAW_KEY, read_cremi

SHAPE = (16, 256, 256)


@pytest.fixture(scope="module")
def vol():
    return phantom.generate(SHAPE, seed=0)


def _boundary(lab2d: np.ndarray) -> np.ndarray:
    """Pixels whose 4-neighbourhood holds another label."""
    b = np.zeros(lab2d.shape, bool)
    d = lab2d[1:, :] != lab2d[:-1, :]
    b[1:, :] |= d
    b[:-1, :] |= d
    d = lab2d[:, 1:] != lab2d[:, :-1]
    b[:, 1:] |= d
    b[:, :-1] |= d
    return b


def test_dtype_shape(vol):
    raw, lab = vol
    assert raw.shape == SHAPE and lab.shape == SHAPE
    assert raw.dtype == np.uint8 and lab.dtype == np.uint64
    assert lab.min() >= 1  # ids tile every pixel, like CREMI's neuron_ids


def test_deterministic(vol):
    raw, lab = vol
    raw2, lab2 = phantom.generate(SHAPE, seed=0, z_range=(0, 3))
    np.testing.assert_array_equal(raw[:3], raw2)
    np.testing.assert_array_equal(lab[:3], lab2)
    raw3, lab3 = phantom.generate(SHAPE, seed=1, z_range=(0, 2))
    assert not np.array_equal(raw[:2], raw3)
    assert not np.array_equal(lab[:2], lab3)


@pytest.mark.parametrize("z_range", [(0, 1), (5, 9), (15, 16)])
def test_z_range_is_slice_of_whole(vol, z_range):
    raw, lab = vol
    r, l = phantom.generate(SHAPE, seed=0, z_range=z_range)
    np.testing.assert_array_equal(r, raw[z_range[0] : z_range[1]])
    np.testing.assert_array_equal(l, lab[z_range[0] : z_range[1]])


def test_depth_does_not_change_the_first_sections(vol):
    raw, lab = vol
    r, l = phantom.generate((4, SHAPE[1], SHAPE[2]), seed=0)
    np.testing.assert_array_equal(r, raw[:4])
    np.testing.assert_array_equal(l, lab[:4])


def test_write_chunked_equals_generate(tmp_path):
    shape = (7, 96, 80)
    path = tmp_path / "ph.h5"
    phantom.write(path, shape, seed=3, resolution=(40.0, 4.0, 4.0), chunk_sections=3)
    raw, lab = phantom.generate(shape, seed=3)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f[RAW_KEY][...], raw)
        np.testing.assert_array_equal(f[LABELS_KEY][...], lab)
        for key in (RAW_KEY, LABELS_KEY):
            np.testing.assert_array_equal(f[key].attrs["resolution"], np.array([40.0, 4.0, 4.0]))
            assert f[key].chunks == (1, 96, 80)
            assert f[key].compression == "gzip"
        assert f[RAW_KEY].dtype == np.uint8 and f[LABELS_KEY].dtype == np.uint64
    assert not list(tmp_path.glob(".*tmp*"))  # the atomic write left no temporary behind


def test_read_cremi(tmp_path):
    path = tmp_path / "ph.h5"
    phantom.write(path, (4, 64, 64), seed=0, resolution=(40.0, 4.0, 4.0))
    v = read_cremi(path, need_labels=True)
    assert v.raw.shape == (4, 64, 64) and v.labels.shape == (4, 64, 64)
    assert v.resolution == (40.0, 4.0, 4.0)
    np.testing.assert_array_equal(v.raw, phantom.generate((4, 64, 64), seed=0)[0])


def test_membrane_fraction_and_label_count(vol):
    _, lab = vol
    for z in range(0, SHAPE[0], 5):
        b = _boundary(lab[z])
        assert 0.03 < b.mean() < 0.30, b.mean()
        assert len(np.unique(lab[z])) > 20


def test_labels_continue_over_z(vol):
    _, lab = vol
    keep = (lab[1:] == lab[:-1]).mean(axis=(1, 2))
    assert keep.min() > 0.8, keep
    # but the sections are not copies of each other
    assert keep.max() < 0.995
    # most ids of a section are still there in the next one
    for z in range(SHAPE[0] - 1):
        a, b = set(np.unique(lab[z]).tolist()), set(np.unique(lab[z + 1]).tolist())
        assert len(a & b) > 0.8 * len(a)


def test_membranes_darker_than_cytoplasm(vol):
    raw, lab = vol
    for z in range(0, SHAPE[0], 3):
        b = _boundary(lab[z])
        inner = ndimage.distance_transform_edt(~b) > 8
        mem, cyto = raw[z][b].mean(), raw[z][inner].mean()
        assert 40 < mem < 120, mem
        assert 130 < cyto < 210, cyto
        assert cyto - mem > 40


def test_section_brightness_varies_and_noise(vol):
    raw, _ = vol
    means = raw.reshape(SHAPE[0], -1).mean(1)
    assert means.std() > 1.0
    assert 110 < means.mean() < 190
    # grainy: neighbouring pixels differ like in TEM images (ISBI-2012: ~18 grey levels)
    diff = np.diff(raw.astype(float), axis=2).std()
    assert 8 < diff < 35, diff


def test_resolution_scales_physical_sizes():
    # at 8 nm pixels, the same field of view in half the pixels has about the same cells
    _, lab4 = phantom.generate((1, 256, 256), seed=0, resolution=(40.0, 4.0, 4.0))
    _, lab8 = phantom.generate((1, 128, 128), seed=0, resolution=(40.0, 8.0, 8.0))
    n4, n8 = len(np.unique(lab4)), len(np.unique(lab8))
    assert 0.6 < n8 / n4 < 1.6, (n4, n8)


def test_small_and_odd_shapes():
    raw, lab = phantom.generate((2, 1, 1), seed=0)
    assert raw.shape == (2, 1, 1) and lab.shape == (2, 1, 1)
    raw, lab = phantom.generate((1, 17, 300), seed=5, resolution=(50.0, 5.0, 4.0))
    assert raw.shape == (1, 17, 300)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"shape": (0, 10, 10)},
        {"shape": (4, -1, 10)},
        {"shape": (4, 10)},
        {"shape": (4, 10, 10), "seed": -1},
        {"shape": (4, 10, 10), "resolution": (40.0, 0.0, 4.0)},
        {"shape": (4, 10, 10), "z_range": (3, 5)},
        {"shape": (4, 10, 10), "z_range": (2, 2)},
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(EmsrError) as err:
        phantom.generate(**kwargs)
    assert "\n" not in str(err.value)


def test_write_bad_chunks(tmp_path):
    with pytest.raises(EmsrError):
        phantom.write(tmp_path / "x.h5", (2, 8, 8), chunk_sections=0)
    assert not (tmp_path / "x.h5").exists()


def test_render_png(tmp_path):
    from PIL import Image

    path = tmp_path / "sec.png"
    phantom.render_png(path, shape=(2, 64, 64), seed=0)
    img = np.asarray(Image.open(path))
    assert img.shape[0] == 64 and img.shape[1] > 128 and img.shape[2] == 3
