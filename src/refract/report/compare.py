"""Side-by-side comparison of N reports (ours or refract-llm's).

:func:`compare_reports` checks comparability first (:mod:`refract.report.comparability`):
incomparable reports raise :class:`IncompatibleReports` unless ``allow_incompatible``, in
which case each row lists the fingerprint items on which it differs (``differs`` column).
Reports without input hashes (refract-llm's) are marked ``unverified``. Reports from
different llama.cpp builds (flavour or commit, e.g. upstream beside the TurboQuant fork) are
comparable, but never silently: the table then gets a ``llama.cpp`` column naming each row's
build and a note line saying how many builds the rows come from.

Comparable reports are also paired (:mod:`refract.report.paired`): every report after the first
against the first, per axis and for the composite, the difference with its 95 % interval where
both carry per-unit data on the same units, else why not (:func:`paired_lines`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from refract.report.comparability import (
    Comparability,
    builds_note,
    check_comparable,
    distinct_builds,
)
from refract.report.fields import (
    NOT_MEASURED_LABEL,
    UNKNOWN_BUILD,
    axis_cell,
    axis_keys,
    axis_name,
    axis_problems,
    axis_scores,
    display_model,
    fmt,
    fmt_kld,
    framework_label,
    is_self_check,
    is_verified,
    llama_build,
    mean_kld,
    noise_floor_text,
    report_band,
    report_composite,
    report_name,
    report_status,
)
from refract.report.io import load_report
from refract.report.markdown import md_cell, md_table
from refract.report.paired import (
    PairedComparison,
    bootstrap_settings,
    compare_pair,
    not_comparable,
)

ReportSource = str | os.PathLike[str] | Mapping[str, Any]


@dataclass(frozen=True)
class CompareRow:
    """One report, flattened for a table."""

    name: str
    model: str
    reference: str
    candidate: str
    composite: float | None
    """``None`` when no axis scored (shown as —, never ranked as a 0)."""
    band: str | None
    """``None`` when no axis scored (shown as ``not measured``, never FAIL)."""
    scores: dict[str, float | None]
    mean_kld: float | None
    framework: str
    path: str | None = None
    cells: dict[str, str] = field(default_factory=dict)
    """Per axis: the score as shown, or ``error`` / ``invalid`` / ``—`` / ``(x)`` (excluded)."""
    status: str = "ok"
    self_check: bool = False
    verified: bool = False
    noise_floor: str = "—"
    problems: tuple[str, ...] = ()
    differs: tuple[str, ...] = ()
    """Fingerprint items on which this report differs from the others (allow-incompatible)."""
    build: str = UNKNOWN_BUILD
    """The llama.cpp build that scored it, e.g. ``upstream 0c1e570`` (``unknown`` when the
    report does not record its flavour)."""

    @property
    def measured(self) -> bool:
        """Whether any axis scored (else there is no composite and no band)."""
        return self.composite is not None

    @property
    def band_text(self) -> str:
        return self.band or NOT_MEASURED_LABEL

    @property
    def marker(self) -> str:
        """``self-check``, ``partial``, ``not measured``, ``unverified`` … (comma-separated),
        or ``""``."""
        marks = []
        if self.self_check:
            marks.append("self-check")
        if self.status != "ok":
            marks.append(self.status)
        if not self.measured:
            marks.append(NOT_MEASURED_LABEL)
        if not self.verified:
            marks.append("unverified")
        return ", ".join(marks)


def _load(source: ReportSource) -> tuple[Mapping[str, Any], str | None]:
    if isinstance(source, Mapping):
        return source, None
    return load_report(source), os.fspath(source)


def row_for(report: Mapping[str, Any], path: str | os.PathLike[str] | None = None) -> CompareRow:
    """Flatten one report into a :class:`CompareRow`."""
    return CompareRow(
        name=report_name(report, Path(path) if path is not None else None),
        model=display_model(report),
        reference=str(report.get("reference") or ""),
        candidate=str(report.get("candidate") or ""),
        composite=report_composite(report),
        band=report_band(report),
        scores=axis_scores(report),
        mean_kld=mean_kld(report),
        framework=framework_label(report),
        path=os.fspath(path) if path is not None else None,
        cells={k: axis_cell(report, k) for k in axis_keys()},
        status=report_status(report),
        self_check=is_self_check(report),
        verified=is_verified(report),
        noise_floor=noise_floor_text(report),
        problems=tuple(axis_problems(report)),
        build=llama_build(report),
    )


def rank_key(row: CompareRow) -> tuple[bool, float, str]:
    """Best composite first; reports in which nothing was measured last (never as a 0)."""
    return (row.composite is None, -(row.composite or 0.0), row.name)


def compare_rows(reports: Sequence[ReportSource], *, sort: bool = False) -> list[CompareRow]:
    """Rows for report paths and/or report dicts, in input order (or best composite first).

    Raises :class:`refract.report.io.ReportError` naming any file that is not a report.
    """
    rows = [row_for(*_load(src)) for src in reports]
    if sort:
        rows.sort(key=rank_key)
    return rows


@dataclass(frozen=True)
class CompareResult:
    rows: list[CompareRow]
    comparability: Comparability
    paired: list[PairedComparison] = field(default_factory=list)
    """Every report after the first against the first (input order), paired unit by unit."""


def pair_names(reports: Sequence[Mapping[str, Any]], rows: Sequence[CompareRow]) -> list[str]:
    """How the paired differences name each report: its candidate label, else (when labels
    are missing or repeat) its row name."""
    labels = [str(rep.get("candidate") or "") for rep in reports]
    if all(labels) and len(set(labels)) == len(labels):
        return labels
    return [row.name for row in rows]


def pair_reports(reports: Sequence[Mapping[str, Any]], names: Sequence[str],
                 comparable: bool = True) -> list[PairedComparison]:
    """Every report after the first against the first (see :mod:`refract.report.paired`),
    with the bootstrap settings of the first report that records them."""
    if not comparable:
        return [not_comparable(n, names[0], "the reports are not comparable")
                for n in names[1:]]
    replicates, seed = bootstrap_settings(reports)
    return [compare_pair(rep, reports[0], n, names[0], replicates=replicates, seed=seed)
            for rep, n in zip(reports[1:], names[1:], strict=True)]


def compare_reports(
    reports: Sequence[ReportSource], *, sort: bool = False, allow_incompatible: bool = False
) -> CompareResult:
    """Load, check comparability (same model, inputs, settings and axis methods) and flatten.

    Raises :class:`refract.report.comparability.IncompatibleReports` (a ``ValueError``: exit
    2 on the command line) naming every difference, unless ``allow_incompatible``; then each
    row's ``differs`` lists where it departs from the others.
    """
    from refract.report.comparability import IncompatibleReports

    loaded = [_load(src) for src in reports]
    rows = [row_for(rep, path) for rep, path in loaded]
    result = check_comparable([rep for rep, _ in loaded], [r.name for r in rows])
    if not result.ok and not allow_incompatible:
        raise IncompatibleReports(
            f"reports are not comparable: {result.reasons()} (use --allow-incompatible to "
            "show them side by side anyway)"
        )
    reps = [rep for rep, _ in loaded]
    paired = pair_reports(reps, pair_names(reps, rows), result.ok)
    rows = [replace(row, differs=tuple(result.marks(i))) for i, row in enumerate(rows)]
    if sort:
        rows.sort(key=rank_key)
    return CompareResult(rows=rows, comparability=result, paired=paired)


PAIRED_HEADING = "Paired differences (95 % intervals, paired bootstrap over the shared units):"


def paired_lines(paired: Sequence[PairedComparison]) -> list[str]:
    """The paired differences as sentences (none for a single report)."""
    return [line for pair in paired for line in pair.lines()]


HEADERS: tuple[str, ...] = (
    "report",
    "model",
    "candidate",
    "composite",
    "band",
    *(axis_name(k) for k in axis_keys()),
    "KLD (nats)",
    "A noise floor",
    "marks",
)


def _axis_text(row: CompareRow, key: str) -> str:
    return row.cells.get(key) or fmt(row.scores.get(key))


BUILD_HEADER = "llama.cpp"
"""The column naming each row's llama.cpp build, shown when the rows mix builds."""


