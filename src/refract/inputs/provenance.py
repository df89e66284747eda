"""Provenance: what exactly was scored (SPEC §5, ours).

A report's ``provenance`` key records the SHA-256 of every input that determines the scores
(model file, KLD corpus, R-NIAH haystack, prompt set) and the corpus identity, so that
``refract compare`` / ``refract leaderboard`` can refuse reports that were not measured on the
same things.

* :func:`file_sha256` streams a file once and caches the digest by (resolved path, size,
  mtime_ns) in ``<cache>/sha256-cache.json`` (``$REFRACT_CACHE_DIR`` or ``~/.cache/refract``):
  a multi-gigabyte GGUF is hashed once, not on every score. The cache is rewritten atomically
  (temporary file + ``os.replace``), so concurrent writers can lose each other's entries but
  never corrupt the file; a corrupt or unreadable cache is ignored.
* :func:`corpus_identity` names a corpus like :func:`refract.inputs.corpus.corpus_identity`
  (``"wikitext-2-raw-v1 test"`` for the canonical ``wiki.test.raw``, ``"bundled:<name>"``
  for a text shipped with refract, any name registered with :func:`register_identity`, else
  ``"custom"``) but hashes through the cache.
* :func:`build_provenance` assembles the report's ``provenance`` dict.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from refract.errors import UsageError
from refract.files import atomic_write_text

CACHE_FILE: Final[str] = "sha256-cache.json"
CACHE_MAX_ENTRIES: Final[int] = 512
_CHUNK: Final[int] = 1 << 20

#: (bytes, sha256) → identity name, beyond what :mod:`refract.inputs.corpus` knows (the
#: WikiText-2 splits and the bundled texts). Extend with :func:`register_identity`.
KNOWN_IDENTITIES: dict[tuple[int, str], str] = {}

_lock = threading.Lock()


def register_identity(name: str, n_bytes: int, sha256: str) -> None:
    """Name a corpus by its size and digest (e.g. ``"bundled:wiki-mini"``)."""
    if not name or name == "custom":
        raise UsageError(f"corpus identity name {name!r} is reserved or empty")
    KNOWN_IDENTITIES[(int(n_bytes), sha256.lower())] = name


def text_sha256(text: str) -> str:
    """SHA-256 of ``text`` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _cache_path() -> Path:
    from refract.defaults import default_cache_dir

    return default_cache_dir() / CACHE_FILE


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, entries: Mapping[str, Any]) -> None:
    """Atomic replace; failures (read-only cache dir …) are silently ignored."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(entries, sort_keys=True), durable=False)
    except OSError:
        pass


def _stream_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: str | os.PathLike[str], *, use_cache: bool = True) -> str:
    """SHA-256 of a file, streamed once and cached by (resolved path, size, mtime_ns).

    A changed size or modification time re-hashes. Raises :class:`OSError` when the file
    cannot be read.
    """
    p = Path(path).expanduser().resolve()
    st = p.stat()
    key = f"{p}|{st.st_size}|{st.st_mtime_ns}"
    cache = _cache_path() if use_cache else None
    if cache is not None:
        hit = _read_cache(cache).get(key)
        if isinstance(hit, dict) and isinstance(hit.get("sha256"), str):
            return str(hit["sha256"])
    digest = _stream_sha256(p)
    if cache is not None:
        with _lock:  # threads of one process; other processes: last replace wins
            entries = _read_cache(cache)
            entries = {k: v for k, v in entries.items() if not k.startswith(f"{p}|")}
            entries[key] = {"sha256": digest, "size": st.st_size}
            if len(entries) > CACHE_MAX_ENTRIES:
                entries = dict(list(entries.items())[-CACHE_MAX_ENTRIES:])
            _write_cache(cache, entries)
    return digest


def _corpus_module_identities() -> dict[tuple[int, str], str]:
    """The identities :mod:`refract.inputs.corpus` defines: WikiText-2 splits, bundled texts."""
    from refract.inputs import corpus

    out: dict[tuple[int, str], str] = {}
    for split, sha in corpus.WIKITEXT2_SHA256.items():
        out[(int(corpus.WIKITEXT2_SIZES[split]), sha)] = f"wikitext-2-raw-v1 {split}"
    for info in corpus.bundled_manifest()["texts"].values():
        out[(int(info["bytes"]), str(info["sha256"]))] = f"{corpus.BUNDLED}:{info['name']}"
    return out


def identity_name(n_bytes: int, sha256: str) -> str:
    """Name of a known corpus (WikiText-2 splits, bundled texts, registered ones) or
    ``"custom"``."""
    key = (int(n_bytes), sha256.lower())
    return KNOWN_IDENTITIES.get(key) or _corpus_module_identities().get(key, "custom")


def corpus_identity(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"name", "sha256", "bytes"}`` of a corpus / haystack file."""
    p = Path(path).expanduser()
    digest = file_sha256(p)
    n_bytes = p.stat().st_size
    return {"name": identity_name(n_bytes, digest), "sha256": digest, "bytes": n_bytes}


