"""``refract sweep``: every config of a KV grid against one reference, in one process.

One model load for the whole grid; each round scores its configs in groups that fit the
memory plan (:func:`refract.scoring.memory.memory_plan`: the reference and as many
candidates as the machine has room for, at least one), sharing the reference within a group
(and its decoded trajectories across groups: the engine's reference cache). With pruning on,
a cheap first round scores every config and :func:`refract.sweep.decide.prune` drops what is
below the band asked for; the survivors are then scored on the full budget, as a separate
``refract score`` of each would score them (same plan, same engine calls: equal numbers,
tested).

By default (``first_round_axes="trajectory"``) the first round measures Trajectory alone, on
every prompt, without its noise floor: exactly the Trajectory the full budget gives the config
(greedy trajectories depend on the batch shape, so a subset of the prompts decoded on its own
would be another measurement, not a sample of this one). The other composite axes (KLD costs
about twice Trajectory per config here) enter its composite at their best score, 100: an upper
bound of the full composite, so a config dropped as below the band at the sweep's confidence
is below it at the full budget too. ``"all"`` measures every axis on a fraction of the prompts
and chunks (:data:`FIRST_ROUND`, at least :data:`MIN_UNITS` of each) and decides at the
stricter level of an early look, which also lets a config be dropped as dominated; its
trajectories are another batch shape's, so its drops are statistical, not exact.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from refract.bands import BANDS, band
from refract.errors import UsageError
from refract.options import ScoreOptions
from refract.progress import Reporter
from refract.report.fields import composite_estimate, report_band, report_composite
from refract.scoring.memory import memory_plan
from refract.scoring.plan import ScorePlan, known_kv_types, prepare_score
from refract.sweep.decide import (
    bound_estimate,
    first_look_level,
    p_at_least,
    prune,
    recommend,
    sweep_frontier,
)
from refract.sweep.grid import GridEntry, build_grid
from refract.sweep.kvsize import checked_against, kv_size, sliding_window_note

if TYPE_CHECKING:
    from refract.engine.facade import Engine

__all__ = ["FIRST_ROUND", "MIN_UNITS", "SCHEMA", "SweepResult", "SweepSettings", "run_sweep"]

SCHEMA = "refract-sweep/1"
#: the share of the prompts and chunks a first round scores
FIRST_ROUND = 1 / 3
#: a first round scores at least this many prompts and chunks (all of them if there are fewer)
MIN_UNITS = 10
#: what a first round measures: Trajectory alone (the other axes held at 100) or every axis
FIRST_ROUND_AXES = ("trajectory", "all")


@dataclass(frozen=True)
class SweepSettings:
    """What a sweep asks beyond a score's options."""

    types: str | None = None
    pairs: str | None = None
    candidates: tuple[str, ...] = ()
    target_band: str = "PASS"
    confidence: float = 0.95
    prune: bool = True
    first_round: float = FIRST_ROUND
    first_round_axes: str = "trajectory"
    memory_ctx: tuple[int, ...] = ()

    def check(self) -> None:
        if self.target_band not in BANDS[:-1]:
            raise UsageError(f"--band must be one of {', '.join(BANDS[:-1])}, "
                             f"got {self.target_band!r}")
        if not 0.5 <= self.confidence <= 0.999:
            raise UsageError(f"--confidence must be between 0.5 and 0.999, got "
                             f"{self.confidence:g}")
        if not 0.0 < self.first_round < 1.0:
            raise UsageError(f"--first-round must be a fraction between 0 and 1, got "
                             f"{self.first_round:g}")
        if self.first_round_axes not in FIRST_ROUND_AXES:
            raise UsageError(f"--first-round-axes must be one of {', '.join(FIRST_ROUND_AXES)}"
                             f", got {self.first_round_axes!r}")
        for n in self.memory_ctx:
            if n < 1:
                raise UsageError(f"--memory-ctx must be a positive number of tokens, got {n}")


@dataclass
class SweepResult:
    """``summary``: the sweep.json content; ``reports``: each fully scored config's report;
    ``first_round``: each pruned config's first-round report."""

    summary: dict[str, Any]
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    first_round: dict[str, dict[str, Any]] = field(default_factory=dict)


def row_size(t: str) -> int:
    from refract import _core

    return int(_core.type_row_size(t, 256))


