"""The sweep's HTML page (refract.report.sweep_html) and its plot (refract.report.svg.sweep_plot):
real content on a realistic sweep, escaping, the plot's geometry read back from the SVG, edge
cases that must not crash, and a render in headless Chromium."""

from __future__ import annotations

import copy
import html
import math
import os
import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import on_ci
from refract.kvconfig import short_label
from refract.report.svg import SweepPoint, sweep_plot
from refract.report.sweep_html import sweep_html, write_sweep_html

REF_BPT = 36864  # f16 K and V: bytes per token of the reference
CTX = [512, 32768]


def kv(bpt: int | None) -> dict[str, Any] | None:
    if bpt is None:
        return None
    return {"bytes_per_token": bpt, "fixed_bytes": 0, "ratio": bpt / REF_BPT,
            "at": {str(n): bpt * n for n in CTX}}


def config(ctk: str, ctv: str, bpt: int | None, composite: float | None,
           ci: tuple[float, float] | None, band: str | None, *, status: str = "scored",
           frontier: bool = False, p_target: float | None = None, decided: str | None = None,
           **extra: Any) -> dict[str, Any]:
    label = f"ctk={ctk},ctv={ctv}"
    cfg: dict[str, Any] = {
        "config": label, "ctk": ctk, "ctv": ctv,
        "origin": "symmetric" if ctk == ctv else "asymmetric",
        "status": status, "kv": kv(bpt), "composite": composite,
        "ci95": list(ci) if ci else None, "band": band,
        "band_probabilities": {}, "p_target": p_target, "decided": decided,
        "frontier": frontier,
        "report": f"gemma__{label}.json" if status == "scored" else None,
    }
    cfg.update(extra)
    return cfg


def make_sweep() -> dict[str, Any]:
    """Five scored configs (three on the frontier, one recommended), one pruned below the
    target, one pruned as dominated, one skipped and one that failed."""
    configs = [
        config("q8_0", "q8_0", 19584, 97.1, (94.0, 99.2), "EXCELLENT", frontier=True,
               p_target=1.0, decided="EXCELLENT"),
        config("q8_0", "turbo4", 15264, 88.3, (84.3, 93.4), "PASS", frontier=True,
               p_target=0.97, decided="PASS"),
        config("q4_0", "q8_0", 15264, 83.0, (79.1, 87.5), "PASS", p_target=0.81),
        config("q4_0", "q4_0", 10368, 71.2, (62.0, 79.5), "DEGRADED", frontier=True,
               p_target=0.02, decided="DEGRADED"),
        config("turbo4", "turbo4", 10944, 64.0, (55.5, 72.0), "DEGRADED", p_target=0.0,
               decided="DEGRADED"),
        config("turbo3", "turbo3", 8640, 41.5, (22.0, 58.0), "FAIL", status="pruned",
               pruned={"reason": "below", "evidence": "P(≥ PASS) 0.1 % after the first round",
                       "dominated_by": None, "budget": {"prompts": [10, 30], "chunks": [8, 24]}}),
        config("q5_0", "q4_0", 12672, 70.1, (60.0, 78.0), "DEGRADED", status="pruned",
               pruned={"reason": "dominated", "evidence": "its interval lies under q4_0/q4_0's",
                       "dominated_by": "ctk=q4_0,ctv=q4_0",
                       "budget": {"prompts": [10, 30], "chunks": [8, 24]}}),
        config("iq4_nl", "iq4_nl", None, None, None, None, status="skipped",
               skipped="iq4_nl is not a KV cache type of this llama.cpp build"),
        config("turbo2", "q8_0", None, None, None, None, status="error",
               error="llama_init_from_model failed: <out of memory>"),
    ]
    return {
        "schema": "refract-sweep/1",
        "refract_version": "0.1.0",
        "created": "2026-12-06T12:00:00Z",
        "model": {"path": "/x/gemma.gguf", "name": "gemma-3-270m-it-Q4_K_M",
                  "sha256": "ab12cd34", "n_ctx_train": 32768},
        "reference": {"config": "ctk=f16,ctv=f16", "kv": kv(REF_BPT)},
        "target_band": "PASS",
        "confidence": 0.95,
        "settings": {"ctx": 512, "chunks": 24, "n_prompts": 30, "seed": 42,
                     "axes": ["trajectory", "kld"]},
        "memory_ctx": CTX,
        "pruning": {"enabled": True,
                    "rule": "After the first round a config is dropped when P(≥ target) is "
                            "below 1 % or another config is smaller and surely better.",
                    "first_round": {"prompts": [10, 30], "chunks": [8, 24], "fraction": 0.33}},
        "configs": configs,
        "frontier": ["ctk=q4_0,ctv=q4_0", "ctk=q8_0,ctv=turbo4", "ctk=q8_0,ctv=q8_0"],
        "recommendation": {
            "config": "ctk=q8_0,ctv=turbo4", "kind": "recommended", "ratio": 15264 / REF_BPT,
            "text": "smallest KV cache that stays PASS at 95 %: ctk=q8_0,ctv=turbo4, "
                    "41 % of f16's bytes"},
        "skipped": [],
        "timings": {"total_s": 123.4},
    }


