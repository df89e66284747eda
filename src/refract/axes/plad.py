"""Axis D -- PLAD: robustness to small prompt perturbations (SPEC section 3D).

Engine-independent part: the perturbation generators, the token-level drift and the axis
scorer. The engine wrapper drives it in three steps::

    plan = plan_plad(prompts, seed=42)          # prompts: dicts/objects with id and prompt
    if not plan.cells:  ...                     # nothing fired: skip the axis
    texts = plan.texts()                        # anchors (one per prompt) then perturbed
    ref = decode(texts, reference)              # one batch per KV config, chat template on,
    cand = decode(texts, candidate)             # greedy; token ids as sampled
    axis = score_plad(plan, ref, cand)          # the report's ``axes.plad`` dict

The perturbations reproduce refract-llm exactly: for prompt ``i`` one
``random.Random(seed + i)`` is consumed by typo (``choice`` over the eligible word matches in
order of appearance, then ``randrange``), case, punct and paraphrase (``choice``), in that
order, whether or not an earlier perturbation was skipped.
"""

from __future__ import annotations

import functools
import math
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from refract.axes.base import (
    Axis,
    AxisResult,
    PromptJob,
    RunContext,
    contexts_bytes,
    units_from_rows,
)
from refract.errors import UsageError
from refract.kvconfig import KVConfig

if TYPE_CHECKING:
    from refract.engine.facade import Engine
    from refract.scoring.plan import ScorePlan
    from refract.uncertainty import Units

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_SEED",
    "PERTURBATIONS",
    "STOPWORDS",
    "SYNONYMS",
    "PladCell",
    "PladCellResult",
    "PladPlan",
    "PladSkip",
    "drift",
    "levenshtein",
    "perturb",
    "perturb_case",
    "perturb_paraphrase",
    "perturb_punct",
    "perturb_typo",
    "plad_axis",
    "plan_plad",
    "score_plad",
]

PERTURBATIONS: tuple[str, ...] = ("typo", "case", "punct", "paraphrase")
DEFAULT_SEED = 42
DEFAULT_ALPHA = 5.0

STOPWORDS: frozenset[str] = frozenset(
    {
        "a", "an", "the", "is", "are", "was", "were", "be", "been", "being", "in", "on", "at", "to",
        "of", "for", "with", "by", "as", "and", "or", "but", "not", "no", "do", "does", "did", "i",
        "you", "he", "she", "it", "we", "they", "this", "that", "these", "those", "have", "has",
        "had",
    }
)

SYNONYMS: Mapping[str, str] = {
    "big": "large",
    "large": "big",
    "small": "tiny",
    "tiny": "small",
    "fast": "quick",
    "quick": "fast",
    "begin": "start",
    "start": "begin",
    "happy": "glad",
    "sad": "unhappy",
    "smart": "clever",
    "clever": "smart",
    "show": "display",
    "display": "show",
    "build": "construct",
    "create": "make",
    "make": "create",
    "find": "locate",
    "locate": "find",
}

_WORD_RE = re.compile(r"[A-Za-z]{2,}")

# A perturbation returns (perturbed text or None, reason when None).
_Result = tuple[str | None, str]


def _content_words(text: str, min_len: int) -> list[re.Match[str]]:
    """Word matches (runs of >= 2 ASCII letters) that are not stopwords and are long enough."""
    return [
        m
        for m in _WORD_RE.finditer(text)
        if len(m.group()) >= min_len and m.group().lower() not in STOPWORDS
    ]


def _typo(text: str, rng: random.Random) -> _Result:
    words = _content_words(text, 4)
    if not words:
        return None, "no non-stopword of 4+ letters"
    m = rng.choice(words)
    w = m.group()
    i = rng.randrange(0, len(w) - 1)
    swapped = w[:i] + w[i + 1] + w[i] + w[i + 2 :]
    if swapped == w:
        return None, "the swapped letters are equal"
    return text[: m.start()] + swapped + text[m.end() :], ""


def _case(text: str, rng: random.Random | None = None) -> _Result:
    def lower_first(m: re.Match[str]) -> str:
        w = m.group()
        return w[0].lower() + w[1:] if w[0].isupper() else w

    out = _WORD_RE.sub(lower_first, text)
    if out == text:
        return None, "no word starts with an upper-case letter"
    return out, ""


