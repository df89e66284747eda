"""``refract compare``: a table of several reports of one model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from refract.cli.app import guard, say, stdout_console

__all__ = ["compare"]


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
    methods); refract-llm's reports carry no hashes and are marked unverified. Each report after
    the first is paired with the first: per axis and for the composite, the difference and its
    95 % interval where both reports carry per-unit data on the same units (else why not).
    """
    with guard():
        from refract.report.compare import (
            PAIRED_HEADING,
            compare_markdown,
            compare_reports,
            compare_table,
            paired_lines,
        )

        result = compare_reports(reports, sort=sort, allow_incompatible=allow_incompatible)
        if not result.comparability.ok:
            say(f"refract: warning: reports are not comparable: {result.comparability.reasons()}")
        if markdown:
            typer.echo(compare_markdown(result.rows, result.paired), nl=False)
        else:
            stdout_console().print(compare_table(result.rows))
            diffs = paired_lines(result.paired)
            if diffs:
                typer.echo(PAIRED_HEADING)
                for line in diffs:
                    typer.echo(f"  {line}")
