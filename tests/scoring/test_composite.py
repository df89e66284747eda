"""Composite, bands, diagnosis and noise-floor check (SPEC §4)."""

from __future__ import annotations

import math

import pytest

from refract.axes import registry
from refract.axes.trajectory import (
    NOISE_FLOOR_MIN_TOLERANCE,
    noise_floor_tolerance,
    noise_floor_verdict,
)
from refract.bands import NOT_MEASURED, band, band_summary
from refract.composite import (
    DIAG_CATASTROPHIC,
    DIAG_DECODE_DRIFT,
    DIAG_DISTRIBUTION_BROKEN,
    DIAG_INTACT,
    DIAG_MILD_DRIFT,
    DIAG_OTHERS_INTACT,
    FLOOR_MIN,
    check_floor,
    composite_score,
    diagnose,
)

DIAG_RETRIEVAL = registry.get("rniah").low_sentence  # type: ignore[union-attr]
DIAG_BRITTLE = registry.get("plad").low_sentence  # type: ignore[union-attr]

# Published refract-llm cases: axes (A, B, C, D) → composite, band.
PUBLISHED = [
    ((76.65, 99.71, 100, 91.34), 90.86, "EXCELLENT"),
    ((77.95, 99.55, 100, 87.35), 90.25, "EXCELLENT"),
    ((73.58, 97.32, 100, 93.54), 89.77, "PASS"),
    ((60.07, 98.35, 100, 81.47), 81.48, "PASS"),
    ((52.73, 93.50, 100, 88.57), 78.51, "DEGRADED"),
    ((55.13, 98.75, 100, 76.73), 77.98, "DEGRADED"),
    ((26.41, 49.23, 100, 94.45), 50.78, "FAIL"),
    ((17.32, 17.59, 100, 78.40), 29.12, "FAIL"),
    ((3.93, 11.84, 100, 72.21), 11.03, "FAIL"),
]


@pytest.mark.parametrize(("axes", "expected", "expected_band"), PUBLISHED)
def test_published_composites(axes: tuple[float, ...], expected: float, expected_band: str):
    as_map = dict(zip(("gtm", "kld", "rniah", "plad"), axes, strict=True))
    for given in (list(axes), as_map):
        value = composite_score(given)
        assert round(value, 2) == expected
        assert band(value) == expected_band


def test_composite_is_harmonic_mean_and_ignores_missing_axes():
    assert composite_score([50.0, 100.0]) == pytest.approx(2 / (1 / 50 + 1 / 100))
    assert composite_score({"gtm": 50.0, "kld": 100.0, "rniah": None, "plad": None}) == (
        pytest.approx(66.6666667)
    )
    assert composite_score([80.0]) == 80.0


def test_composite_zero_axis_and_no_axes():
    # no axis scored: nothing was measured, which is no composite at all, not a 0 (SPEC §4)
    assert composite_score([]) is None
    assert composite_score({"gtm": None, "kld": None}) is None
    assert composite_score([0.0, 100.0, 100.0]) == 0.0
    assert composite_score([-3.0, 100.0]) == 0.0


def test_composite_nan_axis_sinks_to_zero():
    assert composite_score([math.nan, 100.0, 90.0]) == 0.0
    assert composite_score({"gtm": float("nan")}) == 0.0


def test_composite_capped_at_100():
    assert composite_score([100.0, 100.0]) == 100.0
    assert composite_score([150.0, 200.0]) == 100.0
    assert composite_score([math.inf, 100.0]) == 100.0


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        (100.0, "EXCELLENT"),
        (90.0, "EXCELLENT"),
        (89.99, "PASS"),
        (80.0, "PASS"),
        (79.99, "DEGRADED"),
        (60.0, "DEGRADED"),
        (59.999, "FAIL"),
        (0.0, "FAIL"),
        (-5.0, "FAIL"),
        (math.nan, "FAIL"),
        (None, None),  # nothing measured: no band, never FAIL
    ],
)
def test_band_boundaries(score: float | None, expected: str | None):
    assert band(score) == expected


