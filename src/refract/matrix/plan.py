"""Cells of a matrix: file names, fingerprints, and which ones a rerun can skip.

A cell is one (model, candidate). Its report is ``<model-slug>__<candidate-slug>.json`` (and
``.html``) in the output directory (:func:`refract.files.report_stem` of the ``[[models]]
name``) and carries ``extras.matrix`` with the cell fingerprint: a hash of the score options'
fingerprint, the reference, the candidate and the model file's identity (resolved path and
size), and the model's ``name`` (``model_name``, the name tables show for it). A rerun skips
a cell whose report loads and carries the same fingerprint; a missing, corrupt, partial or
stale report, or one in which nothing was measured (no axis scored), is redone.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from refract.files import report_stem
from refract.matrix.spec import MatrixSpec, ModelEntry
from refract.report.io import ReportError, load_report

__all__ = ["Cell", "cell_fingerprint", "plan_cells", "report_matches"]


@dataclass(frozen=True)
class Cell:
    model: ModelEntry
    candidate: str
    fingerprint: str
    json_path: Path
    html_path: Path
    done: bool = False
    """A matching report exists (a rerun skips this cell)."""
    redo_reason: str | None = None
    """Why an existing report is redone (corrupt, other settings), else None."""

    @property
    def label(self) -> str:
        return f"{self.model.name} · {self.candidate}"


def _model_identity(path: Path) -> dict[str, Any]:
    try:
        size = path.stat().st_size
    except OSError:
        size = None
    return {"path": str(path), "size": size}


def cell_fingerprint(spec: MatrixSpec, model: ModelEntry, candidate: str) -> str:
    data = {
        "options": spec.fingerprint,
        "reference": spec.reference,
        "candidate": candidate,
        "model": _model_identity(model.path),
    }
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()[:24]


def matrix_extras(cell: Cell, spec: MatrixSpec) -> dict[str, Any]:
    """What the driver stamps into ``report['extras']['matrix']``."""
    return {
        "cell_fingerprint": cell.fingerprint,
        "options_fingerprint": spec.fingerprint,
        "model_name": cell.model.name,
        "source": str(spec.source) if spec.source is not None else None,
    }


def report_matches(path: Path, fingerprint: str) -> tuple[bool, str | None]:
    """(skip?, why it is redone): the report at ``path`` is whole and from these settings."""
    if not path.exists():
        return False, None
    try:
        report = load_report(path)
    except ReportError as exc:
        return False, f"unreadable ({exc})"
    matrix = (report.get("extras") or {}).get("matrix")
    if not isinstance(matrix, dict) or matrix.get("cell_fingerprint") != fingerprint:
        return False, "made with other settings"
    if report.get("composite") is None and not isinstance(report.get("axes"), dict):
        return False, "incomplete"
    from refract.report.fields import is_measured

    if not is_measured(report):
        return False, "it measured nothing (no axis scored)"
    return True, None


def plan_cells(spec: MatrixSpec, out_dir: Path) -> list[Cell]:
    """Every cell in model-major order, each marked done or to do."""
    cells = []
    for model in spec.models:
        for cand in spec.candidates:
            stem = report_stem(model.name, cand)
            fp = cell_fingerprint(spec, model, cand)
            json_path = out_dir / f"{stem}.json"
            done, why = report_matches(json_path, fp)
            cells.append(Cell(model=model, candidate=cand, fingerprint=fp, json_path=json_path,
                              html_path=out_dir / f"{stem}.html", done=done, redo_reason=why))
    return cells
