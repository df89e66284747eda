"""Read-side helpers shared by the renderers: tolerant field access for our reports and
refract-llm's (v0.2.x and v0.3.x), number formatting, and short labels."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from refract.axes import registry
from refract.axes.trajectory import noise_floor_text as trajectory_floor_text
from refract.bands import band
from refract.composite import composite_score
from refract.report.kit import (
    as_float,
    fmt,
    fmt_kld,
    get_path,
    needle_keyword,
)


def axes_of(report: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    if report is None:
        return {}
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


def axis_keys(report: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """The registered axes in report order, then any other axis ``report`` carries."""
    keys = registry.keys()
    extra = tuple(k for k in axes_of(report) if k not in keys) if report is not None else ()
    return keys + extra


def axis_name(key: str) -> str:
    """``"A Trajectory"`` (letter and title) for a registered axis, else the key."""
    axis = registry.get(key)
    return f"{axis.letter} {axis.title}" if axis is not None else key


def axis_scores(report: Mapping[str, Any]) -> dict[str, float | None]:
    return {key: axis_score(report, key) for key in axis_keys(report)}


def scored_axes(report: Mapping[str, Any]) -> list[str]:
    """The axes whose score is in the composite: ``composite_detail.axes_in_composite`` when
    the report records it (ours), else inferred from the axis statuses (``ok`` and
    ``invalid`` axes; refract-llm's reports and older ones)."""
    detail = report.get("composite_detail")
    listed = detail.get("axes_in_composite") if isinstance(detail, Mapping) else None
    if isinstance(listed, list):
        return [str(k) for k in listed]
    return [k for k in axis_keys(report) if axis_status(report, k) in ("ok", "invalid")]


def is_measured(report: Mapping[str, Any]) -> bool:
    """Whether any axis scored. A report in which none did has no composite and no band, and
    says nothing about its KV config (SPEC §4), whatever composite it stores (refract-llm
    writes 0 there)."""
    flag = report.get("measured")
    if isinstance(flag, bool):
        return flag
    return bool(scored_axes(report))


def report_composite(report: Mapping[str, Any]) -> float | None:
    """The stored composite, or one recomputed from the axis scores when it is missing;
    ``None`` when nothing was measured (never a 0 for it)."""
    if not is_measured(report):
        return None
    stored = as_float(report.get("composite"))
    if stored is not None:
        return stored
    detail = report.get("composite_detail")
    keys = axis_keys(report)
    if isinstance(detail, Mapping) and any(f"{k}_score" in detail for k in keys):
        return composite_score({k: as_float(detail.get(f"{k}_score")) for k in keys})
    return composite_score(axis_scores(report))


def report_band(report: Mapping[str, Any]) -> str | None:
    """The stored band, or the band of :func:`report_composite`; ``None`` when nothing was
    measured (never FAIL for it)."""
    if not is_measured(report):
        return None
    stored = report.get("band")
    if isinstance(stored, str) and stored:
        return stored
    return band(report_composite(report))


NOT_MEASURED_LABEL = "not measured"
"""How tables show the band of a report in which no axis scored."""


def band_text(report: Mapping[str, Any]) -> str:
    """The band for a table cell: the band, or ``not measured``."""
    return report_band(report) or NOT_MEASURED_LABEL


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


def display_model(report: Mapping[str, Any]) -> str:
    """The model as a table names it: the matrix's ``[[models]] name`` for a matrix cell's
    report (``extras.matrix.model_name``), else the model file's name (:func:`model_name`)."""
    extras = report.get("extras")
    matrix = extras.get("matrix") if isinstance(extras, Mapping) else None
    name = matrix.get("model_name") if isinstance(matrix, Mapping) else None
    return name if isinstance(name, str) and name.strip() else model_name(report)


def kv_per_token(report: Mapping[str, Any], label: str) -> int | None:
    """KV bytes per token that llama.cpp allocated for the KV config ``label``
    (``environment.kv_bytes[label].per_token``); ``None`` where the report does not record a
    positive whole number of bytes (older reports, refract-llm's, a probe that failed)."""
    value = get_path(report.get("environment"), "kv_bytes", label, "per_token")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


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


UNKNOWN_BUILD = "unknown"
"""The flavour shown for a report that does not record one (refract-llm's, older ones)."""

_HEX_COMMIT = re.compile(r"[0-9a-fA-F]{7,40}")


def short_commit(value: Any) -> str | None:
    """A git commit as its first 7 hex digits; other names (``b8871``) as they are, cut to
    12 characters; ``None`` when not recorded (missing, empty or ``unknown``)."""
    if not isinstance(value, str):
        return None
    text = " ".join(value.split())
    if not text or text.lower() in ("unknown", "none", "null"):
        return None
    if _HEX_COMMIT.fullmatch(text):
        return text[:7].lower()
    return text[:12]


def llama_build(report: Mapping[str, Any]) -> str:
    """Which llama.cpp build scored a report: its flavour and short commit, e.g. ``upstream
    0c1e570`` or ``turboquant 69d8e4b`` (``environment.llama_cpp_flavour`` / ``_commit``).

    A report that records no flavour (refract-llm's, ours before the flavour was recorded)
    reads ``unknown``, followed by its commit where it records one (``unknown 817e913``)."""
    env = report.get("environment")
    env = env if isinstance(env, Mapping) else {}
    raw = env.get("llama_cpp_flavour")
    flavour = " ".join(raw.split())[:40] if isinstance(raw, str) else ""
    flavour = flavour or UNKNOWN_BUILD
    commit = short_commit(env.get("llama_cpp_commit"))
    return f"{flavour} {commit}" if commit else flavour


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


# ------------------------------------------------------------------------- uncertainty


def uncertainty_of(report: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The report's ``uncertainty`` block (:mod:`refract.uncertainty`), or ``None`` for a
    report without one (refract-llm's, older ones): views then show no intervals at all."""
    unc = report.get("uncertainty")
    return unc if isinstance(unc, Mapping) else None


def composite_estimate(report: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The composite's estimate (``point``, ``ci95``, ``band_probabilities``, ``decided``);
    ``None`` also when every axis in the composite is held at its score (``held_fixed``): its
    "interval" is then the point, which says nothing about how sure the score is."""
    unc = uncertainty_of(report)
    comp = get_path(unc, "composite")
    if not isinstance(comp, Mapping):
        return None
    held = {str(k) for k in get_path(unc, "held_fixed") or []}
    return comp if not set(scored_axes(report)) <= held else None


def axis_estimate(report: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    """One axis's estimate; ``None`` where the block has none (held fixed, not scored)."""
    est = get_path(uncertainty_of(report), "axes", key)
    return est if isinstance(est, Mapping) else None


def interval_of(est: Mapping[str, Any] | None) -> tuple[float, float] | None:
    """An estimate's 95 % interval (lo, hi), when both ends are finite numbers."""
    raw = est.get("ci95") if est is not None else None
    if not isinstance(raw, (list, tuple)) or len(raw) != 2:
        return None
    lo, hi = as_float(raw[0]), as_float(raw[1])
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    return lo, hi


def fmt_interval(est: Mapping[str, Any] | None, missing: str = "—") -> str:
    """``"70.1–82.3"``: an estimate's interval to one decimal, or ``missing``."""
    ci = interval_of(est)
    return f"{ci[0]:.1f}–{ci[1]:.1f}" if ci is not None else missing


def confidence_label(report: Mapping[str, Any]) -> str:
    """The block's level as text, ``"95 %"``."""
    level = as_float(get_path(uncertainty_of(report), "level"))
    return f"{100.0 * (level if level is not None else 0.95):g} %"


def band_undecided(report: Mapping[str, Any]) -> bool:
    """Whether the composite's band is not decided at the block's level (no band holds that
    share of the replicates); ``False`` for a report without an interval."""
    comp = composite_estimate(report)
    return comp is not None and interval_of(comp) is not None and comp.get("decided") is None


def band_probabilities_of(est: Mapping[str, Any] | None) -> dict[str, float] | None:
    """An estimate's band probabilities, ``None`` when it has none."""
    raw = est.get("band_probabilities") if est is not None else None
    if not isinstance(raw, Mapping):
        return None
    probs = {str(k): as_float(v) for k, v in raw.items()}
    return {k: v for k, v in probs.items() if v is not None} or None


def methods_note(report: Mapping[str, Any]) -> str | None:
    """How the intervals were made, e.g. ``"95 % intervals: paired-bootstrap-t v1, 2000
    replicates, seed 42"``, plus the composite axes held at their score; ``None`` without a
    block."""
    unc = uncertainty_of(report)
    if unc is None:
        return None
    version = unc.get("method_version")
    text = (f"{confidence_label(report)} intervals: {unc.get('method') or '?'}"
            f"{' v' + str(version) if version else ''}, {unc.get('replicates')} replicates, "
            f"seed {unc.get('seed')}")
    held = [str(k) for k in unc.get("held_fixed") or []]
    if held:
        why = unc.get("unusable_units")
        reasons = why if isinstance(why, Mapping) else {}
        text += "; held at their score in the composite: " + ", ".join(
            axis_name(k) + (f" ({reasons[k]})" if k in reasons else "") for k in held)
    return text


# ----------------------------------------------------------------------- axis statuses

AXIS_STATUSES: tuple[str, ...] = ("ok", "skipped", "error", "invalid", "unscored", "missing")


def axis_status(report: Mapping[str, Any], key: str) -> str:
    """``ok``, ``skipped``, ``error``, ``invalid``, ``unscored`` (reported, excluded from the
    composite: low-confidence R-NIAH) or ``missing`` — read from ``status`` when present,
    inferred for older reports and refract-llm's."""
    axis = axes_of(report).get(key)
    if axis is None:
        return "missing" if axis_score(report, key) is None else "ok"
    status = axis.get("status")
    if isinstance(status, str) and status in AXIS_STATUSES:
        return status
    if axis.get("error"):
        return "error"
    if axis.get("invalid") is True:
        return "invalid"
    if axis.get("skipped") is True or axis_score(report, key) is None:
        return "skipped"
    known = registry.get(key)
    if (
        axis.get("excluded_from_composite") is True
        or axis.get("in_composite") is False
        or (known is not None and known.exclusion(axis) is not None)
    ):
        return "unscored"
    return "ok"


def axis_cell(report: Mapping[str, Any], key: str, digits: int = 2) -> str:
    """A table cell for one axis: the score, or what stands in its place."""
    status = axis_status(report, key)
    if status == "error":
        return "error"
    if status == "invalid":
        return "invalid"
    if status in ("skipped", "missing"):
        return "—"
    text = fmt(axis_score(report, key), digits)
    return f"({text})" if status == "unscored" else text


def axis_problems(report: Mapping[str, Any]) -> list[str]:
    """One short phrase per errored / invalid axis, e.g. ``"B KLD@D error: out of memory"``."""
    out: list[str] = []
    axes = axes_of(report)
    for key in axis_keys(report):
        status = axis_status(report, key)
        axis = axes.get(key, {})
        name = axis_name(key)
        if status == "error":
            out.append(f"{name} error: {axis.get('error')}")
        elif status == "invalid":
            out.append(f"{name} invalid: {axis.get('invalid_reason') or 'non-finite logits'}")
    return out


def report_status(report: Mapping[str, Any]) -> str:
    """``ok`` or ``partial`` (an axis failed at run time)."""
    status = report.get("status")
    if isinstance(status, str) and status:
        return status
    return ("partial" if any(axis_status(report, k) == "error" for k in axis_keys(report))
            else "ok")


def is_self_check(report: Mapping[str, Any]) -> bool:
    """A ref-vs-ref run (candidate == reference): a negative control, not a score."""
    flag = report.get("self_check")
    if isinstance(flag, bool):
        return flag
    ref, cand = report.get("reference"), report.get("candidate")
    return isinstance(ref, str) and bool(ref) and ref == cand


def is_verified(report: Mapping[str, Any]) -> bool:
    """Whether the report carries input hashes (ours do; refract-llm's do not)."""
    prov = report.get("provenance")
    if not isinstance(prov, Mapping):
        return False
    model = prov.get("model")
    return isinstance(model, Mapping) and isinstance(model.get("sha256"), str)


def noise_floor(report: Mapping[str, Any]) -> dict[str, Any] | None:
    """``axes.gtm.noise_floor`` when measured."""
    floor = axes_of(report).get("gtm", {}).get("noise_floor")
    return dict(floor) if isinstance(floor, Mapping) else None


def noise_floor_text(report: Mapping[str, Any]) -> str:
    """``"58.0 (within)"`` or ``"—"`` (:func:`refract.axes.trajectory.noise_floor_text`)."""
    return trajectory_floor_text(axes_of(report).get("gtm", {}))


__all__ = [
    "AXIS_STATUSES",
    "NOT_MEASURED_LABEL",
    "UNKNOWN_BUILD",
    "as_float",
    "axis_cell",
    "axis_estimate",
    "axis_problems",
    "axis_status",
    "is_self_check",
    "is_measured",
    "is_verified",
    "kv_per_token",
    "llama_build",
    "needle_keyword",
    "noise_floor",
    "noise_floor_text",
    "report_status",
    "axes_of",
    "axis_score",
    "axis_scores",
    "band_probabilities_of",
    "band_text",
    "band_undecided",
    "composite_estimate",
    "confidence_label",
    "diagnosis_of",
    "fmt",
    "fmt_interval",
    "fmt_kld",
    "framework_label",
    "interval_of",
    "mean_kld",
    "methods_note",
    "model_name",
    "report_band",
    "report_composite",
    "report_name",
    "scored_axes",
    "short_note",
    "short_commit",
    "short_notes",
    "uncertainty_of",
]