def mixed_builds(rows: Sequence[CompareRow]) -> bool:
    """Whether the rows come from more than one llama.cpp build."""
    return len(distinct_builds(r.build for r in rows)) > 1


def row_cells(row: CompareRow, *, differs: bool = False, build: bool = False) -> list[str]:
    cells = [
        row.name,
        row.model,
        row.candidate,
        fmt(row.composite),
        row.band_text,
        *(_axis_text(row, k) for k in axis_keys()),
        fmt_kld(row.mean_kld),
        row.noise_floor,
        row.marker,
    ]
    if build:
        cells.append(row.build)
    if differs:
        cells.append(", ".join(row.differs) or "")
    return cells


def _headers(rows: Sequence[CompareRow]) -> tuple[tuple[str, ...], bool, bool]:
    """Headers, whether the ``differs`` column is shown and whether the build column is."""
    differs = any(r.differs for r in rows)
    build = mixed_builds(rows)
    headers = HEADERS + ((BUILD_HEADER,) if build else ()) + (("differs",) if differs else ())
    return headers, differs, build


def _footnotes(rows: Sequence[CompareRow]) -> list[str]:
    notes = []
    for row in rows:
        notes += [f"{row.name}: {p}" for p in row.problems]
        if row.self_check:
            notes.append(f"{row.name}: ref-vs-ref self-check (negative control), not a score.")
    if any(not r.verified for r in rows):
        notes.append("unverified: the report carries no input hashes (e.g. refract-llm's); "
                     "compared on the settings it records.")
    if any(r.differs for r in rows):
        notes.append("differs: inputs or settings on which the row departs from the others "
                     "(shown because of --allow-incompatible).")
    builds = builds_note(r.build for r in rows)
    if builds:
        notes.append(f"{builds} — see the {BUILD_HEADER} column; a build can move the "
                     "numbers as well as the KV type.")
    return notes


