"""Programmatic scoring: one model load, one shared reference, one report per candidate.

>>> report = run_score("model.gguf", "ctk=q8_0,ctv=q8_0")                 # trajectory + KLD
>>> reports = run_scores("model.gguf", ["ctk=q8_0,ctv=q8_0", "ctk=q4_0,ctv=q4_0"], full=True)

:func:`prepare_score` checks every cheap thing first (KV strings parse and name types the
linked build has, files exist and are readable, outputs are writable and overwrite no input,
the corpus is cached or fetchable, PLAD fires on the prompt set) and returns a
:class:`ScorePlan`; :func:`execute_score` loads the model, refuses what only the model can
tell is impossible (:func:`check_prompts_fit`, :func:`check_corpus_tokens`,
:func:`check_memory`, :func:`check_rniah_plan`: a :class:`UsageError` before any axis runs, so
no report is ever built over nothing), then runs it: axis by axis, the reference side once
(the engine's :class:`~refract.engine.facade.ReferenceCache`), then every candidate against it.

A runtime failure inside one axis marks that axis ``error`` and keeps the others; a candidate
that produced non-finite logits gets that axis ``invalid`` (score 0); a reference that produced
them stops the run (:class:`ReferenceInvalid`).
"""

from __future__ import annotations

import functools
import os
import shlex
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refract.defaults import DEFAULT_REFERENCE, DEMO
from refract.engine.environment import collect_environment, kv_allocation_warnings
from refract.errors import FloorFailed, ReferenceInvalid
from refract.inputs.corpus import (
    BUNDLED,
    CorpusError,
    bundled_corpus_path,
    default_corpus_path,
    read_text,
    wikitext_dir,
)
from refract.inputs.model import resolve_model
from refract.inputs.promptset import Prompt, load_prompts
from refract.kvconfig import KVConfig, KVConfigError
from refract.options import (
    ScoreOptions,
    UsageError,
    parse_float_list,
    parse_int_list,
)
from refract.progress import Reporter
from refract.scoring.composite import FloorCheck, check_floor

__all__ = [
    "DEFAULT_REFERENCE",
    "FloorFailed",
    "ReferenceInvalid",
    "ScoreOptions",
    "ScorePlan",
    "UsageError",
    "check_output_path",
    "execute_score",
    "parse_float_list",
    "parse_int_list",
    "prepare_score",
    "resolve_model",
    "run_score",
    "run_scores",
]


# --------------------------------------------------------------------------- the plan


@dataclass
class ScorePlan:
    """Everything a score needs, validated; built by :func:`prepare_score`."""

    model_arg: str
    model_path: Path
    options: ScoreOptions
    reference: KVConfig
    candidates: list[KVConfig]
    prompts: list[Prompt] = field(default_factory=list)
    prompts_path: Path | None = None
    corpus_path: Path | None = None
    corpus_text: str | None = None
    haystack_path: Path | None = None
    haystack_text: str | None = None

    @property
    def candidate(self) -> KVConfig:
        """The first (for a single-candidate plan: the) candidate."""
        return self.candidates[0]

    def settings(self) -> dict[str, Any]:
        """The options of this run, for the report's ``settings`` key."""
        out = self.options.settings()
        out["prompts"] = str(self.prompts_path) if self.prompts_path else (
            "bundled" if self.prompts else None)
        out["n_prompts"] = len(self.prompts)
        out["corpus"] = str(self.corpus_path) if self.corpus_path else None
        out["rniah_haystack"] = str(self.haystack_path) if self.haystack_path else None
        return out

    def repro_command(self, candidate: KVConfig | None = None) -> list[str]:
        """A ``refract score`` command line that repeats this run (for one candidate)."""
        cands = [candidate] if candidate is not None else self.candidates
        cmd = ["refract", "score", "--model", self.model_arg]
        for c in cands:
            cmd += ["--candidate", c.label]
        # options left at their defaults (a cached WikiText-2, the bundled prompts) are not
        # spelled out: another machine resolves them the same way
        return cmd + self.options.cli_args()


# --------------------------------------------------------------------------- validation


