"""Axis A on the engine: batched greedy decoding with decode-time token capture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import shared_file
from refract import Engine
from refract.axes.trajectory import run_trajectory
from refract.promptset import Prompt, load_prompts
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


def test_reference_decoded_once_for_several_candidates(tiny_model: Path) -> None:
    prompts = [Prompt(f"p{i}", "factual", t) for i, t in enumerate(PROMPTS)]
    with Engine(tiny_model, n_threads=2) as eng:
        calls: list[str] = []
        real = eng.greedy

        def counting(texts, kv, *args, **kw):  # type: ignore[no-untyped-def]
            calls.append(str(kv))
            return real(texts, kv, *args, **kw)

        eng.greedy = counting  # type: ignore[method-assign]
        for cand in ("ctk=q8_0,ctv=q8_0", Q4, "ctk=q4_1,ctv=q4_1"):
            run_trajectory(eng, prompts, reference=F16, candidate=cand, n_predict=8, ctx=128)
        assert calls.count(F16) == 1 and len(calls) == 4


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
