"""Leaderboard: rank the reports in a directory, one table per candidate KV config.

Each table ranks one candidate across models (rows are models) by composite. Within a table:

* the reports must be comparable on everything but the model
  (:func:`refract.report.comparability.check_comparable` with ``include_model=False``:
  reference, corpus / prompt-set / haystack identity, chunks, ctx, n_predict, seed, chat
  template, decode mode, R-NIAH settings, axis methods and versions). Otherwise
  :class:`IncompatibleReports` (exit 2) unless ``allow_incompatible``, in which case the rows
  are shown with the differing items marked;
* one row per model and llama.cpp build: when a directory holds several reports of the same
  model (same SHA-256, else same file name) for one candidate from one build, the newest (by
  timestamp) is ranked and the others are listed as superseded — a report from another build
  (the fork beside upstream) is another measurement and keeps its own row;
* negative controls (self-check: candidate == reference), partial reports (an axis failed
  at run time, so the composite covers fewer axes) and reports in which nothing was measured
  (no axis scored: no composite, no band) are shown below the ranked rows, unranked — a
  report that measured nothing is never ranked, and never as a FAIL;
* every row shows its framework version and a settings fingerprint; reports without input
  hashes (refract-llm's) are marked unverified, never refused;
* every row names the llama.cpp build that scored it (``llama.cpp`` column: flavour and short
  commit, ``unknown`` where the report does not record its flavour). Builds are not part of
  comparability (see :mod:`refract.report.comparability`), so a table may mix them — upstream
  q8_0 beside the TurboQuant fork's q8_0 — and then says so under its heading ("rows come from
  2 llama.cpp builds: upstream 0c1e570, turboquant 69d8e4b").

Output is Markdown or a self-contained HTML page (by file extension); :func:`write_leaderboards`
writes both (``LEADERBOARD.md`` and ``leaderboard.html``) for a matrix run.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refract.errors import UsageError
from refract.report.comparability import (
    Comparability,
    IncompatibleReports,
    builds_note,
    check_comparable,
    distinct_builds,
    settings_fingerprint,
    settings_summary,
)
from refract.report.compare import CompareRow, rank_key, row_for
from refract.report.fields import (
    axis_keys,
    axis_name,
    band_undecided,
    composite_estimate,
    fmt,
    fmt_interval,
    fmt_kld,
    short_notes,
)
from refract.report.io import ReportError, load_report, write_text
from refract.report.markdown import md_cell, md_table

DISCLAIMERS: tuple[str, ...] = (
    (
        "This leaderboard ranks KV-cache quantizations, not models: each score says how "
        "closely a model running the candidate KV config reproduces the same model on the "
        "reference config. A higher rank means the config changes that model less, not that "
        "the model is better."
    ),
    (
        "Rows of one table are comparable: same candidate, reference, inputs (corpus, prompt "
        "set, haystack) and settings; only the model differs — and the llama.cpp build, which "
        "each row names (a table whose rows come from several builds says so)."
    ),
    (
        "Self-checks (candidate = reference) are negative controls, partial reports (an "
        "axis failed) cover fewer axes, and a report in which no axis scored measured "
        "nothing: all three are shown unranked."
    ),
    (
        "Each row is one run; differences of a point or two are within run-to-run noise "
        "unless a noise floor was measured."
    ),
)

UNDECIDED_MARK = "†"
INTERVAL_LEGEND = (
    "95 % interval: the composite's paired-bootstrap interval over the report's units "
    "(prompts, chunks, cells); — where the report has none."
)
UNDECIDED_LEGEND = (
    f"{UNDECIDED_MARK} band not decided at 95 %: no band holds 95 % of the bootstrap "
    "replicates, so the row's band could be its neighbour; more prompts and chunks (or "
    "--until-decided) would settle it."
)

MARKDOWN_NAME = "LEADERBOARD.md"
HTML_NAME = "leaderboard.html"


@dataclass(frozen=True)
class LeaderboardEntry:
    rank: int | None
    """Competition rank among the ranked rows; ``None`` for controls, partial reports and
    reports that measured nothing."""
    row: CompareRow
    notes: str
    kind: str = "ranked"
    """``ranked``, ``control`` (self-check), ``partial`` or ``unmeasured`` (no axis scored)."""
    settings: str = ""
    """Settings fingerprint (8 hex digits): equal on every row of a comparable table."""
    differs: tuple[str, ...] = ()
    interval: str = "—"
    """The composite's 95 % interval (``73.1–93.2``); ``—`` for a report without one."""
    undecided: bool = False
    """The band is not decided at 95 % (no band holds 95 % of the bootstrap replicates)."""

    @property
    def interval_cell(self) -> str:
        """The interval, marked :data:`UNDECIDED_MARK` when the band is not decided."""
        return f"{self.interval} {UNDECIDED_MARK}" if self.undecided else self.interval


