"""Axis C (R-NIAH): keyword, haystack planning, needle placement and scoring."""

from __future__ import annotations

import re

import pytest

from conftest import SHARED_DATA
from refract.axes.rniah import (
    CPT_HEAD_CHARS,
    NEEDLE,
    QUESTION,
    NeedleLogprob,
    estimate_chars_per_token,
    estimate_tokens,
    extract_keyword,
    insert_needle,
    is_hit,
    plan_lengths,
    plan_rniah,
    rniah_axis,
    score_rniah,
    snap_to_sentence_end,
)

DATA = SHARED_DATA
WIKITEXT = DATA / "wikitext-2-test.txt"


def four_chars_per_token(text: str) -> list[int]:
    return list(range(len(text) // 4))


def test_constants() -> None:
    assert NEEDLE == "Note: APRICOT-7-BLUE is the rare paint color featured in this article."
    assert QUESTION == "Q: What is the rare paint color featured in this article?\nA:"


def test_extract_keyword() -> None:
    assert extract_keyword(NEEDLE) == "APRICOT-7-BLUE"
    assert extract_keyword("Code A-B and CODE-NAME-FOO here") == "CODE-NAME-FOO"
    assert extract_keyword("ABC and XYZ") == "ABC"  # first on ties
    assert extract_keyword("see 7-ABC") == "ABC"  # must start with a letter
    assert extract_keyword("Note: AB is short; Zebra-9") == "Zebra-9"  # fallback: last word
    assert extract_keyword("the marker is amber.") == "amber"
    with pytest.raises(ValueError):
        extract_keyword("   ")


def test_is_hit_case_insensitive_anywhere() -> None:
    assert is_hit("The color is **apricot-7-blue**.", "APRICOT-7-BLUE")
    assert is_hit("<think>APRICOT-7-Blue</think> no idea", "APRICOT-7-BLUE")
    assert not is_hit("APRICOT-7 BLUE", "APRICOT-7-BLUE")
    assert not is_hit("", "APRICOT-7-BLUE")


def test_chars_per_token_uses_head_only() -> None:
    seen: list[int] = []

    def tok(text: str) -> list[int]:
        seen.append(len(text))
        return list(range(len(text) // 2))

    assert estimate_chars_per_token("ab" * 50_000, tok) == pytest.approx(2.0)
    assert seen == [CPT_HEAD_CHARS]
    assert estimate_chars_per_token("", tok) == 4.0
    assert estimate_chars_per_token("abc", lambda t: []) == 4.0
    assert estimate_tokens(NEEDLE, 4.0) == len(NEEDLE) // 4
    assert estimate_tokens("ab", 10.0) == 1


def test_plan_lengths() -> None:
    assert plan_lengths(16384) == ([4096, 8192, 16384], [], None)
    assert plan_lengths(12000)[0] == [4096, 8192]
    kept, capped, note = plan_lengths(32768, n_ctx_train=8192)
    assert kept == [4096, 8192] and capped == [16384, 32768]
    assert note is not None and "n_ctx_train (8192)" in note
    assert plan_lengths(16384, n_ctx_train=16384) == ([4096, 8192, 16384], [], None)
    kept, capped, note = plan_lengths(16384, n_ctx_train=2048)
    assert kept == [] and capped == [4096, 8192, 16384] and note
    # issue 11: any length works, not only 4096 * 2**n; up_to below 4096 is that one length
    assert plan_lengths(lengths=[6000, 12288, 2048]) == ([2048, 6000, 12288], [], None)
    assert plan_lengths(2048) == ([2048], [], None)
    kept, capped, _ = plan_lengths(lengths=[6000, 12288], n_ctx_train=8192)
    assert kept == [6000] and capped == [12288]


def test_plan_rniah_at_any_length() -> None:
    hay = "The river runs to the sea. " * 4000

    def tok(s: str) -> list[int]:
        return [0] * max(1, len(s) // 4)

    plan = plan_rniah(hay, tok, lengths=[6000, 2048], n_predict=64)
    assert sorted({c.length for c in plan.cells}) == [2048, 6000]
    assert len(plan.cells) == 6 and plan.lengths == [2048, 6000]
    # a length shorter than the needle prompt itself plans nothing, and says why
    tiny = plan_rniah(hay, tok, lengths=[100], n_predict=64)
    assert tiny.cells == [] and "shorter than the needle prompt" in " ".join(tiny.notes)


def test_snap_left_candidate_first() -> None:
    # '.' + space at target-4 and target+4: equal distance, the left one wins.
    text = "aaa. bbbbbb. ccc"
    target = 7
    assert text[target - 4 : target - 2] == ". " and text[target + 4 : target + 6] == ". "
    assert snap_to_sentence_end(text, target) == target - 4 + 2
    assert snap_to_sentence_end(text, target + 1) == target + 4 + 2  # now the right is nearer


def test_snap_nearest_wins() -> None:
    text = "x" * 50 + ". " + "y" * 10 + ".\n" + "z" * 50
    left_dot, right_dot = 50, 62
    assert snap_to_sentence_end(text, 60) == right_dot + 2  # distance 2 vs 10
    assert snap_to_sentence_end(text, 53) == left_dot + 2  # distance 3 vs 9


def test_snap_rules() -> None:
    assert snap_to_sentence_end("abc.def ghi", 5) == 5  # '.' not followed by space/newline
    far = "a" * 300 + ". " + "b" * 300
    assert snap_to_sentence_end(far, 600 - 50) == 550  # nothing within 200 characters
    # Window [target-200, target+200): left reach 199, right reach 198 (the character after
    # the '.' must be inside the window too) -- refract-llm's bounds.
    assert snap_to_sentence_end(far, 100) == 100
    assert snap_to_sentence_end(far, 101) == 101
    assert snap_to_sentence_end(far, 102) == 302
    left = "a" * 100 + ". " + "b" * 400
    assert snap_to_sentence_end(left, 299) == 102
    assert snap_to_sentence_end(left, 300) == 300
    assert snap_to_sentence_end("abc. def", 0) == 0
    assert snap_to_sentence_end("abc. def", 99) == 8


def test_insert_needle_layout() -> None:
    chunk = "One two. Three four. Five six."
    system, at = insert_needle(chunk, "NEEDLE HERE.", 0.5)
    assert at == chunk.index("Five")  # the '.' at 19 is 4 from 15, the one at 7 is 8
    assert system == chunk[:at] + " NEEDLE HERE. " + chunk[at:]


def _haystack(n_chars: int) -> str:
    sentence = "The quick fox jumps over the lazy dog. "
    return (sentence * (n_chars // len(sentence) + 1))[:n_chars]


def test_plan_cell_arithmetic() -> None:
    hay = _haystack(200_000)
    plan = plan_rniah(hay, four_chars_per_token, up_to=16384, n_predict=256)
    cpt = plan.chars_per_token
    assert cpt == pytest.approx(4.0)
    overhead = len(NEEDLE) // 4 + len(QUESTION) // 4 + 256 + 16
    assert plan.overhead_tokens == overhead
    assert plan.lengths == [4096, 8192, 16384]
    assert [(c.length, c.position) for c in plan.cells] == [
        (n, p) for n in (4096, 8192, 16384) for p in (0.1, 0.5, 0.9)
    ]
    for cell in plan.cells:
        usable = int((cell.length - overhead) * 4.0)
        assert cell.haystack_chars == usable
        chunk = hay[:usable]
        assert cell.system == chunk[: cell.insert_at] + " " + NEEDLE + " " + chunk[cell.insert_at :]
        assert cell.user == QUESTION
        assert abs(cell.insert_at - int(usable * cell.position)) <= 200 + 2
        assert chunk[cell.insert_at - 2 : cell.insert_at] == ". "
    assert plan.keyword == "APRICOT-7-BLUE"
    assert plan.trial_seeds == [42]
    assert plan.skipped_cells == [] and plan.notes == []


def test_plan_trials_and_seeds() -> None:
    plan = plan_rniah(_haystack(50_000), four_chars_per_token, up_to=4096, n_trials=3, seed=7)
    assert plan.trial_seeds == [7, 8, 9] and plan.n_trials == 3


def test_short_haystack_skips_cells_with_note() -> None:
    hay = _haystack(30_000)  # 4096 fits (~15k chars), 8192 (~31.6k chars) does not
    plan = plan_rniah(hay, four_chars_per_token, up_to=16384)
    assert {c.length for c in plan.cells} == {4096}
    skipped = {(s["length"], s["position"]) for s in plan.skipped_cells}
    assert skipped == {(n, p) for n in (8192, 16384) for p in (0.1, 0.5, 0.9)}
    assert any("Skipped length=8192" in n and "30000 characters" in n for n in plan.notes)
    assert all(c.haystack_chars == int((4096 - plan.overhead_tokens) * 4.0) for c in plan.cells)


def test_capped_lengths_are_noted() -> None:
    plan = plan_rniah(_haystack(300_000), four_chars_per_token, up_to=65536, n_ctx_train=8192)
    assert plan.lengths == [4096, 8192]
    assert any("n_ctx_train (8192)" in n for n in plan.notes)
    assert {s["length"] for s in plan.skipped_cells} == {16384, 32768, 65536}


def test_plan_validation() -> None:
    with pytest.raises(ValueError):
        plan_rniah("x", four_chars_per_token, n_trials=0)
    with pytest.raises(ValueError):
        plan_rniah("x", four_chars_per_token, positions=(1.5,))
    with pytest.raises(ValueError, match="does not occur"):
        plan_rniah("x", four_chars_per_token, keyword="MAUVE")


def test_score_formula() -> None:
    hits = [
        (4096, 0.1, [True], [True]),
        (4096, 0.5, [True], [False]),  # degradation 1
        (4096, 0.9, [False], [True]),  # candidate better: degradation 0, not negative
        (8192, 0.1, [True, True], [True, False]),  # 0.5
    ]
    axis = rniah_axis(hits)
    assert axis["score"] == pytest.approx(100 * (1 - (0 + 1 + 0 + 0.5) / 4))
    assert [c["degradation"] for c in axis["cells"]] == [0.0, 1.0, 0.0, 0.5]
    assert axis["cells"][3] == {
        "length": 8192, "position": 0.1, "n_trials": 2, "base_acc": 1.0, "cand_acc": 0.5,
        "degradation": 0.5, "base_hits": 2, "cand_hits": 1,
    }
    assert axis["confidence"] == "ok"
    assert axis["base_acc_avg"] == pytest.approx(0.75)
    assert axis["needle_keyword"] == "APRICOT-7-BLUE" and axis["needle"] == NEEDLE
    assert axis["n_cells"] == 4


def test_low_confidence() -> None:
    low = rniah_axis([(4096, p, [p == 0.1], [False]) for p in (0.1, 0.5, 0.9)] + [
        (8192, p, [False], [False]) for p in (0.1, 0.5)
    ])  # base_acc_avg = 0.2 -> still ok
    assert low["confidence"] == "ok"
    lower = rniah_axis([(4096, 0.1, [True], [True])] + [
        (4096, p, [False], [False]) for p in (0.2, 0.3, 0.4, 0.5, 0.6)
    ])  # 1/6 < 0.2
    assert lower["confidence"] == "low" and lower["score"] == 100.0
    assert any("excluded from the composite" in n for n in lower["notes"])
    empty = rniah_axis([])
    assert empty["score"] == 0.0 and empty["confidence"] == "low" and empty["n_cells"] == 0


def test_score_rniah_end_to_end() -> None:
    plan = plan_rniah(_haystack(100_000), four_chars_per_token, up_to=8192, n_trials=2)
    n = len(plan.cells)
    ref = [["It is APRICOT-7-BLUE.", "apricot-7-blue"]] * n
    cand = [["It is APRICOT-7-BLUE.", "I don't know"]] + [["apricot-7-blue"] * 2] * (n - 1)
    logprobs = [NeedleLogprob(-1.0, -3.5, 0, 2, 6)] + [None] * (n - 1)
    axis = score_rniah(plan, ref, cand, logprobs=logprobs)
    assert axis["score"] == pytest.approx(100 * (1 - 0.5 / n))
    first = axis["cells"][0]
    assert first["needle_logprob_diff"] == pytest.approx(-2.5)
    assert first["needle_rank_cand"] == 2 and first["needle_n_tokens"] == 6
    assert "needle_logprob_ref" not in axis["cells"][1]
    assert axis["needle_logprob_mean_diff"] == pytest.approx(-2.5)
    assert axis["n_trials"] == 2 and axis["lengths"] == [4096, 8192]
    with pytest.raises(ValueError):
        score_rniah(plan, ref[:-1], cand)
    with pytest.raises(ValueError):
        score_rniah(plan, [["x"]] * n, [["x"]] * n)  # one trial, plan has two


def test_wikitext_haystack() -> None:
    if not WIKITEXT.is_file():
        pytest.skip(f"shared data not available: {WIKITEXT}")
    hay = WIKITEXT.read_text(encoding="utf-8")

    def words(text: str) -> list[str]:
        return re.findall(r"\w+|[^\w\s]", text)

    plan = plan_rniah(hay, words, up_to=16384)
    assert len(plan.cells) == 9 and plan.skipped_cells == []
    assert 2.0 < plan.chars_per_token < 8.0
    for cell in plan.cells:
        assert cell.system.count(NEEDLE) == 1
        before = cell.system[: cell.insert_at]
        assert before.endswith((". ", ".\n"))
        assert abs(cell.insert_at - int(cell.haystack_chars * cell.position)) < 202
