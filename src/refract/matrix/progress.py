"""Progress over a whole matrix, on stderr: cells done/total, the current cell and axis, ETA.

On a terminal it is one rich progress line; otherwise (logs, CI, tests) one plain line per
cell start and end. The ETA is the mean time of the cells finished in this run times the
cells left (cells skipped on resume do not count).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

__all__ = ["MatrixProgress", "format_eta", "make_matrix_progress"]


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = max(0, int(round(seconds)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class MatrixProgress:
    """Plain lines: ``refract: [3/8] model · candidate: done in 12.3 s, ETA 1m02s``.

    A cell's time runs from its start to its report; with several candidates scored together
    on one model load they overlap."""

    def __init__(self, file: TextIO | None = None, *, quiet: bool = False) -> None:
        self.file = file
        self.quiet = quiet
        self.total = 0
        self.finished = 0  # done + failed + skipped
        self.ran = 0  # cells finished in this run (for the ETA)
        self.t0 = time.monotonic()
        self.current = ""

    def _line(self, text: str) -> None:
        if not self.quiet:
            print(f"refract: {text}", file=self.file or sys.stderr, flush=True)

    def eta(self) -> float | None:
        if self.ran == 0:
            return None
        per_cell = (time.monotonic() - self.t0) / self.ran
        return per_cell * (self.total - self.finished)

    def begin(self, total: int, skipped: int, executor: str) -> None:
        self.total, self.finished = total, skipped
        self.t0 = time.monotonic()
        todo = total - skipped
        extra = f", {skipped} already done (skipped)" if skipped else ""
        self._line(f"matrix: {total} cells{extra}, {todo} to score ({executor} executor)")

    def cell_start(self, model: str, candidate: str) -> None:
        self.current = f"{model} · {candidate}"
        self._line(f"{self.current}: scoring")

    def axis(self, model: str, candidate: str | None, axis: str, done: int, total: int) -> None:
        return None

    def cell_end(self, model: str, candidate: str, ok: bool, message: str = "",
                 seconds: float | None = None) -> None:
        self.finished += 1
        self.ran += 1
        took = "" if seconds is None else f" in {seconds:.1f} s"
        state = f"done{took}" if ok else f"FAILED: {message}"
        self._line(f"[{self.finished}/{self.total}] {model} · {candidate}: {state}, "
                   f"ETA {format_eta(self.eta())}")

    def note(self, text: str) -> None:
        self._line(text)

    def close(self) -> None:
        return None


class RichMatrixProgress(MatrixProgress):
    """One live line: bar, cells done/total, elapsed, ETA, current model · candidate · axis."""

    def __init__(self, file: TextIO | None = None) -> None:
        super().__init__(file)
        self.console = Console(file=file or sys.stderr, stderr=file is None)
        self.bar = Progress(
            TextColumn("[bold]matrix"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta {task.fields[eta]}"),
            TextColumn("{task.description}"),
            console=self.console,
        )
        self.task: TaskID | None = None

    def _update(self, description: str | None = None) -> None:
        if self.task is not None:
            # description=None leaves the task's description as it is
            self.bar.update(self.task, completed=self.finished, total=self.total,
                            description=description, eta=format_eta(self.eta()))

    def _line(self, text: str) -> None:
        self.console.print(f"refract: {text}", highlight=False)

    def begin(self, total: int, skipped: int, executor: str) -> None:
        super().begin(total, skipped, executor)
        self.bar.start()
        self.task = self.bar.add_task("", total=total, completed=skipped, eta="?")

    def cell_start(self, model: str, candidate: str) -> None:
        self.current = f"{model} · {candidate}"
        self._update(self.current)

    def axis(self, model: str, candidate: str | None, axis: str, done: int, total: int) -> None:
        where = f"{model} · {candidate}" if candidate else model
        count = f" {done}/{total}" if total else ""
        self._update(f"{where} · {axis}{count}")

    def cell_end(self, model: str, candidate: str, ok: bool, message: str = "",
                 seconds: float | None = None) -> None:
        self.finished += 1
        self.ran += 1
        if not ok:
            self._line(f"{model} · {candidate}: FAILED: {message}")
        self._update()

    def close(self) -> None:
        if self.task is not None:
            self.bar.stop()
            self.task = None


def make_matrix_progress(enabled: bool = True, file: TextIO | None = None) -> MatrixProgress:
    stream = file or sys.stderr
    isatty = getattr(stream, "isatty", None)
    if enabled and callable(isatty) and isatty():
        return RichMatrixProgress(file)
    return MatrixProgress(file, quiet=not enabled)
