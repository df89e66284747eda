"""Axis A: trajectory (greedy-decode agreement) scoring, engine-independent.

The engine produces, per prompt, the token ids greedily decoded by the reference and by the
candidate (as sampled, including the end-of-generation token that stopped decoding). This
module turns them into the axis score and refract-llm's ``gtm`` diagnostics (SPEC §3A), and
analyses the first divergence step from the reference's top-k distribution.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

from refract.axes.base import (
    Axis,
    AxisResult,
    PromptJob,
    RunContext,
    contexts_bytes,
    units_from_rows,
)
from refract.bands import as_score
from refract.errors import EngineError, UsageError

if TYPE_CHECKING:
    from refract.engine.facade import Engine
    from refract.options import ScoreOptions
    from refract.scoring.plan import ScorePlan
    from refract.uncertainty import Units

__all__ = [
    "DEFAULT_NEAR_TIE_THRESHOLD",
    "analyze_divergences",
    "common_prefix_length",
    "score_trajectories",
]

#: A divergence whose reference margin p(ref) - p(cand) is below this is a near tie.
DEFAULT_NEAR_TIE_THRESHOLD = 0.05


class PromptLike(Protocol):
    """Anything with the fields of :class:`refract.inputs.promptset.Prompt`."""

    @property
    def id(self) -> str: ...

    @property
    def category(self) -> str: ...

    @property
    def prompt(self) -> str: ...


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Number of leading positions where ``a`` and ``b`` hold equal ids."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _as_ids(seq: Sequence[int], what: str, index: int) -> list[int]:
    try:
        return [int(t) for t in seq]
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{what}[{index}] is not a sequence of token ids: {exc}") from None


def score_trajectories(
    prompts: Sequence[PromptLike],
    ref_ids: list[Sequence[int]],
    cand_ids: list[Sequence[int]],
    n_predict: int,
    *,
    cand_complete: Sequence[bool] | None = None,
) -> dict[str, Any]:
    """Score greedy trajectories (SPEC §3A) and return refract-llm's ``gtm`` fields.

    Per prompt, prefix = number of leading equal ids; score =
    100 * sum(prefix) / sum(max(len_ref, len_cand)), clipped to [0, 100]. A candidate that keeps
    generating after the reference stopped (or stops early) is penalized by the max().

    ``cand_complete[i]`` false (Trajectory by verification) means ``cand_ids[i]`` is only the
    start of the candidate's trajectory, up to and including its divergence token: the
    reference ran to its length limit there, so ``max(len_ref, len_cand)`` is ``len_ref``
    whatever the candidate's length, and its ``cand_length`` is reported as unknown (None).

    Raises ValueError when the three lists differ in length, a trajectory is longer than
    ``n_predict``, or every trajectory is empty (nothing was decoded: an engine failure, not
    a score).
    """
    if isinstance(n_predict, bool) or not isinstance(n_predict, int) or n_predict < 1:
        raise UsageError(f"n_predict must be a positive integer, got {n_predict!r}")
    n = len(prompts)
    if len(ref_ids) != n or len(cand_ids) != n:
        raise UsageError(
            f"got {n} prompts but {len(ref_ids)} reference and {len(cand_ids)} candidate "
            "trajectories"
        )
    if n == 0:
        raise UsageError("no prompts to score")

    per_prompt: list[dict[str, Any]] = []
    total_prefix = 0
    total_len = 0
    for i, (p, r_raw, c_raw) in enumerate(zip(prompts, ref_ids, cand_ids, strict=True)):
        ref = _as_ids(r_raw, "ref_ids", i)
        cand = _as_ids(c_raw, "cand_ids", i)
        for side, ids in (("reference", ref), ("candidate", cand)):
            if len(ids) > n_predict:
                raise UsageError(
                    f"prompt {p.id!r}: {side} trajectory has {len(ids)} tokens, more than "
                    f"n_predict={n_predict}"
                )
        prefix = common_prefix_length(ref, cand)
        complete = True if cand_complete is None else bool(cand_complete[i])
        if not complete and not prefix < len(cand) <= len(ref):
            raise UsageError(
                f"prompt {p.id!r}: a candidate verified only up to its divergence must end at "
                f"that divergence within the reference ({len(cand)} tokens, prefix {prefix}, "
                f"reference {len(ref)})"
            )
        matched = complete and ref == cand
        total_prefix += prefix
        total_len += max(len(ref), len(cand))
        row = {
            "id": p.id,
            "category": p.category,
            "prompt": p.prompt,
            "ref_token_ids": ref,
            "cand_token_ids": cand,
            "first_divergence": None if matched else prefix,
            "prefix_agreement_length": prefix,
            "cand_length": len(cand) if complete else None,
            "ref_length": len(ref),
            "matched": matched,
        }
        if cand_complete is not None:
            row["cand_complete"] = complete
        per_prompt.append(row)

    return summarize_prompts(per_prompt, n_predict)


def summarize_prompts(per_prompt: list[dict[str, Any]], n_predict: int) -> dict[str, Any]:
    """The ``gtm`` fields from per-prompt rows (:func:`score_trajectories`'s, or the rows of
    several rounds of one run put together)."""
    n = len(per_prompt)
    total_prefix = sum(pp["prefix_agreement_length"] for pp in per_prompt)
    total_len = sum(_denominator(pp) for pp in per_prompt)
    if total_len == 0:
        raise UsageError(
            "every reference and candidate trajectory is empty: nothing was decoded, so the "
            "trajectory axis cannot be scored"
        )
    score = min(100.0, max(0.0, 100.0 * total_prefix / total_len))

    divergences = [pp["first_divergence"] for pp in per_prompt if not pp["matched"]]
    n_matched = n - len(divergences)
    lengths = [pp["cand_length"] for pp in per_prompt]
    known = [x for x in lengths if x is not None]
    early = sum(1 for x in known if x < n_predict)
    notes: list[str] = []
    if early:
        notes.append(
            f"{early}/{n} candidates stopped before n_predict={n_predict} (end of generation "
            "or another stop condition); per_prompt cand_length is the decoded length."
        )
    if len(known) < n:
        notes.append(
            f"{n - len(known)}/{n} candidates were verified up to their first divergence and "
            "not decoded after it: the reference ran to its length limit there, so the score "
            "does not need the rest. Their cand_token_ids end at the divergence token, their "
            "cand_length is null, and mean_cand_length is null."
        )

    return {
        "score": score,
        "full_match_rate": n_matched / n,
        "median_first_divergence": statistics.median(divergences) if divergences else None,
        "mean_prefix_agreement_length": total_prefix / n,
        "mean_cand_length": sum(known) / n if len(known) == n else None,
        "mean_ref_length": sum(pp["ref_length"] for pp in per_prompt) / n,
        "n_prompts": n,
        "n_tokens_each": n_predict,
        "per_prompt": per_prompt,
        "notes": notes,
    }


def _denominator(row: Mapping[str, Any]) -> int:
    """max(len_ref, len_cand) of a per-prompt row; a candidate not decoded after its
    divergence (cand_length null) has a reference that ran to its limit: len_ref."""
    cand = row["cand_length"]
    return int(row["ref_length"]) if cand is None else max(int(row["ref_length"]), int(cand))


def analyze_divergences(
    ref_top_ids: Sequence[Sequence[int]],
    ref_top_logprobs: Sequence[Sequence[float]],
    cand_tokens: Sequence[int],
    *,
    ref_tokens: Sequence[int] | None = None,
    cand_kl: Sequence[float | None] | None = None,
    ids: Sequence[str] | None = None,
    near_tie_threshold: float = DEFAULT_NEAR_TIE_THRESHOLD,
) -> dict[str, Any]:
    """Analyse the first divergence step of each diverging prompt.

    Inputs are parallel per-prompt arrays (one entry per prompt that diverged):

    - ``ref_top_ids[i]`` / ``ref_top_logprobs[i]``: the reference's top-k token ids (k = 16
      in the engine) and their log-probabilities (natural log, normalized over the full
      vocabulary) at the first-divergence step, in any order;
    - ``cand_tokens[i]``: the token the candidate chose at that step;
    - ``ref_tokens[i]`` (optional): the token the reference chose; defaults to the top-k
      entry with the highest log-probability (what greedy decoding picks);
    - ``cand_kl[i]`` (optional, may hold None): KL(p_ref ‖ p_cand) at that step;
    - ``ids[i]`` (optional): the prompt id, copied to the output.

    Per prompt it returns ``ref_token``, ``cand_token``, ``p_ref_of_ref_token``,
    ``p_ref_of_cand_token``, ``cand_token_rank`` (1-based rank in the reference's top-k;
    None when the candidate token is not in it), ``margin`` = p(ref token) - p(cand token),
    ``kl_at_divergence``, and ``cand_below_top_k``. When the candidate token is below the
    top-k its probability is unknown: ``p_ref_of_cand_token`` is then the k-th (smallest)
    top-k probability, an upper bound, and ``margin`` is a lower bound on the true margin;
    ``cand_below_top_k`` says so. Summaries: ``near_tie_fraction`` (share of divergences
    with margin < ``near_tie_threshold``, bounds taken at face value) and ``median_margin``
    (None when there are no divergences).
    """
    n = len(cand_tokens)
    if len(ref_top_ids) != n or len(ref_top_logprobs) != n:
        raise UsageError(
            f"got {len(ref_top_ids)} top-k id lists, {len(ref_top_logprobs)} top-k logprob "
            f"lists and {n} candidate tokens; they must be parallel"
        )
    for name, arr in (("ref_tokens", ref_tokens), ("cand_kl", cand_kl), ("ids", ids)):
        if arr is not None and len(arr) != n:
            raise UsageError(f"{name} has {len(arr)} entries, expected {n}")
    thr = float(near_tie_threshold)
    if not math.isfinite(thr) or thr < 0:
        raise UsageError(f"near_tie_threshold must be a finite number >= 0, got {thr!r}")

    per_prompt: list[dict[str, Any]] = []
    for i in range(n):
        top_ids = [int(t) for t in ref_top_ids[i]]
        top_lp = [float(x) for x in ref_top_logprobs[i]]
        label = repr(ids[i]) if ids is not None else f"#{i}"
        if not top_ids or len(top_ids) != len(top_lp):
            raise UsageError(
                f"divergence {label}: top-k ids ({len(top_ids)}) and logprobs "
                f"({len(top_lp)}) must be non-empty and of equal length"
            )
        if any(math.isnan(x) or x > 1e-6 for x in top_lp):
            raise UsageError(f"divergence {label}: top-k logprobs must be <= 0 and not NaN")
        # rank by probability, highest first; ties keep the given order
        order = sorted(range(len(top_ids)), key=lambda j: -top_lp[j])
        ranked_ids = [top_ids[j] for j in order]
        ranked_p = [math.exp(min(top_lp[j], 0.0)) for j in order]
        prob: dict[int, float] = {}
        for tok, pr in zip(ranked_ids, ranked_p, strict=True):
            prob.setdefault(tok, pr)  # a repeated id keeps its highest probability

        ref_tok = int(ref_tokens[i]) if ref_tokens is not None else ranked_ids[0]
        cand_tok = int(cand_tokens[i])
        if ref_tok == cand_tok:
            raise UsageError(
                f"divergence {label}: reference and candidate token are both {ref_tok}"
            )
        if ref_tok not in prob:
            raise UsageError(
                f"divergence {label}: reference token {ref_tok} is not in its own top-k"
            )
        p_ref = prob[ref_tok]
        below = cand_tok not in prob
        if below:
            rank: int | None = None
            p_cand = ranked_p[-1]
        else:
            rank = ranked_ids.index(cand_tok) + 1
            p_cand = prob[cand_tok]
        kl = None
        if cand_kl is not None and cand_kl[i] is not None:
            kl = float(cand_kl[i])  # type: ignore[arg-type]
        entry: dict[str, Any] = {}
        if ids is not None:
            entry["id"] = ids[i]
        entry.update(
            {
                "ref_token": ref_tok,
                "cand_token": cand_tok,
                "p_ref_of_ref_token": p_ref,
                "p_ref_of_cand_token": p_cand,
                "cand_token_rank": rank,
                "cand_below_top_k": below,
                "margin": p_ref - p_cand,
                "kl_at_divergence": kl,
            }
        )
        per_prompt.append(entry)
    return summarize_divergences(per_prompt, thr)


def summarize_divergences(per_prompt: list[dict[str, Any]], thr: float) -> dict[str, Any]:
    """:func:`analyze_divergences`'s summary of its per-divergence rows."""
    n = len(per_prompt)
    margins = [e["margin"] for e in per_prompt]
    kls = [e["kl_at_divergence"] for e in per_prompt if e["kl_at_divergence"] is not None]
    n_below = sum(1 for e in per_prompt if e["cand_below_top_k"])
    notes: list[str] = []
    if n_below:
        notes.append(
            f"{n_below}/{n} candidate tokens were below the reference's top-k; their "
            "p_ref_of_cand_token is the k-th top-k probability (an upper bound) and their "
            "margin a lower bound."
        )
    return {
        "n_divergences": n,
        "near_tie_threshold": thr,
        "near_tie_fraction": (sum(1 for m in margins if m < thr) / n) if n else None,
        "median_margin": statistics.median(margins) if margins else None,
        "median_kl_at_divergence": statistics.median(kls) if kls else None,
        "n_cand_below_top_k": n_below,
        "per_prompt": per_prompt,
        "notes": notes,
    }


