"""Memory checked before it is spent: what the machine has, and a one-line error when a plan
needs more.

``available_bytes()`` is the smallest of: the ``REFRACT_MEMORY_LIMIT`` environment variable
(``"2G"``, ``"512M"``, ``"1.5GiB"``, plain bytes), the cgroup's memory limit minus what the
cgroup already uses (containers, CI), and ``MemAvailable`` from ``/proc/meminfo``. The engine
estimates what each context would allocate (``Engine.estimate_context_bytes``) and
``check_fits`` turns a plan that does not fit into a one-line :class:`MemoryBudgetError`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from refract.errors import MemoryBudgetError, UsageError

__all__ = [
    "ENV_LIMIT",
    "MemoryBudgetError",
    "available_bytes",
    "check_fits",
    "format_bytes",
    "parse_bytes",
]

#: Environment variable that caps the memory refract may plan to use.
ENV_LIMIT = "REFRACT_MEMORY_LIMIT"

_UNITS = {
    "": 1,
    "B": 1,
    "K": 1 << 10,
    "KB": 1 << 10,
    "KIB": 1 << 10,
    "M": 1 << 20,
    "MB": 1 << 20,
    "MIB": 1 << 20,
    "G": 1 << 30,
    "GB": 1 << 30,
    "GIB": 1 << 30,
    "T": 1 << 40,
    "TB": 1 << 40,
    "TIB": 1 << 40,
}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?)\s*([A-Za-z]*)\s*$")


def parse_bytes(text: str) -> int:
    """``"2G"`` → 2147483648. Binary units (K, M, G, T = powers of 1024); ``B``/``iB`` optional."""
    m = _SIZE_RE.match(text)
    unit = m.group(2).upper() if m else ""
    if m is None or unit not in _UNITS:
        raise UsageError(
            f"cannot read {text!r} as a memory size (examples: 2G, 512M, 1.5GiB, 1048576)"
        )
    value = float(m.group(1)) * _UNITS[unit]
    if value < 1:
        raise UsageError(f"memory size {text!r} must be at least one byte")
    return int(value)


def format_bytes(n: int | float) -> str:
    """Human-readable binary size: ``format_bytes(3 * 2**30)`` → ``'3.00 GiB'``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _meminfo_available(path: Path = Path("/proc/meminfo")) -> int | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    m = re.search(r"^MemAvailable:\s+(\d+)\s*kB", text, re.MULTILINE)
    return int(m.group(1)) * 1024 if m else None


#: where cgroup v2 (and, one level down, v1) controllers are mounted; threads.py reads it too
CGROUP_ROOT = Path("/sys/fs/cgroup")


def read_int(path: Path) -> int | None:
    """The integer in a one-value kernel file (cgroup, sysfs); None when it is missing, empty,
    ``max`` or not an integer."""
    try:
        raw = path.read_text().strip()
    except OSError:
        return None
    if not raw or raw == "max":
        return None
    try:
        return int(raw)
    except ValueError:
        return None


def _cgroup_available(root: Path = CGROUP_ROOT) -> int | None:
    """Room left under the cgroup's memory limit (v2, else v1), None when unlimited."""
    for limit_file, usage_file in (
        ("memory.max", "memory.current"),
        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"),
    ):
        limit = read_int(root / limit_file)
        if limit is None or limit >= 1 << 60:  # v1 reports "no limit" as a huge number
            continue
        usage = read_int(root / usage_file) or 0
        return max(limit - usage, 0)
    return None


def available_bytes() -> int | None:
    """Bytes refract may plan to allocate now, or None when nothing can be determined."""
    candidates: list[int] = []
    env = os.environ.get(ENV_LIMIT, "").strip()
    if env:
        try:
            candidates.append(parse_bytes(env))
        except ValueError as err:
            raise UsageError(f"{ENV_LIMIT}: {err}") from None
    for value in (_cgroup_available(), _meminfo_available()):
        if value is not None:
            candidates.append(value)
    return min(candidates) if candidates else None


def check_fits(needed_bytes: int, what: str, *, available: int | None = None) -> None:
    """Raise :class:`MemoryBudgetError` when ``needed_bytes`` exceed what is available.

    ``what`` names the plan in the message (e.g. ``"KLD with 3 candidates at ctx 4096"``);
    ``available`` defaults to :func:`available_bytes` (no check when that is unknown).
    """
    if needed_bytes < 0:
        raise UsageError(f"needed_bytes must be >= 0, got {needed_bytes}")
    room = available_bytes() if available is None else available
    if room is None or needed_bytes <= room:
        return
    env = os.environ.get(ENV_LIMIT, "").strip()
    source = f" (the {ENV_LIMIT} limit)" if env and parse_bytes(env) == room else ""
    raise MemoryBudgetError(
        f"{what} needs about {format_bytes(needed_bytes)} but only {format_bytes(room)} is "
        f"available{source}; use a smaller context, fewer chunks or prompts, or fewer candidates "
        "at once",
        needed=needed_bytes,
        available=room,
    )
