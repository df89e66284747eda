"""Whole score: `refract score` next to the reference tool (refract-llm), one run, same inputs.

    python benchmarks/bench_vs_refract_llm.py --refract-llm VENV/bin/refract
        --llama-bin DIR [--model PATH] [--candidate ctk=q8_0,ctv=q8_0] [--full]
        [--prompts FILE] [--corpus FILE] [--keep DIR]

The reference tool runs a llama.cpp process per prompt and per pass; it needs llama.cpp's
``llama-completion`` (with the trajectory patch its wheel ships under
``refract/llama-cpp-patches/``), ``llama-perplexity`` and ``llama-tokenize`` in ``--llama-bin``,
built from the same llama.cpp tree refract links (see benchmarks/RESULTS.md for the commands).
Both tools score the same model, candidate, prompt set (default: refract-llm's v0.1 set from
../shared/data) and corpus (default: the shared WikiText-2 text), default axes (``--full`` adds
R-NIAH and PLAD on both). refract's time is printed whole and without its Trajectory noise
floor (which the reference tool does not compute), both from the same run, and the scores of
the two reports side by side. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kld_vs_llama_perplexity import default_corpus, default_model, load_now

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def run(cmd: list[str], env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--refract-llm", type=Path, required=True,
                    help="the reference tool's `refract` executable (its own virtual env)")
    ap.add_argument("--llama-bin", type=Path, required=True,
                    help="folder with llama-completion (patched), llama-perplexity, llama-tokenize")
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--candidate", default="ctk=q8_0,ctv=q8_0")
    ap.add_argument("--prompts", type=Path, default=SHARED / "refract-prompts-v0.1.jsonl")
    ap.add_argument("--corpus", type=Path, default=None)
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--keep", type=Path, default=None)
    args = ap.parse_args()
    model = (args.model or default_model()).resolve()
    corpus = (args.corpus or default_corpus()).resolve()
    work = args.keep or Path(tempfile.mkdtemp(prefix="refract-vs-llm-"))
    work.mkdir(parents=True, exist_ok=True)
    common = ["--model", str(model), "--candidate", args.candidate, "--prompts",
              str(args.prompts.resolve()), "--corpus", str(corpus)]
    if args.full:
        common += ["--full", "--rniah-haystack", str(corpus)]
    print(f"# bench_vs_refract_llm  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"model {model.name}; candidate {args.candidate}; {'--full' if args.full else 'default'}"
          f" axes; load at start {load_now()}")

    ours_json = work / "refract.json"
    t_ours = run([sys.executable, "-m", "refract", "score", *common, "--no-progress",
                  "--json-out", str(ours_json)])
    print(f"  refract score: {t_ours:.1f} s (load {load_now()})", file=sys.stderr, flush=True)
    env = dict(os.environ, LLAMA_CPP_BIN_DIR=str(args.llama_bin.resolve()))
    theirs_json = work / "refract-llm.json"
    t_theirs = run([str(args.refract_llm), "score", *common, "--json-out", str(theirs_json)],
                   env=env)
    print(f"  refract-llm score: {t_theirs:.1f} s (load {load_now()})", file=sys.stderr,
          flush=True)

    ours = json.loads(ours_json.read_text())
    theirs = json.loads(theirs_json.read_text())
    timings = ours.get("timings", {})
    floor_s = float(timings.get("gtm_noise_floor_s", 0.0))
    print()
    print("| run | seconds | vs refract-llm |")
    print("|---|---:|---:|")
    print(f"| refract-llm {theirs.get('framework_version', '?')} (a process per prompt/pass) | "
          f"{t_theirs:.1f} | 1.00x |")
    print(f"| refract score (whole process) | {t_ours:.1f} | {t_ours / t_theirs:.2f}x |")
    print(f"| refract score without its noise floor ({floor_s:.1f} s) | {t_ours - floor_s:.1f} | "
          f"{(t_ours - floor_s) / t_theirs:.2f}x |")
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in timings.items() if k != "total_s")
    print(f"\nrefract's own timings: {parts}")
    print("\n| axis | refract | refract-llm |")
    print("|---|---:|---:|")
    for axis in ("gtm", "kld", "rniah", "plad"):
        a = ours.get("axes", {}).get(axis, {})
        b = theirs.get("axes", {}).get(axis, {})
        if a or b:
            print(f"| {axis} | {a.get('score')} | {b.get('score')} |")
    print(f"| composite | {ours.get('composite')} | {theirs.get('composite')} |")
    print(f"\nload at end {load_now()}; reports in {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
