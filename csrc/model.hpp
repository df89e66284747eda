// The model (loaded once) and its llama.cpp contexts, one per KV config and shape.
#pragma once

#include "common.hpp"
#include "kv.hpp"

#include <algorithm>
#include <atomic>
#include <list>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace refract {

struct KVRequest {
    std::string type_k = "f16";
    std::string type_v = "f16";
    std::map<std::string, std::string> env;  // attn-rot switches, set around creation only
    std::string label;                       // canonical label, the cache key
    int slot = 0;                            // 0 = reference, 1 = candidate: ref-vs-ref gets two contexts
};

class Model;

// One llama_context for one KV config and shape (n_ctx cells per sequence, n_seq sequences).
class Context {
public:
    // `cb_eval` / `cb_data`: llama.cpp's graph evaluation callback (the layer-type probe only)
    Context(Model & model, const KVRequest & req, int n_ctx_seq, int n_seq,
            ggml_backend_sched_eval_callback cb_eval = nullptr, void * cb_data = nullptr);
    // The batch size a context of that shape gets (tokens per llama_decode call).
    static int batch_for(int n_ctx_seq, int n_seq) { return std::max(1, std::min(std::max(n_ctx_seq, n_seq), 2048)); }
    llama_context * get() const { return ctx_.get(); }
    llama_memory_t memory() const { return llama_get_memory(ctx_.get()); }
    const KVRequest & request() const { return req_; }
    int n_ctx_seq() const { return n_ctx_seq_; }
    int n_seq() const { return n_seq_; }
    int n_batch() const { return n_batch_; }
    const std::vector<kv::Allocation> & allocations() const { return alloc_; }
    // Bytes llama.cpp allocated for this context's KV cache (ggml buffers, all layers and
    // streams) and its cells: exact, from llama.cpp's memory breakdown, not from type tables.
    const kv::KVBytes & kv_bytes() const { return kv_bytes_; }
    ggml_type type_k() const { return type_k_; }
    ggml_type type_v() const { return type_v_; }

    // Tokens currently held in sequence 0's cache (single-sequence contexts reuse a prefix).
    std::vector<llama_token> seq0;
    void clear();  // empties the KV cache

private:
    KVRequest req_;
    ggml_type type_k_, type_v_;
    int n_ctx_seq_, n_seq_, n_batch_;
    std::vector<kv::Allocation> alloc_;
    kv::KVBytes kv_bytes_;
    ContextPtr ctx_;
};

// Bytes a context would take, computed from the model's shape and the K/V types before any is
// allocated. `kv` and `output` follow llama.cpp's own sizing (cells padded to 256, every layer
// at full size as with swa_full); `compute` is an allowance for the graph's work buffer.
struct MemoryEstimate {
    uint64_t kv = 0, output = 0, compute = 0;
    uint32_t cells = 0;  // KV cells per sequence after llama.cpp's padding
    uint64_t total() const { return kv + output + compute; }
};

// How the context cache has behaved so far (for tests and diagnostics).
struct ContextStats {
    uint64_t created = 0;  // contexts llama.cpp created
    uint64_t evicted = 0;  // contexts dropped from the cache to make room
    uint64_t cached = 0;   // contexts held now
};

struct ModelInfo {
    std::string architecture, description, chat_template, bos_text, eos_text;
    uint64_t n_params = 0, model_size = 0, file_size = 0;
    int n_vocab = 0, n_ctx_train = 0, n_layer = 0, n_head = 0, n_head_kv = 0, n_embd = 0;
    int head_dim_k = 0, head_dim_v = 0;
    bool add_bos = false, has_chat_template = false;
    int32_t bos = -1, eos = -1;
};

class Model {
public:
    // `cancel` (optional) is polled while the weights load: setting it stops the load with
    // Interrupted.
    // vocab_only: the vocabulary, hyperparameters and metadata only (no tensors, no contexts):
    // enough to tokenize and render prompts, to refuse impossible inputs before the real load.
    Model(const std::string & path, int n_gpu_layers, int n_threads, bool flash_attn, bool vocab_only,
          const std::atomic<bool> * cancel = nullptr);
    ~Model();

