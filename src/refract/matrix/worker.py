"""The function both executors run: one model, its candidates, one model load.

:func:`run_job` takes a JSON-able job (model name and path, candidates, reference, the
``[settings]`` table) and reports through ``emit(event)``:

* ``{"type": "start", "candidate": c}`` when a cell starts,
* ``{"type": "axis", "candidate": c, "axis": name, "done": n, "total": m}`` (throttled),
* ``{"type": "report", "candidate": c, "report": {...}}`` when a cell is scored,
* ``{"type": "error", "candidate": c, "message": m}`` when a cell failed,
* ``{"type": "fatal", "message": m}`` when the whole model failed (not loadable, ...),
* ``{"type": "sweep", "summary": {...}, "first_round": {c: report}}`` after the reports of a
  swept model (a job with ``sweep``): its ``sweep.json`` and its pruned configs' first-round
  reports.

The worker never writes files: the driver does. ``python -m refract.matrix.worker`` reads a
job from stdin and writes the events as JSON lines to its stdout (native code that prints to
stdout is sent to stderr, so the protocol stays clean); that is the local executor's worker
process.

Test-only hooks (never set them outside the test suite): ``REFRACT_TEST_CRASH_MODEL=<name>``
makes the worker for model ``<name>`` kill itself with SIGSEGV when it starts, and
``REFRACT_TEST_CRASH_ONCE=<file>`` makes the first worker that finds ``<file>`` missing
create it and kill itself with SIGKILL (a worker lost mid-task, as in an out-of-memory
kill).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from refract.progress import Callback, Reporter

__all__ = ["EventReporter", "main", "run_job"]

Emit = Callable[[dict[str, Any]], None]
CRASH_MODEL_ENV = "REFRACT_TEST_CRASH_MODEL"
CRASH_ONCE_ENV = "REFRACT_TEST_CRASH_ONCE"


class EventReporter(Reporter):
    """Axis progress as ``axis`` events (at most every ``interval`` seconds per axis)."""

    def __init__(self, emit: Emit, interval: float = 0.5) -> None:
        self.emit = emit
        self.interval = interval
        self.candidate: str | None = None

    @contextlib.contextmanager
    def axis(self, description: str, phases: int = 1) -> Iterator[Callback]:
        from refract.progress import PhasedCounter

        counter = PhasedCounter(phases)
        last = 0.0

        def callback(done: int, total: int) -> None:
            nonlocal last
            completed, whole = counter.update(done, total)
            now = time.monotonic()
            if now - last >= self.interval or completed >= whole:
                last = now
                self.emit({"type": "axis", "candidate": self.candidate, "axis": description,
                           "done": completed, "total": whole})

        self.emit({"type": "axis", "candidate": self.candidate, "axis": description,
                   "done": 0, "total": 0})
        yield callback


def _test_crash_hooks(name: str) -> None:
    if os.environ.get(CRASH_MODEL_ENV) == name:
        os.kill(os.getpid(), signal.SIGSEGV)
    marker = os.environ.get(CRASH_ONCE_ENV)
    if marker:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)


def _message(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


def run_job(job: dict[str, Any], emit: Emit) -> None:
    """Score one model's candidates; every outcome is an event (never raises for a cell)."""
    from refract.inputs.model import resolve_model
    from refract.matrix import scoring

    model = job["model"]
    candidates: list[str] = list(job["candidates"])
    _test_crash_hooks(model["name"])
    try:
        resolve_model(model["path"])
    except Exception as exc:  # missing or unreadable here (UsageError), no demo extra here …
        emit({"type": "fatal",
              "message": f"on worker host {socket.gethostname()}: {_message(exc)}"})
        return
    reporter = EventReporter(emit)
    in_flight: list[str] = []

    def on_start(cand: str) -> None:
        in_flight.append(cand)
        # candidates scored together: axis progress is for all of them, not one
        reporter.candidate = cand if len(in_flight) == 1 else None
        emit({"type": "start", "candidate": cand})

    def on_end(cand: str) -> None:
        if cand in in_flight:
            in_flight.remove(cand)

    def on_report(cand: str, report: dict[str, Any]) -> None:
        on_end(cand)
        emit({"type": "report", "candidate": cand, "report": report})

    def on_error(cand: str, exc: BaseException) -> None:
        on_end(cand)
        emit({"type": "error", "candidate": cand, "message": _message(exc)})

    try:
        options = scoring.make_options(job["settings"], job["reference"],
                                      base_dir=Path(job["base_dir"]))
        if job.get("sweep") is not None:
            _sweep(job, options, reporter, emit, on_start, on_report)
            return
        scoring.score_candidates(model["path"], candidates, options, reporter=reporter,
                                on_start=on_start, on_report=on_report, on_error=on_error)
    except Exception as exc:  # model load failure, a settings file gone since the check …
        emit({"type": "fatal", "message": _message(exc)})


def _sweep(job: dict[str, Any], options: Any, reporter: Reporter, emit: Emit,
           on_start: Callable[[str], None],
           on_report: Callable[[str, dict[str, Any]], None]) -> None:
    """A swept model: :func:`refract.sweep.run_sweep`, its full reports as ``report`` events,
    then the ``sweep`` event."""
    from refract.matrix.spec import sweep_settings
    from refract.sweep import run_sweep

    model = job["model"]
    for cand in job["candidates"]:
        on_start(cand)
    result = run_sweep(model["path"], options, sweep_settings(job["sweep"]),
                       reporter=reporter, model_name=model["name"])
    for cand, report in result.reports.items():
        on_report(cand, report)
    emit({"type": "sweep", "summary": result.summary, "first_round": result.first_round})


def main() -> int:
    """``python -m refract.matrix.worker``: job JSON on stdin, JSON-line events on stdout."""
    import orjson

    from refract.report.io import dumps_report

    # the protocol gets the real stdout; anything native code prints goes to stderr
    proto = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    job = orjson.loads(sys.stdin.buffer.read())

    def emit(event: dict[str, Any]) -> None:
        proto.write(dumps_report(event, indent=False) + b"\n")

    run_job(job, emit)
    proto.close()
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # the driver owns Ctrl-C and stops us
    sys.exit(main())
