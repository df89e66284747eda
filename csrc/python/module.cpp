// The one Python module, refract._core: per-area init functions (pyopencl style), one file each
// (bind.hpp lists them). Every call that does real work releases the GIL; Python objects are
// touched only while holding it.
#include "bind.hpp"

namespace nb = nanobind;

namespace {

// refract.errors.UsageError and refract.errors.EngineError, which the C++ UsageError and
// EngineError become. Strong references taken once at module init and never dropped: the
// classes live as long as the process (a static nb::object would release them after the
// interpreter is gone).
PyObject * g_usage_error = nullptr;
PyObject * g_engine_error = nullptr;

void translate(const std::exception_ptr & p, void *) {
    try {
        std::rethrow_exception(p);
    } catch (const refract::UsageError & e) {
        PyErr_SetString(g_usage_error, e.what());
    } catch (const refract::EngineError & e) {
        PyErr_SetString(g_engine_error, e.what());
    } catch (const refract::Interrupted &) {
        PyErr_SetNone(PyExc_KeyboardInterrupt);
    }
}

}  // namespace

NB_MODULE(_core, m) {
    m.doc() = "refract's native engine: llama.cpp in-process, metrics on its logit buffers";
    refract::python::set_main_thread();
    // refract.errors imports nothing of refract: no import cycle, whoever imports us first
    nb::module_ errors = nb::module_::import_("refract.errors");
    g_usage_error = nb::object(errors.attr("UsageError")).release().ptr();
    g_engine_error = nb::object(errors.attr("EngineError")).release().ptr();
    nb::register_exception_translator(translate);
    refract::python::init_build(m);
    refract::python::init_probe(m);
    refract::python::init_log(m);
    refract::python::init_kld(m);
    refract::python::init_model(m);
    refract::python::init_generate(m);
    refract::python::init_corpus(m);
}