# --------------------------------------------------------------------------- engine run

TOPK = 16


TrajectoryMethod = Literal["verify", "decode"]
TRAJECTORY_METHODS: Final[tuple[str, ...]] = ("verify", "decode")

#: (method, method version) of the axis by trajectory method: a report records which
METHOD_VERSIONS: Final[dict[str, tuple[str, str]]] = {
    "decode": ("greedy-prefix-agreement", "1"),
    "verify": ("greedy-prefix-agreement", "2"),
}

TRAJECTORY_METHOD_TEXT: Final[dict[str, str]] = {
    "decode": "every candidate greedy-decodes its own trajectories; prefixes compared with the "
    "reference's",
    "verify": "each candidate teacher-forced along the reference trajectories (prefill-shaped "
    "chunks riding on the reference decode); its prefix ends at the first position where its "
    "top-1 is not the reference token; decoded on from there only where the reference stopped "
    "before its length limit",
}


def run_trajectory(
    engine: Engine,
    prompts: Sequence[PromptLike],
    *,
    reference: str,
    candidate: str,
    n_predict: int = 128,
    ctx: int = 512,
    chat_template: bool = False,
    sequential: bool = False,
    method: TrajectoryMethod = "verify",
    near_tie_threshold: float = DEFAULT_NEAR_TIE_THRESHOLD,
    progress: Any = None,
) -> dict[str, Any]:
    """Axis A on an :class:`refract.Engine` for one candidate (see :func:`run_trajectories`)."""
    [out] = run_trajectories(
        engine, prompts, reference=reference, candidates=[candidate], n_predict=n_predict,
        ctx=ctx, chat_template=chat_template, sequential=sequential, method=method,
        near_tie_threshold=near_tie_threshold, progress=progress,
    ).values()
    if isinstance(out, BaseException):
        raise out
    return out


