"""``refract sweep``: which KV config can I afford? Every config of a KV grid against one
reference in one process (:mod:`.run`), KV bytes from llama.cpp's allocations
(:mod:`.kvsize`), pruning that cannot change the answer, the frontier and the
recommendation (:mod:`.decide`), the table (:mod:`.table`) and the files (:mod:`.write`).

>>> from refract.sweep import run_sweep, SweepSettings
>>> result = run_sweep("model.gguf", settings=SweepSettings(types="q8_0,q4_0"))
>>> result.summary["recommendation"]["text"]
"""

from __future__ import annotations

from refract.sweep.grid import GridEntry, build_grid, default_grid
from refract.sweep.run import SweepResult, SweepSettings, run_sweep

__all__ = ["GridEntry", "SweepResult", "SweepSettings", "build_grid", "default_grid",
           "run_sweep"]
