// m3vit_embed.h — patch embedding and position embedding (docs/numerics.md §6).
#ifndef M3VIT_EMBED_H
#define M3VIT_EMBED_H

#include "m3vit_config.h"
#include "m3vit_dma.h"
#include "m3vit_mac.h"
#include "m3vit_prims.h"

namespace m3vit {

// stage_embed(weights, image, scratch, wbuf, bbuf, sat): x[0] = pos[0]; x[1+p] = SAT_act(LINEAR(a_p) + pos[1+p]).
//   image: one [C][H][W] input-format image (DDR); x: the scratch region SCR_X.
//   Patch p = py·GRID_W + px gathers a_p[c·P² + ky·P + kx] = X[c][py·P + ky][px·P + kx], one P-pixel
//   burst per (c, ky); pixels outside the input format are saturated and counted (class input).
// Latency ≈ weight words + PATCHES · (C·P bursts + ceil(DIM/MAC_OUT)·ceil(C·P²/MAC_IN)).
inline void stage_embed(const cfg::word_t* weights, const cfg::word_t* image, cfg::word_t* scratch,
                        cfg::wgt_t wbuf[][cfg::MAC_OUT][cfg::MAC_IN], cfg::bias_t bbuf[], SatCounters& sat) {
    using namespace cfg;
    M3VIT_LEDGER_PROCESS("stage_embed");
    typedef sint<IN_CB>::t pix_t;  // the DDR container: may hold values outside the input format
    static in_t a[TOKEN_TILE][PATCH_DIM_P];
    static act_t e[TOKEN_TILE][DIM_PO];
    static act_t pos[DIM];
    static pix_t seg[PATCH];
    load_tiles<W_CB>(weights + PATCH_W, OT_DIM * IT_PATCH, wbuf);
    dma_read<BIAS_CB>(weights + PATCH_B, 0, DIM, bbuf);
    // cls token: row 0 is pos[0] (cls + pos[0], quantised on the host)
    dma_read<ACT_CB>(weights + POS, 0, DIM, pos);
    dma_write<ACT_CB>(scratch + SCR_X, 0, DIM, pos);
EMB_TILES:
    for (int p0 = 0; p0 < PATCHES; p0 += TOKEN_TILE) {
        M3VIT_LEDGER_LOOP(EMB_TILES, p0 == 0, 2);
        const int nt = (PATCHES - p0 < TOKEN_TILE) ? PATCHES - p0 : TOKEN_TILE;
    EMB_GATHER:
        for (int t = 0; t < nt; t++) {
            M3VIT_LEDGER_LOOP(EMB_GATHER, t == 0, 2);
            const int p = p0 + t, py = p / GRID_W, px = p % GRID_W;
            for (int c = 0; c < CHANNELS; c++) {
            EMB_ROWS:
                for (int ky = 0; ky < PATCH; ky++) {
                    M3VIT_LEDGER_LOOP(EMB_ROWS, ky == 0, 2);
                    const uint64_t row = uint64_t(c) * IMG_H + uint64_t(py) * PATCH + ky;
                    const uint64_t e0 = row * IMG_W + uint64_t(px) * PATCH;
                    dma_read<IN_CB>(image, e0, PATCH, seg);
                EMB_PIXELS:
                    for (int kx = 0; kx < PATCH; kx++) {
#pragma HLS PIPELINE II = 1
                        M3VIT_LEDGER_PIPELINE(EMB_PIXELS, kx == 0, 1, 3);
                        a[t][(c * PATCH + ky) * PATCH + kx] = in_t(sat_bits<IN_BITS>(seg[kx], sat.c[SAT_INPUT]));
                    }
                }
            }
        }
        mac_engine<MAC_OUT, MAC_IN, TOKEN_TILE, PATCH_DIM_P, DIM_PO, SH_PATCH, ACT_BITS, psum_in_t, acc_t>(
            a, nt, wbuf, bbuf, IT_PATCH, DIM, e, sat.c[SAT_ACT]);
    EMB_POS:
        for (int t = 0; t < nt; t++) {
            M3VIT_LEDGER_LOOP(EMB_POS, t == 0, 2);
            const int tok = 1 + p0 + t;
            dma_read<ACT_CB>(weights + POS + uint64_t(tok) * POS_STRIDE, 0, DIM, pos);
        EMB_POS_ADD:
            for (int i = 0; i < DIM; i++) {
#pragma HLS PIPELINE II = 1
                M3VIT_LEDGER_PIPELINE(EMB_POS_ADD, i == 0, 1, 3);
                e[t][i] = act_t(sat_bits<ACT_BITS>(res_t(res_t(e[t][i]) + res_t(pos[i])), sat.c[SAT_ACT]));
            }
            dma_write_row<ACT_CB>(scratch + SCR_X + uint64_t(tok) * STR_ACT, 0, DIM, e, t);
        }
    }
}

}  // namespace m3vit

#endif  // M3VIT_EMBED_H
