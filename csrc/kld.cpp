#include "kld.hpp"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

// GCC keeps to 256-bit vectors on AVX-512 machines unless told otherwise; this kernel is pure
// double-precision arithmetic and gains from the full width.
#if defined(__AVX512F__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("prefer-vector-width=512")
#endif

namespace refract::kld {

// The floor of exp2_nonpos's argument: a variable with external linkage, so that the compiler
// cannot treat it as a constant (see exp2_nonpos).
double g_exp2_floor = -1020.0;

namespace {

constexpr double kLog2e = 1.4426950408889634;
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Elements per block of the one-pass log-sum-exp: a block of both rows (2 x 8 KiB) is scanned
// for its maxima, then read again from L1 for the exponentials.
constexpr int64_t kBlock = 2048;

// 2^y for y <= 0 (a rounding above 0 is fine), in double, written so the compiler vectorizes it (no libm call, no
// double->int conversion): the integer part by the 1.5*2^52 shifter, the fraction f in
// [-0.5, 0.5] through a degree-9 Chebyshev-interpolated polynomial (relative error < 2e-14),
// the exponent assembled from integer bits. y below -1020 (and NaN) gives 2^-1020: nothing
// against a partition function >= 1. `lo` is that floor, passed in at run time: with a literal
// the compiler folds 2^-1020 and branches around the polynomial, which stops vectorization.
inline double exp2_nonpos(double y, double lo) {
    constexpr double kShift = 6755399441055744.0;  // 1.5 * 2^52
    y = y > lo ? y : lo;
    const double kd = y + kShift;
    uint64_t kbits;
    std::memcpy(&kbits, &kd, sizeof kbits);
    const double f = y - (kd - kShift);
    double p = 1.0212097549811005e-07;
    p = p * f + 1.3259945262689143e-06;
    p = p * f + 1.5252640059770786e-05;
    p = p * f + 1.5403432339553542e-04;
    p = p * f + 1.333355825801874e-03;
    p = p * f + 9.618129195951041e-03;
    p = p * f + 5.550410866428854e-02;
    p = p * f + 2.4022650695631514e-01;
    p = p * f + 6.931471805599526e-01;
    p = p * f + 1.000000000000014;
    // kbits' low bits hold k (two's complement, offset by the shifter's mantissa)
    const uint64_t sbits = (kbits - 0x4338000000000000ULL + 1023ULL) << 52;
    double scale;
    std::memcpy(&scale, &sbits, sizeof scale);
    return p * scale;
}

inline int32_t not_finite(float x) { return !(std::fabs(x) <= FLT_MAX); }  // NaN compares false

// One side of a row, scanned block by block: the running maximum, the first block that holds
// it (the argmax is searched for in that block only, at the end), how many logits exceed the
// next token's (its rank) and how many are not finite. Every loop is a plain simd reduction.
struct Scan {
    float max = -kInf;
    int64_t max_block = 0;
    int64_t above = 0;
    int64_t bad = 0;

