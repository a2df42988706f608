"""Draw docs/hallucination.png: the hallucination scores on a hand-made section.

    .venv/bin/python docs/make_hallucination_figure.py [out.png]

Ground truth: four cells. The SR segmentation moves one membrane by 1 px (within the
tolerance: not an error), erases the membrane between the two right-hand cells and invents
one across the left-hand cell. Every number in the picture comes from
``emsrbench.segment.hallucination`` on these arrays.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from scipy import ndimage  # noqa: E402

from emsrbench.segment.hallucination import (
    boundary_error_maps,
    boundary_lengths,
    boundary_scores,  # noqa: E402
    orphan_segments,
)

RES = (4.0, 4.0)  # y, x nm: the phantom's and CREMI's lateral resolution
TOL = 8.0  # nm, the default segmentation.hallucination.tolerance_nm
H, W = 40, 64
INVENTED, ERASED, MATCHED, BAND = "#d55e00", "#0072b2", "#222222", "#f0e442"


def section() -> tuple[np.ndarray, np.ndarray]:
    gt = np.zeros((H, W), np.uint32)
    gt[:, :16], gt[:, 16:36] = 1, 2
    gt[:20, 36:], gt[20:, 36:] = 3, 4
    sr = gt.copy()
    sr[:, 16] = 1  # the membrane at x = 15|16 drawn 1 px to the right: within 8 nm
    sr[gt == 4] = 3  # the membrane between cells 3 and 4 erased
    sr[28:, :17] = 5  # a membrane invented across cell 1
    return gt, sr


def cracks(labels: np.ndarray, owners: np.ndarray) -> list:
    """Line segments (pixel coordinates) of the cracks owned by the pixels in ``owners``."""
    segs = []
    right = labels[:, :-1] != labels[:, 1:]
    down = labels[:-1, :] != labels[1:, :]
    for y, x in zip(*np.nonzero(right & owners[:, :-1])):
        segs.append([(x + 0.5, y - 0.5), (x + 0.5, y + 0.5)])
    for y, x in zip(*np.nonzero(down & owners[:-1, :])):
        segs.append([(x - 0.5, y + 0.5), (x + 0.5, y + 0.5)])
    return segs


def draw(ax, labels, band_of, errors, error_colour, title):
    boundary = boundary_lengths(band_of, RES) > 0
    band = ndimage.distance_transform_edt(~boundary, sampling=RES) <= TOL
    ax.imshow(
        np.where(band, 1.0, 0.0),
        cmap=matplotlib.colors.ListedColormap(["white", BAND]),
        vmin=0,
        vmax=1,
        interpolation="nearest",
        alpha=0.55,
    )
    ax.add_collection(LineCollection(cracks(labels, ~errors), colors=MATCHED, linewidths=1.6))
    ax.add_collection(LineCollection(cracks(labels, errors), colors=error_colour, linewidths=3.2))
    ax.set_xlim(-0.5, W - 0.5)
    ax.set_ylim(H - 0.5, -0.5)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)


def main(out: Path) -> None:
    gt, sr = section()
    s = boundary_scores(gt, sr, RES, TOL)
    invented, erased = boundary_error_maps(gt, sr, RES, TOL)
    orphans = orphan_segments(gt[None], sr[None])  # here the ground truth stands in for the HR segmentation
    fig, axes = plt.subplots(1, 3, figsize=(12.5, 4.4))
    draw(
        axes[0],
        gt,
        gt,
        np.zeros_like(erased),
        MATCHED,
        f"Ground truth: {s['reference_nm']:.0f} nm of boundary\nshaded: within {TOL:g} nm (2 px) of it",
    )
    draw(
        axes[1],
        sr,
        gt,
        invented,
        INVENTED,
        f"SR segmentation over the ground truth's band\ninvented {s['invented_nm']:.0f} of {s['candidate_nm']:.0f} nm: "
        f"precision {s['boundary_precision']:.3f}",
    )
    draw(
        axes[2],
        gt,
        sr,
        erased,
        ERASED,
        f"Ground truth over the SR segmentation's band\nerased {s['erased_nm']:.0f} of {s['reference_nm']:.0f} nm: "
        f"recall {s['boundary_recall']:.3f}",
    )
    for ax, text in zip(
        axes,
        [
            "4 cells",
            "moved 1 px (matched), one membrane invented,\none erased; "
            f"{orphans['orphan_segments']} of {orphans['sr_segments']} segments orphans (IoU < 0.5 with every cell)",
            "the erased membrane's ends lie within 8 nm\nof the SR boundary at x = 35|36: matched",
        ],
    ):
        ax.text(0.5, -0.04, text, transform=ax.transAxes, ha="center", va="top", fontsize=8)
    fig.legend(
        handles=[
            Patch(color=INVENTED, label="invented: SR boundary, no ground-truth boundary within the tolerance"),
            Patch(color=ERASED, label="erased: ground-truth boundary, no SR boundary within the tolerance"),
            Patch(color=MATCHED, label="matched boundary"),
            Patch(color=BAND, alpha=0.55, label=f"tolerance band ({TOL:g} nm)"),
        ],
        loc="lower center",
        ncol=2,
        fontsize=8,
        frameon=False,
    )
    fig.suptitle(
        f"Hallucination scores of one section (4 nm pixels, tolerance {TOL:g} nm; lengths are crack lengths in nm)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.13, 1, 0.95))
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(
        f"{out}: invented {s['invented_nm']:g} nm, erased {s['erased_nm']:g} nm, precision "
        f"{s['boundary_precision']:.4f}, recall {s['boundary_recall']:.4f}, orphans {orphans['orphan_segments']}"
        f"/{orphans['sr_segments']}"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "hallucination.png")