def _punct(text: str, rng: random.Random | None = None) -> _Result:
    body = text.rstrip()
    tail = text[len(body) :]
    out = body[:-1] + tail if body.endswith(("?", ".")) else body + "?" + tail
    if out == text:
        return None, "unchanged"
    if not out.strip():  # "?" alone: dropping it yields nothing (SPEC: skipped)
        return None, "yields nothing"
    return out, ""


def _paraphrase(text: str, rng: random.Random) -> _Result:
    words = [m for m in _content_words(text, 3) if m.group().lower() in SYNONYMS]
    if not words:
        return None, "no word from the synonym table"
    m = rng.choice(words)
    w = m.group()
    sub = SYNONYMS[w.lower()]
    if w[0].isupper():
        sub = sub[0].upper() + sub[1:]
    return text[: m.start()] + sub + text[m.end() :], ""


_GENERATORS: dict[str, Callable[[str, random.Random], _Result]] = {
    "typo": _typo,
    "case": _case,
    "punct": _punct,
    "paraphrase": _paraphrase,
}


def perturb_typo(text: str, rng: random.Random) -> str | None:
    """Swap two adjacent letters of a random non-stopword of >= 4 letters (None: skipped)."""
    return _typo(text, rng)[0]


def perturb_case(text: str) -> str | None:
    """Lower-case the first letter of every word starting upper-case (None: nothing to do)."""
    return _case(text)[0]


def perturb_punct(text: str) -> str | None:
    """Drop a final '?' or '.', else append '?', keeping trailing whitespace in place."""
    return _punct(text)[0]


def perturb_paraphrase(text: str, rng: random.Random) -> str | None:
    """Replace one random synonym-table word, keeping an initial capital (None: skipped)."""
    return _paraphrase(text, rng)[0]


def perturb(text: str, index: int, seed: int = DEFAULT_SEED) -> dict[str, str | None]:
    """All four perturbations of prompt ``index`` with refract-llm's RNG sequence.

    A value is None when that perturbation is skipped (yields nothing or the same text).
    """
    rng = random.Random(seed + index)
    out: dict[str, str | None] = {}
    for kind in PERTURBATIONS:
        text_out, _ = _GENERATORS[kind](text, rng)
        out[kind] = text_out if text_out != text else None
    return out


# ---------------------------------------------------------------------------------------
# Plan
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PladCell:
    """One fired (prompt, perturbation) pair."""

    prompt_index: int
    prompt_id: str
    perturbation: str
    perturbed_prompt: str


@dataclass(frozen=True)
class PladSkip:
    """A (prompt, perturbation) pair that did not fire."""

    prompt_id: str
    perturbation: str
    reason: str


@dataclass(frozen=True)
class PladPlan:
    """Anchors and fired perturbations of a prompt set, in a fixed order."""

    prompt_ids: tuple[str, ...]
    anchors: tuple[str, ...]
    cells: tuple[PladCell, ...]
    skipped: tuple[PladSkip, ...]
    perturbations: tuple[str, ...]
    seed: int

    def texts(self) -> list[str]:
        """Prompts to decode: every anchor (prompt order), then every fired cell (plan order).

        Decode these with each KV config and pass the outputs, in this order, to
        :func:`score_plad`.
        """
        return [*self.anchors, *(c.perturbed_prompt for c in self.cells)]


def _prompt_fields(prompt: Any) -> tuple[str, str]:
    if isinstance(prompt, Mapping):
        return str(prompt["id"]), str(prompt["prompt"])
    if isinstance(prompt, tuple) and len(prompt) == 2:
        return str(prompt[0]), str(prompt[1])
    return str(prompt.id), str(prompt.prompt)


