// m3vit_moe.h — the Mixture-of-Experts layer, expert by expert (docs/numerics.md §10, §11).
//
//  1. stage_router: logits for every token (the task register picks the router), softmax over all N
//     experts, top-K by logit (ties → lower expert index), per-token accumulators zeroed.
//  2. build_queues: a counting sort of the T·K (token, gate) pairs into per-expert queues held in one
//     T·K array (so one expert may receive every token: no per-expert capacity to overflow), in
//     ascending token order, and the list of used experts.
//  3. stage_experts: for each used expert (empty experts are skipped and never fetched) its weights are
//     read from DDR exactly once into one of two ping-pong buffers while the other buffer's expert
//     computes its whole queue; each result row is scaled by the gate and added into the token's
//     exact accumulator (scratch region moe_acc).
//  4. stage_moe_finish: moe = REQ_act(A, 15).
#ifndef M3VIT_MOE_H
#define M3VIT_MOE_H

#include "m3vit_config.h"
#include "m3vit_dma.h"
#include "m3vit_mac.h"
#include "m3vit_prims.h"

#ifndef __SYNTHESIS__
// C simulation only: how often each expert's weights were fetched (checked by the tests: once per
// layer for a used expert, never for an empty one) and the order of fetches and computes (event
// = block << 16 | compute << 15 | buffer << 14 | expert). Defined in the top .cpp.
extern uint32_t m3vit_debug_expert_loads[m3vit::cfg::DEPTH][m3vit::cfg::EXPERTS];
extern uint32_t m3vit_debug_events[1 << 16];
extern uint32_t m3vit_debug_n_events;
inline void m3vit_note_event(int b, int compute, int buf, int e) {
    if (m3vit_debug_n_events < (1u << 16))
        m3vit_debug_events[m3vit_debug_n_events++] =
            uint32_t(b) << 16 | uint32_t(compute) << 15 | uint32_t(buf) << 14 | uint32_t(e);
}
#define M3VIT_NOTE_EXPERT_LOAD(b, e, buf) (m3vit_debug_expert_loads[b][e]++, m3vit_note_event(b, 0, buf, e))
#define M3VIT_NOTE_EXPERT_COMPUTE(b, e, buf) m3vit_note_event(b, 1, buf, e)
#else
#define M3VIT_NOTE_EXPERT_LOAD(b, e, buf)
#define M3VIT_NOTE_EXPERT_COMPUTE(b, e, buf)
#endif

