"""Paired differences of two reports of one model on the same inputs (``refract compare``,
issue 22): a − b per axis and for the composite, with the 95 % interval of a paired bootstrap
over the units both scored (:func:`refract.uncertainty.paired_difference`).

A difference is given only where both reports carry per-unit data that reproduces the axis's
score (the rule of the report's own ``uncertainty`` block) and both scored the same units (ids);
the composite only where both have the same axes in the composite and each of them has a
difference. Everywhere else it says why — never a number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from refract.axes import registry
from refract.report.fields import (
    axes_of,
    axis_name,
    axis_score,
    axis_status,
    report_composite,
    scored_axes,
)
from refract.uncertainty import (
    DEFAULT_LEVEL,
    DEFAULT_REPLICATES,
    DEFAULT_SEED,
    Units,
    paired_difference,
)

COMPOSITE = "composite"

_STATUS_WHY = {"skipped": "not scored", "missing": "not scored", "error": "failed",
               "invalid": "invalid"}


@dataclass(frozen=True)
class PairedComparison:
    """``a`` − ``b`` (candidate labels): per axis key and ``composite``, either a difference
    (:func:`~refract.uncertainty.paired_difference`'s entry) or why there is none."""

    a: str
    b: str
    differences: dict[str, dict[str, Any]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    replicates: int = DEFAULT_REPLICATES
    seed: int = DEFAULT_SEED
    level: float = DEFAULT_LEVEL

    def lines(self) -> list[str]:
        """One sentence per axis and the composite; a single one when nothing is available."""
        if not self.differences:
            whys = [why for key, why in self.unavailable.items() if key != COMPOSITE]
            if not whys or len(set(whys)) == 1:
                why = whys[0] if whys else self.unavailable.get(COMPOSITE, "nothing to pair")
            else:
                why = "; ".join(f"{_label(k)}: {w}" for k, w in self.unavailable.items()
                                if k != COMPOSITE)
            return [f"{self.a} vs {self.b}: paired difference not available ({why})"]
        out = []
        for key in [*(k for k in registry.keys() if k in self.unavailable
                      or k in self.differences), COMPOSITE]:
            if key in self.differences:
                out.append(f"{_label(key)}: {self._sentence(self.differences[key])}")
            elif key in self.unavailable:
                out.append(f"{_label(key)}: paired difference not available "
                           f"({self.unavailable[key]})")
        return out

    def _sentence(self, d: Mapping[str, Any]) -> str:
        """``"q4_0 is below q8_0 by 8.2, 95 %: 5.9–10.6"``."""
        point = float(d["point"])
        lo, hi = (float(x) for x in d["ci95"])
        level = f"{100.0 * self.level:g} %"
        units = f" ({d['n_units']} {d['unit']}s)" if "unit" in d else ""
        if point == 0.0:
            return (f"{self.a} and {self.b} are level, {level}: "
                    f"{_interval(lo, hi)}{units}")
        low, high, by = (self.a, self.b, -point) if point < 0 else (self.b, self.a, point)
        if point < 0:
            lo, hi = -hi, -lo
        return f"{low} is below {high} by {_num(by, lo, hi)}, {level}: {_interval(lo, hi)}{units}"


def _label(key: str) -> str:
    return COMPOSITE if key == COMPOSITE else axis_name(key)


def _digits(*values: float) -> int:
    return 1 if max(abs(v) for v in values) >= 1.0 else 2


def _num(value: float, *scale: float) -> str:
    text = f"{value:.{_digits(value, *scale)}f}"
    return text[1:] if text.startswith("-") and not text.strip("-0.") else text  # no "-0.0"


def _interval(lo: float, hi: float) -> str:
    a, b = _num(lo, hi), _num(hi, lo)
    return f"{a} to {b}" if a.startswith("-") else f"{a}–{b}"


def axis_units(report: Mapping[str, Any], key: str) -> tuple[Units | None, str]:
    """The axis's units when they can be paired, else ``None`` and why."""
    status = axis_status(report, key)
    if status in _STATUS_WHY:
        return None, _STATUS_WHY[status]
    axis = registry.get(key)
    entry = axes_of(report).get(key)
    units = axis.units(entry) if axis is not None and entry is not None else None
    if units is None:
        return None, "no per-unit data"
    if units.n < 2:
        return None, "fewer than two units"
    if not units.reproduces(axis_score(report, key)):
        return None, "its units do not reproduce its score"
    return units, ""


def _why(a: str, why_a: str, b: str, why_b: str) -> str:
    if why_a == why_b:
        return f"{why_a} in both reports"
    return "; ".join(f"{why} in {name}" for name, why in ((a, why_a), (b, why_b)) if why)


def bootstrap_settings(reports: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    """(replicates, seed) of the first report whose ``uncertainty`` block records them, else the
    defaults."""
    for rep in reports:
        block = rep.get("uncertainty")
        if not isinstance(block, Mapping):
            continue
        n, seed = block.get("replicates"), block.get("seed")
        if (isinstance(n, int) and not isinstance(n, bool) and n > 0
                and isinstance(seed, int) and not isinstance(seed, bool)):
            return n, seed
    return DEFAULT_REPLICATES, DEFAULT_SEED


def not_comparable(a: str, b: str, why: str) -> PairedComparison:
    """A pair that is not paired at all (e.g. reports that are not comparable)."""
    return PairedComparison(a, b, unavailable={COMPOSITE: why})


def compare_pair(report_a: Mapping[str, Any], report_b: Mapping[str, Any], a: str, b: str, *,
                 replicates: int | None = None, seed: int | None = None) -> PairedComparison:
    """``report_a`` − ``report_b``, named ``a`` and ``b``: every axis scored in either report
    and the composite. The reports must already be known comparable. ``replicates`` and
    ``seed`` default to :func:`bootstrap_settings` of the two."""
    units: dict[str, tuple[Units, Units]] = {}
    unavailable: dict[str, str] = {}
    for key in registry.keys():
        ua, why_a = axis_units(report_a, key)
        ub, why_b = axis_units(report_b, key)
        if why_a == why_b == "not scored":
            continue
        if ua is None or ub is None:
            unavailable[key] = _why(a, why_a, b, why_b)
        elif ua.ids != ub.ids:
            unavailable[key] = f"the reports scored different {ua.unit}s"
        else:
            units[key] = (ua, ub)
    keys = scored_axes(report_a)
    missing = [k for k in keys if k not in units]
    if sorted(keys) != sorted(scored_axes(report_b)):
        unavailable[COMPOSITE] = "the reports have different axes in the composite"
    elif not keys:
        unavailable[COMPOSITE] = "no axis in the composite"
    elif missing:
        unavailable[COMPOSITE] = ("no paired difference for "
                                  + ", ".join(axis_name(k) for k in missing))
    if replicates is None or seed is None:
        replicates, seed = bootstrap_settings([report_a, report_b])
    diffs = paired_difference(
        {k: u[0] for k, u in units.items()}, {k: u[1] for k, u in units.items()},
        composite_keys=[] if COMPOSITE in unavailable else keys,
        replicates=replicates, seed=seed,
    )
    comp = diffs.get(COMPOSITE)
    ca, cb = report_composite(report_a), report_composite(report_b)
    if comp is not None and (ca is None or cb is None or abs(float(comp["point"]) - (ca - cb))
                             > 1e-6 * (max(1.0, abs(ca)) + max(1.0, abs(cb)))):
        del diffs[COMPOSITE]
        unavailable[COMPOSITE] = "its axes' units do not reproduce the composites"
    return PairedComparison(a, b, diffs, unavailable, replicates, seed)


__all__ = [
    "COMPOSITE",
    "PairedComparison",
    "axis_units",
    "bootstrap_settings",
    "compare_pair",
    "not_comparable",
]
