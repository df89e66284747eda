"""The CPU's feature flags as Linux reports them (read by the import guard, the start-up
probe and the selftest)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

CPUINFO_ENV = "REFRACT_CPUINFO"
"""A file to read instead of ``/proc/cpuinfo`` (tests)."""

__all__ = ["CPUINFO_ENV", "cpu_flags", "missing_features"]


def cpu_flags(cpuinfo: str | Path | None = None) -> set[str] | None:
    """The CPU's feature flags as Linux names them, or None where they cannot be read."""
    if cpuinfo is None:
        cpuinfo = os.environ.get(CPUINFO_ENV, "").strip() or "/proc/cpuinfo"
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return set(value.split())
    return None


def missing_features(required: Sequence[str], flags: set[str] | None) -> list[str]:
    """Which of ``required`` the CPU lacks ([] when unknown: never refuse on a guess)."""
    if not required or flags is None:
        return []
    return [f for f in required if f not in flags]
