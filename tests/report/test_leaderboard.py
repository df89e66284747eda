"""Leaderboard: one ranking per candidate across models, comparability, controls, files."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import shared_file
from refract.cli import app
from refract.report.comparability import IncompatibleReports
from refract.report.io import write_report
from refract.report.leaderboard import (
    FRONTIER_HEADING,
    FRONTIER_LEGEND,
    FRONTIER_MARK,
    HEADERS,
    HTML_NAME,
    INTERVAL_LEGEND,
    MARKDOWN_NAME,
    UNDECIDED_LEGEND,
    build_leaderboard,
    entry_cells,
    leaderboard_html,
    leaderboard_markdown,
    write_leaderboards,
)
from reportkit import SETTINGS, make_axes, model_report, uncertain_axes, write_all


def test_ranks_one_candidate_across_models_with_controls_and_partials(tmp_path: Path) -> None:
    errored = make_axes(70, 80, 90, 95)
    errored["kld"] = {"error": "out of memory"}
    invalid = make_axes(70, 80, 90, 95)
    assert invalid["kld"] is not None
    invalid["kld"].update(invalid=True, invalid_reason="non-finite logits in 3 of 510 rows")
    d = write_all(tmp_path / "r", {
        "a": model_report("alpha", "1", axes=make_axes(60, 70, 80, 90)),
        "b": model_report("beta", "2"),  # default axes: composite 90.86
        "c": model_report("gamma", "3", axes=errored),
        "d": model_report("delta", "4", axes=invalid),
        "e": model_report("alpha", "1", candidate="ctk=f16,ctv=f16"),
    })
    board = build_leaderboard(d)
    assert [g.candidate for g in board.groups] == ["ctk=q8_0,ctv=q4_0", "ctk=f16,ctv=f16"]
    main, control = board.groups
    assert [(e.rank, e.row.model, e.kind) for e in main.entries] == [
        (1, "beta", "ranked"), (2, "alpha", "ranked"), (3, "delta", "ranked"),
        (None, "gamma", "partial"),
    ]
    assert control.self_check and [e.kind for e in control.entries] == ["control"]
    assert control.entries[0].rank is None
    cells = {e.row.model: entry_cells(e) for e in main.entries}
    assert cells["gamma"][0] == "—" and cells["gamma"][7] == "error"
    # no allocation figures in these reports: no row is placed on a frontier
    assert HEADERS[5] == "frontier" and {c[5] for c in cells.values()} == {"—"}
    assert "partial: not ranked" in cells["gamma"][-1]
    assert cells["delta"][2] == "0.00" and cells["delta"][7] == "invalid"
    assert "B KLD@D invalid: non-finite logits in 3 of 510 rows" in cells["delta"][-1]
    assert entry_cells(control.entries[0])[0] == "ctl"
    # framework and settings fingerprint on every row, equal across a comparable table
    assert {c[-3] for c in cells.values()} == {"refract 0.1.0"}
    assert len({c[-2] for c in cells.values()}) == 1 and re.fullmatch(r"[0-9a-f]{8}",
                                                                      cells["beta"][-2])
    md = leaderboard_markdown(board)
    assert "## Candidate `ctk=f16,ctv=f16` — self-check (negative control)" in md
    assert "| ctl | alpha |" in md and "| 1 | beta | 90.86 | EXCELLENT |" in md
    assert ("settings: KLD 32×512 · n_predict 40 · batched · raw text · seed 42 · "
            "R-NIAH ≤16384") in md
    html = leaderboard_html(board)
    assert "b-error" in html and "b-invalid" in html and 'class="control"' in html


def test_incomparable_reports_are_refused_or_marked(tmp_path: Path) -> None:
    d = write_all(tmp_path / "r", {
        "a": model_report("alpha", "1"),
        "b": model_report("beta", "2"),
        "c": model_report("gamma", "3", settings=dict(SETTINGS, n_predict=128)),
    })
    with pytest.raises(IncompatibleReports, match=r"ctk=q8_0,ctv=q4_0.*n_predict differs"):
        build_leaderboard(d)
    board = build_leaderboard(d, allow_incompatible=True)
    [group] = board.incompatible
    marked = {e.row.model: e.differs for e in group.entries}
    assert marked == {"alpha": (), "beta": (), "gamma": ("n_predict",)}
    assert "differs: n_predict" in next(e.notes for e in group.entries if e.row.model == "gamma")
    assert "**Not comparable**" in leaderboard_markdown(board)
    assert "Not comparable" in leaderboard_html(board)
    # the model differs by design: different model hashes are fine within a table
    ok = write_all(tmp_path / "ok", {"a": model_report("alpha", "1"),
                                     "b": model_report("beta", "2")})
    assert not build_leaderboard(ok).incompatible


def test_one_row_per_model_newest_wins(tmp_path: Path) -> None:
    d = write_all(tmp_path / "r", {
        "old": model_report("alpha", "1", axes=make_axes(50, 60, 70, 80),
                            timestamp="2026-01-01T00:00:00"),
        "new": model_report("alpha-copy", "1", timestamp="2026-02-01T00:00:00"),
        "other": model_report("beta", "2"),
    })
    board = build_leaderboard(d)
    [group] = board.groups
    assert sorted(e.row.name for e in group.entries) == ["new", "other"]
    assert len(board.skipped) == 1 and "old.json: superseded" in board.skipped[0]


def test_refract_llm_reports_are_ranked_and_marked_unverified(tmp_path: Path) -> None:
    examples = shared_file("refract-examples")  # skipped without ../shared, a failure on CI
    board = build_leaderboard(examples)  # comparable per candidate, no hashes: not refused
    assert not board.incompatible
    q8 = next(g for g in board.groups if g.candidate == "ctk=q8_0,ctv=turbo4")
    assert [e.rank for e in q8.entries] == [1, 2, 3]
    assert all("unverified" in e.notes for e in q8.entries)
    assert q8.settings.startswith("KLD 32×512 · n_predict 50")
    # mixed with our verified reports of the same candidate: still compared on what both
    # carry (here n_predict 50 vs ours 40 → differs)
    mixed = tmp_path / "mixed"
    shutil.copytree(examples, mixed)
    write_report(model_report("ours", "9", candidate="ctk=q8_0,ctv=turbo4"), mixed / "o.json")
    with pytest.raises(IncompatibleReports, match="n_predict differs"):
        build_leaderboard(mixed)


def test_write_leaderboards_writes_both_files_atomically(tmp_path: Path) -> None:
    d = write_all(tmp_path / "run", {"a": model_report("alpha", "1"),
                                     "b": model_report("beta", "2")})
    files = write_leaderboards(d, d)
    assert files.markdown == d / MARKDOWN_NAME and files.html == d / HTML_NAME
    md = files.markdown.read_text(encoding="utf-8")
    html = files.html.read_text(encoding="utf-8")
    assert md == leaderboard_markdown(files.board) and md.startswith("# REFRACT leaderboard")
    assert html.startswith("<!DOCTYPE html>") and "prefers-color-scheme: dark" in html
    assert "<script" not in html and "http" not in html.split("<body>")[1]
    assert not [p for p in d.iterdir() if p.name.endswith(".tmp")]
    # rerun over the same directory: the outputs are not mistaken for reports
    again = write_leaderboards(d, d)
    assert not again.board.skipped
    # incomparable: written with marks by default, refused on request
    write_report(model_report("gamma", "3", settings=dict(SETTINGS, seed=7)), d / "c.json")
    assert write_leaderboards(d, d).board.incompatible
    with pytest.raises(IncompatibleReports, match="seed differs"):
        write_leaderboards(d, tmp_path / "out", allow_incompatible=False)


def test_cli_leaderboard_refuses_incomparable(tmp_path: Path) -> None:
    d = write_all(tmp_path / "r", {
        "a": model_report("alpha", "1"),
        "b": model_report("beta", "2", settings=dict(SETTINGS, chunks=8)),
    })
    runner = CliRunner()
    r = runner.invoke(app, ["leaderboard", "--in", str(d), "--out", str(tmp_path / "b.md")])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and "kld.chunks differs" in lines[0]
    assert not (tmp_path / "b.md").exists()
    r = runner.invoke(app, ["leaderboard", "--in", str(d), "--out", str(tmp_path / "b.md"),
                            "--allow-incompatible"])
    assert r.exit_code == 0, r.output
    assert "not comparable" in r.stderr
    assert "differs: kld.chunks" in (tmp_path / "b.md").read_text(encoding="utf-8")


def test_matrix_reports_are_named_by_the_matrix_model_name(tmp_path: Path) -> None:
    """A matrix cell's report carries its ``[[models]] name`` (``extras.matrix.model_name``):
    leaderboard rows (Markdown, HTML, and ``refract leaderboard --out``) show that name, not the
    model file's; reports without it keep the file name."""
    def cell(file: str, sha: str, name: str) -> dict[str, Any]:
        rep = model_report(file, sha)
        rep["extras"] = {"matrix": {"model_name": name, "cell_fingerprint": "0" * 24}}
        return rep

    d = write_all(tmp_path / "run", {
        "gemma__q8": cell("gemma-3-270m-it-Q8_0", "1", "Gemma 3 270M"),
        "mistral__q8": cell("mistral-7b-v0.3.Q4_K_M", "2", "Mistral <7B> | v0.3"),
        "plain": model_report("plain-file", "3"),
    })
    files = write_leaderboards(d, d)
    [group] = files.board.groups
    assert sorted(e.row.model for e in group.entries) == [
        "Gemma 3 270M", "Mistral <7B> | v0.3", "plain-file"]
    md = files.markdown.read_text(encoding="utf-8")
    assert "| Gemma 3 270M |" in md and "| Mistral &lt;7B&gt; \\| v0.3 |" in md
    assert "| plain-file |" in md
    assert "gemma-3-270m-it-Q8_0" not in md and "mistral-7b" not in md
    html = files.html.read_text(encoding="utf-8")
    assert "<td>Gemma 3 270M</td>" in html and "<td>Mistral &lt;7B&gt; | v0.3</td>" in html
    assert "gemma-3-270m-it-Q8_0" not in html
    r = CliRunner().invoke(app, ["leaderboard", "--in", str(d), "--out", str(tmp_path / "b.md")])
    assert r.exit_code == 0, r.output
    assert "| Gemma 3 270M |" in (tmp_path / "b.md").read_text(encoding="utf-8")


