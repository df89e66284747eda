"""Reports know the llama.cpp build: compare and leaderboard mark rows of different flavours
or commits (upstream beside the TurboQuant fork) instead of mixing them silently."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from conftest import needs_core, shared_file
from refract.cli import app
from refract.report.comparability import builds_note, check_comparable, settings_fingerprint
from refract.report.compare import compare_markdown, compare_reports, compare_table
from refract.report.fields import llama_build, short_commit
from refract.report.io import load_report, write_report
from refract.report.leaderboard import (
    build_leaderboard,
    entry_cells,
    leaderboard_html,
    leaderboard_markdown,
)
from reportkit import model_report, verified_report, write_all

UPSTREAM = ("upstream", "0c1e57098bba43ac29e6e3b677cdceebdd22334f")
TURBO = ("turboquant", "69d8e4be47243e83b3d0d71e932bc7aa61c644dc")
TWO_BUILDS = "rows come from 2 llama.cpp builds: upstream 0c1e570, turboquant 69d8e4b"


def built(report: dict[str, Any], build: tuple[str, str]) -> dict[str, Any]:
    """``report`` as scored by the llama.cpp build ``(flavour, commit)``."""
    flavour, commit = build
    report["environment"] = dict(report["environment"], llama_cpp_flavour=flavour,
                                 llama_cpp_commit=commit)
    return report


def test_llama_build_labels() -> None:
    assert llama_build(built(verified_report(), UPSTREAM)) == "upstream 0c1e570"
    assert llama_build(built(verified_report(), TURBO)) == "turboquant 69d8e4b"
    # a custom tree without git: the flavour alone
    assert llama_build(built(verified_report(), ("custom", "unknown"))) == "custom"
    # refract-llm: no flavour recorded (a commit sometimes), or no environment at all
    assert llama_build({"environment": {"llama_cpp_commit": "817e913ec"}}) == "unknown 817e913"
    assert llama_build({"environment": None}) == "unknown"
    assert llama_build({}) == "unknown"
    assert short_commit("b8871") == "b8871" and short_commit("") is None
    assert short_commit(None) is None and short_commit("UNKNOWN") is None


def test_builds_are_comparable_but_named() -> None:
    up = built(verified_report(candidate="ctk=q8_0,ctv=q8_0"), UPSTREAM)
    turbo = built(verified_report(candidate="ctk=q8_0,ctv=turbo4"), TURBO)
    comp = check_comparable([up, turbo])
    # same inputs and settings: comparable (no refusal), but the builds are recorded
    assert comp.ok and comp.mixed_builds
    assert comp.builds == ("upstream 0c1e570", "turboquant 69d8e4b")
    assert comp.builds_note() == TWO_BUILDS
    # the build is not in the settings fingerprint (matrix resume and leaderboard columns)
    assert settings_fingerprint(up) == settings_fingerprint(turbo)
    same = built(verified_report(candidate="ctk=q4_0,ctv=q4_0"), UPSTREAM)
    assert not check_comparable([up, same]).mixed_builds
    assert check_comparable([up, same]).builds_note() is None
    # another commit of the same flavour is another build
    newer = built(verified_report(), ("upstream", "1234567890abcdef"))
    assert builds_note(check_comparable([up, newer]).builds) == (
        "rows come from 2 llama.cpp builds: upstream 0c1e570, upstream 1234567")
    # a report that records no flavour is a build of its own, said to be unknown
    note = builds_note(["upstream 0c1e570", "unknown"])
    assert note is not None and note.startswith(
        "rows come from 2 llama.cpp builds: upstream 0c1e570, unknown (unknown: ")


def test_compare_marks_rows_of_different_builds() -> None:
    up = built(verified_report(candidate="ctk=q8_0,ctv=q8_0"), UPSTREAM)
    turbo = built(verified_report(candidate="ctk=q8_0,ctv=turbo4"), TURBO)
    result = compare_reports([up, turbo])  # not refused
    assert [r.build for r in result.rows] == ["upstream 0c1e570", "turboquant 69d8e4b"]
    md = compare_markdown(result.rows)
    lines = md.splitlines()
    assert lines[0].endswith("| marks | llama.cpp |")
    assert lines[2].endswith("| upstream 0c1e570 |")
    assert lines[3].endswith("| turboquant 69d8e4b |")
    assert any(ln.startswith(f"- {TWO_BUILDS}") for ln in lines)
    # terminal: the column and the note line
    buf = io.StringIO()
    Console(file=buf, width=260, color_system=None).print(compare_table(result.rows))
    shown = buf.getvalue()
    assert "llama.cpp" in shown and "turboquant 69d8e4b" in shown and TWO_BUILDS in shown
    # with --allow-incompatible the differs column stays last, after the build
    other = built(verified_report(candidate="ctk=q4_0,ctv=q4_0",
                                  settings=dict(up["settings"], seed=7)), TURBO)
    allowed = compare_reports([up, turbo, other], allow_incompatible=True)
    head = compare_markdown(allowed.rows).splitlines()[0]
    assert head.endswith("| marks | llama.cpp | differs |")
    # one build: no column, no note
    same = compare_reports([up, built(verified_report(), UPSTREAM)])
    md_same = compare_markdown(same.rows)
    assert "llama.cpp" not in md_same and "builds" not in md_same


def test_leaderboard_names_each_rows_build_and_notes_a_mix(tmp_path: Path) -> None:
    d = write_all(tmp_path / "r", {
        "a": built(model_report("alpha", "1"), UPSTREAM),
        "b": built(model_report("beta", "2"), TURBO),
        # the same model and candidate from the other build: its own row, not superseded
        "a-turbo": built(model_report("alpha", "1"), TURBO),
    })
    board = build_leaderboard(d)  # comparable: not refused
    assert not board.incompatible and not board.skipped
    [group] = board.groups
    assert group.builds_note == TWO_BUILDS and board.mixed_builds == (group,)
    cells = {(e.row.name, entry_cells(e)[-4]) for e in group.entries}
    assert cells == {("a", "upstream 0c1e570"), ("b", "turboquant 69d8e4b"),
                     ("a-turbo", "turboquant 69d8e4b")}
    md = leaderboard_markdown(board)
    assert f"**Mixed llama.cpp builds:** {TWO_BUILDS}" in md
    assert "llama.cpp upstream 0c1e570, turboquant 69d8e4b · settings:" in md
    assert "| A noise floor | llama.cpp | framework | settings | notes |" in md
    html = leaderboard_html(board)
    assert "Mixed llama.cpp builds:</strong> " + TWO_BUILDS in html
    assert "<td>turboquant 69d8e4b</td>" in html
    # a rerun of the same build still supersedes the older report
    write_report(built(model_report("alpha", "1", timestamp="2099-01-01T00:00:00"), UPSTREAM),
                 d / "a-new.json")
    again = build_leaderboard(d)
    assert len(again.skipped) == 1 and "a.json: superseded" in again.skipped[0]
    # one build: named in the heading, no note
    one = write_all(tmp_path / "one", {"a": built(model_report("alpha", "1"), UPSTREAM),
                                       "b": built(model_report("beta", "2"), UPSTREAM)})
    board_one = build_leaderboard(one)
    assert board_one.groups[0].builds_note is None and not board_one.mixed_builds
    md_one = leaderboard_markdown(board_one)
    assert "llama.cpp upstream 0c1e570 · settings:" in md_one and "Mixed" not in md_one


def test_cli_notes_mixed_builds(tmp_path: Path) -> None:
    d = write_all(tmp_path / "r", {"a": built(model_report("alpha", "1"), UPSTREAM),
                                   "b": built(model_report("alpha", "1"), TURBO)})
    runner = CliRunner()
    r = runner.invoke(app, ["leaderboard", "--in", str(d), "--out", str(tmp_path / "b.html")])
    assert r.exit_code == 0, r.output
    assert f"refract: note: candidate 'ctk=q8_0,ctv=q4_0': {TWO_BUILDS}" in r.stderr
    assert TWO_BUILDS in (tmp_path / "b.html").read_text(encoding="utf-8")
    r = runner.invoke(app, ["compare", "--markdown", str(d / "a.json"), str(d / "b.json")])
    assert r.exit_code == 0, r.output
    assert TWO_BUILDS in r.stdout and "| turboquant 69d8e4b |" in r.stdout


def test_refract_llm_reports_show_unknown_build() -> None:
    examples = shared_file("refract-examples")
    board = build_leaderboard(examples)
    builds = {e.row.name: e.row.build for g in board.groups for e in g.entries}
    assert builds == {
        "catastrophic-symturbo": "unknown 817e913",  # records a commit, not a flavour
        "clean-q8q8-mistral24b": "unknown",
        "degraded-qwen7b": "unknown",
        "distribution-broken-gemma26b": "unknown",
    }
    q8 = next(g for g in board.groups if g.candidate == "ctk=q8_0,ctv=turbo4")
    assert q8.builds == ("unknown",) and q8.builds_note is None
    assert "| unknown | refract-llm" in leaderboard_markdown(board)
    # ours from upstream beside refract-llm's of the same candidate: flagged, not refused
    ours = built(load_report(examples / "degraded-qwen7b.json"), UPSTREAM)
    rows = compare_reports([examples / "clean-q8q8-mistral24b.json", ours],
                           allow_incompatible=True).rows
    md = compare_markdown(rows)
    assert "| unknown |" in md and "| upstream 0c1e570 |" in md
    assert "rows come from 2 llama.cpp builds: unknown, upstream 0c1e570 (unknown: " in md


# ------------------------------------------------------------------ real reports, both builds

#: the other flavour's Python (an editable install of it), to score the same tiny model there
OTHER_BUILD_PYTHON = os.environ.get("REFRACT_OTHER_BUILD_PYTHON") or str(
    Path(__file__).resolve().parents[2] / "build" / "turbo-dev" / "bin" / "python"
)

_SCORE = """
import json, sys
from refract.scoring import run_score
rep = run_score(sys.argv[1], "ctk=q8_0,ctv=q8_0", prompts=sys.argv[2], corpus=sys.argv[3],
                chunks=1, ctx=128, n_predict=4, threads=1, noise_floor=False)
