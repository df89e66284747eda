"""Trajectory by verification (issue 24): each candidate teacher-forced along the reference
trajectories, decoded on only where the reference stopped before its length limit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from refract import Engine
from refract.axes.trajectory import (
    run_trajectories,
    score_trajectories,
)
from refract.errors import UsageError
from refract.inputs.promptset import Prompt, load_prompts
from tinymodel import write_tiny_model

F16, Q4_1 = "ctk=f16,ctv=f16", "ctk=q4_1,ctv=q4_1"
PROMPTS = ["The capital of France is", "Two plus two equals", "Write a function that", "Hello",
           "Once upon a time", "The weather today"]
PROMPT_SET = [Prompt(f"p{i}", "factual", t) for i, t in enumerate(PROMPTS)]


def _counting(eng: Engine) -> tuple[list[tuple[str, int]], list[list[str]]]:
    """Record every greedy call (config, number of prompts) and every shadow list."""
    calls: list[tuple[str, int]] = []
    shadowed: list[list[str]] = []
    real, real_tf = eng.greedy, eng.greedy_teacher_forced

    def greedy(texts, kv, *args, **kw):  # type: ignore[no-untyped-def]
        calls.append((str(kv), len(texts)))
        return real(texts, kv, *args, **kw)

    def greedy_tf(texts, kv, cs, *args, **kw):  # type: ignore[no-untyped-def]
        calls.append((str(kv), len(texts)))
        shadowed.append([str(c) for c in cs])
        return real_tf(texts, kv, cs, *args, **kw)

    eng.greedy = greedy  # type: ignore[method-assign]
    eng.greedy_teacher_forced = greedy_tf  # type: ignore[method-assign]
    return calls, shadowed


@pytest.fixture(scope="module")
def eos_model(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> tuple[Path, int]:
    """The tiny model with an EOS that stops the reference early on exactly one prompt (same
    weights, so the same trajectories up to that token), and that prompt's index."""
    with Engine(tiny_model, n_threads=2) as eng:
        ref = eng.greedy(PROMPTS, F16, n_predict=24, ctx=128)
    for i, traj in enumerate(ref):
        for k in range(2, 12):
            tok = int(traj[k])
            if tok not in traj[:k] and all(tok not in r for j, r in enumerate(ref) if j != i):
                path = write_tiny_model(tmp_path_factory.mktemp("eos") / "eos.gguf", eos_id=tok)
                return path, i
    raise AssertionError("no token stops exactly one reference trajectory early")


def test_verification_equals_decoding_and_decodes_only_what_it_must(
    eos_model: tuple[Path, int],
) -> None:
    model, early = eos_model
    with Engine(model, n_threads=2) as eng:
        decoded = run_trajectories(eng, PROMPT_SET, reference=F16, candidates=[Q4_1],
                                   n_predict=24, ctx=128, method="decode")[Q4_1]
        calls, shadowed = _counting(eng)
        verified = run_trajectories(eng, PROMPT_SET, reference=F16, candidates=[Q4_1],
                                    n_predict=24, ctx=128, method="verify")[Q4_1]
    assert isinstance(decoded, dict) and isinstance(verified, dict)
    # one reference pass with the candidate riding along, then the candidate decoded on from
    # its divergence on the one prompt whose reference stopped early, and nowhere else
    assert shadowed == [[Q4_1]]
    assert calls == [(F16, len(PROMPTS)), (Q4_1, 1)]
    assert verified["score"] == decoded["score"] < 100
    assert verified["trajectory_method"] == "verify" and decoded["trajectory_method"] == "decode"
    assert (verified["method_version"], decoded["method_version"]) == ("2", "1")
    assert verified["divergence"] == decoded["divergence"]
    # the drift diagnostics: verification reads each prompt up to its first divergence only
    tf = verified["teacher_forced"]
    assert tf["span"] == "until the first divergence"
    assert decoded["teacher_forced"]["span"] == "whole trajectories"
    assert tf["n_positions"] == sum(
        p["ref_length"] if p["matched"] else p["prefix_agreement_length"] + 1
        for p in verified["per_prompt"]) < decoded["teacher_forced"]["n_positions"]
    for i, (v, d) in enumerate(zip(verified["per_prompt"], decoded["per_prompt"], strict=True)):
        assert v["prefix_agreement_length"] == d["prefix_agreement_length"]
        assert v["ref_token_ids"] == d["ref_token_ids"]
        if i == early or d["matched"]:
            # stopped early: the candidate's whole trajectory, decoded on from its divergence
            assert v["cand_complete"] is True
            assert v["cand_token_ids"] == d["cand_token_ids"]
            assert v["cand_length"] == d["cand_length"]
        else:
            # the reference ran to n_predict: known up to the divergence token, length unknown
            assert v["ref_length"] == 24 and v["cand_complete"] is False
            assert v["cand_length"] is None
            assert v["cand_token_ids"] == d["cand_token_ids"][: v["prefix_agreement_length"] + 1]
    assert verified["per_prompt"][early]["ref_length"] < 24
    assert not verified["per_prompt"][early]["matched"]
    assert verified["n_cand_decoded_after_divergence"] == 1
    assert verified["mean_cand_length"] is None and decoded["mean_cand_length"] > 0
    assert any("not decoded after it" in n for n in verified["notes"])


