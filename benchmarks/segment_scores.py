"""VOI split/merge + adapted Rand error on a big label pair: emsrbench versus scikit-image.

    .venv/bin/python benchmarks/segment_scores.py [--shape 125 1250 1250] [--repeats 3] [--no-skimage]

The pair: ground truth = phantom neuron ids (``--phantom-sections`` distinct sections of the
phantom, tiled along z with fresh ids per tile, so that the volume has realistic neurite
cross-sections and many labels), with the ids of ~2 % of the cells set to 0 (unlabelled);
segmentation = the ground truth with ~10 % of the ids merged into others, ~20 % of the cells
split in z at a random section, the segmentation shifted by one pixel in x, and label 0 on the
x-boundaries of the ground truth.  Both are uint64 (ids small enough for scikit-image, whose
table is indexed by label value).

Each implementation runs in its own subprocess, which loads the pair, then computes VOI split,
VOI merge and ARAND (best of ``--repeats`` runs; scikit-image once); peak memory is that
process's peak RSS (VmHWM, reset after loading) minus its RSS with the two volumes loaded.  Implementations:
``emsrbench`` (``segmentation_scores``, 2 threads), ``emsrbench-1thread``, ``skimage``
(``variation_of_information`` + ``adapted_rand_error``, as a user calls them: two tables) and
``skimage-shared-table`` (one ``contingency_table`` passed to both).  Writes
benchmarks/out/segment_scores.md with the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "out" / "segment_scores.md"
IMPLS = ("emsrbench", "emsrbench-1thread", "skimage-shared-table", "skimage")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_rss_bytes() -> int:
    """High-water mark of this process's RSS (VmHWM: unlike ru_maxrss, not inherited from the parent)."""
    return _status_kib("VmHWM") * 1024


def current_rss_bytes() -> int:
    return _status_kib("VmRSS") * 1024