def check_output_path(path: str | os.PathLike[str], what: str) -> Path:
    """An output file whose directory exists and can take a new file (checked before work).

    The check creates (and removes) a temporary file in the directory, so read-only mounts,
    /proc and /sys are found even as root; the message names the user's path.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        raise UsageError(f"{what} {str(p)!r} is a directory, expected a file path")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise UsageError(f"{what} {str(p)!r}: directory {str(parent)!r} does not exist")
    if not parent.is_dir():
        raise UsageError(f"{what} {str(p)!r}: {str(parent)!r} is not a directory")
    if p.exists() and not p.is_file():
        raise UsageError(f"{what} {str(p)!r} exists and is not a regular file")
    if p.exists() and not os.access(p, os.W_OK):
        raise UsageError(f"{what} {str(p)!r} exists and is not writable")
    try:
        fd, probe = tempfile.mkstemp(prefix=".refract-probe-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(
            f"{what} {str(p)!r}: cannot write in {str(parent)!r} ({exc.strerror or exc})"
        ) from None
    return p


def check_outputs_distinct(
    outputs: Mapping[str, Path | None], inputs: Mapping[str, Path | None]
) -> None:
    """No output may be an input (model, corpus, ...) or another output."""
    seen: dict[Path, str] = {}
    for what, path in inputs.items():
        if path is not None:
            seen.setdefault(_real(path), what)
    outs: dict[Path, str] = {}
    for what, path in outputs.items():
        if path is None:
            continue
        real = _real(path)
        if real in seen:
            raise UsageError(
                f"{what} {str(path)!r} is the {seen[real]}: refusing to overwrite an input"
            )
        if real in outs:
            raise UsageError(f"{what} {str(path)!r} is also given as {outs[real]}")
        outs[real] = what


def _real(path: Path) -> Path:
    try:
        return Path(os.path.realpath(path))
    except OSError:
        return Path(os.path.abspath(path))


def _check_kv(text: str, what: str, known: Sequence[str] | None) -> KVConfig:
    if not isinstance(text, str) or not text.strip() or not text.replace(",", "").strip():
        raise UsageError(f"{what} is empty: give a KV config such as ctk=q8_0,ctv=q8_0")
    try:
        cfg = KVConfig.parse(text)
    except KVConfigError as exc:
        raise UsageError(f"{what}: {exc}") from None
    if known:
        for key, name in (("ctk", cfg.ctk), ("ctv", cfg.ctv)):
            if name not in known:
                raise UsageError(
                    f"{what} {text!r}: {key}={name} is not a KV type of this llama.cpp build "
                    f"(it has: {', '.join(known)})"
                )
    return cfg


def _known_kv_types() -> list[str] | None:
    try:
        from refract import _core
    except ImportError:
        return None
    return list(_core.kv_types())


def check_candidates(
    candidates: str | Sequence[str], reference: str
) -> tuple[KVConfig, list[KVConfig]]:
    """Parse and check the reference and candidate KV strings (types the build has, no
    duplicates, none empty)."""
    if isinstance(candidates, str):
        candidates = [candidates]
    if not candidates:
        raise UsageError("no --candidate given: name at least one KV config to score")
    known = _known_kv_types()
    ref = _check_kv(reference, "--reference", known)
    cands = [_check_kv(c, "--candidate", known) for c in candidates]
    labels = [c.label for c in cands]
    dups = sorted({x for x in labels if labels.count(x) > 1})
    if dups:
        raise UsageError(f"--candidate given twice: {', '.join(dups)}")
    return ref, cands


def _read_text(path: str | os.PathLike[str], what: str) -> tuple[Path, str]:
    p = Path(path).expanduser()
    try:
        return p, read_text(p)
    except CorpusError as exc:
        raise UsageError(f"{what}: {exc}") from None


def _resolve_text(
    value: str | None, split: str, what: str, *, demo: bool, auto_fetch: bool,
    reporter: Reporter,
) -> tuple[Path, str]:
    """A corpus option → (path, text): a file, ``bundled``, or the default for the model."""
    if value == BUNDLED or (value is None and demo):
        return _read_text(bundled_corpus_path(split), f"bundled {what}")
    if value is not None:
        return _read_text(value, what)
    try:
        path = default_corpus_path(split, auto_fetch=False)
    except CorpusError as exc:
        if not auto_fetch:
            raise UsageError(str(exc)) from None
        from refract.inputs.corpus import fetch_wikitext

        with reporter.download("fetching WikiText-2") as cb:
            path = fetch_wikitext(progress=cb)[split]  # network failures stay CorpusError
    return _read_text(path, f"default {what}")


def prepare_score(
    model: str | os.PathLike[str],
    candidates: str | Sequence[str],
    options: ScoreOptions | None = None,
    *,
    reporter: Reporter | None = None,
    outputs: Mapping[str, Path | None] | None = None,
    **overrides: Any,
) -> ScorePlan:
    """Validate everything that can be checked without loading the model.

    ``overrides`` are :class:`ScoreOptions` fields (``chunks=4``, ``axis_plad=True`` ...)
    applied on top of ``options``. ``outputs`` maps an output's flag to its path: each must be
    writable and none may be an input or another output.
    """
    reporter = reporter or Reporter()
    if overrides:
        base = options.settings() if options is not None else {}
        values = {k: v for k, v in base.items() if k in ScoreOptions.__dataclass_fields__}
        values.update({k: os.fspath(v) if isinstance(v, os.PathLike) else v
                       for k, v in overrides.items()})
        options = ScoreOptions.from_mapping(values)
    opts = options or ScoreOptions()
    ref_cfg, cand_cfgs = check_candidates(candidates, opts.reference)
    for what, path in (outputs or {}).items():
        if path is not None and not (what == "--out-dir" and Path(path).is_dir()):
            check_output_path(path, what)  # an existing --out-dir is checked as a directory

    model_path = resolve_model(model)
    demo = os.fspath(model) == DEMO
    plan = ScorePlan(model_arg=os.fspath(model), model_path=model_path, options=opts,
                     reference=ref_cfg, candidates=cand_cfgs)
    if opts.needs_prompts or opts.prompts is not None:
        plan.prompts_path = Path(opts.prompts).expanduser() if opts.prompts else None
        plan.prompts = load_prompts(plan.prompts_path)  # PromptSetError names file and line
    if opts.plad:
        check_plad_fires(plan)
    if opts.needs_corpus:
        plan.corpus_path, plan.corpus_text = _resolve_text(
            opts.corpus, "test", "corpus", demo=demo, auto_fetch=not opts.no_auto_fetch,
            reporter=reporter)
    if opts.rniah:
        plan.haystack_path, plan.haystack_text = _resolve_text(
            opts.rniah_haystack, "train", "haystack", demo=demo,
            auto_fetch=not opts.no_auto_fetch, reporter=reporter)
    check_outputs_distinct(
        outputs or {},
        {"model": model_path, "corpus": plan.corpus_path, "haystack": plan.haystack_path,
         "prompt set": plan.prompts_path},
    )
    return plan


# --------------------------------------------------------------------------- running


AxisFn = Callable[[], dict[str, Any]]


def _guarded(axis: str, reference: str, fn: AxisFn) -> dict[str, Any]:
    """Run one axis for one candidate; failures become an ``error``/``invalid`` axis."""
    from refract.engine.facade import NonFiniteLogits

    try:
        return fn()
    except NonFiniteLogits as exc:
        if exc.label == reference:
            raise ReferenceInvalid(
                f"the reference {reference} produced non-finite (NaN/inf) logits in "
                f"{exc.n_rows} of {exc.n_total} rows ({exc.where}): it measures nothing"
            ) from None
        return {
            "score": 0.0,
            "invalid": True,
            "invalid_reason": f"candidate produced non-finite (NaN/inf) logits in {exc.n_rows} "
            f"of {exc.n_total} rows ({exc.where})",
        }
    except (FloorFailed, ReferenceInvalid):
        raise
    except Exception as exc:  # one axis failing does not lose the run
        message = " ".join(str(exc).split()) or type(exc).__name__
        return {"score": None, "error": f"{type(exc).__name__}: {message}"}


def _reraise(exc: BaseException) -> dict[str, Any]:
    raise exc


@contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0


def _floor(engine: Any, plan: ScorePlan, tokens: Any, reporter: Reporter) -> tuple[
    FloorCheck, dict[str, Any]
]:
    """Axes A and B with candidate = reference (only those the run has)."""
    from refract.axes.trajectory import run_trajectory

    opts, ref = plan.options, plan.reference.label
    t0 = time.perf_counter()
    scores: dict[str, Any] = {}
    detail: dict[str, Any] = {}
    per_prompt: list[Any] = []
    if opts.trajectory:
        with reporter.axis("floor A: trajectory, ref vs ref", phases=2) as cb:
            gtm = run_trajectory(
                engine, plan.prompts, reference=ref, candidate=ref, n_predict=opts.n_predict,
                ctx=opts.ctx, chat_template=opts.chat_template, sequential=opts.sequential,
                progress=cb,
            )
        scores["gtm"] = gtm["score"]
        per_prompt = gtm["per_prompt"]
        detail.update(gtm_score=gtm["score"], full_match_rate=gtm["full_match_rate"])
    if opts.kld:
        with reporter.axis("floor B: KLD, ref vs ref") as cb:
            [kld] = engine.kld(tokens, ref, [ref], ctx=opts.ctx, chunks=opts.chunks,
                               progress=cb)
        scores["kld"] = kld.score
        detail.update(kld_score=kld.score, mean_kld=kld.mean_kld)
    check = check_floor(scores, per_prompt)
    detail.update(
        axes=sorted(scores), composite=check.score, ok=check.ok, reasons=list(check.reasons),
        diverged_prompts=list(check.diverged_prompts), seconds=time.perf_counter() - t0,
    )
    return check, detail


def execute_score(
    plan: ScorePlan,
    *,
    reporter: Reporter | None = None,
    engine: Any = None,
) -> list[dict[str, Any]]:
    """Load the model (unless ``engine`` is given), run the plan; one report per candidate.

    Raises :class:`FloorFailed` (with the marked reports) when ``measure_floor`` finds an
    unclean ref-vs-ref floor, and :class:`ReferenceInvalid` when the reference's logits are
    not finite.
    """
    reporter = reporter or Reporter()
    opts = plan.options
    t_start = time.perf_counter()
    shared: dict[str, float] = {}
    own_engine = engine is None
    checked: tuple[Any, dict[str, Any]] | None = None
    if own_engine:
        from refract.engine.facade import Engine

        # what the inputs make impossible is refused before the model loads: the vocabulary,
        # hyperparameters and chat template suffice to tokenize and render every input
        with _timed(shared, "preflight_s"):
            vocab = Engine(plan.model_path, n_threads=opts.threads, vocab_only=True)
            try:
                checked = refuse_impossible(vocab, plan)
            finally:
                vocab.close()
        with _timed(shared, "load_s"):
            engine = Engine(plan.model_path, n_threads=opts.threads,
                            n_gpu_layers=opts.n_gpu_layers, seed=opts.seed)
    try:
        return _run(plan, engine, reporter, shared, t_start, checked)
    finally:
        if own_engine:
            engine.close()


def refuse_impossible(engine: Any, plan: ScorePlan) -> tuple[Any, dict[str, Any]]:
    """Refuse (:class:`UsageError`) what the inputs make impossible, before any axis runs and
    before any report exists -- never a report in which nothing scored: KV types the model
    cannot take, ``--ctx`` beyond its training context, prompts that leave no room to generate
    or that its chat template cannot render, a corpus shorter than one KLD window, R-NIAH cells
    that cannot be planned or rendered. Needs only the vocabulary and metadata (a
    ``vocab_only`` engine: :func:`execute_score` runs it before the model loads). Returns the
    corpus tokens the KLD chunks need and how much of the corpus was used."""
    opts = plan.options
    # a type whose block size does not divide the head dim fails here, before any work
    engine.kv(plan.reference)
    for cfg in plan.candidates:
        engine.kv(cfg, slot=1)
    if opts.trajectory or opts.kld or opts.plad:
        try:
            engine.check_ctx(opts.ctx)
        except ValueError as exc:
            raise UsageError(f"--ctx: {exc}") from None
    check_prompts_fit(engine, plan)
    corpus_used: dict[str, Any] = {}
    tokens = None
    if opts.needs_corpus:
        tokens, corpus_used = _corpus_tokens(engine, plan)
        if opts.kld:
            check_corpus_tokens(plan, len(tokens))
    if opts.rniah:
        check_rniah_plan(engine, plan)
    return tokens, corpus_used


def _run(plan: ScorePlan, engine: Any, reporter: Reporter, shared: dict[str, float],
         t_start: float, checked: tuple[Any, dict[str, Any]] | None = None
         ) -> list[dict[str, Any]]:
    opts = plan.options
    ref = plan.reference.label
    cands = [c.label for c in plan.candidates]
    if checked is None:
        # an engine the caller passed in (a matrix worker's): refused here, after its load
        with _timed(shared, "tokenize_corpus_s"):
            checked = refuse_impossible(engine, plan)
    else:
        # checked on the vocabulary before the load (same tokens); only what needs the full
        # hyperparameters is asked again: a vocabulary-only load reads a per-layer head count
        # as 0, so the block size / head dim check could not refuse a type there
        engine.kv(plan.reference)
        for cfg in plan.candidates:
            engine.kv(cfg, slot=1)
    tokens, corpus_used = checked
    check_memory(engine, plan)
    axes: dict[str, dict[str, Any]] = {c: {} for c in cands}
    timings: dict[str, dict[str, float]] = {c: {} for c in cands}
    extras: dict[str, Any] = {}

    floor: FloorCheck | None = None
    if opts.measure_floor and not (opts.trajectory or opts.kld):
        extras["floor"] = {"skipped": True, "reason": "the floor measures axes A and B, and "
                           "both are skipped"}
    elif opts.measure_floor:
        with _timed(shared, "floor_s"):
            floor, detail = _floor(engine, plan, tokens, reporter)
        extras["floor"] = detail
        if not floor.ok:
            skipped = {k: {"skipped": True, "reason": "the noise floor check failed"}
                       for k in opts.axes}
            reports = [
                _report(plan, engine, c, dict(skipped), {**shared}, extras, floor,
                        corpus_used, t_start)
                for c in plan.candidates
            ]
            for r in reports:
                r["floor_failed"] = True
            raise FloorFailed(floor, detail, reports)

    if opts.trajectory:
        from refract.axes.trajectory import run_trajectories, trajectory_noise_floor

        with reporter.axis(_title("A trajectory", f"{len(cands)} candidates", cands),
                           phases=1 + len(cands)) as cb, _timed(shared, "gtm_s"):
            gtm = _guarded("gtm", ref, lambda: {"results": run_trajectories(
                engine, plan.prompts, reference=ref, candidates=cands,
                n_predict=opts.n_predict, ctx=opts.ctx, chat_template=opts.chat_template,
                sequential=opts.sequential, progress=cb,
            )})
        for c in cands:
            result = gtm["results"][c] if "results" in gtm else dict(gtm)
            axes[c]["gtm"] = (_guarded("gtm", ref, functools.partial(_reraise, result))
                              if isinstance(result, Exception) else result)
            timings[c]["gtm_s"] = shared["gtm_s"]
        if opts.with_noise_floor:
            with reporter.axis("A noise floor (reference, other decode)") as cb, \
                    _timed(shared, "gtm_noise_floor_s"):
                nf = _guarded("gtm", ref, lambda: trajectory_noise_floor(
                    engine, plan.prompts, reference=ref, n_predict=opts.n_predict,
                    ctx=opts.ctx, chat_template=opts.chat_template,
                    sequential=opts.sequential, progress=cb,
                ))
            for c in cands:
                if axes[c]["gtm"].get("score") is not None:
                    axes[c]["gtm"]["noise_floor"] = nf
        engine.release()
    else:
        for c in cands:
            axes[c]["gtm"] = {"skipped": True, "reason": "--skip-trajectory"}

    if opts.kld:
        with reporter.axis("B KLD@D" + (f" ({len(cands)} candidates)" if len(cands) > 1
                                        else "")) as cb, _timed(shared, "kld_s"):
            results = _guarded("kld", ref, lambda: {"results": engine.kld(
                tokens, ref, cands, ctx=opts.ctx, chunks=opts.chunks, progress=cb)})
        for i, c in enumerate(cands):
            if "results" in results:
                entry = results["results"][i].to_dict(per_token=True)
                entry["corpus"] = {"path": str(plan.corpus_path), **corpus_used}
            else:
                entry = dict(results)
            axes[c]["kld"] = entry
            timings[c]["kld_s"] = shared["kld_s"] + shared.get("tokenize_corpus_s", 0.0)
        engine.release()
    else:
        for c in cands:
            axes[c]["kld"] = {"skipped": True, "reason": "--skip-kld"}

    if opts.rniah:
        from refract.axes.rniah import run_rniah

        for c in cands:
            with reporter.axis(_title("C R-NIAH", c, cands)) as cb, \
                    _timed(timings[c], "rniah_s"):
                axes[c]["rniah"] = _guarded("rniah", ref, functools.partial(
                    run_rniah, engine, plan.haystack_text or "", reference=ref, candidate=c,
                    up_to=opts.rniah_up_to, lengths=opts.rniah_lengths,
                    positions=opts.rniah_positions, n_trials=opts.rniah_trials,
                    seed=opts.seed, n_predict=opts.rniah_n_predict, progress=cb,
                ))
            axes[c]["rniah"]["haystack"] = str(plan.haystack_path)
        engine.release()

    if opts.plad:
        from refract.axes.plad import run_plad

        for c in cands:
            with reporter.axis(_title("D PLAD", c, cands), phases=2) as cb, \
                    _timed(timings[c], "plad_s"):
                axes[c]["plad"] = _guarded("plad", ref, functools.partial(
                    run_plad, engine, plan.prompts, reference=ref, candidate=c,
                    n_predict=opts.n_predict, ctx=opts.ctx, seed=opts.seed, progress=cb,
                ))
        engine.release()

    return [
        _report(plan, engine, cfg, axes[cfg.label], {**shared, **timings[cfg.label]}, extras,
                floor, corpus_used, t_start)
        for cfg in plan.candidates
    ]


def memory_plan(engine: Any, plan: ScorePlan) -> dict[str, int]:
    """Bytes each axis's contexts need at their peak (contexts are freed between axes)."""
    opts = plan.options
    ref, cands = plan.reference.label, [c.label for c in plan.candidates]
    est = engine.estimate_context_bytes
    need: dict[str, int] = {}
    n_prompts = max(1, len(plan.prompts))
    if opts.trajectory or opts.measure_floor:
        n_seq = 1 if opts.sequential else min(n_prompts, 64)
        gen = opts.ctx  # each sequence's cells: prompt + generation within ctx
        # the reference decode with (at least) one candidate teacher-forced along it, and the
        # reference rows held for that candidate's batched comparison
        need["trajectory"] = (
            est(ref, gen, n_seq, n_seq) + max(est(c, gen, n_seq, n_seq) for c in cands)
            + engine.shadow_buffer_bytes(gen, n_seq)
        )
    if opts.kld or opts.measure_floor:
        need["kld"] = est(ref, opts.ctx, 1, opts.ctx) + sum(
            est(c, opts.ctx, 1, opts.ctx) for c in cands)
    if opts.rniah:
        n_train = int(engine.model_info.get("n_ctx_train") or 0) or None
        longest = max(opts.rniah_lengths) if opts.rniah_lengths else opts.rniah_up_to
        if n_train:
            longest = min(longest, n_train)
        cells = len(opts.rniah_positions)
        n_ctx = longest + opts.rniah_n_predict + 256
        need["rniah"] = est(ref, n_ctx, cells, cells) + max(
            est(c, n_ctx, cells, cells) for c in cands)
    if opts.plad:
        n_seq = min(n_prompts * 5, 256)
        need["plad"] = est(ref, opts.ctx, n_seq, n_seq) + max(
            est(c, opts.ctx, n_seq, n_seq) for c in cands)
    return need


