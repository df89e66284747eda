"""ScoreOptions (one object for every score setting) and the CLI flags made from it."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import needs_core, one_line_error
from refract.cli import app
from refract.options import ScoreOptions, UsageError
from refract.report.io import measured_content


def run(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


# --------------------------------------------------------------------------- the object


def test_defaults_and_derived_axes() -> None:
    o = ScoreOptions()
    assert o.axes == ["gtm", "kld"] and o.with_noise_floor  # the floor is on by default
    full = ScoreOptions(full=True)
    assert full.axes == ["gtm", "kld", "rniah", "plad"] and full.with_noise_floor
    assert ScoreOptions(full=True, skip_trajectory=True).with_noise_floor is False
    assert ScoreOptions(noise_floor=False).with_noise_floor is False
    assert ScoreOptions(noise_floor=False).cli_args() == ["--no-noise-floor"]
    with pytest.raises(UsageError, match="nothing to score"):
        ScoreOptions(skip_trajectory=True, skip_kld=True)


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("threads", 2**40, "--threads"),
        ("chunks", 2**40, "--chunks"),
        ("n_predict", 2**33, "--n-predict"),
        ("n_gpu_layers", 2**40, "--n-gpu-layers"),
        ("seed", 2**80, "--seed"),
        ("seed", -1, "--seed"),
        ("ctx", 8, "--ctx"),
        ("chunks", True, "--chunks"),
        ("rniah_lengths", (), "--rniah-lengths"),
        ("rniah_lengths", (4096, 4096), "duplicates"),
        ("rniah_positions", (1.5,), "--rniah-positions"),
        ("corpus", "  ", "--corpus"),
    ],
)
def test_out_of_range_values_are_usage_errors(field: str, value: Any, needle: str) -> None:
    with pytest.raises(UsageError, match=needle.replace("-", r"\-")):
        ScoreOptions(**{field: value})


def test_from_mapping_toml_style() -> None:
    o = ScoreOptions.from_mapping(
        {"full": True, "chunks": 8, "rniah-lengths": [4096, 6000], "rniah_positions": "0.5",
         "corpus": "wiki.txt"},
        base_dir=Path("/data"),
    )
    assert o.chunks == 8 and o.rniah_lengths == (4096, 6000) and o.rniah_positions == (0.5,)
    assert o.corpus == "/data/wiki.txt"
    assert ScoreOptions.from_mapping({"corpus": "bundled"}, base_dir=Path("/x")).corpus == (
        "bundled")
    with pytest.raises(UsageError, match="unknown setting 'chunkz'"):
        ScoreOptions.from_mapping({"chunkz": 3})
    with pytest.raises(UsageError, match="--rniah-lengths"):
        ScoreOptions.from_mapping({"rniah_lengths": "4096,8k"})


def test_fingerprint_follows_the_numbers_not_the_threads() -> None:
    base = ScoreOptions()
    assert base.fingerprint() == ScoreOptions().fingerprint()
    assert base.fingerprint() == ScoreOptions(threads=7).fingerprint()
    assert base.fingerprint() == ScoreOptions(no_auto_fetch=True).fingerprint()
    for change in ({"chunks": 8}, {"seed": 1}, {"sequential": True}, {"axis_plad": True},
                   {"reference": "ctk=q8_0,ctv=q8_0"}, {"n_gpu_layers": 0}):
        assert ScoreOptions(**change).fingerprint() != base.fingerprint(), change
    # --full and --axis-rniah --axis-plad --noise-floor run the same work
    assert ScoreOptions(full=True).fingerprint() == ScoreOptions(
        axis_rniah=True, axis_plad=True, noise_floor=True).fingerprint()
    s = ScoreOptions(rniah_lengths=(4096,)).settings()
    assert s["rniah_lengths"] == [4096] and s["fingerprint"] and json.dumps(s)


def test_every_field_is_a_score_flag_and_round_trips() -> None:
    """Adding a ScoreOptions field is enough to get its --flag on score and repeatability."""
    for command in ("score", "repeatability"):
        r = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert r.exit_code == 0
        text = r.output
        for f in dataclasses.fields(ScoreOptions):
            assert "--" + f.name.replace("_", "-") in text, (command, f.name)
        assert "<bool>" not in text
    # the CLI form of a non-default options object parses back to the same object
    o = ScoreOptions(full=True, chunks=4, seed=7, rniah_lengths=(4096, 6000),
                     rniah_positions=(0.25,), threads=1, sequential=True, corpus="c.txt",
                     noise_floor=False)
    seen: list[ScoreOptions] = []

    def capture(model: Any, candidates: Any, options: ScoreOptions, **kw: Any) -> Any:
        seen.append(options)
        raise UsageError("stop here")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("refract.scoring.prepare_score", capture)
        r = run("score", "-m", "x.gguf", "-c", "ctk=q8_0", *o.cli_args())
    assert r.exit_code == 2 and seen == [o], r.output


# --------------------------------------------------------------------------- bad input (issue 11)


def test_empty_candidate_is_a_usage_error(files: dict[str, Path]) -> None:
    for bad in ("", "   ", " , "):
        r = run("score", "-m", "x.gguf", "-c", bad)
        one_line_error(r, 2, "--candidate", "empty")


def test_huge_integers_are_usage_errors_not_internal_errors() -> None:
    for flag_, value in (("--threads", 2**40), ("--chunks", 2**40), ("--n-predict", 2**40),
                         ("--n-gpu-layers", 2**40), ("--seed", 2**80)):
        r = run("score", "-m", "x.gguf", "-c", "ctk=q8_0", flag_, value)
        line = one_line_error(r, 2, flag_)
        assert "internal error" not in line


def test_outputs_never_overwrite_inputs(files: dict[str, Path], tmp_path: Path) -> None:
    from tinymodel import write_tiny_model

    model = write_tiny_model(tmp_path / "m.gguf")
    before = model.read_bytes()
    common = ["score", "-m", model, "-c", "ctk=q8_0", "--prompts", files["prompts"],
              "--corpus", files["corpus"]]
    one_line_error(run(*common, "--json-out", model), 2, "--json-out", "model")
    one_line_error(run(*common, "--html-out", files["corpus"]), 2, "--html-out", "corpus")
    one_line_error(run(*common, "--json-out", files["prompts"]), 2, "prompt set")
    link = tmp_path / "link.gguf"
    link.symlink_to(model)
    one_line_error(run(*common, "--json-out", link), 2, "model")
    out = tmp_path / "r.json"
    one_line_error(run(*common, "--json-out", out, "--html-out", out), 2, "also given")
    assert model.read_bytes() == before and not out.exists()


def test_unwritable_outputs_found_before_the_model_loads(files: dict[str, Path],
                                                         tmp_path: Path) -> None:
    from tinymodel import write_tiny_model

    model = write_tiny_model(tmp_path / "m.gguf")
    for bad in ("/proc/refract-report.json", "/sys/refract.json", "/proc/self/status"):
        r = run("score", "-m", model, "-c", "ctk=q8_0", "--corpus", files["corpus"],
                "--json-out", bad)
        line = one_line_error(r, 2, bad)
        assert ".refract-probe" not in line and "tmp" not in line.split(bad)[0]


def test_fifo_model_is_named_as_such(tmp_path: Path) -> None:
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    one_line_error(run("score", "-m", fifo, "-c", "ctk=q8_0"), 2, "not a regular file")


def test_several_candidates_need_out_dir(files: dict[str, Path], tmp_path: Path) -> None:
    r = run("score", "-m", "x.gguf", "-c", "ctk=q8_0", "-c", "ctk=q4_0",
            "--json-out", tmp_path / "r.json")
    one_line_error(r, 2, "--out-dir")
    r = run("score", "-m", "x.gguf", "-c", "ctk=q8_0", "-c", " ctk=q8_0 ")
    one_line_error(r, 2, "given twice")


# --------------------------------------------------------------------------- engine


@needs_core
def test_several_candidates_equal_separate_runs(files: dict[str, Path],
                                                tiny_model: Path) -> None:
    from refract.scoring import run_score, run_scores

    opts = {"prompts": files["prompts"], "corpus": files["corpus"], "chunks": 2, "ctx": 128,
            "n_predict": 8, "threads": 1, "axis_plad": True, "noise_floor": True}
    cands = ["ctk=q8_0,ctv=q8_0", "ctk=q4_0,ctv=q4_0", "ctk=f16,ctv=f16"]
    together = run_scores(tiny_model, cands, **opts)
    assert [r["candidate"] for r in together] == cands
    for cand, rep in zip(cands, together, strict=True):
        alone = run_score(tiny_model, cand, **opts)
        assert measured_content(rep) == measured_content(alone), cand
    assert together[2]["self_check"] is True and together[0]["self_check"] is False
    assert together[0]["axes"]["gtm"]["noise_floor"]["n_prompts"] == 2


@needs_core
def test_reference_is_decoded_once_for_all_candidates(files: dict[str, Path],
                                                      tiny_model: Path) -> None:
    from refract import Engine
    from refract.scoring import run_scores

    calls: list[str] = []
    with Engine(tiny_model, n_threads=1) as eng:
        real = eng.greedy

        def counting(prompts: Any, kv: Any = "ctk=f16,ctv=f16", *a: Any, **kw: Any) -> Any:
            calls.append(str(kv))
            return real(prompts, kv, *a, **kw)

        shadowed: list[list[str]] = []
        real_tf = eng.greedy_teacher_forced

        def counting_tf(prompts: Any, kv: Any, candidates: Any, *a: Any, **kw: Any) -> Any:
            calls.append(str(kv))
            shadowed.append(list(candidates))
            return real_tf(prompts, kv, candidates, *a, **kw)

        eng.greedy = counting  # type: ignore[method-assign]
        eng.greedy_teacher_forced = counting_tf  # type: ignore[method-assign]
        run_scores(tiny_model, ["ctk=q8_0,ctv=q8_0", "ctk=q4_0,ctv=q4_0", "ctk=q5_0,ctv=q5_0"],
                   engine=eng, prompts=str(files["prompts"]), corpus=str(files["corpus"]),
                   chunks=1, ctx=128, n_predict=4, axis_plad=True)
    # trajectory (every candidate teacher-forced along that one decode) + its noise floor +
    # PLAD: the reference once each for all three candidates; each candidate decodes for PLAD
    # only (Trajectory verifies it along the reference decode, and no reference trajectory
    # stops early here, so nothing is decoded on after a divergence)
    assert calls.count("ctk=f16,ctv=f16") == 3
    assert all(calls.count(c) == 1 for c in ("ctk=q8_0,ctv=q8_0", "ctk=q4_0,ctv=q4_0",
                                              "ctk=q5_0,ctv=q5_0"))
    assert shadowed == [["ctk=q8_0,ctv=q8_0", "ctk=q4_0,ctv=q4_0", "ctk=q5_0,ctv=q5_0"]]


@needs_core
@pytest.mark.parametrize("axis", ["gtm", "kld", "rniah", "plad"])
def test_one_failing_axis_keeps_the_others(files: dict[str, Path], tiny_chat_model: Path,
                                           tmp_path: Path, axis: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A runtime failure inside one axis marks it `error`; the report is written, exit 1."""
    import refract.engine.facade as engine_mod

    method = {"gtm": "greedy_teacher_forced", "kld": "kld", "rniah": "generate_cells",
              "plad": "greedy"}[axis]
    real = getattr(engine_mod.Engine, method)

    def boom(self: Any, *a: Any, **kw: Any) -> Any:
        if axis == "plad" and not kw.get("chat_template", a[4] if len(a) > 4 else False):
            return real(self, *a, **kw)  # trajectory's greedy runs; PLAD's (chat) fails
        raise RuntimeError(f"llama_decode failed at a {axis} cell (forced)")

    if not hasattr(engine_mod.Engine, method):
        method = "generate_one"
        real = getattr(engine_mod.Engine, method)
    monkeypatch.setattr(engine_mod.Engine, method, boom)
    hay = tmp_path / "hay.txt"
    hay.write_text("The river runs to the sea. " * 3000)
    out = tmp_path / "r.json"
    r = run("score", "-m", tiny_chat_model, "-c", "ctk=q8_0,ctv=q8_0", "--full",
            "--prompts", files["prompts"], "--corpus", files["corpus"], "--rniah-haystack",
            hay, "--rniah-lengths", "4096", "--rniah-n-predict", "4", "--chunks", "1",
            "--ctx", "128", "--n-predict", "4", "--threads", "1", "--json-out", out,
            "--no-progress")
    assert r.exit_code == 1, r.output
    assert f"{axis}" in r.stderr.splitlines()[-1] and "Traceback" not in r.output
    rep = json.loads(out.read_text())
    assert "forced" in rep["axes"][axis]["error"] and rep["axes"][axis]["score"] is None
    assert rep["status"] == "partial"
    others = [k for k in ("gtm", "kld", "rniah", "plad") if k != axis]
    for k in others:
        assert rep["axes"][k].get("error") is None, k
        assert rep["axes"][k]["score"] is not None or rep["axes"][k].get("skipped"), k


