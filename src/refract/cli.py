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

try:  # typer >= 0.20 vendors click as typer._click
    from typer._click import exceptions as _cx
except ImportError:  # pragma: no cover - older typer on top of click
    from click import exceptions as _cx  # type: ignore[no-redef]

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2


class _OneLineErrors(TyperGroup):
    """Usage errors (bad option values, unknown options) as one line on stderr, exit 2."""

    def main(  # type: ignore[override]
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
        except _cx.Abort:
            _say("refract: aborted")
            code = EXIT_RUNTIME
        if standalone_mode:
            sys.exit(code)
        return code


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
    from refract.chat import ChatTemplateError
    from refract.demo import DemoUnavailable

    return (ValueError, DemoUnavailable, ChatTemplateError)


@contextlib.contextmanager
def _guard() -> Iterator[None]:
    """Turn the exceptions of a command into one stderr line and an exit code."""
    from refract.score import FloorFailed

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


# --------------------------------------------------------------------------- score options

ModelOpt = Annotated[
    str, typer.Option("--model", "-m", help="GGUF model file, or 'demo' (the demo extra).")
]
CandidateOpt = Annotated[
    str, typer.Option("--candidate", "-c", help="KV config under test, e.g. ctk=q8_0,ctv=q8_0.")
]
ReferenceOpt = Annotated[str, typer.Option("--reference", help="Reference KV config.")]
FullOpt = Annotated[bool, typer.Option("--full", help="All four axes (adds R-NIAH and PLAD).")]
RniahOpt = Annotated[bool, typer.Option("--axis-rniah", help="Add Axis C (R-NIAH).")]
PladOpt = Annotated[bool, typer.Option("--axis-plad", help="Add Axis D (PLAD).")]
PromptsOpt = Annotated[
    Path | None, typer.Option("--prompts", help="JSONL prompt set (default: bundled set).")
]
CorpusOpt = Annotated[
    Path | None, typer.Option("--corpus", help="KLD corpus text file (default: WikiText-2 test).")
]
ChunksOpt = Annotated[int, typer.Option("--chunks", min=1, help="KLD chunks.")]
CtxOpt = Annotated[int, typer.Option("--ctx", min=16, help="KLD / trajectory context size.")]
NPredictOpt = Annotated[int, typer.Option("--n-predict", min=1, help="Tokens per generation.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed (PLAD perturbations, R-NIAH trials).")]
ChatOpt = Annotated[
    bool,
    typer.Option("--chat-template", help="Trajectory prompts through the model's chat template."),
]
HaystackOpt = Annotated[
    Path | None,
    typer.Option("--rniah-haystack", help="R-NIAH haystack text (default: WikiText-2 train)."),
]
UpToOpt = Annotated[int, typer.Option("--rniah-up-to", min=1, help="Longest R-NIAH length.")]
LengthsOpt = Annotated[
    str | None, typer.Option("--rniah-lengths", help="Explicit R-NIAH lengths, e.g. 4096,8192.")
]
PositionsOpt = Annotated[
    str, typer.Option("--rniah-positions", help="Needle positions as fractions, e.g. 0.1,0.5,0.9.")
]
TrialsOpt = Annotated[int, typer.Option("--rniah-trials", min=1, help="Trials per R-NIAH cell.")]
RniahPredictOpt = Annotated[
    int, typer.Option("--rniah-n-predict", min=1, help="Tokens per R-NIAH answer.")
]
FloorOpt = Annotated[
    bool,
    typer.Option(
        "--measure-floor", help="Run A and B ref-vs-ref first; abort (exit 2) if unclean."
    ),
]
SkipTrajOpt = Annotated[bool, typer.Option("--skip-trajectory", help="Skip Axis A.")]
SkipKldOpt = Annotated[bool, typer.Option("--skip-kld", help="Skip Axis B.")]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", "-t", min=1, help="CPU threads.")]
NglOpt = Annotated[
    int, typer.Option("--n-gpu-layers", "-ngl", help="Layers to offload (-1 = all).")
]
JsonOpt = Annotated[Path | None, typer.Option("--json-out", help="Write the JSON report here.")]
HtmlOpt = Annotated[Path | None, typer.Option("--html-out", help="Write the HTML report here.")]
NoProgressOpt = Annotated[bool, typer.Option("--no-progress", help="No progress display.")]
NoFetchOpt = Annotated[
    bool, typer.Option("--no-auto-fetch", help="Never download WikiText-2; fail if not cached.")
]


def _plan(
    reporter: Any,
    *,
    model: str,
    candidate: str,
    reference: str,
    full: bool,
    axis_rniah: bool,
    axis_plad: bool,
    prompts: Path | None,
    corpus: Path | None,
    chunks: int,
    ctx: int,
    n_predict: int,
    seed: int,
    chat_template: bool,
    rniah_haystack: Path | None,
    rniah_up_to: int,
    rniah_lengths: str | None,
    rniah_positions: str,
    rniah_trials: int,
    rniah_n_predict: int,
    measure_floor: bool,
    skip_trajectory: bool,
    skip_kld: bool,
    threads: int | None,
    n_gpu_layers: int,
    no_auto_fetch: bool,
) -> Any:
    from refract.score import parse_float_list, parse_int_list, prepare_score

    lengths = parse_int_list(rniah_lengths, "--rniah-lengths") if rniah_lengths else None
    positions = parse_float_list(rniah_positions, "--rniah-positions")
    return prepare_score(
        model, candidate, reference,
        trajectory=not skip_trajectory, kld=not skip_kld, rniah=full or axis_rniah,
        plad=full or axis_plad, measure_floor=measure_floor, prompts=prompts, corpus=corpus,
        rniah_haystack=rniah_haystack, chunks=chunks, ctx=ctx, n_predict=n_predict, seed=seed,
        chat_template=chat_template, rniah_up_to=rniah_up_to, rniah_lengths=lengths,
        rniah_positions=positions, rniah_trials=rniah_trials, rniah_n_predict=rniah_n_predict,
        threads=threads, n_gpu_layers=n_gpu_layers, auto_fetch=not no_auto_fetch,
        reporter=reporter,
    )


def _check_outputs(**paths: Path | None) -> dict[str, Path | None]:
    from refract.score import check_output_path

    return {
        name: None if p is None else check_output_path(p, "--" + name.replace("_", "-"))
        for name, p in paths.items()
    }


# --------------------------------------------------------------------------- score


@app.command()
def score(
    model: ModelOpt,
    candidate: CandidateOpt,
    reference: ReferenceOpt = "ctk=f16,ctv=f16",
    full: FullOpt = False,
    axis_rniah: RniahOpt = False,
    axis_plad: PladOpt = False,
    prompts: PromptsOpt = None,
    corpus: CorpusOpt = None,
    chunks: ChunksOpt = 32,
    ctx: CtxOpt = 512,
    n_predict: NPredictOpt = 128,
    seed: SeedOpt = 42,
    chat_template: ChatOpt = False,
    rniah_haystack: HaystackOpt = None,
    rniah_up_to: UpToOpt = 16384,
    rniah_lengths: LengthsOpt = None,
    rniah_positions: PositionsOpt = "0.1,0.5,0.9",
    rniah_trials: TrialsOpt = 1,
    rniah_n_predict: RniahPredictOpt = 256,
    measure_floor: FloorOpt = False,
    skip_trajectory: SkipTrajOpt = False,
    skip_kld: SkipKldOpt = False,
    threads: ThreadsOpt = None,
    n_gpu_layers: NglOpt = -1,
    json_out: JsonOpt = None,
    html_out: HtmlOpt = None,
    no_progress: NoProgressOpt = False,
    no_auto_fetch: NoFetchOpt = False,
) -> None:
    """Score a candidate KV config against the reference (default axes: trajectory + KLD)."""
    from refract.progress import make_reporter

    with _guard():
        outs = _check_outputs(json_out=json_out, html_out=html_out)
        reporter = make_reporter(not no_progress)
        plan = _plan(
            reporter, model=model, candidate=candidate, reference=reference, full=full,
            axis_rniah=axis_rniah, axis_plad=axis_plad, prompts=prompts, corpus=corpus,
            chunks=chunks, ctx=ctx, n_predict=n_predict, seed=seed,
            chat_template=chat_template, rniah_haystack=rniah_haystack,
            rniah_up_to=rniah_up_to, rniah_lengths=rniah_lengths,
            rniah_positions=rniah_positions, rniah_trials=rniah_trials,
            rniah_n_predict=rniah_n_predict, measure_floor=measure_floor,
            skip_trajectory=skip_trajectory, skip_kld=skip_kld, threads=threads,
            n_gpu_layers=n_gpu_layers, no_auto_fetch=no_auto_fetch,
        )
        from refract.score import execute_score

        report = execute_score(plan, reporter=reporter)
        _write_report(report, outs["json_out"], outs["html_out"])
        from refract.report.text import print_report

        print_report(report, Console())
        _say(f"refract: scored in {report['timings'].get('total_s', 0.0):.1f} s")


def _write_report(report: dict[str, Any], json_out: Path | None, html_out: Path | None) -> None:
    if json_out is not None:
        from refract.report.io import write_report

        write_report(report, json_out)
        _say(f"refract: wrote {json_out}")
    if html_out is not None:
        from refract.report.html import write_html

        write_html(report, html_out)
        _say(f"refract: wrote {html_out}")


# --------------------------------------------------------------------------- repeatability


@app.command()
def repeatability(
    model: ModelOpt,
    candidate: CandidateOpt,
    runs: Annotated[int, typer.Option("--runs", "-n", min=2, help="Number of scores.")] = 3,
    reference: ReferenceOpt = "ctk=f16,ctv=f16",
    full: FullOpt = False,
    axis_rniah: RniahOpt = False,
    axis_plad: PladOpt = False,
    prompts: PromptsOpt = None,
    corpus: CorpusOpt = None,
    chunks: ChunksOpt = 32,
    ctx: CtxOpt = 512,
    n_predict: NPredictOpt = 128,
    seed: SeedOpt = 42,
    chat_template: ChatOpt = False,
    rniah_haystack: HaystackOpt = None,
    rniah_up_to: UpToOpt = 16384,
    rniah_lengths: LengthsOpt = None,
    rniah_positions: PositionsOpt = "0.1,0.5,0.9",
    rniah_trials: TrialsOpt = 1,
    rniah_n_predict: RniahPredictOpt = 256,
    measure_floor: FloorOpt = False,
    skip_trajectory: SkipTrajOpt = False,
    skip_kld: SkipKldOpt = False,
    threads: ThreadsOpt = None,
    n_gpu_layers: NglOpt = -1,
    json_out: Annotated[
        Path | None, typer.Option("--json-out", help="Write the statistics (JSON) here.")
    ] = None,
    no_progress: NoProgressOpt = False,
    no_auto_fetch: NoFetchOpt = False,
) -> None:
    """Score N times (a fresh model load each) and report the run-to-run spread.

    Verdict: HEALTHY (largest stdev ≤ 1), NOISY (≤ 3), else UNSTABLE.
    """
    from refract.progress import make_reporter

    with _guard():
        outs = _check_outputs(json_out=json_out)
        reporter = make_reporter(not no_progress)
        plan = _plan(
            reporter, model=model, candidate=candidate, reference=reference, full=full,
            axis_rniah=axis_rniah, axis_plad=axis_plad, prompts=prompts, corpus=corpus,
            chunks=chunks, ctx=ctx, n_predict=n_predict, seed=seed,
            chat_template=chat_template, rniah_haystack=rniah_haystack,
            rniah_up_to=rniah_up_to, rniah_lengths=rniah_lengths,
            rniah_positions=rniah_positions, rniah_trials=rniah_trials,
            rniah_n_predict=rniah_n_predict, measure_floor=measure_floor,
            skip_trajectory=skip_trajectory, skip_kld=skip_kld, threads=threads,
            n_gpu_layers=n_gpu_layers, no_auto_fetch=no_auto_fetch,
        )
        from refract.repeatability import summarize_runs
        from refract.score import execute_score

        reports = []
        for i in range(runs):
            _say(f"refract: run {i + 1}/{runs}")
            reports.append(execute_score(plan, reporter=reporter))
        summary = summarize_runs(reports)
        summary.update(
            model=str(plan.model_path), reference=plan.reference.label,
            candidate=plan.candidate.label, settings=plan.settings(),
        )
        from refract.repeatability import repeatability_table

        _stdout_console().print(repeatability_table(summary))
        typer.echo(
            f"verdict: {summary['verdict']} (largest stdev {summary['worst_stdev']:.3f}, "
            f"{summary['worst']})"
        )
        if outs["json_out"] is not None:
            from refract.report.io import atomic_write_bytes, dumps_report

            atomic_write_bytes(outs["json_out"], dumps_report(summary))
            _say(f"refract: wrote {outs['json_out']}")


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
) -> None:
    """Rank the reports in a directory per candidate KV config (Markdown or HTML).

    One table per candidate, one row per model; a table's reports must be comparable on
    everything but the model. Self-checks and partial reports are shown unranked.
    """
    with _guard():
        from refract.report.leaderboard import build_leaderboard, write_leaderboard
        from refract.score import UsageError, check_output_path

        if out.suffix.lower() not in (".md", ".markdown", ".html", ".htm"):
            raise UsageError(f"--out {str(out)!r}: use a .md or .html file name")
        check_output_path(out, "--out")
        if not in_dir.is_dir():
            raise UsageError(f"--in {str(in_dir)!r} is not a directory")
        board = build_leaderboard(in_dir, allow_incompatible=allow_incompatible)
        for group in board.incompatible:
            assert group.comparability is not None
            _say(f"refract: warning: candidate {group.candidate!r}: not comparable: "
                 f"{group.comparability.reasons()}")
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
    from refract.corpus import fetch_wikitext
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
        from refract.score import resolve_model
        from refract.selftest import run_selftest

        path = resolve_model(model) if model is not None else None
        t0 = time.perf_counter()
        result = run_selftest(path, threads)
        b = result.build
        typer.echo(f"refract {__version__}")
        typer.echo(f"llama.cpp commit: {b.get('llama_cpp_commit')}")
        typer.echo(f"llama.cpp source: {b.get('llama_cpp_source')}")
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


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
