"""Why blurry input merges here and over-splits in the study (issue 15, part 3).

    .venv/bin/python benchmarks/segmentation_merge.py [--cache DIR] [--net superhuman] [--threads 2]

The default run's segmentation of bicubic input merges each volume into a few segments (VOI split
about 0), while the study's bicubic input over-splits (supplement Table 1: VOI split 5.61 / 5.81
with Superhuman at 8x / 16x).  This measures where along the pipeline the merging happens, on
the default run's data:

* data: the default config's phantom volumes (train: seed 1, 24x384x384, sections 0-19; test:
  seed 2, 12x384x384), the test volume degraded (bicubic, antialiased) to 8x and 16x and
  upsampled by the bicubic method (what the leaderboard's bicubic row segments);
* network: ``--net`` trained as the default run trains it (quick preset, 200 steps; also 50
  steps, to see which way more training moves it), once, cached in ``--cache``; its
  affinities of HR, bicubic 8x and bicubic 16x through the stage's own ``segment_volume``
  (blockwise inference, then the study's fragments and waterz);
* what each input gives: mean xy affinity on ground-truth interiors and on ground-truth
  boundaries (the one-pixel-widened borders the network is trained to mark), the share of
  pixels whose boundary map ``1 - (aff_y + aff_x) / 2`` reaches the seeding threshold 0.5,
  watershed seeds (= fragments) per section, segments and VOI split / merge after waterz;
* sweeps on the bicubic affinities, each against the study's setting: the waterz threshold
  (0.1-0.9; the study: 0.5), the seeding threshold of the fragments (the study: 0.5), and the
  calibration of the affinities (each channel mapped onto the distribution of the same
  network's HR affinities, rank kept: the bicubic map calibrated like HR's);
* the post-processing alone: ground-truth affinities blurred in xy like the LR input (Gaussian,
  sigma = scale / 2 px) plus smooth noise (sd 0.05), as they are (certain interiors) and
  lowered so that their median is 0.5 (a network unsure everywhere).

Writes ``benchmarks/out/segmentation_merge.md`` (tables and the machine's load).  Measured on 2
shared cores: the 200-step training 165 s wall (load average about 2), the rest (the 50-step
training, six blockwise predictions, the sweeps) 258 s wall at load average 8; with ``--cache``
the trained networks and predictions are reused.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import h5py
import numpy as np
from scipy import ndimage

HERE = Path(__file__).resolve().parent
OUT = HERE / "out" / "segmentation_merge.md"
SCALES = (8, 16)
RESOLUTION = (40.0, 4.0, 4.0)
TRAIN = {"shape": (24, 384, 384), "seed": 1, "sections": 20}  # config/config.yaml: data.phantom, splits.train
TEST = {"shape": (12, 384, 384), "seed": 2}
STUDY_THRESHOLD = 0.5  # waterz threshold and fragment seeding threshold of the study (inference_seg.py)
WATERZ_THRESHOLDS = (0.1, 0.3, 0.5, 0.7, 0.9)
SEED_THRESHOLDS = (0.5, 0.3, 0.15)


# -- data ----------------------------------------------------------------------------------


def _write(path: Path, raw: np.ndarray, labels: np.ndarray) -> None:
    from emsrbench.io import LABELS_KEY, RAW_KEY

    with h5py.File(path, "w") as f:
        for key, data in ((RAW_KEY, raw), (LABELS_KEY, labels)):
            f.create_dataset(key, data=data).attrs["resolution"] = np.asarray(RESOLUTION)


def bicubic_sr(hr: np.ndarray, scale: int) -> np.ndarray:
    """What the leaderboard's bicubic row segments: the default degradation, then the bicubic
    method's upsampling (methods/bicubic), rounded to uint8 as the inference writes it."""
    import torch

    from emsrbench.degrade import Degradation, downsample_volume
    from emsrbench.resize import imresize

    lr = downsample_volume(hr, scale, Degradation())
    with torch.no_grad():
        up = imresize(torch.from_numpy(lr.astype(np.float64) / 255.0), scale, antialias=False).clamp(0.0, 1.0)
    return np.round(up.numpy() * 255.0).astype(np.uint8)


def volumes(cache: Path) -> dict[str, Path]:
    """Files (cached) of the training volume and of the inputs to segment: hr, bicubic8, bicubic16."""
    from emsrbench import phantom

    files = {"train": cache / "train.h5", "hr": cache / "hr.h5"} | {
        f"bicubic{s}": cache / f"bicubic{s}.h5" for s in SCALES
    }
    if all(p.exists() for p in files.values()):
        return files
    raw, labels = phantom.generate(TRAIN["shape"], seed=TRAIN["seed"])
    _write(files["train"], raw[: TRAIN["sections"]], labels[: TRAIN["sections"]])
    raw, labels = phantom.generate(TEST["shape"], seed=TEST["seed"])
    _write(files["hr"], raw, labels)
    for s in SCALES:
        _write(files[f"bicubic{s}"], bicubic_sr(raw, s), labels)
    return files


