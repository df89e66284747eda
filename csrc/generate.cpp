#include "generate.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>

namespace refract::generate {
namespace {

using decode::check_decode;

// through decode::logits_row, so that the test-only poison hook reaches this path too
const float * logits_at(const Context & ctx, int32_t i) { return decode::logits_row(ctx, i); }

using decode::check_tokens;

char lower_ascii(char c) { return (c >= 'A' && c <= 'Z') ? (char) (c - 'A' + 'a') : c; }

// True when `needle_lc` (already lower case) occurs in `text`, ASCII case-insensitively.
bool contains_ci(const std::string & text, const std::string & needle_lc) {
    if (needle_lc.empty() || text.size() < needle_lc.size()) return false;
    auto it = std::search(text.begin(), text.end(), needle_lc.begin(), needle_lc.end(),
                          [](char a, char b) { return lower_ascii(a) == b; });
    return it != text.end();
}

// Counts a logit row read (and whether it held a NaN or an infinity).
void note_row(const float * p, int64_t n, CellsResult & res) {
    bool ok = true;
    for (int64_t i = 0; i < n; ++i) ok &= std::isfinite(p[i]);
    ++res.n_rows;
    res.n_nonfinite_rows += !ok;
}

size_t common_prefix(const Tokens & a, const Tokens & b) {
    size_t n = 0;
    const size_t m = std::min(a.size(), b.size());
    while (n < m && a[n] == b[n]) ++n;
    return n;
}

}  // namespace

CellsResult generate_cells(Model & model, const KVRequest & kv, const std::vector<std::vector<CellSpec>> & groups,
                           int n_predict, int n_ctx_seq, const std::string & stop, const Progress & progress) {
    if (n_predict < 1) throw UsageError("n_predict must be >= 1, got " + std::to_string(n_predict));
    int n_seq = 0;
    int64_t total = 0;
    for (const auto & g : groups) {
        n_seq = std::max(n_seq, (int) g.size());
        for (const auto & c : g) {
            if (c.prompt.empty()) throw UsageError("a prompt is empty after tokenization");
            check_tokens(model, c.prompt, "a prompt");
            check_tokens(model, c.probe, "a probe");
            const int64_t need = (int64_t) c.prompt.size() + std::max<int64_t>((int64_t) c.probe.size(), n_predict);
            if (need > n_ctx_seq)
                throw UsageError("prompt of " + std::to_string(c.prompt.size()) + " tokens plus " +
                                 std::to_string(n_predict) + " generated does not fit a context of " +
                                 std::to_string(n_ctx_seq));
            total += (int64_t) c.prompt.size() + n_predict;
        }
    }
    if (n_seq > (int) llama_max_parallel_sequences())
        throw UsageError("at most " + std::to_string(llama_max_parallel_sequences()) + " cells decode together, got " +
                         std::to_string(n_seq));
    CellsResult res;
    res.n_seq = n_seq;
    res.groups.resize(groups.size());
    if (n_seq == 0) return res;

    std::string stop_lc(stop);
    for (char & ch : stop_lc) ch = lower_ascii(ch);
    auto ctx = model.context(kv, n_ctx_seq, n_seq);
    ctx->clear();  // results never depend on what an earlier call left in the context
    llama_memory_t mem = ctx->memory();
    const int64_t n_vocab = model.info().n_vocab;
    std::vector<Tokens> held(n_seq);  // tokens whose KV each sequence holds, in position order
    Batch batch(ctx->n_batch(), 1);
    int64_t done = 0;

    for (size_t gi = 0; gi < groups.size(); ++gi) {
        const auto & group = groups[gi];
        auto & out = res.groups[gi];
        const int m = (int) group.size();
        out.resize(m);
        std::vector<std::vector<float>> last_rows(m);

        // Prefill, cell by cell: start from the longest prefix any sequence holds.
        for (int k = 0; k < m; ++k) {
            const Tokens & prompt = group[k].prompt;
            int src = k;
            size_t lcp = common_prefix(held[k], prompt);
            for (int j = 0; j < n_seq; ++j) {
                const size_t l = common_prefix(held[j], prompt);
                if (l > lcp) lcp = l, src = j;
            }
            lcp = std::min(lcp, prompt.size() - 1);  // the last prompt token is recomputed for its logits
            bool ok = lcp > 0;
            if (ok && src != k) {
                llama_memory_seq_rm(mem, k, -1, -1);
                llama_memory_seq_cp(mem, src, k, -1, -1);  // whole sequence; cut below
            }
            if (ok) ok = llama_memory_seq_rm(mem, k, (llama_pos) lcp, -1) && llama_memory_seq_pos_min(mem, k) == 0;
            if (!ok) {
                llama_memory_seq_rm(mem, k, -1, -1);
                lcp = 0;
            }
            held[k].assign(prompt.begin(), prompt.begin() + (long) lcp);
            out[k].reused_prefix = (int64_t) lcp;
            res.reused_tokens += (int64_t) lcp;
            res.prompt_tokens += (int64_t) prompt.size();
            done += (int64_t) lcp;

            for (size_t j = lcp; j < prompt.size();) {
                model.check_abort();
                batch.clear();
                for (; j < prompt.size() && batch.size() < batch.capacity(); ++j)
                    batch.add(prompt[j], (llama_pos) j, k, j + 1 == prompt.size());
                check_decode(llama_decode(ctx->get(), batch.get()), *ctx);
                done += batch.size();
                if (j == prompt.size()) {
                    const float * row = logits_at(*ctx, batch.size() - 1);
                    note_row(row, n_vocab, res);
                    last_rows[k].assign(row, row + n_vocab);
                }
                if (progress) progress(done, total);
            }
            held[k] = prompt;

            // Teacher-forced probe right after the prompt, removed again before generation.
            const Tokens & probe = group[k].probe;
            const llama_pos P = (llama_pos) prompt.size();
            if (!probe.empty()) {
                kld::RowStats st;
                kld::row(last_rows[k].data(), last_rows[k].data(), n_vocab, probe[0], st);
                out[k].probe_logprobs.push_back(st.logp_ref);
                out[k].probe_ranks.push_back(st.rank_ref);
                for (size_t p0 = 0; p0 + 1 < probe.size();) {
                    batch.clear();
                    const size_t first = p0;
                    for (; p0 + 1 < probe.size() && batch.size() < batch.capacity(); ++p0)
                        batch.add(probe[p0], P + (llama_pos) p0, k, true);
                    check_decode(llama_decode(ctx->get(), batch.get()), *ctx);
                    for (size_t j = first + 1; j <= p0; ++j) {
                        const float * row = logits_at(*ctx, (int32_t) (j - 1 - first));
                        note_row(row, n_vocab, res);
                        kld::row(row, row, n_vocab, probe[j], st);
                        out[k].probe_logprobs.push_back(st.logp_ref);
                        out[k].probe_ranks.push_back(st.rank_ref);
                    }
                }
                llama_memory_seq_rm(mem, k, P, -1);
            }
        }

        // Generation: the same batch rows as a full-length run until every cell is finished.
        std::vector<int> limit(m), len(m);
        std::vector<llama_token> next(m);
        std::vector<bool> finished(m, false);
        int max_limit = 0;
        auto take = [&](int s, llama_token t) {
            next[s] = t;
            if (finished[s]) return;
            out[s].tokens.push_back(t);
            ++done;
            const bool eog = model.is_eog(t);
            if (!eog && !stop_lc.empty() && contains_ci(model.detokenize(out[s].tokens, false), stop_lc))
                out[s].stopped_early = (int) out[s].tokens.size() < limit[s];
            if (eog || out[s].stopped_early || (int) out[s].tokens.size() >= limit[s]) {
                finished[s] = true;
                done += limit[s] - (int64_t) out[s].tokens.size();  // steps it will not need
            }
        };
        for (int s = 0; s < m; ++s) {
            len[s] = (int) group[s].prompt.size();
            limit[s] = std::min(n_predict, n_ctx_seq - len[s]);
            max_limit = std::max(max_limit, limit[s]);
            take(s, kld::argmax(last_rows[s].data(), n_vocab));
        }
        last_rows.clear();
        if (progress) progress(done, total);
        std::vector<std::pair<int, int>> rows;
        for (int k = 0; k + 1 < max_limit; ++k) {
            if (std::all_of(finished.begin(), finished.end(), [](bool f) { return f; })) break;
            model.check_abort();
            batch.clear();
            rows.clear();
            for (int s = 0; s < m; ++s) {
                if (k + 1 >= limit[s]) continue;  // depends on the prompt length only
                rows.emplace_back(s, batch.size());
                batch.add(next[s], len[s] + k, s, true);
                held[s].push_back(next[s]);
            }
            if (batch.size() == 0) break;
            check_decode(llama_decode(ctx->get(), batch.get()), *ctx);
            res.generated_tokens += batch.size();
            for (const auto & [s, r] : rows) {
                const float * row = logits_at(*ctx, r);
                note_row(row, n_vocab, res);
                take(s, kld::argmax(row, n_vocab));
            }
            if (progress) progress(done, total);
        }
    }
    return res;
}

FloorTimes bench_decode(Model & model, const KVRequest & kv, const std::vector<Tokens> & prompts,
                        const std::vector<int> & n_gen, int n_ctx_seq, int group, int logits_from) {
    if (n_gen.size() != prompts.size()) throw UsageError("one n_gen per prompt is required");
    const int n = (int) prompts.size();
    for (int i = 0; i < n; ++i) {
        if (prompts[i].empty()) throw UsageError("prompt " + std::to_string(i) + " is empty");
        check_tokens(model, prompts[i], "a prompt");
        if ((int64_t) prompts[i].size() + std::max(n_gen[i], 0) > n_ctx_seq)
            throw UsageError("prompt " + std::to_string(i) + " plus its generation does not fit n_ctx_seq");
    }
    FloorTimes ft;
    if (n == 0) return ft;
    group = std::max(1, std::min(group, std::min(n, (int) llama_max_parallel_sequences())));
    auto ctx = model.context(kv, n_ctx_seq, group);
    using clock = std::chrono::steady_clock;
    Batch batch(ctx->n_batch(), 1);
    for (int g0 = 0; g0 < n; g0 += group) {
        const int m = std::min(group, n - g0);
        ctx->clear();
        batch.clear();  // the previous group's last generation step must not lead this prefill
        auto t0 = clock::now();
        for (int s = 0; s < m; ++s) {
            const Tokens & p = prompts[g0 + s];
            for (int j = 0; j < (int) p.size(); ++j) {
                if (batch.size() == batch.capacity()) {
                    check_decode(llama_decode(ctx->get(), batch.get()), *ctx);
                    batch.clear();
                }
                batch.add(p[j], j, s, j + 1 == (int) p.size() || (logits_from >= 0 && j >= logits_from));
            }
            ft.prompt_tokens += (int64_t) p.size();
        }
        if (batch.size() > 0) check_decode(llama_decode(ctx->get(), batch.get()), *ctx);
        batch.clear();
        auto t1 = clock::now();
        int max_gen = 0;
        for (int s = 0; s < m; ++s) max_gen = std::max(max_gen, n_gen[g0 + s]);
        // greedy feeds generated token k at step k for k + 1 < n_gen (the first comes from the prefill)
        for (int k = 0; k + 1 < max_gen; ++k) {
            batch.clear();
            for (int s = 0; s < m; ++s)
                if (k + 1 < n_gen[g0 + s]) batch.add(prompts[g0 + s].back(), (llama_pos) prompts[g0 + s].size() + k, s, true);
            if (batch.size() == 0) break;
            check_decode(llama_decode(ctx->get(), batch.get()), *ctx);
            ft.decoded_tokens += batch.size();
        }
        auto t2 = clock::now();
        ft.prefill_s += std::chrono::duration<double>(t1 - t0).count();
        ft.decode_s += std::chrono::duration<double>(t2 - t1).count();
    }
    ctx->clear();
    return ft;
}

}  // namespace refract::generate
