"""tools/fetch_llama.py's fork pin (the TurboQuant flavour): an archive from a local file, a
file:// or http:// URL is verified (by its SHA-256, else by the digest of its unpacked tree),
unpacked trimmed and stamped; anything else is refused with one line and leaves nothing behind.

Failure modes use small synthetic archives (the pin's digests monkeypatched to theirs); one
end-to-end test unpacks the real snapshot of the fork from ../shared/vendor. Nothing here
reaches the internet: URLs are served by http.server on 127.0.0.1.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from conftest import LocalServer, shared_vendor_file

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "fetch_llama.py"
SNAPSHOT = "llama-cpp-turboquant-69d8e4b.tar.gz"
PIN = "turboquant"


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("refract_fetch_llama", TOOL)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


fl = _load_tool()

#: a tiny "llama.cpp tree": kept files, and files every trim rule leaves out
TREE = {
    "CMakeLists.txt": b"cmake_minimum_required(VERSION 3.14)\n",
    "LICENSE": b"MIT License\n",
    "include/llama.h": b"#pragma once\nint llama_fake(void);\n",
    "ggml/include/ggml.h": b"GGML_TYPE_TURBO4_0 = 44,\n",
    "src/llama.cpp": b"int llama_fake(void) { return 42; }\n",
    "tools/server/server.cpp": b"int main() {}\n",
}
LEFT_OUT = {
    "tests/test-x.cpp": b"int t;\n",  # TRIM
    "docs/build.md": b"# docs\n",  # TRIM
    "tools/server/webui/app.js": b"js\n",  # TRIM
    "tools/server/tests/t.py": b"py\n",  # TRIM
    "scripts/sync.sh": b"#!/bin/sh\n",  # not in FORK_KEEP
    "convert_hf_to_gguf.py": b"print()\n",  # not in FORK_KEEP
}


def make_archive(path: Path, files: dict[str, bytes], prefix: str = "llama-cpp-turboquant/",
                 extra: Callable[[tarfile.TarFile], None] | None = None) -> Path:
    """A .tar.gz of ``files`` under ``prefix`` (with its directory entries), as git archive
    writes one; ``extra`` may add odd members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        dirs = {prefix.rstrip("/")} if prefix else set()
        for name in files:
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add(prefix + "/".join(parts[:i]))
        for d in sorted(dirs):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o775
            tar.addfile(info)
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            info.mode = 0o664
            tar.addfile(info, io.BytesIO(data))
        if extra is not None:
            extra(tar)
    path.write_bytes(gzip.compress(buf.getvalue(), mtime=0))
    return path


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_digest(files: dict[str, bytes]) -> str:
    """The pin's tree digest, computed here independently of the tool."""
    lines = b"".join(
        name.encode() + b"\0" + hashlib.sha256(data).hexdigest().encode() + b"\n"
        for name, data in sorted(files.items())
    )
    return hashlib.sha256(lines).hexdigest()


@pytest.fixture
def pin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """The turboquant pin re-pointed at a synthetic archive (good.tar.gz in tmp_path/src)."""
    monkeypatch.delenv("REFRACT_TURBOQUANT_ARCHIVE", raising=False)
    src = tmp_path / "src"
    src.mkdir()
    good = make_archive(src / "good.tar.gz", {**TREE, **LEFT_OUT})
    p = fl.FORK_PINS[PIN]
    monkeypatch.setitem(p, "sha256", sha256_of(good))
    monkeypatch.setitem(p, "tree_sha256", tree_digest(TREE))
    # the public URL must never be tried by these tests
    monkeypatch.setitem(p, "url", "http://127.0.0.1:9/never/{commit}.tar.gz")
    return {"archive": good, "dir": src, "pin": p}


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """An empty directory DEST goes into: after a refusal it must be empty again."""
    w = tmp_path / "work"
    w.mkdir()
    return w


def run(dest: Path, *args: str) -> None:
    fl.main([str(dest), "--pin", PIN, *args])


def refused(dest: Path, *args: str) -> str:
    """Run expecting a refusal; returns its one-line message."""
    with pytest.raises(SystemExit) as exc:
        run(dest, *args)
    msg = exc.value.code
    assert isinstance(msg, str) and msg.startswith("refract: "), msg
    assert "\n" not in msg, msg
    return msg


