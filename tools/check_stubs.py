"""Check (or update) the committed type stub of refract._core against the installed module.

``src/refract/_core.pyi`` is committed and shipped in the wheel beside ``py.typed``. After a
change to the bindings (csrc/python/) rebuild, then run ``python tools/check_stubs.py
--update``. CI runs it without ``--update`` against the wheel it installed: the stub that
nanobind's stubgen writes for that module must equal the committed one, and the installed
package must carry both ``_core.pyi`` and ``py.typed``; any difference fails the run.

Usage: python tools/check_stubs.py [--update]
"""

from __future__ import annotations

import argparse
import difflib
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "src" / "refract" / "_core.pyi"


def generate(out: Path) -> str:
    # run outside the source tree so that the *installed* refract is the one imported
    subprocess.run(
        [sys.executable, "-m", "nanobind.stubgen", "-q", "-m", "refract._core", "-o", str(out)],
        check=True, cwd=tempfile.gettempdir(),
    )
    return out.read_text(encoding="utf-8")


def installed_dirs() -> list[Path]:
    """The installed package's directories (an editable install has two)."""
    proc = subprocess.run(
        [sys.executable, "-c",
         "import refract._core, refract; print(*refract.__path__, sep='\\n')"],
        check=True, capture_output=True, text=True, cwd=tempfile.gettempdir(),
    )
    return [Path(line) for line in proc.stdout.splitlines() if line.strip()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--update", action="store_true", help="rewrite the committed stub")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="refract-stub-") as td:
        fresh = generate(Path(td) / "_core.pyi")
    if args.update:
        COMMITTED.write_text(fresh, encoding="utf-8")
        print(f"wrote {COMMITTED}")
        return 0
    problems: list[str] = []
    committed = COMMITTED.read_text(encoding="utf-8") if COMMITTED.is_file() else ""
    if fresh != committed:
        diff = difflib.unified_diff(
            committed.splitlines(keepends=True), fresh.splitlines(keepends=True),
            "src/refract/_core.pyi (committed)", "stubgen of the installed refract._core",
        )
        sys.stdout.writelines(diff)
        problems.append(
            "the committed stub differs from the built extension: rebuild, then run "
            "`python tools/check_stubs.py --update` and commit src/refract/_core.pyi"
        )
    dirs = installed_dirs()
    where = ", ".join(map(str, dirs))
    for name in ("_core.pyi", "py.typed"):
        found = [d / name for d in dirs if (d / name).is_file()]
        if not found:
            problems.append(f"the installed package ({where}) has no {name}")
        elif name == "_core.pyi" and any(f.read_text(encoding="utf-8") != fresh for f in found):
            problems.append(f"the installed {name} differs from the built extension")
    for p in problems:
        print(f"stubs: {p}", file=sys.stderr)
    if not problems:
        print(f"stubs: src/refract/_core.pyi matches the installed refract._core ({where})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
