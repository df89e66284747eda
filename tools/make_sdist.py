"""Build the release sdist: refract's tracked files plus one pinned llama.cpp tree (issue 20).

    python tools/make_sdist.py [--flavour turboquant|upstream] [-o dist/]

What ships is the TurboQuant flavour (the leaderboard's ``q8_0/turbo4`` needs its turbo
types): the sdist carries ``vendor/llama.cpp-turboquant/`` (filled by tools/fetch_llama.py from
``REFRACT_TURBOQUANT_ARCHIVE`` or the fork's public archive, verified against the pin) and
``vendor/DEFAULT_FLAVOUR``, which makes CMake build that tree when no
``REFRACT_LLAMA_FLAVOUR`` is set; so ``pip install refract-*.tar.gz`` and the wheels
``cibuildwheel`` builds from this sdist have turbo2/3/4, with no network. A git checkout has no
``vendor/DEFAULT_FLAVOUR``: a plain ``pip install .`` keeps the registry (upstream) tree.

The sdist is built from a staging copy of the tracked files (so nothing is written into the
checkout but the fetched, git-ignored vendor tree, which is reused when its stamp matches).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREES = {"turboquant": ("vendor/llama.cpp-turboquant", "turboquant"),
         "upstream": ("vendor/llama.cpp", "default")}
MARKER = "vendor/DEFAULT_FLAVOUR"


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    return [f for f in out.stdout.decode().split("\0") if f and (ROOT / f).is_file()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--flavour", choices=sorted(TREES), default="turboquant")
    ap.add_argument("-o", "--outdir", default=str(ROOT / "dist"))
    args = ap.parse_args()
    tree, pin = TREES[args.flavour]
    src_tree = ROOT / tree
    fetch = subprocess.run([sys.executable, str(ROOT / "tools" / "fetch_llama.py"),
                            str(src_tree), "--pin", pin])
    if fetch.returncode != 0:
        print(f"make_sdist: fetching the {args.flavour} tree failed (see above)", file=sys.stderr)
        return 1
    outdir = Path(args.outdir).resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="refract-sdist-") as td:
        stage = Path(td) / "refract"
        for rel in tracked_files():
            dest = stage / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest)
        shutil.copytree(src_tree, stage / tree, symlinks=False)
        (stage / MARKER).write_text(args.flavour + "\n")
        build = subprocess.run(
            [sys.executable, "-m", "build", "--sdist", "--no-isolation", "-o", str(outdir),
             str(stage)],
            env={**os.environ, "REFRACT_LLAMA_FLAVOUR": args.flavour},
        )
        if build.returncode != 0:
            print("make_sdist: python -m build --sdist failed (see above)", file=sys.stderr)
            return 1
    print(f"make_sdist: {args.flavour} sdist in {outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
