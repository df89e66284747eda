"""Self-contained HTML report: one file, no scripts, no external assets, light/dark via
``prefers-color-scheme``, inline SVG charts, every report-derived string HTML-escaped."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from refract.axes import registry
from refract.bands import NOT_MEASURED, band
from refract.report.fields import (
    axes_of,
    axis_estimate,
    axis_keys,
    axis_problems,
    axis_score,
    axis_status,
    band_probabilities_of,
    band_text,
    band_undecided,
    composite_estimate,
    confidence_label,
    diagnosis_of,
    display_model,
    fmt,
    fmt_interval,
    framework_label,
    interval_of,
    is_measured,
    is_self_check,
    is_verified,
    methods_note,
    report_composite,
    report_status,
    uncertainty_of,
)
from refract.report.io import dumps_report, write_text
from refract.report.kit import bullets, esc, kld_percentiles, kv_table, pill
from refract.report.svg import score_bars
from refract.uncertainty import band_phrase

PAGE_CSS = """
:root {
  color-scheme: light dark;
  --bg: #f6f7f9; --card: #ffffff; --fg: #1f2328; --muted: #656d76; --border: #d0d7de;
  --grid: #d8dee4; --code: #f0f2f5;
  --excellent: #1a7f37; --pass: #0969da; --degraded: #b07800; --fail: #cf222e;
  --same: #2da44e; --diff: #f5b3b8; --divmark: #a40e26; --hist: #6f42c1;
  --zone-alpha: 0.10; --pill-fg: #ffffff;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #0d1117; --card: #161b22; --fg: #e6edf3; --muted: #8d96a0; --border: #30363d;
    --grid: #30363d; --code: #1c2128;
    --excellent: #3fb950; --pass: #58a6ff; --degraded: #d29922; --fail: #f85149;
    --same: #2ea043; --diff: #6e2b30; --divmark: #ff7b72; --hist: #a371f7;
    --zone-alpha: 0.16; --pill-fg: #0d1117;
  }
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", sans-serif; }
main { max-width: 980px; margin: 0 auto; padding: 28px 20px 60px; }
main.wide { max-width: 1320px; }
.table-wrap { overflow-x: auto; }
h1 { font-size: 1.45rem; margin: 0 0 4px; word-break: break-all; }
h2 { font-size: 1.12rem; margin: 0 0 10px; }
h3 { font-size: 0.98rem; margin: 16px 0 6px; }
section, header.card { background: var(--card); border: 1px solid var(--border);
  border-radius: 10px; padding: 18px 22px; margin: 0 0 18px; }
