"""What a sweep concludes from its reports: which configs a cheap first round may drop, the
memory/quality frontier, and the recommendation.

A config is dropped after the first round when

* **below**: its composite lies below the lowest band asked for with at least the level's
  probability (its band probabilities, :mod:`refract.uncertainty`). A first round may measure
  only some of the composite's axes (by default Trajectory alone, on every prompt, see
  :mod:`refract.sweep.run`): the others are then held at their best score, 100, in every
  bootstrap replicate, so the composite it decides on is an upper bound of the real one (the
  harmonic mean rises with every axis);
* **dominated**: another config is no larger (KV bytes per token, from the allocations) and
  better, its paired composite difference positive with at least that probability
  (:func:`refract.report.paired.compare_pair`: the same reference, prompts and chunks). This
  needs every composite axis measured in the first round.

The level: the sweep's confidence when the first round measured its axes on the whole budget;
for a first round on a fraction ``t`` of it, the level an O'Brien–Fleming-type α spending gives
that early look (:func:`refract.uncertainty.spent_obf`: for 95 % at ``t = 1/3``, 0.9993), since
a first-round 95 % is not a full-budget 95 % and a drop the full budget would not confirm
changes the answer (the frontier, the configs the evidence does not decide).

Everything else survives and gets the full budget.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from refract.bands import BANDS, band
from refract.kvconfig import short_label
from refract.report.fields import composite_estimate, report_composite
from refract.report.frontier import frontier
from refract.uncertainty import spent_obf

__all__ = ["bound_estimate", "first_look_level", "p_at_least", "prune", "recommend",
           "sweep_frontier"]

#: the best score an axis can have: what a first round holds the axes it did not measure at
BEST = 100.0


def p_at_least(probs: Mapping[str, float] | None, target: str) -> float | None:
    """P(band ≥ ``target``) from a composite's band probabilities (``None``: none)."""
    if not probs:
        return None
    keep = BANDS[:BANDS.index(target) + 1]
    return float(sum(float(probs.get(b, 0.0)) for b in keep))


def first_look_level(fraction: float, confidence: float) -> float:
    """The probability a first round at ``fraction`` of the budget needs to drop a config, for
    ``confidence`` over both looks (O'Brien–Fleming-type spending)."""
    return 1.0 - spent_obf(fraction, 1.0 - confidence)


def bound_estimate(report: Mapping[str, Any], held: Sequence[str] = ()) -> dict[str, Any] | None:
    """The first-round composite estimate (point, ``ci95``, ``band_probabilities``); with
    ``held`` (composite axes the round did not measure) those axes at 100 in every replicate:
    an upper bound of the composite. ``None`` when there is nothing to bound."""
    if not held:
        est = composite_estimate(report)
        return dict(est) if est else None
    from refract.report.paired import axis_units, bootstrap_settings
    from refract.uncertainty import AxisUnits, analyze

    parts: list[AxisUnits] = []
    for key in (report.get("settings") or {}).get("axes") or []:
        if key in held:
            continue
        units, why = axis_units(report, key)
        if why == "not scored":
            continue
        if units is None:
            return None  # a measured axis without usable units: no bound, no drop
        parts.append(AxisUnits(key, units, True))
    if not parts:
        return None
    replicates, seed = bootstrap_settings([report])
    comp = analyze(parts, replicates=replicates, seed=seed,
                   fixed={key: BEST for key in held})["composite"]
    return dict(comp) if comp else None


def _budget(report: Mapping[str, Any]) -> str:
    s = report.get("settings") or {}
    gtm = (report.get("axes") or {}).get("gtm") or {}
    prompts = s.get("n_prompts") or gtm.get("n_prompts") or "?"
    if "kld" in (s.get("axes") or ["kld"]):
        return f"{prompts} prompts, {s.get('chunks', '?')} chunks"
    return f"{prompts} prompts"


def _held_text(held: Sequence[str]) -> str:
    from refract.axes import registry

    return ", ".join(a.title if (a := registry.get(k)) is not None else k for k in held)


def prune(first: Mapping[str, Mapping[str, Any]], sizes: Mapping[str, int | None], *,
          target: str, confidence: float, fraction: float = 1.0,
          held: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """Per dropped config: ``reason`` (``below`` / ``dominated``), ``evidence`` (a sentence),
    ``dominated_by``, ``p`` (the probability it was dropped on) and ``level`` (the one it
    needed: :func:`first_look_level` of ``fraction``). ``first``: each config's first-round
    report; ``held``: the composite axes the round did not measure (held at 100, and no
    dominance); ``sizes``: KV bytes per token (a config whose size is unknown is never called
    dominated, nor dominates)."""
    from refract.report.paired import compare_pair

    level = first_look_level(fraction, confidence)
    why_level = (f" (the level of a first look at {100.0 * fraction:.0f} % of the budget for "
                 f"{100.0 * confidence:g} % over both looks)" if fraction < 1.0 else "")
    out: dict[str, dict[str, Any]] = {}
    for label, rep in first.items():
        est = bound_estimate(rep, held)
        p = p_at_least((est or {}).get("band_probabilities"), target)
        if est is None or p is None or 1.0 - p < level:
            continue
        point = float(est["point"])
        what = (f"composite at most {point:.1f}, with {_held_text(held)} held at 100"
                if held else f"composite {point:.1f}, band {band(point)}")
        out[label] = {
            "reason": "below",
            "evidence": f"P(composite below {target}) {'≥' if held else '='} {1.0 - p:.4f} ≥ "
                        f"{level:.4f}{why_level} after {_budget(rep)} ({what})",
            "dominated_by": None, "p": 1.0 - p, "level": level,
        }
    if held:
        return out
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
            if p_better >= level:
                lo, hi = comp["ci95"]
                out[label] = {
                    "reason": "dominated",
                    "evidence": f"{short_label(other)} is no larger ({size_o} vs {size_me} "
                                f"KV bytes/token) and better by {float(comp['point']):.1f} "
                                f"(95 %: {lo:.1f}–{hi:.1f}; P = {p_better:.4f} ≥ "
                                f"{level:.4f}){why_level} after {_budget(rep)}",
                    "dominated_by": other, "p": p_better, "level": level,
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