def plan_plad(
    prompts: Sequence[Any],
    *,
    seed: int = DEFAULT_SEED,
    perturbations: Sequence[str] = PERTURBATIONS,
) -> PladPlan:
    """Perturb every prompt (dicts with ``id``/``prompt``, objects with ``.id``/``.prompt``, or
    ``(id, text)`` pairs). ``perturbations`` selects which types are kept; the RNG is always
    consumed for all four types in order so a subset fires the same cells as the full run."""
    unknown = [p for p in perturbations if p not in _GENERATORS]
    if unknown:
        raise UsageError(f"unknown PLAD perturbations {unknown}; valid: {list(PERTURBATIONS)}")
    wanted = tuple(p for p in PERTURBATIONS if p in perturbations)
    ids: list[str] = []
    anchors: list[str] = []
    cells: list[PladCell] = []
    skipped: list[PladSkip] = []
    for i, prompt in enumerate(prompts):
        pid, text = _prompt_fields(prompt)
        ids.append(pid)
        anchors.append(text)
        rng = random.Random(seed + i)
        for kind in PERTURBATIONS:
            out, reason = _GENERATORS[kind](text, rng)
            if kind not in wanted:
                continue
            if out is None or out == text:
                skipped.append(PladSkip(pid, kind, reason or "unchanged"))
            else:
                cells.append(PladCell(i, pid, kind, out))
    return PladPlan(tuple(ids), tuple(anchors), tuple(cells), tuple(skipped), wanted, seed)


# ---------------------------------------------------------------------------------------
# Token edit distance
# ---------------------------------------------------------------------------------------


def _as_ids(seq: ArrayLike) -> np.ndarray:
    arr = np.asarray(seq, dtype=np.int64)
    if arr.ndim != 1:
        raise UsageError("token id sequences must be one-dimensional")
    return arr


def levenshtein(a: ArrayLike, b: ArrayLike) -> int:
    """Levenshtein distance between two token id sequences (unit costs).

    Row DP, vectorized over the longer sequence: the insertion chain of each row,
    ``cur[j] = min(cur[j-1] + 1, t[j])``, is the prefix minimum of ``t[j] - j`` plus ``j``.
    """
    x, y = _as_ids(a), _as_ids(b)
    if len(x) > len(y):
        x, y = y, x
    if len(x) == 0:
        return len(y)
    if len(x) == len(y) and np.array_equal(x, y):
        return 0
    n = len(y)
    offsets = np.arange(n + 1, dtype=np.int64)
    prev = offsets.copy()
    t = np.empty(n + 1, dtype=np.int64)
    for i, xi in enumerate(x, 1):
        t[0] = i
        np.minimum(prev[1:] + 1, prev[:-1] + (y != xi), out=t[1:])
        prev = np.minimum.accumulate(t - offsets) + offsets
    return int(prev[-1])


def drift(anchor: ArrayLike, perturbed: ArrayLike) -> float:
    """min(1, Levenshtein / len(anchor)); 0 if both are empty, 1 if only the anchor is."""
    a, p = _as_ids(anchor), _as_ids(perturbed)
    if len(a) == 0:
        return 0.0 if len(p) == 0 else 1.0
    return min(1.0, levenshtein(a, p) / len(a))


# ---------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PladCellResult:
    """Outputs of one fired cell: the four generations as token ids."""

    prompt_id: str
    perturbation: str
    perturbed_prompt: str
    ref_anchor: ArrayLike
    ref_perturbed: ArrayLike
    cand_anchor: ArrayLike
    cand_perturbed: ArrayLike


