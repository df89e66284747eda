"""Intervals on a real model (issue 22): a report's uncertainty block is recomputed from the
report's own per-unit data, and intervals from half the prompts and chunks cover the whole
run's composite in the large majority of random halvings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from refract.axes import registry
from refract.report.build import report_uncertainty
from refract.report.io import dumps_report
from refract.scoring import run_score
from refract.uncertainty import halving_coverage

SETTINGS = {"ctx": 128, "chunks": 24, "n_predict": 32, "corpus": "bundled", "threads": 2}


@pytest.fixture(scope="module")
def demo_report(demo_model: Path) -> dict[str, Any]:
    rep = run_score(demo_model, "ctk=q8_0,ctv=q8_0", **SETTINGS)
    # what a reader of the file sees: the JSON written, read back
    loaded: dict[str, Any] = orjson.loads(dumps_report(rep))
    return loaded


def test_block_recomputed_from_the_report_alone(demo_report: dict[str, Any]) -> None:
    unc = demo_report["uncertainty"]
    assert unc["composite"] is not None and unc["held_fixed"] == []
    assert set(unc["axes"]) == {"gtm", "kld"}
    assert unc["axes"]["gtm"]["n_units"] == demo_report["axes"]["gtm"]["n_prompts"]
    assert unc["axes"]["kld"]["n_units"] == SETTINGS["chunks"]
    entries = demo_report["axes"]
    in_comp = {k: entries[k]["score"] if entries[k].get("in_composite") else None
               for k in registry.keys()}
    again = report_uncertainty(entries, in_comp, self_check=demo_report["self_check"])
    assert again == unc
    for key in ("gtm", "kld"):
        got = unc["axes"][key]
        assert got["point"] == pytest.approx(entries[key]["score"], rel=1e-9)
        assert got["ci95"][0] <= got["point"] <= got["ci95"][1]
        assert sum(got["band_probabilities"].values()) == pytest.approx(1.0)
    comp = unc["composite"]
    assert comp["point"] == pytest.approx(demo_report["composite"], rel=1e-9)
    floor = entries["gtm"]["noise_floor"]
    assert 0.0 <= floor["p_below_floor"] <= 1.0
    assert floor["ci95"][0] <= floor["score"] <= floor["ci95"][1]


def test_half_the_units_cover_the_whole_run(demo_report: dict[str, Any]) -> None:
    parts = []
    for key in ("gtm", "kld"):
        axis = registry.get(key)
        assert axis is not None
        units = axis.units(demo_report["axes"][key])
        assert units is not None
        parts.append((key, units))
    full = demo_report["composite"]
    n = 200
    hits = round(halving_coverage(parts, full, n) * n)
    print(f"halvings covering the whole run's composite {full:.2f}: {hits}/{n}")
    assert hits / n >= 0.9
