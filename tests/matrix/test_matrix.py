"""`refract matrix` with the local executor: tiny models, crash isolation, resume, Ctrl-C,
and up-front input errors (exit 2, one line, before any model loads)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import needs_core, sigint_default
from matrixkit import (
    CANDIDATES,
    SETTINGS,
    broken_gguf,
    stable,
    status,
    tiny_models,
    write_matrix,
)
from refract.cli import app
from refract.report.frontier import frontier

runner = CliRunner()


def run(*args: str | os.PathLike[str]) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def reports(out: Path) -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REFRACT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("REFRACT_TEST_CRASH_MODEL", raising=False)
    monkeypatch.delenv("REFRACT_TEST_CRASH_ONCE", raising=False)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two tiny models × two candidates, default axes (one run shared by several tests)."""
    d = tmp_path_factory.mktemp("matrix")
    spec = write_matrix(d, tiny_models(d))
    result = run("matrix", spec, "--out-dir", d / "out")
    return {"dir": d, "spec": spec, "out": d / "out", "result": result}


# --------------------------------------------------------------------------- happy path


@needs_core
def test_matrix_writes_every_cell_and_leaderboards(first_run: dict[str, Any]) -> None:
    result, out = first_run["result"], first_run["out"]
    assert result.exit_code == 0, result.output
    got = reports(out)
    assert sorted(got) == [
        "tiny-a__ctk-q4_0_ctv-q4_0.json", "tiny-a__ctk-q8_0_ctv-q8_0.json",
        "tiny-b__ctk-q4_0_ctv-q4_0.json", "tiny-b__ctk-q8_0_ctv-q8_0.json",
    ]
    for name, report in got.items():
        assert (out / name).with_suffix(".html").read_text().lstrip().startswith("<!")
        model = "a.gguf" if name.startswith("tiny-a") else "b.gguf"
        assert Path(report["model"]).name == model
        stem = report["candidate"].replace("=", "-").replace(",", "_")
        assert name == f"tiny-{model[0]}__{stem}.json"
        assert report["reference"] == "ctk=f16,ctv=f16"
        assert report["axes"]["gtm"]["score"] is not None
        assert report["axes"]["kld"]["score"] is not None
        assert report["settings"]["chunks"] == SETTINGS["chunks"]
        matrix = report["extras"]["matrix"]
        assert matrix["model_name"] in ("Tiny A", "Tiny B")
        assert len(matrix["cell_fingerprint"]) == 24
    assert len({r["extras"]["matrix"]["cell_fingerprint"] for r in got.values()}) == 4
    board = (out / "LEADERBOARD.md").read_text()
    for cand in CANDIDATES:
        assert cand in board
    # rows name the model as the matrix does ([[models]] name), not by its file
    assert "| Tiny A |" in board and "| Tiny B |" in board
    assert "| a |" not in board and "| b |" not in board
    html = (out / "leaderboard.html").read_text()
    assert "<html" in html.lower() and "http://" not in html and "https://" not in html
    assert "<td>Tiny A</td>" in html and "<td>Tiny B</td>" in html
    # a memory/quality frontier per model, named as the matrix does, from llama.cpp's real
    # allocations (q4_0 and q8_0 blocks: 28.1 % and 53.1 % of f16's bytes per token)
    frontier_md = board.split("## Memory/quality frontier")[1]
    for name, stem in (("Tiny A", "tiny-a"), ("Tiny B", "tiny-b")):
        cells = {r["candidate"]: r for n, r in got.items() if n.startswith(stem)}
        points = [(c, r["environment"]["kv_bytes"][c]["per_token"], r["composite"])
                  for c, r in cells.items()]
        ref = next(iter(cells.values()))["environment"]["kv_bytes"]["ctk=f16,ctv=f16"]
        expected = frontier([*points, ("ctk=f16,ctv=f16", ref["per_token"], 100.0)])
        table = frontier_md.split(f"### {name}\n")[1].split("\n\n")[1]
        labels = [line.split(" | ")[0].lstrip("| ").removesuffix(" (reference)")
                  for line in table.splitlines()[2:]]
        assert labels == expected
        assert "| ctk=q4_0,ctv=q4_0 |" not in table or "| 28.1 % |" in table
        assert "| ctk=q8_0,ctv=q8_0 |" not in table or "| 53.1 % |" in table
    assert "### a" not in frontier_md and "<h3>Tiny A</h3>" in html
    assert [s["state"] for s in status(out)] == ["ok"] * 4
    # whole-matrix progress: cells done/total and an ETA, on stderr
    assert "[4/4]" in result.stderr and "ETA" in result.stderr
    assert not list(out.glob(".*.tmp"))


