"""Self-contained HTML report: one file, no scripts, no external assets, light/dark via
``prefers-color-scheme``, inline SVG charts, every report-derived string HTML-escaped."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from refract.report.fields import (
    as_float,
    axes_of,
    axis_problems,
    axis_score,
    axis_status,
    band_text,
    diagnosis_of,
    fmt,
    fmt_kld,
    framework_label,
    is_measured,
    is_self_check,
    is_verified,
    model_name,
    needle_keyword,
    noise_floor,
    report_composite,
    report_status,
)
from refract.report.io import dumps_report, write_text
from refract.report.svg import (
    esc,
    kld_histogram,
    kld_percentile_chart,
    rniah_heatmap,
    score_bars,
    trajectory_chart,
)
from refract.scoring.composite import AXES, AXIS_LETTERS, AXIS_TITLES, NOT_MEASURED, band

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


def pill(band_name: str | None, small: bool = False) -> str:
    name = band_name or "skipped"
    size = " small" if small else ""
    cls = "-".join(name.lower().split())
    return f'<span class="pill{size} b-{esc(cls)}">{esc(name)}</span>'


def kv_table(pairs: Sequence[tuple[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{esc(k)}</td><td>{_cell(v)}</td></tr>" for k, v in pairs if not _blank(v)
    )
    return f'<table class="kv">{rows}</table>' if rows else ""


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, (str, list, tuple)) and len(value) == 0)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return esc(f"{value:.0f}" if value.is_integer() else f"{value:.5g}")
    if isinstance(value, (list, tuple)):
        return esc(", ".join(str(v) for v in value))
    return esc(value)


def _flatten(obj: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.extend(_flatten(value, name + "."))
        else:
            out.append((name, value))
    return out


def _bullets(items: Sequence[str], cls: str = "") -> str:
    if not items:
        return ""
    attr = f' class="{cls}"' if cls else ""
    return f"<ul{attr}>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>"


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
        f"<h2>{esc(AXIS_LETTERS[key])} · {esc(AXIS_TITLES[key])} — "
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
    if not is_verified(report):
        banners += (
            '<p class="note">unverified: this report carries no input hashes (model, corpus, '
            "prompts).</p>"
        )
    title = "REFRACT self-check" if is_self_check(report) else "REFRACT"
    return (
        '<header class="card">'
        f"<h1>{esc(title)} · {esc(model_name(report))}</h1>"
        f'<p class="sub">candidate <code>{esc(report.get("candidate") or "?")}</code> vs '
        f"reference <code>{esc(report.get('reference') or '?')}</code></p>"
        '<div class="hero">'
        f'<div class="composite {esc(cls)}">{esc(fmt(comp))}</div>'
        f'<div class="hero-text">{pill(comp_band)}'
        f'<div class="summary">{esc(summary or "")}</div>'
        f'<div class="note">composite: harmonic mean of the axes that scored, 0–100, higher '
        f"is closer to the reference · {esc(framework_label(report))}"
        f"{' · ' + esc(report['timestamp']) if report.get('timestamp') else ''}</div></div>"
        f"</div>{banners}</header>"
    )


def _scores(report: Mapping[str, Any]) -> str:
    axes = axes_of(report)
    comp = report_composite(report)
    items: list[tuple[str, float | None, str]] = [
        ("Composite", comp, "" if comp is not None else "not measured")]
    for key in AXES:
        axis = axes.get(key, {})
        status = axis_status(report, key)
        note = "excluded" if axis.get("in_composite") is False else ""
        if key == "rniah" and axis.get("confidence") == "low":
            note = "low confidence"
        if status in ("skipped", "missing"):
            note = "skipped"
        elif status == "error":
            note = "error"
        elif status == "invalid":
            note = "invalid"
        elif key == "gtm" and noise_floor(report) is not None:
            note = f"floor {fmt(noise_floor(report).get('score'), 1)}"  # type: ignore[union-attr]
        items.append((f"{AXIS_LETTERS[key]} · {AXIS_TITLES[key]}", axis_score(report, key), note))
    diag = _bullets(diagnosis_of(report))
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
        f"{score_bars(items)}"
        f"<h3>Diagnosis</h3>{diag or '<p class=note>none</p>'}"
        f"{'<h3>Notes</h3>' + _bullets(notes, 'note') if notes else ''}"
        "</section>"
    )


def _gtm(report: Mapping[str, Any], axis: Mapping[str, Any]) -> str:
    rate = as_float(axis.get("full_match_rate"))
    stats = kv_table(
        [
            ("prompts", axis.get("n_prompts")),
            ("tokens per generation (n_predict)", axis.get("n_tokens_each")),
            ("full-match rate", None if rate is None else f"{rate * 100:.1f}%"),
            ("median first divergence (non-matching prompts)", axis.get("median_first_divergence")),
            ("mean agreed prefix (tokens)", axis.get("mean_prefix_agreement_length")),
            ("mean reference length", axis.get("mean_ref_length")),
            ("mean candidate length", axis.get("mean_cand_length")),
            *_divergence_rows(axis),
            *_noise_floor_rows(axis),
        ]
    )
    per_prompt = axis.get("per_prompt")
    n_tokens = as_float(axis.get("n_tokens_each"))
    chart = ""
    if isinstance(per_prompt, list) and per_prompt:
        chart = "<h3>First divergence per prompt</h3>" + trajectory_chart(
            per_prompt, int(n_tokens) if n_tokens else None
        )
    return (
        f"<section>{_axis_heading(report, 'gtm', axis)}{stats}{chart}"
        f"{_bullets([str(n) for n in axis.get('notes') or []], 'note')}</section>"
    )


def _noise_floor_rows(axis: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Axis A's numerical-noise floor: the reference scored against itself."""
    floor = axis.get("noise_floor")
    if not isinstance(floor, Mapping):
        return []
    rate = as_float(floor.get("full_match_rate"))
    verdict = floor.get("verdict")
    tol = as_float(floor.get("tolerance"))
    score_txt = fmt(floor.get("score"), 1)
    if verdict:
        score_txt += f" — candidate {verdict} numerical noise"
        if tol is not None:
            score_txt += f" (tolerance {tol:.1f})"
    n_m, n_p = floor.get("n_matched"), floor.get("n_prompts")
    return [
        ("numerical-noise floor (reference vs itself)", score_txt),
        ("noise floor full-match rate", None if rate is None else (
            f"{rate * 100:.1f}%" + (f" ({n_m}/{n_p})" if n_m is not None and n_p else ""))),
        ("noise floor median first divergence", floor.get("median_first_divergence")),
        ("noise floor method", floor.get("method")),
    ]


