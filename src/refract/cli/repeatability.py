"""``refract repeatability``: score N times and report the run-to-run spread."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from refract.cli.app import (
    EXIT_RUNTIME,
    NoProgressOpt,
    OverwriteOpt,
    fail,
    guard,
    say,
    stdout_console,
)
from refract.cli.score import ModelOpt, score_problems
from refract.options import with_score_options

__all__ = ["repeatability"]


@with_score_options
def repeatability(
    opts: Any,
    model: ModelOpt,
    candidate: Annotated[
        str, typer.Option("--candidate", "-c", help="KV config under test.")
    ],
    runs: Annotated[int, typer.Option("--runs", "-n", min=2, max=1000,
                                      help="Number of scores.")] = 3,
    json_out: Annotated[
        Path | None, typer.Option("--json-out", help="Write the statistics (JSON) here.")
    ] = None,
    overwrite: OverwriteOpt = False,
    no_progress: NoProgressOpt = False,
) -> None:
    """Score N times (a fresh model load each) and report the run-to-run spread.

    Verdict: HEALTHY (largest stdev ≤ 1), NOISY (≤ 3), else UNSTABLE.
    """
    from refract.progress import make_reporter

    with guard():
        from refract.options import ScoreOptions
        from refract.scoring import execute_score, prepare_score

        options = ScoreOptions.from_cli(opts)
        reporter = make_reporter(not no_progress)
        plan = prepare_score(model, candidate, options, reporter=reporter,
                             outputs={"--json-out": json_out})
        from refract.outputs import check_replaceable

        check_replaceable(json_out, "--json-out", "summary", overwrite=overwrite)
        from refract.report.fields import is_measured
        from refract.scoring.repeatability import summarize_runs

        reports = []
        for i in range(runs):
            say(f"refract: run {i + 1}/{runs}")
            [report] = execute_score(plan, reporter=reporter)
            if not is_measured(report):  # no composite to compare: stop, never count a 0
                fail(f"run {i + 1}: {score_problems([report])}", EXIT_RUNTIME)
            reports.append(report)
        summary = summarize_runs(reports)
        from refract.outputs import SUMMARY_SCHEMA

        summary = {"schema": SUMMARY_SCHEMA, "generator": "refract", **summary}
        summary.update(
            model=str(plan.model_path), reference=plan.reference.label,
            candidate=plan.candidate.label, settings=plan.settings(),
        )
        from refract.scoring.repeatability import repeatability_table

        stdout_console().print(repeatability_table(summary))
        typer.echo(
            f"verdict: {summary['verdict']} (largest stdev {summary['worst_stdev']:.3f}, "
            f"{summary['worst']})"
        )
        if json_out is not None:
            from refract.files import atomic_write_bytes
            from refract.report.io import dumps_report

            atomic_write_bytes(json_out, dumps_report(summary))
            say(f"refract: wrote {json_out}")