def _spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (every prompt category gets a share)."""
    if k >= n:
        return list(range(n))
    return sorted({math.floor(i * n / k) for i in range(k)})


@dataclass(frozen=True)
class FirstRound:
    """A first round's plan; ``held``: the composite axes it does not measure (held at 100);
    ``fraction``: its share of the budget (the information fraction of its look)."""

    plan: ScorePlan
    held: tuple[str, ...]
    fraction: float


def _first_round_plan(plan: ScorePlan, fraction: float, axes: str) -> FirstRound | None:
    """The first round, or ``None`` when it would measure everything anyway."""
    opts = plan.options
    n_p = len(plan.prompts)
    k_p = min(n_p, max(MIN_UNITS, math.ceil(fraction * n_p)))
    k_c = min(opts.chunks, max(MIN_UNITS, math.ceil(fraction * opts.chunks)))
    prompts = [plan.prompts[i] for i in _spread(n_p, k_p)]
    # Trajectory's noise floor (one more reference decode) enters no composite: the first
    # round decides on composites alone, so it is not measured there
    if axes == "trajectory" and opts.trajectory and len(opts.axes) > 1:
        # every prompt, as the full budget decodes them: greedy trajectories depend on the
        # batch shape, so a subset decoded on its own is another measurement (the demo
        # model's f16/q8_0 scored 40.3 on 18 prompts alone and 56.4 on the same 18 within
        # all 36) -- this way the round's Trajectory is the full budget's, exactly
        held = tuple(k for k in opts.axes if k != "gtm")
        sub = opts.replace(noise_floor=False, skip_kld=True, full=False, axis_rniah=False,
                           axis_plad=False)
        return FirstRound(dataclasses.replace(plan, options=sub), held, 1.0)
    if k_p >= n_p and k_c >= opts.chunks:
        return None
    fractions = [k_p / n_p] if opts.trajectory else []
    if opts.kld:
        fractions.append(k_c / opts.chunks)
    return FirstRound(dataclasses.replace(plan, prompts=prompts,
                                          options=opts.replace(chunks=k_c, noise_floor=False)),
                      (), min(fractions or [k_p / n_p]))


def _groups(engine: Engine, plan: ScorePlan, labels: Sequence[str]) -> tuple[
        list[list[str]], int]:
    """Candidates in groups whose memory plan fits what is available now (at least one per
    group); and the largest group's planned peak bytes."""
    from refract.system.memory import available_bytes

    by_label = {c.label: c for c in plan.candidates}
    avail = available_bytes()

    def peak(group: list[str]) -> int:
        sub = dataclasses.replace(plan, candidates=[by_label[g] for g in group])
        return max(memory_plan(engine, sub).values(), default=0)

    groups: list[list[str]] = []
    cur: list[str] = []
    worst = 0
    for lab in labels:
        if cur and avail is not None and peak([*cur, lab]) > avail:
            worst = max(worst, peak(cur))
            groups.append(cur)
            cur = []
        cur.append(lab)
    if cur:
        worst = max(worst, peak(cur))
        groups.append(cur)
    return groups, worst


def _score_round(engine: Engine, plan: ScorePlan, labels: Sequence[str],
                 reporter: Reporter) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    from refract.scoring.run import execute_score

    groups, worst = _groups(engine, plan, labels)
    by_label = {c.label: c for c in plan.candidates}
    out: dict[str, dict[str, Any]] = {}
    for group in groups:
        sub = dataclasses.replace(plan, candidates=[by_label[g] for g in group])
        for rep in execute_score(sub, reporter=reporter, engine=engine):
            out[str(rep["candidate"])] = rep
        engine.release()
    return out, {"groups": groups, "planned_peak_bytes": worst}


def _feasible(engine: Engine, grid: Sequence[GridEntry]) -> tuple[
        list[GridEntry], dict[str, str]]:
    """The configs the model can run; the others with llama.cpp's / refract's reason."""
    ok: list[GridEntry] = []
    skipped: dict[str, str] = {}
    for e in grid:
        try:
            engine.kv(e.config, slot=1)
            engine.kv_probe(e.config)
        except Exception as exc:  # the reason is the result: listed, never dropped
            skipped[e.label] = " ".join(str(exc).split()) or type(exc).__name__
        else:
            ok.append(e)
    return ok, skipped


