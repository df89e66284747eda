"""The matrix driver: plan the cells, hand one job per model to an executor, write results.

Only the driver writes files, each atomically: a cell's HTML, then its JSON (the JSON is the
"done" mark a rerun looks for), then ``matrix-status.jsonl`` (one line per cell: ok,
skipped, failed with the reason and the worker's stderr tail, or interrupted after Ctrl-C)
and the leaderboards.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from refract.matrix.plan import Cell, matrix_extras, plan_cells
from refract.matrix.progress import MatrixProgress
from refract.matrix.spec import MatrixSpec, ModelEntry

__all__ = [
    "CellOutcome",
    "Executor",
    "MatrixResult",
    "check_outputs",
    "run_matrix",
    "write_leaderboards",
]

STATUS_FILE = "matrix-status.jsonl"


def make_job(
    name: str, path: str, candidates: list[str], reference: str,
    settings: dict[str, Any], base_dir: Path, sweep: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One model's work for a worker (JSON-able: it crosses a pipe or Ray); ``sweep``: the
    ``[sweep]`` table of a swept model."""
    return {
        "model": {"name": name, "path": path},
        "candidates": list(candidates),
        "reference": reference,
        "settings": dict(settings),
        "base_dir": str(base_dir),
        "sweep": None if sweep is None else dict(sweep),
    }


class Executor(Protocol):
    name: str

    def run(self, jobs: list[dict[str, Any]], handle: Any) -> None: ...


@dataclass
class CellOutcome:
    cell: Cell
    state: str  # "ok", "skipped", "failed"; "pending" while running, "interrupted" on Ctrl-C;
    # a swept model's configs also "pruned" (its first round decided) and "not-runnable"
    message: str = ""
    stderr_tail: list[str] = field(default_factory=list)
    seconds: float | None = None


@dataclass
class MatrixResult:
    outcomes: list[CellOutcome]
    leaderboards: list[Path] = field(default_factory=list)

    def count(self, state: str) -> int:
        return sum(o.state == state for o in self.outcomes)

    @property
    def failed(self) -> list[CellOutcome]:
        return [o for o in self.outcomes if o.state == "failed"]


def check_outputs(spec: MatrixSpec, out_dir: Path, *, overwrite: bool = False) -> None:
    """Before any model loads: every file the run may write in ``out_dir`` (the reports of the
    cells still to do, the status file, the leaderboards) is new or one of refract's own
    outputs, unless ``overwrite`` (:mod:`refract.outputs`; a UsageError otherwise)."""
    from refract.matrix.plan import sweep_path
    from refract.outputs import OutputKind, check_replaceable_all
    from refract.report.leaderboard import HTML_NAME, MARKDOWN_NAME
    from refract.sweep.write import PRUNED_DIR

    items: list[tuple[Path, str, OutputKind]] = []
    for cell in plan_cells(spec, out_dir):
        if not cell.done:
            items += [(cell.json_path, "--out-dir", "report"),
                      (cell.html_path, "--out-dir", "html")]
            if cell.sweep:
                items.append((out_dir / PRUNED_DIR / cell.json_path.name, "--out-dir",
                              "report"))
    for model in spec.models:
        if model.sweep:
            page = sweep_path(out_dir, model)
            items += [(page, "--out-dir", "sweep"),
                      (page.with_suffix(".html"), "--out-dir", "html")]
    items += [(out_dir / STATUS_FILE, "--out-dir", "status"),
              (out_dir / MARKDOWN_NAME, "--out-dir", "markdown"),
              (out_dir / HTML_NAME, "--out-dir", "html")]
    check_replaceable_all(items, overwrite=overwrite)


def write_leaderboards(out_dir: Path, progress: MatrixProgress | None = None) -> list[Path]:
    """LEADERBOARD.md and leaderboard.html of every report in ``out_dir``."""
    from refract.report.leaderboard import write_leaderboards as write_boards

    files = write_boards(out_dir, out_dir)
    if progress is not None:
        for group in files.board.incompatible:
            progress.note(f"leaderboard: the reports for {group.candidate} are not all "
                          "comparable (marked in the leaderboard)")
    return [files.markdown, files.html]


