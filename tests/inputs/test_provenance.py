"""Provenance: cached file hashing, corpus identity, the report's provenance dict."""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from conftest import shared_file
from refract.inputs import provenance
from refract.inputs.provenance import (
    CACHE_FILE,
    build_provenance,
    corpus_identity,
    file_sha256,
    identity_name,
    prompts_digest,
    register_identity,
    text_sha256,
)
from refract.report.build import axis_methods, build_report


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("REFRACT_CACHE_DIR", str(d))
    return d


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_file_sha256_streams_and_caches(tmp_path: Path, cache_dir: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "model.gguf"
    data = os.urandom(3 * (1 << 20) + 17)  # several read chunks
    f.write_bytes(data)
    assert file_sha256(f) == _sha(data)
    cache = json.loads((cache_dir / CACHE_FILE).read_text())
    assert [v["sha256"] for v in cache.values()] == [_sha(data)]

    # a second call must not read the file again
    def boom(_path: Path) -> str:
        raise AssertionError("re-hashed a cached file")

    monkeypatch.setattr(provenance, "_stream_sha256", boom)
    assert file_sha256(f) == _sha(data)
    monkeypatch.undo()
    monkeypatch.setenv("REFRACT_CACHE_DIR", str(cache_dir))

    # changed content (size and mtime) → re-hash, and the stale entry is replaced
    f.write_bytes(b"other")
    os.utime(f, ns=(1, 1))
    assert file_sha256(f) == _sha(b"other")
    cache = json.loads((cache_dir / CACHE_FILE).read_text())
    assert len(cache) == 1 and next(iter(cache.values()))["sha256"] == _sha(b"other")


def test_corrupt_or_unwritable_cache_is_ignored(tmp_path: Path, cache_dir: Path) -> None:
    cache_dir.mkdir()
    (cache_dir / CACHE_FILE).write_text("{not json")
    f = tmp_path / "x.txt"
    f.write_bytes(b"abc")
    assert file_sha256(f) == _sha(b"abc")
    assert json.loads((cache_dir / CACHE_FILE).read_text())  # rewritten, valid
    with pytest.raises(OSError):
        file_sha256(tmp_path / "missing.bin")


def _hash_many(args: tuple[str, list[str]]) -> list[str]:
    cache, paths = args
    os.environ["REFRACT_CACHE_DIR"] = cache
    return [file_sha256(p) for p in paths]


def test_concurrent_writers_never_corrupt_the_cache(tmp_path: Path, cache_dir: Path) -> None:
    files = []
    for i in range(24):
        p = tmp_path / f"f{i}.bin"
        p.write_bytes(f"content {i}".encode() * 100)
        files.append(str(p))
    jobs = [(str(cache_dir), files[i::3]) for i in range(3)]
    with ProcessPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(_hash_many, jobs))
    for (_, paths), digests in zip(jobs, results, strict=True):
        assert digests == [_sha(Path(p).read_bytes()) for p in paths]
    cache = json.loads((cache_dir / CACHE_FILE).read_text())  # valid JSON, whatever won
    for key, value in cache.items():
        path = key.split("|")[0]
        assert value["sha256"] == _sha(Path(path).read_bytes())
    assert not list(cache_dir.glob("*.tmp"))


def test_text_sha256() -> None:
    assert text_sha256("héllo") == _sha("héllo".encode())


def test_corpus_identity_names(tmp_path: Path) -> None:
    from refract.inputs.corpus import WIKITEXT2_SHA256, WIKITEXT2_SIZES

    size, sha = WIKITEXT2_SIZES["test"], WIKITEXT2_SHA256["test"]
    assert identity_name(size, sha) == "wikitext-2-raw-v1 test"
    assert identity_name(size, sha.upper()) == "wikitext-2-raw-v1 test"
    assert identity_name(WIKITEXT2_SIZES["train"], WIKITEXT2_SHA256["train"]) == (
        "wikitext-2-raw-v1 train"
    )
    # the shared rendering of the test split is not byte-identical to wiki.test.raw
    shared = shared_file("wikitext-2-test.txt")
    ident = corpus_identity(shared)
    assert ident == {"name": "custom", "sha256": _sha(shared.read_bytes()),
                     "bytes": shared.stat().st_size}
    f = tmp_path / "mine.txt"
    f.write_bytes(b"some bundled text")
    assert corpus_identity(f)["name"] == "custom"
    register_identity("bundled:mine", 17, _sha(b"some bundled text"))
    try:
        assert corpus_identity(f)["name"] == "bundled:mine"
    finally:
        provenance.KNOWN_IDENTITIES.pop((17, _sha(b"some bundled text")))
    with pytest.raises(ValueError):
        register_identity("custom", 1, "00")


def test_corpus_identity_knows_the_bundled_corpus() -> None:
    from refract.inputs import corpus

    if not hasattr(corpus, "bundled_corpus_path"):
        pytest.fail("refract.inputs.corpus has no bundled corpus")
    path = corpus.bundled_corpus_path("test")
    assert corpus_identity(path)["name"].startswith("bundled:")
    assert corpus_identity(path) == corpus.corpus_identity(path)


def test_build_provenance(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 100)
    corpus = tmp_path / "c.txt"
    corpus.write_text("corpus text", encoding="utf-8")
    prompts_path = shared_file("refract-prompts-v0.1.jsonl")
    from refract.inputs.promptset import load_prompts

    parsed = load_prompts(prompts_path)
    prov = build_provenance(model, corpus, None, prompts_path, haystack_text="hay")
    assert prov["model"] == {"path": str(model), "sha256": _sha(model.read_bytes()),
                             "bytes": 104}
    assert prov["corpus"]["name"] == "custom" and prov["corpus"]["bytes"] == 11
    assert prov["corpus"]["sha256"] == _sha(b"corpus text")
    assert prov["haystack"] == {"path": None, "name": "custom", "sha256": _sha(b"hay"),
                                "bytes": 3}
    assert prov["prompts"]["n"] == 30 and prov["prompts"]["source"] == str(prompts_path)
    # the same prompts give the same digest as a path or parsed
    from_list = build_provenance(None, prompts=parsed)["prompts"]
    assert from_list["sha256"] == prov["prompts"]["sha256"]
    assert from_list["source"] == "bundled"
    named = build_provenance(None, prompts=parsed, prompts_path=prompts_path)["prompts"]
    assert named == prov["prompts"]
    assert prompts_digest(parsed[:-1])[0] != prov["prompts"]["sha256"]
    assert build_provenance(None) == {"model": None, "corpus": None, "haystack": None,
                                      "prompts": None}


def test_report_carries_provenance_and_methods_on_every_axis(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    prov = build_provenance(model)
    rep = build_report(model=str(model), reference="ctk=f16,ctv=f16", candidate="ctk=q8_0",
                       axes={"kld": {"score": 99.0, "mean_kld": 0.01}}, provenance=prov,
                       settings={"chunks": 32, "ctx": 512})
    assert rep["provenance"]["model"]["sha256"] == _sha(b"GGUF")
    assert rep["settings"] == {"chunks": 32, "ctx": 512}
    for key, (method, version) in axis_methods().items():
        axis = rep["axes"][key]
        assert (axis["method"], axis["method_version"]) == (method, version)
    assert rep["axes"]["gtm"]["skipped"] is True  # skipped axes carry methods too
