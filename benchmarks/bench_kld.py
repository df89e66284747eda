"""KLD kernel throughput vs numpy (float64 reference, float32) and memcpy, side by side.

    python benchmarks/bench_kld.py [--rows 255] [--repeat 3] [--threads N]

Prints GB/s of logits read (two float32 [rows, vocab] arrays) and ratios. Not a test: run it
on a quiet machine; every number in one table comes from the same run.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from refract import _core

VOCABS = (49_152, 152_064, 262_144)


def numpy_f64(ref: np.ndarray, cand: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    r = ref.astype(np.float64)
    c = cand.astype(np.float64)
    lr = r - r.max(axis=1, keepdims=True)
    lr -= np.log(np.exp(lr).sum(axis=1, keepdims=True))
    lc = c - c.max(axis=1, keepdims=True)
    lc -= np.log(np.exp(lc).sum(axis=1, keepdims=True))
    kl = (np.exp(lr) * (lr - lc)).sum(axis=1)
    rows = np.arange(len(r))
    _ = np.exp(lc[rows, nxt]) - np.exp(lr[rows, nxt])
    _ = r.argmax(axis=1) == c.argmax(axis=1)
    return kl


def numpy_f32(ref: np.ndarray, cand: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    lr = ref - ref.max(axis=1, keepdims=True)
    lr -= np.log(np.exp(lr).sum(axis=1, keepdims=True))
    lc = cand - cand.max(axis=1, keepdims=True)
    lc -= np.log(np.exp(lc).sum(axis=1, keepdims=True))
    kl = (np.exp(lr) * (lr - lc)).sum(axis=1, dtype=np.float64)
    rows = np.arange(len(ref))
    _ = np.exp(lc[rows, nxt]) - np.exp(lr[rows, nxt])
    _ = ref.argmax(axis=1) == cand.argmax(axis=1)
    return kl


def best_time(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=255)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"rows={args.rows} threads={args.threads} (best of {args.repeat})")
    header = (f"{'vocab':>8} {'memcpy':>9} {'refract':>9} {'np f32':>9} {'np f64':>9} "
              f"{'vs f64':>8} {'vs f32':>8} {'of memcpy':>10}   max |Δkl| vs f64")
    print(header)
    print("-" * len(header))
    for vocab in VOCABS:
        ref = (rng.standard_normal((args.rows, vocab)) * 3).astype(np.float32)
        cand = (ref + rng.standard_normal((args.rows, vocab)) * 0.1).astype(np.float32)
        nxt = rng.integers(0, vocab, args.rows).astype(np.int32)
        nbytes = ref.nbytes + cand.nbytes
        dst = np.empty_like(ref)
        dst2 = np.empty_like(cand)

        def copy() -> None:
            np.copyto(dst, ref)
            np.copyto(dst2, cand)

        t_copy = best_time(copy, args.repeat)
        t_ours = best_time(lambda: _core.kld_rows(ref, cand, nxt, args.threads), args.repeat)
        t_f32 = best_time(lambda: numpy_f32(ref, cand, nxt), args.repeat)
        t_f64 = best_time(lambda: numpy_f64(ref, cand, nxt), max(1, args.repeat - 1))
        err = float(np.max(np.abs(_core.kld_rows(ref, cand, nxt)["kld"]
                                  - numpy_f64(ref, cand, nxt))))

        def gbs(t: float) -> float:
            return nbytes / t / 1e9

        print(f"{vocab:>8} {gbs(t_copy):>7.2f}GB {gbs(t_ours):>7.2f}GB {gbs(t_f32):>7.2f}GB "
              f"{gbs(t_f64):>7.2f}GB {t_f64 / t_ours:>7.1f}x {t_f32 / t_ours:>7.1f}x "
              f"{t_copy / t_ours:>9.0%}   {err:.2e}")
    print("memcpy = reading + writing both arrays once (np.copyto); ratios > 1 mean refract is "
          "faster.")


if __name__ == "__main__":
    main()
