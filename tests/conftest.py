"""Shared fixtures: tiny synthesized GGUF models, the demo model, ../shared/data, the inputs of
CLI runs, an offline corpus cache, a local HTTP server, and the one-line CLI error check.

Two CI rules live here (CI=true, as .ci/run sets it):

- a test that would be *skipped* for lack of ../shared/data, of the native engine or of the
  demo model *fails* instead: on CI those are always there, so a skip means a broken setup
  (on a user's clone without ../shared the same tests skip);
- every test that needs the native engine is marked ``engine`` automatically (it uses an
  engine fixture, is marked ``needs_core``, or its module imports ``refract._core`` or
  ``refract.Engine``), and those using the demo model also ``demo``: CI's upstream-flavour
  job (.ci/upstream.sh) runs ``pytest -m "engine and not demo"`` against the registry's
  llama.cpp, so a new engine test is included there without editing a list.
"""

from __future__ import annotations

import atexit
import functools
import http.server
import io
import os
import shutil
import signal
import sys
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# CI and developer machines are shared: idle OpenMP threads should sleep, not spin (spinning
# threads on an oversubscribed 2-core machine slow decoding ~10x). Numerics do not change.
# Must be set before the extension (and its OpenMP runtime) is loaded.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# The persistent reference store: one of the session's own, empty at its start (never the
# user's, which a test would fill or read; subprocess runs inherit it). A test that needs a
# store of its own sets REFRACT_REFERENCE_CACHE_DIR itself.
_STORE = tempfile.mkdtemp(prefix="refract-test-store-")
os.environ["REFRACT_REFERENCE_CACHE_DIR"] = _STORE
atexit.register(shutil.rmtree, _STORE, True)

import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))

from tinymodel import CHATML, write_tiny_model  # noqa: E402

#: ../shared (read-only inputs: data sets, example reports, the TurboQuant fork's snapshot);
#: REFRACT_SHARED_DIR points the tests elsewhere, e.g. at an empty directory to run the suite as
#: on a user's clone without ../shared
SHARED = Path(
    os.environ.get("REFRACT_SHARED_DIR") or Path(__file__).resolve().parents[2] / "shared"
)
SHARED_DATA = SHARED / "data"
SHARED_VENDOR = SHARED / "vendor"

#: skip reasons that mean a broken setup on CI (turned into failures there)
CI_MUST_NOT_SKIP = ("shared data", "shared example", "../shared", "shared/data",
                    "_core is not built", "demo model unavailable")
ENGINE_FIXTURES = {"tiny_engine", "demo_engine"}
DEMO_FIXTURES = {"demo_model", "demo_engine"}


def on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def have_core() -> bool:
    try:
        import refract._core  # noqa: F401
    except ImportError:
        return False
    return True


needs_core = pytest.mark.skipif(not have_core(), reason="refract._core is not built")


def shared_file(name: str, where: str = "data") -> Path:
    """A file (or directory) of ../shared/data (``where``: or another folder of ../shared):
    skipped on a user's clone without it, a failure on CI."""
    p = SHARED / where / name
    if not p.exists():
        msg = f"{p} is not available (tests read ../shared/{where} when present)"
        if on_ci():
            pytest.fail(f"CI: {msg}", pytrace=False)
        pytest.skip(msg)
    return p


def shared_vendor_file(name: str) -> Path:
    """A file of ../shared/vendor (the TurboQuant fork's snapshot), as :func:`shared_file`."""
    return shared_file(name, "vendor")


def _module_uses_engine(module: object) -> bool:
    if not have_core():
        return False
    from refract import _core, engine

    return any(v is _core or v is engine.Engine for v in vars(module).values())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        skip_reasons = [str(m.kwargs.get("reason", "")) for m in item.iter_markers("skipif")]
        module = getattr(item, "module", None)
        if (
            names & ENGINE_FIXTURES
            or any("_core is not built" in r for r in skip_reasons)
            or (module is not None and _module_uses_engine(module))
        ):
            item.add_marker(pytest.mark.engine)
        if names & DEMO_FIXTURES:
            item.add_marker(pytest.mark.demo)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and on_ci()) or hasattr(report, "wasxfail"):
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    if any(key in reason for key in CI_MUST_NOT_SKIP):
        report.outcome = "failed"
        report.longrepr = f"CI=true: this test may not be skipped here: {reason}"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny.gguf")


@pytest.fixture(scope="session")
def tiny_chat_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(
        tmp_path_factory.mktemp("models") / "tiny-chatml.gguf", chat_template=CHATML, seed=1,
        n_ctx_train=8192,
    )