@needs_core
def test_matrix_one_load_per_model_matches_direct_scores(first_run: dict[str, Any]) -> None:
    """The matrix's cells carry the same numbers as scoring the model directly."""
    from refract.matrix import load_spec
    from refract.matrix.scoring import score_candidates

    spec = load_spec(first_run["spec"])
    got: dict[str, dict[str, Any]] = {}
    score_candidates(spec.models[1].path, spec.candidates, spec.options,
                     on_report=lambda c, r: got.__setitem__(c, r),
                     on_error=lambda c, e: pytest.fail(f"{c}: {e}"))
    for cand in CANDIDATES:
        stem = "tiny-b__" + cand.replace("=", "-").replace(",", "_")
        written = json.loads((first_run["out"] / f"{stem}.json").read_text())
        direct = json.loads(json.dumps(got[cand], default=str))
        for axis in ("gtm", "kld"):
            assert written["axes"][axis]["score"] == pytest.approx(direct["axes"][axis]["score"])
        assert written["composite"] == pytest.approx(direct["composite"])


# --------------------------------------------------------------------------- resume


@needs_core
def test_matrix_rerun_skips_done_cells_and_redoes_corrupt_ones(tmp_path: Path) -> None:
    spec = write_matrix(tmp_path, tiny_models(tmp_path))
    out = tmp_path / "out"
    result = run("matrix", spec, "--out-dir", out)
    assert result.exit_code == 0, result.output
    original = reports(out)
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")}
    result = run("matrix", spec, "--out-dir", out)
    assert result.exit_code == 0, result.output
    assert "4 already done" in result.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")} == before
    assert [s["state"] for s in status(out)] == ["skipped"] * 4

    # a partial (truncated) report and a report from other settings are both redone
    partial = out / "tiny-a__ctk-q8_0_ctv-q8_0.json"
    partial.write_bytes(partial.read_bytes()[:200])
    stale = out / "tiny-b__ctk-q4_0_ctv-q4_0.json"
    data = json.loads(stale.read_text())
    data["extras"]["matrix"]["cell_fingerprint"] = "0" * 24
    stale.write_text(json.dumps(data))
    result = run("matrix", spec, "--out-dir", out)
    assert result.exit_code == 0, result.output
    states = {(s["model"], s["candidate"]): s["state"] for s in status(out)}
    assert states == {
        ("Tiny A", "ctk=q8_0,ctv=q8_0"): "ok", ("Tiny A", "ctk=q4_0,ctv=q4_0"): "skipped",
        ("Tiny B", "ctk=q8_0,ctv=q8_0"): "skipped", ("Tiny B", "ctk=q4_0,ctv=q4_0"): "ok",
    }
    assert "unreadable" in result.stderr and "other settings" in result.stderr
    redone = reports(out)
    for name in (partial.name, stale.name):
        assert stable(redone[name])["axes"] == stable(original[name])["axes"]

    # other settings: the cell is redone
    write_matrix(tmp_path, tiny_models(tmp_path), settings={**SETTINGS, "chunks": 3},
                 candidates=CANDIDATES[:1])
    result = run("matrix", spec, "--out-dir", out)
    assert result.exit_code == 0, result.output
    assert [s["state"] for s in status(out)] == ["ok", "ok"]
    assert json.loads(partial.read_text())["settings"]["chunks"] == 3


