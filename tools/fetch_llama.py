"""Fill vendor/llama.cpp from a pinned registry distribution (run by CMake at configure time).

The llama-cpp-python sdist carries a full llama.cpp tree. We download it by package name
through pip (never naming a registry host), verify its SHA-256, and unpack only its
``vendor/llama.cpp`` subtree, trimmed of what a library build never reads (models, docs,
tests, web UI, git metadata). A stamp file records what was unpacked; a tree whose stamp
matches the pin is left alone, so rebuilds do no network work.

Two pins are named. ``default`` is the tree every build uses (vendor/llama.cpp).
``compat`` is an older upstream tree of the era the TurboQuant fork is based on (upstream
b8871, 2026-04-21); CI builds the extension against it through REFRACT_LLAMA_CPP_DIR to
prove csrc/ still compiles and works against that era's llama.h (.ci/compat.sh).

Usage: python tools/fetch_llama.py DEST_DIR [--pin default|compat]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PINS = {
    "default": {
        "package": "llama-cpp-python",
        "version": "0.3.36",
        "sha256": "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e",
        # upstream llama.cpp commit vendored by that sdist (2026-10-01)
        "llama_cpp_commit": "0c1e57098bba43ac29e6e3b677cdceebdd22334f",
    },
    "compat": {
        "package": "llama-cpp-python",
        "version": "0.3.21",
        "sha256": "533636e23953d1efcf16ddf5862d963405e4bc0bccfc04ba90e9ee7afefefa75",
        # upstream llama.cpp release b8942 (2026-04-26, ggml 0.10.0), the sdist nearest to
        # upstream b8871 (2026-04-21) that the TurboQuant fork is based on: 0.3.20 vendors a
        # tree older than b8790 (2026-04-14), 0.3.22 one newer than b8942.
        "llama_cpp_commit": "f53577432541bb9edc1588c4ef45c66bf07e4468",
    },
}
PIN = PINS["default"]
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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download(pin: dict, workdir: Path) -> Path:
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


def _extract(pin: dict, sdist: Path, dest: Path) -> None:
    prefix = f"llama_cpp_python-{pin['version']}/vendor/llama.cpp/"
    tmp = Path(tempfile.mkdtemp(prefix=".llama.cpp-", dir=dest.parent))
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            members = []
            for m in tar.getmembers():
                if not m.name.startswith(prefix):
                    continue
                rel = m.name[len(prefix):]
                if not rel or rel.startswith(TRIM) or ".." in Path(rel).parts:
                    continue
                if not (m.isfile() or m.isdir()):
                    continue
                m.name = rel
                members.append(m)
            tar.extractall(tmp, members=members, filter="data")
        (tmp / STAMP).write_text(json.dumps(pin, indent=2) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description="Fill DEST_DIR with a pinned llama.cpp source tree.")
    ap.add_argument("dest", metavar="DEST_DIR")
    ap.add_argument("--pin", choices=sorted(PINS), default="default",
                    help="which pinned tree (default: %(default)s)")
    args = ap.parse_args()
    pin = PINS[args.pin]
    dest = Path(args.dest).resolve()
    stamp = dest / STAMP
    if stamp.is_file():
        try:
            if json.loads(stamp.read_text()) == pin:
                return
        except ValueError:
            pass
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="refract-sdist-") as td:
        sdist = _download(pin, Path(td))
        digest = _sha256(sdist)
        if digest != pin["sha256"]:
            sys.exit(
                f"refract: SHA-256 mismatch for {sdist.name}: got {digest}, pinned {pin['sha256']}"
            )
        _extract(pin, sdist, dest)
    print(f"refract: llama.cpp {pin['llama_cpp_commit'][:7]} ({args.pin} pin) unpacked into {dest}",
          flush=True)


if __name__ == "__main__":
    main()
