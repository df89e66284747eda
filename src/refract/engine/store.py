"""The persistent reference store: reference-side results kept on disk between runs.

A score computes some results for the reference alone -- Trajectory's noise floor (a second
reference decode), R-NIAH's reference answers, PLAD's reference decodes -- that a later run
on the same inputs would compute again. The engine's :class:`~refract.engine.facade.
ReferenceCache` shares them between the candidates of one run; this module keeps the families
in :data:`PERSISTED` on disk, under ``<cache>/reference/`` (``$REFRACT_CACHE_DIR`` or
``~/.cache/refract``; ``$REFRACT_REFERENCE_CACHE_DIR`` moves it), so the next ``score``,
``sweep`` or matrix cell reuses them.

An entry's name is the SHA-256 of its key: the axis's own cache key (every setting the result
depends on) and the engine's identity (:func:`refract.engine.environment.engine_identity`: the
model file's SHA-256, the extension binary's SHA-256, llama.cpp's commit and flavour, the
backends and ggml's feature string, the CPU's name and flags, threads, flash attention,
offloaded layers, seed, the fork's switches).
Any difference means another entry, never reuse: greedy trajectories depend on the CPU kind,
so another machine never reads this one's entries even through a shared home directory.

An entry can also carry a *witness*: the digest of a result the run computes fresh anyway
(the noise floor's is the digest of the reference trajectories decoded in the same run). It is
reused only when the witness matches, so a floor is never set beside other trajectories.

Files are ``.npz`` archives (no pickle): the value as a tagged JSON tree (floats as exact
hex) plus its arrays, and a SHA-256 of both. A file that cannot be read or whose digest does
not match is deleted and its result computed again (never trusted). Writes go to a temporary
file in the same directory and are renamed into place, so a reader sees a whole entry or
none, and two processes writing one entry both leave a valid one. Least recently used
entries are evicted beyond :data:`MAX_BYTES_ENV` megabytes (default 1024).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson

from refract.defaults import default_cache_dir
from refract.errors import UsageError

log = logging.getLogger("refract")

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MAX_BYTES_ENV",
    "MISS",
    "PERSISTED",
    "EntryInfo",
    "ReferenceStore",
    "default_store",
    "store_dir",
    "value_digest",
]

FORMAT: Final[int] = 1
DIRNAME: Final[str] = "reference"
SUFFIX: Final[str] = ".npz"
MAX_BYTES_ENV: Final[str] = "REFRACT_REFERENCE_CACHE_MAX_MB"
DIR_ENV: Final[str] = "REFRACT_REFERENCE_CACHE_DIR"
DEFAULT_MAX_BYTES: Final[int] = 1024 << 20
#: cache-key families (the key's first item) kept on disk; the others (the reference
#: trajectories, decoded afresh by every run that scores a candidate along them) stay in memory
PERSISTED: Final[frozenset[str]] = frozenset({"gtm-noise-floor", "rniah", "plad"})
#: what each family is, for reports and ``refract cache``
FAMILY_TEXT: Final[dict[str, str]] = {
    "gtm-noise-floor": "Trajectory noise floor (the reference decoded in reversed batch order)",
    "rniah": "R-NIAH reference answers",
    "plad": "PLAD reference decodes",
}
#: a temporary file older than this is a crashed writer's and is removed
STALE_TMP_S: Final[float] = 3600.0


class _Miss:
    def __repr__(self) -> str:
        return "MISS"


MISS: Final = _Miss()

# --------------------------------------------------------------------------- the value codec

def _encode(value: Any, arrays: list[np.ndarray]) -> Any:
    """A JSON tree for ``value`` (None, bool, str, int, float, numpy arrays and scalars, and
    lists, tuples and dicts of them); arrays go to ``arrays`` (by index). Exact: floats as hex."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError("object arrays cannot be stored")
        arrays.append(np.ascontiguousarray(value))
        return {"nd": len(arrays) - 1}
    if isinstance(value, np.generic):
        return {"np": value.dtype.str, "v": _encode(value.item(), arrays)}
    if isinstance(value, int):
        return {"i": str(value)}
    if isinstance(value, float):
        return {"f": value.hex()}
    if isinstance(value, list):
        return {"list": [_encode(v, arrays) for v in value]}
    if isinstance(value, tuple):
        return {"tuple": [_encode(v, arrays) for v in value]}
    if isinstance(value, dict):
        return {"dict": [[_encode(k, arrays), _encode(v, arrays)] for k, v in value.items()]}
    raise TypeError(f"cannot store a {type(value).__name__}")