def run_trajectories(
    engine: Engine,
    prompts: Sequence[PromptLike],
    *,
    reference: str,
    candidates: Sequence[str],
    n_predict: int = 128,
    ctx: int = 512,
    chat_template: bool = False,
    sequential: bool = False,
    method: TrajectoryMethod = "verify",
    near_tie_threshold: float = DEFAULT_NEAR_TIE_THRESHOLD,
    progress: Any = None,
) -> dict[str, dict[str, Any] | Exception]:
    """Axis A for every candidate: its trajectories, their score, and the divergences explained.

    The reference decodes its trajectories (with their top-16 log-probabilities per step) while
    every candidate is teacher-forced along them in a context of its own (one prefill of each
    trajectory per candidate, no extra reference pass); the reference's trajectories go into
    the engine's reference cache. Then, by ``method``:

    - ``"verify"``: a candidate's greedy run equals the reference's up to the first position
      where its teacher-forced top-1 is not the reference token, and takes that top-1 there;
      that is its prefix. Each candidate follows a prompt only up to that position. Only where
      the reference stopped before its length limit is the candidate decoded on from its
      divergence (the score's denominator needs its length); elsewhere its trajectory is known
      up to its divergence token.
    - ``"decode"``: each candidate greedy-decodes its own trajectories first.

    Returns, per candidate label, its axis dict — or the exception that candidate raised (e.g.
    non-finite logits), so one broken candidate does not cost the others their results. A
    reference failure raises.
    """
    if method not in TRAJECTORY_METHODS:
        raise UsageError(f"trajectory method must be one of {', '.join(TRAJECTORY_METHODS)}, "
                         f"got {method!r}")
    texts = [p.prompt for p in prompts]
    out: dict[str, dict[str, Any] | Exception] = {}
    cand_toks: dict[str, list[Any]] = {}
    complete: dict[str, list[bool] | None] = {}
    kw: dict[str, Any] = dict(n_predict=n_predict, ctx=ctx, chat_template=chat_template,
                              sequential=sequential, progress=progress)
    if method == "decode":
        for c in candidates:
            try:
                cand_toks[c] = list(engine.greedy(
                    texts, c, n_predict, ctx, chat_template, sequential=sequential,
                    progress=progress, _slot=1,
                ))
                complete[c] = None
            except Exception as exc:  # reported per candidate by the caller
                if getattr(exc, "label", None) == reference and reference not in candidates:
                    raise
                out[c] = exc
        live = [c for c in candidates if c in cand_toks]
        ref_toks, ref_top_ids, ref_top_lps, tf = _reference_teacher_forced(
            engine, texts, reference, live, out, **kw)
    else:
        live = list(dict.fromkeys(candidates))
        ref_toks, ref_top_ids, ref_top_lps, tf = _reference_teacher_forced(
            engine, texts, reference, list(live), out, until_divergence=True, **kw)
        limits = _limits(engine, texts, n_predict=n_predict, ctx=ctx,
                         chat_template=chat_template)
        for c in [c for c in live if c in tf]:
            try:
                cand_toks[c], complete[c] = _verify(engine, texts, c, ref_toks, tf[c], limits,
                                                    **kw)
            except Exception as exc:
                if getattr(exc, "label", None) == reference and reference not in candidates:
                    raise
                out[c] = exc
    live = [c for c in live if c in tf and c in cand_toks]
    results = {c: score_trajectories(prompts, list(ref_toks), cand_toks[c], n_predict,
                                     cand_complete=complete[c])
               for c in live}

    # Teacher-forced along each reference trajectory: the distribution drift exactly where
    # the model generates, and each candidate's KL at its first divergence step.
    for c in live:
        result = results[c]
        d: dict[str, list[Any]] = {"ids": [], "top_ids": [], "top_lps": [], "ref": [],
                                   "cand": [], "kl": []}
        kls, top1 = [], []
        for i, p in enumerate(prompts):
            ref = ref_toks[i]
            if ref.size == 0:
                continue
            rows = tf[c][i]
            kls.append(rows["kld"])
            top1.append(rows["same_top1"])
            j = result["per_prompt"][i]["first_divergence"]
            if j is None or j >= min(ref.size, len(cand_toks[c][i])):
                continue
            d["ids"].append(p.id)
            d["top_ids"].append(ref_top_ids[i][j])
            d["top_lps"].append(ref_top_lps[i][j])
            d["ref"].append(int(ref[j]))
            d["cand"].append(int(cand_toks[c][i][j]))
            d["kl"].append(float(rows["kld"][j]) if j < rows["kld"].size else None)
        result["divergence"] = analyze_divergences(
            d["top_ids"], d["top_lps"], d["cand"], ref_tokens=d["ref"], cand_kl=d["kl"],
            ids=d["ids"], near_tie_threshold=near_tie_threshold,
        )
        result["teacher_forced"] = _teacher_forced_summary(kls, top1, method == "verify")
        result["_teacher_forced_rows"] = (kls, top1)  # for merging rounds; never reported
        result["decode_mode"] = "sequential" if sequential else "batched"
        result["chat_template"] = chat_template
        result["trajectory_method"] = method
        result["trajectory_method_text"] = TRAJECTORY_METHOD_TEXT[method]
        result["method"], result["method_version"] = METHOD_VERSIONS[method]
        if method == "verify":
            result["n_cand_decoded_after_divergence"] = sum(
                1 for pp in result["per_prompt"]
                if not pp["matched"] and pp["cand_complete"]
                and pp["cand_length"] > pp["prefix_agreement_length"] + 1)
        out[c] = result
    return {c: out[c] for c in candidates}


