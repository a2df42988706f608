"""Inference speed of the multi-slice methods with per-section feature reuse vs the window path.

    .venv/bin/python benchmarks/feature_reuse.py [--preset quick] [--scale 8] [--depth 12] [--lr-size 64]

Each method's network (random weights: speed does not depend on them) super-resolves a volume
of ``--depth`` random LR sections of ``--lr-size`` pixels, every section with its window of
2N+1 (edge-replicated at the ends, as ``infer_file``), through the harness's tiled upscaler
with the preset's tiling, in one call (as ``infer_file`` does while the output fits
``REUSE_OUTPUT_BYTES``): once with the model's feature-reuse hook, once with the window
forward. The two run alternately, ``--repeats`` pairs after a warm-up pair; the table gives
the median seconds per output megapixel of each, the ratio of the medians, the range of the
per-pair ratios and the largest difference between the two outputs. A method without the hook
(BasicVSR: its recurrence runs over each window afresh, nothing is per-section) is listed with
the window path only. Writes benchmarks/out/feature-reuse-<preset>-x<scale>.md with the machine
and the load average it ran under.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quick_preset import machine, write_table  # noqa: E402

from emsrbench import device as devices  # noqa: E402
from emsrbench.infer import InferSettings, TiledUpscaler, neighbour_indices, reuses_section_features  # noqa: E402
from emsrbench.methods import discover  # noqa: E402


def timed(upscaler: TiledUpscaler, volume: np.ndarray, windows: np.ndarray) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    out = upscaler.sections(volume, windows)
    return time.perf_counter() - t0, out


def bench_method(method, preset: str, scale: int, depth: int, lr_size: int, repeats: int, dev) -> str:
    p = method.preset(preset)
    model = method.module().build(scale, **p["model"]).to(dev).eval()
    settings = InferSettings.merged({}, p["infer"])
    volume = np.random.default_rng(0).integers(0, 256, (depth, lr_size, lr_size), dtype=np.uint8)
    windows = np.stack([neighbour_indices(z, depth, method.slices) for z in range(depth)])
    mp = depth * (lr_size * scale) ** 2 / 1e6
    window = TiledUpscaler(model, scale, settings, dev, reuse=False)
    if not reuses_section_features(model):
        timed(window, volume, windows)  # warm-up
        s_mp = statistics.median(timed(window, volume, windows)[0] / mp for _ in range(repeats))
        return f"| {method.name} | no hook | {s_mp:.2f} | - | - | - |"
    reuse = TiledUpscaler(model, scale, settings, dev, reuse=True)
    times: dict[str, list[float]] = {"reuse": [], "window": []}
    diff = 0.0
    for i in range(repeats + 1):
        # alternate which path goes first, so a drift in the machine's load hits both alike
        order = (("reuse", reuse), ("window", window)) if i % 2 == 0 else (("window", window), ("reuse", reuse))
        outs = {}
        for name, upscaler in order:
            seconds, outs[name] = timed(upscaler, volume, windows)
            if i > 0:  # pair 0 is the warm-up
                times[name].append(seconds / mp)
        diff = max(diff, float(np.abs(outs["reuse"] - outs["window"]).max()))
    ratios = [w / r for w, r in zip(times["window"], times["reuse"])]
    med = {k: statistics.median(v) for k, v in times.items()}
    return (
        f"| {method.name} | {med['reuse']:.2f} | {med['window']:.2f} | **{med['window'] / med['reuse']:.2f}x** "
        f"| {min(ratios):.2f}-{max(ratios):.2f} | {diff:.1e} |"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--scale", type=int, default=8)
    ap.add_argument("--methods", nargs="*", help="default: every multi-slice method")
    ap.add_argument("--depth", type=int, default=12, help="LR sections (the default run's test volume: 12)")
    ap.add_argument("--lr-size", type=int, default=64, help="LR pixels per side (64: one tile of the default tiling)")
    ap.add_argument("--repeats", type=int, default=3, help="timed pairs, after one warm-up pair")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    devices.set_threads(args.threads)
    dev = devices.pick_device()
    methods = discover()
    names = args.methods or sorted(n for n, m in methods.items() if m.slices > 1)
    load_before = os.getloadavg()[0]
    rows = [
        "| method | reuse s/MP | window s/MP | speed-up (medians) | per-pair ratios | max abs diff |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for name in names:
        rows.append(bench_method(methods[name], args.preset, args.scale, args.depth, args.lr_size, args.repeats, dev))
        print(rows[-1], flush=True)
    write_table(
        f"feature-reuse-{args.preset}-x{args.scale}.md",
        [
            f"# Multi-slice feature reuse, preset {args.preset}, x{args.scale}",
            "",
            f"Machine: {machine()}; device {devices.describe(dev)}, {args.threads} threads; "
            f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after",
            "",
            f"Volume: {args.depth} sections of {args.lr_size}x{args.lr_size} LR, one call, "
            f"median of {args.repeats} alternating pairs after a warm-up pair.",
            "",
        ],
        rows,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
