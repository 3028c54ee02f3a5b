// m3vit_moe.h — routing of a Mixture-of-Experts layer (docs/numerics.md §10, §11): the task's router
// logits (computed by the matmul engine, stage ST_ROUTER) → softmax gates over all N experts, top-K by
// logit (ties → lower expert index), then a counting sort of the T·K (token, gate) pairs into per-expert
// queues held in one T·K array (one expert may receive every token: no capacity to overflow), in
// ascending token order, and the list of used experts. The experts then run as the engine's jobs
// (stage ST_EXPERTS, m3vit_linear.h): each used expert fetched once, empty experts never.
#ifndef M3VIT_MOE_H
#define M3VIT_MOE_H

#include "m3vit_burst.h"
#include "m3vit_config.h"
#include "m3vit_linear.h"
#include "m3vit_prims.h"

namespace m3vit {

// route_token(lg, sel, gsel): softmax gates over all experts of one logit row and the top-K experts by
// logit, stored as sel[k], gsel[k].
// Latency ≈ 3·EXPERTS (max, exp2 + sum, scale) + one division + TOP_K·EXPERTS (selection).
inline void route_token(const cfg::logit_t lg[cfg::EXPERTS], cfg::expert_t sel[cfg::TOP_K], cfg::prob_t gsel[cfg::TOP_K]) {
    using namespace cfg;
    prob_t p[EXPERTS], g[EXPERTS];
    logit_t mx = lg[0];
RT_MAX:
    for (int e = 1; e < EXPERTS; e++) {
#pragma HLS PIPELINE II = 1
        M3VIT_LEDGER_PIPELINE(RT_MAX, e == 1, 1, 2);
        if (lg[e] > mx) mx = lg[e];
    }
    i64 sum = 0;
RT_EXP:
    for (int e = 0; e < EXPERTS; e++) {
#pragma HLS PIPELINE II = 1
        M3VIT_LEDGER_PIPELINE(RT_EXP, e == 0, 1, 8);
        const i64 z = rshr<SH_ROUTER_Z>(i64(i64(lg[e]) - i64(mx)) * i64(C_ROUTER));
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
            if (!chosen[e] && (best < 0 || lg[e] > lg[best])) best = e;
        }
        chosen[best] = true;
        sel[k] = expert_t(best);
        gsel[k] = g[best];
    }
}

// route_layer(scratch, qs): route every token from the logits region and build the queues.
inline void route_layer(const cfg::word_t* scratch, Queues& qs) {
    using namespace cfg;
    M3VIT_LEDGER_PROCESS("route_layer");
    static expert_t sel[TOKENS][TOP_K];
    static prob_t gsel[TOKENS][TOP_K];
    logit_t lg[EXPERTS];
    int count[EXPERTS];
    int fill[EXPERTS];
#pragma HLS ARRAY_PARTITION variable = fill complete
#pragma HLS ARRAY_PARTITION variable = count complete
    for (int e = 0; e < EXPERTS; e++) count[e] = 0;
RT_TOKENS:
    for (int tok = 0; tok < TOKENS; tok++) {
        // route_token outside its loops: one RECIP division
        M3VIT_LEDGER_LOOP(RT_TOKENS, tok == 0, 72);
        burst_read_elems<LOGIT_CB>(scratch + SCR_LOGITS + uint64_t(tok) * STR_LOGIT, 0, EXPERTS, lg);
        route_token(lg, sel[tok], gsel[tok]);
        for (int k = 0; k < TOP_K; k++) count[to_i64(sel[tok][k])]++;
    }
    // counting sort into per-expert queues (ascending token order within each queue)
    M3VIT_LEDGER_STEP("queues", -1);
    qs.start[0] = 0;
    qs.n_used = 0;
RT_OFFSETS:
    for (int e = 0; e < EXPERTS; e++) {
#pragma HLS PIPELINE II = 1
        M3VIT_LEDGER_PIPELINE(RT_OFFSETS, e == 0, 1, 3);
        qs.start[e + 1] = qs.start[e] + count[e];
        fill[e] = qs.start[e];
        if (count[e] > 0) qs.used[qs.n_used++] = e;
    }
RT_FILL:
    for (int i = 0; i < TOKENS * TOP_K; i++) {
#pragma HLS PIPELINE II = 1
        M3VIT_LEDGER_PIPELINE(RT_FILL, i == 0, 1, 4);
        const int tok = i / TOP_K, k = i % TOP_K;
        const int e = int(to_i64(sel[tok][k]));
        qs.tok[fill[e]] = tok_t(tok);
        qs.gate[fill[e]] = gsel[tok][k];
        fill[e]++;
    }
}

}  // namespace m3vit

#endif  // M3VIT_MOE_H
