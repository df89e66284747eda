"""Corpus cache, WikiText-2 fetch (against a local server only) and text reading."""

from __future__ import annotations

import functools
import http.server
import io
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from refract import corpus
from refract.corpus import (
    CorpusError,
    default_cache_dir,
    default_corpus_path,
    fetch_wikitext,
    read_text,
)

# the real defaults, read before any test patches them
REAL_URL = corpus.WIKITEXT2_URL
REAL_MIRRORS = corpus.WIKITEXT2_MIRROR_URLS

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

TEST_TEXT = " = Heading = \n\n Some test text about Robert Boulter .\n"
TRAIN_TEXT = " = Valkyria Chronicles = \n\n Training text , with tokens @-@ here .\n" * 20


def _zip_bytes(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return buf.getvalue()


GOOD_ZIP = _zip_bytes(
    {
        "wikitext-2-raw/wiki.test.raw": TEST_TEXT,
        "wikitext-2-raw/wiki.train.raw": TRAIN_TEXT,
        "wikitext-2-raw/wiki.valid.raw": "valid\n",
    }
)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


class _Server:
    def __init__(self, root: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.running = True

    def stop(self) -> None:
        if self.running:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join()
            self.running = False


@pytest.fixture
def server(tmp_path: Path) -> Iterator[_Server]:
    root = tmp_path / "www"
    root.mkdir()
    (root / "wikitext-2-raw-v1.zip").write_bytes(GOOD_ZIP)
    (root / "bad.zip").write_bytes(b"this is not a zip file at all")
    (root / "wrong.zip").write_bytes(_zip_bytes({"wikitext-2-raw/wiki.test.raw": TEST_TEXT}))
    (root / "empty-member.zip").write_bytes(
        _zip_bytes({"wikitext-2-raw/wiki.test.raw": "", "wikitext-2-raw/wiki.train.raw": "x"})
    )
    srv = _Server(root)
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Never fall back to the real cache or the real URLs (no internet in tests)."""
    monkeypatch.setenv("REFRACT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("REFRACT_WIKITEXT_URL", "http://127.0.0.1:9/unreachable.zip")
    monkeypatch.setattr(corpus, "WIKITEXT2_URL", "http://127.0.0.1:9/default.zip")
    monkeypatch.setattr(corpus, "WIKITEXT2_MIRROR_URLS", ())


# --- cache dir -----------------------------------------------------------------------------


def test_cache_dir_env_and_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert default_cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("REFRACT_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "refract"


def test_module_constants() -> None:
    assert corpus.WIKITEXT2_SIZES == {"test": 1_290_590, "train": 10_918_892}
    assert REAL_URL == (
        "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-raw-v1.zip"
    )
    assert all(u.startswith("https://") for u in REAL_MIRRORS)


# --- fetch ---------------------------------------------------------------------------------


def test_fetch_http_then_offline(server: _Server, tmp_path: Path) -> None:
    calls: list[tuple[int, int | None]] = []
    paths = fetch_wikitext(
        f"{server.base}/wikitext-2-raw-v1.zip",
        progress=lambda done, total: calls.append((done, total)),
    )
    cache = tmp_path / "cache" / "wikitext-2-raw"
    assert paths == {"test": cache / "wiki.test.raw", "train": cache / "wiki.train.raw"}
    assert paths["test"].read_text() == TEST_TEXT
    assert paths["train"].read_text() == TRAIN_TEXT
    assert sorted(p.name for p in cache.iterdir()) == ["wiki.test.raw", "wiki.train.raw"]
    assert calls
    assert calls[-1] == (len(GOOD_ZIP), len(GOOD_ZIP))
    mtime = paths["test"].stat().st_mtime_ns

    server.stop()
    again = fetch_wikitext(f"{server.base}/wikitext-2-raw-v1.zip")  # no network needed
    assert again == paths
    assert paths["test"].stat().st_mtime_ns == mtime
    assert default_corpus_path("train") == paths["train"]
    assert default_corpus_path("test", auto_fetch=False) == paths["test"]
    # forcing a refetch needs the network again
    with pytest.raises(CorpusError, match="could not download"):
        fetch_wikitext(f"{server.base}/wikitext-2-raw-v1.zip", force=True)
    assert paths["test"].read_text() == TEST_TEXT  # a failed refetch keeps the cache


def test_fetch_file_url_and_cache_dir_arg(tmp_path: Path) -> None:
    zip_path = tmp_path / "local.zip"
    zip_path.write_bytes(GOOD_ZIP)
    paths = fetch_wikitext(zip_path.as_uri(), cache_dir=tmp_path / "other")
    assert paths["test"] == tmp_path / "other" / "wikitext-2-raw" / "wiki.test.raw"
    assert paths["train"].read_text() == TRAIN_TEXT
    assert not (tmp_path / "cache").exists()


def test_fetch_url_from_env(server: _Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFRACT_WIKITEXT_URL", f"{server.base}/wikitext-2-raw-v1.zip")
    assert fetch_wikitext()["test"].read_text() == TEST_TEXT


def test_default_corpus_path_auto_fetch(server: _Server, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CorpusError, match="refract fetch"):
        default_corpus_path("test", auto_fetch=False)
    monkeypatch.setenv("REFRACT_WIKITEXT_URL", f"{server.base}/wikitext-2-raw-v1.zip")
    assert default_corpus_path("test").read_text() == TEST_TEXT
    with pytest.raises(ValueError, match="split"):
        default_corpus_path("valid")


def test_default_url_checks_canonical_sizes(
    server: _Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("REFRACT_WIKITEXT_URL")
    monkeypatch.setattr(corpus, "WIKITEXT2_URL", f"{server.base}/wikitext-2-raw-v1.zip")
    with pytest.raises(CorpusError, match=r"expected 1,290,590"):
        fetch_wikitext()
    # nothing half-written is left behind
    leftovers = list((tmp_path / "cache" / "wikitext-2-raw").iterdir())
    assert leftovers == []
    # with canonical sizes it is accepted
    monkeypatch.setattr(
        corpus, "WIKITEXT2_SIZES", {"test": len(TEST_TEXT), "train": len(TRAIN_TEXT)}
    )
    assert fetch_wikitext()["test"].read_text() == TEST_TEXT


def test_default_url_falls_back_to_mirror(server: _Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REFRACT_WIKITEXT_URL")
    monkeypatch.setattr(corpus, "WIKITEXT2_URL", f"{server.base}/missing.zip")
    monkeypatch.setattr(corpus, "WIKITEXT2_MIRROR_URLS", (f"{server.base}/wikitext-2-raw-v1.zip",))
    monkeypatch.setattr(
        corpus, "WIKITEXT2_SIZES", {"test": len(TEST_TEXT), "train": len(TRAIN_TEXT)}
    )
    assert fetch_wikitext()["train"].read_text() == TRAIN_TEXT
    monkeypatch.setattr(corpus, "WIKITEXT2_MIRROR_URLS", (f"{server.base}/bad.zip",))
    both = r"(?s)missing\.zip: HTTP 404.*bad\.zip did not give a valid zip"
    with pytest.raises(CorpusError, match=both):
        fetch_wikitext(force=True)


def test_fetch_404(server: _Server) -> None:
    with pytest.raises(CorpusError, match=r"missing\.zip.*HTTP 404"):
        fetch_wikitext(f"{server.base}/missing.zip")


def test_fetch_bad_zip(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="valid zip"):
        fetch_wikitext(f"{server.base}/bad.zip")
    assert list((tmp_path / "cache" / "wikitext-2-raw").iterdir()) == []


def test_fetch_missing_member(server: _Server) -> None:
    with pytest.raises(CorpusError, match=r"no wikitext-2-raw/wiki\.train\.raw"):
        fetch_wikitext(f"{server.base}/wrong.zip")


def test_fetch_empty_member(server: _Server) -> None:
    with pytest.raises(CorpusError, match=r"wiki\.test\.raw is empty"):
        fetch_wikitext(f"{server.base}/empty-member.zip")


def test_fetch_unreachable() -> None:
    with pytest.raises(CorpusError, match="could not download"):
        fetch_wikitext("http://127.0.0.1:9/nothing.zip")
    with pytest.raises(CorpusError, match="could not download"):
        fetch_wikitext()  # env URL, unreachable


def test_fetch_file_url_missing(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="could not download"):
        fetch_wikitext((tmp_path / "absent.zip").as_uri())


# --- read_text -----------------------------------------------------------------------------


def test_read_text_ok_exact_bytes(tmp_path: Path) -> None:
    p = tmp_path / "c.txt"
    p.write_bytes(b"line one\r\nline two \xc3\xa9\n")
    assert read_text(p) == "line one\r\nline two \u00e9\n"
    assert read_text(str(p)) == read_text(p)


@pytest.mark.skipif(not (SHARED_DATA / "wikitext-2-test.txt").is_file(), reason="no shared data")
def test_read_text_shared_wikitext() -> None:
    text = read_text(SHARED_DATA / "wikitext-2-test.txt")
    assert len(text.encode("utf-8")) == 1_296_370


def test_read_text_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="not found"):
        read_text(tmp_path / "missing.txt")
    with pytest.raises(CorpusError, match="is a directory"):
        read_text(tmp_path)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(CorpusError, match="empty"):
        read_text(empty)
    blank = tmp_path / "blank.txt"
    blank.write_bytes(b" \n\n")
    with pytest.raises(CorpusError, match="empty"):
        read_text(blank)
    binary = tmp_path / "model.bin"
    binary.write_bytes(b"GGUF\x03\x00\x00\x00\xff\xfe\x00\x80")
    with pytest.raises(CorpusError, match=r"model\.bin: not UTF-8 text .*offset 8"):
        read_text(binary)
    nul = tmp_path / "nul.txt"
    nul.write_bytes(b"abc\x00def")
    with pytest.raises(CorpusError, match="NUL"):
        read_text(nul)
