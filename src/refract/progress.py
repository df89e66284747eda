"""Progress display for long runs: one rich progress bar per axis, on stderr.

The engine reports progress as ``callback(done, total)``. An axis may call the engine several
times (reference decode, then candidate decode), and each call counts from zero again. The
callback returned by :meth:`Reporter.axis` stitches such *phases* together: a report whose
``done`` does not exceed the previous one starts a new phase, and the bar's total is the
sum of the finished phases plus the current phase's total for every phase still expected.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

Callback = Callable[[int, int], None]
ByteCallback = Callable[[int, "int | None"], None]

__all__ = ["Callback", "PhasedCounter", "Reporter", "RichReporter", "make_reporter"]


class PhasedCounter:
    """Turns per-phase ``(done, total)`` reports into one running ``(completed, total)``."""

    def __init__(self, phases: int = 1) -> None:
        self.expected = max(1, phases)
        self.phase = 0  # index of the current phase
        self.offset = 0  # items of the finished phases
        self.last_done: int | None = None
        self.last_total = 0

    def update(self, done: int, total: int) -> tuple[int, int]:
        done, total = max(0, int(done)), max(0, int(total))
        if self.last_done is not None and done <= self.last_done:
            self.offset += max(self.last_total, self.last_done)
            self.phase += 1
            self.expected = max(self.expected, self.phase + 1)
        self.last_done, self.last_total = done, total
        remaining = self.expected - self.phase  # this phase and the ones still to come
        return self.offset + done, self.offset + total * remaining

    def finish(self) -> tuple[int, int]:
        """Everything done: completed = total."""
        n = self.offset + (self.last_total if self.last_done is not None else 0)
        n = max(n, 1)
        return n, n


class Reporter:
    """No-op base: subclasses show something."""

    @contextlib.contextmanager
    def axis(self, description: str, phases: int = 1) -> Iterator[Callback]:
        yield _noop

    @contextlib.contextmanager
    def download(self, description: str) -> Iterator[ByteCallback]:
        yield _noop_bytes


class RichReporter(Reporter):
    """One rich progress display per axis (items done/total, elapsed, ETA) on ``file``."""

    def __init__(self, file: TextIO | None = None) -> None:
        self.console = Console(file=file or sys.stderr, stderr=file is None)

    @contextlib.contextmanager
    def axis(self, description: str, phases: int = 1) -> Iterator[Callback]:
        counter = PhasedCounter(phases)
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("elapsed"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
        ) as bar:
            task = bar.add_task(description, total=None)

            def callback(done: int, total: int) -> None:
                completed, whole = counter.update(done, total)
                bar.update(task, completed=completed, total=whole)

            ok = False
            try:
                yield callback
                ok = True
            finally:
                if ok:
                    completed, whole = counter.finish()
                    bar.update(task, completed=completed, total=whole)

    @contextlib.contextmanager
    def download(self, description: str) -> Iterator[ByteCallback]:
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
        ) as bar:
            task: TaskID = bar.add_task(description, total=None)

            def callback(done: int, total: int | None) -> None:
                bar.update(task, completed=done, total=total)

            yield callback


def make_reporter(enabled: bool = True, file: TextIO | None = None) -> Reporter:
    """A rich reporter when ``enabled`` and the target (stderr by default) is a terminal."""
    stream = file or sys.stderr
    isatty = getattr(stream, "isatty", None)
    if enabled and callable(isatty) and isatty():
        return RichReporter(file)
    return Reporter()


def _noop(done: int, total: int) -> None:
    return None


def _noop_bytes(done: int, total: int | None) -> None:
    return None
