"""``refract score``: candidate KV configs against the reference, one report per candidate."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from refract.cli.app import (
    EXIT_RUNTIME,
    NoProgressOpt,
    OverwriteOpt,
    guard,
    say,
    stdout_console,
)
from refract.errors import UsageError
from refract.options import with_score_options

__all__ = ["CandidatesOpt", "ModelOpt", "score", "score_problems"]

ModelOpt = Annotated[
    str, typer.Option("--model", "-m", help="GGUF model file, or 'demo' (the demo extra).")
]
CandidatesOpt = Annotated[
    list[str],
    typer.Option(
        "--candidate", "-c",
        help="KV config under test, e.g. ctk=q8_0,ctv=q8_0; repeat it to score several "
        "against one shared reference.",
    ),
]


def _score_outputs(
    candidates: Sequence[str], json_out: Path | None, html_out: Path | None,
    out_dir: Path | None, html: bool,
) -> dict[str, Path | None]:
    """Where the reports go: --json-out/--html-out (one candidate) or --out-dir (any)."""
    if len(candidates) > 1 and (json_out is not None or html_out is not None):
        raise UsageError(
            "--json-out/--html-out name one report; with several --candidate use --out-dir"
        )
    if html and out_dir is None:
        raise UsageError("--html writes into --out-dir; give --out-dir (or use --html-out)")
    return {"--json-out": json_out, "--html-out": html_out}


def _report_paths(out_dir: Path, model: str, candidate: str, html: bool) -> list[Path]:
    """The JSON (and HTML) report of one candidate in ``--out-dir``, named after the model
    file: ``<model-stem>__<candidate>.json``."""
    from refract.files import report_stem

    stem = report_stem(Path(model).stem, candidate)
    paths = [out_dir / f"{stem}.json"]
    if html:
        paths.append(out_dir / f"{stem}.html")
    return paths


def _check_score_outputs(plan: Any, outs: dict[str, Path | None], out_dir: Path | None,
                         html: bool, overwrite: bool) -> None:
    """Before the model loads: no output may replace a file refract did not write."""
    from refract.outputs import OutputKind, check_replaceable_all

    items: list[tuple[Path | None, str, OutputKind]] = [
        (outs["--json-out"], "--json-out", "report"), (outs["--html-out"], "--html-out", "html")]
    if out_dir is not None:
        for cfg in plan.candidates:
            paths = _report_paths(out_dir, str(plan.model_path), cfg.label, html)
            items.append((paths[0], "--out-dir", "report"))
            if html:
                items.append((paths[1], "--out-dir", "html"))
    check_replaceable_all(items, overwrite=overwrite)


def _write_report(report: dict[str, Any], json_out: Path | None, html_out: Path | None) -> None:
    if json_out is not None:
        from refract.report.io import write_report

        write_report(report, json_out)
        say(f"refract: wrote {json_out}")
    if html_out is not None:
        from refract.report.html import write_html

        write_html(report, html_out)
        say(f"refract: wrote {html_out}")


def _write_reports(
    reports: list[dict[str, Any]], outs: dict[str, Path | None], out_dir: Path | None,
    html: bool,
) -> None:
    if out_dir is not None:
        for report in reports:
            paths = _report_paths(out_dir, str(report["model"]), str(report["candidate"]), html)
            _write_report(report, paths[0], paths[1] if html else None)
    if len(reports) == 1:
        _write_report(reports[0], outs["--json-out"], outs["--html-out"])


def score_problems(reports: Sequence[dict[str, Any]]) -> str:
    """One line on what went wrong in finished reports (failed axes; reports in which nothing
    was measured), or ``""``."""
    from refract.report.fields import axis_problems, is_measured

    parts = []
    failed = [f"{r['candidate']}: {k}" for r in reports if is_measured(r)
              for k, a in r["axes"].items() if isinstance(a, dict) and a.get("error")]
    if failed:
        parts.append(f"axes failed ({'; '.join(failed)}); the reports keep the other axes")
    for r in reports:
        if not is_measured(r):
            why = "; ".join(axis_problems(r))
            parts.append(f"nothing was measured for {r['candidate']}: no axis produced a score"
                         + (f" ({why})" if why else "") + "; its report has no composite and "
                         "no band")
    return "; ".join(parts)


@with_score_options
def score(
    opts: Any,
    model: ModelOpt,
    candidate: CandidatesOpt,
    json_out: Annotated[
        Path | None, typer.Option("--json-out", help="Write the JSON report here.")
    ] = None,
    html_out: Annotated[
        Path | None, typer.Option("--html-out", help="Write the HTML report here.")
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out-dir", help="Write one JSON report per candidate into this "
                     "directory (created if missing)."),
    ] = None,
    html: Annotated[
        bool, typer.Option("--html", help="With --out-dir: an HTML report beside each JSON.")
    ] = False,
    overwrite: OverwriteOpt = False,
    no_progress: NoProgressOpt = False,
) -> None:
    """Score candidate KV configs against the reference (default axes: trajectory + KLD).

    Several --candidate share one model load and one reference decode; each gets its own
    report (exactly what a separate run gives) and a summary table is printed.
    """
    from refract.progress import make_reporter

    with guard():
        from refract.errors import FloorFailed
        from refract.files import check_out_dir
        from refract.options import ScoreOptions
        from refract.scoring import execute_score, prepare_score

        options = ScoreOptions.from_cli(opts)
        outs = _score_outputs(candidate, json_out, html_out, out_dir, html)
        reporter = make_reporter(not no_progress)
        plan = prepare_score(model, candidate, options, reporter=reporter, outputs={
            **outs, "--out-dir": out_dir})
        if out_dir is not None:
            check_out_dir(out_dir)
        _check_score_outputs(plan, outs, out_dir, html, overwrite)
        try:
            reports = execute_score(plan, reporter=reporter)
        except FloorFailed as exc:
            _write_reports(exc.reports, outs, out_dir, html)
            raise
        _write_reports(reports, outs, out_dir, html)
        from refract.report.text import print_report

        console = Console()
        for report in reports:
            print_report(report, console)
        if len(reports) > 1:
            from refract.report.summary import summary_table

            stdout_console().print(summary_table(reports))
        total = max(r["timings"].get("total_s", 0.0) for r in reports)
        say(f"refract: scored {len(reports)} candidate(s) in {total:.1f} s")
        problems = score_problems(reports)
        if problems:
            say(f"refract: error: {problems}")
            raise typer.Exit(EXIT_RUNTIME)