def reset_peak_rss() -> None:
    """Start a new high-water mark from the current RSS (Linux >= 4.0; ignored elsewhere)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


# ------------------------------------------------------------------ the label pair
def make_pair(shape, phantom_sections: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    import fastremap

    from emsrbench import phantom

    depth, h, w = shape
    n = min(phantom_sections, depth)
    _, tile = phantom.generate((n, h, w), seed=seed)
    step = np.uint64(int(tile.max()) + 1)
    gt = np.empty(shape, np.uint64)
    for k, z in enumerate(range(0, depth, n)):
        m = min(n, depth - z)
        np.add(tile[:m], step * np.uint64(k), out=gt[z : z + m])
    del tile
    rng = np.random.default_rng(seed)
    dense, mapping = fastremap.renumber(gt, start=0, preserve_zero=False, in_place=False)
    ids = np.zeros(len(mapping), np.uint64)
    ids[np.fromiter(mapping.values(), np.int64, len(mapping))] = np.fromiter(mapping.keys(), np.uint64, len(mapping))
    k = len(ids)
    # segmentation ids per ground-truth cell: 10 % merged into another cell
    seg_ids = ids.copy()
    merged = rng.random(k) < 0.10
    seg_ids[merged] = ids[rng.integers(0, k, int(merged.sum()))]
    # 20 % split in z at a random section: the part above gets a new id
    split_z = np.where(rng.random(k) < 0.20, rng.integers(1, depth, k), depth).astype(np.int64)
    top = step * np.uint64(depth // n + 2)
    seg = np.empty(shape, np.uint64)
    for z in range(depth):
        d = dense[z]
        seg[z] = seg_ids[d] + np.where(z >= split_z[d], top, np.uint64(0))
    seg = np.roll(seg, 1, axis=2)
    seg[:, :, 1:][gt[:, :, 1:] != gt[:, :, :-1]] = 0
    # 2 % of the ground-truth cells unlabelled
    zero = rng.random(k) < 0.02
    for z in range(depth):
        gt[z][zero[dense[z]]] = 0
    return gt, seg


# ------------------------------------------------------------------ one implementation
def run_impl(name: str, gt: np.ndarray, seg: np.ndarray) -> dict:
    if name.startswith("emsrbench"):
        from emsrbench.segment.scores import segmentation_scores

        s = segmentation_scores(gt, seg, threads=1 if name.endswith("1thread") else 2)
        return {k: s[k] for k in ("voi_split", "voi_merge", "arand")}
    import warnings

    from skimage.metrics import adapted_rand_error, contingency_table, variation_of_information

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name == "skimage":
            split, merge = variation_of_information(gt, seg, ignore_labels=[0])
            are = adapted_rand_error(gt, seg, ignore_labels=(0,))[0]
        else:
            table = contingency_table(gt, seg, ignore_labels=[0], normalize=False, sparse_type="array")
            are = adapted_rand_error(table=table)[0]
            table = table / table.sum()
            # skimage 0.26 checks the images' shapes even when a table is given: tiny stand-ins
            dummy = np.zeros(1, np.uint8)
            split, merge = variation_of_information(dummy, dummy, table=table)
    return {"voi_split": float(split), "voi_merge": float(merge), "arand": float(are)}


def worker(name: str, workdir: Path, repeats: int) -> None:
    import fastremap  # noqa: F401  (imports outside the timed runs)
    import skimage.metrics  # noqa: F401

    import emsrbench.segment.scores  # noqa: F401

    gt = np.load(workdir / "gt.npy")
    seg = np.load(workdir / "seg.npy")
    reset_peak_rss()
    base = current_rss_bytes()
    times = []
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(repeats):
        t0 = time.perf_counter()
        values = run_impl(name, gt, seg)
        times.append(time.perf_counter() - t0)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime) / repeats
    print(
        json.dumps(
            {
                "name": name,
                "seconds": min(times),
                "all_seconds": times,
                "values": values,
                "peak_extra_bytes": peak_rss_bytes() - base,
                "peak_rss_bytes": peak_rss_bytes(),
                "loaded_rss_bytes": base,
                "input_bytes": gt.nbytes + seg.nbytes,
                "cpu_seconds": cpu,
            }
        )
    )


# ------------------------------------------------------------------ driver
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=3, default=(125, 1250, 1250))
    ap.add_argument("--phantom-sections", type=int, default=25)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-skimage", action="store_true")
    ap.add_argument("--workdir", type=Path, help="keep/reuse gt.npy and seg.npy here (default: a temporary folder)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.workdir, args.repeats)
        return 0

    sys.path.insert(0, str(HERE))
    from quick_preset import machine

    tmp = None
    workdir = args.workdir
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="emsr-scores-")
        workdir = Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    shape = tuple(args.shape)
    try:
        if not (workdir / "gt.npy").exists() or np.load(workdir / "gt.npy", mmap_mode="r").shape != shape:
            t0 = time.perf_counter()
            gt, seg = make_pair(shape, args.phantom_sections)
            np.save(workdir / "gt.npy", gt)
            np.save(workdir / "seg.npy", seg)
            n_gt, n_seg = len(np.unique(gt[::5])), len(np.unique(seg[::5]))
            del gt, seg
            print(f"label pair {shape} made in {time.perf_counter() - t0:.0f} s", flush=True)
        else:
            n_gt = n_seg = None
        load0 = os.getloadavg()
        results = []
        for name in IMPLS:
            if args.no_skimage and name.startswith("skimage"):
                continue
            reps = 1 if name.startswith("skimage") else args.repeats
            cmd = [sys.executable, __file__, "--worker", name, "--workdir", str(workdir), "--repeats", str(reps)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}", flush=True)
                results.append({"name": name, "failed": proc.returncode})
                continue
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            print(json.dumps(res), flush=True)
            results.append(res)
        load1 = os.getloadavg()
    finally:
        if tmp is not None:
            tmp.cleanup()

    ok = [r for r in results if "failed" not in r]
    ref = next((r for r in ok if r["name"] == "skimage"), None) or next(
        (r for r in ok if r["name"].startswith("skimage")), None
    )
    ours = next((r for r in ok if r["name"] == "emsrbench"), None)
    voxels = int(np.prod(shape))
    lines = [
        "# Segmentation scores: VOI split/merge + ARAND, emsrbench vs scikit-image",
        "",
        f"Label pair {shape[0]}x{shape[1]}x{shape[2]} uint64 ({voxels / 1e6:.0f} M voxels per volume); "
        f"phantom ids tiled from {args.phantom_sections} sections"
        + (f", ~{n_gt} ground-truth and ~{n_seg} segmentation labels in every 5th section" if n_gt else "")
        + ". Produced by `benchmarks/segment_scores.py`.",
        "",
        f"Machine: {machine()}; load average {load0[0]:.1f} before, {load1[0]:.1f} after (shared machine: "
        "wall times are noisy; CPU seconds: user+system time per run, mean over the runs).",
        "",
        "| implementation | seconds (best) | all runs (s) | speed-up vs skimage | peak extra memory (GiB) "
        "| CPU s per run | VOI split | VOI merge | ARAND |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if "failed" in r:
            lines.append(f"| {r['name']} | failed (exit {r['failed']}) | | | | | | | |")
            continue
        v = r["values"]
        speed = f"{ref['seconds'] / r['seconds']:.1f}x" if ref else "n/a"
        runs = ", ".join(f"{t:.2f}" for t in r["all_seconds"])
        lines.append(
            f"| {r['name']} | {r['seconds']:.2f} | {runs} | {speed} | "
            f"{r['peak_extra_bytes'] / 2**30:.2f} | {r['cpu_seconds']:.1f} | "
            f"{v['voi_split']:.12f} | {v['voi_merge']:.12f} | {v['arand']:.12f} |"
        )
    if ref and ours:
        diff = max(abs(ours["values"][k] - ref["values"][k]) for k in ours["values"])
        lines += ["", f"Largest difference emsrbench - {ref['name']} over the three values: {diff:.2e}."]
        lines += [
            f"Goal >= 5x scikit-image: {'met' if ref['seconds'] / ours['seconds'] >= 5 else 'MISSED'} "
            f"({ref['seconds'] / ours['seconds']:.1f}x)."
        ]
    lines += [
        "",
        "Peak extra memory: peak RSS of the subprocess during the runs (VmHWM, reset after loading) minus "
        f"its RSS with both volumes loaded (inputs {(ok[0]['input_bytes'] if ok else 0) / 2**30:.2f} GiB).",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
