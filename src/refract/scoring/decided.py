"""``--until-decided``: the axes in rounds of units, stopping once every candidate's band is
decided (issue 22).

The budget is the usual settings (every prompt, ``--chunks`` windows). Round k of K runs the
axes that split into rounds (:attr:`refract.axes.base.Axis.rounds`) on the k-th slice of their
units -- prompts ``[⌈(k−1)P/K⌉, ⌈kP/K⌉)``, corpus windows likewise -- and merges it with the
earlier rounds (:meth:`~refract.axes.base.Axis.merge`); an axis without rounds (R-NIAH, PLAD)
runs its whole budget in the first round. After each round (a *look*) each candidate's composite
gets its band probabilities (:mod:`refract.uncertainty`); the run stops when one band holds at
least ``1 − α_k`` of every candidate's replicates (and each axis in rounds has at least
:data:`~refract.uncertainty.MIN_DECISION_UNITS` units, or it is the last look), ``α_k`` being
that look's share of
``α = 1 − confidence`` under the Lan–DeMets Pocock-type spending function, or at the budget.
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
    look_fractions,
)

__all__ = ["run_in_rounds"]


def _bounds(total: int, looks: int) -> list[tuple[int, int]]:
    edges = [math.ceil(k * total / looks) for k in range(looks + 1)]
    return [(edges[k], edges[k + 1]) for k in range(looks)]


def run_in_rounds(ctx: RunContext) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Per candidate: its axis results and its ``until_decided`` record."""
    plan, engine, opts = ctx.plan, ctx.engine, ctx.options
    cands = ctx.candidates
    looks = opts.looks
    alpha = 1.0 - opts.decide_confidence
    fractions = look_fractions(looks)
    alphas = look_alphas(fractions, alpha)
    n_prompts = len(plan.prompts)
    n_chunks = 0
    if ctx.corpus_tokens is not None:
        n_chunks = min(opts.chunks, len(ctx.corpus_tokens) // opts.ctx)
    prompt_rounds = _bounds(n_prompts, looks)
    chunk_rounds = _bounds(n_chunks, looks)
    enabled = [a for a in registry if a.enabled(opts)]
    parts: dict[str, dict[str, list[dict[str, Any]]]] = {c: {} for c in cands}
    merged: dict[str, dict[str, Any]] = {c: {} for c in cands}
    for axis in registry:
        if not axis.enabled(opts) and axis.skip_reason is not None:
            for c in cands:
                merged[c][axis.key] = {"skipped": True, "reason": axis.skip_reason}
    history: dict[str, list[dict[str, Any]]] = {c: [] for c in cands}
    used = (0, 0)
    stop_look = looks
    for k in range(looks):
        (p0, p1), (c0, c1) = prompt_rounds[k], chunk_rounds[k]
        tokens = ctx.corpus_tokens
        sub = RunContext(
            engine=engine, plan=dataclasses.replace(plan, prompts=plan.prompts[p0:p1]),
            reporter=ctx.reporter,
            corpus_tokens=None if tokens is None else tokens[c0 * opts.ctx:c1 * opts.ctx],
            corpus_used=ctx.corpus_used, shared=ctx.shared, timings=ctx.timings)
        for axis in enabled:
            if axis.rounds is None:
                if k == 0:
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
        counts = [p1 if a.rounds == "prompts" else c1 for a in enabled if a.rounds]
        may_decide = k == looks - 1 or min(counts, default=0) >= MIN_DECISION_UNITS
        undecided = 0
        for c in cands:
            look = _look(merged[c], k, fractions[k], alphas[k], used, may_decide,
                         reference=ctx.reference, candidate=c)
            history[c].append(look)
            if look["decided"] is None:
                undecided += 1
        if undecided == 0 and k < looks - 1:
            stop_look = k + 1
            break
    records = {}
    for c in cands:
        last = history[c][-1]
        early = stop_look < looks
        if early:
            why = (f"every candidate's band was decided at look {stop_look} of {looks}; this "
                   f"one {last['decided']} with P = {last['p_decided']:.3f} ≥ "
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
            "looks_run": stop_look,
            "stopped_early": early,
            "reason": why,
            "decided": last["decided"],
            "budget_fraction": fractions[stop_look - 1],
            "prompts_used": [used[0], n_prompts],
            "chunks_used": [used[1], n_chunks],
            "alpha_per_look": alphas,
            "history": history[c],
        }
    return merged, records


def _look(axes: dict[str, Any], k: int, fraction: float, alpha: float,
          used: tuple[int, int], may_decide: bool, *, reference: str,
          candidate: str) -> dict[str, Any]:
    """One candidate at one look: its composite's band probabilities and the decision."""
    rep = build_report(model="", reference=reference, candidate=candidate, axes=axes,
                       framework_version="", timestamp="-")
    unc = rep.get("uncertainty") or {}
    comp = unc.get("composite") or {}
    probs = comp.get("band_probabilities") or {}
    decided = decided_band(probs, 1.0 - alpha) if probs and may_decide else None
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
