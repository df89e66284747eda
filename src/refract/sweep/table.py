"""The sweep's terminal table: every config of the grid sorted by KV size (largest first,
the reference on top), composite ± interval, band, P(band ≥ target), a frontier mark; then
the dropped and skipped configs with their reasons, and the recommendation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.table import Table
from rich.text import Text

from refract.kvconfig import short_label
from refract.system.memory import format_bytes

__all__ = ["FRONTIER_MARK", "sweep_lines", "sweep_table"]

FRONTIER_MARK = "◆"
_STYLE = {"EXCELLENT": "green", "PASS": "cyan", "DEGRADED": "yellow", "FAIL": "red"}


def _size(entry: Mapping[str, Any]) -> float:
    b = (entry.get("kv") or {}).get("bytes_per_token")
    return float(b) if b is not None else -1.0


def _pct(x: Any) -> str:
    return "—" if x is None else f"{100.0 * float(x):.0f} %"


def _bytes(x: Any) -> str:
    return "—" if x is None else format_bytes(int(x))


def sweep_table(summary: Mapping[str, Any]) -> Table:
    ref = summary["reference"]
    target = summary.get("target_band", "PASS")
    big = max(summary.get("memory_ctx") or [0])
    t = Table(title=f"refract sweep · {summary['model']['name']} · reference {ref['config']}",
              title_justify="left")
    for col, just in (("", "left"), ("KV config", "left"), ("bytes/token", "right"),
                      ("of ref", "right"), (f"KV @ {big}", "right"),
                      ("composite [95 %]", "right"), ("band", "left"),
                      (f"P(≥{target})", "right"), ("status", "left")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    rkv = ref.get("kv") or {}
    t.add_row("", short_label(ref["config"]), _bytes(rkv.get("bytes_per_token")), "100 %",
              _bytes((rkv.get("at") or {}).get(str(big))), "100 (reference)", "", "",
              "reference")
    for e in sorted(summary["configs"], key=lambda e: (-_size(e), e["config"])):
        kv = e.get("kv") or {}
        comp = e.get("composite")
        ci = e.get("ci95")
        score = "—" if comp is None else (
            "≤ " if e.get("composite_upper_bound") else "") + f"{comp:.1f}" + (
            f" [{ci[0]:.1f}–{ci[1]:.1f}]" if ci else "")
        status = e["status"]
        if status == "pruned":
            status = f"pruned ({e['pruned']['reason']}, first round)"
        elif status == "skipped":
            status = "skipped"
        band = e.get("band") or ""
        p = e.get("p_target")
        t.add_row(FRONTIER_MARK if e.get("frontier") else "", short_label(e["config"]),
                  _bytes(kv.get("bytes_per_token")), _pct(kv.get("ratio")),
                  _bytes((kv.get("at") or {}).get(str(big))), score,
                  Text(band, style=_STYLE.get(band, "")), "—" if p is None else f"{p:.2f}",
                  status)
    return t


def sweep_lines(summary: Mapping[str, Any]) -> list[str]:
    """What follows the table: dropped and skipped configs with their reasons, the
    recommendation."""
    lines: list[str] = []
    for e in summary["configs"]:
        if e["status"] == "pruned":
            lines.append(f"pruned {e['config']}: {e['pruned']['evidence']}")
        elif e["status"] == "skipped":
            lines.append(f"skipped {e['config']}: {e['skipped']}")
        elif e["status"] == "error":
            lines.append(f"error {e['config']}: {e.get('error')}")
    lines.append(f"{FRONTIER_MARK} on the memory/quality frontier (nothing smaller scores as "
                 f"well, among the configs not below {summary.get('target_band', 'PASS')})")
    if summary.get("kv_note"):
        lines.append(str(summary["kv_note"]))
    lines.append(f"recommendation: {summary['recommendation']['text']}")
    return lines
