"""A run report as one self-contained HTML page: the numbers of ``<workflow>.run-report.json``
beside the run's pictures (embedded as data URIs: the page works when mailed or copied alone,
and loads nothing from any network).

Everything inserted is escaped (:func:`html.escape`); the page is built from the audience-facing
run report only, so a withheld scene is a count here as there.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.products.pictures.quicklook import label_text
from pipeline.products.publish import write_text_atomic
from pipeline.products.report import fused_tasks

CAPTIONS = {
    "quicklook": "Quicklook (true colour, 2–98 % stretch per band; no data is black)",
    "lineage": "Lineage: where each pixel came from",
    "coverage": "Coverage: scenes used per date and provider",
}
STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
.banner{font-weight:bold;text-align:center;border:2px solid #222;padding:.3em}
h1{margin-bottom:0}.status{font-weight:bold;padding:0 .4em;border-radius:3px}
.success{background:#c8efc8}.partial{background:#ffe6a6}.other{background:#f6c3c3}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.2em .6em;
text-align:left;vertical-align:top}td.n{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:flex;flex-wrap:wrap;gap:2em}.grid>div{flex:1 1 420px}
figure{margin:0 0 1.5em}img{max-width:100%;border:1px solid #ddd}
.bar{background:#6a9fd4;height:.8em;display:inline-block}
"""


def write_html_report(report: Mapping[str, Any], images: Mapping[str, Path], out: Path, *,
                      not_drawn: Mapping[str, str] | None = None) -> Path:
    """Write the page for ``report`` (a run report document) with ``images`` (name → PNG) at
    ``out`` in one rename."""
    write_text_atomic(out, render_html(report, images, not_drawn=not_drawn or {}))
    return out


def render_html(report: Mapping[str, Any], images: Mapping[str, Path], *,
                not_drawn: Mapping[str, str]) -> str:
    """The page's text."""
    title = f"Aquila run {report.get('workflow', '')} {report.get('run_id', '')}"
    numbers = "".join([
        _scenes(report), _products(report), _seconds("Seconds by step", report.get("seconds")),
        _seconds("Seconds by phase (summed over tasks)", report.get("seconds_by_phase")),
        _failures(report), _notes(report.get("notes") or ()),
    ])
    pictures = "".join(_figure(name, path) for name, path in images.items()
                       if name in CAPTIONS)
    pictures += "".join(f"<p>No {_e(name)} picture: {_e(why)}</p>"
                        for name, why in not_drawn.items() if name in CAPTIONS)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"generator\" content=\"Aquila\">"
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>{_banner(report)}"
        f"{_header(report)}<div class=\"grid\"><div>{numbers}</div><div>{pictures}</div></div>"
        f"{_banner(report)}</body></html>\n"
    )


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _header(report: Mapping[str, Any]) -> str:
    status = str(report.get("status", "unknown"))
    kind = status if status in ("success", "partial") else "other"
    error = report.get("error")
    lines = [
        f"<h1>{_e(report.get('workflow', 'run'))}</h1>",
        f"<p><span class=\"status {kind}\">{_e(status)}</span> run {_e(report.get('run_id'))}"
        f" · spec {_e(report.get('spec'))} · started {_e(report.get('started'))}"
        f" · finished {_e(report.get('finished'))}</p>",
    ]
    if error:
        lines.append(f"<p><b>error:</b> {_e(error)}</p>")
    return "".join(lines)


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[int] = ()
           ) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(
            f"<td class=\"n\">{_e(v)}</td>" if i in numeric else f"<td>{_e(v)}</td>"
            for i, v in enumerate(row)
        ) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _scenes(report: Mapping[str, Any]) -> str:
    rows = [
        ("found", report.get("scenes_found", 0)),
        ("used", len(report.get("scenes_used") or ())),
        ("rejected", len(report.get("rejected") or ())),
        ("failed to read", len(report.get("read_failures") or ())),
        ("withheld (counted, never named)", report.get("withheld", 0)),
        ("duplicates dropped", len(report.get("duplicates") or ())),
        ("time slots", report.get("time_slots", 0)),
        ("chunks", report.get("tasks", 0)),
        *_fused(report),
        ("pixels written per band", f"{int(report.get('pixels_written') or 0):,}"),
    ]
    return "<h2>Scenes</h2>" + _table(("", "count"), rows, numeric=(1,))


def _fused(report: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """A row for the tasks the chunks were computed in, where small chunks were fused 2 x 2
    (pipeline/plan/fuse.py); none where each chunk was its own task."""
    computed = fused_tasks(report.get("tasks", 0), report.get("compute_tasks", 0))
    return [("computed in tasks (2 × 2 chunks each)", computed)] if computed else []


def _label(label: Any) -> str:
    return label_text(label)


def _banner(report: Mapping[str, Any]) -> str:
    """The releasability of everything on the page, at its top and bottom: each distinct label
    of the run's products (a run without an audience has none)."""
    labels = [v for k, v in (report.get("labels") or {}).items()
              if k != "slots" and isinstance(v, Mapping)]
    texts = sorted({label_text(v) for v in labels}) or [label_text(None)]
    return f"<p class=\"banner\">releasability: {_e('; '.join(texts))}</p>"


def _products(report: Mapping[str, Any]) -> str:
    labels = report.get("labels") or {}
    rows = [(name, path, _label(labels.get(name)) if name in labels else "")
            for name, path in (report.get("products") or {}).items()]
    return "<h2>Products</h2>" + _table(("product", "path", "label"), rows)


def _seconds(title: str, seconds: Mapping[str, float] | None) -> str:
    if not seconds:
        return ""
    top = max(max(float(v) for v in seconds.values()), 1e-9)
    rows = "".join(
        f"<tr><td>{_e(k)}</td><td class=\"n\">{float(v):.2f}</td><td><span class=\"bar\" "
        f"style=\"width:{200 * float(v) / top:.0f}px\"></span></td></tr>"
        for k, v in seconds.items()
    )
    return f"<h2>{_e(title)}</h2><table><tr><th></th><th>s</th><th></th></tr>{rows}</table>"


def _failures(report: Mapping[str, Any]) -> str:
    parts = []
    read = report.get("read_failures") or ()
    if read:
        parts.append("<h2>Read failures</h2>" + _table(
            ("scene", "error", "chunks"),
            [(f.get("item"), f.get("error"), ", ".join(map(str, f.get("chunks") or ())))
             for f in read]))
    chunks = report.get("chunk_failures") or ()
    if chunks:
        parts.append("<h2>Chunk failures</h2>" + _table(
            ("chunk", "error"), [(f.get("chunk"), f.get("error")) for f in chunks]))
    rejected = report.get("rejected") or ()
    if rejected:
        parts.append("<h2>Rejected</h2>" + _table(
            ("item", "collection", "reason", "message"),
            [(r.get("item"), r.get("collection"), r.get("reason"), r.get("message"))
             for r in rejected]))
    return "".join(parts)


def _notes(notes: Iterable[str]) -> str:
    items = "".join(f"<li>{_e(n)}</li>" for n in notes)
    return f"<h2>Notes</h2><ul>{items}</ul>" if items else ""


def _figure(name: str, path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    caption = CAPTIONS[name]
    return (f"<figure><img alt=\"{_e(caption)}\" src=\"data:image/png;base64,{data}\">"
            f"<figcaption>{_e(caption)}</figcaption></figure>")
