"""Corpus cache, WikiText-2 fetch (against a local server only), bundled corpus, text reading."""

from __future__ import annotations

import hashlib
import lzma
from pathlib import Path

import pytest

from conftest import LocalServer, shared_file, zip_bytes
from refract.inputs import corpus
from refract.inputs.corpus import (
    BUNDLED,
    OFFLINE_HINT,
    CorpusError,
    bundled_corpus_path,
    corpus_identity,
    default_cache_dir,
    default_corpus_path,
    fetch_wikitext,
    read_text,
    resolve_corpus,
)

# the real defaults, read before any test patches them
REAL_URL = corpus.WIKITEXT2_URL
REAL_MIRRORS = corpus.WIKITEXT2_MIRROR_URLS

REAL_ZIP_SHA256 = corpus.WIKITEXT2_ZIP_SHA256
REAL_SHA256 = dict(corpus.WIKITEXT2_SHA256)
REAL_SIZES = dict(corpus.WIKITEXT2_SIZES)


TEST_TEXT = " = Heading = \n\n Some test text about Robert Boulter .\n"
TRAIN_TEXT = " = Valkyria Chronicles = \n\n Training text , with tokens @-@ here .\n" * 20


GOOD_ZIP = zip_bytes(
    {
        "wikitext-2-raw/wiki.test.raw": TEST_TEXT,
        "wikitext-2-raw/wiki.train.raw": TRAIN_TEXT,
        "wikitext-2-raw/wiki.valid.raw": "valid\n",
    }
)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# a zip of the right size whose bytes differ from GOOD_ZIP: one byte flipped in the middle
CORRUPT_ZIP = (
    GOOD_ZIP[: len(GOOD_ZIP) // 2]
    + bytes([GOOD_ZIP[len(GOOD_ZIP) // 2] ^ 0xFF])
    + GOOD_ZIP[len(GOOD_ZIP) // 2 + 1 :]
)
# same file names and sizes, different content (passes a size-only check)
SWAPPED_ZIP = zip_bytes(
    {
        "wikitext-2-raw/wiki.test.raw": TEST_TEXT.replace("Robert", "Rupert"),
        "wikitext-2-raw/wiki.train.raw": TRAIN_TEXT,
        "wikitext-2-raw/wiki.valid.raw": "valid\n",
    }
)


@pytest.fixture
def server(http_server: LocalServer) -> LocalServer:
    root = http_server.root
    (root / "wikitext-2-raw-v1.zip").write_bytes(GOOD_ZIP)
    (root / "interrupted.zip").write_bytes(GOOD_ZIP)  # served cut: /cut/interrupted.zip
    (root / "corrupt.zip").write_bytes(CORRUPT_ZIP)
    (root / "swapped.zip").write_bytes(SWAPPED_ZIP)
    (root / "bad.zip").write_bytes(b"this is not a zip file at all")
    (root / "wrong.zip").write_bytes(zip_bytes({"wikitext-2-raw/wiki.test.raw": TEST_TEXT}))
    (root / "empty-member.zip").write_bytes(
        zip_bytes({"wikitext-2-raw/wiki.test.raw": "", "wikitext-2-raw/wiki.train.raw": "x"})
    )
    return http_server


@pytest.fixture(autouse=True)
def _isolated_env(offline_corpus: Path) -> None:
    """Never fall back to the real cache or the real URLs (no internet in tests)."""


def _accept(monkeypatch: pytest.MonkeyPatch, zip_bytes: bytes = GOOD_ZIP) -> None:
    """Make the fake zip the 'canonical' one: its hashes and sizes replace the real ones."""
    monkeypatch.setattr(corpus, "WIKITEXT2_ZIP_SHA256", _sha(zip_bytes))
    monkeypatch.setattr(corpus, "WIKITEXT2_ZIP_BYTES", len(zip_bytes))
    monkeypatch.setattr(
        corpus, "WIKITEXT2_SHA256",
        {"test": _sha(TEST_TEXT.encode()), "train": _sha(TRAIN_TEXT.encode()), "valid": "0" * 64},
    )
    monkeypatch.setattr(
        corpus, "WIKITEXT2_SIZES", {"test": len(TEST_TEXT), "train": len(TRAIN_TEXT), "valid": 6}
    )


def _cache_files(tmp_path: Path) -> list[str]:
    d = tmp_path / "cache" / "wikitext-2-raw"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


# --- cache dir -----------------------------------------------------------------------------


def test_cache_dir_env_and_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert default_cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("REFRACT_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "refract"


def test_module_constants() -> None:
    # the canonical wikitext-2-raw-v1.zip and its splits (sizes in bytes)
    assert REAL_ZIP_SHA256 == "ef7edb566e3e2b2d31b29c1fdb0c89a4cc683597484c3dc2517919c615435a11"
    assert corpus.WIKITEXT2_ZIP_BYTES == 4_721_645
    assert REAL_SHA256["test"] == (
        "173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08"
    )
    assert REAL_SIZES == {"test": 1_290_590, "train": 10_940_747, "valid": 1_146_846}
    assert set(REAL_SHA256) == set(REAL_SIZES)
    assert REAL_URL == (
        "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-raw-v1.zip"
    )
    assert all(u.startswith("https://") for u in REAL_MIRRORS)


# --- fetch ---------------------------------------------------------------------------------


def test_fetch_http_then_offline(
    server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _accept(monkeypatch)
    calls: list[tuple[int, int | None]] = []
    paths = fetch_wikitext(
        f"{server.base}/wikitext-2-raw-v1.zip",
        progress=lambda done, total: calls.append((done, total)),
    )
    cache = tmp_path / "cache" / "wikitext-2-raw"
    assert paths == {"test": cache / "wiki.test.raw", "train": cache / "wiki.train.raw"}
    assert paths["test"].read_text() == TEST_TEXT
    assert paths["train"].read_text() == TRAIN_TEXT
    assert _cache_files(tmp_path) == ["wiki.test.raw", "wiki.train.raw"]
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


def test_fetch_file_url_and_cache_dir_arg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _accept(monkeypatch)
    zip_path = tmp_path / "local.zip"
    zip_path.write_bytes(GOOD_ZIP)
    paths = fetch_wikitext(zip_path.as_uri(), cache_dir=tmp_path / "other")
    assert paths["test"] == tmp_path / "other" / "wikitext-2-raw" / "wiki.test.raw"
    assert paths["train"].read_text() == TRAIN_TEXT
    assert not (tmp_path / "cache").exists()


def test_fetch_url_from_env(server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    _accept(monkeypatch)
    monkeypatch.setenv("REFRACT_WIKITEXT_URL", f"{server.base}/wikitext-2-raw-v1.zip")
    assert fetch_wikitext()["test"].read_text() == TEST_TEXT


def test_default_corpus_path_auto_fetch(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _accept(monkeypatch)
    with pytest.raises(CorpusError, match="refract fetch") as info:
        default_corpus_path("test", auto_fetch=False)
    assert "--corpus bundled" in str(info.value) and "\n" not in str(info.value)
    monkeypatch.setenv("REFRACT_WIKITEXT_URL", f"{server.base}/wikitext-2-raw-v1.zip")
    assert default_corpus_path("test").read_text() == TEST_TEXT
    with pytest.raises(ValueError, match="split"):
        default_corpus_path("valid")


def test_real_hashes_refuse_another_zip(server: LocalServer, tmp_path: Path) -> None:
    # with the real canonical hashes, any other zip is refused, whatever its URL
    with pytest.raises(CorpusError, match="not the canonical wikitext-2-raw-v1.zip") as info:
        fetch_wikitext(f"{server.base}/wikitext-2-raw-v1.zip")
    assert REAL_ZIP_SHA256 in str(info.value)
    assert _cache_files(tmp_path) == []  # nothing half-written is left behind


def test_corrupted_download_fails_closed(
    server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _accept(monkeypatch)
    assert len(CORRUPT_ZIP) == len(GOOD_ZIP) and CORRUPT_ZIP != GOOD_ZIP
    with pytest.raises(CorpusError, match=r"corrupt\.zip is not the canonical.*SHA-256"):
        fetch_wikitext(f"{server.base}/corrupt.zip")
    assert _cache_files(tmp_path) == []


def test_member_hash_mismatch_fails_closed(
    server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the zip itself is accepted, but a member's bytes are not the canonical split's
    _accept(monkeypatch, SWAPPED_ZIP)
    with pytest.raises(CorpusError, match=r"wiki\.test\.raw is .* bytes with SHA-256"):
        fetch_wikitext(f"{server.base}/swapped.zip")
    assert _cache_files(tmp_path) == []
    # a good cache is not replaced by a refetch that fails its check
    _accept(monkeypatch)
    fetch_wikitext(f"{server.base}/wikitext-2-raw-v1.zip")
    _accept(monkeypatch, SWAPPED_ZIP)
    monkeypatch.setattr(
        corpus, "WIKITEXT2_SHA256",
        {**corpus.WIKITEXT2_SHA256, "test": _sha(TEST_TEXT.encode())},
    )
    with pytest.raises(CorpusError):
        fetch_wikitext(f"{server.base}/swapped.zip", force=True)
    assert (tmp_path / "cache" / "wikitext-2-raw" / "wiki.test.raw").read_text() == TEST_TEXT
    assert _cache_files(tmp_path) == ["wiki.test.raw", "wiki.train.raw"]


def test_interrupted_download_fails_closed(
    server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _accept(monkeypatch)
    with pytest.raises(CorpusError, match=r"interrupted\.zip.*stopped after|IncompleteRead"):
        fetch_wikitext(f"{server.base}/cut/interrupted.zip")
    assert _cache_files(tmp_path) == []
    # the next fetch from a good server completes normally
    assert fetch_wikitext(f"{server.base}/wikitext-2-raw-v1.zip")["test"].read_text() == TEST_TEXT


def test_tampered_cache_is_not_used(
    server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _accept(monkeypatch)
    paths = fetch_wikitext(f"{server.base}/wikitext-2-raw-v1.zip")
    paths["test"].write_text(TEST_TEXT.replace("Robert", "Rupert"))  # same size, other bytes
    with pytest.raises(CorpusError, match="does not match the canonical SHA-256"):
        default_corpus_path("test", auto_fetch=False)
    assert fetch_wikitext(f"{server.base}/wikitext-2-raw-v1.zip")["test"].read_text() == TEST_TEXT


def test_default_url_falls_back_to_mirror(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _accept(monkeypatch)
    monkeypatch.delenv("REFRACT_WIKITEXT_URL")
    monkeypatch.setattr(corpus, "WIKITEXT2_URL", f"{server.base}/missing.zip")
    monkeypatch.setattr(corpus, "WIKITEXT2_MIRROR_URLS", (f"{server.base}/wikitext-2-raw-v1.zip",))
    assert fetch_wikitext()["train"].read_text() == TRAIN_TEXT
    monkeypatch.setattr(corpus, "WIKITEXT2_MIRROR_URLS", (f"{server.base}/corrupt.zip",))
    both = r"missing\.zip: HTTP 404.*corrupt\.zip is not the canonical"
    with pytest.raises(CorpusError, match=both) as info:
        fetch_wikitext(force=True)
    assert str(info.value).endswith(OFFLINE_HINT) and "\n" not in str(info.value)


def test_fetch_404(server: LocalServer) -> None:
    with pytest.raises(CorpusError, match=r"missing\.zip.*HTTP 404"):
        fetch_wikitext(f"{server.base}/missing.zip")


def test_fetch_bad_zip(
    server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = b"this is not a zip file at all"
    _accept(monkeypatch, bad)  # its hash is 'canonical': the zip reader still refuses it
    with pytest.raises(CorpusError, match="valid zip"):
        fetch_wikitext(f"{server.base}/bad.zip")
    assert _cache_files(tmp_path) == []


def test_fetch_missing_member(server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    _accept(monkeypatch, zip_bytes({"wikitext-2-raw/wiki.test.raw": TEST_TEXT}))
    with pytest.raises(CorpusError, match=r"no wikitext-2-raw/wiki\.train\.raw"):
        fetch_wikitext(f"{server.base}/wrong.zip")


def test_fetch_empty_member(server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    _accept(
        monkeypatch,
        zip_bytes({"wikitext-2-raw/wiki.test.raw": "", "wikitext-2-raw/wiki.train.raw": "x"}),
    )
    with pytest.raises(CorpusError, match=r"wiki\.test\.raw is empty"):
        fetch_wikitext(f"{server.base}/empty-member.zip")


def test_fetch_unreachable() -> None:
    with pytest.raises(CorpusError, match="could not download") as info:
        fetch_wikitext("http://127.0.0.1:9/nothing.zip")
    assert "refract fetch" in str(info.value) and "--corpus bundled" in str(info.value)
    with pytest.raises(CorpusError, match="could not download"):
        fetch_wikitext()  # env URL, unreachable


def test_fetch_file_url_missing(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="could not download"):
        fetch_wikitext((tmp_path / "absent.zip").as_uri())


# --- bundled corpus ------------------------------------------------------------------------


def test_bundled_corpus_extracts_once(tmp_path: Path) -> None:
    test = bundled_corpus_path("test")
    train = bundled_corpus_path("train")
    assert test.parent == tmp_path / "cache" / "bundled"
    assert test != train
    a, b = read_text(test), read_text(train)
    assert a.startswith("PRIDE AND PREJUDICE") and "Elizabeth" in a
    assert b.startswith("Persuasion") or "Anne Elliot" in b
    assert len(a) > 600_000 and len(b) > 400_000  # ~161K and ~112K Gemma 3 tokens
    assert "gutenberg" not in a.lower() and "gutenberg" not in b.lower()
    mtime = test.stat().st_mtime_ns
    assert bundled_corpus_path("test") == test
    assert test.stat().st_mtime_ns == mtime  # not rewritten
    # a damaged cached copy is replaced from the package data
    test.write_text("tampered")
    assert read_text(bundled_corpus_path("test")) == a
    with pytest.raises(ValueError, match="bundled split"):
        bundled_corpus_path("valid")


def test_bundled_package_data_matches_manifest() -> None:
    import json
    from importlib import resources

    data = resources.files("refract").joinpath("data")
    manifest = json.loads(data.joinpath("bundled-corpus.json").read_text("utf-8"))
    assert set(manifest["texts"]) == {"test", "train"}
    for info in manifest["texts"].values():
        raw = lzma.decompress(data.joinpath(info["file"]).read_bytes())
        assert len(raw) == info["bytes"]
        assert _sha(raw) == info["sha256"]
        raw.decode("utf-8")
    assert data.joinpath("README.md").is_file()  # source and licence travel with the data


def test_corpus_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ident = corpus_identity(bundled_corpus_path("test"))
    assert ident["name"] == "bundled:austen-pride-and-prejudice"
    assert ident["bytes"] == 684_768 and len(ident["sha256"]) == 64
    assert corpus_identity(bundled_corpus_path("train"))["name"] == "bundled:austen-persuasion"
    other = tmp_path / "mine.txt"
    other.write_text(TEST_TEXT)
    assert corpus_identity(other) == {
        "name": "custom", "sha256": _sha(TEST_TEXT.encode()), "bytes": len(TEST_TEXT)
    }
    _accept(monkeypatch)  # pretend TEST_TEXT is the canonical test split
    assert corpus_identity(other)["name"] == "wikitext-2-raw-v1 test"
    with pytest.raises(CorpusError, match="cannot read"):
        corpus_identity(tmp_path / "absent.txt")


def test_resolve_corpus(tmp_path: Path) -> None:
    assert resolve_corpus(BUNDLED, "test") == bundled_corpus_path("test")
    assert resolve_corpus("bundled", "train") == bundled_corpus_path("train")
    assert resolve_corpus(None, "train", prefer_bundled=True) == bundled_corpus_path("train")
    assert resolve_corpus(str(tmp_path / "x.txt")) == tmp_path / "x.txt"
    # no WikiText-2 in the cache and no network: one line naming both ways out
    with pytest.raises(CorpusError) as info:
        resolve_corpus(None, "test")
    msg = str(info.value)
    assert "refract fetch" in msg and "--corpus bundled" in msg and "\n" not in msg


def test_shared_wikitext_identity() -> None:
    # the shared copy is not byte-identical to the canonical split: it must not be named so
    assert corpus_identity(shared_file("wikitext-2-test.txt"))["name"] == "custom"


# --- read_text -----------------------------------------------------------------------------


def test_read_text_ok_exact_bytes(tmp_path: Path) -> None:
    p = tmp_path / "c.txt"
    p.write_bytes(b"line one\r\nline two \xc3\xa9\n")
    assert read_text(p) == "line one\r\nline two \u00e9\n"
    assert read_text(str(p)) == read_text(p)


def test_read_text_shared_wikitext() -> None:
    text = read_text(shared_file("wikitext-2-test.txt"))
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
