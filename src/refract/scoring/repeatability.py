"""Run-to-run noise of a score: statistics over N reports of the same run, and a verdict."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any, Final

from refract.report.fields import axis_keys, axis_name

HEALTHY_MAX: Final[float] = 1.0
NOISY_MAX: Final[float] = 3.0

__all__ = ["HEALTHY_MAX", "NOISY_MAX", "repeatability_table", "summarize_runs", "verdict"]


def verdict(stdev: float) -> str:
    """HEALTHY (stdev ≤ 1), NOISY (≤ 3), else UNSTABLE (NaN included)."""
    if math.isnan(stdev):
        return "UNSTABLE"
    if stdev <= HEALTHY_MAX:
        return "HEALTHY"
    if stdev <= NOISY_MAX:
        return "NOISY"
    return "UNSTABLE"


def _stats(values: Sequence[float]) -> dict[str, Any]:
    lo, hi = min(values), max(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {
        "values": list(values),
        "min": lo,
        "median": statistics.median(values),
        "max": hi,
        "stdev": sd,
        "range": hi - lo,
        "verdict": verdict(sd),
    }


def _axis_score(report: Mapping[str, Any], key: str) -> float | None:
    axis = (report.get("axes") or {}).get(key) or {}
    if axis.get("skipped") or axis.get("score") is None:
        return None
    return float(axis["score"])


def summarize_runs(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per axis and for the composite: min / median / max / stdev / range over the runs.

    The overall verdict is that of the largest standard deviation among the composite and
    the axes (an axis can be noisy while the harmonic mean hides it).
    """
    if len(reports) < 2:
        raise ValueError(f"repeatability needs at least 2 runs, got {len(reports)}")
    rows: dict[str, dict[str, Any]] = {}
    for key in axis_keys():
        values = [_axis_score(r, key) for r in reports]
        present = [v for v in values if v is not None]
        if len(present) == len(values):
            rows[key] = _stats(present)
    composites = [r.get("composite") for r in reports]
    unmeasured = [i + 1 for i, c in enumerate(composites) if c is None]
    if unmeasured:  # a run that measured nothing has no composite: never count it as 0
        raise ValueError(
            f"run(s) {', '.join(map(str, unmeasured))} measured nothing (no axis scored): "
            "there is no composite to compare across runs"
        )
    rows["composite"] = _stats([float(c) for c in composites if c is not None])
    worst_key = max(rows, key=lambda k: (rows[k]["stdev"], k == "composite"))
    worst = rows[worst_key]["stdev"]
    return {
        "n_runs": len(reports),
        "stats": rows,
        "worst": worst_key,
        "worst_stdev": worst,
        "verdict": verdict(worst),
        "thresholds": {"healthy_max_stdev": HEALTHY_MAX, "noisy_max_stdev": NOISY_MAX},
        "timings": [dict(r.get("timings") or {}) for r in reports],
    }


def repeatability_table(summary: Mapping[str, Any]) -> Any:
    """A rich table of :func:`summarize_runs` output."""
    from rich import box
    from rich.table import Table


    table = Table(
        title=f"repeatability over {summary['n_runs']} runs: {summary['verdict']}",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("axis")
    for name in ("min", "median", "max", "stdev", "range"):
        table.add_column(name, justify="right")
    table.add_column("verdict")
    for key, row in summary["stats"].items():
        label = axis_name(key)
        table.add_row(
            label,
            *(f"{row[n]:.3f}" for n in ("min", "median", "max", "stdev", "range")),
            row["verdict"],
        )
    return table
