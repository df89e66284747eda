"""Thread count and OpenMP wait policy, on a quiet and on a busy machine, measured side by side.

    python benchmarks/bench_threads.py [--model PATH] [--threads 1,2]
        [--policies unset,PASSIVE,ACTIVE,auto] [--busy 0,2] [--prompts 12] [--n-predict 32]
        [--chunks 4] [--rounds 1]

One fixed workload -- a batched greedy decode of the first N bundled prompts under f16 KV, a
sequential one of four of them (one row per step: R-NIAH's and --sequential's shape) and a
KLD pass of a few corpus windows (f16 vs q8_0), the default axes in small -- runs in
a fresh subprocess for every combination of ``n_threads`` x ``OMP_WAIT_POLICY`` x background
load. "Busy" starts that many CPU-burning processes (``nice 0``, pure Python loops) for the
duration of each run: the state of a machine shared with other jobs. Each row prints the
wall time and its ratio to the best row of the same load, so the default can be chosen by
measurement rather than by ``hardware_concurrency()``. Rounds alternate the combinations so
that drift hits all of them alike. Not a test.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kld_vs_llama_perplexity import default_corpus, default_model, load_now

WORKLOAD = r"""
import json, os, sys, time
if os.environ.pop("BENCH_RAW_DEFAULT", None):  # keep refract from choosing: runtime default
    import refract.system.threads
    refract.system.threads.runnable_others = lambda: 0
from refract import Engine
from refract.system.threads import wait_policy
from refract.inputs.promptset import load_prompts
model, threads, n_prompts, n_predict, chunks, corpus = sys.argv[1:7]
texts = [p.prompt for p in load_prompts(None)[: int(n_prompts)]]
text = open(corpus, encoding="utf-8").read()[:400000]
with Engine(model, n_threads=int(threads)) as eng:
    toks = eng.tokenize(text)
    t0 = time.perf_counter()
    eng.greedy(texts, "ctk=f16,ctv=f16", int(n_predict), 512)
    t1 = time.perf_counter()
    eng.greedy(texts[:4], "ctk=f16,ctv=f16", int(n_predict), 512, sequential=True)
    t2 = time.perf_counter()
    eng.kld(toks, "ctk=f16,ctv=f16", ["ctk=q8_0,ctv=q8_0"], ctx=512, chunks=int(chunks))
    t3 = time.perf_counter()
print(wait_policy(), file=sys.stderr)
print(json.dumps({"greedy_s": t1 - t0, "seq_s": t2 - t1, "kld_s": t3 - t2}))
"""


def burn(stop_at: float) -> None:
    x = 0
    while time.time() < stop_at:
        x += 1


def run_one(args: argparse.Namespace, threads: int, policy: str, busy: int) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if policy == "unset":
        env["BENCH_RAW_DEFAULT"] = "1"
    elif policy != "auto":
        env["OMP_WAIT_POLICY"] = policy
    hogs = [mp.Process(target=burn, args=(time.time() + 3600,), daemon=True) for _ in range(busy)]
    for h in hogs:
        h.start()
    try:
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", WORKLOAD, str(args.model), str(threads), str(args.prompts),
             str(args.n_predict), str(args.chunks), str(args.corpus)],
            capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
    finally:
        for h in hogs:
            h.kill()
            h.join()
    if proc.returncode != 0:
        sys.exit(f"workload failed ({threads} threads, {policy}, busy {busy}):\n"
                 f"{proc.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = wall
    out["chosen"] = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "?"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--corpus", type=Path, default=None)
    ap.add_argument("--threads", default=f"1,{os.cpu_count() or 1}")
    ap.add_argument("--policies", default="unset,PASSIVE,ACTIVE,auto",
                    help="unset = the OpenMP runtime's default; auto = what refract chooses")
    ap.add_argument("--busy", default=f"0,{os.cpu_count() or 1}",
                    help="background CPU burners per run, comma list (0 = quiet)")
    ap.add_argument("--prompts", type=int, default=12)
    ap.add_argument("--n-predict", type=int, default=32)
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    args.model = args.model or default_model()
    args.corpus = args.corpus or default_corpus()
    threads = sorted({int(x) for x in args.threads.split(",")})
    policies = args.policies.split(",")
    loads = [int(x) for x in args.busy.split(",")]

    print(f"# bench_threads  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"model {args.model.name}; {os.cpu_count()} logical CPUs; load at start {load_now()}; "
          f"workload: greedy {args.prompts} prompts x {args.n_predict} (f16) + KLD {args.chunks} "
          f"windows of 512 (f16 vs q8_0), {args.rounds} round(s)")
    combos = list(itertools.product(loads, threads, policies))
    res: dict[tuple[int, int, str], list[dict[str, Any]]] = {c: [] for c in combos}
    for r in range(args.rounds):
        order = combos if r % 2 == 0 else combos[::-1]
        for busy, th, pol in order:
            out = run_one(args, th, pol, busy)
            res[(busy, th, pol)].append(out)
            print(f"  round {r + 1}: busy {busy}, threads {th}, OMP_WAIT_POLICY {pol}: "
                  f"greedy {out['greedy_s']:.2f} s, sequential {out['seq_s']:.2f} s, KLD "
                  f"{out['kld_s']:.2f} s [{out['chosen']}]", file=sys.stderr, flush=True)

    print()
    print("| background burners | n_threads | OMP_WAIT_POLICY | batched greedy s | sequential s "
          "| KLD s | work s | vs best of this load |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|")
    for busy in loads:
        keys = ("greedy_s", "seq_s", "kld_s")
        med = {c: {k: statistics.median(o[k] for o in res[c]) for k in keys}
               for c in combos if c[0] == busy}
        best = min(sum(m.values()) for m in med.values())
        for (b, th, pol), m in med.items():
            work = sum(m.values())
            print(f"| {b} | {th} | {pol} | {m['greedy_s']:.2f} | {m['seq_s']:.2f} | "
                  f"{m['kld_s']:.2f} | {work:.2f} | {work / best:.2f}x |")
    print(f"\nload at end {load_now()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
