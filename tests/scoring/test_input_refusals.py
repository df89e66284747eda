"""What the inputs make impossible is refused up front (issue 26): one line on stderr, exit 2,
no report written, no axis run — never a report in which nothing scored.

* a corpus too short for one KLD window at --ctx,
* a prompt that leaves no room to generate in --ctx (raw, or after the chat template),
* a chat template that cannot render the prompts (rendered first, in its sandbox),
* a prompt set on which no PLAD perturbation fires (before the model loads).

Tokenizing and rendering need the model's vocabulary and template, which the engine only has
once the model is loaded: those refusals come after the load, before any context or axis.
Matrix runs refuse per model: that model's cells fail with the one-line reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import SCORE_PROMPTS, needs_core, one_line_error
from matrixkit import CANDIDATES, SETTINGS, status, write_matrix
from refract.cli import app
from tinymodel import CHATML, write_tiny_model

runner = CliRunner()

HOSTILE = {
    "attribute-walk": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "huge-range": "{% for i in range(10**9) %}x{% endfor %}",
    "syntax-error": "{% for m in messages %}{{ m.content ",
    "raise-exception": "{{ raise_exception('this template refuses every conversation') }}",
}


def run(*args: str | Path) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def one_line_refusal(result: Any, *needles: str) -> str:
    line = one_line_error(result, 2, *needles)
    assert line.startswith("refract: error: "), line
    return line


@pytest.fixture(autouse=True)
def _isolated(isolated_cache: Path) -> None:
    """Every test here gets its own cache and no REFRACT_DEBUG (conftest.isolated_cache)."""


@pytest.fixture
def no_axis(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if the model loads (beyond its vocabulary and metadata) or any axis starts
    decoding: the refusal must come before both."""
    import refract.engine.facade as engine_mod

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an axis ran before the input was refused")

    for method in ("kld", "greedy", "greedy_teacher_forced", "generate_cells", "generate_one"):
        monkeypatch.setattr(engine_mod.Engine, method, refuse)
    real_init = engine_mod.Engine.__init__

    def vocab_only_init(self: Any, *args: Any, vocab_only: bool = False, **kwargs: Any) -> None:
        if not vocab_only:
            raise AssertionError("the model was loaded before the input was refused")
        real_init(self, *args, vocab_only=vocab_only, **kwargs)

    monkeypatch.setattr(engine_mod.Engine, "__init__", vocab_only_init)


@needs_core
@pytest.mark.usefixtures("no_axis")
def test_corpus_shorter_than_one_kld_window(tiny_model: Path, tmp_path: Path) -> None:
    short = tmp_path / "wiki.txt"
    short.write_text("one two three four five six seven eight nine ten\n")
    out = tmp_path / "r.json"
    r = run("score", "-m", tiny_model, "-c", "ctk=q8_0,ctv=q8_0", "--skip-trajectory",
            "--corpus", short, "--ctx", "64", "--chunks", "1", "--threads", "1",
            "--no-progress", "--json-out", out)
    line = one_line_refusal(r, f"--corpus {short}: ", "one KLD window at --ctx 64 needs 64",
                            "use a longer corpus or a smaller --ctx")
    assert " tokens," in line
    assert not out.exists()


@needs_core
@pytest.mark.usefixtures("no_axis")
def test_prompt_longer_than_ctx(tiny_model: Path, files: dict[str, Path],
                                tmp_path: Path) -> None:
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps(SCORE_PROMPTS[0]) + "\n" + json.dumps(
        {"id": "essay", "category": "factual", "prompt": "the city of paris is big " * 40}) + "\n")
    out = tmp_path / "r.json"
    r = run("score", "-m", tiny_model, "-c", "ctk=q8_0,ctv=q8_0", "--prompts", long,
            "--corpus", files["corpus"], "--ctx", "64", "--n-predict", "4", "--threads", "1",
            "--no-progress", "--json-out", out)
    one_line_refusal(r, f"--prompts {long}: prompt 'essay' has ", "(raw text with BOS)",
                     "leaves no room to generate in --ctx 64",
                     "use shorter prompts or a larger --ctx")
    assert not out.exists()