def test_band_summaries_distinct_and_nonempty():
    texts = {name: band_summary(name) for name in ("EXCELLENT", "PASS", "DEGRADED", "FAIL")}
    assert len(set(texts.values())) == 4
    assert all(t.strip() for t in texts.values())
    assert band_summary("nonsense") == texts["FAIL"]
    assert band_summary(None) == NOT_MEASURED and NOT_MEASURED not in texts.values()


def _d(a=None, b=None, c=None, d=None) -> list[str]:
    return diagnose({"gtm": a, "kld": b, "rniah": c, "plad": d})


def test_diagnosis_catastrophic_when_every_axis_fails():
    assert _d(10, 20, 30, 59.9) == [DIAG_CATASTROPHIC]
    assert _d(10, 20) == [DIAG_CATASTROPHIC]  # only the axes that ran count


def test_diagnosis_all_intact():
    assert _d(80, 95, 100, 85) == [DIAG_INTACT]
    assert _d(99, 99) == [DIAG_INTACT]


def test_diagnosis_only_short_context_axes_low():
    # both A and B < 60 → distribution broken, retrieval and robustness intact
    assert _d(40, 50, 100, 95) == [DIAG_DISTRIBUTION_BROKEN]
    # A low but B fine (published clean-q8q8 case) → mild drift
    assert _d(76.65, 99.71, 100, 91.34) == [DIAG_MILD_DRIFT]
    # A < 60, B only low (not failing) → mild drift
    assert _d(55, 70, 100, 95) == [DIAG_MILD_DRIFT]
    # only B low
    assert _d(95, 70, 100, 95) == [DIAG_MILD_DRIFT]


def test_diagnosis_one_sentence_per_problem_in_order():
    # published degraded-qwen7b / distribution-broken / catastrophic cases
    assert _d(55.13, 98.75, 100, 76.73) == [DIAG_DECODE_DRIFT, DIAG_BRITTLE]
    assert _d(17.32, 17.59, 100, 78.40) == [DIAG_DECODE_DRIFT, DIAG_BRITTLE]
    assert _d(3.93, 11.84, 100, 72.21) == [DIAG_DECODE_DRIFT, DIAG_BRITTLE]
    assert _d(95, 95, 50, 95) == [DIAG_RETRIEVAL]
    assert _d(95, 95, 95, 70) == [DIAG_BRITTLE]
    assert _d(70, 95, 50, 70) == [DIAG_DECODE_DRIFT, DIAG_RETRIEVAL, DIAG_BRITTLE]


def test_diagnosis_ignores_axes_not_in_composite_and_accepts_letters():
    # C excluded (None) must not produce a retrieval sentence
    assert _d(95, 95, None, 95) == [DIAG_INTACT]
    assert diagnose({"A": 40, "B": 50, "C": 100, "D": 95}) == [DIAG_DISTRIBUTION_BROKEN]
    assert diagnose({}) == []  # no axis: not a word about the KV config


def test_diagnosis_nan_counts_as_failing():
    assert _d(math.nan, 95, 95, 95) == [DIAG_MILD_DRIFT]
    assert _d(math.nan, math.nan) == [DIAG_CATASTROPHIC]


def test_diagnosis_sentences_are_distinct():
    sentences = {
        DIAG_BRITTLE,
        DIAG_CATASTROPHIC,
        DIAG_DECODE_DRIFT,
        DIAG_DISTRIBUTION_BROKEN,
        DIAG_INTACT,
        DIAG_MILD_DRIFT,
        DIAG_RETRIEVAL,
        NOT_MEASURED,
    }
    assert len(sentences) == 8
    assert "revert" in DIAG_CATASTROPHIC.lower()
    assert "audit" in DIAG_MILD_DRIFT.lower()


def _pp(ids: list[tuple[list[int], list[int]]]) -> list[dict]:
    return [
        {"id": f"p{i}", "ref_token_ids": r, "cand_token_ids": c} for i, (r, c) in enumerate(ids)
    ]