def check_memory(engine: Any, plan: ScorePlan) -> None:
    """Refuse, before any axis runs, a plan whose contexts would not fit in memory."""
    from refract.system.memory import check_fits

    need = memory_plan(engine, plan)
    if not need:
        return
    axis, peak = max(need.items(), key=lambda kv: kv[1])
    what = (f"the {axis} axis with {len(plan.candidates)} candidate(s) "
            f"(ctx {plan.options.ctx}, KV {plan.reference.label} + candidates)")
    check_fits(peak, what)


def check_rniah_plan(engine: Any, plan: ScorePlan) -> None:
    """R-NIAH cells, planned and rendered through the chat template exactly as the axis does,
    before any axis runs: lengths that plan no cell, cells none of which fits the model's
    training context, and a chat template that cannot render them are usage errors."""
    from refract.axes.rniah import schedule_rniah
    from refract.inputs.chat import ChatTemplateError

    opts = plan.options
    try:
        sched = schedule_rniah(
            engine, plan.haystack_text or "", up_to=opts.rniah_up_to,
            lengths=opts.rniah_lengths, positions=opts.rniah_positions,
            n_trials=opts.rniah_trials, seed=opts.seed, n_predict=opts.rniah_n_predict,
            early_stop=True,
        )
    except ChatTemplateError as exc:
        raise UsageError(_template_refusal(
            exc, plan, "Axis C (R-NIAH) renders its needle prompts")) from None
    if not sched.plan.cells:
        asked = (f"--rniah-lengths {','.join(map(str, opts.rniah_lengths))}"
                 if opts.rniah_lengths else f"--rniah-up-to {opts.rniah_up_to}")
        why = " ".join(sched.plan.notes) or "no length fits"
        raise UsageError(f"{asked} plans no R-NIAH cell: {why}")