def _divergence_rows(axis: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """What a divergence means: near-tie flips vs real shifts, and the teacher-forced drift."""
    rows: list[tuple[str, Any]] = []
    div = axis.get("divergence")
    if isinstance(div, Mapping) and div.get("n_divergences"):
        frac = as_float(div.get("near_tie_fraction"))
        thr = as_float(div.get("near_tie_threshold"))
        label = "near-tie divergences" + (f" (margin < {thr:g})" if thr is not None else "")
        rows.append((label, None if frac is None else f"{frac * 100:.0f}%"))
        rows.append(("median reference margin at divergence", fmt(div.get("median_margin"), 3)))
        rows.append(("median KL at divergence (nats)", fmt_kld(div.get("median_kl_at_divergence"))))
    tf = axis.get("teacher_forced")
    if isinstance(tf, Mapping) and tf.get("n_positions"):
        rows.append(("teacher-forced KLD along reference trajectories",
                     f"{fmt_kld(tf.get('mean_kld'))} nats"))
        rows.append(("teacher-forced same top-1", f"{fmt(tf.get('same_top1_pct'), 1)}%"))
    return rows


_PCT_NAMES = {"max": 100.0, "min": 0.0, "median": 50.0}


def kld_percentiles(axis: Mapping[str, Any]) -> list[tuple[float, str, float]]:
    """(percentile, label, KLD) points from ``kld_percentiles`` / ``percentiles`` (a mapping
    such as ``{"max": …, "99.9": …, "p99": …, "median": …, "min": …}``), low to high."""
    raw = axis.get("kld_percentiles", axis.get("percentiles"))
    points: list[tuple[float, str, float]] = []
    if isinstance(raw, Mapping):
        items = list(raw.items())
    elif isinstance(raw, list):
        items = [tuple(x) for x in raw if isinstance(x, (list, tuple)) and len(x) == 2]
    else:
        return points
    for key, value in items:
        val = as_float(value)
        if val is None:
            continue
        name = str(key).strip().lower()
        if name in _PCT_NAMES:
            pct = _PCT_NAMES[name]
        else:
            m = re.fullmatch(r"p?(\d+(?:\.\d+)?)", name.replace("_", "."))
            if not m:
                continue
            pct = float(m.group(1))
        label = name if name in _PCT_NAMES else f"p{pct:g}"
        points.append((pct, label, val))
    points.sort(key=lambda t: t[0])
    return points


def _kld(report: Mapping[str, Any], axis: Mapping[str, Any]) -> str:
    mean = axis.get("mean_kld")
    se = as_float(axis.get("mean_kld_se", axis.get("kld_se")))
    mean_txt = None if mean is None else fmt_kld(mean) + (f" ± {fmt_kld(se)}" if se else "")
    ci = axis.get("kld_ci95", axis.get("mean_kld_ci95", axis.get("bootstrap_ci95")))
    ci_txt = None
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        ci_txt = f"{fmt_kld(ci[0])} – {fmt_kld(ci[1])}"
    ppl = axis.get("ppl")
    ppl_pairs: list[tuple[str, Any]] = []
    if isinstance(ppl, Mapping):
        ppl_pairs = [(f"PPL ({k})", ppl[k]) for k in ppl]
    elif "ppl_cand" not in axis:
        ppl_pairs = [("PPL", ppl)]
    corpus = axis.get("corpus")
    corpus_txt = corpus.get("path") if isinstance(corpus, Mapping) else corpus
    chunks, ctx = axis.get("chunks"), axis.get("ctx")
    stats = kv_table(
        [
            ("mean KLD (nats)", mean_txt),
            ("95% bootstrap interval of mean KLD", ci_txt),
            ("PPL (reference)", axis.get("ppl_ref")),
            ("PPL (candidate)", axis.get("ppl_cand")),
            *ppl_pairs,
            ("mean ln(PPL ratio)", axis.get("mean_ln_ppl_ratio")),
            ("RMS Δp (%)", axis.get("rms_dp_pct")),
            ("same top-1 (%)", axis.get("same_topp_pct")),
            ("chunks × ctx", f"{chunks} × {ctx}" if chunks and ctx else None),
            ("scored tokens", axis.get("n_scored_tokens", axis.get("n_scored"))),
            ("corpus", corpus_txt),
        ]
    )
    per_token = axis.get("per_token_kld")
    chart = ""
    if per_token is not None and np.asarray(per_token).size:
        chart = "<h3>Per-token KLD distribution</h3>" + kld_histogram(per_token)
    points = kld_percentiles(axis)
    if points:
        chart += "<h3>Per-token KLD percentiles</h3>" + kld_percentile_chart(points)
    if not chart:
        chart = (
            '<p class="note">No per-token KLD distribution in this report (refract-llm '
            "reports only the mean).</p>"
        )
    return (
        f"<section>{_axis_heading(report, 'kld', axis)}{stats}{chart}"
        f"{_bullets([str(n) for n in axis.get('notes') or []], 'note')}</section>"
    )


def _needle_logprobs(cell: Mapping[str, Any]) -> tuple[float | None, float | None]:
    ref = cell.get("needle_logprob_ref", cell.get("ref_keyword_logprob"))
    cand = cell.get("needle_logprob_cand", cell.get("cand_keyword_logprob"))
    return as_float(ref), as_float(cand)


def _diff(ref: float | None, cand: float | None) -> float | None:
    return None if ref is None or cand is None else cand - ref


def _rniah(report: Mapping[str, Any], axis: Mapping[str, Any]) -> str:
    base = as_float(axis.get("base_acc_avg"))
    stats = kv_table(
        [
            ("needle", axis.get("needle")),
            ("keyword", needle_keyword(axis)),
            ("cells", axis.get("n_cells")),
            ("reference mean accuracy", None if base is None else f"{base:.2f}"),
            ("confidence", axis.get("confidence")),
        ]
    )
    cells = axis.get("cells")
    chart = ""
    lp_table = ""
    if isinstance(cells, list) and cells:
        chart = "<h3>Retrieval by context length and needle position</h3>" + rniah_heatmap(cells)
        lp_rows = [(c, *_needle_logprobs(c)) for c in cells if isinstance(c, Mapping)]
        lp_rows = [r for r in lp_rows if r[1] is not None or r[2] is not None]
        if lp_rows:
            body = "".join(
                f"<tr><td class=num>{esc(fmt(c.get('length'), 0))}</td>"
                f"<td class=num>{esc(fmt(c.get('position'), 2))}</td>"
                f"<td class=num>{esc(fmt(ref, 3))}</td>"
                f"<td class=num>{esc(fmt(cand, 3))}</td>"
                f"<td class=num>{esc(fmt(_diff(ref, cand), 3))}</td></tr>"
                for c, ref, cand in lp_rows
            )
            lp_table = (
                "<h3>Teacher-forced needle keyword log-probability</h3><table><tr>"
                "<th class=num>length</th><th class=num>position</th>"
                "<th class=num>reference</th><th class=num>candidate</th>"
                "<th class=num>cand − ref</th></tr>"
                f"{body}</table>"
            )
    skipped = axis.get("skipped_cells")
    notes = [str(n) for n in axis.get("notes") or []]
    if isinstance(skipped, list) and skipped:
        notes.append(f"{len(skipped)} cell(s) skipped.")
    return (
        f"<section>{_axis_heading(report, 'rniah', axis)}{stats}{chart}{lp_table}"
        f"{_bullets(notes, 'note')}</section>"
    )


def _plad(report: Mapping[str, Any], axis: Mapping[str, Any]) -> str:
    per_type = axis.get("per_perturbation_score")
    per_prompt = [p for p in axis.get("per_prompt") or [] if isinstance(p, Mapping)]
    types: list[str] = list(per_type) if isinstance(per_type, Mapping) else []
    for p in per_prompt:
        t = str(p.get("perturbation"))
        if t not in types:
            types.append(t)
    rows = []
    for t in types:
        cells = [p for p in per_prompt if str(p.get("perturbation")) == t]

        def mean(field: str, cells: list[Mapping[str, Any]] = cells) -> float | None:
            vals = [v for c in cells if (v := as_float(c.get(field))) is not None]
            return sum(vals) / len(vals) if vals else None

        score = as_float(per_type.get(t)) if isinstance(per_type, Mapping) else mean("plad_pp")
        worse = sum(1 for c in cells if (as_float(c.get("excess_drift")) or 0) > 0)
        badge = pill(band(score), True) if score is not None else pill(None, True)
        rows.append(
            f"<tr><td>{esc(t)}</td><td class=num>{esc(fmt(score))}</td><td>{badge}</td>"
            f"<td class=num>{len(cells)}</td><td class=num>{worse}</td>"
            f"<td class=num>{esc(fmt(mean('ref_drift'), 3))}</td>"
            f"<td class=num>{esc(fmt(mean('cand_drift'), 3))}</td>"
            f"<td class=num>{esc(fmt(mean('excess_drift'), 3))}</td></tr>"
        )
    table = ""
    if rows:
        table = (
            "<h3>Per perturbation</h3><table><tr><th>perturbation</th><th class=num>score"
            "</th><th>band</th><th class=num>cells</th><th class=num>cand worse</th>"
            "<th class=num>mean ref drift</th><th class=num>mean cand drift</th>"
            f"<th class=num>mean excess</th></tr>{''.join(rows)}</table>"
        )
    worst = sorted(
        (p for p in per_prompt if (as_float(p.get("excess_drift")) or 0) > 0),
        key=lambda p: -(as_float(p.get("excess_drift")) or 0),
    )
    worst_html = ""
    if worst:
        body = "".join(
            f"<tr><td>{esc(p.get('prompt_id', ''))}</td><td>{esc(p.get('perturbation', ''))}</td>"
            f"<td>{esc(p.get('perturbed_prompt', ''))}</td>"
            f"<td class=num>{esc(fmt(p.get('ref_drift'), 3))}</td>"
            f"<td class=num>{esc(fmt(p.get('cand_drift'), 3))}</td>"
            f"<td class=num>{esc(fmt(p.get('plad_pp'), 1))}</td></tr>"
            for p in worst
        )
        worst_html = (
            f"<details><summary>{len(worst)} cell(s) where the candidate drifts more "
            "than the reference</summary><table><tr><th>prompt</th><th>type</th>"
            "<th>perturbed prompt</th><th class=num>ref drift</th>"
            f"<th class=num>cand drift</th><th class=num>score</th></tr>{body}</table>"
            "</details>"
        )
    stats = kv_table(
        [
            ("prompts", axis.get("n_prompts")),
            ("fired cells", len(per_prompt) or None),
            ("confidence", axis.get("confidence")),
            ("perturbations without cells", axis.get("skipped_perturbations") or None),
        ]
    )
    return (
        f"<section>{_axis_heading(report, 'plad', axis)}{stats}{table}{worst_html}"
        f"{_bullets([str(n) for n in axis.get('notes') or []], 'note')}</section>"
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
    env = report.get("environment")
    if isinstance(env, Mapping):
        pairs += [(f"environment.{k}", v) for k, v in _flatten(env)]
    info = report.get("model_info")
    if isinstance(info, Mapping):
        pairs += [(f"model_info.{k}", v) for k, v in _flatten(info)]
    timings = report.get("timings")
    if isinstance(timings, Mapping):
        pairs += [(f"timings.{k}", v) for k, v in _flatten(timings)]
    prov = report.get("provenance")
    if isinstance(prov, Mapping):
        pairs += [(f"provenance.{k}", v) for k, v in _flatten(prov)]
    else:
        pairs.append(("provenance", "unverified: no input hashes in this report"))
    settings = report.get("settings")
    if isinstance(settings, Mapping):
        pairs += [(f"settings.{k}", v) for k, v in _flatten(settings)]
    repro = report.get("repro_command")
    repro_html = f"<h3>Reproduce</h3><pre>{esc(repro)}</pre>" if repro else ""
    return f"<section><h2>Run details</h2>{kv_table(pairs)}{repro_html}</section>"


def _raw(report: Mapping[str, Any]) -> str:
    raw = dumps_report(report).decode("utf-8")
    return (
        f"<section><details><summary>Raw JSON ({len(raw):,} bytes)</summary>"
        f"<pre>{esc(raw)}</pre></details></section>"
    )


_SECTIONS = {"gtm": _gtm, "kld": _kld, "rniah": _rniah, "plad": _plad}


def render_html(report: Mapping[str, Any]) -> str:
    """The whole report as one standalone HTML document."""
    axes = axes_of(report)
    parts = [_header(report), _scores(report)]
    for key in AXES:
        axis = axes.get(key)
        if axis is None:
            continue
        if axis_status(report, key) == "error":
            parts.append(_errored(report, key, axis))
        elif axis_score(report, key) is None:
            parts.append(_skipped(report, key, axis))
        else:
            parts.append(_SECTIONS[key](report, axis))
    parts.append(_details(report))
    parts.append(_raw(report))
    parts.append(
        "<footer>Generated by refract. Scores rank the KV-cache configuration against "
        "the reference on the same model, not the model itself.</footer>"
    )
    kind = "REFRACT self-check" if is_self_check(report) else "REFRACT"
    title = f"{kind} · {model_name(report)} · {report.get('candidate') or ''}"
    return page(title, "\n".join(parts))


def write_html(report: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Render and write atomically."""
    return write_text(render_html(report), path)


__all__ = ["PAGE_CSS", "kld_percentiles", "kv_table", "page", "pill", "render_html", "write_html"]