def test_floor_ok():
    res = check_floor({"gtm": 100.0, "kld": 100.0}, _pp([([1, 2], [1, 2]), ([3], [3])]))
    assert res.ok
    assert res.score == 100.0
    assert res.detail() == {"floor_score": 100.0, "floor_ok": True, "floor_min": FLOOR_MIN}
    assert "OK" in res.message


def test_floor_low_composite_fails():
    res = check_floor({"gtm": 100.0, "kld": 98.0})
    assert not res.ok
    assert res.score == pytest.approx(2 / (1 / 100 + 1 / 98))
    assert "below 99.5" in res.message
    assert check_floor(99.5).ok
    assert not check_floor(99.49).ok
    assert not check_floor(math.nan).ok
    assert not check_floor(None).ok


def test_floor_fails_when_any_trajectory_differs():
    res = check_floor({"gtm": 100.0, "kld": 100.0}, _pp([([1, 2], [1, 2]), ([3, 4], [3, 5])]))
    assert not res.ok
    assert res.diverged_prompts == ("p1",)
    assert "p1" in res.message
    # without token ids, the matched flag decides
    assert not check_floor(100.0, [{"id": "x", "matched": False}]).ok
    assert check_floor(100.0, [{"id": "x", "matched": True}]).ok


# ------------------------------------------------------------- invalid axes, noise floor


def test_diagnose_names_invalid_axes_first():
    reason = "candidate produced non-finite (NaN/inf) logits in 12 of 8160 scored rows"
    out = diagnose({"gtm": 95.0, "kld": 0.0, "rniah": 100.0, "plad": 96.0},
                   invalid={"kld": reason})
    assert out[0] == f"Axis B (KLD@D) invalid: {reason}. It scores 0, so the composite is 0."
    assert out[1] == DIAG_OTHERS_INTACT  # the valid axes alone drive the branching
    assert DIAG_CATASTROPHIC not in out
    only = diagnose({"kld": 0.0}, invalid={"B": None})
    assert only == ["Axis B (KLD@D) invalid: candidate produced non-finite logits. It scores 0, "
                    "so the composite is 0."]


def test_noise_floor_tolerance_and_verdicts():
    demo = {"score": 58.0, "full_match_rate": 16 / 30, "n_prompts": 30}
    tol = noise_floor_tolerance(demo)
    assert tol == pytest.approx(200 * math.sqrt((16 / 30) * (14 / 30) / 30))
    assert round(tol, 1) == 18.2
    # tiny spread (all prompts match) → the 5-point minimum
    assert noise_floor_tolerance({"score": 100.0, "full_match_rate": 1.0, "n_prompts": 30}) == (
        NOISE_FLOOR_MIN_TOLERANCE
    )
    assert noise_floor_tolerance({"score": 90.0}) == NOISE_FLOOR_MIN_TOLERANCE
    assert noise_floor_verdict(42.6, demo)[0] == "within"  # 15.4 below, tolerance 18.2
    assert noise_floor_verdict(58.0 - tol - 0.1, demo)[0] == "beyond"
    assert noise_floor_verdict(58.0 - 2 * tol - 0.1, demo)[0] == "far beyond"
    assert noise_floor_verdict(70.0, demo)[0] == "within"
    assert noise_floor_verdict(None, demo) is None
    assert noise_floor_verdict(50.0, {"score": None}) is None


def test_diagnose_appends_the_noise_floor_sentence():
    floor = {"score": 98.0, "full_match_rate": 0.97, "n_prompts": 30}
    entries = {"gtm": {"noise_floor": floor}}
    out = diagnose({"gtm": 40.0, "kld": 99.0, "rniah": 100.0, "plad": 95.0}, entries=entries)
    assert out[0] == DIAG_MILD_DRIFT
    assert out[1].startswith("Trajectory drift far beyond numerical noise: Trajectory 40.0 vs "
                             "numerical-noise floor 98.0")
    out = diagnose({"gtm": 95.0, "kld": 99.0}, entries=entries)
    assert out[-1].startswith("Trajectory drift within numerical noise")
    # no gtm in the composite → no floor sentence
    assert diagnose({"kld": 99.0}, entries=entries) == [DIAG_INTACT]
