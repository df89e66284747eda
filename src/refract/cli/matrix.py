"""``refract matrix``: many models × many candidate KV configs, one report per cell.

Exit codes: 0 every cell scored (or already done); 1 some cells failed (the others are
written; see ``matrix-status.jsonl``); 2 bad input, found before any model loads; 130
interrupted (a rerun continues).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from refract.cli.app import EXIT_RUNTIME, guard, say

__all__ = ["ExecutorName", "matrix"]


class ExecutorName(str, Enum):
    local = "local"
    ray = "ray"


def matrix(
    file: Annotated[Path, typer.Argument(help="Matrix TOML file (models, candidates, settings).")],
    out_dir: Annotated[
        Path, typer.Option("--out-dir", "-o", help="Directory for the reports and leaderboards.")
    ],
    executor: Annotated[
        ExecutorName,
        typer.Option("--executor", help="local: one worker process per model, one at a time; "
                     "ray: one Ray task per model on a Ray cluster (RAY_ADDRESS or local)."),
    ] = ExecutorName.local,
    ray_num_cpus: Annotated[
        float, typer.Option("--ray-num-cpus", min=0, help="CPUs Ray reserves per model task.")
    ] = 1.0,
    ray_num_gpus: Annotated[
        float, typer.Option("--ray-num-gpus", min=0, help="GPUs Ray reserves per model task.")
    ] = 0.0,
    ray_max_retries: Annotated[
        int, typer.Option("--ray-max-retries", min=0,
                          help="Ray retries of a model task whose worker died.")
    ] = 2,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Replace files in --out-dir even when they are not "
                     "refract's own (by default only a previous refract output is replaced)."),
    ] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress lines.")] = False,
) -> None:
    """Score many candidate KV configs on many models: one report per cell + leaderboards.

    Cells whose report already exists with the same settings are skipped, so an interrupted
    or partly failed matrix continues where it stopped when run again.
    """
    with guard():
        from refract.files import check_out_dir
        from refract.matrix.driver import Executor, check_outputs, run_matrix
        from refract.matrix.progress import make_matrix_progress
        from refract.matrix.spec import check_settings, load_spec

        spec = load_spec(file)
        out = check_out_dir(out_dir)
        runner: Executor
        if executor is ExecutorName.ray:
            from refract.matrix.ray import RayExecutor

            ray_runner = RayExecutor(num_cpus=ray_num_cpus, num_gpus=ray_num_gpus,
                                     max_retries=ray_max_retries)
            ray_runner.check()  # ray importable (the `ray` extra), before any work
            runner = ray_runner
        else:
            from refract.matrix.local import LocalExecutor

            runner = LocalExecutor()
        progress = make_matrix_progress(not no_progress)
        check_settings(spec)
        check_outputs(spec, out, overwrite=overwrite)
        result = run_matrix(spec, out, runner, progress)
        for path in result.leaderboards:
            say(f"refract: wrote {path}")
        ok, skipped, failed = (result.count(s) for s in ("ok", "skipped", "failed"))
        pruned, unrunnable = result.count("pruned"), result.count("not-runnable")
        swept = (f", {pruned} pruned by a sweep, {unrunnable} not runnable on their model"
                 if pruned or unrunnable else "")
        say(f"refract: matrix done: {ok} scored, {skipped} already done, {failed} failed"
            f"{swept} (status in {out / 'matrix-status.jsonl'})")
        for o in result.failed:
            say(f"refract: failed: {o.cell.model.name} · {o.cell.candidate}: {o.message}")
        if failed:
            raise typer.Exit(EXIT_RUNTIME)
