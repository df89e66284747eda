"""Cells of a matrix: file names, fingerprints, and which ones a rerun can skip.

A cell is one (model, candidate). Its report is ``<model-slug>__<candidate-slug>.json`` (and
``.html``) in the output directory (:func:`refract.files.report_stem` of the ``[[models]]
name``) and carries ``extras.matrix`` with the cell fingerprint: a hash of the score options'
fingerprint, the reference, the candidate and the model file's identity (resolved path and
size), and the model's ``name`` (``model_name``, the name tables show for it). A rerun skips
a cell whose report loads and carries the same fingerprint; a missing, corrupt, partial or
stale report, or one in which nothing was measured (no axis scored), is redone.

A swept model's cells are its sweep grid (:meth:`MatrixSpec.cells_of`); they are done together
or not at all: when ``<model-slug>.sweep.json`` carries the sweep's fingerprint (options,
reference, model identity, sweep settings, grid) and every report it names as fully scored
matches (pruning needs every config's first round, so a partial sweep is run again whole).
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

__all__ = ["Cell", "cell_fingerprint", "plan_cells", "report_matches", "sweep_done",
           "sweep_fingerprint", "sweep_path"]


@dataclass(frozen=True)
class Cell:
    model: ModelEntry
    candidate: str
    fingerprint: str
    json_path: Path
    html_path: Path
    done: bool = False
    """A matching report exists (a rerun skips this cell)."""
    sweep: bool = False
    """One config of its model's sweep."""
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


def _hash(data: Any) -> str:
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()[:24]


def _sweep_identity(spec: MatrixSpec) -> dict[str, Any]:
    import dataclasses

    return {k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(spec.sweep_settings()).items()}


def cell_fingerprint(spec: MatrixSpec, model: ModelEntry, candidate: str) -> str:
    data: dict[str, Any] = {
        "options": spec.fingerprint,
        "reference": spec.reference,
        "candidate": candidate,
        "model": _model_identity(model.path),
    }
    if model.sweep:
        data["sweep"] = _sweep_identity(spec)
    return _hash(data)


def sweep_fingerprint(spec: MatrixSpec, model: ModelEntry) -> str:
    """What a swept model's ``sweep.json`` must carry to count as done."""
    return _hash({"options": spec.fingerprint, "reference": spec.reference,
                  "model": _model_identity(model.path), "sweep": _sweep_identity(spec),
                  "grid": spec.grid()})


def sweep_path(out_dir: Path, model: ModelEntry) -> Path:
    """``<model-slug>.sweep.json``."""
    from refract.files import slug

    return out_dir / f"{slug(model.name)}.sweep.json"


def sweep_done(spec: MatrixSpec, model: ModelEntry, out_dir: Path) -> tuple[bool, str | None]:
    """(done?, why it is redone) for a swept model."""
    path = sweep_path(out_dir, model)
    if not path.exists():
        return False, None
    try:
        summary = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        return False, f"{path.name} unreadable ({exc})"
    stamp = (summary.get("matrix") or {}) if isinstance(summary, dict) else {}
    if stamp.get("sweep_fingerprint") != sweep_fingerprint(spec, model):
        return False, f"{path.name} made with other settings"
    for entry in summary.get("configs") or []:
        if entry.get("status") != "scored":
            continue
        report = out_dir / str(entry.get("report"))
        ok, _why = report_matches(report, cell_fingerprint(spec, model, entry["config"]))
        if not ok:
            return False, f"{report.name} is missing or stale"
    return True, None


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
        swept = sweep_done(spec, model, out_dir) if model.sweep else None
        for i, cand in enumerate(spec.cells_of(model)):
            stem = report_stem(model.name, cand)
            fp = cell_fingerprint(spec, model, cand)
            json_path = out_dir / f"{stem}.json"
            if swept is not None:
                done, why = swept[0], swept[1] if i == 0 else None
            else:
                done, why = report_matches(json_path, fp)
            cells.append(Cell(model=model, candidate=cand, fingerprint=fp, json_path=json_path,
                              html_path=out_dir / f"{stem}.html", done=done, redo_reason=why,
                              sweep=model.sweep))
    return cells
