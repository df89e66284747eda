"""The self-contained HTML page of a sweep (``sweep.json``, schema ``refract-sweep/1``): the
recommendation, KV size against composite as an inline SVG plot, every config in a table
(largest KV cache first, the reference on top), the pruning rule and the skipped configs.

Same look as the report page (:data:`refract.report.html.PAGE_CSS`, light and dark), no
scripts, no external assets; every string from the sweep is HTML-escaped and a missing or
non-finite number shows as "—".
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from refract.kvconfig import short_label
from refract.report.html import page
from refract.report.io import write_text
from refract.report.kit import esc, kv_table, pill
from refract.report.svg import SweepPoint, sweep_plot
from refract.system.memory import format_bytes

__all__ = ["SWEEP_CSS", "sweep_html", "write_sweep_html"]

SWEEP_CSS = """
.rec-box { border-left: 6px solid var(--muted); background: var(--code); border-radius: 6px;
  padding: 12px 16px; margin: 14px 0 0; }
.rec-box.rec-recommended { border-left-color: var(--excellent); }
.rec-box.rec-none { border-left-color: var(--fail); }
.rec-box.rec-undecided { border-left-color: var(--degraded); }
.rec-kind { font-weight: 700; font-size: 0.78rem; letter-spacing: 0.06em;
  text-transform: uppercase; }
.rec-recommended .rec-kind { color: var(--excellent); } .rec-none .rec-kind { color: var(--fail); }
.rec-undecided .rec-kind { color: var(--degraded); }
.rec-text { font-size: 1.18rem; font-weight: 600; margin: 2px 0 0; }
.facts { display: flex; flex-wrap: wrap; gap: 4px 22px; margin: 10px 0 0; }
.chart .axis { stroke: var(--muted); stroke-width: 1; }
.chart .axis-title { fill: var(--muted); font-size: 11.5px; }
.chart .pt { stroke: var(--card); stroke-width: 1.2; }
.chart .pt.b-excellent { fill: var(--excellent); } .chart .pt.b-pass { fill: var(--pass); }
.chart .pt.b-degraded { fill: var(--degraded); } .chart .pt.b-fail { fill: var(--fail); }
.chart .pt.b-skipped { fill: var(--muted); }
.chart .pt.pruned { fill: var(--card); stroke: var(--muted); stroke-width: 1.8; }
.chart .whisker.pruned { stroke: var(--muted); stroke-dasharray: 3 2; }
.chart .frontier { fill: none; stroke: var(--hist); stroke-width: 2.5; stroke-linejoin: round;
  opacity: 0.85; }
.chart .rec-ring { fill: none; stroke: var(--fg); stroke-width: 2; }
.chart .ref-marker { fill: var(--fg); }
.chart .threshold { stroke-width: 1.5; stroke-dasharray: 6 4; }
.chart line.th-excellent { stroke: var(--excellent); } .chart line.th-pass { stroke: var(--pass); }
.chart line.th-degraded { stroke: var(--degraded); }
.chart text.th-excellent { fill: var(--excellent); } .chart text.th-pass { fill: var(--pass); }
.chart text.th-degraded { fill: var(--degraded); }
.chart .th-label { font-size: 11px; font-weight: 600; }
.chart .pt-label { font-size: 11px; }
.chart .pt-label.rec { font-weight: 700; }
.chart .pt-label.muted { fill: var(--muted); }
tr.recommended td { background: color-mix(in srgb, var(--excellent) 9%, transparent); }
tr.reference td { background: var(--code); }
table.configs td .full { display: block; color: var(--muted); font-size: 0.78rem;
  white-space: nowrap; }
table.configs td.num { white-space: nowrap; }
table.configs td.status { min-width: 240px; }
table.configs td .note { display: block; font-size: 0.78rem; }
.star { color: var(--hist); font-size: 1.05rem; }
.status-pruned, .status-skipped { color: var(--muted); }
.status-error { color: var(--fail); }
"""

_RECOMMENDATION_KINDS = {
    "recommended": "Recommended",
    "none": "No recommendation",
    "undecided": "Undecided",
}
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")

# ----------------------------------------------------------------------------- reading


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _num(value: Any) -> float | None:
    """A finite number, else None (missing, null, text, NaN, ±inf, booleans)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        num = float(value)
    except (TypeError, ValueError):
        return None
    return num if math.isfinite(num) else None


