"""Inline SVG charts for the HTML report. Plain strings, no external assets.

Colours come from CSS custom properties defined by the page (``--excellent``, ``--pass``,
``--degraded``, ``--fail``, ``--fg``, ``--muted``, ``--grid``, ``--same``, ``--diff``), so
every chart follows the page's light/dark scheme. All text is HTML-escaped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from refract.bands import BAND_THRESHOLDS, band
from refract.report.kit import as_float, esc, fmt, fmt_kld


def _svg(width: float, height: float, body: str, label: str, wide: bool = True) -> str:
    cls = "chart wide" if wide else "chart"
    return (
        f'<svg class="{cls}" viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" '
        f'height="{height:.0f}" role="img" '
        f'aria-label="{esc(label)}">{body}</svg>'
    )


def _text(x: float, y: float, text: Any, cls: str = "", anchor: str = "start") -> str:
    cls_attr = f' class="{cls}"' if cls else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{cls_attr}>{esc(text)}</text>'


def band_class(score: float | None) -> str:
    name = band(score)
    return "b-" + (name.lower() if name is not None else "skipped")


# --------------------------------------------------------------------------- score bars


def score_bars(items: Sequence[tuple[str, float | None, str]],
               intervals: Sequence[tuple[float, float] | None] = ()) -> str:
    """Horizontal 0–100 bars. ``items`` = (label, score or None, note shown after the bar;
    for a None score the note replaces the bar, default "skipped"). ``intervals``: per item,
    its 95 % interval (lo, hi) or None, drawn as a whisker across the bar's end."""
    left, bar_w, right, row_h = 150.0, 430.0, 120.0, 30.0
    top = 22.0
    height = top + row_h * len(items) + 8
    width = left + bar_w + right
    parts: list[str] = []
    # band zones (FAIL below the lowest threshold) and threshold ticks
    bounds = [0.0, *sorted(t for _, t in BAND_THRESHOLDS), 100.0]
    names = ["fail", *(n.lower() for n, _ in reversed(BAND_THRESHOLDS))]
    for cls, lo, hi in zip(names, bounds[:-1], bounds[1:], strict=True):
        x = left + bar_w * lo / 100
        w = bar_w * (hi - lo) / 100
        parts.append(
            f'<rect class="zone z-{cls}" x="{x:.1f}" y="{top - 4:.1f}" width="{w:.1f}" '
            f'height="{row_h * len(items):.1f}"/>'
        )
    for tick in bounds:
        x = left + bar_w * tick / 100
        parts.append(
            f'<line class="grid" x1="{x:.1f}" y1="{top - 6:.1f}" x2="{x:.1f}" '
            f'y2="{top + row_h * len(items) - 4:.1f}"/>'
        )
        parts.append(_text(x, top - 9, f"{tick:g}", "tick", "middle"))
    for i, (label, score, note) in enumerate(items):
        y = top + i * row_h
        cy = y + row_h / 2 - 2
        parts.append(_text(left - 10, cy + 4, label, "label", "end"))
        if score is None or math.isnan(score):
            shown = (note or "skipped") if score is None else "n/a"
            parts.append(_text(left + 6, cy + 4, shown, "muted"))
            continue
        w = bar_w * max(0.0, min(100.0, score)) / 100
        parts.append(
            f'<rect class="bar {band_class(score)}" x="{left:.1f}" y="{cy - 8:.1f}" '
            f'width="{w:.1f}" height="16" rx="3"><title>{esc(label)}: {fmt(score)}</title></rect>'
        )
        ci = intervals[i] if i < len(intervals) else None
        if ci is not None:
            parts.append(_whisker(left, bar_w, cy, ci, label))
        parts.append(_text(left + bar_w + 8, cy + 4, fmt(score), "value"))
        if note:
            parts.append(_text(left + bar_w + 58, cy + 4, note, "muted small"))
    return _svg(width, height, "".join(parts), "scores per axis")


def _whisker(left: float, bar_w: float, cy: float, ci: tuple[float, float], label: str) -> str:
    """An interval whisker (line with end caps) in the text colour (``currentColor``: light
    and dark alike)."""
    x1, x2 = (left + bar_w * max(0.0, min(100.0, v)) / 100 for v in ci)
    lines = [(x1, cy, x2, cy), (x1, cy - 6, x1, cy + 6), (x2, cy - 6, x2, cy + 6)]
    body = "".join(
        f'<line x1="{a:.1f}" y1="{b:.1f}" x2="{c:.1f}" y2="{d:.1f}"/>' for a, b, c, d in lines)
    return (
        f'<g class="whisker" stroke="currentColor" stroke-width="1.5" stroke-linecap="round">'
        f"<title>{esc(label)}: 95 % interval {ci[0]:.1f}–{ci[1]:.1f}</title>{body}</g>"
    )


