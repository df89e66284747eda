"""Defaults that more than one part of refract needs, defined once.

The bands and their thresholds live with the composite (:mod:`refract.scoring.composite`), the
option defaults with their options (:mod:`refract.options`), each axis's method with the axis
(:mod:`refract.axes`).
"""

from __future__ import annotations

from typing import Final

DEFAULT_REFERENCE: Final[str] = "ctk=f16,ctv=f16"
"""The reference KV config every candidate is measured against (SPEC §1)."""

DEMO: Final[str] = "demo"
"""``--model demo``: the demo extra's Gemma 3 270M Q4_K_M."""

__all__ = ["DEFAULT_REFERENCE", "DEMO"]
