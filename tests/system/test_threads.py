"""Default thread count: the CPUs this process may run on, never the host's core count."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from refract.system.threads import (
    cgroup_cpu_limit,
    choose_wait_policy,
    default_threads,
    runnable_others,
)


def test_cgroup_v2_quota_rounds_up(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 2


def test_cgroup_v2_no_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("400000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path) == 4
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(tmp_path) is None


def test_garbage_is_no_limit(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("banana\n")
    assert cgroup_cpu_limit(tmp_path) is None
    assert cgroup_cpu_limit(tmp_path / "missing") is None


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux affinity API")
def test_default_follows_the_affinity_mask() -> None:
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(before)})
        assert default_threads() == 1
    finally:
        os.sched_setaffinity(0, before)
    assert 1 <= default_threads() <= len(before)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux affinity API")
def test_engine_default_threads_follow_the_mask(tiny_model: Path) -> None:
    from refract import Engine

    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(before)})
        with Engine(tiny_model) as eng:
            assert eng.n_threads == 1
    finally:
        os.sched_setaffinity(0, before)
    with Engine(tiny_model, n_threads=3) as eng:  # an explicit count is kept as given
        assert eng.n_threads == 3


def test_wait_policy_follows_the_load() -> None:
    assert choose_wait_policy(0, 2) is None  # quiet: the OpenMP runtime's default
    assert choose_wait_policy(1, 2) is None
    assert choose_wait_policy(2, 2) == "PASSIVE"  # every CPU already taken by others
    assert choose_wait_policy(5, 8) is None


def test_runnable_others_is_the_median_minus_this_thread(tmp_path: Path) -> None:
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("0.52 0.41 0.30 4/123 4567\n")
    assert runnable_others(samples=3, interval=0.0, loadavg=loadavg) == 3
    loadavg.write_text("0.00 0.00 0.00 1/80 4567\n")  # only the reader itself
    assert runnable_others(samples=1, interval=0.0, loadavg=loadavg) == 0
    loadavg.write_text("garbage\n")
    assert runnable_others(samples=1, interval=0.0, loadavg=loadavg) is None
    assert runnable_others(samples=1, interval=0.0, loadavg=tmp_path / "missing") is None


def _fresh_policy(env: dict[str, str], pre: str = "") -> str:
    code = (f"{pre}import os, refract.engine.facade; "
            "from refract.system.threads import wait_policy; "
            "print(os.environ.get('OMP_WAIT_POLICY', '-'), '|', wait_policy())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


def test_wait_policy_is_chosen_as_the_engine_loads() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    user = _fresh_policy({**env, "OMP_WAIT_POLICY": "ACTIVE"})
    assert user == "ACTIVE | ACTIVE (set by the user)"
    busy = "import refract.system.threads as T; T.runnable_others = lambda: 64; "
    value, chosen = _fresh_policy(env, busy).split(" | ")
    assert value == "PASSIVE" and chosen.startswith("PASSIVE (64 other runnable tasks")
    quiet = "import refract.system.threads as T; T.runnable_others = lambda: 0; "
    value, chosen = _fresh_policy(env, quiet).split(" | ")
    assert value == "-" and chosen.startswith("runtime default (0 other runnable tasks")
