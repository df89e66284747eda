"""Run as a script by test_sweep_demo: one sweep under a memory limit that admits the
reference and one candidate context at a time; prints JSON with the plan and the process's
resident memory (VmRSS after the model load and its first use, VmHWM at the end)."""

from __future__ import annotations

import dataclasses
import json
import os
import sys


def _status(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def main() -> None:
    model, grid = sys.argv[1], sys.argv[2].split(";")
    from refract import Engine
    from refract.options import ScoreOptions
    from refract.scoring import prepare_score
    from refract.scoring.memory import memory_plan
    from refract.sweep import SweepSettings, run_sweep

    opts = ScoreOptions(ctx=256, chunks=4, n_predict=16, threads=2)
    plan = prepare_score(model, grid, opts)
    with Engine(plan.model_path, n_threads=2) as eng:
        one = max(memory_plan(eng, dataclasses.replace(plan, candidates=plan.candidates[:1]))
                  .values())
        every = max(memory_plan(eng, plan).values())
        # touch every weight once (a short decode), so that the baseline holds the model
        eng.greedy(["The capital of France is"], "ctk=f16,ctv=f16", n_predict=2, ctx=64)
        eng.release()
        base = _status("VmRSS")
        os.environ["REFRACT_MEMORY_LIMIT"] = str(one)
        result = run_sweep(model, opts, SweepSettings(candidates=tuple(grid), prune=False),
                           engine=eng)
        peak = _status("VmHWM")
    print(json.dumps({"one": one, "every": every, "base": base, "peak": peak,
                      "memory": result.summary["memory"],
                      "composites": {k: r["composite"] for k, r in result.reports.items()}}))


if __name__ == "__main__":
    main()