def test_incomplete_candidates_are_scored_against_the_reference_length() -> None:
    prompts = [Prompt("a", "x", "a"), Prompt("b", "x", "b")]
    # the reference ran to n_predict=4 on both; the candidate is known up to its divergence
    got = score_trajectories(prompts, [[1, 2, 3, 4], [5, 6, 7, 8]], [[1, 9], [5, 6, 7, 8]], 4,
                             cand_complete=[False, True])
    assert got["score"] == pytest.approx(100 * (1 + 4) / 8)
    assert [p["cand_length"] for p in got["per_prompt"]] == [None, 4]
    assert got["mean_cand_length"] is None and got["full_match_rate"] == 0.5
    # a candidate marked incomplete must end at a divergence inside the reference
    with pytest.raises(UsageError, match="end at that divergence"):
        score_trajectories(prompts[:1], [[1, 2, 3, 4]], [[1, 2]], 4, cand_complete=[False])


def test_demo_model_verification_agrees_with_decoding(demo_engine: Engine) -> None:
    """On the real model the two methods find the same prefix on (nearly) every prompt: where
    they differ the teacher-forced and decoded shapes broke a near tie differently (measured
    0 of 36 on an AMD AVX-512 machine, benchmarks/RESULTS.md)."""
    prompts = load_prompts(None)
    kw: dict[str, Any] = dict(reference=F16, candidates=["ctk=q4_0,ctv=q4_0"], n_predict=32)
    [v] = run_trajectories(demo_engine, prompts, method="verify", **kw).values()
    [d] = run_trajectories(demo_engine, prompts, method="decode", **kw).values()
    assert isinstance(v, dict) and isinstance(d, dict)
    differ = [a["id"] for a, b in zip(v["per_prompt"], d["per_prompt"], strict=True)
              if a["prefix_agreement_length"] != b["prefix_agreement_length"]]
    assert len(differ) <= 2, differ
    assert abs(v["score"] - d["score"]) < 5.0
    assert v["score"] < 100 and v["divergence"]["n_divergences"] > 0
    for a in v["per_prompt"]:
        if not a["matched"]:
            j = a["prefix_agreement_length"]
            assert a["cand_token_ids"][:j] == a["ref_token_ids"][:j]
            assert a["cand_token_ids"][j] != a["ref_token_ids"][j]


