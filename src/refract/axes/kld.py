"""Axis B -- KLD@D: teacher-forced next-token KL divergence from the reference (SPEC §3B).

The engine computes it (:meth:`refract.engine.Engine.kld`: llama-perplexity's chunking, the
reference once per window, every candidate against its logits, the full vocabulary); the
statistics are :class:`refract.engine.kldstats.KLDResult`. This file is the axis: when it runs,
what it costs, what its report says and how it is shown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from refract.axes.base import Axis, AxisResult, RunContext, units_from_rows
from refract.errors import UsageError

if TYPE_CHECKING:
    from refract.engine.facade import Engine
    from refract.scoring.plan import ScorePlan
    from refract.uncertainty import Units


class KLDAxis(
    Axis, key="kld", letter="B", title="KLD@D", flag="kld", short_context=True, in_floor=True,
    inputs=frozenset({"corpus"}), uses_ctx=True, rounds="chunks",
    description="Teacher-forced next-token distribution divergence from the reference.",
    method="teacher-forced-kl-full-vocab", method_version="1",
):
    """Axis B: on unless ``--skip-kld``; the candidates share one pass of the reference."""

    def preflight(self, engine: Engine, plan: ScorePlan, corpus_tokens: Any) -> None:
        """A corpus shorter than one KLD window at ``--ctx`` measures nothing: refused."""
        ctx = plan.options.ctx
        n_tokens = len(corpus_tokens)
        if n_tokens < ctx:
            raise UsageError(
                f"{plan.corpus_what()}: {n_tokens} tokens, one KLD window at --ctx {ctx} "
                f"needs {ctx}; use a longer corpus or a smaller --ctx"
            )

    def memory(self, engine: Engine, plan: ScorePlan) -> int | None:
        opts = plan.options
        est = engine.estimate_context_bytes
        return est(plan.reference.label, opts.ctx, 1, opts.ctx) + sum(
            est(c.label, opts.ctx, 1, opts.ctx) for c in plan.candidates)

    def run(self, ctx: RunContext) -> dict[str, AxisResult]:
        opts, cands = ctx.options, ctx.candidates
        title = "B KLD@D" + (f" ({len(cands)} candidates)" if len(cands) > 1 else "")
        with ctx.reporter.axis(title) as cb, ctx.timed(ctx.shared, "kld_s"):
            results = ctx.guarded(lambda: {"results": ctx.engine.kld(
                ctx.corpus_tokens, ctx.reference, cands, ctx=opts.ctx, chunks=opts.chunks,
                progress=cb)})
        out: dict[str, AxisResult] = {}
        for i, c in enumerate(cands):
            if "results" in results:
                result = results["results"][i]
                entry = result.to_dict(per_token=True)
                entry["corpus"] = {"path": str(ctx.plan.corpus_path), **ctx.corpus_used}
                entry["_result"] = result  # for merging rounds; never reported
            else:
                entry = dict(results)
            out[c] = entry
            ctx.timings[c]["kld_s"] = (ctx.shared["kld_s"]
                                       + ctx.shared.get("tokenize_corpus_s", 0.0))
        return out

    def merge_rounds(self, parts: Sequence[AxisResult]) -> AxisResult:
        """Rounds of chunks: the per-token rows put together and summarized again."""
        import numpy as np

        from refract.engine.kldstats import summarize_kld

        results = [p["_result"] for p in parts]
        first = results[0]
        rows = {name: np.concatenate([getattr(r, attr) for r in results])
                for name, attr in (("kld", "kld"), ("dp", "dp"), ("same_top1", "same_top1"),
                                   ("logp_ref", "logp_ref"), ("logp_cand", "logp_cand"))}
        merged = summarize_kld(
            rows, reference=first.reference, candidate=first.candidate,
            n_chunks=sum(r.n_chunks for r in results), ctx=first.ctx,
            scored_per_chunk=first.scored_per_chunk,
            n_corpus_tokens=sum(r.n_corpus_tokens for r in results))
        entry = merged.to_dict(per_token=True)
        entry["corpus"] = parts[0].get("corpus")
        entry["_result"] = merged
        return entry

    def units(self, entry: Mapping[str, Any]) -> Units | None:
        """Chunks: each window's mean KLD (they score equally many tokens)."""
        if entry.get("invalid") is True:
            return None
        chunks = entry.get("per_chunk_kld")
        rows = [{"kld": k} for k in chunks] if isinstance(chunks, list) else None
        return units_from_rows(rows, "chunk", "exp100", ident=lambda _row, i: i,
                               num=lambda row: row["kld"])

    def fingerprint(self, report: Mapping[str, Any], entry: Mapping[str, Any],
                    settings: Mapping[str, Any]) -> dict[str, Any]:
        from refract.report.kit import first, get_path

        prov = report.get("provenance")
        return {
            "corpus.sha256": get_path(prov, "corpus", "sha256"),
            "corpus.bytes": first(get_path(prov, "corpus", "bytes"),
                                  get_path(entry, "corpus", "size_bytes")),
            "kld.chunks": first(settings.get("chunks"), entry.get("chunks")),
            "kld.ctx": first(settings.get("ctx"), entry.get("ctx")),
        }

    def card_detail(self, entry: Mapping[str, Any]) -> str:
        from refract.report.kit import fmt_kld

        return f"mean KLD {fmt_kld(entry.get('mean_kld'))} nats"

    def html_body(self, report: Mapping[str, Any], entry: Mapping[str, Any]) -> str:
        import numpy as np

        from refract.report.kit import as_float, fmt_kld, kld_percentiles, kv_table
        from refract.report.svg import kld_histogram, kld_percentile_chart

        axis = entry
        mean = axis.get("mean_kld")
        se = as_float(axis.get("mean_kld_se", axis.get("kld_se")))
        mean_txt = None if mean is None else fmt_kld(mean) + (f" ± {fmt_kld(se)}" if se else "")
        ci = axis.get("kld_ci95", axis.get("mean_kld_ci95", axis.get("bootstrap_ci95")))
        ci_txt = None
        if isinstance(ci, (list, tuple)) and len(ci) == 2:
            ci_txt = f"{fmt_kld(ci[0])} – {fmt_kld(ci[1])}"
        ppl = axis.get("ppl")
        ppl_pairs: list[tuple[str, Any]] = []
        if isinstance(ppl, Mapping):
            ppl_pairs = [(f"PPL ({k})", ppl[k]) for k in ppl]
        elif "ppl_cand" not in axis:
            ppl_pairs = [("PPL", ppl)]
        corpus = axis.get("corpus")
        corpus_txt = corpus.get("path") if isinstance(corpus, Mapping) else corpus
        chunks, ctx = axis.get("chunks"), axis.get("ctx")
        stats = kv_table(
            [
                ("mean KLD (nats)", mean_txt),
                ("95% bootstrap interval of mean KLD", ci_txt),
                ("PPL (reference)", axis.get("ppl_ref")),
                ("PPL (candidate)", axis.get("ppl_cand")),
                *ppl_pairs,
                ("mean ln(PPL ratio)", axis.get("mean_ln_ppl_ratio")),
                ("RMS Δp (%)", axis.get("rms_dp_pct")),
                ("same top-1 (%)", axis.get("same_topp_pct")),
                ("chunks × ctx", f"{chunks} × {ctx}" if chunks and ctx else None),
                ("scored tokens", axis.get("n_scored_tokens", axis.get("n_scored"))),
                ("corpus", corpus_txt),
            ]
        )
        per_token = axis.get("per_token_kld")
        chart = ""
        if per_token is not None and np.asarray(per_token).size:
            chart = "<h3>Per-token KLD distribution</h3>" + kld_histogram(per_token)
        points = kld_percentiles(axis)
        if points:
            chart += "<h3>Per-token KLD percentiles</h3>" + kld_percentile_chart(points)
        if not chart:
            chart = (
                '<p class="note">No per-token KLD distribution in this report (refract-llm '
                "reports only the mean).</p>"
            )
        return stats + chart


__all__ = ["KLDAxis"]