# --------------------------------------------------------------------------- crash isolation


@needs_core
def test_matrix_segfault_fails_only_that_models_cells(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tiny_models(tmp_path)
    spec = write_matrix(tmp_path, models, candidates=CANDIDATES[:1])
    monkeypatch.setenv("REFRACT_TEST_CRASH_MODEL", "Tiny A")  # test-only hook: SIGSEGV
    result = run("matrix", spec, "--out-dir", tmp_path / "out")
    assert result.exit_code == 1, result.output
    rows = {s["model"]: s for s in status(tmp_path / "out")}
    assert rows["Tiny A"]["state"] == "failed"
    assert "SIGSEGV" in rows["Tiny A"]["message"]
    assert rows["Tiny B"]["state"] == "ok"
    assert list(reports(tmp_path / "out")) == ["tiny-b__ctk-q8_0_ctv-q8_0.json"]
    board = (tmp_path / "out" / "LEADERBOARD.md").read_text()
    assert "| Tiny B |" in board and "| Tiny A |" not in board
    assert "failed: Tiny A" in result.stderr
    assert "Traceback" not in result.output


@needs_core
def test_matrix_unloadable_model_fails_its_cells_with_stderr_tail(tmp_path: Path) -> None:
    models = tiny_models(tmp_path)
    broken_gguf(tmp_path / "broken.gguf")
    spec = write_matrix(tmp_path, [("Broken", "broken.gguf"), models[1]],
                        candidates=CANDIDATES[:1])
    result = run("matrix", spec, "--out-dir", tmp_path / "out")
    assert result.exit_code == 1, result.output
    rows = {s["model"]: s for s in status(tmp_path / "out")}
    assert rows["Broken"]["state"] == "failed" and rows["Broken"]["message"]
    assert rows["Tiny B"]["state"] == "ok"
    assert (tmp_path / "out" / "tiny-b__ctk-q8_0_ctv-q8_0.json").exists()


# --------------------------------------------------------------------------- Ctrl-C


@needs_core
def test_matrix_ctrl_c_exits_130_and_rerun_continues(tmp_path: Path) -> None:
    models = tiny_models(tmp_path)
    for name, seed in (("c.gguf", 7), ("d.gguf", 9)):
        from tinymodel import write_tiny_model

        write_tiny_model(tmp_path / name, seed=seed)
    models += [("Tiny C", "c.gguf"), ("Tiny D", "d.gguf")]
    spec = write_matrix(tmp_path, models)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "refract", "matrix", str(spec), "--out-dir", str(out)],
        stderr=subprocess.PIPE, text=True, env=env, preexec_fn=sigint_default,
    )
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if ": done in" in line:  # the first cell is written
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stderr.read()
    rc = proc.wait(timeout=60)
    assert rc == 130, "".join(lines) + rest
    assert "interrupted" in rest
    done = sorted(out.glob("*.json"))
    assert 1 <= len(done) < 8, "the run finished before the interrupt: make it longer"
    for p in done:
        json.loads(p.read_text())  # every file there is whole
    assert not list(out.glob(".*.tmp"))
    states = [s["state"] for s in status(out)]  # the status says where it stopped
    assert states.count("ok") == len(done) and states.count("interrupted") == 8 - len(done)
    result = run("matrix", spec, "--out-dir", out)
    assert result.exit_code == 0, result.output
    states = [s["state"] for s in status(out)]
    assert states.count("skipped") == len(done) and states.count("ok") == 8 - len(done)


# --------------------------------------------------------------------------- bad input


