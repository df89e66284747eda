"""What a sweep costs against scoring its configs one at a time, one run (issue 23).

    python benchmarks/bench_sweep.py [--model demo] [--threads 2] [--ctx 256] [--chunks 30]
        [--n-predict 32] [--types ...] [--pairs ...] [--json-out PATH]

Three ways to score the default grid of the linked build (18 configs on the TurboQuant build,
12 upstream) against the f16 reference, measured in one run on one machine:

1. ``refract sweep`` (pruning on: a first round on a third of the prompts and chunks, the
   survivors on the whole budget);
2. ``refract sweep --no-prune`` (every config on the whole budget, one model load, the
   reference shared);
3. one ``refract score`` per config (``run_score`` with a fresh engine each: its own model
   load, reference decode, noise floor and KLD reference pass; the process start-up a real
   ``refract score`` also pays is not counted, so the ratios are conservative).

All three run with the persistent reference store off (each computes its reference itself, as
before the store existed). ``--store-side`` adds a fourth: one ``refract score`` per config on
an empty store of its own, as a user's scores run by default now (every config after the first
reuses the noise floor), and prints the sweeps' ratios against it too.

The order resists a machine whose speed drifts (these shared machines drift by 10 % within an
hour): half of the one-at-a-time scores (every second config) run before the two sweeps and
the other half after them, so a steady slowdown weighs on both sides alike; with
``--store-side`` each config's store-on score follows its fresh one. ``--order sequential``
runs the sweeps first and then every score (the runs before 2026-12-07 did so, and ran the
store-on scores after all the fresh ones).

Prints the wall times, the ratios (targets: ≤ 0.35× with pruning, ≤ 0.6× without), the
survivors, both recommendations, and checks that every survivor's composite and axis scores
equal its separate score exactly. The budget defaults are smaller than ``refract score``'s
(ctx 256, 30 chunks, 32 tokens per prompt) so that the one-at-a-time side finishes in
minutes; the prompt set is the bundled one (30 prompts).

Not a test: wall times on whatever machine runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from typing import Any

from refract.options import ScoreOptions
from refract.scoring import run_score
from refract.sweep import SweepSettings, run_sweep


def _peak_rss() -> int | None:
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def runnable(model: str, opts: ScoreOptions, settings: SweepSettings) -> list[str]:
    """The grid's configs the model can run, as ``run_sweep`` finds them (its own helpers),
    known before any side runs so that the one-at-a-time side can go around the sweeps."""
    from refract.engine.facade import Engine
    from refract.scoring.plan import known_kv_types, prepare_score
    from refract.sweep.grid import build_grid
    from refract.sweep.run import _feasible, row_size

    grid = build_grid(known_kv_types() or [], row_size, types=settings.types,
                      pairs=settings.pairs, reference=opts.reference)
    plan = prepare_score(model, [e.label for e in grid], opts)
    engine = Engine(plan.model_path, n_threads=opts.threads)
    try:
        return [e.label for e in _feasible(engine, grid)[0]]
    finally:
        engine.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--chunks", type=int, default=30)
    ap.add_argument("--n-predict", type=int, default=32)
    ap.add_argument("--types", default=None)
    ap.add_argument("--pairs", default=None)
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--store-side", action="store_true",
                    help="also score one at a time with the reference store on")
    ap.add_argument("--order", choices=("around", "sequential"), default="around",
                    help="around: half the separate scores before the sweeps, half after")
    args = ap.parse_args()
    opts = ScoreOptions(threads=args.threads, ctx=args.ctx, chunks=args.chunks,
                        n_predict=args.n_predict, reference_cache=False)
    out: dict[str, Any] = {"settings": vars(args)}

    settings = SweepSettings(types=args.types, pairs=args.pairs)
    configs = runnable(args.model, opts, settings)
    separate: dict[str, dict[str, Any]] = {}
    t_one: dict[str, float] = {}
    t_one_store: dict[str, float] = {}
    store_dir = tempfile.TemporaryDirectory()
    store_differs: list[str] = []

    def same(rep: dict[str, Any], c: str) -> bool:
        ref = separate[c]
        return rep["composite"] == ref["composite"] and all(
            (rep["axes"][k] or {}).get("score") == (ref["axes"][k] or {}).get("score")
            for k in ref["axes"])

    def one_at_a_time(cs: list[str]) -> None:
        for c in cs:
            t1 = time.perf_counter()
            separate[c] = run_score(args.model, c, opts)
            t_one[c] = time.perf_counter() - t1
            line = f"  score {c}: {t_one[c]:.1f} s"
            if args.store_side:
                saved = os.environ.get("REFRACT_REFERENCE_CACHE_DIR")
                os.environ["REFRACT_REFERENCE_CACHE_DIR"] = store_dir.name
                try:
                    t1 = time.perf_counter()
                    rep = run_score(args.model, c, opts.replace(reference_cache=True))
                    t_one_store[c] = time.perf_counter() - t1
                finally:
                    if saved is None:
                        del os.environ["REFRACT_REFERENCE_CACHE_DIR"]
                    else:
                        os.environ["REFRACT_REFERENCE_CACHE_DIR"] = saved
                line += f", store on {t_one_store[c]:.1f} s"
                if not same(rep, c):
                    store_differs.append(c)
                    line += " (the store's score differs from the fresh one)"
            print(f"{line}, composite {separate[c]['composite']}", flush=True)

    before = configs[::2] if args.order == "around" else []
    one_at_a_time(before)
    t = time.perf_counter()
    pruned = run_sweep(args.model, opts, settings)
    t_pruned = time.perf_counter() - t
    print(f"sweep (pruning on): {t_pruned:.1f} s, timings {pruned.summary['timings']}",
          flush=True)
    t = time.perf_counter()
    full = run_sweep(args.model, opts, SweepSettings(types=args.types, pairs=args.pairs,
                                                     prune=False))
    t_full = time.perf_counter() - t
    assert configs == [e["config"] for e in full.summary["configs"] if e["status"] != "skipped"]
    print(f"grid: {len(full.summary['configs'])} configs, {len(configs)} runnable; "
          f"sweep {t_pruned:.1f} s (pruned), {t_full:.1f} s (--no-prune)", flush=True)
    one_at_a_time([c for c in configs if c not in before])
    store_dir.cleanup()
    t_sep = sum(t_one.values())
    t_store = sum(t_one_store.values()) if args.store_side else None

    survivors = sorted(pruned.reports)
    exact = all(same(pruned.reports[c], c) for c in survivors)
    exact_full = all(same(full.reports[c], c) for c in full.reports)
    pr = pruned.summary
    print()
    print(f"one at a time ({len(configs)} x refract score): {t_sep:.1f} s")
    print(f"sweep, pruning on : {t_pruned:.1f} s = {t_pruned / t_sep:.3f}x one at a time "
          f"(target <= 0.35); {len(survivors)} of {len(configs)} survived the first round "
          f"({pr['pruning']['first_round']})")
    print(f"sweep, --no-prune : {t_full:.1f} s = {t_full / t_sep:.3f}x one at a time "
          f"(target <= 0.6)")
    if t_store is not None:
        print(f"one at a time with the reference store on: {t_store:.1f} s; sweep "
              f"{t_pruned / t_store:.3f}x (pruned), {t_full / t_store:.3f}x (--no-prune)")
    print(f"survivors equal their separate scores exactly: {exact} (no-prune: {exact_full})")
    if args.store_side:
        print(f"every store-on score equals its fresh one: {not store_differs}"
              + (f" (differ: {', '.join(store_differs)})" if store_differs else ""))
    # pruning may not change the answer: every drop is below the band at the confidence on
    # the full budget too (the --no-prune run), the first round's Trajectory is the full one
    full_by = {e["config"]: e for e in full.summary["configs"]}
    confirmed = True
    for e in pr["configs"]:
        if e["status"] == "pruned":
            f = full_by[e["config"]]
            ok = f.get("p_target") is not None and 1.0 - f["p_target"] >= pr["confidence"]
            confirmed &= ok
            print(f"  pruned {e['config']}: {e['pruned']['evidence']}; full budget: "
                  f"{f.get('composite')} P(>= {pr['target_band']}) = {f.get('p_target')}"
                  f"{'' if ok else '  NOT CONFIRMED'}")
    same_answer = (pr["recommendation"]["text"] == full.summary["recommendation"]["text"]
                   and pr["frontier"] == full.summary["frontier"])
    print(f"every drop confirmed by the full budget: {confirmed}; the same recommendation "
          f"and frontier with and without pruning: {same_answer}")
    out.update(confirmed=confirmed, same_answer=same_answer)
    print(f"recommendation (pruned)  : {pr['recommendation']['text']}")
    print(f"recommendation (no-prune): {full.summary['recommendation']['text']}")
    print(f"frontier (pruned)  : {pr['frontier']}")
    print(f"frontier (no-prune): {full.summary['frontier']}")
    print(f"memory plan: {pr['memory']}; process peak RSS {_peak_rss()}")
    out.update(t_pruned=t_pruned, t_full=t_full, t_separate=t_sep, t_separate_store=t_store,
               survivors=survivors,
               exact=exact, exact_full=exact_full, store_differs=store_differs,
               summary_pruned=pr,
               summary_full=full.summary)
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump(out, fh, indent=1, default=str)


if __name__ == "__main__":
    main()
