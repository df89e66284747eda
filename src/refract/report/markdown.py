"""GitHub-flavoured Markdown tables, for ``compare --markdown``, the leaderboard and the
multi-candidate summary: one escaping of a cell's text, one table layout."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

__all__ = ["md_cell", "md_table"]


def md_cell(text: str) -> str:
    """``text`` as one table cell (or inline text): backslashes and pipes escaped, newlines
    folded, and ``<`` / ``>`` as entities (report contents never become HTML)."""
    return (
        text.replace("\\", "\\\\")
        .replace("|", "\\|")
        .replace("\n", " ")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
    )


def md_table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: Collection[int] = ()
) -> list[str]:
    """The lines of a table; the columns in ``numeric`` are right-aligned."""
    lines = [
        "| " + " | ".join(md_cell(h) for h in headers) + " |",
        "|" + "|".join("---:" if i in numeric else "---" for i in range(len(headers))) + "|",
    ]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return lines
