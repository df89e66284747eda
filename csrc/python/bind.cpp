// The shared helpers of bind.hpp that are not templates.
#include "bind.hpp"

namespace refract::python {

refract::decode::Progress wrap_progress(nb::object cb) {
    if (cb.is_none()) return {};
    return [cb](int64_t done, int64_t total) {
        nb::gil_scoped_acquire gil;
        if (PyErr_CheckSignals() != 0) throw CallbackFailed{};
        try {
            cb(done, total);
        } catch (nb::python_error & e) {
            e.restore();
            throw CallbackFailed{};
        }
    };
}

namespace {
unsigned long g_main_thread = 0;
}  // namespace

void set_main_thread() {
    g_main_thread = nb::cast<unsigned long>(nb::module_::import_("threading").attr("main_thread")().attr("ident"));
}

bool in_main_thread() { return PyThread_get_thread_ident() == g_main_thread; }

void raise_interrupted() {
    if (PyErr_CheckSignals() != 0) throw nb::python_error();
    PyErr_SetNone(PyExc_KeyboardInterrupt);
    throw nb::python_error();
}

nb::dict rows_to_dict(std::vector<refract::kld::RowStats> && rows) {
    const size_t n = rows.size();
    std::vector<double> kl(n), dp(n), lr(n), lc(n);
    std::vector<int32_t> ar(n), ac(n), rr(n), rc(n);
    std::vector<uint8_t> same(n), bad_r(n), bad_c(n);
    int64_t n_bad_r = 0, n_bad_c = 0;
    for (size_t i = 0; i < n; ++i) {
        kl[i] = rows[i].kld;
        dp[i] = rows[i].dp;
        lr[i] = rows[i].logp_ref;
        lc[i] = rows[i].logp_cand;
        ar[i] = rows[i].argmax_ref;
        ac[i] = rows[i].argmax_cand;
        rr[i] = rows[i].rank_ref;
        rc[i] = rows[i].rank_cand;
        bad_r[i] = (rows[i].nonfinite & refract::kld::kNonFiniteRef) != 0;
        bad_c[i] = (rows[i].nonfinite & refract::kld::kNonFiniteCand) != 0;
        n_bad_r += bad_r[i];
        n_bad_c += bad_c[i];
        same[i] = rows[i].nonfinite == 0 && rows[i].argmax_ref == rows[i].argmax_cand;
    }
    nb::dict d;
    d["kld"] = to_numpy(std::move(kl));
    d["dp"] = to_numpy(std::move(dp));
    d["logp_ref"] = to_numpy(std::move(lr));
    d["logp_cand"] = to_numpy(std::move(lc));
    d["argmax_ref"] = to_numpy(std::move(ar));
    d["argmax_cand"] = to_numpy(std::move(ac));
    d["rank_ref"] = to_numpy(std::move(rr));
    d["rank_cand"] = to_numpy(std::move(rc));
    d["same_top1"] = to_numpy(std::move(same));
    d["nonfinite_ref"] = to_numpy(std::move(bad_r));   // row held NaN/inf reference logits
    d["nonfinite_cand"] = to_numpy(std::move(bad_c));  // row held NaN/inf candidate logits
    d["n_nonfinite_ref"] = n_bad_r;
    d["n_nonfinite_cand"] = n_bad_c;
    return d;
}

}  // namespace refract::python
