"""Fill a llama.cpp source tree from a pinned, hash-checked source (run by CMake at configure time).

Two pins are named (``--pin``):

``default``
    The tree every build uses unless told otherwise (vendor/llama.cpp): the llama-cpp-python
    sdist, which carries a full upstream llama.cpp tree. We download it by package name through
    pip (never naming a registry host), verify its SHA-256, and unpack only its
    ``vendor/llama.cpp`` subtree.
``turboquant``
    The TurboQuant fork (TheTom/llama-cpp-turboquant) at a pinned commit: the ``turboquant``
    build flavour (REFRACT_LLAMA_FLAVOUR=turboquant fills vendor/llama.cpp-turboquant). The
    archive is REFRACT_TURBOQUANT_ARCHIVE (or ``--archive``): a local path or a URL (file://,
    http://, https://); without it, the fork's public archive of the commit on GitHub.

How an archive of the fork is verified. The pin records two digests:

- ``sha256``: the SHA-256 of the snapshot archive (``git archive --prefix=llama-cpp-turboquant/``
  of the commit, trimmed, ``gzip -n -9``) that CI and offline users are given. An archive with
  exactly these bytes is accepted as is.
- ``tree_sha256``: the digest of the unpacked tree that a build reads (see :func:`tree_sha256`):
  every kept regular file's path and SHA-256, after the same trim. GitHub's generated archive of
  the commit has other bytes (another top-level directory, files the snapshot leaves out, its
  own gzip), so its SHA-256 cannot be pinned here; it is unpacked into a temporary directory
  and accepted only if its trimmed tree has exactly this digest, i.e. every file the build reads
  is byte-for-byte the pinned commit's. Any other archive is refused, nothing is kept.

Every pin is unpacked trimmed of what a library build never reads (models, docs, tests, web
UI, git metadata), into a temporary directory next to DEST that replaces DEST only once the
tree is complete and verified. A stamp file (REFRACT_SOURCE.json) records what was unpacked; a
tree whose stamp matches the pin is left alone, so rebuilds do no network work. A wrong,
truncated or tampered archive, an archive with a member that would land outside DEST, or a
source that cannot be read ends the run with a one-line error and exit status 1, leaving
neither DEST nor temporary files behind.

Usage: python tools/fetch_llama.py DEST_DIR [--pin default|turboquant] [--archive SRC]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import posixpath
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Any

PINS = {
    "default": {
        "package": "llama-cpp-python",
        "version": "0.3.36",
        "sha256": "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e",
        # upstream llama.cpp commit vendored by that sdist (2026-10-01)
        "llama_cpp_commit": "0c1e57098bba43ac29e6e3b677cdceebdd22334f",
    },
}
PIN = PINS["default"]

# Source trees of a fork, from a git archive of one commit (their stamps are not the pin itself:
# they also record which archive was unpacked and how it was verified).
FORK_PINS: dict[str, dict[str, Any]] = {
    "turboquant": {
        "flavour": "turboquant",
        "repo": "TheTom/llama-cpp-turboquant",
        # branch feature/turboquant-kv-cache, 2026-05-04, "Merge pull request #122",
        # based on upstream b8871
        "llama_cpp_commit": "69d8e4be47243e83b3d0d71e932bc7aa61c644dc",
        # llama-cpp-turboquant-69d8e4b.tar.gz (the snapshot: git archive, trimmed, gzip -n -9)
        "sha256": "534dd79b52005e7bc85fc3de84a60c8c194da169498e345a02890c2453b068b1",
        # tree_sha256() of the trimmed tree of that commit (the snapshot's, and equally that of
        # `git archive` of the full commit, i.e. of GitHub's archive, after the same trim)
        "tree_sha256": "7e0a5859cb406251e9a46ad687c845325483717fa4856a3f99e800091596dc85",
        "url": "https://github.com/TheTom/llama-cpp-turboquant/archive/{commit}.tar.gz",
        "env": "REFRACT_TURBOQUANT_ARCHIVE",
    },
}
ALL_PINS = (*PINS, *FORK_PINS)
STAMP = "REFRACT_SOURCE.json"
# path prefixes (relative to the llama.cpp root) never needed to build the library or tools
TRIM = (
    "models/",
    "docs/",
    "tests/",
    "tools/ui/",
    "tools/server/public",
    "tools/server/webui",
    "tools/server/tests/",
    "media/",
    "benches/",
    "examples/",
    "pocs/",
    "gguf-py/",
    ".git",
    ".github/",
    ".devops/",
)
# what a fork tree keeps at its top level (before TRIM): what the library and the tools build
# from, and the licences; the rest of a full git archive (scripts, Python converters, CI
# files, ...) is left out, so the snapshot and a full archive of the commit give one tree
FORK_KEEP = (
    "AUTHORS",
    "CMakeLists.txt",
    "CMakePresets.json",
    "LICENSE",
    "README.md",
    "cmake/",
    "common/",
    "ggml/",
    "include/",
    "licenses/",
    "src/",
    "tools/",
    "vendor/",
)
# refuse archives that would unpack to more than this (a decompression bomb, or not llama.cpp)
MAX_UNPACKED = 1 << 30
# refuse downloads larger than this (GitHub's full archive of the fork is far smaller)
MAX_DOWNLOAD = 1 << 30
DOWNLOAD_TIMEOUT_S = 60


class Refused(Exception):
    """An archive or source that may not be used; the message is the one-line reason."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tree_sha256(root: Path) -> str:
    """Digest of a source tree: one line ``<path>\\0<sha256 of its bytes>\\n`` per regular file
    (POSIX path relative to ``root``, sorted; the stamp file excluded). Directories, modes and
    timestamps do not enter it: two archives of one commit give the same digest."""
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if rel == STAMP or p.is_symlink() or not p.is_file():
                continue
            files.append((rel, p))
    h = hashlib.sha256()
    for rel, p in sorted(files):
        h.update(rel.encode("utf-8") + b"\0" + _sha256(p).encode("ascii") + b"\n")
    return h.hexdigest()