def assert_nothing_left(work: Path) -> None:
    assert list(work.iterdir()) == [], sorted(p.name for p in work.iterdir())


@pytest.fixture
def served(pin: dict[str, Any], http_server: LocalServer) -> str:
    """The base URL of a local http.server holding the pin's archive as a.tar.gz."""
    (http_server.root / "a.tar.gz").write_bytes(pin["archive"].read_bytes())
    return http_server.base


def check_tree(dest: Path, source: str, verified_by: str, digest: str) -> None:
    for name, data in TREE.items():
        assert (dest / name).read_bytes() == data, name
    for name in LEFT_OUT:
        assert not (dest / name).exists(), name
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == \
        sorted([*TREE, fl.STAMP])
    stamp = json.loads((dest / fl.STAMP).read_text())
    pin = fl.FORK_PINS[PIN]
    assert stamp == {
        "flavour": "turboquant",
        "repo": "TheTom/llama-cpp-turboquant",
        "llama_cpp_commit": pin["llama_cpp_commit"],
        "sha256": digest,
        "tree_sha256": pin["tree_sha256"],
        "verified_by": verified_by,
        "source": source,
    }
    assert fl.tree_sha256(dest) == pin["tree_sha256"]


# --------------------------------------------------------------------------- accepted


def test_local_archive_unpacks_trimmed_and_stamps(pin: dict[str, Any], work: Path) -> None:
    dest = work / "llama.cpp-turboquant"
    run(dest, "--archive", str(pin["archive"]))
    check_tree(dest, str(pin["archive"]), "sha256", pin["pin"]["sha256"])
    assert sorted(p.name for p in work.iterdir()) == [dest.name]  # no temporary directory
    # a tree whose stamp matches the pin is left alone: no source needed any more
    pin["archive"].unlink()
    before = (dest / fl.STAMP).stat().st_mtime_ns
    run(dest, "--archive", str(pin["archive"]))
    assert (dest / fl.STAMP).stat().st_mtime_ns == before