def test_interval_column_and_undecided_mark(tmp_path: Path) -> None:
    """Each row shows its composite's 95 % interval beside the band, a † where the band is not
    decided at 95 % (with a legend line), and — for a report without an interval."""
    undecided = model_report("alpha", "1", axes=uncertain_axes())
    decided = model_report("beta", "2", axes=uncertain_axes())
    comp = decided["uncertainty"]["composite"]
    comp.update(ci95=[81.0, 89.5], decided="PASS",
                band_probabilities={"EXCELLENT": 0.0, "PASS": 0.98, "DEGRADED": 0.02, "FAIL": 0.0})
    old = model_report("gamma", "3")
    old["uncertainty"] = None
    d = write_all(tmp_path / "r", {"a": undecided, "b": decided, "c": old})
    [group] = build_leaderboard(d).groups
    assert HEADERS[3:5] == ("band", "95 % interval")
    lo, hi = undecided["uncertainty"]["composite"]["ci95"]
    rows = {e.row.model: (e.interval, e.undecided, entry_cells(e)[3:5]) for e in group.entries}
    assert rows == {
        "alpha": (f"{lo:.1f}–{hi:.1f}", True, ["PASS", f"{lo:.1f}–{hi:.1f} †"]),
        "beta": ("81.0–89.5", False, ["PASS", "81.0–89.5"]),
        "gamma": ("—", False, ["EXCELLENT", "—"]),
    }
    md = leaderboard_markdown(build_leaderboard(d))
    assert f"| alpha | 86.62 | PASS | {lo:.1f}–{hi:.1f} † |" in md
    assert "| beta | 86.62 | PASS | 81.0–89.5 |" in md and "| gamma | 90.86 | EXCELLENT | — |" in md
    assert f"\n{INTERVAL_LEGEND}  \n{UNDECIDED_LEGEND}  \n" in md
    html = leaderboard_html(build_leaderboard(d))
    assert f"<td class=num>{lo:.1f}–{hi:.1f} †</td>" in html
    assert "<td class=num>81.0–89.5</td>" in html
    assert html.count('<p class="note legend">') == 2 and "band not decided at 95 %" in html
    # no undecided row: no † line; no interval at all (older reports): no legend, only —
    d2 = write_all(tmp_path / "r2", {"b": decided, "c": old})
    md = leaderboard_markdown(build_leaderboard(d2))
    assert INTERVAL_LEGEND in md and UNDECIDED_LEGEND not in md and "†" not in md
    d3 = write_all(tmp_path / "r3", {"c": old})
    md = leaderboard_markdown(build_leaderboard(d3))
    assert INTERVAL_LEGEND not in md and "| gamma | 90.86 | EXCELLENT | — |" in md
    assert 'class="note legend"' not in leaderboard_html(build_leaderboard(d3))