@dataclass(frozen=True)
class LeaderboardGroup:
    candidate: str
    reference: str
    framework: str
    entries: tuple[LeaderboardEntry, ...]
    settings: str = ""
    """Short human reading of the group's settings."""
    comparability: Comparability | None = None
    self_check: bool = False
    builds: tuple[str, ...] = ()
    """The distinct llama.cpp builds of the group's rows, in row order."""

    @property
    def builds_note(self) -> str | None:
        """``rows come from 2 llama.cpp builds: …`` when the rows mix builds, else ``None``."""
        return builds_note(self.builds)

    @property
    def build(self) -> str:
        """The build(s) for the group's heading line."""
        return ", ".join(self.builds) or "—"


@dataclass(frozen=True)
class Leaderboard:
    groups: tuple[LeaderboardGroup, ...]
    skipped: tuple[str, ...] = field(default_factory=tuple)
    """Files found but not loaded or not ranked, each as 'path: reason'."""

    @property
    def incompatible(self) -> tuple[LeaderboardGroup, ...]:
        """Groups whose reports are not comparable (shown because incompatibility was allowed)."""
        return tuple(g for g in self.groups if g.comparability and not g.comparability.ok)

    @property
    def mixed_builds(self) -> tuple[LeaderboardGroup, ...]:
        """Groups whose rows come from more than one llama.cpp build."""
        return tuple(g for g in self.groups if g.builds_note)


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


def _model_key(row: CompareRow, report: Mapping[str, Any]) -> tuple[str, str]:
    """(model identity, llama.cpp build): one row per model and build."""
    prov = report.get("provenance")
    model = prov.get("model") if isinstance(prov, Mapping) else None
    sha = model.get("sha256") if isinstance(model, Mapping) else None
    return (f"sha:{sha}" if isinstance(sha, str) else f"name:{row.model}", row.build)


def _notes(row: CompareRow, report: Mapping[str, Any], kind: str, differs: Sequence[str]) -> str:
    parts: list[str] = []
    if kind == "control":
        parts.append("self-check: negative control, not ranked")
    elif kind == "partial":
        parts.append("partial: not ranked")
    elif kind == "unmeasured":
        parts.append("not measured: no axis scored, not ranked")
    parts += list(row.problems)
    diag = short_notes(report)
    if diag:
        parts.append(diag)
    if not row.verified:
        parts.append("unverified")
    if differs:
        parts.append("differs: " + ", ".join(differs))
    return "; ".join(parts)


