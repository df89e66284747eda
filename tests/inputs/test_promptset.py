"""Prompt-set loading: refract-llm's v0.1 file, our bundled set, and every bad-input path."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import SHARED_DATA
from refract.inputs.promptset import BUNDLED_PROMPTS, Prompt, PromptSetError, load_prompts

V01 = SHARED_DATA / "refract-prompts-v0.1.jsonl"
BUNDLED = Path(__file__).resolve().parents[2] / "src" / "refract" / "prompts" / BUNDLED_PROMPTS

CATEGORIES = {"factual", "arithmetic", "code", "reasoning", "instruction", "dialogue"}
# SPEC §3D word lists.
_STOPWORD_TEXT = (
    "a an the is are was were be been being in on at to of for with by as and or but not no "
    "do does did i you he she it we they this that these those have has had"
)
STOPWORDS = frozenset(_STOPWORD_TEXT.split())
PARAPHRASE_TABLE = {
    "big",
    "large",
    "small",
    "tiny",
    "fast",
    "quick",
    "begin",
    "start",
    "happy",
    "sad",
    "smart",
    "clever",
    "show",
    "display",
    "build",
    "create",
    "make",
    "find",
    "locate",
}
WORD = re.compile(r"[A-Za-z]{2,}")


def _write(tmp_path: Path, text: str, name: str = "p.jsonl") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _line(pid: str = "x-1", category: str = "factual", prompt: str = "Hello") -> str:
    return json.dumps({"id": pid, "category": category, "prompt": prompt})


# --- refract-llm's v0.1 file ---------------------------------------------------------------


@pytest.mark.skipif(not V01.is_file(), reason="shared data not available")
def test_v01_loads_unchanged() -> None:
    prompts = load_prompts(V01)
    assert len(prompts) == 30
    assert prompts[0] == Prompt("fact-001", "factual", "The capital of France is")
    assert {p.category for p in prompts} == CATEGORIES
    assert len({p.id for p in prompts}) == 30
    # prompts are kept verbatim, trailing whitespace included
    code = {p.id: p.prompt for p in prompts}["code-001"]
    assert code == "def fib(n):\n    "


@pytest.mark.skipif(not V01.is_file(), reason="shared data not available")
def test_v01_as_string_path() -> None:
    assert len(load_prompts(str(V01))) == 30


# --- our bundled set -----------------------------------------------------------------------


def test_bundled_default_loads() -> None:
    prompts = load_prompts()
    assert prompts == load_prompts(None)
    assert len(prompts) >= 36
    assert len({p.id for p in prompts}) == len(prompts)
    assert {p.category for p in prompts} == CATEGORIES
    for cat in CATEGORIES:
        assert sum(p.category == cat for p in prompts) >= 5, cat
    for p in prompts:
        assert re.fullmatch(r"[a-z]+-\d{2}", p.id), p.id


def test_bundled_file_is_cc0_and_in_package() -> None:
    assert BUNDLED.is_file()
    lines = [ln for ln in BUNDLED.read_text(encoding="utf-8").splitlines() if ln.strip()]
    assert len(lines) == len(load_prompts())
    for ln in lines:
        assert json.loads(ln)["license"] == "CC0"


def test_bundled_is_not_refract_llm_set() -> None:
    ours = {p.prompt for p in load_prompts()}
    if V01.is_file():
        assert not ours & {p.prompt for p in load_prompts(V01)}


def test_bundled_triggers_every_plad_perturbation() -> None:
    prompts = load_prompts()
    with_synonym = [
        p.id
        for p in prompts
        if any(
            w.lower() in PARAPHRASE_TABLE and w.lower() not in STOPWORDS
            for w in WORD.findall(p.prompt)
        )
    ]
    # paraphrase must fire on a good share of prompts (it fires on none of v0.1's)
    assert len(with_synonym) >= 12, with_synonym
    # case: a word starting with a capital letter
    assert sum(any(w[0].isupper() for w in WORD.findall(p.prompt)) for p in prompts) >= 30
    # punct drops a final '?' or '.': some prompts end with one
    ends = [p.prompt.rstrip()[-1] for p in prompts]
    assert ends.count("?") >= 1
    assert ends.count(".") >= 1
    assert any("?" in p.prompt for p in prompts)
    # typo needs a non-stopword of >= 4 letters
    for p in prompts:
        assert any(len(w) >= 4 and w.lower() not in STOPWORDS for w in WORD.findall(p.prompt)), p.id


# --- format details ------------------------------------------------------------------------


def test_blank_and_comment_lines_ignored_extra_fields_allowed(tmp_path: Path) -> None:
    text = (
        "# a comment\n\n   \n"
        + json.dumps({"id": "a", "category": "c", "prompt": "P1", "license": "CC0"})
        + "\n  # indented comment\r\n"
        + _line("b", "d", "P2 \n")
        + "\n"
    )
    prompts = load_prompts(_write(tmp_path, text))
    assert prompts == [Prompt("a", "c", "P1"), Prompt("b", "d", "P2 \n")]


def test_utf8_bom_and_unicode(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(
        b"\xef\xbb\xbf"
        + json.dumps(
            {"id": "u", "category": "c", "prompt": "caf\u00e9 \u2028 x"}, ensure_ascii=False
        ).encode("utf-8")
        + b"\n"
    )
    assert load_prompts(path) == [Prompt("u", "c", "caf\u00e9 \u2028 x")]


# --- errors --------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(PromptSetError, match=r"nope\.jsonl.*not found"):
        load_prompts(missing)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(PromptSetError, match="is a directory"):
        load_prompts(tmp_path)


def test_empty_set(tmp_path: Path) -> None:
    with pytest.raises(PromptSetError, match="no prompts"):
        load_prompts(_write(tmp_path, ""))
    with pytest.raises(PromptSetError, match="no prompts"):
        load_prompts(_write(tmp_path, "# only a comment\n\n"))


def test_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bin.jsonl"
    path.write_bytes(_line().encode() + b"\n" + b'{"id": "\xff"}\n')
    with pytest.raises(PromptSetError, match=r"bin\.jsonl, line 2: not valid UTF-8"):
        load_prompts(path)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("{not json", r"line 3: not valid JSON"),
        ('["id", "category", "prompt"]', r"line 3: expected a JSON object, got an array"),
        ('"just a string"', r"line 3: expected a JSON object, got a string"),
        ("42", r"line 3: expected a JSON object, got a number"),
        ('{"category": "c", "prompt": "p"}', r"line 3: missing field 'id'"),
        ('{"id": "z", "prompt": "p"}', r"line 3: missing field 'category'"),
        ('{"id": "z", "category": "c"}', r"line 3: missing field 'prompt'"),
        ('{"id": "", "category": "c", "prompt": "p"}', r"line 3: field 'id' is empty"),
        ('{"id": "z", "category": " ", "prompt": "p"}', r"line 3: field 'category' is empty"),
        ('{"id": "z", "category": "c", "prompt": ""}', r"line 3: field 'prompt' is empty"),
        ('{"id": 7, "category": "c", "prompt": "p"}', r"line 3: field 'id' must be a string"),
        ('{"id": "z", "category": null, "prompt": "p"}', r"'category' must be a string, got null"),
        ('{"id": "z", "category": "c", "prompt": ["p"]}', r"'prompt' must be a string, got an"),
        ('{"id": "z", "category": "c", "prompt": true}', r"'prompt' must be a string, got a bo"),
        ('{"id": "a", "category": "c", "prompt": "p"}', r"line 3: duplicate id 'a' .*line 1"),
    ],
)
def test_bad_lines(tmp_path: Path, bad: str, message: str) -> None:
    path = _write(tmp_path, _line("a") + "\n# comment\n" + bad + "\n" + _line("q") + "\n")
    with pytest.raises(PromptSetError, match=message) as info:
        load_prompts(path)
    assert str(path) in str(info.value)


def test_error_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        load_prompts(tmp_path / "missing.jsonl")
