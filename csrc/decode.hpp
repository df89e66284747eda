// Decoding on llama.cpp contexts: batched greedy generation with decode-time token capture,
// single-sequence generation with prefix reuse and a teacher-forced probe, and lockstep
// teacher-forced comparison of a reference against candidates on their logit buffers.
#pragma once

#include "kld.hpp"
#include "model.hpp"

#include <functional>
#include <string>
#include <vector>

namespace refract::decode {

using Progress = std::function<void(int64_t done, int64_t total)>;
using Tokens = std::vector<llama_token>;

// Logits row `i` of the context's last decode (EngineError when llama.cpp has none). Every
// read of a logits row goes through here, so that the test-only poison hook reaches all paths.
const float * logits_row(const Context & ctx, int32_t i);
// Maps llama_decode's return code to an EngineError naming the context (0 = ok).
void check_decode(int32_t rc, const Context & ctx);
// A UsageError naming `what` when a token id lies outside the model's vocabulary.
void check_tokens(const Model & model, const Tokens & toks, const char * what);

// Test-only fault injection, process-wide: while set, every logits row read through
// logits_row from a context whose KV label equals `label` first gets some of its elements
// overwritten with `value` (NaN, +inf or -inf). An empty label clears it.
void set_test_poison(const std::string & label, float value);

struct GreedyResult {
    std::vector<Tokens> tokens;               // generated ids per prompt, EOG included
    std::vector<std::vector<int32_t>> topk_ids;  // per prompt: steps x k (if k > 0)
    std::vector<std::vector<float>> topk_logprobs;
    int64_t n_rows = 0;       // logits rows read (one per sequence and step, prefill included)
    int64_t n_nonfinite = 0;  // of those, rows holding a NaN or infinite logit
    // Teacher-forced rows per shadow (see greedy): [shadow][prompt][step], one per generated token.
    std::vector<std::vector<std::vector<kld::RowStats>>> shadow_rows;
};

// Greedy (argmax, lowest id on ties) continuation of every prompt. Prompts decode as parallel
// sequences, `group` at a time, in one context of n_ctx_seq cells per sequence. The batch
// composition depends only on the prompt lengths: a sequence that stopped on an EOG token keeps
// its slot (its further tokens are computed and discarded) until the group is done.
//
// Each `shadows` KV config decodes, in a context of its own, exactly the tokens the generating
// context decodes (same prompts, positions and fed tokens), so it is teacher-forced along the
// trajectory being generated; every row that produced a kept token is compared with the
// shadow's row for the same position by the KLD kernel (next = the token generated there).
// Shadows take generation steps in chunks (prefill-sized batches, their reference rows held in
// a bounded buffer), so the comparison costs one prefill of each trajectory per shadow and no
// extra pass of the generating config. The chunking depends only on the group size, the
// vocabulary and the batch size, never on what was generated.
//
// With `shadows_until_divergence`, each shadow compares a sequence only up to the first
// position where its top-1 is not the generated token (or its row is non-finite): that row is
// its last. The shadow still decodes the sequence's later tokens (same batches, KV cells and
// hidden states as without the option) but computes no logits for them: the output layer and
// the comparison are what Trajectory by verification saves after a divergence.
GreedyResult greedy(Model & model, const KVRequest & kv, const std::vector<Tokens> & prompts, int n_predict,
                    int n_ctx_seq, int group, int topk, const Progress & progress,
                    const std::vector<KVRequest> & shadows = {}, bool shadows_until_divergence = false);

// Generation steps a shadow decodes in one batch: as many as the batch holds for `n_seq`
// sequences and `kShadowBufferBytes` of held reference rows allow (at least 1).
constexpr int64_t kShadowBufferBytes = 256ll << 20;
int shadow_chunk_steps(int n_seq, int64_t n_vocab, int n_batch);
// Bytes of reference rows a shadowed greedy of n_seq sequences in n_ctx_seq cells each holds.
int64_t shadow_buffer_bytes(int n_seq, int64_t n_vocab, int n_ctx_seq);

struct ProbeResult {
    Tokens tokens;                  // generated ids (stops at EOG or n_predict)
    std::vector<double> probe_logprobs;  // log p(probe[j] | prompt + probe[:j])
    std::vector<int32_t> probe_ranks;    // ids with a larger logit (0 = top-1)
    int64_t reused_prefix = 0;           // prompt tokens whose KV came from the previous call
    int64_t n_rows = 0;                  // logits rows read (probe and generation)
    int64_t n_nonfinite = 0;             // of those, rows holding a NaN or infinite logit
};

// One prompt in a single-sequence context, reusing the KV of the longest common prefix with
// the previous prompt decoded in that context. `probe` tokens are scored teacher-forced right
// after the prompt (then removed again) before greedy generation.
ProbeResult generate_one(Model & model, const KVRequest & kv, const Tokens & prompt, const Tokens & probe,
                         int n_predict, int n_ctx_seq);

// Teacher-forced: reference and each candidate decode `tokens` (one sequence each); for every
// position j in [first, last] the kernel compares the two contexts' logits predicting
// tokens[j + 1] in place. Returns one row list per candidate; each row's `nonfinite` bits say
// which side's logits held a NaN or infinite value.
std::vector<std::vector<kld::RowStats>> compare(Model & model, const KVRequest & ref,
                                                const std::vector<KVRequest> & cands, const Tokens & tokens,
                                                int first, int last, int n_ctx_seq);

}  // namespace refract::decode
