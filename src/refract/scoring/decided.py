"""``--until-decided``: the axes in rounds of units, stopping once every candidate's band is
decided (issue 22).

The budget is the usual settings (every prompt, ``--chunks`` windows), cut into K planned
looks at equal fractions: prompts up to ``⌈kP/K⌉`` at look k, corpus windows likewise. A look
is taken only where every kind of unit in rounds has at least
:data:`~refract.uncertainty.MIN_DECISION_UNITS` units (and always at the budget); each taken
look runs the axes that split into rounds (:attr:`refract.axes.base.Axis.rounds`) on the units
since the previous one and merges them with the earlier rounds
(:meth:`~refract.axes.base.Axis.merge`); an axis without rounds (R-NIAH, PLAD) runs its whole
budget in the first round. At each taken look every candidate's composite gets its band
probabilities (:mod:`refract.uncertainty`); the run stops when one band holds at least
``1 − α_k`` of every candidate's replicates, ``α_k = α(t_k) − α(t_{k'})`` the Lan–DeMets
Pocock-type spending since the previous taken look (a look not taken spends nothing), or at the
budget.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from refract.axes import RunContext, registry
from refract.report.build import build_report
from refract.uncertainty import (
    MIN_DECISION_UNITS,
    SEQUENTIAL_METHOD,
    decided_band,
    look_alphas,
)

__all__ = ["run_in_rounds"]


def _looks(ends: dict[str, list[int]], looks: int) -> list[int]:
    """The planned looks that are taken: those where every kind of unit in rounds has at least
    :data:`MIN_DECISION_UNITS` (a look that may not decide is not taken, and spends no α), and
    the last."""
    return [k for k in range(looks)
            if k == looks - 1 or all(e[k] >= MIN_DECISION_UNITS for e in ends.values())]


def run_in_rounds(ctx: RunContext) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Per candidate: its axis results and its ``until_decided`` record."""
    plan, engine, opts = ctx.plan, ctx.engine, ctx.options
    cands = ctx.candidates
    looks = opts.looks
    alpha = 1.0 - opts.decide_confidence
    n_chunks = 0
    if ctx.corpus_tokens is not None:
        n_chunks = min(opts.chunks, len(ctx.corpus_tokens) // opts.ctx)
    totals = {"prompts": len(plan.prompts), "chunks": n_chunks}
    enabled = [a for a in registry if a.enabled(opts)]
    kinds = {a.rounds for a in enabled if a.rounds is not None}
    ends = {kind: [math.ceil((k + 1) * totals[kind] / looks) for k in range(looks)]
            for kind in totals}
    taken = _looks({k: v for k, v in ends.items() if k in kinds}, looks)
    fractions = [(k + 1) / looks for k in taken]
    alphas = look_alphas(fractions, alpha)
    parts: dict[str, dict[str, list[dict[str, Any]]]] = {c: {} for c in cands}
    merged: dict[str, dict[str, Any]] = {c: {} for c in cands}
    for axis in registry:
        if not axis.enabled(opts) and axis.skip_reason is not None:
            for c in cands:
                merged[c][axis.key] = {"skipped": True, "reason": axis.skip_reason}
    history: dict[str, list[dict[str, Any]]] = {c: [] for c in cands}
    used = (0, 0)
    n_run = len(taken)
    start = {"prompts": 0, "chunks": 0}
    for j, k in enumerate(taken):
        (p0, p1) = (start["prompts"], ends["prompts"][k])
        (c0, c1) = (start["chunks"], ends["chunks"][k])
        start = {"prompts": p1, "chunks": c1}
        tokens = ctx.corpus_tokens
        sub = RunContext(
            engine=engine, plan=dataclasses.replace(plan, prompts=plan.prompts[p0:p1]),
            reporter=ctx.reporter,
            corpus_tokens=None if tokens is None else tokens[c0 * opts.ctx:c1 * opts.ctx],
            corpus_used=ctx.corpus_used, shared=ctx.shared, timings=ctx.timings)
        for axis in enabled:
            if axis.rounds is None:
                if j == 0:
                    results = axis.run(ctx)
                    for c in cands:
                        merged[c][axis.key] = results[c]
                    engine.release()
                continue
            lo, hi = (p0, p1) if axis.rounds == "prompts" else (c0, c1)
            if hi <= lo:
                continue
            results = axis.run(sub)
            engine.release()
            for c in cands:
                got = parts[c].setdefault(axis.key, [])
                got.append(results[c])
                merged[c][axis.key] = axis.merge(got)
        used = (p1, c1)
        undecided = 0
        for c in cands:
            look = _look(merged[c], k, fractions[j], alphas[j], used,
                         reference=ctx.reference, candidate=c)
            history[c].append(look)
            if look["decided"] is None:
                undecided += 1
        if undecided == 0 and j < len(taken) - 1:
            n_run = j + 1
            break
    records = {}
    for c in cands:
        last = history[c][-1]
        early = n_run < len(taken)
        if early:
            why = (f"every candidate's band was decided at look {last['look']} of {looks}; "
                   f"this one {last['decided']} with P = {last['p_decided']:.3f} ≥ "
                   f"{1.0 - last['alpha']:.4f}")
        elif last["decided"] is not None:
            why = (f"the budget was reached; the band {last['decided']} is decided at the "
                   "last look")
        else:
            why = "the budget was reached with the band still undecided"
        records[c] = {
            "method": SEQUENTIAL_METHOD,
            "confidence": opts.decide_confidence,
            "looks_planned": looks,
            "looks_taken": [k + 1 for k in taken],
            "looks_run": last["look"],
            "stopped_early": early,
            "reason": why,
            "decided": last["decided"],
            "budget_fraction": last["fraction"],
            "prompts_used": [used[0], totals["prompts"]],
            "chunks_used": [used[1], totals["chunks"]],
            "alpha_per_look": alphas,
            "history": history[c],
        }
    return merged, records


def _look(axes: dict[str, Any], k: int, fraction: float, alpha: float,
          used: tuple[int, int], *, reference: str, candidate: str) -> dict[str, Any]:
    """One candidate at one look: its composite's band probabilities and the decision."""
    rep = build_report(model="", reference=reference, candidate=candidate, axes=axes,
                       framework_version="", timestamp="-")
    unc = rep.get("uncertainty") or {}
    comp = unc.get("composite") or {}
    probs = comp.get("band_probabilities") or {}
    decided = decided_band(probs, 1.0 - alpha) if probs else None
    return {
        "look": k + 1,
        "fraction": fraction,
        "prompts": used[0],
        "chunks": used[1],
        "alpha": alpha,
        "composite": rep.get("composite"),
        "ci95": comp.get("ci95"),
        "band_probabilities": probs,
        "decided": decided,
        "p_decided": probs.get(decided) if decided else None,
    }
