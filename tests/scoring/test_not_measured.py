"""A report in which no axis scored says nothing was measured (issue 26, SPEC §4).

No composite, no band, no diagnosis about the KV config; every reader of reports (fields,
summary, compare, leaderboard, text card, HTML, repeatability) shows "—" / "not measured"
and never invents a 0 or a FAIL for it; the CLI exits non-zero.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from conftest import needs_core
from refract.bands import NOT_MEASURED
from refract.cli import app
from refract.report.compare import compare_markdown, compare_rows
from refract.report.fields import is_measured, report_band, report_composite
from refract.report.html import render_html
from refract.report.io import dumps_report, load_report, validate_report, write_report
from refract.report.leaderboard import build_leaderboard, entry_cells, leaderboard_markdown
from refract.report.summary import summary_cells, summary_markdown
from refract.report.text import render_text
from refract.scoring.repeatability import summarize_runs
from reportkit import make_axes, make_report, model_report

runner = CliRunner()


def nothing_scored_axes() -> dict[str, Any]:
    """Trajectory skipped, KLD failed at run time, R-NIAH low confidence, PLAD not run."""
    axes: dict[str, Any] = make_axes(rniah_confidence="low")
    axes["gtm"] = {"skipped": True, "reason": "--skip-trajectory"}
    axes["kld"] = {"error": "the corpus has 38 tokens; one window of ctx 64 needs at least 64"}
    axes["plad"] = None
    return axes


def llm_style_unmeasured() -> dict[str, Any]:
    """A refract-llm report in which nothing scored: it writes composite 0 and FAIL there."""
    skipped = {"score": None, "band": "skipped", "skipped": True}
    return validate_report({
        "schema": "refract.report.v0.3.3", "framework_version": "0.3.3",
        "model": "/m/llm.gguf", "reference": "ctk=f16,ctv=f16", "candidate": "ctk=q8_0,ctv=q8_0",
        "composite": 0.0, "band": "FAIL",
        "summary": "Substantial quality loss; treat this KV config as broken.",
        "diagnosis": [], "composite_detail": {f"{k}_score": None for k in
                                              ("gtm", "kld", "rniah", "plad")},
        "axes": {k: dict(skipped) for k in ("gtm", "kld", "rniah", "plad")},
    })


def test_report_without_a_scored_axis_has_no_composite_band_or_diagnosis(tmp_path: Path):
    rep = make_report(axes=nothing_scored_axes())
    assert rep["composite"] is None and rep["band"] is None and rep["measured"] is False
    assert rep["diagnosis"] == [] and rep["summary"] == NOT_MEASURED
    assert rep["composite_detail"]["axes_in_composite"] == []
    assert rep["axes"]["rniah"]["status"] == "unscored"  # still reported, with its score
    # the JSON layer writes it as nulls and loads it back as a report
    raw = orjson.loads(dumps_report(rep))
    assert raw["composite"] is None and raw["band"] is None
    write_report(rep, tmp_path / "r.json")
    loaded = load_report(tmp_path / "r.json")
    assert loaded["composite"] is None and not is_measured(loaded)
    # one scored axis is enough for a composite and a band
    axes = nothing_scored_axes()
    axes["plad"] = {"score": 95.0}
    one = make_report(axes=axes)
    assert one["composite"] == pytest.approx(95.0) and one["band"] == "EXCELLENT"
    assert one["measured"] is True


@pytest.mark.parametrize("rep", [make_report(axes=nothing_scored_axes()), llm_style_unmeasured()],
                         ids=["ours", "refract-llm"])
def test_readers_never_invent_a_zero_or_fail(rep: dict[str, Any]):
    assert not is_measured(rep)
    assert report_composite(rep) is None and report_band(rep) is None
    cells = summary_cells(rep)
    assert cells[1] == "—" and cells[2] == "not measured" and "not measured" in cells[-1]
    assert "FAIL" not in summary_markdown([rep])
    text = render_text(rep, color=False, width=120)
    head = [line for line in text.splitlines() if "NOT MEASURED" in line]
    assert len(head) == 1 and "No axis produced a score" in head[0]
    assert "FAIL" not in text and "quality loss" not in text
    assert not re.search(r"(?<![\d.])0\.00", text)  # no composite of 0 (100.00 is R-NIAH's)
    html = render_html(rep).split("Raw JSON")[0]  # the page, before the report's own JSON
    assert 'class="composite c-not-measured">—<' in html
    assert 'b-not-measured">not measured<' in html and NOT_MEASURED in html
    assert "quality loss" not in html and 'pill b-fail' not in html


def test_compare_and_leaderboard_show_not_measured_unranked(tmp_path: Path):
    unmeasured = model_report("omega", "9", axes=nothing_scored_axes())
    good = model_report("beta", "2")
    rows = compare_rows([unmeasured, good], sort=True)
    assert [r.model for r in rows] == ["beta", "omega"]  # never ranked as a 0
    assert rows[1].composite is None and rows[1].band is None
    assert "not measured" in rows[1].marker
    md = compare_markdown(rows)
    omega = next(line for line in md.splitlines() if "| omega |" in line)
    assert "| — | not measured |" in omega and "FAIL" not in omega
    d = tmp_path / "r"
    d.mkdir()
    write_report(unmeasured, d / "omega.json")
    write_report(good, d / "beta.json")
    write_report(model_report("alpha", "1", axes=make_axes(10, 20, 30, 40)), d / "alpha.json")
    [group] = build_leaderboard(d).groups
    assert [(e.rank, e.row.model, e.kind) for e in group.entries] == [
        (1, "beta", "ranked"), (2, "alpha", "ranked"), (None, "omega", "unmeasured")]
    cells = entry_cells(group.entries[-1])
    assert cells[:4] == ["—", "omega", "—", "not measured"]
    assert "not measured: no axis scored, not ranked" in cells[-1]
    board = leaderboard_markdown(build_leaderboard(d))
    assert "| — | omega | — | not measured |" in board


def test_repeatability_refuses_a_run_that_measured_nothing():
    good = make_report()
    with pytest.raises(ValueError, match="run.s. 2 measured nothing"):
        summarize_runs([good, make_report(axes=nothing_scored_axes())])


@needs_core
def test_cli_run_that_measures_nothing_exits_nonzero(tiny_chat_model: Path, tmp_path: Path):
    """R-NIAH alone on a model that never finds the needle: low confidence, excluded from the
    composite, so no axis scores — the report says so and the run fails (exit 1)."""
    hay = tmp_path / "hay.txt"
    hay.write_text("".join(f"Item {i} of list {i * 7 % 13} is done. " for i in range(3000)))
    out, page = tmp_path / "r.json", tmp_path / "r.html"
    r = runner.invoke(app, [
        "score", "-m", str(tiny_chat_model), "-c", "ctk=q8_0,ctv=q8_0", "--skip-trajectory",
        "--skip-kld", "--axis-rniah", "--rniah-haystack", str(hay), "--rniah-up-to", "4096",
        "--rniah-positions", "0.5", "--rniah-n-predict", "4", "--threads", "1",
        "--no-progress", "--json-out", str(out), "--html-out", str(page)])
    assert r.exit_code == 1, r.output
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("refract: error: nothing was measured for ctk=q8_0,ctv=q8_0")
    assert "Traceback" not in r.output
    rep = json.loads(out.read_text())
    assert rep["composite"] is None and rep["band"] is None and rep["measured"] is False
    assert rep["axes"]["rniah"]["confidence"] == "low"
    assert "NOT MEASURED" in r.stdout and "FAIL" not in r.stdout
    assert "c-not-measured" in page.read_text()