.sub { color: var(--muted); margin: 0; }
.muted { color: var(--muted); fill: var(--muted); }
code, pre { font: 12.5px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
code { background: var(--code); padding: 1px 5px; border-radius: 4px; word-break: break-all; }
pre { background: var(--code); padding: 12px; border-radius: 8px; overflow: auto;
  max-height: 560px; }
.hero { display: flex; gap: 26px; align-items: center; flex-wrap: wrap; margin-top: 14px; }
.hero-text { flex: 1 1 300px; }
.composite { font-size: 3.1rem; font-weight: 700; line-height: 1; }
.pill { display: inline-block; padding: 3px 12px; border-radius: 999px; font-weight: 700;
  font-size: 0.85rem; letter-spacing: 0.04em; color: var(--pill-fg); }
.pill.small { padding: 1px 8px; font-size: 0.72rem; }
.pill.b-excellent { background: var(--excellent); } .pill.b-pass { background: var(--pass); }
.pill.b-degraded { background: var(--degraded); } .pill.b-fail { background: var(--fail); }
.pill.b-skipped, .pill.b-unscored, .pill.b-not-measured { background: var(--muted); }
.pill.b-error { background: #8250df; } .pill.b-invalid { background: var(--fail); }
.banner { border-left: 4px solid var(--degraded); padding: 6px 12px; margin: 10px 0 0;
  background: var(--code); border-radius: 4px; }
.banner.error { border-left-color: #8250df; }
.c-excellent { color: var(--excellent); } .c-pass { color: var(--pass); }
.c-degraded { color: var(--degraded); } .c-fail { color: var(--fail); }
.c-not-measured { color: var(--muted); }
.summary { font-size: 1.02rem; }
table { border-collapse: collapse; width: 100%; font-size: 0.9rem; }
th, td { text-align: left; padding: 5px 10px 5px 0; border-bottom: 1px solid var(--border);
  vertical-align: top; }
th { color: var(--muted); font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.kv td:first-child { color: var(--muted); width: 34%; word-break: break-word; }
table.kv td { word-break: break-all; }
ul { margin: 6px 0; padding-left: 20px; }
li { margin: 3px 0; }
.chart { max-width: 100%; height: auto; display: block; margin: 8px 0; }
.chart.wide { width: 100%; }
.chart text { fill: var(--fg); font-size: 12px; }
.chart .tick, .chart .muted { fill: var(--muted); font-size: 11px; }
.chart .small { font-size: 10.5px; }
.chart .value { font-weight: 600; }
.chart .grid { stroke: var(--grid); stroke-width: 1; }
.chart .bar.b-excellent { fill: var(--excellent); } .chart .bar.b-pass { fill: var(--pass); }
.chart .bar.b-degraded { fill: var(--degraded); } .chart .bar.b-fail { fill: var(--fail); }
.chart .zone { fill-opacity: var(--zone-alpha); }
.chart .z-excellent { fill: var(--excellent); } .chart .z-pass { fill: var(--pass); }
.chart .z-degraded { fill: var(--degraded); } .chart .z-fail { fill: var(--fail); }
.chart .same { fill: var(--same); } .chart .diff { fill: var(--diff); }
.chart .divmark { stroke: var(--divmark); stroke-width: 2; }
.chart .ok { fill: var(--same); }
.chart .hist { fill: var(--hist); fill-opacity: 0.85; }
.chart line.mark-mean { stroke: var(--fail); stroke-width: 1.5; stroke-dasharray: 4 3; }
.chart line.mark-median { stroke: var(--pass); stroke-width: 1.5; stroke-dasharray: 2 2; }
.chart text.mark-mean { fill: var(--fail); font-weight: 600; }
.chart text.mark-median { fill: var(--pass); font-weight: 600; }
.chart .label-bg { paint-order: stroke; stroke: var(--card); stroke-width: 4px; }
.chart .cell-empty { fill: var(--code); stroke: var(--border); }
.chart .cell.degraded { stroke: var(--fg); stroke-width: 2.5; }
.chart .cell-text { fill: #fff; font-weight: 600; font-size: 11.5px; }
.grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr));
  gap: 4px 28px; }
details summary { cursor: pointer; color: var(--muted); font-weight: 600; }
footer { color: var(--muted); font-size: 0.82rem; text-align: center; }
.note { color: var(--muted); font-size: 0.88rem; }
"""


GENERATOR_META_PREFIX = '<meta name="generator" content="refract'
"""Every page refract writes carries ``<meta name="generator" content="refract VERSION">``:
how a later run recognises a page it may replace (:mod:`refract.outputs`)."""


def _generator_meta() -> str:
    from refract import __version__

    return f'{GENERATOR_META_PREFIX} {esc(__version__)}">\n'


def page(title: str, body: str, *, wide: bool = False) -> str:
    """Wrap an (already escaped) body into a complete standalone HTML document."""
    main = '<main class="wide">' if wide else "<main>"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        + _generator_meta()
        + '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="color-scheme" content="light dark">\n'
        f"<title>{esc(title)}</title>\n<style>{PAGE_CSS}</style>\n</head>\n<body>\n"
        f"{main}\n"
        f"{body}\n</main>\n</body>\n</html>\n"
    )


def _flatten(obj: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.extend(_flatten(value, name + "."))
        else:
            out.append((name, value))
    return out


def _axis_badge(report: Mapping[str, Any], key: str, axis: Mapping[str, Any]) -> str:
    status = axis_status(report, key)
    score = axis_score(report, key)
    if status in ("skipped", "missing"):
        return pill(None, True)
    if status == "error":
        return pill("error", True)
    if status == "invalid":
        return pill("FAIL", True) + " " + pill("invalid", True)
    if status == "unscored":
        return pill("unscored", True)
    return pill(str(axis.get("band") or band(score) or "skipped"), True)


def _axis_heading(report: Mapping[str, Any], key: str, axis: Mapping[str, Any]) -> str:
    score = axis_score(report, key)
    status = axis_status(report, key)
    excluded = (
        ' <span class="note">(excluded from the composite)</span>'
        if axis.get("in_composite") is False and status not in ("skipped", "missing")
        else ""
    )
    desc = axis.get("description")
    desc_html = f'<p class="sub">{esc(desc)}</p>' if desc else ""
    method = axis.get("method")
    if method:
        version = axis.get("method_version")
        desc_html += (
            f'<p class="note">method <code>{esc(method)}</code>'
            f"{' v' + esc(version) if version else ''}</p>"
        )
    if status == "invalid":
        desc_html += (
            f'<p class="banner error">Invalid: '
            f"{esc(axis.get('invalid_reason') or 'candidate produced non-finite logits')}. "
            "Scored 0, so the composite is 0.</p>"
        )
    return (
        f"<h2>{esc(_axis_title(key, ' · '))} — "
        f"{esc(fmt(score))} {_axis_badge(report, key, axis)}{excluded}</h2>{desc_html}"
    )


# ----------------------------------------------------------------------------- sections


def _header(report: Mapping[str, Any]) -> str:
    comp = report_composite(report)
    comp_band = band_text(report)
    cls = "c-" + "-".join(comp_band.lower().split())
    measured = is_measured(report)
    banners = ""
    summary = report.get("summary") if measured else NOT_MEASURED
    if not measured and axis_problems(report):
        banners += (
            '<p class="banner error"><strong>Why:</strong> '
            + esc("; ".join(axis_problems(report))) + ".</p>"
        )
    if is_self_check(report):
        banners += (
            '<p class="banner"><strong>Self-check: reference vs reference — not a quantization '
            "score.</strong> The candidate is the reference itself; this run measures "
            "refract's own run-to-run noise (a negative control).</p>"
        )
    if report_status(report) != "ok" and measured:
        banners += (
            '<p class="banner error"><strong>Partial report:</strong> '
            + esc("; ".join(p for p in axis_problems(report) if " error: " in p))
            + ". The composite covers the other axes.</p>"
        )
    banners += _undecided_banner(report)
    if not is_verified(report):
        banners += (
            '<p class="note">unverified: this report carries no input hashes (model, corpus, '
            "prompts).</p>"
        )
    title = "REFRACT self-check" if is_self_check(report) else "REFRACT"
    return (
        '<header class="card">'
        f"<h1>{esc(title)} · {esc(display_model(report))}</h1>"
        f'<p class="sub">candidate <code>{esc(report.get("candidate") or "?")}</code> vs '
        f"reference <code>{esc(report.get('reference') or '?')}</code></p>"
        '<div class="hero">'
        f'<div class="composite {esc(cls)}">{esc(fmt(comp))}</div>'
        f'<div class="hero-text">{pill(comp_band)}{_composite_shares(report, comp_band)}'
        f'<div class="summary">{esc(summary or "")}</div>'
        f'<div class="note">composite: harmonic mean of the axes that scored, 0–100, higher '
        f"is closer to the reference · {esc(framework_label(report))}"
        f"{' · ' + esc(report['timestamp']) if report.get('timestamp') else ''}</div></div>"
        f"</div>{banners}</header>"
    )


def _composite_shares(report: Mapping[str, Any], comp_band: str) -> str:
    """Beside the band: its probabilities and the composite's interval (nothing without)."""
    est = composite_estimate(report)
    if interval_of(est) is None:
        return ""
    phrase = band_phrase(comp_band, band_probabilities_of(est)).removeprefix(comp_band).strip()
    return (f' <span class="note band-probabilities">{esc(phrase)} · '
            f"{esc(confidence_label(report))} interval {esc(fmt_interval(est))}</span>")


def _undecided_banner(report: Mapping[str, Any]) -> str:
    if not band_undecided(report):
        return ""
    level = confidence_label(report)
    return (f'<p class="banner undecided"><strong>Band not decided at {esc(level)}:</strong> '
            f"no band holds {esc(level)} of the bootstrap replicates; the composite's interval "
            "crosses a band boundary.</p>")


def _uncertainty(report: Mapping[str, Any]) -> str:
    """The intervals as a table, with how they were made (nothing without a block)."""
    unc = uncertainty_of(report)
    if unc is None:
        return ""
    rows: list[tuple[str, float | None, Mapping[str, Any]]] = []
    comp = composite_estimate(report)
    if comp is not None:
        rows.append(("Composite", report_composite(report), comp))
    for key in axis_keys(report):
        est = axis_estimate(report, key)
        if est is not None:
            rows.append((_axis_title(key, " · "), axis_score(report, key), est))
    body = ""
    for name, score, est in rows:
        n = est.get("n_units")
        units = f"{n} {est.get('unit')}{'s' if n != 1 else ''}" if n is not None else "—"
        probs = band_phrase(band(score), band_probabilities_of(est))
        body += (f"<tr><td>{esc(name)}</td><td class=num>{esc(fmt(score))}</td>"
                 f"<td class=num>{esc(fmt_interval(est))}</td><td>{esc(units)}</td>"
                 f"<td>{esc(est.get('interval_method') or '—')}</td><td>{esc(probs)}</td></tr>")
    level = esc(confidence_label(report))
    table = (f"<table class=\"uncertainty\"><tr><th></th><th class=num>score</th>"
             f"<th class=num>{level} interval</th><th>units</th><th>interval method</th>"
             f"<th>band probabilities</th></tr>{body}</table>") if body else ""
    desc = unc.get("description")
    note = f"{methods_note(report)}." + (f" Method: {desc}." if desc else "")
    return f"<h3>Uncertainty</h3>{table}<p class=\"note methods\">{esc(note)}</p>"


def _scores(report: Mapping[str, Any]) -> str:
    axes = axes_of(report)
    comp = report_composite(report)
    items: list[tuple[str, float | None, str]] = [
        ("Composite", comp, "" if comp is not None else "not measured")]
    intervals = [interval_of(composite_estimate(report))]
    for key in axis_keys(report):
        axis = axes.get(key, {})
        status = axis_status(report, key)
        known = registry.get(key)
        own = known.score_note(report, axis) if known is not None else None
        note = own or ("excluded" if axis.get("in_composite") is False else "")
        if status in ("skipped", "missing"):
            note = "skipped"
        elif status == "error":
            note = "error"
        elif status == "invalid":
            note = "invalid"
        items.append((_axis_title(key, " · "), axis_score(report, key), note))
        intervals.append(interval_of(axis_estimate(report, key)))
    diag = bullets(diagnosis_of(report))
    detail = report.get("composite_detail")
    notes: list[str] = []
    if isinstance(detail, Mapping):
        notes.extend(str(n) for n in detail.get("notes") or [])
        if detail.get("floor_score") is not None:
            ok = detail.get("floor_ok")
            notes.append(
                f"Noise floor (ref-vs-ref composite): {fmt(detail.get('floor_score'))} — "
                f"{'ok' if ok else 'NOT ok'} (minimum {fmt(detail.get('floor_min'), 1)})."
            )
    top_notes = report.get("notes")
    if isinstance(top_notes, list):
        notes.extend(str(n) for n in top_notes)
    return (
        "<section><h2>Scores</h2>"
        f"{score_bars(items, intervals)}{_uncertainty(report)}"
        f"<h3>Diagnosis</h3>{diag or '<p class=note>none</p>'}"
        f"{'<h3>Notes</h3>' + bullets(notes, 'note') if notes else ''}"
        "</section>"
    )


def _errored(report: Mapping[str, Any], key: str, axis: Mapping[str, Any]) -> str:
    return (
        f"<section>{_axis_heading(report, key, axis)}<p class=\"banner error\">This axis "
        f"failed at run time: {esc(axis.get('error'))}. It is left out of the composite; "
        "the other axes are kept.</p></section>"
    )


def _skipped(report: Mapping[str, Any], key: str, axis: Mapping[str, Any]) -> str:
    reason = axis.get("reason")
    why = f" ({esc(reason)})" if reason else ""
    return f'<section>{_axis_heading(report, key, axis)}<p class="note">Skipped{why}.</p></section>'


def _details(report: Mapping[str, Any]) -> str:
    pairs: list[tuple[str, Any]] = [
        ("model", report.get("model")),
        ("reference", report.get("reference")),
        ("candidate", report.get("candidate")),
        ("timestamp", report.get("timestamp")),
        ("schema", report.get("schema")),
        ("framework", framework_label(report)),
    ]
    for section in ("environment", "model_info", "timings", "provenance", "settings"):
        value = report.get(section)
        if isinstance(value, Mapping):
            pairs += [(f"{section}.{k}", v) for k, v in _flatten(value)]
        elif section == "provenance":
            pairs.append(("provenance", "unverified: no input hashes in this report"))
    repro = report.get("repro_command")
    repro_html = f"<h3>Reproduce</h3><pre>{esc(repro)}</pre>" if repro else ""
    return f"<section><h2>Run details</h2>{kv_table(pairs)}{repro_html}</section>"


def _raw(report: Mapping[str, Any]) -> str:
    raw = dumps_report(report).decode("utf-8")
    return (
        f"<section><details><summary>Raw JSON ({len(raw):,} bytes)</summary>"
        f"<pre>{esc(raw)}</pre></details></section>"
    )


def _axis_title(key: str, sep: str) -> str:
    axis = registry.get(key)
    return f"{axis.letter}{sep}{axis.title}" if axis is not None else key


def _section(report: Mapping[str, Any], key: str, entry: Mapping[str, Any]) -> str:
    """An axis's section: its heading, the axis's own body, its notes."""
    axis = registry.get(key)
    body = axis.html_body(report, entry) if axis is not None else kv_table(
        [(k, v) for k, v in entry.items() if not isinstance(v, (Mapping, list))])
    notes = (axis.section_notes(entry) if axis is not None
             else [str(n) for n in entry.get("notes") or []])
    return f"<section>{_axis_heading(report, key, entry)}{body}{bullets(notes, 'note')}</section>"



def render_html(report: Mapping[str, Any]) -> str:
    """The whole report as one standalone HTML document."""
    axes = axes_of(report)
    parts = [_header(report), _scores(report)]
    for key in axis_keys(report):
        axis = axes.get(key)
        if axis is None:
            continue
        if axis_status(report, key) == "error":
            parts.append(_errored(report, key, axis))
        elif axis_score(report, key) is None:
            parts.append(_skipped(report, key, axis))
        else:
            parts.append(_section(report, key, axis))
    parts.append(_details(report))
    parts.append(_raw(report))
    parts.append(
        "<footer>Generated by refract. Scores rank the KV-cache configuration against "
        "the reference on the same model, not the model itself.</footer>"
    )
    kind = "REFRACT self-check" if is_self_check(report) else "REFRACT"
    title = f"{kind} · {display_model(report)} · {report.get('candidate') or ''}"
    return page(title, "\n".join(parts))


def write_html(report: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Render and write atomically."""
    return write_text(render_html(report), path)


__all__ = ["PAGE_CSS", "kld_percentiles", "kv_table", "page", "pill", "render_html", "write_html"]
