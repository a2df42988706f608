"""Tests for emsrbench.io: CREMI round trips, padded files, one-line input errors, atomic writes."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from emsrbench.errors import EmsrError
from emsrbench.io import (
    DEFAULT_RESOLUTION,
    LABELS_KEY,
    RAW_KEY,
    atomic_path,
    read_cremi,
    read_dataset,
    write_cremi,
)

SHAPE = (6, 10, 12)


def _raw(shape=SHAPE) -> np.ndarray:
    return (np.arange(np.prod(shape)) % 251).astype(np.uint8).reshape(shape)


def _labels(shape=SHAPE) -> np.ndarray:
    return (np.arange(np.prod(shape), dtype=np.uint64) * 7 + 2**40).reshape(shape)


def _write_h5(path: Path, datasets: dict, attrs: dict | None = None) -> Path:
    """Write an HDF5 file by hand; ``attrs`` maps key -> {attr: value}."""
    with h5py.File(path, "w") as f:
        for key, arr in datasets.items():
            ds = f.create_dataset(key, data=arr)
            for name, value in (attrs or {}).get(key, {}).items():
                ds.attrs[name] = value
    return path


def _res_attrs(*keys, res=(40.0, 4.0, 4.0)) -> dict:
    return {k: {"resolution": np.asarray(res, dtype=float)} for k in keys}


def _one_line_error(excinfo, *needles) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert str(needle) in msg, f"{needle!r} not in {msg!r}"
    return msg


# ---------------------------------------------------------------------------------------------
# round trip and z ranges


def test_cremi_round_trip(tmp_path):
    path = tmp_path / "vol.h5"
    raw, labels = _raw(), _labels()
    write_cremi(path, raw, labels, resolution=(50, 5, 5))
    vol = read_cremi(path, need_labels=True)
    assert vol.raw.dtype == np.uint8 and vol.labels.dtype == np.uint64
    np.testing.assert_array_equal(vol.raw, raw)
    np.testing.assert_array_equal(vol.labels, labels)
    assert vol.resolution == (50.0, 5.0, 5.0)
    assert vol.path == str(path)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f[RAW_KEY].attrs["resolution"], [50, 5, 5])
        np.testing.assert_array_equal(f[LABELS_KEY].attrs["resolution"], [50, 5, 5])


def test_cremi_round_trip_without_labels(tmp_path):
    path = tmp_path / "raw_only.h5"
    write_cremi(path, _raw())
    vol = read_cremi(path)  # need_labels=False: a missing labels dataset is fine
    assert vol.labels is None
    np.testing.assert_array_equal(vol.raw, _raw())


def test_write_cremi_extra_and_attrs(tmp_path):
    path = tmp_path / "extra.h5"
    pred = np.ones((2, 3, 4), np.float32)
    write_cremi(path, _raw(), extra={"volumes/pred": pred}, attrs={"method": "bicubic"})
    arr, res = read_dataset(path, "volumes/pred", dtype=np.float32, ndim=3)
    np.testing.assert_array_equal(arr, pred)
    assert res == DEFAULT_RESOLUTION
    with h5py.File(path, "r") as f:
        assert f.attrs["method"] == "bicubic"


@pytest.mark.parametrize(
    "z, expected",
    [
        (None, slice(0, 6)),
        ((1, 4), slice(1, 4)),
        ((0, None), slice(0, 6)),
        ((None, 2), slice(0, 2)),
        ((-2, None), slice(4, 6)),
        ((-3, -1), slice(3, 5)),
        ((5, 6), slice(5, 6)),
    ],
)
def test_z_ranges(tmp_path, z, expected):
    path = tmp_path / "vol.h5"
    write_cremi(path, _raw(), _labels())
    vol = read_cremi(path, z=z, need_labels=True)
    np.testing.assert_array_equal(vol.raw, _raw()[expected])
    np.testing.assert_array_equal(vol.labels, _labels()[expected])


def test_z_negative_start_is_last_sections(tmp_path):
    path = tmp_path / "vol.h5"
    write_cremi(path, _raw(), _labels())
    vol = read_cremi(path, z=(-2, None))
    assert vol.raw.shape == (2,) + SHAPE[1:]
    np.testing.assert_array_equal(vol.raw, _raw()[-2:])


@pytest.mark.parametrize("z", [(0, 7), (4, 2), (3, 3), (-7, None), (6, None), (0, 0), (2, -5)])
def test_z_range_that_does_not_fit(tmp_path, z):
    path = tmp_path / "vol.h5"
    write_cremi(path, _raw(), _labels())
    with pytest.raises(EmsrError) as excinfo:
        read_cremi(path, z=z)
    _one_line_error(excinfo, path, RAW_KEY, "z range", "6 sections")


# ---------------------------------------------------------------------------------------------
# one-line input errors


def test_missing_file(tmp_path):
    path = tmp_path / "nope.h5"
    with pytest.raises(EmsrError) as excinfo:
        read_cremi(path)
    _one_line_error(excinfo, path, "not found")


def test_not_hdf5(tmp_path):
    path = tmp_path / "text.h5"
    path.write_bytes(b"this is not an HDF5 file\nsecond line\n")
    with pytest.raises(EmsrError) as excinfo:
        read_cremi(path)
    _one_line_error(excinfo, path, "not an HDF5 file")


def test_missing_raw_key(tmp_path):
    path = _write_h5(tmp_path / "f.h5", {"volumes/other": _raw()}, _res_attrs("volumes/other"))
    with pytest.raises(EmsrError) as excinfo:
        read_cremi(path)
    _one_line_error(excinfo, path, RAW_KEY, "missing")


def test_custom_raw_key_missing(tmp_path):
    path = tmp_path / "f.h5"
    write_cremi(path, _raw())
    with pytest.raises(EmsrError) as excinfo:
        read_cremi(path, raw_key="volumes/em")
    _one_line_error(excinfo, path, "volumes/em", "missing")


def test_raw_key_is_a_group(tmp_path):
    path = _write_h5(tmp_path / "f.h5", {"volumes/raw/data": _raw()})
    with pytest.raises(EmsrError) as excinfo:
        read_cremi(path)
    _one_line_error(excinfo, path, RAW_KEY, "missing")


def test_missing_labels_key(tmp_path):
    path = tmp_path / "f.h5"
    write_cremi(path, _raw())
    with pytest.raises(EmsrError) as excinfo:
        read_cremi(path, need_labels=True)
    _one_line_error(excinfo, path, LABELS_KEY, "missing")
    vol = read_cremi(path, need_labels=False)
    assert vol.labels is None
    assert read_cremi(path, labels_key=None).labels is None


def test_labels_key_none_skips_labels(tmp_path):
    path = tmp_path / "f.h5"
    write_cremi(path, _raw(), _labels())
    assert read_cremi(path, labels_key=None).labels is None


@pytest.mark.parametrize("dtype", [np.float32, np.uint16, np.int8])
def test_wrong_raw_dtype(tmp_path, dtype):
    path = _write_h5(tmp_path / "f.h5", {RAW_KEY: _raw().astype(dtype)}, _res_attrs(RAW_KEY))
    with pytest.raises(EmsrError) as excinfo:
        read_cremi(path)
    _one_line_error(excinfo, path, RAW_KEY, "uint8", np.dtype(dtype).name)


@pytest.mark.parametrize("shape", [(10, 12), (2, 3, 10, 12)])
def test_wrong_raw_rank(tmp_path, shape):
    path = _write_h5(tmp_path / "f.h5", {RAW_KEY: np.zeros(shape, np.uint8)}, _res_attrs(RAW_KEY))
    with pytest.raises(EmsrError) as excinfo:
        read_cremi(path)
    _one_line_error(excinfo, path, RAW_KEY, "3D", str(shape))


def test_wrong_labels_rank(tmp_path):
    path = _write_h5(
        tmp_path / "f.h5",
        {RAW_KEY: _raw(), LABELS_KEY: np.zeros(SHAPE[1:], np.uint64)},
        _res_attrs(RAW_KEY, LABELS_KEY),
    )
    with pytest.raises(EmsrError) as excinfo:
        read_cremi(path)
    _one_line_error(excinfo, path, LABELS_KEY, "3D")


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.bool_])
def test_labels_of_non_integer_dtype(tmp_path, dtype):
    path = _write_h5(
        tmp_path / "f.h5",
        {RAW_KEY: _raw(), LABELS_KEY: _labels().astype(dtype)},
        _res_attrs(RAW_KEY, LABELS_KEY),
    )
    with pytest.raises(EmsrError) as excinfo:
        read_cremi(path)
    # says what is accepted, signed included
    _one_line_error(excinfo, path, LABELS_KEY, np.dtype(dtype).name, "integer dtype", "signed with ids >= 0")


@pytest.mark.parametrize("dtype", [np.uint32, np.int64, np.uint16, np.int32, np.int16, np.uint8, np.int8])
def test_other_integer_labels_become_uint64(tmp_path, dtype):
    labels = (np.arange(np.prod(SHAPE)) % 100).astype(dtype).reshape(SHAPE)
    path = _write_h5(tmp_path / "f.h5", {RAW_KEY: _raw(), LABELS_KEY: labels}, _res_attrs(RAW_KEY, LABELS_KEY))
    vol = read_cremi(path, need_labels=True)
    assert vol.labels.dtype == np.uint64
    np.testing.assert_array_equal(vol.labels, (np.arange(np.prod(SHAPE)) % 100).reshape(SHAPE))


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_negative_label_ids_are_an_error(tmp_path, dtype):
    labels = np.ones(SHAPE, dtype)
    labels[3, 2, 1] = -5  # would wrap to 2**64 - 5 as uint64
    path = _write_h5(tmp_path / "f.h5", {RAW_KEY: _raw(), LABELS_KEY: labels}, _res_attrs(RAW_KEY, LABELS_KEY))
    with pytest.raises(EmsrError) as excinfo:
        read_cremi(path, need_labels=True)
    _one_line_error(excinfo, path, LABELS_KEY, ">= 0", "-5")
    assert read_cremi(path, z=(0, 3), need_labels=True).labels.max() == 1  # only the sections read are checked


def test_shape_mismatch_without_offset(tmp_path):
    path = _write_h5(
        tmp_path / "f.h5",
        {RAW_KEY: _raw(), LABELS_KEY: _labels((6, 8, 12))},
        _res_attrs(RAW_KEY, LABELS_KEY),
    )
    with pytest.raises(EmsrError) as excinfo:
        read_cremi(path)
    msg = _one_line_error(excinfo, path, LABELS_KEY, "offset")
    assert "(6, 8, 12)" in msg and str(SHAPE) in msg


def test_missing_resolution_is_an_error(tmp_path):
    path = _write_h5(tmp_path / "f.h5", {RAW_KEY: _raw()})
    with pytest.raises(EmsrError) as excinfo:
        read_cremi(path)
    _one_line_error(excinfo, path, RAW_KEY, "no 'resolution' attribute", "data.resolution in the config")


def test_missing_resolution_taken_from_the_config(tmp_path):
    path = _write_h5(tmp_path / "f.h5", {RAW_KEY: _raw()})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_cremi(path, resolution=[30, 5, 5]).resolution == (30.0, 5.0, 5.0)


@pytest.mark.parametrize("res", [(30, 5), (30, 0, 5)])
def test_bad_configured_resolution(tmp_path, res):
    path = _write_h5(tmp_path / "f.h5", {RAW_KEY: _raw()})
    with pytest.raises(EmsrError) as excinfo:
        read_cremi(path, resolution=res)
    _one_line_error(excinfo, "data.resolution", "3 positive numbers")


def test_configured_resolution_must_agree_with_the_attribute(tmp_path):
    path = _write_h5(tmp_path / "f.h5", {RAW_KEY: _raw()}, _res_attrs(RAW_KEY, res=(40, 4, 4)))
    assert read_cremi(path, resolution=(40, 4, 4)).resolution == (40.0, 4.0, 4.0)
    with pytest.raises(EmsrError) as excinfo:
        read_cremi(path, resolution=(30, 5, 5))
    _one_line_error(excinfo, path, RAW_KEY, "(40.0, 4.0, 4.0)", "data.resolution", "(30, 5, 5)")


def test_degrade_file_uses_the_configured_resolution(tmp_path):
    from emsrbench.degrade import Degradation, degrade_file

    src = _write_h5(tmp_path / "src.h5", {RAW_KEY: _raw((2, 16, 16)), LABELS_KEY: np.ones((2, 16, 16), np.int32)})
    out = tmp_path / "x8.h5"
    with pytest.raises(EmsrError) as excinfo:
        degrade_file(src, out, 8, Degradation.from_config({}))
    _one_line_error(excinfo, src, RAW_KEY, "no 'resolution' attribute")
    assert not out.exists()
    degrade_file(src, out, 8, Degradation.from_config({}), resolution=(30, 5, 5))
    assert read_dataset(out, RAW_KEY)[1] == (30.0, 5.0, 5.0)
    assert read_dataset(out, "volumes/lr")[1] == (30.0, 40.0, 40.0)
    assert read_dataset(out, LABELS_KEY, dtype=np.uint64)[1] == (30.0, 5.0, 5.0)


@pytest.mark.parametrize("res", [(4.0, 4.0), (40.0, 4.0, 4.0, 1.0), (40.0, 0.0, 4.0), (40.0, -4.0, 4.0)])
def test_bad_resolution_attribute(tmp_path, res):
    path = _write_h5(tmp_path / "f.h5", {RAW_KEY: _raw()}, _res_attrs(RAW_KEY, res=res))
    with pytest.raises(EmsrError) as excinfo:
        read_cremi(path)
    _one_line_error(excinfo, path, RAW_KEY, "resolution")


def test_non_numeric_resolution_attribute(tmp_path):
    path = _write_h5(tmp_path / "f.h5", {RAW_KEY: _raw()}, {RAW_KEY: {"resolution": "abc"}})
    with pytest.raises(EmsrError) as excinfo:
        read_cremi(path)
    _one_line_error(excinfo, path, RAW_KEY, "resolution", "abc")


def test_resolution_is_read_from_attribute(tmp_path):
    path = _write_h5(tmp_path / "f.h5", {RAW_KEY: _raw()}, _res_attrs(RAW_KEY, res=(30, 6, 6)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_cremi(path).resolution == (30.0, 6.0, 6.0)


def test_laterally_smaller_than_min_yx(tmp_path):
    path = tmp_path / "small.h5"
    write_cremi(path, _raw((4, 10, 12)))
    assert read_cremi(path, min_yx=10).raw.shape == (4, 10, 12)
    with pytest.raises(EmsrError) as excinfo:
        read_cremi(path, min_yx=16)
    _one_line_error(excinfo, path, RAW_KEY, "10x12", "16")


# ---------------------------------------------------------------------------------------------
# CREMI padded files


def _padded_file(tmp_path, offset_nm, lab_shape=(4, 6, 7), pad=(2, 3, 5), raw_offset=None) -> tuple[Path, np.ndarray]:
    res = np.asarray((40.0, 4.0, 4.0))
    raw_shape = tuple(s + 2 * p for s, p in zip(lab_shape, pad))
    raw = (np.arange(np.prod(raw_shape)) % 256).astype(np.uint8).reshape(raw_shape)
    labels = np.arange(1, np.prod(lab_shape) + 1, dtype=np.uint64).reshape(lab_shape)
    path = tmp_path / "padded.h5"
    with h5py.File(path, "w") as f:
        r = f.create_dataset(RAW_KEY, data=raw)
        r.attrs["resolution"] = res
        if raw_offset is not None:
            r.attrs["offset"] = np.asarray(raw_offset, dtype=float)
        lab = f.create_dataset(LABELS_KEY, data=labels)
        lab.attrs["resolution"] = res
        lab.attrs["offset"] = np.asarray(offset_nm, dtype=float)
    return path, raw


def test_padded_raw_is_cropped_to_labels(tmp_path):
    path, raw = _padded_file(tmp_path, offset_nm=(40 * 2, 4 * 3, 4 * 5))
    vol = read_cremi(path, need_labels=True)
    assert vol.raw.shape == vol.labels.shape == (4, 6, 7)
    np.testing.assert_array_equal(vol.raw, raw[2:6, 3:9, 5:12])
    np.testing.assert_array_equal(vol.labels, np.arange(1, 4 * 6 * 7 + 1).reshape(4, 6, 7))


def test_padded_z_range_is_relative_to_labels(tmp_path):
    path, raw = _padded_file(tmp_path, offset_nm=(40 * 2, 4 * 3, 4 * 5))
    vol = read_cremi(path, z=(-2, None), need_labels=True)
    np.testing.assert_array_equal(vol.raw, raw[4:6, 3:9, 5:12])
    np.testing.assert_array_equal(vol.labels, np.arange(1, 4 * 6 * 7 + 1).reshape(4, 6, 7)[2:4])
    with pytest.raises(EmsrError) as excinfo:
        read_cremi(path, z=(0, 5))  # 5 sections do not fit the 4 labelled ones
    _one_line_error(excinfo, path, "z range")


def test_padded_with_raw_offset(tmp_path):
    # both offsets are in world coordinates: the labels sit at (labels - raw) / resolution
    path, raw = _padded_file(tmp_path, offset_nm=(1000 + 40, 500 + 8, 200 + 4), raw_offset=(1000, 500, 200))
    vol = read_cremi(path)
    np.testing.assert_array_equal(vol.raw, raw[1:5, 2:8, 1:8])


def test_padded_min_yx_uses_labelled_region(tmp_path):
    path, _ = _padded_file(tmp_path, offset_nm=(80, 12, 20))
    with pytest.raises(EmsrError) as excinfo:
        read_cremi(path, min_yx=8)  # raw is 12x17 but the labelled region only 6x7
    _one_line_error(excinfo, path, "6x7")


@pytest.mark.parametrize(
    "offset_nm",
    [
        (40 * 5, 4 * 3, 4 * 5),  # z: 5 + 4 > 8
        (40 * 2, 4 * 7, 4 * 5),  # y: 7 + 6 > 12
        (40 * 2, 4 * 3, 4 * 11),  # x: 11 + 7 > 17
        (-40, 0, 0),  # before the raw
    ],
)
def test_padded_offset_outside_raw(tmp_path, offset_nm):
    path, _ = _padded_file(tmp_path, offset_nm=offset_nm)
    with pytest.raises(EmsrError) as excinfo:
        read_cremi(path)
    _one_line_error(excinfo, path, LABELS_KEY, "offset", "outside")


@pytest.mark.parametrize("offset_nm", [(80.0, 12.0), (80.0, 12.0, 20.0, 0.0), (80.0, np.nan, 20.0)])
def test_padded_malformed_offset(tmp_path, offset_nm):
    path, _ = _padded_file(tmp_path, offset_nm=offset_nm)
    with pytest.raises(EmsrError) as excinfo:
        read_cremi(path)
    _one_line_error(excinfo, path, LABELS_KEY, "'offset' attribute must be 3 numbers")


def test_padded_malformed_raw_offset(tmp_path):
    path, _ = _padded_file(tmp_path, offset_nm=(80, 12, 20), raw_offset=(0, 0))
    with pytest.raises(EmsrError) as excinfo:
        read_cremi(path)
    _one_line_error(excinfo, path, RAW_KEY, "'offset' attribute must be 3 numbers")


# ---------------------------------------------------------------------------------------------
# atomic_path


def test_atomic_path_success(tmp_path):
    final = tmp_path / "sub" / "dir" / "out.bin"
    with atomic_path(final) as tmp:
        assert tmp != final and tmp.parent == final.parent
        tmp.write_bytes(b"data")
        assert not final.exists()
    assert final.read_bytes() == b"data"
    assert os.listdir(final.parent) == ["out.bin"]


def test_atomic_path_exception_leaves_nothing(tmp_path):
    final = tmp_path / "out.bin"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(final) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")
    assert not final.exists()
    assert os.listdir(tmp_path) == []


def test_atomic_path_exception_keeps_previous_file(tmp_path):
    final = tmp_path / "out.bin"
    final.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_bytes(b"new")
            raise RuntimeError("boom")
    assert final.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_atomic_path_exception_before_writing(tmp_path):
    final = tmp_path / "out.bin"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(final):
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_write_cremi_failure_leaves_no_file(tmp_path):
    path = tmp_path / "bad.h5"

    class Unwritable:
        ndim, shape, size = 3, (1, 1, 1), 1

    with pytest.raises(Exception):
        write_cremi(path, _raw(), extra={"volumes/bad": Unwritable()})
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# read_dataset


def test_read_dataset(tmp_path):
    path = tmp_path / "f.h5"
    write_cremi(path, _raw(), _labels(), resolution=(30, 6, 6))
    arr, res = read_dataset(path, LABELS_KEY, dtype=np.uint64, ndim=3)
    np.testing.assert_array_equal(arr, _labels())
    assert res == (30.0, 6.0, 6.0)
    arr, _ = read_dataset(path, RAW_KEY)
    assert arr.dtype == np.uint8


def test_read_dataset_wrong_dtype(tmp_path):
    path = tmp_path / "f.h5"
    write_cremi(path, _raw())
    with pytest.raises(EmsrError) as excinfo:
        read_dataset(path, RAW_KEY, dtype=np.float32)
    _one_line_error(excinfo, path, RAW_KEY, "float32", "uint8")


def test_read_dataset_wrong_ndim(tmp_path):
    path = tmp_path / "f.h5"
    write_cremi(path, _raw())
    with pytest.raises(EmsrError) as excinfo:
        read_dataset(path, RAW_KEY, ndim=2)
    _one_line_error(excinfo, path, RAW_KEY, "2 dimensions", str(SHAPE))


def test_read_dataset_missing_key_and_file(tmp_path):
    path = tmp_path / "f.h5"
    write_cremi(path, _raw())
    with pytest.raises(EmsrError) as excinfo:
        read_dataset(path, "volumes/nope")
    _one_line_error(excinfo, path, "volumes/nope", "missing")
    with pytest.raises(EmsrError) as excinfo:
        read_dataset(tmp_path / "absent.h5", RAW_KEY)
    _one_line_error(excinfo, tmp_path / "absent.h5", "not found")


def test_read_dataset_missing_resolution_is_an_error(tmp_path):
    path = _write_h5(tmp_path / "f.h5", {"x": np.zeros((2, 2), np.float32)})
    with pytest.raises(EmsrError) as excinfo:
        read_dataset(path, "x", dtype=np.float32, ndim=2)
    _one_line_error(excinfo, path, "x", "no 'resolution' attribute")


# ---------------------------------------------------------------------------------------------
# zarr


def _zarr():
    try:
        import zarr
    except ImportError:
        pytest.skip("zarr is not installed (optional dependency: pip install 'emsrbench[zarr]')")
    return zarr


def _write_zarr(path: Path, datasets: dict, resolution=(40.0, 4.0, 4.0)) -> Path:
    zarr = _zarr()
    root = zarr.open_group(str(path), mode="w")
    for key, arr in datasets.items():
        if hasattr(root, "create_array"):  # zarr 3
            ds = root.create_array(key, shape=arr.shape, dtype=arr.dtype)
        else:  # zarr 2
            ds = root.create_dataset(key, shape=arr.shape, dtype=arr.dtype)
        ds[...] = arr
        if resolution is not None:
            ds.attrs["resolution"] = [float(r) for r in resolution]
    return path


def test_zarr_round_trip(tmp_path):
    path = _write_zarr(tmp_path / "vol.zarr", {RAW_KEY: _raw(), LABELS_KEY: _labels()}, resolution=(50, 5, 5))
    vol = read_cremi(path, need_labels=True)
    np.testing.assert_array_equal(vol.raw, _raw())
    np.testing.assert_array_equal(vol.labels, _labels())
    assert vol.labels.dtype == np.uint64
    assert vol.resolution == (50.0, 5.0, 5.0)
    vol = read_cremi(path, z=(-2, None))
    np.testing.assert_array_equal(vol.raw, _raw()[-2:])
    arr, res = read_dataset(path, LABELS_KEY, dtype=np.uint64, ndim=3)
    np.testing.assert_array_equal(arr, _labels())


def test_zarr_errors(tmp_path):
    path = _write_zarr(tmp_path / "vol.zarr", {RAW_KEY: _raw().astype(np.uint16)})
    with pytest.raises(EmsrError) as excinfo:
        read_cremi(path)
    _one_line_error(excinfo, path, RAW_KEY, "uint8")
    path = _write_zarr(tmp_path / "raw_only.zarr", {RAW_KEY: _raw()})
    assert read_cremi(path).labels is None
    with pytest.raises(EmsrError) as excinfo:
        read_cremi(path, need_labels=True)
    _one_line_error(excinfo, path, LABELS_KEY, "missing")
