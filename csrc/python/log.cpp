// refract._core, area log: llama.cpp's captured log lines.
#include "bind.hpp"
#include "logcap.hpp"

namespace refract::python {

using namespace nb::literals;

void init_log(nb::module_ & m) {
    m.def("drain_log", [] { return refract::logcap::drain(); },
          "llama.cpp log lines (ggml level, text) captured since the last call");
}

}  // namespace refract::python