def _configs(sweep: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    raw = sweep.get("configs")
    return [c for c in raw if isinstance(c, Mapping)] if isinstance(raw, list) else []


def _label(cfg: Mapping[str, Any]) -> str:
    label = cfg.get("config")
    if isinstance(label, str) and label:
        return label
    ctk, ctv = cfg.get("ctk"), cfg.get("ctv")
    return f"ctk={ctk},ctv={ctv}" if ctk or ctv else "?"


def _short(cfg: Mapping[str, Any]) -> str:
    return short_label(_label(cfg))


def _kv(cfg: Mapping[str, Any]) -> Mapping[str, Any]:
    return _map(cfg.get("kv"))


def _ratio(kv: Mapping[str, Any], ref_bytes: float | None) -> float | None:
    ratio = _num(kv.get("ratio"))
    per = _num(kv.get("bytes_per_token"))
    if ratio is None and per is not None and ref_bytes:
        ratio = per / ref_bytes
    return ratio


def _interval(cfg: Mapping[str, Any]) -> tuple[float, float] | None:
    ci = cfg.get("ci95")
    if not isinstance(ci, (list, tuple)) or len(ci) != 2:
        return None
    lo, hi = _num(ci[0]), _num(ci[1])
    return (lo, hi) if lo is not None and hi is not None else None


def _status(cfg: Mapping[str, Any]) -> str:
    status = cfg.get("status")
    return status if isinstance(status, str) and status else "scored"


def _frontier_labels(sweep: Mapping[str, Any]) -> set[str]:
    raw = sweep.get("frontier")
    return {str(x) for x in raw} if isinstance(raw, list) else set()


def _on_frontier(cfg: Mapping[str, Any], frontier: set[str]) -> bool:
    return cfg.get("frontier") is True or _label(cfg) in frontier


def _recommended_label(sweep: Mapping[str, Any]) -> str | None:
    label = _map(sweep.get("recommendation")).get("config")
    return str(label) if label else None


def _reference_bytes(sweep: Mapping[str, Any]) -> float | None:
    per = _num(_kv(_map(sweep.get("reference"))).get("bytes_per_token"))
    return per if per else None


def _confidence(sweep: Mapping[str, Any]) -> str:
    conf = _num(sweep.get("confidence"))
    return f"{conf * 100:g} %" if conf is not None else "95 %"


def _target(sweep: Mapping[str, Any]) -> str:
    target = sweep.get("target_band")
    return str(target) if target else "PASS"


# --------------------------------------------------------------------------- formatting


def _pct(ratio: float | None) -> str:
    if ratio is None:
        return "—"
    pct = ratio * 100
    return f"{pct:.1f} %" if 0 < pct < 10 else f"{pct:.0f} %"


def _bytes(value: Any) -> str:
    num = _num(value)
    return format_bytes(num) if num is not None else "—"


def _ctx_name(n: int) -> str:
    return f"{n // 1024}k" if n >= 1024 and n % 1024 == 0 else str(n)


def _contexts(sweep: Mapping[str, Any]) -> list[int]:
    raw = sweep.get("memory_ctx")
    if not isinstance(raw, list):
        return []
    return [int(n) for n in (_num(v) for v in raw) if n is not None and n > 0]


def _composite_text(cfg: Mapping[str, Any]) -> str:
    comp = _num(cfg.get("composite"))
    if comp is None:
        return "—"
    ci = _interval(cfg)
    # a first round that held axes at 100 gives an upper bound of the composite
    bound = "≤ " if cfg.get("composite_upper_bound") is True else ""
    return f"{bound}{comp:.1f}" + (f" [{ci[0]:.1f}–{ci[1]:.1f}]" if ci else "")


def _budget(budget: Mapping[str, Any]) -> str:
    """``{"prompts": [10, 30], "chunks": [8, 24]}`` → ``10 of 30 prompts, 8 of 24 chunks``."""
    parts: list[str] = []
    for key, value in ((k, budget.get(k)) for k in ("prompts", "chunks")):
        if isinstance(value, (list, tuple)) and len(value) == 2:
            parts.append(f"{value[0]} of {value[1]} {key}")
        elif value is not None and not isinstance(value, (Mapping, list, tuple)):
            parts.append(f"{value} {key}")
    return ", ".join(parts)


def _report_link(cfg: Mapping[str, Any]) -> str:
    """A link to the config's own HTML report (its JSON's name with ``.html``), or ""."""
    path = cfg.get("report")
    if not isinstance(path, str) or not path or _URL_SCHEME.match(path):
        return ""
    html_path = path[: -len(".json")] + ".html" if path.endswith(".json") else path
    return f'<a href="{esc(quote(html_path, safe="/=,+-_.~"))}">report</a>'


# ----------------------------------------------------------------------------- sections


def _header(sweep: Mapping[str, Any]) -> str:
    model = _map(sweep.get("model"))
    name = model.get("name") or model.get("path") or "?"
    reference = _map(sweep.get("reference"))
    configs = _configs(sweep)
    counts: dict[str, int] = {}
    for cfg in configs:
        counts[_status(cfg)] = counts.get(_status(cfg), 0) + 1
    tally = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"
    created = sweep.get("created")
    return (
        '<header class="card">'
        f"<h1>REFRACT sweep · {esc(name)}</h1>"
        f'<p class="sub">KV-cache configs against the reference '
        f"<code>{esc(reference.get('config') or '?')}</code>"
        f"{' · ' + esc(created) if created else ''}</p>"
        '<div class="facts">'
        f"<span>target band {pill(_target(sweep), True)} or better</span>"
        f"<span>confidence <strong>{esc(_confidence(sweep))}</strong></span>"
        f"<span>{len(configs)} config{'s' if len(configs) != 1 else ''}: {esc(tally)}</span>"
        "</div>"
        f"{_recommendation(sweep)}</header>"
    )


def _recommendation(sweep: Mapping[str, Any]) -> str:
    rec = _map(sweep.get("recommendation"))
    kind = rec.get("kind")
    kind = kind if kind in _RECOMMENDATION_KINDS else "none"
    text = rec.get("text") or (
        "no config was scored" if not _configs(sweep) else "no recommendation was made")
    config = rec.get("config")
    ratio = _num(rec.get("ratio"))
    pick = ""
    if config and str(config) not in str(text):
        share = f" · {_pct(ratio)} of the reference's KV bytes" if ratio is not None else ""
        pick = f'<p class="rec-config"><code>{esc(config)}</code>{esc(share)}</p>'
    return (
        f'<div class="rec-box rec-{kind}" role="status">'
        f'<div class="rec-kind">{esc(_RECOMMENDATION_KINDS[kind])}</div>'
        f'<p class="rec-text">{esc(text)}</p>{pick}</div>'
    )


def _plot_points(sweep: Mapping[str, Any]) -> tuple[list[SweepPoint], list[str]]:
    """The configs the plot can place (a KV size and a composite), and the labels of the
    others (scored or pruned, but no KV size or no composite)."""
    ref_bytes = _reference_bytes(sweep)
    frontier = _frontier_labels(sweep)
    recommended = _recommended_label(sweep)
    points: list[SweepPoint] = []
    missing: list[str] = []
    for cfg in _configs(sweep):
        status = _status(cfg)
        if status not in ("scored", "pruned"):
            continue
        kv = _kv(cfg)
        x, y = _ratio(kv, ref_bytes), _num(cfg.get("composite"))
        if x is None or y is None:
            missing.append(_label(cfg))
            continue
        band = cfg.get("band")
        points.append(SweepPoint(
            label=_label(cfg), short=_short(cfg), x=x, y=y, ci=_interval(cfg),
            band=str(band) if band else None, status=status,
            frontier=status == "scored" and _on_frontier(cfg, frontier),
            recommended=recommended is not None and _label(cfg) == recommended,
            bytes_per_token=_num(kv.get("bytes_per_token")),
        ))
    return points, missing


def _plot_section(sweep: Mapping[str, Any]) -> str:
    points, missing = _plot_points(sweep)
    reference = _map(sweep.get("reference"))
    ref_label = f"{short_label(str(reference.get('config') or 'f16'))} reference"
    if points:
        chart = sweep_plot(points, _reference_bytes(sweep), reference_label=ref_label,
                           interval_label="95 % interval")
    else:
        chart = ('<p class="note">Nothing to plot: no config has both a KV size and a '
                 "composite.</p>")
    note = ""
    if missing:
        note = ('<p class="note">Not plotted (no KV size or no composite): '
                + ", ".join(f"<code>{esc(m)}</code>" for m in missing) + ".</p>")
    return (
        "<section><h2>KV cache size against quality</h2>"
        '<p class="sub">Each config at its KV bytes per token (share of the reference\'s) and '
        "its composite with its 95 % interval; filled markers are scored configs coloured "
        "by band, hollow ones were pruned after the cheap first round. The line joins the "
        "frontier: nothing smaller scores as high. Hover a marker for its numbers.</p>"
        f"{chart}{note}</section>"
    )


def _sorted_for_table(configs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Largest KV cache first; configs without a size last, in their order."""
    def key(cfg: Mapping[str, Any]) -> tuple[bool, float]:
        per = _num(_kv(cfg).get("bytes_per_token"))
        return (per is None, -(per or 0.0))

    return sorted(configs, key=key)


def _size_cells(kv: Mapping[str, Any], ratio: float | None, contexts: Sequence[int]) -> str:
    at = _map(kv.get("at"))
    cells = [_bytes(kv.get("bytes_per_token")), _pct(ratio)]
    cells += [_bytes(at.get(str(n))) for n in contexts]
    return "".join(f"<td class=num>{esc(c)}</td>" for c in cells)


def _band_cell(cfg: Mapping[str, Any], confidence: str) -> str:
    band = cfg.get("band")
    if not band:
        return "<td>—</td>"
    note = ""
    if _status(cfg) == "pruned":
        note = '<span class="note">first round</span>'
    elif cfg.get("decided") is None and _status(cfg) == "scored":
        note = f'<span class="note">not decided at {esc(confidence)}</span>'
    elif cfg.get("decided") != band:
        note = f'<span class="note">decided: {esc(cfg.get("decided"))}</span>'
    return f"<td>{pill(str(band), True)}{note}</td>"


def _status_cell(cfg: Mapping[str, Any]) -> str:
    status = _status(cfg)
    if status == "scored":
        link = _report_link(cfg)
        return f'<td class="status status-scored">scored{" · " + link if link else ""}</td>'
    if status == "pruned":
        return f'<td class="status status-pruned">{_pruned_html(cfg)}</td>'
    if status == "skipped":
        reason = cfg.get("skipped") or "no reason given"
        return f'<td class="status status-skipped">skipped: {esc(reason)}</td>'
    if status == "error":
        message = cfg.get("error") or "no message"
        return f'<td class="status status-error">error: {esc(message)}</td>'
    return f'<td class="status">{esc(status)}</td>'


def _pruned_html(cfg: Mapping[str, Any]) -> str:
    """Why a config was pruned, its evidence and the first round's budget (a tooltip)."""
    info = _map(cfg.get("pruned"))
    reason = info.get("reason")
    if reason == "dominated":
        by = info.get("dominated_by")
        text = f"pruned: dominated by {by}" if by else "pruned: dominated"
    elif reason == "below":
        text = "pruned: below the target band"
    else:
        text = f"pruned: {reason}" if reason else "pruned"
    budget = _budget(_map(info.get("budget")))
    tip = f' title="first round: {esc(budget)}"' if budget else ""
    evidence = info.get("evidence")
    note = f'<span class="note">{esc(evidence)}</span>' if evidence else ""
    return f"<span{tip}>{esc(text)}</span>{note}"


def _config_row(cfg: Mapping[str, Any], sweep: Mapping[str, Any], contexts: Sequence[int],
                frontier: set[str]) -> str:
    label = _label(cfg)
    status = _status(cfg)
    recommended = label == _recommended_label(sweep)
    comp = esc(_composite_text(cfg))
    if status == "pruned" and comp != "—":
        comp += '<span class="note">first round</span>'
    p_target = _num(cfg.get("p_target"))
    star = ('<span class="star" title="on the frontier">★</span>'
            if _on_frontier(cfg, frontier) else "")
    rec = ' <span class="pill small b-excellent">recommended</span>' if recommended else ""
    cls = f' class="recommended {esc(status)}"' if recommended else f' class="{esc(status)}"'
    return (
        f"<tr{cls}><td><strong>{esc(_short(cfg))}</strong>{rec}"
        f'<span class="full">{esc(label)}</span></td>'
        f"{_size_cells(_kv(cfg), _ratio(_kv(cfg), _reference_bytes(sweep)), contexts)}"
        f'<td class="num comp">{comp}</td>{_band_cell(cfg, _confidence(sweep))}'
        f"<td class=num>{esc(_pct(p_target))}</td><td>{star}</td>{_status_cell(cfg)}</tr>"
    )


def _reference_row(sweep: Mapping[str, Any], contexts: Sequence[int]) -> str:
    ref = _map(sweep.get("reference"))
    label = str(ref.get("config") or "?")
    kv = _kv(ref)
    ratio = 1.0 if _reference_bytes(sweep) else None
    return (
        f'<tr class="reference"><td><strong>{esc(short_label(label))}</strong> '
        f'<span class="note">reference</span><span class="full">{esc(label)}</span></td>'
        f"{_size_cells(kv, ratio, contexts)}<td class=num>—</td><td>—</td><td class=num>—</td>"
        '<td></td><td class="status">reference: every score is measured against it</td></tr>'
    )


def _table_section(sweep: Mapping[str, Any]) -> str:
    contexts = _contexts(sweep)
    frontier = _frontier_labels(sweep)
    target, conf = _target(sweep), _confidence(sweep)
    heads = ["config", "KV / token", "% of ref."]
    heads += [f"at {_ctx_name(n)} ctx" for n in contexts]
    heads += ["composite [95 %]", "band", f"P(≥ {target})", "★", "status"]
    numeric = {1, 2, *range(3, 3 + len(contexts)), 3 + len(contexts), 5 + len(contexts)}
    head = "".join(f"<th{' class=num' if i in numeric else ''}>{esc(h)}</th>"
                   for i, h in enumerate(heads))
    rows = [_reference_row(sweep, contexts)]
    rows += [_config_row(c, sweep, contexts, frontier)
             for c in _sorted_for_table(_configs(sweep))]
    return (
        "<section><h2>Configs</h2>"
        f'<p class="sub">Largest KV cache first: bytes per token, their share of the '
        "reference's and the whole KV cache at each context. P(≥ "
        f"{esc(target)}): the share of bootstrap replicates in {esc(target)} or better; a "
        f"band is decided when one band holds {esc(conf)} of them. ★: on the frontier.</p>"
        f'<div class="table-wrap"><table class="configs"><tr>{head}</tr>{"".join(rows)}'
        "</table></div></section>"
    )


def _pruning_section(sweep: Mapping[str, Any]) -> str:
    pruning = _map(sweep.get("pruning"))
    if not pruning.get("enabled"):
        return ("<section><h2>Pruning</h2><p>Pruning was off: every config was scored with "
                "the full budget.</p></section>")
    first = _map(pruning.get("first_round"))
    budget = _budget({k: v for k, v in first.items() if k != "fraction"})
    fraction = _num(first.get("fraction"))
    round_text = budget or "not recorded"
    if fraction is not None:
        round_text += f" ({_pct(fraction)} of the full budget)"
    n_pruned = sum(1 for c in _configs(sweep) if _status(c) == "pruned")
    rule = pruning.get("rule")
    return (
        "<section><h2>Pruning</h2>"
        f"<p>{esc(rule) if rule else 'No rule recorded.'}</p>"
        f"<p>First round: {esc(round_text)}. {n_pruned} config"
        f"{'s were' if n_pruned != 1 else ' was'} pruned after it; their composite, interval "
        "and band on this page are the first round's (hollow markers; marked ≤ where it held "
        "axes it did not measure at 100, an upper bound).</p></section>"
    )


def _skipped_entries(sweep: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, reason) of every skipped config: those in ``configs`` and those only in the
    top-level ``skipped`` list (strings or objects), each once."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for cfg in _configs(sweep):
        if _status(cfg) == "skipped":
            out.append((_label(cfg), str(cfg.get("skipped") or "no reason given")))
            seen.add(_label(cfg))
    raw = sweep.get("skipped")
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, Mapping):
            label = str(item.get("config") or "?")
            reason = str(item.get("reason") or item.get("skipped") or "no reason given")
        else:
            label, reason = str(item), "no reason given"
        if label not in seen:
            out.append((label, reason))
            seen.add(label)
    return out


def _skipped_section(sweep: Mapping[str, Any]) -> str:
    skipped = _skipped_entries(sweep)
    errors = [(_label(c), str(c.get("error") or "no message")) for c in _configs(sweep)
              if _status(c) == "error"]
    if not skipped and not errors:
        return ""
    html = "<section><h2>Skipped and failed configs</h2>"
    if skipped:
        html += "<h3>Skipped</h3><ul class=\"skipped\">" + "".join(
            f"<li><code>{esc(label)}</code>: {esc(reason)}</li>" for label, reason in skipped
        ) + "</ul>"
    if errors:
        html += "<h3>Failed</h3><ul class=\"errors\">" + "".join(
            f"<li><code>{esc(label)}</code>: {esc(msg)}</li>" for label, msg in errors
        ) + "</ul>"
    return html + "</section>"


def _plain(value: Any) -> Any:
    """A table cell's value: non-finite numbers as "—", lists of plain values joined."""
    if isinstance(value, float) and not math.isfinite(value):
        return "—"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(_plain(v)) for v in value)
    return value