def _prompts_what(plan: ScorePlan) -> str:
    opts = plan.options
    return f"--prompts {opts.prompts}" if opts.prompts else "the bundled prompt set"


def _corpus_what(plan: ScorePlan) -> str:
    opts = plan.options
    if opts.corpus is not None and opts.corpus != BUNDLED:
        return f"--corpus {opts.corpus}"
    name = plan.corpus_path.name if plan.corpus_path is not None else "?"
    return f"the {'bundled' if opts.corpus == BUNDLED else 'default'} corpus {name}"


def _template_users(plan: ScorePlan) -> str:
    """The flags whose axes render prompts through the model's chat template."""
    opts = plan.options
    users = []
    if opts.trajectory and opts.chat_template:
        users.append("--chat-template")
    if opts.full and (opts.plad or opts.rniah):
        users.append("--full")
    else:
        users += [f for f, on in (("--axis-plad", opts.plad), ("--axis-rniah", opts.rniah))
                  if on]
    return " / ".join(users)


def _template_refusal(exc: Exception, plan: ScorePlan, what: str) -> str:
    msg = " ".join(str(exc).split()).rstrip(".")
    return (f"{msg}; {what} through it: fix the model's chat template, or score without "
            f"{_template_users(plan)}")


def check_plad_fires(plan: ScorePlan) -> None:
    """A prompt set on which no PLAD perturbation fires cannot score Axis D: refused before
    the model loads (the perturbations are plain text functions of the prompts and seed)."""
    from refract.axes.plad import plan_plad

    if not plan_plad(plan.prompts, seed=plan.options.seed).cells:
        flag = "--full" if plan.options.full else "--axis-plad"
        raise UsageError(
            f"{_prompts_what(plan)}: no PLAD perturbation (typo, case, punct, paraphrase) fires "
            f"on any of its {len(plan.prompts)} prompt(s) at --seed {plan.options.seed}, so "
            f"Axis D cannot be scored; use a prompt set with longer prompts or leave out {flag}"
        )


