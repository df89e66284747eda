"""What an axis is: everything refract needs to know about one, in one class.

An axis is a subclass of :class:`Axis` in its own file under ``refract/axes/``, registered by
one line in ``refract/axes/__init__.py`` (or :func:`refract.axes.register` at run time). The
rest of refract asks the registry and knows no axis by name:

* **options**: :meth:`Axis.enabled` reads the :class:`~refract.options.ScoreOptions` that switch
  it on; :attr:`Axis.skip_reason` is what a report says when it did not run;
* **the plan**: :meth:`Axis.check_plan` refuses, before the model loads, what the inputs make
  impossible for it; :meth:`Axis.prompt_jobs` lists the prompts it decodes (checked against
  ``--ctx`` and the chat template on the vocabulary); :meth:`Axis.preflight` refuses what only
  the model's vocabulary and metadata can tell; :meth:`Axis.memory` is its contexts' peak bytes;
* **the run**: :meth:`Axis.run` scores every candidate against the reference (the reference
  once), one result dict per candidate; :meth:`RunContext.guarded` turns a failure into an
  ``error`` axis and non-finite candidate logits into an ``invalid`` one;
* **the uncertainty**: :meth:`Axis.units` (the independent units of its score, from the
  report entry: prompts, chunks, cells);
* **the report**: :attr:`Axis.method`/:attr:`Axis.method_version` (a bump makes reports
  incomparable), :meth:`Axis.finish` (legacy names), :meth:`Axis.exclusion` (reported but kept
  out of the composite), :meth:`Axis.annotate` and :meth:`Axis.diagnosis` (sentences beyond the
  composite's branching), :meth:`Axis.fingerprint` (what makes two reports comparable);
* **the views**: :meth:`Axis.card_detail` (the terminal card's hint), :meth:`Axis.score_note`
  (the HTML score bar's note) and :meth:`Axis.html_body` (its HTML section).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from refract.errors import FloorFailed, NonFiniteLogits, ReferenceInvalid
from refract.uncertainty import Transform, Units

if TYPE_CHECKING:
    from refract.engine.facade import Engine
    from refract.options import ScoreOptions
    from refract.progress import Reporter
    from refract.scoring.plan import ScorePlan

AxisResult = dict[str, Any]
"""One candidate's result on one axis: ``score`` plus the axis's own diagnostics."""

PromptJob = tuple[str, str, bool, str]
"""(prompt id, text, through the chat template, how it is decoded — for messages)."""


@contextlib.contextmanager
def timed(timings: dict[str, float], key: str) -> Iterator[None]:
    """Add the block's wall time (seconds) to ``timings[key]``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0


@dataclass
class RunContext:
    """What every axis of one score run shares."""

    engine: Engine
    plan: ScorePlan
    reporter: Reporter
    corpus_tokens: Any = None
    corpus_used: dict[str, Any] = field(default_factory=dict)
    #: run-wide timings (a step shared by every candidate), seconds
    shared: dict[str, float] = field(default_factory=dict)
    #: per candidate label: its own timings, seconds
    timings: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def options(self) -> ScoreOptions:
        return self.plan.options

    @property
    def reference(self) -> str:
        return self.plan.reference.label

    @property
    def candidates(self) -> list[str]:
        return [c.label for c in self.plan.candidates]

    def title(self, axis: str, candidate: str) -> str:
        """A progress title, naming the candidate when there are several."""
        return axis if len(self.candidates) == 1 else f"{axis} · {candidate}"

    def timed(self, timings: dict[str, float], key: str) -> contextlib.AbstractContextManager[None]:
        """Add the block's wall time to ``timings[key]``."""
        return timed(timings, key)

    def guarded(self, fn: Callable[[], AxisResult]) -> AxisResult:
        """Run one axis step; a failure becomes an ``error`` axis (the other axes are kept),
        non-finite candidate logits an ``invalid`` one (score 0). Non-finite reference logits
        stop the run (:class:`ReferenceInvalid`): nothing can be measured against them."""
        try:
            return fn()
        except NonFiniteLogits as exc:
            if exc.label == self.reference:
                raise ReferenceInvalid(
                    f"the reference {self.reference} produced non-finite (NaN/inf) logits in "
                    f"{exc.n_rows} of {exc.n_total} rows ({exc.where}): it measures nothing"
                ) from None
            return {
                "score": 0.0,
                "invalid": True,
                "invalid_reason": f"candidate produced non-finite (NaN/inf) logits in "
                f"{exc.n_rows} of {exc.n_total} rows ({exc.where})",
            }
        except (FloorFailed, ReferenceInvalid):
            raise
        except Exception as exc:  # one axis failing does not lose the run
            message = " ".join(str(exc).split()) or type(exc).__name__
            return {"score": None, "error": f"{type(exc).__name__}: {message}"}

    def result_of(self, outcome: AxisResult | BaseException) -> AxisResult:
        """A per-candidate outcome (a result, or the exception that candidate raised) as a
        result, through :meth:`guarded`."""
        if isinstance(outcome, BaseException):
            def reraise() -> AxisResult:
                raise outcome
            return self.guarded(reraise)
        return outcome