def compare_markdown(rows: Sequence[CompareRow],
                     paired: Sequence[PairedComparison] = ()) -> str:
    """A GitHub-flavoured Markdown table (then the paired differences, if any)."""
    headers, differs, build = _headers(rows)
    numeric = {3, *range(5, 5 + len(axis_keys()) + 1)}
    lines = md_table(headers, (row_cells(r, differs=differs, build=build) for r in rows), numeric)
    notes = _footnotes(rows)
    if notes:
        lines.append("")
        lines += [f"- {md_cell(n)}" for n in notes]
    diffs = paired_lines(paired)
    if diffs:
        lines += ["", PAIRED_HEADING, ""]
        lines += [f"- {md_cell(d)}" for d in diffs]
    return "\n".join(lines) + "\n"


def compare_table(rows: Sequence[CompareRow], title: str | None = None) -> Table:
    """A rich table (cells are plain text: no markup from report contents)."""
    from refract.report.text import BAND_STYLES

    headers, differs, build = _headers(rows)
    notes = _footnotes(rows)
    table = Table(title=title, box=box.SIMPLE_HEAD, caption="\n".join(notes) or None,
                  caption_justify="left")
    numeric = {3, *range(5, 5 + len(axis_keys()) + 1)}
    for i, header in enumerate(headers):
        table.add_column(header, justify="right" if i in numeric else "left")
    for row in rows:
        cells = [Text(c) for c in row_cells(row, differs=differs, build=build)]
        cells[4].stylize(BAND_STYLES.get(row.band_text, ""))
        for j, key in enumerate(axis_keys()):
            cells[5 + j].stylize(BAND_STYLES.get(row.cells.get(key, ""), ""))
        if build:
            cells[len(HEADERS)].stylize("bold cyan")
        if differs and row.differs:
            cells[-1].stylize("bold yellow")
        table.add_row(*cells)
    return table


__all__ = [
    "BUILD_HEADER",
    "HEADERS",
    "PAIRED_HEADING",
    "CompareResult",
    "CompareRow",
    "compare_reports",
    "compare_markdown",
    "compare_rows",
    "compare_table",
    "mixed_builds",
    "pair_names",
    "pair_reports",
    "paired_lines",
    "rank_key",
    "row_cells",
    "row_for",
]
