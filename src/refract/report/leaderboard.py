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

Rows name the model as the matrix does (``[[models]] name``, carried in
``extras.matrix.model_name``), else by its file name (:func:`refract.report.fields.display_model`);
that name is only a label: rows are told apart by the model's identity (SHA-256, else the
file name), so two different files that share a name keep their own rows.

Below the tables, a **memory/quality frontier** per model (:class:`FrontierView`, built with
:func:`refract.report.frontier.frontier`): across that model's candidates, the configs that no
other config beats on both KV bytes per token (``environment.kv_bytes[label].per_token``, what
llama.cpp allocated) and composite — nothing smaller scores as well — smallest first; and a
``frontier`` column in the tables marks those rows (◆). See :class:`FrontierView` for what is
placed and why the reference is a point.

Output is Markdown or a self-contained HTML page (by file extension); :func:`write_leaderboards`
writes both (``LEADERBOARD.md`` and ``leaderboard.html``) for a matrix run.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from refract.errors import UsageError
from refract.files import is_sweep_summary
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
    kv_per_token,
    model_name,
    short_notes,
)
from refract.report.frontier import frontier
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

FRONTIER_MARK = "◆"
FRONTIER_LEGEND = (
    f"{FRONTIER_MARK} on its model's memory/quality frontier (below): no other config of that "
    "model is as good with fewer KV bytes per token; blank: beaten; — not placed (no "
    "allocation figures, or not ranked)."
)
FRONTIER_HEADING = "Memory/quality frontier"
FRONTIER_INTRO = (
    "Per model: the configs that no other config of the model beats on both KV bytes per "
    "token (what llama.cpp allocated) and composite — nothing smaller scores as well — "
    "smallest first. The reference is the 100 % / 100 point (every score measures closeness "
    "to it); it leaves the frontier only if a smaller config scores a full 100. Composites "
    "are point estimates: see each one's 95 % interval."
)
FRONTIER_HEADERS: tuple[str, ...] = (
    "config", "KV bytes/token", "% of reference", "composite", "95 % interval", "band",
)
_FRONTIER_NUMERIC = {1, 2, 3, 4}
_FRONTIER_BAND_COL = 5

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
    model_id: str = ""
    """The model's identity (``sha:<SHA-256>``, else ``file:<file name>``): what rows and
    frontiers are grouped by (the shown name, ``row.model``, is only a label)."""
    model_file: str = ""
    """The model's file name (tells apart two models shown under the same name)."""
    kv_bytes: int | None = None
    """KV bytes per token llama.cpp allocated for the candidate; ``None`` when not recorded."""
    reference_bytes: int | None = None
    """The same for the reference config."""
    frontier: bool | None = None
    """On its model's memory/quality frontier (:class:`FrontierView`); ``False`` when placed
    but beaten, ``None`` when not placed (no allocation figures, not ranked). A self-check
    row stands for the reference point."""

    @property
    def interval_cell(self) -> str:
        """The interval, marked :data:`UNDECIDED_MARK` when the band is not decided."""
        return f"{self.interval} {UNDECIDED_MARK}" if self.undecided else self.interval

    @property
    def frontier_cell(self) -> str:
        """:data:`FRONTIER_MARK` on the frontier, blank when beaten, ``—`` when not placed."""
        if self.frontier is None:
            return "—"
        return FRONTIER_MARK if self.frontier else ""


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
class FrontierPoint:
    """One config on a model's frontier (or the reference)."""

    label: str
    """The KV config (the reference's label for the reference point)."""
    kv_bytes: int
    """KV bytes per token llama.cpp allocated."""
    share: float | None
    """``kv_bytes`` as a fraction of the reference's; ``None`` when the reference's bytes are
    not known."""
    composite: float
    interval: str = "—"
    """The composite's 95 % interval as the tables show it (``—`` where there is none, † where
    the band is not decided)."""
    band: str = ""
    reference: bool = False
    """The reference point (composite 100 by definition, not a measurement)."""

    @property
    def config_text(self) -> str:
        return f"{self.label} (reference)" if self.reference else self.label

    @property
    def share_text(self) -> str:
        return "—" if self.share is None else f"{100.0 * self.share:.1f} %"


