"""Axis A scoring (SPEC §3A) and the first-divergence analysis."""

from __future__ import annotations

import json
import math

import pytest

from conftest import SHARED_DATA
from refract.axes.trajectory import (
    DEFAULT_NEAR_TIE_THRESHOLD,
    analyze_divergences,
    common_prefix_length,
    score_trajectories,
)
from refract.inputs.promptset import Prompt

EXAMPLES = SHARED_DATA / "refract-examples"

GTM_FIELDS = {
    "score",
    "full_match_rate",
    "median_first_divergence",
    "mean_prefix_agreement_length",
    "mean_cand_length",
    "mean_ref_length",
    "n_prompts",
    "n_tokens_each",
    "per_prompt",
}
PER_PROMPT_FIELDS = {
    "id",
    "category",
    "prompt",
    "ref_token_ids",
    "cand_token_ids",
    "first_divergence",
    "prefix_agreement_length",
    "cand_length",
    "ref_length",
    "matched",
}


def _prompts(n: int) -> list[Prompt]:
    return [Prompt(f"p-{i:02d}", "factual", f"Prompt {i}") for i in range(n)]


def test_common_prefix_length() -> None:
    assert common_prefix_length([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix_length([1, 2], [1, 2, 3]) == 2
    assert common_prefix_length([], [1]) == 0
    assert common_prefix_length([5], [6]) == 0


def test_shorter_candidate_is_50() -> None:
    r = score_trajectories(_prompts(1), [[1, 2, 3, 4]], [[1, 2]], n_predict=4)
    assert r["score"] == pytest.approx(50.0)
    pp = r["per_prompt"][0]
    assert pp["first_divergence"] == 2
    assert pp["prefix_agreement_length"] == 2
    assert pp["matched"] is False
    assert (pp["ref_length"], pp["cand_length"]) == (4, 2)


def test_spec_worked_check_two_prompts_is_50() -> None:
    r = score_trajectories(_prompts(2), [[1, 2, 3, 4], [5, 6]], [[1, 2], [5, 6, 7, 8]], 4)
    assert r["score"] == pytest.approx(50.0)  # 4 / 8
    assert r["full_match_rate"] == 0.0
    assert r["median_first_divergence"] == 2
    assert r["mean_prefix_agreement_length"] == 2.0
    assert r["mean_cand_length"] == 3.0
    assert r["mean_ref_length"] == 3.0


def test_identical_early_stop_is_100() -> None:
    ref = [[1, 2, 3], [7], [4, 5, 6, 9]]
    r = score_trajectories(_prompts(3), ref, [list(x) for x in ref], n_predict=128)
    assert r["score"] == 100.0
    assert r["full_match_rate"] == 1.0
    assert r["median_first_divergence"] is None
    assert all(pp["matched"] and pp["first_divergence"] is None for pp in r["per_prompt"])
    assert r["n_tokens_each"] == 128
    assert len(r["notes"]) == 1
    assert "3/3" in r["notes"][0]


def test_longer_candidate_is_penalized() -> None:
    same = score_trajectories(_prompts(1), [[1, 2, 3]], [[1, 2, 3]], 10)["score"]
    longer = score_trajectories(_prompts(1), [[1, 2, 3]], [[1, 2, 3, 4, 5, 6]], 10)
    assert same == 100.0
    assert longer["score"] == pytest.approx(50.0)  # 3 / max(3, 6)
    assert longer["per_prompt"][0]["first_divergence"] == 3
    assert longer["per_prompt"][0]["matched"] is False


def test_empty_side_counts_against() -> None:
    r = score_trajectories(_prompts(2), [[], [1, 2]], [[3, 4], [1, 2]], 2)
    assert r["score"] == pytest.approx(50.0)  # 2 / (2 + 2)
    assert r["per_prompt"][0]["first_divergence"] == 0
    # one prompt empty on both sides is fine when another prompt has tokens
    r = score_trajectories(_prompts(2), [[], [1, 2]], [[], [1, 2]], 2)
    assert r["score"] == 100.0
    assert r["per_prompt"][0]["matched"] is True


def test_all_empty_is_an_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        score_trajectories(_prompts(3), [[], [], []], [[], [], []], 16)


def test_diagnostics_shape_and_median() -> None:
    ref = [[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4], [9, 9, 9, 9]]
    cand = [[1, 0, 0, 0], [1, 2, 3, 0], [1, 2, 3, 4], [9, 9, 9, 9]]
    prompts = [Prompt("a-01", "code", "x = "), *(_prompts(3))]
    r = score_trajectories(prompts, ref, cand, n_predict=4)
    assert set(r) >= GTM_FIELDS
    assert r["n_prompts"] == 4
    assert r["score"] == pytest.approx(100 * (1 + 3 + 4 + 4) / 16)
    assert r["full_match_rate"] == 0.5
    assert r["median_first_divergence"] == 2  # median of [1, 3]
    assert r["notes"] == []
    first = r["per_prompt"][0]
    assert set(first) == PER_PROMPT_FIELDS
    assert (first["id"], first["category"], first["prompt"]) == ("a-01", "code", "x = ")
    assert first["ref_token_ids"] == [1, 2, 3, 4]
    assert first["cand_token_ids"] == [1, 0, 0, 0]
    json.dumps(r)  # plain JSON types only


def test_accepts_any_int_sequences() -> None:
    np = pytest.importorskip("numpy")
    r = score_trajectories(
        _prompts(1), [np.array([1, 2, 3], dtype=np.int32)], [(1, 2, 5)], n_predict=3
    )
    assert r["per_prompt"][0]["ref_token_ids"] == [1, 2, 3]
    assert type(r["per_prompt"][0]["ref_token_ids"][0]) is int
    assert r["score"] == pytest.approx(100 * 2 / 3)


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="2 reference"):
        score_trajectories(_prompts(1), [[1], [2]], [[1]], 4)
    with pytest.raises(ValueError, match="more than n_predict"):
        score_trajectories(_prompts(1), [[1, 2, 3]], [[1]], 2)
    with pytest.raises(ValueError, match="n_predict"):
        score_trajectories(_prompts(1), [[1]], [[1]], 0)
    with pytest.raises(ValueError, match="no prompts"):
        score_trajectories([], [], [], 4)


@pytest.mark.skipif(not EXAMPLES.is_dir(), reason="shared data not available")
def test_reproduces_refract_llm_diagnostics() -> None:
    """Same per-prompt fields and summary statistics as refract-llm's gtm axis."""
    report = json.loads((EXAMPLES / "degraded-qwen7b.json").read_text())
    gtm = report["axes"]["gtm"]
    prompts = [Prompt(p["id"], p["category"], p["prompt"]) for p in gtm["per_prompt"]]
    r = score_trajectories(
        prompts,
        [p["ref_token_ids"] for p in gtm["per_prompt"]],
        [p["cand_token_ids"] for p in gtm["per_prompt"]],
        gtm["n_tokens_each"],
    )
    for key in GTM_FIELDS - {"per_prompt"}:
        assert r[key] == pytest.approx(gtm[key]), key
    for ours, theirs in zip(r["per_prompt"], gtm["per_prompt"], strict=True):
        assert ours == {k: theirs[k] for k in PER_PROMPT_FIELDS}


# --- divergence analysis -------------------------------------------------------------------


def _lp(*ps: float) -> list[float]:
    return [math.log(p) for p in ps]


def test_divergence_near_tie_in_top_k() -> None:
    r = analyze_divergences([[10, 11, 12]], [_lp(0.40, 0.38, 0.10)], [11], ids=["fact-01"])
    e = r["per_prompt"][0]
    assert e["id"] == "fact-01"
    assert (e["ref_token"], e["cand_token"]) == (10, 11)
    assert e["p_ref_of_ref_token"] == pytest.approx(0.40)
    assert e["p_ref_of_cand_token"] == pytest.approx(0.38)
    assert e["cand_token_rank"] == 2
    assert e["cand_below_top_k"] is False
    assert e["margin"] == pytest.approx(0.02)
    assert e["kl_at_divergence"] is None
    assert r["near_tie_fraction"] == 1.0
    assert r["median_margin"] == pytest.approx(0.02)
    assert r["near_tie_threshold"] == DEFAULT_NEAR_TIE_THRESHOLD
    assert r["notes"] == []


def test_divergence_unsorted_top_k_and_below_top_k() -> None:
    top_ids = [[12, 10, 11], [5, 6, 7]]
    top_lp = [_lp(0.10, 0.60, 0.20), _lp(0.5, 0.3, 0.01)]
    r = analyze_divergences(top_ids, top_lp, [12, 99], cand_kl=[0.3, None])
    a, b = r["per_prompt"]
    assert a["ref_token"] == 10
    assert a["cand_token_rank"] == 3
    assert a["margin"] == pytest.approx(0.50)
    assert a["kl_at_divergence"] == pytest.approx(0.3)
    # below top-k: the smallest top-k probability bounds p(cand) from above
    assert b["cand_token_rank"] is None
    assert b["cand_below_top_k"] is True
    assert b["p_ref_of_cand_token"] == pytest.approx(0.01)
    assert b["margin"] == pytest.approx(0.49)
    assert b["kl_at_divergence"] is None
    assert r["n_cand_below_top_k"] == 1
    assert len(r["notes"]) == 1
    assert "upper bound" in r["notes"][0]
    assert r["near_tie_fraction"] == 0.0
    assert r["median_margin"] == pytest.approx(0.495)
    assert r["median_kl_at_divergence"] == pytest.approx(0.3)


def test_divergence_threshold_configurable_and_explicit_ref_token() -> None:
    top_ids = [[1, 2], [3, 4], [5, 6]]
    top_lp = [_lp(0.5, 0.45), _lp(0.6, 0.3), _lp(0.9, 0.05)]
    r = analyze_divergences(top_ids, top_lp, [2, 4, 6], near_tie_threshold=0.31)
    assert r["near_tie_fraction"] == pytest.approx(2 / 3)
    assert r["median_margin"] == pytest.approx(0.3)
    # an explicit reference token (e.g. a tie broken the other way) is honoured
    r = analyze_divergences([[1, 2]], [_lp(0.5, 0.5)], [1], ref_tokens=[2])
    assert r["per_prompt"][0]["ref_token"] == 2
    assert r["per_prompt"][0]["margin"] == pytest.approx(0.0)
    assert r["near_tie_fraction"] == 1.0


def test_divergence_empty() -> None:
    r = analyze_divergences([], [], [])
    assert r["n_divergences"] == 0
    assert r["near_tie_fraction"] is None
    assert r["median_margin"] is None


def test_divergence_validation() -> None:
    with pytest.raises(ValueError, match="parallel"):
        analyze_divergences([[1]], [], [2])
    with pytest.raises(ValueError, match="equal length"):
        analyze_divergences([[1, 2]], [_lp(0.5)], [2])
    with pytest.raises(ValueError, match="both 1"):
        analyze_divergences([[1, 2]], [_lp(0.5, 0.4)], [1])
    with pytest.raises(ValueError, match="not in its own top-k"):
        analyze_divergences([[1, 2]], [_lp(0.5, 0.4)], [2], ref_tokens=[3])
    with pytest.raises(ValueError, match="not NaN"):
        analyze_divergences([[1, 2]], [[float("nan"), -1.0]], [2])
    with pytest.raises(ValueError, match="cand_kl"):
        analyze_divergences([[1, 2]], [_lp(0.5, 0.4)], [2], cand_kl=[])
    with pytest.raises(ValueError, match="near_tie_threshold"):
        analyze_divergences([[1, 2]], [_lp(0.5, 0.4)], [2], near_tie_threshold=-1)
