// Shared types of the refract engine: errors and RAII owners for llama.cpp handles.
#pragma once

#include <llama.h>

#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>

namespace refract {

// A user mistake (bad value, bad file, unsupported type): surfaces as Python
// refract.errors.UsageError (a ValueError; translated in python/module.cpp).
struct UsageError : std::invalid_argument {
    using std::invalid_argument::invalid_argument;
};
// Something failed inside llama.cpp: surfaces as Python refract.errors.EngineError (a
// RuntimeError).
struct EngineError : std::runtime_error {
    using std::runtime_error::runtime_error;
};
// The running call was stopped (Ctrl-C, or Model::interrupt() from another thread): surfaces
// as Python KeyboardInterrupt (after Python's own SIGINT handler had its turn).
struct Interrupted : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Process-wide lock for what llama.cpp reads from or writes to the whole process while a
// context is created or a model is loaded: environment switches (attention rotation, fork
// switches) and the captured log lines a context's allocations are parsed from. Two engines in
// two threads take turns here, so neither sees the other's switches or log lines.
inline std::mutex & process_mutex() {
    static std::mutex mu;
    return mu;
}

// `s` with every byte that is not part of a well-formed UTF-8 sequence replaced by U+FFFD:
// text from a model file or llama.cpp's log (which quotes it) must become a Python str.
inline std::string valid_utf8(const std::string & s) {
    std::string out;
    out.reserve(s.size());
    const auto * p = reinterpret_cast<const unsigned char *>(s.data());
    const size_t n = s.size();
    for (size_t i = 0; i < n;) {
        const unsigned char c = p[i];
        size_t len = 0;
        unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
        if (c < 0x80) len = 1;
        else if (c >= 0xC2 && c <= 0xDF) len = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;  // no surrogates
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        }
        bool ok = len > 0 && i + len <= n;
        for (size_t k = 1; ok && k < len; ++k) {
            const unsigned char b = p[i + k];
            ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
        }
        if (ok) {
            out.append(s, i, len);
            i += len;
        } else {
            out += "\xEF\xBF\xBD";
            ++i;
        }
    }
    return out;
}

struct ModelDeleter {
    void operator()(llama_model * m) const { llama_model_free(m); }
};
struct ContextDeleter {
    void operator()(llama_context * c) const { llama_free(c); }
};
using ModelPtr = std::unique_ptr<llama_model, ModelDeleter>;
using ContextPtr = std::unique_ptr<llama_context, ContextDeleter>;

// An owned llama_batch, freed on scope exit.
class Batch {
public:
    Batch(int32_t capacity, int32_t n_seq_max) : b_(llama_batch_init(capacity, 0, n_seq_max)), cap_(capacity) {}
    ~Batch() { llama_batch_free(b_); }
    Batch(const Batch &) = delete;
    Batch & operator=(const Batch &) = delete;

    void clear() { b_.n_tokens = 0; }
    void add(llama_token tok, llama_pos pos, llama_seq_id seq, bool logits) {
        if (b_.n_tokens >= cap_) throw EngineError("internal: batch overflow");
        const int i = b_.n_tokens++;
        b_.token[i] = tok;
        b_.pos[i] = pos;
        b_.n_seq_id[i] = 1;
        b_.seq_id[i][0] = seq;
        b_.logits[i] = logits;
    }
    int32_t size() const { return b_.n_tokens; }
    int32_t capacity() const { return cap_; }
    llama_batch & get() { return b_; }

private:
    llama_batch b_;
    int32_t cap_;
};

}  // namespace refract
