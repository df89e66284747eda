"""``refract cache``: list or clear the persistent reference store."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from refract.cli.app import EXIT_USAGE, fail, guard

__all__ = ["cache"]

ACTIONS = ("list", "clear")


def cache(
    action: Annotated[
        str, typer.Argument(help="list (the default): what is stored; clear: delete it all.")
    ] = "list",
) -> None:
    """The reference store: reference results kept between runs (Trajectory's noise floor,
    R-NIAH and PLAD reference decodes), $REFRACT_REFERENCE_CACHE_DIR or
    $REFRACT_CACHE_DIR/reference; bounded by $REFRACT_REFERENCE_CACHE_MAX_MB (default 1024).
    `refract score --no-reference-cache` neither reads nor writes it."""
    with guard():
        if action not in ACTIONS:
            fail(f"refract cache: unknown action {action!r}; use one of {', '.join(ACTIONS)}",
                 EXIT_USAGE)
        from refract.engine.store import FAMILY_TEXT, default_store

        store = default_store()
        if action == "clear":
            n, size = store.clear()
            typer.echo(f"removed {n} reference entr{'y' if n == 1 else 'ies'} "
                       f"({size / 1e6:.1f} MB) from {store.root}")
            return
        entries = store.entries()
        total = sum(e.bytes for e in entries)
        typer.echo(f"reference store: {store.root}")
        typer.echo(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, "
                   f"{total / (1 << 20):.1f} MiB of {store.max_bytes / (1 << 20):.0f} MiB bound")
        for e in entries:
            used = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used))
            what = FAMILY_TEXT.get(e.family, e.family)
            typer.echo(f"  {e.path.stem[:16]}  {used}  {e.bytes / 1e3:8.1f} kB  "
                       f"model {e.model_sha256[:12]}  {e.reference}  {what}")