from refract.report.io import write_report
write_report(rep, sys.argv[4])
"""


@needs_core
def test_real_reports_from_two_builds(
    files: dict[str, Path], tiny_model: Path, tmp_path: Path
) -> None:
    """A real report of this build names it; with the other flavour's interpreter at hand
    (REFRACT_OTHER_BUILD_PYTHON, or build/turbo-dev's), the same score there is another row."""
    from refract.engine.facade import build_info

    info = build_info()
    out = tmp_path / "r"
    out.mkdir()
    here = out / "here.json"
    subprocess.run([sys.executable, "-c", _SCORE, str(tiny_model), str(files["prompts"]),
                    str(files["corpus"]), str(here)], check=True, timeout=300)
    mine = load_report(here)
    assert llama_build(mine) == (f"{info['llama_cpp_flavour']} "
                                 f"{short_commit(info['llama_cpp_commit'])}").strip()
    if not Path(OTHER_BUILD_PYTHON).is_file():
        pytest.skip(f"no second llama.cpp build's Python at {OTHER_BUILD_PYTHON}")
    there = out / "there.json"
    subprocess.run([OTHER_BUILD_PYTHON, "-c", _SCORE, str(tiny_model), str(files["prompts"]),
                    str(files["corpus"]), str(there)], check=True, timeout=300)
    theirs = load_report(there)
    if llama_build(theirs) == llama_build(mine):
        pytest.skip(f"{OTHER_BUILD_PYTHON} has the same build ({llama_build(mine)})")
    result = compare_reports([here, there])  # the same model and inputs: comparable
    assert result.comparability.ok and result.comparability.mixed_builds
    note = f"rows come from 2 llama.cpp builds: {llama_build(mine)}, {llama_build(theirs)}"
    assert note in compare_markdown(result.rows)
    board = build_leaderboard(out)
    [group] = board.groups
    assert len(group.entries) == 2 and not board.skipped  # one row per build
    assert group.builds_note is not None
    assert sorted(group.builds) == sorted([llama_build(mine), llama_build(theirs)])
