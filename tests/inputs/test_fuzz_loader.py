"""The model loader, fuzzed: damaged GGUF files end in a clean Python exception, never a crash.

Mutations (fixed seed) of a small synthesized GGUF: truncations, flipped bytes in the header,
the metadata and the tensor infos, and huge counts, string lengths, array lengths, dimensions,
types and offsets. Each is loaded through ``Engine`` in a subprocess, many per subprocess; a
subprocess that dies by a signal is re-run one mutation per process to name the culprit.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from conftest import needs_core

pytestmark = needs_core

SEED = 12
BATCH = 25

# GGUF value types: (struct format, size) for scalars; 8 = string, 9 = array
_SCALARS = {
    0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d",
}  # fmt: skip


@dataclass
class Layout:
    """Where the fields of a GGUF file are (byte offsets)."""

    n_tensors_at: int
    n_kv_at: int
    meta_start: int
    meta_end: int  # = tensor infos start
    info_end: int
    string_lengths: list[int]  # offsets of u64 string lengths (keys and string values)
    array_counts: list[int]  # offsets of u64 array element counts
    value_types: list[int]  # offsets of u32 value types
    n_dims: list[int]  # offsets of u32 tensor n_dims
    dims: list[int]  # offsets of u64 tensor dims
    tensor_types: list[int]  # offsets of u32 tensor types
    tensor_offsets: list[int]  # offsets of u64 tensor data offsets


def _layout(data: bytes) -> Layout:
    pos = 8
    n_tensors, n_kv = struct.unpack_from("<QQ", data, pos)
    lay = Layout(8, 16, 24, 0, 0, [], [], [], [], [], [], [])
    pos = 24

    def read_str(p: int) -> int:
        lay.string_lengths.append(p)
        (n,) = struct.unpack_from("<Q", data, p)
        return p + 8 + n

    def read_value(p: int, vtype: int) -> int:
        if vtype == 8:
            return read_str(p)
        if vtype == 9:
            (etype,) = struct.unpack_from("<I", data, p)
            lay.array_counts.append(p + 4)
            (count,) = struct.unpack_from("<Q", data, p + 4)
            p += 12
            for _ in range(count):
                p = read_value(p, etype)
            return p
        return p + struct.calcsize("<" + _SCALARS[vtype])

    for _ in range(n_kv):
        pos = read_str(pos)
        lay.value_types.append(pos)
        (vtype,) = struct.unpack_from("<I", data, pos)
        pos = read_value(pos + 4, vtype)
    lay.meta_end = pos
    for _ in range(n_tensors):
        pos = read_str(pos)
        lay.n_dims.append(pos)
        (nd,) = struct.unpack_from("<I", data, pos)
        pos += 4
        for _ in range(nd):
            lay.dims.append(pos)
            pos += 8
        lay.tensor_types.append(pos)
        lay.tensor_offsets.append(pos + 4)
        pos += 12
    lay.info_end = pos
    return lay


HUGE_U64 = [2**63 - 1, 2**64 - 1, 2**32, 2**32 - 1, 2**40, 2**31, 0x7FFFFFFFFFFFFFF0]
HUGE_U32 = [2**32 - 1, 2**31, 1 << 16, 255, 64, 40, 5]


def _mutations(data: bytes, seed: int = SEED) -> list[tuple[str, list[tuple[int, str]]]]:
    """(description, patch) pairs; a patch is [(offset, hex bytes)] or [(-1, 'truncate:N')]."""
    rng = np.random.default_rng(seed)
    lay = _layout(data)
    out: list[tuple[str, list[tuple[int, str]]]] = []

    def u64(v: int) -> str:
        return struct.pack("<Q", v).hex()

    def u32(v: int) -> str:
        return struct.pack("<I", v).hex()

    def flips(lo: int, hi: int, k: int) -> list[tuple[int, str]]:
        patch = []
        for off in rng.integers(lo, hi, k):
            patch.append((int(off), bytes([int(rng.integers(0, 256))]).hex()))
        return patch

    def huge_at(what: str, places: list[int], k: int, wide: bool) -> None:
        """``k`` of ``places`` (drawn), each set to a huge u64 (``wide``) or u32 value."""
        huge, pack = (HUGE_U64, u64) if wide else (HUGE_U32, u32)
        for where in rng.choice(places, k, replace=False):
            v = huge[int(rng.integers(0, len(huge)))]
            out.append((f"{what} {v} at {where}", [(int(where), pack(v))]))

    # truncations: everywhere in the structure, a few in the tensor data
    for n in sorted({0, 3, 4, 7, 8, 15, 16, 23, 24, 25}):
        out.append((f"truncate at {n}", [(-1, f"truncate:{n}")]))
    for n in rng.integers(24, lay.info_end, 40):
        out.append((f"truncate at {n}", [(-1, f"truncate:{int(n)}")]))
    for n in rng.integers(lay.info_end, len(data), 10):
        out.append((f"truncate in data at {n}", [(-1, f"truncate:{int(n)}")]))
    # flipped bytes
    for _ in range(20):
        out.append(("flip header", flips(4, 24, int(rng.integers(1, 4)))))
    for _ in range(70):
        out.append(("flip metadata", flips(lay.meta_start, lay.meta_end, int(rng.integers(1, 6)))))
    for _ in range(55):
        out.append(("flip tensor info", flips(lay.meta_end, lay.info_end, int(rng.integers(1, 6)))))
    # huge counts and lengths
    for v in HUGE_U64:
        out.append((f"n_tensors={v}", [(lay.n_tensors_at, u64(v))]))
        out.append((f"n_kv={v}", [(lay.n_kv_at, u64(v))]))
    huge_at("string length", lay.string_lengths, 25, wide=True)
    for where in lay.array_counts:
        for v in HUGE_U64[:4]:
            out.append((f"array count {v} at {where}", [(int(where), u64(v))]))
    huge_at("value type", lay.value_types, 10, wide=False)
    huge_at("n_dims", lay.n_dims, 8, wide=False)
    huge_at("dim", lay.dims, 15, wide=True)
    for where in rng.choice(lay.dims, 5, replace=False):
        out.append((f"dim 0 at {where}", [(int(where), u64(0))]))
    huge_at("tensor type", lay.tensor_types, 8, wide=False)
    huge_at("tensor offset", lay.tensor_offsets, 10, wide=True)
    return out


_CHILD = textwrap.dedent(
    """
    import json, os, sys
    src, jobs, tmp = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    from refract import Engine
    data = open(src, "rb").read()
    for i, patch in jobs:
        buf = bytearray(data)
        for off, spec in patch:
            if off < 0:
                buf = buf[: int(spec.split(":")[1])]
            else:
                b = bytes.fromhex(spec)
                buf[off : off + len(b)] = b
        path = os.path.join(tmp, f"m{i}.gguf")
        with open(path, "wb") as f:
            f.write(buf)
        print(json.dumps({"begin": i}), flush=True)
        try:
            eng = Engine(path, n_threads=1)
            eng.model_info, eng.metadata(), eng.chat_template  # strings from the file
            eng.close()
            res = {"i": i, "outcome": "loaded"}
        except Exception as exc:
            res = {"i": i, "outcome": "error", "type": type(exc).__name__, "msg": str(exc)[:300]}
        os.unlink(path)
        print(json.dumps(res), flush=True)
    """
)


def _run(src: Path, jobs: list[tuple[int, list]], tmp: Path) -> tuple[int, list[dict]]:
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    r = subprocess.run(
        [sys.executable, "-c", _CHILD, str(src), json.dumps(jobs), str(tmp)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    results = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    return r.returncode, [x for x in results if "outcome" in x]


@pytest.fixture(scope="module")
def fuzz_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tinymodel import write_tiny_model

    return write_tiny_model(
        tmp_path_factory.mktemp("fuzz") / "small.gguf", head_dim=64, n_head=1, n_head_kv=1,
        n_layer=1, n_ff=64,
    )  # fmt: skip


def test_layout_walks_the_whole_structure(fuzz_model: Path) -> None:
    data = fuzz_model.read_bytes()
    lay = _layout(data)
    assert data[:4] == b"GGUF"
    assert lay.meta_start < lay.meta_end < lay.info_end < len(data)
    assert len(lay.tensor_offsets) == len(lay.tensor_types) > 5
    assert lay.array_counts  # the token list, scores, types


def test_damaged_gguf_files_fail_cleanly(fuzz_model: Path, tmp_path: Path) -> None:
    data = fuzz_model.read_bytes()
    muts = _mutations(data)
    assert len(muts) >= 300
    jobs = [(i, patch) for i, (_, patch) in enumerate(muts)]
    results: dict[int, dict] = {}
    crashed: list[tuple[int, int]] = []
    for b in range(0, len(jobs), BATCH):
        batch = jobs[b : b + BATCH]
        rc, res = _run(fuzz_model, batch, tmp_path)
        for r in res:
            results[r["i"]] = r
        if rc != 0:  # name the culprit: one mutation per process
            for job in batch:
                if job[0] in results:
                    continue
                rc1, res1 = _run(fuzz_model, [job], tmp_path)
                if rc1 != 0:
                    crashed.append((job[0], rc1))
                for r in res1:
                    results[r["i"]] = r
    described = [f"{muts[i][0]} (exit {rc})" for i, rc in crashed]
    assert not crashed, "loader crashed on: " + "; ".join(described)
    assert sorted(results) == list(range(len(muts)))
    errors = [r for r in results.values() if r["outcome"] == "error"]
    kinds = {r["type"] for r in errors}
    print(
        f"{len(muts)} mutations: {len(errors)} refused, {len(muts) - len(errors)} loaded; "
        f"error types {sorted(kinds)}"
    )
    assert kinds <= {"ModelError"}, [r for r in errors if r["type"] != "ModelError"][:5]
    assert all(r["msg"] and "\n" not in r["msg"] for r in errors)
    # truncations inside the structure and absurd counts can never load
    for i, (desc, _) in enumerate(muts):
        if desc.startswith(("truncate at", "n_tensors=", "n_kv=")):
            assert results[i]["outcome"] == "error", desc


def test_zero_dimension_is_refused_before_llama_cpp_reads_the_file(
    fuzz_model: Path, tmp_path: Path
) -> None:
    # The fork era's loader divides by dimensions 1-3 (SIGFPE on a zero); refract's own walk
    # of the tensor infos refuses such a file first, on every flavour, naming the tensor.
    from refract.inputs.gguf import zero_dim_tensor
    from refract.inputs.model import ModelError, check_model_file

    data = fuzz_model.read_bytes()
    lay = _layout(data)
    assert zero_dim_tensor(fuzz_model) is None
    names = []
    for at in lay.n_dims:  # tensor i's name ends where its n_dims begins
        (n,) = struct.unpack_from("<Q", data, max(x for x in lay.string_lengths if x < at))
        names.append(data[at - n : at].decode())
    dim_owner = [max(i for i, at in enumerate(lay.n_dims) if at < d) for d in lay.dims]
    for d, owner in zip(lay.dims, dim_owner, strict=True):
        buf = bytearray(data)
        buf[d : d + 8] = bytes(8)
        path = tmp_path / "zero.gguf"
        path.write_bytes(buf)
        found = zero_dim_tensor(path)
        assert found is not None and found[0] == names[owner] and 0 in found[1]
        with pytest.raises(ModelError, match=f"tensor '{names[owner]}' has shape .*0") as ei:
            check_model_file(path)
        assert str(path) in str(ei.value) and "\n" not in str(ei.value)
        # cut right after that tensor's dims: still refused (the era's loader divides there)
        path.write_bytes(buf[: lay.tensor_types[owner]])
        assert zero_dim_tensor(path) == found
    # what the walk cannot follow is left to llama.cpp: truncations before any zero, absurd
    # counts, an unknown value type
    for n in (8, 23, 24, lay.meta_end - 3, lay.info_end - 1):
        path.write_bytes(data[:n])
        assert zero_dim_tensor(path) is None, n
    for at, patch in ((lay.n_kv_at, struct.pack("<Q", 2**63)), (lay.value_types[0], b"\x77\0\0\0"),
                      (lay.array_counts[0], struct.pack("<Q", 2**40))):  # fmt: skip
        buf = bytearray(data)
        buf[at : at + len(patch)] = patch
        path.write_bytes(buf)
        assert zero_dim_tensor(path) is None, at
