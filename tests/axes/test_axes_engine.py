"""Axes C (R-NIAH) and D (PLAD) end to end on the engine, with the model's chat template."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import shared_file
from refract import Engine
from refract.axes.plad import run_plad
from refract.axes.rniah import DEFAULT_POSITIONS, is_hit, run_rniah, schedule_rniah
from refract.inputs.chat import ChatTemplateError
from refract.inputs.promptset import Prompt, load_prompts
from refract.kvconfig import KVConfig
from tinymodel import write_tiny_model

F16, Q4 = "ctk=f16,ctv=f16", "ctk=q4_0,ctv=q4_0"


@pytest.fixture(scope="module")
def chat_engine(tiny_chat_model: Path):
    with Engine(tiny_chat_model, n_threads=2) as eng:
        yield eng


@pytest.fixture(scope="module")
def haystack() -> str:
    return shared_file("wikitext-2-test.txt").read_text(encoding="utf-8")[:400_000]


def test_chat_template_from_gguf_is_used(chat_engine: Engine, tiny_engine: Engine) -> None:
    text = chat_engine.render_chat("Hi there", system="Be brief.")
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there")
    assert text.endswith("<|im_start|>assistant\n") and not chat_engine.chat.used_fallback
    ids = chat_engine.prompt_ids("Hi there", chat_template=True)
    assert int(ids[1]) == int(chat_engine.tokenize("<|im_start|>", add_special=False,
                                                    parse_special=True)[0])
    # no template in the GGUF: ChatML fallback, and it says so
    assert tiny_engine.chat.used_fallback
    assert tiny_engine.render_chat("Hi").endswith("<|im_start|>assistant\n")


def test_rniah_end_to_end_on_tiny_model(chat_engine: Engine, haystack: str) -> None:
    same = run_rniah(chat_engine, haystack, reference=F16, candidate=F16, up_to=4096,
                     n_predict=16)
    assert same["n_cells"] == 3 and [c["length"] for c in same["cells"]] == [4096] * 3
    assert same["score"] == 100.0
    for c in same["cells"]:
        assert c["base_acc"] == c["cand_acc"] and c["degradation"] == 0.0
        assert c["needle_logprob_ref"] == c["needle_logprob_cand"] < 0
    # a random model never retrieves the needle: low confidence, reported not hidden
    assert same["confidence"] == "low"
    # cells of one length share the haystack before the earlier insertion point
    # (0.1 L + 0.5 L of 3 L: the most a prefix chain can share)
    assert same["prefill"]["reused_prefix_tokens"] > 0.18 * same["prefill"]["prompt_tokens"]
    q4 = run_rniah(chat_engine, haystack, reference=F16, candidate=Q4, up_to=4096, n_predict=16)
    assert any(c["needle_logprob_cand"] != c["needle_logprob_ref"] for c in q4["cells"])


def test_rniah_haystack_too_short_skips_cells(chat_engine: Engine) -> None:
    res = run_rniah(chat_engine, "A short text. " * 100, reference=F16, candidate=F16,
                    up_to=4096, n_predict=8)
    assert res["n_cells"] == 0 and len(res["skipped_cells"]) == 3
    assert any("haystack has 1400 characters" in n for n in res["notes"])


def test_plad_end_to_end_on_tiny_model(chat_engine: Engine) -> None:
    prompts = load_prompts(None)[:12]
    same = run_plad(chat_engine, prompts, reference=F16, candidate=F16, n_predict=12, ctx=256)
    assert same["score"] == 100.0 and same["per_prompt"]
    assert all(c["excess_drift"] == 0.0 for c in same["per_prompt"])
    q4 = run_plad(chat_engine, prompts, reference=F16, candidate=Q4, n_predict=12, ctx=256)
    assert 0 <= q4["score"] <= 100 and len(q4["per_prompt"]) == len(same["per_prompt"])


def test_plad_fallback_template_is_reported(tiny_engine: Engine) -> None:
    prompts = [Prompt("a", "factual", "The big dog is fast."), Prompt("b", "code", "Show me.")]
    res = run_plad(tiny_engine, prompts, reference=F16, candidate=F16, n_predict=6, ctx=128)
    assert res["chat_template_fallback"] is True
    assert any("ChatML" in n for n in res["notes"])


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{% include '/etc/passwd' %}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{% for i in range(10**9) %}{% for j in range(10**9) %}x{% endfor %}{% endfor %}",
    ],
)
def test_hostile_template_fails_safely(tmp_path: Path, template: str) -> None:
    model = write_tiny_model(tmp_path / "hostile.gguf", chat_template=template)
    with Engine(model) as eng:
        with pytest.raises(ChatTemplateError, match="hostile.gguf"):
            eng.greedy(["hello"], F16, n_predict=4, ctx=128, chat_template=True)
        # the engine is still usable afterwards
        assert eng.greedy(["hello"], F16, n_predict=4, ctx=128)[0].size == 4


def test_demo_rniah_and_plad_ref_vs_ref(demo_engine: Engine, haystack: str) -> None:
    r = run_rniah(demo_engine, haystack, reference=F16, candidate=F16, up_to=4096, n_predict=48)
    assert r["n_cells"] == 3 and r["score"] == 100.0
    assert all(c["base_acc"] == c["cand_acc"] for c in r["cells"])
    p = run_plad(demo_engine, load_prompts(None), reference=F16, candidate=F16, n_predict=24)
    assert p["score"] == 100.0
    assert p["per_perturbation_score"]["paraphrase"] == 100.0  # our set fires paraphrase


# ------------------------------------------------------------------ shared reference, batching

Q8 = "ctk=q8_0,ctv=q8_0"
Q8V = "ctk=f16,ctv=q8_0"


def _count_decodes(eng: Engine, attr: str) -> dict[str, int]:
    """Wraps ``eng.<attr>`` (instance-level) to count calls per KV label."""
    calls: dict[str, int] = {}
    inner = getattr(eng, attr)

    def counted(*args: object, **kw: object) -> object:
        label = KVConfig.parse(str(args[1])).label
        calls[label] = calls.get(label, 0) + 1
        return inner(*args, **kw)

    setattr(eng, attr, counted)
    return calls


def test_rniah_reference_decoded_once_for_two_candidates(tiny_chat_model: Path,
                                                          haystack: str) -> None:
    kw = dict(reference=F16, up_to=4096, positions=(0.1, 0.9), n_predict=8)
    with Engine(tiny_chat_model, n_threads=2) as eng:
        calls = _count_decodes(eng, "generate_cells")
        first = run_rniah(eng, haystack, candidate=Q8, **kw)
        second = run_rniah(eng, haystack, candidate=Q8V, **kw)
        assert calls == {F16: 1, Q8: 1, Q8V: 1}
        assert (eng.reference_cache.misses, eng.reference_cache.hits) == (1, 1)
    with Engine(tiny_chat_model, n_threads=2) as fresh:
        alone = run_rniah(fresh, haystack, candidate=Q8V, **kw)
    assert second == alone
    assert [c["needle_logprob_ref"] for c in first["cells"]] == [
        c["needle_logprob_ref"] for c in second["cells"]]


def test_plad_reference_decoded_once_in_one_batch(tiny_chat_model: Path) -> None:
    prompts = load_prompts(None)[:20]  # > 64 texts: one batch all the same
    kw = dict(reference=F16, n_predict=6, ctx=128)
    with Engine(tiny_chat_model, n_threads=2) as eng:
        calls = _count_decodes(eng, "greedy")
        groups: list[int] = []
        inner = eng.greedy

        def spy(*args: object, **k: object) -> object:
            groups.append(int(k["group"]))  # type: ignore[call-overload]
            return inner(*args, **k)

        eng.greedy = spy  # type: ignore[method-assign]
        run_plad(eng, prompts, candidate=Q8, **kw)
        second = run_plad(eng, prompts, candidate=Q8V, **kw)
        assert calls == {F16: 1, Q8: 1, Q8V: 1}
    n_texts = second["decode"]["n_texts"]
    assert n_texts > 64 and groups == [n_texts] * 3 and second["decode"]["batch"] == n_texts
    with Engine(tiny_chat_model, n_threads=2) as fresh:
        assert run_plad(fresh, prompts, candidate=Q8V, **kw) == second


def _without_decode_fields(axis: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in axis.items() if k not in ("decode", "generation")}


def _check_early_stop(eng: Engine, cells: list[list[tuple[np.ndarray, np.ndarray]]], ctx: int,
                      n_predict: int, middle: int) -> None:
    """A stop string that cell `middle` first produces at its token >= 8: that cell stops right
    there, every cell's tokens are a prefix of the full-length run's, the others are cut only
    where they produce the string too; hits (is_hit on the stop string) are the same."""
    full = eng.generate_cells(cells, F16, n_predict=n_predict, ctx=ctx)
    toks = [r["tokens"] for r in full["groups"][0]]
    assert all(r["reused_prefix"] > 0 for r in full["groups"][0][1:])  # copied prefixes

    def text(n: int) -> str:
        return eng.detokenize(toks[middle][:n]).lower()

    cut, stop = next((i, text(i)[-4:].upper()) for i in range(8, toks[middle].size)
                     if text(i)[-4:].isascii() and text(i)[-4:].strip()
                     and text(i)[-4:] not in text(i - 1))
    early = eng.generate_cells(cells, F16, n_predict=n_predict, ctx=ctx, stop=stop)
    for r, t in zip(early["groups"][0], toks, strict=True):
        got = r["tokens"]
        assert np.array_equal(got, t[: got.size])  # a prefix of the full-length run
        assert is_hit(eng.detokenize(got), stop) == is_hit(eng.detokenize(t), stop)
        assert r["stopped_early"] == (got.size < t.size)
        if r["stopped_early"]:
            assert not is_hit(eng.detokenize(got[:-1]), stop)
    assert early["groups"][0][middle]["stopped_early"]
    assert early["groups"][0][middle]["tokens"].size == cut
    assert early["generated_tokens"] <= full["generated_tokens"]


def test_generate_cells_early_stop_cuts_only_the_cell_that_matched(chat_engine: Engine,
                                                                     haystack: str) -> None:
    prompts = [chat_engine.prompt_ids("Summarize.", chat_template=True, system=haystack[:n])
               for n in (1200, 600, 300)]
    _check_early_stop(chat_engine, [[(p, np.zeros(0, dtype=np.int32)) for p in prompts]],
                      ctx=1024, n_predict=24, middle=1)


def test_rniah_early_stop_equals_full_length_on_tiny_model(chat_engine: Engine,
                                                            haystack: str) -> None:
    kw = dict(reference=F16, candidate=Q8, up_to=4096, n_predict=12)
    early = run_rniah(chat_engine, haystack, early_stop=True, **kw)
    full = run_rniah(chat_engine, haystack, early_stop=False, **kw)
    assert early["decode"] == "parallel-cells, early-stop"
    assert full["decode"] == "parallel-cells, full-length"
    assert _without_decode_fields(early) == _without_decode_fields(full)


def test_demo_rniah_early_stop_equals_full_length(demo_engine: Engine, haystack: str) -> None:
    # the real R-NIAH prompts of the 4096 cells; the demo model rarely names the keyword
    # there, so the stop string is a piece of what it does generate
    sched = schedule_rniah(demo_engine, haystack, up_to=4096, lengths=[4096],
                      positions=DEFAULT_POSITIONS, n_trials=1, seed=42, n_predict=24,
                      early_stop=True)
    [group] = sched.groups
    cells = [[(sched.prompts[i], np.asarray(sched.probes[i], dtype=np.int32)) for i in group]]
    _check_early_stop(demo_engine, cells, ctx=sched.ctx, n_predict=24, middle=1)


def test_generate_cells_reuses_prefixes_across_groups(chat_engine: Engine, haystack: str) -> None:
    long, mid, short = (chat_engine.prompt_ids("Summarize.", chat_template=True,
                                               system=haystack[:n]) for n in (1200, 600, 300))
    no_probe = np.zeros(0, dtype=np.int32)
    # group 2's prompt starts like group 1's first: its KV is taken over, not prefilled again
    split = chat_engine.generate_cells([[(mid, no_probe), (short, no_probe)], [(long, no_probe)]],
                                       F16, n_predict=4, ctx=1024)
    together = chat_engine.generate_cells([[(long, no_probe)]], F16, n_predict=4, ctx=1024)
    [[r_mid, r_short], [r_long]] = split["groups"]
    common = int(np.argmax(long[: mid.size] != mid))  # where `long` and `mid` part
    assert r_short["reused_prefix"] > 0 and r_long["reused_prefix"] >= common > 0
    assert split["reused_tokens"] == r_short["reused_prefix"] + r_long["reused_prefix"]
    assert split["prompt_tokens"] == long.size + mid.size + short.size and split["n_seq"] == 2
    # the taken-over KV is the KV a fresh prefill computes (same tokens, same positions)
    assert np.array_equal(r_long["tokens"], together["groups"][0][0]["tokens"])
    assert r_long["tokens"].size == 4


def test_nonfinite_logits_stop_rniah_naming_the_config(chat_engine: Engine, haystack: str) -> None:
    from refract import _core
    from refract.engine.facade import NonFiniteLogits

    no_probe = np.zeros(0, dtype=np.int32)
    prompt = chat_engine.prompt_ids("Summarize.", chat_template=True, system=haystack[:300])
    try:
        _core._test_poison(KVConfig.parse(Q8).label, float("nan"))
        with pytest.raises(NonFiniteLogits) as err:
            chat_engine.generate_cells([[(prompt, no_probe)]], Q8, n_predict=4, ctx=512)
        assert (err.value.label, err.value.where) == (KVConfig.parse(Q8).label, "generate")
        assert err.value.n_rows == err.value.n_total == 4  # every row read was poisoned
        with pytest.raises(NonFiniteLogits, match="q8_0"):
            run_rniah(chat_engine, haystack, reference=F16, candidate=Q8, up_to=4096,
                      positions=(0.5,), n_predict=4)
    finally:
        _core._test_poison("", 0.0)
    # once the hook is cleared the same config decodes clean again
    assert chat_engine.generate_cells([[(prompt, no_probe)]], Q8, n_predict=4,
                                      ctx=512)["n_nonfinite_rows"] == 0