namespace m3vit {

// Routing state of one MoE layer (on chip).
struct Queues {
    cfg::tok_t tok[cfg::TOKENS * cfg::TOP_K];    // queue entries, expert after expert
    cfg::prob_t gate[cfg::TOKENS * cfg::TOP_K];  // their combine weights (Q.15)
    int start[cfg::EXPERTS + 1];                 // expert e's queue is [start[e], start[e+1])
    int used[cfg::EXPERTS];                      // experts with a non-empty queue, ascending
    int n_used;
};

// route_token(lg, t, sel, gsel, tok): softmax gates over all experts of logit row t and the top-K
// experts by logit, stored as sel[tok][k], gsel[tok][k].
// Latency ≈ 3·EXPERTS (max, exp2 + sum, scale) + one division + TOP_K·EXPERTS (selection).
inline void route_token(const cfg::logit_t lg[cfg::TOKEN_TILE][cfg::EXPERTS_PO], int t, cfg::expert_t sel[][cfg::TOP_K],
                        cfg::prob_t gsel[][cfg::TOP_K], int tok) {
    using namespace cfg;
    prob_t p[EXPERTS], g[EXPERTS];
    logit_t mx = lg[t][0];
    for (int e = 1; e < EXPERTS; e++)
        if (lg[t][e] > mx) mx = lg[t][e];
    i64 sum = 0;
RT_EXP:
    for (int e = 0; e < EXPERTS; e++) {
#pragma HLS PIPELINE II = 1
        M3VIT_LEDGER_PIPELINE(RT_EXP, e == 0, 1, 8);
        const i64 z = rshr<SH_ROUTER_Z>(i64(i64(lg[t][e]) - i64(mx)) * i64(C_ROUTER));
        p[e] = exp2neg<FZ>(z, EXP2_TABLE);
        sum += p[e];
    }
    i64 r;
    int len;
    recip(u64(sum), r, len);  // sum ≥ 2^15: the max logit contributes 2^15
RT_GATE:
    for (int e = 0; e < EXPERTS; e++) {
#pragma HLS PIPELINE II = 1
        M3VIT_LEDGER_PIPELINE(RT_GATE, e == 0, 1, 6);
        g[e] = prob_t(rshr_rt<i64>(i64(p[e]) * r, len));
    }
    bool chosen[EXPERTS];
    for (int e = 0; e < EXPERTS; e++) chosen[e] = false;
RT_TOPK:
    for (int k = 0; k < TOP_K; k++) {
        M3VIT_LEDGER_LOOP(RT_TOPK, k == 0, 2);
        int best = -1;
    RT_SCAN:
        for (int e = 0; e < EXPERTS; e++) {
#pragma HLS PIPELINE II = 1
            M3VIT_LEDGER_PIPELINE(RT_SCAN, e == 0, 1, 3);
            // strict '>' while scanning upwards: among equal logits the lower index wins
            if (!chosen[e] && (best < 0 || lg[t][e] > lg[t][best])) best = e;
        }
        chosen[best] = true;
        sel[tok][k] = expert_t(best);
        gsel[tok][k] = g[best];
    }
}

// stage_router(weights, r_off, scratch, wbuf, bbuf, qs, sat): route every token and build the queues.
// r_off: word offset of this layer's router for the current task (base + task · stride).
inline void stage_router(const cfg::word_t* weights, uint64_t r_off, cfg::word_t* scratch,
                         cfg::wgt_t wbuf[][cfg::MAC_OUT][cfg::MAC_IN], cfg::bias_t bbuf[], Queues& qs,
                         SatCounters& sat) {
    using namespace cfg;
    M3VIT_LEDGER_PROCESS("stage_router");
    static norm_t a[TOKEN_TILE][DIM_P];
    static logit_t lg[TOKEN_TILE][EXPERTS_PO];
    static expert_t sel[TOKENS][TOP_K];
    static prob_t gsel[TOKENS][TOP_K];
    static moeacc_t zero[DIM];
    int count[EXPERTS];
    int fill[EXPERTS];
    for (int e = 0; e < EXPERTS; e++) count[e] = 0;
    for (int i = 0; i < DIM; i++) zero[i] = 0;
    load_tiles<W_CB>(weights + r_off, OT_EXPERTS * IT_DIM, wbuf);
    dma_read<BIAS_CB>(weights + r_off + ROUTER_B_REL, 0, EXPERTS, bbuf);
RT_TILES:
    for (int r0 = 0; r0 < TOKENS; r0 += TOKEN_TILE) {
        M3VIT_LEDGER_LOOP(RT_TILES, r0 == 0, 2);
        const int nt = (TOKENS - r0 < TOKEN_TILE) ? TOKENS - r0 : TOKEN_TILE;
        for (int t = 0; t < nt; t++)
            dma_read_row<NORM_CB>(scratch + SCR_NORM2 + uint64_t(r0 + t) * STR_NORM, 0, DIM, a, t);
        mac_engine<MAC_OUT, MAC_IN, TOKEN_TILE, DIM_P, EXPERTS_PO, SH_ROUTER, LOGIT_BITS, psum_norm_t, acc_t>(
            a, nt, wbuf, bbuf, IT_DIM, EXPERTS, lg, sat.c[SAT_LOGIT]);
    RT_TOKENS:
        for (int t = 0; t < nt; t++) {
            // route_token outside its loops: the logit max (EXPERTS cycles) and one RECIP division
            M3VIT_LEDGER_LOOP(RT_TOKENS, t == 0, EXPERTS + 72);
            const int tok = r0 + t;
            dma_write_row<LOGIT_CB>(scratch + SCR_LOGITS + uint64_t(tok) * STR_LOGIT, 0, EXPERTS, lg, t);
            route_token(lg, t, sel, gsel, tok);
            for (int k = 0; k < TOP_K; k++) count[to_i64(sel[tok][k])]++;
            dma_write<64>(scratch + SCR_MOE_ACC + uint64_t(tok) * STR_MOEACC, 0, DIM, zero);
        }
    }
    // counting sort into per-expert queues (ascending token order within each queue)
    M3VIT_LEDGER_STEP("queues", -1);
    qs.start[0] = 0;
    qs.n_used = 0;
RT_OFFSETS:
    for (int e = 0; e < EXPERTS; e++) {
        M3VIT_LEDGER_LOOP(RT_OFFSETS, e == 0, 2);
        qs.start[e + 1] = qs.start[e] + count[e];
        fill[e] = qs.start[e];
        if (count[e] > 0) qs.used[qs.n_used++] = e;
    }
RT_FILL:
    for (int tok = 0; tok < TOKENS; tok++) {
        M3VIT_LEDGER_LOOP(RT_FILL, tok == 0, 2);
    RT_FILL_K:
        for (int k = 0; k < TOP_K; k++) {
#pragma HLS PIPELINE II = 1
            M3VIT_LEDGER_PIPELINE(RT_FILL_K, k == 0, 1, 3);
            const int e = int(to_i64(sel[tok][k]));
            qs.tok[fill[e]] = tok_t(tok);
            qs.gate[fill[e]] = gsel[tok][k];
            fill[e]++;
        }
    }
}

// load_expert(block, e, buf, weights, off, w1, b1, w2, b2): one expert's burst region (w1, b1, w2, b2)
// into ping-pong buffer `buf`. Latency ≈ expert words (one AXI word per cycle).
inline void load_expert(int block, int e, int buf, const cfg::word_t* weights, uint64_t off,
                        cfg::wgt_t w1[cfg::EW1_TILES][cfg::MAC_OUT][cfg::MAC_IN], cfg::bias_t b1[],
                        cfg::wgt_t w2[cfg::EW2_TILES][cfg::MAC_OUT][cfg::MAC_IN], cfg::bias_t b2[]) {
    using namespace cfg;
    M3VIT_LEDGER_PROCESS("load_expert");
    M3VIT_NOTE_EXPERT_LOAD(block, e, buf);
    load_tiles<W_CB>(weights + off, EW1_TILES, w1);
    dma_read<BIAS_CB>(weights + off + EXPERT_B1_REL, 0, EXPERT_HIDDEN, b1);
    load_tiles<W_CB>(weights + off + EXPERT_W2_REL, EW2_TILES, w2);
    dma_read<BIAS_CB>(weights + off + EXPERT_B2_REL, 0, DIM, b2);
}

// expert_compute(w1, b1, w2, b2, qs, start, n, scratch, sat): one expert over its queue of n tokens
// (entries start … start + n - 1 of qs),
// TOKEN_TILE at a time: gather norm2 rows, h = GELU(fc1), y = fc2 (act, saturated), then
// A[tok] += y · gate (exact, 64-bit accumulator rows in DDR).
inline void expert_compute(const cfg::wgt_t w1[cfg::EW1_TILES][cfg::MAC_OUT][cfg::MAC_IN], const cfg::bias_t b1[],
                           const cfg::wgt_t w2[cfg::EW2_TILES][cfg::MAC_OUT][cfg::MAC_IN], const cfg::bias_t b2[],
                           const Queues& qs, int start, int n, cfg::word_t* scratch, SatCounters& sat) {
    using namespace cfg;
    M3VIT_LEDGER_PROCESS("expert_compute");
    static norm_t a[TOKEN_TILE][DIM_P];
    static hid_t hb[TOKEN_TILE][EH_BUF];
    static act_t y[TOKEN_TILE][DIM_PO];
    static moeacc_t row[DIM];
EX_TILES:
    for (int q0 = 0; q0 < n; q0 += TOKEN_TILE) {
        M3VIT_LEDGER_LOOP(EX_TILES, q0 == 0, 2);
        const int nt = (n - q0 < TOKEN_TILE) ? n - q0 : TOKEN_TILE;
    EX_GATHER:
        for (int t = 0; t < nt; t++) {
            M3VIT_LEDGER_LOOP(EX_GATHER, t == 0, 2);
            dma_read_row<NORM_CB>(scratch + SCR_NORM2 + uint64_t(to_i64(qs.tok[start + q0 + t])) * STR_NORM, 0, DIM,
                                  a, t);
        }
        mac_engine<MAC_OUT, MAC_IN, TOKEN_TILE, DIM_P, EH_BUF, SH_FC1, HID_BITS, psum_norm_t, acc_t>(
            a, nt, w1, b1, IT_DIM, EXPERT_HIDDEN, hb, sat.c[SAT_HIDDEN]);
    EX_GELU:
        for (int t = 0; t < nt; t++) {
            M3VIT_LEDGER_LOOP(EX_GELU, t == 0, 2);
        EX_GELU_ROW:
            for (int i = 0; i < EXPERT_HIDDEN; i++) {
#pragma HLS PIPELINE II = 1
                M3VIT_LEDGER_PIPELINE(EX_GELU_ROW, i == 0, 1, 5);
                hb[t][i] = gelu<GELU_LO, GELU_HI, GELU_SIGMA, gelu_t>(hb[t][i], GELU_TABLE);
            }
        }
        mac_engine<MAC_OUT, MAC_IN, TOKEN_TILE, EH_BUF, DIM_PO, SH_FC2, ACT_BITS, psum_hid_t, acc_t>(
            hb, nt, w2, b2, IT_EH, DIM, y, sat.c[SAT_ACT]);
    EX_SCATTER:
        for (int t = 0; t < nt; t++) {
            M3VIT_LEDGER_LOOP(EX_SCATTER, t == 0, 2);
            const uint64_t at = SCR_MOE_ACC + uint64_t(to_i64(qs.tok[start + q0 + t])) * STR_MOEACC;
            const prob_t g = qs.gate[start + q0 + t];
            dma_read<64>(scratch + at, 0, DIM, row);
        EX_ACC:
            for (int i = 0; i < DIM; i++) {
#pragma HLS PIPELINE II = 1
                M3VIT_LEDGER_PIPELINE(EX_ACC, i == 0, 1, 4);
                row[i] = moeacc_t(row[i] + moe_prod_t(moe_prod_t(y[t][i]) * g));
            }
            dma_write<64>(scratch + at, 0, DIM, row);
        }
    }
}

// stage_experts(block, weights, e_base, scratch, qs, sat): the expert-by-expert loop with ping-pong
// weight buffers: while used expert u computes from one buffer, expert u+1 is fetched into the other
// (the two calls touch disjoint arrays, so they overlap in hardware). Each used expert is fetched once.
inline void stage_experts(int block, const cfg::word_t* weights, uint64_t e_base, cfg::word_t* scratch,
                          const Queues& qs, SatCounters& sat) {
    using namespace cfg;
    M3VIT_LEDGER_PROCESS("stage_experts");
    static wgt_t w1a[EW1_TILES][MAC_OUT][MAC_IN], w2a[EW2_TILES][MAC_OUT][MAC_IN];
    static wgt_t w1b[EW1_TILES][MAC_OUT][MAC_IN], w2b[EW2_TILES][MAC_OUT][MAC_IN];
    static bias_t b1a[EH_PO], b2a[DIM_PO], b1b[EH_PO], b2b[DIM_PO];
#pragma HLS ARRAY_PARTITION variable = w1a dim = 2 complete
#pragma HLS ARRAY_RESHAPE variable = w1a dim = 3 complete
#pragma HLS ARRAY_PARTITION variable = w2a dim = 2 complete
#pragma HLS ARRAY_RESHAPE variable = w2a dim = 3 complete
#pragma HLS ARRAY_PARTITION variable = w1b dim = 2 complete
#pragma HLS ARRAY_RESHAPE variable = w1b dim = 3 complete
#pragma HLS ARRAY_PARTITION variable = w2b dim = 2 complete
#pragma HLS ARRAY_RESHAPE variable = w2b dim = 3 complete
    if (qs.n_used == 0) return;
    {
        const int e = qs.used[0];
        M3VIT_LEDGER_STEP("expert", e);
        load_expert(block, e, 0, weights, e_base + uint64_t(e) * EXPERT_STRIDE, w1a, b1a, w2a, b2a);
    }
EX_LOOP:
    for (int u = 0; u < qs.n_used; u++) {
        M3VIT_LEDGER_LOOP(EX_LOOP, u == 0, 2);
        const int e = qs.used[u];
        const bool more = u + 1 < qs.n_used;
        const int nxt = more ? qs.used[u + 1] : 0;
        const uint64_t nxt_off = e_base + uint64_t(nxt) * EXPERT_STRIDE;
        const int s = qs.start[e], n = qs.start[e + 1] - qs.start[e];
        // each expert's fetch and compute count in its own step (block<b>.expert<e>)
        if ((u & 1) == 0) {
            M3VIT_LEDGER_STEP("expert", nxt);
            if (more) load_expert(block, nxt, 1, weights, nxt_off, w1b, b1b, w2b, b2b);
            M3VIT_LEDGER_STEP("expert", e);
            M3VIT_NOTE_EXPERT_COMPUTE(block, e, 0);
            expert_compute(w1a, b1a, w2a, b2a, qs, s, n, scratch, sat);
        } else {
            M3VIT_LEDGER_STEP("expert", nxt);
            if (more) load_expert(block, nxt, 0, weights, nxt_off, w1a, b1a, w2a, b2a);
            M3VIT_LEDGER_STEP("expert", e);
            M3VIT_NOTE_EXPERT_COMPUTE(block, e, 1);
            expert_compute(w1b, b1b, w2b, b2b, qs, s, n, scratch, sat);
        }
    }
}

// stage_moe_finish(scratch, sat): mlp = REQ_act(A, 15) for every token.
inline void stage_moe_finish(cfg::word_t* scratch, SatCounters& sat) {
    using namespace cfg;
    M3VIT_LEDGER_PROCESS("stage_moe_finish");
    static moeacc_t row[DIM];
    static act_t y[DIM];
MF_ROWS:
    for (int t = 0; t < TOKENS; t++) {
        M3VIT_LEDGER_LOOP(MF_ROWS, t == 0, 2);
        dma_read<64>(scratch + SCR_MOE_ACC + uint64_t(t) * STR_MOEACC, 0, DIM, row);
    MF_REQ:
        for (int i = 0; i < DIM; i++) {
#pragma HLS PIPELINE II = 1
            M3VIT_LEDGER_PIPELINE(MF_REQ, i == 0, 1, 3);
            y[i] = act_t(req<PROB_FRAC, ACT_BITS>(row[i], sat.c[SAT_ACT]));
        }
        dma_write<ACT_CB>(scratch + SCR_MLP + uint64_t(t) * STR_ACT, 0, DIM, y);
    }
}

}  // namespace m3vit

#endif  // M3VIT_MOE_H
