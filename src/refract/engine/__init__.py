"""The Engine facade over ``refract._core`` (one model load, one llama.cpp context per KV
config) and the report's ``environment``."""

from refract.engine.facade import (
    DEFAULT_REFERENCE,
    Engine,
    ModelError,
    NonFiniteLogits,
    build_info,
)

__all__ = ["DEFAULT_REFERENCE", "Engine", "ModelError", "NonFiniteLogits", "build_info"]