def test_repro_command_is_shell_safe() -> None:
    o = ScoreOptions(corpus="my corpus.txt", rniah_positions=(0.1, 0.9))
    args = shlex.split(shlex.join(o.cli_args()))
    assert args == ["--corpus", "my corpus.txt", "--rniah-positions", "0.1,0.9"]


# --------------------------------------------------------------------------- non-finite, memory


@pytest.fixture
def poison() -> Any:
    from refract import _core
    from refract.kvconfig import KVConfig

    def set_poison(kv: str, value: float) -> None:
        _core._test_poison(KVConfig.parse(kv).label, value)

    yield set_poison
    _core._test_poison("", 0.0)


@needs_core
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_poisoned_candidate_axes_are_invalid_not_perfect(
    files: dict[str, Path], tiny_chat_model: Path, poison: Any, value: float
) -> None:
    """A KV type whose kernels emit NaN/inf scores 0 on every axis it touches (issue 11)."""
    from refract.scoring import run_scores

    poison("ctk=q8_0,ctv=q8_0", value)
    bad, good = run_scores(
        tiny_chat_model, ["ctk=q8_0,ctv=q8_0", "ctk=q4_0,ctv=q4_0"],
        prompts=str(files["prompts"]), corpus=str(files["corpus"]), chunks=1, ctx=128,
        n_predict=4, threads=1, axis_plad=True,
    )
    for axis in ("gtm", "kld", "plad"):
        entry = bad["axes"][axis]
        assert entry["invalid"] is True and entry["score"] == 0.0, axis
        assert entry["band"] == "FAIL" and "non-finite" in entry["invalid_reason"], axis
        assert good["axes"][axis].get("invalid") in (None, False), axis
        assert good["axes"][axis]["score"] > 0, axis
    assert bad["composite"] == 0.0 and bad["band"] == "FAIL"
    assert any("invalid" in d for d in bad["diagnosis"]) if isinstance(
        bad["diagnosis"], list) else "invalid" in bad["diagnosis"]


