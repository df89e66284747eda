"""Axis A on the engine: batched greedy decoding with decode-time token capture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import shared_file
from refract import Engine
from refract.axes.trajectory import run_trajectories, run_trajectory
from refract.inputs.promptset import Prompt, load_prompts
from tinymodel import write_tiny_model

F16, Q4 = "ctk=f16,ctv=f16", "ctk=q4_0,ctv=q4_0"
PROMPTS = ["The capital of France is", "Two plus two equals", "Write a function that", "Hello"]


def test_ref_vs_ref_token_identical(tiny_engine: Engine) -> None:
    a = tiny_engine.greedy(PROMPTS, F16, n_predict=24, ctx=128)
    b = tiny_engine.greedy(PROMPTS, F16, n_predict=24, ctx=128, _slot=1)  # its own context
    assert len(a) == len(PROMPTS)
    for x, y in zip(a, b, strict=False):
        assert x.dtype == np.int32 and x.size == 24  # n_predict respected, no EOG here
        np.testing.assert_array_equal(x, y)


def test_other_sequences_do_not_change_a_trajectory(tiny_engine: Engine) -> None:
    base = tiny_engine.greedy(PROMPTS, F16, n_predict=24, ctx=128)
    # a different prompt of the same token length in slot 1: its tokens (prompt and generated)
    # differ, the batch composition does not, and nobody else's trajectory may move
    n1 = tiny_engine.tokenize(PROMPTS[1]).size
    other = next(
        s for s in ("Seven plus two equals", "Two plus six equals", "Three minus two is", "Big cat")
        if tiny_engine.tokenize(s).size == n1
    )
    changed = tiny_engine.greedy([PROMPTS[0], other, *PROMPTS[2:]], F16, n_predict=24, ctx=128)
    assert not np.array_equal(changed[1], base[1])
    for i in (0, 2, 3):
        np.testing.assert_array_equal(changed[i], base[i])


def test_eog_token_is_captured_and_stops_the_sequence(tmp_path: Path, tiny_engine: Engine) -> None:
    [traj] = tiny_engine.greedy([PROMPTS[0]], F16, n_predict=24, ctx=128)
    # make the 6th generated token the model's EOS: same weights, so the same trajectory,
    # which must now stop right after emitting it (and include it)
    k = next(i for i in range(3, 20) if traj[i] not in traj[:i])
    eos_model = write_tiny_model(tmp_path / "eos.gguf", eos_id=int(traj[k]))
    with Engine(eos_model, n_threads=2) as eng:
        out = eng.greedy([PROMPTS[0], PROMPTS[1]], F16, n_predict=24, ctx=128)
        np.testing.assert_array_equal(out[0], traj[: k + 1])
        assert eng.is_eog(int(out[0][-1]))
        solo = eng.greedy([PROMPTS[0]], F16, n_predict=24, ctx=128, sequential=True)
        np.testing.assert_array_equal(solo[0], out[0])


def test_context_limit_and_bad_input(tiny_engine: Engine) -> None:
    long_prompt = "word " * 200
    with pytest.raises(ValueError, match="no room"):
        tiny_engine.greedy([long_prompt], F16, n_predict=8, ctx=128)
    with pytest.raises(ValueError, match="n_predict"):
        tiny_engine.greedy(PROMPTS, F16, n_predict=0)
    [short] = tiny_engine.greedy(["Hi"], F16, n_predict=500, ctx=64)
    assert short.size == 64 - tiny_engine.tokenize("Hi").size  # stops at the context's end


def test_run_trajectory_axis_tiny(tiny_engine: Engine) -> None:
    prompts = [Prompt(f"p{i}", "factual", t) for i, t in enumerate(PROMPTS)]
    same = run_trajectory(tiny_engine, prompts, reference=F16, candidate=F16, n_predict=16, ctx=128)
    assert same["score"] == 100.0 and same["full_match_rate"] == 1.0
    assert same["teacher_forced"]["mean_kld"] == 0.0
    assert same["divergence"]["n_divergences"] == 0
    q4 = run_trajectory(tiny_engine, prompts, reference=F16, candidate=Q4, n_predict=16, ctx=128)
    assert 0 <= q4["score"] < 100
    assert q4["teacher_forced"]["mean_kld"] > 0
    div = q4["divergence"]
    assert div["n_divergences"] == sum(not p["matched"] for p in q4["per_prompt"])
    for d in div["per_prompt"]:
        assert 0 <= d["p_ref_of_cand_token"] <= d["p_ref_of_ref_token"] <= 1
        assert d["kl_at_divergence"] is not None and d["kl_at_divergence"] >= 0


def test_demo_model_trajectory(demo_engine: Engine) -> None:
    prompts = load_prompts(None)
    same = run_trajectory(demo_engine, prompts, reference=F16, candidate=F16, n_predict=32)
    assert same["score"] == 100.0
    assert all(p["ref_token_ids"] == p["cand_token_ids"] for p in same["per_prompt"])
    q4 = run_trajectory(demo_engine, prompts, reference=F16, candidate=Q4, n_predict=32)
    assert q4["score"] < 100
    assert q4["divergence"]["n_divergences"] > 0
    assert 0 <= q4["divergence"]["near_tie_fraction"] <= 1


def test_v01_prompt_file_decodes(tiny_engine: Engine) -> None:
    prompts = load_prompts(shared_file("refract-prompts-v0.1.jsonl"))
    out = tiny_engine.greedy([p.prompt for p in prompts], F16, n_predict=4, ctx=128)
    assert len(out) == 30 and all(o.size == 4 for o in out)


@pytest.mark.parametrize("method", ["verify", "decode"])
def test_reference_decoded_once_for_several_candidates(tiny_model: Path, method: str) -> None:
    prompts = [Prompt(f"p{i}", "factual", t) for i, t in enumerate(PROMPTS)]
    cands = ["ctk=q8_0,ctv=q8_0", Q4, "ctk=q4_1,ctv=q4_1"]
    with Engine(tiny_model, n_threads=2) as eng:
        calls: list[str] = []
        shadowed: list[list[str]] = []
        real, real_tf = eng.greedy, eng.greedy_teacher_forced

        def counting(texts, kv, *args, **kw):  # type: ignore[no-untyped-def]
            calls.append(str(kv))
            return real(texts, kv, *args, **kw)

        def counting_tf(texts, kv, cs, *args, **kw):  # type: ignore[no-untyped-def]
            calls.append(str(kv))
            shadowed.append(list(cs))
            return real_tf(texts, kv, cs, *args, **kw)

        eng.greedy = counting  # type: ignore[method-assign]
        eng.greedy_teacher_forced = counting_tf  # type: ignore[method-assign]
        together = run_trajectories(eng, prompts, reference=F16, candidates=cands,
                                    n_predict=8, ctx=128, method=method)  # type: ignore[arg-type]
        # one reference decode, every candidate teacher-forced along it; by decode each
        # candidate also decodes its own, by verification none does (no reference stops
        # before n_predict here, so nothing is left to decode)
        assert calls.count(F16) == 1 and shadowed == [cands]
        assert len(calls) == (4 if method == "decode" else 1)
        # a later call on the same engine: the reference decodes again (its rows are needed),
        # token-identical to the cached trajectories, and every number equals the joint run
        for c in cands:
            alone = run_trajectory(eng, prompts, reference=F16, candidate=c, n_predict=8,
                                   ctx=128, method=method)  # type: ignore[arg-type]
            res = together[c]
            assert isinstance(res, dict)
            assert alone["score"] == res["score"]
            assert alone["teacher_forced"] == res["teacher_forced"]
            assert alone["divergence"] == res["divergence"]


def test_teacher_forced_rows_follow_the_reference_decode(tiny_engine: Engine) -> None:
    """Every teacher-forced row pairs the reference row that chose a token with the
    candidate's row for the same position, across shadow chunks and prompt groups."""
    prompts = [*PROMPTS, "Once upon a time", "The weather today"]
    # ctx 256 and 6 prompts: 42 steps per shadow chunk, so 100 steps take three chunks;
    # group 4 decodes the prompts as two groups in the same contexts
    for group in (64, 4):
        toks, _, lps, [tf] = tiny_engine.greedy_teacher_forced(
            prompts, F16, [Q4], n_predict=100, ctx=256, group=group, topk=4)
        plain = tiny_engine.greedy(prompts, F16, n_predict=100, ctx=256, group=group)
        for i, p in enumerate(prompts):
            rows = tf[i]
            np.testing.assert_array_equal(toks[i], plain[i])  # candidates move no token
            assert rows["kld"].size == toks[i].size == 100
            # the reference side is the decode's own row: its argmax is the token generated
            # and its log-prob of that token is the step's top-1 log-prob
            np.testing.assert_array_equal(rows["argmax_ref"], toks[i])
            np.testing.assert_allclose(rows["logp_ref"], lps[i][:, 0], atol=1e-4)
            # the candidate side is the candidate teacher-forced along that trajectory
            pid = tiny_engine.prompt_ids(p)
            seq = np.concatenate([pid, toks[i]]).astype(np.int32)
            [old] = tiny_engine.compare_sequence(seq, F16, [Q4], first=pid.size - 1,
                                                 last=pid.size + toks[i].size - 2, ctx=256)
            np.testing.assert_allclose(rows["logp_cand"], old["logp_cand"], atol=1e-3)
            assert np.isfinite(rows["kld"]).all() and (rows["kld"] >= -1e-9).all()


