"""Refactors change no report (issue 21): four fixed runs on the demo model — the default axes,
``--full``, two candidates in one run, a one-model matrix — give the JSON reports recorded in
``tests/golden/`` before the refactor, timings and timestamps aside.

The exact numbers hold only on the machine kind and llama.cpp build that recorded them (greedy
trajectories differ between CPU kinds), so the comparison is exact where a golden of this
machine's key exists, and otherwise covers everything that does not depend on the CPU: the
report's shape (every key, at every depth), its settings, fingerprints, provenance, methods,
axis statuses, and which axes are in the composite.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from golden.runs import differences, golden_path, machine_key, run_all

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "golden"


def _shape(obj: Any, path: str = "") -> set[str]:
    """Every key path of a report (list items folded into ``[]``)."""
    out: set[str] = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.add(f"{path}.{k}")
            out |= _shape(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for v in obj:
            out |= _shape(v, f"{path}[]")
    return out


def _stable(report: dict[str, Any]) -> dict[str, Any]:
    """What a report says that does not depend on the CPU kind that ran it."""
    axes = report.get("axes") or {}
    return {
        "schema": report.get("schema"),
        "settings": report.get("settings"),
        "provenance": report.get("provenance"),
        "repro_command": report.get("repro_command"),
        "reference": report.get("reference"),
        "candidate": report.get("candidate"),
        "axes": {k: {f: a.get(f) for f in ("status", "method", "method_version",
                                           "description", "in_composite")}
                 for k, a in axes.items()},
        "axes_in_composite": (report.get("composite_detail") or {}).get("axes_in_composite"),
    }


def test_reports_unchanged(demo_model: Path, tmp_path: Path) -> None:
    got = run_all(tmp_path)
    key = machine_key(next(iter(got.values())))
    exact = golden_path(key)
    if exact.is_file():
        want = json.loads(exact.read_text())
        assert sorted(got) == sorted(want)
        changed = differences(got, want)
        assert not changed, f"reports differ from {exact.name} at: {changed}"
        return
    flavour = key.split("-", 1)[0]
    candidates = sorted(GOLDEN_DIR.glob(f"{flavour}-*.json")) or sorted(GOLDEN_DIR.glob("*.json"))
    assert candidates, "no golden reports recorded"
    want = json.loads(candidates[0].read_text())
    assert sorted(got) == sorted(want)
    for name in want:
        assert _shape(got[name]) == _shape(want[name]), f"{name}: report shape differs"
        assert _stable(got[name]) == _stable(want[name]), f"{name}: stable fields differ"
