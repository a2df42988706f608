"""Segmentation tables with no signal (issue 15): said in words, nothing bold; tables with signal unchanged."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from emsrbench.evaluate import COLUMNS
from emsrbench.leaderboard import markdown
from emsrbench.no_signal import COLLAPSE_FRACTION, Entry, find, flat_reason
from emsrbench.report import tables
from emsrbench.report.data import Cell, Row
from emsrbench.segment import stage

HR_SEGMENTS = 187
GT_OBJECTS = 90  # the smaller reference: the collapse bound is COLLAPSE_FRACTION x 90 = 22.5 segments


def seg_rows(method, scale, values: dict, segmenter="superhuman", ci=None, ties=None) -> list[dict]:
    """Tidy rows of one method's segmentation scores (ci: metric -> (low, high); ties: metric -> mark)."""
    base = {
        "method": method,
        "display_name": "HR (upper bound)" if method == "hr" else method.upper(),
        "family": "single-image",
        "preset": "quick",
        "scale": scale,
        "segmenter": segmenter,
        "note": "",
        "variant": "",
    }
    return [
        {
            **base,
            "metric": m,
            "value": v,
            "ci_low": (ci or {}).get(m, (math.nan,) * 2)[0],
            "ci_high": (ci or {}).get(m, (math.nan,) * 2)[1],
            "tie": (ties or {}).get(m, ""),
        }
        for m, v in values.items()
    ]


def scores(split, merge, arand, segments, f1=None, gt_objects=GT_OBJECTS) -> dict:
    out = {
        "voi_split": split,
        "voi_merge": merge,
        "arand": arand,
        "cremi_score": ((split + merge) * arand) ** 0.5,
        "segments": segments,
        "gt_objects": gt_objects,
    }
    if f1 is not None:
        out["boundary_f1"] = f1
    return out


@pytest.fixture
def tidy():
    """16x: every segmentation merged into 3-5 segments (HR: 187), scores differing and one bold
    candidate in each column, as issue 15 saw them; 8x: the methods separate."""
    rows = []
    rows += seg_rows("hr", 16, scores(0.31, 0.42, 0.04, HR_SEGMENTS, f1=0.9))  # HR: the reference
    rows += seg_rows("bicubic", 16, scores(0.0, 5.09, 0.61, 3, f1=0.2))
    rows += seg_rows("rcan", 16, scores(0.0, 5.02, 0.60, 5, f1=0.21))
    rows += seg_rows("hr", 8, scores(0.31, 0.42, 0.04, HR_SEGMENTS, f1=0.9))
    rows += seg_rows("bicubic", 8, scores(0.0, 5.06, 0.61, 4, f1=0.2))
    rows += seg_rows("rcan", 8, scores(0.9, 1.1, 0.20, 150, f1=0.6))
    return pd.DataFrame(rows, columns=COLUMNS)


def section(md: str, heading: str) -> str:
    """The Markdown from ``heading`` to the next heading."""
    return md.split(heading, 1)[1].split("\n#", 1)[0]


def test_a_collapsed_table_says_so_and_bolds_nothing(tidy):
    md = markdown(tidy)
    collapsed = section(md, "## Segmentation: VOI split (Table 1 layout)").split("### 16x, Superhuman")[0]
    sentence = (
        "No signal at 16x with Superhuman: every segmentation merges into 3-5 segments; HR has 187, the "
        "ground truth 90 objects"
    )
    assert f"- {sentence}." in collapsed  # under the Table 1 layout, where VOI split 0 would read as a merit
    x16 = section(md, "### 16x, Superhuman")
    assert f"*{sentence}. Nothing in this table is bold.*" in x16
    assert "**" not in x16.replace(f"*{sentence}. Nothing in this table is bold.*", "")
    assert "| RCAN | 0.0000 | 5.0200 | 0.6000 | 1.7355 | 5 | 90 |" in x16  # the counts are plain columns
    assert "| HR (upper bound) | 0.3100 | 0.4200 | 0.0400 | 0.1709 | 187 | 90 |" in x16
    # the hallucination table scores the same segmentations: no signal there either
    hall = md.split("## Hallucination")[1]
    assert sentence in section(hall, "### 16x, Superhuman") and "**" not in section(hall, "### 16x, Superhuman")


