// m3vit_linear.h — matmul stages over the whole token range (docs/numerics.md §5, §8, §12), plus the
// residual add and the word copy used at the ends of a run.
#ifndef M3VIT_LINEAR_H
#define M3VIT_LINEAR_H

#include "m3vit_config.h"
#include "m3vit_dma.h"
#include "m3vit_mac.h"
#include "m3vit_prims.h"

namespace m3vit {

// stage_linear<...>(weights, w_off, b_off, scratch, src, src_stride, dst, dst_stride, res, rows, wbuf, bbuf, nsat)
//   dst[r] = EPI(REQ_OB(src[r] · Wᵀ + b, SHIFT)) for r < rows, processed TOKEN_TILE rows at a time.
//   A/ACB/K: input type, DDR container bits, length; O/OCB/OB/N: output type, container, format bits, count.
//   EPI_GELU applies GELU (hidden format); EPI_RES adds the act rows at `res` and saturates (residual add).
//   The weight matrix is loaded once (one burst) into wbuf; every clamp counts in nsat.
// Latency ≈ weight words + rows · (K/AXI lanes + ceil(N/MAC_OUT) · ceil(K/MAC_IN) + N/AXI lanes).
template <class A, int ACB, int K, class PS, class O, int OCB, int OB, int N, int SHIFT, bool EPI_GELU, bool EPI_RES>
void stage_linear(const cfg::word_t* weights, uint64_t w_off, uint64_t b_off, cfg::word_t* scratch, uint64_t src,
                  int src_stride, uint64_t dst, int dst_stride, uint64_t res, int rows,
                  cfg::wgt_t wbuf[][cfg::MAC_OUT][cfg::MAC_IN], cfg::bias_t bbuf[], uint32_t& nsat) {
    using namespace cfg;
    M3VIT_LEDGER_PROCESS("stage_linear");
    const int IT = (K + MAC_IN - 1) / MAC_IN;
    const int OT = (N + MAC_OUT - 1) / MAC_OUT;
    const int KP = IT * MAC_IN;
    const int NP = OT * MAC_OUT;
    static A a[TOKEN_TILE][KP];
    static O y[TOKEN_TILE][NP];
    static act_t r[DIM];
#pragma HLS ARRAY_RESHAPE variable = a dim = 2 cyclic factor = MAC_IN
    load_tiles<W_CB>(weights + w_off, OT * IT, wbuf);
    dma_read<BIAS_CB>(weights + b_off, 0, N, bbuf);
LIN_TILES:
    for (int r0 = 0; r0 < rows; r0 += TOKEN_TILE) {
        M3VIT_LEDGER_LOOP(LIN_TILES, r0 == 0, 2);
        const int nt = (rows - r0 < TOKEN_TILE) ? rows - r0 : TOKEN_TILE;
    LIN_LOAD:
        for (int t = 0; t < nt; t++) {
            M3VIT_LEDGER_LOOP(LIN_LOAD, t == 0, 2);
            dma_read_row<ACB>(scratch + src + uint64_t(r0 + t) * src_stride, 0, K, a, t);
        }
        mac_engine<MAC_OUT, MAC_IN, TOKEN_TILE, KP, NP, SHIFT, OB, PS, acc_t>(a, nt, wbuf, bbuf, IT, N, y, nsat);
    LIN_STORE:
        for (int t = 0; t < nt; t++) {
            M3VIT_LEDGER_LOOP(LIN_STORE, t == 0, 2);
            if (EPI_GELU) {
            LIN_GELU:
                for (int o = 0; o < N; o++) {
#pragma HLS PIPELINE II = 1
                    M3VIT_LEDGER_PIPELINE(LIN_GELU, o == 0, 1, 5);
                    y[t][o] = O(gelu<GELU_LO, GELU_HI, GELU_SIGMA, gelu_t>(hid_t(y[t][o]), GELU_TABLE));
                }
            }
            if (EPI_RES) {
                dma_read<ACT_CB>(scratch + res + uint64_t(r0 + t) * STR_ACT, 0, DIM, r);
            LIN_RES:
                for (int o = 0; o < N; o++) {
#pragma HLS PIPELINE II = 1
                    M3VIT_LEDGER_PIPELINE(LIN_RES, o == 0, 1, 3);
                    y[t][o] = O(sat_bits<ACT_BITS>(res_t(res_t(r[o]) + res_t(y[t][o])), nsat));
                }
            }
            dma_write_row<OCB>(scratch + dst + uint64_t(r0 + t) * dst_stride, 0, N, y, t);
        }
    }
}

// stage_residual(scratch, a, b, dst, rows, nsat): dst = SAT_act(a + b) row by row (three act regions).
inline void stage_residual(cfg::word_t* scratch, uint64_t a, uint64_t b, uint64_t dst, int rows, uint32_t& nsat) {
    using namespace cfg;
    M3VIT_LEDGER_PROCESS("stage_residual");
    static act_t x[DIM], y[DIM];
RES_ROWS:
    for (int r = 0; r < rows; r++) {
        M3VIT_LEDGER_LOOP(RES_ROWS, r == 0, 2);
        dma_read<ACT_CB>(scratch + a + uint64_t(r) * STR_ACT, 0, DIM, x);
        dma_read<ACT_CB>(scratch + b + uint64_t(r) * STR_ACT, 0, DIM, y);
    RES_ADD:
        for (int i = 0; i < DIM; i++) {
#pragma HLS PIPELINE II = 1
            M3VIT_LEDGER_PIPELINE(RES_ADD, i == 0, 1, 3);
            x[i] = act_t(sat_bits<ACT_BITS>(res_t(res_t(x[i]) + res_t(y[i])), nsat));
        }
        dma_write<ACT_CB>(scratch + dst + uint64_t(r) * STR_ACT, 0, DIM, x);
    }
}

// stage_copy(src, dst, words): a word-for-word burst copy (input tokens → x, x → output). II = 1.
inline void stage_copy(const cfg::word_t* src, cfg::word_t* dst, uint64_t words) {
    M3VIT_LEDGER_PROCESS("stage_copy");
COPY:
    for (uint64_t i = 0; i < words; i++) {
#pragma HLS PIPELINE II = 1
        M3VIT_LEDGER_PIPELINE(COPY, i == 0, 1, 3);
        dst[i] = src[i];
    }
}

}  // namespace m3vit

#endif  // M3VIT_LINEAR_H
