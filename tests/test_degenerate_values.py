"""Degenerate values: identical images (PSNR inf), empty label sets and NaN scores are scored
without error, shown with their reason in every table and plot, never bold, and never stop
the leaderboard or the report (issue 12, part 7)."""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from emsrbench import leaderboard
from emsrbench.evaluate import evaluate
from emsrbench.infer import InferSettings, infer_file
from emsrbench.io import write_cremi
from emsrbench.methods import discover
from emsrbench.metric_specs import best_value, fmt
from emsrbench.plan import Plan
from emsrbench.report import build, panels
from emsrbench.segment.stage import RowIdentity, score_hallucination, score_volume

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import write_degraded  # noqa: E402
from report_helpers import REPO, SEG_ATTRS  # noqa: E402

SHAPE = (3, 64, 64)
IDENTICAL = "identical: SR equals HR in 3 of 3 sections (no error, PSNR infinite)"
NO_LABELS = "no labels: no labelled (non-zero) ground-truth voxels left to score"


# -- the values themselves -------------------------------------------------------------------


def test_a_constant_test_volume_scores_inf_psnr_with_its_reason(tmp_path):
    """Bicubic of a constant volume is the volume: PSNR inf (the note says why), SSIM exactly 1."""
    test = write_degraded(tmp_path / "test.h5", np.full(SHAPE, 117, np.uint8), 8)
    method = discover()["bicubic"]
    infer_file(method, 8, {}, InferSettings.merged({"tile": 6, "overlap": 4, "margin": 1}), test, tmp_path / "sr.h5")
    rows = evaluate(method, 8, "quick", tmp_path / "sr.h5", test, None).set_index("metric")
    assert math.isinf(rows.loc["psnr", "value"]) and math.isinf(rows.loc["psnr_volume", "value"])
    assert rows.loc["psnr", "note"].startswith(IDENTICAL) and rows.loc["psnr_volume", "note"].startswith(IDENTICAL)
    assert rows.loc["ssim", "value"] == 1.0 and "identical" not in rows.loc["ssim", "note"]
    # the precision of the inference behind the numbers is in their notes, the device first
    assert rows.loc["psnr", "note"].endswith("SR inferred in fp32")
    assert re.fullmatch(r"cpu:.*; SR inferred in fp32", rows.loc["infer_s_per_mp", "note"])


def test_lpips_of_constant_sections_is_finite(tmp_path):
    import torchvision

    from emsrbench.metrics import load_lpips, lpips_sections

    path = tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    model = load_lpips(tmp_path, hashlib.sha256(path.read_bytes()).hexdigest(), "cpu")
    grey, white = np.full(SHAPE, 117, np.uint8), np.full(SHAPE, 255, np.uint8)
    assert np.all(lpips_sections(grey, grey, model) == 0.0)
    assert np.isfinite(lpips_sections(grey, white, model)).all()


def segmentation_file(path: Path, seg: np.ndarray) -> Path:
    attrs = {"stats": json.dumps({**json.loads(SEG_ATTRS["stats"]), "device": "cpu:test", "precision": "fp32"})}
    write_cremi(path, seg, extra={"volumes/segmentation": seg, "volumes/segmentations/0.5": seg}, attrs=attrs)
    return path


def test_empty_label_sets_give_nan_scores_that_say_why(tmp_path):
    gt = tmp_path / "gt.h5"
    write_cremi(gt, np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint64))
    seg = segmentation_file(tmp_path / "seg.h5", np.arange(np.prod(SHAPE), dtype=np.uint64).reshape(SHAPE))
    row = RowIdentity(
        net="toynet", method="bicubic", display_name="Bicubic", family="single-image", preset="quick", scale=8
    )
    rows, _ = score_volume(seg, gt, row=row)
    counts = rows.set_index("metric").loc[["segments", "gt_objects"], "value"]  # plain counts, defined
    assert counts.to_dict() == {"segments": float(np.prod(SHAPE)), "gt_objects": 0.0}
    scores = rows[~rows["metric"].isin(["segments", "gt_objects"])]
    assert scores["value"].isna().all() and scores["note"].str.startswith(NO_LABELS).all()
    assert scores["note"].str.contains("cpu:test, fp32").all()  # the device and precision of the segmentation
    hall = score_hallucination(seg, seg, gt, row=row, tolerance_nm=8.0).set_index("metric")
    # nothing is scored: a boundary precision of 1 would be a perfect score for nothing
    boundary = hall.drop(index="orphan_fraction")
    assert boundary["value"].isna().all() and boundary["note"].str.startswith("no labels:").all()
    for frame in (rows, hall):  # both score steps say whose rows they are the same way
        assert frame[list(row.columns())].drop_duplicates().to_dict("records") == [row.columns()]


