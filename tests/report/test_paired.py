"""`refract compare`'s paired differences (issue 22): per axis and for the composite, a − b with
its 95 % interval where both reports carry per-unit data on the same units, else why not."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import SHARED_DATA
from refract.cli import app
from refract.report.compare import compare_markdown, compare_reports, paired_lines
from refract.report.io import load_report, write_report
from reportkit import make_axes, verified_report

GOOD = "ctk=q8_0,ctv=q8_0"
BAD = "ctk=q4_0,ctv=q4_0"
NUMBER = re.compile(r"\d+\.\d")


def unit_axes(agree: list[int], chunks: list[float], plad: list[float],
              failed_cells: int = 1) -> dict[str, Any]:
    """Axes whose per-unit data reproduces their scores: trajectory prompts (of 40 tokens),
    KLD chunks, R-NIAH cells and PLAD cells."""
    axes: dict[str, Any] = make_axes()
    gtm = axes["gtm"]
    for row, k in zip(gtm["per_prompt"], agree, strict=True):
        row["prefix_agreement_length"] = k
    gtm["score"] = 100.0 * sum(agree) / (40 * len(agree))
    mean = sum(chunks) / len(chunks)
    axes["kld"].update(score=100.0 * math.exp(-mean), mean_kld=mean, per_chunk_kld=chunks)
    cells = axes["rniah"]["cells"]
    for i, cell in enumerate(cells):
        cell["degradation"] = 1.0 if i < failed_cells else 0.0
    axes["rniah"]["score"] = 100.0 * (1.0 - failed_cells / len(cells))
    axes["plad"]["per_prompt"] = [{"prompt_id": f"p-{i:03d}", "perturbation": "typo",
                                   "plad_pp": v} for i, v in enumerate(plad)]
    axes["plad"]["score"] = sum(plad) / len(plad)
    return axes


def good_report(**kw: Any) -> dict[str, Any]:
    axes = unit_axes([40, 40, 38, 40, 35, 40, 40, 39, 40, 40, 36, 40],
                     [0.010, 0.012, 0.009, 0.011, 0.010, 0.013, 0.008, 0.010],
                     [95.0, 92.0, 97.0, 90.0, 94.0, 96.0])
    return verified_report(candidate=kw.pop("candidate", GOOD), axes=axes, **kw)


def bad_report(**kw: Any) -> dict[str, Any]:
    axes = unit_axes([12, 20, 8, 15, 30, 10, 22, 9, 18, 14, 25, 11],
                     [0.090, 0.120, 0.080, 0.110, 0.100, 0.130, 0.095, 0.105],
                     [70.0, 65.0, 80.0, 60.0, 72.0, 68.0], failed_cells=3)
    return verified_report(candidate=kw.pop("candidate", BAD), axes=axes, **kw)


def without_units(report: dict[str, Any]) -> dict[str, Any]:
    axes = {k: dict(v) for k, v in report["axes"].items()}
    for entry, field in ((axes["gtm"], "per_prompt"), (axes["kld"], "per_chunk_kld"),
                         (axes["rniah"], "cells"), (axes["plad"], "per_prompt")):
        entry.pop(field)
    return dict(report, axes=axes)


def test_reports_reproduce_their_scores() -> None:
    for rep in (good_report(), bad_report()):
        unc = rep["uncertainty"]
        assert "unusable_units" not in unc and unc["held_fixed"] == []
        assert set(unc["axes"]) == {"gtm", "kld", "rniah", "plad"}


def test_point_is_the_score_difference_inside_its_interval() -> None:
    good, bad = good_report(), bad_report()
    [pair] = compare_reports([good, bad]).paired
    assert (pair.a, pair.b) == (BAD, GOOD) and not pair.unavailable
    assert set(pair.differences) == {"gtm", "kld", "rniah", "plad", "composite"}
    for key, d in pair.differences.items():
        if key == "composite":
            want = bad["composite"] - good["composite"]
        else:
            want = bad["axes"][key]["score"] - good["axes"][key]["score"]
        assert d["point"] == pytest.approx(want, abs=1e-9)
        lo, hi = d["ci95"]
        assert lo <= d["point"] <= hi
    # clearly worse: below on every axis and the composite, with probability ~1
    for key in ("gtm", "kld", "plad", "composite"):
        d = pair.differences[key]
        assert d["p_a_below_b"] > 0.99 and d["ci95"][1] < 0
    lines = paired_lines([pair])
    comp = pair.differences["composite"]
    lo, hi = comp["ci95"]
    assert lines[-1] == (f"composite: {BAD} is below {GOOD} by {-comp['point']:.1f}, 95 %: "
                         f"{-hi:.1f}–{-lo:.1f}")
    assert lines[0].startswith(f"A Trajectory: {BAD} is below {GOOD} by ")
    assert lines[0].endswith("(12 prompts)")


def test_order_names_the_lower_report_first() -> None:
    [pair] = compare_reports([bad_report(), good_report()]).paired
    assert (pair.a, pair.b) == (GOOD, BAD)
    assert pair.differences["composite"]["p_a_below_b"] < 0.01
    assert paired_lines([pair])[-1].startswith(f"composite: {BAD} is below {GOOD} by ")


def test_identical_reports_differ_by_zero() -> None:
    [pair] = compare_reports([good_report(), good_report(candidate=BAD)]).paired
    for d in pair.differences.values():
        assert d["point"] == 0.0 and d["ci95"] == [0.0, 0.0] and d["se"] == 0.0
        assert d["p_a_below_b"] == 0.0
    assert paired_lines([pair])[-1] == f"composite: {BAD} and {GOOD} are level, 95 %: 0.00–0.00"


def test_bootstrap_settings_come_from_the_reports() -> None:
    good = good_report()
    good["uncertainty"] = dict(good["uncertainty"], replicates=300, seed=7)
    [pair] = compare_reports([good, bad_report()]).paired
    assert (pair.replicates, pair.seed) == (300, 7)
    [pair] = compare_reports([without_units(good_report()), bad_report()]).paired
    assert (pair.replicates, pair.seed) == (2000, 42)


def test_without_units_no_number() -> None:
    [pair] = compare_reports([without_units(good_report()), bad_report()]).paired
    assert not pair.differences
    [line] = paired_lines([pair])
    assert "paired difference not available" in line and "no per-unit data in " + GOOD in line
    assert not NUMBER.search(line.replace(GOOD, "").replace(BAD, ""))
    [pair] = compare_reports([without_units(good_report()),
                              without_units(bad_report())]).paired
    assert paired_lines([pair]) == [f"{BAD} vs {GOOD}: paired difference not available "
                                    "(no per-unit data in both reports)"]


def test_partial_units_and_differing_ids() -> None:
    good, bad = good_report(), bad_report()
    bad["axes"]["kld"] = {k: v for k, v in bad["axes"]["kld"].items() if k != "per_chunk_kld"}
    bad["axes"]["gtm"]["per_prompt"][0]["id"] = "p-999"
    [pair] = compare_reports([good, bad]).paired
    assert set(pair.differences) == {"rniah", "plad"}
    assert pair.unavailable == {
        "gtm": "the reports scored different prompts",
        "kld": f"no per-unit data in {BAD}",
        "composite": "no paired difference for A Trajectory, B KLD@D",
    }
    lines = paired_lines([pair])
    assert "B KLD@D: paired difference not available (no per-unit data in " + BAD + ")" in lines
    assert lines[-1].startswith("composite: paired difference not available")
    # units that do not reproduce the score are not used
    off = good_report()
    off["axes"]["plad"]["score"] += 1.0
    [pair] = compare_reports([off, bad_report()]).paired
    assert pair.unavailable["plad"] == f"its units do not reproduce its score in {GOOD}"
    assert "composite" not in pair.differences


def test_composite_needs_the_same_axes() -> None:
    axes = bad_report()["axes"]
    low = {k: v for k, v in axes.items()}
    low["rniah"] = dict(axes["rniah"], confidence="low", base_acc_avg=0.1)
    bad = verified_report(candidate=BAD, axes=low)
    assert bad["composite_detail"]["axes_in_composite"] == ["gtm", "kld", "plad"]
    [pair] = compare_reports([good_report(), bad]).paired
    assert pair.unavailable == {"composite": "the reports have different axes in the composite"}
    assert "rniah" in pair.differences  # reported (unscored) axes are still paired


def test_incomparable_reports_refused_or_not_paired() -> None:
    from refract.report.comparability import IncompatibleReports
    from reportkit import SETTINGS

    other = bad_report(settings=dict(SETTINGS, ctx=1024))
    with pytest.raises(IncompatibleReports):
        compare_reports([good_report(), other])
    result = compare_reports([good_report(), other], allow_incompatible=True)
    assert paired_lines(result.paired) == [
        f"{BAD} vs {GOOD}: paired difference not available (the reports are not comparable)"]


def test_markdown_and_three_reports() -> None:
    result = compare_reports([good_report(), bad_report(), good_report(candidate="ctk=f16")])
    assert [(p.a, p.b) for p in result.paired] == [(BAD, GOOD), ("ctk=f16", GOOD)]
    md = compare_markdown(result.rows, result.paired)
    assert f"- composite: {BAD} is below {GOOD} by " in md
    assert f"- composite: ctk=f16 and {GOOD} are level" in md
    assert sum(1 for line in md.splitlines() if line.startswith("|")) == 2 + 3
    assert "Paired" not in compare_markdown(result.rows)
    assert compare_reports([good_report()]).paired == []


def test_refract_llm_reports_pair_what_they_carry() -> None:
    path = SHARED_DATA / "refract-examples" / "degraded-qwen7b.json"
    if not path.is_file():
        pytest.skip(f"shared example reports not available at {path}")
    old = load_report(path)
    twin = dict(old, candidate=GOOD)
    [pair] = compare_reports([old, twin]).paired
    assert pair.unavailable == {"kld": "no per-unit data in both reports",
                                "composite": "no paired difference for B KLD@D"}
    assert all(d["point"] == 0.0 for d in pair.differences.values())


def test_cli_prints_the_sentences(tmp_path: Path) -> None:
    runner = CliRunner()
    good, bad = good_report(), bad_report()
    write_report(good, tmp_path / "good.json")
    write_report(bad, tmp_path / "bad.json")
    [pair] = compare_reports([good, bad]).paired
    sentence = paired_lines([pair])[-1]
    r = runner.invoke(app, ["compare", str(tmp_path / "good.json"), str(tmp_path / "bad.json")])
    assert r.exit_code == 0, r.output
    assert sentence in r.stdout and "Paired differences" in r.stdout
    r = runner.invoke(app, ["compare", "--markdown", str(tmp_path / "good.json"),
                            str(tmp_path / "bad.json")])
    assert r.exit_code == 0, r.output
    assert f"- {sentence}" in r.stdout
    write_report(without_units(good), tmp_path / "plain.json")
    r = runner.invoke(app, ["compare", str(tmp_path / "plain.json"), str(tmp_path / "bad.json")])
    assert r.exit_code == 0, r.output
    [line] = [x for x in r.stdout.splitlines() if "paired difference" in x]
    assert "not available" in line and not NUMBER.search(line.replace(GOOD, "").replace(BAD, ""))
