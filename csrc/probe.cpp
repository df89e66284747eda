// ggml matmul probe: see probe.hpp.
#include "probe.hpp"

#include "common.hpp"
#include "model.hpp"

#include <ggml-alloc.h>
#include <ggml-backend.h>
#include <ggml-cpu.h>
#include <ggml.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>

namespace refract::probe {
namespace {

// Shapes: k a multiple of 256 (k-quant super-blocks), rows a multiple of 32 (AMX's N tiles)
// and of 8 (repacked layouts), m > 1 so that tiled (not vector) kernels run.
constexpr int64_t K = 256;
constexpr int64_t ROWS = 64;
constexpr int64_t M = 32;
// The weight types models ship in most (the demo model's are Q4_K and Q6_K).
const ggml_type PROBE_TYPES[] = {GGML_TYPE_Q4_0, GGML_TYPE_Q8_0, GGML_TYPE_Q4_K, GGML_TYPE_Q6_K,
                                 GGML_TYPE_F16};

struct CtxFree {
    void operator()(ggml_context * c) const { ggml_free(c); }
};
struct BufFree {
    void operator()(ggml_backend_buffer * b) const { ggml_backend_buffer_free(b); }
};
struct BackendFree {
    void operator()(ggml_backend * b) const { ggml_backend_free(b); }
};
struct GallocFree {
    void operator()(ggml_gallocr * g) const { ggml_gallocr_free(g); }
};
using CtxPtr = std::unique_ptr<ggml_context, CtxFree>;
using BufPtr = std::unique_ptr<ggml_backend_buffer, BufFree>;

ggml_backend_dev_t cpu_device() {
    backend_init();
    ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (!dev) throw EngineError("ggml has no CPU device");
    return dev;
}

std::vector<ggml_backend_buffer_type_t> weight_bufts(ggml_backend_dev_t dev) {
    std::vector<ggml_backend_buffer_type_t> out{ggml_backend_dev_buffer_type(dev)};
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
    auto get_extra = reinterpret_cast<ggml_backend_dev_get_extra_bufts_t>(
        ggml_backend_reg_get_proc_address(reg, "ggml_backend_dev_get_extra_bufts"));
    if (get_extra) {
        for (ggml_backend_buffer_type_t * p = get_extra(dev); p && *p; ++p) out.push_back(*p);
    }
    return out;
}

CtxPtr new_ctx(size_t n_tensors) {
    ggml_init_params params{n_tensors * ggml_tensor_overhead() + ggml_graph_overhead(), nullptr, true};
    CtxPtr ctx(ggml_init(params));
    if (!ctx) throw EngineError("ggml_init failed");
    return ctx;
}

// Deterministic values in [-1, 1) (a 64-bit LCG): the probe needs no randomness, only data.
std::vector<float> fill(size_t n, uint64_t seed) {
    std::vector<float> v(n);
    uint64_t s = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    for (auto & x : v) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        x = static_cast<float>(static_cast<double>(s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    }
    return v;
}

MatmulCase run_case(ggml_backend_dev_t dev, ggml_backend_buffer_type_t buft, ggml_type type, int n_threads) {
    MatmulCase out;
    out.weight_type = ggml_type_name(type);

    CtxPtr wctx = new_ctx(1), xctx = new_ctx(1), gctx = new_ctx(4);
    ggml_tensor * w = ggml_new_tensor_2d(wctx.get(), type, K, ROWS);
    ggml_tensor * x = ggml_new_tensor_2d(xctx.get(), GGML_TYPE_F32, K, M);
    ggml_tensor * y = ggml_mul_mat(gctx.get(), w, x);

    // As llama.cpp's loader asks: would this buffer type run MUL_MAT with these weights?
    {
        BufPtr probe_buf(ggml_backend_buft_alloc_buffer(buft, 0));
        if (!probe_buf) throw EngineError(std::string("cannot allocate a buffer of type ") + ggml_backend_buft_name(buft));
        w->buffer = probe_buf.get();
        out.supported = ggml_backend_dev_supports_op(dev, y);
        w->buffer = nullptr;
    }
    if (!out.supported) return out;

    BufPtr wbuf(ggml_backend_alloc_ctx_tensors_from_buft(wctx.get(), buft));
    BufPtr xbuf(ggml_backend_alloc_ctx_tensors_from_buft(xctx.get(), ggml_backend_dev_buffer_type(dev)));
    if (!wbuf || !xbuf) throw EngineError("cannot allocate the probe's tensors");

    // weights: quantized from deterministic data; the reference multiplies their dequantized
    // values, so only the kernel (and its activation quantization) is measured
    const std::vector<float> wf = fill(static_cast<size_t>(K * ROWS), 1);
    const std::vector<float> xf = fill(static_cast<size_t>(K * M), 2);
    std::vector<uint8_t> wq(ggml_row_size(type, K) * ROWS);
    ggml_quantize_chunk(type, wf.data(), wq.data(), 0, ROWS, K, nullptr);
    const auto * traits = ggml_get_type_traits(type);
    if (!traits->to_float) throw EngineError(std::string("ggml cannot dequantize ") + out.weight_type);
    std::vector<float> wd(static_cast<size_t>(K * ROWS));
    traits->to_float(wq.data(), wd.data(), K * ROWS);
    ggml_backend_tensor_set(w, wq.data(), 0, wq.size());
    ggml_backend_tensor_set(x, xf.data(), 0, xf.size() * sizeof(float));

    std::unique_ptr<ggml_backend, BackendFree> backend(ggml_backend_cpu_init());
    if (!backend) throw EngineError("ggml_backend_cpu_init failed");
    ggml_backend_cpu_set_n_threads(backend.get(), n_threads > 0 ? n_threads : 1);
    ggml_cgraph * gf = ggml_new_graph(gctx.get());
    ggml_build_forward_expand(gf, y);
    std::unique_ptr<ggml_gallocr, GallocFree> galloc(ggml_gallocr_new(ggml_backend_dev_buffer_type(dev)));
    if (!galloc || !ggml_gallocr_alloc_graph(galloc.get(), gf)) throw EngineError("cannot allocate the probe graph");
    if (ggml_backend_graph_compute(backend.get(), gf) != GGML_STATUS_SUCCESS)
        throw EngineError(std::string("the probe matmul failed in buffer type ") + ggml_backend_buft_name(buft));

    std::vector<float> got(static_cast<size_t>(ROWS * M));
    ggml_backend_tensor_get(y, got.data(), 0, got.size() * sizeof(float));
    double max_ref = 0.0, max_err = 0.0;
    for (int64_t m = 0; m < M; ++m) {
        for (int64_t r = 0; r < ROWS; ++r) {
            double ref = 0.0;
            for (int64_t k = 0; k < K; ++k) ref += static_cast<double>(wd[r * K + k]) * xf[m * K + k];
            const double g = got[m * ROWS + r];
            if (!std::isfinite(g)) out.finite = false;
            max_ref = std::max(max_ref, std::fabs(ref));
            max_err = std::max(max_err, std::fabs(g - ref));
        }
    }
    out.max_rel_err = max_ref > 0.0 ? max_err / max_ref : max_err;
    return out;
}

}  // namespace

std::vector<std::string> cpu_buffer_types() {
    std::vector<std::string> out;
    for (auto * b : weight_bufts(cpu_device())) out.emplace_back(ggml_backend_buft_name(b));
    return out;
}

std::vector<MatmulCase> matmul(const std::string & name, int n_threads) {
    ggml_backend_dev_t dev = cpu_device();
    for (auto * buft : weight_bufts(dev)) {
        if (name != ggml_backend_buft_name(buft)) continue;
        std::vector<MatmulCase> out;
        for (ggml_type t : PROBE_TYPES) out.push_back(run_case(dev, buft, t, n_threads));
        return out;
    }
    throw UsageError("no CPU buffer type named '" + name + "'");
}

}  // namespace refract::probe