@pytest.fixture(scope="session")
def tiny_engine(tiny_model: Path):
    from refract import Engine

    eng = Engine(tiny_model, n_threads=2)
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def demo_model() -> Path:
    """The real Gemma 3 270M Q4_K_M from the `demo` extra (assembled once into the cache)."""
    try:
        from refract.inputs.demo import demo_model_path
    except ImportError:
        pytest.skip("refract.inputs.demo is not available")
    try:
        return demo_model_path()
    except Exception as e:  # the extra is not installed (a failure on CI, see above)
        pytest.skip(f"demo model unavailable: {e}")


@pytest.fixture(scope="session")
def demo_engine(demo_model: Path):
    from refract import Engine

    eng = Engine(demo_model, n_threads=2)
    yield eng
    eng.close()


#: the prompts of CLI and matrix runs on the tiny models (one per category)
PROMPTS = [
    {"id": "p1", "category": "factual", "prompt": "What is the capital city of France?"},
    {"id": "p2", "category": "arithmetic", "prompt": "Two plus two equals which number?"},
    {"id": "p3", "category": "instruction", "prompt": "Make a small list of large ocean animals."},
    {"id": "p4", "category": "dialogue", "prompt": "Show the answer to the question about Gold."},
]
#: the sentences of their corpus (see text_corpus)
SENTENCES = (
    "The big city of Paris is the capital of France. ",
    "Gold is a rare number in the ocean of the world. ",
    "The first state to build a new city was also the most happy one. ",
    "Some water from the earth is blue, and some is not. ",
)


def text_corpus(n: int = 600) -> str:
    """A corpus of ``n`` sentences, :data:`SENTENCES` in turn."""
    return "".join(SENTENCES[i % len(SENTENCES)] for i in range(n))


#: two prompts for score tests: a factual one and one that fires every PLAD perturbation
SCORE_PROMPTS = [
    {"id": "a", "category": "factual", "prompt": "What is the capital city of France?"},
    {"id": "b", "category": "dialogue", "prompt": "Show the big answer about Gold."},
]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A prompt set and a small KLD corpus for score tests."""
    import json

    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in SCORE_PROMPTS))
    corpus = tmp_path / "c.txt"
    corpus.write_text("The big city of Paris is the capital of France. " * 400)
    return {"prompts": prompts, "corpus": corpus}


def one_line_error(result: Any, code: int, *needles: str) -> str:
    """A CLI result (typer's CliRunner) that exits ``code`` with exactly one stderr line naming
    every needle, and no traceback; returns that line."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == code, (result.exit_code, result.output)
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return lines[0]


def sigint_default() -> None:
    """``preexec_fn`` for a child that a test interrupts: SIGINT back to its default, so that
    Python installs KeyboardInterrupt there even when the test run itself was started in the
    background by a shell without job control (which makes children inherit SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def isolated_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A fresh ``REFRACT_CACHE_DIR`` under the test's tmp_path, and no ``REFRACT_DEBUG`` (so a
    CLI error stays the one line a user sees)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("REFRACT_CACHE_DIR", str(cache))
    monkeypatch.delenv("REFRACT_DEBUG", raising=False)
    return cache


@pytest.fixture
def offline_corpus(monkeypatch: pytest.MonkeyPatch, isolated_cache: Path) -> Path:
    """:func:`isolated_cache`, and WikiText-2 download URLs that lead nowhere: a test never
    falls back to the real cache or reaches the internet."""
    from refract.inputs import corpus

    monkeypatch.setenv("REFRACT_WIKITEXT_URL", "http://127.0.0.1:9/unreachable.zip")
    monkeypatch.setattr(corpus, "WIKITEXT2_URL", "http://127.0.0.1:9/default.zip")
    monkeypatch.setattr(corpus, "WIKITEXT2_MIRROR_URLS", ())
    return isolated_cache


@pytest.fixture
def no_model_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if a command gets as far as loading the model: what it refuses must be
    refused before."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the model was loaded before the command refused its input")

    monkeypatch.setattr("refract.scoring.execute_score", refuse)


def zip_bytes(members: dict[str, str]) -> bytes:
    """A zip archive holding ``members`` (name: text); the same bytes for the same members
    (a fixed timestamp: two archives built across a 2-second clock tick must not differ)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in members.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), text,
                        compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a directory without logging; ``/cut/<name>`` promises the whole file, sends half
    of it and hangs up (an interrupted download)."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path.startswith("/cut/"):
            data = (Path(self.directory) / self.path[len("/cut/"):]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


class LocalServer:
    """An http.server on 127.0.0.1 serving the directory ``root`` at ``base`` (tests never
    reach the internet)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.running = True

    def stop(self) -> None:
        if self.running:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join()
            self.running = False


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[LocalServer]:
    """A :class:`LocalServer` of an empty directory, ``tmp_path / "www"``, for the test to fill."""
    root = tmp_path / "www"
    root.mkdir()
    server = LocalServer(root)
    yield server
    server.stop()
