"""Programmatic scoring: one model load, the selected axes, one report dict.

>>> report = run_score("model.gguf", "ctk=q8_0,ctv=q8_0")            # trajectory + KLD
>>> report = run_score("model.gguf", "ctk=q4_0,ctv=q4_0", rniah=True, plad=True)

:func:`prepare_score` checks every cheap thing first (KV strings parse and name types the
linked build has, files exist and are readable, numbers are in range, the corpus is cached or
fetchable) and returns a :class:`ScorePlan`; :func:`execute_score` loads the model and runs
it. :func:`run_score` does both.
"""

from __future__ import annotations

import math
import os
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refract.composite import FloorCheck, check_floor
from refract.corpus import CorpusError, default_corpus_path, read_text, wikitext_dir
from refract.environment import collect_environment, kv_allocation_warnings
from refract.kvconfig import KVConfig, KVConfigError
from refract.progress import Reporter
from refract.promptset import Prompt, load_prompts

DEFAULT_REFERENCE = "ctk=f16,ctv=f16"
DEFAULT_RNIAH_POSITIONS: tuple[float, ...] = (0.10, 0.50, 0.90)
DEFAULT_RNIAH_UP_TO = 16384
DEFAULT_RNIAH_N_PREDICT = 256
DEMO = "demo"

__all__ = [
    "DEFAULT_REFERENCE",
    "FloorFailed",
    "ScorePlan",
    "UsageError",
    "check_output_path",
    "execute_score",
    "parse_float_list",
    "parse_int_list",
    "prepare_score",
    "resolve_model",
    "run_score",
]


class UsageError(ValueError):
    """A user mistake found before any work started (one line, names the value)."""


class FloorFailed(RuntimeError):
    """The ref-vs-ref noise floor is not clean: scores from this build cannot be trusted."""

    def __init__(self, check: FloorCheck, detail: dict[str, Any]) -> None:
        super().__init__(check.message)
        self.check = check
        self.detail = detail


