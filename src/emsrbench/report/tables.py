"""HTML tables: the sortable leaderboard per scale and the ablation tables of GPEMSR.

Cells carry their raw value in ``data-v`` for the page's sorter; missing values sort last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from html import escape

from ..gpemsr.config import ABLATED as GPEMSR_ABLATED
from ..gpemsr.config import OWN_VARIANT as GPEMSR_OWN
from ..leaderboard import TIE_MARK
from ..metric_specs import GROUP_LABELS, SEGMENTER_LABELS, best_value, fmt, is_finite, is_missing, spec
from ..no_signal import Findings, capitalised
from ..no_signal import find as find_no_signal
from ..published import Comparison
from ..stats.coverage import coverage_sentence
from ..stats.intervals import block_lengths
from .data import REFERENCE, Row, as_tidy, columns

# The tie mark of a value tied with the best (emsrbench.leaderboard.ties) and its legend.
TIE_TITLE = "tied: not shown to differ from the best (paired block bootstrap, Holm-corrected over the column)"
TIE_LEGEND_HTML = (
    f"{TIE_TITLE}. The best is the value in bold; the bootstrap p-value of each other method's "
    "difference to it (same resampled test blocks for both), Holm-corrected over the column's "
    "comparisons, is above 1 - confidence. Tied is not equal: on a few correlated sections a real "
    "difference can stay unshown. Ranked metrics only; the HR row is not compared. The small "
    "[low, high] under a value is its own confidence interval (notes in each cell's tooltip; a "
    "missing interval says why there)."
)


def _header(metric: str, segmenter: str, inline: bool = False) -> str:
    m = spec(metric)
    arrow = {1: " &uarr;", -1: " &darr;"}.get(m.better, "")
    sub = ""
    if segmenter:
        sub = f" ({escape(segmenter)})" if inline else f"<br><small>{escape(segmenter)}</small>"
    title = {1: "higher is better", -1: "lower is better"}.get(m.better, "not ranked")
    return f'<th class="num" title="{escape(metric)}: {title}">{escape(m.label)}{arrow}{sub}</th>'


def _best(rows: list[Row], cols, silenced=lambda metric, seg: False) -> dict:
    """(metric, segmenter) -> the best value of a ranked column; none for a ``silenced`` column
    (no signal: emsrbench.no_signal)."""
    best = {}
    for metric, seg in cols:
        if silenced(metric, seg):
            continue
        v = best_value(metric, [r.value(metric, seg) for r in rows if r.status == "ok" and not r.reference])
        if v is not None:
            best[(metric, seg)] = v
    return best


def _cell(row: Row, metric: str, seg: str, best: dict) -> str:
    cell = row.cells.get((metric, seg))
    if cell is None or is_missing(cell.value):
        seg_failure = next(
            (f for f in row.failures if seg and seg in (f.wildcards.get("net"), f.wildcards.get("segmenter"))), None
        )
        if seg_failure is not None:
            return (
                f'<td class="num failed-cell" title="{escape(seg_failure.job + ": " + seg_failure.reason)}">failed</td>'
            )
        why = cell.note if cell is not None else "not computed for this row"
        return f'<td class="num missing" title="{escape(why)}">{escape(fmt(metric, math.nan, why))}</td>'
    if not is_finite(cell.value):
        return _infinite_cell(metric, cell)
    classes = ["num"]
    if (metric, seg) in best and cell.value == best[(metric, seg)] and not row.reference:
        classes.append("best")
    ci = ""
    if not (is_missing(cell.ci_low) or is_missing(cell.ci_high)):
        ci = f'<span class="ci">[{fmt(metric, cell.ci_low)}, {fmt(metric, cell.ci_high)}]</span>'
    tie = ""
    if cell.tie == "tied" and not row.reference:
        classes.append("tied")
        tie = f' <span class="tie" title="{escape(TIE_TITLE)}">{TIE_MARK}</span>'
    title = f' title="{escape(cell.note)}"' if cell.note else ""
    return f'<td class="{" ".join(classes)}" data-v="{cell.value!r}"{title}>{fmt(metric, cell.value)}{tie}{ci}</td>'


def _infinite_cell(metric: str, cell) -> str:
    """An infinite value (the PSNR of identical images) with its reason: sorted as the number
    it is, never bold, tied or given an interval (no comparison is made with it)."""
    sort_as = "Infinity" if cell.value > 0 else "-Infinity"  # what the page's sorter reads as a number
    return (
        f'<td class="num non-finite" data-v="{sort_as}" title="{escape(cell.note)}">'
        f"{escape(fmt(metric, cell.value, cell.note))}</td>"
    )


def _name_cell(row: Row) -> str:
    warn = ""
    if row.status == "ok" and row.failures:
        reasons = "; ".join(f"{f.job}: {f.reason}" for f in row.failures)
        warn = f' <span class="warn" title="{escape(reasons)}">&#9888;</span>'
    return f'<td data-v="{escape(row.label)}">{escape(row.label)}{warn}</td>'


def _no_signal_paragraphs(findings: Findings, scale: int, segmenters: list[str]) -> str:
    """One sentence per segmenter whose columns carry no signal at ``scale``, under the table."""
    verdicts = [findings.verdict(scale, seg) for seg in segmenters if findings.verdict(scale, seg)]
    return "".join(
        f'<p class="no-signal">{escape(capitalised(v.sentence))}. Nothing in the {escape(v.segmenter)} '
        "columns is bold.</p>"
        for v in verdicts
    )


def leaderboard(rows: list[Row], scale: int) -> str:
    """The leaderboard at one scale: every planned method, failed or not-run rows last. A
    segmenter's columns that carry no signal (emsrbench.no_signal) bold nothing, and a sentence
    under the table says why."""
    rows = [r for r in rows if r.scale == scale and not r.variant]
    cols = columns(rows, scale)
    findings = find_no_signal(as_tidy(rows))
    best = _best(rows, cols, lambda metric, seg: findings.silenced(scale, seg, metric))
    groups = []
    for metric, seg in cols:
        label = GROUP_LABELS[spec(metric).group] + (f" ({seg})" if seg else "")
        if seg and findings.verdict(scale, seg):
            label += ": no signal"
        if groups and groups[-1][0] == label:
            groups[-1][1] += 1
        else:
            groups.append([label, 1])
    top = '<th colspan="3"></th>' + "".join(f'<th colspan="{n}" class="group">{escape(g)}</th>' for g, n in groups)
    head = "<th>Method</th><th>Family</th><th>Preset</th>" + "".join(_header(m, s) for m, s in cols)
    body = []
    for r in rows:
        lead = _name_cell(r) + f"<td>{escape(r.family)}</td><td>{escape(r.preset)}</td>"
        if r.status != "ok":
            if r.failures:
                text = "failed: " + "; ".join(f"{f.job}: {f.reason}" for f in r.failures)
            else:
                text = "not run: no metrics and no failure record (run the workflow for this row)"
            body.append(
                f'<tr class="{r.status.replace(" ", "-")}" data-status="{escape(r.status)}">{lead}'
                f'<td class="reason" colspan="{max(len(cols), 1)}">{escape(text)}</td></tr>'
            )
        else:
            ref = ' class="reference"' if r.reference else ""
            body.append(f'<tr data-status="ok"{ref}>{lead}' + "".join(_cell(r, m, s, best) for m, s in cols) + "</tr>")
    legend = ""
    if any(c.tie for r in rows for c in r.cells.values()):
        used = block_lengths(c.note for r in rows for c in r.cells.values())
        text = TIE_LEGEND_HTML + (f" Block length used: {used}." if used else "") + " " + coverage_sentence()
        legend = f'<p class="legend"><span class="tie">{TIE_MARK}</span> {escape(text)}</p>'
    silent = _no_signal_paragraphs(findings, scale, list(dict.fromkeys(seg for _, seg in cols if seg)))
    return (
        f'<div class="scroll"><table class="board sortable" id="leaderboard-x{scale}"><thead><tr>{top}</tr>'
        f"<tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>{silent}{legend}"
    )


# -- published reference rows (issue #13) -------------------------------------------------


def published(rows: list[Row], comparison: Comparison) -> str:
    """The published rows beside this run's in the study's Table 1 layout (the reference's
    metric per scale x segmenter), ordered as the Markdown leaderboard's: HR, bicubic, then
    this run's order, each of this run's rows followed by its method's published row (cells:
    the published value and ours - published), then the published rows of methods this run
    did not run. Nothing is bold: the published values are not compared with each other, and
    the metric is not ranked here."""
    metric = comparison.reference.metric
    mine = [r for r in rows if not r.variant and r.status == "ok"]
    present = sorted({(r.scale, seg) for r in mine for (m, seg) in r.cells if m == metric and seg})
    cols, left_out = comparison.columns_in(present)
    by_method: dict[str, dict[int, Row]] = {}
    for r in mine:
        by_method.setdefault(r.method, {})[r.scale] = r
    first = {REFERENCE: 0, "bicubic": 1}
    order = sorted(by_method, key=lambda m: first.get(m, 2))  # stable: this run's order after HR, bicubic
    order += [m for m in comparison.reference.methods if m not in by_method]
    head = "<th>Method</th>" + "".join(
        f'<th class="num">{s}x {escape(SEGMENTER_LABELS.get(g, g))}</th>' for s, g in cols
    )
    body = []
    for method in order:
        ours = by_method.get(method, {})
        if ours:
            label = next(iter(ours.values())).label
            cells = "".join(
                _cell(ours[s], metric, g, {}) if s in ours else '<td class="num missing">n/a</td>' for s, g in cols
            )
            ref = ' class="reference"' if method == REFERENCE else ""
            body.append(f"<tr{ref}><td>{escape(label)}</td>{cells}</tr>")
        if method not in comparison.reference.methods:
            continue
        display = next(iter(ours.values())).display_name if ours else comparison.reference.row_name(method)
        cells = []
        for s, g in cols:
            value = comparison.value(method, s, g)
            our = ours[s].value(metric, g) if s in ours else math.nan
            title = escape(comparison.reference.source(value)) if value else ""
            text = escape(comparison.cell_text(value, our)) if value else ""
            cells.append(f'<td class="num" title="{title}">{text}</td>')
        body.append(f'<tr class="published"><td>{escape(comparison.row_label(display))}</td>{"".join(cells)}</tr>')
    legend = f'<p class="legend">{escape(comparison.legend(left_out))}</p>'
    return (
        f'<div class="scroll"><table class="board published-rows" id="published-{escape(comparison.reference.name)}">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>{legend}"
    )


# -- ablations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Component:
    label: str  # column header
    variant: str  # the variant that removes it
    on: str
    off: str


@dataclass(frozen=True)
class Ablation:
    title: str
    components: tuple
    metrics: tuple  # metric keys; "voi_split" expands to one column per segmenter


# Variant names come from GPEMSR's config (ABLATED: the variant switching off each setting), the
# one list of them. Table 2 shows stage I alone (prior_psnr / prior_lpips: its VQGAN's
# reconstruction of the HR sections, emsrbench.gpemsr.reconstruct), then the SR result.
ABLATIONS = [
    Ablation(
        "Attention in the stage-I encoder and decoder (as supplement Table 2)",
        (
            Component("Encoder", GPEMSR_ABLATED["encoder_attention"], "w Att.", "w/o Att."),
            Component("Decoder", GPEMSR_ABLATED["decoder_attention"], "w Att.", "w/o Att."),
        ),
        ("prior_psnr", "prior_lpips", "psnr", "lpips"),
    ),
    Ablation(
        "The mask in the MPF module (as supplement Table 5)",
        (Component("Method", GPEMSR_ABLATED["mpf_mask"], "w mask", "w/o mask"),),
        ("psnr", "lpips", "voi_split"),
    ),
    Ablation(
        "Stage-III modules (as supplement Fig. 6)",
        (
            Component("MPF", GPEMSR_ABLATED["mpf"], "&#10003;", "&#10007;"),
            Component("POD", GPEMSR_ABLATED["pod"], "&#10003;", "&#10007;"),
            Component("3DA", GPEMSR_ABLATED["tda"], "&#10003;", "&#10007;"),
        ),
        ("psnr", "ssim", "lpips", "voi_split"),
    ),
]
KNOWN_VARIANTS = {c.variant for a in ABLATIONS for c in a.components}
# Rows of variant "full" are the model's own stage I rows (emsrbench.gpemsr.reconstruct): the
# tables add them to the model's row instead of showing a variant.
OWN_VARIANT = GPEMSR_OWN


def _expand(metrics, rows: list[Row]) -> list[tuple[str, str]]:
    segs = sorted({s for r in rows for (m, s) in r.cells if m == "voi_split" and s})
    out = []
    for m in metrics:
        out += [(m, s) for s in segs] if spec(m).group == "segmentation" else [(m, "")]
    return [c for c in out if any(c in r.cells for r in rows)]


def _ablation_table(ab: Ablation, full: Row | None, variants: list[Row]) -> str:
    by_variant = {r.variant: r for r in variants}
    order = [by_variant[c.variant] for c in ab.components if c.variant in by_variant]
    table_rows = order + ([full] if full is not None else [])
    cols = _expand(ab.metrics, table_rows)
    best = _best(table_rows, cols)
    head = "".join(f"<th>{c.label}</th>" for c in ab.components) + "".join(_header(m, s, inline=True) for m, s in cols)
    body = []
    for r in table_rows:
        marks = "".join(f"<td>{c.off if r.variant == c.variant else c.on}</td>" for c in ab.components)
        if r.status != "ok":
            body.append(
                f'<tr class="failed">{marks}<td class="reason" colspan="{max(len(cols), 1)}">failed: '
                f"{escape('; '.join(f.reason for f in r.failures))}</td></tr>"
            )
            continue
        body.append(f"<tr>{marks}" + "".join(_cell(r, m, s, best) for m, s in cols) + "</tr>")
    return f'<table class="ablation"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def ablations(rows: list[Row]) -> list[tuple[str, str]]:
    """(caption, table HTML) for every method x scale that has variant rows."""
    out = []
    variant_rows = [r for r in rows if r.variant]
    for method, scale in sorted({(r.method, r.scale) for r in variant_rows}):
        mine = [r for r in variant_rows if (r.method, r.scale) == (method, scale)]
        full = next(
            (r for r in rows if (r.method, r.scale, r.variant) == (method, scale, "") and r.status == "ok"), None
        )
        own = next((r for r in mine if r.variant == OWN_VARIANT), None)
        if (
            own is not None
        ):  # the model's stage I rows join its own row (copies: the leaderboard's rows stay as they are)
            mine.remove(own)
            base = full if full is not None else own
            full = replace(base, variant="", cells={**own.cells, **base.cells})
        if not mine:
            continue
        name = mine[0].display_name
        for ab in ABLATIONS:
            present = [r for r in mine if r.variant in {c.variant for c in ab.components}]
            if present:
                out.append((f"{name} {scale}x: {ab.title}", _ablation_table(ab, full, present)))
        other = [r for r in mine if r.variant not in KNOWN_VARIANTS]
        if other:
            out.append((f"{name} {scale}x: other variants", _other_table(other + ([full] if full else []))))
    return out


def _other_table(rows: list[Row]) -> str:
    cols = [c for c in columns(rows) if spec(c[0]).group in ("image", "segmentation")]
    best = _best(rows, cols)
    head = "<th>Variant</th>" + "".join(_header(m, s) for m, s in cols)
    body = "".join(
        f"<tr><td>{escape(r.variant or '(full model)')}</td>" + "".join(_cell(r, m, s, best) for m, s in cols) + "</tr>"
        for r in rows
    )
    return f'<table class="ablation"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