def test_archive_from_the_environment_variable_over_http(
    pin: dict[str, Any], work: Path, served: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"{served}/a.tar.gz"
    monkeypatch.setenv("REFRACT_TURBOQUANT_ARCHIVE", url)
    dest = work / "tq"
    run(dest)
    check_tree(dest, url, "sha256", pin["pin"]["sha256"])
    assert sorted(p.name for p in work.iterdir()) == ["tq"]


def test_file_url(pin: dict[str, Any], work: Path) -> None:
    url = pin["archive"].as_uri()
    dest = work / "tq"
    run(dest, "--archive", url)
    check_tree(dest, url, "sha256", pin["pin"]["sha256"])


def test_without_a_source_the_public_archive_url_is_used(
    pin: dict[str, Any], work: Path, http_server: LocalServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base, root = http_server.base, http_server.root
    commit = pin["pin"]["llama_cpp_commit"]
    (root / f"{commit}.tar.gz").write_bytes(pin["archive"].read_bytes())
    monkeypatch.setitem(pin["pin"], "url", base + "/{commit}.tar.gz")
    assert fl.archive_source(PIN) == f"{base}/{commit}.tar.gz"
    dest = work / "tq"
    run(dest)
    check_tree(dest, f"{base}/{commit}.tar.gz", "sha256", pin["pin"]["sha256"])
    # the real pin names the fork's public archive of its commit
    real = _load_tool().FORK_PINS[PIN]
    assert _load_tool().archive_source(PIN) == (
        "https://github.com/TheTom/llama-cpp-turboquant/archive/"
        f"{real['llama_cpp_commit']}.tar.gz")


def test_other_bytes_same_tree_are_verified_by_the_tree(pin: dict[str, Any], work: Path) -> None:
    # what GitHub's archive of the commit is to the snapshot: another top-level directory,
    # files the snapshot leaves out, other bytes; the tree a build reads is the same
    other = make_archive(pin["dir"] / "github.tar.gz",
                         {**TREE, **LEFT_OUT, ".github/workflows/ci.yml": b"on: push\n"},
                         prefix=f"llama-cpp-turboquant-{pin['pin']['llama_cpp_commit']}/")
    assert sha256_of(other) != pin["pin"]["sha256"]
    dest = work / "tq"
    run(dest, "--archive", str(other))
    check_tree(dest, str(other), "tree_sha256", sha256_of(other))


def test_a_stale_tree_is_replaced(pin: dict[str, Any], work: Path) -> None:
    dest = work / "tq"
    (dest / "ggml").mkdir(parents=True)
    (dest / "ggml" / "stale.c").write_text("old")
    (dest / fl.STAMP).write_text(json.dumps({"flavour": "turboquant", "llama_cpp_commit": "0"}))
    run(dest, "--archive", str(pin["archive"]))
    check_tree(dest, str(pin["archive"]), "sha256", pin["pin"]["sha256"])


def test_tree_digest_definition(tmp_path: Path) -> None:
    a = tmp_path / "a"
    for name, data in TREE.items():
        (a / name).parent.mkdir(parents=True, exist_ok=True)
        (a / name).write_bytes(data)
    assert fl.tree_sha256(a) == tree_digest(TREE)
    (a / fl.STAMP).write_text("{}")  # the stamp is not part of the tree
    (a / "empty-dir").mkdir()  # nor are directories
    os.chmod(a / "LICENSE", 0o755)  # nor modes
    assert fl.tree_sha256(a) == tree_digest(TREE)
    (a / "LICENSE").write_bytes(b"MIT Licence\n")
    assert fl.tree_sha256(a) != tree_digest(TREE)
    (a / "LICENSE").write_bytes(TREE["LICENSE"])
    (a / "LICENSE").rename(a / "LICENCE")
    assert fl.tree_sha256(a) != tree_digest(TREE)


def test_registry_pin_stamps_are_unchanged() -> None:
    # trees unpacked before flavours existed keep matching (no refetch, no rebuild)
    for name, pin in fl.PINS.items():
        assert set(pin) == {"package", "version", "sha256", "llama_cpp_commit"}, name
    assert fl.PIN is fl.PINS["default"]


# --------------------------------------------------------------------------- refused


def test_wrong_sha256_is_refused(pin: dict[str, Any], work: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(pin["pin"], "sha256", "0" * 64)
    monkeypatch.setitem(pin["pin"], "tree_sha256", "1" * 64)
    msg = refused(work / "tq", "--archive", str(pin["archive"]))
    assert "0" * 64 in msg and sha256_of(pin["archive"]) in msg
    assert_nothing_left(work)


def test_truncated_archive_is_refused(pin: dict[str, Any], work: Path) -> None:
    data = pin["archive"].read_bytes()
    cut = pin["dir"] / "cut.tar.gz"
    cut.write_bytes(data[: len(data) // 2])
    msg = refused(work / "tq", "--archive", str(cut))
    assert "SHA-256" in msg and "not a readable .tar.gz" in msg
    assert_nothing_left(work)


@pytest.mark.parametrize("where", [0.3, 0.6, 0.9])
def test_tampered_byte_is_refused(pin: dict[str, Any], work: Path, where: float) -> None:
    data = bytearray(pin["archive"].read_bytes())
    data[int(len(data) * where)] ^= 0x01
    bad = pin["dir"] / "tampered.tar.gz"
    bad.write_bytes(bytes(data))
    refused(work / "tq", "--archive", str(bad))
    assert_nothing_left(work)


def test_tampered_file_in_a_valid_archive_is_refused(pin: dict[str, Any], work: Path) -> None:
    # a well-formed archive whose tree differs in one byte of one file
    files = {**TREE, "src/llama.cpp": TREE["src/llama.cpp"].replace(b"42", b"43")}
    bad = make_archive(pin["dir"] / "bad.tar.gz", files)
    msg = refused(work / "tq", "--archive", str(bad))
    assert "unpacked tree" in msg and pin["pin"]["tree_sha256"] in msg
    assert_nothing_left(work)


def _traversal(tar: tarfile.TarFile) -> None:
    data = b"pwned\n"
    info = tarfile.TarInfo("llama-cpp-turboquant/../../evil.txt")
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _absolute(tar: tarfile.TarFile) -> None:
    data = b"pwned\n"
    info = tarfile.TarInfo("/tmp/refract-evil-absolute.txt")
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _symlink_out(tar: tarfile.TarFile) -> None:
    info = tarfile.TarInfo("llama-cpp-turboquant/src/evil")
    info.type = tarfile.SYMTYPE
    info.linkname = "../../../../etc"
    tar.addfile(info)


def _hardlink_out(tar: tarfile.TarFile) -> None:
    info = tarfile.TarInfo("llama-cpp-turboquant/src/passwd")
    info.type = tarfile.LNKTYPE
    info.linkname = "/etc/passwd"
    tar.addfile(info)


def _second_top(tar: tarfile.TarFile) -> None:
    data = b"x\n"
    info = tarfile.TarInfo("another-tree/include/llama.h")
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("extra,reason", [
    (_traversal, "'..'"),
    (_absolute, "absolute path"),
    (_symlink_out, "links outside the tree"),
    (_hardlink_out, "links outside the tree"),
    (_second_top, "not one source tree"),
], ids=["dotdot", "absolute", "symlink", "hardlink", "two-trees"])
def test_unsafe_archives_are_refused(pin: dict[str, Any], work: Path,
                                     monkeypatch: pytest.MonkeyPatch,
                                     extra: Callable[[tarfile.TarFile], None],
                                     reason: str) -> None:
    bad = make_archive(pin["dir"] / "evil.tar.gz", {**TREE, **LEFT_OUT}, extra=extra)
    # refused even with the pinned SHA-256: the member checks do not depend on the digest
    monkeypatch.setitem(pin["pin"], "sha256", sha256_of(bad))
    msg = refused(work / "tq", "--archive", str(bad))
    assert reason in msg, msg
    assert_nothing_left(work)
    assert not (pin["dir"].parent / "evil.txt").exists()
    assert not (work.parent / "evil.txt").exists()
    assert not Path("/tmp/refract-evil-absolute.txt").exists()


def test_not_a_tarball_and_empty_archives_are_refused(pin: dict[str, Any], work: Path) -> None:
    junk = pin["dir"] / "junk.tar.gz"
    junk.write_bytes(b"<html>404</html>")
    assert "not a readable .tar.gz" in refused(work / "tq", "--archive", str(junk))
    empty = make_archive(pin["dir"] / "empty.tar.gz", {}, prefix="")
    assert "SHA-256" in refused(work / "tq", "--archive", str(empty))
    assert_nothing_left(work)


def test_unreachable_sources_are_refused(pin: dict[str, Any], work: Path,
                                         http_server: LocalServer) -> None:
    base = http_server.base
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    msg = refused(work / "tq", "--archive", f"http://127.0.0.1:{port}/a.tar.gz")
    assert "could not download" in msg
    assert "HTTP 404" in refused(work / "tq", "--archive", f"{base}/missing.tar.gz")
    assert "not a file" in refused(work / "tq", "--archive", str(pin["dir"] / "missing.tar.gz"))
    assert "could not download" in refused(
        work / "tq", "--archive", (pin["dir"] / "missing.tar.gz").as_uri())
    assert_nothing_left(work)


def test_interrupted_and_oversized_downloads_are_refused(
    work: Path, served: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    msg = refused(work / "tq", "--archive", f"{served}/cut/a.tar.gz")
    assert "could not download" in msg and "the transfer ended after" in msg
    monkeypatch.setattr(fl, "MAX_DOWNLOAD", 100)
    assert "larger than" in refused(work / "tq", "--archive", f"{served}/a.tar.gz")
    assert_nothing_left(work)


def test_a_refusal_keeps_the_existing_tree(pin: dict[str, Any], work: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    dest = work / "tq"
    (dest / "src").mkdir(parents=True)
    (dest / "src" / "old.c").write_text("old tree")
    monkeypatch.setitem(pin["pin"], "tree_sha256", "1" * 64)
    monkeypatch.setitem(pin["pin"], "sha256", "0" * 64)
    refused(dest, "--archive", str(pin["archive"]))
    assert (dest / "src" / "old.c").read_text() == "old tree"
    assert sorted(p.name for p in work.iterdir()) == ["tq"]


def test_command_line_refusal_is_one_line_without_traceback(tmp_path: Path) -> None:
    # the real pin, a synthetic archive: neither its SHA-256 nor its tree is the pinned one
    bad = make_archive(tmp_path / "fake.tar.gz", TREE)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "REFRACT_TURBOQUANT_ARCHIVE": str(bad)}
    proc = subprocess.run([sys.executable, str(TOOL), str(work / "tq"), "--pin", PIN],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("refract: ") and "is the pinned" in lines[0]
    assert_nothing_left(work)
    # --archive is for the fork pin only: a usage error
    proc = subprocess.run([sys.executable, str(TOOL), str(work / "x"), "--archive", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--archive applies to a fork pin" in proc.stderr
    assert_nothing_left(work)


# --------------------------------------------------------------------------- the real snapshot


def _repack(src: Path, out: Path, prefix: str, change: dict[str, bytes]) -> Path:
    """The files of ``src`` (a tree) as an archive under ``prefix``, plus/replacing ``change``."""
    files = {p.relative_to(src).as_posix(): p.read_bytes()
             for p in src.rglob("*") if p.is_file() and p.name != fl.STAMP}
    files.update(change)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out.write_bytes(gzip.compress(buf.getvalue(), compresslevel=1, mtime=0))
    return out


def test_the_shared_snapshot_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = shared_vendor_file(SNAPSHOT)
    real = fl.FORK_PINS[PIN]
    assert sha256_of(snapshot) == real["sha256"]
    monkeypatch.setenv("REFRACT_TURBOQUANT_ARCHIVE", str(snapshot))
    work = tmp_path / "work"
    work.mkdir()
    dest = work / "llama.cpp-turboquant"
    run(dest)
    stamp = json.loads((dest / fl.STAMP).read_text())
    assert stamp["verified_by"] == "sha256" and stamp["source"] == str(snapshot)
    assert stamp["llama_cpp_commit"] == "69d8e4be47243e83b3d0d71e932bc7aa61c644dc"
    assert fl.tree_sha256(dest) == real["tree_sha256"]
    ggml_h = (dest / "ggml" / "include" / "ggml.h").read_text()
    assert "GGML_TYPE_TURBO2_0" in ggml_h and "GGML_TYPE_TURBO4_0" in ggml_h
    for f in ("include/llama.h", "CMakeLists.txt", "LICENSE", "ggml/CMakeLists.txt",
              "tools/perplexity/perplexity.cpp"):
        assert (dest / f).is_file(), f
    assert not (dest / "tools" / "server" / "webui").exists()
    assert sorted(p.name for p in work.iterdir()) == [dest.name]

    # the public archive's shape (GitHub's top-level directory, files the snapshot leaves
    # out, other bytes) is accepted by its tree; one changed byte in a kernel is not
    commit = real["llama_cpp_commit"]
    public = _repack(dest, tmp_path / f"{commit}.tar.gz", f"llama-cpp-turboquant-{commit}/",
                     {"scripts/sync-ggml.sh": b"#!/bin/sh\n", "docs/build.md": b"# build\n"})
    dest2 = work / "from-public"
    run(dest2, "--archive", str(public))
    assert json.loads((dest2 / fl.STAMP).read_text())["verified_by"] == "tree_sha256"
    assert fl.tree_sha256(dest2) == real["tree_sha256"]
    kernel = "ggml/src/ggml-cpu/ops.cpp"
    data = (dest / kernel).read_bytes()
    tampered = _repack(dest, tmp_path / "tampered.tar.gz", f"llama-cpp-turboquant-{commit}/",
                       {kernel: data[:1000] + bytes([data[1000] ^ 1]) + data[1001:]})
    before = sorted(p.name for p in work.iterdir())
    msg = refused(work / "tampered", "--archive", str(tampered))
    assert "unpacked tree" in msg
    assert sorted(p.name for p in work.iterdir()) == before
