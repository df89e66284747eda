"""``refract matrix``: many models × many candidate KV configs, one report per cell.

:func:`load_spec` reads the TOML file and checks everything cheap up front;
:func:`run_matrix` runs the cells not yet done through an executor (:class:`LocalExecutor`:
one worker process per model; :class:`refract.matrix.ray.RayExecutor`: one Ray task per
model) and writes the reports, a status file and the leaderboards.
"""

from refract.matrix.driver import MatrixResult, run_matrix, write_leaderboards
from refract.matrix.local import LocalExecutor
from refract.matrix.spec import MatrixSpec, ModelEntry, check_out_dir, load_spec

__all__ = [
    "LocalExecutor",
    "MatrixResult",
    "MatrixSpec",
    "ModelEntry",
    "check_out_dir",
    "load_spec",
    "run_matrix",
    "write_leaderboards",
]
