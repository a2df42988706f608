"""One self-contained HTML page: inline CSS and JS, every image a ``data:`` URI.

Nothing on the page refers to another file or host, so it opens offline, from an e-mail
attachment or a cluster's scratch directory copied to a laptop.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from html import escape

# A backslash at a line's end continues the line: the string has no newline there.
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#fff}
header{background:#1d2f4f;color:#fff;padding:18px 28px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;opacity:.85}nav{padding:8px 28px;background:#eef2f8;position:sticky;top:0;z-index:2}
nav a{margin-right:16px;color:#1d2f4f;text-decoration:none;font-weight:600}main{padding:8px 28px 40px}
h2{border-bottom:2px solid #d5dce8;padding-bottom:4px;margin-top:30px}h3{margin:18px 0 6px}
table{border-collapse:collapse;margin:6px 0 14px;font-size:13px}th,td{border:1px solid #d5dce8;padding:4px 8px}
th{background:#f4f6fa;vertical-align:bottom}th.group{text-align:center;background:#e4e9f2}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}td.best{font-weight:700;background:#dff3e2}
td.missing{color:#8a93a3}td.non-finite{color:#8a5a00}td.failed-cell{color:#b3261e;font-weight:600}
tr.reference td{background:#f3f0fa;font-style:italic}tr.failed td{background:#fdecea}\
tr.not-run td{background:#f6f6f6;color:#6b7280}td.reason{color:#b3261e;text-align:left}
.ci{display:block;font-size:11px;color:#5b6475;font-weight:400}.tie{color:#1b7a3a;font-weight:700;cursor:help}\
td.tied{background:#f0f8f1}.legend{font-size:12px;color:#5b6475;margin:4px 0 12px}.warn{color:#c77700;cursor:help}
table.sortable th:not(.group){cursor:pointer;user-select:none}\
table.sortable th[aria-sort=ascending]::after{content:" \\25B4"}
table.sortable th[aria-sort=descending]::after{content:" \\25BE"}
figure{margin:10px 0 22px}figure img{max-width:100%;border:1px solid #d5dce8}\
figcaption{color:#4b5566;font-size:13px;max-width:1100px}
dl.kv{display:grid;grid-template-columns:max-content auto;gap:2px 14px;margin:6px 0}dl.kv dt{font-weight:600}\
dl.kv dd{margin:0}
.failures li,.flags li{margin:2px 0}.failures code{color:#b3261e}\
pre{background:#f4f6fa;padding:8px;overflow:auto;font-size:12px}
.no-signal{color:#8a5a00;font-weight:600;margin:4px 0 8px}.skipped{color:#6b7280;font-style:italic}\
.scroll{overflow-x:auto;max-width:100%}a.download{font-size:13px}
tr.published td{background:#fff8e6;color:#5c4a12}
"""

# Sorts a table by the clicked column of its last header row: numbers by data-v, text by
# content; missing values and failed rows stay at the bottom in both directions.
JS = """
(function(){
function key(row,i){var c=row.cells[i];if(!c)return null;var v=c.getAttribute('data-v');
 if(v===null){if(c.classList.contains('num')||c.classList.contains('reason'))return null;v=c.textContent;}
 var n=Number(v);return (v!==''&&!isNaN(n))?n:v.toLowerCase();}
document.querySelectorAll('table.sortable').forEach(function(t){
 var heads=t.tHead.rows[t.tHead.rows.length-1].cells;
 Array.prototype.forEach.call(heads,function(th,i){
  th.tabIndex=0;
  var sort=function(){var asc=th.getAttribute('aria-sort')!=='ascending';
   Array.prototype.forEach.call(heads,function(h){h.removeAttribute('aria-sort');});
   th.setAttribute('aria-sort',asc?'ascending':'descending');
   var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows);
   rows.sort(function(a,b){var ka=key(a,i),kb=key(b,i);
    if(ka===null&&kb===null)return 0;if(ka===null)return 1;if(kb===null)return -1;
    var c=(typeof ka==='number'&&typeof kb==='number')?ka-kb:String(ka).localeCompare(String(kb));
    return asc?c:-c;});
   rows.forEach(function(r){body.appendChild(r);});};
  th.addEventListener('click',sort);
  th.addEventListener('keydown',function(e){if(e.key==='Enter')sort();});
 });
});
})();
"""


