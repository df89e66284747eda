"""Defaults that more than one part of refract needs, defined once.

The bands and their thresholds live with the composite (:mod:`refract.composite`), the
option defaults with their options (:mod:`refract.options`), each axis's method with the axis
(:mod:`refract.axes`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

DEFAULT_REFERENCE: Final[str] = "ctk=f16,ctv=f16"
"""The reference KV config every candidate is measured against (SPEC §1)."""

DEMO: Final[str] = "demo"
"""``--model demo``: the demo extra's Gemma 3 270M Q4_K_M."""

CACHE_DIR_ENV: Final[str] = "REFRACT_CACHE_DIR"
"""Where refract keeps what it downloads and computes once (corpora, the demo model, hashes,
probe verdicts)."""


def default_cache_dir() -> Path:
    """The refract cache: ``$REFRACT_CACHE_DIR`` if set, else ``~/.cache/refract``."""
    env = os.environ.get(CACHE_DIR_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "refract"


__all__ = ["CACHE_DIR_ENV", "DEFAULT_REFERENCE", "DEMO", "default_cache_dir"]
