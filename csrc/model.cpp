#include "model.hpp"

#ifdef REFRACT_HAVE_MEMORY_BREAKDOWN
#include "llama-ext.h"  // llama_get_memory_breakdown (llama.cpp src/, linked statically)
#endif

#include "logcap.hpp"

#include <ggml-backend.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <regex>
#include <thread>

#ifdef __GLIBC__
#include <malloc.h>
#endif

#ifndef REFRACT_LLAMA_COMMIT
#define REFRACT_LLAMA_COMMIT "unknown"
#endif
#ifndef REFRACT_LLAMA_SOURCE
#define REFRACT_LLAMA_SOURCE "unknown"
#endif
#ifndef REFRACT_LLAMA_FLAVOUR
#define REFRACT_LLAMA_FLAVOUR "unknown"
#endif

namespace refract {
namespace {

constexpr size_t kMaxContexts = 6;

int meta_int(const Model & m, const std::string & key, int fallback) {
    const std::string v = m.meta(key);
    if (v.empty()) return fallback;
    try {
        return std::stoi(v);
    } catch (...) {
        return fallback;
    }
}

// Give the freed buffers of contexts back to the OS: glibc raises its mmap threshold after the
// first large free, so later compute/KV buffers come from the heap and, freed, would stay in
// the process (100 engines created and closed grew RSS by ~40 MiB without this).
void return_freed_memory() {
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

bool abort_requested(void * data) { return static_cast<std::atomic<bool> *>(data)->load(std::memory_order_relaxed); }

bool load_continues(float, void * data) {
    return data == nullptr || !static_cast<const std::atomic<bool> *>(data)->load(std::memory_order_relaxed);
}

// ---- SIGINT: the flag of the active scope, and the handler it replaced
static_assert(std::atomic<std::atomic<bool> *>::is_always_lock_free, "signal handler needs a lock-free pointer");
static_assert(std::atomic<bool>::is_always_lock_free, "signal handler needs a lock-free flag");
std::atomic<std::atomic<bool> *> g_sigint_target{nullptr};
struct sigaction g_sigint_prev {};

void on_sigint(int sig, siginfo_t * info, void * uctx) {
    const int saved = errno;
    if (std::atomic<bool> * t = g_sigint_target.load()) t->store(true);
    errno = saved;
    if (g_sigint_prev.sa_flags & SA_SIGINFO) {
        if (g_sigint_prev.sa_sigaction != nullptr) g_sigint_prev.sa_sigaction(sig, info, uctx);
    } else if (g_sigint_prev.sa_handler != SIG_DFL && g_sigint_prev.sa_handler != SIG_IGN) {
        g_sigint_prev.sa_handler(sig);
    }
}

bool is_handler_function(const struct sigaction & sa) {
    if (sa.sa_flags & SA_SIGINFO) return sa.sa_sigaction != nullptr;
    return sa.sa_handler != SIG_DFL && sa.sa_handler != SIG_IGN;
}

}  // namespace

SigintScope::SigintScope(std::atomic<bool> * flag) {
    if (flag == nullptr || g_sigint_target.load() != nullptr) return;
    struct sigaction cur {};
    if (sigaction(SIGINT, nullptr, &cur) != 0 || !is_handler_function(cur)) return;
    g_sigint_prev = cur;
    g_sigint_target.store(flag);
    struct sigaction sa {};
    sa.sa_sigaction = on_sigint;
    sa.sa_mask = cur.sa_mask;
    sa.sa_flags = (cur.sa_flags & ~SA_RESETHAND) | SA_SIGINFO;
    if (sigaction(SIGINT, &sa, nullptr) != 0) {
        g_sigint_target.store(nullptr);
        return;
    }
    active_ = true;
}

void SigintScope::retarget(std::atomic<bool> * flag) {
    if (active_ && flag != nullptr) g_sigint_target.store(flag);
}

SigintScope::~SigintScope() {
    if (!active_) return;
    struct sigaction cur {};
    // Restore only our own replacement: a handler installed meanwhile (by a callback) stays.
    if (sigaction(SIGINT, nullptr, &cur) == 0 && (cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == on_sigint)
        sigaction(SIGINT, &g_sigint_prev, nullptr);
    g_sigint_target.store(nullptr);
}

void backend_init() {
    static std::once_flag once;
    std::call_once(once, [] {
        logcap::install();
        llama_backend_init();
    });
}

std::string build_commit() { return REFRACT_LLAMA_COMMIT; }
std::string build_source() { return REFRACT_LLAMA_SOURCE; }
std::string build_flavour() { return REFRACT_LLAMA_FLAVOUR; }

std::vector<std::string> backends() {
    backend_init();
    std::vector<std::string> out;
    for (size_t i = 0; i < ggml_backend_reg_count(); ++i) out.emplace_back(ggml_backend_reg_name(ggml_backend_reg_get(i)));
    return out;
}

std::string system_info() {
    backend_init();
    return llama_print_system_info();
}

// ---------------------------------------------------------------- Context

Context::Context(Model & model, const KVRequest & req, int n_ctx_seq, int n_seq,
                 ggml_backend_sched_eval_callback cb_eval, void * cb_data)
    : req_(req), n_ctx_seq_(n_ctx_seq), n_seq_(n_seq) {
    type_k_ = kv::resolve(req.type_k, "K");
    type_v_ = kv::resolve(req.type_v, "V");
    if (ggml_is_quantized(type_v_) && !model.flash_attn())
        throw UsageError("a quantized V cache (" + req.type_v + ") needs flash attention; it is switched off");

    llama_context_params p = llama_context_default_params();
    p.n_ctx = (uint32_t) n_ctx_seq * (uint32_t) n_seq;
    n_batch_ = batch_for(n_ctx_seq, n_seq);
    p.n_batch = (uint32_t) n_batch_;
    p.n_ubatch = (uint32_t) std::min(n_batch_, 512);
    p.n_seq_max = (uint32_t) n_seq;
    p.n_threads = model.n_threads();
    p.n_threads_batch = model.n_threads();
    p.flash_attn_type = model.flash_attn() ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
    p.type_k = type_k_;
    p.type_v = type_v_;
    p.kv_unified = false;
    p.swa_full = true;  // full-size SWA cache: prefix reuse and identical numerics across shapes
    p.no_perf = true;
    p.abort_callback = abort_requested;
    p.abort_callback_data = &model.abort_flag();
    p.cb_eval = cb_eval;
    p.cb_eval_user_data = cb_data;

    {
        // The switches and the log lines are process-wide: another engine's context creation
        // must neither see these switches nor interleave its allocation lines with ours.
        std::lock_guard<std::mutex> process(process_mutex());
        const size_t mark = logcap::mark();
        {
            kv::ScopedEnv env(req.env);
            ctx_.reset(llama_init_from_model(model.get(), p));
        }
        if (ctx_) alloc_ = kv::parse_allocations(logcap::lines_since(mark));
    }
#ifdef REFRACT_HAVE_MEMORY_BREAKDOWN
    if (ctx_) {
        for (const auto & [buft, mb] : llama_get_memory_breakdown(ctx_.get())) kv_bytes_.bytes += mb.context;
        kv_bytes_.cells = llama_n_ctx(ctx_.get());
        kv_bytes_.known = true;
    }
#endif
    if (!ctx_)
        throw EngineError("llama.cpp could not create a context for " + req.label + " (n_ctx " +
                          std::to_string(p.n_ctx) + ", " + std::to_string(n_seq) + " sequences); see the llama.cpp log");
}

void Context::clear() {
    llama_memory_clear(memory(), true);
    seq0.clear();
}

// ---------------------------------------------------------------- Model

Model::Model(const std::string & path, int n_gpu_layers, int n_threads, bool flash_attn, bool vocab_only,
             const std::atomic<bool> * cancel)
    : n_threads_(n_threads > 0 ? n_threads : (int) std::max(1u, std::thread::hardware_concurrency())),
      flash_attn_(flash_attn) {
    backend_init();
    {
        std::lock_guard<std::mutex> process(process_mutex());
        kv::pin_fork_switches();
    }
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = n_gpu_layers;
    mp.vocab_only = vocab_only;
    mp.progress_callback = load_continues;
    mp.progress_callback_user_data = const_cast<std::atomic<bool> *>(cancel);
    model_.reset(llama_model_load_from_file(path.c_str(), mp));
    if (!model_ && cancel != nullptr && cancel->load()) throw Interrupted("interrupted while loading the model");
    if (!model_) throw UsageError("llama.cpp could not load '" + path + "' as a GGUF model (corrupt, truncated or unsupported)");
    vocab_ = llama_model_get_vocab(model_.get());

    ModelInfo & i = info_;
    char buf[512];
    i.architecture = meta("general.architecture");
    if (llama_model_desc(model_.get(), buf, sizeof buf) > 0) i.description = valid_utf8(buf);
    i.n_params = llama_model_n_params(model_.get());
    i.model_size = llama_model_size(model_.get());
    {
        std::ifstream f(path, std::ios::binary | std::ios::ate);
        i.file_size = f ? (uint64_t) f.tellg() : 0;
    }
    i.n_vocab = llama_vocab_n_tokens(vocab_);
    if (vocab_only) {
        // llama.cpp loads no hyperparameters then (asking for them aborts): read the GGUF keys
        // (a per-layer array reads as 0 here; the full load fills the real values)
        const std::string a = i.architecture;
        i.n_ctx_train = meta_int(*this, a + ".context_length", 0);
        i.n_layer = meta_int(*this, a + ".block_count", 0);
        i.n_head = meta_int(*this, a + ".attention.head_count", 0);
        i.n_head_kv = meta_int(*this, a + ".attention.head_count_kv", i.n_head);
        i.n_embd = meta_int(*this, a + ".embedding_length", 0);
    } else {
        i.n_ctx_train = llama_model_n_ctx_train(model_.get());
        i.n_layer = llama_model_n_layer(model_.get());
        i.n_head = llama_model_n_head(model_.get());
        i.n_head_kv = llama_model_n_head_kv(model_.get());
        i.n_embd = llama_model_n_embd(model_.get());
    }
    const int head_default = i.n_head > 0 ? i.n_embd / i.n_head : 0;
    i.head_dim_k = meta_int(*this, i.architecture + ".attention.key_length", head_default);
    i.head_dim_v = meta_int(*this, i.architecture + ".attention.value_length", head_default);
    i.add_bos = llama_vocab_get_add_bos(vocab_);
    i.bos = llama_vocab_bos(vocab_);
    i.eos = llama_vocab_eos(vocab_);
    if (i.bos >= 0 && i.bos < i.n_vocab) i.bos_text = valid_utf8(llama_vocab_get_text(vocab_, i.bos));
    if (i.eos >= 0 && i.eos < i.n_vocab) i.eos_text = valid_utf8(llama_vocab_get_text(vocab_, i.eos));
    const char * tmpl = llama_model_chat_template(model_.get(), nullptr);
    i.has_chat_template = tmpl != nullptr;
    if (tmpl) i.chat_template = valid_utf8(tmpl);
}

Model::~Model() {
    contexts_.clear();  // contexts before the model they belong to
    model_.reset();
    return_freed_memory();
}

std::string Model::meta(const std::string & key) const {
    std::vector<char> buf(256);
    int32_t n = llama_model_meta_val_str(model_.get(), key.c_str(), buf.data(), buf.size());
    if (n < 0) return {};
    if ((size_t) n >= buf.size()) {
        buf.resize((size_t) n + 1);
        llama_model_meta_val_str(model_.get(), key.c_str(), buf.data(), buf.size());
    }
    return valid_utf8(std::string(buf.data()));
}

std::map<std::string, std::string> Model::metadata() const {
    std::map<std::string, std::string> out;
    const int n = llama_model_meta_count(model_.get());
    std::vector<char> kbuf(512), vbuf(4096);
    for (int i = 0; i < n; ++i) {
        if (llama_model_meta_key_by_index(model_.get(), i, kbuf.data(), kbuf.size()) < 0) continue;
        int32_t len = llama_model_meta_val_str_by_index(model_.get(), i, vbuf.data(), vbuf.size());
        if (len < 0) continue;
        out[valid_utf8(kbuf.data())] = valid_utf8(std::string(vbuf.data()));
    }
    return out;
}

std::vector<llama_token> Model::tokenize(const std::string & text, bool add_special, bool parse_special) const {
    if (text.size() > (size_t) INT32_MAX / 2) throw UsageError("text too long to tokenize");
    std::vector<llama_token> out(text.size() + 8);
    int32_t n = llama_tokenize(vocab_, text.data(), (int32_t) text.size(), out.data(), (int32_t) out.size(),
                               add_special, parse_special);
    if (n < 0) {
        out.resize((size_t) -n);
        n = llama_tokenize(vocab_, text.data(), (int32_t) text.size(), out.data(), (int32_t) out.size(),
                           add_special, parse_special);
    }
    if (n < 0) throw EngineError("tokenization failed");
    out.resize((size_t) n);
    return out;
}

std::string Model::detokenize(const std::vector<llama_token> & ids, bool special) const {
    for (llama_token t : ids)
        if (t < 0 || t >= info_.n_vocab)
            throw UsageError("token id " + std::to_string(t) + " is outside the vocabulary (0.." +
                             std::to_string(info_.n_vocab - 1) + ")");
    std::string out(ids.size() * 8 + 16, '\0');
    int32_t n = llama_detokenize(vocab_, ids.data(), (int32_t) ids.size(), out.data(), (int32_t) out.size(),
                                 false, special);
    if (n < 0) {
        out.resize((size_t) -n);
        n = llama_detokenize(vocab_, ids.data(), (int32_t) ids.size(), out.data(), (int32_t) out.size(), false,
                             special);
    }
    if (n < 0) throw EngineError("detokenization failed");
    out.resize((size_t) n);
    return out;
}

void Model::validate(const KVRequest & req) const {
    const ggml_type k = kv::resolve(req.type_k, "K");
    const ggml_type v = kv::resolve(req.type_v, "V");
    kv::check_head_dim(k, info_.head_dim_k, "K");
    kv::check_head_dim(v, info_.head_dim_v, "V");
    if (ggml_is_quantized(v) && !flash_attn_)
        throw UsageError("a quantized V cache (" + req.type_v + ") needs flash attention; it is switched off");
}

std::shared_ptr<Context> Model::context(const KVRequest & req, int n_ctx_seq, int n_seq) {
    check_abort();
    for (auto it = contexts_.begin(); it != contexts_.end(); ++it) {
        const Context & c = **it;
        if (c.request().label == req.label && c.request().slot == req.slot && c.n_ctx_seq() == n_ctx_seq && c.n_seq() == n_seq) {
            contexts_.splice(contexts_.begin(), contexts_, it);
            return contexts_.front();
        }
    }
    validate(req);
    // Least recently used first; a context a caller still holds (use_count > 1) is in use by
    // the running call and stays, even if that takes the cache over kMaxContexts for a while.
    for (auto it = contexts_.end(); contexts_.size() >= kMaxContexts && it != contexts_.begin();) {
        --it;
        if (it->use_count() == 1) {
            it = contexts_.erase(it);
            ++evicted_;
        }
    }
    auto c = std::make_shared<Context>(*this, req, n_ctx_seq, n_seq);
    ++created_;
    contexts_.push_front(c);
    alloc_seen_[req.label] = c->allocations();
    kv_bytes_seen_[req.label] = c->kv_bytes();
    check_abort();
    return c;
}

std::map<std::string, std::vector<kv::Allocation>> Model::allocations() const { return alloc_seen_; }

namespace {
struct LayerTypeProbe {
    std::map<int, kv::LayerTypes> layers;
};

// "cache_k_l3", "cache_swa_v_l12" (the names llama.cpp gives its KV cache tensors): side and layer
bool parse_cache_name(const char * name, char & side, int & layer) {
    static const std::regex re(R"(^cache_(?:[a-z]+_)?([kv])_l([0-9]+)$)");
    std::cmatch m;
    if (!std::regex_match(name, m, re)) return false;
    side = m[1].str()[0];
    layer = std::stoi(m[2].str());
    return true;
}

bool record_cache_types(ggml_tensor * t, bool ask, void * data) {
    auto * probe = static_cast<LayerTypeProbe *>(data);
    auto visit = [&](const ggml_tensor * x) {
        for (int depth = 0; x && depth < 4; x = x->view_src, ++depth) {
            char side = 0;
            int layer = 0;
            if (!parse_cache_name(x->name, side, layer)) continue;
            auto & entry = probe->layers[layer];
            entry.layer = layer;
            (side == 'k' ? entry.type_k : entry.type_v) = ggml_type_name(x->type);
        }
    };
    if (ask) {
        visit(t);
        for (int i = 0; i < GGML_MAX_SRC; ++i)
            if (t->src[i]) visit(t->src[i]);
    }
    return false;  // no tensor data is needed: the graph runs as one piece
}
}  // namespace

kv::Probe Model::kv_probe(const KVRequest & req) {
    check_abort();
    validate(req);
    LayerTypeProbe probe;
    kv::Probe out;
    {
        Context c(*this, req, 256, 1, record_cache_types, &probe);
        out.small = c.kv_bytes();
        Batch batch(1, 1);
        const llama_token tok = info_.bos >= 0 ? info_.bos : 0;
        batch.add(tok, 0, 0, true);
        if (llama_decode(c.get(), batch.get()) != 0)
            throw EngineError("llama.cpp could not decode the KV probe for " + req.label);
    }
    {
        Context c(*this, req, 512, 1);
        out.large = c.kv_bytes();
    }
    for (auto & [layer, lt] : probe.layers) out.layers.push_back(lt);
    return out;
}

void Model::release_contexts() {
    contexts_.clear();
    return_freed_memory();
}

ContextStats Model::context_stats() const {
    ContextStats s;
    s.created = created_;
    s.evicted = evicted_;
    s.cached = contexts_.size();
    return s;
}

MemoryEstimate Model::estimate(const KVRequest & req, int n_ctx_seq, int n_seq, int64_t n_outputs) const {
    if (n_ctx_seq < 1 || n_seq < 1) throw UsageError("a context needs n_ctx_seq >= 1 and n_seq >= 1");
    const ggml_type tk = kv::resolve(req.type_k, "K");
    const ggml_type tv = kv::resolve(req.type_v, "V");
    const ModelInfo & i = info_;
    auto pad256 = [](uint64_t x) { return (x + 255) / 256 * 256; };
    // As llama_context: n_ctx = pad(n_ctx_seq * n_seq), then per sequence pad(n_ctx / n_seq).
    const uint64_t n_ctx = pad256((uint64_t) n_ctx_seq * (uint64_t) n_seq);
    const uint64_t cells = pad256(n_ctx / (uint64_t) n_seq);
    MemoryEstimate e;
    e.cells = (uint32_t) cells;
    const int64_t kv_heads = i.n_head_kv > 0 ? i.n_head_kv : i.n_head;
    const size_t row_k = ggml_row_size(tk, kv_heads * (int64_t) i.head_dim_k);
    const size_t row_v = ggml_row_size(tv, kv_heads * (int64_t) i.head_dim_v);
    e.kv = (uint64_t) i.n_layer * cells * (uint64_t) n_seq * (uint64_t) (row_k + row_v);
    // Logits of every output row (float); llama.cpp sizes its output buffer to the rows asked.
    const int n_batch = Context::batch_for(n_ctx_seq, n_seq);
    const int64_t rows = std::max<int64_t>(std::max<int64_t>(n_outputs, n_seq), 1);
    e.output = (uint64_t) rows * (uint64_t) i.n_vocab * sizeof(float);
    // Compute buffer: a ubatch's activations. The graph is reserved for the worst case of
    // n_ubatch output rows, so the logits tensor dominates on large vocabularies; attention
    // scores are materialized only without flash attention.
    const uint64_t n_ubatch = (uint64_t) std::min(n_batch, 512);
    const uint64_t n_ff = (uint64_t) std::max(meta_int(*this, i.architecture + ".feed_forward_length", 4 * i.n_embd), 0);
    uint64_t compute = n_ubatch * (uint64_t) i.n_vocab * sizeof(float);
    compute += n_ubatch * (8ull * (uint64_t) i.n_embd + 3ull * n_ff) * sizeof(float);
    if (!flash_attn_) compute += 2ull * n_ubatch * cells * (uint64_t) std::max(i.n_head, 1) * sizeof(float);
    e.compute = compute;
    return e;
}

}  // namespace refract
