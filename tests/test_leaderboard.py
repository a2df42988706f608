"""Leaderboard aggregation: pivot, best-in-bold, missing values reported with their reason."""

from __future__ import annotations

import pandas as pd
import pytest
from report_helpers import seg_rows

from emsrbench.errors import EmsrError
from emsrbench.evaluate import COLUMNS
from emsrbench.leaderboard import markdown, wide, write


def rows(method, scale, psnr, lpips=float("nan"), note="missing: no AlexNet weights"):
    base = {
        "method": method,
        "display_name": method.upper(),
        "family": "single-image",
        "preset": "quick",
        "scale": scale,
    }
    return [
        {**base, "metric": "psnr", "value": psnr, "note": ""},
        {**base, "metric": "ssim", "value": psnr / 100, "note": ""},
        {**base, "metric": "lpips", "value": lpips, "note": note if lpips != lpips else ""},
        {**base, "metric": "parameters", "value": 12345.0 if method != "bicubic" else 0.0, "note": ""},
    ]


@pytest.fixture
def tidy():
    data = rows("bicubic", 8, 20.0) + rows("rcan", 8, 22.5) + rows("bicubic", 16, 17.0) + rows("rcan", 16, 16.5)
    return pd.DataFrame(data, columns=COLUMNS)


def test_wide_has_one_row_per_method_and_scale_metric_columns(tidy):
    table = wide(tidy)
    assert sorted(table["method"]) == ["bicubic", "rcan"]
    assert table.columns[3:].tolist() == [
        "psnr@x8",
        "ssim@x8",
        "lpips@x8",
        "parameters@x8",
        "psnr@x16",
        "ssim@x16",
        "lpips@x16",
        "parameters@x16",
    ]
    assert table.set_index("method").loc["rcan", "psnr@x8"] == 22.5
    assert table.iloc[0]["method"] == "rcan"  # sorted by PSNR at the smallest scale


def test_markdown_bolds_the_best_per_scale_and_lists_missing(tidy):
    md = markdown(tidy)
    x8, x16 = md.split("## 16x")
    assert "**22.50**" in x8 and "20.00" in x8 and "**20.00**" not in x8
    assert "**17.00**" in x16 and "**16.50**" not in x16
    assert "n/a" in md  # LPIPS absent, shown as missing and never bolded
    assert "missing: no AlexNet weights" in md


def test_a_missing_reason_is_listed_once_and_flags_per_method():
    """Evaluate appends a row's flags to every note; the reason of a missing value must still
    be one line, and each flag one line per method and scale."""
    flagged = "missing: no AlexNet weights; flag: pretrained spynet missing"
    data = rows("bicubic", 8, 20.0) + rows("basicvsr", 8, 21.0, note=flagged) + rows("rcan", 8, 20.5)
    md = markdown(pd.DataFrame(data, columns=COLUMNS))
    assert md.count("missing: no AlexNet weights") == 1
    assert md.count("flag: pretrained spynet missing") == 1 and "- basicvsr x8: flag: pretrained spynet missing" in md


def test_write_and_bad_input(tmp_path, tidy):
    parts = []
    for (m, s), df in tidy.groupby(["method", "scale"]):
        p = tmp_path / f"{m}-{s}.csv"
        df.to_csv(p, index=False)
        parts.append(p)
    out = write(parts, tmp_path / "lb.csv", tmp_path / "lb.md", tmp_path / "tidy.csv")
    assert len(out) == len(tidy)
    assert pd.read_csv(tmp_path / "lb.csv").shape[0] == 2
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(EmsrError, match="bad.csv: not a metrics table"):
        write([tmp_path / "bad.csv"], tmp_path / "x.csv", tmp_path / "x.md", tmp_path / "t.csv")


