// refract._core, area generate: (prompt, probe) cells decoded in parallel, the decode benchmark floor.
#include "bind.hpp"
#include "generate.hpp"

#include <string>
#include <utility>
#include <vector>

namespace refract::python {

using namespace nb::literals;

void init_generate(nb::module_ & m) {
    m.def("shadow_buffer_bytes", &refract::decode::shadow_buffer_bytes, "n_seq"_a, "n_vocab"_a, "n_ctx_seq"_a,
          "Bytes of reference logit rows a greedy decode with teacher-forced candidates holds at once.");
    m.def(
        "generate_cells",
        [](Model & self, const KVRequest & kv, std::vector<std::vector<std::pair<IdArray, IdArray>>> groups,
           int n_predict, int n_ctx_seq, const std::string & stop, nb::object progress) {
            std::vector<std::vector<refract::generate::CellSpec>> gs(groups.size());
            for (size_t g = 0; g < groups.size(); ++g)
                for (auto & [p, q] : groups[g]) gs[g].push_back({to_tokens(p), to_tokens(q)});
            auto prog = wrap_progress(progress);
            auto r = run_unlocked(self, [&] {
                return refract::generate::generate_cells(self, kv, gs, n_predict, n_ctx_seq, stop, prog);
            });
            nb::list out;
            for (auto & g : r.groups) {
                nb::list cells;
                for (auto & c : g) {
                    nb::dict d = cell_to_dict(c);
                    d["stopped_early"] = c.stopped_early;
                    cells.append(d);
                }
                out.append(cells);
            }
            nb::dict d;
            d["groups"] = out;
            d["prompt_tokens"] = r.prompt_tokens;
            d["reused_tokens"] = r.reused_tokens;
            d["generated_tokens"] = r.generated_tokens;
            d["n_seq"] = r.n_seq;
            d["n_rows"] = r.n_rows;
            d["n_nonfinite_rows"] = r.n_nonfinite_rows;
            return d;
        },
        "model"_a, "kv"_a, "groups"_a, "n_predict"_a, "n_ctx_seq"_a, "stop"_a = "", "progress"_a = nb::none(),
        "Groups of (prompt, probe) cells decoded as parallel sequences sharing common prefixes (see generate.hpp).");
    m.def(
        "bench_decode",
        [](Model & self, const KVRequest & kv, std::vector<IdArray> prompts, std::vector<int> n_gen, int n_ctx_seq,
           int group, int logits_from) {
            std::vector<Tokens> ps;
            for (auto & p : prompts) ps.push_back(to_tokens(p));
            auto r = run_unlocked(
                self, [&] { return refract::generate::bench_decode(self, kv, ps, n_gen, n_ctx_seq, group, logits_from); });
            nb::dict d;
            d["prefill_s"] = r.prefill_s;
            d["decode_s"] = r.decode_s;
            d["prompt_tokens"] = r.prompt_tokens;
            d["decoded_tokens"] = r.decoded_tokens;
            return d;
        },
        "model"_a, "kv"_a, "prompts"_a, "n_gen"_a, "n_ctx_seq"_a, "group"_a = 64, "logits_from"_a = -1,
        "Benchmark floor: a bare llama_decode loop (prefill, then n_gen tokens per prompt), timed.");
}

}  // namespace refract::python
