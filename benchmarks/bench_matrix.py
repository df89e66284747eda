"""Many candidates: one model load for four candidates vs four `refract score` processes, and
the matrix's Ray executor vs its local executor.

    python benchmarks/bench_matrix.py [--model demo] [--chunks 32] [--n-predict 128]
        [--threads N] [--corpus FILE] [--skip-score] [--skip-matrix] [--skip-ray] [--keep DIR]

Four candidates (q8_0/q8_0, q4_0/q4_0, q8_0/q4_0, q5_0/q5_0) against f16/f16 on one model
(default: the demo model), default axes (trajectory + KLD) unless the flags shrink them:

1. ``refract score`` run once per candidate, each its own process (model load and reference
   computed four times) — the way a shell loop does it;
2. one ``refract score`` with the four ``--candidate`` (one model load, the reference's
   results computed once and shared). Target: ≤ 0.6× of (1);
3. ``refract matrix`` with that model and the four candidates, local executor (one worker
   process for the model): the cost of the matrix's process isolation over (2);
4. the same matrix through ``--executor ray`` on a local Ray cluster started beforehand (the
   cluster's start-up is timed and printed apart: a real cluster is already up). Target:
   ≤ 1.1× of (3).

Every number comes from this one run; on a shared machine the ratios are what to read. The
scores of every run are compared too (they must agree: same numbers, other plumbing).
Not a test.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CANDIDATES = ["ctk=q8_0,ctv=q8_0", "ctk=q4_0,ctv=q4_0", "ctk=q8_0,ctv=q4_0", "ctk=q5_0,ctv=q5_0"]
TARGET_MULTI = 0.6
TARGET_RAY = 1.1


def write_spec(d: Path, model: str, args: argparse.Namespace) -> Path:
    settings = [f"chunks = {args.chunks}", f"n_predict = {args.n_predict}"]
    if args.threads:
        settings.append(f"threads = {args.threads}")
    if args.corpus:
        settings.append(f"corpus = {json.dumps(str(args.corpus.resolve()))}")
    lines = [
        'reference = "ctk=f16,ctv=f16"',
        "candidates = [" + ", ".join(json.dumps(c) for c in CANDIDATES) + "]",
        "[settings]", *settings,
        "[[models]]", 'name = "bench"', f"path = {json.dumps(model)}",
    ]
    p = d / "matrix.toml"
    p.write_text("\n".join(lines) + "\n")
    return p


def score_flags(args: argparse.Namespace) -> list[str]:
    flags = ["--chunks", str(args.chunks), "--n-predict", str(args.n_predict), "--no-progress"]
    if args.threads:
        flags += ["--threads", str(args.threads)]
    if args.corpus:
        flags += ["--corpus", str(args.corpus.resolve())]
    return flags


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return took


def scores(paths: list[Path]) -> dict[str, tuple[Any, ...]]:
    out = {}
    for p in paths:
        r = json.loads(p.read_text())
        out[r["candidate"]] = (r["composite"], r["axes"]["gtm"].get("score"),
                               r["axes"]["kld"].get("score"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="demo", help="GGUF model, or 'demo' (default)")
    ap.add_argument("--chunks", type=int, default=32)
    ap.add_argument("--n-predict", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--corpus", type=Path, default=None, help="KLD corpus (default: refract's)")
    ap.add_argument("--skip-ray", action="store_true", help="do not time the Ray executor")
    ap.add_argument("--skip-score", action="store_true",
                    help="time only the matrix runs (local and Ray executors)")
    ap.add_argument("--skip-matrix", action="store_true",
                    help="do not time the matrix runs (only the two score runs)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the reports in this directory")
    args = ap.parse_args()

    from refract.inputs.model import resolve_model

    model = str(resolve_model(args.model))
    work = args.keep or Path(tempfile.mkdtemp(prefix="refract-bench-matrix-"))
    work.mkdir(parents=True, exist_ok=True)
    spec = write_spec(work, model, args)
    refract = [sys.executable, "-m", "refract"]
    print(f"model {model}; {len(CANDIDATES)} candidates; chunks {args.chunks}, n_predict "
          f"{args.n_predict}, threads {args.threads or 'default'}; work dir {work}")

    rows: list[tuple[str, float, float | None, float | None]] = []
    results: dict[str, Any] = {}
    t_multi = None
    if not args.skip_score:
        # 1. one `refract score` process per candidate
        separate = work / "separate"
        separate.mkdir(exist_ok=True)
        t_sep = 0.0
        for i, cand in enumerate(CANDIDATES):
            took = timed([*refract, "score", "--model", model, "--candidate", cand,
                          "--json-out", str(separate / f"{i}.json"), *score_flags(args)])
            print(f"  refract score {cand}: {took:.1f} s")
            t_sep += took

        # 2. one multi-candidate `refract score` (one load, one shared reference)
        multi = work / "multi"
        cand_flags = [x for c in CANDIDATES for x in ("--candidate", c)]
        t_multi = timed([*refract, "score", "--model", model, *cand_flags, "--out-dir", str(multi),
                         *score_flags(args)])
        print(f"  refract score, 4 candidates: {t_multi:.1f} s")
        rows += [("4 × refract score (separate processes)", t_sep, None, None),
                 ("1 × refract score, 4 candidates", t_multi, t_multi / t_sep, TARGET_MULTI)]
        results.update(separate=scores(sorted(separate.glob("*.json"))),
                       multi=scores(sorted(multi.glob("*.json"))))

    # 3. the same as a matrix (one worker process per model: here one); in this process, as
    # the Ray run below, so that both include the same things
    if args.skip_matrix:
        report(rows, results)
        return
    from refract.matrix import LocalExecutor, check_out_dir, load_spec, run_matrix

    t0 = time.perf_counter()
    result = run_matrix(load_spec(spec), check_out_dir(work / "local"), LocalExecutor())
    t_mat = time.perf_counter() - t0
    if result.failed:
        sys.exit(f"local matrix failed: {result.failed[0].message}")
    print(f"  refract matrix (local executor): {t_mat:.1f} s")

    rows.append(("refract matrix, local executor", t_mat,
                 None if t_multi is None else t_mat / t_multi, None))
    results["local"] = scores(sorted((work / "local").glob("*.json")))

    if not args.skip_ray:
        import ray

        from refract.matrix.ray import RayExecutor

        t0 = time.perf_counter()
        ray.init(include_dashboard=False, log_to_driver=False)
        t_start = time.perf_counter() - t0
        try:
            t0 = time.perf_counter()
            result = run_matrix(load_spec(spec), check_out_dir(work / "ray"), RayExecutor())
            t_ray = time.perf_counter() - t0
        finally:
            ray.shutdown()
        if result.failed:
            sys.exit(f"ray matrix failed: {result.failed[0].message}")
        print(f"  refract matrix (ray): {t_ray:.1f} s (+ {t_start:.1f} s cluster start)")
        rows.append(("same matrix, Ray executor (cluster up)", t_ray, t_ray / t_mat, TARGET_RAY))
        results["ray"] = scores(sorted((work / "ray").glob("*.json")))
    report(rows, results)


def report(rows: list[tuple[str, float, float | None, float | None]],
           results: dict[str, Any]) -> None:
    print()
    print("(each ratio is to the row above)")
    print(f"{'run':44} {'seconds':>8} {'ratio':>7} {'target':>7}  verdict")
    for name, secs, ratio, target in rows:
        if ratio is None:
            print(f"{name:44} {secs:8.1f}")
        elif target is None:
            print(f"{name:44} {secs:8.1f} {ratio:6.2f}×")
        else:
            verdict = "PASS" if ratio <= target else "MISS"
            print(f"{name:44} {secs:8.1f} {ratio:6.2f}× {'≤' + str(target):>7}  {verdict}")
    first = next(iter(results.values()))
    same = all(v == first for v in results.values())
    print(f"scores identical across the runs: {'yes' if same else 'NO'}")
    if not same:
        for k, v in results.items():
            print(f"  {k}: {v}")


if __name__ == "__main__":
    main()