@pytest.fixture
def with_segmentation(tidy):
    seg = []
    for s in (8, 16):
        for g in ("superhuman", "mala"):
            seg += seg_rows("hr", s, g, 0.1) + seg_rows("bicubic", s, g, 1.5 + s / 100) + seg_rows("rcan", s, g, 0.9)
    return pd.concat([tidy.assign(segmenter=""), pd.DataFrame(seg, columns=COLUMNS)], ignore_index=True)


def test_segmentation_columns_and_table1_layout(with_segmentation):
    table = wide(with_segmentation).set_index("method")
    assert table.loc["rcan", "voi_split@x8/superhuman"] == 0.9
    assert table.loc["hr", "voi_split@x16/mala"] == 0.1 and pd.isna(table.loc["hr", "psnr@x8"])
    cols = [c for c in table.columns if "/" in c]
    assert (
        cols[:4]
        == ["voi_split@x8/superhuman", "voi_merge@x8/superhuman", "arand@x8/superhuman", "cremi_score@x8/superhuman"]
        and len(cols) == 16
    )
    md = markdown(with_segmentation)
    image, seg = md.split("## Segmentation: VOI split (Table 1 layout)")
    assert "HR (upper bound)" not in image  # no image metrics for the reference
    assert "**22.50**" in image  # image tables unchanged
    lines = seg.strip().splitlines()
    assert lines[0] == "| Method | 8x Superhuman | 8x MALA | 16x Superhuman | 16x MALA |"
    assert lines[2].startswith("| HR (upper bound) | 0.1000 |") and lines[3].startswith("| BICUBIC | 1.5800 |")
    assert lines[4] == "| RCAN | 0.9000 | 0.9000 | 0.9000 | 0.9000 |"  # VOI split alone is never bolded
    assert "### 16x, MALA" in seg and "| VOI split | VOI merge | ARAND | CREMI score |" in seg
    x16_mala = seg.split("### 16x, MALA")[1]
    assert "| RCAN | 0.9000 | 0.5000 | **0.0900** | **0.3550** |" in x16_mala  # best SR ARAND and CREMI score
    assert "| HR (upper bound) | 0.1000 | 0.5000 | 0.0100 | 0.0775 |" in x16_mala  # the bound is never bold


def test_duplicate_segmentation_rows_name_the_segmenter(with_segmentation):
    dup = pd.concat([with_segmentation, pd.DataFrame(seg_rows("rcan", 8, "mala", 0.3), columns=COLUMNS)])
    with pytest.raises(EmsrError, match=r"rcan x8 has 'voi_split' \(mala\) more than once"):
        wide(dup)


def test_old_rows_without_segmenter_still_load(tmp_path, tidy):
    old = tmp_path / "old.csv"
    tidy.drop(columns="segmenter").to_csv(old, index=False)
    new = tmp_path / "seg.csv"
    pd.DataFrame(seg_rows("hr", 8, "mala", 0.2), columns=COLUMNS).to_csv(new, index=False)
    out = write([old, new], tmp_path / "lb.csv", tmp_path / "lb.md", tmp_path / "tidy.csv")
    assert set(out["segmenter"]) == {"", "mala"}
    assert "voi_split@x8/mala" in pd.read_csv(tmp_path / "lb.csv").columns


def test_markdown_names_the_device_of_each_inference_timing():
    base = {"family": "single-image", "preset": "quick", "metric": "infer_s_per_mp"}
    data = [
        {
            **base,
            "method": "bicubic",
            "display_name": "Bicubic",
            "scale": 8,
            "value": 0.02,
            "note": "cpu:Xeon x2 threads",
        },
        {
            **base,
            "method": "rcan",
            "display_name": "RCAN",
            "scale": 8,
            "value": 0.1,
            "note": "cuda:0 NVIDIA H100; flag: pretrained vgg19 missing",
        },
        {**base, "method": "rcan", "display_name": "RCAN", "scale": 16, "value": 0.3, "note": "cpu:Xeon x2 threads"},
    ]
    md = markdown(pd.DataFrame(data, columns=COLUMNS))
    assert "- cpu:Xeon x2 threads: Bicubic 8x, RCAN 16x" in md
    assert "- cuda:0 NVIDIA H100: RCAN 8x" in md


