"""A second ``refract score`` of the same model and settings with the reference store, against
the first (issue 24's target: <= 0.6x).

    python benchmarks/bench_store.py [--model demo] [--chat-template] [--threads 2]
        [--candidate ctk=q8_0,ctv=q8_0] [--corpus FILE] [--full-budget "--rniah-lengths ..."]

Runs the real command line (``python -m refract score``, process start-up included) on an
empty store of its own (``REFRACT_REFERENCE_CACHE_DIR`` in a temporary directory): the first
run computes and stores the reference's noise floor (and, with ``--full``, its R-NIAH answers
and PLAD decodes), the second reuses them. Two settings: the default axes (Trajectory and KLD,
the README's command) and ``--full`` at a bounded R-NIAH budget. Prints the wall times, the
ratio, where the time went (the report's timings) and whether the second report measured
exactly what the first did. Not a test: both numbers come from one run on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from refract.report.io import measured_content

TARGET = 0.6
AXIS_KEYS = ("gtm_s", "gtm_noise_floor_s", "kld_s", "rniah_s", "plad_s")


def score(args: list[str], env: dict[str, str], out: Path) -> tuple[float, dict[str, Any]]:
    cmd = [sys.executable, "-m", "refract", "score", *args, "--json-out", str(out),
           "--no-progress", "--overwrite"]
    t = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"refract score failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return time.perf_counter() - t, json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--candidate", default="ctk=q8_0,ctv=q8_0")
    ap.add_argument("--chat-template", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--corpus", default=None,
                    help="--corpus (and --rniah-haystack) for both runs, e.g. a WikiText-2 file")
    ap.add_argument("--full-budget", default="--rniah-lengths 2048 --rniah-n-predict 64",
                    help="R-NIAH options for the --full setting ('' skips that setting)")
    ap.add_argument("--skip-default", action="store_true")
    a = ap.parse_args()

    base = ["--model", a.model, "--candidate", a.candidate]
    if a.chat_template:
        base.append("--chat-template")
    if a.threads:
        base += ["--threads", str(a.threads)]
    if a.corpus:
        base += ["--corpus", a.corpus, "--rniah-haystack", a.corpus]
    settings: list[tuple[str, list[str]]] = []
    if not a.skip_default:
        settings.append(("default axes", []))
    if a.full_budget:
        settings.append((f"--full {a.full_budget}", ["--full", *shlex.split(a.full_budget)]))
    print(f"model {a.model}, candidate {a.candidate}, load {os.getloadavg()[0]:.2f}")
    rows = []
    for name, extra in settings:
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "REFRACT_REFERENCE_CACHE_DIR": str(Path(tmp) / "store")}
            t1, r1 = score(base + extra, env, Path(tmp) / "first.json")
            t2, r2 = score(base + extra, env, Path(tmp) / "second.json")
        same = measured_content(r1) == measured_content(r2)
        reused = r2["extras"]["reference_store"]["reused"]
        rows.append((name, t1, t2, same))
        print(f"\n{name}: first {t1:.1f} s, second {t2:.1f} s = {t2 / t1:.3f}x "
              f"(target <= {TARGET}x); reused {reused}; measured equal: {same}; "
              f"composite {r1['composite']:.2f} / {r2['composite']:.2f}")
        for key in AXIS_KEYS:
            if key in r1["timings"]:
                before, after = r1["timings"][key], r2["timings"].get(key, 0.0)
                print(f"  {key:<18} {before:7.1f} s -> {after:7.1f} s")
    print("\n| setting | first s | second s | ratio | equal |")
    print("|---|---:|---:|---:|---|")
    for name, t1, t2, same in rows:
        print(f"| {name} | {t1:.1f} | {t2:.1f} | {t2 / t1:.3f}x | {same} |")
    if not all(r[3] for r in rows):
        sys.exit("a reused-reference report differs from the fresh one")


if __name__ == "__main__":
    main()
