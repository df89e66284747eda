"""Where the matrix meets :mod:`refract.scoring`: options from ``[settings]``, one model's
cells validated, then scored on one model load.

``execute_score`` scores a model's candidates together (one load, one reference shared
through the engine's reference cache) and returns one report per candidate.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from refract.options import ScoreOptions, UsageError
from refract.progress import Reporter

__all__ = ["make_options", "prepare_model", "score_candidates"]


def make_options(
    settings: Mapping[str, Any], reference: str, *, base_dir: Path | None
) -> ScoreOptions:
    """``[settings]`` + the matrix's reference → :class:`ScoreOptions` (UsageError if bad)."""
    data = dict(settings)
    for key in ("reference", "model", "candidate", "candidates"):
        if key in data:
            raise UsageError(
                f"[settings] {key!r}: set it at the top level of the matrix file "
                "('reference', 'candidates', [[models]])"
            )
    data["reference"] = reference
    try:
        return ScoreOptions.from_mapping(data, base_dir=base_dir)
    except UsageError as exc:
        raise UsageError(f"[settings]: {exc}") from None


def prepare_model(
    model: str | os.PathLike[str],
    candidates: Sequence[str],
    options: ScoreOptions,
    *,
    reporter: Reporter | None = None,
) -> Any:
    """Validate one model's cells without loading it (UsageError on a bad value)."""
    from refract.scoring import prepare_score

    return prepare_score(model, list(candidates), options, reporter=reporter)


def score_candidates(
    model: str | os.PathLike[str],
    candidates: Sequence[str],
    options: ScoreOptions,
    *,
    reporter: Reporter | None = None,
    on_start: Callable[[str], None] | None = None,
    on_report: Callable[[str, dict[str, Any]], None],
    on_error: Callable[[str, BaseException], None],
) -> None:
    """Score every candidate on one model load: ``on_report(candidate, report)`` per cell.

    The candidates are scored together, so an exception that stops the run (a failed
    ``measure_floor``, a non-finite reference, a model that does not load) fails them all;
    one axis failing for one candidate is recorded inside its report instead.
    """
    from refract.scoring import execute_score

    plan = prepare_model(model, candidates, options, reporter=reporter)
    for cand in candidates:
        if on_start is not None:
            on_start(cand)
    try:
        reports = execute_score(plan, reporter=reporter)
    except Exception as exc:
        for cand in candidates:
            on_error(cand, exc)
        return
    for cand, report in zip(candidates, reports, strict=True):
        on_report(cand, report)
