"""Text corpora: the refract cache, the WikiText-2 download, and reading text files.

WikiText-2 (raw, CC BY-SA) is the default corpus for KLD@D (test split) and the default
R-NIAH haystack (train split). ``fetch_wikitext`` downloads the same zip that llama.cpp's
``scripts/get-wikitext-2.sh`` and refract-llm use and extracts ``wiki.test.raw`` and
``wiki.train.raw`` into ``<cache>/wikitext-2-raw/``. Only the standard library is used
(urllib), and nothing touches the network once the files are cached.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = [
    "CACHE_DIR_ENV",
    "WIKITEXT2_DIRNAME",
    "WIKITEXT2_MEMBERS",
    "WIKITEXT2_MIRROR_URLS",
    "WIKITEXT2_SIZES",
    "WIKITEXT2_URL",
    "WIKITEXT_URL_ENV",
    "CorpusError",
    "default_cache_dir",
    "default_corpus_path",
    "fetch_wikitext",
    "read_text",
    "wikitext_dir",
]

#: Environment variable that overrides the cache directory (default ``~/.cache/refract``).
CACHE_DIR_ENV = "REFRACT_CACHE_DIR"
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
#: split -> exact size in bytes in the canonical zip (checked only for the default URLs).
WIKITEXT2_SIZES: dict[str, int] = {"test": 1_290_590, "train": 10_918_892}

_CHUNK = 1 << 16
_TIMEOUT_S = 60.0

ProgressCallback = Callable[[int, int | None], None]
"""``progress(bytes_downloaded, total_bytes_or_None)``, called as the download advances."""


class CorpusError(RuntimeError):
    """A corpus could not be downloaded, extracted, found or read."""


def default_cache_dir() -> Path:
    """The refract cache: ``$REFRACT_CACHE_DIR`` if set, else ``~/.cache/refract``."""
    env = os.environ.get(CACHE_DIR_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "refract"


def wikitext_dir(cache_dir: str | Path | None = None) -> Path:
    """Where the extracted WikiText-2 files live: ``<cache>/wikitext-2-raw``."""
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return base / WIKITEXT2_DIRNAME


def _default_urls() -> tuple[str, ...]:
    return (WIKITEXT2_URL, *WIKITEXT2_MIRROR_URLS)


def _resolve_urls(url: str | None) -> tuple[list[str], bool]:
    """URLs to try, in order, and whether they are the canonical zip (sizes are checked)."""
    chosen = url if url is not None else os.environ.get(WIKITEXT_URL_ENV, "").strip() or None
    if chosen is None:
        return list(_default_urls()), True
    return [chosen], chosen in _default_urls()


def _cached_ok(paths: dict[str, Path], check_sizes: bool) -> bool:
    for split, p in paths.items():
        try:
            size = p.stat().st_size if p.is_file() else -1
        except OSError:
            return False
        if size <= 0 or (check_sizes and size != WIKITEXT2_SIZES[split]):
            return False
    return True


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
    included. If both files are already cached this returns at once without any network
    access, unless ``force``. With the default URLs the extracted sizes must match the
    canonical zip; with another URL they must be non-empty. Files are written atomically
    (temporary file + ``os.replace``), so an interrupted fetch never leaves a partial corpus.
    Raises :class:`CorpusError` on network failure, a bad zip or missing members.
    """
    urls, canonical = _resolve_urls(url)
    target = wikitext_dir(cache_dir)
    paths = {split: target / name for split, name in WIKITEXT2_MEMBERS.items()}
    if not force and _cached_ok(paths, canonical):
        return paths

    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CorpusError(f"cannot create the cache directory {target}: {exc}") from exc

    failures: list[str] = []
    for candidate_url in urls:
        with _temp_path(target, ".zip") as zip_path:
            try:
                _download(candidate_url, zip_path, progress)
                _extract(zip_path, candidate_url, paths, canonical)
            except CorpusError as exc:
                failures.append(str(exc))
                continue
            return paths
    if len(failures) == 1:
        raise CorpusError(failures[0])
    raise CorpusError(
        "could not download WikiText-2 (" + "; ".join(failures) + "). Offline? Pass any text "
        "file with --corpus (and --rniah-haystack), or run `refract fetch` once when online."
    )


@contextlib.contextmanager
def _temp_path(directory: Path, suffix: str) -> Iterator[Path]:
    fd, name = tempfile.mkstemp(prefix=".refract-", suffix=suffix, dir=directory)
    os.close(fd)
    path = Path(name)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


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


def _find_member(names: list[str], filename: str) -> str | None:
    preferred = f"{WIKITEXT2_DIRNAME}/{filename}"
    if preferred in names:
        return preferred
    for name in names:
        if name == filename or name.endswith("/" + filename):
            return name
    return None


def _extract(zip_path: Path, url: str, paths: dict[str, Path], canonical: bool) -> None:
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
            staged: dict[str, Path] = {}
            try:
                for split, member in members.items():
                    final = paths[split]
                    fd, tmp_name = tempfile.mkstemp(
                        prefix=f".{final.name}.", suffix=".part", dir=final.parent
                    )
                    tmp = Path(tmp_name)
                    staged[split] = tmp
                    with zf.open(member) as src, os.fdopen(fd, "wb") as dst:
                        shutil.copyfileobj(src, dst, _CHUNK)
                    size = tmp.stat().st_size
                    if size == 0:
                        raise CorpusError(f"{url}: {member} is empty")
                    if canonical and size != WIKITEXT2_SIZES[split]:
                        raise CorpusError(
                            f"{url}: {member} is {size:,} bytes, expected "
                            f"{WIKITEXT2_SIZES[split]:,} (corrupt or not the canonical zip)"
                        )
                for split, tmp in staged.items():
                    os.replace(tmp, paths[split])
                staged.clear()
            finally:
                for tmp in staged.values():
                    with contextlib.suppress(OSError):
                        tmp.unlink()
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
        raise ValueError(f"unknown WikiText-2 split {split!r}; expected 'test' or 'train'")
    path = wikitext_dir(cache_dir) / WIKITEXT2_MEMBERS[split]
    if path.is_file() and path.stat().st_size > 0:
        return path
    if not auto_fetch:
        raise CorpusError(
            f"WikiText-2 is not in the cache ({path} is missing); run `refract fetch` "
            "or pass a text file"
        )
    return fetch_wikitext(cache_dir=cache_dir)[split]


def read_text(path: str | Path) -> str:
    """Read a UTF-8 text corpus exactly as stored (no newline translation, no BOM removal).

    Raises :class:`CorpusError` for a missing file, a directory, an empty file, or content
    that is not UTF-8 text (invalid UTF-8 or NUL bytes).
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise CorpusError(f"corpus {p}: file not found")
    if p.is_dir():
        raise CorpusError(f"corpus {p}: is a directory, expected a text file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise CorpusError(f"corpus {p}: cannot read: {exc.strerror or exc}") from None
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
