"""What reproducing supplement Table 1 costs: MACs of every paper-preset network's inference.

    .venv/bin/python benchmarks/reproduce_cost.py [--methods gpemsr rcan] [--sections 50]

SR: what inference runs per output section for one whole 1024x1024 test section (LR 128x128 at
8x, 64x64 at 16x; the study's inference and config/paper-released.yaml's tile of 128 LR px),
counted with emsrbench.infer.count_output_section (FlopCounterMode; deformable convolutions
counted as their convolution): one window forward, or for a model with the multi-slice
feature-reuse hook (GPEMSR, EDVR) ``section_features`` of one section + ``forward_features`` of
one window; for those the window forward, ``forward_features`` + 2N+1 ``section_features``, is
listed beside it. Segmenters: one input block of the paper preset times the blocks of its tiling
over one test volume (sections x 1024 x 1024). Shapes only: the networks are built on PyTorch's
meta device (no weights in memory, no arithmetic done), so the counts are exact and the run takes
seconds; a network whose ops cannot run on meta is counted on CPU at the same size.
Writes benchmarks/out/reproduce-cost.md (the table docs/reproduce.md quotes).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quick_preset import machine  # noqa: E402

from emsrbench.cost import count_macs  # noqa: E402
from emsrbench.infer import count_output_section, reuses_section_features  # noqa: E402
from emsrbench.methods import discover  # noqa: E402
from emsrbench.segment import networks  # noqa: E402
from emsrbench.segment.blockwise import BlockSpec  # noqa: E402

SECTION = 1024  # HR pixels per side of the study's crop
SCALES = (8, 16)


def count(build, shape: tuple[int, ...], measure):
    """(``measure(model, x)`` of ``build()`` and a zero tensor ``x`` of ``shape``, the device it
    was counted on): meta first (shapes only), CPU where an op has no meta kernel."""
    for device in ("meta", "cpu"):
        try:
            with torch.device(device):
                model = build().eval()
                x = torch.zeros(shape)
            return measure(model, x), device
        except (NotImplementedError, RuntimeError) as err:
            if device == "cpu":
                raise
            print(f"  meta failed ({type(err).__name__}: {str(err).splitlines()[0][:120]}); counting on CPU")
    raise AssertionError("unreachable")


def forward_macs(model, x) -> int:
    return count_macs(model, x).macs


def section_macs(model, window) -> tuple[int, int | None]:
    """(MACs inference spends per output section, those of the window forward or None when
    inference runs the window forward): with the feature-reuse hook the window forward is
    ``forward_features`` + ``section_features`` of each of its sections (tests/test_cost_reuse.py)."""
    reuse = reuses_section_features(model)
    fusion, section = count_output_section(model, window, reuse)
    if not reuse:
        return fusion.macs, None
    return fusion.macs + section.macs, fusion.macs + window.shape[1] * section.macs


def sr_rows(names: list[str] | None) -> list[tuple]:
    rows = []
    for name, method in sorted(discover().items()):
        if (names and name not in names) or not method.trains or "paper" not in method.presets:
            continue
        params = method.preset("paper")["model"]
        for scale in SCALES:
            if scale not in method.scales:
                continue
            lr = SECTION // scale
            t0 = time.perf_counter()
            (macs, window), where = count(
                lambda: method.module().build(scale, **params), (1, method.slices, lr, lr), section_macs
            )
            seconds = time.perf_counter() - t0
            also = f" (window forward {window / 1e9:.1f})" if window else ""
            print(f"{name} x{scale}: {macs / 1e9:.1f} GMAC per section{also} ({where}, {seconds:.0f} s)")
            rows.append((method.display_name, scale, macs, window, where))
    return rows


def segmenter_rows(sections: int) -> list[tuple]:
    rows = []
    for net in ("superhuman", "mala"):
        pre = networks.preset(net, "paper")
        with torch.device("meta"):
            shape_model = networks.build(net, pre["model"])
        in_shape, out_shape = networks.block_shapes(net, shape_model, pre["block"])
        infer = pre["infer"]
        spec = BlockSpec.make(
            in_shape,
            out_shape,
            infer.get("stride"),
            infer.get("pad") or (0, 0, 0),
            factor=shape_model.factor,
            tiling=infer.get("tiling", "grid"),
        )
        blocks = math.prod(spec.grid((sections, SECTION, SECTION))[0])
        macs, where = count(lambda: networks.build(net, pre["model"]), (1, 1) + tuple(in_shape), forward_macs)
        print(f"{net}: {macs / 1e9:.1f} GMAC per block {list(in_shape)}, {blocks} blocks per volume ({where})")
        rows.append((net, in_shape, macs, blocks, where))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="*", help="method folders (default: every trained method)")
    ap.add_argument("--sections", type=int, default=50, help="test sections (the study: the last 50 of CREMI C)")
    args = ap.parse_args()
    sr = sr_rows(args.methods)
    seg = segmenter_rows(args.sections)
    lines = [
        "# MACs of the paper-preset networks' inference (benchmarks/reproduce_cost.py)",
        "",
        f"Machine: {machine()}. Counted with emsrbench.infer.count_output_section (SR) and "
        "emsrbench.cost.count_macs (segmenters); 'meta': shapes only.",
        "",
        f"| method | scale | GMAC per {SECTION}x{SECTION} section as inference runs it "
        "| window forward (feature-reuse models) | counted on |",
        "|---|---:|---:|---:|---|",
    ]
    lines += [f"| {d} | {s}x | {m / 1e9:.1f} | {f'{w / 1e9:.1f}' if w else '-'} | {o} |" for d, s, m, w, o in sr]
    lines += [
        "",
        f"| segmenter | input block | GMAC per block | blocks per {args.sections}x{SECTION}x{SECTION} volume "
        "| TMAC per volume | counted on |",
        "|---|---|---:|---:|---:|---|",
    ]
    lines += [
        f"| {n} | {'x'.join(map(str, b))} | {m / 1e9:.1f} | {k} | {m * k / 1e12:.2f} | {w} |" for n, b, m, k, w in seg
    ]
    out = Path(__file__).resolve().parent / "out" / "reproduce-cost.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