# ------------------------------------------------------------------ trajectory chart


def trajectory_chart(per_prompt: Sequence[Mapping[str, Any]], n_tokens: int | None = None) -> str:
    """One row per prompt: agreed prefix, then the diverged remainder; a tick marks the first
    divergence. Bar length = max(reference, candidate) length."""
    rows = [p for p in per_prompt if isinstance(p, Mapping)]
    if not rows:
        return ""
    lengths = []
    for p in rows:
        ref_len = as_float(p.get("ref_length"))
        cand_len = as_float(p.get("cand_length"))
        if ref_len is None:
            ref_len = float(len(p.get("ref_token_ids") or []))
        if cand_len is None:
            cand_len = float(len(p.get("cand_token_ids") or []))
        lengths.append(max(ref_len, cand_len))
    scale_max = max([float(n_tokens or 0), *lengths, 1.0])
    labels = len(rows) <= 80
    row_h = 16.0 if labels else max(3.0, min(10.0, 900.0 / len(rows)))
    left = 130.0 if labels else 20.0
    bar_w, top = 470.0, 24.0
    width = left + bar_w + 70
    height = top + row_h * len(rows) + 26
    parts: list[str] = []
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = left + bar_w * frac
        parts.append(
            f'<line class="grid" x1="{x:.1f}" y1="{top - 4:.1f}" x2="{x:.1f}" '
            f'y2="{top + row_h * len(rows):.1f}"/>'
        )
        parts.append(_text(x, top - 8, f"{scale_max * frac:.0f}", "tick", "middle"))
    for i, (p, total) in enumerate(zip(rows, lengths, strict=True)):
        y = top + i * row_h
        h = row_h - (3 if labels else 1)
        prefix = as_float(p.get("prefix_agreement_length"))
        if prefix is None:
            prefix = as_float(p.get("first_divergence")) or 0.0
        matched = bool(p.get("matched")) or (prefix >= total > 0)
        w_total = bar_w * total / scale_max
        w_prefix = bar_w * min(prefix, total) / scale_max
        ident = p.get("id", p.get("prompt_id", i))
        tip = (
            f"{ident} ({p.get('category', '')}): {'full match' if matched else 'diverged at'}"
            f"{'' if matched else ' token ' + fmt(prefix, 0)}; ref {fmt(p.get('ref_length'), 0)}"
            f" / cand {fmt(p.get('cand_length'), 0)} tokens"
        )
        prompt = p.get("prompt")
        if isinstance(prompt, str) and prompt:
            tip += "\n" + (prompt if len(prompt) <= 160 else prompt[:159] + "…")
        parts.append(f"<g><title>{esc(tip)}</title>")
        if labels:
            parts.append(_text(left - 8, y + h - 2, ident, "label small", "end"))
        parts.append(
            f'<rect class="diff" x="{left:.1f}" y="{y:.1f}" width="{w_total:.1f}" '
            f'height="{h:.1f}"/>'
        )
        parts.append(
            f'<rect class="same" x="{left:.1f}" y="{y:.1f}" width="{w_prefix:.1f}" '
            f'height="{h:.1f}"/>'
        )
        if not matched:
            x = left + w_prefix
            parts.append(
                f'<line class="divmark" x1="{x:.1f}" y1="{y - 1:.1f}" x2="{x:.1f}" '
                f'y2="{y + h + 1:.1f}"/>'
            )
        elif labels:
            parts.append(_text(left + w_total + 5, y + h - 2, "✓", "ok small"))
        parts.append("</g>")
    ly = top + row_h * len(rows) + 16
    parts.append(f'<rect class="same" x="{left:.1f}" y="{ly - 9:.1f}" width="12" height="10"/>')
    parts.append(_text(left + 16, ly, "agreed prefix", "muted small"))
    parts.append(
        f'<rect class="diff" x="{left + 110:.1f}" y="{ly - 9:.1f}" width="12" height="10"/>'
    )
    parts.append(_text(left + 126, ly, "after first divergence (tokens)", "muted small"))
    return _svg(width, height, "".join(parts), "trajectory first divergence per prompt")