def hallucination_rows(method, scale, segmenter, precision, orphan):
    base = {
        "method": method,
        "display_name": "HR (upper bound)" if method == "hr" else method.upper(),
        "family": "reference" if method == "hr" else "single-image",
        "preset": "quick",
        "scale": scale,
        "segmenter": segmenter,
        "note": "tolerance 8 nm",
    }
    recall = precision - 0.1
    values = {
        "boundary_precision": precision,
        "boundary_recall": recall,
        "boundary_f1": 2 * precision * recall / (precision + recall),
        "invented_um_per_um2": 10 * (1 - precision),
        "erased_um_per_um2": 10 * (1.1 - precision),
        "orphan_fraction": orphan,
    }
    return [{**base, "metric": m, "value": v} for m, v in values.items()]


def test_hallucination_columns_and_tables(with_segmentation):
    rows = []
    for s in (8, 16):
        for g in ("superhuman", "mala"):
            rows += (
                hallucination_rows("hr", s, g, 0.99, float("nan"))
                + hallucination_rows("bicubic", s, g, 0.7, 0.6)
                + hallucination_rows("rcan", s, g, 0.8, 0.65)
            )
    data = pd.concat([with_segmentation, pd.DataFrame(rows, columns=COLUMNS)], ignore_index=True)
    table = wide(data).set_index("method")
    cols = [c for c in table.columns if "/" in c]
    # per scale: every segmentation score, then the hallucination scores, per segmenter
    assert (
        cols[8:14]
        == [
            "boundary_precision@x8/superhuman",
            "boundary_recall@x8/superhuman",
            "boundary_f1@x8/superhuman",
            "invented_um_per_um2@x8/superhuman",
            "erased_um_per_um2@x8/superhuman",
            "orphan_fraction@x8/superhuman",
        ]
        and len(cols) == 40
    )
    assert (
        pd.isna(table.loc["hr", "orphan_fraction@x16/mala"]) and table.loc["rcan", "orphan_fraction@x16/mala"] == 0.65
    )
    md = markdown(data)
    assert md.index("## Segmentation: VOI split") < md.index("## Hallucination")
    hall = md.split("## Hallucination")[1]
    assert hall.count("### ") == 4 and "### 16x, MALA" in hall
    assert (
        "| Method | Boundary precision | Boundary recall | Boundary F1 | Invented µm/µm² | Erased µm/µm² "
        "| Orphan fraction |" in hall
    )
    x8 = hall.split("### 8x, Superhuman")[1].split("###")[0]
    # only F1 (higher) and the orphan fraction (lower) are ranked: precision, recall, invented and
    # erased alone are won by merging or splitting everything; HR is the bound, never bold
    assert "| HR (upper bound) | 0.990 | 0.890 | 0.937 | 0.100 | 1.100 | n/a |" in x8
    assert "| BICUBIC | 0.700 | 0.600 | 0.646 | 3.000 | 4.000 | **0.600** |" in x8
    assert "| RCAN | 0.800 | 0.700 | **0.747** | 2.000 | 3.000 | 0.650 |" in x8


def test_bold_only_where_a_ranked_column_has_differing_values():
    from emsrbench.metric_specs import best_value

    assert best_value("psnr", [20.0, 21.0, float("nan")]) == 21.0
    assert best_value("lpips", [0.3, 0.2]) == 0.2
    assert best_value("psnr", [20.0]) == 20.0  # a single method is the best one
    assert best_value("cremi_score", [2.1, 2.1, 2.1]) is None  # all equal: bold on every row says nothing
    assert best_value("voi_split", [0.1, 0.5]) is None  # not ranked
    assert best_value("psnr", [float("nan")]) is None