def plad_axis(
    cells: Sequence[PladCellResult],
    *,
    n_prompts: int,
    skipped: Sequence[PladSkip] = (),
    perturbations: Sequence[str] = PERTURBATIONS,
    alpha: float = DEFAULT_ALPHA,
) -> dict[str, Any]:
    """The ``axes.plad`` dict from per-cell token ids (refract-llm's field names).

    Raises ValueError when ``cells`` is empty (nothing fired: the axis cannot be scored).
    """
    if not cells:
        raise UsageError("PLAD: no perturbation fired on this prompt set; the axis cannot run")
    per_prompt: list[dict[str, Any]] = []
    by_type: dict[str, list[float]] = {p: [] for p in perturbations}
    for c in cells:
        ref_drift = drift(c.ref_anchor, c.ref_perturbed)
        cand_drift = drift(c.cand_anchor, c.cand_perturbed)
        excess = max(0.0, cand_drift - ref_drift)
        pp = 100.0 * math.exp(-alpha * excess)
        by_type.setdefault(c.perturbation, []).append(pp)
        per_prompt.append(
            {
                "prompt_id": c.prompt_id,
                "perturbation": c.perturbation,
                "perturbed_prompt": c.perturbed_prompt,
                "ref_drift": ref_drift,
                "cand_drift": cand_drift,
                "excess_drift": excess,
                "plad_pp": pp,
            }
        )
    per_type = {k: (sum(v) / len(v) if v else None) for k, v in by_type.items()}
    empty_types = [k for k, v in per_type.items() if v is None]
    notes: list[str] = []
    if skipped:
        notes.append(
            f"{len(skipped)} (prompt, perturbation) pairs were skipped (perturbation could "
            "not apply, e.g. no ≥4-char word for typo)."
        )
    if empty_types:
        notes.append(
            f"No cell fired for {', '.join(empty_types)}; the score covers the other types only."
        )
    return {
        "score": sum(r["plad_pp"] for r in per_prompt) / len(per_prompt),
        "per_perturbation_score": per_type,
        "per_prompt": per_prompt,
        "n_prompts": n_prompts,
        "n_perturbations": len(per_type),
        "n_cells": len(per_prompt),
        "notes": notes,
        "skipped_perturbations": empty_types,
        "skipped_pairs": [
            {"prompt_id": s.prompt_id, "perturbation": s.perturbation, "reason": s.reason}
            for s in skipped
        ],
        "confidence": "partial" if empty_types else "ok",  # refract-llm v0.3.3: ok | partial
        "alpha": alpha,
    }


def score_plad(
    plan: PladPlan,
    ref_outputs: Sequence[ArrayLike],
    cand_outputs: Sequence[ArrayLike],
    *,
    alpha: float = DEFAULT_ALPHA,
) -> dict[str, Any]:
    """Score a plan from the generated token ids of ``plan.texts()``, in that order, for the
    reference and the candidate. Returns the ``axes.plad`` dict (see :func:`plad_axis`)."""
    expected = len(plan.anchors) + len(plan.cells)
    for name, outs in (("reference", ref_outputs), ("candidate", cand_outputs)):
        if len(outs) != expected:
            raise UsageError(
                f"PLAD: {len(outs)} {name} outputs for {expected} prompts "
                f"({len(plan.anchors)} anchors + {len(plan.cells)} perturbed)"
            )
    n = len(plan.anchors)
    results = [
        PladCellResult(
            prompt_id=c.prompt_id,
            perturbation=c.perturbation,
            perturbed_prompt=c.perturbed_prompt,
            ref_anchor=ref_outputs[c.prompt_index],
            ref_perturbed=ref_outputs[n + k],
            cand_anchor=cand_outputs[c.prompt_index],
            cand_perturbed=cand_outputs[n + k],
        )
        for k, c in enumerate(plan.cells)
    ]
    axis = plad_axis(
        results,
        n_prompts=n,
        skipped=plan.skipped,
        perturbations=plan.perturbations,
        alpha=alpha,
    )
    axis["seed"] = plan.seed
    return axis


# --------------------------------------------------------------------------- engine run

#: Most prompts decoded as one batch (llama.cpp's sequence limit is 256); the bundled set's
#: 36 prompts give 164 texts, one batch.
MAX_BATCH = 256


