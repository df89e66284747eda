"""Axis C -- R-NIAH: long-context needle retrieval (SPEC section 3C).

The needle and question, the cell plan (haystack slicing and needle placement), the scorer,
and the axis (:class:`RniahAxis`). A run goes like this:

    sched = schedule_rniah(engine, haystack, up_to=16384, ...)  # plan_rniah, then every cell's
                               # prompt rendered through the chat template and tokenized; cells
                               # beyond the model's n_ctx_train are skipped, never shortened
    ref = _decode_side(engine, sched, reference, ...)   # once per engine, shared by candidates
    cand = _decode_side(engine, sched, candidate, ...)  # Engine.generate_cells: the cells of a
                               # length as parallel sequences, each starting from the longest
                               # prefix already held, greedy; the keyword's teacher-forced
                               # log-probability after the question on the logit rows
    axis = score_rniah(sched.plan, ref_texts, cand_texts, logprobs=...)  # ``axes.rniah``

``ref_texts[c][t]`` is the detokenized output of cell ``c``, trial ``t`` (greedy decoding is
deterministic, so the trials of a cell share one decode). ``logprobs[c]`` is a
:class:`NeedleLogprob` (ours; refract-llm has none).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from refract.axes.base import Axis, AxisResult, RunContext, contexts_bytes, units_from_rows
from refract.errors import ChatTemplateError, UsageError
from refract.kvconfig import KVConfig

if TYPE_CHECKING:
    from refract.engine.facade import Engine
    from refract.scoring.plan import ScorePlan
    from refract.uncertainty import Units

__all__ = [
    "BASE_LENGTH",
    "CPT_HEAD_CHARS",
    "DEFAULT_N_PREDICT",
    "DEFAULT_N_TRIALS",
    "DEFAULT_POSITIONS",
    "DEFAULT_SEED",
    "DEFAULT_UP_TO",
    "LOW_CONFIDENCE_BASE_ACC",
    "NEEDLE",
    "QUESTION",
    "SNAP_WINDOW",
    "NeedleLogprob",
    "RniahCell",
    "RniahPlan",
    "estimate_chars_per_token",
    "estimate_tokens",
    "extract_keyword",
    "insert_needle",
    "is_hit",
    "plan_lengths",
    "plan_rniah",
    "RniahSchedule",
    "rniah_axis",
    "schedule_rniah",
    "score_rniah",
    "snap_to_sentence_end",
]

NEEDLE = "Note: APRICOT-7-BLUE is the rare paint color featured in this article."
QUESTION = "Q: What is the rare paint color featured in this article?\nA:"
BASE_LENGTH = 4096
DEFAULT_UP_TO = 16384
DEFAULT_POSITIONS: tuple[float, ...] = (0.10, 0.50, 0.90)
DEFAULT_N_TRIALS = 1
DEFAULT_SEED = 42
DEFAULT_N_PREDICT = 256
#: Haystack prefix tokenized to measure chars per token.
CPT_HEAD_CHARS = 32_768
#: Search radius (chars) when snapping the insertion point to a sentence end.
SNAP_WINDOW = 200
#: Extra tokens reserved per cell beyond needle + question + n_predict.
OVERHEAD_MARGIN = 16
#: base_acc_avg below this makes the axis low-confidence (excluded from the composite).
LOW_CONFIDENCE_BASE_ACC = 0.2

_KEYWORD_RE = re.compile(r"[A-Z][A-Z0-9\-]{2,}")


def extract_keyword(needle: str) -> str:
    """Longest run of an upper-case letter followed by >= 2 of [A-Z0-9-] (first on ties).

    Falls back to the needle's last word without a trailing '.' when there is no such run.
    """
    runs: list[str] = _KEYWORD_RE.findall(needle)
    if runs:
        return max(runs, key=len)
    words = needle.split()
    if not words:
        raise UsageError("R-NIAH: the needle is empty")
    return words[-1].rstrip(".")


def is_hit(output: str, keyword: str) -> bool:
    """True when ``keyword`` occurs anywhere in ``output``, ignoring case."""
    return keyword.lower() in output.lower()


def estimate_chars_per_token(haystack: str, tokenize: Callable[[str], Sized]) -> float:
    """Characters per token over the first :data:`CPT_HEAD_CHARS` haystack characters.

    ``tokenize(text)`` returns the token ids (list or array). 4.0 when nothing to measure.
    """
    head = haystack[:CPT_HEAD_CHARS]
    if not head:
        return 4.0
    n_tokens = len(tokenize(head))
    return len(head) / n_tokens if n_tokens else 4.0


def estimate_tokens(text: str, chars_per_token: float) -> int:
    """est(text) = int(chars / chars-per-token), at least 1 (refract-llm's estimate)."""
    return max(1, int(len(text) / max(chars_per_token, 1.0)))


def plan_lengths(
    up_to: int = DEFAULT_UP_TO, n_ctx_train: int | None = None, base: int = BASE_LENGTH,
    *, lengths: Sequence[int] | None = None,
) -> tuple[list[int], list[int], str | None]:
    """Lengths ``base, 2*base, ...`` up to ``up_to`` (``up_to`` itself when it is below
    ``base``), or exactly ``lengths`` when given; never above ``n_ctx_train``.

    Returns ``(lengths, capped_lengths, note)``: the lengths dropped by the cap and a note
    saying so (None when nothing was capped).
    """
    wanted: list[int] = []
    if lengths is not None:
        wanted = sorted({int(x) for x in lengths})
    elif up_to < base:
        wanted = [up_to]
    else:
        length = base
        while length <= up_to:
            wanted.append(length)
            length *= 2
    if n_ctx_train is None or n_ctx_train <= 0:
        return wanted, [], None
    kept = [n for n in wanted if n <= n_ctx_train]
    capped = [n for n in wanted if n > n_ctx_train]
    note = None
    if capped:
        note = (
            f"R-NIAH lengths capped at the model's n_ctx_train ({n_ctx_train}): "
            f"{', '.join(map(str, capped))} not run (asked for up to {up_to})."
        )
    return kept, capped, note


def snap_to_sentence_end(text: str, target: int, window: int = SNAP_WINDOW) -> int:
    """Index just after the sentence end ('.' then space or newline) nearest ``target``.

    Scans distances 0..window-1, the left candidate before the right one at each distance,
    inside ``[target - window, target + window)`` (the character after the '.' must be inside
    too, so the right side reaches ``window - 2``, as in refract-llm); returns ``target`` when
    none is found, 0 / ``len(text)`` when ``target`` is at or beyond an end.
    """
    if target <= 0:
        return 0
    if target >= len(text):
        return len(text)
    lo = max(0, target - window)
    hi = min(len(text), target + window)
    for delta in range(window):
        for cand in (target - delta, target + delta):
            if cand < lo or cand + 1 >= hi:
                continue
            if text[cand] == "." and text[cand + 1] in (" ", "\n"):
                return cand + 2
    return target


def insert_needle(chunk: str, needle: str, position: float) -> tuple[str, int]:
    """System message ``before + " " + needle + " " + after`` and the split index."""
    at = snap_to_sentence_end(chunk, int(len(chunk) * position))
    return f"{chunk[:at]} {needle} {chunk[at:]}", at


@dataclass(frozen=True)
class RniahCell:
    """One (length, position) cell: the chat messages to generate from."""

    length: int
    position: float
    system: str
    user: str
    insert_at: int
    haystack_chars: int


@dataclass
class RniahPlan:
    cells: list[RniahCell]
    skipped_cells: list[dict[str, Any]]
    notes: list[str]
    needle: str
    question: str
    keyword: str
    lengths: list[int]
    positions: tuple[float, ...]
    n_trials: int
    seed: int
    n_predict: int
    chars_per_token: float
    overhead_tokens: int
    trial_seeds: list[int] = field(default_factory=list)


def plan_rniah(
    haystack: str,
    tokenize: Callable[[str], Sized],
    *,
    up_to: int = DEFAULT_UP_TO,
    n_ctx_train: int | None = None,
    positions: Sequence[float] = DEFAULT_POSITIONS,
    n_trials: int = DEFAULT_N_TRIALS,
    seed: int = DEFAULT_SEED,
    n_predict: int = DEFAULT_N_PREDICT,
    needle: str = NEEDLE,
    question: str = QUESTION,
    keyword: str | None = None,
    chars_per_token: float | None = None,
    lengths: Sequence[int] | None = None,
) -> RniahPlan:
    """Plan every cell (at ``lengths`` when given, else 4096 doubling up to ``up_to``).

    A cell whose haystack would be too short is skipped with a note, never shortened; lengths
    above ``n_ctx_train`` are not planned (noted and listed)."""
    if n_trials < 1:
        raise UsageError("R-NIAH: n_trials must be at least 1")
    if any(not 0.0 <= p <= 1.0 for p in positions):
        raise UsageError("R-NIAH: positions must be fractions in [0, 1]")
    kw = keyword if keyword is not None else extract_keyword(needle)
    if kw.lower() not in needle.lower():
        raise UsageError(f"R-NIAH: keyword {kw!r} does not occur in the needle")
    cpt = chars_per_token if chars_per_token else estimate_chars_per_token(haystack, tokenize)
    overhead = (
        estimate_tokens(needle, cpt) + estimate_tokens(question, cpt) + n_predict + OVERHEAD_MARGIN
    )
    planned, capped, cap_note = plan_lengths(up_to, n_ctx_train, lengths=lengths)
    notes: list[str] = [cap_note] if cap_note else []
    skipped: list[dict[str, Any]] = [
        {"length": n, "position": p, "reason": "length above n_ctx_train"}
        for n in capped
        for p in positions
    ]
    cells: list[RniahCell] = []
    for length in planned:
        usable_tokens = length - overhead
        reason = None
        if usable_tokens <= 0:
            reason = (f"shorter than the needle prompt itself ({overhead} tokens of needle, "
                      "question and answer)")
        else:
            usable_chars = int(usable_tokens * cpt)
            if usable_chars > len(haystack):
                reason = (
                    f"haystack has {len(haystack)} characters, the cell needs {usable_chars}"
                )
        if reason is not None:
            notes.append(f"Skipped length={length}: {reason}.")
            skipped.extend({"length": length, "position": p, "reason": reason} for p in positions)
            continue
        chunk = haystack[:usable_chars]
        for pos in positions:
            system, at = insert_needle(chunk, needle, pos)
            cells.append(RniahCell(length, float(pos), system, question, at, usable_chars))
    return RniahPlan(
        cells=cells,
        skipped_cells=skipped,
        notes=notes,
        needle=needle,
        question=question,
        keyword=kw,
        lengths=planned,
        positions=tuple(float(p) for p in positions),
        n_trials=n_trials,
        seed=seed,
        n_predict=n_predict,
        chars_per_token=cpt,
        overhead_tokens=overhead,
        trial_seeds=[seed + t for t in range(n_trials)],
    )


@dataclass(frozen=True)
class NeedleLogprob:
    """Teacher-forced log-probability (nats, summed over the keyword's tokens) of the keyword
    after the question, and the rank (0 = argmax) of its first token, on each side."""

    ref_logprob: float
    cand_logprob: float
    ref_rank: int | None = None
    cand_rank: int | None = None
    n_tokens: int | None = None


def rniah_axis(
    cell_hits: Sequence[tuple[int, float, Sequence[bool], Sequence[bool]]],
    *,
    needle: str = NEEDLE,
    keyword: str | None = None,
    skipped_cells: Sequence[dict[str, Any]] = (),
    notes: Sequence[str] = (),
    logprobs: Sequence[NeedleLogprob | None] | None = None,
) -> dict[str, Any]:
    """The ``axes.rniah`` dict from per-cell ``(length, position, ref_hits, cand_hits)``.

    ``logprobs`` (optional, aligned with ``cell_hits``) adds the needle log-probability
    fields to each cell and their mean difference to the axis.
    """
    kw = keyword if keyword is not None else extract_keyword(needle)
    if logprobs is not None and len(logprobs) != len(cell_hits):
        raise UsageError("R-NIAH: one logprob entry (or None) per cell is required")
    cells: list[dict[str, Any]] = []
    diffs: list[float] = []
    for k, (length, position, ref_hits, cand_hits) in enumerate(cell_hits):
        if len(ref_hits) != len(cand_hits) or not ref_hits:
            raise UsageError("R-NIAH: each cell needs the same, non-zero number of trials")
        n = len(ref_hits)
        base_hits, cand_n = sum(map(bool, ref_hits)), sum(map(bool, cand_hits))
        base_acc, cand_acc = base_hits / n, cand_n / n
        cell: dict[str, Any] = {
            "length": length,
            "position": position,
            "n_trials": n,
            "base_acc": base_acc,
            "cand_acc": cand_acc,
            "degradation": max(0.0, base_acc - cand_acc),
            "base_hits": base_hits,
            "cand_hits": cand_n,
        }
        lp = logprobs[k] if logprobs is not None else None
        if lp is not None:
            diff = lp.cand_logprob - lp.ref_logprob
            diffs.append(diff)
            cell.update(
                needle_logprob_ref=lp.ref_logprob,
                needle_logprob_cand=lp.cand_logprob,
                needle_logprob_diff=diff,
                needle_rank_ref=lp.ref_rank,
                needle_rank_cand=lp.cand_rank,
                needle_n_tokens=lp.n_tokens,
            )
        cells.append(cell)
    out_notes = list(notes)
    if cells:
        score = 100.0 * (1.0 - sum(c["degradation"] for c in cells) / len(cells))
        base_avg = sum(c["base_acc"] for c in cells) / len(cells)
        cand_avg: float | None = sum(c["cand_acc"] for c in cells) / len(cells)
    else:
        score, base_avg, cand_avg = 0.0, 0.0, None
        out_notes.append("No R-NIAH cell ran; every (length, position) pair was skipped.")
    low = base_avg < LOW_CONFIDENCE_BASE_ACC
    if low and cells:
        out_notes.append(
            f"The reference found the needle in {base_avg:.0%} of trials (< "
            f"{LOW_CONFIDENCE_BASE_ACC:.0%}): low confidence, excluded from the composite."
        )
    axis: dict[str, Any] = {
        "score": score,
        "n_cells": len(cells),
        "cells": cells,
        "skipped_cells": [dict(s) for s in skipped_cells],
        "needle": needle,
        "needle_keyword": kw,  # refract-llm v0.3.3 (older reports: password_keyword)
        "notes": out_notes,
        "confidence": "low" if low else "ok",
        "base_acc_avg": base_avg,
        "cand_acc_avg": cand_avg,
    }
    if diffs:
        axis["needle_logprob_mean_diff"] = sum(diffs) / len(diffs)
    return axis


def score_rniah(
    plan: RniahPlan,
    ref_texts: Sequence[Sequence[str]],
    cand_texts: Sequence[Sequence[str]],
    *,
    logprobs: Sequence[NeedleLogprob | None] | None = None,
) -> dict[str, Any]:
    """Score ``plan`` from output texts ``[cell][trial]`` for reference and candidate."""
    if len(ref_texts) != len(plan.cells) or len(cand_texts) != len(plan.cells):
        raise UsageError(
            f"R-NIAH: expected outputs for {len(plan.cells)} cells, got "
            f"{len(ref_texts)} reference and {len(cand_texts)} candidate"
        )
    hits = []
    for cell, ref, cand in zip(plan.cells, ref_texts, cand_texts, strict=True):
        if len(ref) != plan.n_trials or len(cand) != plan.n_trials:
            raise UsageError(f"R-NIAH: expected {plan.n_trials} trials per cell")
        hits.append(
            (
                cell.length,
                cell.position,
                [is_hit(t, plan.keyword) for t in ref],
                [is_hit(t, plan.keyword) for t in cand],
            )
        )
    axis = rniah_axis(
        hits,
        needle=plan.needle,
        keyword=plan.keyword,
        skipped_cells=plan.skipped_cells,
        notes=plan.notes,
        logprobs=logprobs,
    )
    axis.update(
        lengths=list(plan.lengths),
        positions=list(plan.positions),
        n_trials=plan.n_trials,
        seed=plan.seed,
        n_predict=plan.n_predict,
        chars_per_token=plan.chars_per_token,
        overhead_tokens=plan.overhead_tokens,
    )
    return axis


# --------------------------------------------------------------------------- engine run


#: How the engine decodes R-NIAH cells (reported in the axis dict).
DECODE_EARLY_STOP = "parallel-cells, early-stop"
DECODE_FULL = "parallel-cells, full-length"


@dataclass
class RniahSchedule:
    """What both sides decode: cells grouped by length, each group in insertion-point order."""

    plan: RniahPlan
    prompts: list[Any]
    probes: list[list[int]]
    groups: list[list[int]]  # cell indices per decode group
    ctx: int
    stop: str


@dataclass(frozen=True)
class _SideResult:
    """One KV config's decode of a schedule (the reference's is cached on the engine)."""

    texts: list[str]  # per cell
    logprobs: list[tuple[float, int]]  # per cell: summed keyword log-prob, first-token rank
    stopped_early: int
    prompt_tokens: int
    reused_tokens: int
    generated_tokens: int
    n_seq: int


def run_rniah(
    engine: Engine,
    haystack: str,
    *,
    reference: str,
    candidate: str,
    up_to: int = DEFAULT_UP_TO,
    lengths: Sequence[int] | None = None,
    positions: Sequence[float] = DEFAULT_POSITIONS,
    n_trials: int = DEFAULT_N_TRIALS,
    seed: int = DEFAULT_SEED,
    n_predict: int = DEFAULT_N_PREDICT,
    progress: Callable[[int, int], None] | None = None,
    early_stop: bool = True,
) -> dict[str, Any]:
    """Axis C on an :class:`refract.Engine`.

    The cells of one length decode together as parallel sequences of one context (greedy,
    chat template). Lengths run in increasing order and cells in decreasing insertion point:
    a cell's prompt starts from the KV of the longest prefix any sequence already holds (a
    cell of its own length or of a shorter one), copied between sequences, so the haystack
    before an insertion point is prefilled once. With ``early_stop`` a cell stops generating
    once the keyword is in its output: its hit is then fixed, and the other cells' batches
    are unchanged, so hits and score equal a full-length run. Greedy decoding is
    deterministic, so the trials of a cell share one decode. The keyword's teacher-forced
    log-probability after the question is scored on the logit buffers for both configs. The
    reference side is decoded once per engine and shared by every candidate.
    """
    sched = schedule_rniah(engine, haystack, up_to=up_to, lengths=lengths,
                           positions=positions, n_trials=n_trials, seed=seed,
                           n_predict=n_predict, early_stop=early_stop)
    plan = sched.plan
    ref_label = KVConfig.parse(reference).label
    key = ("rniah", ref_label, hashlib.sha256(haystack.encode("utf-8")).hexdigest(),
           up_to, None if lengths is None else tuple(sorted({int(x) for x in lengths})),
           tuple(float(p) for p in positions), n_trials, seed, n_predict, early_stop)

    def half(offset: int) -> Callable[[int, int], None] | None:
        if progress is None:
            return None
        return lambda done, total: progress(offset * total + done, 2 * total)

    # cached (and stored between runs) as a plain tuple of the side's fields
    ref = _SideResult(*engine.reference_cache.get_or_compute(
        key, lambda: dataclasses.astuple(_decode_side(engine, sched, reference, 0, half(0)))))
    cand = _decode_side(engine, sched, candidate, 1, half(1))
    reps = plan.n_trials
    logprobs = [
        NeedleLogprob(ref_logprob=ref.logprobs[i][0], cand_logprob=cand.logprobs[i][0],
                      ref_rank=ref.logprobs[i][1], cand_rank=cand.logprobs[i][1],
                      n_tokens=len(sched.probes[i]))
        for i in range(len(plan.cells))
    ]
    result = score_rniah(plan, [[t] * reps for t in ref.texts], [[t] * reps for t in cand.texts],
                         logprobs=logprobs)
    result["prefill"] = {
        "prompt_tokens": ref.prompt_tokens,
        "reused_prefix_tokens": ref.reused_tokens,
        "reused_fraction": ref.reused_tokens / ref.prompt_tokens if ref.prompt_tokens else 0.0,
    }
    result["decode"] = DECODE_EARLY_STOP if sched.stop else DECODE_FULL
    result["generation"] = {
        "n_seq": ref.n_seq,
        "groups": [{"length": plan.cells[g[0]].length, "cells": len(g)} for g in sched.groups],
        "stopped_early_ref": ref.stopped_early,
        "stopped_early_cand": cand.stopped_early,
        "generated_tokens_ref": ref.generated_tokens,
        "generated_tokens_cand": cand.generated_tokens,
    }
    if reps > 1:
        result["notes"].append(
            f"greedy decoding is deterministic: the {reps} trials of a cell share one decode")
    if early_stop and not sched.stop:
        result["notes"].append("the keyword is not ASCII: cells were generated at full length")
    result["ctx"] = sched.ctx
    if engine.chat.used_fallback:
        result["notes"].append("the model has no chat template; prompts were rendered with ChatML")
    result["chat_template_fallback"] = bool(engine.chat.used_fallback)
    return result


def schedule_rniah(
    engine: Engine,
    haystack: str,
    *,
    up_to: int,
    lengths: Sequence[int] | None,
    positions: Sequence[float],
    n_trials: int,
    seed: int,
    n_predict: int,
    early_stop: bool,
) -> RniahSchedule:
    """Plan the cells, render and tokenize their prompts, drop those that do not fit."""
    n_ctx_train = int(engine.model_info["n_ctx_train"]) or None
    plan = plan_rniah(
        haystack, lambda s: engine.tokenize(s, add_special=False),
        up_to=up_to, lengths=lengths, n_ctx_train=n_ctx_train,
        positions=positions, n_trials=n_trials, seed=seed, n_predict=n_predict,
    )
    prompts = [engine.prompt_ids(c.user, chat_template=True, system=c.system) for c in plan.cells]
    probes = [_keyword_tokens(engine, p, plan.keyword) for p in prompts]
    needs = [int(p.size) + max(n_predict, len(q)) + 8
             for p, q in zip(prompts, probes, strict=True)]
    if n_ctx_train:
        # the length estimate is from characters per token; a cell whose real prompt does not
        # fit the model's training context is skipped, never silently shortened
        keep = [i for i, need in enumerate(needs) if need <= n_ctx_train]
        for i in sorted(set(range(len(needs))) - set(keep)):
            c = plan.cells[i]
            reason = (f"needs {needs[i]} tokens (prompt {int(prompts[i].size)} + generation), "
                      f"more than the model's n_ctx_train {n_ctx_train}")
            plan.skipped_cells.append({"length": c.length, "position": c.position,
                                       "reason": reason})
            plan.notes.append(f"cell {c.length}@{c.position:g} skipped: {reason}")
        plan.cells = [plan.cells[i] for i in keep]
        prompts = [prompts[i] for i in keep]
        probes = [probes[i] for i in keep]
        needs = [needs[i] for i in keep]
    ctx = _round_up(max(needs, default=256), 256)
    if n_ctx_train:
        ctx = min(ctx, n_ctx_train)
    # one group per length, shortest first; inside a group the latest insertion point first,
    # so each later prompt finds its haystack prefix (up to its own insertion point) held by
    # an earlier sequence of its group, or of the previous length
    groups: list[list[int]] = []
    for length in sorted({c.length for c in plan.cells}):
        cells = [i for i, c in enumerate(plan.cells) if c.length == length]
        groups.append(sorted(cells, key=lambda i: (-plan.cells[i].insert_at, i)))
    stop = plan.keyword if early_stop and plan.keyword.isascii() else ""
    return RniahSchedule(plan, prompts, probes, groups, ctx, stop)


def _decode_side(
    engine: Engine,
    sched: RniahSchedule,
    kv: str,
    slot: int,
    progress: Callable[[int, int], None] | None,
) -> _SideResult:
    n = len(sched.plan.cells)
    raw: dict[str, Any] = engine.generate_cells(
        [[(sched.prompts[i], np.asarray(sched.probes[i], dtype=np.int32)) for i in g]
         for g in sched.groups],
        kv, n_predict=sched.plan.n_predict, ctx=sched.ctx, stop=sched.stop, progress=progress,
        _slot=slot,
    ) if n else {"groups": [], "prompt_tokens": 0, "reused_tokens": 0, "generated_tokens": 0,
                 "n_seq": 0}
    texts = [""] * n
    lps: list[tuple[float, int]] = [(0.0, 0)] * n
    stopped = 0
    for g, out in zip(sched.groups, raw["groups"], strict=True):
        for i, r in zip(g, out, strict=True):
            texts[i] = engine.detokenize(r["tokens"])
            lps[i] = (float(r["probe_logprobs"].sum()), int(r["probe_ranks"][0]))
            stopped += bool(r["stopped_early"])
    return _SideResult(texts, lps, stopped, int(raw["prompt_tokens"]), int(raw["reused_tokens"]),
                       int(raw["generated_tokens"]), int(raw["n_seq"]))


def _keyword_tokens(engine: Engine, prompt_ids: Any, keyword: str) -> list[int]:
    """The keyword's tokens as they follow the prompt (tokenized in context when possible)."""
    # the prompt without the BOS the vocab adds (tokenize below adds none)
    pre = prompt_ids[1:] if engine.model_info["add_bos"] else prompt_ids
    both = engine.tokenize(engine.detokenize(pre, special=True) + keyword, add_special=False,
                           parse_special=True)
    k = int(pre.size)
    if both.size > k and list(both[:k]) == list(pre):
        return [int(t) for t in both[k:]]
    return [int(t) for t in engine.tokenize(keyword, add_special=False)]


def _round_up(x: int, m: int) -> int:
    return (x + m - 1) // m * m


# --------------------------------------------------------------------------- the axis


class RniahAxis(
    Axis, key="rniah", letter="C", title="R-NIAH", flag="rniah", default_on=False,
    inputs=frozenset({"haystack"}), renders_chat=True,
    description="Long-context retrieval quality vs the reference.",
    method="needle-keyword-hit-degradation", method_version="1",
    low_sentence="Long-context retrieval loss: the candidate finds the needle in a long "
    "context less often than the reference.",
    holds="retrieval", holds_long="long-context retrieval",
):
    """Axis C: with ``--axis-rniah`` or ``--full``; one candidate at a time, the reference's
    answers once."""

    def preflight(self, engine: Engine, plan: ScorePlan, corpus_tokens: Any) -> None:
        """The cells, planned and rendered through the chat template exactly as the axis does:
        lengths that plan no cell, cells none of which fits the model's training context, and
        a chat template that cannot render them are usage errors."""
        opts = plan.options
        try:
            sched = schedule_rniah(
                engine, plan.haystack_text or "", up_to=opts.rniah_up_to,
                lengths=opts.rniah_lengths, positions=opts.rniah_positions,
                n_trials=opts.rniah_trials, seed=opts.seed, n_predict=opts.rniah_n_predict,
                early_stop=True,
            )
        except ChatTemplateError as exc:
            raise UsageError(plan.template_refusal(
                exc, "Axis C (R-NIAH) renders its needle prompts")) from None
        if not sched.plan.cells:
            asked = (f"--rniah-lengths {','.join(map(str, opts.rniah_lengths))}"
                     if opts.rniah_lengths else f"--rniah-up-to {opts.rniah_up_to}")
            why = " ".join(sched.plan.notes) or "no length fits"
            raise UsageError(f"{asked} plans no R-NIAH cell: {why}")

    def memory(self, engine: Engine, plan: ScorePlan) -> int | None:
        opts = plan.options
        n_train = int(engine.model_info.get("n_ctx_train") or 0) or None
        longest = max(opts.rniah_lengths) if opts.rniah_lengths else opts.rniah_up_to
        if n_train:
            longest = min(longest, n_train)
        # one sequence per needle position of the longest length
        n_ctx = longest + opts.rniah_n_predict + 256
        return contexts_bytes(engine, plan, n_ctx, len(opts.rniah_positions))

    def run(self, ctx: RunContext) -> dict[str, AxisResult]:
        opts, plan = ctx.options, ctx.plan
        out: dict[str, AxisResult] = {}
        for c in ctx.candidates:
            with ctx.reporter.axis(ctx.title("C R-NIAH", c)) as cb, \
                    ctx.timed(ctx.timings[c], "rniah_s"):
                out[c] = ctx.guarded(functools.partial(
                    run_rniah, ctx.engine, plan.haystack_text or "", reference=ctx.reference,
                    candidate=c, up_to=opts.rniah_up_to, lengths=opts.rniah_lengths,
                    positions=opts.rniah_positions, n_trials=opts.rniah_trials,
                    seed=opts.seed, n_predict=opts.rniah_n_predict, progress=cb,
                ))
            out[c]["haystack"] = str(plan.haystack_path)
        return out

    def finish(self, entry: dict[str, Any]) -> None:
        if "password_keyword" in entry and "needle_keyword" not in entry:
            entry["needle_keyword"] = entry.pop("password_keyword")  # refract-llm v0.3.3 name

    def exclusion(self, entry: Mapping[str, Any]) -> str | None:
        if entry.get("confidence") != "low":
            return None
        base = entry.get("base_acc_avg")
        base_txt = f" (base_acc_avg {float(base):.2f} < 0.2)" if base is not None else ""
        return ("low confidence — the reference itself rarely finds the needle"
                f"{base_txt}; reported but excluded from the composite.")

    def units(self, entry: Mapping[str, Any]) -> Units | None:
        """Cells (length × position): each cell's degradation."""
        return units_from_rows(
            entry.get("cells"), "cell", "complement100",
            ident=lambda row, i: f"{row.get('length')}@{row.get('position')}",
            num=lambda row: row["degradation"],
        )

    def fingerprint(self, report: Mapping[str, Any], entry: Mapping[str, Any],
                    settings: Mapping[str, Any]) -> dict[str, Any]:
        from refract.report.kit import distinct_values, get_path

        fp: dict[str, Any] = {
            "seed": settings.get("seed"),
            "haystack.sha256": get_path(report.get("provenance"), "haystack", "sha256"),
        }
        if settings:
            fp["rniah.up_to"] = settings.get("rniah_up_to")
            fp["rniah.lengths"] = settings.get("rniah_lengths")
            fp["rniah.positions"] = settings.get("rniah_positions")
            fp["rniah.trials"] = settings.get("rniah_trials")
            fp["rniah.n_predict"] = settings.get("rniah_n_predict")
        else:  # refract-llm: what the cells show
            cells = entry.get("cells")
            cells = cells if isinstance(cells, list) else []
            fp["rniah.lengths"] = distinct_values(cells, "length") or None
            fp["rniah.positions"] = distinct_values(cells, "position") or None
        return fp

    def card_detail(self, entry: Mapping[str, Any]) -> str:
        parts = [f"{entry.get('n_cells', '?')} cells"]
        if entry.get("confidence"):
            parts.append(f"confidence {entry['confidence']}")
        return " · ".join(parts)

    def score_note(self, report: Mapping[str, Any], entry: Mapping[str, Any]) -> str | None:
        return "low confidence" if entry.get("confidence") == "low" else None

    def html_body(self, report: Mapping[str, Any], entry: Mapping[str, Any]) -> str:
        from refract.report.kit import as_float, esc, fmt, kv_table, needle_keyword
        from refract.report.svg import rniah_heatmap

        base = as_float(entry.get("base_acc_avg"))
        stats = kv_table(
            [
                ("needle", entry.get("needle")),
                ("keyword", needle_keyword(entry)),
                ("cells", entry.get("n_cells")),
                ("reference mean accuracy", None if base is None else f"{base:.2f}"),
                ("confidence", entry.get("confidence")),
            ]
        )
        cells = entry.get("cells")
        chart = ""
        lp_table = ""
        if isinstance(cells, list) and cells:
            chart = ("<h3>Retrieval by context length and needle position</h3>"
                     + rniah_heatmap(cells))
            lp_rows = [(c, *_needle_logprobs(c)) for c in cells if isinstance(c, Mapping)]
            lp_rows = [r for r in lp_rows if r[1] is not None or r[2] is not None]
            if lp_rows:
                body = "".join(
                    f"<tr><td class=num>{esc(fmt(c.get('length'), 0))}</td>"
                    f"<td class=num>{esc(fmt(c.get('position'), 2))}</td>"
                    f"<td class=num>{esc(fmt(ref, 3))}</td>"
                    f"<td class=num>{esc(fmt(cand, 3))}</td>"
                    f"<td class=num>{esc(fmt(_diff(ref, cand), 3))}</td></tr>"
                    for c, ref, cand in lp_rows
                )
                lp_table = (
                    "<h3>Teacher-forced needle keyword log-probability</h3><table><tr>"
                    "<th class=num>length</th><th class=num>position</th>"
                    "<th class=num>reference</th><th class=num>candidate</th>"
                    "<th class=num>cand − ref</th></tr>"
                    f"{body}</table>"
                )
        return stats + chart + lp_table

    def section_notes(self, entry: Mapping[str, Any]) -> list[str]:
        notes = super().section_notes(entry)
        skipped = entry.get("skipped_cells")
        if isinstance(skipped, list) and skipped:
            notes.append(f"{len(skipped)} cell(s) skipped.")
        return notes


def _needle_logprobs(cell: Mapping[str, Any]) -> tuple[float | None, float | None]:
    from refract.report.kit import as_float

    ref = cell.get("needle_logprob_ref", cell.get("ref_keyword_logprob"))
    cand = cell.get("needle_logprob_cand", cell.get("cand_keyword_logprob"))
    return as_float(ref), as_float(cand)


def _diff(ref: float | None, cand: float | None) -> float | None:
    return None if ref is None or cand is None else cand - ref