class _Driver:
    def __init__(self, spec: MatrixSpec, cells: list[Cell], progress: MatrixProgress,
                 out_dir: Path) -> None:
        self.spec = spec
        self.out_dir = out_dir
        self.progress = progress
        self.outcomes: dict[tuple[str, str], CellOutcome] = {
            (str(c.model.path), c.candidate): CellOutcome(c, "skipped" if c.done else "pending")
            for c in cells
        }
        self.jobs: list[dict[str, Any]] = []
        self.job_models: list[ModelEntry] = []
        for model in spec.models:
            todo = [c.candidate for c in cells if c.model == model and not c.done]
            if todo:
                self.jobs.append(make_job(model.name, model.arg, todo, spec.reference,
                                          spec.settings, spec.base_dir,
                                          spec.sweep if model.sweep else None))
                self.job_models.append(model)
        self.started: dict[tuple[str, str], float] = {}
        self.announced: set[tuple[str, str]] = set()

    def _outcome(self, index: int, candidate: str | None) -> CellOutcome | None:
        model = self.job_models[index]
        return self.outcomes.get((str(model.path), candidate or ""))

    def _start(self, outcome: CellOutcome) -> None:
        key = (str(outcome.cell.model.path), outcome.cell.candidate)
        self.started.setdefault(key, time.monotonic())
        if key not in self.announced:
            self.announced.add(key)
            self.progress.cell_start(outcome.cell.model.name, outcome.cell.candidate)

    def _finish(self, outcome: CellOutcome, state: str, message: str = "",
                tail: list[str] | None = None) -> None:
        if outcome.state != "pending":
            return
        self._start(outcome)
        key = (str(outcome.cell.model.path), outcome.cell.candidate)
        outcome.state, outcome.message = state, message
        outcome.stderr_tail = list(tail or [])
        outcome.seconds = time.monotonic() - self.started[key]
        self.progress.cell_end(outcome.cell.model.name, outcome.cell.candidate, state == "ok",
                               message, outcome.seconds)

    def handle(self, index: int, event: dict[str, Any]) -> None:
        kind = event.get("type")
        model = self.job_models[index]
        if kind == "submitted":  # queued on a cluster: its cells' time starts now
            now = time.monotonic()
            pending = self._pending(model)
            for o in pending:
                self.started.setdefault((str(model.path), o.cell.candidate), now)
            n = len(pending)
            self.progress.note(f"{model.name}: submitted ({n} cell{'' if n == 1 else 's'})")
        elif kind == "start":
            outcome = self._outcome(index, event.get("candidate"))
            if outcome is not None:
                self._start(outcome)
        elif kind == "axis":
            self.progress.axis(model.name, event.get("candidate"), str(event.get("axis")),
                               int(event.get("done") or 0), int(event.get("total") or 0))
        elif kind == "report":
            outcome = self._outcome(index, event.get("candidate"))
            if outcome is None or outcome.state != "pending":
                return
            report = event["report"]
            self._write(outcome.cell, report)
            from refract.report.fields import axis_problems, is_measured

            if is_measured(report):
                self._finish(outcome, "ok")
            else:  # written (it says why), but no score: the cell failed and a rerun redoes it
                why = "; ".join(axis_problems(report))
                self._finish(outcome, "failed", "nothing was measured: no axis produced a "
                             "score" + (f" ({why})" if why else ""))
        elif kind == "sweep":
            self._sweep(model, event)
        elif kind == "error":
            outcome = self._outcome(index, event.get("candidate"))
            if outcome is not None:
                self._finish(outcome, "failed", str(event.get("message")))
        elif kind in ("fatal", "crash"):
            message = str(event.get("message"))
            tail = [str(x) for x in event.get("stderr_tail") or []]
            if tail:
                message = f"{message}; stderr tail: {tail[-1]}"
            for outcome in self._pending(model):
                self._finish(outcome, "failed", message, tail)

    def _sweep(self, model: ModelEntry, event: dict[str, Any]) -> None:
        """A swept model's end: its pruned and not-runnable configs settled, its pruned
        first-round reports and ``sweep.json`` (last: the mark that the sweep is whole)."""
        from refract.matrix.plan import sweep_fingerprint, sweep_path
        from refract.sweep.run import SweepResult
        from refract.sweep.write import write_sweep

        summary = dict(event["summary"])
        for entry in summary.get("configs") or []:
            outcome = self.outcomes.get((str(model.path), entry["config"]))
            if outcome is None:
                continue
            if entry["status"] == "pruned":
                self._finish(outcome, "pruned", entry["pruned"]["evidence"])
            elif entry["status"] == "skipped":
                self._finish(outcome, "not-runnable", str(entry["skipped"]))
        summary["matrix"] = {"sweep_fingerprint": sweep_fingerprint(self.spec, model),
                             "options_fingerprint": self.spec.fingerprint,
                             "model_name": model.name,
                             "source": str(self.spec.source) if self.spec.source else None}
        path = sweep_path(self.out_dir, model)
        write_sweep(SweepResult(summary, {}, dict(event.get("first_round") or {})),
                    self.out_dir, html=True, sweep_file=path.name)

    def _pending(self, model: ModelEntry) -> list[CellOutcome]:
        return [o for o in self.outcomes.values()
                if o.cell.model == model and o.state == "pending"]

    def _write(self, cell: Cell, report: dict[str, Any]) -> None:
        from refract.report.html import write_html
        from refract.report.io import write_report

        extras = report.setdefault("extras", {})
        if not isinstance(extras, dict):
            extras = report["extras"] = {}
        extras["matrix"] = matrix_extras(cell, self.spec)
        write_html(report, cell.html_path)
        write_report(report, cell.json_path)  # last: its presence marks the cell done

    def finish_all(self) -> None:
        for model in self.job_models:
            for outcome in self._pending(model):
                self._finish(outcome, "failed", "the worker ended without a result")