def test_non_finite_values_are_never_best_and_print_their_reason():
    assert best_value("psnr", [math.inf, 20.0, 21.0]) == 21.0
    assert best_value("lpips", [-math.inf, 0.3, 0.2]) == 0.2
    assert best_value("psnr", [math.inf]) is None
    assert fmt("psnr", math.inf, "dB; " + IDENTICAL) == "inf (identical)"
    assert fmt("voi_split", math.nan, "bits; " + NO_LABELS) == "n/a (no labels)"
    assert fmt("lpips", math.nan, "missing: no AlexNet weights") == "n/a"  # listed under the tables
    assert fmt("psnr", math.inf) == "inf"


def test_an_identical_crop_says_so_in_its_panel_title():
    crop = np.full((16, 16), 40, np.uint8)
    assert panels._psnr_text(crop, crop) == "PSNR inf (identical to HR)"
    assert panels._psnr_text(crop, crop + 1) == "PSNR 48.13 dB"


# -- the leaderboard and the report ---------------------------------------------------------


def rows(method, display, scale, values: dict, segmenter="", notes=None, ci=None) -> list[dict]:
    return [
        {
            "method": method,
            "display_name": display,
            "family": "single-image",
            "preset": "quick",
            "scale": scale,
            "metric": m,
            "value": v,
            "note": (notes or {}).get(m, ""),
            "segmenter": segmenter,
            "variant": "",
            "ci_low": (ci or {}).get(m, (np.nan, np.nan))[0],
            "ci_high": (ci or {}).get(m, (np.nan, np.nan))[1],
        }
        for m, v in values.items()
    ]


@pytest.fixture(scope="module")
def degenerate(tmp_path_factory):
    """bicubic identical to HR at 8x (PSNR inf) with an empty label set; RCAN with intervals that
    miss their estimate or have an infinite end; an undefined (NaN) ARAND at 16x."""
    root = tmp_path_factory.mktemp("degenerate")
    cfg = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
    cfg["report"] = {"panels": {"auto_regions": 0}}
    plan = Plan(cfg, methods_dir=REPO / "methods")
    seg_nan = {m: math.nan for m in ("voi_split", "voi_merge", "arand", "cremi_score")}
    tables = {
        "bicubic-8": rows(
            "bicubic",
            "Bicubic",
            8,
            {"psnr": math.inf, "psnr_volume": math.inf, "ssim": 1.0, "infer_s_per_mp": 0.3},
            notes={
                "psnr": IDENTICAL + "; dB",
                "psnr_volume": IDENTICAL,
                "infer_s_per_mp": "cpu:test; SR inferred in fp32",
            },
        )
        + rows("bicubic", "Bicubic", 8, seg_nan, "toynet", notes={m: "bits; " + NO_LABELS for m in seg_nan}),
        "rcan-8": rows(
            "rcan",
            "RCAN",
            8,
            {"psnr": 22.0, "psnr_volume": 21.9, "ssim": 0.90, "infer_s_per_mp": 1.1},
            notes={"infer_s_per_mp": "cuda:H100; SR inferred in bf16"},
            ci={"psnr": (21.5, 22.5), "ssim": (0.91, 0.95)},
        )
        + rows(
            "rcan",
            "RCAN",
            8,
            {"voi_split": 1.5, "voi_merge": 0.9, "arand": 0.2, "cremi_score": 0.69},
            "toynet",
            ci={"arand": (0.3, 0.4), "cremi_score": (0.5, math.inf)},
        ),
        "bicubic-16": rows("bicubic", "Bicubic", 16, {"psnr": 17.0, "ssim": 0.2})
        + rows(
            "bicubic",
            "Bicubic",
            16,
            {"voi_split": 2.0, "voi_merge": 1.0, "arand": math.nan, "cremi_score": 0.9},
            "toynet",
            notes={"arand": "undefined: a pair count of 0 (every ground-truth object or segment is one voxel)"},
        ),
        "rcan-16": rows("rcan", "RCAN", 16, {"psnr": 18.0, "ssim": 0.3})
        + rows("rcan", "RCAN", 16, {"voi_split": 1.8, "voi_merge": 0.8, "arand": 0.3, "cremi_score": 0.88}, "toynet"),
    }
    paths = []
    for name, data in tables.items():
        path = root / plan.results / "metrics" / f"{name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(data).to_csv(path, index=False)
        paths.append(str(path))
    gt = root / "gt.h5"
    write_cremi(gt, np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint64))
    seg = segmentation_file(root / "seg.h5", np.ones(SHAPE, np.uint64))
    path = root / plan.results / "metrics" / "bicubic-8-hallucination.csv"
    score_hallucination(
        seg,
        seg,
        gt,
        row=RowIdentity(
            net="toynet", method="bicubic", display_name="Bicubic", family="single-image", preset="quick", scale=8
        ),
        tolerance_nm=8.0,
    ).to_csv(path, index=False)
    paths.append(str(path))
    return root, plan, paths


