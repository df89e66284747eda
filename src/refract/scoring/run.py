"""Running a score: one model load, one shared reference, one report per candidate.

>>> report = run_score("model.gguf", "ctk=q8_0,ctv=q8_0")                 # trajectory + KLD
>>> reports = run_scores("model.gguf", ["ctk=q8_0,ctv=q8_0", "ctk=q4_0,ctv=q4_0"], full=True)

:func:`execute_score` refuses what only the model can tell is impossible before any axis runs
(:func:`refuse_impossible`, on a vocabulary-only load: a :class:`UsageError`, so no report is
ever built over nothing), loads the model, checks the memory plan, then runs the axes of
:data:`refract.axes.registry` in order: each scores every candidate against the reference,
computed once. It knows no axis by name.

A runtime failure inside one axis marks that axis ``error`` and keeps the others; a candidate
that produced non-finite logits gets that axis ``invalid`` (score 0); a reference that produced
them stops the run (:class:`ReferenceInvalid`).
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from refract.axes import RunContext, registry
from refract.axes.base import timed
from refract.composite import FloorCheck
from refract.engine.environment import collect_environment, kv_allocation_warnings
from refract.errors import FloorFailed, UsageError
from refract.inputs.corpus import BUNDLED
from refract.kvconfig import KVConfig
from refract.options import ScoreOptions
from refract.progress import Reporter
from refract.scoring.floor import measure_floor
from refract.scoring.memory import check_memory
from refract.scoring.plan import ScorePlan, prepare_score

if TYPE_CHECKING:
    from refract.engine.facade import Engine

__all__ = ["execute_score", "refuse_impossible", "run_score", "run_scores"]


def execute_score(
    plan: ScorePlan,
    *,
    reporter: Reporter | None = None,
    engine: Engine | None = None,
) -> list[dict[str, Any]]:
    """Load the model (unless ``engine`` is given), run the plan; one report per candidate.

    Raises :class:`FloorFailed` (with the marked reports) when ``measure_floor`` finds an
    unclean ref-vs-ref floor, and :class:`ReferenceInvalid` when the reference's logits are
    not finite.
    """
    from refract.engine.facade import Engine

    t_start = time.perf_counter()
    shared: dict[str, float] = {}
    own_engine = engine is None
    checked: tuple[Any, dict[str, Any]] | None = None
    if engine is None:
        opts = plan.options
        # what the inputs make impossible is refused before the model loads: the vocabulary,
        # hyperparameters and chat template suffice to tokenize and render every input
        with timed(shared, "preflight_s"):
            vocab = Engine(plan.model_path, n_threads=opts.threads, vocab_only=True)
            try:
                checked = refuse_impossible(vocab, plan)
            finally:
                vocab.close()
        with timed(shared, "load_s"):
            engine = Engine(plan.model_path, n_threads=opts.threads,
                            n_gpu_layers=opts.n_gpu_layers, seed=opts.seed)
    ctx = RunContext(engine=engine, plan=plan, reporter=reporter or Reporter(), shared=shared)
    try:
        return _run(ctx, t_start, checked)
    finally:
        if own_engine:
            engine.close()


def _check_kv_types(engine: Engine, plan: ScorePlan) -> None:
    """A type whose block size does not divide the head dim fails here, before any work."""
    engine.kv(plan.reference)
    for cfg in plan.candidates:
        engine.kv(cfg, slot=1)


def refuse_impossible(engine: Engine, plan: ScorePlan) -> tuple[Any, dict[str, Any]]:
    """Refuse (:class:`UsageError`) what the inputs make impossible, before any axis runs and
    before any report exists -- never a report in which nothing scored: KV types the model
    cannot take, ``--ctx`` beyond its training context, prompts that leave no room to generate
    or that its chat template cannot render, and each axis's own refusals
    (:meth:`~refract.axes.base.Axis.preflight`: a corpus shorter than one KLD window, R-NIAH
    cells that cannot be planned or rendered). Needs only the vocabulary and metadata (a
    ``vocab_only`` engine: :func:`execute_score` runs it before the model loads). Returns the
    corpus tokens the KLD chunks need and how much of the corpus was used."""
    opts = plan.options
    axes = registry.enabled(opts)
    _check_kv_types(engine, plan)
    if any(a.uses_ctx for a in axes):
        try:
            engine.check_ctx(opts.ctx)
        except ValueError as exc:
            raise UsageError(f"--ctx: {exc}") from None
    check_prompts_fit(engine, plan)
    corpus_used: dict[str, Any] = {}
    tokens = None
    if plan.corpus_text is not None:  # loaded for the axes that read it
        text = plan.corpus_text
        tokens, n_chars = engine.corpus_tokens(text, opts.ctx, opts.chunks)
        corpus_used = {"chars_used": int(n_chars), "chars_total": len(text),
                       "tokens_tokenized": int(len(tokens))}
    for axis in axes:
        axis.preflight(engine, plan, tokens)
    return tokens, corpus_used


def check_prompts_fit(engine: Engine, plan: ScorePlan) -> None:
    """Every prompt an axis decodes (:meth:`~refract.axes.base.Axis.prompt_jobs`), tokenized
    as it tokenizes it (through the chat template where it uses it, rendered in its sandbox),
    must leave room for one generated token in ``--ctx``; a template that cannot render a
    prompt is refused too. Raises :class:`UsageError` naming the prompt, its token count and
    the fix."""
    from refract.errors import ChatTemplateError

    opts = plan.options
    too_long: list[tuple[str, int, str]] = []
    seen: set[tuple[str, bool]] = set()
    for axis in registry:
        if not axis.enabled(opts):
            continue
        for pid, text, chat, via in axis.prompt_jobs(plan):
            if (text, chat) in seen:
                continue
            seen.add((text, chat))
            try:
                n = int(engine.prompt_ids(text, chat_template=chat).size)
            except ChatTemplateError as exc:
                raise UsageError(plan.template_refusal(
                    exc, f"{axis.template_label} renders prompt {pid!r} of "
                    f"{plan.prompts_what()}")) from None
            if n >= opts.ctx:
                too_long.append((pid, n, via))
    if too_long:
        pid, n, via = too_long[0]
        more = ""
        if len(too_long) > 1:
            others = sorted({p for p, _, _ in too_long[1:]} - {pid})
            shown = ", ".join(repr(p) for p in others[:5]) + (" …" if len(others) > 5 else "")
            more = f" (also too long: {shown})" if others else ""
        raise UsageError(
            f"{plan.prompts_what()}: prompt {pid!r} has {n} tokens ({via}), which leaves no "
            f"room to generate in --ctx {opts.ctx}{more}; use shorter prompts or a larger --ctx"
        )


def _run(ctx: RunContext, t_start: float,
         checked: tuple[Any, dict[str, Any]] | None) -> list[dict[str, Any]]:
    plan, engine, opts = ctx.plan, ctx.engine, ctx.options
    if checked is None:
        # an engine the caller passed in (a matrix worker's): refused here, after its load
        with ctx.timed(ctx.shared, "tokenize_corpus_s"):
            checked = refuse_impossible(engine, plan)
    else:
        # checked on the vocabulary before the load (same tokens); only what needs the full
        # hyperparameters is asked again: a vocabulary-only load reads a per-layer head count
        # as 0, so the block size / head dim check could not refuse a type there
        _check_kv_types(engine, plan)
    ctx.corpus_tokens, ctx.corpus_used = checked
    check_memory(engine, plan)
    first_event = _attach_store(engine, opts)
    cands = ctx.candidates
    axes: dict[str, dict[str, Any]] = {c: {} for c in cands}
    ctx.timings = {c: {} for c in cands}
    extras: dict[str, Any] = {}

    floor: FloorCheck | None = None
    if opts.measure_floor:
        floor, extras["floor"] = measure_floor(ctx)
        if floor is not None and not floor.ok:
            skipped = {a.key: {"skipped": True, "reason": "the noise floor check failed"}
                       for a in registry if a.enabled(opts)}
            reports = [_report(ctx, c, dict(skipped), {**ctx.shared}, extras, floor, t_start)
                       for c in plan.candidates]
            for r in reports:
                r["floor_failed"] = True
            raise FloorFailed(floor, extras["floor"], reports)

    decided: dict[str, dict[str, Any]] = {}
    if opts.until_decided:
        from refract.scoring.decided import run_in_rounds

        axes, decided = run_in_rounds(ctx)
    else:
        for axis in registry:
            if not axis.enabled(opts):
                if axis.skip_reason is not None:
                    for c in cands:
                        axes[c][axis.key] = {"skipped": True, "reason": axis.skip_reason}
                continue
            results = axis.run(ctx)
            for c in cands:
                axes[c][axis.key] = results[c]
            engine.release()

    store_info = _store_record(engine, opts, first_event)
    if store_info is not None:
        extras["reference_store"] = store_info
    reports = [_report(ctx, cfg, axes[cfg.label], {**ctx.shared, **ctx.timings[cfg.label]},
                       extras, floor, t_start)
               for cfg in plan.candidates]
    if store_info is not None and store_info["reused"]:
        for report in reports:
            report["notes"].append(_reuse_note(store_info))
    for report in reports:
        record = decided.get(report["candidate"])
        if record is not None:
            report["until_decided"] = record
            used_p, used_c = record["prompts_used"], record["chunks_used"]
            report["notes"].append(
                ("stopped early" if record["stopped_early"] else "ran its whole budget")
                + f" (--until-decided at {record['confidence']:.0%}: look "
                f"{record['looks_run']} of {record['looks_planned']}, "
                f"{record['budget_fraction']:.0%} of the budget: {used_p[0]}/{used_p[1]} "
                f"prompts, {used_c[0]}/{used_c[1]} chunks): {record['reason']}")
    return reports


def _attach_store(engine: Engine, opts: ScoreOptions) -> int:
    """Attach the persistent reference store to the engine's reference cache (or detach it
    under ``--no-reference-cache``); returns where this run's store events begin."""
    from refract.engine.environment import engine_identity
    from refract.engine.store import default_store

    cache = engine.reference_cache
    if opts.reference_cache:
        cache.use_store(default_store(), lambda: engine_identity(engine))
    else:
        cache.use_store(None)
    return len(cache.events)


