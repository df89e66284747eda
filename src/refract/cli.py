"""The ``refract`` command line (typer).

Exit codes: 0 ok; 2 usage errors (bad values, missing files, unwritable outputs), a failed
noise floor, a failed selftest; 1 runtime failures. Every error is one line on stderr; set
``REFRACT_DEBUG=1`` for a traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from typer.core import TyperGroup

from refract import __version__
from refract.options import with_score_options

try:  # typer >= 0.20 vendors click as typer._click
    from typer._click import exceptions as _cx
except ImportError:  # pragma: no cover - older typer on top of click
    from click import exceptions as _cx  # type: ignore[no-redef]

_Abort = getattr(_cx, "Abort", None) or typer.Abort

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2


class _OneLineErrors(TyperGroup):
    """Usage errors (bad option values, unknown options) as one line on stderr, exit 2.

    Flags show no ``<bool>`` placeholder in ``--help``.
    """

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            _no_flag_metavar([*cmd.params, cmd.get_help_option(ctx)])
        return cmd

    def get_params(self, ctx: Any) -> Any:
        params = super().get_params(ctx)
        _no_flag_metavar(params)
        return params

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            rv = super().main(
                args=args, prog_name=prog_name, complete_var=complete_var,
                standalone_mode=False, windows_expand_args=windows_expand_args, **extra,
            )
            code = rv if isinstance(rv, int) else EXIT_OK
        except _cx.NoArgsIsHelpError as exc:
            exc.show()
            code = EXIT_USAGE
        except _cx.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "refract"
            message = exc.format_message()
            value = _offending_value(exc, args)
            if value is not None and repr(value) not in message:
                message = f"{message.rstrip('.')}: got {value!r}."
            _say(f"{where}: error: {message} (see '{where} --help')")
            code = EXIT_USAGE
        except _cx.ClickException as exc:
            _say(f"refract: error: {exc.format_message()}")
            code = exc.exit_code
        except _Abort:
            _say("refract: aborted")
            code = EXIT_RUNTIME
        if standalone_mode:
            sys.exit(code)
        return code


def _no_flag_metavar(params: Sequence[Any]) -> None:
    for param in params:
        if param is not None and getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""


def _offending_value(exc: Exception, args: Sequence[str] | None) -> str | None:
    """The command-line text given to the option a BadParameter is about, if any."""
    param = getattr(exc, "param", None)
    opts = list(getattr(param, "opts", []) or []) + list(getattr(param, "secondary_opts", []) or [])
    if not isinstance(exc, _cx.BadParameter) or not opts:
        return None
    argv = list(sys.argv[1:] if args is None else args)
    found = None
    for i, arg in enumerate(argv):
        for opt in opts:
            if arg == opt and i + 1 < len(argv):
                found = argv[i + 1]
            elif arg.startswith(opt + "="):
                found = arg[len(opt) + 1 :]
    return found


app = typer.Typer(
    cls=_OneLineErrors,
    name="refract",
    help="Does a quantized KV cache change what your LLM does? Scores a KV config against "
    "f16 on four axes (trajectory, KLD@D, R-NIAH, PLAD), in-process on llama.cpp.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


# --------------------------------------------------------------------------- errors


def _say(message: str) -> None:
    """One line on stderr (newlines inside the message are folded)."""
    line = ""
    for part in (p.strip() for p in str(message).splitlines()):
        if part:
            line += part if not line else (" " if line.endswith(":") else "; ") + part
    typer.echo(line, err=True)


def _fail(message: str, code: int) -> NoReturn:
    _say(f"refract: error: {message}")
    raise typer.Exit(code)


def _usage_types() -> tuple[type[BaseException], ...]:
    from refract.inputs.chat import ChatTemplateError
    from refract.inputs.demo import DemoUnavailable

    return (ValueError, DemoUnavailable, ChatTemplateError)


@contextlib.contextmanager
def _guard() -> Iterator[None]:
    """Turn the exceptions of a command into one stderr line and an exit code."""
    from refract.scoring.score import FloorFailed

    try:
        yield
    except typer.Exit:
        raise
    except FloorFailed as exc:
        _fail(str(exc), EXIT_USAGE)
    except _usage_types() as exc:  # KVConfigError, PromptSetError, ReportError, ModelError …
        _debug()
        _fail(str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except ImportError as exc:  # refract._core refused by the CPU guard or the AMX probe
        _debug()
        _fail(f"the native engine cannot be loaded: {exc}", EXIT_RUNTIME)
    except MemoryError:
        _fail("out of memory", EXIT_RUNTIME)
    except (RuntimeError, OSError) as exc:  # CorpusError (network), engine failures
        _debug()
        _fail(str(exc) or type(exc).__name__, EXIT_RUNTIME)
    except Exception as exc:  # a bug: still one line, the traceback on request
        _debug()
        _fail(f"internal error: {type(exc).__name__}: {exc} (set REFRACT_DEBUG=1 for a "
              "traceback)", EXIT_RUNTIME)


def _debug() -> None:
    if os.environ.get("REFRACT_DEBUG"):
        traceback.print_exc()


def _stdout_console(width: int = 100) -> Console:
    """Stdout console; when stdout is not a terminal, wide enough for tables."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(width, 400))
    return console


