// Capture of llama.cpp/ggml log output. The callback only appends to a C++ buffer (it may run
// on any thread, with or without the GIL); Python drains the buffer into `logging`.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace refract::logcap {

void install();                                   // idempotent
size_t mark();                                    // number of complete lines seen so far
std::vector<std::string> lines_since(size_t mark);  // complete lines seen after `mark`
std::vector<std::pair<int, std::string>> drain(); // (ggml level, line) not yet drained

}  // namespace refract::logcap
