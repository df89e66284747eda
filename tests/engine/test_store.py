"""The persistent reference store (issue 24): exact round trips, witnesses, damaged entries
recomputed, atomic writes, LRU eviction, two processes on one store, and the key."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from refract.engine.store import (
    MAX_BYTES_ENV,
    MISS,
    ReferenceStore,
    _max_bytes_from_env,
    key_digest,
    value_digest,
)
from refract.errors import UsageError

IDENTITY = {"model_sha256": "ab" * 32, "core_sha256": "cd" * 32, "threads": 2, "cpu": "x"}


def _value() -> Any:
    return {
        "toks": [np.arange(7, dtype=np.int32), np.array([], dtype=np.int32)],
        "lps": np.array([[-0.1, -np.inf], [np.nan, 1e-300]], dtype=np.float32),
        "pairs": [(math.pi, 3), (-0.0, 0)],
        "scalar": np.float32(0.1), "big": 2**70, "flag": True, "none": None, "text": "é",
        ("a", 1): "tuple key",
    }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return (isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
                and a.tobytes() == b.tobytes())
    if isinstance(a, float):
        return type(b) is float and a.hex() == b.hex()
    if isinstance(a, np.generic):
        return type(a) is type(b) and a.tobytes() == b.tobytes()
    if isinstance(a, (list, tuple)):
        return (type(a) is type(b) and len(a) == len(b)
                and all(_same(x, y) for x, y in zip(a, b, strict=True)))
    if isinstance(a, dict):
        return (type(b) is dict and list(a) == list(b)
                and all(_same(a[k], b[k]) for k in a))
    return type(a) is type(b) and a == b


def _save(store: ReferenceStore, name: str, value: Any, witness: str | None = None) -> str:
    digest = key_digest(IDENTITY, ("plad", "ctk=f16,ctv=f16", name))
    store.save(digest, value, family="plad", reference="ctk=f16,ctv=f16", identity=IDENTITY,
               witness=witness)
    return digest


def test_round_trip_is_exact(tmp_path: Path) -> None:
    store = ReferenceStore(tmp_path)
    value = _value()
    digest = _save(store, "x", value)
    got, why = store.load(digest)
    assert why is None and _same(value, got)
    assert value_digest(got) == value_digest(value)
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".npz"] == [f"{digest}.npz"]
    with pytest.raises(TypeError):  # what cannot be stored exactly is refused
        _save(store, "y", {"obj": object()})


def test_missing_and_witness(tmp_path: Path) -> None:
    store = ReferenceStore(tmp_path)
    assert store.load("0" * 64) == (MISS, None)
    digest = _save(store, "x", [np.arange(3)], witness="w1")
    got, why = store.load(digest, "w2")
    assert got is MISS and "other reference trajectories" in str(why)
    assert store.path_for(digest).is_file()  # kept: a run with that witness may still use it
    got, why = store.load(digest, "w1")
    assert why is None and _same([np.arange(3)], got)


def _rewrite_member(path: Path, edit: Any) -> None:
    """Rewrite the entry's meta (a valid archive with altered content)."""
    with np.load(path) as z:
        members = {k: z[k] for k in z.files}
    meta = json.loads(bytes(members["__meta__"]))
    edit(meta)
    members["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **members)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "array", "tree", "not a zip member"])
def test_damaged_entry_is_recomputed_never_trusted(tmp_path: Path, damage: str) -> None:
    store = ReferenceStore(tmp_path)
    digest = _save(store, "x", [np.arange(1000, dtype=np.int32)])
    path = store.path_for(digest)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\0" * len(data))
    elif damage == "array":  # same archive, one stored array changed (digest no longer fits)
        with np.load(path) as z:
            members = {k: z[k] for k in z.files}
        members["a0"] = members["a0"].copy()
        members["a0"][500] += 1
        with open(path, "wb") as f:
            np.savez(f, **members)
    elif damage == "tree":
        _rewrite_member(path, lambda m: m["tree"]["list"].append(None))
    else:
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("other.npy", b"x")
    got, why = store.load(digest)
    assert got is MISS and "unreadable" in str(why)
    assert not path.exists()


def test_atomic_write_leaves_no_partial_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    store = ReferenceStore(tmp_path)

    def boom(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        _save(store, "x", [np.arange(3)])
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []  # neither the entry nor its temporary file
    stale = tmp_path / ".tmp-crashed.npz"
    stale.write_bytes(b"half")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    fresh = tmp_path / ".tmp-writing.npz"
    fresh.write_bytes(b"half")
    assert store.entries() == []
    store.evict()
    assert not stale.exists() and fresh.exists()  # another process may still be writing it


def test_lru_eviction_keeps_the_recently_used(tmp_path: Path) -> None:
    probe = ReferenceStore(tmp_path / "probe")
    one = probe.path_for(_save(probe, "p", [np.zeros(4000, dtype=np.int32)])).stat().st_size
    store = ReferenceStore(tmp_path / "s", max_bytes=int(3.5 * one))
    digests = []
    for i, name in enumerate("abc"):
        digests.append(_save(store, name, [np.full(4000, i, dtype=np.int32)]))
        t = time.time() - 100 + i
        os.utime(store.path_for(digests[-1]), (t, t))
    assert store.load(digests[0])[1] is None  # "a" used now: "b" is the least recent
    d = _save(store, "d", [np.full(4000, 9, dtype=np.int32)])
    assert store.path_for(digests[0]).exists() and store.path_for(d).exists()
    assert not store.path_for(digests[1]).exists() and store.path_for(digests[2]).exists()
    assert store.size() <= store.max_bytes
    listed = store.entries()
    assert [e.path for e in listed][0] == store.path_for(d)
    assert {e.family for e in listed} == {"plad"} and listed[0].model_sha256 == "ab" * 32
    assert store.clear() == (3, sum(e.bytes for e in listed))
    assert store.entries() == []


def test_max_size_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MAX_BYTES_ENV, "2.5")
    assert _max_bytes_from_env() == int(2.5 * (1 << 20))
    for bad in ("lots", "-1", "inf", "nan"):
        monkeypatch.setenv(MAX_BYTES_ENV, bad)
        with pytest.raises(UsageError, match=MAX_BYTES_ENV):
            _max_bytes_from_env()


def test_key_covers_identity_and_settings() -> None:
    key = ("gtm-noise-floor", "ctk=f16,ctv=f16", ("p1", "p2"), 128, 512, False, False)
    base = key_digest(IDENTITY, key)
    assert base == key_digest(dict(reversed(list(IDENTITY.items()))), key)  # order-free
    for field, value in [("model_sha256", "ef" * 32), ("threads", 3), ("cpu", "y"),
                         ("core_sha256", "00" * 32)]:
        assert key_digest({**IDENTITY, field: value}, key) != base, field
    for i, value in [(2, ("p1",)), (3, 64), (4, 256), (5, True), (1, "ctk=q8_0,ctv=q8_0")]:
        other = (*key[:i], value, *key[i + 1:])
        assert key_digest(IDENTITY, other) != base, i


WORKER = r"""
import sys, numpy as np
from refract.engine.store import ReferenceStore, key_digest, MISS
root, me, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
store = ReferenceStore(root, max_bytes=40_000)
ident = {"model_sha256": "ab" * 32}
bad = misses = 0
for r in range(rounds):
    for name in range(6):  # every process writes and reads the same six entries
        digest = key_digest(ident, ("plad", "ref", name))
        want = [np.full(3000 + name, name, dtype=np.int32), float(name)]
        got, why = store.load(digest)
        if got is MISS:
            misses += 1
            if why is not None:
                bad += 1
                print("damaged:", why, flush=True)
            store.save(digest, want, family="plad", reference="ref", identity=ident)
        elif not (np.array_equal(got[0], want[0]) and got[1] == want[1]):
            bad += 1
            print("wrong value", flush=True)
print("bad", bad, "misses", misses)
sys.exit(1 if bad else 0)
"""


def test_two_processes_share_one_store(tmp_path: Path) -> None:
    """Two processes write, read and evict the same entries at once (the bound holds about
    three): every read is a whole, correct entry or a plain miss, never a damaged one."""
    root = tmp_path / "store"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(root), str(i), "40"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert all("bad 0" in o for o in outs), outs
    misses = [int(o.split("misses")[1]) for o in outs]
    assert min(misses) > 6, misses  # entries were evicted under the readers, and rewritten
    store = ReferenceStore(root, max_bytes=40_000)
    assert store.size() <= 40_000
    for e in store.entries():
        got, why = store.load(e.path.stem)
        assert why is None and got is not MISS
    assert not list(root.glob(".tmp-*"))
