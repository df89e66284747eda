"""A whole score, axis by axis: refract's time next to the floor for the same work, one run.

    python benchmarks/bench_score.py [--model PATH] [--candidate ctk=q8_0,ctv=q8_0]
        [--threads 2] [--prompts 12] [--n-predict 64] [--ctx 512] [--chunks 8]
        [--rniah-lengths 4096] [--rniah-n-predict 64] [--skip-sequential]

Each axis runs the way ``refract score`` runs it (fresh reference cache, reference and
candidate), then its floor is measured on the same engine, same KV configs, same prompts and
token counts: a bare batched ``llama_decode`` loop with no metric work (``Engine.bench_decode``:
no argmax, no top-k, no kernel, no detokenizing), split into prefill and generation steps.

- A trajectory: greedy of every prompt (chat template off), both configs, the candidate
  teacher-forced along each reference trajectory; floor = the same prompts, n_predict
  steps each, same group, plus a bare prefill of each prompt + reference trajectory with
  logits from the prompt's last token on, on the candidate. Also the batched vs sequential
  reference decode (issue 14's target: batched >= 3x sequential), unless --skip-sequential.
- B KLD: llama-perplexity's windows; floor = every window decoded with logits for its scored
  second half, once per config (what llama-perplexity's base and KLD passes decode).
- C R-NIAH: cells of a length as parallel sequences; refract early-stop and full-length runs;
  floor = the same cell prompts prefilled in full (no prefix reuse) plus n_predict steps each,
  so refract's prefix reuse and early stop can take it below the floor.
- D PLAD: anchors and perturbed texts as one batch; floor = the same texts and n_predict steps.

Not a test: the numbers are wall times on whatever machine runs it (print the load with
them); every ratio compares two numbers measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kld_vs_llama_perplexity import default_corpus, default_model, load_now

REFERENCE = "ctk=f16,ctv=f16"
TARGET_FLOOR_RATIO = 1.15
TARGET_BATCHED_SPEEDUP = 3.0


#: process CPU seconds of every timed() call and floor(), by label (a fairer view on a machine
#: shared with other jobs: the wall time there depends on how many cores we were given)
CPU: dict[str, float] = {}


def timed(fn: Callable[[], Any], label: str = "") -> tuple[Any, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    if label:
        CPU[label] = CPU.get(label, 0.0) + time.process_time() - c0
    return out, time.perf_counter() - t0


def floor(engine: Any, prompts: Sequence[np.ndarray], n_gen: Sequence[int], configs: Sequence[str],
          *, ctx: int, group: int, logits_from: int = -1) -> dict[str, float]:
    """Bare decode of the same shapes, once per KV config; seconds summed over configs."""
    tot = {"prefill_s": 0.0, "decode_s": 0.0, "cpu_s": 0.0}
    for kv in configs:
        c0 = time.process_time()
        r = engine.bench_decode(prompts, kv, n_gen, ctx=ctx, group=group, logits_from=logits_from)
        tot["cpu_s"] += time.process_time() - c0
        tot["prefill_s"] += r["prefill_s"]
        tot["decode_s"] += r["decode_s"]
    tot["total_s"] = tot["prefill_s"] + tot["decode_s"]
    return tot


def machine() -> str:
    model = platform.processor() or "?"
    flags = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("Flags:"):
                fl = set(line.split(":", 1)[1].split())
                flags = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni")
                                  if f in fl)
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs, {flags or 'no AVX2'}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--candidate", default="ctk=q8_0,ctv=q8_0")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=12, help="first N prompts of the bundled set")
    ap.add_argument("--n-predict", type=int, default=64)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--rniah-lengths", default="4096")
    ap.add_argument("--rniah-n-predict", type=int, default=64)
    ap.add_argument("--skip-sequential", action="store_true")
    ap.add_argument("--skip", default="", help="comma list of axes to skip: a,b,c,d")
    args = ap.parse_args()

    from refract import Engine
    from refract.axes.plad import plan_plad, run_plad
    from refract.axes.rniah import run_rniah
    from refract.axes.trajectory import reference_trajectories, run_trajectory
    from refract.inputs.promptset import load_prompts

    model = args.model or default_model()
    cand = args.candidate
    configs = (REFERENCE, cand)
    skip = set(args.skip.split(",")) if args.skip else set()
    prompts = load_prompts(None)[: args.prompts]
    rows: list[tuple[str, float, dict[str, float], str]] = []

    def done(name: str, t: float, fl: dict[str, float], note: str) -> None:
        rows.append((name, t, fl, note))
        print(f"  {name}: refract {t:.2f} s, floor {fl['total_s']:.2f} s (load {load_now()})",
              file=sys.stderr, flush=True)

    print(f"# bench_score  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"machine: {machine()}; threads {args.threads}; load at start {load_now()}")
    print(f"model: {model.name}; reference {REFERENCE}; candidate {cand}")
    with Engine(model, n_threads=args.threads) as eng:
        if "a" not in skip:
            texts = [p.prompt for p in prompts]
            _, t = timed(lambda: run_trajectory(eng, prompts, reference=REFERENCE, candidate=cand,
                                                n_predict=args.n_predict, ctx=args.ctx),
                         "A trajectory")
            ids = [eng.prompt_ids(s) for s in texts]
            fl = floor(eng, ids, [args.n_predict] * len(ids), configs, ctx=args.ctx, group=64)
            # the axis also teacher-forces the candidate along each reference trajectory (the
            # reference's rows are those of its own greedy decode): that prefill is part of the
            # same work, so the floor prefills the same sequences bare on the candidate, the
            # very trajectories the axis teacher-forced (from the engine's reference cache)
            refs, _, _ = reference_trajectories(eng, texts, REFERENCE, n_predict=args.n_predict,
                                                ctx=args.ctx, chat_template=False,
                                                sequential=False)
            tf_rows = 0
            for pid, ref in zip(ids, refs, strict=True):
                seq = np.concatenate([pid, ref]).astype(pid.dtype)
                part = floor(eng, [seq], [0], [cand], ctx=max(args.ctx, int(seq.size)), group=1,
                             logits_from=int(pid.size) - 1)
                tf_rows += int(ref.size)
                for k in ("prefill_s", "cpu_s", "total_s"):
                    fl[k] += part[k]
            done("A trajectory", t, fl, f"{len(ids)} prompts x {args.n_predict} tokens, then "
                 f"teacher-forced ({tf_rows} rows per config)")
            if not args.skip_sequential:
                _, tb = timed(lambda: eng.greedy(texts, REFERENCE, args.n_predict, args.ctx), "b")
                _, ts = timed(lambda: eng.greedy(texts, REFERENCE, args.n_predict, args.ctx,
                                                 sequential=True), "s")
                print(f"trajectory reference decode: batched {tb:.2f} s wall / {CPU['b']:.2f} s "
                      f"CPU, sequential {ts:.2f} s / {CPU['s']:.2f} s CPU: speedup {ts / tb:.2f}x "
                      f"wall, {CPU['s'] / CPU['b']:.2f}x CPU (target >= "
                      f"{TARGET_BATCHED_SPEEDUP:g}x)")
                # the same with llama_decode alone: how much batching can give on this machine
                n_gen = [args.n_predict] * len(ids)
                fb = floor(eng, ids, n_gen, [REFERENCE], ctx=args.ctx, group=64)
                fs = floor(eng, ids, n_gen, [REFERENCE], ctx=args.ctx, group=1)
                print(f"bare llama_decode of the same shapes: batched {fb['total_s']:.2f} s, one "
                      f"prompt at a time {fs['total_s']:.2f} s: speedup "
                      f"{fs['total_s'] / fb['total_s']:.2f}x (the most batching gives here)")
            eng.release()
        if "b" not in skip:
            tokens = eng.tokenize(default_corpus().read_text(encoding="utf-8"))
            _, t = timed(lambda: eng.kld(tokens, REFERENCE, [cand], ctx=args.ctx,
                                         chunks=args.chunks), "B KLD")
            from refract import _core

            n_chunks, first, _last = _core.chunk_plan(int(tokens.size), args.ctx, args.chunks)
            wins = [tokens[i * args.ctx:(i + 1) * args.ctx] for i in range(n_chunks)]
            fl = floor(eng, wins, [0] * n_chunks, configs, ctx=args.ctx, group=1,
                       logits_from=first)
            done("B KLD", t, fl, f"{n_chunks} windows of {args.ctx}, logits from {first}")
            eng.release()
        if "c" not in skip:
            hay = default_corpus().read_text(encoding="utf-8")
            lengths = [int(x) for x in args.rniah_lengths.split(",")]
            kw = dict(reference=REFERENCE, candidate=cand, lengths=lengths,
                      n_predict=args.rniah_n_predict)
            eng.reference_cache.clear()
            r_full, t_full = timed(lambda: run_rniah(eng, hay, early_stop=False, **kw),
                                   "C R-NIAH full-length")
            eng.reference_cache.clear()
            r, t = timed(lambda: run_rniah(eng, hay, early_stop=True, **kw), "C R-NIAH early-stop")
            cells = r["cells"]
            ids = [eng.prompt_ids("Q", chat_template=True)] if not cells else []
            if cells:
                # the same prompts the cells decoded, rebuilt by the planner
                from refract.axes.rniah import schedule_rniah

                sched = schedule_rniah(eng, hay, up_to=max(lengths), lengths=lengths,
                                  positions=(0.1, 0.5, 0.9), n_trials=1, seed=42,
                                  n_predict=args.rniah_n_predict, early_stop=True)
                fl = {"prefill_s": 0.0, "decode_s": 0.0, "total_s": 0.0, "cpu_s": 0.0}
                for g in sched.groups:
                    part = floor(eng, [sched.prompts[i] for i in g],
                                 [args.rniah_n_predict] * len(g), configs, ctx=sched.ctx,
                                 group=len(g))
                    for k in fl:
                        fl[k] += part[k]
                pre = r["prefill"]
                gen = r["generation"]
                note = (f"{len(cells)} cells; prefix reuse {pre['reused_fraction']:.1%}; "
                        f"early stop ref {gen['stopped_early_ref']}/{len(cells)} cand "
                        f"{gen['stopped_early_cand']}/{len(cells)}")
                done("C R-NIAH full-length", t_full, fl, note)
                done("C R-NIAH early-stop", t, fl, "same floor (full length, no reuse)")
                assert r_full["score"] == r["score"]
            eng.release()
        if "d" not in skip:
            _, t = timed(lambda: run_plad(eng, prompts, reference=REFERENCE, candidate=cand,
                                          n_predict=args.n_predict, ctx=args.ctx), "D PLAD")
            texts = plan_plad(prompts).texts()
            ids = [eng.prompt_ids(s, chat_template=True) for s in texts]
            fl = floor(eng, ids, [args.n_predict] * len(ids), configs, ctx=args.ctx,
                       group=len(ids))
            done("D PLAD", t, fl, f"{len(ids)} texts in one batch x {args.n_predict}")
            eng.release()

    print()
    print("| axis | refract wall s | floor wall s (prefill + decode) | wall ratio | "
          "refract CPU s | floor CPU s | CPU ratio | work |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    tot = {"rw": 0.0, "fw": 0.0, "rc": 0.0, "fc": 0.0}
    counted: set[str] = set()
    for name, t, fl, note in rows:
        cpu = CPU.get(name, float("nan"))
        print(f"| {name} | {t:.2f} | {fl['total_s']:.2f} ({fl['prefill_s']:.2f} + "
              f"{fl['decode_s']:.2f}) | {t / fl['total_s']:.2f}x | {cpu:.2f} | "
              f"{fl['cpu_s']:.2f} | {cpu / fl['cpu_s']:.2f}x | {note} |")
        axis = name.split()[0]
        if name != "C R-NIAH full-length":  # the score runs R-NIAH with early stop
            tot["rw"] += t
            tot["rc"] += cpu
        if axis not in counted:
            tot["fw"] += fl["total_s"]
            tot["fc"] += fl["cpu_s"]
            counted.add(axis)
    if rows:
        print(f"| whole score | {tot['rw']:.2f} | {tot['fw']:.2f} | {tot['rw'] / tot['fw']:.2f}x | "
              f"{tot['rc']:.2f} | {tot['fc']:.2f} | {tot['rc'] / tot['fc']:.2f}x | "
              f"sum of the axes; target every axis <= {TARGET_FLOOR_RATIO}x |")
    print(f"\nload at end {load_now()} (1/5 min); a shared machine inflates both columns alike "
          "only roughly: compare ratios, not seconds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
