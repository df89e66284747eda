"""Text corpora: the refract cache, the WikiText-2 download, the bundled corpus, reading text.

WikiText-2 (raw, CC BY-SA) is the default corpus for KLD@D (test split) and the default
R-NIAH haystack (train split). ``fetch_wikitext`` downloads the same zip that llama.cpp's
``scripts/get-wikitext-2.sh`` and refract-llm use, checks it against the canonical SHA-256s
(the zip and every extracted split) and extracts ``wiki.test.raw`` and ``wiki.train.raw``
into ``<cache>/wikitext-2-raw/``; a download that does not match is refused and nothing is
left in the cache. Only the standard library is used (urllib), and nothing touches the
network once the files are cached.

The *bundled* corpus ships inside the wheel, for machines that cannot download WikiText-2:
two public-domain novels by Jane Austen, "Pride and Prejudice" (the KLD corpus, split
"test") and "Persuasion" (the R-NIAH haystack, split "train"), xz-compressed in
``refract/data`` (source and licence in ``refract/data/README.md``).
``bundled_corpus_path(split)`` extracts one once into ``<cache>/bundled/`` and returns a
plain text file, usable like any ``--corpus`` file. ``corpus_identity(path)`` names what a
corpus file is (canonical WikiText-2 split, bundled text, or custom) for reports.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import lzma
import os
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from refract.defaults import default_cache_dir
from refract.errors import CorpusError, UsageError
from refract.files import atomic_output, atomic_write_bytes, read_input_bytes, scratch_file

__all__ = [
    "BUNDLED",
    "OFFLINE_HINT",
    "WIKITEXT2_DIRNAME",
    "WIKITEXT2_MEMBERS",
    "WIKITEXT2_MIRROR_URLS",
    "WIKITEXT2_SHA256",
    "WIKITEXT2_SIZES",
    "WIKITEXT2_URL",
    "WIKITEXT2_ZIP_BYTES",
    "WIKITEXT2_ZIP_SHA256",
    "WIKITEXT_URL_ENV",
    "CorpusError",
    "bundled_corpus_path",
    "corpus_identity",
    "default_corpus_path",
    "fetch_wikitext",
    "read_text",
    "resolve_corpus",
    "sha256_file",
    "wikitext_dir",
]

#: Environment variable that overrides the cache directory (default ``~/.cache/refract``).
#: Environment variable that overrides the WikiText-2 download URL.
WIKITEXT_URL_ENV = "REFRACT_WIKITEXT_URL"
#: The WikiText-2 raw zip (the S3 bucket used by llama.cpp's scripts/get-wikitext-2.sh).
WIKITEXT2_URL = "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-raw-v1.zip"
#: Copies of the same zip, tried in order when the default URL cannot be reached.
WIKITEXT2_MIRROR_URLS: tuple[str, ...] = (
    "https://huggingface.co/datasets/ggml-org/ci/resolve/main/wikitext-2-raw-v1.zip",
)
#: Directory under the cache that holds the extracted files (the zip's own layout).
WIKITEXT2_DIRNAME = "wikitext-2-raw"
#: split -> file name inside the zip's ``wikitext-2-raw/`` directory.
WIKITEXT2_MEMBERS: dict[str, str] = {"test": "wiki.test.raw", "train": "wiki.train.raw"}
#: The canonical wikitext-2-raw-v1.zip (the same bytes on the S3 bucket and the mirror).
WIKITEXT2_ZIP_SHA256 = "ef7edb566e3e2b2d31b29c1fdb0c89a4cc683597484c3dc2517919c615435a11"
WIKITEXT2_ZIP_BYTES = 4_721_645
#: split -> SHA-256 of the extracted file in the canonical zip (every download is checked).
WIKITEXT2_SHA256: dict[str, str] = {
    "test": "173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08",
    "train": "6707892fa3788b5ab9ed78ab5ff37d9fe825f6011a2ad4fcd6a6d467f0e7da57",
    "valid": "4cd0f6876d07a413aa911261ff6d363c72d757d47f0fdd6015702014c89cb9c7",
}
#: split -> exact size in bytes of the extracted file in the canonical zip.
WIKITEXT2_SIZES: dict[str, int] = {"test": 1_290_590, "train": 10_940_747, "valid": 1_146_846}
#: ``--corpus bundled`` / ``--rniah-haystack bundled``: the corpus shipped in the wheel.
BUNDLED = "bundled"
#: What to do when WikiText-2 is neither cached nor downloadable (ends every such error).
OFFLINE_HINT = (
    "Offline? Run `refract fetch` once when online, or use the corpus shipped with refract "
    "(--corpus bundled), or pass any text file with --corpus (and --rniah-haystack)."
)
_BUNDLED_DIRNAME = "bundled"
_BUNDLED_MANIFEST = "bundled-corpus.json"

_CHUNK = 1 << 16
_TIMEOUT_S = 60.0

ProgressCallback = Callable[[int, int | None], None]
"""``progress(bytes_downloaded, total_bytes_or_None)``, called as the download advances."""


def wikitext_dir(cache_dir: str | Path | None = None) -> Path:
    """Where the extracted WikiText-2 files live: ``<cache>/wikitext-2-raw``."""
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return base / WIKITEXT2_DIRNAME


def _default_urls() -> tuple[str, ...]:
    return (WIKITEXT2_URL, *WIKITEXT2_MIRROR_URLS)


def _resolve_urls(url: str | None) -> list[str]:
    """URLs to try, in order."""
    chosen = url if url is not None else os.environ.get(WIKITEXT_URL_ENV, "").strip() or None
    if chosen is None:
        return list(_default_urls())
    return [chosen]


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file, hex."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _file_matches(path: Path, size: int, sha256: str) -> bool:
    try:
        if not path.is_file() or path.stat().st_size != size:
            return False
        return sha256_file(path) == sha256
    except OSError:
        return False


def _cached_ok(paths: dict[str, Path]) -> bool:
    return all(
        _file_matches(p, WIKITEXT2_SIZES[split], WIKITEXT2_SHA256[split])
        for split, p in paths.items()
    )


def fetch_wikitext(
    url: str | None = None,
    *,
    cache_dir: str | Path | None = None,
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> dict[str, Path]:
    """Download and extract WikiText-2 raw into the cache; return ``{"test": …, "train": …}``.

    ``url`` defaults to ``$REFRACT_WIKITEXT_URL``, else :data:`WIKITEXT2_URL` (with
    :data:`WIKITEXT2_MIRROR_URLS` as fall-backs). Any ``urllib`` URL works, ``file://``
    included, but whatever the URL, the download must be the canonical zip: its size and
    SHA-256 (:data:`WIKITEXT2_ZIP_SHA256`) and those of each extracted split
    (:data:`WIKITEXT2_SHA256`) are checked, and a mismatch (corrupt, truncated or another
    file) is refused (fail closed). If both files are already cached and match, this returns
    at once without any network access, unless ``force``. Files are written atomically
    (temporary file + ``os.replace``), so a failed or interrupted fetch never leaves a file
    that looks complete. Raises :class:`CorpusError` on network failure, a hash mismatch, a
    bad zip or missing members.
    """
    urls = _resolve_urls(url)
    target = wikitext_dir(cache_dir)
    paths = {split: target / name for split, name in WIKITEXT2_MEMBERS.items()}
    if not force and _cached_ok(paths):
        return paths

    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CorpusError(f"cannot create the cache directory {target}: {exc}") from exc

    failures: list[str] = []
    for candidate_url in urls:
        with scratch_file(target, suffix=".zip") as zip_path:
            try:
                _download(candidate_url, zip_path, progress)
                _verify_zip(zip_path, candidate_url)
                _extract(zip_path, candidate_url, paths)
            except CorpusError as exc:
                failures.append(str(exc))
                continue
            return paths
    raise CorpusError("could not get WikiText-2 (" + "; ".join(failures) + "). " + OFFLINE_HINT)


def _download(url: str, dest: Path, progress: ProgressCallback | None) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "refract"})
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as resp, dest.open("wb") as out:
            length = resp.headers.get("Content-Length") if resp.headers else None
            total = int(length) if length and length.isdigit() else None
            done = 0
            if progress is not None:
                progress(done, total)
            while chunk := resp.read(_CHUNK):
                out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    except urllib.error.HTTPError as exc:
        raise CorpusError(f"could not download {url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise CorpusError(f"could not download {url}: {exc.reason}") from None
    except (OSError, ValueError) as exc:
        raise CorpusError(f"could not download {url}: {exc}") from None
    if done == 0:
        raise CorpusError(f"could not download {url}: the server sent an empty file")
    if total is not None and done != total:
        raise CorpusError(
            f"could not download {url}: the transfer stopped after {done:,} of {total:,} bytes"
        )


def _verify_zip(zip_path: Path, url: str) -> None:
    size = zip_path.stat().st_size
    digest = sha256_file(zip_path)
    if size != WIKITEXT2_ZIP_BYTES or digest != WIKITEXT2_ZIP_SHA256:
        raise CorpusError(
            f"{url} is not the canonical wikitext-2-raw-v1.zip ({size:,} bytes, SHA-256 "
            f"{digest}; expected {WIKITEXT2_ZIP_BYTES:,} bytes, {WIKITEXT2_ZIP_SHA256}): "
            "corrupt, truncated or another file; nothing was written to the cache"
        )


def _find_member(names: list[str], filename: str) -> str | None:
    preferred = f"{WIKITEXT2_DIRNAME}/{filename}"
    if preferred in names:
        return preferred
    for name in names:
        if name == filename or name.endswith("/" + filename):
            return name
    return None


def _extract(zip_path: Path, url: str, paths: dict[str, Path]) -> None:
    try:
        with zipfile.ZipFile(zip_path) as zf:
            names = zf.namelist()
            members: dict[str, str] = {}
            for split, filename in WIKITEXT2_MEMBERS.items():
                member = _find_member(names, filename)
                if member is None:
                    raise CorpusError(
                        f"{url} is not the WikiText-2 raw zip: it has no "
                        f"{WIKITEXT2_DIRNAME}/{filename}"
                    )
                members[split] = member
            # every split replaces its file only once all of them are extracted and verified
            with contextlib.ExitStack() as staged:
                for split, member in members.items():
                    tmp = staged.enter_context(atomic_output(paths[split], suffix=".part"))
                    h = hashlib.sha256()
                    with zf.open(member) as src, tmp.open("wb") as dst:
                        while block := src.read(_CHUNK):
                            h.update(block)
                            dst.write(block)
                    size = tmp.stat().st_size
                    if size == 0:
                        raise CorpusError(f"{url}: {member} is empty")
                    if size != WIKITEXT2_SIZES[split] or h.hexdigest() != WIKITEXT2_SHA256[split]:
                        raise CorpusError(
                            f"{url}: {member} is {size:,} bytes with SHA-256 {h.hexdigest()}, "
                            f"expected {WIKITEXT2_SIZES[split]:,} bytes, "
                            f"{WIKITEXT2_SHA256[split]} (corrupt or not the canonical zip)"
                        )
    except zipfile.BadZipFile as exc:
        raise CorpusError(f"{url} did not give a valid zip file: {exc}") from None
    except (OSError, EOFError, zipfile.LargeZipFile) as exc:
        raise CorpusError(f"could not extract WikiText-2 from {url}: {exc}") from None


def default_corpus_path(
    split: str = "test", auto_fetch: bool = True, *, cache_dir: str | Path | None = None
) -> Path:
    """The cached WikiText-2 file for ``split`` ("test" or "train"), fetching it if needed.

    With ``auto_fetch=False`` a missing cache is a :class:`CorpusError` that says to run
    ``refract fetch``.
    """
    if split not in WIKITEXT2_MEMBERS:
        raise UsageError(f"unknown WikiText-2 split {split!r}; expected 'test' or 'train'")
    path = wikitext_dir(cache_dir) / WIKITEXT2_MEMBERS[split]
    if _file_matches(path, WIKITEXT2_SIZES[split], WIKITEXT2_SHA256[split]):
        return path
    if not auto_fetch:
        state = "is missing" if not path.exists() else "does not match the canonical SHA-256"
        raise CorpusError(f"WikiText-2 is not in the cache ({path} {state}). {OFFLINE_HINT}")
    return fetch_wikitext(cache_dir=cache_dir)[split]


def read_text(path: str | Path) -> str:
    """Read a UTF-8 text corpus exactly as stored (no newline translation, no BOM removal).

    Raises :class:`CorpusError` for a missing file, a directory, an empty file, or content
    that is not UTF-8 text (invalid UTF-8 or NUL bytes).
    """
    p = Path(path).expanduser()
    data = read_input_bytes(p, "corpus", "a text file", CorpusError)
    if not data.strip():
        raise CorpusError(f"corpus {p}: file is empty")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusError(
            f"corpus {p}: not UTF-8 text (invalid byte at offset {exc.start}); is it a binary file?"
        ) from None
    if "\x00" in text:
        raise CorpusError(f"corpus {p}: contains NUL bytes; is it a binary file?")
    return text


# --- the bundled corpus ---------------------------------------------------------------------


def bundled_manifest() -> dict[str, Any]:
    text = resources.files("refract").joinpath("data", _BUNDLED_MANIFEST).read_text("utf-8")
    manifest: dict[str, Any] = json.loads(text)
    return manifest


def bundled_corpus_path(split: str = "test", *, cache_dir: str | Path | None = None) -> Path:
    """The bundled public-domain text for ``split`` as a plain UTF-8 file; extracted once.

    ``"test"`` is the KLD corpus (Jane Austen, "Pride and Prejudice", 685 KB, 161K tokens on
    Gemma 3's tokenizer), ``"train"`` the R-NIAH haystack ("Persuasion", 467 KB, 112K): separate
    texts, as WikiText-2's test and train splits are. The xz file in the package is
    decompressed into ``<cache>/bundled/<name>.txt`` (atomically, checked against the
    SHA-256 in the package's manifest); later calls only re-hash the cached file. Raises
    :class:`CorpusError` if the cache cannot be written or the package data is damaged.
    """
    texts = bundled_manifest()["texts"]
    if split not in texts:
        raise UsageError(f"unknown bundled split {split!r}; expected one of {sorted(texts)}")
    info = texts[split]
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = base / _BUNDLED_DIRNAME / f"{info['name']}.txt"
    if _file_matches(target, int(info["bytes"]), str(info["sha256"])):
        return target
    try:
        packed = resources.files("refract").joinpath("data", info["file"]).read_bytes()
        raw = lzma.decompress(packed)
    except (OSError, lzma.LZMAError) as exc:
        raise CorpusError(f"the bundled corpus {info['file']} cannot be read: {exc}") from None
    if len(raw) != int(info["bytes"]) or hashlib.sha256(raw).hexdigest() != info["sha256"]:
        raise CorpusError(
            f"the bundled corpus {info['file']} is damaged (SHA-256 mismatch); reinstall refract"
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, raw)
    except OSError as exc:
        raise CorpusError(f"cannot write the bundled corpus to {target}: {exc}") from None
    return target


def corpus_identity(path: str | Path) -> dict[str, Any]:
    """Name what a corpus file is, for reports: ``{"name", "sha256", "bytes"}``.

    ``name`` is ``"wikitext-2-raw-v1 test"`` (``train``, ``valid``) when the file is byte for
    byte that canonical WikiText-2 split, ``"bundled:<name>"`` for a text shipped with refract
    (e.g. ``bundled:austen-pride-and-prejudice``), else ``"custom"``. Raises
    :class:`CorpusError` if the file cannot be read.
    """
    p = Path(path).expanduser()
    try:
        size = p.stat().st_size
        digest = sha256_file(p)
    except OSError as exc:
        raise CorpusError(f"corpus {p}: cannot read: {exc.strerror or exc}") from None
    name = "custom"
    for split, sha in WIKITEXT2_SHA256.items():
        if digest == sha and size == WIKITEXT2_SIZES[split]:
            name = f"wikitext-2-raw-v1 {split}"
    for info in bundled_manifest()["texts"].values():
        if digest == info["sha256"] and size == int(info["bytes"]):
            name = f"{BUNDLED}:{info['name']}"
    return {"name": name, "sha256": digest, "bytes": size}


def resolve_corpus(
    spec: str | Path | None,
    split: str = "test",
    *,
    prefer_bundled: bool = False,
    auto_fetch: bool = True,
    cache_dir: str | Path | None = None,
) -> Path:
    """The corpus file a ``--corpus`` (split "test") or ``--rniah-haystack`` ("train") names.

    ``None`` is the default: the bundled text when ``prefer_bundled`` (``--model demo``),
    else the cached WikiText-2 split (downloaded if needed and ``auto_fetch``);
    ``"bundled"`` is the bundled text for any model; anything else is a file path (checked
    later by :func:`read_text`). Raises :class:`CorpusError` with :data:`OFFLINE_HINT` when
    WikiText-2 is needed but cannot be had.
    """
    if spec is None:
        if prefer_bundled:
            return bundled_corpus_path(split, cache_dir=cache_dir)
        return default_corpus_path(split, auto_fetch=auto_fetch, cache_dir=cache_dir)
    if str(spec) == BUNDLED:
        return bundled_corpus_path(split, cache_dir=cache_dir)
    return Path(spec).expanduser()
