"""Axis D (PLAD): perturbations, token-level drift and scoring."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_DATA
from refract.axes.plad import (
    PERTURBATIONS,
    STOPWORDS,
    SYNONYMS,
    PladCellResult,
    drift,
    levenshtein,
    perturb,
    perturb_case,
    perturb_paraphrase,
    perturb_punct,
    perturb_typo,
    plad_axis,
    plan_plad,
    score_plad,
)

DATA = SHARED_DATA
PROMPTS_V01 = DATA / "refract-prompts-v0.1.jsonl"
EXAMPLES = DATA / "refract-examples"


def _load_prompts(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        pytest.skip(f"shared data not available: {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(x) for x in lines if x.strip() and not x.lstrip().startswith("#")]


# -- perturbation generators ------------------------------------------------------------


def test_tables_match_spec() -> None:
    assert len(STOPWORDS) == 41 and {"the", "i", "had", "those", "being"} <= STOPWORDS
    assert SYNONYMS["big"] == "large" and SYNONYMS["locate"] == "find"
    assert SYNONYMS["build"] == "construct" and "construct" not in SYNONYMS
    assert len(SYNONYMS) == 19
    assert PERTURBATIONS == ("typo", "case", "punct", "paraphrase")


def test_typo_known_values() -> None:
    # refract-llm's outputs for v0.1 prompts 0 and 25 with seed 42.
    assert perturb_typo("The capital of France is", random.Random(42)) == (
        "The acpital of France is"
    )
    assert perturb_typo("User: What time is it?\nAssistant:", random.Random(42 + 25)) == (
        "sUer: What time is it?\nAssistant:"
    )


def test_typo_skips() -> None:
    assert perturb_typo("def fib(n):\n    ", random.Random(0)) is None  # no 4+ letter word
    assert perturb_typo("The cat is on the mat", random.Random(0)) is None
    # 'root' swapped at position 1 ('oo') is unchanged -> skipped (v0.1 arith-004, seed 42).
    assert perturb_typo("The square root of 81 is", random.Random(42 + 8)) is None


def test_typo_edits_the_chosen_occurrence_only() -> None:
    text = "alpha beta alpha"
    seen_last = False
    for seed in range(200):
        out = perturb_typo(text, random.Random(seed))
        assert out is not None and len(out) == len(text)
        changed = [i for i, (a, b) in enumerate(zip(text, out, strict=True)) if a != b]
        assert len(changed) == 2 and changed[1] == changed[0] + 1
        if changed[0] >= 11:
            seen_last = True
            assert out.startswith("alpha beta ")
    assert seen_last


def test_typo_words_are_ascii_letter_runs() -> None:
    # Digits and '_' split words: 'is_prime' yields 'is' (stopword) and 'prime'.
    for seed in range(20):
        out = perturb_typo("x_prime42", random.Random(seed))
        assert out is not None and out.startswith("x_") and out.endswith("42")
    assert perturb_typo("é1234 über", random.Random(0)) is None  # 'ber' is too short


def test_case() -> None:
    assert perturb_case("SELECT name FROM users WHERE ") == "sELECT name fROM users wHERE "
    assert perturb_case("Q: Who painted the Mona Lisa?\nA:") == "Q: who painted the mona lisa?\nA:"
    assert perturb_case("Customer: I need help.") == "customer: I need help."
    assert perturb_case("// JavaScript x") == "// javaScript x"
    assert perturb_case("17 times 24 equals") is None
    assert perturb_case("A B C") is None  # single letters are not words


def test_punct() -> None:
    assert perturb_punct("The capital of France is") == "The capital of France is?"
    assert perturb_punct("Hello, how are you?") == "Hello, how are you"
    assert perturb_punct("The cat sat on the mat.") == "The cat sat on the mat"
    assert perturb_punct("squares = ") == "squares =? "
    assert perturb_punct("def fib(n):\n    ") == "def fib(n):?\n    "
    assert perturb_punct("Why?\n") == "Why\n"
    assert perturb_punct("") == "?"


def test_paraphrase() -> None:
    assert perturb_paraphrase("Show the results", random.Random(0)) == "Display the results"
    assert perturb_paraphrase("a big dog", random.Random(0)) == "a large dog"
    assert perturb_paraphrase("Make it", random.Random(0)) == "Create it"
    assert perturb_paraphrase("The capital of France", random.Random(0)) is None
    # Only table words are candidates; rng.choice picks among them in order of appearance.
    outs = {perturb_paraphrase("quick and tiny", random.Random(s)) for s in range(50)}
    assert outs == {"fast and tiny", "quick and small"}


def test_rng_is_shared_in_order() -> None:
    text = "Build a small quick house"
    for seed in range(30):
        rng = random.Random(seed + 3)
        words = ["Build", "small", "quick", "house"]  # non-stopwords of 4+ letters
        rng.choice(words)
        rng.randrange(0, 4)
        expected = perturb_paraphrase(text, rng)
        assert perturb(text, 3, seed)["paraphrase"] == expected
    # ...which differs from a fresh RNG for some seeds (so order matters).
    fresh = [perturb_paraphrase(text, random.Random(s + 3)) for s in range(30)]
    shared = [perturb(text, 3, s)["paraphrase"] for s in range(30)]
    assert fresh != shared


def test_rng_consumed_even_when_typo_skips() -> None:
    # Typo fires the RNG (choice + randrange) but skips on 'ee'; paraphrase follows it.
    text = "Make feet"
    for seed in range(100):
        rng = random.Random(seed)
        words = ["Make", "feet"]
        w = rng.choice(words)
        i = rng.randrange(0, 3)
        typo_skipped = (w, i) == ("feet", 1)
        expected = perturb_paraphrase(text, rng)
        got = perturb(text, 0, seed)
        assert got["paraphrase"] == expected == "Create feet"
        assert (got["typo"] is None) == typo_skipped


# -- the v0.1 prompt set ---------------------------------------------------------------


def test_v01_fires_84_cells() -> None:
    prompts = _load_prompts(PROMPTS_V01)
    plan = plan_plad(prompts, seed=42)
    counts = Counter(c.perturbation for c in plan.cells)
    assert len(plan.cells) == 84
    assert counts == {"typo": 28, "case": 26, "punct": 30}
    assert counts["paraphrase"] == 0
    assert len(plan.skipped) == 36
    assert len(plan.anchors) == 30
    texts = plan.texts()
    assert texts[:30] == [p["prompt"] for p in prompts]
    assert texts[30:] == [c.perturbed_prompt for c in plan.cells]


def test_v01_matches_refract_llm_reports() -> None:
    prompts = _load_prompts(PROMPTS_V01)
    reports = sorted(EXAMPLES.glob("*.json")) if EXAMPLES.is_dir() else []
    if not reports:
        pytest.skip("refract-llm example reports not available")
    plan = plan_plad(prompts, seed=42)
    ours = [(c.prompt_id, c.perturbation, c.perturbed_prompt) for c in plan.cells]
    for path in reports:
        plad = json.loads(path.read_text(encoding="utf-8"))["axes"]["plad"]
        theirs = [
            (r["prompt_id"], r["perturbation"], r["perturbed_prompt"]) for r in plad["per_prompt"]
        ]
        assert ours == theirs, path.name


def test_plan_subset_fires_same_cells() -> None:
    prompts = [("p0", "Build a big house"), ("p1", "Find the small key.")]
    full = plan_plad(prompts, seed=7)
    only = plan_plad(prompts, seed=7, perturbations=["paraphrase"])
    assert [c for c in full.cells if c.perturbation == "paraphrase"] == list(only.cells)
    assert only.perturbations == ("paraphrase",)
    with pytest.raises(ValueError, match="unknown PLAD perturbations"):
        plan_plad(prompts, perturbations=["shout"])


def test_plan_accepts_objects() -> None:
    class P:
        def __init__(self, id: str, prompt: str) -> None:
            self.id, self.prompt = id, prompt

    plan = plan_plad([P("a", "Hello World")])
    assert plan.prompt_ids == ("a",) and plan.anchors == ("Hello World",)


# -- Levenshtein and drift ---------------------------------------------------------------


def _reference_levenshtein(a: list[int], b: list[int]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


def test_levenshtein_known() -> None:
    assert levenshtein([], []) == 0
    assert levenshtein([], [1, 2, 3]) == 3
    assert levenshtein([1, 2, 3], []) == 3
    assert levenshtein([1, 2, 3], [1, 2, 3]) == 0
    assert levenshtein(list(b"kitten"), list(b"sitting")) == 3
    assert levenshtein(list(b"flaw"), list(b"lawn")) == 2
    assert levenshtein([1, 2, 3, 4], [2, 3, 4, 5]) == 2
    assert levenshtein(np.array([7] * 5), np.array([8] * 2)) == 5


def test_levenshtein_matches_reference_dp() -> None:
    rng = np.random.default_rng(1234)
    for _ in range(300):
        a = rng.integers(0, 4, size=int(rng.integers(0, 25))).tolist()
        b = rng.integers(0, 4, size=int(rng.integers(0, 25))).tolist()
        expected = _reference_levenshtein(a, b)
        assert levenshtein(a, b) == expected
        assert levenshtein(b, a) == expected
    big = rng.integers(0, 50_000, size=300)
    assert levenshtein(big, big[::-1].copy()) == _reference_levenshtein(
        big.tolist(), big[::-1].tolist()
    )


def test_levenshtein_rejects_2d() -> None:
    with pytest.raises(ValueError):
        levenshtein(np.zeros((2, 2)), [1])


def test_drift_edge_cases() -> None:
    assert drift([], []) == 0.0
    assert drift([], [1]) == 1.0
    assert drift([1], []) == 1.0
    assert drift([1, 2, 3, 4], [1, 2, 3, 4]) == 0.0
    assert drift([1, 2, 3, 4], [1, 2, 9, 9]) == 0.5
    assert drift([1], [2, 3, 4]) == 1.0  # capped
    assert drift(np.array([5, 6], dtype=np.int32), [5]) == 0.5


# -- scoring -----------------------------------------------------------------------------


Pair = tuple[list[int], list[int]]


def _cell(kind: str, ref: Pair, cand: Pair) -> PladCellResult:
    return PladCellResult("p", kind, "x", ref[0], ref[1], cand[0], cand[1])


def test_plad_axis_formula() -> None:
    same = ([1, 2, 3, 4, 5], [1, 2, 3, 4, 5])
    cells = [
        _cell("typo", same, ([1, 2, 3, 4, 5], [1, 2, 3, 4, 9])),  # excess 0.2
        _cell("case", ([1, 2], [3, 4]), same),  # ref drifts more: excess 0
        _cell("punct", same, ([1, 2, 3, 4, 5], [])),  # excess 1
    ]
    axis = plad_axis(cells, n_prompts=1)
    pps = [r["plad_pp"] for r in axis["per_prompt"]]
    assert pps == pytest.approx([100 * math.exp(-1.0), 100.0, 100 * math.exp(-5.0)])
    assert axis["score"] == pytest.approx(sum(pps) / 3)
    assert axis["per_prompt"][0]["excess_drift"] == pytest.approx(0.2)
    assert axis["per_prompt"][1]["ref_drift"] == 1.0 and axis["per_prompt"][1]["excess_drift"] == 0
    assert axis["per_perturbation_score"]["typo"] == pytest.approx(100 * math.exp(-1.0))
    assert axis["per_perturbation_score"]["paraphrase"] is None
    assert axis["confidence"] == "partial"
    assert axis["skipped_perturbations"] == ["paraphrase"]
    assert axis["n_perturbations"] == 4 and axis["n_prompts"] == 1
    assert set(axis["per_prompt"][0]) == {
        "prompt_id", "perturbation", "perturbed_prompt", "ref_drift", "cand_drift",
        "excess_drift", "plad_pp",
    }


def test_plad_axis_ok_confidence_and_empty() -> None:
    same = ([1], [1])
    cells = [_cell(k, same, same) for k in PERTURBATIONS]
    axis = plad_axis(cells, n_prompts=1)
    assert axis["score"] == 100.0 and axis["confidence"] == "ok"
    with pytest.raises(ValueError, match="no perturbation fired"):
        plad_axis([], n_prompts=3)


def test_score_plad_maps_outputs_in_plan_order() -> None:
    prompts = [("a", "Build a big house"), ("b", "the end")]
    plan = plan_plad(prompts, seed=1)
    texts = plan.texts()
    # Reference: every output equal -> drift 0. Candidate: perturbed outputs of prompt "a"
    # differ completely from its anchor.
    ref = [[1, 2, 3]] * len(texts)
    cand = [[1, 2, 3]] * len(texts)
    for k, c in enumerate(plan.cells):
        if c.prompt_id == "a":
            cand[len(plan.anchors) + k] = [7, 8, 9]
    axis = score_plad(plan, ref, cand)
    for row in axis["per_prompt"]:
        expected = 100 * math.exp(-5.0) if row["prompt_id"] == "a" else 100.0
        assert row["plad_pp"] == pytest.approx(expected)
    assert axis["n_prompts"] == 2
    assert len(axis["skipped_pairs"]) == len(plan.skipped)
    assert axis["notes"][0].startswith(f"{len(plan.skipped)} (prompt, perturbation) pairs")
    with pytest.raises(ValueError, match="outputs"):
        score_plad(plan, ref[:-1], cand)