# ------------------------------------------------------------------ memory/quality frontier

REF = "ctk=f16,ctv=f16"
REF_BYTES = 18432


def sized(rep: dict[str, Any], per_token: int | None, ref_bytes: int | None = REF_BYTES,
          name: str | None = None) -> dict[str, Any]:
    """``rep`` with llama.cpp's allocation figures for its candidate and the reference (and
    the matrix's model name, when given)."""
    rep["environment"]["kv_bytes"] = {
        REF: {"per_token": ref_bytes, "fixed": 0},
        rep["candidate"]: {"per_token": per_token, "fixed": 0},
    }
    if name is not None:
        rep["extras"] = {"matrix": {"model_name": name, "cell_fingerprint": "0" * 24}}
    return rep


def gemma(candidate: str, per_token: int | None, axes: Any = None, **kw: Any) -> dict[str, Any]:
    extra = {} if axes is None else {"axes": axes}
    rep = model_report("gemma-3-270m-it-Q8_0", "1", candidate=candidate, **extra)
    return sized(rep, per_token, name="Gemma 3 270M", **kw)


def test_frontier_view_lists_the_configs_nothing_smaller_beats(tmp_path: Path) -> None:
    """Per model: the configs no smaller config scores as well as, smallest first, with their
    bytes, share of the reference's, composite, interval and band, the reference as the
    100 % / 100 point; dominated configs are left out and marked blank in the tables, rows
    without allocation figures (or not ranked) are counted in a line and marked —."""
    errored = make_axes(95, 95, 95, 95)
    errored["kld"] = {"error": "out of memory"}
    d = write_all(tmp_path / "r", {
        "q4": gemma("ctk=q4_0,ctv=q4_0", 5184, make_axes(50, 60, 70, 80)),  # 63.04
        "q8q4": gemma("ctk=q8_0,ctv=q4_0", 7488, uncertain_axes()),  # 86.62
        "q4q8": gemma("ctk=q4_0,ctv=q8_0", 7488, make_axes(40, 50, 60, 70)),  # same size, worse
        "q8": gemma("ctk=q8_0,ctv=q8_0", 9792),  # 90.86
        "q5": gemma("ctk=q5_0,ctv=q5_0", 11000, make_axes(60, 70, 80, 90)),  # larger, worse
        "q41": gemma("ctk=q4_1,ctv=q4_1", None),  # no allocation figures
        "part": gemma("ctk=iq4_nl,ctv=iq4_nl", 5000, errored),  # partial: not ranked
        "self": gemma(REF, REF_BYTES),  # the self-check stands for the reference point
        "beta": model_report("beta", "2"),  # an older report: nothing to place
    })
    board = build_leaderboard(d)
    [view] = board.frontiers
    assert (view.model, view.reference, view.placed, view.no_bytes, view.unranked) == (
        "Gemma 3 270M", REF, 5, 1, 1)
    assert [(p.label, p.kv_bytes, p.reference) for p in view.points] == [
        ("ctk=q4_0,ctv=q4_0", 5184, False), ("ctk=q8_0,ctv=q4_0", 7488, False),
        ("ctk=q8_0,ctv=q8_0", 9792, False), (REF, REF_BYTES, True)]
    assert board.unplaced == ("beta",)
    marks = {(g.candidate, e.row.model): e.frontier_cell for g in board.groups
             for e in g.entries}
    assert marks == {
        ("ctk=q4_0,ctv=q4_0", "Gemma 3 270M"): FRONTIER_MARK,
        ("ctk=q8_0,ctv=q4_0", "Gemma 3 270M"): FRONTIER_MARK,
        ("ctk=q8_0,ctv=q4_0", "beta"): "—",
        ("ctk=q4_0,ctv=q8_0", "Gemma 3 270M"): "",
        ("ctk=q8_0,ctv=q8_0", "Gemma 3 270M"): FRONTIER_MARK,
        ("ctk=q5_0,ctv=q5_0", "Gemma 3 270M"): "",
        ("ctk=q4_1,ctv=q4_1", "Gemma 3 270M"): "—",
        ("ctk=iq4_nl,ctv=iq4_nl", "Gemma 3 270M"): "—",
        (REF, "Gemma 3 270M"): FRONTIER_MARK,
    }
    interval = next(e.interval for g in board.groups for e in g.entries
                    if g.candidate == "ctk=q8_0,ctv=q4_0" and e.row.model == "Gemma 3 270M")
    md = leaderboard_markdown(board)
    assert "| 1 | Gemma 3 270M | 63.04 | DEGRADED | — | ◆ |" in md
    assert "| 1 | Gemma 3 270M | 73.31 | DEGRADED | — |  |" in md  # q5_0: beaten
    assert "| 1 | Gemma 3 270M | 90.86 | EXCELLENT | — | — |" in md  # q4_1: not placed
    assert FRONTIER_LEGEND in md
    section = md.split(f"## {FRONTIER_HEADING}\n")[1]
    assert section.split("\n\n")[1:5] == [
        "### Gemma 3 270M",
        f"Reference `{REF}` · llama.cpp unknown abc1234 · 3 of 5 configs on the frontier",
        "\n".join([
            "| config | KV bytes/token | % of reference | composite | 95 % interval | band |",
            "|---|---:|---:|---:|---:|---|",
            "| ctk=q4_0,ctv=q4_0 | 5,184 | 28.1 % | 63.04 | — | DEGRADED |",
            f"| ctk=q8_0,ctv=q4_0 | 7,488 | 40.6 % | 86.62 | {interval} † | PASS |",
            "| ctk=q8_0,ctv=q8_0 | 9,792 | 53.1 % | 90.86 | — | EXCELLENT |",
            f"| {REF} (reference) | 18,432 | 100.0 % | 100.00 | — | reference |",
        ]),
        "1 config has no allocation figures and is not placed.  \n"
        "1 config is partial or measured nothing, not ranked and not placed.  ",
    ]
    assert "no frontier: beta." in section
    for beaten in ("ctk=q4_0,ctv=q8_0", "ctk=q5_0,ctv=q5_0", "ctk=q4_1", "iq4_nl"):
        assert beaten not in section
    html = leaderboard_html(board)
    part = html.split(f"<h2>{FRONTIER_HEADING}</h2>")[1].split("</section>")[0]
    rows = re.findall(r"<tr[^>]*><td>([^<]+)</td>", part)
    assert rows == ["ctk=q4_0,ctv=q4_0", "ctk=q8_0,ctv=q4_0", "ctk=q8_0,ctv=q8_0",
                    f"{REF} (reference)"]
    assert ("<tr><td>ctk=q8_0,ctv=q8_0</td><td class=num>9,792</td><td class=num>53.1 %</td>"
            "<td class=num>90.86</td><td class=num>—</td><td>"
            '<span class="pill small b-excellent">EXCELLENT</span></td></tr>') in part
    assert '<tr class="reference"><td>ctk=f16,ctv=f16 (reference)</td>' in part
    assert "<h3>Gemma 3 270M</h3>" in part and 'class="table-wrap"' in part
    assert "1 config has no allocation figures and is not placed." in part
    assert "no frontier: beta." in part
    # the tables' mark column in HTML too
    assert "<td class=num>—</td><td>◆</td>" in html


