"""``refract leaderboard``: rank the reports in a directory, per candidate KV config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from refract.cli.app import OverwriteOpt, guard, say
from refract.errors import UsageError

__all__ = ["leaderboard"]


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
    everything but the model. Self-checks and partial reports are shown unranked. Then each
    model's memory/quality frontier (where reports record llama.cpp's KV allocations).
    """
    with guard():
        from refract.files import check_output_path
        from refract.outputs import check_replaceable
        from refract.report.leaderboard import build_leaderboard, write_leaderboard

        if out.suffix.lower() not in (".md", ".markdown", ".html", ".htm"):
            raise UsageError(f"--out {str(out)!r}: use a .md or .html file name")
        check_output_path(out, "--out")
        check_replaceable(out, "--out", "html" if out.suffix.lower() in (".html", ".htm")
                          else "markdown", overwrite=overwrite)
        if not in_dir.is_dir():
            raise UsageError(f"--in {str(in_dir)!r} is not a directory")
        board = build_leaderboard(in_dir, allow_incompatible=allow_incompatible)
        for group in board.incompatible:
            assert group.comparability is not None
            say(f"refract: warning: candidate {group.candidate!r}: not comparable: "
                f"{group.comparability.reasons()}")
        for group in board.mixed_builds:
            say(f"refract: note: candidate {group.candidate!r}: {group.builds_note}")
        for skipped in board.skipped:
            say(f"refract: skipped {skipped}")
        n = sum(len(g.entries) for g in board.groups)
        if n == 0:
            raise UsageError(f"--in {str(in_dir)!r}: no refract reports found")
        write_leaderboard(board, out)
        say(f"refract: wrote {out} ({n} reports in {len(board.groups)} groups)")
