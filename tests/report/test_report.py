"""Report assembly, JSON I/O, renderers, compare and leaderboard (SPEC §5)."""

from __future__ import annotations

import html
import io
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from rich.console import Console

from conftest import SHARED_DATA
from refract.axes import registry
from refract.composite import (
    DIAG_DECODE_DRIFT,
    DIAG_INTACT,
    FLOOR_MIN,
    check_floor,
    composite_score,
    mild_drift,
)
from refract.report.build import SCHEMA, build_report
from refract.report.comparability import IncompatibleReports
from refract.report.compare import compare_markdown, compare_reports, compare_rows
from refract.report.html import kld_percentiles, render_html, write_html
from refract.report.io import (
    ReportError,
    atomic_write_bytes,
    dumps_report,
    load_report,
    measured_content,
    write_report,
)
from refract.report.leaderboard import (
    DISCLAIMERS,
    build_leaderboard,
    leaderboard_markdown,
    write_leaderboard,
)
from refract.report.summary import summary_markdown, summary_table
from refract.report.text import print_report, render_text
from refract.uncertainty import band_phrase
from reportkit import (
    PROV,
    SETTINGS,
    make_axes,
    make_report,
    uncertain_axes,
    verified_report,
)

DIAG_BRITTLE = registry.get("plad").low_sentence  # type: ignore[union-attr]
EXAMPLES = SHARED_DATA / "refract-examples"

# file stem → (composite, band, (A, B, C, D)) as published by refract-llm
PUBLISHED = {
    "catastrophic-symturbo": (11.03, "FAIL", (3.93, 11.84, 100.0, 72.21)),
    "clean-q8q8-mistral24b": (90.86, "EXCELLENT", (76.65, 99.71, 100.0, 91.34)),
    "degraded-qwen7b": (77.98, "DEGRADED", (55.13, 98.75, 100.0, 76.73)),
    "distribution-broken-gemma26b": (29.12, "FAIL", (17.32, 17.59, 100.0, 78.40)),
}

TOP_LEVEL = [
    "schema",
    "framework_version",
    "environment",
    "repro_command",
    "timestamp",
    "score_direction",
    "score_range",
    "model",
    "reference",
    "candidate",
    "composite",
    "band",
    "summary",
    "diagnosis",
    "composite_detail",
    "axes",
    "extras",
]


@pytest.fixture
def examples() -> Path:
    if not EXAMPLES.is_dir() or not list(EXAMPLES.glob("*.json")):
        pytest.skip(f"shared example reports not available at {EXAMPLES}")
    return EXAMPLES


# ---------------------------------------------------------------------------- fixtures


def test_build_report_layout_and_values():
    rep = make_report()
    assert list(rep)[: len(TOP_LEVEL)] == TOP_LEVEL
    assert rep["schema"] == SCHEMA == "refract.report.v0.3.3"
    assert rep["score_direction"] == "higher_is_better"
    assert rep["score_range"] == [0, 100]
    assert round(rep["composite"], 2) == 90.86
    assert rep["band"] == "EXCELLENT"
    assert rep["summary"]
    assert rep["diagnosis"] and "drift" in rep["diagnosis"][0].lower()
    assert rep["environment"]["model"] == "/models/demo-Q8_0.gguf"
    assert rep["environment"]["llama_cpp_commit"] == "abc1234"
    assert rep["environment"]["backend"]
    assert rep["repro_command"] == "refract score --model /models/demo-Q8_0.gguf"
    cd = rep["composite_detail"]
    for key in ("gtm_score", "kld_score", "rniah_score", "plad_score"):
        assert isinstance(cd[key], float)
    assert cd["floor_score"] is None and cd["floor_ok"] is None and cd["floor_min"] == FLOOR_MIN
    assert cd["notes"] == []
    for key, expected_band in (
        ("gtm", "DEGRADED"),
        ("kld", "EXCELLENT"),
        ("rniah", "EXCELLENT"),
        ("plad", "EXCELLENT"),
    ):
        axis = rep["axes"][key]
        assert axis["band"] == expected_band
        assert axis["skipped"] is False
        assert axis["description"]
    assert rep["axes"]["gtm"]["per_prompt"][0]["id"] == "p-000"  # diagnostics kept
    assert rep["model_info"]["n_ctx_train"] == 32768
    assert rep["timings"]["total_s"] == 12.5
    assert rep["notes"] == ["a run note"]


def test_build_report_skipped_axes():
    rep = make_report(axes=make_axes(rniah=None, plad=None))
    assert rep["axes"]["rniah"]["skipped"] is True
    assert rep["axes"]["rniah"]["score"] is None
    assert rep["axes"]["plad"]["skipped"] is True
    assert rep["composite"] == pytest.approx(composite_score([76.65, 99.71]))
    assert rep["composite_detail"]["rniah_score"] is None
    assert rep["composite_detail"]["axes_in_composite"] == ["gtm", "kld"]
    # an axis key that is absent altogether is also a skipped entry
    rep2 = make_report(axes={"kld": make_axes()["kld"]})
    assert set(rep2["axes"]) == {"gtm", "kld", "rniah", "plad"}
    assert rep2["axes"]["gtm"]["skipped"] is True
    assert rep2["composite"] == pytest.approx(99.71)


