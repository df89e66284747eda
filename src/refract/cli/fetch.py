"""``refract fetch``: download WikiText-2 raw into the cache."""

from __future__ import annotations

from typing import Annotated

import typer

from refract.cli.app import NoProgressOpt, guard

__all__ = ["fetch"]


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

    with guard():
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
