"""Inline SVG charts for the HTML report. Plain strings, no external assets.

Colours come from CSS custom properties defined by the page (``--excellent``, ``--pass``,
``--degraded``, ``--fail``, ``--fg``, ``--muted``, ``--grid``, ``--same``, ``--diff``), so
every chart follows the page's light/dark scheme. All text is HTML-escaped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from refract.bands import BAND_THRESHOLDS, band
from refract.report.kit import as_float, esc, fmt, fmt_kld
from refract.system.memory import format_bytes


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
        if cand_len is None and p.get("cand_complete") is not False:
            cand_len = float(len(p.get("cand_token_ids") or []))
        # not decoded after its divergence (verification): the reference ran to its limit
        lengths.append(ref_len if cand_len is None else max(ref_len, cand_len))
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
            + (" tokens / cand not decoded after its divergence"
               if p.get("cand_complete") is False
               else f" / cand {fmt(p.get('cand_length'), 0)} tokens")
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



# ------------------------------------------------------------------------- sweep plot


@dataclass(frozen=True)
class SweepPoint:
    """One KV config on the sweep's size/quality plot.

    ``x``: its KV bytes per token as a fraction of the reference's (1.0 = the reference);
    ``y``: its composite, 0–100; ``ci``: the composite's interval (lo, hi) or None;
    ``status``: ``"scored"`` (filled marker coloured by ``band``) or ``"pruned"`` (hollow grey
    marker: a cheap first round's score); ``short``: the label drawn beside the marker
    (``label``, the full one, is in the tooltip)."""

    label: str
    x: float
    y: float
    ci: tuple[float, float] | None = None
    band: str | None = None
    status: str = "scored"
    frontier: bool = False
    recommended: bool = False
    short: str = ""
    bytes_per_token: float | None = None


@dataclass(frozen=True)
class _Frame:
    """Where the plot area sits in the SVG and what it spans (x: 0…x_max, y: 0…100)."""

    left: float
    top: float
    width: float
    height: float
    x_max: float

    def sx(self, x: float) -> float:
        return self.left + self.width * max(0.0, min(x, self.x_max)) / self.x_max

    def sy(self, y: float) -> float:
        return self.top + self.height * (1 - max(0.0, min(y, 100.0)) / 100)


_Box = tuple[float, float, float, float]

#: marker radius and the approximate width of one character of an 11 px label
_R = 5.5
_CHAR_W = 6.3


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _x_scale(x_max: float) -> tuple[float, float]:
    """(axis end, tick step) for data up to ``x_max`` (a fraction, ≥ 1: the reference)."""
    want = max(x_max, 1.0) * 1.06
    for step in (0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0):
        if want / step <= 12:
            return math.ceil(want / step - 1e-9) * step, step
    step = 10.0 ** math.ceil(math.log10(want / 10))
    return math.ceil(want / step) * step, step


def _pct_text(x: float) -> str:
    pct = 100 * x
    return f"{pct:.1f} %" if 0 < pct < 10 else f"{pct:.0f} %"


def _plot_grid(fr: _Frame, step: float, thresholds: Sequence[tuple[str, float]]) -> list[str]:
    """Band zones, threshold lines with their labels, grid lines, ticks and axis titles."""
    parts: list[str] = []
    cuts = sorted((t, n) for n, t in thresholds if 0 < t < 100)
    lows = [(0.0, "fail"), *((t, n.lower()) for t, n in cuts)]
    for i, (lo, name) in enumerate(lows):
        hi = lows[i + 1][0] if i + 1 < len(lows) else 100.0
        parts.append(
            f'<rect class="zone z-{esc(name)}" x="{fr.left:.1f}" y="{fr.sy(hi):.1f}" '
            f'width="{fr.width:.1f}" height="{fr.sy(lo) - fr.sy(hi):.1f}"/>'
        )
    for tick in range(0, 101, 20):
        y = fr.sy(tick)
        parts.append(f'<line class="grid" x1="{fr.left:.1f}" y1="{y:.1f}" '
                     f'x2="{fr.left + fr.width:.1f}" y2="{y:.1f}"/>')
        parts.append(_text(fr.left - 8, y + 4, f"{tick}", "tick", "end"))
    n_ticks = round(fr.x_max / step)
    for k in range(n_ticks + 1):
        x = fr.sx(k * step)
        parts.append(f'<line class="grid" x1="{x:.1f}" y1="{fr.top:.1f}" x2="{x:.1f}" '
                     f'y2="{fr.top + fr.height:.1f}"/>')
        parts.append(_text(x, fr.top + fr.height + 16, _pct_text(k * step), "tick", "middle"))
    for t, name in cuts:
        y = fr.sy(t)
        cls = "th-" + esc(name.lower())
        parts.append(f'<line class="threshold {cls}" x1="{fr.left:.1f}" y1="{y:.1f}" '
                     f'x2="{fr.left + fr.width:.1f}" y2="{y:.1f}"><title>{esc(name)} '
                     f"from {t:g}</title></line>")
        parts.append(_text(fr.left + fr.width + 8, y + 4, f"{name} ≥ {t:g}",
                           f"th-label {cls}"))
    bottom = fr.top + fr.height
    parts.append(f'<line class="axis" x1="{fr.left:.1f}" y1="{bottom:.1f}" '
                 f'x2="{fr.left + fr.width:.1f}" y2="{bottom:.1f}"/>')
    parts.append(f'<line class="axis" x1="{fr.left:.1f}" y1="{fr.top:.1f}" '
                 f'x2="{fr.left:.1f}" y2="{bottom:.1f}"/>')
    cy = fr.top + fr.height / 2
    parts.append(f'<text x="{fr.left - 40:.1f}" y="{cy:.1f}" text-anchor="middle" '
                 f'class="axis-title" transform="rotate(-90 {fr.left - 40:.1f} {cy:.1f})">'
                 "composite (0–100, higher is closer to the reference)</text>")
    return parts


def _frontier_steps(fr: _Frame, points: Sequence[SweepPoint]) -> list[tuple[float, float]]:
    """The corners of the frontier's staircase (the best composite reachable within each KV
    size), left to right: each frontier point, then across to the next one's size."""
    on = sorted((p for p in points if p.frontier), key=lambda p: (p.x, p.y))
    corners: list[tuple[float, float]] = []
    for i, p in enumerate(on):
        if i:
            corners.append((fr.sx(p.x), fr.sy(on[i - 1].y)))
        corners.append((fr.sx(p.x), fr.sy(p.y)))
    return corners