def text_identity(text: str) -> dict[str, Any]:
    """Identity of an in-memory corpus (the bytes are its UTF-8 encoding)."""
    data = text.encode("utf-8")
    digest = hashlib.sha256(data).hexdigest()
    return {"name": identity_name(len(data), digest), "sha256": digest, "bytes": len(data)}


def _file_entry(path: str | os.PathLike[str] | None) -> dict[str, Any] | None:
    if path is None:
        return None
    p = Path(path).expanduser()
    return {"path": str(p), "sha256": file_sha256(p), "bytes": p.stat().st_size}


def _corpus_entry(path: str | os.PathLike[str] | None, text: str | None) -> dict[str, Any] | None:
    if path is not None:
        return {"path": str(Path(path).expanduser()), **corpus_identity(path)}
    if text is not None:
        return {"path": None, **text_identity(text)}
    return None


def prompts_digest(prompts: Iterable[Any]) -> tuple[str, int]:
    """(SHA-256, count) of a parsed prompt set: a canonical JSON of (id, category, prompt)
    per prompt, so the digest does not depend on blank lines, comments or key order."""
    rows = []
    for p in prompts:
        if isinstance(p, Mapping):
            rows.append([str(p.get("id")), str(p.get("category")), str(p.get("prompt"))])
        else:
            rows.append([str(p.id), str(p.category), str(p.prompt)])
    canon = json.dumps(rows, ensure_ascii=False, separators=(",", ":"))
    return text_sha256(canon), len(rows)


def build_provenance(
    model_path: str | os.PathLike[str] | None,
    corpus_path: str | os.PathLike[str] | None = None,
    haystack_path: str | os.PathLike[str] | None = None,
    prompts: str | os.PathLike[str] | Iterable[Any] | None = None,
    *,
    prompts_source: str | None = None,
    prompts_path: str | os.PathLike[str] | None = None,
    corpus_text: str | None = None,
    haystack_text: str | None = None,
) -> dict[str, Any]:
    """The report's ``provenance`` dict.

    ``prompts`` is the parsed prompt list (objects with id/category/prompt, or dicts) or a
    JSONL path (parsed here); the digest is over the parsed prompts (:func:`prompts_digest`),
    so the same prompts give the same digest however they were given. ``prompts_source``
    names the set (a path or ``"bundled"``; ``prompts_path``, when given, names it too).
    ``corpus_text`` / ``haystack_text`` identify
    an in-memory text when there is no file path.
    Entries that do not apply are ``None``.
    """
    prompt_entry: dict[str, Any] | None = None
    if prompts_source is None and prompts_path is not None:
        prompts_source = str(Path(prompts_path).expanduser())
    if prompts is None and prompts_path is not None:
        prompts = prompts_path
    if isinstance(prompts, (str, os.PathLike)):
        from refract.inputs.promptset import load_prompts

        source = prompts_source or str(Path(prompts).expanduser())
        prompts = load_prompts(Path(prompts).expanduser())
    else:
        source = prompts_source or "bundled"
    if prompts is not None:
        digest, n = prompts_digest(prompts)
        prompt_entry = {"source": source, "sha256": digest, "n": n}
    return {
        "model": _file_entry(model_path),
        "corpus": _corpus_entry(corpus_path, corpus_text),
        "haystack": _corpus_entry(haystack_path, haystack_text),
        "prompts": prompt_entry,
    }


__all__ = [
    "KNOWN_IDENTITIES",
    "build_provenance",
    "corpus_identity",
    "file_sha256",
    "identity_name",
    "prompts_digest",
    "register_identity",
    "text_identity",
    "text_sha256",
]