def test_build_report_low_confidence_rniah_excluded():
    rep = make_report(axes=make_axes(rniah=10.0, rniah_confidence="low"))
    assert rep["composite"] == pytest.approx(composite_score([76.65, 99.71, 91.34]))
    assert rep["axes"]["rniah"]["score"] == 10.0  # still reported
    assert rep["axes"]["rniah"]["in_composite"] is False
    assert rep["composite_detail"]["excluded_axes"] == ["rniah"]
    assert rep["composite_detail"]["rniah_score"] is None
    assert any("rniah" in n and "excluded" in n for n in rep["composite_detail"]["notes"])
    # and the excluded axis must not drive the diagnosis, nor be said to hold
    assert branching(rep) == [mild_drift(["robustness"])]


def test_build_report_diagnosis_matches_axes():
    rep = make_report(axes=make_axes(55.13, 98.75, 100.0, 76.73))
    assert branching(rep) == [DIAG_DECODE_DRIFT, DIAG_BRITTLE]
    assert rep["band"] == "DEGRADED"
    rep = make_report(axes=make_axes(99.0, 99.9, 100.0, 98.0))
    assert branching(rep) == [DIAG_INTACT]


def branching(rep):
    """The diagnosis's SPEC §4 sentences; the last one may be the caveat of an undecided band,
    present exactly when the uncertainty block does not decide the band."""
    diag = list(rep["diagnosis"])
    undecided = rep["uncertainty"]["composite"]["decided"] is None
    assert diag[-1].startswith("Band not decided at 95 %") == undecided
    return diag[:-1] if undecided else diag


def test_build_report_nan_axis_zeroes_composite_and_serialises_null():
    rep = make_report(axes=make_axes(kld=float("nan")))
    assert rep["composite"] == 0.0
    assert rep["band"] == "FAIL"
    assert rep["axes"]["kld"]["band"] == "FAIL"
    loaded = orjson.loads(dumps_report(rep))
    assert loaded["axes"]["kld"]["score"] is None
    assert loaded["composite_detail"]["kld_score"] is None


def test_build_report_with_floor():
    floor = check_floor({"gtm": 100.0, "kld": 99.0})
    rep = make_report(floor=floor)
    cd = rep["composite_detail"]
    assert cd["floor_ok"] is False
    assert cd["floor_score"] == pytest.approx(floor.score)
    assert any("Noise floor" in n for n in cd["notes"])


# ----------------------------------------------------------------------------- JSON I/O


def test_dumps_nan_inf_numpy():
    data = {
        "nan": float("nan"),
        "inf": float("inf"),
        "ninf": -math.inf,
        "np_f": np.float64(1.5),
        "np_i": np.int64(7),
        "np_f32_nan": np.float32("nan"),
        "arr": np.array([1.0, np.nan, np.inf], dtype=np.float64),
        "arr16": np.array([0.5, np.nan], dtype=np.float16),
        "strided": np.arange(10, dtype=np.float32)[::2],
        "int_keys": {1: "a"},
    }
    out = orjson.loads(dumps_report(data))
    assert out["nan"] is None and out["inf"] is None and out["ninf"] is None
    assert out["np_f"] == 1.5 and out["np_i"] == 7 and out["np_f32_nan"] is None
    assert out["arr"] == [1.0, None, None]
    assert out["arr16"] == [0.5, None]
    assert out["strided"] == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert out["int_keys"] == {"1": "a"}


def test_dumps_unserialisable_raises_report_error():
    with pytest.raises(ReportError):
        dumps_report({"x": object()})


def test_measured_content_keeps_what_was_measured_and_drops_the_run():
    """The comparison every equality test of two runs goes through: it must ignore when, how
    long and which run, and see any change in what was measured."""
    report = {
        "candidate": "ctk=q8_0,ctv=q8_0", "composite": 90.5, "band": "PASS",
        "settings": {"ctx": 512, "reference_cache": True},
        "axes": {"kld": {"score": 99.1, "mean_kld": float("nan"), "seconds": 12.0},
                 "rniah": None},
        "timestamp": "t1", "timings": {"kld_s": 12.0}, "notes": ["reused"],
        "repro_command": "refract score", "environment": {"cpu": "a"},
        "extras": {"reference_store": {"reused": ["gtm-noise-floor"]}},
    }
    got = measured_content(report)
    assert got == {"candidate": "ctk=q8_0,ctv=q8_0", "composite": 90.5, "band": "PASS",
                   "settings": {"ctx": 512},
                   "axes": {"kld": {"score": 99.1, "mean_kld": None}, "rniah": None}}
    assert report["axes"]["kld"]["seconds"] == 12.0 and "extras" in report  # input untouched
    other_run = {**report, "timestamp": "t2", "timings": {"kld_s": 3.0}, "notes": [],
                 "environment": {"cpu": "b"}, "extras": {},
                 "settings": {"ctx": 512, "reference_cache": False},
                 "axes": {**report["axes"], "kld": {**report["axes"]["kld"], "seconds": 3.0}}}
    assert measured_content(other_run) == got
    for changed in ({"composite": 90.4}, {"settings": {"ctx": 256, "reference_cache": True}},
                    {"axes": {**report["axes"], "kld": {"score": 99.0, "seconds": 12.0}}}):
        assert measured_content({**report, **changed}) != got, changed


