"""A sweep's files: one report per fully scored config (named as ``score --out-dir`` names
them), the pruned configs' first-round reports under ``pruned/`` (marked as such: they are a
fraction of the budget), ``sweep.json`` and, with ``html``, the sweep's page. Every file is
written atomically; every path is checked before the sweep starts (never replacing a file
refract did not write)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from refract.files import atomic_write_bytes, report_stem
from refract.outputs import OutputKind, check_replaceable_all
from refract.sweep.run import SweepResult

__all__ = ["PRUNED_DIR", "SWEEP_FILE", "check_sweep_outputs", "sweep_paths", "write_sweep"]

SWEEP_FILE = "sweep.json"
PRUNED_DIR = "pruned"


def sweep_paths(out_dir: Path, model_name: str, labels: Sequence[str], *, html: bool,
                sweep_file: str = SWEEP_FILE) -> list[tuple[Path, str, OutputKind]]:
    """Every path a sweep of ``labels`` may write, with its kind."""
    items: list[tuple[Path, str, OutputKind]] = []
    for lab in labels:
        stem = report_stem(model_name, lab)
        items.append((out_dir / f"{stem}.json", "--out-dir", "report"))
        items.append((out_dir / PRUNED_DIR / f"{stem}.json", "--out-dir", "report"))
        if html:
            items.append((out_dir / f"{stem}.html", "--out-dir", "html"))
    items.append((out_dir / sweep_file, "--out-dir", "sweep"))
    if html:
        items.append((out_dir / Path(sweep_file).with_suffix(".html"), "--out-dir", "html"))
    return items


def check_sweep_outputs(out_dir: Path, model_name: str, labels: Sequence[str], *, html: bool,
                        overwrite: bool, sweep_file: str = SWEEP_FILE) -> None:
    check_replaceable_all(sweep_paths(out_dir, model_name, labels, html=html,
                                      sweep_file=sweep_file), overwrite=overwrite)


def _first_round_note(summary: dict[str, Any], label: str) -> str:
    entry = next(e for e in summary["configs"] if e["config"] == label)
    pr = entry.get("pruned") or {}
    return (f"a sweep's first round, not a full score: {pr.get('budget')} of the budget; "
            f"pruned ({pr.get('reason')}): {pr.get('evidence')}")


def write_sweep(result: SweepResult, out_dir: Path, *, html: bool = False,
                sweep_file: str = SWEEP_FILE) -> list[Path]:
    """Write the sweep's files into ``out_dir`` (created); returns the paths written. The
    summary's ``report`` fields are set to the reports' paths relative to ``out_dir`` (named
    as ``score --out-dir`` names them: a matrix writes the full reports itself and passes
    none in ``result.reports``). ``sweep.json`` is written last: it marks the sweep whole."""
    from refract.report.io import write_report

    out_dir.mkdir(parents=True, exist_ok=True)
    summary = result.summary
    name = str(summary["model"]["name"])
    written: list[Path] = []
    by_label = {e["config"]: e for e in summary["configs"]}
    for entry in summary["configs"]:  # where each full report is (a matrix writes its own)
        if entry["status"] in ("scored", "error"):
            entry["report"] = f"{report_stem(name, entry['config'])}.json"
    for label, report in result.reports.items():
        path = out_dir / f"{report_stem(name, label)}.json"
        written.append(write_report(report, path))
        if html:
            from refract.report.html import write_html

            written.append(write_html(report, path.with_suffix(".html")))
    for label, report in result.first_round.items():
        marked = dict(report)
        marked["notes"] = [*report.get("notes", []), _first_round_note(summary, label)]
        marked["sweep_round"] = "first"
        path = out_dir / PRUNED_DIR / f"{report_stem(name, label)}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        written.append(write_report(marked, path))
        by_label[label]["report"] = f"{PRUNED_DIR}/{path.name}"
    target = out_dir / sweep_file
    written.append(atomic_write_bytes(target, orjson.dumps(
        summary, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY) + b"\n"))
    if html:
        from refract.report.sweep_html import write_sweep_html

        page = target.with_suffix(".html")
        write_sweep_html(summary, page)
        written.append(page)
    return written