@dataclass(frozen=True)
class FrontierView:
    """The memory/quality frontier of one model (and llama.cpp build, and reference).

    Points are (KV bytes per token, composite): each ranked row of the model — one per
    candidate, the newest report — whose report records the bytes llama.cpp allocated for
    its candidate; :func:`refract.report.frontier.frontier` keeps those that no other point
    beats on both (no larger and no worse, one strictly). Not placed: rows without allocation
    figures (older reports, refract-llm's), and partial reports and reports that measured
    nothing (their composite covers fewer axes, or none) — the view counts them in a line.

    The reference is a point too: composite 100 (every score measures closeness to it) at its
    own bytes, taken from the same reports. A frontier answers "what is the cheapest way to
    get this close to the reference?", and the reference itself is the answer for "exactly
    it": leaving it out would drop the frontier's top end and let a large, slightly-off
    config look like the best there is. It is on the frontier unless a smaller config scores
    a full 100 (which then rightly replaces it), and it is shown as its own row, labelled
    ``(reference)`` (usually the last: the largest). A self-check report's measured
    composite is a negative control, never this point.

    One view per model *and* llama.cpp build *and* reference: bytes and composites of
    another build (other kernels, the fork's KV types) or against another reference are other
    measurements. Scores are point estimates; the interval column says how sure each is.
    """

    model: str
    """The model as the tables name it (the matrix's name, else the file name)."""
    build: str
    reference: str
    points: tuple[FrontierPoint, ...]
    """On the frontier, smallest KV first."""
    placed: int
    """Candidate configs placed (the reference not counted)."""
    no_bytes: int = 0
    """Ranked configs whose reports record no allocation figures (not placed)."""
    unranked: int = 0
    """Partial reports and reports that measured nothing (not placed)."""
    reference_bytes: int | None = None
    settings: tuple[str, ...] = ()
    """The distinct settings fingerprints of the placed configs (more than one: their
    composites were scored with different settings)."""

    @property
    def on_frontier(self) -> int:
        """Candidate configs on the frontier (the reference not counted)."""
        return sum(not p.reference for p in self.points)

    def notes(self) -> list[str]:
        """The lines under the view's table: what was not placed, and mixed settings."""
        lines = []
        if self.no_bytes:
            lines.append(f"{_configs(self.no_bytes)} no allocation figures and "
                         f"{'is' if self.no_bytes == 1 else 'are'} not placed.")
        if self.unranked:
            lines.append(f"{_configs(self.unranked, 'partial or measured nothing')} not "
                         "ranked and not placed.")
        if self.reference_bytes is None:
            lines.append("The reference has no allocation figures and is not placed.")
        if len(self.settings) > 1:
            lines.append("The configs were scored with different settings (fingerprints "
                         f"{', '.join(self.settings)}): their composites are not strictly "
                         "comparable.")
        return lines


def _configs(n: int, what: str = "") -> str:
    """``2 configs have`` / ``1 config has`` (or ``… are <what>,`` / ``is <what>,``)."""
    if what:
        return f"{n} config{'s are' if n != 1 else ' is'} {what},"
    return f"{n} config{'s have' if n != 1 else ' has'}"


