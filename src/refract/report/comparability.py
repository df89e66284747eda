"""Are two reports comparable? (SPEC §5: ``compare`` / ``leaderboard`` refuse otherwise.)

Each report is reduced to a flat *fingerprint*: what was measured (model, reference, which
axes ran, corpus / haystack / prompt-set identity) and how (chunks, ctx, n_predict, seed, chat
template, decode mode, R-NIAH lengths / positions / trials, each axis's method and method
version). Two reports are comparable when every fingerprint item known on both sides is equal.

An item a report does not carry (refract-llm's reports have no hashes, no ``settings``, no
methods) is *unknown*, never a difference: such reports are marked **unverified** and are
compared on what they do carry (model file name, reference, chunks × ctx, n_predict, corpus
size, R-NIAH cell lengths), never refused for lacking hashes.

Model identity: the model file's SHA-256 when both reports have it, else the file name.
``compare`` checks the model; ``leaderboard`` ranks one candidate across models, so it checks
everything but the model (``include_model=False``).

The llama.cpp build (``environment.llama_cpp_flavour`` and ``llama_cpp_commit``: upstream, the
TurboQuant fork, a custom tree) is *not* in the fingerprint: reports of different builds
measured the same inputs the same way, and setting a fork's KV type beside upstream's is what
one often wants to see. But the build can move the numbers (other kernels, another graph), so
it is never silent either: :attr:`Comparability.builds` names each report's build
(:func:`refract.report.fields.llama_build`) and :func:`builds_note` is the line that every
table mixing builds shows ("rows come from 2 llama.cpp builds: upstream 0c1e570, turboquant
69d8e4b").
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from refract.axes import registry
from refract.errors import IncomparableReports as IncompatibleReports
from refract.report.fields import (
    UNKNOWN_BUILD,
    axes_of,
    axis_keys,
    axis_status,
    is_verified,
    llama_build,
    model_name,
)
from refract.report.kit import get_path


def _norm(value: Any) -> Any:
    """Hashable, comparable form (lists → tuples, floats rounded, sets sorted)."""
    if isinstance(value, (list, tuple)):
        return tuple(_norm(v) for v in value)
    if isinstance(value, float):
        return round(value, 6)
    return value


def axes_run(report: Mapping[str, Any]) -> tuple[str, ...]:
    """The axes a report tried to run (requested in ``settings.axes``, else inferred)."""
    keys = axis_keys(report)
    requested = get_path(report, "settings", "axes")
    if isinstance(requested, list) and requested:
        return tuple(k for k in keys if k in requested)
    return tuple(k for k in keys if axis_status(report, k) not in ("skipped", "missing"))


def fingerprint(report: Mapping[str, Any], *, include_model: bool = True) -> dict[str, Any]:
    """Flat fingerprint; ``None`` = unknown (not compared).

    The model and reference, which axes ran, each axis's method and version, and whatever
    each axis that ran says makes its numbers comparable
    (:meth:`refract.axes.base.Axis.fingerprint`: corpus and KLD windows, prompt set and
    decoding, R-NIAH cells …).
    """
    axes = axes_of(report)
    raw_settings = report.get("settings")
    settings: Mapping[str, Any] = raw_settings if isinstance(raw_settings, Mapping) else {}
    ran = axes_run(report)
    fp: dict[str, Any] = {}
    if include_model:
        fp["model.sha256"] = get_path(report.get("provenance"), "model", "sha256")
        fp["model.name"] = model_name(report)
    fp["reference"] = report.get("reference") or None
    fp["axes"] = ran
    for key in ran:
        axis = registry.get(key)
        if axis is not None:
            fp.update(axis.fingerprint(report, axes.get(key, {}), settings))
    for key in ran:
        entry = axes.get(key, {})
        method, version = entry.get("method"), entry.get("method_version")
        fp[f"{key}.method"] = f"{method} v{version}" if method else None
    return {k: _norm(v) for k, v in fp.items()}


def settings_fingerprint(report: Mapping[str, Any]) -> str:
    """8 hex digits identifying everything but the model (shown on leaderboard rows)."""
    fp = fingerprint(report, include_model=False)
    canon = json.dumps(sorted(fp.items()), default=str, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()[:8]


def settings_summary(report: Mapping[str, Any]) -> str:
    """A short human reading of the settings, e.g. ``KLD 32×512 · n_predict 128 · batched``."""
    fp = fingerprint(report, include_model=False)
    parts: list[str] = []
    if fp.get("kld.chunks") and fp.get("kld.ctx"):
        parts.append(f"KLD {fp['kld.chunks']}×{fp['kld.ctx']}")
    if fp.get("n_predict"):
        parts.append(f"n_predict {fp['n_predict']}")
    if fp.get("gtm.decode_mode"):
        parts.append(str(fp["gtm.decode_mode"]))
    if fp.get("chat_template") is not None:
        parts.append("chat template" if fp["chat_template"] else "raw text")
    if fp.get("seed") is not None:
        parts.append(f"seed {fp['seed']}")
    if fp.get("rniah.lengths"):
        parts.append("R-NIAH " + "/".join(str(x) for x in fp["rniah.lengths"]))
    elif fp.get("rniah.up_to"):
        parts.append(f"R-NIAH ≤{fp['rniah.up_to']}")
    return " · ".join(parts) or "—"


def _show(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12] + "…"
    if isinstance(value, tuple):
        return ",".join(_show(v) for v in value) or "none"
    return str(value)


@dataclass(frozen=True)
class Difference:
    """One fingerprint item on which the reports disagree."""

    key: str
    values: tuple[Any, ...]
    """Per report, in input order (``None`` = unknown for that report)."""

    def describe(self, names: Sequence[str] | None = None) -> str:
        shown: list[str] = []
        for i, v in enumerate(self.values):
            if v is None:
                continue
            label = _show(v)
            if names is not None:
                label = f"{names[i]}: {label}"
            shown.append(label)
        return f"{self.key} differs ({'; '.join(shown)})"


def distinct_builds(labels: Iterable[str]) -> tuple[str, ...]:
    """The distinct llama.cpp builds among ``labels``, in order of first appearance."""
    return tuple(dict.fromkeys(labels))


def builds_note(labels: Iterable[str]) -> str | None:
    """``rows come from 2 llama.cpp builds: upstream 0c1e570, turboquant 69d8e4b`` when the
    rows' builds (:func:`refract.report.fields.llama_build`) differ, else ``None``.

    A report that records no flavour counts as a build of its own (``unknown``): nothing
    says it was made with the others' build."""
    builds = distinct_builds(labels)
    if len(builds) < 2:
        return None
    note = f"rows come from {len(builds)} llama.cpp builds: {', '.join(builds)}"
    if any(b.split(" ", 1)[0] == UNKNOWN_BUILD for b in builds):
        note += f" ({UNKNOWN_BUILD}: the report does not record its llama.cpp flavour)"
    return note


