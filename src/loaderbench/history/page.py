"""The history page: ``loaderbench history DIR --out SITE`` writes ``SITE/index.html``, one self-contained file.

It opens from disk with no server and no network: plotly.js (the optional ``history`` extra,
``pip install loaderbench[history]``) is embedded inline, as are the graphs' data.  Top to bottom:

* the header: the hardware, how many runs of how many cases over which dates;
* the **open regressions** (:mod:`loaderbench.history.overview`), newest first, each linking to its graph;
* filters: workload, device and metric (plain ``<select>`` elements), and "only series with a change point";
  the page's query string sets them (``index.html?workload=io&metric=ttfb_s&changed=1``), so a view can be linked;
* one interactive graph per case for the chosen metric (samples/s first): each run's value over time with its
  within-run 95% interval as error bars (hover for the run, the commit and the interval), the segment means
  as a dashed step line, each change point as a vertical line labelled with its size (red: worse, green:
  better), and each environment change as a dotted line annotated with what changed.

Graphs are drawn when they are shown (a filter change draws the newly shown ones), so a history of many
cases opens quickly.
"""

from __future__ import annotations

import html
import itertools
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from loaderbench.errors import UsageError
from loaderbench.history.overview import Overview, Series
from loaderbench.history.record import parse_time
from loaderbench.history.summary import REGRESSION_COLUMNS, change_label, regression_cells
from loaderbench.measurement import now
from loaderbench.version import __version__

INSTALL_HINT = "the history page needs plotly: pip install 'loaderbench[history]'"
#: The metric whose graphs the page shows first, when the history has it.
FIRST_METRIC = "samples_per_s"
WORSE, BETTER, ENVIRONMENT = "#d62728", "#2ca02c", "#7f7f7f"
TEMPLATE = "plotly_white"


def _plotly() -> tuple[str, dict[str, Any]]:
    """plotly.js and the ``plotly_white`` template (given to every graph once, by the page's script)."""
    # plotly is an optional dependency (the history extra): imported only where the page is drawn
    try:
        import plotly.io
        import plotly.offline
    except ImportError:
        raise UsageError(f"--out: {INSTALL_HINT}, or write only the Markdown summary (--markdown).") from None
    template: dict[str, Any] = plotly.io.templates[TEMPLATE].to_plotly_json()
    return plotly.offline.get_plotlyjs(), template


def _midpoint(a: str, b: str) -> str:
    """The time halfway between two runs (where a change between them is drawn)."""
    t0, t1 = parse_time(a), parse_time(b)
    return (t0 + (t1 - t0) / 2).isoformat()


def figure(series: Series) -> dict[str, Any]:
    """One series' plotly figure (``data`` and ``layout``, the template aside), as plain JSON-able dicts:
    plotly's Python figure objects would validate every property, 0.1 s a graph (the tests validate them)."""
    pts, metric = series.points, series.metric
    runs = {
        "type": "scatter",
        "x": [p.time for p in pts],
        "y": [p.value for p in pts],
        "mode": "lines+markers",
        "name": metric.name,
        "line": {"color": "#1f77b4", "width": 1},
        "marker": {"size": 6, "symbol": "circle-open" if series.simulated else "circle"},
        "error_y": {
            "type": "data",
            "symmetric": False,
            "array": [p.hi - p.value for p in pts],
            "arrayminus": [p.value - p.lo for p in pts],
            "thickness": 1,
            "width": 2,
        },
        "customdata": [
            [p.run, (p.commit or "unknown")[:12], metric.format_value(p.lo), metric.format_value(p.hi)] for p in pts
        ],
        "hovertemplate": "%{x}<br>%{y:.4g} " + metric.unit + " (95% %{customdata[2]} .. %{customdata[3]})"
        "<br>run %{customdata[0]}<br>commit %{customdata[1]}<extra></extra>",
    }
    bounds = [0, *(cp.index for cp in series.change_points), len(pts)]
    means = [cp.before for cp in series.change_points[:1]] + [cp.after for cp in series.change_points]
    if not series.change_points and pts:
        means = [sum(p.value for p in pts) / len(pts)]
    seg_x: list[str | None] = []
    seg_y: list[float | None] = []
    for (a, b), mean in zip(itertools.pairwise(bounds), means, strict=False):
        seg_x += [pts[a].time, pts[b - 1].time, None]
        seg_y += [mean, mean, None]
    level = {
        "type": "scatter",
        "x": seg_x,
        "y": seg_y,
        "mode": "lines",
        "name": "segment mean",
        "line": {"color": "#444", "dash": "dash", "width": 1.5},
        "hoverinfo": "skip",
    }
    shapes, notes = [], []
    for cp in series.change_points:
        where = _midpoint(pts[cp.previous].time, pts[cp.index].time)
        colour = WORSE if series.worse(cp) else BETTER
        shapes.append(_vline(where, colour, "solid"))
        notes.append(
            {
                "x": where,
                "y": 1,
                "xref": "x",
                "yref": "paper",
                "yanchor": "top",
                # inside the plot, on the side of the line with more room (the mode bar is above it)
                "xanchor": "right" if cp.index > len(pts) / 2 else "left",
                "showarrow": False,
                "text": f"<b>{html.escape(change_label(series, cp))}</b>",
                "font": {"color": colour, "size": 11},
                "bgcolor": "rgba(255,255,255,0.85)",
                "hovertext": f"95% CI {cp.change_lo:+.1%} .. {cp.change_hi:+.1%}, p={cp.p_value:.1g}",
            }
        )
    for k, env in enumerate(series.environment):
        where = _midpoint(pts[env.index - 1].time, pts[env.index].time)
        shapes.append(_vline(where, ENVIRONMENT, "dot"))
        more = f" (+{len(env.changes) - 1} more)" if len(env.changes) > 1 else ""
        notes.append(
            {
                "x": where,
                "y": 0.09 * (k % 2),  # staggered, so that neighbouring labels do not overlap
                "xref": "x",
                "yref": "paper",
                "yanchor": "bottom",
                "xanchor": "right" if env.index > 0.8 * len(pts) else "left",
                "showarrow": False,
                "text": html.escape(env.changes[0] + more),
                "font": {"color": ENVIRONMENT, "size": 10},
                "hovertext": html.escape("; ".join(env.changes)),
                "bgcolor": "rgba(255,255,255,0.8)",
            }
        )
    layout = {
        "height": 290,
        "margin": {"l": 60, "r": 20, "t": 28, "b": 36},
        "showlegend": False,
        "hovermode": "closest",
        "shapes": shapes,
        "annotations": notes,
        "yaxis": {"title": {"text": metric.unit}, "tickformat": "~s" if metric.unit in ("bytes", "B/s") else ""},
        "xaxis": {"type": "date"},
    }
    return {"data": [runs, level], "layout": layout}


