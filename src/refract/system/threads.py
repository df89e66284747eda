"""How many threads a score uses by default, and how they wait.

``default_threads()`` is the number of CPUs this process may actually run on: its CPU
affinity mask (``taskset``, Slurm, Kubernetes cpusets), capped by the cgroup's CPU quota
(``cpu.max`` on cgroup v2, ``cpu.cfs_quota_us`` on v1), never the host's core count: on a
container given 2 CPUs of a 64-core host, 64 threads would oversubscribe those 2 CPUs and
every barrier in llama.cpp's graph would wait for descheduled threads.
``benchmarks/bench_threads.py`` measures the choice (quiet and busy machine).

``apply_wait_policy()`` picks how idle OpenMP threads wait, just before the extension (and with
it the OpenMP runtime, which reads ``OMP_WAIT_POLICY`` once) loads. Measured on the 2-core
machine (``benchmarks/bench_threads.py``, benchmarks/RESULTS.md "Threads"): on a quiet machine
the runtime's default (spin a while, then sleep) decodes one row per step 1.7-1.9x faster than
``PASSIVE`` (llama.cpp hands work to its threads many times per token) and is otherwise level;
with other jobs on every CPU, spinning threads take the CPU from the threads that have work
and ``PASSIVE`` is 1.5x faster. So: the user's setting if any; else ``PASSIVE`` when, at
start, at least as many other tasks are runnable as the machine has CPUs
(``/proc/loadavg``'s instantaneous count, sampled a few times; the 1-minute average would
count a run that just ended); else the runtime's default. ``wait_policy()`` says what was
chosen and why (the report's environment).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from refract.system.memory import CGROUP_ROOT, read_int

__all__ = [
    "apply_wait_policy",
    "cgroup_cpu_limit",
    "choose_wait_policy",
    "default_threads",
    "runnable_others",
    "wait_policy",
]

def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> int | None:
    """CPUs the cgroup's quota allows (rounded up), or None when there is no quota."""
    try:  # v2: "<quota> <period>", quota "max" when unlimited
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max" and int(period) > 0:
            return max(1, math.ceil(int(quota) / int(period)))
        return None
    except (OSError, ValueError):
        pass
    q = read_int(root / "cpu" / "cpu.cfs_quota_us")  # v1: quota -1 when unlimited
    p = read_int(root / "cpu" / "cpu.cfs_period_us")
    if q is not None and p is not None and q > 0 and p > 0:
        return max(1, math.ceil(q / p))
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


def runnable_others(samples: int = 5, interval: float = 0.01,
                    loadavg: Path = Path("/proc/loadavg")) -> int | None:
    """Other tasks runnable right now, machine-wide (median of a few samples of
    ``/proc/loadavg``'s running count, minus this thread), or None where unknown."""
    counts: list[int] = []
    for k in range(samples):
        try:
            field = loadavg.read_text().split()[3]
            counts.append(int(field.split("/")[0]))
        except (OSError, IndexError, ValueError):
            return None
        if k + 1 < samples:
            time.sleep(interval)
    counts.sort()
    return max(0, counts[len(counts) // 2] - 1)


def choose_wait_policy(others: int, cpus: int) -> str | None:
    """``PASSIVE`` when other runnable tasks already fill every CPU, else None (the OpenMP
    runtime's default)."""
    return "PASSIVE" if others >= cpus else None


#: what apply_wait_policy found or chose, once per process (for the report)
_CHOSEN: str | None = None


def apply_wait_policy() -> None:
    """Set ``OMP_WAIT_POLICY`` (unless the user did); call before the extension loads."""
    global _CHOSEN
    if _CHOSEN is not None:
        return
    user = os.environ.get("OMP_WAIT_POLICY")
    if user is not None:
        _CHOSEN = f"{user} (set by the user)"
        return
    others = runnable_others()
    cpus = os.cpu_count() or 1
    if others is None:
        _CHOSEN = "runtime default (machine load unknown)"
        return
    policy = choose_wait_policy(others, cpus)
    if policy:
        os.environ["OMP_WAIT_POLICY"] = policy
    _CHOSEN = (f"{policy or 'runtime default'} ({others} other runnable tasks on {cpus} CPUs "
               "at start)")


def wait_policy() -> str:
    """The OpenMP wait policy in effect, as apply_wait_policy found or chose it."""
    if _CHOSEN is not None:
        return _CHOSEN
    user = os.environ.get("OMP_WAIT_POLICY")
    return f"{user} (set by the user)" if user else "runtime default"
