// refract._core, area kld: the per-row KL kernel on logit arrays, and test-only fault injection.
#include "bind.hpp"

#include <limits>
#include <string>
#include <vector>

namespace refract::python {

using namespace nb::literals;

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

}  // namespace refract::python