def _build_group(
    candidate: str,
    items: list[tuple[CompareRow, Mapping[str, Any]]],
    superseded: list[str],
    allow_incompatible: bool,
) -> LeaderboardGroup:
    # one row per model and build: keep the newest report of each
    by_model: dict[tuple[str, str], list[tuple[CompareRow, Mapping[str, Any]]]] = {}
    for row, report in items:
        by_model.setdefault(_model_key(row, report), []).append((row, report))
    kept: list[tuple[CompareRow, Mapping[str, Any]]] = []
    for reps in by_model.values():
        reps.sort(key=lambda r: (str(r[1].get("timestamp") or ""), r[0].path or r[0].name))
        kept.append(reps[-1])
        for row, _ in reps[:-1]:
            superseded.append(
                f"{row.path or row.name}: superseded by a newer report of the same model, "
                f"candidate and llama.cpp build ({reps[-1][0].path or reps[-1][0].name})"
            )
    kept.sort(key=lambda r: (r[0].model, r[0].build, r[0].name))
    names = [r.name for r, _ in kept]
    comp = check_comparable([rep for _, rep in kept], names, include_model=False)
    if not comp.ok and not allow_incompatible:
        raise IncompatibleReports(
            f"leaderboard: reports for candidate {candidate!r} are not comparable: "
            f"{comp.reasons()} (use --allow-incompatible to show them side by side anyway)"
        )
    marks = {names[i]: tuple(comp.marks(i)) for i in range(len(kept))}
    others = [(r, rep) for r, rep in kept if not r.self_check]
    ranked = [(r, rep) for r, rep in others if r.status == "ok" and r.composite is not None]
    partial = [(r, rep) for r, rep in others if r.status != "ok" and r.composite is not None]
    unmeasured = [(r, rep) for r, rep in others if r.composite is None]
    control = [(r, rep) for r, rep in kept if r.self_check]
    entries: list[LeaderboardEntry] = []
    prev: float | None = None
    rank = 0
    ordered = sorted(ranked, key=lambda r: (-(r[0].composite or 0.0), r[0].model, r[0].name))
    for i, (row, report) in enumerate(ordered, start=1):
        if prev is None or row.composite != prev:
            rank = i  # competition ranking: ties share a rank
        prev = row.composite
        entries.append(_entry(rank, row, report, "ranked", marks[row.name]))
    for kind, rows in (("partial", partial), ("unmeasured", unmeasured), ("control", control)):
        for row, report in sorted(rows, key=lambda r: (*rank_key(r[0]), r[0].model)):
            entries.append(_entry(None, row, report, kind, marks[row.name]))
    refs = sorted({r.reference for r, _ in kept})
    frameworks = sorted({r.framework for r, _ in kept})
    summaries = sorted({settings_summary(rep) for _, rep in kept})
    return LeaderboardGroup(
        candidate=candidate,
        reference=", ".join(refs),
        framework=", ".join(frameworks),
        entries=tuple(entries),
        settings=" | ".join(summaries),
        comparability=comp,
        self_check=bool(kept) and all(r.self_check for r, _ in kept),
        builds=distinct_builds(e.row.build for e in entries),
    )


def _entry(
    rank: int | None,
    row: CompareRow,
    report: Mapping[str, Any],
    kind: str,
    differs: tuple[str, ...],
) -> LeaderboardEntry:
    return LeaderboardEntry(
        rank=rank,
        row=row,
        notes=_notes(row, report, kind, differs),
        kind=kind,
        settings=settings_fingerprint(report),
        differs=differs,
        interval=fmt_interval(composite_estimate(report)),
        undecided=band_undecided(report),
    )


def build_leaderboard(
    source: str
    | os.PathLike[str]
    | Iterable[tuple[str | os.PathLike[str] | None, Mapping[str, Any]]],
    *,
    allow_incompatible: bool = False,
) -> Leaderboard:
    """Group and rank reports from a directory, or from (path or None, report) pairs.

    Raises :class:`IncompatibleReports` when a candidate's reports are not comparable
    (everything but the model), unless ``allow_incompatible``.
    """
    skipped: list[str] = []
    if isinstance(source, (str, os.PathLike)):
        pairs: Sequence[tuple[Any, Mapping[str, Any]]]
        pairs, skipped = collect_reports(source)
    else:
        pairs = list(source)
    buckets: dict[str, list[tuple[CompareRow, Mapping[str, Any]]]] = {}
    for path, report in pairs:
        row = row_for(report, path)
        buckets.setdefault(row.candidate, []).append((row, report))
    superseded: list[str] = []
    groups = [
        _build_group(c, rows, superseded, allow_incompatible)
        for c, rows in sorted(buckets.items())
    ]
    groups.sort(key=lambda g: (g.self_check, g.candidate))  # controls last
    return Leaderboard(groups=tuple(groups), skipped=tuple(skipped + superseded))


