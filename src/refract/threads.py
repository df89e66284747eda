"""How many threads a score uses by default, and how they wait.

``default_threads()`` is the number of CPUs this process may actually run on: its CPU
affinity mask (``taskset``, Slurm, Kubernetes cpusets), capped by the cgroup's CPU quota
(``cpu.max`` on cgroup v2, ``cpu.cfs_quota_us`` on v1), never the host's core count: on a
container given 2 CPUs of a 64-core host, 64 threads would oversubscribe those 2 CPUs and
every barrier in llama.cpp's graph would wait for descheduled threads.
``benchmarks/bench_threads.py`` measures the choice (quiet and busy machine).

``apply_wait_policy()`` sets ``OMP_WAIT_POLICY=PASSIVE`` unless the user set it, before the
extension (and with it the OpenMP runtime) loads: idle OpenMP threads then sleep instead of
spinning, which costs nothing measurable on a quiet machine and gives the CPU back to the
threads doing work on a busy one (same benchmark).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["apply_wait_policy", "cgroup_cpu_limit", "default_threads"]

_CGROUP = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(root: Path = _CGROUP) -> int | None:
    """CPUs the cgroup's quota allows (rounded up), or None when there is no quota."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max" and int(period) > 0:
            return max(1, math.ceil(int(quota) / int(period)))
        return None
    except (OSError, ValueError):
        pass
    try:
        q = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        p = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        if q > 0 and p > 0:
            return max(1, math.ceil(q / p))
    except (OSError, ValueError):
        pass
    return None


def default_threads() -> int:
    """The CPUs this process may run on: affinity mask, capped by the cgroup quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        n = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        n = min(n, limit)
    return max(1, n)


def apply_wait_policy() -> None:
    """``OMP_WAIT_POLICY=PASSIVE`` unless set; call before the extension loads."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
