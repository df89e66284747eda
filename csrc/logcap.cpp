#include "logcap.hpp"

#include "common.hpp"

#include <ggml.h>
#include <llama.h>

#include <deque>
#include <mutex>

namespace refract::logcap {
namespace {

struct State {
    std::mutex mu;
    std::string partial;
    int partial_level = GGML_LOG_LEVEL_INFO;
    // All complete lines since install, kept bounded (context creation inspects recent lines).
    std::deque<std::string> history;
    size_t history_base = 0;  // index of history.front()
    std::vector<std::pair<int, std::string>> pending;
};

State & state() {
    static State s;
    return s;
}

constexpr size_t kMaxHistory = 20000;
constexpr size_t kMaxPending = 20000;

void on_log(ggml_log_level level, const char * text, void *) {
    if (text == nullptr) return;
    State & s = state();
    std::lock_guard<std::mutex> lock(s.mu);
    if (level != GGML_LOG_LEVEL_CONT) s.partial_level = level;
    s.partial += text;
    size_t nl;
    while ((nl = s.partial.find('\n')) != std::string::npos) {
        std::string line = valid_utf8(s.partial.substr(0, nl));  // llama.cpp quotes file contents
        s.partial.erase(0, nl + 1);
        s.history.push_back(line);
        if (s.history.size() > kMaxHistory) {
            s.history.pop_front();
            ++s.history_base;
        }
        if (s.pending.size() < kMaxPending) s.pending.emplace_back(s.partial_level, std::move(line));
    }
}

}  // namespace

void install() {
    static std::once_flag once;
    std::call_once(once, [] { llama_log_set(on_log, nullptr); });
}

size_t mark() {
    State & s = state();
    std::lock_guard<std::mutex> lock(s.mu);
    return s.history_base + s.history.size();
}

std::vector<std::string> lines_since(size_t m) {
    State & s = state();
    std::lock_guard<std::mutex> lock(s.mu);
    std::vector<std::string> out;
    size_t start = m > s.history_base ? m - s.history_base : 0;
    for (size_t i = start; i < s.history.size(); ++i) out.push_back(s.history[i]);
    return out;
}

std::vector<std::pair<int, std::string>> drain() {
    State & s = state();
    std::lock_guard<std::mutex> lock(s.mu);
    std::vector<std::pair<int, std::string>> out;
    out.swap(s.pending);
    return out;
}

}  // namespace refract::logcap
