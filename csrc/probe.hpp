// One real matrix multiply through the linked ggml, per CPU weight buffer type (plain CPU,
// CPU_REPACK, AMX, ...), checked against a double-precision reference. `refract selftest` and
// the start-up probe of AMX builds run it in a child process, so an illegal instruction in a
// kernel becomes a diagnosis instead of killing the user's process.
#pragma once

#include <string>
#include <vector>

namespace refract::probe {

struct MatmulCase {
    std::string weight_type;  // ggml type name of the weights
    bool supported = false;   // the buffer type takes this weight type for MUL_MAT
    double max_rel_err = 0.0; // max |ggml - reference| / max |reference|
    bool finite = true;
};

// The CPU device's buffer types that can hold weights: its default one first, then the extra
// ones (repacked layouts, AMX) this build and CPU offer.
std::vector<std::string> cpu_buffer_types();

// Multiply [rows x k] weights of each probe type held in buffer type `buft` by an f32
// activation matrix of `m` rows (m > 1 takes the tiled kernels), on `n_threads` threads.
std::vector<MatmulCase> matmul(const std::string & buft, int n_threads);

}  // namespace refract::probe
