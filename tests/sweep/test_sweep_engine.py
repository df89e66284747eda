"""`refract sweep` on tiny synthesized models (issue 23): configs the model cannot run are
listed with llama.cpp's reason, survivors equal a separate score exactly, groups follow the
memory plan, files and one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sweepkit import measured, write_inputs
from typer.testing import CliRunner

from conftest import needs_core, one_line_error
from refract.errors import MemoryBudgetError
from refract.options import ScoreOptions
from refract.sweep.decide import first_look_level
from tinymodel import write_tiny_model

pytestmark = needs_core


@pytest.fixture(scope="module")
def model48(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Head dim 48: no 32-value block type fits (q8_0 and friends are refused)."""
    return write_tiny_model(tmp_path_factory.mktemp("m48") / "m48.gguf", head_dim=48)


def _opts(d: Path, n_prompts: int = 12, **kw: Any) -> ScoreOptions:
    prompts, corpus = write_inputs(d, n_prompts)
    base: dict[str, Any] = dict(prompts=str(prompts), corpus=str(corpus), chunks=12, ctx=128,
                                n_predict=8, threads=1)
    base.update(kw)
    return ScoreOptions(**base)


def test_sweep_lists_what_the_model_cannot_run_and_scores_the_rest(
        model48: Path, tmp_path: Path) -> None:
    from refract.scoring import run_score
    from refract.sweep import SweepSettings, run_sweep

    opts = _opts(tmp_path)
    result = run_sweep(model48, opts, SweepSettings(types="bf16,q8_0"))
    s = result.summary
    by = {e["config"]: e for e in s["configs"]}
    assert list(by) == ["ctk=bf16,ctv=bf16", "ctk=q8_0,ctv=q8_0", "ctk=f16,ctv=q8_0"]
    for label, side in (("ctk=q8_0,ctv=q8_0", "K"), ("ctk=f16,ctv=q8_0", "V")):
        assert by[label]["status"] == "skipped"
        assert by[label]["skipped"] == (f"{side} type 'q8_0' has block size 32, which does not "
                                        "divide the model's head dim 48")
    assert [x["config"] for x in s["skipped"]] == ["ctk=q8_0,ctv=q8_0", "ctk=f16,ctv=q8_0"]
    bf = by["ctk=bf16,ctv=bf16"]
    assert bf["status"] == "scored" and bf["frontier"] and s["frontier"] == [bf["config"]]
    # bytes from the allocations: bf16 is f16's size; the run's own context allocated exactly
    # what the per-token figure says
    ref_kv = s["reference"]["kv"]
    assert bf["kv"]["bytes_per_token"] == ref_kv["bytes_per_token"] > 0
    assert bf["kv"]["ratio"] == 1.0 and bf["kv_checked"] is True
    assert s["memory_ctx"] == [128, 4096] and s["kv_note"] is None  # no sliding window
    assert bf["kv"]["at"]["4096"] == ref_kv["at"]["4096"] == 4096 * ref_kv["bytes_per_token"]
    # the first round ran on 10 of 12 prompts and chunks; the survivor's full-budget report
    # equals a separate score of it exactly
    # the first round: Trajectory on every prompt, KLD held at 100, decided at 95 %
    assert s["pruning"]["first_round"] == {
        "prompts": [12, 12], "chunks": None, "fraction": None, "axes": ["gtm"],
        "held_at_100": ["kld"], "level": pytest.approx(0.95)}
    alone = run_score(model48, "ctk=bf16,ctv=bf16", opts)
    assert measured(result.reports["ctk=bf16,ctv=bf16"]) == measured(alone)
    # a first round on every axis: prompts and chunks, nothing held, the same full report
    every = run_sweep(model48, opts, SweepSettings(types="bf16", first_round_axes="all"))
    assert every.summary["pruning"]["first_round"] == {
        "prompts": [10, 12], "chunks": [10, 12], "fraction": pytest.approx(1 / 3),
        "axes": ["gtm", "kld"], "held_at_100": [],
        "level": pytest.approx(first_look_level(10 / 12, 0.95))}
    assert measured(every.reports["ctk=bf16,ctv=bf16"]) == measured(alone)
    assert s["recommendation"]["kind"] == "recommended"
    assert s["recommendation"]["text"] == ("smallest KV cache that stays PASS at 95 %: "
                                           "ctk=bf16,ctv=bf16, 100 % of f16's bytes")