def run_sweep(
    model: str | os.PathLike[str],
    options: ScoreOptions | None = None,
    settings: SweepSettings | None = None,
    *,
    reporter: Reporter | None = None,
    engine: Engine | None = None,
    model_name: str | None = None,
) -> SweepResult:
    """Score the grid of ``settings`` against the reference on ``model``."""
    from refract.engine.facade import Engine

    t0 = time.perf_counter()
    settings = settings or SweepSettings()
    settings.check()
    opts = options or ScoreOptions()
    reporter = reporter or Reporter()
    if opts.until_decided:
        raise UsageError("--until-decided does not combine with a sweep: the sweep decides "
                         "what to score fully itself (--no-prune for the whole budget)")
    known = known_kv_types() or []
    grid = build_grid(known, row_size, types=settings.types, pairs=settings.pairs,
                      candidates=settings.candidates, reference=opts.reference)
    plan = prepare_score(model, [e.label for e in grid], opts, reporter=reporter)
    own = engine is None
    timings: dict[str, float] = {}
    if engine is None:
        t = time.perf_counter()
        engine = Engine(plan.model_path, n_threads=opts.threads,
                        n_gpu_layers=opts.n_gpu_layers, seed=opts.seed)
        timings["load_s"] = time.perf_counter() - t
    try:
        return _sweep(engine, plan, grid, settings, reporter, timings, t0, model_name)
    finally:
        if own:
            engine.close()


