"""Default thread count: the CPUs this process may run on, never the host's core count."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from refract.threads import cgroup_cpu_limit, default_threads


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
