"""``--until-decided`` on a real (tiny) model: rounds, merges, early stops, from the API, the
CLI and a matrix (issue 22)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import text_corpus
from matrixkit import write_matrix
from refract.axes import registry
from refract.axes.trajectory import score_trajectories
from refract.cli import app
from refract.scoring import run_score
from refract.uncertainty import MIN_DECISION_UNITS


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("decided")
    prompts = d / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({
        "id": f"p{i:02d}", "category": "factual",
        "prompt": f"The capital of france is paris and {i} plus {i} equals"}) + "\n"
        for i in range(MIN_DECISION_UNITS + 1)))
    corpus = d / "corpus.txt"
    corpus.write_text(text_corpus(4000))
    return {"prompts": str(prompts), "corpus": str(corpus), "chunks": MIN_DECISION_UNITS + 1,
            "ctx": 64, "n_predict": 6, "threads": 1, "looks": 2}


def test_reference_against_itself_stops_at_the_first_look_that_may_decide(
        tiny_model: Path, inputs: dict[str, Any]) -> None:
    rep = run_score(tiny_model, "ctk=f16,ctv=f16", until_decided=True, **inputs)
    ud = rep["until_decided"]
    # 16 prompts and 16 chunks in 2 looks: the first (8 units) may not decide, so it is not
    # taken (and spends no alpha); the one look is the budget's end
    assert ud["looks_planned"] == 2 and ud["looks_taken"] == [2]
    assert len(ud["history"]) == 1 and ud["alpha_per_look"] == [pytest.approx(0.05)]
    assert ud["decided"] == "EXCELLENT" and ud["looks_run"] == 2
    assert rep["band"] == "EXCELLENT" and rep["uncertainty"]["composite"]["decided"] == "EXCELLENT"
    assert any("--until-decided" in n for n in rep["notes"])
    assert rep["settings"]["until_decided"] is True


def test_early_stop_and_merged_rounds(tiny_model: Path, inputs: dict[str, Any]) -> None:
    """Enough units at the first look: a reference against itself stops there, its report
    covers exactly the units it used; a candidate that runs its whole budget gets the KLD of a
    full run, token for token (chunks are decoded one window at a time either way)."""
    opts = {**inputs, "looks": 2, "chunks": 2 * MIN_DECISION_UNITS,
            "prompts": _more_prompts(Path(inputs["prompts"]), 2 * MIN_DECISION_UNITS)}
    same = run_score(tiny_model, "ctk=f16,ctv=f16", until_decided=True, **opts)
    ud = same["until_decided"]
    assert ud["stopped_early"] is True and ud["looks_run"] == 1
    assert ud["prompts_used"] == [MIN_DECISION_UNITS, 2 * MIN_DECISION_UNITS]
    assert ud["chunks_used"] == [MIN_DECISION_UNITS, 2 * MIN_DECISION_UNITS]
    assert ud["budget_fraction"] == 0.5 and "decided at look 1 of 2" in ud["reason"]
    assert same["axes"]["gtm"]["n_prompts"] == MIN_DECISION_UNITS
    assert same["axes"]["kld"]["chunks"] == MIN_DECISION_UNITS
    assert same["uncertainty"]["axes"]["kld"]["n_units"] == MIN_DECISION_UNITS

    cand = "ctk=q4_0,ctv=q4_0"
    rounds = run_score(tiny_model, cand, until_decided=True, decide_confidence=0.999, **opts)
    full = run_score(tiny_model, cand, **opts)
    got, want = rounds["axes"]["kld"], full["axes"]["kld"]
    # at 99.9 % the tiny model's q4_0 is never decided: both rounds run and are merged
    assert rounds["until_decided"]["looks_run"] == 2
    assert rounds["until_decided"]["chunks_used"] == [2 * MIN_DECISION_UNITS] * 2
    assert got["per_chunk_kld"] == want["per_chunk_kld"]
    assert got["mean_kld"] == pytest.approx(want["mean_kld"], rel=1e-12)
    assert got["ppl_cand"] == pytest.approx(want["ppl_cand"], rel=1e-12)
    # whatever the batches, the merged trajectory entry is its rows' own summary
    traj = rounds["axes"]["gtm"]
    rows = traj["per_prompt"]
    again = score_trajectories(_prompts(rows), [r["ref_token_ids"] for r in rows],
                               [r["cand_token_ids"] for r in rows], opts["n_predict"])
    assert traj["score"] == again["score"]
    assert traj["full_match_rate"] == again["full_match_rate"]
    assert traj["noise_floor"]["n_prompts"] == len(rows)
    unit = registry.get("gtm")
    assert unit is not None and unit.units(traj) is not None


def _prompts(rows: list[dict[str, Any]]) -> list[Any]:
    from refract.inputs.promptset import Prompt

    return [Prompt(id=r["id"], category=r["category"], prompt=r["prompt"]) for r in rows]


def _more_prompts(path: Path, n: int) -> str:
    out = path.with_name(f"prompts-{n}.jsonl")
    out.write_text("".join(json.dumps({
        "id": f"q{i:02d}", "category": "factual",
        "prompt": f"Note the rare paint color {i} is blue and {i} plus one equals"}) + "\n"
        for i in range(n)))
    return str(out)


def test_cli_until_decided(tiny_model: Path, inputs: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    args = ["score", "--model", str(tiny_model), "-c", "ctk=f16,ctv=f16", "--until-decided",
            "--decide-confidence", "0.9", "--json-out", str(out)]
    for key, value in inputs.items():
        args += ["--" + key.replace("_", "-"), str(value)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rep = json.loads(out.read_text())
    assert rep["until_decided"]["confidence"] == 0.9
    assert "--until-decided" in rep["repro_command"]
    bad = CliRunner().invoke(app, [*args[:-2], "--decide-confidence", "1.5"])
    assert bad.exit_code == 2 and "--decide-confidence" in bad.output


def test_matrix_until_decided(tiny_model: Path, tmp_path: Path) -> None:
    spec = write_matrix(tmp_path, [("Tiny", str(tiny_model))], candidates=["ctk=f16,ctv=f16"],
                        settings={"prompts": "prompts.jsonl", "corpus": "corpus.txt",
                                  "chunks": 2, "ctx": 64, "n_predict": 6, "threads": 1,
                                  "until_decided": True})
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["matrix", str(spec), "--out-dir", str(out)])
    assert result.exit_code == 0, result.output
    [cell] = [json.loads(p.read_text()) for p in out.glob("tiny__*.json")]
    assert cell["until_decided"]["looks_planned"] == 4
    assert cell["until_decided"]["decided"] == "EXCELLENT"
