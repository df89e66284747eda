"""KV-cache bytes of a config, from what llama.cpp allocated (never nominal bits per value:
sources disagree on the TurboQuant types' bits).

:meth:`refract.engine.facade.Engine.kv_probe` reads two real allocations and gives the bytes
one more cell costs (``per_token``) and what does not grow with the context (``fixed``: the
fork's rotation data). refract's contexts keep every layer's cells (a full-size cache on
sliding-window layers too), so a context of ``n`` cells allocates ``fixed + per_token × cells``
with ``cells`` llama.cpp's padding of ``n`` to 256 — checked against every run's own
context (:func:`checked_against`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from refract.engine.facade import Engine

__all__ = ["CELL_PAD", "bytes_at", "checked_against", "kv_size", "padded_cells",
           "sliding_window_note"]

#: llama.cpp pads a context's cells to a multiple of 256
CELL_PAD = 256


def padded_cells(n_ctx: int) -> int:
    return -(-int(n_ctx) // CELL_PAD) * CELL_PAD


def bytes_at(per_token: int | None, fixed: int | None, n_ctx: int) -> int | None:
    """KV bytes of a context of ``n_ctx`` cells (``None`` when the bytes are unknown)."""
    if per_token is None or fixed is None:
        return None
    return int(fixed) + int(per_token) * padded_cells(n_ctx)


def kv_size(engine: Engine, label: str, contexts: Sequence[int],
            reference_per_token: int | None) -> dict[str, Any]:
    """The sweep's ``kv`` entry of one config: bytes per token, fixed bytes, the ratio of its
    bytes per token to the reference's and its bytes at each of ``contexts``."""
    probe = engine.kv_probe(label)
    per, fixed = probe.get("bytes_per_token"), probe.get("fixed_bytes")
    ratio = (per / reference_per_token if per is not None and reference_per_token else None)
    return {
        "bytes_per_token": per,
        "fixed_bytes": fixed,
        "ratio": ratio,
        "at": {str(n): bytes_at(per, fixed, n) for n in contexts},
        "source": "llama.cpp allocations (kv_probe: two contexts' KV buffers)",
    }


def checked_against(kv: Mapping[str, Any], environment: Mapping[str, Any],
                    label: str) -> bool | None:
    """Whether the run's own context of ``label`` (its report's ``environment.kv_bytes``)
    allocated exactly what ``kv`` predicts for its cells; ``None`` when either is unknown."""
    seen = ((environment.get("kv_bytes") or {}).get(label) or {})
    got, cells = seen.get("run_context_bytes"), seen.get("run_context_cells")
    per, fixed = kv.get("bytes_per_token"), kv.get("fixed_bytes")
    if got is None or cells is None or per is None or fixed is None:
        return None
    return int(got) == int(fixed) + int(per) * int(cells)


def sliding_window_note(metadata: Mapping[str, str], architecture: str,
                        contexts: Sequence[int]) -> str | None:
    """What the bytes mean on a model with sliding-window layers (``None`` without them, or
    when no context given is longer than the window)."""
    raw = metadata.get(f"{architecture}.attention.sliding_window")
    try:
        window = int(raw) if raw is not None else 0
    except ValueError:
        return None
    if window <= 0 or not any(n > window for n in contexts):
        return None
    return (f"This model has sliding-window attention layers (window {window}). refract's "
            "contexts keep every cell on every layer (llama.cpp's swa_full), so the bytes "
            f"at a context longer than {window} are what such a cache allocates and an upper "
            "bound for llama.cpp's default cache, which keeps only about the window's cells "
            "on the sliding-window layers; the share of the reference's bytes is the same for "
            "both where every layer has the same K/V types.")