def _vline(x: str, colour: str, dash: str) -> dict[str, Any]:
    return {
        "type": "line",
        "x0": x,
        "x1": x,
        "xref": "x",
        "y0": 0,
        "y1": 1,
        "yref": "paper",
        "line": {"color": colour, "width": 1.5, "dash": dash},
    }


def _select(name: str, label: str, options: list[tuple[str, str]], selected: str) -> str:
    items = "".join(
        f'<option value="{html.escape(v)}"{" selected" if v == selected else ""}>{html.escape(t)}</option>'
        for v, t in options
    )
    return f'<label>{label} <select id="{name}">{items}</select></label>'


def _regressions(overview: Overview) -> str:
    if not overview.regressions:
        return "<p class=ok>No open regression: no case's newest change point made it worse.</p>"
    head = "".join(f"<th>{html.escape(c.title)}</th>" for c in REGRESSION_COLUMNS)
    rows = []
    for r in overview.regressions:
        cells = [html.escape(c) for c in regression_cells(r)]
        cells[0] = f'<a href="#{html.escape(r.series.anchor)}" data-metric="{r.series.metric.name}">{cells[0]}</a>'
        rows.append(
            f'<tr class="{"beyond" if r.beyond_threshold else "within"}"><td>' + "</td><td>".join(cells) + "</td></tr>"
        )
    beyond = sum(r.beyond_threshold for r in overview.regressions)
    return (
        f"<p>{len(overview.regressions)} open regression(s), {beyond} beyond the gate's threshold: the newest change "
        "point of each case and metric that made it worse, newest first.</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _graphs(overview: Overview) -> str:
    out = []
    for s in overview.series:
        badge = ' <span class="sim">simulated GPU</span>' if s.simulated else ""
        out.append(
            f'<div class="graph" id="{html.escape(s.anchor)}" data-workload="{html.escape(s.workload)}" '
            f'data-device="{html.escape(s.device)}" data-metric="{s.metric.name}" '
            f'data-changes="{len(s.change_points)}">'
            f"<h3>{html.escape(s.case)} <small>{html.escape(s.metric.name)} ({html.escape(s.metric.unit)}), "
            f"{len(s.points)} runs, {len(s.change_points)} change point(s){badge}</small></h3>"
            '<div class="plot"></div></div>'
        )
    return "\n".join(out)


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 1.5em 2em;color:#222}
h1{font-size:1.5em;margin:.6em 0 .2em}h2{font-size:1.2em;margin:1em 0 .3em}
h3{font-size:1em;margin:.2em 0}h3 small{font-weight:normal;color:#666}
.banner{background:#fff3cd;border:1px solid #e0c36a;padding:.4em .8em;font-weight:bold;margin:.4em 0}
table{border-collapse:collapse;font-size:.85em}th,td{border-bottom:1px solid #ddd;padding:.25em .5em;text-align:left}
tr.beyond td{background:#fde8e8}tr.within td{background:#fafafa}.ok{color:#2ca02c}
#filters{position:sticky;top:0;background:#fff;padding:.5em 0;border-bottom:1px solid #ddd;z-index:10}
#filters label{margin-right:1.2em}.graph{margin:.4em 0;border-bottom:1px solid #eee;min-width:0}
#graphs{display:grid;grid-template-columns:repeat(auto-fill,minmax(600px,1fr));column-gap:1.5em}
.sim{background:#e8e0ff;color:#4b2aa8;font-size:.8em;padding:0 .4em;border-radius:3px}
#count{color:#666}
"""

_SCRIPT = """
function shown(div){
  const w=document.getElementById('workload').value, d=document.getElementById('device').value,
        m=document.getElementById('metric').value, c=document.getElementById('changed').checked;
  return (w===''||div.dataset.workload===w)&&(d===''||div.dataset.device===d)&&div.dataset.metric===m
    &&(!c||div.dataset.changes!=='0');
}
function refresh(){
  let n=0;
  for(const div of document.querySelectorAll('.graph')){
    const on=shown(div); div.style.display=on?'':'none';
    if(on){n++; const plot=div.querySelector('.plot');
      if(!plot.dataset.drawn){const f=FIGURES[div.id]; f.layout.template=TEMPLATE;
        Plotly.newPlot(plot,f.data,f.layout,{responsive:true,displaylogo:false}); plot.dataset.drawn='1';}}
  }
  document.getElementById('count').textContent=n+' graph(s) shown';
}
for(const id of ['workload','device','metric','changed']){
  document.getElementById(id).addEventListener('change',refresh);}
for(const a of document.querySelectorAll('#regressions a')){a.addEventListener('click',()=>{
  document.getElementById('metric').value=a.dataset.metric; document.getElementById('workload').value='';
  document.getElementById('device').value=''; document.getElementById('changed').checked=false; refresh();});}
const query=new URLSearchParams(location.search);
for(const id of ['workload','device','metric']){if(query.has(id)){document.getElementById(id).value=query.get(id);}}
if(query.get('changed')==='1'){document.getElementById('changed').checked=true;}
refresh();
"""


def render(overview: Overview, *, title: str = "loaderbench history") -> str:
    """The page as one HTML document."""
    plotly_js, template = _plotly()
    figures = {s.anchor: figure(s) for s in overview.series}
    data = json.dumps(figures, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    style = json.dumps(template, separators=(",", ":")).replace("</", "<\\/")
    metrics = overview.metrics()
    first = FIRST_METRIC if any(m.name == FIRST_METRIC for m in metrics) else (metrics[0].name if metrics else "")
    hw = overview.hardware
    cases = len({s.case for s in overview.series})
    filters = " ".join(
        [
            _select("workload", "workload", [("", "all"), *((w, w) for w in overview.workloads())], ""),
            _select("device", "device", [("", "all"), *((d, d) for d in overview.devices())], ""),
            _select("metric", "metric", [(m.name, f"{m.name} ({m.unit})") for m in metrics], first),
            '<label><input type="checkbox" id="changed"> only series with a change point</label>',
            '<span id="count"></span>',
        ]
    )
    banner = (
        '<div class="banner">Simulated: the runs on this page were made up, not measured.</div>'
        if "simulated" in title.lower()
        else ""
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in overview.notes)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style>"
        f'<script type="text/javascript">{plotly_js}</script></head><body>'
        f"<h1>{html.escape(title)}</h1>{banner}"
        f"<p>{html.escape(hw.cpu_model)}, {hw.affinity_cpus} CPUs, {html.escape(', '.join(hw.gpus) or 'no GPU')} "
        f"(<code>{html.escape(hw.key)}</code>): {overview.runs} runs of {cases} cases, "
        f"{html.escape(overview.first_time[:10])} to {html.escape(overview.last_time[:10])}. "
        f"Written {html.escape(now()[:16].replace('T', ' '))} UTC by loaderbench {html.escape(__version__)}.</p>"
        + (f"<ul>{notes}</ul>" if notes else "")
        + f'<section id="regressions"><h2>Open regressions</h2>{_regressions(overview)}</section>'
        f'<section id="filters">{filters}</section>'
        f'<section id="graphs">{_graphs(overview)}</section>'
        f"<script>const FIGURES={data};const TEMPLATE={style};{_SCRIPT}</script></body></html>\n"
    )


def write_page(overview: Overview, directory: Path, *, title: str = "loaderbench history") -> Path:
    """Write ``directory/index.html`` (whole: written beside it, then renamed) and return its path."""
    text = render(overview, title=title)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".index.", suffix=".html")
        os.fchmod(fd, 0o644)  # a page to publish: readable by all, as a file written with open() would be
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        path = directory / "index.html"
        os.replace(tmp, path)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise UsageError(
            f"--out={str(directory)!r}: cannot write the page there ({exc}). Pass a writable directory."
        ) from None
    return path