def test_frontier_reference_and_missing_figures(tmp_path: Path) -> None:
    """A smaller config that scores a full 100 takes the reference's place; a reference
    without figures is not placed (no share of it shown); reports without any allocation
    figures leave the leaderboard without a frontier section."""
    perfect = make_axes(100.0, 100.0, 100.0, 100.0)
    d = write_all(tmp_path / "r", {
        "q8": gemma("ctk=q8_0,ctv=q8_0", 9792, perfect),
        "q4": gemma("ctk=q4_0,ctv=q4_0", 5184, make_axes(50, 60, 70, 80)),
        "self": gemma(REF, REF_BYTES),
    })
    board = build_leaderboard(d)
    [view] = board.frontiers
    assert [p.label for p in view.points] == ["ctk=q4_0,ctv=q4_0", "ctk=q8_0,ctv=q8_0"]
    control = next(g for g in board.groups if g.self_check)
    assert control.entries[0].frontier is False
    d2 = write_all(tmp_path / "r2", {
        "q8": gemma("ctk=q8_0,ctv=q8_0", 9792, ref_bytes=None),
        "q4": gemma("ctk=q4_0,ctv=q4_0", None, ref_bytes=None),
    })
    [view] = build_leaderboard(d2).frontiers
    assert [(p.label, p.share_text) for p in view.points] == [("ctk=q8_0,ctv=q8_0", "—")]
    assert view.notes() == [
        "1 config has no allocation figures and is not placed.",
        "The reference has no allocation figures and is not placed.",
    ]
    md = leaderboard_markdown(build_leaderboard(d2))
    assert "| ctk=q8_0,ctv=q8_0 | 9,792 | — | 90.86 | — | EXCELLENT |" in md
    plain = write_all(tmp_path / "plain", {"a": model_report("alpha", "1"),
                                           "b": model_report("beta", "2")})
    board = build_leaderboard(plain)
    assert not board.frontiers and board.unplaced == ("alpha", "beta")  # not shown
    assert FRONTIER_HEADING not in leaderboard_markdown(board)
    assert FRONTIER_HEADING not in leaderboard_html(board)
    assert FRONTIER_LEGEND not in leaderboard_markdown(board)