def _sweep(engine: Engine, plan: ScorePlan, grid: list[GridEntry], settings: SweepSettings,
           reporter: Reporter, timings: dict[str, float], t0: float,
           model_name: str | None) -> SweepResult:
    ref = plan.reference.label
    try:
        engine.kv(plan.reference)
    except Exception as exc:
        raise UsageError(f"--reference {ref}: {' '.join(str(exc).split())}") from None
    feasible, skipped = _feasible(engine, grid)
    info = engine.model_info
    n_train = int(info.get("n_ctx_train") or 0)
    contexts = sorted({plan.options.ctx, *([n_train] if n_train > 0 else []),
                       *settings.memory_ctx})
    ref_kv = kv_size(engine, ref, contexts, None)
    ref_kv["ratio"] = 1.0 if ref_kv["bytes_per_token"] else None
    sizes = {e.label: kv_size(engine, e.label, contexts, ref_kv["bytes_per_token"])
             for e in feasible}
    plan = dataclasses.replace(plan, candidates=[e.config for e in feasible])
    labels = [e.label for e in feasible]
    first: dict[str, dict[str, Any]] = {}
    pruned: dict[str, dict[str, Any]] = {}
    memory: dict[str, Any] = {}
    first_plan = (_first_round_plan(plan, settings.first_round, settings.first_round_axes)
                  if settings.prune else None)
    if labels and first_plan is not None:
        t = time.perf_counter()
        first, memory["first_round"] = _score_round(engine, first_plan.plan, labels, reporter)
        timings["first_round_s"] = time.perf_counter() - t
        pruned = prune(first, {k: v["bytes_per_token"] for k, v in sizes.items()},
                       target=settings.target_band, confidence=settings.confidence,
                       fraction=first_plan.fraction, held=first_plan.held)
    survivors = [lab for lab in labels if lab not in pruned]
    full: dict[str, dict[str, Any]] = {}
    if survivors:
        t = time.perf_counter()
        full, memory["full_round"] = _score_round(engine, plan, survivors, reporter)
        timings["full_round_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    held = first_plan.held if first_plan is not None else ()
    entries = [_entry(e, sizes.get(e.label), full.get(e.label), first.get(e.label),
                      pruned.get(e.label), skipped.get(e.label), settings, held)
               for e in grid]
    front = sweep_frontier(entries, confidence=settings.confidence)
    for entry in entries:
        entry["frontier"] = entry["config"] in front
    rec = recommend(entries, target=settings.target_band, confidence=settings.confidence,
                    reference=ref)
    summary = _summary(plan, settings, ref, ref_kv, contexts, entries, front, rec,
                       first_plan, timings, memory, model_name, n_train)
    summary["kv_note"] = sliding_window_note(engine.metadata(),
                                             str(info.get("architecture") or ""), contexts)
    return SweepResult(summary, reports=full,
                       first_round={k: v for k, v in first.items() if k in pruned})


def _entry(e: GridEntry, kv: dict[str, Any] | None, report: dict[str, Any] | None,
           first: dict[str, Any] | None, pruned: dict[str, Any] | None,
           skipped: str | None, settings: SweepSettings,
           held: Sequence[str] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {"config": e.label, "ctk": e.config.ctk, "ctv": e.config.ctv,
                           "origin": e.origin, "kv": kv}
    rep = report if report is not None else (first if pruned is not None else None)
    if skipped is not None:
        out.update(status="skipped", skipped=skipped)
    elif pruned is not None and first is not None:
        s = first.get("settings") or {}
        out.update(status="pruned", pruned={**pruned, "held_at_100": list(held), "budget": {
            "prompts": s.get("n_prompts"),
            "chunks": s.get("chunks") if "kld" in (s.get("axes") or []) else None}})
    elif report is not None and report_composite(report) is not None:
        out["status"] = "scored"
    else:
        from refract.report.fields import axis_problems

        why = "; ".join(axis_problems(report)) if report is not None else "no report"
        out.update(status="error", error=f"nothing was measured ({why or 'no axis scored'})")
    bound = rep is not None and rep is first and bool(held)
    est = (bound_estimate(rep, held) if bound else composite_estimate(rep)) if rep else None
    probs = dict((est or {}).get("band_probabilities") or {})
    ci = (est or {}).get("ci95")
    point = float(est["point"]) if bound and est else None
    out.update(
        # a first round that held axes at 100 gives an upper bound of the composite
        composite=point if bound else report_composite(rep) if rep is not None else None,
        composite_upper_bound=bound,
        ci95=list(ci) if ci else None,
        band=(band(point) if point is not None else None) if bound
        else report_band(rep) if rep is not None else None,
        band_probabilities=probs,
        p_target=p_at_least(probs, settings.target_band),
        decided=(est or {}).get("decided"),
        frontier=False,
        report=None,
    )
    if rep is not None and kv is not None:
        out["kv_checked"] = checked_against(kv, rep.get("environment") or {}, e.label)
    return out


def _summary(plan: ScorePlan, settings: SweepSettings, ref: str, ref_kv: dict[str, Any],
             contexts: list[int], entries: list[dict[str, Any]], front: list[str],
             rec: dict[str, Any], first_plan: FirstRound | None, timings: dict[str, float],
             memory: dict[str, Any], model_name: str | None, n_train: int) -> dict[str, Any]:
    from refract import __version__
    from refract.inputs.provenance import file_sha256

    try:
        sha = file_sha256(plan.model_path)
    except OSError:
        sha = None
    rule = None
    first_round = None
    if first_plan is not None:
        fp = first_plan.plan
        level = first_look_level(first_plan.fraction, settings.confidence)
        first_round = {"prompts": [len(fp.prompts), len(plan.prompts)],
                       "chunks": ([fp.options.chunks, plan.options.chunks]
                                  if fp.options.kld else None),
                       "fraction": settings.first_round if not first_plan.held else None,
                       "axes": fp.options.axes, "held_at_100": list(first_plan.held),
                       "level": level}
        if first_plan.held:
            names = ", ".join(first_plan.held)
            rule = (f"a first round measures {', '.join(fp.options.axes)} alone, on every "
                    f"prompt: the numbers the full budget gives it ({names} held at 100, so "
                    f"its composite is an upper bound of the full one); a config is dropped "
                    f"when that bound is below {settings.target_band} with probability ≥ "
                    f"{level:g}; the rest get the full budget")
        else:
            look = (f"with probability ≥ {level:.4f} (the level of a first look at "
                    f"{100.0 * first_plan.fraction:.0f} % of the budget for "
                    f"{100.0 * settings.confidence:g} % over both looks, O'Brien–Fleming-type "
                    "α spending)")
            rule = (f"after a first round, a config is dropped when its composite is below "
                    f"{settings.target_band} {look}, or when another config no larger in KV "
                    f"bytes per token is better with that probability (paired bootstrap); "
                    "the rest get the full budget")
    return {
        "schema": SCHEMA,
        "refract_version": __version__,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "model": {"path": str(plan.model_path),
                  "name": model_name or plan.model_path.stem,
                  "sha256": sha, "n_ctx_train": n_train or None},
        "reference": {"config": ref, "kv": ref_kv},
        "target_band": settings.target_band,
        "confidence": settings.confidence,
        "settings": plan.settings(),
        "memory_ctx": contexts,
        "grid": {"types": settings.types, "pairs": settings.pairs,
                 "listed": list(settings.candidates),
                 "size": len(entries)},
        "pruning": {"enabled": settings.prune, "rule": rule,
                    "first_round": first_round},
        "configs": entries,
        "frontier": front,
        "frontier_rule": (f"KV bytes per token against composite, over the fully scored configs "
                          f"not below {settings.target_band} with probability ≥ "
                          f"{settings.confidence:g}: nothing smaller scores as well"),
        "recommendation": rec,
        "skipped": [{"config": e["config"], "reason": e["skipped"]} for e in entries
                    if e["status"] == "skipped"],
        "memory": memory,
        "timings": timings,
    }