def check_corpus_tokens(plan: ScorePlan, n_tokens: int) -> None:
    """A corpus shorter than one KLD window at ``--ctx`` measures nothing: refused."""
    ctx = plan.options.ctx
    if n_tokens < ctx:
        raise UsageError(
            f"{_corpus_what(plan)}: {n_tokens} tokens, one KLD window at --ctx {ctx} needs "
            f"{ctx}; use a longer corpus or a smaller --ctx"
        )


def check_prompts_fit(engine: Any, plan: ScorePlan) -> None:
    """Every prompt the trajectory and PLAD axes decode, tokenized as they tokenize it (through
    the chat template where they use it, rendered in its sandbox), must leave room for one
    generated token in ``--ctx``; a template that cannot render a prompt is refused too.

    Raises :class:`UsageError` naming the prompt, its token count and the fix.
    """
    from refract.inputs.chat import ChatTemplateError

    opts = plan.options
    jobs: list[tuple[str, str, bool, str]] = []  # (prompt id, text, chat template, what)
    if opts.trajectory:
        via = "through the chat template" if opts.chat_template else "raw text with BOS"
        jobs += [(p.id, p.prompt, opts.chat_template, via) for p in plan.prompts]
    if opts.plad:
        from refract.axes.plad import plan_plad

        pplan = plan_plad(plan.prompts, seed=opts.seed)
        jobs += [(pid, text, True, "PLAD anchor, through the chat template")
                 for pid, text in zip(pplan.prompt_ids, pplan.anchors, strict=True)]
        jobs += [(c.prompt_id, c.perturbed_prompt, True,
                  f"PLAD {c.perturbation} perturbation, through the chat template")
                 for c in pplan.cells]
    too_long: list[tuple[str, int, str]] = []
    seen: set[tuple[str, bool]] = set()
    for pid, text, chat, via in jobs:
        if (text, chat) in seen:
            continue
        seen.add((text, chat))
        try:
            n = int(engine.prompt_ids(text, chat_template=chat).size)
        except ChatTemplateError as exc:
            axis = "Axis D (PLAD)" if via.startswith("PLAD") else "Axis A (--chat-template)"
            raise UsageError(_template_refusal(
                exc, plan, f"{axis} renders prompt {pid!r} of {_prompts_what(plan)}")) from None
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
            f"{_prompts_what(plan)}: prompt {pid!r} has {n} tokens ({via}), which leaves no room "
            f"to generate in --ctx {opts.ctx}{more}; use shorter prompts or a larger --ctx"
        )