def test_groups_follow_the_memory_plan(tiny_model: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A grid that would not fit at once runs one candidate at a time beside the reference,
    and its numbers are those of the run that fits at once."""
    import dataclasses

    from refract import Engine
    from refract.scoring import prepare_score, run_scores
    from refract.scoring.memory import memory_plan
    from refract.sweep import SweepSettings, run_sweep

    opts = _opts(tmp_path, n_prompts=4)  # few prompts: KLD's contexts set the peak
    grid = ["ctk=q8_0,ctv=q8_0", "ctk=q4_0,ctv=q4_0", "ctk=q5_0,ctv=q5_0"]
    settings = SweepSettings(candidates=tuple(grid), prune=False)
    free = run_sweep(tiny_model, opts, settings)
    assert free.summary["memory"]["full_round"]["groups"] == [grid]

    plan = prepare_score(tiny_model, grid, opts)
    with Engine(tiny_model, n_threads=1) as eng:
        one = max(memory_plan(eng, dataclasses.replace(plan, candidates=plan.candidates[:1]))
                  .values())
        every = max(memory_plan(eng, plan).values())
    assert every > one
    monkeypatch.setenv("REFRACT_MEMORY_LIMIT", str(one + 1))
    with pytest.raises(MemoryBudgetError, match="needs about"):
        run_scores(tiny_model, grid, opts)  # all at once does not fit
    tight = run_sweep(tiny_model, opts, settings)
    mem = tight.summary["memory"]["full_round"]
    assert mem["groups"] == [[g] for g in grid]
    assert mem["planned_peak_bytes"] <= one + 1
    for label in grid:
        assert measured(tight.reports[label]) == measured(free.reports[label])


def test_sweep_cli_writes_files_and_refuses_bad_input(
        model48: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from refract.cli import app

    monkeypatch.delenv("REFRACT_DEBUG", raising=False)
    prompts, corpus = write_inputs(tmp_path)
    out = tmp_path / "out"
    common = ["--model", str(model48), "--prompts", str(prompts), "--corpus", str(corpus),
              "--chunks", "12", "--ctx", "128", "--n-predict", "8", "--threads", "1",
              "--no-progress"]
    runner = CliRunner()
    res = runner.invoke(app, ["sweep", *common, "--out-dir", str(out), "--types", "bf16,q8_0",
                              "--html"])
    assert res.exit_code == 0, res.output
    assert "recommendation: smallest KV cache that stays PASS at 95 %: ctk=bf16,ctv=bf16" in \
        res.stdout
    assert ("skipped ctk=q8_0,ctv=q8_0: K type 'q8_0' has block size 32, which does not "
            "divide the model's head dim 48") in res.stdout
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["schema"] == "refract-sweep/1"
    entry = next(e for e in summary["configs"] if e["config"] == "ctk=bf16,ctv=bf16")
    report = json.loads((out / entry["report"]).read_text())
    assert report["candidate"] == "ctk=bf16,ctv=bf16" and report["composite"] == \
        entry["composite"]
    assert (out / "sweep.html").read_text().count("ctk=bf16,ctv=bf16") >= 1
    assert (out / entry["report"]).with_suffix(".html").exists()
    # running again replaces its own files; a foreign file in the way is refused first
    res = runner.invoke(app, ["sweep", *common, "--out-dir", str(out), "--types", "bf16"])
    assert res.exit_code == 0, res.output
    (out / "sweep.json").write_text("my notes")
    one_line_error(runner.invoke(app, ["sweep", *common, "--out-dir", str(out), "--types",
                                       "bf16"]), 2, "sweep.json", "--overwrite")
    for extra, needle in ((["--band", "GOLD"], "--band must be one of"),
                          (["--types", "q9_9"], "q9_9 is not a KV type"),
                          (["--pairs", "q8_0"], "not a K/V pair"),
                          (["--confidence", "1.5"], "--confidence"),
                          (["--first-round", "0"], "--first-round"),
                          (["--first-round-axes", "kld"], "--first-round-axes must be one of"),
                          (["--memory-ctx", "lots"], "--memory-ctx"),
                          (["--until-decided"], "does not combine with a sweep")):
        one_line_error(runner.invoke(app, ["sweep", *common, "--out-dir",
                                           str(tmp_path / "o2"), *extra]), 2, needle)
