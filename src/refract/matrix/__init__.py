"""``refract matrix``: many models × many candidate KV configs, one report per cell.

:func:`load_spec` reads the TOML file and checks everything cheap up front;
:func:`run_matrix` runs the cells not yet done through an executor (:class:`LocalExecutor`:
one worker process per model; :class:`refract.matrix.ray.RayExecutor`: one Ray task per
model) and writes the reports, a status file and the leaderboards.

The names below are imported on first use, so that the CLI (:mod:`refract.cli.matrix`, the
``refract matrix`` command) starts without loading the scoring code.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LocalExecutor": "refract.matrix.local",
    "MatrixResult": "refract.matrix.driver",
    "MatrixSpec": "refract.matrix.spec",
    "ModelEntry": "refract.matrix.spec",
    "check_out_dir": "refract.files",
    "load_spec": "refract.matrix.spec",
    "run_matrix": "refract.matrix.driver",
    "write_leaderboards": "refract.matrix.driver",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'refract.matrix' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
