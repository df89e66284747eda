"""``refract selftest``: build info; with a model, a short generation and a ref-vs-ref KLD."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from refract import __version__
from refract.cli.app import EXIT_USAGE, fail, guard

__all__ = ["selftest"]

ThreadsOpt = Annotated[
    int | None, typer.Option("--threads", "-t", min=1, max=4096, help="CPU threads.")
]


def selftest(
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Also test on this GGUF model ('demo').")
    ] = None,
    threads: ThreadsOpt = None,
) -> None:
    """Build info; with a model, a short generation and a ref-vs-ref KLD (must be exactly 0)."""
    with guard():
        try:
            import refract._core  # noqa: F401
        except ImportError as exc:
            fail(f"the native engine refract._core cannot be imported: {exc}", EXIT_USAGE)
        from refract.inputs.model import resolve_model
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
