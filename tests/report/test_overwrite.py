"""Outputs never replace a file refract did not write (issue 26): a hostile-input sweep pointed
--json-out at a copy of a GGUF model and got it replaced by an 8 KB report.

Every command that writes files refuses, before the model loads (one line, exit 2), to replace
an existing file that is not one of refract's own outputs, unless --overwrite; a previous
refract output is replaced, atomically, as before.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import SHARED_DATA, needs_core, one_line_error
from matrixkit import CANDIDATES, SETTINGS, tiny_models, write_matrix
from refract.cli import app
from refract.outputs import check_replaceable, is_refract_output
from refract.report.html import render_html, write_html
from refract.report.io import write_report
from refract.report.leaderboard import build_leaderboard, leaderboard_markdown
from reportkit import make_report

runner = CliRunner()


def run(*args: str | Path) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def refused(result: Any, path: Path) -> str:
    return one_line_error(result, 2, str(path), "refusing to replace it", "--overwrite")


@pytest.fixture(autouse=True)
def _isolated(isolated_cache: Path) -> None:
    """Every test here gets its own cache and no REFRACT_DEBUG (conftest.isolated_cache)."""


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    p = tmp_path / "c.txt"
    p.write_text("The big city of Paris is the capital of France. " * 200)
    return p


def quick(model: Path, corpus: Path, *extra: str | Path) -> list[str | Path]:
    return ["score", "-m", model, "-c", "ctk=q8_0,ctv=q8_0", "--skip-trajectory", "--corpus",
            corpus, "--ctx", "64", "--chunks", "1", "--threads", "1", "--no-progress", *extra]


# --------------------------------------------------------------------------- recognising ours


def test_recognises_refract_outputs_and_nothing_else(tmp_path: Path, tiny_model: Path) -> None:
    rep = make_report()
    write_report(rep, tmp_path / "r.json")
    write_html(rep, tmp_path / "r.html")
    gguf = shutil.copy(tiny_model, tmp_path / "model.json")
    (tmp_path / "other.json").write_text('{"hello": 1}\n')
    (tmp_path / "notes.html").write_text("<!DOCTYPE html><html><title>mine</title></html>")
    (tmp_path / "notes.md").write_text("# My notes\n")
    (tmp_path / "empty.json").write_bytes(b"")
    assert is_refract_output(tmp_path / "r.json", "report")
    assert is_refract_output(tmp_path / "r.html", "html")
    assert '<meta name="generator" content="refract ' in (tmp_path / "r.html").read_text()
    assert is_refract_output(tmp_path / "empty.json", "report")  # nothing to lose
    # a damaged report of ours (a matrix rerun redoes it) is still ours
    truncated = tmp_path / "truncated.json"
    truncated.write_bytes((tmp_path / "r.json").read_bytes()[:200])
    assert is_refract_output(truncated, "report")
    for path, kind in ((gguf, "report"), (tmp_path / "other.json", "report"),
                       (tmp_path / "r.json", "html"), (tmp_path / "notes.html", "html"),
                       (tmp_path / "notes.md", "markdown"), (tmp_path / "missing", "report"),
                       (tmp_path / "other.json", "summary"), (tmp_path / "r.json", "status")):
        assert not is_refract_output(path, kind), (path, kind)
    # a page of a refract version before the generator tag is still ours
    legacy = tmp_path / "legacy.html"
    legacy.write_text("\n".join(line for line in render_html(rep).splitlines()
                                if 'name="generator"' not in line))
    assert is_refract_output(legacy, "html")
    board = tmp_path / "LEADERBOARD.md"
    board.write_text(leaderboard_markdown(build_leaderboard([(None, rep)])))
    assert is_refract_output(board, "markdown")
    status = tmp_path / "matrix-status.jsonl"
    status.write_text('{"model": "m", "model_path": "/m", "candidate": "c", "state": "ok"}\n')
    assert is_refract_output(status, "status")
    summary = tmp_path / "rep.json"
    summary.write_text(json.dumps({"schema": "refract.repeatability.v1", "n_runs": 2}))
    assert is_refract_output(summary, "summary")
    examples = sorted((SHARED_DATA / "refract-examples").glob("*.json"))
    if examples:  # refract-llm's reports are reports too
        assert is_refract_output(examples[0], "report")
    with pytest.raises(ValueError, match="exists and is not a refract report"):
        check_replaceable(gguf, "--json-out", "report", overwrite=False)
    check_replaceable(gguf, "--json-out", "report", overwrite=True)


# --------------------------------------------------------------------------- score


@pytest.mark.usefixtures("no_model_load")
def test_score_refuses_to_replace_a_foreign_file_before_loading(
    tiny_model: Path, corpus: Path, tmp_path: Path
) -> None:
    gguf = Path(shutil.copy(tiny_model, tmp_path / "copy-of-model.gguf"))
    before = gguf.read_bytes()
    refused(run(*quick(tiny_model, corpus, "--json-out", gguf)), gguf)
    refused(run(*quick(tiny_model, corpus, "--html-out", gguf)), gguf)
    notes = tmp_path / "notes.html"
    notes.write_text("<html><body>my own page</body></html>")
    line = refused(run(*quick(tiny_model, corpus, "--html-out", notes)), notes)
    assert "is not a page refract wrote" in line
    assert gguf.read_bytes() == before and "my own page" in notes.read_text()
    # --out-dir: the file a candidate's report would go to
    out = tmp_path / "out"
    out.mkdir()
    taken = out / "tiny__ctk-q8_0_ctv-q8_0.json"
    taken.write_text('{"mine": true}')
    refused(run(*quick(tiny_model, corpus, "--out-dir", out)), taken)
    page = out / "tiny__ctk-q8_0_ctv-q8_0.html"
    taken.unlink()
    page.write_text("not a page")
    refused(run(*quick(tiny_model, corpus, "--out-dir", out, "--html")), page)
    assert page.read_text() == "not a page"


@needs_core
def test_score_replaces_its_own_reports_and_anything_with_overwrite(
    tiny_model: Path, corpus: Path, tmp_path: Path
) -> None:
    out, page = tmp_path / "r.json", tmp_path / "r.html"
    for _ in range(2):  # the second run replaces the first run's report and page
        r = run(*quick(tiny_model, corpus, "--json-out", out, "--html-out", page))
        assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["schema"] == "refract.report.v0.3.3"
    # likewise into an --out-dir that already holds this run's reports (it used to be refused
    # as "a directory, expected a file path" once it existed)
    for _ in range(2):
        r = run(*quick(tiny_model, corpus, "--out-dir", tmp_path / "out", "--html"))
        assert r.exit_code == 0, r.output
    assert (tmp_path / "out" / "tiny__ctk-q8_0_ctv-q8_0.html").is_file()
    foreign = Path(shutil.copy(tiny_model, tmp_path / "copy.gguf"))
    r = run(*quick(tiny_model, corpus, "--json-out", foreign, "--overwrite"))
    assert r.exit_code == 0, r.output
    assert json.loads(foreign.read_text())["candidate"] == "ctk=q8_0,ctv=q8_0"


# --------------------------------------------------------------------------- other commands


@pytest.mark.usefixtures("no_model_load")
def test_repeatability_refuses_a_foreign_json_out_before_loading(
    tiny_model: Path, corpus: Path, tmp_path: Path
) -> None:
    mine = tmp_path / "results.json"
    mine.write_text('{"experiment": 7}')
    refused(run("repeatability", "-m", tiny_model, "-c", "ctk=q8_0,ctv=q8_0", "--runs", "2",
                "--corpus", corpus, "--skip-trajectory", "--json-out", mine), mine)
    assert json.loads(mine.read_text()) == {"experiment": 7}


def test_leaderboard_out_replaces_a_leaderboard_but_not_other_files(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    reports.mkdir()
    write_report(make_report(), reports / "a.json")
    for name in ("board.md", "board.html"):
        target = tmp_path / name
        target.write_text("my own notes\n")
        refused(run("leaderboard", "--in", reports, "--out", target), target)
        assert target.read_text() == "my own notes\n"
        r = run("leaderboard", "--in", reports, "--out", target, "--overwrite")
        assert r.exit_code == 0, r.output
        r = run("leaderboard", "--in", reports, "--out", target)  # now ours: replaced
        assert r.exit_code == 0, r.output
        assert "REFRACT leaderboard" in target.read_text()


@needs_core
def test_matrix_refuses_foreign_files_in_out_dir_before_any_load(tmp_path: Path) -> None:
    models = tiny_models(tmp_path)
    spec = write_matrix(tmp_path, models[:1], candidates=CANDIDATES[:1],
                        settings={**SETTINGS, "skip_trajectory": True, "chunks": 1})
    out = tmp_path / "out"
    out.mkdir()
    board = out / "leaderboard.html"
    board.write_text("<html>someone else's page</html>")
    refused(run("matrix", spec, "--out-dir", out, "--no-progress"), board)
    board.unlink()
    cell = out / "tiny-a__ctk-q8_0_ctv-q8_0.json"
    cell.write_text("[1, 2, 3]")
    refused(run("matrix", spec, "--out-dir", out, "--no-progress"), cell)
    assert cell.read_text() == "[1, 2, 3]" and not (out / "matrix-status.jsonl").exists()
    r = run("matrix", spec, "--out-dir", out, "--no-progress", "--overwrite")
    assert r.exit_code == 0, r.output
    assert json.loads(cell.read_text())["candidate"] == "ctk=q8_0,ctv=q8_0"
    # a rerun over its own outputs needs no --overwrite
    r = run("matrix", spec, "--out-dir", out, "--no-progress")
    assert r.exit_code == 0, r.output