def _title(axis: str, cand: str, cands: Sequence[str]) -> str:
    return axis if len(cands) == 1 else f"{axis} · {cand}"


def _corpus_tokens(engine: Any, plan: ScorePlan) -> tuple[Any, dict[str, Any]]:
    """The corpus tokens the KLD chunks need (only as much text as they need, when the
    engine can do that), and how much of the corpus was used."""
    text = plan.corpus_text or ""
    opts = plan.options
    tokens, n_chars = engine.corpus_tokens(text, opts.ctx, opts.chunks)
    return tokens, {"chars_used": int(n_chars), "chars_total": len(text),
                    "tokens_tokenized": int(len(tokens))}


def _report(
    plan: ScorePlan, engine: Any, cand: KVConfig, axes: dict[str, Any],
    timings: dict[str, float], extras: dict[str, Any], floor: FloorCheck | None,
    corpus_used: dict[str, Any], t_start: float,
) -> dict[str, Any]:
    from refract.report.build import build_report

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
    report = build_report(
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
    )
    report["settings"] = plan.settings()
    report["self_check"] = cand.label == plan.reference.label
    prov = _provenance(plan)
    if prov is not None:
        report["provenance"] = prov
        corpus = prov.get("corpus") or {}
        name = str(corpus.get("name") or "")
        if plan.options.kld and name and not name.startswith("wikitext-2"):
            what = ("the bundled public-domain text" if name.startswith(BUNDLED)
                    else "a custom corpus")
            report["notes"].append(
                f"KLD was measured on {what} ({name}), not on WikiText-2: these are not "
                "WikiText-2 numbers and do not compare with WikiText-2 reports"
            )
    return report


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
    engine: Any = None,
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
    engine: Any = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Score one ``candidate`` against the reference on ``model``; returns the report dict.

    ``overrides`` are :class:`ScoreOptions` fields (``chunks=4``, ``full=True``, ...).
    """
    [report] = run_scores(model, [candidate], options, reporter=reporter, engine=engine,
                          **overrides)
    return report


def is_cached_wikitext(path: Path) -> bool:
    try:
        return path.resolve().parent == wikitext_dir().resolve()
    except OSError:
        return False