def test_topk_logprobs_describe_each_decode_step(tiny_engine: Engine) -> None:
    plain = tiny_engine.greedy(PROMPTS, F16, n_predict=16, ctx=128)
    out = tiny_engine.greedy(PROMPTS, F16, n_predict=16, ctx=128, topk=16)
    assert isinstance(out, tuple)
    toks, top_ids, top_lps = out
    for i, prompt in enumerate(PROMPTS):
        traj, ids, lps = toks[i], top_ids[i], top_lps[i]
        np.testing.assert_array_equal(traj, plain[i])  # asking for top-k changes no token
        assert ids.shape == lps.shape == (traj.size, 16)
        np.testing.assert_array_equal(ids[:, 0], traj)  # greedy = the top-1 of its own step
        assert np.all(np.diff(lps, axis=1) <= 0) and np.all(lps <= 0)
        assert np.all(np.logaddexp.reduce(lps.astype(np.float64), axis=1) <= 1e-6)
        assert all(len(set(row.tolist())) == 16 for row in ids)
        # teacher-forced over prompt + trajectory: the log-prob of each generated token agrees
        seq = np.concatenate([tiny_engine.prompt_ids(prompt), traj]).astype(np.int32)
        p = seq.size - traj.size
        [tf] = tiny_engine.compare_sequence(seq, F16, [F16], first=p - 1, ctx=128)
        np.testing.assert_allclose(tf["logp_ref"], lps[:, 0], atol=2e-3)
        np.testing.assert_array_equal(tf["rank_ref"], 0)