@dataclass
class ScorePlan:
    """Everything a score needs, validated; built by :func:`prepare_score`."""

    model_arg: str
    model_path: Path
    reference: KVConfig
    candidate: KVConfig
    trajectory: bool = True
    kld: bool = True
    rniah: bool = False
    plad: bool = False
    measure_floor: bool = False
    prompts: list[Prompt] = field(default_factory=list)
    prompts_path: Path | None = None
    corpus_path: Path | None = None
    corpus_text: str | None = None
    haystack_path: Path | None = None
    haystack_text: str | None = None
    chunks: int = 32
    ctx: int = 512
    n_predict: int = 128
    seed: int = 42
    chat_template: bool = False
    rniah_up_to: int = DEFAULT_RNIAH_UP_TO
    rniah_lengths: tuple[int, ...] | None = None
    rniah_positions: tuple[float, ...] = DEFAULT_RNIAH_POSITIONS
    rniah_trials: int = 1
    rniah_n_predict: int = DEFAULT_RNIAH_N_PREDICT
    threads: int | None = None
    n_gpu_layers: int = -1

    @property
    def needs_prompts(self) -> bool:
        return self.trajectory or self.plad or self.measure_floor

    @property
    def needs_corpus(self) -> bool:
        return self.kld or self.measure_floor

    def settings(self) -> dict[str, Any]:
        """The options of this run, for the report's ``settings`` key."""
        return {
            "axes": [k for k, on in (("gtm", self.trajectory), ("kld", self.kld),
                                     ("rniah", self.rniah), ("plad", self.plad)) if on],
            "measure_floor": self.measure_floor,
            "prompts": str(self.prompts_path) if self.prompts_path else "bundled",
            "n_prompts": len(self.prompts),
            "corpus": str(self.corpus_path) if self.corpus_path else None,
            "chunks": self.chunks,
            "ctx": self.ctx,
            "n_predict": self.n_predict,
            "seed": self.seed,
            "chat_template": self.chat_template,
            "rniah_haystack": str(self.haystack_path) if self.haystack_path else None,
            "rniah_up_to": self.rniah_up_to,
            "rniah_lengths": list(self.rniah_lengths) if self.rniah_lengths else None,
            "rniah_positions": list(self.rniah_positions),
            "rniah_trials": self.rniah_trials,
            "rniah_n_predict": self.rniah_n_predict,
            "threads": self.threads,
            "n_gpu_layers": self.n_gpu_layers,
        }

    def repro_command(self) -> list[str]:
        """A ``refract score`` command line that repeats this run."""
        cmd = ["refract", "score", "--model", self.model_arg, "--candidate", self.candidate.label]
        if self.reference.label != DEFAULT_REFERENCE:
            cmd += ["--reference", self.reference.label]
        if self.rniah and self.plad:
            cmd.append("--full")
        elif self.rniah:
            cmd.append("--axis-rniah")
        elif self.plad:
            cmd.append("--axis-plad")
        if not self.trajectory:
            cmd.append("--skip-trajectory")
        if not self.kld:
            cmd.append("--skip-kld")
        if self.measure_floor:
            cmd.append("--measure-floor")
        if self.prompts_path:
            cmd += ["--prompts", str(self.prompts_path)]
        if self.corpus_path and not _is_cached_wikitext(self.corpus_path):
            cmd += ["--corpus", str(self.corpus_path)]
        for flag, value, default in (
            ("--chunks", self.chunks, 32),
            ("--ctx", self.ctx, 512),
            ("--n-predict", self.n_predict, 128),
            ("--seed", self.seed, 42),
        ):
            if value != default:
                cmd += [flag, str(value)]
        if self.chat_template:
            cmd.append("--chat-template")
        if self.rniah:
            if self.haystack_path and not _is_cached_wikitext(self.haystack_path):
                cmd += ["--rniah-haystack", str(self.haystack_path)]
            if self.rniah_lengths:
                cmd += ["--rniah-lengths", ",".join(map(str, self.rniah_lengths))]
            elif self.rniah_up_to != DEFAULT_RNIAH_UP_TO:
                cmd += ["--rniah-up-to", str(self.rniah_up_to)]
            if tuple(self.rniah_positions) != DEFAULT_RNIAH_POSITIONS:
                cmd += ["--rniah-positions", ",".join(f"{p:g}" for p in self.rniah_positions)]
            if self.rniah_trials != 1:
                cmd += ["--rniah-trials", str(self.rniah_trials)]
            if self.rniah_n_predict != DEFAULT_RNIAH_N_PREDICT:
                cmd += ["--rniah-n-predict", str(self.rniah_n_predict)]
        if self.threads:
            cmd += ["--threads", str(self.threads)]
        if self.n_gpu_layers != -1:
            cmd += ["--n-gpu-layers", str(self.n_gpu_layers)]
        return cmd


def _is_cached_wikitext(path: Path) -> bool:
    try:
        return path.resolve().parent == wikitext_dir().resolve()
    except OSError:
        return False


# --------------------------------------------------------------------------- validation


def _parse_list(
    text: str, what: str, convert: type, one: str, many: str
) -> list[tuple[str, Any]]:
    """(item as written, converted value) for each comma-separated item; bad ones are errors."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise UsageError(f"{what}: expected a comma-separated list of {many}, got {text!r}")
    out = []
    for item in items:
        try:
            out.append((item, convert(item)))
        except ValueError:
            raise UsageError(f"{what}: {item!r} is not {one} (in {text!r})") from None
    return out


def parse_int_list(text: str, what: str, *, minimum: int = 1) -> tuple[int, ...]:
    """``"4096,8192"`` → ``(4096, 8192)``; a bad item is a :class:`UsageError` naming it."""
    out = [value for _, value in _parse_list(text, what, int, "an integer", "integers")]
    for value in out:
        if value < minimum:
            raise UsageError(f"{what}: {value} is below the minimum {minimum} (in {text!r})")
    return tuple(out)


def parse_float_list(
    text: str, what: str, *, low: float = 0.0, high: float = 1.0
) -> tuple[float, ...]:
    """``"0.1,0.5"`` → ``(0.1, 0.5)``; every item must lie in [low, high]."""
    out = _parse_list(text, what, float, "a number", "numbers")
    for item, value in out:
        if not (math.isfinite(value) and low <= value <= high):
            raise UsageError(f"{what}: {item!r} is outside [{low:g}, {high:g}] (in {text!r})")
    return tuple(value for _, value in out)


def check_output_path(path: str | os.PathLike[str], what: str) -> Path:
    """An output file whose directory exists and is writable (checked before any work)."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise UsageError(f"{what} {str(p)!r} is a directory, expected a file path")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise UsageError(f"{what} {str(p)!r}: directory {str(parent)!r} does not exist")
    if not parent.is_dir():
        raise UsageError(f"{what} {str(p)!r}: {str(parent)!r} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {str(p)!r}: directory {str(parent)!r} is not writable")
    if p.exists() and not os.access(p, os.W_OK):
        # os.replace needs only the directory, but an unwritable file is a sign of a mistake
        raise UsageError(f"{what} {str(p)!r} exists and is not writable")
    return p


