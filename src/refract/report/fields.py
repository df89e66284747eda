"""Read-side helpers shared by the renderers: tolerant field access for our reports and
refract-llm's (v0.2.x and v0.3.x), number formatting, and short labels."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from refract.composite import AXES, band, composite_score


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


def axes_of(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    axes = report.get("axes")
    if not isinstance(axes, Mapping):
        return {}
    return {str(k): dict(v) for k, v in axes.items() if isinstance(v, Mapping)}


def axis_score(report: Mapping[str, Any], key: str) -> float | None:
    """Score of one axis: ``axes.<key>.score`` else ``composite_detail.<key>_score``."""
    axis = axes_of(report).get(key)
    if axis is not None:
        if axis.get("skipped") is True:
            return None
        score = as_float(axis.get("score"))
        if score is not None:
            return score
    detail = report.get("composite_detail")
    if isinstance(detail, Mapping):
        return as_float(detail.get(f"{key}_score"))
    return None


def axis_scores(report: Mapping[str, Any]) -> dict[str, float | None]:
    return {key: axis_score(report, key) for key in AXES}


def report_composite(report: Mapping[str, Any]) -> float:
    """The stored composite, or one recomputed from the axis scores when it is missing."""
    stored = as_float(report.get("composite"))
    if stored is not None:
        return stored
    detail = report.get("composite_detail")
    if isinstance(detail, Mapping) and any(f"{k}_score" in detail for k in AXES):
        return composite_score({k: as_float(detail.get(f"{k}_score")) for k in AXES})
    return composite_score(axis_scores(report))


def report_band(report: Mapping[str, Any]) -> str:
    stored = report.get("band")
    if isinstance(stored, str) and stored:
        return stored
    return band(report_composite(report))


def mean_kld(report: Mapping[str, Any]) -> float | None:
    kld = axes_of(report).get("kld", {})
    return as_float(kld.get("mean_kld"))


def model_name(report: Mapping[str, Any]) -> str:
    """Model file name without directories and the .gguf suffix."""
    model = report.get("model")
    if not isinstance(model, str) or not model:
        env = report.get("environment")
        model = env.get("model") if isinstance(env, Mapping) else None
    if not isinstance(model, str) or not model:
        return "?"
    name = re.split(r"[\\/]", model.rstrip("/\\"))[-1]
    return name[:-5] if name.lower().endswith(".gguf") else name


def framework_label(report: Mapping[str, Any]) -> str:
    """Which implementation and version produced a report (used to group leaderboards)."""
    generator = report.get("generator")
    gen = generator if isinstance(generator, str) and generator else "refract-llm"
    version = report.get("framework_version")
    if isinstance(version, str) and version:
        return f"{gen} {version}"
    schema = report.get("schema")
    suffix = schema.rsplit(".v", 1)[-1] if isinstance(schema, str) else "?"
    return f"{gen} (schema v{suffix})"


def report_name(report: Mapping[str, Any], path: str | Path | None = None) -> str:
    if path is not None:
        return Path(path).stem
    return f"{model_name(report)} {report.get('candidate') or ''}".strip()


_LEAD = re.compile(r"^(.*?)(?::\s|;\s|\.\s|\.$| — )")


def short_note(sentence: str, limit: int = 60) -> str:
    """The lead clause of a diagnosis sentence (up to ':', ';' or '.'), shortened."""
    text = " ".join(str(sentence).split())
    m = _LEAD.match(text)
    lead = m.group(1) if m and m.group(1) else text
    lead = lead.removesuffix(" detected")
    return lead if len(lead) <= limit else lead[: limit - 1].rstrip() + "…"


def diagnosis_of(report: Mapping[str, Any]) -> list[str]:
    diag = report.get("diagnosis")
    if isinstance(diag, str):
        return [diag]
    if isinstance(diag, list):
        return [str(d) for d in diag]
    return []


def short_notes(report: Mapping[str, Any]) -> str:
    return "; ".join(short_note(s) for s in diagnosis_of(report))


__all__ = [
    "as_float",
    "axes_of",
    "axis_score",
    "axis_scores",
    "diagnosis_of",
    "fmt",
    "fmt_kld",
    "framework_label",
    "mean_kld",
    "model_name",
    "report_band",
    "report_composite",
    "report_name",
    "short_note",
    "short_notes",
]
