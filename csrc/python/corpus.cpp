// refract._core, area corpus: llama-perplexity's chunking of a corpus.
#include "bind.hpp"
#include "corpus.hpp"

namespace refract::python {

using namespace nb::literals;

void init_corpus(nb::module_ & m) {
    m.def(
        "chunk_plan",
        [](int64_t n_tokens, int ctx, int chunks) {
            auto p = refract::corpus::plan(n_tokens, ctx, chunks);
            return nb::make_tuple(p.n_chunks, p.first, p.last);
        },
        "n_tokens"_a, "ctx"_a, "chunks"_a,
        "llama-perplexity's chunking: (n_chunks, first scored position, last scored position)");
}

}  // namespace refract::python
