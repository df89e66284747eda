"""What a report records about the machine, the build and the KV types llama.cpp allocated."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refract.kvconfig import KVConfig
from refract.system.probe import amx_status
from refract.system.threads import wait_policy

if TYPE_CHECKING:
    from refract.engine.facade import Engine

__all__ = ["collect_environment", "cpu_model", "engine_identity", "kv_allocation_warnings"]


def cpu_model() -> str:
    """The CPU's marketing name, best effort ('' when unknown)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        try:
            for line in cpuinfo.read_text(errors="replace").splitlines():
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware", "cpu model"):
                    return value.strip()
        except OSError:
            pass
    if sys.platform == "darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True, text=True, timeout=5, check=False,
            )
            if out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def collect_environment(engine: Engine) -> dict[str, Any]:
    """The report's ``environment`` (refract-llm's keys first, ours after)."""
    from refract import __version__
    from refract.engine.facade import build_info

    info = build_info()
    allocated = engine.kv_allocations()
    probes = {label: engine.kv_probe(label) for label in allocated}
    seen = engine.kv_bytes()
    return {
        "backend": "refract (llama.cpp in-process)",
        "model": str(engine.model_path),
        "llama_cpp_commit": info.get("llama_cpp_commit"),
        "llama_cpp_source": info.get("llama_cpp_source"),
        "llama_cpp_flavour": info.get("llama_cpp_flavour"),
        "turbo_kv_types": info.get("turbo_kv_types"),
        "refract_version": __version__,
        "backends": info.get("backends"),
        "kv_types_available": info.get("kv_types"),
        "system_info": info.get("system_info"),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": getattr(engine, "n_threads", None),
        "omp_wait_policy": wait_policy(),
        "flash_attn": getattr(engine, "flash_attn", None),
        "os": platform.platform(),
        "python": platform.python_version(),
        "kv_allocated": allocated,
        # the K/V type of every layer, grouped into runs of equal types (what the graph read)
        "kv_layers": {label: layer_groups(p["layers"]) for label, p in probes.items()},
        # bytes llama.cpp allocated per KV config (never nominal bits per value): per token
        # (one more cell), fixed (not growing with the context), and the run's own context
        "kv_bytes": {
            label: {"per_token": p["bytes_per_token"], "fixed": p["fixed_bytes"],
                    "run_context_bytes": (seen.get(label) or {}).get("bytes"),
                    "run_context_cells": (seen.get(label) or {}).get("cells")}
            for label, p in probes.items()
        },
        "fork_switches": dict(getattr(engine, "fork_switches", {}) or {}),
        "amx": amx_status(),
    }


def layer_groups(layers: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Runs of consecutive layers with equal K/V types: ``[{"layers": "0-1", "n_layers": 2,
    "type_k": "q8_0", "type_v": "q8_0"}, {"layers": "2-15", …}]``."""
    groups: list[dict[str, Any]] = []
    for entry in sorted(layers, key=lambda e: int(e["layer"])):
        il, tk, tv = int(entry["layer"]), str(entry["type_k"]), str(entry["type_v"])
        last = groups[-1] if groups else None
        if last and last["type_k"] == tk and last["type_v"] == tv and last["_end"] == il - 1:
            last["_end"] = il
        else:
            groups.append({"_start": il, "_end": il, "type_k": tk, "type_v": tv})
    out = []
    for g in groups:
        span = f"{g['_start']}" if g["_start"] == g["_end"] else f"{g['_start']}-{g['_end']}"
        out.append({"layers": span, "n_layers": g["_end"] - g["_start"] + 1,
                    "type_k": g["type_k"], "type_v": g["type_v"]})
    return out


def kv_allocation_warnings(
    allocated: Mapping[str, Iterable[Mapping[str, Any]]],
    requested: Iterable[KVConfig],
    layers: Mapping[str, Iterable[Mapping[str, Any]]] | None = None,
) -> list[str]:
    """One note per KV config whose allocated K/V types differ from the requested ones
    (the TurboQuant fork may silently swap types, e.g. K → q8_0 on high-GQA models, or give
    boundary layers q8_0 with TURBO_LAYER_ADAPTIVE). ``layers`` (the report's ``kv_layers``,
    per-layer truth) wins over ``allocated`` (llama.cpp's per-cache log lines), which names
    only the cache's types."""
    notes: list[str] = []
    seen: set[str] = set()
    for cfg in requested:
        if cfg.label in seen:
            continue
        seen.add(cfg.label)
        per_layer = list((layers or {}).get(cfg.label, ()))
        groups = per_layer or list(allocated.get(cfg.label, ()))
        odd = [
            g for g in groups
            if str(g.get("type_k")) != cfg.ctk or str(g.get("type_v")) != cfg.ctv
        ]
        if not odd:
            continue
        desc = "; ".join(
            (f"layers {g['layers']}" if "n_layers" in g else f"{g.get('layers', '?')} layers")
            + f" K={g.get('type_k')} V={g.get('type_v')}"
            for g in odd
        )
        notes.append(
            f"Warning: llama.cpp did not allocate the requested KV types for {cfg.label} "
            f"(asked K={cfg.ctk} V={cfg.ctv}; got {desc}); the scores measure what was allocated."
        )
    return notes


def engine_identity(engine: Engine) -> dict[str, Any]:
    """Everything about the engine a stored reference result depends on besides the axis's
    own key (the reference store's key, :mod:`refract.engine.store`): the model file and the
    extension binary by SHA-256, llama.cpp's commit and flavour, backends, ggml's features,
    the CPU's name and flags, threads, flash attention, offloaded layers, seed, fork switches."""
    from refract import __version__, _core
    from refract.engine.facade import build_info
    from refract.inputs.provenance import file_sha256
    from refract.system.cpuinfo import cpu_flags

    info = build_info()
    flags = cpu_flags()
    return {
        "model_sha256": file_sha256(engine.model_path),
        "core_sha256": file_sha256(_core.__file__),
        "refract_version": __version__,
        "llama_cpp_commit": info.get("llama_cpp_commit"),
        "llama_cpp_flavour": info.get("llama_cpp_flavour"),
        "backends": list(info.get("backends") or []),
        "system_info": info.get("system_info"),
        "cpu": cpu_model(),
        "cpu_flags": hashlib.sha256(" ".join(sorted(flags or ())).encode()).hexdigest(),
        "threads": int(engine.n_threads),
        "flash_attn": bool(engine.flash_attn),
        "n_gpu_layers": int(engine.n_gpu_layers),
        "seed": int(engine.seed),
        "fork_switches": dict(engine.fork_switches),
    }
