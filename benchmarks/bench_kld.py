"""KLD kernel throughput vs numpy (float64 reference, float32) and memcpy, side by side.

    python benchmarks/bench_kld.py [--rows 64] [--repeat 3] [--threads N] [--vocab 32000 ...]

As the KLD axis calls it: next-token ids given (Δp, log-probabilities and ranks computed too).
GB/s counts the logits read once: both float32 [rows, vocab] arrays (2 * rows * vocab * 4 bytes)
per call, the same byte count for every column. Ratios are times measured side by side in this
run (best of --repeat each); > 1 means refract is faster. rel.err is the largest relative
difference of the per-row KLD from numpy's float64 reference. Not a test: the machine is
shared and noisy, so run it a few times and compare medians. On a loaded machine the CPU-time
columns (GB per CPU-second, all threads counted: per-core throughput) stay meaningful when
wall-clock numbers do not.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np

from refract import _core

VOCABS = (32_000, 152_064, 262_144)


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


def best_time(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Best wall-clock seconds and best CPU seconds (all threads) of `repeat` calls."""
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return best, best_cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--vocab", type=int, nargs="+", default=list(VOCABS))
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"rows={args.rows} threads={args.threads} best of {args.repeat}; "
          f"load average {load:.2f} on {os.cpu_count()} CPUs")
    print(_core.system_info().strip())
    header = (f"{'vocab':>8} {'memcpy':>9} {'refract':>9} {'np f32':>9} {'np f64':>9} "
              f"{'vs f64':>8} {'vs f32':>8} {'of memcpy':>10} {'rel.err':>9} | "
              f"{'cpu:refract':>11} {'np f64':>9} {'vs f64':>8}")
    print(header)
    print("-" * len(header))
    for vocab in args.vocab:
        # logits of a language model's size, and a candidate close to it (KLD ~ 5e-3 nats)
        ref = (rng.standard_normal((args.rows, vocab)) * 3).astype(np.float32)
        cand = (ref + rng.standard_normal((args.rows, vocab)) * 0.1).astype(np.float32)
        nxt = rng.integers(0, vocab, args.rows).astype(np.int32)
        nbytes = ref.nbytes + cand.nbytes
        dst = np.empty_like(ref)
        dst2 = np.empty_like(cand)

        def copy(dst: np.ndarray = dst, dst2: np.ndarray = dst2,
                 ref: np.ndarray = ref, cand: np.ndarray = cand) -> None:
            np.copyto(dst, ref)
            np.copyto(dst2, cand)

        def ours(ref: np.ndarray = ref, cand: np.ndarray = cand, nxt: np.ndarray = nxt) -> object:
            return _core.kld_rows(ref, cand, nxt, args.threads)

        t_copy, _ = best_time(copy, args.repeat)
        t_ours, c_ours = best_time(ours, args.repeat)
        t_f32, _ = best_time(lambda: numpy_f32(ref, cand, nxt), args.repeat)
        t_f64, c_f64 = best_time(lambda: numpy_f64(ref, cand, nxt), args.repeat)
        want = numpy_f64(ref, cand, nxt)
        got = _core.kld_rows(ref, cand, nxt, args.threads)["kld"]
        err = float(np.max(np.abs(got - want) / np.abs(want)))

        def gbs(t: float) -> float:
            return nbytes / t / 1e9

        print(f"{vocab:>8} {gbs(t_copy):>7.2f}GB {gbs(t_ours):>7.2f}GB {gbs(t_f32):>7.2f}GB "
              f"{gbs(t_f64):>7.2f}GB {t_f64 / t_ours:>7.1f}x {t_f32 / t_ours:>7.1f}x "
              f"{t_copy / t_ours:>9.0%} {err:>9.1e} | {gbs(c_ours):>9.2f}GB {gbs(c_f64):>7.2f}GB "
              f"{c_f64 / c_ours:>7.1f}x")
    print("GB/s = 2 x rows x vocab x 4 bytes (both float32 logit arrays) / seconds; memcpy = "
          "np.copyto of both arrays (reads and writes them once); cpu: the same per CPU-second")


if __name__ == "__main__":
    main()
