"""Parameter counts of the paper preset against the study's supplement Tables 3 and 4.

What the published numbers comprise (worked out from the study's public code, and checked
here to the published precision, 1e-4 M):

* "VQGAN-Indexer" is what stage III runs of stages I and II: the stage II indexer and the
  stage I decoder, counted without the GroupNorm affine parameters and without the codebook
  (an ``nn.Embedding``), i.e. the way a FLOP/parameter profiler that only knows convolutions
  and linear layers counts (thop-style).  8x: indexer 20.0342 M + decoder 23.3382 M - GroupNorm
  22,016 = 43.3503 M; 16x: 45.8417 M.  The 8x/16x difference (2.4914 M) is the indexer's one
  architectural difference, a 256 -> 512 residual block at 16x (its GroupNorms excluded) where
  8x has a stride-2 conv.  The stage I encoder (18.69 M) and the PatchGAN (2.76 M) are in no
  published number.  Counting every parameter (GroupNorm and the 1024 x 512 codebook
  included) gives 43.8966 M / 46.3901 M, +1.26 % / +1.20 %.
* "MPF" is the fusion module plus the whole VGG19 feature stack (16 convs, 20.0244 M; only
  relu1_2 is used); "MPF w/o VGG" is the fusion module alone.  At 16x ours equals the
  published 1.9032 M exactly.  At 8x the study's code instantiates the fourth fusion level
  (the LR x8 lift, its fusion conv and residual block, and the third downsampling conv,
  885,184 parameters) although its 8x forward never uses it; Table 3 counts it (1.8991 M),
  we do not build it (1.0140 M, -46.6 %; MPF with VGG 21.0383 M, -4.0 %).  The study's own
  totals agree with us, not with its Table 3: they differ by 72.77 - 69.24 = 3.53 M, which is
  ours exactly (3.5284 M = indexer 2.4914 + MPF level 0.8893 + one more upsampling conv
  0.1477); with the unused level at 8x the difference would be 2.64 M.
* "POD" is the alignment module with its SPyNet (1.4403 M): offset convs, the three
  deformable convs, the fusion convs, the refinement and the two flow branches
  (1.4529 M without SPyNet); the two stride-2 conv pairs that build its feature pyramid are
  outside it.
* "3DA" is the fusion module, 0.3697 M.
* The totals ("all three stages", 69.24 M at 8x, 72.77 M at 16x) are the stage III network in
  the same convention (the table's modules plus the front conv and 5 residual blocks, the POD
  pyramid convs, the 10 back residual blocks and the upsampler), less 147,712 parameters at
  both scales (ours: 69.3885 M and 72.9168 M, +0.21 % / +0.20 %).  147,712 is both the size
  of the POD pyramid's four 64 -> 64 convs and that of one 64 -> 256 upsampling conv, so which
  part the study left out of its totals cannot be told; the module rows are exact regardless.

:func:`study_count` is that convention; :func:`table` builds the paper-preset networks (on
the meta device: no memory, no init cost) and lists ours against the published values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import make_config
from .model import GPEMSR

# supplement Tables 3 (8x) and 4 (16x) and Sec. 5, millions
PUBLISHED = {
    8: {
        "VQGAN-Indexer": 43.3503,
        "MPF": 21.9235,
        "MPF w/o VGG": 1.8991,
        "POD": 2.8932,
        "POD w/o SPyNet": 1.4529,
        "3DA": 0.3697,
        "Total": 69.24,
    },
    16: {
        "VQGAN-Indexer": 45.8417,
        "MPF": 21.9276,
        "MPF w/o VGG": 1.9032,
        "POD": 2.8932,
        "POD w/o SPyNet": 1.4529,
        "3DA": 0.3697,
        "Total": 72.77,
    },
}


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def study_count(module: nn.Module) -> int:
    """Parameters as the study counts them: GroupNorm affine parameters and embedding tables
    (the codebook) left out."""
    skip = {id(p) for m in module.modules() if isinstance(m, (nn.GroupNorm, nn.Embedding)) for p in m.parameters()}
    return sum(p.numel() for p in module.parameters() if id(p) not in skip)


def unused_mpf_level(scale: int) -> int:
    """Parameters of the MPF level the study's code builds at every scale but runs only at 16x:
    the fourth lift, fusion conv, fusion blocks and third downsampling conv of a 16x MPF.
    Zero at 16x (where that level is used)."""
    if scale >= 16:
        return 0
    with torch.device("meta"):
        mpf16 = GPEMSR(make_config("paper", scale=16), 16).mpf
    return count(mpf16.lift[2]) + count(mpf16.fuse[3]) + count(mpf16.fuse_blocks[3]) + count(mpf16.down[2])


@dataclass
class Row:
    module: str
    ours: float  # millions, the study's counting convention
    ours_all: float  # millions, every parameter
    published: float
    note: str = ""

    @property
    def rel(self) -> float:
        return (self.ours - self.published) / self.published

    @property
    def rel_all(self) -> float:
        return (self.ours_all - self.published) / self.published


def table(scale: int) -> list[Row]:
    """Our paper-preset counts at ``scale`` against the published ones."""
    with torch.device("meta"):
        model = GPEMSR(make_config("paper", scale=scale), scale)
    pub = PUBLISHED[scale]
    m = lambda n: n / 1e6  # noqa: E731
    idx, dec, quant = model.prior.indexer, model.prior.decoder, model.prior.quantizer
    vgg, spy = model.mpf.vgg, model.pod.spynet
    unused = unused_mpf_level(scale)
    mpf_note = (
        f"study's table also counts {unused:,} parameters of a 4th fusion level its 8x forward never uses"
        if unused
        else ""
    )
    return [
        Row(
            "VQGAN-Indexer",
            m(study_count(idx) + study_count(dec)),
            m(count(idx) + count(dec) + count(quant)),
            pub["VQGAN-Indexer"],
            "indexer + decoder; all: + GroupNorm + codebook",
        ),
        Row("MPF", m(study_count(model.mpf)), m(count(model.mpf)), pub["MPF"], mpf_note),
        Row(
            "MPF w/o VGG",
            m(study_count(model.mpf) - count(vgg)),
            m(count(model.mpf) - count(vgg)),
            pub["MPF w/o VGG"],
            mpf_note,
        ),
        Row("POD", m(study_count(model.pod)), m(count(model.pod)), pub["POD"]),
        Row(
            "POD w/o SPyNet",
            m(study_count(model.pod) - count(spy)),
            m(count(model.pod) - count(spy)),
            pub["POD w/o SPyNet"],
        ),
        Row("3DA", m(study_count(model.fusion)), m(count(model.fusion)), pub["3DA"]),
        Row(
            "Total",
            m(study_count(model)),
            m(count(model)),
            pub["Total"],
            "the stage III network (stage I encoder and discriminator excluded, as in the study)",
        ),
    ]


def format_table(rows_by_scale: dict[int, list[Row]]) -> str:
    lines = [
        "| scale | module | ours (study conv.) | ours (all params) | published | diff | diff (all) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for scale, rows in rows_by_scale.items():
        for r in rows:
            lines.append(
                f"| {scale}x | {r.module} | {r.ours:.4f} M | {r.ours_all:.4f} M | {r.published} M | "
                f"{100 * r.rel:+.2f} % | {100 * r.rel_all:+.2f} % |"
            )
    return "\n".join(lines)
