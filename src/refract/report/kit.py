"""Reading and formatting helpers that know no axis: number formats, safe lookups into a
report, and the HTML pieces (tables, pills, bullets) that the report page and each axis's own
section are built from."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any


def esc(value: Any) -> str:
    """HTML-escaped text (quotes included)."""
    return escape(str(value), quote=True)


def as_float(value: Any) -> float | None:
    """A finite-or-NaN float, or None for missing / non-numeric values."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def fmt(value: Any, digits: int = 2, missing: str = "—") -> str:
    """Format a number for a table cell; None/NaN → ``missing``."""
    num = as_float(value)
    if num is None or math.isnan(num):
        return missing
    return f"{num:.{digits}f}"


def fmt_kld(value: Any, missing: str = "—") -> str:
    """Mean KLD in nats with enough significant digits for tiny values."""
    num = as_float(value)
    if num is None or math.isnan(num):
        return missing
    if num == 0:
        return "0"
    if abs(num) < 0.001:
        return f"{num:.2e}"
    return f"{num:.4f}"


def get_path(obj: Any, *path: str) -> Any:
    """``obj[path[0]][path[1]]…``, or ``None`` where a step is missing or not a mapping."""
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def first(*values: Any) -> Any:
    """The first value that is not ``None``."""
    for v in values:
        if v is not None:
            return v
    return None


def distinct_values(items: list[Any], key: str) -> list[Any]:
    """The distinct known (not ``None``) values of ``key`` over mappings, sorted."""
    values = {c.get(key) for c in items if isinstance(c, Mapping)}
    return sorted(v for v in values if v is not None)


def prompts_fingerprint(report: Mapping[str, Any]) -> dict[str, Any]:
    """The comparability items of the prompt set and its decoding, shared by every axis that
    decodes the prompt set (Trajectory, PLAD)."""
    raw_axes = report.get("axes")
    axes: Mapping[str, Any] = raw_axes if isinstance(raw_axes, Mapping) else {}
    raw = report.get("settings")
    settings: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    prov = report.get("provenance")
    return {
        "prompts.sha256": get_path(prov, "prompts", "sha256"),
        "prompts.n": first(get_path(prov, "prompts", "n"), settings.get("n_prompts"),
                           get_path(axes, "gtm", "n_prompts"),
                           get_path(axes, "plad", "n_prompts")),
        "n_predict": first(settings.get("n_predict"), get_path(axes, "gtm", "n_tokens_each")),
        "chat_template": settings.get("chat_template"),
    }


def needle_keyword(axis: Mapping[str, Any]) -> Any:
    """R-NIAH keyword: ``needle_keyword`` (v0.3.3) or ``password_keyword`` (older)."""
    return axis.get("needle_keyword", axis.get("password_keyword", axis.get("keyword")))


def pill(band_name: str | None, small: bool = False) -> str:
    name = band_name or "skipped"
    size = " small" if small else ""
    cls = "-".join(name.lower().split())
    return f'<span class="pill{size} b-{esc(cls)}">{esc(name)}</span>'


def kv_table(pairs: Sequence[tuple[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{esc(k)}</td><td>{_cell(v)}</td></tr>" for k, v in pairs if not _blank(v)
    )
    return f'<table class="kv">{rows}</table>' if rows else ""


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, (str, list, tuple)) and len(value) == 0)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return esc(f"{value:.0f}" if value.is_integer() else f"{value:.5g}")
    if isinstance(value, (list, tuple)):
        return esc(", ".join(str(v) for v in value))
    return esc(value)


def bullets(items: Sequence[str], cls: str = "") -> str:
    if not items:
        return ""
    attr = f' class="{cls}"' if cls else ""
    return f"<ul{attr}>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>"



_PCT_NAMES = {"max": 100.0, "min": 0.0, "median": 50.0}


def kld_percentiles(axis: Mapping[str, Any]) -> list[tuple[float, str, float]]:
    """(percentile, label, KLD) points from ``kld_percentiles`` / ``percentiles`` (a mapping
    such as ``{"max": …, "99.9": …, "p99": …, "median": …, "min": …}``), low to high."""
    raw = axis.get("kld_percentiles", axis.get("percentiles"))
    points: list[tuple[float, str, float]] = []
    if isinstance(raw, Mapping):
        items = list(raw.items())
    elif isinstance(raw, list):
        items = [tuple(x) for x in raw if isinstance(x, (list, tuple)) and len(x) == 2]
    else:
        return points
    for key, value in items:
        val = as_float(value)
        if val is None:
            continue
        name = str(key).strip().lower()
        if name in _PCT_NAMES:
            pct = _PCT_NAMES[name]
        else:
            m = re.fullmatch(r"p?(\d+(?:\.\d+)?)", name.replace("_", "."))
            if not m:
                continue
            pct = float(m.group(1))
        label = name if name in _PCT_NAMES else f"p{pct:g}"
        points.append((pct, label, val))
    points.sort(key=lambda t: t[0])
    return points


__all__ = [
    "as_float",
    "esc",
    "bullets",
    "distinct_values",
    "first",
    "fmt",
    "fmt_kld",
    "get_path",
    "kld_percentiles",
    "kv_table",
    "needle_keyword",
    "pill",
    "prompts_fingerprint",
]
