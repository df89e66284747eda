"""Statistics of a teacher-forced KLD run (SPEC §3B), from the engine's per-token arrays."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PERCENTILES = {
    "max": 100.0,
    "p99.9": 99.9,
    "p99": 99.0,
    "p95": 95.0,
    "p90": 90.0,
    "median": 50.0,
    "p10": 10.0,
    "p5": 5.0,
    "p1": 1.0,
    "p0.1": 0.1,
    "min": 0.0,
}
N_BOOTSTRAP = 2000


def kld_score(mean_kld: float) -> float:
    """100·exp(−mean KLD); a negative mean (impossible but for rounding) scores 100.

    A non-finite mean (inf, or NaN from non-finite logits) is damage and scores 0, never NaN.
    """
    if not math.isfinite(mean_kld):
        return 0.0
    if mean_kld <= 0.0:
        return 100.0
    return 100.0 * math.exp(-mean_kld)


@dataclass
class KLDResult:
    reference: str
    candidate: str
    mean_kld: float
    kld_se: float
    kld_ci95: tuple[float, float]
    percentiles: dict[str, float]
    ppl_ref: float
    ppl_cand: float
    mean_ln_ppl_ratio: float
    rms_dp_pct: float
    same_top_p_pct: float
    score: float
    n_chunks: int
    ctx: int
    scored_per_chunk: int
    n_corpus_tokens: int
    # per scored token, in corpus order (views of the engine's buffers, not copies)
    kld: np.ndarray = field(repr=False)
    dp: np.ndarray = field(repr=False)
    same_top1: np.ndarray = field(repr=False)
    logp_ref: np.ndarray = field(repr=False)
    logp_cand: np.ndarray = field(repr=False)
    #: scored rows whose candidate logits held NaN/inf (then every statistic is NaN, score 0)
    n_nonfinite_rows: int = 0

    @property
    def n_scored(self) -> int:
        return int(self.kld.size)

    @property
    def per_chunk_kld(self) -> list[float]:
        """Mean KLD of each chunk (window), in corpus order: the independent units of the
        score (every chunk scores the same number of tokens, so their mean is ``mean_kld``)."""
        if self.n_chunks < 1 or self.kld.size != self.n_chunks * self.scored_per_chunk:
            return []
        per = self.kld.reshape(self.n_chunks, self.scored_per_chunk).mean(axis=1,
                                                                          dtype=np.float64)
        return [float(x) for x in per]

    @property
    def invalid(self) -> bool:
        """The candidate produced non-finite logits: its numbers measure nothing."""
        return self.n_nonfinite_rows > 0

    @property
    def invalid_reason(self) -> str | None:
        if not self.invalid:
            return None
        return (
            f"candidate produced non-finite (NaN/inf) logits in {self.n_nonfinite_rows} of "
            f"{self.n_scored} scored rows"
        )

    def to_dict(self, *, per_token: bool = False) -> dict[str, Any]:
        """The report's `axes.kld` fields (refract-llm names first, ours after)."""
        out: dict[str, Any] = {
            "score": self.score,
            "mean_kld": self.mean_kld,
            "ppl": self.ppl_cand,
            "rms_dp_pct": self.rms_dp_pct,
            "same_topp_pct": self.same_top_p_pct,
            "chunks": self.n_chunks,
            "ctx": self.ctx,
            "is_self_reference": self.reference == self.candidate,
            "kld_se": self.kld_se,
            "kld_ci95": list(self.kld_ci95),
            "kld_percentiles": self.percentiles,
            "ppl_ref": self.ppl_ref,
            "ppl_cand": self.ppl_cand,
            "mean_ln_ppl_ratio": self.mean_ln_ppl_ratio,
            "n_scored_tokens": self.n_scored,
            "scored_per_chunk": self.scored_per_chunk,
            "n_corpus_tokens": self.n_corpus_tokens,
            "per_chunk_kld": self.per_chunk_kld,
            "invalid": self.invalid,
            "n_nonfinite_rows": self.n_nonfinite_rows,
        }
        if self.invalid:
            out["invalid_reason"] = self.invalid_reason
        if per_token:
            out["per_token_kld"] = self.kld
        return out


def summarize_kld(
    rows: dict[str, np.ndarray],
    *,
    reference: str,
    candidate: str,
    n_chunks: int,
    ctx: int,
    scored_per_chunk: int,
    n_corpus_tokens: int,
    seed: int = 42,
) -> KLDResult:
    kld = rows["kld"]
    n = int(kld.size)
    if n == 0:
        raise ValueError("no scored tokens")
    dp, lr, lc = rows["dp"], rows["logp_ref"], rows["logp_cand"]
    same = rows["same_top1"]
    same = same.view(np.bool_) if same.dtype == np.uint8 else same.astype(bool)
    n_bad = int(np.count_nonzero(rows["nonfinite_cand"])) if "nonfinite_cand" in rows else 0
    n_nonfinite = max(n_bad, int(np.count_nonzero(~np.isfinite(kld))))
    nan = float("nan")
    if n_nonfinite:
        # non-finite logits are damage, never a score: every statistic is NaN (null in reports)
        mean = se = nll_ref = nll_cand = rms_dp = same_top = nan
        ci = (nan, nan)
        pct = {name: nan for name in PERCENTILES}
    else:
        mean = float(kld.mean(dtype=np.float64))
        se = float(kld.std(ddof=1) / math.sqrt(n)) if n > 1 else nan
        pct = {name: float(np.percentile(kld, q)) for name, q in PERCENTILES.items()}
        ci = _bootstrap_ci(kld, n_chunks, scored_per_chunk, seed, mean)
        nll_ref = -float(lr.mean(dtype=np.float64))
        nll_cand = -float(lc.mean(dtype=np.float64))
        rms_dp = 100.0 * math.sqrt(float(np.mean(np.square(dp, dtype=np.float64))))
        same_top = 100.0 * float(np.mean(same, dtype=np.float64))
    return KLDResult(
        reference=reference,
        candidate=candidate,
        mean_kld=mean,
        kld_se=se,
        kld_ci95=ci,
        percentiles=pct,
        ppl_ref=math.exp(nll_ref),
        ppl_cand=math.exp(nll_cand),
        mean_ln_ppl_ratio=nll_cand - nll_ref,
        rms_dp_pct=rms_dp,
        same_top_p_pct=same_top,
        score=kld_score(mean),
        n_chunks=n_chunks,
        ctx=ctx,
        scored_per_chunk=scored_per_chunk,
        n_corpus_tokens=n_corpus_tokens,
        kld=kld,
        dp=dp,
        same_top1=same,
        logp_ref=lr,
        logp_cand=lc,
        n_nonfinite_rows=n_nonfinite,
    )


def _bootstrap_ci(
    kld: np.ndarray, n_chunks: int, scored_per_chunk: int, seed: int, mean: float
) -> tuple[float, float]:
    """95% bootstrap interval of the mean over chunks: windows are the independent units,
    tokens within one are not."""
    per_chunk = kld.reshape(n_chunks, scored_per_chunk).mean(axis=1, dtype=np.float64)
    if n_chunks < 2:
        return (mean, mean)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_chunks, size=(N_BOOTSTRAP, n_chunks))
    boot = per_chunk[draws].mean(axis=1)
    return (float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5)))
