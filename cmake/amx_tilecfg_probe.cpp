// Configure-time probe of cmake/RefractAmx.cmake (compiled to assembly, never run): the same
// pattern as ggml's ggml_tile_config_init() — a zeroed 64-byte tile configuration on the stack,
// palette 1, then rows[] and colsb[] stored, then _tile_loadconfig (ldtilecfg reads all 64
// bytes). GCC 12's _tile_loadconfig tells the optimizer that it reads only the first 8 bytes,
// so at -O2/-O3 the stores to colsb[] (bytes 16-47) and rows[] (bytes 48-63) are deleted as
// dead and every tile stays unconfigured: the first tileloadd then raises #UD (SIGILL).
// The values come from external arrays, not constants, so a correct compile must read them:
// their symbols appear in the assembly exactly when the stores survive.
#include <immintrin.h>
#include <stdint.h>

struct refract_tilecfg {
    uint8_t palette_id;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

extern "C" {
extern uint8_t refract_amx_probe_rows[16];
extern uint16_t refract_amx_probe_colsb[16];

void refract_amx_probe_config(void) {
    alignas(64) refract_tilecfg tc = {};
    tc.palette_id = 1;
    for (int i = 0; i < 8; ++i) {
        tc.rows[i] = refract_amx_probe_rows[i];
        tc.colsb[i] = refract_amx_probe_colsb[i];
    }
    _tile_loadconfig(&tc);
}
}
