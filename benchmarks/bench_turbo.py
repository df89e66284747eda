"""TurboQuant on CPU: what a turbo4 V cache costs next to q8_0 and f16, axis by axis, one run.

    build/turbo-dev/bin/python benchmarks/bench_turbo.py [--model demo] [--chunks 8]
        [--n-predict 32] [--ctx 512] [--threads 2] [--full] [--rniah-lengths 2048]
        [--candidates ctk=q8_0,ctv=turbo4 ctk=q8_0,ctv=q8_0 ctk=f16,ctv=f16]
        [--depths 512 1024 2048] [--long-gen 32] [--rounds 1] [--skip-score] [--skip-bare]

Needs a build with the fork's KV types (``REFRACT_LLAMA_FLAVOUR=turboquant``, e.g. the
``build/turbo-dev`` interpreter); the build's flavour and commit are printed first. The first
candidate is the one measured (default ``ctk=q8_0,ctv=turbo4``), the second its baseline
(``ctk=q8_0,ctv=q8_0``); ``ctk=f16,ctv=f16`` is the self-check (candidate = reference).

1. Score. Each candidate is scored in its own ``run_score`` call, each on a fresh engine (the
   call loads the model): the engine's reference cache (R-NIAH and PLAD reference answers, the
   trajectory noise floor) would otherwise make every candidate after the first cheaper. The
   noise floor is off (reference-only work, the same for every candidate). So each axis time
   in the report's ``timings`` is the reference's part (equal for all candidates) plus the
   candidate's own; the table prints them per axis with the turbo/q8_0 and turbo/f16 ratios.
2. Bare engine, one model load, each KV config alone, to find where a difference comes from:
   ``Engine.greedy`` of the prompts (what Axis A decodes per config), ``Engine.kld`` against
   the f16 reference (Axis B as the score runs it), and ``Engine.bench_decode`` (a bare
   ``llama_decode`` loop, no metric work) split into prefill and generation for the prompts
   and n_predict steps, for the KLD windows (prefill with logits, as KLD decodes them), and for
   one sequence per ``--depths`` value (that many corpus tokens prefilled, then ``--long-gen``
   steps at that depth). Work that grows with the cells attention reads (a costly V
   dequantization inside the flash-attention kernel) grows with the depth — quadratically in a
   prefill, linearly per generated token — while the weights' matmuls do not care what the
   cache holds; the extra seconds of the first config over the second at each depth say which.
   ``benchmarks/turbo_fa.c`` then times that kernel alone (ggml's CPU flash attention per KV
   type, and one V row's dequantization), without a model.

Every KV config runs with flash attention on (the fork forces it for turbo types; refract keeps
reference and candidates alike). Not a test: wall and process-CPU seconds on whatever machine
runs it (load printed at start and end); every ratio compares numbers from the same run, with
``--rounds N`` alternating the configs and taking medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench_score import machine
from kld_vs_llama_perplexity import load_now

DEFAULT_CANDIDATES = ("ctk=q8_0,ctv=turbo4", "ctk=q8_0,ctv=q8_0", "ctk=f16,ctv=f16")
REFERENCE = "ctk=f16,ctv=f16"
AXIS_TIMINGS = (("A Trajectory", "gtm_s"), ("B KLD", "kld_s"), ("C R-NIAH", "rniah_s"),
                ("D PLAD", "plad_s"), ("model load", "load_s"), ("whole score", "total_s"))


def short(kv: str) -> str:
    """``ctk=q8_0,ctv=turbo4`` → ``q8_0/turbo4``."""
    parts = dict(p.split("=", 1) for p in kv.split(",") if "=" in p)
    return f"{parts.get('ctk', 'f16')}/{parts.get('ctv', 'f16')}"


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, wall s, process CPU s)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 and a == a and b == b else "—"


def table(title: str, rows: list[tuple[str, list[float], str]], cands: Sequence[str]) -> None:
    """rows: (name, one number per candidate, note)."""
    base = 1 if len(cands) > 1 else 0
    f16 = next((i for i, c in enumerate(cands) if c == REFERENCE), None)
    print(f"\n{title}\n")
    head = " | ".join(short(c) for c in cands)
    extra = f" {short(cands[0])} / {short(cands[base])} |"
    if f16 is not None and f16 != 0:
        extra += f" {short(cands[0])} / f16 |"
    print(f"| | {head} |{extra} |")
    print("|---|" + "---:|" * (len(cands) + extra.count("|")) + "---|")
    for name, vals, note in rows:
        cells = " | ".join("—" if v != v else f"{v:.2f}" for v in vals)
        line = f"| {name} | {cells} | {ratio(vals[0], vals[base])} |"
        if f16 is not None and f16 != 0:
            line += f" {ratio(vals[0], vals[f16])} |"
        print(f"{line} {note} |")


def score_part(args: argparse.Namespace) -> None:
    from refract.scoring import run_score

    cands: list[str] = args.candidates
    wall: dict[str, dict[str, list[float]]] = {c: {} for c in cands}
    cpu: dict[str, list[float]] = {c: [] for c in cands}
    composite: dict[str, Any] = {}
    opts: dict[str, Any] = dict(chunks=args.chunks, ctx=args.ctx, n_predict=args.n_predict,
                                threads=args.threads, noise_floor=False)
    if args.full:
        opts.update(full=True, rniah_lengths=tuple(args.rniah_lengths),
                    rniah_n_predict=args.rniah_n_predict)
    for r in range(args.rounds):
        order = cands if r % 2 == 0 else list(reversed(cands))
        for c in order:
            # the model as given: 'demo' also picks its bundled corpus and haystack
            rep, _, c_s = timed(lambda c=c: run_score(args.model, c, **opts))
            for _, key in AXIS_TIMINGS:
                if key in rep["timings"]:
                    wall[c].setdefault(key, []).append(float(rep["timings"][key]))
            cpu[c].append(c_s)
            composite[c] = rep.get("composite")
            t = rep["timings"]
            print(f"  score {short(c)}: {t['total_s']:.1f} s wall, {c_s:.1f} s CPU, composite "
                  f"{composite[c]} (load {load_now()})", file=sys.stderr, flush=True)
    rows = []
    for name, key in AXIS_TIMINGS:
        if not any(key in wall[c] for c in cands):
            continue
        note = {"gtm_s": f"{args.n_predict} tokens per prompt: candidate greedy + reference "
                         "decode with the candidate teacher-forced",
                "kld_s": f"{args.chunks} windows of {args.ctx}: reference + candidate decode",
                "total_s": "includes the vocab-only preflight and model load"}.get(key, "")
        rows.append((name, [med(wall[c].get(key, [])) for c in cands], note))
    rows.append(("whole score, process CPU", [med(cpu[c]) for c in cands], "CPU seconds of "
                 "the call: steadier than wall on a shared machine"))
    table(f"## run_score per candidate, seconds (median of {args.rounds}; composite: "
          + ", ".join(f"{short(c)} {composite[c]:.2f}" if isinstance(composite[c], float)
                      else f"{short(c)} —" for c in cands) + ")", rows, cands)


def bare_part(args: argparse.Namespace, model: Path) -> None:
    import numpy as np

    from refract import Engine, _core
    from refract.inputs.corpus import bundled_corpus_path, default_corpus_path
    from refract.inputs.promptset import load_prompts

    cands: list[str] = args.candidates
    corpus = bundled_corpus_path("test") if args.model == "demo" else default_corpus_path()
    prompts = [p.prompt for p in load_prompts(None)][: args.prompts]
    res: dict[str, dict[str, list[float]]] = {c: {} for c in cands}

    def add(c: str, key: str, value: float) -> None:
        res[c].setdefault(key, []).append(value)

    with Engine(model, n_threads=args.threads) as eng:
        tokens = eng.tokenize(corpus.read_text(encoding="utf-8"))
        n_chunks, first, _ = _core.chunk_plan(int(tokens.size), args.ctx, args.chunks)
        wins = [tokens[i * args.ctx:(i + 1) * args.ctx] for i in range(n_chunks)]
        ids = [eng.prompt_ids(s) for s in prompts]
        for r in range(args.rounds):
            for c in (cands if r % 2 == 0 else list(reversed(cands))):
                _, w, cp = timed(lambda c=c: eng.greedy(prompts, c, args.n_predict, args.ctx))
                add(c, "greedy", w)
                add(c, "greedy_cpu", cp)
                eng.release()
                _, w, cp = timed(lambda c=c: eng.kld(tokens, REFERENCE, [c], ctx=args.ctx,
                                                     chunks=args.chunks))
                add(c, "kld", w)
                add(c, "kld_cpu", cp)
                eng.release()
                d = eng.bench_decode(ids, c, [args.n_predict] * len(ids), ctx=args.ctx, group=64)
                add(c, "short_prefill", d["prefill_s"])
                add(c, "short_decode", d["decode_s"])
                d = eng.bench_decode(wins, c, [0] * len(wins), ctx=args.ctx, group=1,
                                     logits_from=first)
                add(c, "kld_prefill", d["prefill_s"])
                eng.release()
                for depth in args.depths:
                    d = eng.bench_decode([np.asarray(tokens[:depth])], c, [args.long_gen],
                                         ctx=depth + args.long_gen + 16, group=1)
                    add(c, f"prefill_{depth}", d["prefill_s"])
                    add(c, f"ms_{depth}", 1000.0 * d["decode_s"] / max(1, d["decoded_tokens"]))
                    eng.release()
                print(f"  bare {short(c)} done (load {load_now()})", file=sys.stderr, flush=True)
    n_tok = sum(int(i.size) for i in ids)
    spec = [
        ("Engine.greedy", "greedy", f"{len(prompts)} prompts ({n_tok} tokens) + "
         f"{args.n_predict} steps, one batch"),
        ("  process CPU", "greedy_cpu", ""),
        ("Engine.kld vs f16", "kld", f"{n_chunks} windows of {args.ctx}: f16 reference + the "
         "config"),
        ("  process CPU", "kld_cpu", ""),
        ("bare prefill, prompts", "short_prefill", "bench_decode: the greedy's prompts"),
        ("bare generation, prompts", "short_decode", f"{args.n_predict} batched steps of "
         f"{len(prompts)} sequences at depth ≤ {args.ctx}"),
        ("bare prefill, KLD windows", "kld_prefill", f"{n_chunks} × {args.ctx} tokens, logits "
         f"from {first} on"),
    ]
    for depth in args.depths:
        spec += [(f"bare prefill, {depth} tokens", f"prefill_{depth}", "one sequence"),
                 (f"  ms per generated token at depth {depth}", f"ms_{depth}",
                  f"{args.long_gen} steps, one sequence")]
    rows = [(name, [med(res[c].get(key, [])) for c in cands], note) for name, key, note in spec]
    table(f"## bare engine per KV config, seconds (median of {args.rounds})", rows, cands)
    if len(cands) > 1:
        a, b = cands[0], cands[1]
        print(f"\n{short(a)} over {short(b)}, by depth (bare prefill s; ms per generated token):")
        for depth in args.depths:
            dp = med(res[a][f"prefill_{depth}"]) - med(res[b][f"prefill_{depth}"])
            dm = med(res[a][f"ms_{depth}"]) - med(res[b][f"ms_{depth}"])
            print(f"  depth {depth:>6}: prefill {dp:+.2f} s ({dp / depth * 1000:+.2f} ms per "
                  f"prompt token), generation {dm:+.2f} ms per token")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--candidates", nargs="+", default=list(DEFAULT_CANDIDATES),
                    help="first: measured; second: its baseline")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--n-predict", type=int, default=32)
    ap.add_argument("--prompts", type=int, default=36, help="bare part: first N bundled prompts")
    ap.add_argument("--full", action="store_true", help="score R-NIAH and PLAD too")
    ap.add_argument("--rniah-lengths", type=int, nargs="+", default=[2048])
    ap.add_argument("--rniah-n-predict", type=int, default=32)
    ap.add_argument("--depths", type=int, nargs="+", default=[512, 1024, 2048],
                    help="bare part: prefill depths, each followed by --long-gen steps")
    ap.add_argument("--long-gen", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--skip-score", action="store_true")
    ap.add_argument("--skip-bare", action="store_true")
    args = ap.parse_args()

    from refract.engine.facade import build_info
    from refract.inputs.model import resolve_model

    info = build_info()
    missing = [c for c in args.candidates for t in c.replace("=", ",").split(",")
               if t.startswith("turbo") and t not in info["kv_types"]]
    if missing:
        print(f"bench_turbo: this build ({info['llama_cpp_flavour']}) has no {missing[0]}: run "
              "it with a turboquant build's python (e.g. build/turbo-dev/bin/python)",
              file=sys.stderr)
        return 2
    model = resolve_model(args.model)
    print(f"# bench_turbo  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"machine: {machine()}; threads {args.threads}; load at start {load_now()}")
    print(f"llama.cpp: {info['llama_cpp_flavour']} {str(info['llama_cpp_commit'])[:7]}; "
          f"model {model.name}; reference {REFERENCE}; flash attention on")
    print(f"settings: --chunks {args.chunks} --ctx {args.ctx} --n-predict {args.n_predict}"
          + (f" --full (R-NIAH {args.rniah_lengths}, n_predict {args.rniah_n_predict})"
             if args.full else " (Trajectory and KLD; --full adds R-NIAH and PLAD)"))
    if not args.skip_score:
        score_part(args)
    if not args.skip_bare:
        bare_part(args, model)
    print(f"\nload at end {load_now()} (1/5 min): on a shared machine compare ratios, not "
          "seconds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
