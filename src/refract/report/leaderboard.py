"""Leaderboard: rank the reports in a directory, per candidate KV config.

Reports are grouped by (candidate, reference, framework) — scores from different methodology
versions or references are never ranked against each other — and ranked by composite within
each group. Output is Markdown or a self-contained HTML page, chosen by file extension.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refract.composite import AXES, AXIS_LETTERS, AXIS_TITLES
from refract.report.compare import CompareRow, row_for
from refract.report.fields import fmt, fmt_kld, short_notes
from refract.report.io import ReportError, load_report, write_text

DISCLAIMERS: tuple[str, ...] = (
    (
        "This leaderboard ranks KV-cache quantizations, not models: each score says how "
        "closely a model running the candidate KV config reproduces the same model on the "
        "reference config. A higher rank means the config changes that model less, not that "
        "the model is better."
    ),
    "Rows are only comparable within a group (same candidate, reference and framework).",
    (
        "Each row is one run; differences of a point or two are within run-to-run noise "
        "unless a noise floor was measured."
    ),
)


@dataclass(frozen=True)
class LeaderboardEntry:
    rank: int
    row: CompareRow
    notes: str


@dataclass(frozen=True)
class LeaderboardGroup:
    candidate: str
    reference: str
    framework: str
    entries: tuple[LeaderboardEntry, ...]


@dataclass(frozen=True)
class Leaderboard:
    groups: tuple[LeaderboardGroup, ...]
    skipped: tuple[str, ...] = field(default_factory=tuple)
    """Files found but not loaded, each as 'path: reason'."""


def collect_reports(
    directory: str | os.PathLike[str], *, recursive: bool = True
) -> tuple[list[tuple[Path, dict[str, Any]]], list[str]]:
    """Load every ``*.json`` report under ``directory``; non-reports are listed, not fatal."""
    root = Path(directory)
    if not root.is_dir():
        raise ReportError(f"{root}: not a directory")
    pattern = "**/*.json" if recursive else "*.json"
    loaded: list[tuple[Path, dict[str, Any]]] = []
    skipped: list[str] = []
    for path in sorted(root.glob(pattern)):
        if not path.is_file():
            continue
        try:
            loaded.append((path, load_report(path)))
        except ReportError as exc:
            skipped.append(str(exc))
    return loaded, skipped


def _rank(rows: list[tuple[CompareRow, Mapping[str, Any]]]) -> tuple[LeaderboardEntry, ...]:
    ordered = sorted(rows, key=lambda r: (-r[0].composite, r[0].model, r[0].name))
    entries: list[LeaderboardEntry] = []
    prev: float | None = None
    rank = 0
    for i, (row, report) in enumerate(ordered, start=1):
        if prev is None or row.composite != prev:
            rank = i  # competition ranking: ties share a rank
        prev = row.composite
        entries.append(LeaderboardEntry(rank=rank, row=row, notes=short_notes(report)))
    return tuple(entries)


def build_leaderboard(
    source: str
    | os.PathLike[str]
    | Iterable[tuple[str | os.PathLike[str] | None, Mapping[str, Any]]],
) -> Leaderboard:
    """Group and rank reports from a directory, or from (path or None, report) pairs."""
    skipped: list[str] = []
    if isinstance(source, (str, os.PathLike)):
        pairs: Sequence[tuple[Any, Mapping[str, Any]]]
        pairs, skipped = collect_reports(source)
    else:
        pairs = list(source)
    buckets: dict[tuple[str, str, str], list[tuple[CompareRow, Mapping[str, Any]]]] = {}
    for path, report in pairs:
        row = row_for(report, path)
        buckets.setdefault((row.candidate, row.reference, row.framework), []).append((row, report))
    groups = tuple(
        LeaderboardGroup(candidate=c, reference=r, framework=f, entries=_rank(rows))
        for (c, r, f), rows in sorted(buckets.items())
    )
    return Leaderboard(groups=groups, skipped=tuple(skipped))


HEADERS: tuple[str, ...] = (
    "rank",
    "model",
    "composite",
    "band",
    *(f"{AXIS_LETTERS[k]} {AXIS_TITLES[k]}" for k in AXES),
    "KLD (nats)",
    "notes",
)
_NUMERIC = {0, 2, *range(4, 4 + len(AXES) + 1)}


def entry_cells(entry: LeaderboardEntry) -> list[str]:
    row = entry.row
    return [
        str(entry.rank),
        row.model,
        fmt(row.composite),
        row.band,
        *(fmt(row.scores.get(k)) for k in AXES),
        fmt_kld(row.mean_kld),
        entry.notes,
    ]


def _md(text: str) -> str:
    return (
        text.replace("\\", "\\\\")
        .replace("|", "\\|")
        .replace("\n", " ")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
    )


def leaderboard_markdown(board: Leaderboard) -> str:
    lines = ["# REFRACT leaderboard", ""]
    lines += [f"> {d}" for d in DISCLAIMERS[:1]]
    lines += ["", *(f"- {d}" for d in DISCLAIMERS[1:]), ""]
    if not board.groups:
        lines += ["_No reports found._", ""]
    for group in board.groups:
        lines += [
            f"## Candidate `{_md(group.candidate)}`",
            "",
            (
                f"Reference `{_md(group.reference)}` · {_md(group.framework)} · "
                f"{len(group.entries)} report(s)"
            ),
            "",
            "| " + " | ".join(HEADERS) + " |",
            "|" + "|".join("---:" if i in _NUMERIC else "---" for i in range(len(HEADERS))) + "|",
        ]
        for entry in group.entries:
            lines.append("| " + " | ".join(_md(c) for c in entry_cells(entry)) + " |")
        lines.append("")
    if board.skipped:
        lines += ["## Files skipped", "", *(f"- {_md(s)}" for s in board.skipped), ""]
    return "\n".join(lines)


def leaderboard_html(board: Leaderboard) -> str:
    from refract.report.html import page, pill
    from refract.report.svg import esc

    parts = [
        '<header class="card"><h1>REFRACT leaderboard</h1>',
        f"<p><strong>{esc(DISCLAIMERS[0])}</strong></p>",
        '<ul class="note">'
        + "".join(f"<li>{esc(d)}</li>" for d in DISCLAIMERS[1:])
        + "</ul></header>",
    ]
    if not board.groups:
        parts.append('<section><p class="note">No reports found.</p></section>')
    for group in board.groups:
        head = "".join(
            f"<th{' class=num' if i in _NUMERIC else ''}>{esc(h)}</th>"
            for i, h in enumerate(HEADERS)
        )
        body = []
        for entry in group.entries:
            cells = entry_cells(entry)
            tds = []
            for i, cell in enumerate(cells):
                if i == 3:
                    tds.append(f"<td>{pill(cell, True)}</td>")
                elif i in _NUMERIC:
                    tds.append(f"<td class=num>{esc(cell)}</td>")
                else:
                    tds.append(f"<td>{esc(cell)}</td>")
            tip = esc(entry.row.path or entry.row.name)
            body.append(f'<tr title="{tip}">' + "".join(tds) + "</tr>")
        parts.append(
            f"<section><h2>Candidate <code>{esc(group.candidate)}</code></h2>"
            f'<p class="sub">reference <code>{esc(group.reference)}</code> · '
            f"{esc(group.framework)} · {len(group.entries)} report(s)</p>"
            f'<div class="table-wrap"><table><tr>{head}</tr>{"".join(body)}</table></div></section>'
        )
    if board.skipped:
        parts.append(
            '<section><h2>Files skipped</h2><ul class="note">'
            + "".join(f"<li>{esc(s)}</li>" for s in board.skipped)
            + "</ul></section>"
        )
    return page("REFRACT leaderboard", "\n".join(parts), wide=True)


def render_leaderboard(board: Leaderboard, fmt_name: str) -> str:
    """``fmt_name``: ``markdown``/``md`` or ``html``."""
    name = fmt_name.lower().lstrip(".")
    if name in ("md", "markdown"):
        return leaderboard_markdown(board)
    if name in ("html", "htm"):
        return leaderboard_html(board)
    raise ValueError(f"unknown leaderboard format {fmt_name!r} (use markdown or html)")


def write_leaderboard(
    source: str | os.PathLike[str] | Leaderboard, out: str | os.PathLike[str]
) -> Path:
    """Build (unless given) and write a leaderboard; the format follows ``out``'s extension
    (.md / .markdown → Markdown, .html / .htm → HTML)."""
    out_path = Path(out)
    suffix = out_path.suffix.lower()
    if suffix not in (".md", ".markdown", ".html", ".htm"):
        raise ValueError(
            f"{out_path}: cannot tell the leaderboard format from the extension (use .md or .html)"
        )
    board = source if isinstance(source, Leaderboard) else build_leaderboard(source)
    return write_text(render_leaderboard(board, suffix), out_path)


__all__ = [
    "DISCLAIMERS",
    "HEADERS",
    "Leaderboard",
    "LeaderboardEntry",
    "LeaderboardGroup",
    "build_leaderboard",
    "collect_reports",
    "entry_cells",
    "leaderboard_html",
    "leaderboard_markdown",
    "render_leaderboard",
    "write_leaderboard",
]
