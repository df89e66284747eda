"""`refract matrix --executor ray` on a local Ray cluster the tests start (2 CPUs).

Select with ``-m ray`` (or deselect with ``-m 'not ray'``); needs the ``ray`` extra.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import needs_core
from matrixkit import CANDIDATES, stable, status, tiny_models, write_matrix

ray = pytest.importorskip("ray", reason="the ray extra is not installed")

pytestmark = [pytest.mark.ray, needs_core]


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REFRACT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("REFRACT_TEST_CRASH_MODEL", raising=False)
    monkeypatch.delenv("REFRACT_TEST_CRASH_ONCE", raising=False)


def run_matrix(spec_path: Path, out: Path, executor: str, **ray_options: Any) -> Any:
    from refract.matrix import LocalExecutor, check_out_dir, load_spec, run_matrix
    from refract.matrix.ray import RayExecutor

    spec = load_spec(spec_path)
    runner = RayExecutor(**ray_options) if executor == "ray" else LocalExecutor()
    return run_matrix(spec, check_out_dir(out), runner)


def reports(out: Path) -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}


def test_ray_reports_equal_local_reports(cluster: None, tmp_path: Path) -> None:
    spec = write_matrix(tmp_path, tiny_models(tmp_path))
    local = run_matrix(spec, tmp_path / "local", "local")
    remote = run_matrix(spec, tmp_path / "ray", "ray", num_cpus=1)
    assert local.count("ok") == remote.count("ok") == 4
    a, b = reports(tmp_path / "local"), reports(tmp_path / "ray")
    assert sorted(a) == sorted(b) and len(a) == 4
    for name in a:
        assert stable(a[name]) == stable(b[name]), name
        assert a[name]["axes"]["kld"]["score"] is not None
    assert (tmp_path / "ray" / "LEADERBOARD.md").exists()
    assert (tmp_path / "ray" / "leaderboard.html").exists()


def test_ray_retries_a_worker_killed_mid_task(
    cluster: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tiny_models(tmp_path)
    spec = write_matrix(tmp_path, models[:1], candidates=CANDIDATES[:1])
    marker = tmp_path / "killed-once"
    monkeypatch.setenv("REFRACT_TEST_CRASH_ONCE", str(marker))  # test-only: SIGKILL once
    result = run_matrix(spec, tmp_path / "out", "ray", max_retries=1)
    assert result.count("ok") == 1 and not result.failed
    assert marker.exists()  # a worker was killed ...
    assert [s["state"] for s in status(tmp_path / "out")] == ["ok"]  # ... and Ray retried it


def test_ray_crashing_model_fails_only_its_cells(
    cluster: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tiny_models(tmp_path)
    spec = write_matrix(tmp_path, models, candidates=CANDIDATES[:1])
    monkeypatch.setenv("REFRACT_TEST_CRASH_MODEL", "Tiny A")  # test-only: SIGSEGV
    result = run_matrix(spec, tmp_path / "out", "ray", max_retries=0)
    rows = {s["model"]: s for s in status(tmp_path / "out")}
    assert rows["Tiny A"]["state"] == "failed" and "Ray task failed" in rows["Tiny A"]["message"]
    assert rows["Tiny B"]["state"] == "ok"
    assert [o.cell.model.name for o in result.failed] == ["Tiny A"]
    assert list(reports(tmp_path / "out")) == ["tiny-b__ctk-q8_0_ctv-q8_0.json"]


def test_ray_model_unreadable_on_worker(cluster: None, tmp_path: Path) -> None:
    """The driver saw the file; the worker cannot read it (no shared storage)."""
    models = tiny_models(tmp_path)
    spec = write_matrix(tmp_path, models, candidates=CANDIDATES[:1])
    from refract.matrix import check_out_dir, load_spec, run_matrix
    from refract.matrix.ray import RayExecutor

    loaded = load_spec(spec)
    (tmp_path / "a.gguf").unlink()  # gone after the up-front check, as on a worker without it
    result = run_matrix(loaded, check_out_dir(tmp_path / "out"), RayExecutor(max_retries=0))
    rows = {s["model"]: s for s in status(tmp_path / "out")}
    assert rows["Tiny A"]["state"] == "failed"
    assert "on worker host" in rows["Tiny A"]["message"]
    assert "a.gguf" in rows["Tiny A"]["message"]
    assert rows["Tiny B"]["state"] == "ok"
    assert result.count("ok") == 1


def test_ray_from_the_command_line(cluster: None, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from refract.cli import app

    models = tiny_models(tmp_path)
    spec = write_matrix(tmp_path, models[:1], candidates=CANDIDATES[:1])
    result = CliRunner().invoke(app, ["matrix", str(spec), "--out-dir", str(tmp_path / "out"),
                                      "--executor", "ray", "--ray-num-cpus", "1"])
    assert result.exit_code == 0, result.output
    assert "Tiny A: submitted (1 cell)" in result.stderr
    assert "[1/1] Tiny A · ctk=q8_0,ctv=q8_0: done" in result.stderr
    assert (tmp_path / "out" / "tiny-a__ctk-q8_0_ctv-q8_0.json").exists()


def test_ray_runs_a_models_sweep_as_local_does(cluster: None, tmp_path: Path) -> None:
    """A matrix sweep (issue 23) is one Ray task per model, with the local executor's result."""
    extra = '[sweep]\ntypes = "q8_0,q4_0"\npairs = "q8_0/q4_0"\n'
    spec = write_matrix(tmp_path, tiny_models(tmp_path)[:1], extra=extra)
    local = run_matrix(spec, tmp_path / "local", "local")
    remote = run_matrix(spec, tmp_path / "ray", "ray", num_cpus=1)
    # the tiny model's two prompts let the first round drop what is certainly below PASS
    assert [local.count(k) for k in ("ok", "pruned")] == \
        [remote.count(k) for k in ("ok", "pruned")]
    assert local.count("ok") + local.count("pruned") == 3 and not remote.failed
    a = json.loads((tmp_path / "local" / "tiny-a.sweep.json").read_text())
    b = json.loads((tmp_path / "ray" / "tiny-a.sweep.json").read_text())
    keys = ("config", "status", "composite", "ci95", "kv", "frontier")
    assert [{k: e[k] for k in keys} for e in a["configs"]] == \
        [{k: e[k] for k in keys} for e in b["configs"]]
    assert a["recommendation"] == b["recommendation"]
    for name, report in reports(tmp_path / "ray").items():
        if "sweep" not in name:
            assert stable(report) == stable(reports(tmp_path / "local")[name]), name