def _limits(engine: Engine, texts: Sequence[str], *, n_predict: int, ctx: int,
            chat_template: bool) -> list[int]:
    """Each prompt's length limit in the greedy decode: n_predict, or fewer where the prompt
    leaves fewer cells of its ``ctx`` (csrc/decode.cpp stops a sequence there)."""
    return [min(n_predict, ctx - int(engine.prompt_ids(t, chat_template=chat_template).size))
            for t in texts]


def _verify(
    engine: Engine, texts: Sequence[str], kv: str, ref_toks: Sequence[Any],
    rows: Sequence[Mapping[str, Any]], limits: Sequence[int], *, n_predict: int, ctx: int,
    chat_template: bool, sequential: bool, progress: Any,
) -> tuple[list[Any], list[bool]]:
    """A config's greedy trajectories from its teacher-forced rows along the reference's:
    per prompt, its tokens (the reference's up to the first position where its top-1 differs,
    then that top-1, then — only where the reference stopped before its limit — its own greedy
    continuation) and whether they are its whole trajectory."""
    import numpy as np

    toks: list[Any] = []
    complete: list[bool] = []
    todo: list[tuple[int, Any, int]] = []  # (prompt, ids to continue from, tokens left)
    for i, ref in enumerate(ref_toks):
        row = rows[i]
        top = np.asarray(row["argmax_cand"])
        miss = np.flatnonzero(top != ref[:top.size])
        # rows up to and including the first miss (csrc/decode.hpp, until divergence)
        if (top.size > ref.size or (miss.size == 0 and top.size != ref.size)
                or (miss.size and miss[0] != top.size - 1)
                or not np.array_equal(np.asarray(row["argmax_ref"]), ref[:top.size])):
            raise EngineError(
                f"the teacher-forced rows of {kv} do not line up with the reference "
                f"trajectory of prompt {i} ({top.size} rows for {ref.size} tokens); no "
                "trajectory number from this pass can be trusted"
            )
        if miss.size == 0:  # the whole reference trajectory, its stop included
            toks.append(ref)
            complete.append(True)
            continue
        j = int(miss[0])
        head = np.concatenate([ref[:j], top[j:j + 1]]).astype(ref.dtype)
        toks.append(head)
        left = limits[i] - (j + 1)
        if engine.is_eog(int(top[j])) or left <= 0:
            complete.append(True)  # the candidate stops at its divergence token
        elif ref.size >= limits[i]:  # the reference ran to its limit: its length is the
            complete.append(False)  # denominator, whatever the candidate's length
        else:
            complete.append(True)
            todo.append((i, head, left))
    if todo:
        starts = [np.concatenate([engine.prompt_ids(texts[i], chat_template=chat_template),
                                  head]).astype(np.int32) for i, head, _ in todo]
        more = engine.greedy(starts, kv, max(left for _, _, left in todo), ctx, False,
                             sequential=sequential, progress=progress, _slot=1)
        for (i, head, left), tail in zip(todo, more, strict=True):
            toks[i] = np.concatenate([head, np.asarray(tail)[:left]]).astype(head.dtype)
    return toks, complete


def _reference_teacher_forced(
    engine: Engine, texts: list[str], reference: str, live: list[str],
    failed: dict[str, dict[str, Any] | Exception], *, n_predict: int, ctx: int,
    chat_template: bool, sequential: bool, progress: Any, until_divergence: bool = False,
) -> tuple[list[Any], list[Any], list[Any], dict[str, list[dict[str, Any]]]]:
    """The reference's trajectories and each live candidate's teacher-forced rows along them.

    Candidates ride along the reference decode in groups that fit in memory (each later group
    decodes the reference again, token-identically); a candidate that raises is moved to
    ``failed`` and its group is decoded again without it. The trajectories returned are those
    of the engine's reference cache: a decode that disagrees with it is an error.
    """
    key = _reference_key(reference, texts, n_predict, ctx, chat_template, sequential)
    tf: dict[str, list[dict[str, Any]]] = {}
    traj: tuple[list[Any], list[Any], list[Any]] | None = None
    n_seq = _n_seq(texts, sequential)
    for group in _shadow_groups(engine, reference, live, ctx=ctx, n_seq=n_seq):
        while group:
            try:
                toks, ids, lps, rows = engine.greedy_teacher_forced(
                    texts, reference, group, n_predict, ctx, chat_template,
                    sequential=sequential, topk=TOPK, progress=progress,
                    until_divergence=until_divergence,
                )
            except Exception as exc:
                label = getattr(exc, "label", None)
                if label in group and label != reference:
                    failed[label] = exc
                    group.remove(label)
                    continue
                raise
            tf.update(zip(group, rows, strict=True))
            _check_same(reference, traj, toks)
            traj = (toks, ids, lps)
            break
    if traj is None:
        return (*reference_trajectories(
            engine, texts, reference, n_predict=n_predict, ctx=ctx,
            chat_template=chat_template, sequential=sequential, progress=progress,
        ), tf)
    fresh = traj
    cached = engine.reference_cache.get_or_compute(key, lambda: fresh)
    _check_same(reference, cached, fresh[0])
    return (*cached, tf)


