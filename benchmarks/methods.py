"""Per-method speed: training iterations/s and inference seconds per output megapixel.

    .venv/bin/python benchmarks/methods.py [--preset quick] [--scale 8] [--methods rcan swinir]

Training: the method's own batch and patch size from its preset, random data, the harness's
L1 + Adam step (forward, backward, update), after warm-up steps. Inference: the harness's
tiled upscaler over one LR section of 64x64 (--lr-size) with the config's default tiling.
Writes benchmarks/out/methods-<preset>-x<scale>.md with the machine it ran on.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quick_preset import machine, write_table  # noqa: E402

from emsrbench import device as devices  # noqa: E402
from emsrbench.infer import InferSettings, TiledUpscaler  # noqa: E402
from emsrbench.methods import discover  # noqa: E402
from emsrbench.train import TrainSettings, count_parameters  # noqa: E402


def time_training(method, preset: str, scale: int, dev, steps: int, warmup: int = 2) -> float:
    p = method.preset(preset)
    st = TrainSettings.merged(p["train"])
    model = method.module().build(scale, **p["model"]).to(dev).train()
    opt = torch.optim.Adam(model.parameters(), lr=st.lr)
    lr = torch.rand(st.batch_size, method.slices, st.patch_size, st.patch_size, device=dev)
    hr = torch.rand(st.batch_size, 1, st.patch_size * scale, st.patch_size * scale, device=dev)
    for i in range(warmup + steps):
        if i == warmup:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        with devices.autocast(dev):
            out = model(lr)
        loss = torch.nn.functional.l1_loss(out.float(), hr)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - t0)


def time_inference(method, preset: str, scale: int, dev, lr_size: int, repeats: int = 2) -> tuple[float, int]:
    p = method.preset(preset)
    model = method.module().build(scale, **p["model"]).to(dev).eval()
    up = TiledUpscaler(model, scale, InferSettings.merged({}, p["infer"]), dev)
    stack = np.random.default_rng(0).integers(0, 256, (method.slices, lr_size, lr_size), dtype=np.uint8)
    stack = stack[None]  # one output section
    up(stack)  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        up(stack)
    seconds = (time.perf_counter() - t0) / repeats
    return seconds / ((lr_size * scale) ** 2 / 1e6), count_parameters(model)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--scale", type=int, default=8)
    ap.add_argument("--methods", nargs="*")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--lr-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    devices.set_threads(args.threads)
    dev = devices.pick_device()
    methods = discover()
    names = args.methods or sorted(methods)
    rows = ["| method | parameters | train it/s | batch x patch (LR) | infer s/MP |", "|---|---:|---:|---|---:|"]
    for name in names:
        m = methods[name]
        st = TrainSettings.merged(m.preset(args.preset)["train"])
        its = time_training(m, args.preset, args.scale, dev, args.steps) if m.trains else float("nan")
        s_mp, params = time_inference(m, args.preset, args.scale, dev, args.lr_size)
        shape = f"{st.batch_size} x {st.patch_size}" if m.trains else "-"
        rows.append(f"| {name} | {params:,} | {its:.2f} | {shape} | {s_mp:.3f} |")
        print(rows[-1], flush=True)
    write_table(
        f"methods-{args.preset}-x{args.scale}.md",
        [
            f"# Method speed, preset {args.preset}, x{args.scale}",
            "",
            f"Machine: {machine()}; device {devices.describe(dev)}",
            "",
        ],
        rows,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