def test_frontier_and_rows_group_by_model_identity_not_name(tmp_path: Path) -> None:
    """The matrix's name labels a model; its identity (SHA-256, else file name) groups it:
    two files that share a name keep their own rows and frontiers (told apart by file name),
    and one file shown under two names across runs is one model (the newest report wins)."""
    def shared(file: str, sha: str, cand: str, nbytes: int, **kw: Any) -> dict[str, Any]:
        return sized(model_report(file, sha, candidate=cand, **kw), nbytes, name="Shared")

    d = write_all(tmp_path / "r", {
        "a8": shared("file-a", "1", "ctk=q8_0,ctv=q8_0", 9792),
        "a4": shared("file-a", "1", "ctk=q4_0,ctv=q4_0", 5184, axes=make_axes(50, 60, 70, 80)),
        "b8": shared("file-b", "2", "ctk=q8_0,ctv=q8_0", 4896),
        "old": sized(model_report("file-c", "3", candidate="ctk=q8_0,ctv=q8_0",
                                  timestamp="2026-01-01T00:00:00"), 9792, name="Old name"),
        "new": sized(model_report("file-c", "3", candidate="ctk=q8_0,ctv=q8_0",
                                  timestamp="2026-02-01T00:00:00"), 9792, name="New name"),
    })
    board = build_leaderboard(d)
    q8 = next(g for g in board.groups if g.candidate == "ctk=q8_0,ctv=q8_0")
    assert sorted(e.row.model for e in q8.entries) == ["New name", "Shared", "Shared"]
    assert len(board.skipped) == 1 and "old.json: superseded" in board.skipped[0]
    assert [v.model for v in board.frontiers] == [
        "New name", "Shared (file-a)", "Shared (file-b)"]
    assert [len(v.points) for v in board.frontiers] == [2, 3, 2]
    md = leaderboard_markdown(board)
    assert "### Shared (file-a)" in md and "### New name" in md and "Old name" not in md