def _write_status(out_dir: Path, outcomes: list[CellOutcome]) -> None:
    from refract.files import atomic_write_bytes

    lines = []
    for o in outcomes:
        lines.append(orjson.dumps({
            "model": o.cell.model.name,
            "model_path": str(o.cell.model.path),
            "candidate": o.cell.candidate,
            "state": o.state,
            "report": (o.cell.json_path.name if o.state == "ok" or (
                o.state == "skipped" and o.cell.json_path.exists()) else None),
            "message": o.message or None,
            "stderr_tail": o.stderr_tail or None,
            "seconds": o.seconds,
        }))
    atomic_write_bytes(out_dir / STATUS_FILE, b"\n".join(lines) + b"\n")


def run_matrix(
    spec: MatrixSpec,
    out_dir: Path,
    executor: Executor,
    progress: MatrixProgress | None = None,
) -> MatrixResult:
    """Score every cell not already done; write reports, status and leaderboards.

    ``KeyboardInterrupt`` propagates after the executor has stopped its workers; every file
    written before it is whole (atomic writes), so a rerun continues where this one stopped.
    """
    progress = progress or MatrixProgress(quiet=True)
    cells = plan_cells(spec, out_dir)
    for cell in cells:
        if cell.redo_reason:
            progress.note(f"{cell.json_path.name}: {cell.redo_reason}; scoring it again")
    driver = _Driver(spec, cells, progress, out_dir)
    progress.begin(len(cells), sum(c.done for c in cells), executor.name)
    try:
        if driver.jobs:
            executor.run(driver.jobs, driver.handle)
        driver.finish_all()
    except KeyboardInterrupt:
        progress.close()
        for outcome in driver.outcomes.values():
            if outcome.state == "pending":
                outcome.state = "interrupted"
        _write_status(out_dir, list(driver.outcomes.values()))
        raise
    finally:
        progress.close()
    outcomes = list(driver.outcomes.values())
    _write_status(out_dir, outcomes)
    boards = (write_leaderboards(out_dir, progress)
              if any(o.state in ("ok", "skipped") for o in outcomes) else [])
    return MatrixResult(outcomes=outcomes, leaderboards=boards)
