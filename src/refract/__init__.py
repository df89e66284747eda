"""refract: does a quantized KV cache change what an LLM does?

The engine (``refract.Engine``) lives in the native extension ``refract._core``; it is
imported lazily so that the pure-Python parts (configs, composite, reports) import without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from refract._cpu import install_guard
from refract.kvconfig import KVConfig

# refuse politely on a CPU this build cannot run on, and pick the OpenMP wait policy, both
# right before refract._core loads (see refract/_cpu.py, refract/threads.py)
install_guard()

__version__ = "0.1.0"

__all__ = ["Engine", "KVConfig", "__version__"]

if TYPE_CHECKING:
    from refract.engine.facade import Engine


def __getattr__(name: str) -> Any:
    if name == "Engine":
        from refract.engine.facade import Engine

        return Engine
    raise AttributeError(f"module 'refract' has no attribute {name!r}")
