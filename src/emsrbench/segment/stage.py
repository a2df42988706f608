"""The segmentation stage of the workflow: segment a volume with a trained network, score it.

File contract (read by the leaderboard and the HTML report):

* ``results/segment/<net>/<method>/x<scale>.h5``: ``volumes/affinities`` (float32, 3,z,y,x),
  ``volumes/segmentation`` (uint64, z,y,x; the first threshold of ``thresholds``), one
  ``volumes/segmentations/<threshold>`` per threshold, and a JSON ``stats`` attribute
  (network, preset, thresholds, scoring, device, seconds, source file, flags);
* ``results/segment/<net>/<method>/x<scale>.csv``: tidy rows (``evaluate.COLUMNS``) with
  metrics ``voi_split``, ``voi_merge``, ``arand``, ``cremi_score`` at the first threshold;
* ``results/segment/<net>/<method>/x<scale>-thresholds.csv``: every threshold's scores.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from ..errors import EmsrError
from ..io import LABELS_KEY, RAW_KEY, atomic_path, read_dataset, read_stats
from ..settings import merge_layers

SEG_KEY = "volumes/segmentation"
AFF_KEY = "volumes/affinities"
SWEEP_GROUP = "volumes/segmentations"
SCORE_METRICS = ("voi_split", "voi_merge", "arand", "cremi_score")
HR_DISPLAY = "HR (upper bound)"


@dataclass
class SegmentInferSettings:
    """Blockwise inference (``segmentation.inference`` over the network preset's ``infer``)."""

    block: list | None = None  # output block (z, y, x); default: the training block
    stride: list | None = None  # default: the output block on the pooling grid (no overlap)
    pad: list | None = None  # reflect padding of the volume (z, y, x); default 0
    batch: int = 2  # blocks per forward pass (from 2 PyTorch uses its fast CPU 3D conv)
    device: str = "auto"


def infer_settings(preset_infer: dict, override: dict | None, net: str) -> SegmentInferSettings:
    s = merge_layers(SegmentInferSettings, [preset_infer, override or {}], f"segmentation {net} inference", "inference")
    if not isinstance(s.batch, int) or s.batch < 1:
        raise EmsrError(f"config: segmentation.inference.batch must be an integer >= 1, got {s.batch!r}")
    return s


def segment_volume(net: str, preset: str, model_file: str | Path, raw_path: str | Path, out_path: str | Path,
                   thresholds=(0.5,), scoring: str = "mean", inference: dict | None = None,
                   threads: int | None = None) -> dict:
    """Affinities of ``raw_path``'s ``volumes/raw`` with the network in ``model_file``, then
    fragments + waterz agglomeration at every threshold; writes ``out_path``. Returns the stats."""
    import torch

    from .. import device as devices
    from . import networks
    from .agglomerate import segment
    from .blockwise import BlockSpec, predict_affinities

    threads = devices.set_threads(threads)
    model, meta = networks.load(model_file, net, preset)
    pre = networks.preset(net, preset)
    st = infer_settings({k: v for k, v in pre["infer"].items()}, inference, net)
    block = st.block or meta.get("block") or pre["block"]
    in_shape, out_shape = networks.block_shapes(net, model, block)
    spec = BlockSpec.make(in_shape, out_shape, st.stride, st.pad or (0, 0, 0), factor=model.factor,
                          where=f"segmentation {net} inference")
    raw, resolution = read_dataset(raw_path, RAW_KEY, dtype=np.uint8, ndim=3)
    dev = devices.pick_device(st.device)
    t0 = time.perf_counter()
    with torch.no_grad():
        affs = predict_affinities(model, raw, spec, dev, batch=st.batch)
    infer_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    segs = segment(affs, list(thresholds), scoring=scoring, threads=threads)
    agglo_seconds = time.perf_counter() - t1
    stats = {
        "network": net, "preset": preset, "model_file": str(model_file), "source": str(raw_path),
        "thresholds": [float(t) for t in thresholds], "scoring": scoring, "device": devices.describe(dev),
        "threads": threads, "infer_seconds": infer_seconds, "agglomerate_seconds": agglo_seconds,
        "blocks": {"in": list(in_shape), "out": list(out_shape), "stride": list(spec.stride), "pad": list(spec.pad)},
        "parameters": int(meta["parameters"]), "flags": list(meta.get("flags") or []),
    }
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as f:
        plane = (1, min(raw.shape[1], 256), min(raw.shape[2], 256))
        ds = f.create_dataset(AFF_KEY, data=affs, chunks=(1,) + plane, compression="gzip", compression_opts=1)
        ds.attrs["resolution"] = np.asarray(resolution, dtype=float)
        for i, (t, seg) in enumerate(zip(thresholds, segs)):
            keys = [f"{SWEEP_GROUP}/{float(t)}"] + ([SEG_KEY] if i == 0 else [])
            for key in keys:
                ds = f.create_dataset(key, data=seg.astype(np.uint64, copy=False), chunks=plane, compression="gzip",
                                      compression_opts=1)
                ds.attrs["resolution"] = np.asarray(resolution, dtype=float)
                ds.attrs["threshold"] = float(t)
        f.attrs["stats"] = json.dumps(stats)
    print(f"segmentation {net}: {raw_path} -> {out_path}: inference {infer_seconds:.1f} s, "
          f"fragments + agglomeration {agglo_seconds:.1f} s on {stats['device']}", file=sys.stderr)
    return stats


def score_volume(seg_path: str | Path, gt_path: str | Path, *, net: str, method: str, display_name: str,
                 family: str, preset: str, scale: int, border_nm: float | None = None,
                 threads: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(leaderboard rows at the first threshold, every threshold's scores) of a segmentation file
    against the labels of the HR test volume ``gt_path``."""
    from ..evaluate import COLUMNS
    from .scores import segmentation_scores

    stats = read_stats(seg_path, "segmentation")
    gt, resolution = read_dataset(gt_path, LABELS_KEY, ndim=3)
    where = f"{seg_path}"
    sweep = []
    with h5py.File(seg_path, "r") as f:
        if SWEEP_GROUP not in f:
            raise EmsrError(f"{seg_path}:{SWEEP_GROUP}: missing (not written by emsrbench segmentation)")
        for t in stats["thresholds"]:
            key = f"{SWEEP_GROUP}/{float(t)}"
            if key not in f:
                raise EmsrError(f"{seg_path}:{key}: missing dataset")
            ds = f[key]
            if tuple(ds.shape) != gt.shape:
                raise EmsrError(f"{seg_path}:{key}: shape {tuple(ds.shape)} differs from the labels {gt.shape} of {gt_path}")
            sc = segmentation_scores(gt, ds, resolution=resolution, border_nm=border_nm, threads=threads, where=where)
            sweep.append({"threshold": float(t), **{k: sc[k] for k in ("voi_split", "voi_merge", "voi_sum", "arand",
                                                                        "cremi_score")}, "voxels": sc["voxels"]})
    first = sweep[0]
    mask = f"CREMI border mask {border_nm:g} nm" if border_nm is not None else "no border mask"
    common = (f"waterz {stats['scoring']} threshold {first['threshold']:g}; GT 0 ignored; {mask}; "
              f"{stats['device']}")
    notes = {"voi_split": "bits; " + common, "voi_merge": "bits; " + common, "arand": common,
             "cremi_score": "sqrt(VOI sum x ARAND); " + common}
    flags = "; ".join(stats.get("flags") or [])
    base = {"method": method, "display_name": display_name, "family": family, "preset": preset, "scale": int(scale),
            "segmenter": net}
    rows = [{**base, "metric": m, "value": float(first[m]), "note": notes[m] + (f"; {flags}" if flags else "")}
            for m in SCORE_METRICS]
    return pd.DataFrame(rows, columns=COLUMNS), pd.DataFrame(sweep)