def _decode(tree: Any, arrays: list[np.ndarray]) -> Any:
    if tree is None or isinstance(tree, (bool, str)):
        return tree
    if not isinstance(tree, dict) or len(tree) not in (1, 2):
        raise ValueError("malformed entry")
    if "nd" in tree:
        return arrays[int(tree["nd"])]
    if "np" in tree:
        return np.dtype(tree["np"]).type(_decode(tree["v"], arrays))
    if "i" in tree:
        return int(tree["i"])
    if "f" in tree:
        return float.fromhex(tree["f"])
    if "list" in tree:
        return [_decode(v, arrays) for v in tree["list"]]
    if "tuple" in tree:
        return tuple(_decode(v, arrays) for v in tree["tuple"])
    if "dict" in tree:
        return {_decode(k, arrays): _decode(v, arrays) for k, v in tree["dict"]}
    raise ValueError("malformed entry")


def _content_digest(tree_json: bytes, arrays: list[np.ndarray]) -> str:
    h = hashlib.sha256(tree_json)
    for a in arrays:
        h.update(f"|{a.dtype.str}|{a.shape}|".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def value_digest(value: Any) -> str:
    """SHA-256 of a storable value (used as a witness: equal digests, equal values)."""
    arrays: list[np.ndarray] = []
    tree = _encode(value, arrays)
    return _content_digest(orjson.dumps(tree), arrays)


def key_digest(identity: Mapping[str, Any], key: tuple[Any, ...]) -> str:
    """An entry's name: the SHA-256 of the engine identity and the axis's cache key."""
    arrays: list[np.ndarray] = []
    ident = {k: dict(sorted(v.items())) if isinstance(v, Mapping) else v
             for k, v in sorted(identity.items())}  # the same identity in any order
    tree = _encode({"format": FORMAT, "identity": ident, "key": key}, arrays)
    return _content_digest(orjson.dumps(tree, option=orjson.OPT_SORT_KEYS), arrays)


# --------------------------------------------------------------------------- the store


@dataclass(frozen=True)
class EntryInfo:
    """One stored entry, as ``refract cache`` lists it."""

    path: Path
    family: str
    reference: str
    bytes: int
    created: str
    last_used: float
    model_sha256: str


def _max_bytes_from_env() -> int:
    raw = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_BYTES
    try:
        mb = float(raw)
    except ValueError:
        raise UsageError(f"{MAX_BYTES_ENV} must be a number of megabytes, got {raw!r}") from None
    if not mb >= 0 or mb == float("inf"):
        raise UsageError(f"{MAX_BYTES_ENV} must be a number of megabytes >= 0, got {raw!r}")
    return int(mb * (1 << 20))


class ReferenceStore:
    """Reference results on disk, one ``.npz`` file an entry (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str], max_bytes: int | None = None) -> None:
        self.root = Path(root)
        self.max_bytes = _max_bytes_from_env() if max_bytes is None else int(max_bytes)

    def path_for(self, digest: str) -> Path:
        return self.root / f"{digest}{SUFFIX}"

    # ------------------------------------------------------------------ read
    def load(self, digest: str, witness: str | None = None) -> tuple[Any, str | None]:
        """``(value, None)`` for a whole entry with that witness; else ``(MISS, why)``, ``why``
        None when there is simply no entry. A damaged entry is deleted."""
        path = self.path_for(digest)
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = orjson.loads(bytes(z["__meta__"]))
                arrays = [z[f"a{i}"] for i in range(int(meta["n_arrays"]))]
            tree_json = orjson.dumps(meta["tree"])
            if (meta.get("format") != FORMAT or meta.get("entry") != digest
                    or _content_digest(tree_json, arrays) != meta.get("digest")):
                raise ValueError("its content does not match its digest")
            if meta.get("witness") != witness:
                return MISS, "computed beside other reference trajectories"
            value = _decode(meta["tree"], arrays)
        except FileNotFoundError:
            return MISS, None
        except Exception as exc:  # a truncated, corrupt or foreign file: never trusted
            with contextlib.suppress(OSError):
                path.unlink()
            why = " ".join(str(exc).split()) or type(exc).__name__
            log.warning("reference store: entry %s was unreadable (%s); computing it again",
                        path.name, why)
            return MISS, f"the stored entry was unreadable ({why})"
        with contextlib.suppress(OSError):
            os.utime(path)  # last use, for eviction
        return value, None

    # ------------------------------------------------------------------ write
    def save(self, digest: str, value: Any, *, family: str, reference: str,
             identity: Mapping[str, Any], witness: str | None = None) -> None:
        """Write an entry atomically, then evict beyond the size bound. Raises OSError or
        TypeError when it cannot be written (the caller goes on without it)."""
        arrays: list[np.ndarray] = []
        tree = _encode(value, arrays)
        tree_json = orjson.dumps(tree)
        meta = {
            "format": FORMAT, "entry": digest, "family": family, "reference": reference,
            "model_sha256": identity.get("model_sha256"), "identity": dict(identity),
            "witness": witness, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "n_arrays": len(arrays), "digest": _content_digest(tree_json, arrays), "tree": tree,
        }
        buf = io.BytesIO()
        members: dict[str, Any] = {f"a{i}": a for i, a in enumerate(arrays)}
        members["__meta__"] = np.frombuffer(orjson.dumps(meta), dtype=np.uint8)
        np.savez(buf, **members)
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=SUFFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(buf.getbuffer())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path_for(digest))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self.evict()

    # ------------------------------------------------------------------ upkeep
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive lock on the store for eviction and clearing (advisory; none where
        the platform has no ``fcntl``)."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            yield
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _files(self) -> list[tuple[Path, os.stat_result]]:
        out = []
        try:
            names = list(self.root.iterdir())
        except FileNotFoundError:
            return []
        for p in names:
            if p.suffix != SUFFIX or p.name.startswith("."):
                continue
            with contextlib.suppress(FileNotFoundError):
                out.append((p, p.stat()))
        return out

    def size(self) -> int:
        return sum(st.st_size for _, st in self._files())

    def evict(self) -> list[Path]:
        """Delete least recently used entries until the store fits its bound; remove
        temporary files crashed writers left. Returns what was deleted."""
        gone: list[Path] = []
        with self._locked():
            now = time.time()
            for p in self.root.glob(".tmp-*"):
                with contextlib.suppress(OSError):
                    if now - p.stat().st_mtime > STALE_TMP_S:
                        p.unlink()
            files = sorted(self._files(), key=lambda f: f[1].st_mtime)
            total = sum(st.st_size for _, st in files)
            for p, st in files:
                if total <= self.max_bytes:
                    break
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    gone.append(p)
                total -= st.st_size
        return gone

    def entries(self) -> list[EntryInfo]:
        """Every readable entry, most recently used first (unreadable ones are skipped)."""
        out = []
        for p, st in self._files():
            try:
                with np.load(p, allow_pickle=False) as z:
                    meta = orjson.loads(bytes(z["__meta__"]))
            except Exception:
                continue
            out.append(EntryInfo(p, str(meta.get("family")), str(meta.get("reference")),
                                 st.st_size, str(meta.get("created")), st.st_mtime,
                                 str(meta.get("model_sha256"))))
        return sorted(out, key=lambda e: -e.last_used)

    def clear(self) -> tuple[int, int]:
        """Delete every entry; returns (entries, bytes) deleted."""
        n = size = 0
        with self._locked():
            for p, st in self._files():
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    n += 1
                    size += st.st_size
        return n, size


def store_dir() -> Path:
    """``$REFRACT_REFERENCE_CACHE_DIR`` if set, else ``reference/`` in the refract cache."""
    env = os.environ.get(DIR_ENV, "").strip()
    return Path(env).expanduser() if env else default_cache_dir() / DIRNAME


def default_store() -> ReferenceStore:
    """The store at :func:`store_dir`."""
    return ReferenceStore(store_dir())