def svg_of(page: str) -> ET.Element:
    """The sweep plot's SVG, parsed as XML."""
    m = re.search(r'<svg class="chart wide sweep-plot".*?</svg>', page, re.S)
    assert m, "no sweep plot on the page"
    return ET.fromstring(m.group(0))


def points_of(svg: ET.Element) -> dict[str, tuple[float, float]]:
    """label → (x, y) of each marker's centre."""
    out: dict[str, tuple[float, float]] = {}
    for g in svg.iter("g"):
        if "point" in (g.get("class") or "").split():
            circle = next(c for c in g.iter("circle") if "pt" in (c.get("class") or "").split())
            out[g.get("data-label") or ""] = (float(circle.get("cx") or 0),
                                              float(circle.get("cy") or 0))
    return out


def visible_text(page: str) -> str:
    """The page's text (tooltips included, the style sheet left out), unescaped."""
    page = re.sub(r"<style>.*?</style>", " ", page, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def no_nan(page: str) -> None:
    text = visible_text(page)
    assert not re.search(r"\b(nan|inf|infinity)\b", text, re.I), text
    assert not re.search(r"\bNone\b", text), text
    assert "nan" not in re.findall(r'="([^"]*)"', page)


# ---------------------------------------------------------------------------- content


def test_every_config_and_the_recommendation_appear() -> None:
    sweep = make_sweep()
    page = sweep_html(sweep)
    text = visible_text(page)
    assert page.startswith("<!DOCTYPE html>") and '<meta name="generator" content="refract' in page
    for cfg in sweep["configs"]:
        assert cfg["config"] in text, cfg["config"]
        assert short_label(cfg["config"]) in text
    assert sweep["recommendation"]["text"] in text
    assert 'class="rec-box rec-recommended"' in page
    assert "gemma-3-270m-it-Q4_K_M" in text and "ctk=f16,ctv=f16" in text
    assert "iq4_nl is not a KV cache type of this llama.cpp build" in text  # skipped reason
    assert "llama_init_from_model failed: <out of memory>" in text  # error message, escaped
    assert "&lt;out of memory&gt;" in page
    assert "P(≥ PASS) 0.1 % after the first round" in text  # pruned evidence
    assert "dominated by ctk=q4_0,ctv=q4_0" in text
    assert "10 of 30 prompts, 8 of 24 chunks" in text
    assert sweep["pruning"]["rule"] in text
    assert "33 % of the full budget" in text
    assert "llama.cpp allocated" in text and "paired-bootstrap 95 %" in text
    assert "<script" not in page and "http://" not in page and "https://" not in page
    no_nan(page)


def test_table_rows_largest_first_with_sizes_and_marks() -> None:
    page = sweep_html(make_sweep())
    table = re.search(r'<table class="configs">(.*?)</table>', page, re.S)
    assert table
    rows = re.findall(r"<tr( class=\"[^\"]*\")?>(.*?)</tr>", table.group(1), re.S)[1:]
    first_cells = [visible_text(r[1]).split()[0] for r in rows]
    assert first_cells[:4] == ["f16/f16", "q8_0/q8_0", "q8_0/turbo4", "q4_0/q8_0"]
    assert 'class="reference"' in rows[0][0]
    by_short = {visible_text(r[1]).split()[0]: (r[0], r[1]) for r in rows}
    cls, q8 = by_short["q8_0/q8_0"]
    q8_text = visible_text(q8)
    assert "19.12 KiB" in q8_text and "53 %" in q8_text  # 19584 B/token, of 36864
    assert "9.56 MiB" in q8_text and "612.00 MiB" in q8_text  # at 512 and 32768 cells
    assert "97.1 [94.0–99.2]" in q8_text and "100 %" in q8_text
    assert "★" in q8_text and "pill small b-excellent" in q8
    cls, rec = by_short["q8_0/turbo4"]
    assert "recommended" in (cls or "") and "★" in visible_text(rec)
    assert 'href="gemma__ctk=q8_0,ctv=turbo4.html"' in rec
    assert "★" not in visible_text(by_short["q4_0/q8_0"][1])
    assert "not decided at 95 %" in visible_text(by_short["q4_0/q8_0"][1])
    pruned = visible_text(by_short["turbo3/turbo3"][1])
    assert "41.5 [22.0–58.0] first round" in pruned
    assert "★" not in pruned
    assert page.count('<span class="star"') == 3
    # configs without a size come last, and show dashes
    assert first_cells[-2:] == ["iq4_nl/iq4_nl", "turbo2/q8_0"]
    assert "—" in visible_text(by_short["iq4_nl/iq4_nl"][1])


def test_user_strings_are_escaped() -> None:
    sweep = make_sweep()
    evil = 'ctk=q8_0,ctv=<b>x</b>"&'
    sweep["configs"][2]["config"] = evil
    sweep["configs"][2]["ctv"] = '<b>x</b>"&'
    sweep["configs"][2]["report"] = 'javascript:alert(1)'
    sweep["model"]["name"] = "<script>alert(1)</script>"
    sweep["configs"][7]["skipped"] = "<img src=x onerror=alert(1)>"
    sweep["pruning"]["rule"] = "rule </p><h1>"
    page = sweep_html(sweep)
    assert "<b>x</b>" not in page and "<script>alert" not in page and "<img src" not in page
    assert "&lt;b&gt;x&lt;/b&gt;&quot;&amp;" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "rule &lt;/p&gt;&lt;h1&gt;" in page
    assert "javascript:" not in page  # a report path with a URL scheme is never a link
    svg = svg_of(page)  # still well-formed XML with the hostile label in it
    assert evil in points_of(svg)
    assert evil in visible_text(page)


def test_recommendation_box_follows_its_kind() -> None:
    for kind, title in (("none", "No recommendation"), ("undecided", "Undecided")):
        sweep = make_sweep()
        sweep["recommendation"] = {"config": None, "kind": kind, "ratio": None,
                                   "text": f"the {kind} sentence"}
        page = sweep_html(sweep)
        assert f'class="rec-box rec-{kind}"' in page
        assert title in page and f"the {kind} sentence" in page
        svg = svg_of(page)
        assert not [c for c in svg.iter("circle")
                    if c.get("class") == "rec-ring" and c not in _legend_nodes(svg)]
    sweep = make_sweep()
    sweep["recommendation"]["kind"] = "<bogus>"
    assert 'class="rec-box rec-none"' in sweep_html(sweep)


# ------------------------------------------------------------------------------- plot


def test_plot_geometry_follows_the_data() -> None:
    sweep = make_sweep()
    svg = svg_of(sweep_html(sweep))
    assert svg.get("role") == "img" and "KV cache size" in (svg.get("aria-label") or "")
    pts = points_of(svg)
    plotted = [c["config"] for c in sweep["configs"] if c["status"] in ("scored", "pruned")]
    assert sorted(pts) == sorted(plotted)
    # higher composite → higher on the page (smaller y); more bytes → further right
    by = {c["config"]: c for c in sweep["configs"] if c["config"] in pts}
    for a in by:
        for b in by:
            if by[a]["composite"] > by[b]["composite"]:
                assert pts[a][1] < pts[b][1], (a, b)
            if by[a]["kv"]["bytes_per_token"] > by[b]["kv"]["bytes_per_token"]:
                assert pts[a][0] > pts[b][0], (a, b)
            if by[a]["kv"]["bytes_per_token"] == by[b]["kv"]["bytes_per_token"]:
                assert pts[a][0] == pts[b][0]
    # the reference sits at (100 %, 100): right of every config, at the top of the axis
    ref = next(p for p in svg.iter("polygon") if p.get("class") == "ref-marker"
               and p.get("points", "").count(",") == 4 and p not in _legend_nodes(svg))
    ref_xy = [tuple(map(float, xy.split(","))) for xy in (ref.get("points") or "").split()]
    ref_x, ref_y = ref_xy[0][0], ref_xy[1][1]
    assert all(x < ref_x for x, _ in pts.values())
    assert all(y > ref_y for _, y in pts.values())
    # the 100 % tick sits under the reference
    ticks = {t.text: float(t.get("x") or 0) for t in svg.iter("text")
             if t.get("class") == "tick" and (t.text or "").endswith("%")}
    assert abs(ticks["100 %"] - ref_x) < 0.2 and ticks["0 %"] < min(x for x, _ in pts.values())


def _legend_nodes(svg: ET.Element) -> set[ET.Element]:
    return {n for g in svg.iter("g") if g.get("class") == "legend" for n in g.iter()}


def test_plot_marks_whiskers_thresholds_frontier_and_tooltips() -> None:
    sweep = make_sweep()
    svg = svg_of(sweep_html(sweep))
    legend = _legend_nodes(svg)
    points = [g for g in svg.iter("g") if "point" in (g.get("class") or "").split()]
    # one whisker per plotted config with an interval, dashed for the pruned ones
    whiskers = [g for p in points for g in p.iter("g")
                if "whisker" in (g.get("class") or "").split()]
    assert len(whiskers) == 7 and all(len(w.findall("line")) == 3 for w in whiskers)
    assert sum("pruned" in (w.get("class") or "") for w in whiskers) == 2
    # whisker spans the interval around the marker
    for p in points:
        cy = float(next(c for c in p.iter("circle") if "pt" in (c.get("class") or "")).get("cy")
                   or 0)
        ys = [float(v) for line in p.iter("line") for v in (line.get("y1"), line.get("y2")) if v]
        assert min(ys) < cy < max(ys)
    # filled markers coloured by band for scored configs, hollow for the pruned ones
    classes = [next(c.get("class") for c in p.iter("circle") if "pt" in (c.get("class") or ""))
               for p in points]
    assert sorted(classes) == sorted(["pt b-excellent", "pt b-pass", "pt b-pass",
                                      "pt b-degraded", "pt b-degraded", "pt pruned",
                                      "pt pruned"])
    # three dashed threshold lines (90, 80, 60), each labelled, higher threshold higher up
    lines = [ln for ln in svg.iter("line") if "threshold" in (ln.get("class") or "")]
    assert len(lines) == 3
    ys = {(ln.get("class") or "").split()[-1]: float(ln.get("y1") or 0) for ln in lines}
    assert ys["th-excellent"] < ys["th-pass"] < ys["th-degraded"]
    labels = [t.text for t in svg.iter("text") if "th-label" in (t.get("class") or "")]
    assert labels == ["DEGRADED ≥ 60", "PASS ≥ 80", "EXCELLENT ≥ 90"]
    # the frontier: a staircase through its three configs, left to right
    path = next(p for p in svg.iter("path") if p.get("class") == "frontier" and p not in legend)
    d = path.get("d") or ""
    assert d.startswith("M") and d.count("H") == 2 and d.count("V") == 2
    pts = points_of(svg)
    start = tuple(float(v) for v in d[1:].split()[0].split(","))
    assert start == pts["ctk=q4_0,ctv=q4_0"]
    assert d.endswith(f"V{pts['ctk=q8_0,ctv=q8_0'][1]:.1f}")
    # the ring around the recommended config only
    rings = [c for c in svg.iter("circle") if c.get("class") == "rec-ring" and c not in legend]
    assert len(rings) == 1
    rx, ry = float(rings[0].get("cx") or 0), float(rings[0].get("cy") or 0)
    assert (rx, ry) == pts["ctk=q8_0,ctv=turbo4"]
    # a tooltip per point with its label, composite, interval and bytes
    for p in points:
        title = p.find("title")
        assert title is not None and title.text
        assert p.get("data-label") in title.text
    tip = next(p.find("title") for p in points
               if p.get("data-label") == "ctk=q8_0,ctv=turbo4")
    assert tip is not None and tip.text
    assert "88.3" in tip.text and "84.3–93.4" in tip.text and "14.91 KiB per token" in tip.text
    assert "recommended" in tip.text and "frontier" in tip.text
    # short labels next to the frontier points at least
    drawn = {t.text for t in svg.iter("text") if "pt-label" in (t.get("class") or "")}
    assert {"q4_0/q4_0", "q8_0/turbo4", "q8_0/q8_0"} <= drawn


def test_plot_alone_is_generic() -> None:
    pts = [SweepPoint("a", 0.5, 90.0, (85.0, 95.0), "EXCELLENT", frontier=True, short="A"),
           SweepPoint("b", 1.8, 99.0, None, "EXCELLENT", short="B"),
           SweepPoint("c", math.nan, 50.0), SweepPoint("d", 0.3, math.inf),
           SweepPoint("e", 0.4, 70.0, (math.nan, 80.0), "DEGRADED")]
    svg = ET.fromstring(sweep_plot(pts, None, reference_label="base"))
    assert sorted(points_of(svg)) == ["a", "b", "e"]  # non-finite x or y left out
    legend = _legend_nodes(svg)
    assert len([g for g in svg.iter("g") if g.get("class") == "whisker" and g not in legend]) == 1
    ticks = [t.text for t in svg.iter("text") if t.get("class") == "tick"]
    assert "200 %" in ticks  # the axis grows past the largest config
    assert "KV bytes unknown" in ET.tostring(svg, encoding="unicode")
    empty = ET.fromstring(sweep_plot([]))
    assert points_of(empty) == {} and "100 %" in [t.text for t in empty.iter("text")]
    custom = ET.fromstring(sweep_plot(pts[:1], 1024.0, (("GOOD", 75.0),)))
    assert [t.text for t in custom.iter("text") if "th-label" in (t.get("class") or "")] == [
        "GOOD ≥ 75"]


# ------------------------------------------------------------------------ edge cases


def test_no_configs() -> None:
    sweep = make_sweep()
    sweep["configs"], sweep["frontier"] = [], []
    sweep["recommendation"] = {"config": None, "kind": "none", "text": None, "ratio": None}
    page = sweep_html(sweep)
    assert "Nothing to plot" in page and "no config was scored" in page
    assert "ctk=f16,ctv=f16" in page  # the reference row is still there
    no_nan(page)


def test_all_skipped() -> None:
    sweep = make_sweep()
    reasons = {}
    for i, cfg in enumerate(sweep["configs"]):
        reasons[cfg["config"]] = f"reason number {i}"
        cfg.update(status="skipped", skipped=f"reason number {i}", composite=None, ci95=None,
                   band=None, kv=None, frontier=False, report=None)
    sweep["frontier"] = []
    sweep["skipped"] = ["ctk=q8_0,ctv=q8_0", {"config": "ctk=q2_k,ctv=q2_k",
                                               "reason": "only in the top-level list"}]
    sweep["recommendation"] = {"config": None, "kind": "none", "ratio": None,
                               "text": "nothing scored"}
    page = sweep_html(sweep)
    skipped = re.search(r'<ul class="skipped">(.*?)</ul>', page, re.S)
    assert skipped
    for label, reason in reasons.items():
        assert f"<code>{html.escape(label)}</code>: {reason}" in skipped.group(1)
    assert "only in the top-level list" in skipped.group(1)
    assert skipped.group(1).count("<li>") == len(reasons) + 1  # listed once each
    assert "Nothing to plot" in page
    no_nan(page)


def test_null_kv_null_composite_and_missing_keys() -> None:
    sweep = make_sweep()
    sweep["reference"]["kv"] = None
    for cfg in sweep["configs"]:
        cfg["kv"] = None
    page = sweep_html(sweep)
    assert "Nothing to plot" in page and "Not plotted (no KV size or no composite)" in page
    no_nan(page)

    sweep = make_sweep()
    sweep["configs"][0]["composite"] = None
    sweep["configs"][1]["kv"] = {"bytes_per_token": None, "fixed_bytes": None, "ratio": None,
                                 "at": {"512": None, "32768": None}}
    sweep["configs"][2]["ci95"] = [float("nan"), 90.0]
    sweep["configs"][3]["p_target"] = float("nan")
    sweep["configs"][4]["kv"]["at"] = None
    sweep["settings"]["weird"] = float("inf")
    page = sweep_html(sweep)
    assert sorted(points_of(svg_of(page))) == sorted(
        c["config"] for c in sweep["configs"][2:7])
    no_nan(page)

    minimal = {"configs": [{"config": "ctk=q8_0,ctv=q8_0"}, "not a mapping", {}]}
    page = sweep_html(minimal)
    assert "ctk=q8_0,ctv=q8_0" in page
    no_nan(page)
    assert "REFRACT sweep" in sweep_html({})


def test_ratio_derived_from_bytes_and_input_left_alone(tmp_path: Path) -> None:
    sweep = make_sweep()
    for cfg in sweep["configs"]:
        if cfg["kv"]:
            cfg["kv"]["ratio"] = None
    before = copy.deepcopy(sweep)
    page = sweep_html(sweep)
    assert sweep == before
    assert len(points_of(svg_of(page))) == 7 and "53 %" in visible_text(page)
    out = write_sweep_html(sweep, tmp_path / "sweep.html")
    assert out == tmp_path / "sweep.html" and out.read_text(encoding="utf-8") == page
    assert [p.name for p in tmp_path.iterdir()] == ["sweep.html"]  # no temporary left


# -------------------------------------------------------------------- headless browser


def read_png(path: Path) -> np.ndarray:
    """An 8-bit RGB or RGBA, non-interlaced PNG as an (height, width, channels) array."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    assert header is not None
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    bpp = 3 if colour == 2 else 4
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, width * bpp + 1)
    out = np.zeros((height, width * bpp), dtype=np.uint8)
    prev = np.zeros(width * bpp, dtype=np.uint8)
    for y in range(height):
        out[y] = prev = _unfilter(int(raw[y, 0]), raw[y, 1:], prev, bpp)
    return out.reshape(height, width, bpp)


def _unfilter(kind: int, line: np.ndarray, prev: np.ndarray, bpp: int) -> np.ndarray:
    if kind == 0:
        return line.copy()
    if kind == 1:  # Sub: a running sum per channel
        return (np.cumsum(line.reshape(-1, bpp).astype(np.int64), axis=0) % 256).astype(
            np.uint8).ravel()
    if kind == 2:
        return line + prev
    cur = bytearray(line.tobytes())
    up = prev.tobytes()
    for i in range(len(cur)):
        a = cur[i - bpp] if i >= bpp else 0
        b = up[i]
        if kind == 3:
            cur[i] = (cur[i] + (a + b) // 2) & 0xFF
            continue
        c = up[i - bpp] if i >= bpp else 0
        p = a + b - c
        pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
        pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
        cur[i] = (cur[i] + pred) & 0xFF
    return np.frombuffer(bytes(cur), dtype=np.uint8)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    msg = "no headless browser (chromium, chromium-browser, google-chrome) on PATH"
    if on_ci():
        pytest.fail(f"CI: {msg}", pytrace=False)
    pytest.skip(msg)


def near(img: np.ndarray, rgb: tuple[int, int, int], tol: int = 24) -> np.ndarray:
    diff = np.abs(img[..., :3].astype(np.int16) - np.array(rgb, dtype=np.int16))
    return np.asarray(diff.max(axis=-1) <= tol)


#: the light scheme's colours (refract.report.html.PAGE_CSS)
EXCELLENT, PASS, DEGRADED = (0x1A, 0x7F, 0x37), (0x09, 0x69, 0xDA), (0xB0, 0x78, 0x00)
FRONTIER = (0x6F, 0x42, 0xC1)
BACKGROUND = (0xF6, 0xF7, 0xF9)


def test_page_renders_in_headless_chromium(tmp_path: Path) -> None:
    browser = chromium()
    page = write_sweep_html(make_sweep(), tmp_path / "sweep.html")
    shot = tmp_path / "sweep.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--force-prefers-color-scheme=light", f"--user-data-dir={tmp_path / 'profile'}",
           "--window-size=1200,1600", f"--screenshot={shot}", page.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert shot.is_file(), (proc.returncode, proc.stderr[-2000:])
    keep = os.environ.get("REFRACT_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(keep) / "sweep.png")
    img = read_png(shot)
    assert img.shape[:2] == (1600, 1200)
    # not blank: the page background, cards, text
    assert near(img, BACKGROUND, 2).mean() > 0.05
    assert len(np.unique(img[..., :3].reshape(-1, 3), axis=0)) > 200
    # the plot was painted: the frontier line, and markers of each band in its region
    frontier = near(img, FRONTIER, 40)
    assert frontier.sum() > 150, frontier.sum()
    ys, xs = np.nonzero(frontier)
    top, bottom = max(0, ys.min() - 300), min(1600, ys.max() + 300)
    region = img[top:bottom]
    for name, rgb in (("EXCELLENT", EXCELLENT), ("PASS", PASS), ("DEGRADED", DEGRADED)):
        assert near(region, rgb, 16).sum() > 80, name
    # the plot is wide: the frontier spans a good part of the page's width
    assert xs.max() - xs.min() > 200
