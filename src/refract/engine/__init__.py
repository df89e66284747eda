"""The Engine facade over ``refract._core`` (one model load, one llama.cpp context per KV
config), its KLD statistics and the report's ``environment``."""

from refract.engine.facade import Engine, build_info

__all__ = ["Engine", "build_info"]
