#include "corpus.hpp"

#include <string>

namespace refract::corpus {

Plan plan(int64_t n_tokens, int ctx, int chunks) {
    if (ctx < 4) throw UsageError("ctx must be at least 4, got " + std::to_string(ctx));
    if (chunks < 1) throw UsageError("chunks must be at least 1, got " + std::to_string(chunks));
    Plan p;
    p.n_tokens = n_tokens;
    p.ctx = ctx;
    const int64_t available = n_tokens / ctx;
    if (available < 1)
        throw UsageError("the corpus has " + std::to_string(n_tokens) + " tokens; one window of ctx " +
                         std::to_string(ctx) + " needs at least " + std::to_string(ctx));
    p.n_chunks = (int) std::min<int64_t>(chunks, available);
    p.first = ctx / 2;
    p.last = ctx - 2;
    return p;
}

decode::Tokens window(const decode::Tokens & corpus, const Plan & p, int i, bool add_bos, llama_token bos) {
    const int64_t start = (int64_t) i * p.ctx;
    decode::Tokens w(corpus.begin() + start, corpus.begin() + start + p.ctx);
    if (add_bos && bos >= 0) w[0] = bos;
    return w;
}

Run kld(Model & model, const KVRequest & ref, const std::vector<KVRequest> & cands, const decode::Tokens & corpus,
        int ctx, int chunks, const decode::Progress & progress) {
    if (ctx > model.info().n_ctx_train && model.info().n_ctx_train > 0)
        throw UsageError("ctx " + std::to_string(ctx) + " exceeds the model's training context " +
                         std::to_string(model.info().n_ctx_train));
    Run run;
    run.plan = plan((int64_t) corpus.size(), ctx, chunks);
    run.rows.resize(cands.size());
    for (auto & r : run.rows) r.reserve((size_t) run.plan.n_chunks * run.plan.scored_per_chunk());
    model.validate(ref);
    for (const auto & c : cands) model.validate(c);
    if (progress) progress(0, run.plan.n_chunks);
    for (int i = 0; i < run.plan.n_chunks; ++i) {
        const auto w = window(corpus, run.plan, i, model.info().add_bos, model.info().bos);
        auto part = decode::compare(model, ref, cands, w, run.plan.first, run.plan.last, ctx);
        for (size_t c = 0; c < cands.size(); ++c) run.rows[c].insert(run.rows[c].end(), part[c].begin(), part[c].end());
        if (progress) progress(i + 1, run.plan.n_chunks);
    }
    return run;
}

}  // namespace refract::corpus
