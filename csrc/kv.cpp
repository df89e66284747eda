#include "kv.hpp"

#include "common.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <regex>

namespace refract::kv {
namespace {

// llama.cpp's CLI accepts these KV cache types; forks add their own (turbo*). Listed by name
// only: numeric ids differ between builds.
const char * const kKnownKV[] = {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"};

bool is_real_type(int id) {
    const char * name = ggml_type_name((ggml_type) id);
    return name != nullptr && std::strcmp(name, "DEPRECATED") != 0 && std::strcmp(name, "NONE") != 0 &&
           ggml_blck_size((ggml_type) id) > 0;
}

bool kv_capable(const std::string & name) {
    for (const char * k : kKnownKV)
        if (name == k) return true;
    return name.rfind("turbo", 0) == 0;
}

std::string join(const std::vector<std::string> & v) {
    std::string out;
    for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + v[i];
    return out;
}

}  // namespace

std::vector<std::string> all_ggml_type_names() {
    std::vector<std::string> out;
    for (int id = 0; id < GGML_TYPE_COUNT; ++id)
        if (is_real_type(id)) out.emplace_back(ggml_type_name((ggml_type) id));
    return out;
}

std::vector<std::string> type_names() {
    std::vector<std::string> out;
    for (const auto & n : all_ggml_type_names())
        if (kv_capable(n)) out.push_back(n);
    return out;
}

ggml_type resolve(const std::string & name, const char * which) {
    for (int id = 0; id < GGML_TYPE_COUNT; ++id) {
        if (!is_real_type(id) || name != ggml_type_name((ggml_type) id)) continue;
        if (!kv_capable(name))
            throw UsageError(std::string(which) + " type '" + name +
                             "' is a ggml type but not a KV cache type; this build supports: " + join(type_names()));
        return (ggml_type) id;
    }
    throw UsageError(std::string("unknown ") + which + " type '" + name +
                     "': the linked llama.cpp build supports " + join(type_names()));
}

void check_head_dim(ggml_type t, int head_dim, const char * which) {
    const int64_t blk = ggml_blck_size(t);
    if (head_dim > 0 && blk > 0 && head_dim % blk != 0)
        throw UsageError(std::string(which) + " type '" + ggml_type_name(t) + "' has block size " +
                         std::to_string(blk) + ", which does not divide the model's head dim " +
                         std::to_string(head_dim));
}

ScopedEnv::ScopedEnv(const std::map<std::string, std::string> & vars) {
    for (const auto & [k, v] : vars) {
        const char * old = std::getenv(k.c_str());
        saved_.push_back({k, {old != nullptr, old ? std::string(old) : std::string()}});
        setenv(k.c_str(), v.c_str(), 1);
    }
}

ScopedEnv::~ScopedEnv() {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) {
        if (it->second.first)
            setenv(it->first.c_str(), it->second.second.c_str(), 1);
        else
            unsetenv(it->first.c_str());
    }
}

std::map<std::string, std::string> pin_fork_switches() {
    std::map<std::string, std::string> out;
    for (const char * key : {"TURBO_AUTO_ASYMMETRIC", "TURBO_LAYER_ADAPTIVE"}) {
        setenv(key, "0", /*overwrite=*/0);
        out[key] = std::getenv(key);
    }
    return out;
}

std::vector<Allocation> parse_allocations(const std::vector<std::string> & lines) {
    static const std::regex re(
        R"(size\s*=\s*[0-9.]+\s*MiB\s*\(\s*(\d+)\s*cells,\s*(\d+)\s*layers.*K\s*\(([^)]+)\).*V\s*\(([^)]+)\))");
    std::vector<Allocation> out;
    for (const auto & line : lines) {
        if (line.find("kv_cache") == std::string::npos) continue;
        std::smatch m;
        if (std::regex_search(line, m, re)) {
            Allocation a;
            a.cells = std::stol(m[1]);
            a.layers = std::stoi(m[2]);
            a.type_k = m[3];
            a.type_v = m[4];
            out.push_back(a);
        }
    }
    return out;
}

}  // namespace refract::kv
