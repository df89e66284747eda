"""Summary of a multi-candidate score: one row per candidate (the matrix / ``--candidate a,b``
view). Unlike :mod:`refract.report.compare` it does not check comparability: the reports come
from one run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from refract.report.fields import (
    NOT_MEASURED_LABEL,
    axis_cell,
    axis_keys,
    axis_name,
    axis_problems,
    band_text,
    fmt,
    fmt_kld,
    is_measured,
    is_self_check,
    mean_kld,
    model_name,
    noise_floor_text,
    report_composite,
    report_status,
)
from refract.report.markdown import md_table

SUMMARY_HEADERS: tuple[str, ...] = (
    "candidate",
    "composite",
    "band",
    *(axis_name(k) for k in axis_keys()),
    "KLD (nats)",
    "A noise floor",
    "status",
)
_NUMERIC = {1, *range(3, 3 + len(axis_keys()) + 1)}


def _status(report: Mapping[str, Any]) -> str:
    parts = [report_status(report)]
    if not is_measured(report):
        parts.append(NOT_MEASURED_LABEL)
    if is_self_check(report):
        parts.append("self-check")
    parts += [p.split(":")[0] for p in axis_problems(report)]
    return ", ".join(parts)


def summary_cells(report: Mapping[str, Any]) -> list[str]:
    """One row: candidate, composite (— when nothing was measured), band (or ``not
    measured``), A–D (or error / invalid / — / (excluded)), mean KLD in nats, Axis A's
    numerical-noise floor (with verdict), status."""
    return [
        str(report.get("candidate") or "?"),
        fmt(report_composite(report)),
        band_text(report),
        *(axis_cell(report, k) for k in axis_keys()),
        fmt_kld(mean_kld(report)),
        noise_floor_text(report),
        _status(report),
    ]


def _title(reports: Sequence[Mapping[str, Any]]) -> str:
    models = sorted({model_name(r) for r in reports})
    refs = sorted({str(r.get("reference") or "?") for r in reports})
    return f"{', '.join(models)} · reference {', '.join(refs)}"


def summary_table(reports: Sequence[Mapping[str, Any]], title: str | None = None) -> Table:
    """A rich table, one row per candidate report (cells are plain text, never markup)."""
    from refract.report.text import BAND_STYLES

    table = Table(title=title if title is not None else _title(reports), box=box.SIMPLE_HEAD)
    for i, header in enumerate(SUMMARY_HEADERS):
        table.add_column(header, justify="right" if i in _NUMERIC else "left")
    for report in reports:
        cells = [Text(c) for c in summary_cells(report)]
        cells[2].stylize(BAND_STYLES.get(cells[2].plain, ""))
        for j in range(len(axis_keys())):
            cells[3 + j].stylize(BAND_STYLES.get(cells[3 + j].plain, ""))
        table.add_row(*cells)
    return table


def summary_markdown(reports: Sequence[Mapping[str, Any]]) -> str:
    """The same table as GitHub-flavoured Markdown."""
    lines = md_table(SUMMARY_HEADERS, (summary_cells(r) for r in reports), _NUMERIC)
    return "\n".join(lines) + "\n"


__all__ = ["SUMMARY_HEADERS", "summary_cells", "summary_markdown", "summary_table"]
