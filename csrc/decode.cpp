#include "decode.hpp"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <string>

namespace refract::decode {

void check_decode(int32_t rc, const Context & ctx) {
    if (rc == 0) return;
    if (rc == 1)
        throw EngineError("llama.cpp found no KV cache slot for the batch (" + ctx.request().label +
                          "); reduce the context or the number of prompts");
    if (rc == 2) throw EngineError("decoding was aborted");
    throw EngineError("llama_decode failed with code " + std::to_string(rc) + " for " + ctx.request().label);
}

namespace {

const float * logits_at(const Context & ctx, int32_t i) { return logits_row(ctx, i); }

// The test-only poison hook's state (set_test_poison).
struct Poison {
    std::atomic<bool> active{false};
    std::mutex mu;
    std::string label;
    float value = 0.0f;
};
Poison & poison() {
    static Poison p;
    return p;
}

}  // namespace

void check_tokens(const Model & model, const Tokens & toks, const char * what) {
    const int nv = model.info().n_vocab;
    for (llama_token t : toks)
        if (t < 0 || t >= nv)
            throw UsageError(std::string(what) + " contains token id " + std::to_string(t) +
                             " outside the vocabulary (0.." + std::to_string(nv - 1) + ")");
}

void set_test_poison(const std::string & label, float value) {
    Poison & p = poison();
    std::lock_guard<std::mutex> lock(p.mu);
    p.label = label;
    p.value = value;
    p.active.store(!label.empty());
}

const float * logits_row(const Context & ctx, int32_t i) {
    float * p = llama_get_logits_ith(ctx.get(), i);
    if (!p) throw EngineError("llama.cpp returned no logits for batch row " + std::to_string(i));
    Poison & z = poison();
    if (z.active.load(std::memory_order_relaxed)) {
        std::lock_guard<std::mutex> lock(z.mu);
        if (!z.label.empty() && z.label == ctx.request().label) {
            const int64_t n = llama_vocab_n_tokens(llama_model_get_vocab(llama_get_model(ctx.get())));
            p[n / 2] = z.value;  // away from the ends, and once more at the end
            p[n - 1] = z.value;
        }
    }
    return p;
}

int shadow_chunk_steps(int n_seq, int64_t n_vocab, int n_batch) {
    n_seq = std::max(n_seq, 1);
    const int64_t by_batch = n_batch / n_seq;
    const int64_t by_buffer = kShadowBufferBytes / ((int64_t) n_seq * std::max<int64_t>(n_vocab, 1) * (int64_t) sizeof(float));
    return (int) std::max<int64_t>(1, std::min(by_batch, by_buffer));
}

int64_t shadow_buffer_bytes(int n_seq, int64_t n_vocab, int n_ctx_seq) {
    n_seq = std::max(n_seq, 1);
    const int steps = shadow_chunk_steps(n_seq, n_vocab, Context::batch_for(n_ctx_seq, n_seq));
    return (int64_t) steps * n_seq * n_vocab * (int64_t) sizeof(float);
}

GreedyResult greedy(Model & model, const KVRequest & kv, const std::vector<Tokens> & prompts, int n_predict,
                    int n_ctx_seq, int group, int topk, const Progress & progress,
                    const std::vector<KVRequest> & shadows, bool shadows_until_divergence) {
    if (n_predict < 1) throw UsageError("n_predict must be >= 1, got " + std::to_string(n_predict));
    if (group < 1) group = 1;
    const int n = (int) prompts.size();
    for (int i = 0; i < n; ++i) {
        if (prompts[i].empty()) throw UsageError("prompt " + std::to_string(i) + " is empty after tokenization");
        check_tokens(model, prompts[i], "a prompt");
        if ((int) prompts[i].size() >= n_ctx_seq)
            throw UsageError("prompt " + std::to_string(i) + " has " + std::to_string(prompts[i].size()) +
                             " tokens, which leaves no room in a context of " + std::to_string(n_ctx_seq));
    }
    GreedyResult res;
    res.tokens.resize(n);
    res.topk_ids.resize(n);
    res.topk_logprobs.resize(n);
    const int n_seq_ctx = std::min(group, std::max(n, 1));
    const int n_sh = (int) shadows.size();
    res.shadow_rows.assign(n_sh, std::vector<std::vector<kld::RowStats>>(n));  // also with no prompts
    if (n == 0) return res;
    auto ctx = model.context(kv, n_ctx_seq, n_seq_ctx);
    const int64_t n_vocab = model.info().n_vocab;
    std::vector<std::shared_ptr<Context>> sctx;
    for (const auto & sk : shadows) {
        if (sk.label == kv.label && sk.slot == kv.slot)
            throw UsageError("a shadow of " + kv.label + " must use another context slot");
        sctx.push_back(model.context(sk, n_ctx_seq, n_seq_ctx));
    }
    int64_t total_steps = 0;
    for (int i = 0; i < n; ++i) total_steps += std::min<int64_t>(n_predict, n_ctx_seq - (int64_t) prompts[i].size());
    int64_t done_tokens = 0;

    // Shadow state: generation steps queued for the shadows (same tokens, positions, sequences
    // as the generating context fed), and a copy of each kept row's logits to compare them with.
    const int chunk_steps = n_sh ? shadow_chunk_steps(n_seq_ctx, n_vocab, ctx->n_batch()) : 0;
    Batch sbatch(n_sh ? ctx->n_batch() : 1, 1);
    std::vector<float> refbuf(n_sh ? (size_t) chunk_steps * n_seq_ctx * n_vocab : 0);
    struct Pending {
        int gi;           // prompt index
        int32_t srow;     // row in sbatch
        int32_t next;     // the token the generating context chose there
    };
    std::vector<Pending> pend;
    int pend_steps = 0;
    std::vector<const float *> rp, cp;
    std::vector<int32_t> nx;
    std::vector<kld::RowStats> st;
    // Until-divergence mode: gone[c][prompt] once shadow c's top-1 missed the generated token
    // (or its row was non-finite); its later positions are neither decoded nor compared.
    std::vector<std::vector<uint8_t>> gone(shadows_until_divergence ? n_sh : 0, std::vector<uint8_t>(n, 0));
    Batch cbatch(shadows_until_divergence && n_sh ? ctx->n_batch() : 1, 1);
    std::vector<Pending> cpend;
    std::vector<const float *> crp;
    std::vector<uint8_t> want;
    // Rows `rows` of shadow c's last decode against the reference rows `refs`.
    auto compare_rows = [&](int c, const std::vector<Pending> & rows, const float * const * refs) {
        const int nr = (int) rows.size();
        cp.resize(nr);
        nx.resize(nr);
        for (int i = 0; i < nr; ++i) {
            cp[i] = logits_row(*sctx[c], rows[i].srow);
            nx[i] = rows[i].next;
        }
        st.assign(nr, kld::RowStats{});
        kld::rows(refs, cp.data(), nr, n_vocab, nx.data(), st.data(), model.n_threads());
        for (int i = 0; i < nr; ++i) {
            if (!gone.empty()) {
                uint8_t & g = gone[c][rows[i].gi];
                if (g) continue;  // a later position of a sequence that diverged in this batch
                g = st[i].nonfinite != 0 || st[i].argmax_cand != rows[i].next;
            }
            res.shadow_rows[c][rows[i].gi].push_back(st[i]);
        }
    };
    auto shadow_flush = [&]() {
        if (sbatch.size() > 0) {
            rp.resize(pend.size());
            for (size_t i = 0; i < pend.size(); ++i) rp[i] = refbuf.data() + i * (size_t) n_vocab;
            for (int c = 0; c < n_sh; ++c) {
                if (gone.empty()) {
                    check_decode(llama_decode(sctx[c]->get(), sbatch.get()), *sctx[c]);
                    compare_rows(c, pend, rp.data());
                    continue;
                }
                // The same tokens (so the same KV cells and hidden states as without the
                // option), logits only for the kept rows of sequences this shadow still agrees
                // on: the output layer and the comparison are what a divergence saves.
                cbatch.clear();
                cpend.clear();
                crp.clear();
                const llama_batch & sb = sbatch.get();
                want.assign(sb.n_tokens, 0);
                for (size_t i = 0; i < pend.size(); ++i) {
                    const Pending & q = pend[i];
                    if (gone[c][q.gi]) continue;
                    want[q.srow] = 1;
                    cpend.push_back(q);
                    crp.push_back(rp[i]);
                }
                for (int32_t r = 0; r < sb.n_tokens; ++r)
                    cbatch.add(sb.token[r], sb.pos[r], sb.seq_id[r][0], want[r] != 0);
                check_decode(llama_decode(sctx[c]->get(), cbatch.get()), *sctx[c]);
                if (!cpend.empty()) compare_rows(c, cpend, crp.data());
            }
        }
        sbatch.clear();
        pend.clear();
        pend_steps = 0;
    };

    for (int g0 = 0; g0 < n; g0 += n_seq_ctx) {
        const int m = std::min(n_seq_ctx, n - g0);
        ctx->clear();
        for (auto & c : sctx) c->clear();
        std::vector<int> limit(m), len(m);
        std::vector<llama_token> next(m);
        std::vector<bool> finished(m, false);
        int max_limit = 0;
        for (int s = 0; s < m; ++s) {
            len[s] = (int) prompts[g0 + s].size();
            limit[s] = std::min(n_predict, n_ctx_seq - len[s]);
            max_limit = std::max(max_limit, limit[s]);
        }
        // Per-row work (argmax over the vocabulary, top-k log-probabilities) runs in parallel over
        // the rows of a step; the bookkeeping after it is serial and in row order.
        std::vector<llama_token> row_best;
        std::vector<uint8_t> row_bad;  // row held a NaN or infinite logit
        std::vector<int32_t> row_ids;
        std::vector<float> row_lps;
        std::vector<const float *> ptr;
        std::vector<Pending> kept;  // rows that produced a kept token (srow = their batch row)
        std::vector<const float *> kept_ptr;
        auto take_rows = [&](const std::vector<std::pair<int, int>> & rows) {
            kept.clear();
            kept_ptr.clear();
            const int nr = (int) rows.size();
            ptr.resize(nr);
            for (int i = 0; i < nr; ++i) ptr[i] = logits_at(*ctx, rows[i].second);
            row_best.assign(nr, 0);
            row_bad.assign(nr, 0);
            if (topk > 0) {
                row_ids.assign((size_t) nr * topk, 0);
                row_lps.assign((size_t) nr * topk, 0.0f);
            }
            const int nt = model.n_threads();
#pragma omp parallel for schedule(static) num_threads(nt) if (nr > 1 && nt > 1)
            for (int i = 0; i < nr; ++i) {
                bool bad = false;
                row_best[i] = kld::argmax(ptr[i], n_vocab, &bad);
                row_bad[i] = bad;
                if (topk > 0 && !finished[rows[i].first])
                    kld::topk_logprobs(ptr[i], n_vocab, topk, row_ids.data() + (size_t) i * topk,
                                       row_lps.data() + (size_t) i * topk);
            }
            res.n_rows += nr;
            for (int i = 0; i < nr; ++i) res.n_nonfinite += row_bad[i];
            for (int i = 0; i < nr; ++i) {
                const int s = rows[i].first;
                const llama_token t = row_best[i];
                next[s] = t;
                if (finished[s]) continue;  // computed and discarded
                const int gi = g0 + s;
                if (n_sh) {
                    kept.push_back({gi, rows[i].second, t});
                    kept_ptr.push_back(ptr[i]);
                }
                res.tokens[gi].push_back(t);
                if (topk > 0) {
                    const auto * ids = row_ids.data() + (size_t) i * topk;
                    const auto * lps = row_lps.data() + (size_t) i * topk;
                    res.topk_ids[gi].insert(res.topk_ids[gi].end(), ids, ids + topk);
                    res.topk_logprobs[gi].insert(res.topk_logprobs[gi].end(), lps, lps + topk);
                }
                ++done_tokens;
                if (model.is_eog(t) || (int) res.tokens[gi].size() >= limit[s]) finished[s] = true;
            }
        };

        // Prefill: all prompts of the group, packed in order; logits only at each prompt's end.
        Batch batch(ctx->n_batch(), 1);
        std::vector<std::pair<int, int>> owners;  // (seq, batch row) of rows with logits
        int32_t sbase = 0;  // where the current step's rows start in sbatch
        // Prefill batches go to the shadows at once; generation steps are queued (see above).
        auto flush = [&](bool prefill) {
            if (batch.size() == 0) return;
            check_decode(llama_decode(ctx->get(), batch.get()), *ctx);
            take_rows(owners);
            if (n_sh && prefill) {
                for (int c = 0; c < n_sh; ++c) {
                    check_decode(llama_decode(sctx[c]->get(), batch.get()), *sctx[c]);
                    compare_rows(c, kept, kept_ptr.data());
                }
            } else if (n_sh) {
                for (size_t i = 0; i < kept.size(); ++i) {
                    const Pending & k = kept[i];
                    const float * row = kept_ptr[i];
                    const size_t slot = pend.size();
                    std::copy(row, row + n_vocab, refbuf.data() + slot * (size_t) n_vocab);
                    // the shadow's row for this position: the same entry of the queued step
                    pend.push_back({k.gi, sbase + k.srow, k.next});
                }
                ++pend_steps;
            }
            owners.clear();
            batch.clear();
        };
        for (int s = 0; s < m; ++s) {
            const Tokens & p = prompts[g0 + s];
            for (int j = 0; j < (int) p.size(); ++j) {
                if (batch.size() == batch.capacity()) flush(true);
                const bool last = j + 1 == (int) p.size();
                if (last) owners.emplace_back(s, batch.size());
                batch.add(p[j], j, s, last);
            }
        }
        flush(true);
        if (progress) progress(done_tokens, total_steps);

        // Generation: step k feeds generated token k of every sequence with k + 1 < limit.
        for (int k = 0; k + 1 < max_limit; ++k) {
            if (std::all_of(finished.begin(), finished.end(), [](bool f) { return f; })) break;
            batch.clear();
            owners.clear();
            for (int s = 0; s < m; ++s) {
                if (k + 1 >= limit[s]) continue;  // depends on the prompt length only
                owners.emplace_back(s, batch.size());
                batch.add(next[s], len[s] + k, s, true);
            }
            if (batch.size() == 0) break;
            if (n_sh) {
                if (pend_steps == chunk_steps || sbatch.size() + batch.size() > sbatch.capacity()) shadow_flush();
                sbase = sbatch.size();
                for (const auto & o : owners) sbatch.add(next[o.first], len[o.first] + k, o.first, true);
            }
            flush(false);
            if (progress) progress(done_tokens, total_steps);
        }
        if (n_sh) shadow_flush();
    }
    return res;
}

ProbeResult generate_one(Model & model, const KVRequest & kv, const Tokens & prompt, const Tokens & probe,
                         int n_predict, int n_ctx_seq) {
    if (prompt.empty()) throw UsageError("prompt is empty after tokenization");
    check_tokens(model, prompt, "the prompt");
    check_tokens(model, probe, "the probe");
    const int64_t need = (int64_t) prompt.size() + std::max<int64_t>((int64_t) probe.size(), n_predict);
    if (need > n_ctx_seq)
        throw UsageError("prompt of " + std::to_string(prompt.size()) + " tokens plus " + std::to_string(n_predict) +
                         " generated does not fit a context of " + std::to_string(n_ctx_seq));
    auto ctx = model.context(kv, n_ctx_seq, 1);
    const int64_t n_vocab = model.info().n_vocab;
    llama_memory_t mem = ctx->memory();
    ProbeResult res;
    auto note = [&res](bool bad) {
        ++res.n_rows;
        res.n_nonfinite += bad;
    };

    // Longest common prefix with what the cache holds; keep at least the last prompt token to
    // recompute (its logits are needed).
    size_t lcp = 0;
    while (lcp < ctx->seq0.size() && lcp < prompt.size() && ctx->seq0[lcp] == prompt[lcp]) ++lcp;
    lcp = std::min(lcp, prompt.size() - 1);
    if (lcp == 0 || !llama_memory_seq_rm(mem, 0, (llama_pos) lcp, -1) || llama_memory_seq_pos_min(mem, 0) > 0) {
        ctx->clear();
        lcp = 0;
    }
    ctx->seq0.assign(prompt.begin(), prompt.begin() + (long) lcp);
    res.reused_prefix = (int64_t) lcp;

    Batch batch(ctx->n_batch(), 1);
    std::vector<float> last_row;
    for (size_t j = lcp; j < prompt.size();) {
        batch.clear();
        for (; j < prompt.size() && batch.size() < batch.capacity(); ++j)
            batch.add(prompt[j], (llama_pos) j, 0, j + 1 == prompt.size());
        check_decode(llama_decode(ctx->get(), batch.get()), *ctx);
        if (j == prompt.size()) {
            const float * row = logits_at(*ctx, batch.size() - 1);
            last_row.assign(row, row + n_vocab);
        }
    }
    ctx->seq0 = prompt;
    const llama_pos P = (llama_pos) prompt.size();

    bool bad = false;
    llama_token t = kld::argmax(last_row.data(), n_vocab, &bad);  // also checks the probe's first row
    note(bad);
    if (!probe.empty()) {
        kld::RowStats st;
        kld::row(last_row.data(), last_row.data(), n_vocab, probe[0], st);
        res.probe_logprobs.push_back(st.logp_ref);
        res.probe_ranks.push_back(st.rank_ref);
        if (probe.size() > 1) {
            batch.clear();
            for (size_t j = 0; j + 1 < probe.size(); ++j) batch.add(probe[j], P + (llama_pos) j, 0, true);
            check_decode(llama_decode(ctx->get(), batch.get()), *ctx);
            for (size_t j = 1; j < probe.size(); ++j) {
                const float * row = logits_at(*ctx, (int32_t) j - 1);
                kld::row(row, row, n_vocab, probe[j], st);
                note(st.nonfinite != 0);
                res.probe_logprobs.push_back(st.logp_ref);
                res.probe_ranks.push_back(st.rank_ref);
            }
            llama_memory_seq_rm(mem, 0, P, -1);
        }
    }

    for (int k = 0;; ++k) {
        res.tokens.push_back(t);
        if (model.is_eog(t) || (int) res.tokens.size() >= n_predict) break;
        batch.clear();
        batch.add(t, P + k, 0, true);
        check_decode(llama_decode(ctx->get(), batch.get()), *ctx);
        t = kld::argmax(logits_at(*ctx, 0), n_vocab, &bad);
        note(bad);
    }
    llama_memory_seq_rm(mem, 0, P, -1);
    return res;
}

std::vector<std::vector<kld::RowStats>> compare(Model & model, const KVRequest & ref,
                                                const std::vector<KVRequest> & cands, const Tokens & tokens,
                                                int first, int last, int n_ctx_seq) {
    check_tokens(model, tokens, "the token sequence");
    if ((int64_t) tokens.size() > n_ctx_seq)
        throw UsageError("sequence of " + std::to_string(tokens.size()) + " tokens exceeds the context of " +
                         std::to_string(n_ctx_seq));
    first = std::max(first, 0);
    last = std::min(last, (int) tokens.size() - 2);
    std::vector<std::vector<kld::RowStats>> out(cands.size());
    if (last < first) return out;

    auto rctx = model.context(ref, n_ctx_seq, 1);
    std::vector<std::shared_ptr<Context>> cctx;
    for (const auto & c : cands) cctx.push_back(model.context(c, n_ctx_seq, 1));
    rctx->clear();
    for (auto & c : cctx) c->clear();
    const int64_t n_vocab = model.info().n_vocab;
    const int nb = rctx->n_batch();
    Batch batch(nb, 1);
    std::vector<const float *> rrows, crows;
    std::vector<int32_t> next;

    // Lockstep over batches so that each context's buffer holds the same positions' logits.
    for (int s = 0; s < (int) tokens.size(); s += nb) {
        const int e = std::min((int) tokens.size(), s + nb);
        batch.clear();
        std::vector<int32_t> rows_pos;
        for (int j = s; j < e; ++j) {
            const bool want = j >= first && j <= last;
            if (want) rows_pos.push_back(j);
            batch.add(tokens[j], j, 0, want);
        }
        check_decode(llama_decode(rctx->get(), batch.get()), *rctx);
        if (rows_pos.empty()) {
            for (auto & c : cctx) check_decode(llama_decode(c->get(), batch.get()), *c);
            continue;
        }
        rrows.clear();
        next.clear();
        for (int32_t j : rows_pos) {
            rrows.push_back(logits_at(*rctx, j - s));
            next.push_back(tokens[j + 1]);
        }
        for (size_t ci = 0; ci < cctx.size(); ++ci) {
            check_decode(llama_decode(cctx[ci]->get(), batch.get()), *cctx[ci]);
            crows.clear();
            for (int32_t j : rows_pos) crows.push_back(logits_at(*cctx[ci], j - s));
            auto & dst = out[ci];
            const size_t off = dst.size();
            dst.resize(off + rows_pos.size());
            kld::rows(rrows.data(), crows.data(), (int64_t) rrows.size(), n_vocab, next.data(), dst.data() + off,
                      model.n_threads());
        }
    }
    rctx->seq0.clear();
    for (auto & c : cctx) c->seq0.clear();
    return out;
}

}  // namespace refract::decode