    llama_model * get() const { return model_.get(); }
    const llama_vocab * vocab() const { return vocab_; }
    const ModelInfo & info() const { return info_; }
    int n_threads() const { return n_threads_; }
    bool flash_attn() const { return flash_attn_; }
    std::mutex & mutex() { return mu_; }
    // The thread running a call under mutex() (default id when idle): a second call from the
    // same thread (a progress callback calling back into the engine) is refused, not deadlocked.
    std::atomic<std::thread::id> owner{};

    // Abort flag of the running call, read by every context's llama.cpp abort callback (so a
    // computation stops between graph nodes) and by check_abort() between batches and context
    // creations. Set by Ctrl-C (see SigintScope) or interrupt() from any thread; each call
    // starts with it cleared.
    std::atomic<bool> & abort_flag() { return abort_; }
    void interrupt() { abort_.store(true); }
    void check_abort() const {
        if (abort_.load(std::memory_order_relaxed)) throw Interrupted("interrupted");
    }

    std::vector<llama_token> tokenize(const std::string & text, bool add_special, bool parse_special) const;
    std::string detokenize(const std::vector<llama_token> & ids, bool special) const;
    std::string meta(const std::string & key) const;
    std::map<std::string, std::string> metadata() const;
    bool is_eog(llama_token t) const { return llama_vocab_is_eog(vocab_, t); }

    // Validates a KV request against this model (types exist, block size divides head dim).
    void validate(const KVRequest & req) const;
    // The context for (req, n_ctx_seq, n_seq), created on first use and reused. The cache keeps
    // the kMaxContexts most recently used, but never evicts one a caller still holds: a call
    // that needs N+1 contexts at once (a reference and N candidates decoding the same chunk)
    // keeps all of them cached across chunks, so each is created once.
    std::shared_ptr<Context> context(const KVRequest & req, int n_ctx_seq, int n_seq);
    // K/V types llama.cpp allocated, by KV label (from every context created so far).
    std::map<std::string, std::vector<kv::Allocation>> allocations() const;
    void release_contexts();
    ContextStats context_stats() const;
    // The K/V type of every layer's cache tensor, as llama.cpp's graph reads them: a short-lived
    // context for `req` decodes one token with an evaluation callback that records the type of
    // each `cache_*k_l<i>` / `cache_*v_l<i>` tensor the attention reads (the TurboQuant fork may
    // give single layers other types than the context's, e.g. TURBO_LAYER_ADAPTIVE).
    // The KV bytes of that context and of a second, larger one (no decode) go into the probe.
    kv::Probe kv_probe(const KVRequest & req);
    // KV bytes of the last context created for each KV label (see Context::kv_bytes).
    std::map<std::string, kv::KVBytes> kv_bytes() const { return kv_bytes_seen_; }
    // What a context for (req, n_ctx_seq, n_seq) producing up to n_outputs logit rows per
    // batch would allocate (nothing is allocated).
    MemoryEstimate estimate(const KVRequest & req, int n_ctx_seq, int n_seq, int64_t n_outputs) const;

private:
    ModelPtr model_;
    const llama_vocab * vocab_ = nullptr;
    ModelInfo info_;
    int n_threads_;
    bool flash_attn_;
    std::mutex mu_;
    std::atomic<bool> abort_{false};
    std::map<std::string, std::vector<kv::Allocation>> alloc_seen_;
    std::map<std::string, kv::KVBytes> kv_bytes_seen_;
    std::list<std::shared_ptr<Context>> contexts_;  // most recently used first
    uint64_t created_ = 0, evicted_ = 0;
};

// While alive, SIGINT also sets a flag (so that llama.cpp's abort callback stops the running
// computation within one graph node), then runs the previous handler -- Python's, which
// records the signal for its own KeyboardInterrupt. Installed by the main thread around a long
// call with the GIL released, restored afterwards. Does nothing when the flag is null, when
// SIGINT is ignored or default (SIG_IGN / SIG_DFL), or inside another active scope.
class SigintScope {
public:
    explicit SigintScope(std::atomic<bool> * flag);
    ~SigintScope();
    SigintScope(const SigintScope &) = delete;
    SigintScope & operator=(const SigintScope &) = delete;
    // Points the handler at another flag (the model's once its lock is held).
    void retarget(std::atomic<bool> * flag);
    bool active() const { return active_; }

private:
    bool active_ = false;
};

void backend_init();
std::string build_commit();
std::string build_source();
std::string build_flavour();
std::vector<std::string> backends();
std::string system_info();

}  // namespace refract
