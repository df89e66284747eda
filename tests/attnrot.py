"""Attention rotation of quantized KV caches: what the linked llama.cpp does, read from its log.

The two flavours read the ``LLAMA_ATTN_ROT_*`` switches (KVConfig keys ``attn_rot_k``,
``attn_rot_v``, ``attn_rot_disable``) differently, each logging ``attn_rot_k = N`` and
``attn_rot_v = N`` right after the ``llama_kv_cache: size = … K (type) … V (type)`` line of the
cache they apply to:

* upstream rotates K and V of a quantized cache by default (head dim % 64 == 0);
  ``LLAMA_ATTN_ROT_DISABLE=1`` turns both off and warns "attention rotation force disabled";
  it does not read the per-side overrides.
* the TurboQuant fork rotates nothing by default; ``LLAMA_ATTN_ROT_K_OVERRIDE=1`` /
  ``LLAMA_ATTN_ROT_V_OVERRIDE=1`` turn it on per side, silently; ``LLAMA_ATTN_ROT_DISABLE=1``
  only blocks those overrides.

So the switch that changes a plain ``ctk=q8_0,ctv=q8_0`` context is ``attn_rot_disable=1``
upstream and ``attn_rot_k=1,attn_rot_v=1`` on the fork; :func:`flip_switch` picks it from what
the linked llama.cpp does by default.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

Q8 = "ctk=q8_0,ctv=q8_0"
ENV = ("LLAMA_ATTN_ROT_K_OVERRIDE", "LLAMA_ATTN_ROT_V_OVERRIDE", "LLAMA_ATTN_ROT_DISABLE")
#: rotation (K, V) of a plain q8_0 cache by default, per flavour
DEFAULT_BY_FLAVOUR = {"upstream": (1, 1), "turboquant": (0, 0)}
FORCE_DISABLED = "attention rotation force disabled"

_SIZE = re.compile(r"llama_kv_cache: size = .*K \((\w+)\):.*V \((\w+)\):")
_ROT = re.compile(r"llama_kv_cache: attn_rot_([kv]) = (\d+)")


def cache_rotations(lines: Iterable[str]) -> list[tuple[str, str, int, int]]:
    """(K type, V type, attn_rot_k, attn_rot_v) of every KV cache created in ``lines``."""
    out: list[tuple[str, str, int, int]] = []
    types: tuple[str, str] | None = None
    rot: dict[str, int] = {}
    for line in lines:
        if m := _SIZE.search(line):
            types, rot = (m.group(1), m.group(2)), {}
        elif (m := _ROT.search(line)) and types is not None:
            rot[m.group(1)] = int(m.group(2))
            if len(rot) == 2:
                out.append((*types, rot["k"], rot["v"]))
                types = None
    return out


def q8_rotation(lines: Iterable[str]) -> tuple[int, int]:
    """(attn_rot_k, attn_rot_v) of the one q8_0/q8_0 cache created in ``lines``."""
    [rot] = [(k, v) for tk, tv, k, v in cache_rotations(lines) if (tk, tv) == ("q8_0", "q8_0")]
    return rot


@contextmanager
def llama_log() -> Iterator[list[str]]:
    """llama.cpp's log lines (every level) while the block runs."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("refract.llama")
    handler, level = Keep(logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def default_q8_rotation(model: Path, corpus: str | np.ndarray) -> tuple[int, int]:
    """(attn_rot_k, attn_rot_v) the linked llama.cpp gives a plain q8_0 cache on ``model``
    (a fresh engine, so its contexts are created, and logged, here)."""
    from refract import Engine

    with Engine(model, n_threads=1) as eng, llama_log() as lines:
        eng.kld(corpus, candidates=[Q8], ctx=128, chunks=1)
    return q8_rotation(lines)


def flip_switch(default: tuple[int, int]) -> tuple[str, tuple[int, int]]:
    """The KVConfig switch that turns ``default`` rotation around, and what it gives."""
    if default == (1, 1):
        return "attn_rot_disable=1", (0, 0)
    if default == (0, 0):
        return "attn_rot_k=1,attn_rot_v=1", (1, 1)
    raise AssertionError(f"a plain q8_0 cache rotates (K, V) = {default}: neither flavour's")
