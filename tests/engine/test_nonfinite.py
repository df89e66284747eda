"""Non-finite logits are damage, never a score (SPEC §4): the engine on the tiny model with the
test-only poison hook (``_core._test_poison``) writing NaN/±inf into one KV config's logits."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from refract import Engine, KVConfig, _core
from refract.engine.facade import NonFiniteLogits
from refract.engine.kldstats import kld_score, summarize_kld

F16, Q8, Q4 = "ctk=f16,ctv=f16", "ctk=q8_0,ctv=q8_0", "ctk=q4_0,ctv=q4_0"
TEXT = (
    "The capital of France is Paris. The big ocean is blue and the small city is quick. "
    "Two plus two equals four, and seven is a rare number in this article. "
) * 60
PROMPTS = ["The capital of France is", "Two plus two equals", "Hello"]
VALUES = [math.nan, math.inf, -math.inf]
SCORED = 2 * 63  # two windows of ctx 128: positions 64..126

Poison = Callable[[str, float], None]


def label(kv: str) -> str:
    return KVConfig.parse(kv).label


@pytest.fixture
def poison() -> Iterator[Poison]:
    """Poison one KV config's logits for the duration of a test."""

    def set_poison(kv: str, value: float) -> None:
        _core._test_poison(label(kv), value)

    yield set_poison
    _core._test_poison("", 0.0)


@pytest.mark.parametrize("value", VALUES)
def test_poisoned_candidate_is_invalid_and_others_are_unaffected(
    tiny_engine: Engine, poison: Poison, value: float
) -> None:
    clean_q8, _ = tiny_engine.kld(TEXT, candidates=[Q8, Q4], ctx=128, chunks=2)
    poison(Q4, value)
    q8, q4 = tiny_engine.kld(TEXT, candidates=[Q8, Q4], ctx=128, chunks=2)

    assert q4.invalid and q4.n_nonfinite_rows == q4.n_scored == SCORED
    assert q4.score == 0.0
    assert math.isnan(q4.mean_kld) and math.isnan(q4.ppl_cand) and math.isnan(q4.rms_dp_pct)
    d = q4.to_dict()
    assert d["invalid"] is True and d["score"] == 0.0 and math.isnan(d["mean_kld"])
    assert d["invalid_reason"] == (
        f"candidate produced non-finite (NaN/inf) logits in {SCORED} of {SCORED} scored rows"
    )
    # the other candidate of the same call is measured as if nothing happened
    assert not q8.invalid and q8.to_dict()["invalid"] is False
    assert "invalid_reason" not in q8.to_dict()
    assert q8.mean_kld == clean_q8.mean_kld > 0 and q8.score == clean_q8.score
    np.testing.assert_array_equal(q8.kld, clean_q8.kld)