@needs_core
def test_poisoned_reference_stops_the_run(files: dict[str, Path], tiny_model: Path,
                                          tmp_path: Path, poison: Any) -> None:
    poison("ctk=f16,ctv=f16", float("nan"))
    out = tmp_path / "r.json"
    for extra in ([], ["--skip-trajectory"]):
        r = run("score", "-m", tiny_model, "-c", "ctk=q8_0,ctv=q8_0", "--prompts",
                files["prompts"], "--corpus", files["corpus"], "--chunks", "1", "--ctx", "128",
                "--n-predict", "4", "--threads", "1", "--json-out", out, "--no-progress",
                *extra)
        one_line_error(r, 1, "reference ctk=f16,ctv=f16", "non-finite")
        assert not out.exists()


@needs_core
def test_memory_is_checked_before_it_is_spent(files: dict[str, Path], tiny_model: Path,
                                              tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from refract import Engine
    from refract.scoring import prepare_score
    from refract.scoring.memory import memory_plan

    plan = prepare_score(tiny_model, ["ctk=q8_0,ctv=q8_0", "ctk=q4_0,ctv=q4_0"],
                         prompts=str(files["prompts"]), corpus=str(files["corpus"]),
                         ctx=512, full=True, rniah_lengths=(4096,),
                         rniah_haystack=str(files["corpus"]))
    with Engine(tiny_model, n_threads=1) as eng:
        need = memory_plan(eng, plan)
        more = memory_plan(eng, prepare_score(
            tiny_model, ["ctk=q8_0,ctv=q8_0", "ctk=q4_0,ctv=q4_0", "ctk=q5_0,ctv=q5_0"],
            prompts=str(files["prompts"]), corpus=str(files["corpus"]), ctx=512))
    assert set(need) == {"gtm", "kld", "rniah", "plad"}  # report keys, from the registry
    assert need["rniah"] > need["kld"] > 0 and more["kld"] > need["kld"]  # one more context
    monkeypatch.setenv("REFRACT_MEMORY_LIMIT", "64K")
    out = tmp_path / "r.json"
    r = run("score", "-m", tiny_model, "-c", "ctk=q8_0,ctv=q8_0", "--prompts",
            files["prompts"], "--corpus", files["corpus"], "--chunks", "1", "--ctx", "128",
            "--threads", "1", "--json-out", out, "--no-progress")
    line = one_line_error(r, 2, "needs about", "REFRACT_MEMORY_LIMIT")
    assert "64" in line.split("but only")[1]
    assert not out.exists()


@needs_core
def test_several_candidates_equal_separate_runs_on_the_demo_model(demo_model: Path,
                                                                   tmp_path: Path) -> None:
    """The real model: one run with two candidates = two single-candidate runs, number for
    number (trajectories, KLD arrays' statistics, noise floor)."""
    from refract.inputs.promptset import load_prompts
    from refract.scoring import run_score, run_scores

    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(
        json.dumps({"id": p.id, "category": p.category, "prompt": p.prompt}) + "\n"
        for p in load_prompts(None)[:8]))
    opts = {"corpus": "bundled", "prompts": str(prompts), "chunks": 2, "n_predict": 16,
            "threads": 2, "noise_floor": True}
    cands = ["ctk=q8_0,ctv=q8_0", "ctk=q4_0,ctv=q4_0"]
    together = run_scores(demo_model, cands, **opts)
    for cand, rep in zip(cands, together, strict=True):
        alone = run_score(demo_model, cand, **opts)
        assert measured_content(rep) == measured_content(alone), cand
    # the axes measured something real: q4_0 moves the distribution more than q8_0
    assert together[1]["axes"]["kld"]["mean_kld"] > together[0]["axes"]["kld"]["mean_kld"] > 0


