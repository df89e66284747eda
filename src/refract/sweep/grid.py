"""The KV configs a sweep scores.

The default grid is what the linked llama.cpp has and is worth asking of it:

* **symmetric**: every KV type smaller than the f16 reference (the quantized types: q8_0,
  q5_1, q5_0, q4_1, q4_0, iq4_nl and, on the TurboQuant build, turbo4, turbo3, turbo2) for
  both K and V. f32 and bf16 are left out: they are no smaller than f16, so they cannot save
  memory;
* **asymmetric, K more precise than V** (K is the more sensitive half: on llama.cpp's own KV
  tables q8_0 K costs more KLD than q8_0 V): K = q8_0 with every smaller V type, and
  K = f16 with V = q8_0.

That is 12 configs on an upstream build and 18 on the TurboQuant build. ``--types`` replaces
the symmetric list (and the V types of the asymmetric pairs), ``--pairs`` the asymmetric
pairs (``q8_0/turbo4``), and explicit ``--candidate`` configs replace the whole grid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from refract.errors import UsageError
from refract.kvconfig import KVConfig

__all__ = ["GridEntry", "build_grid", "default_grid", "parse_pairs", "parse_types"]

#: types never in a default grid: no smaller than the f16 reference
NOT_SMALLER = ("f16", "bf16", "f32")


@dataclass(frozen=True)
class GridEntry:
    """One config of the grid and how it got there (``symmetric``, ``asymmetric``,
    ``listed``: named by the user with ``--candidate``)."""

    config: KVConfig
    origin: str

    @property
    def label(self) -> str:
        return self.config.label


def _smaller(types: Sequence[str], row_size: Callable[[str], int]) -> list[str]:
    """The types smaller than f16 per value, largest first (ties: the build's order)."""
    f16 = row_size("f16")
    quant = [t for t in types if t not in NOT_SMALLER and row_size(t) < f16]
    return sorted(quant, key=lambda t: -row_size(t))


def default_grid(kv_types: Sequence[str], row_size: Callable[[str], int]) -> list[GridEntry]:
    """The default grid for a build with ``kv_types``; ``row_size(t)`` is ggml's bytes for a
    row of 256 values of type ``t`` (``refract._core.type_row_size(t, 256)``)."""
    sym = _smaller(kv_types, row_size)
    out = [GridEntry(KVConfig(t, t), "symmetric") for t in sym]
    if "q8_0" in sym:
        q8 = row_size("q8_0")
        out += [GridEntry(KVConfig("q8_0", t), "asymmetric") for t in sym
                if row_size(t) < q8]
        out.append(GridEntry(KVConfig("f16", "q8_0"), "asymmetric"))
    return out


def parse_types(text: str, known: Sequence[str]) -> list[str]:
    """``"q8_0,q4_0"`` → the types, each one the build has."""
    types = [t.strip() for t in text.split(",") if t.strip()]
    if not types:
        raise UsageError("--types is empty: name KV types such as q8_0,q4_0")
    for t in types:
        if t not in known:
            raise UsageError(f"--types: {t} is not a KV type of this llama.cpp build "
                             f"(it has: {', '.join(known)})")
    return list(dict.fromkeys(types))


def parse_pairs(text: str, known: Sequence[str]) -> list[KVConfig]:
    """``"q8_0/turbo4,f16/q8_0"`` → K/V configs, each type one the build has."""
    out: list[KVConfig] = []
    for frag in (f.strip() for f in text.split(",")):
        if not frag:
            continue
        k, sep, v = frag.partition("/")
        k, v = k.strip(), v.strip()
        if not sep or not k or not v:
            raise UsageError(f"--pairs: {frag!r} is not a K/V pair such as q8_0/turbo4")
        for t in (k, v):
            if t not in known:
                raise UsageError(f"--pairs: {t} is not a KV type of this llama.cpp build "
                                 f"(it has: {', '.join(known)})")
        out.append(KVConfig(k, v))
    if not out:
        raise UsageError("--pairs is empty: name K/V pairs such as q8_0/turbo4")
    return out


def build_grid(
    kv_types: Sequence[str], row_size: Callable[[str], int], *,
    types: str | None = None, pairs: str | None = None,
    candidates: Sequence[str] = (), reference: str = "ctk=f16,ctv=f16",
) -> list[GridEntry]:
    """The grid a sweep scores (see the module doc), without the reference and without
    duplicates, in a stable order."""
    ref = KVConfig.parse(reference).label
    if candidates:
        if types is not None or pairs is not None:
            raise UsageError("--candidate lists the configs itself; it does not combine "
                             "with --types or --pairs")
        from refract.errors import KVConfigError

        entries = []
        for c in candidates:
            try:
                entries.append(GridEntry(KVConfig.parse(c), "listed"))
            except KVConfigError as exc:
                raise UsageError(f"--candidate: {exc}") from None
    else:
        entries = default_grid(kv_types, row_size)
        if types is not None:
            chosen = parse_types(types, kv_types)
            sym = [GridEntry(KVConfig(t, t), "symmetric") for t in chosen]
            asym = [e for e in entries if e.origin == "asymmetric" and e.config.ctv in chosen]
            entries = sym + asym
        if pairs is not None:
            entries = [e for e in entries if e.origin == "symmetric"] + [
                GridEntry(cfg, "asymmetric") for cfg in parse_pairs(pairs, kv_types)]
    seen: set[str] = {ref}
    out = []
    for e in entries:
        if e.label not in seen:
            seen.add(e.label)
            out.append(e)
    if not out:
        raise UsageError("the sweep's grid is empty: every config named is the reference")
    return out