# --------------------------------------------------------------------------- registry sdists


def _download_sdist(pin: dict[str, str], workdir: Path) -> Path:
    cache = os.environ.get("REFRACT_SDIST_CACHE")
    name = f"llama_cpp_python-{pin['version']}.tar.gz"
    if cache and (Path(cache) / name).is_file():
        return Path(cache) / name
    spec = f"{pin['package']}=={pin['version']}"
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
        "--no-build-isolation", "--disable-pip-version-check", "-d", str(workdir), spec,
    ]
    print(f"refract: fetching {spec} (llama.cpp source) through pip", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(
            f"refract: could not download {spec} through pip:\n{proc.stdout}\n{proc.stderr}\n"
            "Set REFRACT_LLAMA_CPP_DIR=/path/to/llama.cpp to build against a local checkout."
        )
    found = sorted(workdir.glob("*.tar.gz"))
    if not found:
        sys.exit(f"refract: pip reported success but no sdist of {spec} was saved")
    if cache:
        Path(cache).mkdir(parents=True, exist_ok=True)
        shutil.copy2(found[0], Path(cache) / name)
    return found[0]


# --------------------------------------------------------------------------- unpacking


def _safe_name(name: str) -> str:
    """The member name, normalised; refused if it would land outside the unpack root."""
    if name.startswith("/"):
        raise Refused(f"archive member {name!r} has an absolute path")
    if ".." in name.split("/"):
        raise Refused(f"archive member {name!r} points outside the tree ('..')")
    norm = posixpath.normpath(name)
    return "" if norm == "." else norm


def _check_link(m: tarfile.TarInfo, name: str) -> None:
    """Refuse a link whose target is outside the tree (links themselves are never unpacked)."""
    target = m.linkname
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target)
                                  if m.issym() else target)
    if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
        raise Refused(f"archive member {m.name!r} links outside the tree ({target!r})")