def _settings_section(sweep: Mapping[str, Any]) -> str:
    model = _map(sweep.get("model"))
    pairs: list[tuple[str, Any]] = [
        ("model", model.get("path")),
        ("model sha256", model.get("sha256")),
        ("model n_ctx_train", model.get("n_ctx_train")),
        ("reference", _map(sweep.get("reference")).get("config")),
        ("memory contexts", sweep.get("memory_ctx")),
    ]
    for key, value in _map(sweep.get("settings")).items():
        if not isinstance(value, Mapping):
            pairs.append((f"settings.{key}", value))
    total = _num(_map(sweep.get("timings")).get("total_s"))
    if total is not None:
        pairs.append(("total time", f"{total:.1f} s"))
    pairs.append(("created", sweep.get("created")))
    return f"<section><h2>Run</h2>{kv_table([(k, _plain(v)) for k, v in pairs])}</section>"


def _footer(sweep: Mapping[str, Any]) -> str:
    from refract import __version__

    wrote = sweep.get("refract_version")
    by = f"refract {__version__}" + (
        f" (sweep written by refract {wrote})" if wrote and str(wrote) != __version__ else "")
    source = _kv(_map(sweep.get("reference"))).get("source")
    how = f" ({source})" if source else ""
    return (
        '<section class="methods"><h2>Methods</h2><p class="note">'
        f"KV bytes are what llama.cpp allocated for each config's cache{esc(how)}, not "
        "nominal bits per value; the percentage is a config's bytes per token over the "
        "reference's. Composites are each config's full report's, scored against the same "
        "reference; intervals are paired-bootstrap 95 % intervals (the same prompts and "
        "chunks resampled for reference and candidate). A band is decided at "
        f"{esc(_confidence(sweep))}. "
        "Pruned configs stopped after the first round, so their numbers are that round's."
        + (f" {esc(sweep['kv_note'])}" if sweep.get("kv_note") else "")
        + f"</p></section><footer>Generated by {esc(by)} · schema "
        f"{esc(sweep.get('schema') or '?')}. Scores rank KV-cache configs against the "
        "reference on the same model, not the model itself.</footer>"
    )


# ----------------------------------------------------------------------------- the page


def sweep_html(sweep: Mapping[str, Any]) -> str:
    """The sweep as one standalone HTML document."""
    body = "\n".join([
        _header(sweep),
        _plot_section(sweep),
        _table_section(sweep),
        _pruning_section(sweep),
        _skipped_section(sweep),
        _settings_section(sweep),
        _footer(sweep),
    ])
    name = _map(sweep.get("model")).get("name") or "?"
    html = page(f"REFRACT sweep · {name}", body, wide=True)
    return html.replace("</style>", SWEEP_CSS + "</style>", 1)


def write_sweep_html(sweep: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Render and write atomically."""
    return write_text(sweep_html(sweep), path)
