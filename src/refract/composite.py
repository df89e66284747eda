"""Composite score, diagnosis and the noise-floor check (SPEC §4); the bands are in
:mod:`refract.bands`.

Everything here is pure arithmetic on axis scores (0–100, higher = closer to the reference):

* :func:`composite_score` — unweighted harmonic mean of the axes that ran; any axis ≤ 0 (or
  NaN) → 0; capped at 100; no axis scored → ``None`` (nothing was measured: refract-llm
  writes 0 there, which reads as a FAIL of the KV config; we do not).
* :func:`diagnose` — the diagnosis sentences, branching as SPEC §4 describes over the axes of
  :data:`refract.axes.registry` (which are short-context, what each says when low), and
  speaking only of axes that ran.
* :func:`check_floor` — the ``--measure-floor`` verdict (ref-vs-ref composite ≥ 99.5 and every
  ref-vs-ref trajectory identical).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from refract.axes import registry
from refract.bands import as_score

LOW_BELOW: Final[float] = 80.0
"""An axis below this is *low* for the diagnosis."""
FAIL_BELOW: Final[float] = 60.0
"""An axis below this is *failing* for the diagnosis."""
FLOOR_MIN: Final[float] = 99.5
"""Minimum ref-vs-ref composite for a trustworthy noise floor."""

# Diagnosis sentences. Each begins with a short lead clause (up to the first colon) that
# tables such as the leaderboard may use as a compact note.
DIAG_CATASTROPHIC: Final[str] = (
    "Catastrophic: every measured axis fails, so this KV config breaks the model; revert to a "
    "higher-bit config."
)
DIAG_INTACT: Final[str] = (
    "All axes intact: the candidate stays within reach of the reference on everything measured."
)
DIAG_OTHERS_INTACT: Final[str] = (
    "Other axes intact: every validly measured axis stays within reach of the reference."
)
DIAG_DECODE_DRIFT: Final[str] = (
    "Decode drift: on short prompts the candidate picks different tokens or assigns different "
    "next-token probabilities than the reference."
)


def _score_items(scores: Mapping[str, Any] | Iterable[Any]) -> list[tuple[str, float]]:
    """Axis name/score pairs that ran (``None`` = did not run / excluded)."""
    if isinstance(scores, Mapping):
        pairs = [(str(k), as_score(v)) for k, v in scores.items()]
    else:
        pairs = [(str(i), as_score(v)) for i, v in enumerate(scores)]
    return [(k, v) for k, v in pairs if v is not None]


def composite_score(scores: Mapping[str, Any] | Iterable[Any]) -> float | None:
    """Unweighted harmonic mean of the axes that ran.

    ``scores`` is a mapping axis → score or a plain sequence of scores; ``None`` entries are
    axes that did not run (or were excluded) and are ignored. Any axis ≤ 0 or NaN gives 0
    (an axis that cannot vouch for the candidate sinks it); the result is capped at 100.
    No axis at all gives ``None``: nothing was measured, which is not a score of 0.
    """
    values = [v for _, v in _score_items(scores)]
    if not values:
        return None
    if any(math.isnan(v) or v <= 0.0 for v in values):
        return 0.0
    hm = len(values) / math.fsum(1.0 / v for v in values)
    return min(100.0, hm)


def _is_below(value: float, threshold: float) -> bool:
    return math.isnan(value) or value < threshold


def axis_label(key: str) -> str:
    """``"Axis B (KLD@D)"`` for ``"kld"``; unregistered keys are quoted as they are."""
    axis = registry.get(key)
    return axis.label if axis is not None else f"Axis {key!r}"


def invalid_sentence(key: str, reason: str | None) -> str:
    """The diagnosis sentence of an axis whose candidate produced non-finite logits."""
    why = " ".join(str(reason).split()) if reason else "candidate produced non-finite logits"
    return f"{axis_label(key)} invalid: {why.rstrip('.')}. It scores 0, so the composite is 0."


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def distribution_broken(holding: list[str]) -> str:
    """:data:`DIAG_DISTRIBUTION_BROKEN` naming only the other axes that ran (``holding``:
    their long ``holds`` phrases)."""
    tail = (f", but {_and(holding)} {'is' if len(holding) == 1 else 'are'} intact"
            if holding else "")
    return ("Per-token distribution broken: short-context decoding diverges badly from the "
            f"reference{tail}.")


def mild_drift(holding: list[str]) -> str:
    """:data:`DIAG_MILD_DRIFT` naming only the other axes that ran."""
    tail = (f" while {_and(holding)} {'holds' if len(holding) == 1 else 'hold'}"
            if holding else "")
    return ("Mild short-context drift: some greedy continuations or next-token distributions "
            f"differ from the reference{tail}; audit on your own workload.")


DIAG_DISTRIBUTION_BROKEN: Final[str] = distribution_broken(
    ["long-context retrieval", "robustness to prompt changes"])
"""The sentence with both C and D in the composite."""
DIAG_MILD_DRIFT: Final[str] = mild_drift(["retrieval", "robustness"])
"""The sentence with both C and D in the composite."""


def diagnose(
    scores: Mapping[str, Any],
    *,
    invalid: Mapping[str, str | None] | None = None,
    entries: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[str]:
    """Diagnosis sentences for the axes in the composite (``None`` = not in the composite).

    No axis at all gives no sentence (``[]``): nothing was measured, so there is nothing to say
    about the KV config (the report's summary says so, :data:`refract.bands.NOT_MEASURED`).

    ``invalid`` maps axes whose candidate produced non-finite logits to the reason: each gets
    a sentence first, and the branching below runs over the other axes. ``entries`` are the
    report's axis entries: each valid axis in the composite may add sentences after the
    branching (:meth:`refract.axes.base.Axis.diagnosis`: Trajectory against its noise floor).

    Keys are the report axis keys (``gtm``, ``kld``, ...); their letters are accepted too.
    Branching (low < 80, fail < 60):

    * every axis < 60 → one "catastrophic" sentence;
    * no axis < 80 → "all axes intact";
    * only short-context axes (A, B) low → "distribution broken" when every one of them that
      ran is < 60, otherwise "mild short-context drift"; either names the other axes that ran
      as intact (and none when none ran);
    * otherwise one sentence each for decode drift (A or B < 80), then each other low axis's
      own sentence (C: long-context retrieval, D: brittleness), in registry order.
    """
    letter_to_key = {a.letter: a.key for a in registry}

    def norm(key: str) -> str:
        return letter_to_key.get(key.upper(), key.lower()) if len(key) == 1 else key.lower()

    bad = {norm(str(k)): r for k, r in (invalid or {}).items()}
    present: dict[str, float] = {}
    for key, value in _score_items(scores):
        present[norm(key)] = value
    order = registry.keys()
    lead = [invalid_sentence(k, bad[k]) for k in order if k in bad]
    lead += [invalid_sentence(k, bad[k]) for k in sorted(set(bad) - set(order))]
    valid = {k: v for k, v in present.items() if k not in bad}
    tail: list[str] = []
    for key, value in valid.items():
        axis = registry.get(key)
        if axis is not None and entries is not None and isinstance(entries.get(key), Mapping):
            tail += axis.diagnosis(entries[key], value)
    if bad:
        if not valid:
            return lead
        body = _branch(valid)
        if body == [DIAG_INTACT]:
            body = [DIAG_OTHERS_INTACT]
        return lead + body + tail
    return _branch(present) + tail


def _branch(present: Mapping[str, float]) -> list[str]:
    """SPEC §4's branching over the axes in the composite."""
    if not present:
        return []
    if all(_is_below(v, FAIL_BELOW) for v in present.values()):
        return [DIAG_CATASTROPHIC]
    low = {k for k, v in present.items() if _is_below(v, LOW_BELOW)}
    if not low:
        return [DIAG_INTACT]
    short = {a.key for a in registry if a.short_context}
    if low <= short:
        holding = [a.holds_long or a.title for a in registry
                   if a.key in present and a.key not in short]
        if all(_is_below(present[k], FAIL_BELOW) for k in short if k in present):
            return [distribution_broken(holding)]
        return [mild_drift([a.holds or a.title for a in registry
                            if a.key in present and a.key not in short])]
    sentences: list[str] = []
    if low & short:
        sentences.append(DIAG_DECODE_DRIFT)
    for axis in registry:
        if axis.key in low and axis.key not in short:
            sentences.append(axis.low_sentence or f"Axis {axis.key!r} is below {LOW_BELOW:g}.")
    # keys no registered axis claims (reports of other tools) that are low still get a word
    for key in sorted(low - set(registry.keys())):
        sentences.append(f"Axis {key!r} is below {LOW_BELOW:g}.")
    return sentences


@dataclass(frozen=True)
class FloorCheck:
    """Verdict of the ref-vs-ref noise-floor run."""

    ok: bool
    score: float
    floor_min: float = FLOOR_MIN
    diverged_prompts: tuple[str, ...] = ()
    reasons: tuple[str, ...] = field(default_factory=tuple)

    def detail(self) -> dict[str, Any]:
        """The ``floor_*`` fields of ``composite_detail``."""
        return {"floor_score": self.score, "floor_ok": self.ok, "floor_min": self.floor_min}

    @property
    def message(self) -> str:
        if self.ok:
            return (
                f"Noise floor OK: ref-vs-ref composite {self.score:.2f} ≥ {self.floor_min:g} "
                "and every ref-vs-ref trajectory is identical."
            )
        return "Noise floor check failed: " + "; ".join(self.reasons)


def _trajectory_differs(entry: Mapping[str, Any]) -> bool:
    ref = entry.get("ref_token_ids")
    cand = entry.get("cand_token_ids")
    if ref is not None and cand is not None:
        return list(ref) != list(cand)
    matched = entry.get("matched")
    if matched is not None:
        return not bool(matched)
    return False


def check_floor(
    floor_scores: Mapping[str, Any] | float | None,
    per_prompt: Iterable[Mapping[str, Any]] = (),
    *,
    floor_min: float = FLOOR_MIN,
) -> FloorCheck:
    """Judge a ref-vs-ref (candidate = reference) run.

    ``floor_scores`` is either the axis scores of the floor run (usually ``gtm`` and ``kld``)
    or its composite directly. ``per_prompt`` is the floor run's Axis A ``per_prompt`` list;
    an entry whose ``ref_token_ids`` differ from its ``cand_token_ids`` (or, lacking ids, whose
    ``matched`` is false) means the engine is not deterministic. Not ok when the floor
    composite is below ``floor_min`` (NaN included) or any trajectory differs.
    """
    if isinstance(floor_scores, Mapping):
        comp = composite_score(floor_scores)
        score = math.nan if comp is None else comp
    else:
        value = as_score(floor_scores)
        score = math.nan if value is None else value
    reasons: list[str] = []
    if _is_below(score, floor_min):
        shown = "nan" if math.isnan(score) else f"{score:.2f}"
        reasons.append(f"ref-vs-ref composite {shown} is below {floor_min:g}")
    diverged = tuple(
        str(entry.get("id", entry.get("prompt_id", i)))
        for i, entry in enumerate(per_prompt)
        if _trajectory_differs(entry)
    )
    if diverged:
        listed = ", ".join(diverged[:5]) + (" …" if len(diverged) > 5 else "")
        reasons.append(
            f"{len(diverged)} ref-vs-ref trajectories differ ({listed}); decoding is not "
            "deterministic"
        )
    return FloorCheck(
        ok=not reasons,
        score=score,
        floor_min=floor_min,
        diverged_prompts=diverged,
        reasons=tuple(reasons),
    )


__all__ = [
    "DIAG_CATASTROPHIC",
    "DIAG_DECODE_DRIFT",
    "DIAG_DISTRIBUTION_BROKEN",
    "DIAG_INTACT",
    "DIAG_MILD_DRIFT",
    "DIAG_OTHERS_INTACT",
    "FAIL_BELOW",
    "FLOOR_MIN",
    "LOW_BELOW",
    "FloorCheck",
    "axis_label",
    "check_floor",
    "composite_score",
    "diagnose",
    "distribution_broken",
    "invalid_sentence",
    "mild_drift",
]