def _store_record(engine: Engine, opts: ScoreOptions, first: int) -> dict[str, Any] | None:
    """The report's ``extras.reference_store``: whether the store was on, and what this run
    reused from it, stored in it or computed again (and why)."""
    from refract.engine.store import FAMILY_TEXT, default_store

    if not opts.reference_cache:
        return {"enabled": False, "reused": [], "stored": [], "events": []}
    events = [dict(e) for e in engine.reference_cache.events[first:]]
    return {
        "enabled": True,
        "path": str(default_store().root),
        "reused": [e["entry"] for e in events if e["outcome"] == "reused"],
        "stored": [e["entry"] for e in events if e["outcome"] == "stored"],
        "events": events,
        "what": {e["entry"]: FAMILY_TEXT.get(e["entry"], e["entry"]) for e in events},
    }


def _reuse_note(info: dict[str, Any]) -> str:
    what = "; ".join(dict.fromkeys(info["what"][e] for e in info["reused"]))
    return (f"reused from the reference store ({info['path']}): {what}, computed by an earlier "
            "run on the same model file, build, machine and settings; its numbers equal a "
            "fresh computation's (--no-reference-cache computes everything again)")


def _report(
    ctx: RunContext, cand: KVConfig, axes: dict[str, Any], timings: dict[str, float],
    extras: dict[str, Any], floor: FloorCheck | None, t_start: float,
) -> dict[str, Any]:
    from refract.report.build import build_report

    plan, engine = ctx.plan, ctx.engine
    env = collect_environment(engine)
    notes = list(kv_allocation_warnings(
        env.get("kv_allocated") or {}, [plan.reference, cand], env.get("kv_layers")
    ))
    if notes:
        env["kv_allocation_warnings"] = list(notes)
    timings = dict(timings)
    timings["total_s"] = time.perf_counter() - t_start
    if len(plan.candidates) > 1:
        notes.append(
            f"scored with {len(plan.candidates)} candidates in one run: the reference side of "
            "every axis was computed once and shared; load, KLD and floor timings are for the "
            "whole run"
        )
    prov = _provenance(plan)
    name = str(((prov or {}).get("corpus") or {}).get("name") or "")
    if plan.corpus_text is not None and name and not name.startswith("wikitext-2"):
        what = ("the bundled public-domain text" if name.startswith(BUNDLED)
                else "a custom corpus")
        notes.append(
            f"KLD was measured on {what} ({name}), not on WikiText-2: these are not "
            "WikiText-2 numbers and do not compare with WikiText-2 reports"
        )
    return build_report(
        model=str(plan.model_path),
        reference=plan.reference.label,
        candidate=cand.label,
        axes=axes,
        model_info=engine.model_info,
        environment=env,
        timings=timings,
        repro_command=shlex.join(plan.repro_command(cand)),
        notes=notes,
        floor=floor,
        extras=dict(extras),
        provenance=prov,
        settings=plan.settings(),
        self_check=cand.label == plan.reference.label,
    )


