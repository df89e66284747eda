"""A score's plan: every input checked before the model loads.

:func:`prepare_score` checks every cheap thing first (KV strings parse and name types the
linked build has, files exist and are readable, outputs are writable and overwrite no input,
the corpus is cached or fetchable, each axis's own plan checks such as PLAD firing on the prompt
set) and returns a :class:`ScorePlan`; :mod:`refract.scoring.run` runs it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refract.axes import registry
from refract.defaults import DEMO
from refract.errors import CorpusError, KVConfigError, UsageError
from refract.files import check_output_path, check_outputs_distinct
from refract.inputs.corpus import BUNDLED, bundled_corpus_path, default_corpus_path, read_text
from refract.inputs.model import resolve_model
from refract.inputs.promptset import Prompt, load_prompts
from refract.kvconfig import KVConfig
from refract.options import ScoreOptions
from refract.progress import Reporter

__all__ = [
    "ScorePlan",
    "check_candidates",
    "check_kv",
    "known_kv_types",
    "prepare_score",
]


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

    # ------------------------------------------------------------------ how to name inputs
    def prompts_what(self) -> str:
        """How a message names the prompt set."""
        opts = self.options
        return f"--prompts {opts.prompts}" if opts.prompts else "the bundled prompt set"

    def corpus_what(self) -> str:
        """How a message names the KLD corpus."""
        opts = self.options
        if opts.corpus is not None and opts.corpus != BUNDLED:
            return f"--corpus {opts.corpus}"
        name = self.corpus_path.name if self.corpus_path is not None else "?"
        return f"the {'bundled' if opts.corpus == BUNDLED else 'default'} corpus {name}"

    def template_users(self) -> str:
        """The flags whose axes render prompts through the model's chat template."""
        flags = [a.template_user(self.options) for a in registry]
        return " / ".join(dict.fromkeys(f for f in flags if f))

    def template_refusal(self, exc: Exception, what: str) -> str:
        """The one-line refusal of a chat template that cannot render what an axis needs."""
        msg = " ".join(str(exc).split()).rstrip(".")
        return (f"{msg}; {what} through it: fix the model's chat template, or score without "
                f"{self.template_users()}")



def check_kv(text: str, what: str, known: Sequence[str] | None) -> KVConfig:
    """A KV config string as :class:`KVConfig` (types the build has), or a one-line
    :class:`UsageError` naming ``what``."""
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


def known_kv_types() -> list[str] | None:
    """The KV types of the linked llama.cpp (``None`` without the native engine)."""
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
    known = known_kv_types()
    ref = check_kv(reference, "--reference", known)
    cands = [check_kv(c, "--candidate", known) for c in candidates]
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
    if opts.reference_cache:  # a bad store setting is refused before the model loads
        from refract.engine.store import default_store

        default_store()
    for what, path in (outputs or {}).items():
        if path is not None and not (what == "--out-dir" and Path(path).is_dir()):
            check_output_path(path, what)  # an existing --out-dir is checked as a directory

    model_path = resolve_model(model)
    demo = os.fspath(model) == DEMO
    plan = ScorePlan(model_arg=os.fspath(model), model_path=model_path, options=opts,
                     reference=ref_cfg, candidates=cand_cfgs)
    if registry.needs(opts, "prompts") or opts.prompts is not None:
        plan.prompts_path = Path(opts.prompts).expanduser() if opts.prompts else None
        plan.prompts = load_prompts(plan.prompts_path)  # PromptSetError names file and line
    for axis in registry:
        if axis.enabled(opts):
            axis.check_plan(plan)  # refusals the inputs alone decide (PLAD: nothing fires)
    if registry.needs(opts, "corpus"):
        plan.corpus_path, plan.corpus_text = _resolve_text(
            opts.corpus, "test", "corpus", demo=demo, auto_fetch=not opts.no_auto_fetch,
            reporter=reporter)
    if registry.needs(opts, "haystack"):
        plan.haystack_path, plan.haystack_text = _resolve_text(
            opts.rniah_haystack, "train", "haystack", demo=demo,
            auto_fetch=not opts.no_auto_fetch, reporter=reporter)
    check_outputs_distinct(
        outputs or {},
        {"model": model_path, "corpus": plan.corpus_path, "haystack": plan.haystack_path,
         "prompt set": plan.prompts_path},
    )
    return plan