def trained_network(net: str, iterations: int, train_file: Path, cache: Path, threads: int) -> Path:
    """The network trained as the default run trains it (quick preset; the cosine schedule
    stretched over ``iterations`` steps, 200 in the preset), cached."""
    from emsrbench.segment.training import train_segmenter

    model = cache / f"{net}-quick-{iterations}.pt"
    if not model.exists():
        t0 = time.perf_counter()
        train_segmenter(
            net,
            "quick",
            [str(train_file)],
            model,
            cache / f"ckpt-{net}-{iterations}",
            override={"iterations": iterations},
            threads=threads,
        )
        print(f"{net} ({iterations} steps) trained in {time.perf_counter() - t0:.0f} s", flush=True)
    return model


def predicted_affinities(net: str, model: Path, raw_file: Path, cache: Path, threads: int) -> np.ndarray:
    """The network's affinities of ``raw_file`` through the segmentation stage itself (cached)."""
    from emsrbench.segment.stage import AFF_KEY, segment_volume

    out = cache / f"seg-{model.stem}-{raw_file.stem}.h5"
    if not out.exists():
        segment_volume(net, "quick", model, raw_file, out, thresholds=[STUDY_THRESHOLD], threads=threads)
    with h5py.File(out, "r") as f:
        return f[AFF_KEY][...]


# -- measurements --------------------------------------------------------------------------


def seeded_fragments(affs: np.ndarray, seed_threshold: float, threads: int) -> np.ndarray:
    from emsrbench.segment.agglomerate import fragments

    return fragments(affs, threads=threads, boundary_threshold=seed_threshold)


def outcome(gt: np.ndarray, affs: np.ndarray, frags: np.ndarray, thresholds=(STUDY_THRESHOLD,)) -> dict:
    """{threshold: (segments, VOI split, VOI merge)} of waterz (mean affinity, the study's) on ``frags``."""
    from emsrbench.segment.agglomerate import iter_agglomerate
    from emsrbench.segment.scores import segmentation_scores

    out = {}
    for t, seg in iter_agglomerate(affs, frags, thresholds):
        sc = segmentation_scores(gt, seg)
        out[t] = (int(np.unique(seg).size), sc["voi_split"], sc["voi_merge"])
    return out


def affinity_profile(affs: np.ndarray, gt_boundary: np.ndarray) -> dict:
    """Mean xy affinity on GT interiors and boundaries; share of pixels at or above the seeding
    threshold on the boundary map (the only places fragments can be separated)."""
    from emsrbench.segment.agglomerate import boundary_map

    boundary = boundary_map(affs)
    return {
        "interior": float(1.0 - boundary[~gt_boundary].mean()),
        "on_boundary": float(1.0 - boundary[gt_boundary].mean()),
        "walls": float((boundary >= STUDY_THRESHOLD).mean()),
        "median_boundary": float(np.median(boundary)),
    }