# ---------------------------------------------------------------------- KLD charts


def kld_histogram(values: Sequence[float] | np.ndarray, bins: int = 36) -> str:
    """Histogram of per-token KLD on a log10 axis; values ≤ 1e-9 go into the leftmost bin."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return ""
    floor = 1e-9
    positive = arr[arr > floor]
    lo = math.floor(math.log10(positive.min())) if positive.size else -9
    hi = math.ceil(math.log10(positive.max())) if positive.size else -8
    lo = max(lo, -9)
    hi = max(hi, lo + 1)
    logs = np.log10(np.clip(arr, 10.0**lo, None))
    counts, edges = np.histogram(logs, bins=bins, range=(lo, hi))
    left, plot_w, plot_h, top = 56.0, 560.0, 190.0, 14.0
    width, height = left + plot_w + 20, top + plot_h + 46
    peak = max(int(counts.max()), 1)
    parts: list[str] = []
    for frac in (0.0, 0.5, 1.0):
        y = top + plot_h * (1 - frac)
        parts.append(
            f'<line class="grid" x1="{left:.1f}" y1="{y:.1f}" x2="{left + plot_w:.1f}" '
            f'y2="{y:.1f}"/>'
        )
        parts.append(_text(left - 6, y + 4, f"{peak * frac:.0f}", "tick", "end"))
    bw = plot_w / bins
    for i, c in enumerate(counts):
        if c == 0:
            continue
        h = plot_h * c / peak
        x = left + i * bw
        tip = f"{10 ** edges[i]:.2g}–{10 ** edges[i + 1]:.2g} nats: {int(c)} tokens"
        parts.append(
            f'<rect class="hist" x="{x + 0.5:.1f}" y="{top + plot_h - h:.1f}" '
            f'width="{bw - 1:.1f}" height="{h:.1f}"><title>{esc(tip)}</title></rect>'
        )
    for k in range(lo, hi + 1):
        x = left + plot_w * (k - lo) / (hi - lo)
        parts.append(_text(x, top + plot_h + 16, f"1e{k}", "tick", "middle"))
    mean_v, median_v = float(arr.mean()), float(np.median(arr))
    for name, val, cls, dy in (
        ("mean", mean_v, "mark-mean", 10.0),
        ("median", median_v, "mark-median", 24.0),
    ):
        if val <= 0:
            continue
        x = left + plot_w * (min(max(math.log10(val), lo), hi) - lo) / (hi - lo)
        parts.append(
            f'<line class="{cls}" x1="{x:.1f}" y1="{top:.1f}" x2="{x:.1f}" '
            f'y2="{top + plot_h:.1f}"/>'
        )
        # label on the outer side of each marker so the two never overlap
        right = val >= median_v if name == "mean" else val > mean_v
        lx, anchor = (x + 4, "start") if right else (x - 4, "end")
        parts.append(_text(lx, top + dy, f"{name} {fmt_kld(val)}", "small label-bg " + cls, anchor))
    parts.append(
        _text(
            left + plot_w / 2,
            height - 6,
            f"per-token KL(ref ‖ cand), nats, log scale — {arr.size} tokens",
            "muted small",
            "middle",
        )
    )
    return _svg(width, height, "".join(parts), "per-token KLD histogram")


def kld_percentile_chart(points: Sequence[tuple[float, str, float]]) -> str:
    """Bars of KLD at the given percentiles (pct, label, value), log10 value axis."""
    pts = [(p, lab, v) for p, lab, v in points if v is not None and math.isfinite(v)]
    if not pts:
        return ""
    floor = 1e-9
    positive = [v for _, _, v in pts if v > floor]
    lo = math.floor(math.log10(min(positive))) if positive else -9
    hi = math.ceil(math.log10(max(positive))) if positive else -8
    lo = max(lo, -9)
    hi = max(hi, lo + 1)
    left, plot_w, plot_h, top = 56.0, 560.0, 190.0, 14.0
    width, height = left + plot_w + 20, top + plot_h + 46
    parts: list[str] = []
    for k in range(lo, hi + 1):
        y = top + plot_h * (1 - (k - lo) / (hi - lo))
        parts.append(
            f'<line class="grid" x1="{left:.1f}" y1="{y:.1f}" x2="{left + plot_w:.1f}" '
            f'y2="{y:.1f}"/>'
        )
        parts.append(_text(left - 6, y + 4, f"1e{k}", "tick", "end"))
    slot = plot_w / len(pts)
    for i, (_, label, value) in enumerate(pts):
        frac = 0.0 if value <= floor else (min(math.log10(value), hi) - lo) / (hi - lo)
        h = max(1.0, plot_h * max(frac, 0.0))
        x = left + i * slot
        parts.append(
            f'<rect class="hist" x="{x + slot * 0.15:.1f}" y="{top + plot_h - h:.1f}" '
            f'width="{slot * 0.7:.1f}" height="{h:.1f}"><title>{esc(label)}: '
            f"{esc(fmt_kld(value))} nats</title></rect>"
        )
        parts.append(_text(x + slot / 2, top + plot_h + 16, label, "tick", "middle"))
    parts.append(
        _text(
            left + plot_w / 2,
            height - 6,
            "per-token KL(ref ‖ cand) at each percentile, nats, log scale",
            "muted small",
            "middle",
        )
    )
    return _svg(width, height, "".join(parts), "per-token KLD percentiles")


# ------------------------------------------------------------------- R-NIAH heatmap


def _fmt_len(n: float) -> str:
    return f"{n / 1024:g}k" if n >= 1024 and n % 1024 == 0 else f"{n:g}"


def rniah_heatmap(cells: Sequence[Mapping[str, Any]]) -> str:
    """Length × position grids of reference and candidate accuracy, side by side."""
    rows = [c for c in cells if isinstance(c, Mapping)]
    lengths = sorted({v for c in rows if (v := as_float(c.get("length"))) is not None})
    positions = sorted({v for c in rows if (v := as_float(c.get("position"))) is not None})
    if not lengths or not positions:
        return ""
    lookup = {(as_float(c.get("length")), as_float(c.get("position"))): c for c in rows}
    cw, ch, left, top, gap = 76.0, 36.0, 52.0, 40.0, 56.0
    grid_w = cw * len(lengths)
    width = left + 2 * grid_w + gap + 10
    height = top + ch * len(positions) + 34
    parts: list[str] = []
    for g, (key, title) in enumerate((("base_acc", "reference"), ("cand_acc", "candidate"))):
        x0 = left + g * (grid_w + gap)
        parts.append(_text(x0 + grid_w / 2, 14, f"{title} accuracy", "label", "middle"))
        for j, length in enumerate(lengths):
            parts.append(_text(x0 + cw * (j + 0.5), top - 8, _fmt_len(length), "tick", "middle"))
        for i, pos in enumerate(positions):
            if g == 0:
                parts.append(_text(left - 8, top + ch * (i + 0.5) + 4, f"{pos:.0%}", "tick", "end"))
            for j, length in enumerate(lengths):
                x, y = x0 + cw * j, top + ch * i
                cell = lookup.get((length, pos))
                acc = as_float(cell.get(key)) if cell else None
                if acc is None or math.isnan(acc):
                    parts.append(
                        f'<rect class="cell-empty" x="{x + 1:.1f}" y="{y + 1:.1f}" '
                        f'width="{cw - 2:.1f}" height="{ch - 2:.1f}"/>'
                    )
                    continue
                pct = round(max(0.0, min(1.0, acc)) * 100)
                degr = as_float(cell.get("degradation")) if cell else None
                extra = " degraded" if g == 1 and degr and degr > 0 else ""
                tip = f"{_fmt_len(length)} tokens, needle at {pos:.0%}: {title} accuracy {acc:.2f}"
                if cell and cell.get("n_trials") is not None:
                    tip += f" over {cell.get('n_trials')} trial(s)"
                parts.append(
                    f'<rect class="cell{extra}" x="{x + 1:.1f}" y="{y + 1:.1f}" '
                    f'width="{cw - 2:.1f}" height="{ch - 2:.1f}" style="fill: color-mix(in srgb, '
                    f'var(--excellent) {pct}%, var(--fail))"><title>{esc(tip)}</title></rect>'
                )
                parts.append(_text(x + cw / 2, y + ch / 2 + 4, f"{acc:.2f}", "cell-text", "middle"))
    parts.append(
        _text(
            left,
            height - 8,
            "columns: context length (tokens) · rows: needle position · outlined: "
            "candidate worse than reference",
            "muted small",
        )
    )
    return _svg(width, height, "".join(parts), "R-NIAH accuracy heatmap", wide=False)


__all__ = [
    "band_class",
    "esc",
    "kld_histogram",
    "kld_percentile_chart",
    "rniah_heatmap",
    "score_bars",
    "trajectory_chart",
]