HEADERS: tuple[str, ...] = (
    "rank",
    "model",
    "composite",
    "band",
    "95 % interval",
    *(axis_name(k) for k in axis_keys()),
    "KLD (nats)",
    "A noise floor",
    "llama.cpp",
    "framework",
    "settings",
    "notes",
)
_BAND_COL = 3
_INTERVAL_COL = 4
_AXIS_COLS = range(5, 5 + len(axis_keys()))
_NUMERIC = {0, 2, _INTERVAL_COL, *_AXIS_COLS, _AXIS_COLS.stop}  # … and the KLD column


def _rank_text(entry: LeaderboardEntry) -> str:
    if entry.rank is not None:
        return str(entry.rank)
    return "ctl" if entry.kind == "control" else "—"


def entry_cells(entry: LeaderboardEntry) -> list[str]:
    row = entry.row
    return [
        _rank_text(entry),
        row.model,
        fmt(row.composite),
        row.band_text,
        entry.interval_cell,
        *(row.cells.get(k) or fmt(row.scores.get(k)) for k in axis_keys()),
        fmt_kld(row.mean_kld),
        row.noise_floor,
        row.build,
        row.framework,
        entry.settings,
        entry.notes,
    ]


def _group_title(group: LeaderboardGroup) -> str:
    return " — self-check (negative control)" if group.self_check else ""


def legend(group: LeaderboardGroup) -> list[str]:
    """The lines under a table that explain its interval column and marks (none when no row
    has an interval)."""
    lines = [INTERVAL_LEGEND] if any(e.interval != "—" for e in group.entries) else []
    if any(e.undecided for e in group.entries):
        lines.append(UNDECIDED_LEGEND)
    return lines


def leaderboard_markdown(board: Leaderboard) -> str:
    lines = ["# REFRACT leaderboard", ""]
    lines += [f"> {d}" for d in DISCLAIMERS[:1]]
    lines += ["", *(f"- {d}" for d in DISCLAIMERS[1:]), ""]
    if not board.groups:
        lines += ["_No reports found._", ""]
    for group in board.groups:
        lines += [
            f"## Candidate `{md_cell(group.candidate)}`{_group_title(group)}",
            "",
            (
                f"Reference `{md_cell(group.reference)}` · {md_cell(group.framework)} · "
                f"llama.cpp {md_cell(group.build)} · "
                f"settings: {md_cell(group.settings)} · {len(group.entries)} report(s)"
            ),
            "",
        ]
        if group.builds_note:
            lines += [f"**Mixed llama.cpp builds:** {md_cell(group.builds_note)}", ""]
        if group.comparability is not None and not group.comparability.ok:
            lines += [
                f"**Not comparable** (shown with --allow-incompatible): "
                f"{md_cell(group.comparability.reasons())}",
                "",
            ]
        lines += md_table(HEADERS, (entry_cells(e) for e in group.entries), _NUMERIC)
        lines.append("")
        notes = legend(group)
        if notes:
            lines += [f"{md_cell(n)}  " for n in notes] + [""]
    if board.skipped:
        lines += ["## Files skipped", "", *(f"- {md_cell(s)}" for s in board.skipped), ""]
    return "\n".join(lines)


