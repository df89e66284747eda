"""Scores with the persistent reference store (issue 24): a later run on the same inputs
reuses the reference's noise floor, R-NIAH answers and PLAD decodes and its numbers equal a
fresh run's exactly; any key difference or a damaged entry means computing again;
``--no-reference-cache`` neither reads nor writes; two processes share one store; ``refract
cache`` lists and clears it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import needs_core, one_line_error
from refract.cli import app
from refract.report.io import measured_content

FAMILIES = ["gtm-noise-floor", "rniah", "plad"]


def _store(report: dict[str, Any]) -> dict[str, Any]:
    return dict(report["extras"]["reference_store"])


@pytest.fixture
def store_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "store"
    monkeypatch.setenv("REFRACT_REFERENCE_CACHE_DIR", str(d))
    return d


def _opts(files: dict[str, Path], **more: Any) -> dict[str, Any]:
    return {"prompts": str(files["prompts"]), "corpus": str(files["corpus"]), "chunks": 2,
            "ctx": 256, "n_predict": 8, "threads": 1, "full": True,
            "rniah_haystack": str(files["corpus"]), "rniah_lengths": (1024,),
            "rniah_positions": (0.5,), "rniah_n_predict": 8, **more}


@needs_core
def test_reused_reference_equals_a_fresh_run(files: dict[str, Path], tiny_model: Path,
                                             store_dir: Path) -> None:
    from refract.scoring import run_score

    cand = "ctk=q4_0,ctv=q4_0"
    fresh = run_score(tiny_model, cand, **_opts(files, reference_cache=False))
    assert _store(fresh) == {"enabled": False, "reused": [], "stored": [], "events": []}
    assert not store_dir.exists()  # --no-reference-cache writes nothing
    first = run_score(tiny_model, cand, **_opts(files))
    assert _store(first)["stored"] == FAMILIES and _store(first)["reused"] == []
    assert len(list(store_dir.glob("*.npz"))) == 3
    second = run_score(tiny_model, cand, **_opts(files))
    info = _store(second)
    assert info["reused"] == FAMILIES and info["stored"] == []
    assert any("reused from the reference store" in n for n in second["notes"])
    assert second["timings"]["gtm_noise_floor_s"] < first["timings"]["gtm_noise_floor_s"]
    assert measured_content(fresh) == measured_content(first) == measured_content(second)
    assert second["axes"]["gtm"]["noise_floor"]["n_prompts"] == 2
    # another candidate on the same reference reuses it too
    other = run_score(tiny_model, "ctk=q8_0,ctv=q8_0", **_opts(files))
    assert _store(other)["reused"] == FAMILIES
    assert measured_content(other) == measured_content(
        run_score(tiny_model, "ctk=q8_0,ctv=q8_0", **_opts(files, reference_cache=False)))


@needs_core
def test_any_key_difference_means_no_reuse(files: dict[str, Path], tiny_model: Path,
                                           store_dir: Path) -> None:
    from refract.scoring import run_score

    cand = "ctk=q8_0,ctv=q8_0"
    base = _opts(files, full=False, axis_plad=True)
    assert _store(run_score(tiny_model, cand, **base))["stored"] == ["gtm-noise-floor", "plad"]
    for change in ({"n_predict": 6}, {"threads": 2}, {"reference": "ctk=f16,ctv=q8_0"},
                   {"chat_template": True}):
        info = _store(run_score(tiny_model, cand, **{**base, **change}))
        assert info["reused"] == [] or change == {"chat_template": True}, (change, info)
        if change == {"chat_template": True}:  # PLAD always renders through the template
            assert info["reused"] == ["plad"] and info["stored"] == ["gtm-noise-floor"]
    assert _store(run_score(tiny_model, cand, **base))["reused"] == ["gtm-noise-floor", "plad"]


@needs_core
def test_damaged_entry_is_computed_again(files: dict[str, Path], tiny_model: Path,
                                         store_dir: Path) -> None:
    from refract.scoring import run_score

    opts = _opts(files, full=False)
    first = run_score(tiny_model, "ctk=q4_0,ctv=q4_0", **opts)
    [entry] = list(store_dir.glob("*.npz"))
    entry.write_bytes(entry.read_bytes()[:-40])  # truncated, as by a crash or a full disk
    again = run_score(tiny_model, "ctk=q4_0,ctv=q4_0", **opts)
    [event] = _store(again)["events"]
    assert event["outcome"] == "stored" and "unreadable" in event["recomputed_because"]
    assert measured_content(again) == measured_content(first)
    assert _store(run_score(tiny_model, "ctk=q4_0,ctv=q4_0", **opts))["reused"] == [
        "gtm-noise-floor"]


@needs_core
def test_floor_is_not_reused_beside_other_trajectories(files: dict[str, Path],
                                                       tiny_model: Path, store_dir: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A floor is stored with the digest of the trajectories it was decoded beside; a run
    whose reference decodes other trajectories (as on another CPU kind that slipped past the
    key) computes it again."""
    from refract.engine import store
    from refract.scoring import run_score

    opts = _opts(files, full=False)
    run_score(tiny_model, "ctk=q4_0,ctv=q4_0", **opts)
    real = store.value_digest
    monkeypatch.setattr(store, "value_digest", lambda v: "other-" + real(v))
    info = _store(run_score(tiny_model, "ctk=q4_0,ctv=q4_0", **opts))
    assert info["reused"] == [] and "other reference trajectories" in (
        info["events"][0]["recomputed_because"])


