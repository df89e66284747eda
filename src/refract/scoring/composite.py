"""Composite score, bands, diagnosis and the noise-floor check (SPEC §4).

Everything here is pure arithmetic on axis scores (0–100, higher = closer to the reference):

* :func:`composite_score` — unweighted harmonic mean of the axes that ran; any axis ≤ 0 (or
  NaN) → 0; capped at 100; no axis scored → ``None`` (nothing was measured: refract-llm
  writes 0 there, which reads as a FAIL of the KV config; we do not).
* :func:`band` — EXCELLENT ≥ 90, PASS ≥ 80, DEGRADED ≥ 60, else FAIL (lower bounds inclusive);
  NaN → FAIL; no score (``None``) → no band (``None``).
* :func:`band_summary` — a one-line reading of a band (:data:`NOT_MEASURED` for none).
* :func:`diagnose` — the diagnosis sentences, branching exactly as SPEC §4 describes.
* :func:`check_floor` — the ``--measure-floor`` verdict (ref-vs-ref composite ≥ 99.5 and every
  ref-vs-ref trajectory identical).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, overload

Band = Literal["EXCELLENT", "PASS", "DEGRADED", "FAIL"]

AXES: Final[tuple[str, ...]] = ("gtm", "kld", "rniah", "plad")
"""Report keys of the four axes, in SPEC order (A, B, C, D)."""

AXIS_LETTERS: Final[dict[str, str]] = {"gtm": "A", "kld": "B", "rniah": "C", "plad": "D"}
AXIS_TITLES: Final[dict[str, str]] = {
    "gtm": "Trajectory",
    "kld": "KLD@D",
    "rniah": "R-NIAH",
    "plad": "PLAD",
}

BAND_THRESHOLDS: Final[tuple[tuple[Band, float], ...]] = (
    ("EXCELLENT", 90.0),
    ("PASS", 80.0),
    ("DEGRADED", 60.0),
)
BANDS: Final[tuple[Band, ...]] = ("EXCELLENT", "PASS", "DEGRADED", "FAIL")

LOW_BELOW: Final[float] = 80.0
"""An axis below this is *low* for the diagnosis."""
FAIL_BELOW: Final[float] = 60.0
"""An axis below this is *failing* for the diagnosis."""
FLOOR_MIN: Final[float] = 99.5
"""Minimum ref-vs-ref composite for a trustworthy noise floor."""

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
DIAG_DISTRIBUTION_BROKEN: Final[str] = (
    "Per-token distribution broken: short-context decoding diverges badly from the reference, "
    "but long-context retrieval and robustness to prompt changes are intact."
)
DIAG_MILD_DRIFT: Final[str] = (
    "Mild short-context drift: some greedy continuations or next-token distributions differ "
    "from the reference while retrieval and robustness hold; audit on your own workload."
)
DIAG_DECODE_DRIFT: Final[str] = (
    "Decode drift: on short prompts the candidate picks different tokens or assigns different "
    "next-token probabilities than the reference."
)
DIAG_RETRIEVAL: Final[str] = (
    "Long-context retrieval loss: the candidate finds the needle in a long context less often "
    "than the reference."
)
DIAG_BRITTLE: Final[str] = (
    "Brittle to small input changes: typos, casing or punctuation move the candidate's output "
    "further than they move the reference's."
)


def as_score(value: Any) -> float | None:
    """``None`` stays ``None``; anything else becomes a float (NaN when unconvertible)."""
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


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


def _is_below(value: float, threshold: float) -> bool:
    return math.isnan(value) or value < threshold


def axis_label(key: str) -> str:
    """``"Axis B (KLD@D)"`` for ``"kld"``; unknown keys are quoted as they are."""
    if key in AXIS_LETTERS:
        return f"Axis {AXIS_LETTERS[key]} ({AXIS_TITLES[key]})"
    return f"Axis {key!r}"


def invalid_sentence(key: str, reason: str | None) -> str:
    """The diagnosis sentence of an axis whose candidate produced non-finite logits."""
    why = " ".join(str(reason).split()) if reason else "candidate produced non-finite logits"
    return f"{axis_label(key)} invalid: {why.rstrip('.')}. It scores 0, so the composite is 0."


NOISE_FLOOR_MIN_TOLERANCE: Final[float] = 5.0
"""Smallest tolerance (score points) below the trajectory noise floor still read as noise."""

FloorVerdict = Literal["within", "beyond", "far beyond"]


def noise_floor_tolerance(floor: Mapping[str, Any]) -> float:
    """Score points below the floor that still count as numerical noise.

    The floor is itself one sample over ``n_prompts`` prompts: its full-match rate ``p`` has
    a binomial standard error ``sqrt(p (1 − p) / n)``. Two standard errors of that rate, in
    score points (a fully matched prompt contributes its whole length to the score, so the
    score moves about as much as the rate), with a minimum of
    :data:`NOISE_FLOOR_MIN_TOLERANCE`. Demo model: p = 16/30, n = 30 → 18.2 points.
    """
    p = as_score(floor.get("full_match_rate"))
    n = as_score(floor.get("n_prompts"))
    tol = NOISE_FLOOR_MIN_TOLERANCE
    if p is not None and n is not None and not math.isnan(p) and not math.isnan(n) and n > 0:
        p = min(1.0, max(0.0, p))
        tol = max(tol, 100.0 * 2.0 * math.sqrt(p * (1.0 - p) / n))
    return tol


def noise_floor_verdict(
    gtm_score: float | None, floor: Mapping[str, Any] | None
) -> tuple[FloorVerdict, float, float] | None:
    """(verdict, floor score, tolerance) of a trajectory score against its noise floor.

    ``within`` when the score ≥ floor − tolerance; ``far beyond`` when it is more than twice
    the tolerance below the floor; ``beyond`` in between. ``None`` without a usable floor.
    """
    if gtm_score is None or math.isnan(gtm_score) or not isinstance(floor, Mapping):
        return None
    fs = as_score(floor.get("score"))
    if fs is None or math.isnan(fs):
        return None
    tol = noise_floor_tolerance(floor)
    gap = fs - gtm_score
    verdict: FloorVerdict
    if gap <= tol:
        verdict = "within"
    elif gap <= 2.0 * tol:
        verdict = "beyond"
    else:
        verdict = "far beyond"
    return verdict, fs, tol


def noise_floor_sentence(gtm_score: float, floor: Mapping[str, Any]) -> str | None:
    """The diagnosis sentence comparing Axis A with its numerical-noise floor."""
    got = noise_floor_verdict(gtm_score, floor)
    if got is None:
        return None
    verdict, fs, tol = got
    head = (
        f"Trajectory {gtm_score:.1f} vs numerical-noise floor {fs:.1f} "
        f"(reference against itself, tolerance {tol:.1f})"
    )
    if verdict == "within":
        return (
            f"Trajectory drift within numerical noise: {head}; the greedy divergences are "
            "no larger than the reference's own under an equivalent computation."
        )
    if verdict == "beyond":
        return (
            f"Trajectory drift beyond numerical noise: {head}; the candidate diverges more "
            "than f16's own run-to-run variation."
        )
    return (
        f"Trajectory drift far beyond numerical noise: {head}; the quantized cache itself "
        "changes the greedy continuations."
    )


def diagnose(
    scores: Mapping[str, Any],
    *,
    invalid: Mapping[str, str | None] | None = None,
    noise_floor: Mapping[str, Any] | None = None,
) -> list[str]:
    """Diagnosis sentences for the axes in the composite (``None`` = not in the composite).

    No axis at all gives no sentence (``[]``): nothing was measured, so there is nothing to say
    about the KV config (the report's summary says so, :data:`NOT_MEASURED`).

    ``invalid`` maps axes whose candidate produced non-finite logits to the reason: each gets
    a sentence first, and the branching below runs over the other axes. ``noise_floor`` is
    ``axes.gtm.noise_floor``: a sentence saying whether Axis A is within it follows.

    Keys are the report axis keys (``gtm``, ``kld``, ``rniah``, ``plad``); the letters
    ``A``–``D`` are accepted too. Branching (low < 80, fail < 60):

    * every axis < 60 → one "catastrophic" sentence;
    * no axis < 80 → "all axes intact";
    * only A and/or B low → "distribution broken" when every one of A/B that ran is < 60,
      otherwise "mild short-context drift";
    * otherwise one sentence each for decode drift (A or B < 80), long-context retrieval
      (C < 80) and brittleness (D < 80), in that order.
    """
    letter_to_key = {v: k for k, v in AXIS_LETTERS.items()}

    def norm(key: str) -> str:
        return letter_to_key.get(key.upper(), key.lower()) if len(key) == 1 else key.lower()

    bad = {norm(str(k)): r for k, r in (invalid or {}).items()}
    present: dict[str, float] = {}
    for key, value in _score_items(scores):
        present[norm(key)] = value
    lead = [invalid_sentence(k, bad[k]) for k in AXES if k in bad]
    lead += [invalid_sentence(k, bad[k]) for k in sorted(set(bad) - set(AXES))]
    valid = {k: v for k, v in present.items() if k not in bad}
    tail: list[str] = []
    if noise_floor is not None and "gtm" in valid:
        sentence = noise_floor_sentence(valid["gtm"], noise_floor)
        if sentence:
            tail.append(sentence)
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
    short = {"gtm", "kld"}
    if low <= short:
        if all(_is_below(present[k], FAIL_BELOW) for k in short if k in present):
            return [DIAG_DISTRIBUTION_BROKEN]
        return [DIAG_MILD_DRIFT]
    sentences: list[str] = []
    if low & short:
        sentences.append(DIAG_DECODE_DRIFT)
    if "rniah" in low:
        sentences.append(DIAG_RETRIEVAL)
    if "plad" in low:
        sentences.append(DIAG_BRITTLE)
    # Axes outside A–D (extensions) that are low still deserve a word.
    for key in sorted(low - set(AXES)):
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
    "AXES",
    "AXIS_LETTERS",
    "AXIS_TITLES",
    "BANDS",
    "BAND_THRESHOLDS",
    "FAIL_BELOW",
    "FLOOR_MIN",
    "LOW_BELOW",
    "DIAG_OTHERS_INTACT",
    "NOT_MEASURED",
    "NOISE_FLOOR_MIN_TOLERANCE",
    "Band",
    "FloorCheck",
    "FloorVerdict",
    "axis_label",
    "invalid_sentence",
    "noise_floor_sentence",
    "noise_floor_tolerance",
    "noise_floor_verdict",
    "band",
    "band_summary",
    "check_floor",
    "composite_score",
    "diagnose",
]