def test_write_report_round_trip_and_no_temp_files(tmp_path: Path):
    rep = make_report()
    path = write_report(rep, tmp_path / "r.json")
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
    loaded = load_report(path)
    assert loaded["composite"] == pytest.approx(rep["composite"])
    assert loaded["axes"]["kld"]["per_token_kld"][:3] == pytest.approx(
        rep["axes"]["kld"]["per_token_kld"][:3].tolist()
    )
    mode = path.stat().st_mode & 0o777
    assert mode & 0o044  # readable by others under a normal umask, not mkstemp's 0600


def test_atomic_write_does_not_clobber_on_serialisation_failure(tmp_path: Path):
    target = tmp_path / "r.json"
    target.write_bytes(b'{"old": true}')
    with pytest.raises(ReportError):
        write_report({"bad": object()}, target)
    assert target.read_bytes() == b'{"old": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_atomic_write_does_not_clobber_on_replace_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    target = tmp_path / "r.json"
    target.write_bytes(b"original")

    def boom(src: str, dst: str) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk on fire"):
        atomic_write_bytes(target, b"new contents")
    assert target.read_bytes() == b"original"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_load_report_errors_name_the_file(tmp_path: Path):
    cases = {
        "notjson.json": b"this is { not json",
        "array.json": b"[1, 2, 3]",
        "noschema.json": b'{"axes": {}}',
        "foreign.json": b'{"schema": "something.else.v1", "axes": {}}',
        "future.json": b'{"schema": "refract.report.v9.0.0", "axes": {}}',
        "noaxes.json": b'{"schema": "refract.report.v0.3.3"}',
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ReportError, match=re.escape(str(path))):
            load_report(path)
    missing = tmp_path / "missing.json"
    with pytest.raises(ReportError, match="missing.json"):
        load_report(missing)


def test_load_example_reports(examples: Path):
    for stem, (composite, band_name, _axes) in PUBLISHED.items():
        rep = load_report(examples / f"{stem}.json")
        assert round(rep["composite"], 2) == composite
        assert rep["band"] == band_name
        assert rep["schema"].startswith("refract.report.v0.")
        assert "framework_version" in rep  # filled in for v0.2.x
        assert isinstance(rep["environment"], dict)
        assert set(rep["axes"]) == {"gtm", "kld", "rniah", "plad"}


# ------------------------------------------------------------------------ compare/board


def test_compare_rows_on_examples(examples: Path):
    paths = sorted(examples.glob("*.json"))
    rows = compare_rows(paths)
    assert [r.name for r in rows] == [p.stem for p in paths]
    for row in rows:
        composite, band_name, axes = PUBLISHED[row.name]
        assert round(row.composite, 2) == composite
        assert row.band == band_name
        got = tuple(round(row.scores[k] or 0.0, 2) for k in ("gtm", "kld", "rniah", "plad"))
        assert got == axes
    by_name = {r.name: r for r in rows}
    assert by_name["catastrophic-symturbo"].candidate == "ctk=turbo4,ctv=turbo4"
    assert by_name["catastrophic-symturbo"].model == "gemma-4-26B-A4B-it-Q8_0"
    assert by_name["catastrophic-symturbo"].mean_kld == pytest.approx(2.133356)
    md = compare_markdown(rows)
    assert sum(1 for line in md.splitlines() if line.startswith("|")) == len(rows) + 2
    assert "unverified" in md  # refract-llm's reports carry no hashes
    assert "| 90.86 | EXCELLENT |" in md
    sorted_rows = compare_rows(paths, sort=True)
    assert [round(r.composite, 2) for r in sorted_rows] == [90.86, 77.98, 29.12, 11.03]


def test_compare_mixes_dicts_and_recomputes_missing_composite(examples: Path):
    ours = make_report()
    ours_no_comp = dict(ours, composite=None)
    rows = compare_rows([ours, ours_no_comp, examples / "degraded-qwen7b.json"])
    assert rows[0].composite == pytest.approx(ours["composite"])
    assert rows[1].composite == pytest.approx(ours["composite"])
    assert round(rows[2].composite, 2) == 77.98


