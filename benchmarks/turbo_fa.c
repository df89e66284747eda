/*
 * The TurboQuant fork's CPU flash attention with a turbo4 KV cache, next to q8_0 and f16: the
 * kernel alone (ggml_flash_attn_ext on the CPU backend, no model), and one row's dequantization.
 * A companion of bench_turbo.py (see benchmarks/RESULTS.md): it times the one place where the
 * KV type changes the work, the attention over the cache's cells.
 *
 * Build against the static ggml of a turboquant-flavour build tree (the extension's build
 * directory, e.g. -Cbuild-dir=build/turbo-dev-build), nothing else:
 *
 *   B=build/turbo-dev-build/llama.cpp/ggml/src I=vendor/llama.cpp-turboquant/ggml/include
 *   cc -O2 -I$I benchmarks/turbo_fa.c -o /tmp/turbo_fa $B/libggml-cpu.a $B/libggml-base.a \
 *       -fopenmp -lm -lpthread -lstdc++
 *   /tmp/turbo_fa [threads]          # default 1
 *
 * Shapes are the demo model's (Gemma 3 270M: head dim 256, 4 query heads on 1 KV head): a
 * causal 512-token prefill (one KLD window) and one query at 512, 2048 and 8192 cells (a
 * generated token at that depth). Best of 5 after a warm-up. Not a test.
 */
#include "ggml.h"
#include "ggml-cpu.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }

static void fill(struct ggml_tensor * t, unsigned seed) {
    const int64_t n = t->ne[0], rows = ggml_nrows(t);
    float * buf = malloc(n * sizeof(float));
    srand(seed);
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t i = 0; i < n; i++) buf[i] = (float) rand() / RAND_MAX * 2.0f - 1.0f;
        char * dst = (char *) t->data + r * t->nb[1];
        if (t->type == GGML_TYPE_F32) memcpy(dst, buf, n * sizeof(float));
        else ggml_get_type_traits_cpu(t->type)->from_float(buf, dst, n);
    }
    free(buf);
}

static double run(enum ggml_type tk, enum ggml_type tv, int n_q, int n_kv, int reps, int nth) {
    const int d = 256, n_head = 4;
    struct ggml_init_params ip = { 512u << 20, NULL, false };
    struct ggml_context * ctx = ggml_init(ip);
    struct ggml_tensor * q = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, d, n_q, n_head, 1);
    struct ggml_tensor * k = ggml_new_tensor_4d(ctx, tk, d, n_kv, 1, 1);
    struct ggml_tensor * v = ggml_new_tensor_4d(ctx, tv, d, n_kv, 1, 1);
    struct ggml_tensor * m = ggml_new_tensor_4d(ctx, GGML_TYPE_F16, n_kv, n_q, 1, 1);
    fill(q, 1); fill(k, 2); fill(v, 3);
    for (int i = 0; i < n_q; i++)  // causal: query i (at position n_kv - n_q + i) sees cells <= it
        for (int j = 0; j < n_kv; j++)
            ((ggml_fp16_t *) m->data)[i * n_kv + j] = ggml_fp32_to_fp16(j <= n_kv - n_q + i ? 0.0f : -INFINITY);
    struct ggml_tensor * fa = ggml_flash_attn_ext(ctx, q, k, v, m, 1.0f / 16, 0.0f, 0.0f);
    ggml_flash_attn_ext_set_prec(fa, GGML_PREC_F32);
    struct ggml_cgraph * gf = ggml_new_graph(ctx);
    ggml_build_forward_expand(gf, fa);
    ggml_graph_compute_with_ctx(ctx, gf, nth);  // warm-up
    double best = 1e9;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        ggml_graph_compute_with_ctx(ctx, gf, nth);
        double t = now() - t0;
        if (t < best) best = t;
    }
    ggml_free(ctx);
    return best;
}

static double dequant(enum ggml_type t, int rows) {
    const int d = 256;
    size_t rs = ggml_row_size(t, d);
    char * src = malloc(rs * rows); float * dst = malloc(d * sizeof(float)); float * f = malloc(d * sizeof(float));
    for (int i = 0; i < d; i++) f[i] = (float) i / d - 0.5f;
    for (int r = 0; r < rows; r++) ggml_get_type_traits_cpu(t)->from_float(f, src + r * rs, d);
    ggml_to_float_t to = ggml_get_type_traits(t)->to_float;
    double best = 1e9; volatile float sink = 0;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now();
        for (int r = 0; r < rows; r++) { to(src + r * rs, dst, d); sink += dst[r % d]; }
        double tt = now() - t0; if (tt < best) best = tt;
    }
    free(src); free(dst); free(f);
    return best / rows * 1e9;
}

int main(int argc, char ** argv) {
    int nth = argc > 1 ? atoi(argv[1]) : 1;
    ggml_cpu_init();
    struct { const char * name; enum ggml_type k, v; } cfg[] = {
        {"f16/f16", GGML_TYPE_F16, GGML_TYPE_F16},
        {"q8_0/q8_0", GGML_TYPE_Q8_0, GGML_TYPE_Q8_0},
        {"q8_0/turbo4", GGML_TYPE_Q8_0, GGML_TYPE_TURBO4_0},
        {"turbo4/turbo4", GGML_TYPE_TURBO4_0, GGML_TYPE_TURBO4_0},
    };
    const int n_cfg = (int) (sizeof(cfg) / sizeof(cfg[0]));
    printf("to_float of one 256-value row (what the kernel calls per V cell), ns: f16 %.1f, "
           "q8_0 %.1f, turbo4 %.1f\n",
           dequant(GGML_TYPE_F16, 100000), dequant(GGML_TYPE_Q8_0, 100000), dequant(GGML_TYPE_TURBO4_0, 100000));
    int shapes[][2] = {{512, 512}, {1, 512}, {1, 2048}, {1, 8192}};
    printf("flash attention (K/V), best of 5, %d thread(s), head dim 256, 4 query heads, 1 KV head\n", nth);
    printf("%-14s %16s %16s %16s %16s\n", "config", "512q x 512kv ms", "1q x 512kv us", "1q x 2048kv us", "1q x 8192kv us");
    for (int c = 0; c < n_cfg; c++) {
        printf("%-14s", cfg[c].name);
        for (int s = 0; s < 4; s++) {
            double t = run(cfg[c].k, cfg[c].v, shapes[s][0], shapes[s][1], 5, nth);
            printf(" %16.3f", s == 0 ? t * 1e3 : t * 1e6);
        }
        printf("\n");
    }
    return 0;
}
