"""Trajectory by verification against by decode: agreement, time, and time against the floor.

    python benchmarks/bench_verify.py [--model demo] [--chat-template]
        [--candidate ctk=q8_0,ctv=q8_0] [--n-predict 128] [--ctx 512] [--threads 2]

On one engine, one candidate, the bundled prompt set, the Trajectory axis as ``refract score``
runs it (fresh reference cache each time), by each method:

* ``decode``: the candidate greedy-decodes its trajectories, the reference decodes its own with
  the candidate teacher-forced along them, and the noise floor decodes the reference again
  (batch order reversed);
* ``verify``: one reference decode with the candidate teacher-forced along it, each prompt up
  to its first divergence; the candidate decoded on only where the reference stopped before its
  limit. The noise floor is the same for both methods (the reference decoded again, batch
  order reversed).

Each is timed with its noise floor (the axis in a default score) and without. Agreement: the
prompts whose prefix differs between the two methods, with the reference's margin at the
earlier divergence (a near tie below the axis's threshold) and whether the reference's own
floor diverges there, and the prompts whose candidate length differs (decoded on after the
divergence in another batch shape). The floor: a bare batched ``llama_decode`` of the
reference's prompts and trajectory lengths (``Engine.bench_decode``: no argmax, no top-k, no
kernel), once more with the noise floor, plus one bare prefill of every prompt + reference
trajectory on the candidate, batched, with logits from the prompts' ends. Targets
(issue 24): verify <= 0.5x decode, <= 1.15x its floor. Not a test: every ratio compares two
numbers from one run on one machine.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np

from refract.axes.trajectory import run_trajectories, trajectory_noise_floor
from refract.engine.facade import Engine
from refract.options import ScoreOptions
from refract.scoring.plan import prepare_score

TARGET_VS_DECODE = 0.5
TARGET_VS_FLOOR = 1.15


def load_now() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def bare_floor(eng: Engine, prompts: list[np.ndarray], trajs: list[np.ndarray], ref: str,
               cand: str, ctx: int) -> tuple[float, float]:
    """(reference decode s, candidate teacher-forced prefill s), bare."""
    r = eng.bench_decode(prompts, ref, [int(t.size) for t in trajs], ctx=ctx, group=64)
    seqs = [np.concatenate([p, t]).astype(np.int32) for p, t in zip(prompts, trajs, strict=True)]
    first = min(int(p.size) for p in prompts) - 1
    s = eng.bench_decode(seqs, cand, [0] * len(seqs), ctx=ctx, group=len(seqs),
                         logits_from=first)
    return r["prefill_s"] + r["decode_s"], s["prefill_s"] + s["decode_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--candidate", default="ctk=q8_0,ctv=q8_0")
    ap.add_argument("--n-predict", type=int, default=128)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chat-template", action="store_true")
    args = ap.parse_args()
    # the corpus is not used (no KLD here): the bundled one, so no model needs WikiText-2
    opts = ScoreOptions(threads=args.threads, n_predict=args.n_predict, ctx=args.ctx,
                        chat_template=args.chat_template, corpus="bundled")
    plan = prepare_score(args.model, [args.candidate], opts)
    cand, ref = plan.candidates[0].label, plan.reference.label
    prompts = plan.prompts
    kw: dict[str, Any] = dict(reference=ref, n_predict=args.n_predict, ctx=args.ctx,
                              chat_template=args.chat_template)
    print(f"# bench_verify  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"model {plan.model_path.name}; candidate {cand}; {len(prompts)} prompts x "
          f"{args.n_predict} tokens, ctx {args.ctx}, chat template {args.chat_template}; "
          f"threads {args.threads}; load {load_now()}")
    res: dict[str, Any] = {}
    t: dict[tuple[str, bool], float] = {}
    with Engine(plan.model_path, n_threads=args.threads, seed=opts.seed) as eng:
        for floor_on in (True, False):
            for method in ("decode", "verify"):
                eng.reference_cache.clear()
                t0 = time.perf_counter()
                out = run_trajectories(eng, prompts, candidates=[cand], method=method,  # type: ignore[arg-type]
                                       **kw)[cand]
                if isinstance(out, Exception):
                    raise SystemExit(f"bench_verify: {cand}: {out}")
                if floor_on:
                    out["noise_floor"] = trajectory_noise_floor(eng, prompts, **kw)
                    res[method] = out
                t[method, floor_on] = time.perf_counter() - t0
        ids = [eng.prompt_ids(p.prompt, chat_template=args.chat_template) for p in prompts]
        trajs = [np.asarray(pp["ref_token_ids"], dtype=np.int32)
                 for pp in res["verify"]["per_prompt"]]
        fl_ref, fl_cand = bare_floor(eng, ids, trajs, ref, cand, args.ctx)

    dec, ver = res["decode"], res["verify"]
    thr = float(dec["divergence"]["near_tie_threshold"])
    margin = {"decode": {d["id"]: d["margin"] for d in dec["divergence"]["per_prompt"]},
              "verify": {d["id"]: d["margin"] for d in ver["divergence"]["per_prompt"]}}
    floors = {r["id"]: r for r in dec["noise_floor"]["per_prompt"]}
    differ, longer = [], []
    for a, b in zip(dec["per_prompt"], ver["per_prompt"], strict=True):
        pd, pv = a["prefix_agreement_length"], b["prefix_agreement_length"]
        if pd == pv:
            if b["cand_length"] is not None and b["cand_length"] != a["cand_length"]:
                longer.append(f"{a['id']}: prefix {pd}, reference {a['ref_length']} tokens; "
                              f"candidate {a['cand_length']} tokens decoded, "
                              f"{b['cand_length']} decoded on from the divergence")
            continue
        first = "decode" if pd < pv else "verify"
        m = margin[first].get(a["id"])
        fl = floors[a["id"]]["prefix_agreement_length"]
        differ.append(f"{a['id']}: decode {pd}, verify {pv} (of {a['ref_length']}); margin at "
                      f"{min(pd, pv)}: {m} (near tie: {m is not None and m < thr}); the decode "
                      f"floor's prefix there: {fl} (diverges by then: {fl <= min(pd, pv)})")
    n_dec = ver.get("n_cand_decoded_after_divergence", 0)
    print(f"\nTrajectory: decode {dec['score']:.2f}, verify {ver['score']:.2f}; noise floor "
          f"{dec['noise_floor']['score']:.2f}; verify decoded the candidate on after its "
          f"divergence on {n_dec} prompts")
    print(f"prompts whose prefix differs between the methods: {len(differ)} of {len(prompts)}")
    for line in differ:
        print("  " + line)
    print(f"prompts with the same prefix whose candidate length differs: {len(longer)}")
    for line in longer:
        print("  " + line)
    print("\n| run | decode s | verify s | verify / decode | floor s | verify / floor |")
    print("|---|---:|---:|---:|---:|---:|")
    for floor_on in (True, False):
        fl = fl_ref * (2 if floor_on else 1) + fl_cand
        d, v = t["decode", floor_on], t["verify", floor_on]
        name = "axis with its noise floor" if floor_on else "axis without the noise floor"
        what = "2 ref decodes + 1 teacher-forced prefill" if floor_on else \
            "ref decode + 1 teacher-forced prefill"
        print(f"| {name} | {d:.2f} | {v:.2f} | **{v / d:.3f}x** | {fl:.2f} ({what}) | "
              f"**{v / fl:.3f}x** |")
    print(f"\nbare parts: reference decode {fl_ref:.2f} s, candidate prefill {fl_cand:.2f} s; "
          f"targets: verify <= {TARGET_VS_DECODE}x decode, "
          f"<= {TARGET_VS_FLOOR}x floor; load at end {load_now()}")


if __name__ == "__main__":
    main()
