// What the per-area binding files of refract._core share (pyopencl style: one init_* function
// per area, called by the one NB_MODULE in module.cpp). Every call that does real work releases
// the GIL; Python objects are touched only while holding it.
#pragma once

#include "decode.hpp"
#include "kld.hpp"
#include "model.hpp"

// every type caster any area uses, in every file: the casters a signature sees must be the
// same in all translation units of the module
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/function.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace refract::python {

namespace nb = nanobind;

// ------------------------------------------------------------------ areas (one file each)

void init_build(nb::module_ & m);     // build.cpp
void init_probe(nb::module_ & m);     // probe.cpp
void init_log(nb::module_ & m);       // log.cpp
void init_kld(nb::module_ & m);       // kld.cpp
void init_model(nb::module_ & m);     // model.cpp
void init_generate(nb::module_ & m);  // generate.cpp
void init_corpus(nb::module_ & m);    // corpus.cpp

// ------------------------------------------------------------------ shared helpers

// A Python exception raised inside a callback while the GIL was released elsewhere.
struct CallbackFailed {};

template <typename T>
nb::ndarray<nb::numpy, T> to_numpy(std::vector<T> && v, std::initializer_list<size_t> shape) {
    auto * heap = new std::vector<T>(std::move(v));
    nb::capsule owner(heap, [](void * p) noexcept { delete static_cast<std::vector<T> *>(p); });
    return nb::ndarray<nb::numpy, T>(heap->data(), shape, owner);
}
template <typename T>
nb::ndarray<nb::numpy, T> to_numpy(std::vector<T> && v) {
    const size_t n = v.size();
    return to_numpy(std::move(v), {n});
}

using Tokens = refract::decode::Tokens;
using IdArray = nb::ndarray<const int32_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

inline Tokens to_tokens(const IdArray & a) { return Tokens(a.data(), a.data() + a.shape(0)); }

// Wraps an optional Python progress callable: called with the GIL held; Ctrl-C and exceptions
// inside it stop the C++ loop and re-raise in Python. Without a callable nothing takes the GIL
// (Ctrl-C reaches the C++ loop through the model's abort flag, see run_unlocked).
refract::decode::Progress wrap_progress(nb::object cb);

// Python's signal handlers run in the main thread only; so does our SIGINT hook.
// set_main_thread() is called once, by the module's init (GIL held).
void set_main_thread();
bool in_main_thread();

// After an Interrupted call (GIL held): let Python's own SIGINT handler run -- by default it
// raises KeyboardInterrupt; a user handler may raise something else -- and raise
// KeyboardInterrupt if it did not raise (the work is incomplete either way).
[[noreturn]] void raise_interrupted();

// Marks the model busy in this thread and starts the call with its abort flag clear.
struct OwnerScope {
    explicit OwnerScope(Model & m) : m_(m) {
        m.owner.store(std::this_thread::get_id());
        m.abort_flag().store(false);
    }
    ~OwnerScope() { m_.owner.store(std::thread::id{}); }
    Model & m_;
};

// Runs `fn` without the GIL, holding the model's lock; maps a failed callback back to Python.
// In the main thread Ctrl-C sets the model's abort flag, which llama.cpp's abort callback and
// the checks between batches see, and the call ends with KeyboardInterrupt within about one
// graph node. A call from the thread that is already inside a call on this model (a progress
// callback calling back into the engine) is refused instead of deadlocking.
template <typename F>
auto run_unlocked(Model & m, F && fn) -> decltype(fn()) {
    if (m.owner.load() == std::this_thread::get_id())
        throw refract::EngineError(
            "re-entrant call into the engine: this thread is already inside a call on the same model "
            "(a progress callback must not call back into the engine it reports on)");
    const bool main = in_main_thread();
    if (main && PyErr_CheckSignals() != 0) throw nb::python_error();
    std::atomic<bool> early{false};  // Ctrl-C while waiting for the lock
    try {
        nb::gil_scoped_release nogil;
        refract::SigintScope sigint(main ? &early : nullptr);
        std::lock_guard<std::mutex> lock(m.mutex());
        OwnerScope owner(m);
        sigint.retarget(&m.abort_flag());
        if (early.load()) m.abort_flag().store(true);
        m.check_abort();
        return fn();
    } catch (CallbackFailed &) {
        throw nb::python_error();
    } catch (refract::Interrupted &) {
        raise_interrupted();
    } catch (refract::EngineError &) {
        if (m.abort_flag().load()) raise_interrupted();  // llama_decode returned 2 (aborted)
        throw;
    }
}

// One field of a plain struct under a dict key, for records(): field("cells", &Allocation::cells).
template <typename T, typename M>
std::pair<const char *, M T::*> field(const char * key, M T::*member) {
    return {key, member};
}

// A list of dicts, one per element of `v`, each holding the given fields in that order (GIL held).
template <typename T, typename... M>
nb::list records(const std::vector<T> & v, std::pair<const char *, M T::*>... fields) {
    nb::list out;
    for (const auto & x : v) {
        nb::dict d;
        ((d[fields.first] = x.*(fields.second)), ...);
        out.append(d);
    }
    return out;
}

// Per-row comparison stats (refract::kld::rows, decode::compare, corpus::kld) as a dict of
// numpy arrays (GIL held).
nb::dict rows_to_dict(std::vector<refract::kld::RowStats> && rows);

// What a decoded (prompt, probe) cell gives, generate_one's ProbeResult and generate_cells'
// CellResult alike: its tokens, the probe's log-probabilities and ranks, and the prompt tokens
// whose KV was reused -- as the first keys of a dict the caller completes. Moves the arrays
// out of `c`; its other fields stay readable (GIL held).
template <typename Cell>
nb::dict cell_to_dict(Cell & c) {
    nb::dict d;
    d["tokens"] = to_numpy(std::move(c.tokens));
    d["probe_logprobs"] = to_numpy(std::move(c.probe_logprobs));
    d["probe_ranks"] = to_numpy(std::move(c.probe_ranks));
    d["reused_prefix"] = c.reused_prefix;
    return d;
}

}  // namespace refract::python