def _provenance(plan: ScorePlan) -> dict[str, Any] | None:
    """Hashes of every input (a file that vanished during the run is noted, not fatal: the
    scores are already computed)."""
    from refract.inputs.provenance import build_provenance

    try:
        return build_provenance(
            model_path=plan.model_path, corpus_path=plan.corpus_path,
            haystack_path=plan.haystack_path, prompts=plan.prompts,
            prompts_path=plan.prompts_path,
        )
    except OSError as exc:
        return {"error": f"could not hash an input: {exc}"}


def run_scores(
    model: str | os.PathLike[str],
    candidates: Sequence[str],
    options: ScoreOptions | None = None,
    *,
    reporter: Reporter | None = None,
    engine: Engine | None = None,
    **overrides: Any,
) -> list[dict[str, Any]]:
    """Score every candidate against the reference on ``model`` (one load, one shared
    reference); one report dict per candidate, in order."""
    plan = prepare_score(model, candidates, options, reporter=reporter, **overrides)
    return execute_score(plan, reporter=reporter, engine=engine)


def run_score(
    model: str | os.PathLike[str],
    candidate: str,
    options: ScoreOptions | None = None,
    *,
    reporter: Reporter | None = None,
    engine: Engine | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Score one ``candidate`` against the reference on ``model``; returns the report dict.

    ``overrides`` are :class:`ScoreOptions` fields (``chunks=4``, ``full=True``, ...).
    """
    [report] = run_scores(model, [candidate], options, reporter=reporter, engine=engine,
                          **overrides)
    return report