def _cli(*args: Any) -> list[str]:
    return [sys.executable, "-m", "refract", *[str(a) for a in args]]


@needs_core
def test_two_processes_score_on_one_store(files: dict[str, Path], tiny_model: Path,
                                          tmp_path: Path) -> None:
    store = tmp_path / "store"
    env = {**os.environ, "REFRACT_REFERENCE_CACHE_DIR": str(store)}
    common = ["score", "-m", tiny_model, "-c", "ctk=q4_0,ctv=q4_0", "--prompts",
              files["prompts"], "--corpus", files["corpus"], "--chunks", "2", "--ctx", "256",
              "--n-predict", "8", "--threads", "1", "--axis-plad", "--no-progress"]
    procs = [subprocess.Popen(_cli(*common, "--json-out", tmp_path / f"r{i}.json"), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    reports = [json.loads((tmp_path / f"r{i}.json").read_text()) for i in range(2)]
    assert measured_content(reports[0]) == measured_content(reports[1])
    third = tmp_path / "r2.json"
    subprocess.run(_cli(*common, "--json-out", third), env=env, check=True,
                   capture_output=True)
    rep = json.loads(third.read_text())
    assert _store(rep)["reused"] == ["gtm-noise-floor", "plad"]
    assert measured_content(rep) == measured_content(reports[0])

    listed = subprocess.run(_cli("cache"), env=env, check=True, capture_output=True,
                            text=True).stdout
    assert str(store) in listed and "2 entries" in listed and "PLAD" in listed
    cleared = subprocess.run(_cli("cache", "clear"), env=env, check=True, capture_output=True,
                             text=True).stdout
    assert "removed 2 reference entries" in cleared and not list(store.glob("*.npz"))


def test_cache_command_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFRACT_REFERENCE_CACHE_DIR", str(tmp_path / "s"))
    r = CliRunner().invoke(app, ["cache", "drop"])
    assert r.exit_code == 2 and "unknown action 'drop'" in r.stderr
    r = CliRunner().invoke(app, ["cache"])
    assert r.exit_code == 0 and "0 entries" in r.stdout
    monkeypatch.setenv("REFRACT_REFERENCE_CACHE_MAX_MB", "lots")
    r = CliRunner().invoke(app, ["cache"])
    assert r.exit_code == 2 and "REFRACT_REFERENCE_CACHE_MAX_MB" in r.stderr
    assert len([x for x in r.stderr.splitlines() if x.strip()]) == 1


def test_bad_store_setting_is_refused_before_the_model_loads(
        files: dict[str, Path], tiny_model: Path, monkeypatch: pytest.MonkeyPatch,
        no_model_load: None) -> None:
    monkeypatch.setenv("REFRACT_REFERENCE_CACHE_MAX_MB", "-3")
    r = CliRunner().invoke(app, ["score", "-m", str(tiny_model), "-c", "ctk=q8_0,ctv=q8_0",
                                 "--prompts", str(files["prompts"]), "--corpus",
                                 str(files["corpus"])])
    one_line_error(r, 2, "REFRACT_REFERENCE_CACHE_MAX_MB")
    # switched off, the store's settings are not read
    from refract.scoring import prepare_score

    prepare_score(tiny_model, ["ctk=q8_0,ctv=q8_0"], prompts=str(files["prompts"]),
                  corpus=str(files["corpus"]), reference_cache=False)


#: the golden runs' budget on the demo model (tests/golden/runs.py), all four axes
DEMO = {"ctx": 128, "chunks": 2, "n_predict": 16, "full": True, "rniah_lengths": (512,),
        "rniah_positions": (0.5,), "rniah_n_predict": 16, "corpus": "bundled",
        "rniah_haystack": "bundled"}


def test_demo_model_reused_reference_equals_fresh(demo_model: Path, store_dir: Path,
                                                  tmp_path: Path) -> None:
    """On the real model: the second score reuses all three reference families and measures
    exactly what a fresh score measures (every sixth bundled prompt: PLAD's decodes dominate
    the time)."""
    import refract.prompts
    from refract.scoring import run_score

    bundled = Path(refract.prompts.__file__).with_name("refract-prompts-v1.jsonl")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(bundled.read_text().splitlines(keepends=True)[::6]))
    opts = {**DEMO, "prompts": str(prompts)}
    fresh = run_score(demo_model, "ctk=q8_0,ctv=q8_0", **opts, reference_cache=False)
    run_score(demo_model, "ctk=q8_0,ctv=q8_0", **opts)
    again = run_score(demo_model, "ctk=q8_0,ctv=q8_0", **opts)
    assert _store(again)["reused"] == FAMILIES
    assert measured_content(again) == measured_content(fresh)
    assert again["axes"]["plad"]["status"] == "ok" and again["axes"]["rniah"]["status"] in (
        "ok", "unscored")