class Axis:
    """One REFRACT axis. A subclass names itself in its class statement::

        class KLDAxis(Axis, key="kld", letter="B", title="KLD@D", flag="kld",
                      description="…", method="teacher-forced-kl-full-vocab", method_version="1",
                      short_context=True, in_floor=True):

    and implements :meth:`run`; every other hook has a neutral default."""

    #: the report key (``axes.<key>``), e.g. ``"gtm"``
    key: ClassVar[str]
    #: the letter (SPEC order) and title shown in cards and pages, e.g. ``"A"``, ``"Trajectory"``
    letter: ClassVar[str]
    title: ClassVar[str]
    #: one sentence, in the report's ``description``
    description: ClassVar[str]
    #: what the score measures and how; bump the version whenever a change can move the score
    #: for the same inputs (reports of other versions are refused side by side)
    method: ClassVar[str]
    method_version: ClassVar[str]
    #: the options that switch it: an axis on by default is switched off by ``--skip-<flag>``
    #: (``ScoreOptions.skip_<flag>``), one off by default is switched on by ``--axis-<flag>``
    #: or ``--full``; no flag: always on
    flag: ClassVar[str | None] = None
    default_on: ClassVar[bool] = True
    #: the diagnosis groups A and B as the short-context axes (SPEC §4)
    short_context: ClassVar[bool] = False
    #: the diagnosis sentence when this axis is low (below 80) among others
    low_sentence: ClassVar[str | None] = None
    #: what "holds" when this axis is intact, for the diagnosis ("retrieval") and its longer
    #: form ("long-context retrieval")
    holds: ClassVar[str | None] = None
    holds_long: ClassVar[str | None] = None
    #: part of ``--measure-floor``'s ref-vs-ref run (SPEC: axes A and B)
    in_floor: ClassVar[bool] = False
    #: the plan's inputs it reads: ``prompts`` (the prompt set), ``corpus`` (the KLD corpus),
    #: ``haystack`` (the R-NIAH haystack); the plan loads an input only for an axis that runs
    inputs: ClassVar[frozenset[str]] = frozenset()
    #: runs in contexts of ``--ctx`` cells (``--ctx`` is checked against the model for it)
    uses_ctx: ClassVar[bool] = False
    #: renders every prompt through the model's chat template
    renders_chat: ClassVar[bool] = False
    #: what ``--until-decided`` splits into rounds for it: ``"prompts"`` (the plan's prompt
    #: set) or ``"chunks"`` (the corpus windows), with :meth:`merge` putting the rounds'
    #: results together; ``None``: it runs its whole budget in the first round
    rounds: ClassVar[str | None] = None

    def __init_subclass__(cls, **identity: Any) -> None:
        super().__init_subclass__()
        for name, value in identity.items():
            if name not in _IDENTITY:
                raise TypeError(f"{cls.__name__}: unknown axis attribute {name!r}")
            setattr(cls, name, value)

    @property
    def skip_reason(self) -> str | None:
        """The reason a report records when the axis did not run (``None``: it is absent)."""
        return f"--skip-{self.flag}" if self.flag and self.default_on else None

    def enabled(self, opts: ScoreOptions) -> bool:
        """Whether a run with these options scores this axis (see :attr:`flag`)."""
        if self.flag is None:
            return True
        if self.default_on:
            return not getattr(opts, f"skip_{self.flag}")
        return bool(opts.full or getattr(opts, f"axis_{self.flag}"))

    def template_user(self, opts: ScoreOptions) -> str | None:
        """The flag through which these options make this axis render prompts with the chat
        template (for a refusal's "score without …"), or ``None``."""
        if not (self.renders_chat and self.enabled(opts)):
            return None
        return "--full" if opts.full and not self.default_on else f"--axis-{self.flag}"

    # ------------------------------------------------------------------ plan
    def check_plan(self, plan: ScorePlan) -> None:
        """Refuse (:class:`~refract.errors.UsageError`) what the inputs make impossible,
        before the model loads."""

    def prompt_jobs(self, plan: ScorePlan) -> list[PromptJob]:
        """The prompts this axis decodes, as the engine tokenizes them."""
        return []

    def preflight(self, engine: Engine, plan: ScorePlan, corpus_tokens: Any) -> None:
        """Refuse what the model's vocabulary and metadata make impossible (a vocabulary-only
        engine: no context can be made). ``corpus_tokens``: the KLD corpus as tokenized for
        the run (``None`` when no axis needs a corpus)."""

    def memory(self, engine: Engine, plan: ScorePlan) -> int | None:
        """Bytes this axis's contexts need at their peak (``None``: nothing notable)."""
        return None

    # ------------------------------------------------------------------ run
    def run(self, ctx: RunContext) -> dict[str, AxisResult]:
        """Score every candidate (``ctx.candidates``) against ``ctx.reference``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ report
    def finish(self, entry: dict[str, Any]) -> None:
        """Adjust a scored entry in place for the report (legacy names, value spellings)."""

    def exclusion(self, entry: Mapping[str, Any]) -> str | None:
        """Why a scored entry is reported but left out of the composite (``None``: it is in)."""
        return None

    def annotate(self, entry: dict[str, Any]) -> None:
        """Add derived fields to the final entry (its ``status`` is set)."""

    def merge(self, parts: Sequence[AxisResult]) -> AxisResult:
        """One candidate's result from its results on successive rounds of units (an axis
        with :attr:`rounds`); a round that failed or was invalid makes the whole so."""
        for part in parts:
            if part.get("error") or part.get("invalid") is True:
                return part
        if len(parts) == 1:
            return parts[0]
        return self.merge_rounds(parts)

    def merge_rounds(self, parts: Sequence[AxisResult]) -> AxisResult:
        raise NotImplementedError(f"axis {self.key!r} cannot be run in rounds")

    def units(self, entry: Mapping[str, Any]) -> Units | None:
        """The score's independent units, read from the report entry alone: the score is
        ``f(Σ num / Σ den)`` over them (:mod:`refract.uncertainty`), which gives its interval,
        its band probabilities and paired differences. ``None``: no per-unit data (the
        composite then holds this axis at its score)."""
        return None

    def diagnosis(self, entry: Mapping[str, Any], score: float) -> list[str]:
        """Sentences this axis adds after the composite's branching (it is in the composite
        with ``score``)."""
        return []

    def fingerprint(self, report: Mapping[str, Any], entry: Mapping[str, Any],
                    settings: Mapping[str, Any]) -> dict[str, Any]:
        """Comparability items beyond the method: two reports are comparable only where every
        item known on both sides is equal (``None`` = unknown). Items shared with another
        axis (``prompts.sha256``) must be computed the same way by both."""
        return {}

    # ------------------------------------------------------------------ views
    def card_detail(self, entry: Mapping[str, Any]) -> str:
        """A compact hint beside the score on the terminal card."""
        return ""

    def score_note(self, report: Mapping[str, Any], entry: Mapping[str, Any]) -> str | None:
        """A note beside the score bar of the HTML page (``None``: the default)."""
        return None

    def html_body(self, report: Mapping[str, Any], entry: Mapping[str, Any]) -> str:
        """The HTML section's body under its heading (tables, charts)."""
        return ""

    def section_notes(self, entry: Mapping[str, Any]) -> list[str]:
        """The notes listed at the end of the HTML section."""
        return [str(n) for n in entry.get("notes") or []]

    # ------------------------------------------------------------------ naming
    @property
    def label(self) -> str:
        """``"Axis B (KLD@D)"``."""
        return f"Axis {self.letter} ({self.title})"

    @property
    def template_label(self) -> str:
        """How a chat-template refusal names this axis."""
        return self.label


