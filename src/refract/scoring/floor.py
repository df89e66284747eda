"""``--measure-floor``: axes A and B with candidate = reference, before any candidate is
scored (SPEC §4: the floor is clean when the ref-vs-ref composite is ≥ 99.5 and every ref-vs-ref
trajectory is identical; otherwise the scores of this build cannot be trusted).

Trajectory runs by decode here whatever the run's method: this checks that the engine repeats a
decode token for token, and verification compares a teacher-forced pass with a decode, another
computation shape that may break a near tie differently without any fault."""

from __future__ import annotations

import time
from typing import Any

from refract.axes import RunContext
from refract.axes.base import timed
from refract.axes.trajectory import run_trajectory
from refract.composite import FloorCheck, check_floor

__all__ = ["measure_floor"]


def measure_floor(ctx: RunContext) -> tuple[FloorCheck | None, dict[str, Any]]:
    """The floor's verdict and its ``extras.floor`` detail (the axes the run has; none of A and
    B: no verdict, and the detail says why)."""
    opts, ref, engine = ctx.options, ctx.reference, ctx.engine
    if not (opts.trajectory or opts.kld):
        return None, {"skipped": True,
                      "reason": "the floor measures axes A and B, and both are skipped"}
    with timed(ctx.shared, "floor_s"):
        t0 = time.perf_counter()
        scores: dict[str, Any] = {}
        detail: dict[str, Any] = {}
        per_prompt: list[Any] = []
        if opts.trajectory:
            with ctx.reporter.axis("floor A: trajectory, ref vs ref", phases=2) as cb:
                gtm = run_trajectory(
                    engine, ctx.plan.prompts, reference=ref, candidate=ref,
                    n_predict=opts.n_predict, ctx=opts.ctx, chat_template=opts.chat_template,
                    sequential=opts.sequential, method="decode", progress=cb,
                )
            scores["gtm"] = gtm["score"]
            per_prompt = gtm["per_prompt"]
            detail.update(gtm_score=gtm["score"], full_match_rate=gtm["full_match_rate"])
        if opts.kld:
            with ctx.reporter.axis("floor B: KLD, ref vs ref") as cb:
                [kld] = engine.kld(ctx.corpus_tokens, ref, [ref], ctx=opts.ctx,
                                   chunks=opts.chunks, progress=cb)
            scores["kld"] = kld.score
            detail.update(kld_score=kld.score, mean_kld=kld.mean_kld)
        check = check_floor(scores, per_prompt)
        detail.update(
            axes=sorted(scores), composite=check.score, ok=check.ok,
            reasons=list(check.reasons), diverged_prompts=list(check.diverged_prompts),
            seconds=time.perf_counter() - t0,
        )
    return check, detail
