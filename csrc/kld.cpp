#include "kld.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace refract::kld {
namespace {

// exp(x) for x <= 0 in double, written so the compiler vectorizes it (no libm call, no
// double->int conversion): Cody-Waite reduction by ln2 with the 1.5*2^52 shifter trick, a
// degree-12 Taylor polynomial on |r| <= ln2/2 (error < 1 ulp-ish), and the exponent built
// from integer bits. Inputs below -708 flush to 0.
inline double exp_nonpos(double x) {
    constexpr double kLog2e = 1.4426950408889634;
    constexpr double kLn2Hi = 6.93147180369123816490e-01;
    constexpr double kLn2Lo = 1.90821492927058770002e-10;
    constexpr double kShift = 6755399441055744.0;  // 1.5 * 2^52
    const double live = x >= -708.0 ? 1.0 : 0.0;
    x = x >= -708.0 ? x : -708.0;
    double kd = x * kLog2e + kShift;
    uint64_t kbits;
    std::memcpy(&kbits, &kd, sizeof kbits);
    kd -= kShift;
    const double r = (x - kd * kLn2Hi) - kd * kLn2Lo;
    double p = 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // kbits' low bits hold k (two's complement, offset by the shifter's mantissa)
    uint64_t sbits = (kbits - 0x4338000000000000ULL + 1023ULL) << 52;
    double scale;
    std::memcpy(&scale, &sbits, sizeof scale);
    return p * scale * live;
}

struct MaxCount {
    float max_r, max_c;
    int64_t above_r, above_c;
};

// Pass 1: both maxima, and how many logits exceed the next token's (its rank).
MaxCount pass_max(const float * r, const float * c, int64_t n, float tr, float tc) {
    float mr = -std::numeric_limits<float>::infinity(), mc = mr;
    int64_t ar = 0, ac = 0;
#pragma omp simd reduction(max : mr, mc) reduction(+ : ar, ac)
    for (int64_t i = 0; i < n; ++i) {
        mr = std::max(mr, r[i]);
        mc = std::max(mc, c[i]);
        ar += r[i] > tr;
        ac += c[i] > tc;
    }
    return {mr, mc, ar, ac};
}

int32_t first_index_of(const float * x, int64_t n, float v) {
    for (int64_t i = 0; i < n; ++i)
        if (x[i] == v) return (int32_t) i;
    return 0;
}

}  // namespace

int32_t argmax(const float * logits, int64_t n) {
    float m = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : m)
    for (int64_t i = 0; i < n; ++i) m = std::max(m, logits[i]);
    return first_index_of(logits, n, m);
}

void row(const float * r, const float * c, int64_t n, int32_t next, RowStats & out) {
    const bool has_next = next >= 0 && next < n;
    const float tr = has_next ? r[next] : std::numeric_limits<float>::infinity();
    const float tc = has_next ? c[next] : std::numeric_limits<float>::infinity();
    const MaxCount mx = pass_max(r, c, n, tr, tc);
    out.argmax_ref = first_index_of(r, n, mx.max_r);
    out.argmax_cand = first_index_of(c, n, mx.max_c);

    // Pass 2, in double: the two partition functions and sum_i e^(r_i - max_r) (r_i - c_i).
    const double mr = mx.max_r, mc = mx.max_c;
    double sr = 0.0, sc = 0.0, t = 0.0;
#pragma omp simd reduction(+ : sr, sc, t)
    for (int64_t i = 0; i < n; ++i) {
        const double ri = r[i], ci = c[i];
        const double er = exp_nonpos(ri - mr);
        sr += er;
        sc += exp_nonpos(ci - mc);
        t += er > 0.0 ? er * (ri - ci) : 0.0;  // -inf logits contribute nothing
    }
    const double lse_r = mr + std::log(sr);
    const double lse_c = mc + std::log(sc);
    double kl = t / sr - lse_r + lse_c;
    out.kld = kl > 0.0 ? kl : 0.0;  // rounding can leave ~-1e-16 on near-identical rows
    if (has_next) {
        out.logp_ref = (double) tr - lse_r;
        out.logp_cand = (double) tc - lse_c;
        out.dp = std::exp(out.logp_cand) - std::exp(out.logp_ref);
        out.rank_ref = (int32_t) mx.above_r;
        out.rank_cand = (int32_t) mx.above_c;
    } else {
        out.logp_ref = out.logp_cand = out.dp = 0.0;
        out.rank_ref = out.rank_cand = -1;
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
    float m = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : m)
    for (int64_t i = 0; i < n; ++i) m = std::max(m, logits[i]);
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; ++i) s += exp_nonpos((double) logits[i] - m);
    const double lse = m + std::log(s);
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
