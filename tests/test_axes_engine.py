"""Axes C (R-NIAH) and D (PLAD) end to end on the engine, with the model's chat template."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import shared_file
from refract import Engine
from refract.axes.plad import run_plad
from refract.axes.rniah import run_rniah
from refract.chat import ChatTemplateError
from refract.promptset import Prompt, load_prompts
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
