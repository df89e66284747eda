"""Axis A: trajectory (greedy-decode agreement) scoring, engine-independent.

The engine produces, per prompt, the token ids greedily decoded by the reference and by the
candidate (as sampled, including the end-of-generation token that stopped decoding). This
module turns them into the axis score and refract-llm's ``gtm`` diagnostics (SPEC §3A), and
analyses the first divergence step from the reference's top-k distribution.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any, Protocol

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
        raise ValueError(f"{what}[{index}] is not a sequence of token ids: {exc}") from None


def score_trajectories(
    prompts: Sequence[PromptLike],
    ref_ids: list[Sequence[int]],
    cand_ids: list[Sequence[int]],
    n_predict: int,
) -> dict[str, Any]:
    """Score greedy trajectories (SPEC §3A) and return refract-llm's ``gtm`` fields.

    Per prompt, prefix = number of leading equal ids; score =
    100 * sum(prefix) / sum(max(len_ref, len_cand)), clipped to [0, 100]. A candidate that keeps
    generating after the reference stopped (or stops early) is penalized by the max().

    Raises ValueError when the three lists differ in length, a trajectory is longer than
    ``n_predict``, or every trajectory is empty (nothing was decoded: an engine failure, not
    a score).
    """
    if isinstance(n_predict, bool) or not isinstance(n_predict, int) or n_predict < 1:
        raise ValueError(f"n_predict must be a positive integer, got {n_predict!r}")
    n = len(prompts)
    if len(ref_ids) != n or len(cand_ids) != n:
        raise ValueError(
            f"got {n} prompts but {len(ref_ids)} reference and {len(cand_ids)} candidate "
            "trajectories"
        )
    if n == 0:
        raise ValueError("no prompts to score")

    per_prompt: list[dict[str, Any]] = []
    total_prefix = 0
    total_len = 0
    for i, (p, r_raw, c_raw) in enumerate(zip(prompts, ref_ids, cand_ids, strict=True)):
        ref = _as_ids(r_raw, "ref_ids", i)
        cand = _as_ids(c_raw, "cand_ids", i)
        for side, ids in (("reference", ref), ("candidate", cand)):
            if len(ids) > n_predict:
                raise ValueError(
                    f"prompt {p.id!r}: {side} trajectory has {len(ids)} tokens, more than "
                    f"n_predict={n_predict}"
                )
        prefix = common_prefix_length(ref, cand)
        matched = ref == cand
        total_prefix += prefix
        total_len += max(len(ref), len(cand))
        per_prompt.append(
            {
                "id": p.id,
                "category": p.category,
                "prompt": p.prompt,
                "ref_token_ids": ref,
                "cand_token_ids": cand,
                "first_divergence": None if matched else prefix,
                "prefix_agreement_length": prefix,
                "cand_length": len(cand),
                "ref_length": len(ref),
                "matched": matched,
            }
        )

    if total_len == 0:
        raise ValueError(
            "every reference and candidate trajectory is empty: nothing was decoded, so the "
            "trajectory axis cannot be scored"
        )
    score = min(100.0, max(0.0, 100.0 * total_prefix / total_len))

    divergences = [pp["first_divergence"] for pp in per_prompt if not pp["matched"]]
    n_matched = n - len(divergences)
    early = sum(1 for pp in per_prompt if pp["cand_length"] < n_predict)
    notes: list[str] = []
    if early:
        notes.append(
            f"{early}/{n} candidates stopped before n_predict={n_predict} (end of generation "
            "or another stop condition); per_prompt cand_length is the decoded length."
        )

    return {
        "score": score,
        "full_match_rate": n_matched / n,
        "median_first_divergence": statistics.median(divergences) if divergences else None,
        "mean_prefix_agreement_length": total_prefix / n,
        "mean_cand_length": sum(pp["cand_length"] for pp in per_prompt) / n,
        "mean_ref_length": sum(pp["ref_length"] for pp in per_prompt) / n,
        "n_prompts": n,
        "n_tokens_each": n_predict,
        "per_prompt": per_prompt,
        "notes": notes,
    }


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
        raise ValueError(
            f"got {len(ref_top_ids)} top-k id lists, {len(ref_top_logprobs)} top-k logprob "
            f"lists and {n} candidate tokens; they must be parallel"
        )
    for name, arr in (("ref_tokens", ref_tokens), ("cand_kl", cand_kl), ("ids", ids)):
        if arr is not None and len(arr) != n:
            raise ValueError(f"{name} has {len(arr)} entries, expected {n}")
    thr = float(near_tie_threshold)
    if not math.isfinite(thr) or thr < 0:
        raise ValueError(f"near_tie_threshold must be a finite number >= 0, got {thr!r}")

    per_prompt: list[dict[str, Any]] = []
    for i in range(n):
        top_ids = [int(t) for t in ref_top_ids[i]]
        top_lp = [float(x) for x in ref_top_logprobs[i]]
        label = repr(ids[i]) if ids is not None else f"#{i}"
        if not top_ids or len(top_ids) != len(top_lp):
            raise ValueError(
                f"divergence {label}: top-k ids ({len(top_ids)}) and logprobs "
                f"({len(top_lp)}) must be non-empty and of equal length"
            )
        if any(math.isnan(x) or x > 1e-6 for x in top_lp):
            raise ValueError(f"divergence {label}: top-k logprobs must be <= 0 and not NaN")
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
            raise ValueError(
                f"divergence {label}: reference and candidate token are both {ref_tok}"
            )
        if ref_tok not in prob:
            raise ValueError(
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


def run_trajectory(
    engine: Any,
    prompts: Sequence[PromptLike],
    *,
    reference: str,
    candidate: str,
    n_predict: int = 128,
    ctx: int = 512,
    chat_template: bool = False,
    sequential: bool = False,
    near_tie_threshold: float = DEFAULT_NEAR_TIE_THRESHOLD,
    progress: Any = None,
) -> dict[str, Any]:
    """Axis A on an :class:`refract.Engine` for one candidate (see :func:`run_trajectories`)."""
    [out] = run_trajectories(
        engine, prompts, reference=reference, candidates=[candidate], n_predict=n_predict,
        ctx=ctx, chat_template=chat_template, sequential=sequential,
        near_tie_threshold=near_tie_threshold, progress=progress,
    ).values()
    if isinstance(out, BaseException):
        raise out
    return out


def run_trajectories(
    engine: Any,
    prompts: Sequence[PromptLike],
    *,
    reference: str,
    candidates: Sequence[str],
    n_predict: int = 128,
    ctx: int = 512,
    chat_template: bool = False,
    sequential: bool = False,
    near_tie_threshold: float = DEFAULT_NEAR_TIE_THRESHOLD,
    progress: Any = None,
) -> dict[str, dict[str, Any] | Exception]:
    """Axis A for every candidate: decode, score, and explain the divergences.

    Each candidate decodes its own greedy trajectories; then the reference decodes its
    trajectories (with their top-16 log-probabilities per step) while every candidate is
    teacher-forced along them in a context of its own, so the teacher-forced comparison costs
    one prefill of each trajectory per candidate and no extra reference pass. The reference's
    trajectories go into the engine's reference cache. Returns, per candidate label, its axis
    dict — or the exception that candidate raised (e.g. non-finite logits), so one broken
    candidate does not cost the others their results. A reference failure raises.
    """
    texts = [p.prompt for p in prompts]
    out: dict[str, dict[str, Any] | Exception] = {}
    cand_toks: dict[str, list[Any]] = {}
    for c in candidates:
        try:
            cand_toks[c] = list(engine.greedy(
                texts, c, n_predict, ctx, chat_template, sequential=sequential,
                progress=progress, _slot=1,
            ))
        except Exception as exc:  # reported per candidate by the caller
            if getattr(exc, "label", None) == reference and reference not in candidates:
                raise
            out[c] = exc
    live = [c for c in candidates if c in cand_toks]
    ref_toks, ref_top_ids, ref_top_lps, tf = _reference_teacher_forced(
        engine, texts, reference, live, out, n_predict=n_predict, ctx=ctx,
        chat_template=chat_template, sequential=sequential, progress=progress,
    )
    live = [c for c in live if c in tf]
    results = {c: score_trajectories(prompts, list(ref_toks), cand_toks[c], n_predict)
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
            if j is None or j >= min(ref.size, cand_toks[c][i].size):
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
        result["teacher_forced"] = _teacher_forced_summary(kls, top1)
        result["decode_mode"] = "sequential" if sequential else "batched"
        result["chat_template"] = chat_template
        out[c] = result
    return {c: out[c] for c in candidates}


def _reference_teacher_forced(
    engine: Any, texts: list[str], reference: str, live: list[str],
    failed: dict[str, dict[str, Any] | Exception], *, n_predict: int, ctx: int,
    chat_template: bool, sequential: bool, progress: Any,
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
        raise RuntimeError(
            f"the reference {reference} decoded other greedy trajectories than before on this "
            "engine; its decode is not reproducible here, so no trajectory score is valid"
        )


def _n_seq(texts: Sequence[str], sequential: bool) -> int:
    return 1 if sequential else max(1, min(len(texts), 64))


def _shadow_groups(
    engine: Any, reference: str, live: list[str], *, ctx: int, n_seq: int
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
    engine: Any,
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
    return engine.reference_cache.get_or_compute(  # type: ignore[no-any-return]
        key,
        lambda: engine.greedy(
            list(texts), reference, n_predict, ctx, chat_template,
            sequential=sequential, topk=TOPK, progress=progress,
        ),
    )


NOISE_FLOOR_METHOD = {
    "batched": "reference vs reference, the batch order reversed (same model, KV type, kernels "
    "and batch size; only each sequence's slot and KV-cell layout change)",
    "sequential": "reference decoded one prompt at a time vs the same reference decoded as one "
    "batch",
}


def trajectory_noise_floor(
    engine: Any,
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
    alt = engine.reference_cache.get_or_compute(key, other)
    scored = score_trajectories(prompts, list(main), alt, n_predict)
    n_matched = sum(1 for pp in scored["per_prompt"] if pp["matched"])
    return {
        "score": scored["score"],
        "full_match_rate": scored["full_match_rate"],
        "median_first_divergence": scored["median_first_divergence"],
        "mean_prefix_agreement_length": scored["mean_prefix_agreement_length"],
        "n_matched": n_matched,
        "n_prompts": scored["n_prompts"],
        "method": NOISE_FLOOR_METHOD["sequential" if sequential else "batched"],
    }


def _teacher_forced_summary(kls: list[Any], top1: list[Any]) -> dict[str, Any]:
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
        "(the reference's rows are those of its greedy decode, the candidate's a prefill of the "
        "same tokens); beside the axis, not part of the composite.",
    }