def data_uri(payload: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


@dataclass
class Page:
    title: str
    subtitle: str
    boards: list = field(default_factory=list)  # (scale, table html)
    definitions: list = field(default_factory=list)  # (term, text): metrics defined under the leaderboard
    csv: str = ""
    failures: list = field(default_factory=list)  # (job, reason, log)
    flags: tuple = ((), ())  # (missing-value reasons, per-row flags)
    plots: list = field(default_factory=list)  # report.plots.Plot
    plots_skipped: list = field(default_factory=list)
    panels: list = field(default_factory=list)  # report.panels.Panel
    panels_skipped: list = field(default_factory=list)
    published: tuple = ()  # (heading, table html): published reference rows beside the run's
    ablations: list = field(default_factory=list)  # (caption, table html)
    notes: list = field(default_factory=list)  # (title, html)
    provenance: list = field(default_factory=list)  # (heading, {key: value})
    config_text: str = ""


def kv(d: dict) -> str:
    return (
        '<dl class="kv">'
        + "".join(f"<dt>{escape(str(k))}</dt><dd>{escape(str(v))}</dd>" for k, v in d.items())
        + "</dl>"
    )


def _figure(png: bytes, alt: str, caption: str, cls: str) -> str:
    return (
        f'<figure class="{cls}"><img class="{cls}" alt="{escape(alt)}" src="{data_uri(png, "image/png")}">'
        f"<figcaption><b>{escape(alt)}.</b> {escape(caption)}</figcaption></figure>"
    )


def render(page: Page) -> str:
    sections = []
    board = [
        '<section id="leaderboard"><h2>Leaderboard</h2>',
        "<p>Click a column header to sort. Best value per column in bold (quality metrics only; cost is not "
        "ranked; <i>HR (upper bound)</i> is the segmentation of the HR volume itself, a reference, not ranked; "
        "none in a segmenter's columns that carry no signal, as the sentence under the table says). "
        "Hover a value for its note, a <i>n/a</i> for why it is missing.</p>",
    ]
    if page.csv:
        board.append(
            f'<p><a class="download" download="leaderboard.csv" href="{data_uri(page.csv.encode(), "text/csv")}">'
            "Download these rows as CSV</a></p>"
        )
    for scale, table in page.boards:
        board += [f"<h3>{scale}x</h3>", table]
    if page.definitions:
        board.append(
            '<dl class="kv legend">'
            + "".join(f"<dt>{escape(t)}</dt><dd>{escape(d)}</dd>" for t, d in page.definitions)
            + "</dl>"
        )
    if page.published:
        heading, table = page.published
        board += [f"<h3>{escape(heading)}</h3>", table]
    if not page.boards:
        board.append('<p class="skipped">No rows: no method and scale is planned.</p>')
    missing, flagged = page.flags
    if missing or flagged:
        board.append(
            '<h3>Missing or non-finite values and flags</h3><ul class="flags">'
            + "".join(f"<li>{escape(x)}</li>" for x in list(missing) + list(flagged))
            + "</ul>"
        )
    board.append("</section>")
    sections.append(("leaderboard", "Leaderboard", "".join(board)))

    if page.failures:
        items = "".join(
            f"<li><b>{escape(job)}</b>: <code>{escape(reason)}</code>"
            + (f" (log: {escape(log)})" if log else "")
            + "</li>"
            for job, reason, log in page.failures
        )
        sections.append(
            (
                "failures",
                "Failed jobs",
                f'<section id="failures"><h2>Failed jobs</h2>'
                "<p>Jobs whose last run failed (records under <code>failed/</code> in the results "
                f'directory; a job\'s next success removes its record).</p><ul class="failures">{items}</ul></section>',
            )
        )

    plots = ['<section id="plots"><h2>Plots</h2>']
    plots += [_figure(p.png, p.title, p.caption, "plot") for p in page.plots]
    plots += [f'<p class="skipped">Not drawn: {escape(s)}.</p>' for s in page.plots_skipped]
    sections.append(("plots", "Plots", "".join(plots) + "</section>"))

    panels = ['<section id="panels"><h2>Visual comparison</h2>']
    # image panels have class "panel", hallucination panels "hallucination" (the browser test counts both)
    panels += [_figure(p.png, p.title, p.caption, "panel" if p.kind == "images" else p.kind) for p in page.panels]
    panels += [f'<p class="skipped">{escape(s)}</p>' for s in page.panels_skipped]
    sections.append(("panels", "Visual comparison", "".join(panels) + "</section>"))

    if page.ablations:
        abl = ['<section id="ablations"><h2>Ablations</h2>']
        abl += [f"<h3>{escape(cap)}</h3>{table}" for cap, table in page.ablations]
        sections.append(("ablations", "Ablations", "".join(abl) + "</section>"))

    notes = ['<section id="notes"><h2>Methods</h2>'] + [f"<h3>{escape(t)}</h3>{body}" for t, body in page.notes]
    sections.append(("notes", "Methods", "".join(notes) + "</section>"))

    prov = ['<section id="provenance"><h2>Provenance</h2>']
    prov += [f"<h3>{escape(h)}</h3>{kv(d)}" for h, d in page.provenance]
    if page.config_text:
        prov.append(f"<details><summary>Full configuration</summary><pre>{escape(page.config_text)}</pre></details>")
    sections.append(("provenance", "Provenance", "".join(prov) + "</section>"))

    nav = "".join(f'<a href="#{sid}">{escape(name)}</a>' for sid, name, _ in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(page.title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{escape(page.title)}</h1><p>{escape(page.subtitle)}</p></header><nav>{nav}</nav><main>"
        + "".join(html for _, _, html in sections)
        + f"</main><script>{JS}</script></body></html>\n"
    )