def _version(value: bool) -> None:
    if value:
        typer.echo(f"refract {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """refract: KV-cache quantization scoring, in-process on llama.cpp."""


# --------------------------------------------------------------------------- score

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
NoProgressOpt = Annotated[bool, typer.Option("--no-progress", help="No progress display.")]
OverwriteOpt = Annotated[
    bool,
    typer.Option("--overwrite", help="Replace existing output files even when they are not "
                 "refract's own (by default only a previous refract output is replaced)."),
]
ThreadsOpt = Annotated[
    int | None, typer.Option("--threads", "-t", min=1, max=4096, help="CPU threads.")
]


def _score_outputs(
    candidates: Sequence[str], json_out: Path | None, html_out: Path | None,
    out_dir: Path | None, html: bool,
) -> dict[str, Path | None]:
    """Where the reports go: --json-out/--html-out (one candidate) or --out-dir (any)."""
    from refract.scoring.score import UsageError

    if len(candidates) > 1 and (json_out is not None or html_out is not None):
        raise UsageError(
            "--json-out/--html-out name one report; with several --candidate use --out-dir"
        )
    if html and out_dir is None:
        raise UsageError("--html writes into --out-dir; give --out-dir (or use --html-out)")
    return {"--json-out": json_out, "--html-out": html_out}


def _report_paths(out_dir: Path, model: str, candidate: str, html: bool) -> list[Path]:
    from refract.matrix.spec import slug

    cand = candidate.replace("=", "-").replace(",", "_")
    stem = f"{slug(Path(model).stem)}__{slug(cand)}"
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
        _say(f"refract: wrote {json_out}")
    if html_out is not None:
        from refract.report.html import write_html

        write_html(report, html_out)
        _say(f"refract: wrote {html_out}")


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


def _score_problems(reports: Sequence[dict[str, Any]]) -> str:
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


def _check_out_dir(out_dir: Path | None) -> None:
    from refract.scoring.score import check_output_path

    if out_dir is None:
        return
    if out_dir.exists() and not out_dir.is_dir():
        from refract.scoring.score import UsageError

        raise UsageError(f"--out-dir {str(out_dir)!r} exists and is not a directory")
    if not out_dir.exists():
        check_output_path(out_dir, "--out-dir")  # its parent must take a new entry
        out_dir.mkdir()
    else:
        check_output_path(out_dir / ".refract-out", "--out-dir")


@app.command()
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

    with _guard():
        from refract.options import ScoreOptions
        from refract.scoring.score import FloorFailed, execute_score, prepare_score

        options = ScoreOptions.from_cli(opts)
        outs = _score_outputs(candidate, json_out, html_out, out_dir, html)
        reporter = make_reporter(not no_progress)
        plan = prepare_score(model, candidate, options, reporter=reporter, outputs={
            **outs, "--out-dir": out_dir})
        _check_out_dir(out_dir)
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

            _stdout_console().print(summary_table(reports))
        total = max(r["timings"].get("total_s", 0.0) for r in reports)
        _say(f"refract: scored {len(reports)} candidate(s) in {total:.1f} s")
        problems = _score_problems(reports)
        if problems:
            _say(f"refract: error: {problems}")
            raise typer.Exit(EXIT_RUNTIME)


# --------------------------------------------------------------------------- repeatability


@app.command()
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

    with _guard():
        from refract.options import ScoreOptions
        from refract.scoring.score import execute_score, prepare_score

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
            _say(f"refract: run {i + 1}/{runs}")
            [report] = execute_score(plan, reporter=reporter)
            if not is_measured(report):  # no composite to compare: stop, never count a 0
                _fail(f"run {i + 1}: {_score_problems([report])}", EXIT_RUNTIME)
            reports.append(report)
        summary = summarize_runs(reports)
        from refract.outputs import SUMMARY_SCHEMA

        summary = {"schema": SUMMARY_SCHEMA, "generator": "refract", **summary}
        summary.update(
            model=str(plan.model_path), reference=plan.reference.label,
            candidate=plan.candidate.label, settings=plan.settings(),
        )
        from refract.scoring.repeatability import repeatability_table

        _stdout_console().print(repeatability_table(summary))
        typer.echo(
            f"verdict: {summary['verdict']} (largest stdev {summary['worst_stdev']:.3f}, "
            f"{summary['worst']})"
        )
        if json_out is not None:
            from refract.report.io import atomic_write_bytes, dumps_report

            atomic_write_bytes(json_out, dumps_report(summary))
            _say(f"refract: wrote {json_out}")


# --------------------------------------------------------------------------- compare


@app.command()
def compare(
    reports: Annotated[
        list[Path], typer.Argument(help="Report JSON files (ours or refract-llm's).")
    ],
    sort: Annotated[bool, typer.Option("--sort", help="Best composite first.")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Markdown table.")] = False,
    allow_incompatible: Annotated[
        bool,
        typer.Option(
            "--allow-incompatible",
            help="Show reports of different models, inputs or settings side by side (the "
            "differences are marked) instead of refusing them (exit 2).",
        ),
    ] = False,
) -> None:
    """A table of several reports of one model: composite, band and each axis.

    Reports must be comparable (same model, corpus, prompt set, reference, settings and axis
    methods); refract-llm's reports carry no hashes and are marked unverified.
    """
    with _guard():
        from refract.report.compare import compare_markdown, compare_reports, compare_table

        result = compare_reports(reports, sort=sort, allow_incompatible=allow_incompatible)
        if not result.comparability.ok:
            _say(f"refract: warning: reports are not comparable: {result.comparability.reasons()}")
        if markdown:
            typer.echo(compare_markdown(result.rows), nl=False)
        else:
            _stdout_console().print(compare_table(result.rows))


# --------------------------------------------------------------------------- leaderboard


@app.command()
def leaderboard(
    in_dir: Annotated[Path, typer.Option("--in", help="Directory of report JSON files.")],
    out: Annotated[Path, typer.Option("--out", help="Output file: .md or .html.")],
    allow_incompatible: Annotated[
        bool,
        typer.Option(
            "--allow-incompatible",
            help="Write tables whose reports differ in inputs or settings (marked) instead "
            "of refusing them (exit 2).",
        ),
    ] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Rank the reports in a directory per candidate KV config (Markdown or HTML).

    One table per candidate, one row per model; a table's reports must be comparable on
    everything but the model. Self-checks and partial reports are shown unranked.
    """
    with _guard():
        from refract.report.leaderboard import build_leaderboard, write_leaderboard
        from refract.scoring.score import UsageError, check_output_path

        if out.suffix.lower() not in (".md", ".markdown", ".html", ".htm"):
            raise UsageError(f"--out {str(out)!r}: use a .md or .html file name")
        check_output_path(out, "--out")
        from refract.outputs import check_replaceable

        check_replaceable(out, "--out", "html" if out.suffix.lower() in (".html", ".htm")
                          else "markdown", overwrite=overwrite)
        if not in_dir.is_dir():
            raise UsageError(f"--in {str(in_dir)!r} is not a directory")
        board = build_leaderboard(in_dir, allow_incompatible=allow_incompatible)
        for group in board.incompatible:
            assert group.comparability is not None
            _say(f"refract: warning: candidate {group.candidate!r}: not comparable: "
                 f"{group.comparability.reasons()}")
        for group in board.mixed_builds:
            _say(f"refract: note: candidate {group.candidate!r}: {group.builds_note}")
        for skipped in board.skipped:
            _say(f"refract: skipped {skipped}")
        n = sum(len(g.entries) for g in board.groups)
        if n == 0:
            raise UsageError(f"--in {str(in_dir)!r}: no refract reports found")
        write_leaderboard(board, out)
        _say(f"refract: wrote {out} ({n} reports in {len(board.groups)} groups)")


# --------------------------------------------------------------------------- fetch


@app.command()
def fetch(
    url: Annotated[
        str | None, typer.Option("--url", help="Zip URL (default: the WikiText-2 raw zip).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Download even if cached.")] = False,
    no_progress: NoProgressOpt = False,
) -> None:
    """Download WikiText-2 raw into the cache ($REFRACT_CACHE_DIR or ~/.cache/refract)."""
    from refract.inputs.corpus import fetch_wikitext
    from refract.progress import make_reporter

    with _guard():
        reporter = make_reporter(not no_progress)
        downloaded = False
        with reporter.download("fetching WikiText-2") as bar:

            def progress(done: int, total: int | None) -> None:
                nonlocal downloaded
                downloaded = True
                bar(done, total)

            paths = fetch_wikitext(url, force=force, progress=progress)
        state = "fetched" if downloaded else "already cached"
        for split, path in paths.items():
            typer.echo(f"{split}: {path} ({path.stat().st_size:,} bytes, {state})")


# --------------------------------------------------------------------------- selftest


@app.command()
def selftest(
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Also test on this GGUF model ('demo').")
    ] = None,
    threads: ThreadsOpt = None,
) -> None:
    """Build info; with a model, a short generation and a ref-vs-ref KLD (must be exactly 0)."""
    with _guard():
        try:
            import refract._core  # noqa: F401
        except ImportError as exc:
            _fail(f"the native engine refract._core cannot be imported: {exc}", EXIT_USAGE)
        from refract.scoring.score import resolve_model
        from refract.selftest import run_selftest

        path = resolve_model(model) if model is not None else None
        t0 = time.perf_counter()
        result = run_selftest(path, threads)
        b = result.build
        typer.echo(f"refract {__version__}")
        typer.echo(f"llama.cpp commit: {b.get('llama_cpp_commit')}")
        typer.echo(f"llama.cpp source: {b.get('llama_cpp_source')}")
        typer.echo(f"llama.cpp flavour: {b.get('llama_cpp_flavour')}")
        typer.echo(f"backends: {', '.join(b.get('backends') or [])}")
        typer.echo(f"KV types: {', '.join(b.get('kv_types') or [])}")
        for check in result.checks:
            mark = "ok  " if check.ok else "FAIL"
            typer.echo(f"[{mark}] {check.name}" + (f": {check.detail}" if check.detail else ""))
        typer.echo(
            f"selftest {'passed' if result.ok else 'FAILED'} in {time.perf_counter() - t0:.1f} s"
        )
        if not result.ok:
            raise typer.Exit(EXIT_USAGE)


# --------------------------------------------------------------------------- matrix

from refract.matrix.command import matrix  # noqa: E402  (its module imports nothing heavy)

app.command("matrix")(matrix)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