def test_candidates_ride_along_in_groups_that_fit_in_memory(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the memory available holds the reference and one candidate context only, each
    candidate gets its own reference decode, and no number changes."""
    prompts = [Prompt(f"p{i}", "factual", t) for i, t in enumerate(PROMPTS)]
    cands = ["ctk=q8_0,ctv=q8_0", Q4]
    with Engine(tiny_model, n_threads=2) as eng:
        joint = run_trajectories(eng, prompts, reference=F16, candidates=cands, n_predict=8,
                                 ctx=128)
    with Engine(tiny_model, n_threads=2) as eng:
        n_seq = len(PROMPTS)
        per = max(eng.estimate_context_bytes(c, 128, n_seq, n_seq) for c in cands)
        room = (eng.estimate_context_bytes(F16, 128, n_seq, n_seq)
                + eng.shadow_buffer_bytes(128, n_seq) + per + per // 2)
        monkeypatch.setenv("REFRACT_MEMORY_LIMIT", str(room))
        shadowed: list[list[str]] = []
        real_tf = eng.greedy_teacher_forced

        def counting_tf(texts, kv, cs, *args, **kw):  # type: ignore[no-untyped-def]
            shadowed.append(list(cs))
            return real_tf(texts, kv, cs, *args, **kw)

        eng.greedy_teacher_forced = counting_tf  # type: ignore[method-assign]
        split = run_trajectories(eng, prompts, reference=F16, candidates=cands, n_predict=8,
                                 ctx=128)
    assert shadowed == [[cands[0]], [cands[1]]]
    for c in cands:
        a, b = joint[c], split[c]
        assert isinstance(a, dict) and isinstance(b, dict)
        assert a["score"] == b["score"] and a["teacher_forced"] == b["teacher_forced"]


def test_a_candidate_failing_along_the_reference_costs_only_itself(tiny_model: Path) -> None:
    from refract.engine.facade import NonFiniteLogits

    prompts = [Prompt(f"p{i}", "factual", t) for i, t in enumerate(PROMPTS)]
    q8 = "ctk=q8_0,ctv=q8_0"
    with Engine(tiny_model, n_threads=2) as eng:
        alone = run_trajectory(eng, prompts, reference=F16, candidate=q8, n_predict=8, ctx=128)
    with Engine(tiny_model, n_threads=2) as eng:
        shadowed: list[list[str]] = []
        real_tf = eng.greedy_teacher_forced

        def failing(texts, kv, cs, *args, **kw):  # type: ignore[no-untyped-def]
            shadowed.append(list(cs))
            if Q4 in cs:
                raise NonFiniteLogits(Q4, 3, 40, "compare")
            return real_tf(texts, kv, cs, *args, **kw)

        eng.greedy_teacher_forced = failing  # type: ignore[method-assign]
        out = run_trajectories(eng, prompts, reference=F16, candidates=[Q4, q8], n_predict=8,
                               ctx=128)
    assert shadowed == [[Q4, q8], [q8]]  # decoded again without the failing one
    assert isinstance(out[Q4], NonFiniteLogits) and out[Q4].label == Q4
    res = out[q8]
    assert isinstance(res, dict)
    assert res["score"] == alone["score"] and res["teacher_forced"] == alone["teacher_forced"]


def test_teacher_forced_decode_edges(tiny_engine: Engine) -> None:
    # no prompts: nothing decoded, one empty row list per candidate
    assert tiny_engine.greedy_teacher_forced([], F16, [Q4], n_predict=4, ctx=128) == (
        [], [], [], [[]])
    # one string is not a list of prompts (it would decode one prompt per character)
    with pytest.raises(TypeError, match="not one string"):
        tiny_engine.greedy_teacher_forced(PROMPTS[0], F16, [Q4], n_predict=4, ctx=128)
    # a shadow in the generating context's own slot would decode into that very context
    ref = tiny_engine.kv(F16, slot=0)
    with pytest.raises(ValueError, match="another context slot"):
        tiny_engine._m.greedy(ref, [tiny_engine.prompt_ids(PROMPTS[0])], 4, 128, 64, 0, None,
                              [ref])
