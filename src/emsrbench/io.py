"""CREMI-format volume I/O with input checks that fail in one line naming the file and key.

The CREMI layout: an HDF5 file with ``volumes/raw`` (uint8, z,y,x) and
``volumes/labels/neuron_ids`` (uint64), each dataset carrying a ``resolution`` attribute in nm
(z, y, x).  CREMI's *padded* files have a raw volume larger than the labels, whose position is
the labels' ``offset`` attribute (nm); reading crops the raw to the labelled region.
Zarr stores with the same keys are read the same way when ``zarr`` is installed.

Nothing is assumed: a volume without a ``resolution`` attribute is read only when the caller
gives the resolution (the config's ``data.resolution``), because the resolution sets the
border mask and the hallucination tolerance in pixels.  Labels may have any integer dtype;
signed ones must hold no negative id.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from .errors import EmsrError

RAW_KEY = "volumes/raw"
LABELS_KEY = "volumes/labels/neuron_ids"
LR_KEY = "volumes/lr"  # degraded files keep the LR input next to the (cropped) HR raw
DEFAULT_RESOLUTION = (40.0, 4.0, 4.0)  # what write_cremi writes when not told; never assumed on reading
LABELS_ACCEPTED = "an integer dtype (unsigned, or signed with ids >= 0)"
RESOLUTION_ACCEPTED = "3 positive numbers (z,y,x nm)"


@dataclass
class Volume:
    """A z-slab of an EM volume: raw (uint8, z,y,x), optional labels, resolution in nm."""

    raw: np.ndarray
    labels: np.ndarray | None
    resolution: tuple[float, float, float]
    path: str = ""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path that replaces ``path`` only if the block succeeds.

    Every output of the harness goes through here so that a crash, a kill or a bad input
    never leaves a partial file that Snakemake or a later reader would mistake for a result.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _open_store(path: Path):
    if not path.exists():
        raise EmsrError(f"{path}: file not found")
    if path.is_dir() or path.suffix == ".zarr":
        try:
            import zarr
        except ImportError as err:
            raise EmsrError(f"{path}: reading zarr needs the 'zarr' package (pip install zarr)") from err
        try:
            return zarr.open(str(path), mode="r")
        except Exception as err:  # zarr raises several types for a non-store
            raise EmsrError(f"{path}: not a readable zarr store ({err})") from err
    if not h5py.is_hdf5(path):
        raise EmsrError(f"{path}: not an HDF5 file")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise EmsrError(f"{path}: cannot open HDF5 file ({err})") from err


def _dataset(store, path: Path, key: str):
    try:
        ds = store[key]
    except KeyError:
        ds = None
    if ds is None or not hasattr(ds, "shape"):
        raise EmsrError(f"{path}:{key}: missing dataset")
    return ds


def as_resolution(value, where: str) -> tuple[float, float, float]:
    """``value`` as (z, y, x) nm; ``where`` names its origin in the error."""
    try:
        res = tuple(float(r) for r in np.asarray(value, dtype=float).ravel())
    except (TypeError, ValueError):
        raise EmsrError(f"{where} must be {RESOLUTION_ACCEPTED}, got {value!r}") from None
    if len(res) != 3 or not all(np.isfinite(r) and r > 0 for r in res):
        raise EmsrError(f"{where} must be {RESOLUTION_ACCEPTED}, got {res}")
    return res


def _resolution(
    ds, path: Path, key: str, configured=None, missing_hint: str = "set it in the file"
) -> tuple[float, float, float]:
    """The dataset's ``resolution`` attribute; ``configured`` (the config's data.resolution)
    stands in only where the attribute is missing and must agree with it where it is not."""
    attr = ds.attrs.get("resolution")
    if attr is None:
        if configured is None:
            raise EmsrError(f"{path}:{key}: no 'resolution' attribute; {missing_hint}")
        return as_resolution(configured, "config: data.resolution")
    res = as_resolution(attr, f"{path}:{key}: 'resolution' attribute")
    if configured is not None and not np.allclose(res, as_resolution(configured, "config: data.resolution")):
        raise EmsrError(
            f"{path}:{key}: 'resolution' attribute {res} nm differs from data.resolution "
            f"{tuple(configured)} in the config; remove one or make them agree"
        )
    return res


def _check_label_dtype(lab_ds, path: Path, key: str) -> None:
    if np.dtype(lab_ds.dtype).kind not in "ui":
        raise EmsrError(f"{path}:{key}: labels must have {LABELS_ACCEPTED}, got {lab_ds.dtype}")


def _labels_as_uint64(labels: np.ndarray, path: Path, key: str) -> np.ndarray:
    """Signed labels are accepted as long as no id is negative (0 is unlabelled); a negative id
    would wrap to a huge uint64 id and silently become an object of its own."""
    if labels.dtype.kind == "i" and labels.size and labels.min() < 0:
        raise EmsrError(f"{path}:{key}: labels must be >= 0 (0 = unlabelled), found id {int(labels.min())}")
    return labels.astype(np.uint64, copy=False)


def read_cremi(
    path: str | os.PathLike,
    z: tuple[int, int] | None = None,
    raw_key: str = RAW_KEY,
    labels_key: str | None = LABELS_KEY,
    need_labels: bool = False,
    min_yx: int = 1,
    resolution=None,
) -> Volume:
    """Read sections ``z[0]:z[1]`` (all when None; negative indices count from the end).

    ``labels_key=None`` skips labels; a missing labels dataset is an error only when
    ``need_labels``.  ``min_yx`` is the smallest lateral size accepted (the largest scale
    factor, so that at least one LR pixel exists).  ``resolution`` (z, y, x nm; the config's
    ``data.resolution``) is used when the raw dataset has no ``resolution`` attribute.
    """
    path = Path(path)
    store = _open_store(path)
    try:
        raw_ds = _dataset(store, path, raw_key)
        if len(raw_ds.shape) != 3:
            raise EmsrError(f"{path}:{raw_key}: expected a 3D (z,y,x) volume, got shape {tuple(raw_ds.shape)}")
        if np.dtype(raw_ds.dtype) != np.uint8:
            raise EmsrError(f"{path}:{raw_key}: expected dtype uint8, got {raw_ds.dtype}")
        resolution = _resolution(
            raw_ds,
            path,
            raw_key,
            configured=resolution,
            missing_hint="set it in the file or data.resolution in the config",
        )

        lab_ds = None
        if labels_key is not None:
            try:
                lab_ds = _dataset(store, path, labels_key)
            except EmsrError:
                if need_labels:
                    raise
        raw_origin = (0, 0, 0)
        shape = tuple(raw_ds.shape)
        if lab_ds is not None:
            if len(lab_ds.shape) != 3:
                raise EmsrError(f"{path}:{labels_key}: expected a 3D (z,y,x) volume, got shape {tuple(lab_ds.shape)}")
            _check_label_dtype(lab_ds, path, labels_key)
            if tuple(lab_ds.shape) != shape:
                raw_origin = _padded_origin(raw_ds, lab_ds, resolution, path, raw_key, labels_key)
                shape = tuple(lab_ds.shape)

        z0, z1 = (0, shape[0]) if z is None else _zrange(z, shape[0], path, raw_key)
        if min(shape[1:]) < min_yx:
            raise EmsrError(
                f"{path}:{raw_key}: lateral size {shape[1]}x{shape[2]} "
                f"is smaller than the largest scale factor {min_yx}"
            )
        oz, oy, ox = raw_origin
        raw = np.asarray(raw_ds[oz + z0 : oz + z1, oy : oy + shape[1], ox : ox + shape[2]])
        labels = None
        if lab_ds is not None:
            labels = _labels_as_uint64(np.asarray(lab_ds[z0:z1]), path, labels_key)
        return Volume(raw=raw, labels=labels, resolution=resolution, path=str(path))
    finally:
        if hasattr(store, "close"):
            store.close()


def _zrange(z, depth: int, path: Path, key: str) -> tuple[int, int]:
    """Python slice semantics (negative counts from the end, None is the end) but strict:
    a range that does not fit is an error instead of being silently clamped."""
    start, stop = z
    z0 = int(start or 0)
    z1 = depth if stop is None else int(stop)
    z0, z1 = (z0 + depth if z0 < 0 else z0), (z1 + depth if z1 < 0 else z1)
    if not (0 <= z0 < z1 <= depth):
        raise EmsrError(f"{path}:{key}: z range {tuple(z)} does not fit a volume of {depth} sections")
    return z0, z1


def _padded_origin(raw_ds, lab_ds, resolution, path, raw_key, labels_key) -> tuple[int, int, int]:
    """Where the labels sit inside a padded raw volume (CREMI *_padded_* files)."""
    offset = lab_ds.attrs.get("offset")
    if offset is None:
        raise EmsrError(
            f"{path}:{labels_key}: shape {tuple(lab_ds.shape)} differs from {raw_key} {tuple(raw_ds.shape)} "
            "and there is no 'offset' attribute to place it"
        )
    offsets = []
    for key, attr in ((labels_key, offset), (raw_key, raw_ds.attrs.get("offset", (0, 0, 0)))):
        try:
            value = np.asarray(attr, dtype=float).ravel()
        except (TypeError, ValueError):
            value = None
        if value is None or value.shape != (3,) or not np.isfinite(value).all():
            raise EmsrError(
                f"{path}:{key}: 'offset' attribute must be 3 numbers (z,y,x nm), got {np.asarray(attr).tolist()}"
            )
        offsets.append(value)
    origin = np.round((offsets[0] - offsets[1]) / np.asarray(resolution)).astype(int)
    end = origin + np.asarray(lab_ds.shape)
    if (origin < 0).any() or (end > np.asarray(raw_ds.shape)).any():
        raise EmsrError(
            f"{path}:{labels_key}: offset {tuple(offset)} nm places the labels outside {raw_key} {tuple(raw_ds.shape)}"
        )
    return tuple(int(v) for v in origin)


def write_cremi(
    path: str | os.PathLike,
    raw: np.ndarray,
    labels: np.ndarray | None = None,
    resolution=DEFAULT_RESOLUTION,
    extra: dict[str, np.ndarray] | None = None,
    attrs: dict | None = None,
) -> None:
    """Write a CREMI-layout HDF5 file atomically; ``extra`` maps more keys to arrays."""
    datasets = {RAW_KEY: raw}
    if labels is not None:
        datasets[LABELS_KEY] = labels
    datasets.update(extra or {})
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for key, arr in datasets.items():
            chunks = (1, min(arr.shape[1], 256), min(arr.shape[2], 256)) if arr.ndim == 3 and arr.size else None
            ds = f.create_dataset(key, data=arr, chunks=chunks, compression="gzip", compression_opts=1)
            ds.attrs["resolution"] = np.asarray(resolution, dtype=float)
        for k, v in (attrs or {}).items():
            f.attrs[k] = v


def read_dataset(path: str | os.PathLike, key: str, dtype=None, ndim: int | None = None) -> tuple[np.ndarray, tuple]:
    """Read one whole dataset with checks; returns (array, resolution).

    For files emsrbench wrote (degraded volumes, SR outputs, segmentations): each carries its
    ``resolution`` attribute, so a missing one is an error, not a default."""
    path = Path(path)
    store = _open_store(path)
    try:
        ds = _dataset(store, path, key)
        if ndim is not None and len(ds.shape) != ndim:
            raise EmsrError(f"{path}:{key}: expected {ndim} dimensions, got shape {tuple(ds.shape)}")
        if dtype is not None and np.dtype(ds.dtype) != np.dtype(dtype):
            raise EmsrError(f"{path}:{key}: expected dtype {np.dtype(dtype)}, got {ds.dtype}")
        return np.asarray(ds[...]), _resolution(
            ds, path, key, missing_hint="set it in the file (emsrbench writes it on every volume)"
        )
    finally:
        if hasattr(store, "close"):
            store.close()


def read_stats(path: str | os.PathLike, writer: str) -> dict:
    """The JSON ``stats`` attribute an emsrbench step (``writer``: "inference",
    "segmentation") stores on its HDF5 output."""
    with h5py.File(path, "r") as f:
        raw = f.attrs.get("stats")
    if raw is None:
        raise EmsrError(f"{path}: no 'stats' attribute (not written by emsrbench {writer})")
    return json.loads(raw)
