"""Local executor: one worker process per model, one after the other.

Each model runs in ``python -m refract.matrix.worker`` (its own process group): a llama.cpp
abort, an out-of-memory kill or a segfault ends that process only. Its events come back as
JSON lines on its stdout; its stderr is kept (the last lines) for the failure record. The
driver alone writes files. On Ctrl-C the worker is killed and the interrupt goes on up.
"""

from __future__ import annotations

import collections
import contextlib
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import IO, Any

import orjson

__all__ = ["STDERR_TAIL_LINES", "LocalExecutor", "describe_exit"]

STDERR_TAIL_LINES = 30
Handle = Callable[[int, dict[str, Any]], None]


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"worker process killed by {name}{hint}"
    return f"worker process exited with status {returncode}"


def _drain(stream: IO[bytes], tail: collections.deque[str]) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip()
        if line:
            tail.append(line)


class LocalExecutor:
    name = "local"

    def __init__(self, python: str | None = None) -> None:
        self.python = python or sys.executable

    def run(self, jobs: list[dict[str, Any]], handle: Handle) -> None:
        for index, job in enumerate(jobs):
            self._run_one(index, job, handle)

    def _run_one(self, index: int, job: dict[str, Any], handle: Handle) -> None:
        proc = subprocess.Popen(
            [self.python, "-m", "refract.matrix.worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,  # Ctrl-C reaches the driver only; the driver stops us
        )
        tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        reader = threading.Thread(target=_drain, args=(proc.stderr, tail), daemon=True)
        reader.start()
        fatal_seen = False
        try:
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(orjson.dumps(job))
                proc.stdin.close()
            except BrokenPipeError:
                pass
            for raw in iter(proc.stdout.readline, b""):
                try:
                    event = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    tail.append(raw.decode("utf-8", "replace").rstrip())
                    continue
                fatal_seen = fatal_seen or event.get("type") == "fatal"
                handle(index, event)
            rc = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            with contextlib.suppress(Exception):
                proc.stdout.close()  # type: ignore[union-attr]
        reader.join(timeout=5)
        if rc != 0 and not fatal_seen:
            handle(index, {"type": "crash", "message": describe_exit(rc),
                           "stderr_tail": list(tail)})
