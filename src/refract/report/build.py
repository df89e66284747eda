"""Assemble a report dict in refract-llm's ``refract.report.v0.3.3`` layout (SPEC §5).

Top level, in refract-llm's order: schema, framework_version, environment, repro_command,
timestamp, score_direction, score_range, model, reference, candidate, composite, band,
summary, diagnosis, composite_detail, axes, extras. Our own additions follow under clearly
named keys: ``generator``, ``status`` (ok / partial), ``measured``, ``self_check``,
``provenance``, ``settings``, ``model_info``, ``timings``, ``notes``; inside ``composite_detail``:
``axes_in_composite``, ``excluded_axes``, ``error_axes``, ``invalid_axes``; per axis:
``status``, ``method``, ``method_version``, ``in_composite``.

A report in which no axis scored (every axis skipped, failed or excluded) has ``composite``
null, ``band`` null, ``measured`` false, an empty ``diagnosis`` and the summary
:data:`refract.composite.NOT_MEASURED` (SPEC §4: no verdict on nothing; refract-llm writes a
composite of 0 there).
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from refract.axes import registry
from refract.bands import as_score, band, band_summary
from refract.composite import FLOOR_MIN, FloorCheck, composite_score, diagnose
from refract.uncertainty import AxisUnits, analyze, band_phrase

SCHEMA: Final[str] = "refract.report.v0.3.3"
GENERATOR: Final[str] = "refract"

def axis_methods() -> dict[str, tuple[str, str]]:
    """Per axis: (method, method version) — what its score measures and how. ``compare`` and
    ``leaderboard`` refuse to set side by side scores whose methods or versions differ; an
    axis bumps its version whenever a change can move its score for the same inputs."""
    return {a.key: (a.method, a.method_version) for a in registry}


# Axis bands beyond the four score bands (SPEC §4 / refract-llm v0.3.3).
BAND_SKIPPED: Final[str] = "skipped"
BAND_UNSCORED: Final[str] = "unscored"
"""An axis reported but excluded from the composite (low-confidence R-NIAH)."""
BAND_ERROR: Final[str] = "error"
"""An axis that failed at run time (``error`` set); the other axes are kept."""


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _axis_entry(key: str, result: Mapping[str, Any] | None) -> dict[str, Any]:
    """Copy of an axis result with score, band, description, skipped, status and method.

    ``status``: ``ok``, ``skipped``, ``error`` (``error`` set: score null, band ``error``),
    ``invalid`` (``invalid: true``: non-finite candidate logits, score 0, band FAIL) or
    ``unscored`` (low-confidence R-NIAH, set later by :func:`build_report`).
    """
    # keys with a leading underscore are an axis's own working data (never reported)
    entry: dict[str, Any] = {k: v for k, v in (result or {}).items()
                             if not str(k).startswith("_")}
    axis = registry.get(key)
    entry.setdefault("method", axis.method if axis is not None else None)
    entry.setdefault("method_version", axis.method_version if axis is not None else None)
    entry.setdefault("description", axis.description if axis is not None else "")
    error = entry.get("error")
    if error:
        entry["error"] = _one_line(error)
        entry["score"] = None
        entry["band"] = BAND_ERROR
        entry["skipped"] = False
        entry["status"] = "error"
        entry["excluded_from_composite"] = True
        entry["in_composite"] = False
        return entry
    if entry.get("invalid") is True:
        entry["invalid_reason"] = _one_line(
            entry.get("invalid_reason") or "candidate produced non-finite logits"
        )
        entry["score"] = 0.0
        entry["band"] = band(0.0)
        entry["skipped"] = False
        entry["status"] = "invalid"
        return entry
    if result is None or entry.get("skipped") is True or entry.get("score", None) is None:
        entry["score"] = None
        entry["band"] = BAND_SKIPPED
        entry["skipped"] = True
        entry["status"] = "skipped"
        entry.setdefault("reason", "not run" if result is None else "no score produced")
        return entry
    score = as_score(entry["score"])
    entry["score"] = score
    entry["band"] = band(score)
    entry["skipped"] = False
    entry["status"] = "ok"
    if axis is not None:
        axis.finish(entry)
    return entry


def report_uncertainty(entries: Mapping[str, Mapping[str, Any]],
                       in_composite: Mapping[str, float | None], *,
                       self_check: bool = False) -> dict[str, Any] | None:
    """The report's ``uncertainty`` block (:func:`refract.uncertainty.analyze`) from each
    axis's per-unit data in its entry; ``None`` when no axis scored. A composite axis with
    fewer than two units (or none in its entry: an invalid axis, a refract-llm report), or
    whose units do not reproduce its score, is held at its score and named in
    ``held_fixed``; ``unusable_units`` says why for the last two. Units that all agree are
    exact only in a ``self_check`` (the reference against itself: one computation)."""
    parts: list[AxisUnits] = []
    fixed: dict[str, float] = {}
    unusable: dict[str, str] = {}
    for axis in registry:
        entry = entries.get(axis.key)
        if entry is None or entry.get("status") not in ("ok", "unscored", "invalid"):
            continue
        inc = in_composite.get(axis.key) is not None
        units = axis.units(entry) if entry.get("status") != "invalid" else None
        why = None
        if units is None or units.n < 2:
            why = "fewer than two units" if units is not None else "no per-unit data"
        elif not units.reproduces(as_score(entry.get("score"))):
            why = (f"its {units.n} units give {units.score():.6g}, not its score "
                   f"{entry.get('score')}")
        if why is not None:
            if entry.get("status") != "invalid" and units is not None:
                unusable[axis.key] = why
            if inc:
                fixed[axis.key] = float(in_composite[axis.key] or 0.0)
            continue
        assert units is not None
        parts.append(AxisUnits(axis.key, units, inc))
    if not parts and not fixed:
        return None
    out = analyze(parts, fixed=fixed, exact_ok=self_check)
    if unusable:
        out["unusable_units"] = unusable
    return out


def undecided_sentence(comp_band: str, unc: Mapping[str, Any]) -> str | None:
    """The diagnosis's caveat when the composite's band is not decided at the block's level
    (``None`` when it is)."""
    comp = unc.get("composite")
    if not isinstance(comp, Mapping) or comp.get("decided") is not None:
        return None
    probs = comp.get("band_probabilities") or {}
    level = float(unc.get("level") or 0.95)
    lo, hi = comp.get("ci95") or (None, None)
    within = (f" (95 % interval {lo:.1f}–{hi:.1f})"
              if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) else "")
    return (f"Band not decided at {100 * level:.0f} %: {band_phrase(comp_band, probs)}{within}; "
            "a larger budget (more prompts and chunks) would settle it.")


def _package_version() -> str:
    from refract import __version__

    return __version__


def _repro(command: str | Sequence[str] | None) -> str:
    if command is None:
        return ""
    if isinstance(command, str):
        return command
    return shlex.join(str(c) for c in command)


def build_report(
    *,
    model: str,
    reference: str,
    candidate: str,
    axes: Mapping[str, Mapping[str, Any] | None],
    model_info: Mapping[str, Any] | None = None,
    environment: Mapping[str, Any] | None = None,
    timings: Mapping[str, Any] | None = None,
    repro_command: str | Sequence[str] | None = None,
    notes: Sequence[str] = (),
    floor: FloorCheck | None = None,
    framework_version: str | None = None,
    timestamp: str | None = None,
    extras: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
    settings: Mapping[str, Any] | None = None,
    self_check: bool | None = None,
) -> dict[str, Any]:
    """Assemble a report dict.

    ``axes`` maps ``gtm``/``kld``/``rniah``/``plad`` to the axis result dicts (each with
    ``score`` plus its diagnostics); an absent key, ``None``, ``skipped: true`` or a ``None``
    score gives a ``skipped: true`` entry. NaN scores band FAIL and zero the composite; no
    scored axis at all gives a null composite and band (nothing was measured). An
    R-NIAH result with ``confidence: "low"`` is reported but left out of the composite, with
    a note. ``floor`` is the :func:`refract.composite.check_floor` verdict when a
    noise floor was measured.
    """
    if framework_version is None:
        framework_version = _package_version()

    keys = registry.keys()
    unknown = sorted(set(axes) - set(keys))
    axis_entries = {key: _axis_entry(key, axes.get(key)) for key in keys}
    for key in unknown:  # axes no registered axis claims travel along, out of the composite
        axis_entries[key] = _axis_entry(key, axes[key])

    cd_notes: list[str] = []
    in_composite: dict[str, float | None] = {}
    excluded: list[str] = []
    invalid: dict[str, str | None] = {}
    errors: dict[str, str] = {}
    for axis in registry:
        key = axis.key
        entry = axis_entries[key]
        if entry["status"] == "error":
            errors[key] = entry["error"]
            cd_notes.append(f"{key}: error — {entry['error']}; excluded from the composite.")
            excluded.append(key)
            in_composite[key] = None
            continue
        if entry["skipped"]:
            cd_notes.append(f"{key}: skipped ({entry.get('reason', 'not run')}).")
            entry["in_composite"] = False
            in_composite[key] = None
            continue
        if entry["status"] == "invalid":
            invalid[key] = entry["invalid_reason"]
            cd_notes.append(
                f"{key}: invalid — {entry['invalid_reason']}; scored 0, so the composite is 0."
            )
        why = axis.exclusion(entry) if key not in invalid else None
        if why is not None:
            cd_notes.append(f"{key}: {why}")
            entry["in_composite"] = False
            entry["excluded_from_composite"] = True
            entry["band"] = BAND_UNSCORED
            entry["status"] = "unscored"
            excluded.append(key)
            in_composite[key] = None
            continue
        score = entry["score"]
        if score is not None and math.isnan(score):
            cd_notes.append(f"{key}: score is not a number; the composite is set to 0.")
        entry["in_composite"] = True
        entry["excluded_from_composite"] = False
        in_composite[key] = score
    for axis in registry:
        axis.annotate(axis_entries[axis.key])
    comp = composite_score(in_composite)
    comp_band = band(comp)  # None when no axis scored: no composite, no band (SPEC §4)
    is_self = bool(self_check) if self_check is not None else candidate == reference
    unc = report_uncertainty(axis_entries, in_composite, self_check=is_self)
    diagnosis = diagnose(in_composite, invalid=invalid, entries=axis_entries)
    if unc is not None and comp_band is not None:
        sentence = undecided_sentence(comp_band, unc)
        if sentence:
            diagnosis.append(sentence)
    detail: dict[str, Any] = {f"{key}_score": in_composite[key] for key in keys}
    if floor is not None:
        detail.update(floor.detail())
        if not floor.ok:
            cd_notes.append(floor.message)
    else:
        detail.update({"floor_score": None, "floor_ok": None, "floor_min": FLOOR_MIN})
    detail["notes"] = cd_notes
    detail["axes_in_composite"] = [k for k in keys if in_composite[k] is not None]
    detail["excluded_axes"] = excluded
    detail["error_axes"] = sorted(errors, key=keys.index)
    detail["invalid_axes"] = sorted(invalid, key=keys.index)

    env: dict[str, Any] = {
        "backend": "refract (llama.cpp in-process)",
        "model": model,
        "llama_cpp_commit": None,
    }
    env.update(environment or {})

    return {
        "schema": SCHEMA,
        "framework_version": framework_version,
        "environment": env,
        "repro_command": _repro(repro_command),
        "timestamp": timestamp or datetime.now().isoformat(timespec="seconds"),
        "score_direction": "higher_is_better",
        "score_range": [0, 100],
        "model": model,
        "reference": reference,
        "candidate": candidate,
        "composite": comp,
        "band": comp_band,
        "summary": band_summary(comp_band),
        "diagnosis": diagnosis,
        "composite_detail": detail,
        "axes": axis_entries,
        "extras": dict(extras or {}),
        "generator": GENERATOR,
        "status": "partial" if errors else "ok",
        "measured": comp is not None,
        "self_check": is_self,
        "uncertainty": unc,
        "provenance": dict(provenance) if provenance is not None else None,
        "settings": dict(settings) if settings is not None else None,
        "model_info": dict(model_info or {}),
        "timings": dict(timings or {}),
        "notes": list(notes),
    }


__all__ = [
    "axis_methods",
    "BAND_ERROR",
    "BAND_SKIPPED",
    "BAND_UNSCORED",
    "GENERATOR",
    "SCHEMA",
    "build_report",
    "report_uncertainty",
    "undecided_sentence",
]
