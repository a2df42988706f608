"""Inference speed of the multi-slice methods with per-section feature reuse vs the window path.

    .venv/bin/python benchmarks/feature_reuse.py [--preset quick] [--scale 8] [--depth 12] [--lr-size 64]

Each method's network (random weights: speed does not depend on them) super-resolves a volume
of ``--depth`` random LR sections of ``--lr-size`` pixels, every section with its window of
2N+1 (edge-replicated at the ends, as ``infer_file``), through the harness's tiled upscaler
with the preset's tiling, in one call (as ``infer_file`` does while the output fits
``REUSE_OUTPUT_BYTES``): once with the model's feature-reuse hook, once with the window
forward. The two run alternately, ``--repeats`` pairs after a warm-up pair; the table gives
the median seconds per output megapixel of each, the ratio of the medians, the range of the
per-pair ratios and the largest difference between the two outputs, and the counted-MAC bound
of reuse: MACs of one output section's window forward over those of its reuse path (one
section's features + the window's forward_features, on one tile of the preset's tiling), the
speed-up reuse would give if time followed MACs. A method without the hook (BasicVSR: its
recurrence runs over each window afresh, nothing is per-section) is listed with the window path
only, and with the bound a per-pair hook would have: each adjacent-pair SPyNet flow is computed
by N windows, once would do (2N - 2 of its 2N flows per output section saved). Writes
benchmarks/out/feature-reuse-<preset>-x<scale>.md with the machine and the load average it ran
under.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quick_preset import machine, write_table  # noqa: E402

from emsrbench import device as devices  # noqa: E402
from emsrbench.cost import count_run  # noqa: E402
from emsrbench.infer import (  # noqa: E402
    InferSettings,
    TiledUpscaler,
    count_output_section,
    neighbour_indices,
    reuses_section_features,
)
from emsrbench.methods import discover  # noqa: E402


def timed(upscaler: TiledUpscaler, volume: np.ndarray, windows: np.ndarray) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    out = upscaler.sections(volume, windows)
    return time.perf_counter() - t0, out


def mac_bound(model, method, settings: InferSettings, volume: np.ndarray, dev) -> str:
    """Counted MACs per output section, window path / reuse path, on one tile (see above)."""
    th, tw = min(volume.shape[1], settings.tile), min(volume.shape[2], settings.tile)
    tile = torch.from_numpy(volume[: method.slices, :th, :tw]).float().div(255.0)[None].to(dev)
    with torch.no_grad():
        window = count_output_section(model, tile, reuse=False)[0].macs
        if reuses_section_features(model):
            forward_part, section_part = count_output_section(model, tile, reuse=True)
            return f"{window / (forward_part.macs + section_part.macs):.2f}x"
        if not hasattr(model, "spynet"):
            return "-"
        half = method.slices // 2  # N: each direction's flows per window, each flow used by N windows
        pair = tile[0, :2, None].expand(-1, 3, -1, -1)
        flow = count_run(lambda: model.spynet(pair[:1], pair[1:])).macs
        return f"{window / (window - (2 * half - 2) * flow):.2f}x (per-pair flow hook, not built)"


def bench_method(method, preset: str, scale: int, depth: int, lr_size: int, repeats: int, dev) -> str:
    p = method.preset(preset)
    model = method.module().build(scale, **p["model"]).to(dev).eval()
    settings = InferSettings.merged({}, p["infer"])
    volume = np.random.default_rng(0).integers(0, 256, (depth, lr_size, lr_size), dtype=np.uint8)
    windows = np.stack([neighbour_indices(z, depth, method.slices) for z in range(depth)])
    mp = depth * (lr_size * scale) ** 2 / 1e6
    window = TiledUpscaler(model, scale, settings, dev, reuse=False)
    bound = mac_bound(model, method, settings, volume, dev)
    if not reuses_section_features(model):
        timed(window, volume, windows)  # warm-up
        s_mp = statistics.median(timed(window, volume, windows)[0] / mp for _ in range(repeats))
        return f"| {method.name} | no hook | {s_mp:.2f} | - | - | - | {bound} |"
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
        f"| {min(ratios):.2f}-{max(ratios):.2f} | {diff:.1e} | {bound} |"
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
        "| method | reuse s/MP | window s/MP | speed-up (medians) | per-pair ratios | max abs diff "
        "| counted-MAC bound |",
        "|---|---:|---:|---:|---|---:|---|",
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