def test_a_table_with_separation_bolds_its_best_and_says_nothing(tidy):
    md = markdown(tidy)
    x8 = section(md, "### 8x, Superhuman")
    assert "No signal" not in x8 and "Nothing in this table is bold" not in x8
    assert "| RCAN | 0.9000 | 1.1000 | **0.2000** | **0.6325** | 150 | 90 |" in x8
    assert "**0.600**" in section(md.split("## Hallucination")[1], "### 8x, Superhuman")
    assert find(tidy).verdict(8, "superhuman") is None


def with_rcan_segments(tidy, scale, count):
    out = tidy.copy()
    out.loc[(out["metric"] == "segments") & (out["method"] == "rcan") & (out["scale"] == scale), "value"] = count
    return out


def test_collapse_rule_is_a_fraction_of_the_objects(tidy):
    bound = COLLAPSE_FRACTION * min(HR_SEGMENTS, GT_OBJECTS)
    assert find(with_rcan_segments(tidy, 16, bound)).verdict(16, "superhuman").rule == "collapse"
    # one method kept more than a quarter of the objects apart: the table may say something
    assert find(with_rcan_segments(tidy, 16, bound + 1)).verdict(16, "superhuman") is None
    uncounted = tidy[~((tidy["metric"] == "segments") & (tidy["method"] == "rcan"))]
    assert find(uncounted).verdict(16, "superhuman") is None  # an unknown count never counts as collapsed
    no_hr = tidy[~((tidy["metric"] == "segments") & (tidy["method"] == "hr"))]
    assert find(no_hr).verdict(16, "superhuman") is None


def test_an_over_split_hr_does_not_make_a_collapse():
    """HR over-segmented 20x (the quick networks on the phantom): methods with more segments
    than the ground truth has objects have not collapsed, though they have under a tenth of HR's."""
    rows = (
        seg_rows("hr", 8, scores(0.77, 0.22, 0.1, 1441, gt_objects=73))
        + seg_rows("bicubic", 8, scores(0.03, 5.06, 0.6, 100, gt_objects=73))
        + seg_rows("rcan", 8, scores(0.5, 1.5, 0.3, 130, gt_objects=73))
    )
    tidy = pd.DataFrame(rows, columns=COLUMNS)
    assert find(tidy).verdict(8, "superhuman") is None
    # without the ground truth's count, HR's is the only reference
    assert find(tidy[tidy["metric"] != "gt_objects"]).verdict(8, "superhuman").rule == "collapse"


def test_all_tied_columns_are_no_signal_even_without_a_collapse():
    """Issue 15's MALA 16x: differing values, every method tied with the best by the bootstrap."""
    ties = {"arand": "tied", "cremi_score": "tied"}
    rows = (
        seg_rows("hr", 16, scores(0.3, 0.4, 0.04, 190), "mala")
        + seg_rows("bicubic", 16, scores(0.02, 4.9, 0.60, 60), "mala", ties=ties)
        + seg_rows("rcan", 16, scores(0.01, 4.8, 0.58, 70), "mala", ties={"arand": "best", "cremi_score": "best"})
    )
    tidy = pd.DataFrame(rows, columns=COLUMNS)
    verdict = find(tidy).verdict(16, "mala")
    assert verdict.rule == "indistinct"
    assert verdict.sentence == (
        "no signal at 16x with MALA: no method's score differs from the others (ARAND: every "
        "method tied with the best; CREMI score: every method tied with the best)"
    )
    x16 = section(markdown(tidy), "### 16x, MALA")
    assert "No signal at 16x with MALA" in x16 and "**0.5800**" not in x16 and "0.5800 ≈" not in x16


