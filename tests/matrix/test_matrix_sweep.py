"""A matrix that asks for a sweep per model (issue 23): the sweep runs as the model's job
(one worker, crash-isolated like any cell), writes ``<model>.sweep.json`` beside the reports,
settles the configs its model cannot run, and is done on a rerun only when whole."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import needs_core, one_line_error
from matrixkit import status, tiny_models, write_matrix
from refract.cli import app
from tinymodel import write_tiny_model

pytestmark = needs_core
runner = CliRunner()
GRID = ["ctk=q8_0,ctv=q8_0", "ctk=q4_0,ctv=q4_0", "ctk=q8_0,ctv=q4_0"]
SWEEP = '[sweep]\ntypes = "q8_0,q4_0"\npairs = ["q8_0/q4_0"]\n'


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REFRACT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("REFRACT_DEBUG", raising=False)


def _spec(d: Path) -> Path:
    models = tiny_models(d)
    write_tiny_model(d / "m48.gguf", head_dim=48)
    # every config on the full budget: this test is about the matrix's bookkeeping (pruned
    # configs in a matrix: test_matrix_ray.py, local and on Ray)
    spec = write_matrix(d, [models[0], ("Tiny 48", "m48.gguf"), models[1]],
                        extra=SWEEP + "prune = false\n")
    text = spec.read_text().replace('name = "Tiny B"', 'name = "Tiny B"\nsweep = false')
    spec.write_text(text)
    return spec


def test_matrix_sweeps_models_and_resumes(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    out = tmp_path / "out"
    res = runner.invoke(app, ["matrix", str(spec), "--out-dir", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "3 not runnable on their model" in res.stderr
    rows = {(r["model"], r["candidate"]): r for r in status(out)}
    assert len(rows) == 3 + 3 + 2
    for cand in GRID:
        assert rows[("Tiny A", cand)]["state"] == "ok"
        row48 = rows[("Tiny 48", cand)]
        assert row48["state"] == "not-runnable" and "head dim 48" in row48["message"]
    assert {rows[("Tiny B", c)]["state"] for c in ("ctk=q8_0,ctv=q8_0",
                                                   "ctk=q4_0,ctv=q4_0")} == {"ok"}
    summary = json.loads((out / "tiny-a.sweep.json").read_text())
    assert summary["schema"] == "refract-sweep/1" and summary["model"]["name"] == "Tiny A"
    assert [e["config"] for e in summary["configs"]] == GRID
    for entry in summary["configs"]:
        report = json.loads((out / entry["report"]).read_text())
        assert report["candidate"] == entry["config"]
        assert report["composite"] == entry["composite"]
        assert report["extras"]["matrix"]["model_name"] == "Tiny A"
    assert summary["frontier"] and summary["recommendation"]["text"]
    assert (out / "tiny-a.sweep.html").exists()
    s48 = json.loads((out / "tiny-48.sweep.json").read_text())
    assert {e["status"] for e in s48["configs"]} == {"skipped"}
    assert s48["recommendation"]["kind"] == "none"
    from refract.report.leaderboard import collect_reports

    loaded, skipped = collect_reports(out)  # the sweep summaries are passed over, not listed
    assert len(loaded) == 5 and skipped == [], skipped
    board = (out / "LEADERBOARD.md").read_text()
    assert "Tiny A" in board and "Tiny B" in board

    # a rerun redoes nothing; a damaged report of a sweep redoes that model's whole sweep
    res = runner.invoke(app, ["matrix", str(spec), "--out-dir", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert {r["state"] for r in status(out)} == {"skipped"}
    (out / summary["configs"][1]["report"]).write_text('{"schema": "refract.report.v0.3.3"')
    res = runner.invoke(app, ["matrix", str(spec), "--out-dir", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    again: dict[Any, Any] = {(r["model"], r["candidate"]): r["state"] for r in status(out)}
    assert [again[("Tiny A", c)] for c in GRID] == ["ok"] * 3
    assert again[("Tiny B", "ctk=q8_0,ctv=q8_0")] == "skipped"
    assert again[("Tiny 48", GRID[0])] == "skipped"
    assert json.loads((out / summary["configs"][1]["report"]).read_text())["composite"] == \
        summary["configs"][1]["composite"]


def test_matrix_sweep_table_errors(tmp_path: Path) -> None:
    models = tiny_models(tmp_path)
    for extra, needle in (('[sweep]\nband = "GOLD"\n', "[sweep]: --band must be one of"),
                          ('[sweep]\nspeed = 1\n', "[sweep]: unknown key 'speed'"),
                          ('[sweep]\nprune = "yes"\n', "prune must be true or false"),
                          ('[sweep]\nfirst_round_axes = 3\n', "first_round_axes must be"),
                          ('[sweep]\nfirst_round_axes = "kld"\n',
                           "[sweep]: --first-round-axes must be one of trajectory, all")):
        spec = write_matrix(tmp_path, models, extra=extra)
        one_line_error(runner.invoke(app, ["matrix", str(spec), "--out-dir",
                                           str(tmp_path / "o")]), 2, needle)
    # without candidates, every model must sweep
    spec = write_matrix(tmp_path, models, extra=SWEEP)
    spec.write_text(spec.read_text().replace('candidates = ["ctk=q8_0,ctv=q8_0", '
                                             '"ctk=q4_0,ctv=q4_0"]\n', ""))
    assert "candidates" not in spec.read_text()
    text = spec.read_text()
    spec.write_text(text.replace('name = "Tiny B"', 'name = "Tiny B"\nsweep = false'))
    one_line_error(runner.invoke(app, ["matrix", str(spec), "--out-dir",
                                       str(tmp_path / "o")]), 2, "'candidates' must be")