def leaderboard_html(board: Leaderboard) -> str:
    from refract.report.html import page, pill
    from refract.report.kit import esc

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
                if i == _BAND_COL:
                    tds.append(f"<td>{pill(cell, True)}</td>")
                elif i in _AXIS_COLS and cell in ("error", "invalid"):
                    tds.append(f"<td class=num>{pill(cell, True)}</td>")
                elif i in _NUMERIC:
                    tds.append(f"<td class=num>{esc(cell)}</td>")
                else:
                    tds.append(f"<td>{esc(cell)}</td>")
            tip = esc(entry.row.path or entry.row.name)
            cls = f' class="{esc(entry.kind)}"' if entry.kind != "ranked" else ""
            body.append(f'<tr title="{tip}"{cls}>' + "".join(tds) + "</tr>")
        warn = ""
        if group.comparability is not None and not group.comparability.ok:
            warn = (
                '<p class="banner error"><strong>Not comparable</strong> (shown with '
                f"--allow-incompatible): {esc(group.comparability.reasons())}</p>"
            )
        if group.builds_note:
            warn += (
                f'<p class="banner builds"><strong>Mixed llama.cpp builds:</strong> '
                f"{esc(group.builds_note)}</p>"
            )
        parts.append(
            f"<section><h2>Candidate <code>{esc(group.candidate)}</code>"
            f"{esc(_group_title(group))}</h2>"
            f'<p class="sub">reference <code>{esc(group.reference)}</code> · '
            f"{esc(group.framework)} · llama.cpp {esc(group.build)} · "
            f"settings: {esc(group.settings)} · "
            f"{len(group.entries)} report(s)</p>{warn}"
            f'<div class="table-wrap"><table><tr>{head}</tr>{"".join(body)}</table></div>'
            + "".join(f'<p class="note legend">{esc(n)}</p>' for n in legend(group))
            + "</section>"
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
    raise UsageError(f"unknown leaderboard format {fmt_name!r} (use markdown or html)")


def write_leaderboard(
    source: str | os.PathLike[str] | Leaderboard,
    out: str | os.PathLike[str],
    *,
    allow_incompatible: bool = False,
) -> Path:
    """Build (unless given) and write a leaderboard; the format follows ``out``'s extension
    (.md / .markdown → Markdown, .html / .htm → HTML)."""
    out_path = Path(out)
    suffix = out_path.suffix.lower()
    if suffix not in (".md", ".markdown", ".html", ".htm"):
        raise UsageError(
            f"{out_path}: cannot tell the leaderboard format from the extension (use .md or .html)"
        )
    board = (
        source
        if isinstance(source, Leaderboard)
        else build_leaderboard(source, allow_incompatible=allow_incompatible)
    )
    return write_text(render_leaderboard(board, suffix), out_path)


@dataclass(frozen=True)
class LeaderboardFiles:
    markdown: Path
    html: Path
    board: Leaderboard


def write_leaderboards(
    in_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    allow_incompatible: bool = True,
) -> LeaderboardFiles:
    """Write ``out_dir/LEADERBOARD.md`` and ``out_dir/leaderboard.html`` (each atomically)
    from the reports under ``in_dir`` (for a matrix run: in_dir == out_dir).

    By default incomparable tables are still written, with the differences marked (a long
    matrix run should not lose its summary to one stale report); check
    ``result.board.incompatible`` to warn. ``allow_incompatible=False`` raises
    :class:`IncompatibleReports` instead. Raises :class:`ReportError` if ``in_dir`` is not a
    directory.
    """
    board = build_leaderboard(in_dir, allow_incompatible=allow_incompatible)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = write_text(leaderboard_markdown(board), out / MARKDOWN_NAME)
    html = write_text(leaderboard_html(board), out / HTML_NAME)
    return LeaderboardFiles(markdown=md, html=html, board=board)


__all__ = [
    "DISCLAIMERS",
    "HEADERS",
    "HTML_NAME",
    "INTERVAL_LEGEND",
    "MARKDOWN_NAME",
    "UNDECIDED_LEGEND",
    "UNDECIDED_MARK",
    "IncompatibleReports",
    "Leaderboard",
    "LeaderboardEntry",
    "LeaderboardFiles",
    "LeaderboardGroup",
    "build_leaderboard",
    "collect_reports",
    "entry_cells",
    "leaderboard_html",
    "leaderboard_markdown",
    "legend",
    "render_leaderboard",
    "write_leaderboard",
    "write_leaderboards",
]
