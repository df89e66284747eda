"""The four bands of a score, their thresholds and their one-line readings (SPEC §4).

Lower bounds inclusive: EXCELLENT ≥ 90, PASS ≥ 80, DEGRADED ≥ 60, else FAIL; NaN → FAIL; no
score (``None``: nothing was measured) → no band. Used by the composite, every axis, and every
view of a report.
"""

from __future__ import annotations

import math
from typing import Any, Final, Literal, overload

Band = Literal["EXCELLENT", "PASS", "DEGRADED", "FAIL"]

BAND_THRESHOLDS: Final[tuple[tuple[Band, float], ...]] = (
    ("EXCELLENT", 90.0),
    ("PASS", 80.0),
    ("DEGRADED", 60.0),
)
BANDS: Final[tuple[Band, ...]] = ("EXCELLENT", "PASS", "DEGRADED", "FAIL")

_SUMMARIES: Final[dict[Band, str]] = {
    "EXCELLENT": "Behaves like the reference: no quality loss beyond run-to-run noise.",
    "PASS": "Small measurable differences from the reference; fine for most workloads.",
    "DEGRADED": "Clear drift from the reference; test it on your own workload before use.",
    "FAIL": "Substantial quality loss; treat this KV config as broken.",
}

NOT_MEASURED: Final[str] = (
    "Nothing was measured: no axis produced a score, so there is no composite, no band and "
    "no verdict on this KV config."
)
"""The summary of a report in which no axis scored (SPEC §4); its diagnosis is empty."""

def as_score(value: Any) -> float | None:
    """``None`` stays ``None``; anything else becomes a float (NaN when unconvertible)."""
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


@overload
def band(score: float) -> Band: ...


@overload
def band(score: None) -> None: ...


@overload
def band(score: float | None) -> Band | None: ...


def band(score: float | None) -> Band | None:
    """Band of a composite or axis score (lower bounds inclusive); NaN → FAIL.

    ``None`` (nothing was measured) has no band: ``None``, never FAIL.
    """
    value = as_score(score)
    if value is None:
        return None
    if math.isnan(value):
        return "FAIL"
    for name, lower in BAND_THRESHOLDS:
        if value >= lower:
            return name
    return "FAIL"


def band_summary(band_name: str | None) -> str:
    """One-line reading of a band (unknown names read as FAIL; ``None``: nothing measured)."""
    if band_name is None:
        return NOT_MEASURED
    key = band_name.upper() if isinstance(band_name, str) else "FAIL"
    for name, text in _SUMMARIES.items():
        if name == key:
            return text
    return _SUMMARIES["FAIL"]


__all__ = [
    "BANDS",
    "BAND_THRESHOLDS",
    "NOT_MEASURED",
    "Band",
    "as_score",
    "band",
    "band_summary",
]
