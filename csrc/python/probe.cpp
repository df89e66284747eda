// refract._core, area probe: the CPU device's weight buffer types and a matmul probe per type.
#include "bind.hpp"
#include "probe.hpp"

#include <string>
#include <vector>

namespace refract::python {

using namespace nb::literals;

void init_probe(nb::module_ & m) {
    m.def("cpu_buffer_types", [] {
        nb::gil_scoped_release nogil;
        return refract::probe::cpu_buffer_types();
    }, "the CPU device's weight buffer types (default first, then repacked / AMX ones)");
    m.def(
        "matmul_probe",
        [](const std::string & buft, int n_threads) {
            std::vector<refract::probe::MatmulCase> cases;
            {
                nb::gil_scoped_release nogil;
                cases = refract::probe::matmul(buft, n_threads);
            }
            using C = refract::probe::MatmulCase;
            return records(cases, field("weight_type", &C::weight_type), field("supported", &C::supported),
                           field("max_rel_err", &C::max_rel_err), field("finite", &C::finite));
        },
        "buffer_type"_a, "n_threads"_a = 2,
        "one real MUL_MAT per probe weight type held in that buffer type, against a double reference "
        "(run it in a child process: a kernel the CPU cannot run kills the process)");
}

}  // namespace refract::python