def resolve_model(model: str | os.PathLike[str]) -> Path:
    """``demo`` → the demo model (the `demo` extra); anything else must be a GGUF file."""
    text = os.fspath(model)
    if text == DEMO and not Path(text).is_file():  # a file named "demo" wins
        from refract.demo import demo_model_path

        return demo_model_path()  # DemoUnavailable says how to install it
    path = Path(text).expanduser()
    if not path.exists():
        raise UsageError(f"model file not found: {text!r}")
    if path.is_dir():
        raise UsageError(f"model path is a directory, not a GGUF file: {text!r}")
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise UsageError(f"cannot read model file {text!r}: {exc.strerror or exc}") from None
    if magic != b"GGUF":
        raise UsageError(f"not a GGUF file (magic {magic!r}, expected b'GGUF'): {text!r}")
    return path


def _check_kv(text: str, what: str, known: Sequence[str] | None) -> KVConfig:
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


def _read_corpus(path: str | os.PathLike[str], what: str) -> tuple[Path, str]:
    p = Path(path).expanduser()
    try:
        return p, read_text(p)
    except CorpusError as exc:
        raise UsageError(f"{what}: {exc}") from None


def _default_corpus(split: str, auto_fetch: bool, reporter: Reporter) -> Path:
    try:
        return default_corpus_path(split, auto_fetch=False)
    except CorpusError as exc:
        if not auto_fetch:
            raise UsageError(str(exc)) from None
    from refract.corpus import fetch_wikitext

    with reporter.download("fetching WikiText-2") as cb:
        return fetch_wikitext(progress=cb)[split]  # network failures stay CorpusError (exit 1)