def _bad_input_cases(d: Path) -> dict[str, tuple[Path, list[str]]]:
    models = tiny_models(d)
    (d / "notgguf.gguf").write_bytes(b"PK\x03\x04 not a model")
    (d / "afile").write_text("x")
    cases: dict[str, tuple[dict[str, Any], list[str], str | None]] = {
        "missing model": ({"models": [("X", "nope.gguf")]}, ["models[0]", "nope.gguf"], None),
        "not gguf": ({"models": [("X", "notgguf.gguf")]}, ["not a GGUF file"], None),
        "unknown kv type": ({"candidates": ["ctk=q9_9,ctv=q8_0"]}, ["q9_9"], None),
        "duplicate model": ({"models": [models[0], ("Again", "a.gguf")]},
                            ["duplicate model"], None),
        "duplicate candidate": ({"candidates": ["ctk=q8_0,ctv=q8_0", "ctv=q8_0,ctk=q8_0"]},
                                ["duplicate candidate"], None),
        "unknown setting": ({"settings": {**SETTINGS, "chunkz": 3}}, ["chunkz"], None),
        "bad setting value": ({"settings": {**SETTINGS, "chunks": 0}}, ["chunks"], None),
        "bad setting type": ({"settings": {**SETTINGS, "full": "yes"}}, ["full"], None),
        "missing corpus": ({"settings": {**SETTINGS, "corpus": "gone.txt"}}, ["gone.txt"], None),
        "unwritable out dir": ({}, ["--out-dir"], "afile"),
    }
    out: dict[str, tuple[Path, list[str]]] = {}
    for name, (kw, needles, out_dir) in cases.items():
        sub = d / name.replace(" ", "_")
        sub.mkdir()
        for f in ("a.gguf", "b.gguf", "notgguf.gguf", "afile"):
            (sub / f).symlink_to(d / f)
        spec = write_matrix(sub, kw.get("models", models), candidates=kw.get("candidates"),
                            settings=kw.get("settings"))
        out[name] = (spec, needles if out_dir is None else needles + [out_dir])
    return out


@needs_core
def test_matrix_bad_input_is_one_line_exit_2_before_any_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a worker started before the input was validated")

    monkeypatch.setattr("refract.matrix.local.LocalExecutor.run", refuse)
    for name, (spec, needles) in _bad_input_cases(tmp_path).items():
        out = spec.parent / ("afile" if "unwritable" in name else "out")
        result = run("matrix", spec, "--out-dir", out)
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert result.exit_code == 2, (name, result.output)
        assert len(lines) == 1, (name, result.stderr)
        for needle in needles:
            assert needle in lines[0], (name, needle, lines[0])
        assert "Traceback" not in result.output
        assert not (spec.parent / "out" / "matrix-status.jsonl").exists(), name


def test_matrix_file_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("candidates = [\n")
    for path, needle in ((tmp_path / "none.toml", "not found"),
                         (tmp_path / "bad.toml", "not valid TOML")):
        result = run("matrix", path, "--out-dir", tmp_path / "out")
        assert result.exit_code == 2, result.output
        assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1
    (tmp_path / "empty.toml").write_text('candidates = ["ctk=q8_0,ctv=q8_0"]\n')
    result = run("matrix", tmp_path / "empty.toml", "--out-dir", tmp_path / "out")
    assert result.exit_code == 2 and "no models" in result.stderr
    (tmp_path / "typo.toml").write_text('candidate = ["ctk=q8_0,ctv=q8_0"]\n')
    result = run("matrix", tmp_path / "typo.toml", "--out-dir", tmp_path / "out")
    assert result.exit_code == 2 and "'candidate'" in result.stderr


def test_matrix_demo_model_path(
    demo_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``path = "demo"`` names the demo model and is scored as ``--model demo``."""
    from refract.matrix import load_spec

    monkeypatch.setenv("REFRACT_CACHE_DIR", str(demo_model.parent.parent))  # the cached copy
    spec = load_spec(write_matrix(tmp_path, [("Demo", "demo")]))
    [entry] = spec.models
    assert entry.demo and entry.path == demo_model.resolve() and entry.arg == "demo"


def test_matrix_ray_executor_without_ray(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the ray extra were not installed
    spec = write_matrix(tmp_path, tiny_models(tmp_path))
    result = run("matrix", spec, "--out-dir", tmp_path / "out", "--executor", "ray")
    assert result.exit_code == 2, result.output
    assert "pip install 'refract[ray]'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
