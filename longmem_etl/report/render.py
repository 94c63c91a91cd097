"""The report as one self-contained HTML page: inline SVG charts (matplotlib) and the same numbers
as tables, no script, no external reference (no CDN, font, image or stylesheet URL), printable.

matplotlib draws with its object API (``matplotlib.figure.Figure`` + the SVG canvas, never
``pyplot``: no global state, safe in Dagster's threads), glyphs as paths (no font files), fixed
hash salt (same report → same bytes). Its SVG prologue (XML declaration, DOCTYPE naming a DTD URL,
RDF metadata naming the Dublin Core / Creative Commons URLs) is cut, and the namespace attributes
are dropped (the HTML parser puts inline ``<svg>`` in the SVG namespace itself), so the page
contains no URL of its own at all. Labels from the data are escaped for HTML and for matplotlib's
mathtext (``$``), and cut to 40 characters in charts (tables show them whole).
"""

from __future__ import annotations

import html
import io
import re
import warnings
from typing import Any

from longmem_etl.report import Report
from longmem_etl.report.figures import Figure, TenantReport

TOP = 12  # bars per chart; the rest are summed into "(other)" where that is meaningful
COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]
CHARTS = (
    "created_by_collection",
    "created_by_category",
    "container_tags",
    "importance",
    "text_length",
    "shares",
    "duplicates",
    "personal_data",
    "rejected",
    "changes",
)

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:2px solid #4C72B0;padding-bottom:.2em;margin-top:2em}
h3{font-size:1.1em;margin:1.4em 0 .3em}
table{border-collapse:collapse;margin:.4em 0 1em;font-size:12px;display:block;overflow-x:auto;max-width:100%}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}
figure.chart{margin:.5em 0;page-break-inside:avoid;break-inside:avoid}
figure.chart svg{max-width:100%;height:auto}
.note{color:#555;font-size:12px}
details{margin:.3em 0 1em}
section.tenant{page-break-before:always;break-before:page}
section.tenant:first-of-type{page-break-before:auto;break-before:auto}
@media print{body{max-width:none;margin:0}details{display:block}}
"""


# ------------------------------------------------------------------------------------------------
# charts


def _label(value: Any, width: int = 40) -> str:
    text = "(none)" if value is None else str(value)
    if len(text) > width:
        text = text[: width - 1] + "…"
    return text.replace("\\", "\\\\").replace("$", r"\$")


_PROLOGUE = re.compile(r"\A.*?(?=<svg\b)", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)
_XMLNS = re.compile(r'\s+xmlns(?::\w+)?="[^"]*"')


def _svg(fig: Any) -> str:
    from matplotlib.backends.backend_svg import FigureCanvasSVG

    FigureCanvasSVG(fig)
    buf = io.StringIO()
    with warnings.catch_warnings():  # a glyph DejaVu Sans lacks (CJK, emoji) draws as a box
        warnings.simplefilter("ignore", UserWarning)
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = _PROLOGUE.sub("", buf.getvalue(), count=1)
    text = _METADATA.sub("", text, count=1)
    return _XMLNS.sub("", text)


def _figure(
    height: float = 3.2, width: float = 9.0, left: float = 0.08, right: float = 0.98
) -> Any:
    import matplotlib

    matplotlib.rcParams["svg.hashsalt"] = "longmem-etl-report"
    matplotlib.rcParams["svg.fonttype"] = "path"
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width, height), dpi=72)
    # fixed margins: a layout engine or bbox_inches="tight" draws everything twice
    bottom = min(0.9 / height, 0.4)
    fig.subplots_adjust(left=left, right=right, top=1 - 0.45 / height, bottom=bottom)
    return fig, fig.add_subplot(1, 1, 1)


def _empty(ax: Any, title: str, why: str = "nothing to show") -> None:
    ax.set_title(title, loc="left", fontsize=11)
    ax.text(0.5, 0.5, why, ha="center", va="center", fontsize=12, color="#777")
    ax.set_axis_off()


def _barh(title: str, labels: list[Any], series: dict[str, list[float]], xlabel: str) -> str:
    """Horizontal bars, one row per label; several series are stacked."""
    fig, ax = _figure(height=max(1.8, 0.3 * len(labels) + 1.2), left=0.34)
    if not labels:
        _empty(ax, title)
        return _svg(fig)
    ys = list(range(len(labels)))[::-1]
    left = [0.0] * len(labels)
    for i, (name, values) in enumerate(series.items()):
        ax.barh(ys, values, left=left, color=COLORS[i % len(COLORS)], label=_label(name))
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_yticks(ys, [_label(v) for v in labels], fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_title(title, loc="left", fontsize=11)
    if len(series) > 1:
        ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return _svg(fig)


def _bars(title: str, labels: list[str], values: list[float], xlabel: str, ylabel: str) -> str:
    fig, ax = _figure(height=3.0)
    if not labels:
        _empty(ax, title)
        return _svg(fig)
    ax.bar(range(len(labels)), values, color=COLORS[0])
    ax.set_xticks(range(len(labels)), [_label(v) for v in labels], fontsize=8, rotation=30)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, loc="left", fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    return _svg(fig)


def _weekly(title: str, rows: list[dict[str, Any]]) -> str:
    """Stacked weekly bars, the TOP-1 biggest values by name and the rest as "(other)"."""
    fig, ax = _figure(height=3.4, right=0.78)
    if not rows:
        _empty(ax, title, "no memory has created_at")
        return _svg(fig)
    totals: dict[str, int] = {}
    for r in rows:
        totals[r["value"]] = totals.get(r["value"], 0) + r["memories"]
    keep = sorted(totals, key=lambda v: (-totals[v], v))[: TOP - 4]
    weeks = sorted({r["week"] for r in rows})
    idx = {w: i for i, w in enumerate(weeks)}
    names = [*keep, "(other)"] if len(totals) > len(keep) else keep
    data = {n: [0] * len(weeks) for n in names}
    for r in rows:
        name = r["value"] if r["value"] in keep else "(other)"
        data[name][idx[r["week"]]] += r["memories"]
    # one filled area per series (a bar per week per series would be thousands of patches)
    ax.stackplot(
        range(len(weeks)),
        *[data[name] for name in names],
        labels=[_label(name, 24) for name in names],
        colors=[COLORS[i % len(COLORS)] for i in range(len(names))],
        step="mid",
    )
    ax.set_xlim(-0.5, len(weeks) - 0.5)
    step = max(1, len(weeks) // 12)
    ticks = list(range(0, len(weeks), step))
    ax.set_xticks(ticks, [str(weeks[i]) for i in ticks], fontsize=8, rotation=30)
    ax.set_ylabel("memories created")
    ax.set_title(title, loc="left", fontsize=11)
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return _svg(fig)


def charts(t: TenantReport) -> dict[str, str]:
    """Every chart of one tenant's report, as inline SVG text (always all of ``CHARTS``)."""
    f = {k: v.records() for k, v in t.figures.items()}
    weekly = f["created_weekly"]
    dist = f["distributions"]
    ov = f["overview"][0]
    n = ov["memories"] or 0
    shares = ["pinned", "archived", "expired", "superseded", "stale"]
    dup = f["duplicates"][:TOP]
    pii: dict[str, dict[str, int]] = {}
    for r in f["personal_data"]:
        pii.setdefault(r["kind"], {"text": 0, "metadata": 0})[r["field"]] += r["matches"]
    pii_kinds = [
        k for k in sorted(pii, key=lambda k: -sum(pii[k].values())) if sum(pii[k].values())
    ]
    rej = f["rejected"][:TOP]
    chg = f["changes"][:TOP]
    return {
        "created_by_collection": _weekly(
            "Memories created per week, by collection",
            [r for r in weekly if r["dimension"] == "collection"],
        ),
        "created_by_category": _weekly(
            "Memories created per week, by category",
            [r for r in weekly if r["dimension"] == "category"],
        ),
        "container_tags": _barh(
            "Container tags (most used)",
            [r["container_tag"] for r in f["container_tags"]],
            {"memories": [r["memories"] for r in f["container_tags"]]},
            "memories",
        ),
        "importance": _bars(
            "Importance",
            [r["bucket"] for r in dist if r["measure"] == "importance"],
            [r["memories"] for r in dist if r["measure"] == "importance"],
            "importance (bucket start)",
            "memories",
        ),
        "text_length": _bars(
            "Text length",
            [r["bucket"] for r in dist if r["measure"] == "text_length"],
            [r["memories"] for r in dist if r["measure"] == "text_length"],
            "characters",
            "memories",
        ),
        "shares": _barh(
            f"Shares of {n:,} memories",
            shares if n else [],
            {"% of memories": [100.0 * (ov[s] or 0) / n for s in shares] if n else []},
            "% of memories",
        ),
        "duplicates": _barh(
            "Duplicates per collection (copies beyond the first)",
            [r["collection"] for r in dup],
            {
                "exact": [r["exact_duplicates"] for r in dup],
                "normalised only": [
                    r["normalised_duplicates"] - r["exact_duplicates"] for r in dup
                ],
            },
            "memories",
        ),
        "personal_data": _barh(
            "Personal-data findings by kind (matches)",
            pii_kinds,
            {
                "in text": [pii[k]["text"] for k in pii_kinds],
                "in metadata": [pii[k]["metadata"] for k in pii_kinds],
            },
            "matches",
        ),
        "rejected": _barh(
            "Rejected rows by stage and reason",
            [f"{r['stage']}: {r['reason']}" for r in rej],
            {"rows": [r["rows"] for r in rej]},
            "rows",
        ),
        "changes": _barh(
            f"Changes since {t.previous}" if t.previous else "Changes (no earlier snapshot)",
            [r["collection"] for r in chg],
            {
                "added": [r["added"] for r in chg],
                "removed": [r["removed"] for r in chg],
                "changed": [r["changed"] for r in chg],
            },
            "memories",
        ),
    }


# ------------------------------------------------------------------------------------------------
# HTML


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def table(fig: Figure, limit: int | None = 200) -> str:
    """An HTML table of a figure (numbers right-aligned); the first ``limit`` rows."""
    if not fig.rows:
        return '<p class="note">(no rows)</p>'
    head = "".join(f"<th>{_e(c)}</th>" for c in fig.columns)
    body = []
    for row in fig.rows[:limit]:
        cells = []
        for v in row:
            if isinstance(v, bool) or v is None:
                cells.append(f"<td>{_e(v)}</td>")
            elif isinstance(v, int):
                cells.append(f'<td class="n">{v:,}</td>')
            elif isinstance(v, float):
                cells.append(f'<td class="n">{v:,.2f}</td>')
            else:
                cells.append(f"<td>{_e(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = ""
    if limit is not None and len(fig.rows) > limit:
        more = f'<p class="note">… {len(fig.rows) - limit:,} more rows in --json</p>'
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{more}"


def vertical(fig: Figure) -> str:
    """A one-row figure (the overview) as name / value lines: readable at any width."""
    if len(fig.rows) != 1:
        return table(fig)
    (row,) = fig.rows
    return table(
        Figure(["figure", "value"], [[c, v] for c, v in zip(fig.columns, row, strict=True)])
    )


def _chart(name: str, svg: str) -> str:
    return f'<figure class="chart" data-chart="{name}">{svg}</figure>'


def _details(title: str, fig: Figure) -> str:
    return f"<details><summary>{_e(title)} (table)</summary>{table(fig)}</details>"


SECTIONS = """
<h3>Growth</h3>{created_by_collection}{created_by_category}{t_weekly}
<h3>Container tags</h3>{container_tags}{t_tags}
<h3>Importance and text length</h3>{importance}{text_length}{t_dist}
<h3>Pinned, archived, expired, superseded, stale</h3>{shares}
<p class="note">Expired: expires_at at or before the snapshot time; stale: updated_at (else
created_at) more than {stale_days} days before it.</p>
<h3>Duplicates</h3>{duplicates}
<p class="note">Within a collection and container tag, like the <code>dedup</code> step. Exact: the same
text; normalised: the same dedup key (Unicode NFKC, case folded, whitespace collapsed), i.e. what
<code>dedup</code> would remove.</p>{t_dup}
<h3>Personal data</h3>{personal_data}
<p class="note">The <code>redact</code> step's detectors, counting only; examples have every letter and
digit masked.</p>{t_pii}
<h3>Rejected rows</h3>{rejected}{t_rej}
<h3>Changes</h3>{changes}{t_chg}
<h3>Migrations from this root</h3>{t_mig}
"""


def tenant_html(t: TenantReport, stale_days: int) -> str:
    svgs = {k: _chart(k, v) for k, v in charts(t).items()}
    f = t.figures
    body = SECTIONS.format(
        **svgs,
        stale_days=stale_days,
        t_weekly=_details("created per week", f["created_weekly"]),
        t_tags=table(f["container_tags"]),
        t_dist=_details("distributions", f["distributions"]),
        t_dup=table(f["duplicates"], 50),
        t_pii=table(f["personal_data"]),
        t_rej=table(f["rejected"], 50),
        t_chg=table(f["changes"], 50),
        t_mig=table(f["migrations"]),
    )
    prev = f" · compared with {_e(t.previous)}" if t.previous else ""
    return (
        f'<section class="tenant" data-tenant="{_e(t.tenant)}">'
        f"<h2>Tenant {_e(t.tenant)}</h2>"
        f'<p class="note">snapshot {_e(t.snapshot)} ({_e(t.path)}){prev}</p>'
        f"{vertical(f['overview'])}{body}</section>"
    )


def render_html(report: Report) -> str:
    """The whole page (UTF-8 text)."""
    sections = "".join(tenant_html(t, report.stale_days) for t in report.tenants)
    names = ", ".join(t.tenant for t in report.tenants)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>longmem-etl report: {_e(names)}</title><style>{CSS}</style></head><body>"
        f"<h1>Memories report</h1>"
        f'<p class="note">root {_e(report.root)} · generated {_e(report.generated_at)} by longmem-etl report'
        f" · {len(report.tenants)} tenant(s): {_e(names)}</p>"
        f"{sections}</body></html>\n"
    )
