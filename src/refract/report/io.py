"""Report JSON: serialisation (orjson, NaN/Inf → null), writing and loading.

Every write is atomic (:mod:`refract.files`, the one home of atomic writes;
``atomic_write_bytes`` is re-exported here for the report writers).

:func:`load_report` reads refract's own reports and refract-llm's (schemas
``refract.report.v0.2.x`` and ``v0.3.x``) and fills the top-level keys that older schemas
lack, so that every consumer can index them the same way.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from refract.errors import ReportError
from refract.files import atomic_write_bytes, atomic_write_text

SCHEMA_RE = re.compile(r"^refract\.report\.v0\.([23])\.(\d+)$")

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _default(obj: Any) -> Any:
    """Fallback for what orjson cannot serialise natively."""
    # numpy arrays orjson refuses (non-contiguous, float16, object dtype …) and numpy scalars.
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):
        return _finite(tolist())
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    item = getattr(obj, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"cannot serialise {type(obj).__name__} in a report")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def dumps_report(report: Mapping[str, Any], *, indent: bool = True) -> bytes:
    """Serialise a report: NaN/±Inf → null, numpy arrays and scalars as JSON values."""
    option = _OPTIONS | (orjson.OPT_INDENT_2 if indent else 0)
    try:
        data = orjson.dumps(report, default=_default, option=option)
    except orjson.JSONEncodeError as exc:
        raise ReportError(f"report cannot be serialised: {exc}") from exc
    return data + b"\n" if indent else data


#: what differs between two reports of the same measurement: when and how long it ran, on
#: what, the run-wide notes, and the extras (the reference store's record says which run came
#: first)
RUN_KEYS = ("timestamp", "timings", "notes", "repro_command", "environment", "extras")


def measured_content(report: Mapping[str, Any]) -> dict[str, Any]:
    """What a report measured, as its file has it: everything but :data:`RUN_KEYS`, the axes'
    ``seconds`` and the ``reference_cache`` setting (asked, not measured). Two runs of one
    measurement -- fresh or reusing the reference store, alone or beside other candidates --
    are equal here."""
    out = orjson.loads(dumps_report(report, indent=False))
    for key in RUN_KEYS:
        out.pop(key, None)
    for axis in (out.get("axes") or {}).values():
        if isinstance(axis, dict):
            axis.pop("seconds", None)
    if isinstance(out.get("settings"), dict):
        out["settings"].pop("reference_cache", None)
    return dict(out)


def write_report(report: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Serialise ``report`` and write it atomically to ``path``."""
    data = dumps_report(report)  # serialise first: a bad report never touches the target
    return atomic_write_bytes(path, data)


def write_text(text: str, path: str | os.PathLike[str]) -> Path:
    """Atomically write UTF-8 text (HTML / Markdown renderings); the report writers' argument
    order for :func:`refract.files.atomic_write_text`."""
    return atomic_write_text(path, text)


def schema_version(report: Mapping[str, Any]) -> tuple[int, int] | None:
    """(minor, patch) of a ``refract.report.v0.<minor>.<patch>`` schema, else None."""
    schema = report.get("schema")
    if not isinstance(schema, str):
        return None
    m = SCHEMA_RE.match(schema)
    return (int(m.group(1)), int(m.group(2))) if m else None


def validate_report(report: Any, source: str = "<report>") -> dict[str, Any]:
    """Check that ``report`` is a supported report dict and fill keys older schemas lack."""
    if not isinstance(report, dict):
        raise ReportError(
            f"{source}: not a refract report (top level is {type(report).__name__}, "
            "expected an object)"
        )
    schema = report.get("schema")
    if not isinstance(schema, str) or not schema.startswith("refract.report."):
        raise ReportError(
            f"{source}: not a refract report (missing or foreign 'schema': {schema!r})"
        )
    if schema_version(report) is None:
        raise ReportError(
            f"{source}: unsupported report schema {schema!r} "
            "(supported: refract.report.v0.2.x and v0.3.x)"
        )
    axes = report.get("axes")
    if not isinstance(axes, dict):
        raise ReportError(f"{source}: report has no 'axes' object")
    report.setdefault("framework_version", None)
    report.setdefault("environment", {})
    report.setdefault("repro_command", "")
    report.setdefault("extras", {})
    report.setdefault("diagnosis", [])
    report.setdefault("composite_detail", {})
    for key in ("model", "reference", "candidate", "band", "summary", "timestamp"):
        report.setdefault(key, None)
    report.setdefault("composite", None)
    return report


def load_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a refract or refract-llm JSON report; :class:`ReportError` names the file."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ReportError(f"{p}: cannot read report ({exc.strerror or exc})") from exc
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ReportError(f"{p}: not a JSON file ({exc})") from exc
    return validate_report(obj, str(p))


__all__ = [
    "ReportError",
    "atomic_write_bytes",
    "dumps_report",
    "load_report",
    "measured_content",
    "schema_version",
    "validate_report",
    "write_report",
    "write_text",
]