@dataclass(frozen=True)
class Leaderboard:
    groups: tuple[LeaderboardGroup, ...]
    skipped: tuple[str, ...] = field(default_factory=tuple)
    """Files found but not loaded or not ranked, each as 'path: reason'."""
    frontiers: tuple[FrontierView, ...] = ()
    """One memory/quality frontier per model (and build, and reference) with a config
    placed, ordered by model name."""
    unplaced: tuple[str, ...] = ()
    """Models none of whose configs could be placed (no allocation figures)."""

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
    """Load every ``*.json`` report under ``directory``; non-reports are listed, not fatal, and
    so are a sweep's first-round reports (``sweep_round: first``: part of the budget); a
    sweep's ``sweep.json`` is passed over."""
    root = Path(directory)
    if not root.is_dir():
        raise ReportError(f"{root}: not a directory")
    pattern = "**/*.json" if recursive else "*.json"
    loaded: list[tuple[Path, dict[str, Any]]] = []
    skipped: list[str] = []
    for path in sorted(root.glob(pattern)):
        if not path.is_file() or is_sweep_summary(path):
            continue  # a sweep's sweep.json sits beside its reports: not a report, not news
        try:
            report = load_report(path)
        except ReportError as exc:
            skipped.append(str(exc))
            continue
        if report.get("sweep_round") == "first":
            skipped.append(f"{path}: a sweep's first-round report (its config was pruned on "
                           "part of the budget), not a full score")
            continue
        loaded.append((path, report))
    return loaded, skipped


def _model_id(report: Mapping[str, Any]) -> str:
    """The model's identity: its SHA-256, else its file name — never the name a matrix gives
    it (two files may share one; one file keeps its identity under any name)."""
    prov = report.get("provenance")
    model = prov.get("model") if isinstance(prov, Mapping) else None
    sha = model.get("sha256") if isinstance(model, Mapping) else None
    return f"sha:{sha}" if isinstance(sha, str) and sha else f"file:{model_name(report)}"


def _model_key(row: CompareRow, report: Mapping[str, Any]) -> tuple[str, str]:
    """(model identity, llama.cpp build): one row per model and build."""
    return (_model_id(report), row.build)


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
        model_id=_model_id(report),
        model_file=model_name(report),
        kv_bytes=kv_per_token(report, row.candidate),
        reference_bytes=kv_per_token(report, row.reference),
    )


_REFERENCE_POINT = "\x00reference"
"""The reference point's label inside :func:`frontier` (no KV config is named so)."""

_FrontierKey = tuple[str, str, str]
"""(model identity, llama.cpp build, reference)."""


def _frontier_key(entry: LeaderboardEntry) -> _FrontierKey:
    return (entry.model_id, entry.row.build, entry.row.reference)


