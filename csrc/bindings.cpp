// The one Python module, refract._core: per-area init functions (pyopencl style). Every call
// that does real work releases the GIL; Python objects are touched only while holding it.
#include "corpus.hpp"
#include "decode.hpp"
#include "generate.hpp"
#include "kld.hpp"
#include "logcap.hpp"
#include "model.hpp"
#include "probe.hpp"

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/function.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <atomic>
#include <cstring>
#include <limits>
#include <thread>

namespace nb = nanobind;
using namespace nb::literals;
using refract::KVRequest;
using refract::Model;

namespace {

// A Python exception raised inside a callback while the GIL was released elsewhere.
struct CallbackFailed {};

template <typename T>
nb::ndarray<nb::numpy, T> to_numpy(std::vector<T> && v, std::initializer_list<size_t> shape) {
    auto * heap = new std::vector<T>(std::move(v));
    nb::capsule owner(heap, [](void * p) noexcept { delete static_cast<std::vector<T> *>(p); });
    return nb::ndarray<nb::numpy, T>(heap->data(), shape, owner);
}
template <typename T>
nb::ndarray<nb::numpy, T> to_numpy(std::vector<T> && v) {
    const size_t n = v.size();
    return to_numpy(std::move(v), {n});
}

using Tokens = refract::decode::Tokens;
using IdArray = nb::ndarray<const int32_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

Tokens to_tokens(const IdArray & a) { return Tokens(a.data(), a.data() + a.shape(0)); }

// Wraps an optional Python progress callable: called with the GIL held; Ctrl-C and exceptions
// inside it stop the C++ loop and re-raise in Python. Without a callable nothing takes the GIL
// (Ctrl-C reaches the C++ loop through the model's abort flag, see run_unlocked).
refract::decode::Progress wrap_progress(nb::object cb) {
    if (cb.is_none()) return {};
    return [cb](int64_t done, int64_t total) {
        nb::gil_scoped_acquire gil;
        if (PyErr_CheckSignals() != 0) throw CallbackFailed{};
        try {
            cb(done, total);
        } catch (nb::python_error & e) {
            e.restore();
            throw CallbackFailed{};
        }
    };
}

// Python's signal handlers run in the main thread only; so does our SIGINT hook.
unsigned long g_main_thread = 0;
bool in_main_thread() { return PyThread_get_thread_ident() == g_main_thread; }

// After an Interrupted call (GIL held): let Python's own SIGINT handler run -- by default it
// raises KeyboardInterrupt; a user handler may raise something else -- and raise
// KeyboardInterrupt if it did not raise (the work is incomplete either way).
[[noreturn]] void raise_interrupted() {
    if (PyErr_CheckSignals() != 0) throw nb::python_error();
    PyErr_SetNone(PyExc_KeyboardInterrupt);
    throw nb::python_error();
}

// Marks the model busy in this thread and starts the call with its abort flag clear.
struct OwnerScope {
    explicit OwnerScope(Model & m) : m_(m) {
        m.owner.store(std::this_thread::get_id());
        m.abort_flag().store(false);
    }
    ~OwnerScope() { m_.owner.store(std::thread::id{}); }
    Model & m_;
};

// Runs `fn` without the GIL, holding the model's lock; maps a failed callback back to Python.
// In the main thread Ctrl-C sets the model's abort flag, which llama.cpp's abort callback and
// the checks between batches see, and the call ends with KeyboardInterrupt within about one
// graph node. A call from the thread that is already inside a call on this model (a progress
// callback calling back into the engine) is refused instead of deadlocking.
template <typename F>
auto run_unlocked(Model & m, F && fn) -> decltype(fn()) {
    if (m.owner.load() == std::this_thread::get_id())
        throw refract::EngineError(
            "re-entrant call into the engine: this thread is already inside a call on the same model "
            "(a progress callback must not call back into the engine it reports on)");
    const bool main = in_main_thread();
    if (main && PyErr_CheckSignals() != 0) throw nb::python_error();
    std::atomic<bool> early{false};  // Ctrl-C while waiting for the lock
    try {
        nb::gil_scoped_release nogil;
        refract::SigintScope sigint(main ? &early : nullptr);
        std::lock_guard<std::mutex> lock(m.mutex());
        OwnerScope owner(m);
        sigint.retarget(&m.abort_flag());
        if (early.load()) m.abort_flag().store(true);
        m.check_abort();
        return fn();
    } catch (CallbackFailed &) {
        throw nb::python_error();
    } catch (refract::Interrupted &) {
        raise_interrupted();
    } catch (refract::EngineError &) {
        if (m.abort_flag().load()) raise_interrupted();  // llama_decode returned 2 (aborted)
        throw;
    }
}

nb::dict rows_to_dict(std::vector<refract::kld::RowStats> && rows) {
    const size_t n = rows.size();
    std::vector<double> kl(n), dp(n), lr(n), lc(n);
    std::vector<int32_t> ar(n), ac(n), rr(n), rc(n);
    std::vector<uint8_t> same(n), bad_r(n), bad_c(n);
    int64_t n_bad_r = 0, n_bad_c = 0;
    for (size_t i = 0; i < n; ++i) {
        kl[i] = rows[i].kld;
        dp[i] = rows[i].dp;
        lr[i] = rows[i].logp_ref;
        lc[i] = rows[i].logp_cand;
        ar[i] = rows[i].argmax_ref;
        ac[i] = rows[i].argmax_cand;
        rr[i] = rows[i].rank_ref;
        rc[i] = rows[i].rank_cand;
        bad_r[i] = (rows[i].nonfinite & refract::kld::kNonFiniteRef) != 0;
        bad_c[i] = (rows[i].nonfinite & refract::kld::kNonFiniteCand) != 0;
        n_bad_r += bad_r[i];
        n_bad_c += bad_c[i];
        same[i] = rows[i].nonfinite == 0 && rows[i].argmax_ref == rows[i].argmax_cand;
    }
    nb::dict d;
    d["kld"] = to_numpy(std::move(kl));
    d["dp"] = to_numpy(std::move(dp));
    d["logp_ref"] = to_numpy(std::move(lr));
    d["logp_cand"] = to_numpy(std::move(lc));
    d["argmax_ref"] = to_numpy(std::move(ar));
    d["argmax_cand"] = to_numpy(std::move(ac));
    d["rank_ref"] = to_numpy(std::move(rr));
    d["rank_cand"] = to_numpy(std::move(rc));
    d["same_top1"] = to_numpy(std::move(same));
    d["nonfinite_ref"] = to_numpy(std::move(bad_r));   // row held NaN/inf reference logits
    d["nonfinite_cand"] = to_numpy(std::move(bad_c));  // row held NaN/inf candidate logits
    d["n_nonfinite_ref"] = n_bad_r;
    d["n_nonfinite_cand"] = n_bad_c;
    return d;
}

nb::list allocations_to_list(const std::vector<refract::kv::Allocation> & v) {
    nb::list out;
    for (const auto & a : v) {
        nb::dict d;
        d["layers"] = a.layers;
        d["type_k"] = a.type_k;
        d["type_v"] = a.type_v;
        d["cells"] = a.cells;
        out.append(d);
    }
    return out;
}

// ------------------------------------------------------------------ areas

void init_build(nb::module_ & m) {
    m.def("llama_cpp_commit", &refract::build_commit, "llama.cpp commit the extension was built from");
    m.def("llama_cpp_source", &refract::build_source, "where that llama.cpp tree came from");
    m.def("llama_cpp_flavour", &refract::build_flavour,
          "which llama.cpp flavour that tree is: upstream, turboquant (pinned trees) or custom");
    m.def("backends", &refract::backends, "ggml backends compiled in");
    m.def("system_info", &refract::system_info, "llama.cpp's system info line");
    m.def("kv_types", [] { refract::backend_init(); return refract::kv::type_names(); },
          "KV cache type names the linked build supports");
    m.def("ggml_types", [] { return refract::kv::all_ggml_type_names(); }, "every ggml type name");
    m.def("type_row_size", [](const std::string & name, int64_t n) {
              if (n < 0) throw refract::UsageError("n must be >= 0");
              return (uint64_t) ggml_row_size(refract::kv::resolve(name, "type"), n);
          }, "name"_a, "n"_a,
          "bytes ggml stores n values of that type in (its block size and bytes per block)");
    m.def("pin_fork_switches", &refract::kv::pin_fork_switches,
          "set TURBO_AUTO_ASYMMETRIC=0 / TURBO_LAYER_ADAPTIVE=0 unless set; returns values in force");
}

void init_probe(nb::module_ & m) {
    m.def("cpu_buffer_types", [] {
        nb::gil_scoped_release nogil;
        return refract::probe::cpu_buffer_types();
    }, "the CPU device's weight buffer types (default first, then repacked / AMX ones)");
    m.def(
        "matmul_probe",
        [](const std::string & buft, int n_threads) {
            std::vector<refract::probe::MatmulCase> cases;
            {
                nb::gil_scoped_release nogil;
                cases = refract::probe::matmul(buft, n_threads);
            }
            nb::list out;
            for (const auto & c : cases) {
                nb::dict d;
                d["weight_type"] = c.weight_type;
                d["supported"] = c.supported;
                d["max_rel_err"] = c.max_rel_err;
                d["finite"] = c.finite;
                out.append(d);
            }
            return out;
        },
        "buffer_type"_a, "n_threads"_a = 2,
        "one real MUL_MAT per probe weight type held in that buffer type, against a double reference "
        "(run it in a child process: a kernel the CPU cannot run kills the process)");
}

void init_log(nb::module_ & m) {
    m.def("drain_log", [] { return refract::logcap::drain(); },
          "llama.cpp log lines (ggml level, text) captured since the last call");
}

void init_kld(nb::module_ & m) {
    m.def(
        "kld_rows",
        [](nb::ndarray<nb::ro> ref, nb::ndarray<nb::ro> cand, nb::object next_tokens, int n_threads) {
            // read-only arrays are fine: the kernel only reads
            auto check = [](const nb::ndarray<nb::ro> & a, const char * name) {
                if (a.dtype() != nb::dtype<float>())
                    throw nb::value_error((std::string(name) + " must be float32").c_str());
                if (a.ndim() != 2) throw nb::value_error((std::string(name) + " must be 2-D [rows, vocab]").c_str());
                if (a.device_type() != nb::device::cpu::value)
                    throw nb::value_error((std::string(name) + " must live in CPU memory").c_str());
                if (a.shape(1) == 0)
                    throw nb::value_error((std::string(name) + ": the vocab dimension is empty (shape [rows, 0])").c_str());
                // an array without rows has no meaningful strides
                if (a.shape(0) > 0 && (a.stride(1) != 1 || (a.shape(0) > 1 && a.stride(0) != (int64_t) a.shape(1))))
                    throw nb::value_error((std::string(name) + " must be C-contiguous").c_str());
            };
            check(ref, "ref_logits");
            check(cand, "cand_logits");
            if (ref.shape(0) != cand.shape(0) || ref.shape(1) != cand.shape(1))
                throw nb::value_error("ref_logits and cand_logits must have the same shape");
            const int64_t n = (int64_t) ref.shape(0), v = (int64_t) ref.shape(1);
            std::vector<int32_t> next;
            if (!next_tokens.is_none()) {
                auto nt = nb::cast<nb::ndarray<nb::ro>>(next_tokens);
                if (nt.ndim() != 1 || (int64_t) nt.shape(0) != n)
                    throw nb::value_error("next_tokens must be 1-D with one id per row");
                if (nt.dtype() != nb::dtype<int32_t>() || (n > 1 && nt.stride(0) != 1))
                    throw nb::value_error("next_tokens must be contiguous int32");
                const int32_t * p = static_cast<const int32_t *>(nt.data());
                next.assign(p, p + n);
                for (int32_t t : next)
                    if (t < 0 || t >= v) throw nb::value_error(("next token id " + std::to_string(t) + " out of range").c_str());
            }
            const float * rb = static_cast<const float *>(ref.data());
            const float * cb = static_cast<const float *>(cand.data());
            std::vector<const float *> rr(n), cr(n);
            for (int64_t i = 0; i < n; ++i) {
                rr[i] = rb + i * v;
                cr[i] = cb + i * v;
            }
            std::vector<refract::kld::RowStats> out(n);
            {
                nb::gil_scoped_release nogil;
                refract::kld::rows(rr.data(), cr.data(), n, v, next.empty() ? nullptr : next.data(), out.data(),
                                   n_threads > 0 ? n_threads : 1);
            }
            return rows_to_dict(std::move(out));
        },
        "ref_logits"_a, "cand_logits"_a, "next_tokens"_a = nb::none(), "n_threads"_a = 0,
        "Per row: KL(ref||cand) (nats), dp, logp_ref/logp_cand of next, argmax of both, ranks, same_top1; "
        "nonfinite_ref/nonfinite_cand flag rows holding NaN or infinite logits on that side (their kld, dp "
        "and logp are NaN, that side's argmax and rank -1) and n_nonfinite_ref/n_nonfinite_cand count them.");
    m.def(
        "_test_poison",
        [](const std::string & label, float value) { refract::decode::set_test_poison(label, value); },
        "label"_a, "value"_a = std::numeric_limits<float>::quiet_NaN(),
        "TEST-ONLY fault injection (process-wide): every logits row the engine reads from a context whose KV "
        "label equals `label` gets some elements overwritten with `value` (nan, inf or -inf) right after "
        "decoding, in every path (kld, compare, greedy, generate_one). An empty label clears it.");
}

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
               int group, int topk, nb::object progress, const std::vector<KVRequest> & shadows) {
                std::vector<Tokens> ps;
                for (auto & p : prompts) ps.push_back(to_tokens(p));
                auto prog = wrap_progress(progress);
                auto r = run_unlocked(self, [&] {
                    return refract::decode::greedy(self, kv, ps, n_predict, n_ctx_seq, group, topk, prog, shadows);
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
            "progress"_a = nb::none(), "shadows"_a = std::vector<KVRequest>{},
            "Greedy continuations: (tokens, topk_ids, topk_logprobs, (n_nonfinite_rows, n_rows), shadow_rows), "
            "(n_nonfinite_rows, n_rows) counting the logits rows read and those holding NaN or infinite values; "
            "shadow_rows holds, per shadow KV config, per prompt, the teacher-forced comparison rows (as from "
            "compare) of each generated token.")
        .def(
            "generate_one",
            [](Model & self, const KVRequest & kv, IdArray prompt, IdArray probe, int n_predict, int n_ctx_seq) {
                if (PyErr_CheckSignals() != 0) throw nb::python_error();
                Tokens p = to_tokens(prompt), q = to_tokens(probe);
                auto r = run_unlocked(
                    self, [&] { return refract::decode::generate_one(self, kv, p, q, n_predict, n_ctx_seq); });
                nb::dict d;
                d["tokens"] = to_numpy(std::move(r.tokens));
                d["probe_logprobs"] = to_numpy(std::move(r.probe_logprobs));
                d["probe_ranks"] = to_numpy(std::move(r.probe_ranks));
                d["reused_prefix"] = r.reused_prefix;
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
                 nb::dict d;
                 for (const auto & [label, v] : seen) d[label.c_str()] = allocations_to_list(v);
                 return d;
             })
        .def("kv_probe",
             [](Model & self, const KVRequest & req) {
                 auto probe = run_unlocked(self, [&] { return self.kv_probe(req); });
                 nb::list layers;
                 for (const auto & l : probe.layers) {
                     nb::dict d;
                     d["layer"] = l.layer;
                     d["type_k"] = l.type_k;
                     d["type_v"] = l.type_v;
                     layers.append(d);
                 }
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

void init_generate(nb::module_ & m) {
    m.def("shadow_buffer_bytes", &refract::decode::shadow_buffer_bytes, "n_seq"_a, "n_vocab"_a, "n_ctx_seq"_a,
          "Bytes of reference logit rows a greedy decode with teacher-forced candidates holds at once.");
    m.def(
        "generate_cells",
        [](Model & self, const KVRequest & kv, std::vector<std::vector<std::pair<IdArray, IdArray>>> groups,
           int n_predict, int n_ctx_seq, const std::string & stop, nb::object progress) {
            std::vector<std::vector<refract::generate::CellSpec>> gs(groups.size());
            for (size_t g = 0; g < groups.size(); ++g)
                for (auto & [p, q] : groups[g]) gs[g].push_back({to_tokens(p), to_tokens(q)});
            auto prog = wrap_progress(progress);
            auto r = run_unlocked(self, [&] {
                return refract::generate::generate_cells(self, kv, gs, n_predict, n_ctx_seq, stop, prog);
            });
            nb::list out;
            for (auto & g : r.groups) {
                nb::list cells;
                for (auto & c : g) {
                    nb::dict d;
                    d["tokens"] = to_numpy(std::move(c.tokens));
                    d["probe_logprobs"] = to_numpy(std::move(c.probe_logprobs));
                    d["probe_ranks"] = to_numpy(std::move(c.probe_ranks));
                    d["reused_prefix"] = c.reused_prefix;
                    d["stopped_early"] = c.stopped_early;
                    cells.append(d);
                }
                out.append(cells);
            }
            nb::dict d;
            d["groups"] = out;
            d["prompt_tokens"] = r.prompt_tokens;
            d["reused_tokens"] = r.reused_tokens;
            d["generated_tokens"] = r.generated_tokens;
            d["n_seq"] = r.n_seq;
            d["n_rows"] = r.n_rows;
            d["n_nonfinite_rows"] = r.n_nonfinite_rows;
            return d;
        },
        "model"_a, "kv"_a, "groups"_a, "n_predict"_a, "n_ctx_seq"_a, "stop"_a = "", "progress"_a = nb::none(),
        "Groups of (prompt, probe) cells decoded as parallel sequences sharing common prefixes (see generate.hpp).");
    m.def(
        "bench_decode",
        [](Model & self, const KVRequest & kv, std::vector<IdArray> prompts, std::vector<int> n_gen, int n_ctx_seq,
           int group, int logits_from) {
            std::vector<Tokens> ps;
            for (auto & p : prompts) ps.push_back(to_tokens(p));
            auto r = run_unlocked(
                self, [&] { return refract::generate::bench_decode(self, kv, ps, n_gen, n_ctx_seq, group, logits_from); });
            nb::dict d;
            d["prefill_s"] = r.prefill_s;
            d["decode_s"] = r.decode_s;
            d["prompt_tokens"] = r.prompt_tokens;
            d["decoded_tokens"] = r.decoded_tokens;
            return d;
        },
        "model"_a, "kv"_a, "prompts"_a, "n_gen"_a, "n_ctx_seq"_a, "group"_a = 64, "logits_from"_a = -1,
        "Benchmark floor: a bare llama_decode loop (prefill, then n_gen tokens per prompt), timed.");
}

void init_corpus(nb::module_ & m) {
    m.def(
        "chunk_plan",
        [](int64_t n_tokens, int ctx, int chunks) {
            auto p = refract::corpus::plan(n_tokens, ctx, chunks);
            return nb::make_tuple(p.n_chunks, p.first, p.last);
        },
        "n_tokens"_a, "ctx"_a, "chunks"_a,
        "llama-perplexity's chunking: (n_chunks, first scored position, last scored position)");
}

}  // namespace

NB_MODULE(_core, m) {
    m.doc() = "refract's native engine: llama.cpp in-process, metrics on its logit buffers";
    g_main_thread = nb::cast<unsigned long>(nb::module_::import_("threading").attr("main_thread")().attr("ident"));
    nb::register_exception_translator([](const std::exception_ptr & p, void *) {
        try {
            std::rethrow_exception(p);
        } catch (const refract::UsageError & e) {
            PyErr_SetString(PyExc_ValueError, e.what());
        } catch (const refract::EngineError & e) {
            PyErr_SetString(PyExc_RuntimeError, e.what());
        } catch (const refract::Interrupted &) {
            PyErr_SetNone(PyExc_KeyboardInterrupt);
        }
    });
    init_build(m);
    init_probe(m);
    init_log(m);
    init_kld(m);
    init_model(m);
    init_generate(m);
    init_corpus(m);
}
