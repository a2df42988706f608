"""The segmentation stage of the workflow: segment a volume with a trained network, score it.

File contract (read by the leaderboard and the HTML report):

* ``results/segment/<net>/<method>/x<scale>.h5``: ``volumes/affinities`` (float32, 3,z,y,x),
  ``volumes/segmentation`` (uint64, z,y,x; the first threshold of ``thresholds``), one
  ``volumes/segmentations/<threshold>`` per threshold, and a JSON ``stats`` attribute
  (network, preset, thresholds, scoring, device, seconds, source file, flags);
* ``results/segment/<net>/<method>/x<scale>.csv``: tidy rows (``evaluate.COLUMNS``) with
  metrics ``voi_split``, ``voi_merge``, ``arand``, ``cremi_score`` at the first threshold;
* ``results/segment/<net>/<method>/x<scale>-thresholds.csv``: every threshold's scores;
* ``results/segment/<net>/<method>/x<scale>-hallucination.csv``: tidy rows of the hallucination
  scores (:data:`HALLUCINATION_METRICS`, :func:`score_hallucination`) of ``volumes/segmentation``.
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
# boundary precision / recall (fractions of boundary length), invented / erased boundary length
# per labelled section area (um per um^2), orphan fraction (of SR segments); see hallucination.py
HALLUCINATION_METRICS = ("boundary_precision", "boundary_recall", "boundary_f1", "invented_um_per_um2",
                         "erased_um_per_um2", "orphan_fraction")
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


def score_intervals(gt, seg, resolution, border_nm, settings, threads, where) -> tuple[dict, dict]:
    """({metric: Replicates}, {metric: (low, high, note)}) of the whole-volume scores.

    The test volume is cut into z-slabs of ``settings.sections_per_slab`` sections; a resample
    draws as many slabs with replacement and its scores are those of the volume made of the drawn
    slabs (contingency tables summed, :func:`emsrbench.stats.segmentation_replicates`), so the
    estimate is the reported score.  Fewer than 2 slabs with scored voxels: no interval, the
    reason in the note.
    """
    from ..evaluate import interval_note
    from ..stats import interval, segmentation_replicates, slab_tables

    if settings is None:
        return {}, {}
    tables = slab_tables(gt, seg, sections_per_slab=settings.sections_per_slab, resolution=resolution,
                         border_nm=border_nm, threads=threads, what=where)
    slabs = sum(t.scored().voxels > 0 for t in tables)
    if slabs < 2:
        why = f"no interval: {slabs} z-slab(s) with scored voxels, a bootstrap needs >= 2"
        return {}, {m: (float("nan"), float("nan"), why) for m in SCORE_METRICS}
    reps = segmentation_replicates(tables, resamples=settings.resamples, seed=settings.seed, what=where)
    reps = {m: reps[m] for m in SCORE_METRICS}
    ci = {}
    for m, r in reps.items():
        low, high = interval(r, settings.confidence, settings.method)
        ci[m] = (low, high, interval_note(settings, r.blocks, "z-slab", settings.sections_per_slab,
                                          " of the whole-volume score") if np.isfinite(low)
                 else "no interval: the score is undefined on some resamples")
    return reps, ci


def score_volume(seg_path: str | Path, gt_path: str | Path, *, net: str, method: str, display_name: str,
                 family: str, preset: str, scale: int, border_nm: float | None = None,
                 threads: int | None = None, intervals=None,
                 sidecar_path: str | Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(leaderboard rows at the first threshold, every threshold's scores) of a segmentation file
    against the labels of the HR test volume ``gt_path``.

    ``intervals`` (:class:`emsrbench.stats.BootstrapSettings`, None: none): intervals of the
    reported whole-volume scores from a bootstrap over z-slabs (see :func:`score_intervals`);
    their replicates go to ``sidecar_path`` (:mod:`emsrbench.stats.sidecar`)."""
    from ..evaluate import COLUMNS
    from ..stats import sidecar
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
            if not sweep:  # the reported threshold
                reps, ci = score_intervals(gt, ds, resolution, border_nm, intervals, threads, where)
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
    none = (float("nan"), float("nan"), "")
    rows = [{**base, "metric": m, "value": float(first[m]),
             "note": "; ".join(x for x in (notes[m], ci.get(m, none)[2], flags) if x),
             "ci_low": ci.get(m, none)[0], "ci_high": ci.get(m, none)[1], "variant": "", "tie": ""}
            for m in SCORE_METRICS]
    if sidecar_path is not None:
        sidecar.write(sidecar_path, reps, kind="segmentation", method=method, scale=int(scale), settings=intervals,
                      segmenter=net)
    return pd.DataFrame(rows, columns=COLUMNS), pd.DataFrame(sweep)