def _positive(value: int, flag: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{flag} must be an integer >= {minimum}, got {value!r}")
    return value


def prepare_score(
    model: str | os.PathLike[str],
    candidate: str,
    reference: str = DEFAULT_REFERENCE,
    *,
    trajectory: bool = True,
    kld: bool = True,
    rniah: bool = False,
    plad: bool = False,
    measure_floor: bool = False,
    prompts: str | os.PathLike[str] | None = None,
    corpus: str | os.PathLike[str] | None = None,
    rniah_haystack: str | os.PathLike[str] | None = None,
    chunks: int = 32,
    ctx: int = 512,
    n_predict: int = 128,
    seed: int = 42,
    chat_template: bool = False,
    rniah_up_to: int = DEFAULT_RNIAH_UP_TO,
    rniah_lengths: Sequence[int] | None = None,
    rniah_positions: Sequence[float] = DEFAULT_RNIAH_POSITIONS,
    rniah_trials: int = 1,
    rniah_n_predict: int = DEFAULT_RNIAH_N_PREDICT,
    threads: int | None = None,
    n_gpu_layers: int = -1,
    auto_fetch: bool = True,
    reporter: Reporter | None = None,
) -> ScorePlan:
    """Validate everything that can be checked without loading the model."""
    reporter = reporter or Reporter()
    if not (trajectory or kld or rniah or plad):
        raise UsageError("every axis is switched off: nothing to score")
    known = _known_kv_types()
    ref_cfg = _check_kv(reference, "--reference", known)
    cand_cfg = _check_kv(candidate, "--candidate", known)
    _positive(chunks, "--chunks")
    _positive(ctx, "--ctx", 16)
    _positive(n_predict, "--n-predict")
    _positive(rniah_up_to, "--rniah-up-to")
    _positive(rniah_trials, "--rniah-trials")
    _positive(rniah_n_predict, "--rniah-n-predict")
    if threads is not None:
        _positive(threads, "--threads")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UsageError(f"--seed must be an integer, got {seed!r}")
    lengths = tuple(int(x) for x in rniah_lengths) if rniah_lengths else None
    if lengths and any(x < 1 for x in lengths):
        raise UsageError(f"--rniah-lengths must be positive, got {list(lengths)}")
    positions = tuple(float(p) for p in rniah_positions)
    if not positions or any(not (0.0 <= p <= 1.0) for p in positions):
        raise UsageError(f"--rniah-positions must be fractions in [0, 1], got {list(positions)}")

    model_path = resolve_model(model)
    plan = ScorePlan(
        model_arg=os.fspath(model), model_path=model_path, reference=ref_cfg,
        candidate=cand_cfg, trajectory=trajectory, kld=kld, rniah=rniah, plad=plad,
        measure_floor=measure_floor, chunks=chunks, ctx=ctx, n_predict=n_predict, seed=seed,
        chat_template=chat_template, rniah_up_to=rniah_up_to, rniah_lengths=lengths,
        rniah_positions=positions, rniah_trials=rniah_trials, rniah_n_predict=rniah_n_predict,
        threads=threads, n_gpu_layers=n_gpu_layers,
    )
    if plan.needs_prompts or prompts is not None:
        plan.prompts_path = Path(prompts).expanduser() if prompts is not None else None
        plan.prompts = load_prompts(plan.prompts_path)  # PromptSetError names file and line
    if plan.needs_corpus:
        if corpus is not None:
            plan.corpus_path, plan.corpus_text = _read_corpus(corpus, "--corpus")
        else:
            path = _default_corpus("test", auto_fetch, reporter)
            plan.corpus_path, plan.corpus_text = _read_corpus(path, "default corpus")
    if rniah:
        if rniah_haystack is not None:
            plan.haystack_path, plan.haystack_text = _read_corpus(
                rniah_haystack, "--rniah-haystack"
            )
        else:
            path = _default_corpus("train", auto_fetch, reporter)
            plan.haystack_path, plan.haystack_text = _read_corpus(path, "default haystack")
    return plan


# --------------------------------------------------------------------------- running


def _floor(engine: Any, plan: ScorePlan, tokens: Any, reporter: Reporter) -> tuple[
    FloorCheck, dict[str, Any]
]:
    from refract.axes.trajectory import run_trajectory

    ref = plan.reference.label
    t0 = time.perf_counter()
    with reporter.axis("floor A: trajectory, ref vs ref", phases=2) as cb:
        gtm = run_trajectory(
            engine, plan.prompts, reference=ref, candidate=ref, n_predict=plan.n_predict,
            ctx=plan.ctx, chat_template=plan.chat_template, progress=cb,
        )
    with reporter.axis("floor B: KLD, ref vs ref") as cb:
        [kld] = engine.kld(tokens, ref, [ref], ctx=plan.ctx, chunks=plan.chunks, progress=cb)
    check = check_floor({"gtm": gtm["score"], "kld": kld.score}, gtm["per_prompt"])
    detail = {
        "gtm_score": gtm["score"],
        "kld_score": kld.score,
        "mean_kld": kld.mean_kld,
        "full_match_rate": gtm["full_match_rate"],
        "composite": check.score,
        "ok": check.ok,
        "reasons": list(check.reasons),
        "diverged_prompts": list(check.diverged_prompts),
        "seconds": time.perf_counter() - t0,
    }
    return check, detail


def execute_score(
    plan: ScorePlan,
    *,
    reporter: Reporter | None = None,
    engine: Any = None,
) -> dict[str, Any]:
    """Load the model (unless ``engine`` is given), run the plan, return the report dict.

    Raises :class:`FloorFailed` when ``measure_floor`` finds an unclean ref-vs-ref floor.
    """
    from refract.report.build import build_report

    reporter = reporter or Reporter()
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    own_engine = engine is None
    if own_engine:
        from refract.engine import Engine

        t0 = time.perf_counter()
        engine = Engine(plan.model_path, n_threads=plan.threads, n_gpu_layers=plan.n_gpu_layers,
                        seed=plan.seed)
        timings["load_s"] = time.perf_counter() - t0
    try:
        # a type whose block size does not divide the head dim fails here, before any work
        engine.kv(plan.reference)
        engine.kv(plan.candidate, slot=1)
        ref, cand = plan.reference.label, plan.candidate.label
        axes: dict[str, Any] = {}
        extras: dict[str, Any] = {}
        notes: list[str] = []
        tokens = None
        if plan.needs_corpus:
            t0 = time.perf_counter()
            tokens = engine.tokenize(plan.corpus_text or "")
            timings["tokenize_corpus_s"] = time.perf_counter() - t0

        floor: FloorCheck | None = None
        if plan.measure_floor:
            t0 = time.perf_counter()
            floor, detail = _floor(engine, plan, tokens, reporter)
            timings["floor_s"] = time.perf_counter() - t0
            extras["floor"] = detail
            if not floor.ok:
                raise FloorFailed(floor, detail)
            engine.release()

        if plan.trajectory:
            from refract.axes.trajectory import run_trajectory

            t0 = time.perf_counter()
            phases = 1 if plan.measure_floor else 2  # the floor already decoded the reference
            with reporter.axis("A trajectory", phases=phases) as cb:
                axes["gtm"] = run_trajectory(
                    engine, plan.prompts, reference=ref, candidate=cand,
                    n_predict=plan.n_predict, ctx=plan.ctx, chat_template=plan.chat_template,
                    progress=cb,
                )
            timings["gtm_s"] = time.perf_counter() - t0
            engine.release()
        else:
            axes["gtm"] = {"skipped": True, "reason": "--skip-trajectory"}

        if plan.kld:
            t0 = time.perf_counter()
            with reporter.axis("B KLD@D") as cb:
                [res] = engine.kld(tokens, ref, [cand], ctx=plan.ctx, chunks=plan.chunks,
                                   progress=cb)
            kld_axis = res.to_dict(per_token=True)
            kld_axis["corpus"] = {"path": str(plan.corpus_path)}
            axes["kld"] = kld_axis
            timings["kld_s"] = time.perf_counter() - t0 + timings.get("tokenize_corpus_s", 0.0)
            engine.release()
        else:
            axes["kld"] = {"skipped": True, "reason": "--skip-kld"}

        if plan.rniah:
            from refract.axes.rniah import run_rniah

            t0 = time.perf_counter()
            with reporter.axis("C R-NIAH") as cb:
                axes["rniah"] = run_rniah(
                    engine, plan.haystack_text or "", reference=ref, candidate=cand,
                    up_to=plan.rniah_up_to, lengths=plan.rniah_lengths,
                    positions=plan.rniah_positions, n_trials=plan.rniah_trials, seed=plan.seed,
                    n_predict=plan.rniah_n_predict, progress=cb,
                )
            axes["rniah"]["haystack"] = str(plan.haystack_path)
            timings["rniah_s"] = time.perf_counter() - t0
            engine.release()

        if plan.plad:
            from refract.axes.plad import run_plad

            t0 = time.perf_counter()
            with reporter.axis("D PLAD", phases=2) as cb:
                axes["plad"] = run_plad(
                    engine, plan.prompts, reference=ref, candidate=cand,
                    n_predict=plan.n_predict, ctx=plan.ctx, seed=plan.seed, progress=cb,
                )
            timings["plad_s"] = time.perf_counter() - t0
            engine.release()

        env = collect_environment(engine)
        allocated = env.get("kv_allocated") or {}
        for warning in kv_allocation_warnings(allocated, [plan.reference, plan.candidate]):
            notes.append(warning)
        if notes:
            env["kv_allocation_warnings"] = list(notes)
        timings["total_s"] = time.perf_counter() - t_start
        report = build_report(
            model=str(plan.model_path),
            reference=ref,
            candidate=cand,
            axes=axes,
            model_info=engine.model_info,
            environment=env,
            timings=timings,
            repro_command=shlex.join(plan.repro_command()),
            notes=notes,
            floor=floor,
            extras=extras,
        )
        report["settings"] = plan.settings()
        return report
    finally:
        if own_engine:
            engine.close()


def run_score(
    model: str | os.PathLike[str],
    candidate: str,
    reference: str = DEFAULT_REFERENCE,
    *,
    reporter: Reporter | None = None,
    engine: Any = None,
    **options: Any,
) -> dict[str, Any]:
    """Score ``candidate`` against ``reference`` on ``model``; returns the report dict.

    ``options`` are those of :func:`prepare_score` (``trajectory``, ``kld``, ``rniah``,
    ``plad``, ``measure_floor``, ``prompts``, ``corpus``, ``chunks``, ``ctx``, ...).
    """
    plan = prepare_score(model, candidate, reference, reporter=reporter, **options)
    return execute_score(plan, reporter=reporter, engine=engine)
