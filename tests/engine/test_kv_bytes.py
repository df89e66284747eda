"""KV bytes per token come from what llama.cpp allocated (its memory breakdown of the context's
KV buffers), never from a table of nominal bits per value; they must equal ggml's own row size
of each type times the model's KV dimensions (issue 20: every turbo type the build has, and
q8_0 / q4_0)."""

from __future__ import annotations

from typing import Any

import pytest

import refract._core as core

# every K/V pair the upstream build has plus, on the TurboQuant build, every turbo type
BASE = ["ctk=f16,ctv=f16", "ctk=q8_0,ctv=q8_0", "ctk=q4_0,ctv=q4_0", "ctk=q8_0,ctv=q4_0"]
TURBO = ["turbo2", "turbo3", "turbo4"]


def _expected(info: dict[str, Any], ctk: str, ctv: str) -> int:
    kv_heads = int(info["n_head_kv"] or info["n_head"])
    k = core.type_row_size(ctk, kv_heads * int(info["head_dim_k"]))
    v = core.type_row_size(ctv, kv_heads * int(info["head_dim_v"]))
    return int(info["n_layer"]) * (k + v)


def test_kv_bytes_per_token_from_allocations(demo_engine: Any) -> None:
    eng = demo_engine
    have = set(eng.kv_types())
    configs = list(BASE)
    configs += [f"ctk={t},ctv={t}" for t in TURBO if t in have]
    configs += [f"ctk=q8_0,ctv={t}" for t in TURBO if t in have]
    info = eng.model_info
    per: dict[str, int] = {}
    for kv in configs:
        ctk, ctv = (part.split("=")[1] for part in kv.split(","))
        probe = eng.kv_probe(kv)
        assert probe["bytes_per_token"] is not None, f"{kv}: llama.cpp cannot report KV bytes"
        assert probe["bytes_per_token"] == _expected(info, ctk, ctv), (kv, probe)
        per[kv] = probe["bytes_per_token"]
        # upstream types allocate nothing that does not grow with the context; the fork's turbo
        # types add fixed rotation data, which a per-cell division would have counted per token
        if "turbo" not in kv:
            assert probe["fixed_bytes"] == 0, (kv, probe["fixed_bytes"])
        else:
            assert probe["fixed_bytes"] >= 0
    # probed once per label: a second ask (every report of a multi-candidate run asks for every
    # label) reuses it, and a caller mutating its copy does not change the next answer
    calls: list[str] = []
    real = eng._probe
    eng._probe = lambda req: calls.append(req.label) or real(req)
    again = eng.kv_probe(BASE[1])
    again["layers"].clear()
    assert eng.kv_probe(BASE[1])["bytes_per_token"] == per[BASE[1]] and calls == []
    assert len(eng.kv_probe(BASE[1])["layers"]) == int(info["n_layer"])
    # a run's own contexts: their bytes are per token x cells + fixed
    eng.greedy(["The capital of France is"], BASE[1], n_predict=2, ctx=256)
    seen = eng.kv_bytes()[BASE[1]]
    assert seen["bytes"] == per[BASE[1]] * seen["cells"]
    # the sizes order as the types do: f16 > q8_0 > q4_0, and mixed in between
    assert per["ctk=f16,ctv=f16"] > per["ctk=q8_0,ctv=q8_0"] > per["ctk=q8_0,ctv=q4_0"] > per[
        "ctk=q4_0,ctv=q4_0"]
    # Gemma 3 270M: 18 layers x 1 KV head x 256 dims, f16 K and V = 18 x 2 x 512 bytes
    assert per["ctk=f16,ctv=f16"] == 18 * 2 * 512


def test_type_row_size_is_ggml_s(tiny_engine: Any) -> None:
    assert core.type_row_size("f16", 128) == 256
    assert core.type_row_size("q8_0", 128) == 4 * 34  # 32-value blocks of 34 bytes
    assert core.type_row_size("q4_0", 64) == 2 * 18
    with pytest.raises(ValueError, match="type"):
        core.type_row_size("nope", 32)


def test_layer_types_are_what_the_graph_reads(demo_engine: Any) -> None:
    """Every layer's cache tensor type, recorded by llama.cpp's evaluation callback during a
    one-token probe: on an upstream-style request every layer has the asked types."""
    eng = demo_engine
    n_layer = int(eng.model_info["n_layer"])
    for kv in ("ctk=f16,ctv=f16", "ctk=q8_0,ctv=q4_0"):
        layers = eng.kv_layer_types(kv)
        assert [e["layer"] for e in layers] == list(range(n_layer)), kv
        ctk, ctv = (part.split("=")[1] for part in kv.split(","))
        assert {(e["type_k"], e["type_v"]) for e in layers} == {(ctk, ctv)}, layers


def test_layer_groups_and_the_warning_that_names_them() -> None:
    from refract.engine.environment import kv_allocation_warnings, layer_groups
    from refract.kvconfig import KVConfig

    per_layer = [{"layer": i, "type_k": "q8_0", "type_v": "q8_0" if i in (0, 1, 6, 7) else
                  "turbo2"} for i in range(8)]
    groups = layer_groups(per_layer)
    assert groups == [
        {"layers": "0-1", "n_layers": 2, "type_k": "q8_0", "type_v": "q8_0"},
        {"layers": "2-5", "n_layers": 4, "type_k": "q8_0", "type_v": "turbo2"},
        {"layers": "6-7", "n_layers": 2, "type_k": "q8_0", "type_v": "q8_0"},
    ]
    cfg = KVConfig.parse("ctk=q8_0,ctv=turbo2")
    # the per-cache log line names only the cache's types; the per-layer truth wins
    log = {cfg.label: [{"layers": 8, "type_k": "q8_0", "type_v": "turbo2", "cells": 256}]}
    assert kv_allocation_warnings(log, [cfg]) == []
    [note] = kv_allocation_warnings(log, [cfg], {cfg.label: groups})
    assert "layers 0-1 K=q8_0 V=q8_0" in note and "layers 6-7 K=q8_0 V=q8_0" in note
    assert "2-5" not in note
