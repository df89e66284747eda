"""Never replace a file refract did not write (issue 26).

Every command that writes files (``score``'s ``--json-out`` / ``--html-out`` / ``--out-dir``,
``repeatability --json-out``, ``leaderboard --out``, ``matrix --out-dir``) checks each output
path before any work starts: a path that does not exist, an empty file, or a file refract wrote
before (one of our outputs of the same kind) may be replaced — atomically, as the writers do;
any other existing file (a model, someone's notes, a report of another tool ...) is refused
with one line and exit 2 unless the user passes ``--overwrite``.

What counts as ours, per kind:

* ``report``: JSON that loads as a refract / refract-llm report
  (:func:`refract.report.io.validate_report`), or a file that opens the way refract writes
  one (``{"schema": "refract.report.…``): a damaged or truncated report of ours, which a matrix
  rerun redoes;
* ``html``: a page that carries ``<meta name="generator" content="refract ...">`` (every page
  refract writes), or a page of an earlier refract version (our title and stylesheet);
* ``markdown``: a leaderboard (its first line is ``# REFRACT leaderboard``);
* ``summary``: a ``refract repeatability`` summary (``schema`` ``refract.repeatability.*``, or
  the fields an earlier version wrote);
* ``status``: a matrix ``matrix-status.jsonl`` (one JSON object per line with ``model``,
  ``candidate`` and ``state``);
* ``sweep``: a ``refract sweep`` summary (``sweep.json``: ``{"schema": "refract-sweep/…``).

Only the start of a file is read, except for a JSON report, read whole up to
:data:`MAX_JSON_BYTES` (a file that does not start with ``{`` is not read further).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Final, Literal

import orjson

from refract.errors import UsageError

__all__ = [
    "KINDS",
    "MAX_JSON_BYTES",
    "SUMMARY_SCHEMA",
    "OutputKind",
    "check_replaceable",
    "check_replaceable_all",
    "is_refract_output",
]

OutputKind = Literal["report", "html", "markdown", "summary", "status", "sweep"]

KINDS: Final[dict[str, str]] = {
    "report": "a refract report",
    "html": "a page refract wrote",
    "markdown": "a leaderboard refract wrote",
    "summary": "a refract repeatability summary",
    "status": "a refract matrix status file",
    "sweep": "a refract sweep summary",
}
"""How each kind of output is named in the refusal ("... is not <this>")."""

#: A JSON output larger than this is not read to find out whether it is ours (it is not).
MAX_JSON_BYTES: Final[int] = 256 * 1024 * 1024
_HEAD_BYTES: Final[int] = 16 * 1024
_LEADERBOARD_TITLE: Final[str] = "# REFRACT leaderboard"
_REPORT_HEAD: Final[re.Pattern[bytes]] = re.compile(rb'\s*\{\s*"schema"\s*:\s*"refract\.report\.v')
SUMMARY_SCHEMA: Final[str] = "refract.repeatability.v1"
"""``schema`` of a ``refract repeatability --json-out`` summary."""


def _head(path: Path, size: int = _HEAD_BYTES) -> bytes:
    with path.open("rb") as fh:
        return fh.read(size)


def _json(path: Path) -> object:
    """The JSON value in ``path``, or ``None`` when it is not one (read only if it may be)."""
    if not _head(path, 64).lstrip().startswith(b"{"):
        return None
    if path.stat().st_size > MAX_JSON_BYTES:
        return None
    try:
        return orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError:
        return None


def _is_report(path: Path) -> bool:
    from refract.report.io import ReportError, validate_report

    if _REPORT_HEAD.match(_head(path, 256)):
        return True  # ours, whole or damaged (schema is the first key refract writes)
    obj = _json(path)
    if not isinstance(obj, dict):
        return False
    try:
        validate_report(obj, str(path))
    except ReportError:
        return False
    return True


def _is_page(path: Path) -> bool:
    from refract.report.html import GENERATOR_META_PREFIX

    head = _head(path).decode("utf-8", errors="replace")
    if GENERATOR_META_PREFIX in head:
        return True
    # a page of a refract version before the generator tag: our doctype, title and stylesheet
    return (head.lstrip().lower().startswith("<!doctype html>") and "<title>REFRACT" in head
            and "--zone-alpha:" in head)


def _is_leaderboard(path: Path) -> bool:
    text = _head(path, 256).decode("utf-8", errors="replace").lstrip("\ufeff")
    return text.split("\n", 1)[0].rstrip() == _LEADERBOARD_TITLE


def _is_summary(path: Path) -> bool:
    obj = _json(path)
    if not isinstance(obj, dict):
        return False
    schema = obj.get("schema")
    if isinstance(schema, str):
        return schema.startswith("refract.repeatability.")
    return {"n_runs", "stats", "verdict"} <= set(obj)  # written before the schema key


def _is_status(path: Path) -> bool:
    head = _head(path)
    lines = [line for line in head.split(b"\n") if line.strip()]
    if not lines:
        return False
    try:
        first = orjson.loads(lines[0])
    except orjson.JSONDecodeError:
        return False
    return isinstance(first, dict) and {"model", "candidate", "state"} <= set(first)


def _is_sweep(path: Path) -> bool:
    from refract.files import is_sweep_summary

    return is_sweep_summary(path)


_RECOGNISERS = {
    "report": _is_report,
    "html": _is_page,
    "markdown": _is_leaderboard,
    "summary": _is_summary,
    "status": _is_status,
    "sweep": _is_sweep,
}


def is_refract_output(path: str | os.PathLike[str], kind: OutputKind) -> bool:
    """Whether ``path`` is a file refract wrote as ``kind`` (an empty file counts: replacing
    it loses nothing). A missing path or one that cannot be read is not."""
    p = Path(path)
    try:
        if not p.is_file():
            return False
        if p.stat().st_size == 0:
            return True
        return _RECOGNISERS[kind](p)
    except OSError:
        return False


def check_replaceable(
    path: str | os.PathLike[str] | None, what: str, kind: OutputKind, *, overwrite: bool
) -> None:
    """Refuse (:class:`UsageError`, exit 2 on the command line) to replace an existing file
    that is not one of refract's own outputs of ``kind``, unless ``overwrite``.

    ``what`` names the output in the message (``--json-out``, ``--out-dir``, ...).
    """
    if path is None or overwrite:
        return
    p = Path(path).expanduser()
    if not os.path.lexists(p) or p.is_dir():
        return  # a new file; directories are refused by refract.files.check_output_path
    if is_refract_output(p, kind):
        return
    raise UsageError(
        f"{what} {str(p)!r} exists and is not {KINDS[kind]}: refusing to replace it; "
        "choose another path, or pass --overwrite to replace it anyway"
    )


def check_replaceable_all(
    items: Iterable[tuple[str | os.PathLike[str] | None, str, OutputKind]], *, overwrite: bool
) -> None:
    """:func:`check_replaceable` for each ``(path, what, kind)``."""
    for path, what, kind in items:
        check_replaceable(path, what, kind, overwrite=overwrite)
