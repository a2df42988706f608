"""The segmentation stage of the workflow: segment a volume with a trained network, score it.

File contract (read by the leaderboard and the HTML report):

* ``results/segment/<net>/<method>/x<scale>.h5``: ``volumes/affinities`` (float32, 3,z,y,x),
  ``volumes/segmentation`` (uint64, z,y,x; the first threshold of ``thresholds``), one
  ``volumes/segmentations/<threshold>`` per threshold, and a JSON ``stats`` attribute
  (network, preset, thresholds, scoring, device, seconds, source file, flags);
* ``results/segment/<net>/<method>/x<scale>.csv``: tidy rows (``evaluate.COLUMNS``) with
  metrics ``voi_split``, ``voi_merge``, ``arand``, ``cremi_score``, ``segments`` (the
  segmentation's 3D segment count, :func:`count_segments`) at the first threshold and
  ``gt_objects`` (:func:`count_gt_objects`);
* ``results/segment/<net>/<method>/x<scale>-thresholds.csv``: every threshold's scores and
  segment count;
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
# Not a score (no interval, not ranked): set beside HR's, it shows a segmentation that merged
# the volume into a few segments, whose low VOI split would otherwise read as a merit.
SEGMENT_COUNT = "segments"
GT_OBJECTS = "gt_objects"  # the ground truth's objects as scored, beside every segment count
SECTION_VOXELS_PER_READ = 2**24  # count_segments reads about this many voxels at a time
# boundary precision / recall (fractions of boundary length), invented / erased boundary length
# per labelled section area (um per um^2), orphan fraction (of SR segments); see hallucination.py
HALLUCINATION_METRICS = (
    "boundary_precision",
    "boundary_recall",
    "boundary_f1",
    "invented_um_per_um2",
    "erased_um_per_um2",
    "orphan_fraction",
)
HR_DISPLAY = "HR (upper bound)"


@dataclass(frozen=True)
class RowIdentity:
    """Whose score a tidy segmentation row is: a method at a scale (with the names the
    leaderboard and report show), segmented by the network ``net``. One object for the score
    steps (:func:`score_volume`, :func:`score_hallucination`) so that both label their rows
    the same way; the workflow builds it in ``emsrbench.steps._segmentation_row``."""

    net: str
    method: str
    display_name: str
    family: str
    preset: str
    scale: int

    def columns(self) -> dict:
        """The identity columns of a tidy row (``evaluate.COLUMNS``); ``base`` of :func:`count_rows`."""
        return {
            "method": self.method,
            "display_name": self.display_name,
            "family": self.family,
            "preset": self.preset,
            "scale": int(self.scale),
            "segmenter": self.net,
        }


@dataclass
class SegmentInferSettings:
    """Blockwise inference (``segmentation.inference`` over the network preset's ``infer``)."""

    block: list | None = None  # output block (z, y, x); default: the training block
    # input block (z, y, x), the study's way of giving it (Superhuman 18x160x160, MALA
    # 53x268x268); the output block follows from the network. Instead of ``block``.
    input_block: list | None = None
    stride: list | None = None  # default: the output block on the pooling grid (no overlap)
    pad: list | None = None  # reflect padding of the volume (z, y, x); default 0
    batch: int = 2  # blocks per forward pass (from 2 PyTorch uses its fast CPU 3D conv)
    device: str = "auto"
    precision: str = "fp32"  # fp32 (no TF32) | bf16 | fp16 autocast; see emsrbench.device.precision_plan
    tiling: str = "grid"  # grid (ours) | study (the GPEMSR study's; the paper presets); see blockwise


# Settings of segmentation.inference that take one [z, y, x] for every network or a mapping
# {network: [z, y, x]} (a network left out keeps its preset's): the networks' blocks differ.
PER_NETWORK = ("block", "input_block", "stride", "pad")
# Two ways of giving the block: the one the user gives replaces the other from the preset.
BLOCK_KEYS = ("block", "input_block")


def network_inference(inference: dict | None, net: str) -> dict:
    """``segmentation.inference`` as it applies to ``net``: each per-network mapping of
    :data:`PER_NETWORK` replaced by ``net``'s value, or left out where it has none."""
    out = {}
    for key, value in (inference or {}).items():
        if key in PER_NETWORK and isinstance(value, dict):
            if net in value:
                out[key] = value[net]
        else:
            out[key] = value
    return out


def infer_settings(preset_infer: dict, override: dict | None, net: str) -> SegmentInferSettings:
    """The preset's ``infer`` layer under ``segmentation.inference`` (``override``) for ``net``."""
    mine = network_inference(override, net)
    given = [k for k in BLOCK_KEYS if mine.get(k) is not None]
    if len(given) > 1:
        raise EmsrError(
            f"config: segmentation.inference: both block (output) and input_block are set for {net}; give one"
        )
    if given:  # the user's block replaces the preset's, whichever way either is given
        preset_infer = {k: v for k, v in preset_infer.items() if k not in BLOCK_KEYS}
    s = merge_layers(SegmentInferSettings, [preset_infer, mine], f"segmentation {net} inference", "inference")
    if not isinstance(s.batch, int) or s.batch < 1:
        raise EmsrError(f"config: segmentation.inference.batch must be an integer >= 1, got {s.batch!r}")
    from ..device import check_precision  # here, not at the top: scoring jobs import this module without torch

    check_precision(s.precision, "config segmentation.inference")
    return s


def segment_volume(
    net: str,
    preset: str,
    model_file: str | Path,
    raw_path: str | Path,
    out_path: str | Path,
    thresholds=(0.5,),
    scoring: str = "mean",
    inference: dict | None = None,
    threads: int | None = None,
    planned=None,
) -> dict:
    """Affinities of ``raw_path``'s ``volumes/raw`` with the network in ``model_file``, then
    fragments + waterz agglomeration at every threshold; writes ``out_path``. Returns the stats.
    ``planned``: the training job the config plans for a workflow-trained network
    (:meth:`emsrbench.plan.Plan.segmenter_identity`); a model file made for another is refused."""
    import torch

    from .. import device as devices
    from ..fingerprint import check_planned
    from . import networks
    from .agglomerate import segment
    from .blockwise import BlockSpec, predict_affinities

    threads = devices.set_threads(threads)
    model, meta = networks.load(model_file, net, preset)
    check_planned(model_file, meta.get("planned"), planned, f"{net} segmentation network")
    # Released weights come with their architecture's preset (paper): its blocks and tiling.
    pre = networks.preset(net, meta.get("infer_preset", preset))
    st = infer_settings({k: v for k, v in pre["infer"].items()}, inference, net)
    try:
        if st.input_block:
            in_shape, out_shape = networks.input_block_shapes(net, model, st.input_block)
        else:
            in_shape, out_shape = networks.block_shapes(net, model, st.block or meta.get("block") or pre["block"])
    except EmsrError as err:
        raise EmsrError(f"config segmentation.inference ({net}): {err}") from None
    spec = BlockSpec.make(
        in_shape,
        out_shape,
        st.stride,
        st.pad or (0, 0, 0),
        factor=model.factor,
        where=f"segmentation {net} inference",
        tiling=st.tiling,
    )
    raw, resolution = read_dataset(raw_path, RAW_KEY, dtype=np.uint8, ndim=3)
    dev = devices.pick_device(st.device)
    devices.precision_plan(dev.type, st.precision, "config segmentation.inference")  # fp16 on CPU: fail before any work
    t0 = time.perf_counter()
    with torch.no_grad():
        affs = predict_affinities(model, raw, spec, dev, batch=st.batch, precision=st.precision)
    infer_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    segs = segment(affs, list(thresholds), scoring=scoring, threads=threads)
    agglo_seconds = time.perf_counter() - t1
    stats = {
        "network": net,
        "preset": preset,
        "model_file": str(model_file),
        "source": str(raw_path),
        "thresholds": [float(t) for t in thresholds],
        "scoring": scoring,
        "device": devices.describe(dev),
        "precision": st.precision,
        "threads": threads,
        "infer_seconds": infer_seconds,
        "agglomerate_seconds": agglo_seconds,
        "blocks": {
            "in": list(in_shape),
            "out": list(out_shape),
            "stride": list(spec.stride),
            "pad": list(spec.pad),
            "tiling": spec.tiling,
        },
        "parameters": int(meta["parameters"]),
        "flags": list(meta.get("flags") or []) + devices.precision_flag(st.precision, "segmentation inference"),
    }
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as f:
        plane = (1, min(raw.shape[1], 256), min(raw.shape[2], 256))
        ds = f.create_dataset(AFF_KEY, data=affs, chunks=(1,) + plane, compression="gzip", compression_opts=1)
        ds.attrs["resolution"] = np.asarray(resolution, dtype=float)
        for i, (t, seg) in enumerate(zip(thresholds, segs)):
            keys = [f"{SWEEP_GROUP}/{float(t)}"] + ([SEG_KEY] if i == 0 else [])
            for key in keys:
                ds = f.create_dataset(
                    key, data=seg.astype(np.uint64, copy=False), chunks=plane, compression="gzip", compression_opts=1
                )
                ds.attrs["resolution"] = np.asarray(resolution, dtype=float)
                ds.attrs["threshold"] = float(t)
        f.attrs["stats"] = json.dumps(stats)
    print(
        f"segmentation {net}: {raw_path} -> {out_path}: inference {infer_seconds:.1f} s, "
        f"fragments + agglomeration {agglo_seconds:.1f} s on {stats['device']}",
        file=sys.stderr,
    )
    return stats


def score_intervals(gt, seg, resolution, border_nm, settings, threads, where) -> tuple[dict, dict, object]:
    """({metric: Replicates}, {metric: (low, high, note)}, settings with the slab length used) of
    the whole-volume scores: :func:`emsrbench.stats.intervals.slab_intervals` (z-slabs of the
    test volume, ``auto``: length from the ground truth; missing intervals give their reason)."""
    from ..stats.intervals import slab_intervals

    return slab_intervals(
        gt, seg, settings, SCORE_METRICS, resolution=resolution, border_nm=border_nm, threads=threads, where=where
    )


def score_volume(
    seg_path: str | Path,
    gt_path: str | Path,
    *,
    row: RowIdentity,
    border_nm: float | None = None,
    gt_labels: str = "auto",
    threads: int | None = None,
    intervals=None,
    sidecar_path: str | Path | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(leaderboard rows at the first threshold, every threshold's scores) of a segmentation file
    against the labels of the HR test volume ``gt_path``; ``row`` says whose they are.

    ``gt_labels`` (config ``segmentation.gt_labels``: auto | 3d | per_section): whether the
    labels are 3D or labelled per section (then ground truth and segmentation are relabelled
    per section, :class:`emsrbench.segment.scores.PerSectionIds`); the notes say which.

    ``intervals`` (:class:`emsrbench.stats.BootstrapSettings`, None: none): intervals of the
    reported whole-volume scores from a bootstrap over z-slabs (see :func:`score_intervals`);
    their replicates go to ``sidecar_path`` (:mod:`emsrbench.stats.sidecar`)."""
    from ..evaluate import COLUMNS
    from ..stats import sidecar
    from .scores import PerSectionIds, gt_labels_mode, segmentation_scores

    stats = read_stats(seg_path, "segmentation")
    gt, resolution = read_dataset(gt_path, LABELS_KEY, ndim=3)
    where = f"{seg_path}"
    mode, why = gt_labels_mode(gt, gt_labels, where=f"config: segmentation.gt_labels ({gt_path})")
    per_section = mode == "per_section"
    scored_gt = PerSectionIds(gt, background_zero=True) if per_section else gt
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
                raise EmsrError(
                    f"{seg_path}:{key}: shape {tuple(ds.shape)} differs from the labels {gt.shape} of {gt_path}"
                )
            scored_seg = PerSectionIds(ds, background_zero=False) if per_section else ds
            sc = segmentation_scores(
                scored_gt, scored_seg, resolution=resolution, border_nm=border_nm, threads=threads, where=where
            )
            if not sweep:  # the reported threshold
                reps, ci, used = score_intervals(
                    scored_gt, scored_seg, resolution, border_nm, intervals, threads, where
                )
            sweep.append(
                {
                    "threshold": float(t),
                    **{k: sc[k] for k in ("voi_split", "voi_merge", "voi_sum", "arand", "cremi_score")},
                    "voxels": sc["voxels"],
                    "segments": count_segments(ds),
                    "gt_labels": mode,
                }
            )
    first = sweep[0]
    mask = f"CREMI border mask {border_nm:g} nm" if border_nm is not None else "no border mask"
    common = (
        f"waterz {stats['scoring']} threshold {first['threshold']:g}; {gt_labels_note(mode, why)}; "
        f"GT 0 ignored; {mask}; "
        f"{stats['device']}, {stats.get('precision') or 'precision not recorded'}"
    )
    notes = {
        "voi_split": "bits; " + common,
        "voi_merge": "bits; " + common,
        "arand": common,
        "cremi_score": "sqrt(VOI sum x ARAND); " + common,
    }
    flags = "; ".join(stats.get("flags") or [])
    base = row.columns()
    none = (float("nan"), float("nan"), "")
    rows = [
        {
            **base,
            "metric": m,
            "value": float(first[m]),
            "note": "; ".join(x for x in (nan_reason(first, m), notes[m], ci.get(m, none)[2], flags) if x),
            "ci_low": ci.get(m, none)[0],
            "ci_high": ci.get(m, none)[1],
            "variant": "",
            "tie": "",
        }
        for m in SCORE_METRICS
    ]
    rows += count_rows(base, first["segments"], count_gt_objects(gt, per_section), per_section, common, flags)
    if sidecar_path is not None:
        sidecar.write(
            sidecar_path,
            reps,
            kind="segmentation",
            method=row.method,
            scale=int(row.scale),
            settings=used,
            segmenter=row.net,
        )
    return pd.DataFrame(rows, columns=COLUMNS), pd.DataFrame(sweep)


def count_segments(labels) -> int:
    """Distinct ids (0 included, an ordinary segment) of a (z, y, x) label volume, array or
    HDF5 dataset, read a few sections at a time so that memory stays bounded."""
    import fastremap

    depth, height, width = (int(n) for n in labels.shape)
    step = max(1, SECTION_VOXELS_PER_READ // max(1, height * width))
    seen = np.empty(0, dtype=labels.dtype)
    for z0 in range(0, depth, step):
        seen = np.union1d(seen, fastremap.unique(np.asarray(labels[z0 : z0 + step])))
    return int(seen.size)


def count_gt_objects(gt: np.ndarray, per_section: bool) -> int:
    """Ground-truth objects as the scores see them: non-zero ids, each (section, id) one object
    when the labels are per section."""
    import fastremap

    if not per_section:
        return int(np.count_nonzero(fastremap.unique(gt)))
    return sum(int(np.count_nonzero(fastremap.unique(gt[z]))) for z in range(gt.shape[0]))


def count_rows(base: dict, segments: int, gt_objects: int, per_section: bool, common: str, flags: str) -> list[dict]:
    """The tidy ``segments`` and ``gt_objects`` rows of one segmentation (no interval: counts,
    not estimates); set beside HR's, they show a collapse (emsrbench.no_signal)."""
    objects = (
        "per-section objects (each id of each section one object, as scored)"
        if per_section
        else "3D objects (non-zero ids)"
    )
    notes = {
        SEGMENT_COUNT: f"3D segments of the whole segmentation (label 0 one of them); {common}",
        GT_OBJECTS: f"ground truth: {objects}, before any border mask; {common}",
    }
    values = {SEGMENT_COUNT: segments, GT_OBJECTS: gt_objects}
    return [
        {
            **base,
            "metric": m,
            "value": float(values[m]),
            "note": notes[m] + (f"; {flags}" if flags else ""),
            "ci_low": float("nan"),
            "ci_high": float("nan"),
            "variant": "",
            "tie": "",
        }
        for m in (SEGMENT_COUNT, GT_OBJECTS)
    ]


def nan_reason(scores: dict, metric: str) -> str:
    """Why ``scores[metric]`` is NaN (emsrbench.segment.scores: 0/0), as the note clause the
    leaderboard and the report show beside "n/a"; "" when it is a number."""
    if not np.isnan(scores[metric]):
        return ""
    if scores["voxels"] == 0:
        return "no labels: no labelled (non-zero) ground-truth voxels left to score"
    return "undefined: a pair count of 0 (every ground-truth object or segment is one voxel)"


def gt_labels_note(mode: str, why: str) -> str:
    """The notes' clause saying how the ground truth was read (the leaderboard and report show it)."""
    if mode == "per_section":
        return f"GT labels per section ({why}): scored per section, ids of GT and segmentation unique per section"
    return f"GT labels 3D ({why})"


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
        raise EmsrError(
            f"{path}:{SEG_KEY}: resolution {tuple(res)} nm differs from the labels' {tuple(resolution)} of {gt_path}"
        )
    return seg


def score_hallucination(
    seg_path: str | Path,
    hr_seg_path: str | Path,
    gt_path: str | Path,
    *,
    row: RowIdentity,
    tolerance_nm: float,
    iou: float = 0.5,
    hr_method: str = "hr",
) -> pd.DataFrame:
    """Tidy rows of the hallucination scores of the segmentation ``seg_path`` (the first
    threshold): boundary scores against the labels of the HR test volume ``gt_path``, orphan
    fraction against the same network's segmentation of the HR volume ``hr_seg_path``; ``row``
    says whose they are.

    Lengths are normalised by the labelled area (ground truth != 0, summed over sections) so
    that volumes of any size compare: ``invented_um_per_um2`` = invented boundary length in um
    per um^2 of labelled section area. ``hr_method``'s own row (the HR segmentation) has
    boundary scores (the upper bound) and no orphan fraction (NaN, said in the note)."""
    from ..evaluate import COLUMNS
    from .hallucination import boundary_scores, orphan_segments

    gt, resolution = read_dataset(gt_path, LABELS_KEY, ndim=3)
    seg = _segmentation(seg_path, f"the {row.net} segmentation of {row.method}", gt.shape, resolution, gt_path)
    stats = read_stats(seg_path, "segmentation")
    hr_seg = None
    if row.method != hr_method:
        hr_seg = _segmentation(
            hr_seg_path,
            f"the {row.net} segmentation of the HR volume (method '{hr_method}')",
            gt.shape,
            resolution,
            gt_path,
        )
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
    per_area = (
        f"per um^2 of labelled section area ({area_um2:.4g} um^2; GT boundary {gt_density:.4g} um/um^2, "
        f"{b['reference_nm']:.0f} nm)"
    )
    rows = [
        (
            "boundary_precision",
            b["boundary_precision"],
            f"1 - invented/SR boundary length "
            f"({b['invented_nm']:.0f} of {b['candidate_nm']:.0f} nm invented); {common}",
        ),
        (
            "boundary_recall",
            b["boundary_recall"],
            f"1 - erased/GT boundary length ({b['erased_nm']:.0f} of {b['reference_nm']:.0f} nm erased); {common}",
        ),
        ("boundary_f1", b["boundary_f1"], f"harmonic mean of boundary precision and recall; {common}"),
        (
            "invented_um_per_um2",
            density(b["invented_nm"]),
            f"um of SR boundary with no GT boundary within tolerance ({b['invented_nm']:.0f} nm), {per_area}; {common}",
        ),
        (
            "erased_um_per_um2",
            density(b["erased_nm"]),
            f"um of GT boundary with no SR boundary within tolerance ({b['erased_nm']:.0f} nm), {per_area}; {common}",
        ),
    ]
    if area_um2 == 0:  # nothing is scored: boundary_scores' 1.0 for 0/0 would be a perfect score for nothing
        rows = [(m, float("nan"), f"no labels: {gt_path} has no labelled (non-zero) ground truth") for m, _, _ in rows]
    if hr_seg is None:
        rows.append(
            (
                "orphan_fraction",
                float("nan"),
                "not applicable: the HR segmentation is the reference of the orphan fraction",
            )
        )
    else:
        o = orphan_segments(hr_seg, seg, iou, where=where)
        rows.append(
            (
                "orphan_fraction",
                o["orphan_fraction"],
                f"{o['orphan_segments']} of {o['sr_segments']} segments have no segment of IoU >= {o['iou']:g} "
                f"in the {row.net} segmentation of the HR volume",
            )
        )
    flags = "; ".join(stats.get("flags") or [])
    base = row.columns()
    out = [
        {**base, "metric": m, "value": float(v), "note": note + (f"; {flags}" if flags else "")} for m, v, note in rows
    ]
    return pd.DataFrame(out, columns=COLUMNS)
