"""Shared fixtures: tiny synthesized GGUF models, the demo model, ../shared/data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# CI and developer machines are shared: idle OpenMP threads should sleep, not spin (spinning
# threads on an oversubscribed 2-core machine slow decoding ~10x). Numerics do not change.
# Must be set before the extension (and its OpenMP runtime) is loaded.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tinymodel import CHATML, write_tiny_model  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def have_core() -> bool:
    try:
        import refract._core  # noqa: F401
    except ImportError:
        return False
    return True


needs_core = pytest.mark.skipif(not have_core(), reason="refract._core is not built")


def shared_file(name: str) -> Path:
    p = SHARED_DATA / name
    if not p.exists():
        pytest.skip(f"{p} is not available (tests read ../shared/data when present)")
    return p


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
        from refract.demo import demo_model_path
    except ImportError:
        pytest.skip("refract.demo is not available")
    try:
        return demo_model_path()
    except Exception as e:  # the extra is not installed
        pytest.skip(f"demo model unavailable: {e}")


@pytest.fixture(scope="session")
def demo_engine(demo_model: Path):
    from refract import Engine

    eng = Engine(demo_model, n_threads=2)
    yield eng
    eng.close()