_IDENTITY = frozenset({
    "key", "letter", "title", "description", "method", "method_version", "flag", "default_on",
    "short_context", "low_sentence", "holds", "holds_long", "in_floor", "inputs", "uses_ctx",
    "renders_chat", "rounds",
})


def units_from_rows(
    rows: Any, unit: str, transform: Transform, *,
    ident: Callable[[Mapping[str, Any], int], Any],
    num: Callable[[Mapping[str, Any]], Any],
    den: Callable[[Mapping[str, Any]], Any] = lambda _row: 1.0,
) -> Units | None:
    """:class:`~refract.uncertainty.Units` from a report's per-unit rows; ``None`` when there are
    none or any value is missing or not a finite number (no interval is better than a wrong
    one)."""
    import math

    if not isinstance(rows, list) or not rows:
        return None
    ids: list[str] = []
    nums: list[float] = []
    dens: list[float] = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            return None
        try:
            n, d = float(num(row)), float(den(row))
        except (TypeError, ValueError):
            return None
        if not (math.isfinite(n) and math.isfinite(d)) or d < 0:
            return None
        ids.append(str(ident(row, i)))
        nums.append(n)
        dens.append(d)
    import numpy as np

    return Units(unit, tuple(ids), np.asarray(nums), np.asarray(dens), transform)