@pytest.mark.parametrize("value", VALUES)
def test_poisoned_reference_stops_the_kld_run(
    tiny_engine: Engine, poison: Poison, value: float
) -> None:
    poison(F16, value)
    with pytest.raises(NonFiniteLogits) as err:
        tiny_engine.kld(TEXT, reference=F16, candidates=[Q8], ctx=128, chunks=2)
    e = err.value
    assert (e.label, e.n_rows, e.n_total, e.where) == (label(F16), SCORED, SCORED, "kld")
    assert "non-finite" in str(e) and label(F16) in str(e)


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("sequential", [False, True])
def test_poisoned_greedy_raises_with_its_label(
    tiny_engine: Engine, poison: Poison, value: float, sequential: bool
) -> None:
    clean = tiny_engine.greedy(PROMPTS, F16, n_predict=8, ctx=128, sequential=sequential)
    poison(Q4, value)
    with pytest.raises(NonFiniteLogits) as err:
        tiny_engine.greedy(PROMPTS, Q4, n_predict=8, ctx=128, sequential=sequential)
    e = err.value
    assert e.label == label(Q4) and e.where == "greedy"
    assert e.n_rows == e.n_total >= len(PROMPTS)  # every row read was poisoned and counted
    # another KV config is not touched
    again = tiny_engine.greedy(PROMPTS, F16, n_predict=8, ctx=128, sequential=sequential)
    for a, b in zip(clean, again, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("value", VALUES)
def test_poisoned_generate_one_raises(tiny_engine: Engine, poison: Poison, value: float) -> None:
    probe = tiny_engine.tokenize(" Paris", add_special=False)
    poison(Q8, value)
    with pytest.raises(NonFiniteLogits) as err:
        tiny_engine.generate_one(PROMPTS[0], Q8, n_predict=6, ctx=128, probe=probe)
    e = err.value
    assert e.label == label(Q8) and e.where == "generate" and e.n_rows == e.n_total >= 1


@pytest.mark.parametrize("value", VALUES)
def test_poisoned_compare_names_the_side(tiny_engine: Engine, poison: Poison, value: float) -> None:
    ids = tiny_engine.tokenize(TEXT[:400])
    n = int(ids.size) - 2 - 4 + 1  # positions 4 .. size-2

    poison(Q4, value)
    with pytest.raises(NonFiniteLogits) as err:
        tiny_engine.compare_sequence(ids, F16, [Q8, Q4], first=4)
    assert (err.value.label, err.value.where, err.value.n_rows) == (label(Q4), "compare", n)

    poison(F16, value)  # the reference (the hook holds one label at a time)
    with pytest.raises(NonFiniteLogits) as err:
        tiny_engine.compare_sequence(ids, F16, [Q8], first=4)
    assert (err.value.label, err.value.n_rows, err.value.n_total) == (label(F16), n, n)


def test_reference_is_named_first_when_both_sides_are_broken(
    tiny_engine: Engine, poison: Poison
) -> None:
    ids = tiny_engine.tokenize(TEXT[:400])
    poison(F16, math.nan)  # reference and candidate share the label, in two contexts
    with pytest.raises(NonFiniteLogits) as err:
        tiny_engine.compare_sequence(ids, F16, [F16], first=4)
    assert err.value.label == label(F16)


def test_clearing_the_hook_makes_everything_clean_again(
    tiny_engine: Engine, poison: Poison
) -> None:
    [before] = tiny_engine.kld(TEXT, candidates=[Q8], ctx=128, chunks=2)
    poison(Q8, math.nan)
    [broken] = tiny_engine.kld(TEXT, candidates=[Q8], ctx=128, chunks=2)
    assert broken.invalid
    _core._test_poison("", 0.0)
    [after] = tiny_engine.kld(TEXT, candidates=[Q8], ctx=128, chunks=2)
    assert not after.invalid and after.mean_kld == before.mean_kld
    tiny_engine.greedy(PROMPTS, Q8, n_predict=4, ctx=128)  # does not raise


def rows_with(kld: np.ndarray, bad_cand: np.ndarray) -> dict[str, np.ndarray]:
    n = kld.size
    return {
        "kld": kld, "dp": np.zeros(n), "logp_ref": np.full(n, -1.0), "logp_cand": np.full(n, -1.0),
        "same_top1": np.ones(n, np.uint8), "nonfinite_cand": bad_cand.astype(np.uint8),
        "nonfinite_ref": np.zeros(n, np.uint8),
    }


def test_summary_of_a_candidate_with_nonfinite_rows_is_null_not_a_number() -> None:
    kld = np.full(8, 0.01)
    kld[3] = np.nan
    bad = np.zeros(8, bool)
    bad[3] = True
    res = summarize_kld(rows_with(kld, bad), reference=label(F16), candidate=label(Q4),
                        n_chunks=2, ctx=10, scored_per_chunk=4, n_corpus_tokens=20)
    assert res.invalid and res.n_nonfinite_rows == 1 and res.score == 0.0
    assert all(math.isnan(v) for v in res.percentiles.values())
    assert math.isnan(res.same_top_p_pct) and math.isnan(res.kld_ci95[0])
    assert res.invalid_reason == (
        "candidate produced non-finite (NaN/inf) logits in 1 of 8 scored rows"
    )


def test_infinite_mean_kld_scores_zero_never_nan() -> None:
    assert kld_score(math.inf) == 0.0
    assert kld_score(math.nan) == 0.0
    assert kld_score(0.0) == 100.0