    // Scans [b0, b1); returns whether the block raised the maximum.
    inline bool block(const float * x, int64_t b0, int64_t b1, float target) {
        float m = -kInf;
        int32_t ab = 0, nb = 0;
#pragma omp simd reduction(max : m) reduction(+ : ab, nb)
        for (int64_t i = b0; i < b1; ++i) {
            const float v = x[i];
            m = v > m ? v : m;
            ab += v > target;
            nb += not_finite(v);
        }
        above += ab;
        bad += nb;
        if (m > max) {
            max = m;
            max_block = b0;
            return true;
        }
        return false;
    }
    // lowest id holding the maximum: its first block is known, search there
    int32_t argmax(const float * x, int64_t n) const {
        const int64_t e = std::min(n, max_block + kBlock);
        for (int64_t i = max_block; i < e; ++i)
            if (x[i] == max) return (int32_t) i;
        return 0;  // only when nothing compares (NaN rows, flagged by the caller)
    }
};

// Running partition sums of one block against fixed maxima: sum e^(r-mr), sum e^(c-mc) and
// sum e^(r-mr) (r - c), all in double. The exponent is one fma, x*log2e - m*log2e: the rounding
// of m*log2e shifts a whole side by < 1e-15 relative, the same for every term.
struct BlockSums {
    double sr, sc, t;
};

inline BlockSums exp_block(const float * r, const float * c, int64_t b0, int64_t b1, double mr, double mc) {
    double sr = 0.0, sc = 0.0, t = 0.0;
    const double lo = g_exp2_floor, mrl = mr * kLog2e, mcl = mc * kLog2e;
#pragma omp simd reduction(+ : sr, sc, t)
    for (int64_t i = b0; i < b1; ++i) {
        const double xr = r[i], xc = c[i];
        const double er = exp2_nonpos(xr * kLog2e - mrl, lo);
        sr += er;
        sc += exp2_nonpos(xc * kLog2e - mcl, lo);
        t += er * (xr - xc);
    }
    return {sr, sc, t};
}

}  // namespace

bool all_finite(const float * x, int64_t n) {
    int32_t bad = 0;
#pragma omp simd reduction(+ : bad)
    for (int64_t i = 0; i < n; ++i) bad += not_finite(x[i]);
    return bad == 0;
}

int32_t argmax(const float * x, int64_t n, bool * nonfinite) {
    Scan sc;
    for (int64_t b0 = 0; b0 < n; b0 += kBlock) sc.block(x, b0, std::min(n, b0 + kBlock), kInf);
    if (nonfinite) *nonfinite = sc.bad != 0;
    return sc.argmax(x, n);
}

// One pass over memory: per block, both rows are scanned (maxima, ranks, non-finite counts);
// when a block raises a maximum the running sums are rescaled (online log-sum-exp), then the
// block's exponentials are summed from L1.
//   KL = sum p_r (r - c) - lse_r + lse_c,  sum p_r (r - c) = t / sr.
// Identical rows run identical operations on both sides: t is exactly 0, sr == sc, KL == 0.
void row(const float * r, const float * c, int64_t n, int32_t next, RowStats & out) {
    const bool has_next = next >= 0 && next < n;
    const float tr = has_next ? r[next] : kInf;
    const float tc = has_next ? c[next] : kInf;
    Scan qr, qc;
    double sr = 0.0, sc = 0.0, t = 0.0;
    for (int64_t b0 = 0; b0 < n; b0 += kBlock) {
        const int64_t b1 = std::min(n, b0 + kBlock);
        const float old_r = qr.max, old_c = qc.max;
        const bool up_r = qr.block(r, b0, b1, tr);
        const bool up_c = qc.block(c, b0, b1, tc);
        if (qr.bad != 0 || qc.bad != 0) continue;  // finish the scans (argmax, ranks); no sums
        if (up_r) {
            const double f = std::exp((double) old_r - (double) qr.max);
            sr *= f;
            t *= f;
        }
        if (up_c) sc *= std::exp((double) old_c - (double) qc.max);
        const BlockSums s = exp_block(r, c, b0, b1, qr.max, qc.max);
        sr += s.sr;
        sc += s.sc;
        t += s.t;
    }
    const bool bad_r = qr.bad != 0, bad_c = qc.bad != 0;
    out.nonfinite = (uint8_t) ((bad_r ? kNonFiniteRef : 0) | (bad_c ? kNonFiniteCand : 0));
    out.argmax_ref = bad_r ? -1 : qr.argmax(r, n);
    out.argmax_cand = bad_c ? -1 : qc.argmax(c, n);
    out.rank_ref = has_next && !bad_r ? (int32_t) qr.above : -1;
    out.rank_cand = has_next && !bad_c ? (int32_t) qc.above : -1;
    if (bad_r || bad_c) {
        out.kld = kNaN;
        out.dp = out.logp_ref = out.logp_cand = has_next ? kNaN : 0.0;
        return;
    }
    const double mr = qr.max, mc = qc.max;
    const double lse_r = mr + std::log(sr);
    const double lse_c = mc + std::log(sc);
    const double kl = t / sr - lse_r + lse_c;
    out.kld = kl > 0.0 ? kl : 0.0;  // rounding can leave ~-1e-16 on near-identical rows
    if (has_next) {
        out.logp_ref = (double) tr - lse_r;
        out.logp_cand = (double) tc - lse_c;
        out.dp = std::exp(out.logp_cand) - std::exp(out.logp_ref);
    } else {
        out.logp_ref = out.logp_cand = out.dp = 0.0;
    }
}

void rows(const float * const * ref, const float * const * cand, int64_t n_rows, int64_t n_vocab,
          const int32_t * next, RowStats * out, int n_threads) {
    if (n_threads < 1) n_threads = 1;
#pragma omp parallel for schedule(static) num_threads(n_threads) if (n_rows > 1 && n_threads > 1)
    for (int64_t i = 0; i < n_rows; ++i) row(ref[i], cand[i], n_vocab, next ? next[i] : -1, out[i]);
}

void topk_logprobs(const float * logits, int64_t n, int k, int32_t * ids, float * logprobs) {
    k = (int) std::min<int64_t>(k, n);
    float m = -kInf;
#pragma omp simd reduction(max : m)
    for (int64_t i = 0; i < n; ++i) m = std::max(m, logits[i]);
    double s = 0.0;
    const double dm = m, lo = g_exp2_floor;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; ++i) s += exp2_nonpos(((double) logits[i] - dm) * kLog2e, lo);
    const double lse = dm + std::log(s);
    // keep a small sorted list (descending logit, ascending id on ties)
    std::vector<std::pair<float, int32_t>> best;
    best.reserve(k + 1);
    for (int64_t i = 0; i < n; ++i) {
        const float v = logits[i];
        if ((int) best.size() == k && !(v > best.back().first)) continue;
        auto it = std::upper_bound(best.begin(), best.end(), std::make_pair(v, (int32_t) i),
                                   [](const auto & a, const auto & b) {
                                       return a.first > b.first || (a.first == b.first && a.second < b.second);
                                   });
        best.insert(it, {v, (int32_t) i});
        if ((int) best.size() > k) best.pop_back();
    }
    for (int j = 0; j < k; ++j) {
        ids[j] = best[j].second;
        logprobs[j] = (float) ((double) best[j].first - lse);
    }
}

}  // namespace refract::kld