def run_plad(
    engine: Engine,
    prompts: Sequence[Any],
    *,
    reference: str,
    candidate: str,
    n_predict: int = 128,
    ctx: int = 512,
    seed: int = DEFAULT_SEED,
    progress: Any = None,
) -> dict[str, Any]:
    """Axis D on an :class:`refract.Engine`: anchors and fired perturbations decode together
    as one batch of parallel sequences (chat template, greedy) per KV config, up to
    :data:`MAX_BATCH` prompts at a time; the reference once per engine."""
    plan = plan_plad(prompts, seed=seed)
    if not plan.cells:
        raise UsageError("no perturbation fired on this prompt set; PLAD cannot be scored")
    texts = plan.texts()
    group = min(len(texts), MAX_BATCH)
    key = ("plad", KVConfig.parse(reference).label, tuple(texts), n_predict, ctx, group)
    ref_out = engine.reference_cache.get_or_compute(
        key, lambda: engine.greedy(texts, reference, n_predict, ctx, True, group=group,
                                   progress=progress)
    )
    cand_out = engine.greedy(texts, candidate, n_predict, ctx, True, group=group,
                             progress=progress, _slot=1)
    result = score_plad(plan, ref_out, cand_out)
    result["decode"] = {"n_texts": len(texts), "batch": group}
    if engine.chat.used_fallback:
        result.setdefault("notes", []).append(
            "the model has no chat template; prompts were rendered with ChatML"
        )
    result["chat_template_fallback"] = bool(engine.chat.used_fallback)
    return result


# --------------------------------------------------------------------------- the axis


