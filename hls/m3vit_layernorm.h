// m3vit_layernorm.h — LayerNorm over dim (docs/numerics.md §7) for a tile of token rows on their way from
// DDR into the MAC array: exact integer statistics while the rows arrive, one pipelined ISQRT + RECIP per
// row, then the normalisation (two multiplies per element) into the activation tile and the norm tap.
#ifndef M3VIT_LAYERNORM_H
#define M3VIT_LAYERNORM_H

#include "m3vit_config.h"
#include "m3vit_prims.h"

namespace m3vit {

// layernorm_tile(src, stride, nt, g, b, a, tap, nsat): rows src + t·stride (act lanes), t < nt, into
// a[t][0 … DIM) (norm values) and the norm rows tap + t·STR_NORM (norm lanes).
// Latency ≈ nt·(DIM / act lanes) + nt + 100 (ISQRT and RECIP pipelined over rows) + nt·(DIM / norm lanes).
inline void layernorm_tile(const cfg::word_t* src, int stride, int nt, const cfg::lnp_t g[cfg::DIM],
                           const cfg::lnp_t b[cfg::DIM], cfg::mac_a_t a[][cfg::A_COLS], cfg::word_t* tap,
                           uint32_t& nsat) {
    using namespace cfg;
    const int LA = AXI_BITS / ACT_CB, LN = AXI_BITS / NORM_CB;
    const int wa = (DIM + LA - 1) / LA, wn = (DIM + LN - 1) / LN;  // compile-time constants
    static act_t xt[TOKEN_TILE][DIM];
#pragma HLS ARRAY_RESHAPE variable = xt cyclic factor = LN_LANES dim = 2
    ln_s1_t s1[TOKEN_TILE];
    ln_s2_t s2[TOKEN_TILE];
    recip_t rr[TOKEN_TILE];
    int sh[TOKEN_TILE];
    const cfg::word_t* row_in = src;  // row t of src: the pointer advances by stride per row
LN_ROWS:
    for (int t = 0; t < nt; t++) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = TOKEN_TILE
        M3VIT_LEDGER_LOOP(LN_ROWS, t == 0, 2);
        ln_s1_t a1 = 0;
        ln_s2_t a2 = 0;
    LN_READ:  // one AXI word of act lanes per cycle; S1 and S2 accumulate as the row arrives
        for (int i = 0; i < wa; i++) {
#pragma HLS PIPELINE II = 1
            M3VIT_LEDGER_PIPELINE(LN_READ, i == 0, 1, 6);
            const word_t w = row_in[i];
            for (int l = 0; l < LA; l++) {
#pragma HLS UNROLL
                const int c = i * LA + l;
                if (c < DIM) {
                    const act_t x = act_t(lane_get<ACT_CB>(w, l));
                    xt[t][c] = x;
                    a1 += x;
                    a2 += ln_s2_t(ln_s2_t(x) * ln_s2_t(x));
                }
            }
        }
        s1[t] = a1;
        s2[t] = a2;
        row_in += stride;
    }
LN_RECIP:  // the row's 1/sqrt(variance): ISQRT and RECIP pipelined, one row per cycle
    for (int t = 0; t < nt; t++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT min = 1 max = TOKEN_TILE
        M3VIT_LEDGER_PIPELINE(LN_RECIP, t == 0, 1, 110);
        const i64 v = i64(DIM) * i64(s2[t]) - i64(s1[t]) * i64(s1[t]) + i64(LN_EPS);
        i64 r;
        int len;
        recip(isqrt_unrolled(u64(v)), r, len);
        rr[t] = recip_t(r);
        sh[t] = len + 15 - FH;
    }
LN_NORM_ROWS:
    for (int t = 0; t < nt; t++) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = TOKEN_TILE
        M3VIT_LEDGER_LOOP(LN_NORM_ROWS, t == 0, 2);
    LN_NORM:  // one AXI word of norm lanes per cycle: into the tile and the tap
        for (int i = 0; i < wn; i++) {
#pragma HLS PIPELINE II = 1
            M3VIT_LEDGER_PIPELINE(LN_NORM, i == 0, 1, 12);
            word_t w;
            word_clear(w);
            for (int l = 0; l < LN; l++) {
#pragma HLS UNROLL
                const int c = i * LN + l;
                if (c < DIM) {
                    const ln_xc_t xc = ln_xc_t(ln_xr_t(DIM) * xt[t][c] - ln_xr_t(s1[t]));
                    const ln_xhat_t xhat = ln_xhat_t(rshr_rt<ln_xr_t>(ln_xr_t(ln_xr_t(xc) * ln_xr_t(rr[t])), sh[t]));
                    const ln_y_t acc = ln_y_t(ln_y_t(ln_y_t(xhat) * ln_y_t(g[c])) + ln_y_t(b[c]) * ln_y_t(int64_t(1) << FH));
                    const norm_t y = norm_t(req<SH_LN, NORM_BITS>(acc, nsat));
                    a[t][c] = mac_a_t(y);
                    lane_set<NORM_CB>(w, l, to_i64(y));
                }
            }
            tap[uint64_t(t) * STR_NORM + i] = w;
        }
    }
}

}  // namespace m3vit

#endif  // M3VIT_LAYERNORM_H