def _most_common(values: Iterable[Any]) -> Any:
    counts: dict[Any, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return min(counts, key=lambda v: (-counts[v], str(v))) if counts else None


def _placeable(entry: LeaderboardEntry) -> bool:
    """A ranked row with allocation figures and a finite composite."""
    comp = entry.row.composite
    return (entry.kind == "ranked" and entry.kv_bytes is not None and comp is not None
            and math.isfinite(comp))


def _frontier_view(
    entries: Sequence[LeaderboardEntry], name: str
) -> tuple[FrontierView | None, set[str], bool | None]:
    """One model's view (``None`` when no config is placed), the candidates on its frontier,
    and whether the reference point is on it (``None``: not placed)."""
    placed = [e for e in entries if _placeable(e)]
    if not placed:
        return None, set(), None
    ref_bytes: int | None = _most_common(
        [e.reference_bytes for e in entries if e.reference_bytes is not None]
        + [e.kv_bytes for e in entries if e.kind == "control" and e.kv_bytes is not None]
    )
    points: list[tuple[str, float, float]] = [
        (e.row.candidate, float(e.kv_bytes or 0), float(e.row.composite or 0.0)) for e in placed
    ]
    if ref_bytes is not None:
        points.append((_REFERENCE_POINT, float(ref_bytes), 100.0))
    on = frontier(points)
    by_label = {e.row.candidate: e for e in placed}
    shown: list[FrontierPoint] = []
    for label in on:
        share = None
        if label == _REFERENCE_POINT:
            assert ref_bytes is not None
            shown.append(FrontierPoint(label=entries[0].row.reference, kv_bytes=ref_bytes,
                                       share=1.0, composite=100.0, band="reference",
                                       reference=True))
            continue
        e = by_label[label]
        assert e.kv_bytes is not None and e.row.composite is not None
        if ref_bytes is not None:
            share = e.kv_bytes / ref_bytes
        shown.append(FrontierPoint(label=label, kv_bytes=e.kv_bytes, share=share,
                                   composite=e.row.composite, interval=e.interval_cell,
                                   band=e.row.band_text))
    first = entries[0]
    view = FrontierView(
        model=name,
        build=first.row.build,
        reference=first.row.reference,
        points=tuple(shown),
        placed=len(placed),
        no_bytes=sum(e.kind == "ranked" and not _placeable(e) for e in entries),
        unranked=sum(e.kind in ("partial", "unmeasured") for e in entries),
        reference_bytes=ref_bytes,
        settings=tuple(sorted({e.settings for e in placed})),
    )
    ref_on = None if ref_bytes is None else _REFERENCE_POINT in on
    return view, {lab for lab in on if lab != _REFERENCE_POINT}, ref_on


def _with_frontiers(
    groups: Sequence[LeaderboardGroup],
) -> tuple[list[LeaderboardGroup], list[FrontierView], list[str]]:
    """The groups with each row's frontier mark, the views (by model name, build and
    reference) and the models none of whose configs could be placed."""
    by_model: dict[_FrontierKey, list[LeaderboardEntry]] = {}
    for group in groups:
        for entry in group.entries:
            by_model.setdefault(_frontier_key(entry), []).append(entry)
    names = {key: str(_most_common(e.row.model for e in es)) for key, es in by_model.items()}
    ids: dict[str, set[str]] = {}
    for key, name in names.items():
        ids.setdefault(name, set()).add(key[0])
    views: list[FrontierView] = []
    unplaced: set[str] = set()
    marks: dict[_FrontierKey, tuple[set[str], bool | None]] = {}
    for key, entries in by_model.items():
        name = names[key]
        if len(ids[name]) > 1:  # two models shown under one name: add the file name
            name = f"{name} ({entries[0].model_file})"
        view, on, ref_on = _frontier_view(entries, name)
        marks[key] = (on, ref_on)
        if view is not None:
            views.append(view)
        elif any(e.kind != "control" for e in entries):
            several = sum(names[k] == names[key] for k in by_model) > 1
            unplaced.add(f"{name} (llama.cpp {key[1]})" if several else name)
    views.sort(key=lambda v: (v.model, v.build, v.reference))

    def mark(entry: LeaderboardEntry) -> bool | None:
        on, ref_on = marks[_frontier_key(entry)]
        if entry.kind == "control":
            return ref_on
        if not _placeable(entry):
            return None
        return entry.row.candidate in on

    marked = [
        replace(g, entries=tuple(replace(e, frontier=mark(e)) for e in g.entries))
        for g in groups
    ]
    return marked, views, sorted(unplaced)


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
    groups, views, unplaced = _with_frontiers(groups)
    return Leaderboard(groups=tuple(groups), skipped=tuple(skipped + superseded),
                       frontiers=tuple(views), unplaced=tuple(unplaced))


HEADERS: tuple[str, ...] = (
    "rank",
    "model",
    "composite",
    "band",
    "95 % interval",
    "frontier",
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
_FRONTIER_COL = 5
_AXIS_COLS = range(6, 6 + len(axis_keys()))
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
        entry.frontier_cell,
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
    if any(e.frontier for e in group.entries):
        lines.append(FRONTIER_LEGEND)
    return lines


def frontier_cells(point: FrontierPoint) -> list[str]:
    """One row of a frontier table (:data:`FRONTIER_HEADERS`)."""
    return [
        point.config_text,
        f"{point.kv_bytes:,}",
        point.share_text,
        fmt(point.composite),
        point.interval,
        point.band,
    ]


def frontier_subtitle(view: FrontierView) -> str:
    """``reference ctk=f16,ctv=f16 · llama.cpp upstream 0c1e570 · 3 of 5 configs on the
    frontier`` (without the reference's code marks)."""
    return (f"llama.cpp {view.build} · {view.on_frontier} of {view.placed} "
            f"config{'s' if view.placed != 1 else ''} on the frontier")


def _frontier_markdown(board: Leaderboard) -> list[str]:
    if not board.frontiers:
        return []
    lines = [f"## {FRONTIER_HEADING}", "", md_cell(FRONTIER_INTRO), ""]
    for view in board.frontiers:
        lines += [
            f"### {md_cell(view.model)}",
            "",
            f"Reference `{md_cell(view.reference)}` · {md_cell(frontier_subtitle(view))}",
            "",
            *md_table(FRONTIER_HEADERS, (frontier_cells(p) for p in view.points),
                      _FRONTIER_NUMERIC),
            "",
        ]
        notes = view.notes()
        if notes:
            lines += [f"{md_cell(n)}  " for n in notes] + [""]
    if board.unplaced:
        lines += [f"{md_cell(_unplaced_line(board))}", ""]
    return lines


def _unplaced_line(board: Leaderboard) -> str:
    return ("No allocation figures (older or refract-llm reports), so no frontier: "
            + ", ".join(board.unplaced) + ".")


def _frontier_html(board: Leaderboard) -> str:
    from refract.report.html import pill
    from refract.report.kit import esc

    if not board.frontiers:
        return ""
    head = "".join(
        f"<th{' class=num' if i in _FRONTIER_NUMERIC else ''}>{esc(h)}</th>"
        for i, h in enumerate(FRONTIER_HEADERS)
    )
    parts = [f"<section><h2>{esc(FRONTIER_HEADING)}</h2>",
             f'<p class="note">{esc(FRONTIER_INTRO)}</p>']
    for view in board.frontiers:
        body = []
        for point in view.points:
            tds = []
            for i, cell in enumerate(frontier_cells(point)):
                if i == _FRONTIER_BAND_COL:
                    tds.append(f"<td>{esc(cell) if point.reference else pill(cell, True)}</td>")
                elif i in _FRONTIER_NUMERIC:
                    tds.append(f"<td class=num>{esc(cell)}</td>")
                else:
                    tds.append(f"<td>{esc(cell)}</td>")
            cls = ' class="reference"' if point.reference else ""
            body.append(f"<tr{cls}>" + "".join(tds) + "</tr>")
        parts.append(
            f'<h3>{esc(view.model)}</h3><p class="sub">reference <code>{esc(view.reference)}'
            f"</code> · {esc(frontier_subtitle(view))}</p>"
            f'<div class="table-wrap"><table class="frontier"><tr>{head}</tr>'
            f'{"".join(body)}</table></div>'
            + "".join(f'<p class="note legend">{esc(n)}</p>' for n in view.notes())
        )
    if board.unplaced:
        parts.append(f'<p class="note">{esc(_unplaced_line(board))}</p>')
    parts.append("</section>")
    return "".join(parts)


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
    lines += _frontier_markdown(board)
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
    frontier_part = _frontier_html(board)
    if frontier_part:
        parts.append(frontier_part)
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
    "FRONTIER_HEADERS",
    "FRONTIER_HEADING",
    "FRONTIER_LEGEND",
    "FRONTIER_MARK",
    "HEADERS",
    "HTML_NAME",
    "INTERVAL_LEGEND",
    "MARKDOWN_NAME",
    "UNDECIDED_LEGEND",
    "UNDECIDED_MARK",
    "FrontierPoint",
    "FrontierView",
    "IncompatibleReports",
    "Leaderboard",
    "LeaderboardEntry",
    "LeaderboardFiles",
    "LeaderboardGroup",
    "build_leaderboard",
    "collect_reports",
    "entry_cells",
    "frontier_cells",
    "frontier_subtitle",
    "leaderboard_html",
    "leaderboard_markdown",
    "legend",
    "render_leaderboard",
    "write_leaderboard",
    "write_leaderboards",
]