def calibrated_like(affs: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``affs`` with each channel's values replaced by the same-rank values of ``reference``'s
    channel (quantile mapping): the ranking of the network's output kept, its calibration HR's."""
    out = np.empty_like(affs)
    for c in range(affs.shape[0]):
        order = np.argsort(affs[c], axis=None, kind="stable")
        ref_sorted = np.sort(reference[c], axis=None)
        flat = np.empty(affs[c].size, np.float32)
        flat[order] = ref_sorted
        out[c] = flat.reshape(affs[c].shape)
    return out


def blurred_truth(gt: np.ndarray, scale: int, lowered: bool, seed: int = 0) -> np.ndarray:
    """Ground-truth affinities (widened borders: the training targets) blurred in xy like LR input
    (sigma scale / 2 px) with smooth noise (sd 0.05); ``lowered``: every channel shifted by the same
    amount so that the median xy affinity is 0.5."""
    from emsrbench.segment.affinities import affinities_from_labels

    affs = affinities_from_labels(gt)
    rng = np.random.default_rng(seed)
    for c in range(3):
        if c > 0:  # z affinities are not blurred by a lateral degradation
            affs[c] = ndimage.gaussian_filter(affs[c], (0, scale / 2, scale / 2))
        noise = ndimage.gaussian_filter(rng.standard_normal(affs.shape[1:]).astype(np.float32), (0, 1.5, 1.5))
        affs[c] += noise * np.float32(0.05 / max(float(noise.std()), 1e-12))
    if lowered:
        affs -= np.float32(np.median(affs[1:]) - 0.5)
    return np.clip(affs, 0.0, 1.0)


# -- the report ----------------------------------------------------------------------------


def _row(name: str, profile: dict | None, frags: np.ndarray, result: tuple) -> str:
    segments, split, merge = result
    per_section = np.unique(frags).size / frags.shape[0]
    prof = (
        f"{profile['interior']:.3f} | {profile['on_boundary']:.3f} | {profile['walls']:.3f}" if profile else "- | - | -"
    )
    return f"| {name} | {prof} | {per_section:.1f} | {segments} | {split:.3f} | {merge:.3f} |"


HEAD = [
    (
        "| input | xy aff. interior | xy aff. GT boundary | share boundary >= 0.5 | fragments / section | segments "
        "| VOI split | VOI merge |"
    ),
    "|---|---:|---:|---:|---:|---:|---:|---:|",
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=HERE / "out" / "segmentation_merge")
    ap.add_argument("--net", default="superhuman", choices=["superhuman", "mala"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--iterations",
        type=int,
        nargs="+",
        default=[200, 50],
        help="training steps of each network compared (the first is analysed in full; 200: the preset)",
    )
    args = ap.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    t0, cpu0 = time.perf_counter(), time.process_time()

    from emsrbench.io import LABELS_KEY
    from emsrbench.segment.affinities import widen_borders

    files = volumes(args.cache)
    with h5py.File(files["hr"], "r") as f:
        gt = f[LABELS_KEY][...]
    gt_boundary = widen_borders(gt) == 0
    inputs = ["hr"] + [f"bicubic{s}" for s in SCALES]
    models = {it: trained_network(args.net, it, files["train"], args.cache, args.threads) for it in args.iterations}
    affs = {
        name: predicted_affinities(args.net, models[args.iterations[0]], files[name], args.cache, args.threads)
        for name in inputs
    }

    lines = [
        f"# Segmentation of blurry input: where it merges ({args.net}, quick preset)",
        "",
        (
            f"Phantom test volume {TEST['shape'][0]}x{TEST['shape'][1]}x{TEST['shape'][2]}, "
            f"{np.count_nonzero(np.unique(gt))} ground-truth objects (3D); the study's post-processing (seeds at "
            "boundary < 0.5, waterz mean affinity) unless a row says otherwise."
        ),
        "",
        "## What the network gives (waterz threshold 0.5, seeding threshold 0.5)",
        "",
    ] + HEAD
    for it, model in models.items():
        for name in inputs:
            a = (
                affs[name]
                if it == args.iterations[0]
                else predicted_affinities(args.net, model, files[name], args.cache, args.threads)
            )
            frags = seeded_fragments(a, STUDY_THRESHOLD, args.threads)
            lines.append(
                _row(
                    f"{name}, {it} training steps",
                    affinity_profile(a, gt_boundary),
                    frags,
                    outcome(gt, a, frags)[STUDY_THRESHOLD],
                )
            )

    for s in SCALES:
        name = f"bicubic{s}"
        lines += [
            "",
            f"## Sweeps on {name}",
            "",
            "waterz threshold (fragments seeded at 0.5):",
            "",
            "| threshold | segments | VOI split | VOI merge |",
            "|---:|---:|---:|---:|",
        ]
        frags = seeded_fragments(affs[name], STUDY_THRESHOLD, args.threads)
        for t, (n, split, merge) in outcome(gt, affs[name], frags, WATERZ_THRESHOLDS).items():
            lines.append(f"| {t:g}{' (study)' if t == STUDY_THRESHOLD else ''} | {n} | {split:.3f} | {merge:.3f} |")
        lines += ["", "seeding threshold and calibration (waterz 0.5):", ""] + HEAD
        for seed_t in SEED_THRESHOLDS:
            frags = seeded_fragments(affs[name], seed_t, args.threads)
            label = f"{name}, seeds at boundary < {seed_t:g}" + (" (study)" if seed_t == STUDY_THRESHOLD else "")
            lines.append(_row(label, None, frags, outcome(gt, affs[name], frags)[STUDY_THRESHOLD]))
        calibrated = calibrated_like(affs[name], affs["hr"])
        frags = seeded_fragments(calibrated, STUDY_THRESHOLD, args.threads)
        lines.append(
            _row(
                f"{name}, calibrated like HR",
                affinity_profile(calibrated, gt_boundary),
                frags,
                outcome(gt, calibrated, frags)[STUDY_THRESHOLD],
            )
        )

    lines += ["", "## The post-processing alone: ground-truth affinities blurred like LR input", ""] + HEAD
    for s in SCALES:
        for lowered in (False, True):
            a = blurred_truth(gt, s, lowered)
            frags = seeded_fragments(a, STUDY_THRESHOLD, args.threads)
            label = f"GT affinities, sigma {s / 2:g} px" + (", median lowered to 0.5" if lowered else "")
            lines.append(_row(label, affinity_profile(a, gt_boundary), frags, outcome(gt, a, frags)[STUDY_THRESHOLD]))

    load = os.getloadavg()
    lines += [
        "",
        (
            f"Wall {time.perf_counter() - t0:.0f} s, CPU {time.process_time() - cpu0:.0f} s (this process; "
            f"training excluded when cached); load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on "
            f"{os.cpu_count()} CPUs."
        ),
        "",
    ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
