"""Terminal report card (rich). Honours ``NO_COLOR``."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from refract.axes import registry
from refract.bands import band
from refract.report.fields import (
    NOT_MEASURED_LABEL,
    axes_of,
    axis_estimate,
    axis_keys,
    axis_name,
    axis_score,
    axis_status,
    band_probabilities_of,
    band_undecided,
    composite_estimate,
    confidence_label,
    diagnosis_of,
    display_model,
    fmt,
    fmt_interval,
    interval_of,
    is_measured,
    is_self_check,
    methods_note,
    report_band,
    report_composite,
    report_status,
)
from refract.uncertainty import band_phrase

SELF_CHECK_TITLE = "REFRACT self-check: reference vs reference — not a quantization score"

BAND_STYLES: dict[str, str] = {
    "EXCELLENT": "bold green",
    "PASS": "bold cyan",
    "DEGRADED": "bold yellow",
    "FAIL": "bold red",
    "invalid": "bold red",
    "error": "bold magenta",
    "unscored": "dim",
    "skipped": "dim",
    NOT_MEASURED_LABEL: "bold magenta",
}

_BAR_WIDTH = 20

NOT_MEASURED_CARD = "No axis produced a score: no composite, no band, no verdict."
"""The card's one line for a report in which nothing was measured."""


def _bar(score: float | None) -> Text:
    if score is None or math.isnan(score):
        return Text("·" * _BAR_WIDTH, style="dim")
    filled = max(0, min(_BAR_WIDTH, round(score / 100 * _BAR_WIDTH)))
    text = Text("█" * filled, style=BAND_STYLES[band(score)].replace("bold ", ""))
    text.append("░" * (_BAR_WIDTH - filled), style="dim")
    return text


def report_renderable(report: Mapping[str, Any]) -> RenderableType:
    """The report card as a rich renderable."""
    measured = is_measured(report)
    comp = report_composite(report)
    comp_band = report_band(report) or NOT_MEASURED_LABEL
    style = BAND_STYLES.get(comp_band, "bold")

    head = Text()
    if measured and interval_of(composite_estimate(report)) is not None:
        head = _uncertain_head(report, comp_band, style)
    elif measured:
        head.append(f"{fmt(comp)}", style=style)
        head.append("  ")
        head.append(comp_band, style=style)
        summary = report.get("summary")
        if summary:
            head.append(f"   {summary}")
    else:  # one line: no composite, no band, no verdict (SPEC §4)
        head.append("—  NOT MEASURED", style=style)
        head.append(f"   {NOT_MEASURED_CARD}")

    meta = Table.grid(padding=(0, 2))
    meta.add_column(style="dim")
    meta.add_column()
    meta.add_row("model", Text(display_model(report)))
    meta.add_row("reference", Text(str(report.get("reference") or "—")))
    meta.add_row("candidate", Text(str(report.get("candidate") or "—")))
    prov = report.get("provenance")
    model_prov = prov.get("model") if isinstance(prov, Mapping) else None
    if isinstance(model_prov, Mapping) and isinstance(model_prov.get("sha256"), str):
        meta.add_row("model sha256", Text(str(model_prov["sha256"])[:16] + "…"))
        corpus = prov.get("corpus") if isinstance(prov, Mapping) else None
        if isinstance(corpus, Mapping) and corpus.get("name"):
            meta.add_row("corpus", Text(f"{corpus['name']} ({str(corpus.get('sha256'))[:12]}…)"))
    else:
        meta.add_row("provenance", Text("unverified (no input hashes)", style="dim"))

    axes = axes_of(report)
    table = Table(box=box.SIMPLE_HEAD, expand=False, pad_edge=False)
    table.add_column("axis")
    table.add_column("score", justify="right")
    # older reports carry no intervals: the table is as it always was
    intervals = any(axis_estimate(report, k) is not None for k in axis_keys(report))
    if intervals:
        table.add_column(confidence_label(report), justify="right", no_wrap=True)
    table.add_column("band", no_wrap=True)
    table.add_column("", no_wrap=True)
    table.add_column("detail", style="dim")

    def cells(score_text: str, key: str | None = None) -> list[str]:
        """The score cell, then the interval cell where the report has intervals."""
        if not intervals:
            return [score_text]
        return [score_text, fmt_interval(axis_estimate(report, key)) if key else "—"]

    for key in axis_keys(report):
        axis = axes.get(key, {})
        known = registry.get(key)
        title = f"{known.letter}  {known.title}" if known is not None else key
        status = axis_status(report, key)
        score = axis_score(report, key)
        if status == "error":
            table.add_row(title, *cells("—"), Text("error", style=BAND_STYLES["error"]),
                          _bar(None), Text(f"failed: {axis.get('error')}"))
            continue
        if status in ("skipped", "missing"):
            reason = axis.get("reason")
            table.add_row(title, *cells("—"), Text("skipped", style="dim"), _bar(None),
                          Text(str(reason) if reason else ""))
            continue
        if status == "invalid":
            label = Text("FAIL", style=BAND_STYLES["FAIL"])
            label.append(" invalid", style=BAND_STYLES["invalid"])
            table.add_row(title, *cells(fmt(score), key), label, _bar(score),
                          Text(str(axis.get("invalid_reason") or "non-finite logits")))
            continue
        axis_band = str(axis.get("band") or band(score) or "skipped")
        if status == "unscored":
            label = Text("unscored", style="dim")
            label.append(" (excluded)", style="dim")
        else:
            label = Text(axis_band, style=BAND_STYLES.get(axis_band, ""))
            if axis.get("in_composite") is False:
                label.append(" (excluded)", style="dim")
        detail = known.card_detail(axis) if known is not None else ""
        table.add_row(title, *cells(fmt(score), key), label, _bar(score), Text(detail))

    parts: list[RenderableType] = [head, Text(), meta, table]
    note = methods_note(report)
    if note:
        parts += [Text(note, style="dim"), Text()]
    if is_self_check(report):
        parts.insert(0, Text(
            "Self-check: candidate = reference. This measures refract's own run-to-run noise "
            "(a negative control), not a quantization.", style="bold yellow"))
    if report_status(report) != "ok" and measured:
        failed = [k for k in axis_keys(report) if axis_status(report, k) == "error"]
        parts.insert(0, Text(
            f"Partial report: {', '.join(axis_name(k) for k in failed)}"
            " failed; the composite covers the other axes.", style=BAND_STYLES["error"]))
    diagnosis = diagnosis_of(report)
    if diagnosis:
        parts.append(Text("Diagnosis", style="bold"))
        parts.append(_bullets(diagnosis, ""))
    notes = _all_notes(report)
    if notes:
        parts.append(Text())
        parts.append(Text("Notes", style="bold"))
        parts.append(_bullets(notes, "dim"))
    return Panel(
        Group(*parts),
        title=f"[bold]{SELF_CHECK_TITLE if is_self_check(report) else 'REFRACT report card'}"
        "[/bold]",
        title_align="left",
        border_style=style.replace("bold ", ""),
        box=box.ROUNDED,
    )


