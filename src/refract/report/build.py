"""Assemble a report dict in refract-llm's ``refract.report.v0.3.3`` layout (SPEC §5).

Top level, in refract-llm's order: schema, framework_version, environment, repro_command,
timestamp, score_direction, score_range, model, reference, candidate, composite, band,
summary, diagnosis, composite_detail, axes, extras. Our own additions follow under clearly
named keys: ``generator``, ``model_info``, ``timings``, ``notes``; and inside
``composite_detail``: ``axes_in_composite``, ``excluded_axes``.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from refract.composite import (
    AXES,
    FLOOR_MIN,
    FloorCheck,
    as_score,
    band,
    band_summary,
    composite_score,
    diagnose,
)

SCHEMA: Final[str] = "refract.report.v0.3.3"
GENERATOR: Final[str] = "refract"

AXIS_DESCRIPTIONS: Final[dict[str, str]] = {
    "gtm": "Token-level agreement of greedy decodes with the reference.",
    "kld": "Teacher-forced next-token distribution divergence from the reference.",
    "rniah": "Long-context needle retrieval relative to the reference.",
    "plad": "Robustness to small prompt perturbations relative to the reference.",
}




def _axis_entry(key: str, result: Mapping[str, Any] | None) -> dict[str, Any]:
    """Copy of an axis result with score, band, description and skipped filled in."""
    if result is None or result.get("skipped") is True or result.get("score", None) is None:
        entry: dict[str, Any] = dict(result or {})
        entry["score"] = None
        entry["band"] = None
        entry.setdefault("description", AXIS_DESCRIPTIONS.get(key, ""))
        entry["skipped"] = True
        entry.setdefault("reason", "not run" if result is None else "no score produced")
        return entry
    entry = dict(result)
    score = as_score(entry["score"])
    entry["score"] = score
    entry["band"] = band(score)
    entry.setdefault("description", AXIS_DESCRIPTIONS.get(key, ""))
    entry["skipped"] = False
    return entry


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
) -> dict[str, Any]:
    """Assemble a report dict.

    ``axes`` maps ``gtm``/``kld``/``rniah``/``plad`` to the axis result dicts (each with
    ``score`` plus its diagnostics); an absent key, ``None``, ``skipped: true`` or a ``None``
    score gives a ``skipped: true`` entry. NaN scores band FAIL and zero the composite. An
    R-NIAH result with ``confidence: "low"`` is reported but left out of the composite, with
    a note. ``floor`` is the :func:`refract.composite.check_floor` verdict when a noise floor
    was measured.
    """
    if framework_version is None:
        framework_version = _package_version()

    unknown = sorted(set(axes) - set(AXES))
    axis_entries = {key: _axis_entry(key, axes.get(key)) for key in AXES}
    for key in unknown:  # extension axes travel along but stay out of the composite
        axis_entries[key] = _axis_entry(key, axes[key])

    cd_notes: list[str] = []
    in_composite: dict[str, float | None] = {}
    excluded: list[str] = []
    for key in AXES:
        entry = axis_entries[key]
        if entry["skipped"]:
            cd_notes.append(f"{key}: skipped ({entry.get('reason', 'not run')}).")
            in_composite[key] = None
            continue
        if key == "rniah" and entry.get("confidence") == "low":
            base = entry.get("base_acc_avg")
            base_txt = f" (base_acc_avg {float(base):.2f} < 0.2)" if base is not None else ""
            cd_notes.append(
                "rniah: low confidence — the reference itself rarely finds the needle"
                f"{base_txt}; reported but excluded from the composite."
            )
            entry["in_composite"] = False
            excluded.append(key)
            in_composite[key] = None
            continue
        score = entry["score"]
        if score is not None and math.isnan(score):
            cd_notes.append(f"{key}: score is not a number; the composite is set to 0.")
        entry["in_composite"] = True
        in_composite[key] = score
    for key in unknown:
        axis_entries[key]["in_composite"] = False
        cd_notes.append(f"{key}: not a REFRACT axis; reported but not in the composite.")

    comp = composite_score(in_composite)
    comp_band = band(comp)
    detail: dict[str, Any] = {f"{key}_score": in_composite[key] for key in AXES}
    if floor is not None:
        detail.update(floor.detail())
        if not floor.ok:
            cd_notes.append(floor.message)
    else:
        detail.update({"floor_score": None, "floor_ok": None, "floor_min": FLOOR_MIN})
    detail["notes"] = cd_notes
    detail["axes_in_composite"] = [k for k in AXES if in_composite[k] is not None]
    detail["excluded_axes"] = excluded

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
        "diagnosis": diagnose(in_composite),
        "composite_detail": detail,
        "axes": axis_entries,
        "extras": dict(extras or {}),
        "generator": GENERATOR,
        "model_info": dict(model_info or {}),
        "timings": dict(timings or {}),
        "notes": list(notes),
    }


__all__ = ["AXIS_DESCRIPTIONS", "GENERATOR", "SCHEMA", "build_report"]
