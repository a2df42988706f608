"""The HTML report: ``results/report/index.html``, one self-contained page.

:func:`build` joins the tidy metric tables that exist with the plan (which rows should exist)
and the failure records (why the others do not), then writes the page and its figures:

- :mod:`.data`: rows (ok / failed / not run) from tidy tables, plan and failure records;
- :mod:`.tables`: sortable leaderboard per scale, ablation tables;
- :mod:`.plots`: seaborn figures; :mod:`.panels`: crops of LR / SR / HR with overlays, and
  the invented / erased boundaries of each segmentation (hallucination panels);
- :mod:`.provenance`: code, packages, machine, data; :mod:`.html`: the page itself.
"""

from __future__ import annotations

import io
import shutil
from html import escape
from pathlib import Path

import pandas as pd
import yaml

from .. import failures as failure_records
from ..io import atomic_path
from . import html, panels, plots, provenance, tables
from .data import Planned, Row, build_rows, columns, flags, load_tidy

__all__ = ["build"]


def wide_csv(rows: list[Row]) -> str:
    """The page's rows as CSV: one line per method (variant) and scale, failed rows included."""
    cols = columns(rows)
    recs = []
    for r in rows:
        rec = {
            "method": r.method,
            "variant": r.variant,
            "display_name": r.display_name,
            "preset": r.preset,
            "scale": r.scale,
            "status": r.status,
            "reason": "; ".join(f"{f.job}: {f.reason}" for f in r.failures),
        }
        for m, s in cols:
            rec[f"{m}:{s}" if s else m] = r.value(m, s)
        recs.append(rec)
    buf = io.StringIO()
    pd.DataFrame(recs).to_csv(buf, index=False)
    return buf.getvalue()


def _readme(folder: Path) -> str:
    path = folder / "README.md"
    if not path.exists():
        return ""
    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("# ")]
    return "\n".join(lines).strip()


def method_notes(plan, rows: list[Row], tidy: pd.DataFrame) -> list[tuple[str, str]]:
    out = []
    for name, method in plan.methods.items():
        mine = [r for r in rows if r.method == name]
        facts = {
            "citation": method.citation,
            "family": method.family + (f" ({method.slices} sections)" if method.slices > 1 else ""),
            "scales run": ", ".join(f"{r.scale}x: {r.status}" for r in mine if not r.variant),
        }
        if method.notes:
            facts["notes"] = method.notes
        notes = tidy.loc[tidy["method"] == name, "note"]
        method_flags = sorted({f for n in notes for f in n.split("; ") if f.startswith("flag:")})
        body = html.kv(facts)
        if method_flags:
            body += '<ul class="flags">' + "".join(f"<li>{escape(f)}</li>" for f in method_flags) + "</ul>"
        fails = [f for r in mine for f in r.failures]
        if fails:
            body += (
                '<ul class="failures">'
                + "".join(f"<li><b>{escape(f.job)}</b>: <code>{escape(f.reason)}</code></li>" for f in fails)
                + "</ul>"
            )
        readme = _readme(method.folder)
        if readme:
            body += (
                "<details><summary>What differs from the published method (README)</summary>"
                f"<pre>{escape(readme)}</pre></details>"
            )
        out.append((f"{method.display_name} ({name})", body))
    return out


def hallucination_definitions(plan, tidy: pd.DataFrame) -> list[tuple[str, str]]:
    """The hallucination scores defined under the leaderboard, when the rows have them
    (README, Hallucination scores; emsrbench.segment.hallucination)."""
    if not tidy["metric"].isin(["boundary_precision", "orphan_fraction"]).any():
        return []
    h = plan.hallucination()
    tol, iou = f"{float(h['tolerance_nm']):g} nm", f"{float(h['iou']):g}"
    return [
        (
            "Hallucination scores",
            "Boundaries of each network's segmentation (first threshold) against the ground "
            "truth, per section: a boundary is a crack between 4-neighbouring pixels with different labels, "
            "its length the pixel size along it; matched when a boundary of the other side lies within "
            f"{tol} (ground-truth label 0 is not scored). HR's own segmentation is the upper bound.",
        ),
        (
            "Invented, Erased (µm/µm²)",
            f"segmentation boundary with no ground-truth boundary within {tol} (structure "
            f"drawn that is not there), ground-truth boundary with no segmentation boundary within {tol} (structure "
            "missed); length in µm per µm² of labelled section area. Not ranked: merging everything invents nothing.",
        ),
        (
            "Boundary precision, recall, F1",
            "1 - invented / segmentation boundary length, 1 - erased / ground-truth "
            "boundary length, and their harmonic mean 2PR/(P+R). Only F1 is ranked (higher is better): a segmentation "
            "that merges everything has precision 1, one that splits everything recall 1.",
        ),
        (
            "Orphan fraction",
            f"share of the segmentation's 3D segments with no segment of IoU >= {iou} in the same "
            "network's segmentation of HR (invented objects, and pieces of split ones). Lower is better; none for HR "
            "itself.",
        ),
    ]


