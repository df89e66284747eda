"""``refract sweep``: a grid of KV configs against one reference, KV memory from llama.cpp's
allocations, the memory/quality frontier and a recommendation (:mod:`refract.sweep`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from refract.cli.app import EXIT_RUNTIME, NoProgressOpt, OverwriteOpt, guard, say, stdout_console
from refract.cli.score import ModelOpt
from refract.options import with_score_options

__all__ = ["sweep"]


def _memory_ctx(text: str | None) -> tuple[int, ...]:
    from refract.errors import UsageError

    if not text:
        return ()
    out = []
    for frag in (f.strip() for f in text.split(",")):
        if not frag:
            continue
        try:
            out.append(int(frag))
        except ValueError:
            raise UsageError(f"--memory-ctx: {frag!r} is not a number of tokens") from None
    return tuple(out)


@with_score_options
def sweep(
    opts: Any,
    model: ModelOpt,
    out_dir: Annotated[Path, typer.Option(
        "--out-dir", help="Directory for the reports, sweep.json (and sweep.html).")],
    types: Annotated[str | None, typer.Option(
        "--types", help="Symmetric KV types to sweep (comma-separated, e.g. q8_0,q4_0,turbo4); "
        "default: every type of the build smaller than f16.")] = None,
    pairs: Annotated[str | None, typer.Option(
        "--pairs", help="Asymmetric K/V pairs (comma-separated, e.g. q8_0/turbo4,f16/q8_0); "
        "default: q8_0 K with every smaller V, and f16/q8_0.")] = None,
    candidate: Annotated[list[str] | None, typer.Option(
        "--candidate", "-c", help="Sweep exactly these KV configs instead of a grid "
        "(repeatable).")] = None,
    band: Annotated[str, typer.Option(
        "--band", help="The lowest band asked for: the recommendation is the smallest KV "
        "cache that stays at least this band; configs certainly below it are pruned.")
    ] = "PASS",
    confidence: Annotated[float, typer.Option(
        "--confidence", help="How sure a pruning, frontier decision or recommendation must "
        "be.")] = 0.95,
    prune: Annotated[bool, typer.Option(
        "--prune/--no-prune", help="Drop configs a cheap first round shows below --band "
        "(with --first-round-axes all: or dominated), before the full budget.")] = True,
    first_round: Annotated[float, typer.Option(
        "--first-round", help="With --first-round-axes all: the share of the prompts and "
        "chunks the first round scores (at least 10 of each).")] = 1 / 3,
    first_round_axes: Annotated[str, typer.Option(
        "--first-round-axes", help="What the first round measures: 'trajectory' (Trajectory "
        "alone, the other axes held at 100: an upper bound, about a third of the cost) or "
        "'all' (every axis; also drops configs dominated by a smaller one).")
    ] = "trajectory",
    memory_ctx: Annotated[str | None, typer.Option(
        "--memory-ctx", help="Also give each config's KV bytes at these context sizes "
        "(comma-separated tokens); the scoring --ctx and the model's trained context are "
        "always given.")] = None,
    html: Annotated[bool, typer.Option(
        "--html", help="Write sweep.html (the plot) and an HTML report per config.")] = False,
    overwrite: OverwriteOpt = False,
    no_progress: NoProgressOpt = False,
) -> None:
    """Score a grid of KV configs against the reference and recommend the smallest KV cache
    that stays in --band (default PASS) at 95 %."""
    from refract.progress import make_reporter

    with guard():
        from refract.files import check_out_dir
        from refract.options import ScoreOptions
        from refract.scoring.plan import known_kv_types
        from refract.sweep.grid import build_grid
        from refract.sweep.run import SweepSettings, row_size, run_sweep
        from refract.sweep.table import sweep_lines, sweep_table
        from refract.sweep.write import check_sweep_outputs, write_sweep

        options = ScoreOptions.from_cli(opts)
        settings = SweepSettings(
            types=types, pairs=pairs, candidates=tuple(candidate or ()), target_band=band,
            confidence=confidence, prune=prune, first_round=first_round,
            first_round_axes=first_round_axes, memory_ctx=_memory_ctx(memory_ctx))
        settings.check()
        grid = build_grid(known_kv_types() or [], row_size, types=types, pairs=pairs,
                          candidates=settings.candidates, reference=options.reference)
        check_out_dir(out_dir)
        from refract.inputs.model import resolve_model

        name = Path(resolve_model(model)).stem
        check_sweep_outputs(out_dir, name, [e.label for e in grid], html=html,
                            overwrite=overwrite)
        result = run_sweep(model, options, settings, reporter=make_reporter(not no_progress))
        write_sweep(result, out_dir, html=html)
        console = stdout_console()
        console.print(sweep_table(result.summary))
        for line in sweep_lines(result.summary):
            console.print(line, highlight=False, markup=False)
        n = sum(1 for e in result.summary["configs"] if e["status"] == "scored")
        say(f"refract: swept {len(grid)} config(s), {n} scored on the full budget, in "
            f"{result.summary['timings']['total_s']:.1f} s; wrote {out_dir / 'sweep.json'}")
        if any(e["status"] == "error" for e in result.summary["configs"]):
            say("refract: error: some configs measured nothing (see the table)")
            raise typer.Exit(EXIT_RUNTIME)