def test_leaderboard_on_examples(examples: Path, tmp_path: Path):
    board = build_leaderboard(examples)
    assert not board.skipped
    groups = {(g.candidate, g.framework): g for g in board.groups}
    assert len(groups) == 2
    q8 = next(g for g in board.groups if g.candidate == "ctk=q8_0,ctv=turbo4")
    assert [e.rank for e in q8.entries] == [1, 2, 3]
    assert [round(e.row.composite, 2) for e in q8.entries] == [90.86, 77.98, 29.12]
    assert q8.entries[0].row.model.startswith("Mistral-Small-24B")
    assert q8.entries[0].notes == "Mild short-context drift; unverified"
    assert "Brittleness" in q8.entries[1].notes
    turbo = next(g for g in board.groups if g.candidate == "ctk=turbo4,ctv=turbo4")
    assert turbo.framework == "refract-llm 0.3.2"
    assert round(turbo.entries[0].row.composite, 2) == 11.03
    assert turbo.entries[0].row.mean_kld == pytest.approx(2.133356)

    md = leaderboard_markdown(board)
    assert "ranks KV-cache quantizations, not models" in md
    assert "| 1 | Mistral-Small-24B-Instruct-2501-Q4_K_M | 90.86 | EXCELLENT |" in md
    assert "2.1334" in md

    out_md = write_leaderboard(examples, tmp_path / "board.md")
    assert out_md.read_text(encoding="utf-8") == md
    out_html = write_leaderboard(board, tmp_path / "board.html")
    html_text = out_html.read_text(encoding="utf-8")
    assert html_text.startswith("<!DOCTYPE html>")
    assert "90.86" in html_text and "11.03" in html_text
    assert DISCLAIMERS[0].split(":")[0] in html_text
    with pytest.raises(ValueError, match="extension"):
        write_leaderboard(board, tmp_path / "board.txt")


def test_leaderboard_ranks_ties_and_skips_non_reports(tmp_path: Path):
    a = make_report(model="/m/a.gguf")
    b = make_report(model="/m/b.gguf")
    c = make_report(model="/m/c.gguf", axes=make_axes(50, 60, 70, 80))
    other = make_report(model="/m/d.gguf", candidate="ctk=q4_0,ctv=q4_0")
    for name, rep in (("a", a), ("b", b), ("c", c), ("d", other)):
        write_report(rep, tmp_path / f"{name}.json")
    (tmp_path / "junk.json").write_text("not json at all")
    board = build_leaderboard(tmp_path)
    assert len(board.skipped) == 1 and "junk.json" in board.skipped[0]
    main = next(g for g in board.groups if g.candidate == "ctk=q8_0,ctv=q4_0")
    assert [e.rank for e in main.entries] == [1, 1, 3]
    assert [e.row.model for e in main.entries] == ["a", "b", "c"]
    assert any(g.candidate == "ctk=q4_0,ctv=q4_0" for g in board.groups)


# ----------------------------------------------------------------------------- renderers

MALICIOUS = '/m/<script>alert("x")</script>"><img src=x onerror=alert(1)>.gguf'


def _assert_self_contained(html_text: str) -> None:
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html_text, re.I)
    assert "<script" not in html_text.lower()
    assert "<link" not in html_text.lower()
    assert "@import" not in html_text
    assert "url(" not in html_text


def test_html_self_contained_with_charts(tmp_path: Path):
    rep = make_report()
    html_text = render_html(rep)
    _assert_self_contained(html_text)
    assert html_text.startswith("<!DOCTYPE html>")
    assert html_text.count("<svg") >= 5  # scores, trajectory, histogram, percentiles, heatmap
    assert "prefers-color-scheme: dark" in html_text
    assert "per-token KLD histogram" in html_text
    assert "per-token KLD percentiles" in html_text
    assert "R-NIAH accuracy heatmap" in html_text
    assert "trajectory first divergence" in html_text
    assert "Prmopt number 1" in html_text  # PLAD per-cell table
    assert "<details>" in html_text and "Raw JSON" in html_text
    assert "abc1234" in html_text  # environment
    assert "-2.375" in html_text  # needle log-prob difference (cand − ref)
    assert "0.0027 – 0.0031" in html_text  # bootstrap interval
    assert "90.86" in html_text
    out = write_html(rep, tmp_path / "r.html")
    assert out.read_text(encoding="utf-8") == html_text


def test_html_escapes_malicious_strings():
    axes = make_axes()
    assert axes["gtm"] is not None
    axes["gtm"]["per_prompt"][0]["id"] = "<b>evil-id</b>"
    rep = make_report(model=MALICIOUS, candidate="ctk=<i>q8_0</i>", axes=axes)
    html_text = render_html(rep)
    _assert_self_contained(html_text)
    assert "<img" not in html_text
    assert "<b>evil" not in html_text and "<i>q8_0" not in html_text
    assert "&lt;script&gt;" in html_text
    assert "&lt;b&gt;evil-id&lt;/b&gt;" in html_text


def test_html_on_examples(examples: Path):
    for path in sorted(examples.glob("*.json")):
        rep = load_report(path)
        html_text = render_html(rep)
        _assert_self_contained(html_text)
        assert "<svg" in html_text
        assert f"{rep['composite']:.2f}" in html_text
        assert "R-NIAH accuracy heatmap" in html_text
        assert "trajectory first divergence" in html_text
        assert "only the mean" in html_text  # no KLD distribution in refract-llm reports


def test_kld_percentile_parsing():
    pts = kld_percentiles({"kld_percentiles": {"max": 3.0, "p99.9": 2.0, "median": 0.5, "min": 0}})
    assert [(p, v) for p, _, v in pts] == [(0.0, 0.0), (50.0, 0.5), (99.9, 2.0), (100.0, 3.0)]
    assert kld_percentiles({}) == []