def _check_same(
    reference: str, before: tuple[list[Any], ...] | None, toks: Sequence[Any]
) -> None:
    """A reference decode must repeat token for token on one engine; anything else means no
    trajectory number from it can be trusted."""
    if before is None or before[0] is toks:
        return
    if len(before[0]) != len(toks) or any(
        a.size != b.size or bool((a != b).any()) for a, b in zip(before[0], toks, strict=True)
    ):
        raise EngineError(
            f"the reference {reference} decoded other greedy trajectories than before on this "
            "engine; its decode is not reproducible here, so no trajectory score is valid"
        )


def _n_seq(texts: Sequence[str], sequential: bool) -> int:
    return 1 if sequential else max(1, min(len(texts), 64))


def _shadow_groups(
    engine: Engine, reference: str, live: list[str], *, ctx: int, n_seq: int
) -> list[list[str]]:
    """Candidates to teacher-force along one reference decode: as many at once as fit beside
    the reference context in the memory available now (all of them when that is unknown)."""
    if len(live) <= 1:
        return [list(live)] if live else []
    from refract.system.memory import available_bytes

    avail = available_bytes()
    if avail is None:
        return [list(live)]
    est = engine.estimate_context_bytes
    per = max(1, max(est(c, ctx, n_seq, n_seq) for c in live))
    room = avail - est(reference, ctx, n_seq, n_seq) - engine.shadow_buffer_bytes(ctx, n_seq)
    g = int(max(1, min(len(live), room // per)))
    return [list(live[i:i + g]) for i in range(0, len(live), g)]


def _reference_key(
    reference: str, texts: Sequence[str], n_predict: int, ctx: int, chat_template: bool,
    sequential: bool,
) -> tuple[Any, ...]:
    return ("gtm", reference, tuple(texts), n_predict, ctx, chat_template, sequential)


def reference_trajectories(
    engine: Engine,
    texts: Sequence[str],
    reference: str,
    *,
    n_predict: int,
    ctx: int,
    chat_template: bool,
    sequential: bool,
    progress: Any = None,
) -> tuple[list[Any], list[Any], list[Any]]:
    """The reference's greedy trajectories with top-16 log-probs, decoded once per engine."""
    key = _reference_key(reference, texts, n_predict, ctx, chat_template, sequential)
    got = engine.reference_cache.get_or_compute(
        key,
        lambda: engine.greedy(
            list(texts), reference, n_predict, ctx, chat_template,
            sequential=sequential, topk=TOPK, progress=progress,
        ),
    )
    assert isinstance(got, tuple), "greedy with topk returns (tokens, top ids, top log-probs)"
    return got


NOISE_FLOOR_METHOD = {
    "batched": "reference vs reference, the batch order reversed (same model, KV type, kernels "
    "and batch size; only each sequence's slot and KV-cell layout change)",
    "sequential": "reference decoded one prompt at a time vs the same reference decoded as one "
    "batch",
}


def _floor_rows(prompts: Sequence[PromptLike], ref_toks: Sequence[Any], alt: Sequence[Any],
                n_predict: int) -> list[dict[str, Any]]:
    """The floor's per-prompt rows (the reference against ``alt``), paired with the
    candidate's prompt by prompt (its interval and the probability that a candidate's drift
    is beyond it)."""
    scored = score_trajectories(prompts, list(ref_toks), list(alt), n_predict)
    return [{k: pp[k] for k in ("id", "prefix_agreement_length", "ref_length", "cand_length")}
            for pp in scored["per_prompt"]]


def trajectory_noise_floor(
    engine: Engine,
    prompts: Sequence[PromptLike],
    *,
    reference: str,
    n_predict: int = 128,
    ctx: int = 512,
    chat_template: bool = False,
    sequential: bool = False,
    progress: Any = None,
) -> dict[str, Any]:
    """Trajectory's numerical-noise floor: the reference scored against itself under an
    equivalent computation that differs only in floating-point summation order.

    Batched runs decode the reference again with the prompts in reverse batch order (each
    sequence in another slot, its KV cells elsewhere in the unified cache); sequential runs
    compare the sequential reference with a batched one. The reference decode of the axis is
    reused (cached), so the floor costs one more reference decode, shared by every candidate.
    The same floor serves both trajectory methods: the reference teacher-forced along its own
    trajectories (what verification computes for a candidate) repeats its decode's top-1 on
    every prompt of the demo model (benchmarks/RESULTS.md), so it measures no noise at all.
    """
    texts = [p.prompt for p in prompts]
    main, _, _ = reference_trajectories(
        engine, texts, reference, n_predict=n_predict, ctx=ctx, chat_template=chat_template,
        sequential=sequential, progress=progress,
    )

    def other() -> list[Any]:
        if sequential:
            return list(engine.greedy(texts, reference, n_predict, ctx, chat_template,
                                      progress=progress, _slot=1))
        rev = engine.greedy(texts[::-1], reference, n_predict, ctx, chat_template,
                            progress=progress, _slot=1)
        return list(rev)[::-1]

    key = ("gtm-noise-floor", reference, tuple(texts), n_predict, ctx, chat_template,
           sequential)
    # a stored floor is reused only beside the very trajectories it was decoded with
    from refract.engine.store import value_digest

    alt = engine.reference_cache.get_or_compute(key, other, witness=value_digest(list(main)))
    rows = _floor_rows(prompts, main, alt, n_predict)
    return noise_floor_from_rows(rows, NOISE_FLOOR_METHOD["sequential" if sequential
                                                          else "batched"], n_predict)


def noise_floor_from_rows(rows: list[dict[str, Any]], method: str,
                          n_predict: int) -> dict[str, Any]:
    """The ``noise_floor`` dict from its per-prompt rows (id, prefix agreement, lengths)."""
    full = [{**r, "matched": r["prefix_agreement_length"] == r["ref_length"] == r["cand_length"],
             "first_divergence": None} for r in rows]
    for r in full:
        r["first_divergence"] = None if r["matched"] else r["prefix_agreement_length"]
    scored = summarize_prompts(full, n_predict)
    return {
        "score": scored["score"],
        "full_match_rate": scored["full_match_rate"],
        "median_first_divergence": scored["median_first_divergence"],
        "mean_prefix_agreement_length": scored["mean_prefix_agreement_length"],
        "n_matched": sum(1 for r in full if r["matched"]),
        "n_prompts": scored["n_prompts"],
        "method": method,
        "per_prompt": [dict(r) for r in rows],
    }


def _teacher_forced_summary(kls: list[Any], top1: list[Any],
                            until_divergence: bool = False) -> dict[str, Any]:
    import numpy as np

    if not kls:
        return {"n_positions": 0, "mean_kld": None, "kld_percentiles": {},
                "same_top1_pct": None}
    k = np.concatenate(kls)
    t = np.concatenate(top1)
    return {
        "n_positions": int(k.size),
        "mean_kld": float(k.mean()),
        "kld_percentiles": {
            name: float(np.percentile(k, q))
            for name, q in (("max", 100), ("p99", 99), ("p90", 90), ("median", 50))
        },
        "same_top1_pct": 100.0 * float(t.mean()),
        "description": "KL(ref||cand) teacher-forced along the reference's own trajectories "
        + ("up to and including each candidate's first divergence (verification reads nothing "
           "after it) " if until_divergence else "")
        + "(the reference's rows are those of its greedy decode, the candidate's a prefill of the "
        "same tokens); beside the axis, not part of the composite.",
        "span": "until the first divergence" if until_divergence else "whole trajectories",
    }


# --------------------------------------------------------------------------- noise floor


NOISE_FLOOR_MIN_TOLERANCE: Final[float] = 5.0
"""Smallest tolerance (score points) below the trajectory noise floor still read as noise."""

FloorVerdict = Literal["within", "beyond", "far beyond"]


BEYOND_CONFIDENCE: Final[float] = 0.95
"""Probability below the floor from which a trajectory's drift reads as beyond noise."""


def floor_uncertainty(cand: Units | None, floor: Units | None) -> dict[str, Any]:
    """The floor's 95 % interval and ``p_below_floor``: the probability, from a paired
    bootstrap over the prompts, that the candidate's trajectory score lies below the floor's
    (``{}`` without per-prompt data on both sides, or when they cover other prompts)."""
    from refract.uncertainty import AxisUnits, analyze, paired_difference

    if cand is None or floor is None or cand.ids != floor.ids or cand.n < 2:
        return {}
    est = analyze([AxisUnits("gtm", floor, False)])["axes"]["gtm"]
    diff = paired_difference({"gtm": cand}, {"gtm": floor})["gtm"]
    return {"ci95": est["ci95"], "p_below_floor": diff["p_a_below_b"],
            "difference_ci95": diff["ci95"]}


def noise_floor_tolerance(floor: Mapping[str, Any]) -> float:
    """Score points below the floor that still count as numerical noise.

    The floor is itself one sample over ``n_prompts`` prompts: its full-match rate ``p`` has
    a binomial standard error ``sqrt(p (1 − p) / n)``. Two standard errors of that rate, in
    score points (a fully matched prompt contributes its whole length to the score, so the
    score moves about as much as the rate), with a minimum of
    :data:`NOISE_FLOOR_MIN_TOLERANCE`. Demo model: p = 16/30, n = 30 → 18.2 points.
    """
    p = as_score(floor.get("full_match_rate"))
    n = as_score(floor.get("n_prompts"))
    tol = NOISE_FLOOR_MIN_TOLERANCE
    if p is not None and n is not None and not math.isnan(p) and not math.isnan(n) and n > 0:
        p = min(1.0, max(0.0, p))
        tol = max(tol, 100.0 * 2.0 * math.sqrt(p * (1.0 - p) / n))
    return tol


def noise_floor_verdict(
    gtm_score: float | None, floor: Mapping[str, Any] | None
) -> tuple[FloorVerdict, float, float] | None:
    """(verdict, floor score, tolerance) of a trajectory score against its noise floor.

    With the floor's per-prompt data (``p_below_floor``: the paired-bootstrap probability that
    the candidate's score lies below the floor's): ``beyond`` when that probability is at least
    :data:`BEYOND_CONFIDENCE`, ``far beyond`` when it also falls more than twice the tolerance
    below the floor, else ``within``. Without it (older reports): ``within`` when the score ≥
    floor − tolerance, ``far beyond`` below twice the tolerance, ``beyond`` in between.
    ``None`` without a usable floor.
    """
    if gtm_score is None or math.isnan(gtm_score) or not isinstance(floor, Mapping):
        return None
    fs = as_score(floor.get("score"))
    if fs is None or math.isnan(fs):
        return None
    tol = noise_floor_tolerance(floor)
    gap = fs - gtm_score
    verdict: FloorVerdict
    p_below = as_score(floor.get("p_below_floor"))
    if p_below is not None and not math.isnan(p_below):
        if p_below < BEYOND_CONFIDENCE:
            verdict = "within"
        else:
            verdict = "far beyond" if gap > 2.0 * tol else "beyond"
    elif gap <= tol:
        verdict = "within"
    elif gap <= 2.0 * tol:
        verdict = "beyond"
    else:
        verdict = "far beyond"
    return verdict, fs, tol


def noise_floor_sentence(gtm_score: float, floor: Mapping[str, Any]) -> str | None:
    """The diagnosis sentence comparing Axis A with its numerical-noise floor."""
    got = noise_floor_verdict(gtm_score, floor)
    if got is None:
        return None
    verdict, fs, tol = got
    p_below = as_score(floor.get("p_below_floor"))
    sure = (f", P(below the floor) = {p_below:.2f}"
            if p_below is not None and not math.isnan(p_below) else "")
    head = (
        f"Trajectory {gtm_score:.1f} vs numerical-noise floor {fs:.1f} "
        f"(reference against itself, tolerance {tol:.1f}{sure})"
    )
    if verdict == "within":
        return (
            f"Trajectory drift within numerical noise: {head}; the greedy divergences are "
            "no larger than the reference's own under an equivalent computation."
        )
    if verdict == "beyond":
        return (
            f"Trajectory drift beyond numerical noise: {head}; the candidate diverges more "
            "than f16's own run-to-run variation."
        )
    return (
        f"Trajectory drift far beyond numerical noise: {head}; the quantized cache itself "
        "changes the greedy continuations."
    )


# --------------------------------------------------------------------------- the axis


class TrajectoryAxis(
    Axis, key="gtm", letter="A", title="Trajectory", flag="trajectory", short_context=True,
    in_floor=True, method=METHOD_VERSIONS["verify"][0], method_version=METHOD_VERSIONS["verify"][1],
    inputs=frozenset({"prompts"}), uses_ctx=True, rounds="prompts",
    description="Token-level agreement of greedy decodes with the reference.",
):
    """Axis A: on unless ``--skip-trajectory``; every candidate decodes, the reference once,
    then its numerical-noise floor (the reference under another batch order)."""

    @property
    def template_label(self) -> str:
        return "Axis A (--chat-template)"

    def template_user(self, opts: ScoreOptions) -> str | None:
        return "--chat-template" if self.enabled(opts) and opts.chat_template else None

    def prompt_jobs(self, plan: ScorePlan) -> list[PromptJob]:
        chat = plan.options.chat_template
        via = "through the chat template" if chat else "raw text with BOS"
        return [(p.id, p.prompt, chat, via) for p in plan.prompts]

    def memory(self, engine: Engine, plan: ScorePlan) -> int | None:
        opts = plan.options
        n_seq = 1 if opts.sequential else min(max(1, len(plan.prompts)), 64)
        # the reference decode with (at least) one candidate teacher-forced along it (each
        # sequence's cells: prompt + generation within ctx), and the reference rows held for
        # that candidate's batched comparison
        return (contexts_bytes(engine, plan, opts.ctx, n_seq)
                + engine.shadow_buffer_bytes(opts.ctx, n_seq))

    def run(self, ctx: RunContext) -> dict[str, AxisResult]:
        opts, ref, cands, engine = ctx.options, ctx.reference, ctx.candidates, ctx.engine
        prompts = ctx.plan.prompts
        with ctx.reporter.axis(ctx.title("A trajectory", f"{len(cands)} candidates"),
                               phases=1 + len(cands)) as cb, ctx.timed(ctx.shared, "gtm_s"):
            gtm = ctx.guarded(lambda: {"results": run_trajectories(
                engine, prompts, reference=ref, candidates=cands,
                n_predict=opts.n_predict, ctx=opts.ctx, chat_template=opts.chat_template,
                sequential=opts.sequential, method=opts.gtm_method, progress=cb,
            )})
        out: dict[str, AxisResult] = {}
        for c in cands:
            out[c] = ctx.result_of(gtm["results"][c]) if "results" in gtm else dict(gtm)
            ctx.timings[c]["gtm_s"] = ctx.shared["gtm_s"]
        if opts.with_noise_floor:
            with ctx.reporter.axis("A noise floor (reference, other decode)") as cb, \
                    ctx.timed(ctx.shared, "gtm_noise_floor_s"):
                nf = ctx.guarded(lambda: trajectory_noise_floor(
                    engine, prompts, reference=ref, n_predict=opts.n_predict,
                    ctx=opts.ctx, chat_template=opts.chat_template,
                    sequential=opts.sequential, progress=cb,
                ))
            for c in cands:
                if out[c].get("score") is not None:
                    out[c]["noise_floor"] = nf
        return out

    def annotate(self, entry: dict[str, Any]) -> None:
        """``noise_floor`` gets its verdict and tolerance (a copy)."""
        floor = entry.get("noise_floor")
        if not isinstance(floor, Mapping):
            return
        floor = dict(floor)
        if entry["status"] == "ok":
            floor.update(floor_uncertainty(self.units(entry), self.units(floor)))
        got = noise_floor_verdict(entry.get("score"), floor) if entry["status"] == "ok" else None
        if got is not None:
            floor["verdict"], _, floor["tolerance"] = got
        entry["noise_floor"] = floor

    def merge_rounds(self, parts: Sequence[AxisResult]) -> AxisResult:
        """Rounds of prompts: the rows put together and every summary taken again."""
        n_predict = int(parts[0]["n_tokens_each"])
        out = summarize_prompts([pp for p in parts for pp in p["per_prompt"]], n_predict)
        divs = [p.get("divergence") or {} for p in parts]
        thr = float(divs[0].get("near_tie_threshold", DEFAULT_NEAR_TIE_THRESHOLD))
        out["divergence"] = summarize_divergences(
            [row for d in divs for row in d.get("per_prompt", [])], thr)
        rows: list[tuple[list[Any], list[Any]]] = [
            p.get("_teacher_forced_rows") or ([], []) for p in parts]
        kls = [k for r in rows for k in r[0]]
        top1 = [t for r in rows for t in r[1]]
        out["teacher_forced"] = _teacher_forced_summary(
            kls, top1, parts[0].get("trajectory_method") == "verify")
        out["_teacher_forced_rows"] = (kls, top1)
        for key in ("decode_mode", "chat_template", "trajectory_method",
                    "trajectory_method_text", "method", "method_version"):
            if key in parts[0]:
                out[key] = parts[0][key]
        if parts[0].get("trajectory_method") == "verify":
            out["n_cand_decoded_after_divergence"] = sum(
                int(p.get("n_cand_decoded_after_divergence") or 0) for p in parts)
        floors = [p.get("noise_floor") for p in parts]
        if all(isinstance(f, Mapping) for f in floors):
            first = floors[0]
            assert isinstance(first, Mapping)
            out["noise_floor"] = noise_floor_from_rows(
                [r for f in floors if isinstance(f, Mapping) for r in f["per_prompt"]],
                str(first.get("method")), n_predict)
        return out

    def units(self, entry: Mapping[str, Any]) -> Units | None:
        """Prompts: prefix agreement over max(len_ref, len_cand)."""
        return units_from_rows(
            entry.get("per_prompt"), "prompt", "ratio100",
            ident=lambda row, i: row.get("id", i),
            num=lambda row: row["prefix_agreement_length"],
            den=_denominator,
        )

    def diagnosis(self, entry: Mapping[str, Any], score: float) -> list[str]:
        floor = entry.get("noise_floor")
        if not isinstance(floor, Mapping):
            return []
        sentence = noise_floor_sentence(score, floor)
        return [sentence] if sentence else []

    def fingerprint(self, report: Mapping[str, Any], entry: Mapping[str, Any],
                    settings: Mapping[str, Any]) -> dict[str, Any]:
        from refract.report.kit import first, prompts_fingerprint

        seq = settings.get("sequential")
        return {
            **prompts_fingerprint(report),
            "gtm.decode_mode": first(
                entry.get("decode_mode"),
                None if seq is None else ("sequential" if seq else "batched"),
            ),
        }

    def card_detail(self, entry: Mapping[str, Any]) -> str:
        from refract.report.kit import as_float

        rate = as_float(entry.get("full_match_rate"))
        div = as_float(entry.get("median_first_divergence"))
        parts = []
        if rate is not None:
            parts.append(f"full match {rate * 100:.0f}%")
        if div is not None:
            parts.append(f"median 1st div. {div:g}")
        analysis = entry.get("divergence")
        if isinstance(analysis, Mapping) and analysis.get("n_divergences"):
            frac = as_float(analysis.get("near_tie_fraction"))
            if frac is not None:
                parts.append(f"near ties {frac * 100:.0f}%")
        detail = " · ".join(parts)
        floor = entry.get("noise_floor")
        if isinstance(floor, Mapping):
            detail = f"numerical-noise floor {noise_floor_text(entry)}" + (
                f" · {detail}" if detail else "")
        return detail

    def score_note(self, report: Mapping[str, Any], entry: Mapping[str, Any]) -> str | None:
        from refract.report.kit import fmt

        floor = entry.get("noise_floor")
        if isinstance(floor, Mapping):
            return f"floor {fmt(floor.get('score'), 1)}"
        return None

    def html_body(self, report: Mapping[str, Any], entry: Mapping[str, Any]) -> str:
        from refract.report.kit import as_float, kv_table
        from refract.report.svg import trajectory_chart

        rate = as_float(entry.get("full_match_rate"))
        stats = kv_table(
            [
                ("prompts", entry.get("n_prompts")),
                ("tokens per generation (n_predict)", entry.get("n_tokens_each")),
                ("full-match rate", None if rate is None else f"{rate * 100:.1f}%"),
                ("median first divergence (non-matching prompts)",
                 entry.get("median_first_divergence")),
                ("mean agreed prefix (tokens)", entry.get("mean_prefix_agreement_length")),
                ("mean reference length", entry.get("mean_ref_length")),
                ("mean candidate length", entry.get("mean_cand_length") if entry.get(
                    "mean_cand_length") is not None or entry.get("trajectory_method") != "verify"
                 else "not decoded after the divergence where the reference ran to its limit"),
                ("method", entry.get("trajectory_method_text")),
                *_divergence_rows(entry),
                *_noise_floor_rows(entry),
            ]
        )
        per_prompt = entry.get("per_prompt")
        n_tokens = as_float(entry.get("n_tokens_each"))
        chart = ""
        if isinstance(per_prompt, list) and per_prompt:
            chart = "<h3>First divergence per prompt</h3>" + trajectory_chart(
                per_prompt, int(n_tokens) if n_tokens else None
            )
        return stats + chart


def noise_floor_text(entry: Mapping[str, Any]) -> str:
    """``"58.0 (within)"``: the floor's score and the candidate's verdict, or ``"—"``."""
    from refract.report.kit import fmt

    floor = entry.get("noise_floor")
    if not isinstance(floor, Mapping):
        return "—"
    verdict = floor.get("verdict")
    if verdict is None:
        got = noise_floor_verdict(as_score(entry.get("score")), floor)
        verdict = got[0] if got else None
    text = fmt(floor.get("score"), 1)
    return f"{text} ({verdict})" if verdict else text


def _noise_floor_rows(axis: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Axis A's numerical-noise floor: the reference scored against itself."""
    from refract.report.kit import as_float, fmt

    floor = axis.get("noise_floor")
    if not isinstance(floor, Mapping):
        return []
    rate = as_float(floor.get("full_match_rate"))
    verdict = floor.get("verdict")
    tol = as_float(floor.get("tolerance"))
    score_txt = fmt(floor.get("score"), 1)
    ci = floor.get("ci95")
    if isinstance(ci, list) and len(ci) == 2 and None not in ci:
        score_txt += f" [95 %: {float(ci[0]):.1f}–{float(ci[1]):.1f}]"
    if verdict:
        score_txt += f" — candidate {verdict} numerical noise"
        p_below = as_float(floor.get("p_below_floor"))
        if p_below is not None:
            score_txt += f" (P(below the floor) = {p_below:.2f})"
        elif tol is not None:
            score_txt += f" (tolerance {tol:.1f})"
    n_m, n_p = floor.get("n_matched"), floor.get("n_prompts")
    return [
        ("numerical-noise floor (reference vs itself)", score_txt),
        ("noise floor full-match rate", None if rate is None else (
            f"{rate * 100:.1f}%" + (f" ({n_m}/{n_p})" if n_m is not None and n_p else ""))),
        ("noise floor median first divergence", floor.get("median_first_divergence")),
        ("noise floor method", floor.get("method")),
    ]


def _divergence_rows(axis: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """What a divergence means: near-tie flips vs real shifts, and the teacher-forced drift."""
    from refract.report.kit import as_float, fmt, fmt_kld

    rows: list[tuple[str, Any]] = []
    div = axis.get("divergence")
    if isinstance(div, Mapping) and div.get("n_divergences"):
        frac = as_float(div.get("near_tie_fraction"))
        thr = as_float(div.get("near_tie_threshold"))
        label = "near-tie divergences" + (f" (margin < {thr:g})" if thr is not None else "")
        rows.append((label, None if frac is None else f"{frac * 100:.0f}%"))
        rows.append(("median reference margin at divergence", fmt(div.get("median_margin"), 3)))
        rows.append(("median KL at divergence (nats)",
                     fmt_kld(div.get("median_kl_at_divergence"))))
    tf = axis.get("teacher_forced")
    if isinstance(tf, Mapping) and tf.get("n_positions"):
        rows.append(("teacher-forced KLD along reference trajectories",
                     f"{fmt_kld(tf.get('mean_kld'))} nats"))
        rows.append(("teacher-forced same top-1", f"{fmt(tf.get('same_top1_pct'), 1)}%"))
    return rows