def test_flat_column_rules():
    assert flat_reason("arand", [Entry("bicubic", 0.5), Entry("rcan", 0.5)]) == "all equal"
    assert flat_reason("voi_split", [Entry("bicubic", 0.0), Entry("rcan", 1.0)]) is None  # not ranked
    assert flat_reason("arand", [Entry("bicubic", 0.5)]) is None  # one value separates nothing from nothing
    inside = [Entry("bicubic", 0.50, 0.40, 0.60), Entry("rcan", 0.45), Entry("edvr", 0.58)]
    assert flat_reason("arand", inside) == "every value inside bicubic's confidence interval"
    assert flat_reason("arand", inside[:2] + [Entry("edvr", 0.30)]) is None  # one value outside
    # a paired comparison outranks the intervals: a method shown worse is a signal, overlap or not
    marked = [
        Entry("bicubic", 0.50, 0.40, 0.60, "worse"),
        Entry("rcan", 0.45, tie="best"),
        Entry("edvr", 0.58, tie="tied"),
    ]
    assert flat_reason("arand", marked) is None
    partial = [Entry("bicubic", 0.50, 0.40, 0.60, "tied"), Entry("rcan", 0.45, tie="best"), Entry("edvr", 0.58)]
    assert flat_reason("arand", partial) is None  # edvr was not compared: not enough to call it flat


def test_one_flat_column_loses_its_bold_alone():
    rows = (
        seg_rows("hr", 8, scores(0.3, 0.4, 0.04, 190))  # segment counts far from a collapse
        + seg_rows("bicubic", 8, scores(1.5, 0.9, 0.30, 120), ties={"arand": "worse", "cremi_score": "tied"})
        + seg_rows("rcan", 8, scores(1.0, 0.7, 0.20, 150), ties={"arand": "best", "cremi_score": "best"})
    )
    tidy = pd.DataFrame(rows, columns=COLUMNS)
    found = find(tidy)
    assert found.verdict(8, "superhuman") is None
    assert found.silenced(8, "superhuman", "cremi_score") and not found.silenced(8, "superhuman", "arand")
    x8 = section(markdown(tidy), "### 8x, Superhuman")
    assert "| RCAN | 1.0000 | 0.7000 | **0.2000** | 0.5831 | 150 | 90 |" in x8


def report_rows(tidy: pd.DataFrame) -> list[Row]:
    out = []
    for (method, scale), g in tidy.groupby(["method", "scale"]):
        row = Row(method, method.upper(), "single-image", "quick", int(scale))
        row.cells = {(r.metric, r.segmenter): Cell(r.value, "", r.ci_low, r.ci_high, r.tie) for r in g.itertuples()}
        out.append(row)
    return out


def test_the_report_says_no_signal_under_the_table_and_bolds_nothing_there(tidy):
    rows = report_rows(tidy)
    x16 = tables.leaderboard(rows, 16)
    assert (
        '<p class="no-signal">No signal at 16x with Superhuman: every segmentation merges into 3-5 segments; '
        "HR has 187, the ground truth 90 objects. Nothing in the superhuman columns is bold.</p>"
    ) in x16
    assert "Segmentation (superhuman): no signal" in x16
    assert 'class="num best"' not in x16
    x8 = tables.leaderboard(rows, 8)
    assert 'class="no-signal"' not in x8 and "no signal" not in x8
    assert re.search(r'<td class="num best" data-v="0\.2"', x8)  # RCAN's ARAND, the best at 8x


def test_segment_counts_read_in_pieces_and_ground_truth_objects(monkeypatch):
    seg = np.zeros((5, 6, 7), np.uint64)
    seg[1, :3] = 2**63 + 5  # ids of any size
    seg[3] = 9
    monkeypatch.setattr(stage, "SECTION_VOXELS_PER_READ", 42)  # one section per read
    assert stage.count_segments(seg) == 3  # 0 is an ordinary segment
    gt = np.zeros((2, 4, 4), np.uint64)
    gt[0, :2], gt[0, 2:], gt[1, :, :2] = 1, 2, 1  # id 1 in both sections
    assert stage.count_gt_objects(gt, per_section=False) == 2
    assert stage.count_gt_objects(gt, per_section=True) == 3  # (section, id) pairs
