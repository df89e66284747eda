"""What intervals and decided runs cost and save, one run (issue 22).

    python benchmarks/bench_uncertainty.py [--model demo] [--candidates ctk=q8_0,ctv=q8_0 ...]
        [--threads 2] [--ctx 512] [--chunks 32] [--n-predict 128] [--looks 4]
        [--halvings 200] [--corpus PATH]

For each candidate: one full-budget ``refract score`` (default axes) and one
``--until-decided`` run on the same engine, side by side. Prints

- the intervals' share of the full run's wall time: the time of the report's ``uncertainty``
  block (:func:`refract.report.build.report_uncertainty`, every axis and the composite,
  2,000 replicates) over the score's total (target ≤ 2 %);
- the decided run's wall time over the full run's, the fraction of the budget it used, and
  whether the band it reached equals the full run's;
- ``--halvings N``: in N random halvings of the full run's prompts and chunks, how often the
  95 % composite interval from the half covers the full-budget composite (from the report's
  own per-unit data).

Not a test: wall times on whatever machine runs it; each ratio compares two numbers measured
in the same run.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from refract import Engine
from refract.axes import registry
from refract.inputs.model import resolve_model
from refract.report.build import report_uncertainty
from refract.scoring import run_score
from refract.uncertainty import halving_coverage


def halving_coverage_of(report: dict[str, Any], n: int) -> float | None:
    """:func:`refract.uncertainty.halving_coverage` of a report's composite axes."""
    parts = []
    for axis in registry:
        entry = report["axes"].get(axis.key) or {}
        if not entry.get("in_composite"):
            continue
        units = axis.units(entry)
        if units is None:
            return None
        parts.append((axis.key, units))
    full = report["composite"]
    if not parts or full is None:
        return None
    return halving_coverage(parts, full, n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--candidates", nargs="+",
                    default=["ctk=turbo4,ctv=turbo4", "ctk=q8_0,ctv=q8_0"])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=32)
    ap.add_argument("--n-predict", type=int, default=128)
    ap.add_argument("--looks", type=int, default=4)
    ap.add_argument("--halvings", type=int, default=200)
    ap.add_argument("--corpus", default=None, help="KLD corpus (default: WikiText-2 test)")
    a = ap.parse_args()
    model = resolve_model(a.model)
    opts = {"ctx": a.ctx, "chunks": a.chunks, "n_predict": a.n_predict, "threads": a.threads}
    if a.corpus:
        opts["corpus"] = a.corpus
    print(f"model {model}, threads {a.threads}, load {os.getloadavg()[0]:.2f}")
    with Engine(model, n_threads=a.threads) as engine:
        for cand in a.candidates:
            try:
                engine.kv(cand, slot=1)
            except Exception as exc:  # a type this build lacks
                print(f"{cand}: skipped ({exc})")
                continue
            t0 = time.perf_counter()
            full = run_score(model, cand, engine=engine, **opts)
            t_full = time.perf_counter() - t0
            entries = full["axes"]
            in_comp = {k: entries[k]["score"] if entries[k].get("in_composite") else None
                       for k in registry.keys()}
            t1 = time.perf_counter()
            report_uncertainty(entries, in_comp, self_check=full["self_check"])
            t_unc = time.perf_counter() - t1
            t2 = time.perf_counter()
            dec = run_score(model, cand, engine=engine, until_decided=True, looks=a.looks,
                            **opts)
            t_dec = time.perf_counter() - t2
            ud = dec["until_decided"]
            probs = (full["uncertainty"]["composite"] or {}).get("band_probabilities")
            print(f"{cand}: full {t_full:.1f} s, composite {full['composite']:.2f} "
                  f"{full['band']} ({probs})")
            print(f"  intervals {1000 * t_unc:.1f} ms = {100 * t_unc / t_full:.3f} % of the run")
            if a.halvings:
                cover = halving_coverage_of(full, a.halvings)
                print(f"  halvings: the half's 95 % interval covers the full composite in "
                      f"{'n/a' if cover is None else f'{100 * cover:.1f} %'} of {a.halvings}")
            print(f"  --until-decided {t_dec:.1f} s = {t_dec / t_full:.2f}x the full run; "
                  f"looks {ud['looks_run']}/{ud['looks_planned']}, budget "
                  f"{ud['budget_fraction']:.0%} (prompts {ud['prompts_used']}, chunks "
                  f"{ud['chunks_used']}), band {dec['band']} (decided {ud['decided']}) vs "
                  f"full {full['band']}: {'same' if dec['band'] == full['band'] else 'DIFFERS'}")


if __name__ == "__main__":
    main()
