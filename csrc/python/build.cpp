// refract._core, area build: what the extension was built from and the ggml types it knows.
#include "bind.hpp"

#include <string>

namespace refract::python {

using namespace nb::literals;

void init_build(nb::module_ & m) {
    m.def("llama_cpp_commit", &refract::build_commit, "llama.cpp commit the extension was built from");
    m.def("llama_cpp_source", &refract::build_source, "where that llama.cpp tree came from");
    m.def("llama_cpp_flavour", &refract::build_flavour,
          "which llama.cpp flavour that tree is: upstream, turboquant (pinned trees) or custom");
    m.def("backends", &refract::backends, "ggml backends compiled in");
    m.def("system_info", &refract::system_info, "llama.cpp's system info line");
    m.def("kv_types", [] { refract::backend_init(); return refract::kv::type_names(); },
          "KV cache type names the linked build supports");
    m.def("type_row_size", [](const std::string & name, int64_t n) {
              if (n < 0) throw refract::UsageError("n must be >= 0");
              return (uint64_t) ggml_row_size(refract::kv::resolve(name, "type"), n);
          }, "name"_a, "n"_a,
          "bytes ggml stores n values of that type in (its block size and bytes per block)");
}

}  // namespace refract::python