def test_the_leaderboard_shows_reasons_and_bolds_only_finite_values(degenerate):
    root, _, paths = degenerate
    leaderboard.write(paths, root / "lb.csv", root / "lb.md", root / "tidy.csv")
    md = (root / "lb.md").read_text()
    x8 = md.split("## 16x")[0]
    assert "| Bicubic | quick | inf (identical) | inf (identical) | **1.0000** |" in x8
    assert "**22.00**" in x8  # the best finite PSNR
    assert "n/a (no labels)" in md and "n/a (undefined)" in md
    bold = re.findall(r"\*\*([^*|]+)\*\*", md)
    assert "22.00" in bold and not [b for b in bold if "inf" in b or "n/a" in b]  # nothing non-finite is bold
    assert f"- psnr inf: {IDENTICAL}" in md and f"- voi_split n/a: {NO_LABELS}" in md
    assert "- boundary_f1 n/a: no labels:" in md
    assert "- cpu:test, fp32: Bicubic 8x" in md and "- cuda:H100, bf16: RCAN 8x" in md
    assert (
        pd.read_csv(root / "tidy.csv").query("metric == 'psnr' and method == 'bicubic' and scale == 8")["value"].iloc[0]
        == math.inf
    )


def test_the_report_builds_and_names_what_it_could_not_plot(degenerate):
    root, plan, paths = degenerate
    page = build(plan, paths, root / "index.html", root / "figures", workdir=root).read_text()
    board = re.search(r'<table class="board sortable" id="leaderboard-x8">.*?</table>', page, re.S).group(0)
    inf_cells = re.findall(r'<td class="([^"]*)" data-v="Infinity"[^>]*>([^<]*)</td>', board)
    assert inf_cells == [("num non-finite", "inf (identical)")] * 2  # PSNR and PSNR (vol), sorted as numbers
    assert re.search(r'<td class="num missing" title="bits; no labels:[^"]*">n/a \(no labels\)</td>', board)
    for cls, text in re.findall(r'<td class="([^"]*)"[^>]*>([^<]*)', board):
        assert not ("best" in cls and ("inf" in text or "n/a" in text))
    assert re.search(r'<td class="num best"[^>]*>22\.00', board)
    figures = sorted(p.name for p in (root / "figures").iterdir())
    assert figures == ["cost_vs_quality.png", "metrics.png", "psnr_vs_voi.png"]
    assert "Not plotted (not a finite number, see the notes): Bicubic 8x PSNR inf (identical)" in page
    assert "Bicubic 8x VOI sum (toynet) n/a (no labels)" in page  # VOI sum derived from the NaN split and merge
    assert "Bicubic 16x ARAND (toynet) n/a (undefined)" in page
    # RCAN 8x SSIM [0.91, 0.95] around 0.90 and ARAND [0.3, 0.4] around 0.2: not drawn, said
    assert "2 interval(s) that do not contain their estimate are not drawn." in page
    assert "Missing or non-finite values and flags" in page and f"psnr inf: {IDENTICAL}" in page
