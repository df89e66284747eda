// The KLD kernel: per row of logits, fused log-softmax of reference and candidate, KL(ref||cand),
// Δp and log-probabilities of the next token, argmax agreement and ranks. Double accumulation.
// A row holding a non-finite logit (NaN, +inf, -inf) on either side is flagged and its numbers
// are NaN: non-finite logits are damage, never a perfect score.
#pragma once

#include <cstdint>

namespace refract::kld {

// RowStats::nonfinite bits: which side's row held a NaN or infinite logit.
constexpr uint8_t kNonFiniteRef = 1;
constexpr uint8_t kNonFiniteCand = 2;

struct RowStats {
    double kld = 0.0;        // KL(p_ref || p_cand), nats; NaN when either row is non-finite
    double dp = 0.0;         // p_cand(next) - p_ref(next); 0 when no next token
    double logp_ref = 0.0;   // log p_ref(next)
    double logp_cand = 0.0;  // log p_cand(next)
    int32_t argmax_ref = 0;  // lowest index of the maximum; -1 when that side is non-finite
    int32_t argmax_cand = 0;
    int32_t rank_ref = -1;   // number of ids with a larger logit than next (0 = top-1); -1 without next
    int32_t rank_cand = -1;
    uint8_t nonfinite = 0;   // kNonFiniteRef | kNonFiniteCand
};

// One row. `next` < 0 means no next token (dp/logp/rank left at defaults).
void row(const float * ref, const float * cand, int64_t n_vocab, int32_t next, RowStats & out);

// Many rows given as pointers (e.g. straight into two llama.cpp logit buffers), spread over
// n_threads threads. `next` may be null.
void rows(const float * const * ref, const float * const * cand, int64_t n_rows, int64_t n_vocab,
          const int32_t * next, RowStats * out, int n_threads);

// log-softmax top-k of one row (k largest, descending, ties by lowest id).
void topk_logprobs(const float * logits, int64_t n_vocab, int k, int32_t * ids, float * logprobs);

// Index of the maximum logit, ties to the lowest id. One vectorized pass; when `nonfinite` is
// given it is set to whether the row holds a NaN or infinite value.
int32_t argmax(const float * logits, int64_t n_vocab, bool * nonfinite = nullptr);

// Whether every value of the row is finite.
bool all_finite(const float * logits, int64_t n_vocab);

}  // namespace refract::kld