def _colour_codes(text: str) -> list[str]:
    """SGR parameters that set a foreground/background colour."""
    found = []
    for m in re.finditer(r"\x1b\[([0-9;]*)m", text):
        found += [p for p in m.group(1).split(";") if p and 30 <= int(p) <= 49]
    return found


def test_text_card(monkeypatch: pytest.MonkeyPatch):
    rep = make_report(model="/m/[red]tricky[blink].gguf")
    plain = render_text(rep, color=False)
    assert "\x1b[" not in plain
    assert "90.86" in plain and "EXCELLENT" in plain
    for title in ("Trajectory", "KLD@D", "R-NIAH", "PLAD"):
        assert title in plain
    assert "76.65" in plain and "DEGRADED" in plain
    assert "[red]tricky[blink]" in plain  # report strings are never parsed as markup
    assert rep["diagnosis"][0][:30] in plain
    assert "a run note" in plain
    coloured = render_text(rep, color=True)
    assert "\x1b[" in coloured
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[" not in render_text(rep)
    buf = io.StringIO()
    print_report(rep, Console(file=buf, width=100, force_terminal=True))
    printed = buf.getvalue()
    assert "90.86" in printed
    assert not _colour_codes(printed)  # rich honours NO_COLOR (bold may remain)
    assert _colour_codes(coloured)


def test_text_card_skipped_and_excluded():
    rep = make_report(axes=make_axes(plad=None, rniah=5.0, rniah_confidence="low"))
    plain = render_text(rep, color=False)
    assert "skipped" in plain
    assert "excluded" in plain


def test_text_card_on_examples(examples: Path):
    for path in sorted(examples.glob("*.json")):
        rep = load_report(path)
        plain = render_text(rep, color=False)
        assert f"{rep['composite']:.2f}" in plain
        assert rep["band"] in plain


def test_divergence_analysis_is_shown() -> None:
    axes = make_axes()
    axes["gtm"]["divergence"] = {
        "n_divergences": 25, "near_tie_threshold": 0.05, "near_tie_fraction": 0.84,
        "median_margin": 0.021, "median_kl_at_divergence": 0.0123, "per_prompt": [],
    }
    axes["gtm"]["teacher_forced"] = {"n_positions": 4000, "mean_kld": 0.0042,
                                     "same_top1_pct": 96.5}
    rep = build_report(model="m.gguf", reference="ctk=f16,ctv=f16",
                       candidate="ctk=q8_0,ctv=q8_0", axes=axes)
    html = render_html(rep)
    assert "near-tie divergences (margin &lt; 0.05)" in html and "84%" in html
    assert "teacher-forced KLD along reference trajectories" in html and "0.0042" in html
    assert "near ties 84%" in render_text(rep, color=False, width=160)


# ------------------------------------------------------------------ axis statuses


def test_error_axis_is_reported_not_scored():
    axes = make_axes()
    axes["kld"] = {"error": "out of memory\nwhile decoding chunk 3"}
    rep = make_report(axes=axes)
    kld = rep["axes"]["kld"]
    assert kld["score"] is None and kld["band"] == "error" and kld["status"] == "error"
    assert kld["error"] == "out of memory while decoding chunk 3"  # one line
    assert kld["excluded_from_composite"] is True and kld["skipped"] is False
    assert rep["status"] == "partial"
    assert rep["composite"] == pytest.approx(composite_score([76.65, 100.0, 91.34]))
    assert rep["composite_detail"]["error_axes"] == ["kld"]
    assert "kld" in rep["composite_detail"]["excluded_axes"]
    assert any("kld: error — out of memory" in n for n in rep["composite_detail"]["notes"])
    plain = render_text(rep, color=False, width=160)
    assert "Partial report: B KLD@D failed" in plain
    assert "failed: out of memory while decoding chunk 3" in plain
    html_text = render_html(rep)
    assert "This axis failed at run time: out of memory while decoding chunk 3" in html_text
    assert "Partial report:" in html_text and "b-error" in html_text
    assert make_report()["status"] == "ok"
    loaded = orjson.loads(dumps_report(rep))
    assert loaded["axes"]["kld"]["band"] == "error"


def test_invalid_axis_scores_zero_and_is_diagnosed():
    axes = make_axes()
    reason = "candidate produced non-finite (NaN/inf) logits in 12 of 8160 scored rows"
    assert axes["kld"] is not None
    axes["kld"].update(invalid=True, invalid_reason=reason, score=float("nan"))
    rep = make_report(axes=axes)
    kld = rep["axes"]["kld"]
    assert kld["score"] == 0.0 and kld["band"] == "FAIL" and kld["status"] == "invalid"
    assert kld["in_composite"] is True
    assert rep["composite"] == 0.0 and rep["band"] == "FAIL"
    assert rep["composite_detail"]["invalid_axes"] == ["kld"]
    assert rep["diagnosis"][0] == (
        f"Axis B (KLD@D) invalid: {reason}. It scores 0, so the composite is 0."
    )
    assert rep["status"] == "ok"  # it ran; its result is a verdict, not a failure
    plain = render_text(rep, color=False, width=160)
    assert "invalid" in plain and "12 of 8160" in plain
    html_text = render_html(rep)
    assert "b-invalid" in html_text and "Invalid: " in html_text


def test_self_check_is_labelled_everywhere():
    rep = make_report(candidate="ctk=f16,ctv=f16")
    assert rep["self_check"] is True
    assert make_report()["self_check"] is False
    plain = render_text(rep, color=False, width=140)
    assert "self-check: reference vs reference — not a quantization score" in plain
    html_text = render_html(rep)
    assert "<title>REFRACT self-check" in html_text
    assert "not a quantization score" in html_text
    row = compare_rows([rep])[0]
    assert row.self_check and "self-check" in row.marker


def test_skipped_and_unscored_bands():
    rep = make_report(axes=make_axes(plad=None, rniah=10.0, rniah_confidence="low"))
    plad = rep["axes"]["plad"]
    assert plad["band"] == "skipped" and plad["status"] == "skipped" and plad["skipped"] is True
    rn = rep["axes"]["rniah"]
    assert rn["band"] == "unscored" and rn["excluded_from_composite"] is True
    assert rn["status"] == "unscored" and rn["score"] == 10.0
    assert rep["axes"]["gtm"]["excluded_from_composite"] is False
    row = compare_rows([rep])[0]
    assert row.cells["rniah"] == "(10.00)" and row.cells["plad"] == "—"
    plain = render_text(rep, color=False)
    assert "unscored (excluded)" in plain


def test_keyword_and_plad_confidence_follow_refract_llm_v033():
    axes = make_axes()
    assert axes["plad"] is not None
    axes["plad"]["confidence"] = "full"  # what older PLAD code wrote
    rep = make_report(axes=axes)
    assert rep["axes"]["rniah"]["needle_keyword"] == "APRICOT-7-BLUE"
    assert "password_keyword" not in rep["axes"]["rniah"]
    assert rep["axes"]["plad"]["confidence"] == "ok"
    html_text = render_html(rep)
    assert "<td>keyword</td><td>APRICOT-7-BLUE</td>" in html_text


def test_html_reads_old_keyword_name(examples: Path):
    rep = load_report(examples / "degraded-qwen7b.json")
    assert "password_keyword" in rep["axes"]["rniah"]
    assert "<td>keyword</td><td>APRICOT-7-BLUE</td>" in render_html(rep)


# ------------------------------------------------------------------ noise floor


def _with_floor(gtm: float, floor_score: float = 58.0) -> dict[str, Any]:
    axes = make_axes(gtm=gtm)
    assert axes["gtm"] is not None
    axes["gtm"]["noise_floor"] = {
        "score": floor_score, "full_match_rate": 16 / 30, "median_first_divergence": 31.0,
        "n_matched": 16, "n_prompts": 30, "method": "reference batched vs sequential",
        "seconds": 1.5,
    }
    return make_report(axes=axes)


def test_noise_floor_is_rendered_and_judged():
    rep = _with_floor(42.6)
    floor = rep["axes"]["gtm"]["noise_floor"]
    assert floor["verdict"] == "within" and round(floor["tolerance"], 1) == 18.2
    assert rep["axes"]["gtm"]["score"] == 42.6  # the axis score is unchanged
    assert any(d.startswith("Trajectory drift within numerical noise") for d in rep["diagnosis"])
    plain = render_text(rep, color=False, width=160)
    assert "42.60" in plain and "numerical-noise floor 58.0 (within)" in plain
    html_text = render_html(rep)
    assert "numerical-noise floor (reference vs itself)" in html_text
    assert "58.0 — candidate within numerical noise (tolerance 18.2)" in html_text
    assert "reference batched vs sequential" in html_text and "16/30" in html_text
    row = compare_rows([rep])[0]
    assert row.noise_floor == "58.0 (within)"
    assert "58.0 (within)" in compare_markdown([row])
    far = _with_floor(10.0)
    assert far["axes"]["gtm"]["noise_floor"]["verdict"] == "far beyond"
    assert any("far beyond numerical noise" in d for d in far["diagnosis"])
    # no floor measured: nothing shown, no sentence
    plain = render_text(make_report(), color=False, width=160)
    assert "noise floor" not in plain


# -------------------------------------------------------------------- uncertainty


def _ci(est: dict[str, Any]) -> str:
    lo, hi = est["ci95"]
    return f"{lo:.1f}–{hi:.1f}"


def _decided(rep: dict[str, Any]) -> dict[str, Any]:
    """``rep`` with its composite's band decided: 97 % PASS (the block set by hand)."""
    comp = rep["uncertainty"]["composite"]
    comp["band_probabilities"] = {"EXCELLENT": 0.0, "PASS": 0.97, "DEGRADED": 0.03, "FAIL": 0.0}
    comp["decided"] = "PASS"
    comp["ci95"] = [80.4, 89.9]
    return rep


def test_text_card_shows_intervals_and_band_probabilities():
    rep = make_report(axes=uncertain_axes())
    unc = rep["uncertainty"]
    comp = unc["composite"]
    assert rep["band"] == "PASS" and comp["decided"] is None
    plain = render_text(rep, color=False, width=160)
    head = plain.splitlines()[1]
    assert f"86.62 [95 %: {_ci(comp)}]" in head
    assert band_phrase("PASS", comp["band_probabilities"]) in head
    assert "75 % PASS, 15 % EXCELLENT, 10 % DEGRADED" in head
    assert "Band not decided at 95 %. " + rep["summary"] in plain
    for key, title in (("gtm", "Trajectory"), ("kld", "KLD@D"), ("rniah", "R-NIAH")):
        row = next(line for line in plain.splitlines() if title in line and "█" in line)
        assert _ci(unc["axes"][key]) in row
    plad = next(line for line in plain.splitlines() if "PLAD" in line and "█" in line)
    assert re.search(r"91\.34\s+—\s+EXCELLENT", plad)  # held at its score: no interval
    assert "95 % intervals: paired-bootstrap-bca v1, 2000 replicates, seed 42" in plain
    assert "held at their score in the composite: D PLAD (fewer than two units)" in plain
    # decided: the probabilities, no caveat
    plain = render_text(_decided(rep), color=False, width=160)
    assert "86.62 [95 %: 80.4–89.9]  PASS — 97 % PASS, 3 % DEGRADED" in plain
    assert "not decided" not in plain.split("Diagnosis")[0]


def test_reports_without_intervals_render_as_before():
    """No block (refract-llm's reports, older ones): no interval anywhere, the card's head
    as it always was; a block whose composite axes are all held at their score (no per-unit
    data) gives the composite no interval either (it would be the point)."""
    rep = make_report(axes=uncertain_axes())
    rep["uncertainty"] = None
    bare = {k: v for k, v in rep.items() if k != "uncertainty"}
    plain = render_text(rep, color=False, width=160)
    assert plain == render_text(bare, color=False, width=160)
    assert "86.62  PASS   " + rep["summary"] in plain
    card = plain.split("Diagnosis")[0]  # (the diagnosis was written with the block)
    assert "95 %" not in card and "replicates" not in card
    html_text = render_html(bare)
    for mark in ("whisker", "band-probabilities", "<h3>Uncertainty</h3>", "replicates",
                 "banner undecided"):
        assert mark not in html_text
    held = make_report()  # synthetic units that do not reproduce the scores: all held
    assert held["uncertainty"]["held_fixed"] == ["gtm", "kld", "plad", "rniah"]
    plain = render_text(held, color=False, width=160)
    assert "90.86  EXCELLENT   " in plain and "[95 %" not in plain
    assert "held at their score in the composite: A Trajectory" in plain
    assert "whisker" not in render_html(held)


def test_html_shows_whiskers_band_probabilities_and_method():
    rep = make_report(axes=uncertain_axes())
    unc = rep["uncertainty"]
    html_text = render_html(rep)
    _assert_self_contained(html_text)
    # one whisker per interval: the composite and the three axes with units (PLAD is held)
    whiskers = re.findall(r'<g class="whisker" stroke="currentColor"[^>]*><title>([^<]*)</title>',
                          html_text)
    assert whiskers == [
        f"Composite: 95 % interval {_ci(unc['composite'])}",
        f"A · Trajectory: 95 % interval {_ci(unc['axes']['gtm'])}",
        f"B · KLD@D: 95 % interval {_ci(unc['axes']['kld'])}",
        f"C · R-NIAH: 95 % interval {_ci(unc['axes']['rniah'])}",
    ]
    hero = html_text.split('<div class="hero-text">')[1].split("</div>")[0]
    assert ('<span class="pill b-pass">PASS</span> <span class="note band-probabilities">'
            f"— 75 % PASS, 15 % EXCELLENT, 10 % DEGRADED · 95 % interval {_ci(unc['composite'])}"
            in hero)
    assert '<p class="banner undecided"><strong>Band not decided at 95 %:</strong>' in html_text
    table = html_text.split("<h3>Uncertainty</h3>")[1].split("<h3>Diagnosis</h3>")[0]
    assert "<td>12 prompts</td>" in table and "<td>32 chunks</td>" in table
    assert "<td>9 cells</td><td>BCa</td>" in table
    assert html.escape(band_phrase("DEGRADED", unc["axes"]["gtm"]["band_probabilities"])) in table
    assert "2000 replicates, seed 42" in table and "Method: paired bootstrap" in table
    decided = render_html(_decided(rep))
    assert "— 97 % PASS, 3 % DEGRADED · 95 % interval 80.4–89.9" in decided
    assert "banner undecided" not in decided


# ------------------------------------------------------------------ comparability


def test_provenance_is_shown_in_card_and_html():
    rep = verified_report()
    plain = render_text(rep, color=False, width=140)
    assert "model sha256" in plain and "aaaaaaaaaaaaaaaa…" in plain
    assert "wikitext-2-raw-v1 test (bbbbbbbbbbbb…)" in plain
    html_text = render_html(rep)
    assert "provenance.prompts.sha256" in html_text and "settings.ctx" in html_text
    assert "unverified (no input hashes)" in render_text(make_report(), color=False, width=140)


def test_compare_refuses_incomparable_reports():
    a = verified_report(candidate="ctk=q8_0,ctv=q8_0")
    b = verified_report(candidate="ctk=q4_0,ctv=q4_0")
    result = compare_reports([a, b])
    assert result.comparability.ok and [r.differs for r in result.rows] == [(), ()]
    assert all(r.verified for r in result.rows)
    c = verified_report(candidate="ctk=q4_0,ctv=q4_0", settings=dict(SETTINGS, ctx=1024))
    with pytest.raises(IncompatibleReports, match=r"kld\.ctx differs .*512.*1024"):
        compare_reports([a, b, c])
    allowed = compare_reports([a, b, c], allow_incompatible=True)
    assert [r.differs for r in allowed.rows] == [(), (), ("kld.ctx",)]
    md = compare_markdown(allowed.rows)
    assert "| differs |" in md.splitlines()[0] and "kld.ctx" in md
    # another model (by hash), another prompt set, another method version
    other_model = dict(PROV, model=dict(PROV["model"], sha256="e" * 64))
    with pytest.raises(IncompatibleReports, match="model differs"):
        compare_reports([a, verified_report(provenance=other_model)])
    other_prompts = dict(PROV, prompts=dict(PROV["prompts"], sha256="f" * 64))
    with pytest.raises(IncompatibleReports, match=r"prompts\.sha256 differs"):
        compare_reports([a, verified_report(provenance=other_prompts)])
    axes = make_axes()
    assert axes["kld"] is not None
    axes["kld"]["method_version"] = "0"
    with pytest.raises(IncompatibleReports, match=r"kld\.method differs"):
        compare_reports([a, verified_report(axes=axes)])
    # Trajectory by decode (method version 1) against by verification (2)
    by_decode = make_axes()
    assert by_decode["gtm"] is not None
    by_decode["gtm"]["method_version"] = "1" if a["axes"]["gtm"]["method_version"] != "1" else "2"
    with pytest.raises(IncompatibleReports, match=r"gtm\.method differs"):
        compare_reports([a, verified_report(axes=by_decode)])
    seq = make_axes()
    assert seq["gtm"] is not None
    seq["gtm"]["decode_mode"] = "sequential"
    with pytest.raises(IncompatibleReports, match=r"gtm\.decode_mode differs"):
        compare_reports([a, verified_report(settings=dict(SETTINGS, sequential=True))])
    with pytest.raises(IncompatibleReports, match=r"gtm\.decode_mode differs"):
        compare_reports([dict(a, axes={**a["axes"], "gtm": {**a["axes"]["gtm"],
                                                           "decode_mode": "batched"}}),
                         verified_report(axes=seq)])


def test_compare_reads_refract_llm_reports_as_unverified(examples: Path):
    old = load_report(examples / "degraded-qwen7b.json")
    twin = dict(old, candidate="ctk=q8_0,ctv=q8_0")
    result = compare_reports([old, twin])
    assert result.comparability.ok  # no hashes is not a reason to refuse
    assert result.comparability.unverified == ("Qwen2.5-7B-Instruct-Q8_0 ctk=q8_0,ctv=turbo4",
                                               "Qwen2.5-7B-Instruct-Q8_0 ctk=q8_0,ctv=q8_0")
    assert all(not r.verified and "unverified" in r.marker for r in result.rows)
    # what they do record is still compared: same model file name, n_predict 50 vs 128
    cata = load_report(examples / "catastrophic-symturbo.json")
    broken = load_report(examples / "distribution-broken-gemma26b.json")
    with pytest.raises(IncompatibleReports, match="n_predict differs"):
        compare_reports([cata, broken])


# ------------------------------------------------------------------ summary


def test_summary_table_one_row_per_candidate():
    axes = make_axes()
    axes["rniah"] = {"error": "haystack too short"}
    reports = [_with_floor(42.6), make_report(candidate="ctk=q4_0,ctv=q4_0", axes=axes),
               make_report(candidate="ctk=f16,ctv=f16")]
    md = summary_markdown(reports)
    lines = md.splitlines()
    assert lines[0].startswith("| candidate | composite | band | A Trajectory")
    assert len(lines) == 2 + len(reports)
    assert "| 58.0 (within) |" in lines[2]
    assert "| error |" in lines[3] and "partial" in lines[3]
    assert "self-check" in lines[4]
    buf = io.StringIO()
    Console(file=buf, width=200, no_color=True).print(summary_table(reports))
    out = buf.getvalue()
    assert "ctk=q4_0,ctv=q4_0" in out and "58.0 (within)" in out and "error" in out
    assert f"{reports[0]['composite']:.2f}" in out


def test_a_matrix_cell_is_shown_by_its_matrix_model_name() -> None:
    """The card and the page of a matrix cell name the model as the matrix file does, while
    the comparability identity stays the model file."""
    from refract.report.comparability import fingerprint
    from refract.report.html import render_html
    from refract.report.text import render_text

    rep = make_report(extras={"matrix": {"model_name": "Gemma <demo> | 270M"}})
    assert "Gemma <demo> | 270M" in render_text(rep, color=False, width=160)
    page = render_html(rep)
    assert "Gemma &lt;demo&gt; | 270M" in page and "<h1>REFRACT · Gemma &lt;demo&gt;" in page
    assert fingerprint(rep)["model.name"] == "demo-Q8_0"
    plain = make_report()
    assert "demo-Q8_0" in render_text(plain, color=False, width=160)
