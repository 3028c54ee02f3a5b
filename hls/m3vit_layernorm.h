// m3vit_layernorm.h — LayerNorm over dim (docs/numerics.md §7): exact integer statistics, one ISQRT and
// one RECIP per token, two multiplies per element.
#ifndef M3VIT_LAYERNORM_H
#define M3VIT_LAYERNORM_H

#include "m3vit_config.h"
#include "m3vit_dma.h"
#include "m3vit_prims.h"

namespace m3vit {

// layernorm_row(x, g, b, y, nsat): one token. x act, g/b ln_param, y norm (saturated, counted in nsat).
// Latency ≈ 2·DIM (two passes, II = 1) + 32 (ISQRT) + one division.
inline void layernorm_row(const cfg::act_t x[cfg::DIM], const cfg::lnp_t g[cfg::DIM], const cfg::lnp_t b[cfg::DIM],
                          cfg::norm_t y[cfg::DIM], uint32_t& nsat) {
    using namespace cfg;
    i64 s1 = 0, s2 = 0;
LN_STATS:
    for (int i = 0; i < DIM; i++) {
#pragma HLS PIPELINE II = 1
        M3VIT_LEDGER_PIPELINE(LN_STATS, i == 0, 1, 4);
        s1 += x[i];
        s2 += i64(x[i]) * x[i];
    }
    const i64 v = i64(DIM) * s2 - s1 * s1 + i64(LN_EPS);
    i64 r;
    int len;
    recip(isqrt(u64(v)), r, len);
    const int sh = len + 15 - FH;
LN_NORM:
    for (int i = 0; i < DIM; i++) {
#pragma HLS PIPELINE II = 1
        M3VIT_LEDGER_PIPELINE(LN_NORM, i == 0, 1, 12);
        const ln_xr_t xc = ln_xr_t(ln_xr_t(DIM) * x[i] - ln_xr_t(s1));
        const ln_xr_t xhat = rshr_rt<ln_xr_t>(ln_xr_t(xc * ln_xr_t(r)), sh);
        const ln_y_t acc = ln_y_t(ln_y_t(xhat) * g[i] + ln_y_t(b[i]) * (ln_y_t(1) << FH));
        y[i] = norm_t(req<SH_LN, NORM_BITS>(acc, nsat));
    }
}

// stage_layernorm(weights, g_off, b_off, scratch, src, dst, rows, sat): dst rows = LN(src rows).
// src is an act region, dst a norm region (word offsets into scratch); γ, β at word offsets g_off, b_off.
inline void stage_layernorm(const cfg::word_t* weights, uint64_t g_off, uint64_t b_off, cfg::word_t* scratch,
                            uint64_t src, uint64_t dst, int rows, SatCounters& sat) {
    using namespace cfg;
    M3VIT_LEDGER_PROCESS("stage_layernorm");
    static lnp_t g[DIM], b[DIM];
    static act_t x[DIM];
    static norm_t y[DIM];
    dma_read<LNP_CB>(weights + g_off, 0, DIM, g);
    dma_read<LNP_CB>(weights + b_off, 0, DIM, b);
LN_ROWS:
    for (int r = 0; r < rows; r++) {
        // the row's RECIP: one 64-bit sequential division (≈68 cycles), ISQRT is its own loop
        M3VIT_LEDGER_LOOP(LN_ROWS, r == 0, 72);
        dma_read<ACT_CB>(scratch + src + uint64_t(r) * STR_ACT, 0, DIM, x);
        layernorm_row(x, g, b, y, sat.c[SAT_NORM]);
        dma_write<NORM_CB>(scratch + dst + uint64_t(r) * STR_NORM, 0, DIM, y);
    }
}

}  // namespace m3vit

#endif  // M3VIT_LAYERNORM_H
