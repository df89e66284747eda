"""What a sweep concludes from its reports: which configs a cheap first round may drop, the
memory/quality frontier, and the recommendation.

Pruning cannot change an answer (at the sweep's confidence, 95 % by default):

* **below**: the config's composite lies below the lowest band asked for with probability at
  least the confidence (its band probabilities, :mod:`refract.uncertainty`): it can never be
  the recommendation;
* **dominated**: another config is no larger (KV bytes per token, from the allocations) and
  better, its paired composite difference positive with probability at least the confidence
  (:func:`refract.report.paired.compare_pair`: the same reference, prompts and chunks):
  the other one is preferred wherever this one would be.

Everything else survives and gets the full budget.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from refract.bands import BANDS
from refract.kvconfig import short_label
from refract.report.fields import composite_estimate, report_band, report_composite
from refract.report.frontier import frontier

__all__ = ["p_at_least", "prune", "recommend", "sweep_frontier"]


def p_at_least(probs: Mapping[str, float] | None, target: str) -> float | None:
    """P(band ≥ ``target``) from a composite's band probabilities (``None``: none)."""
    if not probs:
        return None
    keep = BANDS[:BANDS.index(target) + 1]
    return float(sum(float(probs.get(b, 0.0)) for b in keep))


def _probs(report: Mapping[str, Any]) -> dict[str, float]:
    est = composite_estimate(report) or {}
    return dict(est.get("band_probabilities") or {})


def _budget(report: Mapping[str, Any]) -> str:
    s = report.get("settings") or {}
    gtm = (report.get("axes") or {}).get("gtm") or {}
    prompts = s.get("n_prompts") or gtm.get("n_prompts") or "?"
    return f"{prompts} prompts, {s.get('chunks', '?')} chunks"


def prune(first: Mapping[str, Mapping[str, Any]], sizes: Mapping[str, int | None], *,
          target: str, confidence: float) -> dict[str, dict[str, Any]]:
    """Per dropped config: ``reason`` (``below`` / ``dominated``), ``evidence`` (a sentence),
    ``dominated_by``. ``first``: each config's first-round report; ``sizes``: KV bytes per
    token (a config whose size is unknown is never called dominated, nor dominates)."""
    from refract.report.paired import compare_pair

    out: dict[str, dict[str, Any]] = {}
    for label, rep in first.items():
        p = p_at_least(_probs(rep), target)
        if p is not None and 1.0 - p >= confidence:
            out[label] = {
                "reason": "below",
                "evidence": f"P(composite below {target}) = {1.0 - p:.3f} ≥ {confidence:g} "
                            f"after {_budget(rep)} (composite {_fmt(report_composite(rep))}, "
                            f"band {report_band(rep) or '—'})",
                "dominated_by": None,
            }
    for label, rep in first.items():
        if label in out or sizes.get(label) is None or report_composite(rep) is None:
            continue
        for other, orep in first.items():
            size_o, size_me = sizes.get(other), sizes.get(label)
            if other == label or size_o is None or size_me is None or size_o > size_me:
                continue
            if report_composite(orep) is None:
                continue
            pair = compare_pair(orep, rep, short_label(other), short_label(label))
            comp = pair.differences.get("composite")
            if not comp:
                continue
            p_better = 1.0 - float(comp["p_a_below_b"])
            if p_better >= confidence:
                lo, hi = comp["ci95"]
                out[label] = {
                    "reason": "dominated",
                    "evidence": f"{short_label(other)} is no larger ({size_o} vs {size_me} "
                                f"KV bytes/token) and better by {float(comp['point']):.1f} "
                                f"(95 %: {lo:.1f}–{hi:.1f}; P = {p_better:.3f} ≥ "
                                f"{confidence:g}) after {_budget(rep)}",
                    "dominated_by": other,
                }
                break
    return out


def _pct(x: float | None) -> str:
    return "?" if x is None else f"{100.0 * x:.0f} %"


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}"


def sweep_frontier(entries: Sequence[Mapping[str, Any]], *, confidence: float) -> list[str]:
    """The memory/quality frontier of the configs that may be in the band asked for: fully
    scored (``status == "scored"``) and not below the band with probability ``confidence``
    (what pruning drops may never be on it, so pruning cannot change it)."""
    pts = [(e["config"], (e.get("kv") or {}).get("bytes_per_token"), e.get("composite"))
           for e in entries if e.get("status") == "scored"
           and not (e.get("p_target") is not None and 1.0 - e["p_target"] >= confidence)]
    return frontier([(lab, b, s) for lab, b, s in pts if b is not None and s is not None])


def _ref_name(reference: str) -> str:
    parts = dict(p.split("=", 1) for p in reference.split(",") if "=" in p)
    if parts.get("ctk") == parts.get("ctv") and len(parts) == 2:
        return str(parts["ctk"])
    return reference


def recommend(entries: Sequence[Mapping[str, Any]], *, target: str, confidence: float,
              reference: str) -> dict[str, Any]:
    """The smallest fully scored config whose band is at least ``target`` with probability
    ``confidence``; ``kind`` ``recommended``, ``undecided`` (a smaller config's evidence does
    not decide) or ``none``."""
    ref = _ref_name(reference)
    conf = f"{confidence:.0%}".replace("%", " %")
    scored = [e for e in entries if e.get("status") == "scored"
              and (e.get("kv") or {}).get("bytes_per_token") is not None
              and e.get("p_target") is not None]

    def size(e: Mapping[str, Any]) -> int:
        return int(e["kv"]["bytes_per_token"])

    ok = sorted((e for e in scored if e["p_target"] >= confidence),
                key=lambda e: (size(e), -(e.get("composite") or 0.0)))
    best = ok[0] if ok else None
    limit = size(best) if best is not None else None
    undecided = sorted((e for e in scored if 1.0 - confidence < e["p_target"] < confidence
                        and (limit is None or size(e) < limit)), key=size)
    und = "; ".join(f"{short_label(e['config'])} ({_pct(e['kv']['ratio'])} of {ref}'s bytes, "
                    f"P = {e['p_target']:.2f})" for e in undecided)
    if best is not None:
        ratio = best["kv"].get("ratio")
        text = (f"smallest KV cache that stays {target} at {conf}: {best['config']}, "
                f"{_pct(ratio)} of {ref}'s bytes")
        if undecided:
            text += (f"; the evidence does not decide whether a smaller config also stays "
                     f"{target}: {und} — a larger budget (more prompts and chunks) would "
                     "settle it")
        return {"config": best["config"], "kind": "undecided" if undecided else "recommended",
                "text": text, "ratio": ratio,
                "undecided": [e["config"] for e in undecided]}
    if undecided:
        return {"config": None, "kind": "undecided", "ratio": None,
                "undecided": [e["config"] for e in undecided],
                "text": f"no config is shown to stay {target} at {conf}, and the evidence "
                        f"does not decide for {und} — a larger budget (more prompts and "
                        "chunks) would settle it"}
    top = max(scored, key=lambda e: e.get("composite") or 0.0, default=None)
    text = f"no config stays {target} at {conf}"
    if top is not None:
        ci = top.get("ci95")
        ci_text = f" [95 %: {ci[0]:.1f}–{ci[1]:.1f}]" if ci else ""
        text += (f": the best, {top['config']}, scores {top['composite']:.1f}{ci_text} "
                 f"({top.get('band')})")
    return {"config": None, "kind": "none", "text": text, "ratio": None, "undecided": []}