def contexts_bytes(engine: Engine, plan: ScorePlan, n_ctx: int, n_seq: int) -> int:
    """Bytes of the reference's context and the largest candidate's at ``n_ctx`` cells and
    ``n_seq`` sequences: what an axis that runs the candidates one at a time against the
    reference holds at its peak."""
    est = engine.estimate_context_bytes
    return est(plan.reference.label, n_ctx, n_seq, n_seq) + max(
        est(c.label, n_ctx, n_seq, n_seq) for c in plan.candidates)


class Registry:
    """The axes refract scores, in report order."""

    def __init__(self, axes: Sequence[Axis] = ()) -> None:
        self._axes: dict[str, Axis] = {}
        for axis in axes:
            self.register(axis)

    def register(self, axis: Axis) -> Axis:
        for attr in ("key", "letter", "title", "description", "method", "method_version"):
            if not isinstance(getattr(axis, attr, None), str) or not getattr(axis, attr):
                raise TypeError(f"axis {type(axis).__name__} has no {attr}")
        if axis.key in self._axes:
            raise ValueError(f"an axis with key {axis.key!r} is already registered")
        self._axes[axis.key] = axis
        return axis

    def unregister(self, key: str) -> None:
        self._axes.pop(key, None)

    def __iter__(self) -> Iterator[Axis]:
        return iter(tuple(self._axes.values()))

    def __contains__(self, key: object) -> bool:
        return key in self._axes

    def get(self, key: str) -> Axis | None:
        return self._axes.get(key)

    def keys(self) -> tuple[str, ...]:
        return tuple(self._axes)

    def enabled(self, opts: ScoreOptions) -> list[Axis]:
        """The axes a run with these options scores, in report order."""
        return [a for a in self if a.enabled(opts)]

    def needs(self, opts: ScoreOptions, what: str) -> bool:
        """Whether an axis these options run reads the plan input ``what``."""
        return any(what in a.inputs for a in self.enabled(opts))


__all__ = ["Axis", "AxisResult", "PromptJob", "Registry", "RunContext", "contexts_bytes", "timed"]