def test_shadows_stop_at_their_first_divergence(tiny_engine: Engine) -> None:
    """Until divergence, each candidate's rows of a prompt end at its first top-1 miss (that row
    included) and match the reference token before it; the reference decode does not move."""
    q4 = "ctk=q4_0,ctv=q4_0"
    full = tiny_engine.greedy_teacher_forced(PROMPTS, F16, [q4, Q4_1], n_predict=40, ctx=256)
    cut = tiny_engine.greedy_teacher_forced(PROMPTS, F16, [q4, Q4_1], n_predict=40, ctx=256,
                                            until_divergence=True)
    stopped = 0
    for c in range(2):
        for i, ref in enumerate(cut[0]):
            assert ref.tolist() == full[0][i].tolist()
            rows, whole = cut[3][c][i], full[3][c][i]
            top = rows["argmax_cand"]
            assert whole["argmax_cand"].size == ref.size
            n = top.size
            assert (top[: n - 1] == ref[: n - 1]).all()
            if n < ref.size:
                assert top[n - 1] != ref[n - 1]
                stopped += 1
            # the first miss is where the whole pass has it (same tokens, noise-level shapes)
            miss = (whole["argmax_cand"] != ref).nonzero()[0]
            assert n == (int(miss[0]) + 1 if miss.size else ref.size)
    assert stopped > 0


def test_report_pages_say_what_was_not_decoded() -> None:
    """The HTML chart and table of a verified run: a candidate known only up to its divergence
    is drawn to the reference's length and said not to be decoded after it."""
    from refract.axes import registry
    from refract.report.svg import trajectory_chart

    prompts = [Prompt("a", "x", "first prompt"), Prompt("b", "x", "second prompt")]
    scored = score_trajectories(prompts, [[1, 2, 3, 4], [5, 6]], [[1, 9], [5, 6]], 4,
                                cand_complete=[False, True])
    svg = trajectory_chart(scored["per_prompt"], 4)
    assert "a (x): diverged at token 1; ref 4 tokens / cand not decoded after its divergence" in svg
    assert "b (x): full match; ref 2 / cand 2 tokens" in svg
    entry = dict(scored, trajectory_method="verify", trajectory_method_text="by verification")
    axis = registry.get("gtm")
    assert axis is not None
    html = axis.html_body({}, entry)
    assert "not decoded after the divergence where the reference ran to its limit" in html
    assert "by verification" in html


def test_a_candidate_that_stops_at_its_divergence_is_complete(
    tmp_path: Path, tiny_model: Path
) -> None:
    """The reference runs to n_predict, the candidate's divergence token is an end of
    generation: its whole trajectory is known (length prefix + 1), nothing is decoded on."""
    with Engine(tiny_model, n_threads=2) as eng:
        first = run_trajectories(eng, PROMPT_SET, reference=F16, candidates=[Q4_1],
                                 n_predict=24, ctx=128, method="decode")[Q4_1]
    assert isinstance(first, dict)
    refs = [set(p["ref_token_ids"]) for p in first["per_prompt"]]
    pick = next((p, p["cand_token_ids"][p["prefix_agreement_length"]])
                for p in first["per_prompt"] if not p["matched"]
                and all(p["cand_token_ids"][p["prefix_agreement_length"]] not in r for r in refs))
    row, eos = pick
    model = write_tiny_model(tmp_path / "stop.gguf", eos_id=int(eos))
    with Engine(model, n_threads=2) as eng:
        calls, _ = _counting(eng)
        got = run_trajectories(eng, PROMPT_SET, reference=F16, candidates=[Q4_1],
                               n_predict=24, ctx=128)[Q4_1]
        verified_calls = list(calls)
        dec = run_trajectories(eng, PROMPT_SET, reference=F16, candidates=[Q4_1],
                               n_predict=24, ctx=128, method="decode")[Q4_1]
    assert isinstance(got, dict) and isinstance(dec, dict)
    assert verified_calls == [(F16, len(PROMPTS))]  # the reference pass; nothing decoded on
    [v] = [p for p in got["per_prompt"] if p["id"] == row["id"]]
    [d] = [p for p in dec["per_prompt"] if p["id"] == row["id"]]
    j = row["prefix_agreement_length"]
    assert v["ref_length"] == 24 and v["cand_complete"] is True
    assert v["cand_length"] == d["cand_length"] == j + 1
    assert v["cand_token_ids"] == d["cand_token_ids"]