@dataclass(frozen=True)
class Comparability:
    names: tuple[str, ...]
    differences: tuple[Difference, ...]
    unverified: tuple[str, ...] = field(default_factory=tuple)
    builds: tuple[str, ...] = field(default_factory=tuple)
    """Per report, in input order: the llama.cpp build that scored it (never a difference:
    see the module docstring)."""

    @property
    def ok(self) -> bool:
        return not self.differences

    @property
    def mixed_builds(self) -> bool:
        """Whether the reports come from more than one llama.cpp build."""
        return len(distinct_builds(self.builds)) > 1

    def builds_note(self) -> str | None:
        """:func:`builds_note` of the reports' builds."""
        return builds_note(self.builds)

    def reasons(self) -> str:
        """All differences on one line."""
        return "; ".join(d.describe(self.names) for d in self.differences)

    def marks(self, index: int) -> list[str]:
        """Keys on which report ``index`` differs from the most common known value."""
        out: list[str] = []
        for d in self.differences:
            mine = d.values[index]
            if mine is None:
                continue
            known = [v for v in d.values if v is not None]
            common = max(known, key=lambda v: (known.count(v), -known.index(v)))
            if mine != common:
                out.append(d.key)
        return out


def _model_differences(fps: Sequence[Mapping[str, Any]]) -> list[Difference]:
    shas = [fp.get("model.sha256") for fp in fps]
    if all(s is not None for s in shas):
        if len(set(shas)) > 1:
            return [Difference("model", tuple(shas))]
        return []
    names = [fp.get("model.name") for fp in fps]
    if len({n for n in names if n is not None}) > 1:
        return [Difference("model", tuple(names))]
    return []


def check_comparable(
    reports: Sequence[Mapping[str, Any]],
    names: Sequence[str] | None = None,
    *,
    include_model: bool = True,
) -> Comparability:
    """Compare fingerprints of ``reports`` (see the module docstring)."""
    labels = tuple(names) if names is not None else tuple(f"#{i + 1}" for i in range(len(reports)))
    fps = [fingerprint(r, include_model=include_model) for r in reports]
    diffs: list[Difference] = _model_differences(fps) if include_model else []
    keys: list[str] = []
    for fp in fps:
        keys += [k for k in fp if k not in keys and not k.startswith("model.")]
    for key in keys:
        values = tuple(fp.get(key) for fp in fps)
        known = {v for v in values if v is not None}
        if len(known) > 1:
            diffs.append(Difference(key, values))
    unverified = tuple(labels[i] for i, r in enumerate(reports) if not is_verified(r))
    return Comparability(names=labels, differences=tuple(diffs), unverified=unverified,
                         builds=tuple(llama_build(r) for r in reports))


def require_comparable(
    reports: Sequence[Mapping[str, Any]],
    names: Sequence[str] | None = None,
    *,
    include_model: bool = True,
    what: str = "reports",
) -> Comparability:
    """:func:`check_comparable`, raising :class:`IncompatibleReports` (one line) if not ok."""
    result = check_comparable(reports, names, include_model=include_model)
    if not result.ok:
        raise IncompatibleReports(
            f"{what} are not comparable: {result.reasons()} (use --allow-incompatible to "
            "show them side by side anyway)"
        )
    return result


__all__ = [
    "Comparability",
    "Difference",
    "IncompatibleReports",
    "axes_run",
    "builds_note",
    "check_comparable",
    "distinct_builds",
    "fingerprint",
    "require_comparable",
    "settings_fingerprint",
    "settings_summary",
]