def _uncertain_head(report: Mapping[str, Any], comp_band: str, style: str) -> Text:
    """``86.62 [95 %: 73.1–93.2]  PASS — 72 % PASS, 18 % EXCELLENT, 10 % DEGRADED``, then
    the summary on a line of its own, after "Band not decided at 95 %." where it is not."""
    est = composite_estimate(report)
    label = confidence_label(report)
    head = Text()
    head.append(fmt(report_composite(report)), style=style)
    head.append(f" [{label}: {fmt_interval(est)}]  ")
    phrase = band_phrase(comp_band, band_probabilities_of(est))
    head.append(comp_band, style=style)
    head.append(phrase.removeprefix(comp_band))
    head.append("\n")
    if band_undecided(report):
        head.append(f"Band not decided at {label}. ", style=BAND_STYLES["DEGRADED"])
    head.append(str(report.get("summary") or ""))
    return head


def _bullets(lines: list[str], style: str) -> Table:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(width=2, justify="right")
    grid.add_column(style=style)
    for line in lines:
        grid.add_row("•", Text(line))
    return grid


def _all_notes(report: Mapping[str, Any]) -> list[str]:
    notes: list[str] = []
    top = report.get("notes")
    if isinstance(top, list):
        notes.extend(str(n) for n in top)
    detail = report.get("composite_detail")
    if isinstance(detail, Mapping) and isinstance(detail.get("notes"), list):
        notes.extend(str(n) for n in detail["notes"])
    for key, axis in axes_of(report).items():
        axis_notes = axis.get("notes")
        if isinstance(axis_notes, list):
            notes.extend(f"{key}: {n}" for n in axis_notes)
    return notes


def _no_color_env() -> bool:
    return bool(os.environ.get("NO_COLOR"))


def print_report(report: Mapping[str, Any], console: Console | None = None) -> None:
    """Print the report card to ``console`` (a fresh stdout console by default)."""
    console = console or Console()  # rich reads NO_COLOR itself
    console.print(report_renderable(report))


def render_text(report: Mapping[str, Any], *, color: bool | None = None, width: int = 100) -> str:
    """The report card as a string. ``color=None`` → colour unless ``NO_COLOR`` is set."""
    use_color = (not _no_color_env()) if color is None else color
    buf = io.StringIO()
    console = Console(
        file=buf,
        width=width,
        force_terminal=use_color,
        no_color=not use_color,
        color_system="truecolor" if use_color else None,
        highlight=False,
        legacy_windows=False,
    )
    console.print(report_renderable(report))
    return buf.getvalue()


__all__ = [
    "BAND_STYLES",
    "SELF_CHECK_TITLE",
    "print_report",
    "render_text",
    "report_renderable",
]
