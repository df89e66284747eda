"""Greedy trajectories: refract batched vs sequential vs llama-completion one process per prompt.

    python benchmarks/bench_trajectory.py [--model PATH] [--n-predict 128] [--limit N]
        [--threads 2] [--ctx 512] [--rounds 1] [--n-gpu-layers -1]

On the demo model and the bundled prompt set (raw text with BOS, no chat template), f16/f16 KV,
``-fa on``, greedy: times ``Engine.greedy`` with all prompts decoded together (batched) and
one at a time (``sequential=True``), counts the prompts whose trajectories differ between the
two (different batch shapes change floating-point summation order, which can flip a near-tie
argmax; expected, reported as measured), and times llama.cpp's own ``llama-completion`` run
once per prompt (model load per prompt, the refract-llm way). llama-completion's text is
compared with the detokenized sequential trajectory. With ``--rounds N`` the batched run and
the llama-completion sweep alternate N times (the sequential run once) and the table shows
each round and the median, so that drift on a shared machine hits both sides alike. The
tools are built once by kld_vs_llama_perplexity.py's helper into build/llama-tools. Not a
test: every number in one table comes from the same run.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kld_vs_llama_perplexity import (
    default_model,
    ensure_llama_tools,
    fork_env,
    load_now,
    wait_for_quiet,
)

REFERENCE = "ctk=f16,ctv=f16"
TARGET_SPEEDUP = 5.0


@dataclass
class CompletionRun:
    wall_s: float
    n_gen: int | None
    text: str
    eog: bool
    load_ms: float | None
    prompt_ms: float | None
    eval_ms: float | None


def _num(pattern: str, text: str) -> float | None:
    m = re.search(pattern, text)
    return float(m.group(1)) if m else None


def run_completion(exe: Path, model: Path, prompt: str, args: argparse.Namespace) -> CompletionRun:
    cmd = [str(exe), "-m", str(model), "-p", prompt, "-n", str(args.n_predict),
           "-c", str(args.ctx), "-t", str(args.threads), "-fa", "on",
           *(["-ngl", str(args.n_gpu_layers)] if args.n_gpu_layers >= 0 else []),
           "-ctk", "f16", "-ctv", "f16", "--temp", "0", "--top-k", "1",
           "-no-cnv", "--no-display-prompt"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=fork_env(), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, errors="replace")
    wall = time.perf_counter() - t0
    if proc.returncode:
        tail = "\n".join(proc.stderr.splitlines()[-20:])
        sys.exit(f"llama-completion failed ({proc.returncode}) on {prompt[:40]!r}\n{tail}")
    err = proc.stderr
    text = proc.stdout
    if text.endswith("\n\n"):
        text = text[:-2]
    eog = text.endswith(" [end of text]\n")
    if eog:
        text = text[: -len(" [end of text]\n")]
    # the last sampled token (EOG or the n_predict-th) is never decoded: generated = runs + 1
    n_eval = _num(r"\s eval time =\s*[\d.]+ ms /\s*(\d+) runs", err)
    n_gen = int(n_eval) + 1 if n_eval is not None else None
    return CompletionRun(wall_s=wall, n_gen=n_gen, text=text, eog=eog,
                         load_ms=_num(r"load time =\s*([\d.]+) ms", err),
                         prompt_ms=_num(r"prompt eval time =\s*([\d.]+) ms", err),
                         eval_ms=_num(r"\s eval time =\s*([\d.]+) ms", err))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="GGUF (default: the demo model)")
    ap.add_argument("--n-predict", type=int, default=128)
    ap.add_argument("--limit", type=int, default=None, help="first N prompts (default: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-wait", type=float, default=300.0,
                    help="seconds to wait for a 1-min load average below 1.5 before timing")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--n-gpu-layers", type=int, default=-1,
                    help="layers to offload (GPU builds), given to both sides; -1: defaults")
    ap.add_argument("--rounds", type=int, default=1,
                    help="alternate batched and llama-completion this many times (median)")
    args = ap.parse_args()
    if args.rounds < 1:
        sys.exit("--rounds must be >= 1")

    from refract import Engine
    from refract.engine.facade import build_info
    from refract.inputs.promptset import load_prompts

    model = args.model or default_model()
    prompts = load_prompts(None)[: args.limit]
    texts = [p.prompt for p in prompts]
    tools = ensure_llama_tools()
    info = build_info()
    print("Greedy trajectories: refract Engine.greedy vs llama-completion (same llama.cpp tree)")
    print(f"  llama.cpp  {info['llama_cpp_commit'][:12]} ({info['llama_cpp_source']}); "
          f"tools from {tools['llama-completion'].parent}")
    print(f"  model      {model}")
    print(f"  prompts    bundled set, {len(prompts)} prompts; raw text + BOS, no chat template")
    print(f"  n_predict={args.n_predict} ctx={args.ctx} threads={args.threads} KV {REFERENCE} "
          f"-fa on, greedy, n_gpu_layers={args.n_gpu_layers}")
    print(f"  before timing: {wait_for_quiet(max_wait=args.max_wait)}")

    def open_engine() -> Engine:
        return Engine(model, n_threads=args.threads, flash_attn=True,
                      n_gpu_layers=args.n_gpu_layers)

    def run_batched() -> tuple[list[np.ndarray], float, float]:
        t0 = time.perf_counter()
        eng = open_engine()
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = eng.greedy(texts, kv=REFERENCE, n_predict=args.n_predict, ctx=args.ctx)
        t_run = time.perf_counter() - t0
        eng.close()
        assert isinstance(out, list)
        return out, t_load, t_run

    def run_completions() -> list[CompletionRun]:
        runs = []
        for i, text in enumerate(texts):
            if sys.stderr.isatty():
                print(f"  llama-completion {i + 1}/{len(texts)}", end="\r", file=sys.stderr)
            runs.append(run_completion(tools["llama-completion"], model, text, args))
        return runs

    # Round 1 also times sequential=True; every round times batched, then llama-completion.
    rounds: list[tuple[float, float, float]] = []  # (refract load, batched run, completion sum)
    batched: list[np.ndarray] = []
    comp: list[CompletionRun] = []
    for r in range(args.rounds):
        out, t_load, t_batched = run_batched()
        if r == 0:
            batched = out
            load_b = load_now()
            eng = open_engine()
            t0 = time.perf_counter()
            seq = eng.greedy(texts, kv=REFERENCE, n_predict=args.n_predict, ctx=args.ctx,
                             sequential=True)
            t_seq = time.perf_counter() - t0
            assert isinstance(seq, list)
            seq_text = []
            for ids in seq:
                body = ids[:-1] if ids.size and eng.is_eog(int(ids[-1])) else ids
                seq_text.append(eng.detokenize(body))
            eng.close()
            load_s = load_now()
        elif not all(np.array_equal(x, y) for x, y in zip(out, batched, strict=True)):
            sys.exit(f"round {r + 1}: batched trajectories differ from round 1 (not deterministic)")
        runs = run_completions()
        if r == 0:
            comp = runs
        rounds.append((t_load, t_batched, sum(c.wall_s for c in runs)))
    load_c = load_now()
    t_load = float(np.median([x[0] for x in rounds]))
    t_batched = float(np.median([x[1] for x in rounds]))

    n_b = sum(int(t.size) for t in batched)
    n_s = sum(int(t.size) for t in seq)
    n_c = sum(c.n_gen or 0 for c in comp)
    t_comp = float(np.median([x[2] for x in rounds]))
    pairs = list(zip(prompts, batched, seq, strict=True))
    differ = [p.id for p, a, b in pairs if not np.array_equal(a, b)]
    first_div = []
    for a, b in zip(batched, seq, strict=True):
        if not np.array_equal(a, b):
            n = min(a.size, b.size)
            neq = np.nonzero(a[:n] != b[:n])[0]
            first_div.append(int(neq[0]) if neq.size else n)
    text_diff = [p.id for p, c, s in zip(prompts, comp, seq_text, strict=True) if c.text != s]
    len_diff = [p.id for p, c, s in zip(prompts, comp, seq, strict=True) if c.n_gen != int(s.size)]

    print()
    header = (f"{'run':<48} {'tokens':>7} {'wall':>9} {'tok/s':>8} {'incl. load':>11} "
              f"{'tok/s':>8}")
    print(header)
    print("-" * len(header))

    def row(name: str, n: int, t: float, t_all: float) -> None:
        print(f"{name:<48} {n:>7} {t:>8.2f}s {n / t:>8.1f} {t_all:>10.2f}s {n / t_all:>8.1f}")

    row("refract batched (one context, all prompts)", n_b, t_batched, t_load + t_batched)
    row("refract sequential=True (one prompt at a time)", n_s, t_seq, t_load + t_seq)
    c_load = sum(c.load_ms or 0.0 for c in comp) / 1e3
    row(f"llama-completion, {len(comp)} processes", n_c, t_comp, t_comp)
    c_prompt = sum(c.prompt_ms or 0.0 for c in comp) / 1e3
    c_eval = sum(c.eval_ms or 0.0 for c in comp) / 1e3
    c_runs = n_c - len(comp)  # decoded generation steps (the last sampled token is not decoded)
    if len(rounds) > 1:
        for r, (tl, tb, tc) in enumerate(rounds):
            print(f"  round {r + 1}: refract load {tl:.2f} s + batched {tb:.2f} s; "
                  f"llama-completion {tc:.2f} s; ratio (tok/s) "
                  f"{(n_b / (tl + tb)) / (n_c / tc) if n_c else float('nan'):.2f}x")
        print(f"  the table shows the median of {len(rounds)} rounds; llama-completion's timers "
              "below are round 1's")
    print(f"  refract model load {t_load:.2f} s (once per run). llama-completion's own timers, "
          f"summed over its processes: load {c_load:.2f} s "
          f"({c_load / max(len(comp), 1):.2f} s each), "
          f"prompt eval {c_prompt:.2f} s, decode {c_eval:.2f} s "
          f"({c_runs / c_eval if c_eval else float('nan'):.1f} tok/s decode only); the other "
          f"{t_comp - c_load - c_prompt - c_eval:.2f} s is process start, warmup, sampling, exit")
    print()
    r_bs = (n_b / t_batched) / (n_s / t_seq)
    r_bc = (n_b / (t_load + t_batched)) / (n_c / t_comp) if n_c else float("nan")
    r_bc_wall = t_comp / (t_load + t_batched)
    r_sc = (n_s / (t_load + t_seq)) / (n_c / t_comp) if n_c else float("nan")
    print(f"batched vs sequential (tok/s, generation only):          {r_bs:6.2f}x")
    print(f"batched (incl. load) vs llama-completion per prompt, tok/s: {r_bc:6.2f}x   "
          f"(wall {r_bc_wall:.2f}x; target >= {TARGET_SPEEDUP:g}x: "
          f"{'met' if r_bc >= TARGET_SPEEDUP else 'NOT met'})")
    print(f"sequential (incl. load) vs llama-completion per prompt, tok/s: {r_sc:6.2f}x")
    print()
    print(f"trajectories differing batched vs sequential: {len(differ)}/{len(prompts)}"
          + (f" {differ} (first divergence at step {first_div})" if differ else ""))
    print(f"llama-completion text != refract sequential (detokenized): "
          f"{len(text_diff)}/{len(prompts)}" + (f" {text_diff}" if text_diff else ""))
    print(f"llama-completion token count != refract sequential: {len(len_diff)}/{len(prompts)}"
          + (f" {len_diff}" if len_diff else ""))
    print(f"  1/5-min load after batched {load_b}, after sequential {load_s}, "
          f"after llama-completion {load_c}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