def _unpack(archive: Path, tmp: Path, select: Any) -> None:
    """Unpack the members ``select(name)`` maps to a relative path (None: left out) into tmp.

    Every member's name is checked, kept or not: an archive carrying a path that would land
    outside the tree is refused as a whole. Links and special files are never unpacked."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = []
            total = 0
            for m in tar:
                name = _safe_name(m.name)
                if m.issym() or m.islnk():
                    _check_link(m, name)
                rel = select(name + "/" if m.isdir() and name else name)
                if not rel or not (m.isfile() or m.isdir()):
                    continue
                total += m.size
                if total > MAX_UNPACKED:
                    raise Refused(f"{archive.name} unpacks to more than {MAX_UNPACKED >> 20} MiB")
                m.name = rel.rstrip("/")
                members.append(m)
            if not members:
                raise Refused(f"{archive.name} holds no llama.cpp tree")
            tar.extractall(tmp, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise Refused(f"{archive.name} is not a readable .tar.gz "
                      f"({type(e).__name__}: {e})") from None


def _replace(tmp: Path, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)


def _sdist_selector(pin: dict[str, str]) -> Any:
    prefix = f"llama_cpp_python-{pin['version']}/vendor/llama.cpp/"

    def select(name: str) -> str | None:
        if not name.startswith(prefix):
            return None
        rel = name[len(prefix):]
        return None if not rel or rel.startswith(TRIM) else rel

    return select


def _fork_selector(archive: Path) -> Any:
    """One top-level directory (any name: the snapshot's and GitHub's differ), then FORK_KEEP
    minus TRIM below it."""
    tops: set[str] = set()

    def select(name: str) -> str | None:
        top, _, rel = name.partition("/")
        tops.add(top)
        if len(tops) > 1:
            raise Refused(f"{archive.name} is not one source tree "
                          f"(top-level entries {sorted(tops)[:2]})")
        if not rel or rel.startswith(TRIM):
            return None
        keep = any(rel == k or (k.endswith("/") and rel.startswith(k)) for k in FORK_KEEP)
        return rel if keep else None

    return select


def _write_stamp(tmp: Path, stamp: dict[str, Any]) -> None:
    (tmp / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")


def _stamp_matches(dest: Path, name: str) -> bool:
    try:
        stamp = json.loads((dest / STAMP).read_text())
    except (OSError, ValueError):
        return False
    if name in PINS:
        return bool(stamp == PINS[name])
    pin = FORK_PINS[name]
    return isinstance(stamp, dict) and all(
        stamp.get(k) == pin[k] for k in ("flavour", "llama_cpp_commit", "tree_sha256"))


# --------------------------------------------------------------------------- fork archives


def archive_source(name: str, given: str | None = None) -> str:
    """Where the fork's archive comes from: ``given``, else the pin's environment variable,
    else the fork's public archive of the commit."""
    pin = FORK_PINS[name]
    src = given or os.environ.get(pin["env"], "").strip()
    return src or str(pin["url"]).format(commit=pin["llama_cpp_commit"])


def _is_url(src: str) -> bool:
    return "://" in src