def _frontier_line(fr: _Frame, points: Sequence[SweepPoint]) -> str:
    corners = _frontier_steps(fr, points)
    if not corners:
        return ""
    on = [p for p in points if p.frontier]
    d = f"M{corners[0][0]:.1f},{corners[0][1]:.1f}"
    for (x, _), (_, y) in zip(corners[1::2], corners[2::2], strict=True):
        d += f" H{x:.1f} V{y:.1f}"
    return (f'<path class="frontier" d="{d}"><title>frontier: nothing smaller scores as '
            f"high ({len(on)} config{'s' if len(on) != 1 else ''})</title></path>")


def _tip(p: SweepPoint, interval_label: str, reference_label: str) -> str:
    lines = [p.label]
    score = f"composite {p.y:.1f}"
    if p.ci is not None:
        score += f", {interval_label} {p.ci[0]:.1f}–{p.ci[1]:.1f}"
    lines.append(score + (f" ({p.band})" if p.band else ""))
    size = f"{_pct_text(p.x)} of the {reference_label}'s KV bytes"
    if p.bytes_per_token is not None and math.isfinite(p.bytes_per_token):
        size = f"{format_bytes(p.bytes_per_token)} per token, " + size
    lines.append(size)
    flags = [f for f, on in (("pruned after the first round (first-round score)",
                              p.status == "pruned"),
                             ("on the frontier", p.frontier),
                             ("recommended", p.recommended)) if on]
    if flags:
        lines.append(", ".join(flags))
    return "\n".join(lines)


def _vertical_whisker(x: float, y_lo: float, y_hi: float, cls: str) -> str:
    lines = [(x, y_lo, x, y_hi), (x - 4, y_lo, x + 4, y_lo), (x - 4, y_hi, x + 4, y_hi)]
    body = "".join(
        f'<line x1="{a:.1f}" y1="{b:.1f}" x2="{c:.1f}" y2="{d:.1f}"/>' for a, b, c, d in lines)
    return (f'<g class="{cls}" stroke="currentColor" stroke-width="1.5" '
            f'stroke-linecap="round">{body}</g>')


def _marker(fr: _Frame, p: SweepPoint, tip: str) -> str:
    x, y = fr.sx(p.x), fr.sy(p.y)
    pruned = p.status == "pruned"
    body = f"<title>{esc(tip)}</title>"
    if p.ci is not None:
        lo, hi = sorted(p.ci)
        body += _vertical_whisker(x, fr.sy(lo), fr.sy(hi),
                                  "whisker pruned" if pruned else "whisker")
    if p.recommended:
        body += f'<circle class="rec-ring" cx="{x:.1f}" cy="{y:.1f}" r="{_R + 4.5:.1f}"/>'
    cls = "pt pruned" if pruned else "pt " + (
        "b-" + "-".join(p.band.lower().split()) if p.band else band_class(p.y))
    body += f'<circle class="{esc(cls)}" cx="{x:.1f}" cy="{y:.1f}" r="{_R:.1f}"/>'
    kind = "point pruned" if pruned else "point"
    return (f'<g class="{kind}" data-label="{esc(p.label)}" data-x="{x:.1f}" '
            f'data-y="{y:.1f}">{body}</g>')


