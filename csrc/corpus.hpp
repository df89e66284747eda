// Corpus chunking exactly as llama-perplexity, and the KLD run over the chunks.
#pragma once

#include "decode.hpp"

namespace refract::corpus {

struct Plan {
    int64_t n_tokens = 0;
    int n_chunks = 0;
    int ctx = 0;
    int first = 0;  // first scored position in a window (ctx / 2)
    int last = 0;   // last scored position (ctx - 2), predicting the window's final token
    int scored_per_chunk() const { return last - first + 1; }
};

// n_chunks = min(chunks, n_tokens / ctx); throws UsageError when the corpus is too short.
Plan plan(int64_t n_tokens, int ctx, int chunks);

// Window `i` of the tokenized corpus, its first token replaced by BOS when the vocab adds BOS.
decode::Tokens window(const decode::Tokens & corpus, const Plan & p, int i, bool add_bos, llama_token bos);

struct Run {
    Plan plan;
    std::vector<std::vector<kld::RowStats>> rows;  // per candidate, n_chunks * scored_per_chunk
};

// The reference decodes each window once; every candidate decodes the same window and is
// compared against the reference's logits in place.
Run kld(Model & model, const KVRequest & ref, const std::vector<KVRequest> & cands, const decode::Tokens & corpus,
        int ctx, int chunks, const decode::Progress & progress);

}  // namespace refract::corpus