class PladAxis(
    Axis, key="plad", letter="D", title="PLAD", flag="plad", default_on=False,
    inputs=frozenset({"prompts"}), uses_ctx=True, renders_chat=True,
    description="Robustness to small prompt changes vs the reference.",
    method="token-levenshtein-excess-drift", method_version="1",
    holds="robustness", holds_long="robustness to prompt changes",
    low_sentence="Brittle to small input changes: typos, casing or punctuation move the "
    "candidate's output further than they move the reference's.",
):
    """Axis D: with ``--axis-plad`` or ``--full``; one candidate at a time."""

    def check_plan(self, plan: ScorePlan) -> None:
        """A prompt set on which no perturbation fires cannot score Axis D: refused before the
        model loads (the perturbations are plain text functions of the prompts and seed)."""
        if not plan_plad(plan.prompts, seed=plan.options.seed).cells:
            flag = "--full" if plan.options.full else "--axis-plad"
            raise UsageError(
                f"{plan.prompts_what()}: no PLAD perturbation (typo, case, punct, paraphrase) "
                f"fires on any of its {len(plan.prompts)} prompt(s) at --seed "
                f"{plan.options.seed}, so Axis D cannot be scored; use a prompt set with longer "
                f"prompts or leave out {flag}"
            )

    def prompt_jobs(self, plan: ScorePlan) -> list[PromptJob]:
        pplan = plan_plad(plan.prompts, seed=plan.options.seed)
        jobs: list[PromptJob] = [(pid, text, True, "PLAD anchor, through the chat template")
                                 for pid, text in zip(pplan.prompt_ids, pplan.anchors,
                                                      strict=True)]
        jobs += [(c.prompt_id, c.perturbed_prompt, True,
                  f"PLAD {c.perturbation} perturbation, through the chat template")
                 for c in pplan.cells]
        return jobs

    def memory(self, engine: Engine, plan: ScorePlan) -> int | None:
        # anchors and perturbations decode as parallel sequences, up to 256 at a time
        n_seq = min(max(1, len(plan.prompts)) * 5, 256)
        return contexts_bytes(engine, plan, plan.options.ctx, n_seq)

    def run(self, ctx: RunContext) -> dict[str, AxisResult]:
        opts = ctx.options
        out: dict[str, AxisResult] = {}
        for c in ctx.candidates:
            with ctx.reporter.axis(ctx.title("D PLAD", c), phases=2) as cb, \
                    ctx.timed(ctx.timings[c], "plad_s"):
                out[c] = ctx.guarded(functools.partial(
                    run_plad, ctx.engine, ctx.plan.prompts, reference=ctx.reference,
                    candidate=c, n_predict=opts.n_predict, ctx=opts.ctx, seed=opts.seed,
                    progress=cb,
                ))
        return out

    def finish(self, entry: dict[str, Any]) -> None:
        if entry.get("confidence") == "full":
            entry["confidence"] = "ok"  # refract-llm v0.3.3: ok / partial

    def units(self, entry: Mapping[str, Any]) -> Units | None:
        """(prompt, perturbation) cells: each cell's score."""
        return units_from_rows(
            entry.get("per_prompt"), "prompt×perturbation", "identity",
            ident=lambda row, i: f"{row.get('prompt_id', i)}/{row.get('perturbation')}",
            num=lambda row: row["plad_pp"],
        )

    def fingerprint(self, report: Mapping[str, Any], entry: Mapping[str, Any],
                    settings: Mapping[str, Any]) -> dict[str, Any]:
        from refract.report.kit import prompts_fingerprint

        return {**prompts_fingerprint(report), "seed": settings.get("seed")}

    def card_detail(self, entry: Mapping[str, Any]) -> str:
        from refract.report.kit import fmt

        per = entry.get("per_perturbation_score")
        if isinstance(per, Mapping):
            return " · ".join(f"{k} {fmt(v, 0)}" for k, v in per.items() if v is not None)
        return ""

    def html_body(self, report: Mapping[str, Any], entry: Mapping[str, Any]) -> str:
        from refract.bands import band
        from refract.report.kit import as_float, esc, fmt, kv_table, pill

        per_type = entry.get("per_perturbation_score")
        per_prompt = [p for p in entry.get("per_prompt") or [] if isinstance(p, Mapping)]
        types: list[str] = list(per_type) if isinstance(per_type, Mapping) else []
        for p in per_prompt:
            t = str(p.get("perturbation"))
            if t not in types:
                types.append(t)
        rows = []
        for t in types:
            cells = [p for p in per_prompt if str(p.get("perturbation")) == t]

            def mean(field: str, cells: list[Mapping[str, Any]] = cells) -> float | None:
                vals = [v for c in cells if (v := as_float(c.get(field))) is not None]
                return sum(vals) / len(vals) if vals else None

            score = (as_float(per_type.get(t)) if isinstance(per_type, Mapping)
                     else mean("plad_pp"))
            worse = sum(1 for c in cells if (as_float(c.get("excess_drift")) or 0) > 0)
            badge = pill(band(score), True) if score is not None else pill(None, True)
            rows.append(
                f"<tr><td>{esc(t)}</td><td class=num>{esc(fmt(score))}</td><td>{badge}</td>"
                f"<td class=num>{len(cells)}</td><td class=num>{worse}</td>"
                f"<td class=num>{esc(fmt(mean('ref_drift'), 3))}</td>"
                f"<td class=num>{esc(fmt(mean('cand_drift'), 3))}</td>"
                f"<td class=num>{esc(fmt(mean('excess_drift'), 3))}</td></tr>"
            )
        table = ""
        if rows:
            table = (
                "<h3>Per perturbation</h3><table><tr><th>perturbation</th><th class=num>score"
                "</th><th>band</th><th class=num>cells</th><th class=num>cand worse</th>"
                "<th class=num>mean ref drift</th><th class=num>mean cand drift</th>"
                f"<th class=num>mean excess</th></tr>{''.join(rows)}</table>"
            )
        worst = sorted(
            (p for p in per_prompt if (as_float(p.get("excess_drift")) or 0) > 0),
            key=lambda p: -(as_float(p.get("excess_drift")) or 0),
        )
        worst_html = ""
        if worst:
            body = "".join(
                f"<tr><td>{esc(p.get('prompt_id', ''))}</td>"
                f"<td>{esc(p.get('perturbation', ''))}</td>"
                f"<td>{esc(p.get('perturbed_prompt', ''))}</td>"
                f"<td class=num>{esc(fmt(p.get('ref_drift'), 3))}</td>"
                f"<td class=num>{esc(fmt(p.get('cand_drift'), 3))}</td>"
                f"<td class=num>{esc(fmt(p.get('plad_pp'), 1))}</td></tr>"
                for p in worst
            )
            worst_html = (
                f"<details><summary>{len(worst)} cell(s) where the candidate drifts more "
                "than the reference</summary><table><tr><th>prompt</th><th>type</th>"
                "<th>perturbed prompt</th><th class=num>ref drift</th>"
                f"<th class=num>cand drift</th><th class=num>score</th></tr>{body}</table>"
                "</details>"
            )
        stats = kv_table(
            [
                ("prompts", entry.get("n_prompts")),
                ("fired cells", len(per_prompt) or None),
                ("confidence", entry.get("confidence")),
                ("perturbations without cells", entry.get("skipped_perturbations") or None),
            ]
        )
        return stats + table + worst_html

