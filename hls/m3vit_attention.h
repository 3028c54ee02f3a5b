// m3vit_attention.h — multi-head attention with a streaming (online) softmax (docs/numerics.md §9).
//
// Per query tile (TOKEN_TILE queries) the running max m, sum l and context accumulator acc of every
// head live on chip; K/V rows stream from DDR in blocks of KEY_BLOCK keys, in increasing key order.
// The T×T score matrix is never stored: one block's scores exist only inside attn_block().
#ifndef M3VIT_ATTENTION_H
#define M3VIT_ATTENTION_H

#include "m3vit_config.h"
#include "m3vit_dma.h"
#include "m3vit_prims.h"

namespace m3vit {

// attn_block(q, kb, vb, t, h, nb, first, m, l, acc, nsat_score): fold one key block into the state of
// query t of the tile, head h (its HEAD_DIM columns of q and acc).
// Latency ≈ nb · HEAD_DIM (scores, II = 1 per key with HEAD_DIM MACs unrolled) + nb (exp2) + HEAD_DIM.
inline void attn_block(const cfg::qkv_t q[cfg::TOKEN_TILE][cfg::DIM], const cfg::qkv_t kb[cfg::KEY_BLOCK][cfg::DIM],
                       const cfg::qkv_t vb[cfg::KEY_BLOCK][cfg::DIM], int t, int h, int nb, bool first, cfg::z_t& m,
                       cfg::attn_l_t& l, cfg::ctx_acc_t acc[cfg::TOKEN_TILE][cfg::DIM], uint32_t& nsat_score) {
    using namespace cfg;
    z_t z[KEY_BLOCK];
    pv_acc_t pv[HEAD_DIM];
    z_t bm = 0;
ATT_SCORES:
    for (int j = 0; j < nb; j++) {
#pragma HLS PIPELINE II = 1
        M3VIT_LEDGER_PIPELINE(ATT_SCORES, j == 0, 1, 10);
        score_acc_t s = 0;
        for (int d = 0; d < HEAD_DIM; d++) s += qk_prod_t(q[t][h * HEAD_DIM + d]) * kb[j][h * HEAD_DIM + d];
        z[j] = z_t(sat_bits<32>(rshr<SH_SCORE>(i64(s) * i64(C_ATTN)), nsat_score));
        if (j == 0 || z[j] > bm) bm = z[j];
    }
    const z_t mnew = (first || bm > m) ? bm : m;
    attn_l_t ps = 0;
    for (int d = 0; d < HEAD_DIM; d++) pv[d] = 0;
ATT_PV:
    for (int j = 0; j < nb; j++) {
#pragma HLS PIPELINE II = 1
        M3VIT_LEDGER_PIPELINE(ATT_PV, j == 0, 1, 10);
        const prob_t p = exp2neg<FZ>(i64(z[j]) - i64(mnew), EXP2_TABLE);
        ps += p;
        for (int d = 0; d < HEAD_DIM; d++) pv[d] += pv_prod_t(p) * vb[j][h * HEAD_DIM + d];
    }
    if (first) {
        l = ps;
        for (int d = 0; d < HEAD_DIM; d++) acc[t][h * HEAD_DIM + d] = pv[d];
    } else {
        const prob_t alpha = exp2neg<FZ>(i64(m) - i64(mnew), EXP2_TABLE);  // 2^15 when the max is unchanged
        l = attn_l_t(rshr<PROB_FRAC>(i64(l) * i64(alpha)) + i64(ps));
    ATT_RESCALE:
        for (int d = 0; d < HEAD_DIM; d++) {
#pragma HLS PIPELINE II = 1
            M3VIT_LEDGER_PIPELINE(ATT_RESCALE, d == 0, 1, 6);
            const int c = h * HEAD_DIM + d;
            acc[t][c] = ctx_acc_t(rshr<PROB_FRAC>(i64(acc[t][c]) * i64(alpha)) + i64(pv[d]));
        }
    }
    m = mnew;
}

// stage_attention(scratch, sat): ctx (region attn) = softmax(q·kᵀ) v per head, from the qkv region.
// Scores saturate to 32 bits (class score), the context to the qkv format (class qkv).
// DDR traffic: q once, K and V once per query tile; nothing of size T×T.
inline void stage_attention(cfg::word_t* scratch, SatCounters& sat) {
    using namespace cfg;
    M3VIT_LEDGER_PROCESS("stage_attention");
    static qkv_t q[TOKEN_TILE][DIM];
    static qkv_t kb[KEY_BLOCK][DIM];
    static qkv_t vb[KEY_BLOCK][DIM];
    static z_t m[HEADS][TOKEN_TILE];
    static attn_l_t l[HEADS][TOKEN_TILE];
    static ctx_acc_t acc[TOKEN_TILE][DIM];
    static qkv_t ctx[TOKEN_TILE][DIM];
ATT_QTILES:
    for (int q0 = 0; q0 < TOKENS; q0 += TOKEN_TILE) {
        M3VIT_LEDGER_LOOP(ATT_QTILES, q0 == 0, 2);
        const int nt = (TOKENS - q0 < TOKEN_TILE) ? TOKENS - q0 : TOKEN_TILE;
        for (int t = 0; t < nt; t++)
            dma_read_row<QKV_CB>(scratch + SCR_QKV + uint64_t(q0 + t) * STR_QKV3, 0, DIM, q, t);
    ATT_KBLOCKS:
        for (int k0 = 0; k0 < TOKENS; k0 += KEY_BLOCK) {
            M3VIT_LEDGER_LOOP(ATT_KBLOCKS, k0 == 0, 2);
            const int nb = (TOKENS - k0 < KEY_BLOCK) ? TOKENS - k0 : KEY_BLOCK;
            for (int j = 0; j < nb; j++) {
                const uint64_t row = SCR_QKV + uint64_t(k0 + j) * STR_QKV3;
                dma_read_row<QKV_CB>(scratch + row, DIM, DIM, kb, j);
                dma_read_row<QKV_CB>(scratch + row, 2 * DIM, DIM, vb, j);
            }
        ATT_HEADS:
            for (int h = 0; h < HEADS; h++) {
                M3VIT_LEDGER_LOOP(ATT_HEADS, h == 0, 2);
            ATT_QUERIES:
                for (int t = 0; t < nt; t++) {
                    // attn_block outside its loops: the block max, two HEAD_DIM loops (pv zeroing, first
                    // block copy or ATT_RESCALE), the α exp and the l update
                    M3VIT_LEDGER_LOOP(ATT_QUERIES, t == 0, 2 * HEAD_DIM + 8);
                    attn_block(q, kb, vb, t, h, nb, k0 == 0, m[h][t], l[h][t], acc, sat.c[SAT_SCORE]);
                }
            }
        }
    ATT_FINAL:
        for (int t = 0; t < nt; t++) {
            M3VIT_LEDGER_LOOP(ATT_FINAL, t == 0, 2);
        ATT_FINAL_HEADS:
            for (int h = 0; h < HEADS; h++) {
                M3VIT_LEDGER_LOOP(ATT_FINAL_HEADS, h == 0, 70);  // one RECIP division per head
                i64 r;
                int len;
                recip(u64(l[h][t]), r, len);  // l ≥ 2^15: the max key contributes 2^15
            ATT_OUT:
                for (int d = 0; d < HEAD_DIM; d++) {
#pragma HLS PIPELINE II = 1
                    M3VIT_LEDGER_PIPELINE(ATT_OUT, d == 0, 1, 8);
                    const int c = h * HEAD_DIM + d;
                    ctx[t][c] = qkv_t(sat_bits<QKV_BITS>(rshr_rt<i64>(i64(acc[t][c]) * r, len + 15), sat.c[SAT_QKV]));
                }
            }
            dma_write_row<QKV_CB>(scratch + SCR_ATTN + uint64_t(q0 + t) * STR_QKVD, 0, DIM, ctx, t);
        }
    }
}

}  // namespace m3vit

#endif  // M3VIT_ATTENTION_H