def _obtain(src: str, workdir: Path) -> Path:
    """A local file of the archive: the path itself, or the URL downloaded into workdir."""
    if not _is_url(src):
        p = Path(src).expanduser()
        if not p.is_file():
            raise Refused(f"{src} is not a file")
        return p
    out = workdir / "archive.tar.gz"
    print(f"refract: fetching {src}", flush=True)
    try:
        with urllib.request.urlopen(src, timeout=DOWNLOAD_TIMEOUT_S) as resp, \
                out.open("wb") as f:
            size = 0
            for block in iter(lambda: resp.read(1 << 20), b""):
                size += len(block)
                if size > MAX_DOWNLOAD:
                    raise Refused(f"{src} is larger than {MAX_DOWNLOAD >> 20} MiB: "
                                  "not a llama.cpp source archive")
                f.write(block)
            expected = resp.headers.get("Content-Length")
            if expected and expected.isdigit() and int(expected) != size:
                raise Refused(f"could not download {src}: the transfer ended after {size} of "
                              f"{expected} bytes")
    except urllib.error.HTTPError as e:
        raise Refused(f"could not download {src}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise Refused(f"could not download {src}: {e.reason}") from None
    except (OSError, ValueError, http.client.HTTPException) as e:
        # HTTPException: e.g. IncompleteRead, the connection closed before Content-Length
        raise Refused(f"could not download {src}: {type(e).__name__}: {e}") from None
    return out


def fetch_fork(name: str, dest: Path, given: str | None = None) -> dict[str, Any]:
    """Fill ``dest`` with the fork pin ``name``; returns the stamp written. Raises Refused."""
    pin = FORK_PINS[name]
    src = archive_source(name, given)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="refract-archive-") as td:
        archive = _obtain(src, Path(td))
        digest = _sha256(archive)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
        try:
            try:
                _unpack(archive, tmp, _fork_selector(archive))
            except Refused as e:
                if digest != pin["sha256"]:
                    raise Refused(f"{src}: SHA-256 {digest} is not the pinned {pin['sha256']}, "
                                  f"and it cannot be checked by its tree: {e}") from None
                raise
            if digest == pin["sha256"]:
                verified = "sha256"
            else:
                tree = tree_sha256(tmp)
                if tree != pin["tree_sha256"]:
                    raise Refused(
                        f"{src}: neither the archive (SHA-256 {digest}) nor its unpacked tree "
                        f"({tree}) is the pinned {name} {pin['llama_cpp_commit'][:7]} "
                        f"(SHA-256 {pin['sha256']}, tree {pin['tree_sha256']})")
                verified = "tree_sha256"
            stamp = {
                "flavour": pin["flavour"],
                "repo": pin["repo"],
                "llama_cpp_commit": pin["llama_cpp_commit"],
                "sha256": digest,
                "tree_sha256": pin["tree_sha256"],
                "verified_by": verified,
                "source": src,
            }
            _write_stamp(tmp, stamp)
            _replace(tmp, dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return stamp


def fetch_sdist(name: str, dest: Path) -> None:
    pin = PINS[name]
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="refract-sdist-") as td:
        sdist = _download_sdist(pin, Path(td))
        digest = _sha256(sdist)
        if digest != pin["sha256"]:
            raise Refused(
                f"SHA-256 mismatch for {sdist.name}: got {digest}, pinned {pin['sha256']}")
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
        try:
            _unpack(sdist, tmp, _sdist_selector(pin))
            _write_stamp(tmp, pin)
            _replace(tmp, dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Fill DEST_DIR with a pinned llama.cpp source tree.")
    ap.add_argument("dest", metavar="DEST_DIR")
    ap.add_argument("--pin", choices=ALL_PINS, default="default",
                    help="which pinned tree (default: %(default)s)")
    ap.add_argument("--archive", metavar="PATH_OR_URL",
                    help="the fork pin's archive (default: $REFRACT_TURBOQUANT_ARCHIVE, else "
                         "the fork's public archive of the pinned commit)")
    args = ap.parse_args(argv)
    if args.archive and args.pin not in FORK_PINS:
        ap.error(f"--archive applies to a fork pin ({', '.join(FORK_PINS)}), not {args.pin!r}")
    dest = Path(args.dest).resolve()
    if _stamp_matches(dest, args.pin):
        return
    try:
        if args.pin in FORK_PINS:
            stamp = fetch_fork(args.pin, dest, args.archive)
            how = f"verified by {stamp['verified_by']}, from {stamp['source']}"
        else:
            fetch_sdist(args.pin, dest)
            how = "verified by sha256"
    except Refused as e:
        sys.exit(f"refract: {e}")
    commit = (PINS.get(args.pin) or FORK_PINS[args.pin])["llama_cpp_commit"]
    print(f"refract: llama.cpp {commit[:7]} ({args.pin} pin, {how}) unpacked into {dest}",
          flush=True)


if __name__ == "__main__":
    main()