@needs_core
def test_repeatability_is_exact_on_cpu(files: dict[str, Path], tiny_chat_model: Path,
                                       tmp_path: Path) -> None:
    """Determinism, proven (issue 12): three fresh loads, every axis identical (stdev 0)."""
    hay = tmp_path / "hay.txt"
    hay.write_text("The river runs to the sea. " * 3000)
    out = tmp_path / "rep.json"
    r = run("repeatability", "-m", tiny_chat_model, "-c", "ctk=q4_0,ctv=q4_0", "--runs", "3",
            "--full", "--prompts", files["prompts"], "--corpus", files["corpus"],
            "--rniah-haystack", hay, "--rniah-lengths", "4096", "--rniah-n-predict", "4",
            "--chunks", "2", "--ctx", "128", "--n-predict", "8", "--threads", "2",
            "--json-out", out, "--no-progress")
    assert r.exit_code == 0, r.output
    stats = json.loads(out.read_text())
    assert stats["verdict"] == "HEALTHY"
    assert {"gtm", "kld", "plad"} <= set(stats["stats"])
    for axis, s in stats["stats"].items():
        assert s["stdev"] == 0.0 and s["range"] == 0.0, axis


# --------------------------------------------------------------------------- Python API (issue 11)


@needs_core
def test_engine_api_misuse_gets_clear_errors(tiny_model: Path) -> None:
    import numpy as np

    from refract import Engine, _core

    eng = Engine(tiny_model, n_threads=1)
    with pytest.raises(TypeError, match=r"greedy\(\[text\]"):
        eng.greedy("The capital of France is", n_predict=2)
    [ids] = eng.greedy(["The capital of France is"], n_predict=2)
    assert ids.size == 2
    eng.close()
    eng.close()  # twice is fine
    assert eng.closed
    for call in (lambda: eng.model_info, lambda: eng.tokenize("x"), lambda: eng.metadata(),
                 lambda: eng.greedy(["x"], n_predict=1), lambda: eng.chat_template,
                 lambda: eng.kld("some text", chunks=1, ctx=16)):
        with pytest.raises(RuntimeError, match="the engine is closed"):
            call()

    # kld_rows: read-only inputs are fine, zero rows give empty results, zero vocab is named
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((3, 50)).astype(np.float32)
    cand = ref + 0.01 * rng.standard_normal((3, 50)).astype(np.float32)
    ref.flags.writeable = False
    cand.flags.writeable = False
    nxt = np.array([1, 2, 3], dtype=np.int32)
    nxt.flags.writeable = False
    out = _core.kld_rows(ref, cand, nxt)
    assert out["kld"].shape == (3,) and np.all(out["kld"] > 0)
    empty = _core.kld_rows(np.zeros((0, 50), np.float32), np.zeros((0, 50), np.float32))
    assert empty["kld"].shape == (0,)
    with pytest.raises(ValueError, match="vocab dimension is empty"):
        _core.kld_rows(np.zeros((2, 0), np.float32), np.zeros((2, 0), np.float32))