def _panels(plan, rows: list[Row], settings: dict, workdir: Path) -> tuple[list, list[str]]:
    out, skipped = [], []
    if int(settings.get("auto_regions", 2)) == 0 and not settings.get("regions"):
        return [], ["Panels are off (report.panels.auto_regions: 0 and no regions)."]
    segment_dir = workdir / plan.results / "segment"
    hallucination = plan.hallucination()
    tolerance = float(hallucination["tolerance_nm"]) if hallucination["enabled"] else None
    for scale in plan.scales:
        test = Path(plan.test_file(scale))
        ok = [r for r in rows if r.scale == scale and r.status == "ok" and not r.variant]
        methods = [
            (r.label, (r.method, plan.sr_file(r.method, scale)))
            for r in ok
            if (workdir / plan.sr_file(r.method, scale)).exists()
        ]
        if not (workdir / test).exists():
            skipped.append(f"{scale}x: no panels, the test file {test} does not exist.")
            continue
        if not methods:
            skipped.append(f"{scale}x: no panels, no method has an SR volume at this scale.")
            continue
        made, _ = panels.panels(
            scale,
            str(workdir / test),
            [(lbl, (m, str(workdir / p))) for lbl, (m, p) in methods],
            settings,
            segment_dir,
            tolerance_nm=tolerance,
        )
        out += made
    return out, skipped


def _published(plan, rows: list[Row]) -> tuple:
    """(heading, table) of the published reference rows (config ``reference_rows``); () without."""
    if plan.published is None:
        return ()
    from ..metric_specs import spec
    from ..published import Comparison

    comparison = Comparison(plan.published, plan.published_rows()["incomparable"])
    heading = f"{spec(plan.published.metric).label} (Table 1 layout) beside the {comparison.label} rows"
    return (heading, tables.published(rows, comparison))


def build(
    plan,
    metric_paths: list[str],
    html_path: str | Path,
    figures_dir: str | Path,
    repo: str | Path = ".",
    workdir: str | Path = ".",
    bootstrap: list[str] | None = None,
) -> Path:
    """Write the page and its figures (PNG files, for ``snakemake --report``); returns the page's path."""
    workdir = Path(workdir)
    tidy = load_tidy(metric_paths)
    if bootstrap:  # paired tie marks against the best method, as in the leaderboard
        from ..leaderboard import ties

        tidy["tie"] = ties(tidy, bootstrap)
    records = failure_records.load(workdir / plan.results)
    planned = Planned(
        {n: (m.display_name, m.family, plan.preset_name(n)) for n, m in plan.methods.items()}, plan.scales, plan.preset
    )
    rows = build_rows(tidy, planned, records)
    settings = plan.config.get("report", {}) or {}

    figs, skipped = plots.draw(rows)
    panel_list, panels_skipped = _panels(plan, rows, settings.get("panels", {}) or {}, workdir)

    ok = [r for r in rows if r.status == "ok" and not r.variant]
    failed = [r for r in rows if r.status != "ok" and not r.variant]
    subtitle = (
        f"{len({r.method for r in ok})} method(s) ran, {len(ok)} method x scale row(s)"
        + (f", {len(failed)} failed or not run" if failed else "")
        + f"; preset {plan.preset}"
        + "".join(f", {m} {p}" for m, p in sorted((plan.config.get("method_presets") or {}).items()))
        + ", "
        + f"data: {plan.data['source']}"
    )
    sr_files = {
        (r.method, r.scale): workdir / plan.sr_file(r.method, r.scale)
        for r in ok
        if (workdir / plan.sr_file(r.method, r.scale)).exists()
    }
    page = html.Page(
        title=settings.get("title") or "emsrbench report",
        subtitle=subtitle,
        boards=[(s, tables.leaderboard(rows, s)) for s in plan.scales],
        definitions=hallucination_definitions(plan, tidy),
        csv=wide_csv(rows),
        failures=[(f.job, f.reason, f.log) for f in records],
        flags=flags(tidy),
        plots=figs,
        plots_skipped=skipped,
        panels=panel_list,
        panels_skipped=panels_skipped,
        published=_published(plan, rows),
        ablations=tables.ablations(rows),
        notes=method_notes(plan, rows, tidy),
        provenance=[
            ("Run", provenance.run_settings(plan.config)),
            ("Code", {"git commit": provenance.git(repo), "repository": str(Path(repo).resolve())}),
            ("Packages", provenance.packages()),
            ("Machine that built the report", provenance.machine()),
            (
                "Devices and precision of the inference jobs",
                provenance.devices(sr_files) or {"(none)": "no SR volumes"},
            ),
        ],
        config_text=yaml.safe_dump(plan.config, sort_keys=False),
    )
    figures_dir = Path(figures_dir)
    if figures_dir.exists():
        shutil.rmtree(figures_dir)
    figures_dir.mkdir(parents=True)
    for p in figs:
        (figures_dir / f"{p.name}.png").write_bytes(p.png)
    for p in panel_list:
        (figures_dir / f"{p.name}.png").write_bytes(p.png)
    with atomic_path(html_path) as tmp:
        Path(tmp).write_text(html.render(page), encoding="utf-8")
    return Path(html_path)
