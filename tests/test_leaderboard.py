"""Leaderboard aggregation: pivot, best-in-bold, missing values reported with their reason."""

from __future__ import annotations

import pandas as pd
import pytest

from emsrbench.errors import EmsrError
from emsrbench.evaluate import COLUMNS
from emsrbench.leaderboard import markdown, wide, write


def rows(method, scale, psnr, lpips=float("nan"), note="missing: no AlexNet weights"):
    base = {"method": method, "display_name": method.upper(), "family": "single-image", "preset": "quick", "scale": scale}
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
    assert table.columns[3:].tolist() == ["psnr@x8", "ssim@x8", "lpips@x8", "parameters@x8",
                                          "psnr@x16", "ssim@x16", "lpips@x16", "parameters@x16"]
    assert table.set_index("method").loc["rcan", "psnr@x8"] == 22.5
    assert table.iloc[0]["method"] == "rcan"  # sorted by PSNR at the smallest scale


def test_markdown_bolds_the_best_per_scale_and_lists_missing(tidy):
    md = markdown(tidy)
    x8, x16 = md.split("## 16x")
    assert "**22.50**" in x8 and "20.00" in x8 and "**20.00**" not in x8
    assert "**17.00**" in x16 and "**16.50**" not in x16
    assert "n/a" in md  # LPIPS absent, shown as missing and never bolded
    assert "missing: no AlexNet weights" in md


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