@needs_core
def test_rniah_lengths_are_any_length_and_an_empty_plan_is_a_usage_error(
    files: dict[str, Path], tiny_chat_model: Path, tmp_path: Path
) -> None:
    hay = tmp_path / "hay.txt"
    hay.write_text("The river runs to the sea. " * 3000)
    out = tmp_path / "r.json"
    common = ["score", "-m", tiny_chat_model, "-c", "ctk=q8_0,ctv=q8_0", "--skip-trajectory",
              "--skip-kld", "--axis-rniah", "--rniah-haystack", hay, "--rniah-n-predict", "4",
              "--threads", "1", "--no-progress", "--json-out", out]
    r = run(*common, "--rniah-lengths", "10,20")
    one_line_error(r, 2, "--rniah-lengths 10,20", "plans no R-NIAH cell",
                   "shorter than the needle prompt")
    assert not out.exists()
    # R-NIAH alone on a random tiny model: the reference never finds the needle (low
    # confidence, excluded from the composite), so nothing scores and the run exits 1 — the
    # lengths asked for were still planned and run (issue 26)
    r = run(*common, "--rniah-lengths", "1500,3000")
    assert r.exit_code == 1 and "nothing was measured" in r.stderr, r.output
    rep = json.loads(out.read_text())
    assert rep["axes"]["rniah"]["lengths"] == [1500, 3000]
    assert len(rep["axes"]["rniah"]["cells"]) == 6
    r = run(*common, "--rniah-up-to", "2000")
    assert r.exit_code == 1 and "nothing was measured" in r.stderr, r.output
    assert json.loads(out.read_text())["axes"]["rniah"]["lengths"] == [2000]


