// Multi-sequence generation for R-NIAH-like workloads: several long prompts decode together
// as parallel sequences of one context, sharing the KV of common prefixes between sequences
// (llama_memory_seq_cp) instead of prefilling them again, with a teacher-forced probe per
// prompt and an optional early stop once a keyword has appeared in a sequence's output.
// Also a bare decode loop (no metric work) that benchmarks use as the floor.
#pragma once

#include "decode.hpp"

#include <string>
#include <vector>

namespace refract::generate {

using decode::Progress;
using decode::Tokens;

struct CellSpec {
    Tokens prompt;
    Tokens probe;  // teacher-forced right after the prompt (then removed); may be empty
};

struct CellResult {
    Tokens tokens;                       // generated ids, EOG included; cut at the early stop
    std::vector<double> probe_logprobs;  // log p(probe[j] | prompt + probe[:j])
    std::vector<int32_t> probe_ranks;    // ids with a larger logit (0 = top-1)
    int64_t reused_prefix = 0;           // prompt tokens whose KV came from a sequence already held
    bool stopped_early = false;          // the stop keyword appeared before EOG / n_predict
};

struct CellsResult {
    std::vector<std::vector<CellResult>> groups;  // same shape as the input groups
    int64_t prompt_tokens = 0;
    int64_t reused_tokens = 0;
    int64_t generated_tokens = 0;  // tokens fed in generation steps (stopped rows included)
    int n_seq = 0;                 // sequences of the context
    int64_t n_rows = 0;            // logit rows read (prompt ends, probes, generation steps)
    int64_t n_nonfinite_rows = 0;  // of those, rows holding a NaN or an infinity
};

// Groups decode one after the other in one context of n_seq = the largest group's size and
// n_ctx_seq cells per sequence; the cells of a group decode together, cell k in sequence k.
// Before a cell's prefill, the sequence already holding the longest common prefix with its
// prompt (a cell of this group or of an earlier one) is copied into sequence k and cut there,
// so only the rest is prefilled. Generation is greedy (argmax, lowest id on ties); the batch of
// every step holds every sequence whose own n_predict / context limit is not reached, finished
// or not (finished rows are computed and discarded), so a row's numerics never depend on when
// another sequence stopped. With a non-empty `stop`, a sequence is finished as soon as its
// detokenized output contains `stop` (ASCII case-insensitive); the group ends when all are
// finished. The schedule (groups, their order, cell order) is the caller's.
CellsResult generate_cells(Model & model, const KVRequest & kv, const std::vector<std::vector<CellSpec>> & groups,
                           int n_predict, int n_ctx_seq, const std::string & stop, const Progress & progress);

struct FloorTimes {
    double prefill_s = 0;  // packed prompt prefill, logits only at each prompt's last token
    double decode_s = 0;   // generation steps: one token per sequence per step, no sampling
    int64_t prompt_tokens = 0;
    int64_t decoded_tokens = 0;
};

// The bare cost of decoding `prompts` as parallel sequences, `group` at a time, then n_gen[i]
// more tokens for prompt i (a fixed token, no argmax): llama_decode and nothing else. The
// prefill asks for logits at each prompt's last token and at every position >= logits_from
// (when logits_from >= 0: teacher-forced scoring of a window's second half). The floor a
// batched greedy decode (or a corpus KLD pass) of the same shapes is measured against.
FloorTimes bench_decode(Model & model, const KVRequest & kv, const std::vector<Tokens> & prompts,
                        const std::vector<int> & n_gen, int n_ctx_seq, int group, int logits_from = -1);

}  // namespace refract::generate