@needs_core
@pytest.mark.usefixtures("no_axis")
def test_prompt_that_fits_raw_but_not_through_the_chat_template(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    # a template that adds a long preamble: the raw prompt fits --ctx, the rendered one not
    verbose = write_tiny_model(tmp_path / "verbose.gguf", chat_template=(
        "{{ 'note the city of paris is big ' * 12 }}" + CHATML), seed=2)
    args = ["score", "-m", verbose, "-c", "ctk=q8_0,ctv=q8_0", "--prompts", files["prompts"],
            "--skip-kld", "--ctx", "64", "--n-predict", "4", "--threads", "1", "--no-progress"]
    one_line_refusal(run(*args, "--chat-template"), "prompt 'a' has ",
                     "(through the chat template)", "--ctx 64")
    # PLAD always uses the template: its anchors and perturbations are checked the same way
    one_line_refusal(run(*args, "--skip-trajectory", "--axis-plad"), "prompt 'a' has ",
                     "PLAD anchor, through the chat template", "--ctx 64")


@needs_core
@pytest.mark.usefixtures("no_axis")
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_chat_template_that_cannot_render_the_prompts(
    name: str, tmp_path: Path, files: dict[str, Path]
) -> None:
    model = write_tiny_model(tmp_path / f"{name}.gguf", chat_template=HOSTILE[name])
    out = tmp_path / "r.json"
    base = ["score", "-m", model, "-c", "ctk=q8_0,ctv=q8_0", "--prompts", files["prompts"],
            "--corpus", files["corpus"], "--ctx", "64", "--chunks", "1", "--n-predict", "4",
            "--threads", "1", "--no-progress", "--json-out", out]
    one_line_refusal(run(*base, "--skip-kld", "--chat-template"),
                     f"chat template of model {name}.gguf: ", "Axis A (--chat-template)",
                     "fix the model's chat template, or score without --chat-template")
    one_line_refusal(run(*base, "--axis-plad"), f"chat template of model {name}.gguf: ",
                     "Axis D (PLAD) renders prompt 'a'", "score without --axis-plad")
    assert not out.exists()


@needs_core
@pytest.mark.usefixtures("no_axis")
def test_rniah_needle_prompt_the_template_refuses(tmp_path: Path) -> None:
    # renders short conversations, refuses a long system message (the haystack)
    picky = write_tiny_model(tmp_path / "picky.gguf", n_ctx_train=8192, chat_template=(
        "{% for m in messages %}{% if m.role == 'system' and m.content|length > 200 %}"
        "{{ raise_exception('system message too long') }}{% endif %}{{ m.content }}"
        "{% endfor %}"))
    hay = tmp_path / "hay.txt"
    hay.write_text("".join(f"Item {i} of list {i * 7 % 13} is done. " for i in range(3000)))
    r = run("score", "-m", picky, "-c", "ctk=q8_0,ctv=q8_0", "--skip-trajectory", "--skip-kld",
            "--axis-rniah", "--rniah-haystack", hay, "--rniah-up-to", "4096",
            "--rniah-n-predict", "4", "--threads", "1", "--no-progress")
    one_line_refusal(r, "chat template of model picky.gguf: ", "system message too long",
                     "Axis C (R-NIAH) renders its needle prompts",
                     "score without --axis-rniah")


@pytest.mark.usefixtures("no_model_load")
def test_prompt_set_on_which_plad_fires_nothing_is_refused_before_load(
    tiny_model: Path, tmp_path: Path
) -> None:
    terse = tmp_path / "terse.jsonl"
    # punctuation only: no word to misspell, recase or swap, and dropping the "?" leaves nothing
    terse.write_text(json.dumps({"id": "t", "category": "factual", "prompt": "?"}) + "\n")
    r = run("score", "-m", tiny_model, "-c", "ctk=q8_0,ctv=q8_0", "--prompts", terse,
            "--skip-kld", "--axis-plad", "--no-progress")
    one_line_refusal(r, f"--prompts {terse}: no PLAD perturbation", "1 prompt(s)",
                     "leave out --axis-plad")


@needs_core
def test_matrix_refuses_per_model_as_a_failed_cell(tmp_path: Path) -> None:
    write_tiny_model(tmp_path / "good.gguf")
    write_tiny_model(tmp_path / "hostile.gguf", chat_template=HOSTILE["attribute-walk"])
    spec = write_matrix(tmp_path, [("Hostile", "hostile.gguf"), ("Good", "good.gguf")],
                        candidates=CANDIDATES[:1],
                        settings={**SETTINGS, "chat_template": True, "chunks": 1,
                                  "n_predict": 4})
    out = tmp_path / "out"
    r = run("matrix", spec, "--out-dir", out, "--no-progress")
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    rows = {s["model"]: s for s in status(out)}
    assert rows["Good"]["state"] == "ok"
    hostile = rows["Hostile"]
    assert hostile["state"] == "failed" and "\n" not in hostile["message"]
    assert hostile["message"].startswith("chat template of model hostile.gguf: ")
    assert "score without --chat-template" in hostile["message"]
    assert not list(out.glob("hostile__*.json"))


@needs_core
def test_vocabulary_only_load_tokenizes_as_the_model_does(tiny_model: Path,
                                                          files: dict[str, Path]) -> None:
    """execute_score scores on the corpus tokens its vocabulary-only preflight made: they must
    be the full model's, and outlive the preflight engine."""
    from refract.engine.facade import Engine

    text = files["corpus"].read_text()
    prompt = SCORE_PROMPTS[0]["prompt"]
    with Engine(tiny_model, n_threads=1, vocab_only=True) as vocab:
        pre, pre_chars = vocab.corpus_tokens(text, 64, 4)
        ids = vocab.prompt_ids(prompt, chat_template=True)
    with Engine(tiny_model, n_threads=1) as full:
        tokens, chars = full.corpus_tokens(text, 64, 4)
        assert ids.tolist() == full.prompt_ids(prompt, chat_template=True).tolist()
    assert pre.tolist() == tokens.tolist() and pre_chars == chars and len(tokens) >= 4 * 64