@needs_core
def test_bundled_corpus_is_named_and_not_passed_off_as_wikitext(files: dict[str, Path],
                                                                tiny_model: Path) -> None:
    from refract.scoring import run_score

    rep = run_score(tiny_model, "ctk=q8_0,ctv=q8_0", corpus="bundled", skip_trajectory=True,
                    chunks=1, ctx=128, threads=1)
    assert rep["provenance"]["corpus"]["name"].startswith("bundled:")
    assert any("not WikiText-2 numbers" in n for n in rep["notes"])
    assert rep["axes"]["kld"]["corpus"]["chars_used"] < rep["axes"]["kld"]["corpus"][
        "chars_total"]  # only what one chunk needs was tokenized
    custom = run_score(tiny_model, "ctk=q8_0,ctv=q8_0", corpus=str(files["corpus"]),
                       skip_trajectory=True, chunks=1, ctx=128, threads=1)
    assert any("a custom corpus" in n for n in custom["notes"])


def test_trajectory_method_defaults_and_fingerprint() -> None:
    """Verification by default, decode with --sequential (the llama-completion parity mode);
    the method is part of the fingerprint, as resolved: asking for the default changes nothing."""
    assert ScoreOptions().gtm_method == "verify"
    assert ScoreOptions(sequential=True).gtm_method == "decode"
    assert ScoreOptions(sequential=True, trajectory_method="verify").gtm_method == "verify"
    assert ScoreOptions(trajectory_method="decode").gtm_method == "decode"
    base = ScoreOptions().fingerprint()
    assert ScoreOptions(trajectory_method="verify").fingerprint() == base
    assert ScoreOptions(trajectory_method="decode").fingerprint() != base
    assert ScoreOptions(sequential=True).settings()["trajectory_method"] == "decode"
    assert ScoreOptions().settings()["trajectory_method"] == "verify"
    assert ScoreOptions.from_mapping({"trajectory-method": "decode"}).gtm_method == "decode"
    with pytest.raises(UsageError, match="--trajectory-method must be verify or decode"):
        ScoreOptions(trajectory_method="teacher")