def _overlaps(a: _Box, b: _Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _label_spots(x: float, y: float, w: float, r: float) -> list[tuple[float, float, str, _Box]]:
    """Candidate spots (text x, baseline y, anchor, box) for a label ``w`` wide beside a marker
    of radius ``r`` at (x, y): right, left, above, below, then right and left a line or two up
    or down."""
    h = 12.0

    def side(dy: float, right: bool) -> tuple[float, float, str, _Box]:
        top, bottom = y - 7 + dy, y + 6 + dy
        if right:
            return x + r + 4, y + 4 + dy, "start", (x + r + 3, top, x + r + 5 + w, bottom)
        return x - r - 4, y + 4 + dy, "end", (x - r - 5 - w, top, x - r - 3, bottom)

    spots = [side(0, True), side(0, False),
             (x, y - r - 6, "middle", (x - w / 2, y - r - 6 - h + 2, x + w / 2, y - r - 4)),
             (x, y + r + 14, "middle", (x - w / 2, y + r + 3, x + w / 2, y + r + 4 + h))]
    for dy in (-13.0, 13.0, -26.0, 26.0):
        spots += [side(dy, True), side(dy, False)]
    return spots


def _label_spot(x: float, y: float, text: str, taken: Sequence[_Box], fr: _Frame,
                force: bool, r: float = _R) -> tuple[float, float, str, _Box] | None:
    """Where a label beside the marker (radius ``r``) at (x, y) fits without covering another
    label, marker, whisker or the frontier (``force``: a label that must be drawn, which
    may go a line or two up or down, or right or left over the others when none is free)."""
    w = len(text) * _CHAR_W
    spots = _label_spots(x, y, w, r)
    if not force:  # a label far from its marker is misread: only the spots within a line
        spots = spots[:8]
    right_edge = fr.left + fr.width + 4
    for spot in spots:
        box = spot[3]
        inside = box[0] >= fr.left + 2 and box[2] <= right_edge and box[1] >= fr.top - 14
        if inside and not any(_overlaps(box, t) for t in taken):
            return spot
    if force:
        return spots[0] if x + r + 5 + w <= right_edge else spots[1]
    return None


def _point_labels(fr: _Frame, points: Sequence[SweepPoint], ref_box: _Box) -> list[str]:
    """Short labels beside the markers: the recommended and frontier configs always, the
    others where they fit (off the other labels, the markers, whiskers and frontier)."""
    taken: list[_Box] = [ref_box]
    corners = _frontier_steps(fr, points)
    for (x0, y0), (x1, y1) in zip(corners, corners[1:], strict=False):
        taken.append((min(x0, x1) - 1.5, min(y0, y1) - 1.5, max(x0, x1) + 1.5, max(y0, y1) + 1.5))
    for p in points:
        x, y = fr.sx(p.x), fr.sy(p.y)
        r = _R + 4.5 if p.recommended else _R
        taken.append((x - r - 1, y - r - 1, x + r + 1, y + r + 1))
        if p.ci is not None:
            top, bottom = fr.sy(max(p.ci)), fr.sy(min(p.ci))
            taken.append((x - 1.5, top, x + 1.5, bottom))
    order = sorted(points, key=lambda p: (not p.recommended, not p.frontier,
                                          p.status == "pruned", -p.y))
    parts: list[str] = []
    for p in order:
        text = p.short or p.label
        must = p.recommended or p.frontier
        r = _R + 4.5 if p.recommended else _R
        spot = _label_spot(fr.sx(p.x), fr.sy(p.y), text, taken, fr, must, r)
        if spot is None:
            continue
        sx, sy, anchor, box = spot
        taken.append(box)
        cls = "pt-label label-bg small" + (" rec" if p.recommended else "") + (
            " muted" if p.status == "pruned" else "")
        parts.append(_text(sx, sy, text, cls, anchor))
    return parts


def _reference_marker(fr: _Frame, label: str, reference_bytes: float | None) -> str:
    x, y = fr.sx(1.0), fr.sy(100.0)
    size = ("KV bytes unknown" if reference_bytes is None or not math.isfinite(reference_bytes)
            else f"{format_bytes(reference_bytes)} per token")
    tip = f"{label}: the scale's 100 % and composite 100; {size}"
    d = 7.0
    return (
        f'<g class="reference"><title>{esc(tip)}</title>'
        f'<polygon class="ref-marker" points="{x:.1f},{y - d:.1f} {x + d:.1f},{y:.1f} '
        f'{x:.1f},{y + d:.1f} {x - d:.1f},{y:.1f}"/>'
        + _text(x - d - 4, y - 6, label, "ref-label label-bg small", "end")
        + "</g>"
    )


def _legend(left: float, y: float) -> str:
    items = [
        f'<circle class="pt b-pass" cx="{{x}}" cy="{y - 4:.1f}" r="{_R:.1f}"/>',
        f'<circle class="pt pruned" cx="{{x}}" cy="{y - 4:.1f}" r="{_R:.1f}"/>',
        f'<circle class="rec-ring" cx="{{x}}" cy="{y - 4:.1f}" r="{_R + 2:.1f}"/>',
        f'<path class="frontier" d="M{{x0}},{y:.1f} H{{x}} V{y - 8:.1f} H{{x1}}"/>',
        f'<polygon class="ref-marker" points="{{x}},{y - 10:.1f} {{x1}},{y - 4:.1f} '
        f'{{x}},{y + 2:.1f} {{x0}},{y - 4:.1f}"/>',
        f'<g class="whisker" stroke="currentColor" stroke-width="1.5"><line x1="{{x}}" '
        f'y1="{y - 11:.1f}" x2="{{x}}" y2="{y + 3:.1f}"/><line x1="{{x0}}" y1="{y - 11:.1f}" '
        f'x2="{{x1}}" y2="{y - 11:.1f}"/><line x1="{{x0}}" y1="{y + 3:.1f}" x2="{{x1}}" '
        f'y2="{y + 3:.1f}"/></g>',
    ]
    texts = ["scored (colour: band)", "pruned (first round)", "recommended", "frontier",
             "reference", "interval"]
    parts: list[str] = []
    x = left
    for glyph, text in zip(items, texts, strict=True):
        parts.append(glyph.format(x=f"{x + 6:.1f}", x0=f"{x:.1f}", x1=f"{x + 12:.1f}"))
        parts.append(_text(x + 18, y, text, "muted small"))
        x += 34 + len(text) * 6.3
    return f'<g class="legend">{"".join(parts)}</g>'


def sweep_plot(points: Sequence[SweepPoint], reference_bytes: float | None = None,
               thresholds: Sequence[tuple[str, float]] = BAND_THRESHOLDS, *,
               reference_label: str = "f16 reference",
               interval_label: str = "95 % interval") -> str:
    """KV size against composite, one marker per config: x = KV bytes per token as a share
    of the reference's (which sits at (100 %, 100) as a diamond), y = composite 0–100, with
    band zones and a dashed line at each threshold, a vertical whisker per interval, the
    frontier as a staircase and a ring around the recommended config. Points whose x or y is
    not finite are left out; ``reference_bytes`` only goes into the reference's tooltip."""
    pts = [p for p in points if _finite(p.x) and _finite(p.y)]
    pts = [p if p.ci is None or all(_finite(v) for v in p.ci) else replace(p, ci=None)
           for p in pts]
    x_end, step = _x_scale(max((p.x for p in pts), default=1.0))
    fr = _Frame(left=72.0, top=26.0, width=720.0, height=400.0, x_max=x_end)
    width, height = fr.left + fr.width + 118, fr.top + fr.height + 76
    parts = _plot_grid(fr, step, thresholds)
    parts.append(_text(fr.left + fr.width / 2, fr.top + fr.height + 38,
                       f"KV cache bytes per token, % of the {reference_label} "
                       "(llama.cpp's allocations)", "axis-title", "middle"))
    parts.append(_frontier_line(fr, pts))
    ref_x, ref_y = fr.sx(1.0), fr.sy(100.0)
    ref_box = (ref_x - 11 - len(reference_label) * _CHAR_W, ref_y - 18, ref_x + 8, ref_y + 8)
    parts.append(_reference_marker(fr, reference_label, reference_bytes))
    # pruned under scored, the recommended config last (on top)
    for p in sorted(pts, key=lambda p: (p.recommended, p.status != "pruned")):
        parts.append(_marker(fr, p, _tip(p, interval_label, reference_label)))
    parts.extend(_point_labels(fr, pts, ref_box))
    parts.append(_legend(fr.left, height - 8))
    n = len(pts)
    label = (f"KV cache size against composite: {n} config{'s' if n != 1 else ''} and the "
             f"{reference_label}")
    return _svg(width, height, "".join(parts), label).replace(
        'class="chart wide"', 'class="chart wide sweep-plot"', 1)


__all__ = [
    "band_class",
    "esc",
    "kld_histogram",
    "kld_percentile_chart",
    "rniah_heatmap",
    "score_bars",
    "sweep_plot",
    "SweepPoint",
    "trajectory_chart",
]
