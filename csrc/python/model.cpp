// refract._core, area model: the KV request (KV) and the loaded model (Model) with its decode calls.
#include "bind.hpp"
#include "corpus.hpp"

#include <map>
#include <string>
#include <vector>

namespace refract::python {

using namespace nb::literals;

void init_model(nb::module_ & m) {
    nb::class_<KVRequest>(m, "KV")
        .def(nb::init<>())
        .def("__init__",
             [](KVRequest * self, std::string k, std::string v, std::map<std::string, std::string> env,
                std::string label, int slot) {
                 new (self) KVRequest{std::move(k), std::move(v), std::move(env), std::move(label), slot};
             },
             "type_k"_a, "type_v"_a, "env"_a, "label"_a, "slot"_a = 0)
        .def_rw("type_k", &KVRequest::type_k)
        .def_rw("type_v", &KVRequest::type_v)
        .def_rw("env", &KVRequest::env)
        .def_rw("label", &KVRequest::label)
        .def_rw("slot", &KVRequest::slot);

    nb::class_<Model>(m, "Model")
        .def("__init__",
             [](Model * self, const std::string & path, int n_gpu_layers, int n_threads, bool flash_attn,
                bool vocab_only) {
                 const bool main = in_main_thread();
                 if (main && PyErr_CheckSignals() != 0) throw nb::python_error();
                 std::atomic<bool> cancel{false};
                 try {
                     nb::gil_scoped_release nogil;
                     refract::SigintScope sigint(main ? &cancel : nullptr);
                     new (self) Model(path, n_gpu_layers, n_threads, flash_attn, vocab_only, &cancel);
                 } catch (refract::Interrupted &) {
                     raise_interrupted();
                 }
             },
             "path"_a, "n_gpu_layers"_a = -1, "n_threads"_a = 0, "flash_attn"_a = true,
             "vocab_only"_a = false)
        .def_prop_ro("info",
                     [](const Model & self) {
                         const auto & i = self.info();
                         nb::dict d;
                         d["architecture"] = i.architecture;
                         d["description"] = i.description;
                         d["n_params"] = i.n_params;
                         d["model_size"] = i.model_size;
                         d["file_size"] = i.file_size;
                         d["n_vocab"] = i.n_vocab;
                         d["n_ctx_train"] = i.n_ctx_train;
                         d["n_layer"] = i.n_layer;
                         d["n_head"] = i.n_head;
                         d["n_head_kv"] = i.n_head_kv;
                         d["n_embd"] = i.n_embd;
                         d["head_dim_k"] = i.head_dim_k;
                         d["head_dim_v"] = i.head_dim_v;
                         d["add_bos"] = i.add_bos;
                         d["bos"] = i.bos;
                         d["eos"] = i.eos;
                         d["bos_text"] = i.bos_text;
                         d["eos_text"] = i.eos_text;
                         d["has_chat_template"] = i.has_chat_template;
                         d["chat_template"] = i.has_chat_template ? nb::object(nb::str(i.chat_template.c_str()))
                                                                  : nb::none();
                         return d;
                     })
        .def_prop_ro("n_threads", &Model::n_threads)
        .def("metadata", &Model::metadata)
        .def("is_eog", &Model::is_eog, "token"_a)
        .def(
            "tokenize",
            [](Model & self, const std::string & text, bool add_special, bool parse_special) {
                auto v = run_unlocked(self, [&] { return self.tokenize(text, add_special, parse_special); });
                return to_numpy(std::move(v));
            },
            "text"_a, "add_special"_a = true, "parse_special"_a = false)
        .def(
            "detokenize",
            [](Model & self, IdArray ids, bool special) {
                Tokens t = to_tokens(ids);
                std::string text = run_unlocked(self, [&] { return self.detokenize(t, special); });
                return nb::bytes(text.data(), text.size());  // may end inside a UTF-8 sequence
            },
            "ids"_a, "special"_a = false)
        .def(
            "validate",
            [](Model & self, const KVRequest & kv) { run_unlocked(self, [&] { self.validate(kv); }); }, "kv"_a)
        .def(
            "greedy",
            [](Model & self, const KVRequest & kv, std::vector<IdArray> prompts, int n_predict, int n_ctx_seq,
               int group, int topk, nb::object progress, const std::vector<KVRequest> & shadows,
               bool until_divergence) {
                std::vector<Tokens> ps;
                for (auto & p : prompts) ps.push_back(to_tokens(p));
                auto prog = wrap_progress(progress);
                auto r = run_unlocked(self, [&] {
                    return refract::decode::greedy(self, kv, ps, n_predict, n_ctx_seq, group, topk, prog, shadows,
                                                   until_divergence);
                });
                nb::list shadow_rows;
                for (auto & per_prompt : r.shadow_rows) {
                    nb::list l;
                    for (auto & rows : per_prompt) l.append(rows_to_dict(std::move(rows)));
                    shadow_rows.append(l);
                }
                nb::list toks, ids, lps;
                const auto nonfinite = nb::make_tuple(r.n_nonfinite, r.n_rows);
                for (size_t i = 0; i < r.tokens.size(); ++i) {
                    const size_t steps = r.tokens[i].size();
                    toks.append(to_numpy(std::move(r.tokens[i])));
                    if (topk > 0) {
                        ids.append(to_numpy(std::move(r.topk_ids[i]), {steps, (size_t) topk}));
                        lps.append(to_numpy(std::move(r.topk_logprobs[i]), {steps, (size_t) topk}));
                    }
                }
                return nb::make_tuple(toks, ids, lps, nonfinite, shadow_rows);
            },
            "kv"_a, "prompts"_a, "n_predict"_a, "n_ctx_seq"_a, "group"_a = 64, "topk"_a = 0,
            "progress"_a = nb::none(), "shadows"_a = std::vector<KVRequest>{}, "until_divergence"_a = false,
            "Greedy continuations: (tokens, topk_ids, topk_logprobs, (n_nonfinite_rows, n_rows), shadow_rows), "
            "(n_nonfinite_rows, n_rows) counting the logits rows read and those holding NaN or infinite values; "
            "shadow_rows holds, per shadow KV config, per prompt, the teacher-forced comparison rows (as from "
            "compare) of each generated token (with until_divergence, up to and including the first whose "
            "top-1 is not that token).")
        .def(
            "generate_one",
            [](Model & self, const KVRequest & kv, IdArray prompt, IdArray probe, int n_predict, int n_ctx_seq) {
                if (PyErr_CheckSignals() != 0) throw nb::python_error();
                Tokens p = to_tokens(prompt), q = to_tokens(probe);
                auto r = run_unlocked(
                    self, [&] { return refract::decode::generate_one(self, kv, p, q, n_predict, n_ctx_seq); });
                nb::dict d = cell_to_dict(r);
                d["n_nonfinite_rows"] = r.n_nonfinite;
                d["n_rows"] = r.n_rows;
                return d;
            },
            "kv"_a, "prompt"_a, "probe"_a, "n_predict"_a, "n_ctx_seq"_a)
        .def(
            "compare",
            [](Model & self, const KVRequest & ref, const std::vector<KVRequest> & cands, IdArray tokens, int first,
               int last, int n_ctx_seq) {
                Tokens t = to_tokens(tokens);
                auto r = run_unlocked(self, [&] {
                    return refract::decode::compare(self, ref, cands, t, first, last, n_ctx_seq);
                });
                nb::list out;
                for (auto & rows : r) out.append(rows_to_dict(std::move(rows)));
                return out;
            },
            "ref"_a, "cands"_a, "tokens"_a, "first"_a, "last"_a, "n_ctx_seq"_a)
        .def(
            "kld_corpus",
            [](Model & self, const KVRequest & ref, const std::vector<KVRequest> & cands, IdArray tokens, int ctx,
               int chunks, nb::object progress) {
                Tokens t = to_tokens(tokens);
                auto prog = wrap_progress(progress);
                auto r = run_unlocked(self, [&] { return refract::corpus::kld(self, ref, cands, t, ctx, chunks, prog); });
                nb::dict d;
                d["n_tokens"] = r.plan.n_tokens;
                d["n_chunks"] = r.plan.n_chunks;
                d["ctx"] = r.plan.ctx;
                d["first"] = r.plan.first;
                d["last"] = r.plan.last;
                d["scored_per_chunk"] = r.plan.scored_per_chunk();
                nb::list cl;
                for (auto & rows : r.rows) cl.append(rows_to_dict(std::move(rows)));
                d["candidates"] = cl;
                return d;
            },
            "ref"_a, "cands"_a, "tokens"_a, "ctx"_a, "chunks"_a, "progress"_a = nb::none())
        .def("allocations",
             [](Model & self) {
                 auto seen = run_unlocked(self, [&] { return self.allocations(); });
                 using A = refract::kv::Allocation;
                 nb::dict d;
                 for (const auto & [label, v] : seen)
                     d[label.c_str()] = records(v, field("layers", &A::layers), field("type_k", &A::type_k),
                                                field("type_v", &A::type_v), field("cells", &A::cells));
                 return d;
             })
        .def("kv_probe",
             [](Model & self, const KVRequest & req) {
                 auto probe = run_unlocked(self, [&] { return self.kv_probe(req); });
                 using L = refract::kv::LayerTypes;
                 nb::list layers = records(probe.layers, field("layer", &L::layer), field("type_k", &L::type_k),
                                           field("type_v", &L::type_v));
                 nb::list points;
                 for (const auto * b : {&probe.small, &probe.large})
                     if (b->known) points.append(nb::make_tuple(b->cells, b->bytes));
                 nb::dict d;
                 d["layers"] = layers;
                 d["points"] = points;
                 return d;
             },
             "req"_a,
             "K/V type of each layer's cache tensor as llama.cpp's graph reads it (one probe token "
             "in a short-lived context, recorded by llama.cpp's evaluation callback), and the KV "
             "bytes (cells, bytes) llama.cpp allocated for contexts of two sizes")
        .def("kv_bytes",
             [](Model & self) {
                 auto seen = run_unlocked(self, [&] { return self.kv_bytes(); });
                 nb::dict d;
                 for (const auto & [label, b] : seen) {
                     nb::dict e;
                     e["bytes"] = b.known ? nb::cast(b.bytes) : nb::none();
                     e["cells"] = b.cells;
                     d[label.c_str()] = e;
                 }
                 return d;
             },
             "KV bytes llama.cpp allocated for the last context of each KV label, and its cells")
        .def("release_contexts", [](Model & self) { run_unlocked(self, [&] { self.release_contexts(); }); })
        .def("interrupt", &Model::interrupt,
             "Stop the call running on this model (from another thread): it raises KeyboardInterrupt. "
             "No effect when no call is running.")
        .def("context_stats",
             [](Model & self) {
                 auto st = run_unlocked(self, [&] { return self.context_stats(); });
                 nb::dict d;
                 d["created"] = st.created;
                 d["evicted"] = st.evicted;
                 d["cached"] = st.cached;
                 return d;
             },
             "contexts created and evicted so far, and cached now")
        .def(
            "estimate",
            [](Model & self, const KVRequest & kv, int n_ctx_seq, int n_seq, int64_t n_outputs) {
                auto e = self.estimate(kv, n_ctx_seq, n_seq, n_outputs);  // pure arithmetic on immutable info
                nb::dict d;
                d["kv"] = e.kv;
                d["output"] = e.output;
                d["compute"] = e.compute;
                d["total"] = e.total();
                d["cells"] = e.cells;
                return d;
            },
            "kv"_a, "n_ctx_seq"_a, "n_seq"_a = 1, "n_outputs"_a = 0,
            "bytes a context would allocate: KV cache, logits output buffer, compute allowance");
}

}  // namespace refract::python
