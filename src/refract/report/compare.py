"""Side-by-side comparison of N reports (ours or refract-llm's)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from refract.composite import AXES, AXIS_LETTERS, AXIS_TITLES
from refract.report.fields import (
    axis_scores,
    fmt,
    fmt_kld,
    framework_label,
    mean_kld,
    model_name,
    report_band,
    report_composite,
    report_name,
)
from refract.report.io import load_report

ReportSource = str | os.PathLike[str] | Mapping[str, Any]


@dataclass(frozen=True)
class CompareRow:
    """One report, flattened for a table."""

    name: str
    model: str
    reference: str
    candidate: str
    composite: float
    band: str
    scores: dict[str, float | None]
    mean_kld: float | None
    framework: str
    path: str | None = None


def _load(source: ReportSource) -> tuple[Mapping[str, Any], str | None]:
    if isinstance(source, Mapping):
        return source, None
    return load_report(source), os.fspath(source)


def row_for(report: Mapping[str, Any], path: str | os.PathLike[str] | None = None) -> CompareRow:
    """Flatten one report into a :class:`CompareRow`."""
    return CompareRow(
        name=report_name(report, Path(path) if path is not None else None),
        model=model_name(report),
        reference=str(report.get("reference") or ""),
        candidate=str(report.get("candidate") or ""),
        composite=report_composite(report),
        band=report_band(report),
        scores=axis_scores(report),
        mean_kld=mean_kld(report),
        framework=framework_label(report),
        path=os.fspath(path) if path is not None else None,
    )


def compare_rows(reports: Sequence[ReportSource], *, sort: bool = False) -> list[CompareRow]:
    """Rows for report paths and/or report dicts, in input order (or best composite first).

    Raises :class:`refract.report.io.ReportError` naming any file that is not a report.
    """
    rows = [row_for(*_load(src)) for src in reports]
    if sort:
        rows.sort(key=lambda r: (-r.composite, r.name))
    return rows


HEADERS: tuple[str, ...] = (
    "report",
    "model",
    "candidate",
    "composite",
    "band",
    *(f"{AXIS_LETTERS[k]} {AXIS_TITLES[k]}" for k in AXES),
    "KLD (nats)",
)


def row_cells(row: CompareRow) -> list[str]:
    return [
        row.name,
        row.model,
        row.candidate,
        fmt(row.composite),
        row.band,
        *(fmt(row.scores.get(k)) for k in AXES),
        fmt_kld(row.mean_kld),
    ]


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def compare_markdown(rows: Sequence[CompareRow]) -> str:
    """A GitHub-flavoured Markdown table."""
    numeric = {3, *range(5, len(HEADERS))}
    lines = [
        "| " + " | ".join(HEADERS) + " |",
        "|" + "|".join("---:" if i in numeric else "---" for i in range(len(HEADERS))) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_md_cell(c) for c in row_cells(row)) + " |")
    return "\n".join(lines) + "\n"


def compare_table(rows: Sequence[CompareRow], title: str | None = None) -> Table:
    """A rich table (cells are plain text: no markup from report contents)."""
    from refract.report.text import BAND_STYLES

    table = Table(title=title, box=box.SIMPLE_HEAD)
    for i, header in enumerate(HEADERS):
        table.add_column(header, justify="right" if i == 3 or i >= 5 else "left")
    for row in rows:
        cells = [Text(c) for c in row_cells(row)]
        cells[4].stylize(BAND_STYLES.get(row.band, ""))
        table.add_row(*cells)
    return table


__all__ = [
    "HEADERS",
    "CompareRow",
    "compare_markdown",
    "compare_rows",
    "compare_table",
    "row_cells",
    "row_for",
]
