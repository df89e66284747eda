// KV-cache type resolution (by name, against the linked ggml), environment switches set
// around a context's creation, and what llama.cpp actually allocated (parsed from its log).
#pragma once

#include <ggml.h>

#include <map>
#include <string>
#include <vector>

namespace refract::kv {

// Names of the KV cache types this build can use, in ggml id order.
std::vector<std::string> type_names();
// Every type name the linked ggml knows (for error messages / diagnostics).
std::vector<std::string> all_ggml_type_names();
// Resolve a type name; throws UsageError naming what is available.
ggml_type resolve(const std::string & name, const char * which);
// Throws UsageError if the type's block size does not divide the head dim.
void check_head_dim(ggml_type t, int head_dim, const char * which);

// Sets environment variables for the lifetime of the object, restoring previous values.
class ScopedEnv {
public:
    explicit ScopedEnv(const std::map<std::string, std::string> & vars);
    ~ScopedEnv();
    ScopedEnv(const ScopedEnv &) = delete;
    ScopedEnv & operator=(const ScopedEnv &) = delete;

private:
    std::vector<std::pair<std::string, std::pair<bool, std::string>>> saved_;
};

// TURBO_AUTO_ASYMMETRIC=0 and TURBO_LAYER_ADAPTIVE=0 unless the user set them; returns the
// values in force afterwards.
std::map<std::string, std::string> pin_fork_switches();

struct Allocation {
    int layers = 0;
    std::string type_k;
    std::string type_v;
    long cells = 0;
};
// What a context's KV cache took: `bytes` over `cells` (every layer holds every cell: refract's
// contexts use a full-size SWA cache). `known` is false where llama.cpp cannot say.
struct KVBytes {
    uint64_t bytes = 0;
    uint64_t cells = 0;
    bool known = false;
};
// One layer's KV cache tensor types.
struct LayerTypes {
    int layer = 0;
    std::string type_k;
    std::string type_v;
};
// What the KV probe learned of one KV config: every layer's types, and the KV bytes of two
// contexts of different sizes (per-token bytes = their difference over the cell difference;
// what is left is fixed, e.g. the TurboQuant fork's rotation matrices).
struct Probe {
    std::vector<LayerTypes> layers;
    KVBytes small, large;
};
// Parses llama.cpp's "llama_kv_cache: size = ... K (q8_0): ..., V (q8_0): ..." lines.
std::vector<Allocation> parse_allocations(const std::vector<std::string> & log_lines);

}  // namespace refract::kv