def _segmentation(path: str | Path, what: str, shape: tuple, resolution: tuple, gt_path) -> np.ndarray:
    """``volumes/segmentation`` of an emsrbench segmentation file, checked against the labels."""
    if not Path(path).exists():
        raise EmsrError(f"{path}: {what} does not exist (the segment rule writes it)")
    seg, res = read_dataset(path, SEG_KEY, ndim=3)
    if seg.dtype.kind not in "ui":
        raise EmsrError(f"{path}:{SEG_KEY}: expected integer labels, got {seg.dtype}")
    if seg.shape != shape:
        raise EmsrError(f"{path}:{SEG_KEY}: shape {seg.shape} differs from the labels {shape} of {gt_path}")
    if not np.allclose(res[1:], resolution[1:]):
        raise EmsrError(f"{path}:{SEG_KEY}: resolution {tuple(res)} nm differs from the labels' {tuple(resolution)} "
                        f"of {gt_path}")
    return seg


def score_hallucination(seg_path: str | Path, hr_seg_path: str | Path, gt_path: str | Path, *, net: str, method: str,
                        display_name: str, family: str, preset: str, scale: int, tolerance_nm: float,
                        iou: float = 0.5, hr_method: str = "hr") -> pd.DataFrame:
    """Tidy rows of the hallucination scores of the segmentation ``seg_path`` (the first
    threshold): boundary scores against the labels of the HR test volume ``gt_path``, orphan
    fraction against the same network's segmentation of the HR volume ``hr_seg_path``.

    Lengths are normalised by the labelled area (ground truth != 0, summed over sections) so
    that volumes of any size compare: ``invented_um_per_um2`` = invented boundary length in um
    per um^2 of labelled section area. ``hr_method``'s own row (the HR segmentation) has
    boundary scores (the upper bound) and no orphan fraction (NaN, said in the note)."""
    from ..evaluate import COLUMNS
    from .hallucination import boundary_scores, orphan_segments

    gt, resolution = read_dataset(gt_path, LABELS_KEY, ndim=3)
    seg = _segmentation(seg_path, f"the {net} segmentation of {method}", gt.shape, resolution, gt_path)
    stats = read_stats(seg_path, "segmentation")
    hr_seg = None
    if method != hr_method:
        hr_seg = _segmentation(hr_seg_path, f"the {net} segmentation of the HR volume (method '{hr_method}')",
                               gt.shape, resolution, gt_path)
    where = str(seg_path)
    b = boundary_scores(gt, seg, resolution, tolerance_nm, where=where)
    ry, rx = float(resolution[1]), float(resolution[2])
    area_um2 = float(np.count_nonzero(gt)) * ry * rx / 1e6
    tol = b["tolerance_nm"]
    threshold = stats["thresholds"][0] if stats.get("thresholds") else float("nan")
    common = f"tolerance {tol:g} nm; GT 0 not scored; waterz {stats.get('scoring', '?')} threshold {threshold:g}"

    def density(nm: float) -> float:
        return nm / 1e3 / area_um2 if area_um2 > 0 else float("nan")

    gt_density = density(b["reference_nm"])
    per_area = (f"per um^2 of labelled section area ({area_um2:.4g} um^2; GT boundary {gt_density:.4g} um/um^2, "
                f"{b['reference_nm']:.0f} nm)")
    rows = [
        ("boundary_precision", b["boundary_precision"],
         f"1 - invented/SR boundary length ({b['invented_nm']:.0f} of {b['candidate_nm']:.0f} nm invented); {common}"),
        ("boundary_recall", b["boundary_recall"],
         f"1 - erased/GT boundary length ({b['erased_nm']:.0f} of {b['reference_nm']:.0f} nm erased); {common}"),
        ("boundary_f1", b["boundary_f1"], f"harmonic mean of boundary precision and recall; {common}"),
        ("invented_um_per_um2", density(b["invented_nm"]),
         f"um of SR boundary with no GT boundary within tolerance ({b['invented_nm']:.0f} nm), {per_area}; {common}"),
        ("erased_um_per_um2", density(b["erased_nm"]),
         f"um of GT boundary with no SR boundary within tolerance ({b['erased_nm']:.0f} nm), {per_area}; {common}"),
    ]
    if area_um2 == 0:
        rows[3:] = [(m, v, f"missing: {gt_path} has no labelled (non-zero) ground truth") for m, v, _ in rows[3:]]
    if hr_seg is None:
        rows.append(("orphan_fraction", float("nan"),
                     "not applicable: the HR segmentation is the reference of the orphan fraction"))
    else:
        o = orphan_segments(hr_seg, seg, iou, where=where)
        rows.append(("orphan_fraction", o["orphan_fraction"],
                     f"{o['orphan_segments']} of {o['sr_segments']} segments have no segment of IoU >= {o['iou']:g} "
                     f"in the {net} segmentation of the HR volume"))
    flags = "; ".join(stats.get("flags") or [])
    base = {"method": method, "display_name": display_name, "family": family, "preset": preset, "scale": int(scale),
            "segmenter": net}
    out = [{**base, "metric": m, "value": float(v), "note": note + (f"; {flags}" if flags else "")}
           for m, v, note in rows]
    return pd.DataFrame(out, columns=COLUMNS)
