// m3vit_layernorm.h — LayerNorm over dim (docs/numerics.md §7): exact integer statistics, one ISQRT and
// one RECIP per token, two multiplies per element; LN_LANES elements per cycle.
#ifndef M3VIT_LAYERNORM_H
#define M3VIT_LAYERNORM_H

#include "m3vit_config.h"
#include "m3vit_prims.h"

namespace m3vit {

// layernorm_row(x, g, b, y, nsat): one token. x act, g/b ln_param, y norm (saturated, counted in nsat).
// The arrays are read/written LN_LANES elements per cycle (the caller partitions them cyclically).
// Latency ≈ 2·DIM/LN_LANES (two pipelined passes) + 32 (ISQRT) + one division.
template <class T>
inline void layernorm_row(const cfg::act_t x[cfg::DIM], const cfg::lnp_t g[cfg::DIM], const cfg::lnp_t b[cfg::DIM],
                          T* y, uint32_t& nsat) {
    using namespace cfg;
    i64 s1 = 0, s2 = 0;
LN_STATS:
    for (int i = 0; i < DIM; i += LN_LANES) {
#pragma HLS PIPELINE II = 1
        M3VIT_LEDGER_PIPELINE(LN_STATS, i == 0, 1, 6);
        for (int l = 0; l < LN_LANES; l++) {
#pragma HLS UNROLL
            if (i + l < DIM) {
                s1 += x[i + l];
                s2 += i64(x[i + l]) * x[i + l];
            }
        }
    }
    const i64 v = i64(DIM) * s2 - s1 * s1 + i64(LN_EPS);
    i64 r;
    int len;
    recip(isqrt(u64(v)), r, len);
    const int sh = len + 15 - FH;
LN_NORM:
    for (int i = 0; i < DIM; i += LN_LANES) {
#pragma HLS PIPELINE II = 1
        M3VIT_LEDGER_PIPELINE(LN_NORM, i == 0, 1, 12);
        for (int l = 0; l < LN_LANES; l++) {
#pragma HLS UNROLL
            if (i + l < DIM) {
                const ln_xr_t xc = ln_xr_t(ln_xr_t(DIM) * x[i + l] - ln_xr_t(s1));
                const ln_xr_t xhat = rshr_rt<ln_xr_t>(ln_xr_t(xc * ln_xr_t(r)), sh);
                const ln_y_t acc = ln_y_t(ln_y_t(xhat) * g[i + l] + ln_y_t(b[i + l]) * (ln_y_t(1) << FH));
                y[i + l] = T(norm_t(req<SH_LN, NORM_BITS>(acc, nsat)));
            }
        }
    }
}

}  // namespace m3vit

#endif  // M3VIT_LAYERNORM_H
