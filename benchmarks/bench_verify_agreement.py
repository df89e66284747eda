"""Trajectory by verification against by decode: where do they disagree? (issue 24, groundwork)

    python benchmarks/bench_verify_agreement.py [--model demo] [--candidate ctk=q8_0,ctv=q8_0]
        [--n-predict 128] [--ctx 512] [--threads 2] [--chat-template] [--json-out PATH]

A candidate's greedy run equals the reference's up to its first divergence, so one
teacher-forced pass of the candidate along the reference trajectories gives each prompt's
prefix: the first position where the candidate's argmax differs from the reference token.
Today's Trajectory axis already computes that pass (for its drift diagnostics) beside the
greedy decode, so both prefixes come from one run of the axis:

* ``decode``: the prefix agreement of the candidate's own greedy decode (the axis's score);
* ``verify``: the first position where the teacher-forced candidate's top-1 is not the
  reference token (the reference's length when there is none).

Per prompt where they differ it prints both, the KL(ref ‖ cand) at the earlier one, the
reference's top-1/top-2 margin there when the decode diverged first (a near tie below the
axis's threshold), and the prefix of the reference's own noise floor on that prompt (the
reference decoded in another batch shape): a difference on a prompt whose floor diverges too
is numerical noise, not the KV cache. Not a test: numbers of whatever machine runs it.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import numpy as np

from refract.axes.trajectory import run_trajectories, trajectory_noise_floor
from refract.engine.facade import Engine
from refract.options import ScoreOptions
from refract.scoring.plan import prepare_score


def _verify_prefix(same_top1: Any, ref_len: int) -> int:
    miss = np.flatnonzero(~np.asarray(same_top1, dtype=bool)[:ref_len])
    return int(miss[0]) if miss.size else ref_len


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--candidate", default="ctk=q8_0,ctv=q8_0")
    ap.add_argument("--n-predict", type=int, default=128)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--chat-template", action="store_true")
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()
    # the corpus is not used (no KLD here): the bundled one, so no model needs WikiText-2
    opts = ScoreOptions(threads=args.threads, n_predict=args.n_predict, ctx=args.ctx,
                        chat_template=args.chat_template, corpus="bundled")
    plan = prepare_score(args.model, [args.candidate], opts)
    cand, ref = plan.candidates[0].label, plan.reference.label
    engine = Engine(plan.model_path, n_threads=args.threads, seed=opts.seed)
    try:
        kw: dict[str, Any] = dict(reference=ref, n_predict=args.n_predict, ctx=args.ctx,
                                  chat_template=args.chat_template)
        result = run_trajectories(engine, plan.prompts, candidates=[cand], **kw)[cand]
        if isinstance(result, Exception):
            raise SystemExit(f"bench_verify_agreement: {cand}: {result}")
        floor = trajectory_noise_floor(engine, plan.prompts, **kw)
    finally:
        engine.close()
    kls, top1 = result["_teacher_forced_rows"]
    margins = {d["id"]: d for d in (result.get("divergence") or {}).get("per_prompt") or []}
    thr = float((result.get("divergence") or {}).get("near_tie_threshold") or 0.0)
    floor_of = {r["id"]: r for r in floor["per_prompt"]}
    rows: list[dict[str, Any]] = []
    k = 0
    for pp in result["per_prompt"]:
        if pp["ref_length"] == 0:
            continue
        dec = int(pp["prefix_agreement_length"])
        ver = _verify_prefix(top1[k], int(pp["ref_length"]))
        at = min(dec, ver)
        kl = float(kls[k][at]) if at < len(kls[k]) else None
        k += 1
        if dec == ver:
            continue
        d = margins.get(pp["id"]) if dec < ver else None
        fl = floor_of.get(pp["id"]) or {}
        rows.append({
            "id": pp["id"], "decode": dec, "verify": ver, "ref_length": pp["ref_length"],
            "kl_at": kl, "margin": None if d is None else d.get("margin"),
            "near_tie": None if d is None else (d.get("margin") is not None
                                                and float(d["margin"]) < thr),
            "floor_prefix": fl.get("prefix_agreement_length"),
            "floor_diverges": fl.get("prefix_agreement_length") is not None
            and fl["prefix_agreement_length"] < pp["ref_length"],
        })
    n = k
    print(f"{plan.model_path.name} · {cand} · {n} prompts × {args.n_predict} tokens")
    print(f"Trajectory by decode: {result['score']:.2f}; noise floor {floor['score']:.2f}")
    print(f"prompts whose verified prefix differs from the decoded one: {len(rows)} of {n}")
    for r in rows:
        print(f"  {r['id']}: decode {r['decode']}, verify {r['verify']} (of {r['ref_length']}); "
              f"KL there {r['kl_at']}; margin {r['margin']} (near tie: {r['near_tie']}); "
              f"the floor's prefix {r['floor_prefix']} (diverges: {r['floor_diverges']})")
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump({"settings": vars(args), "n_prompts": n, "score": result["score"],
                       "floor": floor["score"], "differ": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
