// m3vit_moe.h — the queues of a Mixture-of-Experts layer (docs/numerics.md §10, §11). The router stage of
// the matmul engine routes every token (route_token in its writer: softmax gates over the layer's kept
// experts, top-K' by logit, ties → lower expert index; the expert map comes from the weight image, so a
// task-specialised image changes it without re-synthesis); then a counting sort of the T·K' (token, gate)
// pairs into per-expert
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

// build_queues(rt, qs): a counting sort of the routing into per-expert queues (ascending token order
// within each queue) and the list of used experts (never a pruned one: its count stays 0). T·K + N cycles
// (slots k ≥ K' are skipped).
inline void build_queues(const Routing& rt, Queues& qs) {
    using namespace cfg;
    M3VIT_LEDGER_PROCESS("build_queues");
    int fill[EXPERTS];
#pragma HLS ARRAY_PARTITION variable = fill complete
    qs.start[0] = 0;
    qs.n_used = 0;
RT_OFFSETS:
    for (int e = 0; e < EXPERTS; e++) {
#pragma HLS PIPELINE II = 1
        M3VIT_LEDGER_PIPELINE(RT_OFFSETS, e == 0, 1, 3);
        qs.start[e + 1] = qs.start[e] + rt.count[e];
        fill[e] = qs.start[e];
        if (rt.count[e] > 0) qs.used[qs.n_used++] = e;
    }
RT_FILL:
    for (int i = 0; i < TOKENS * TOP_K; i++) {
#pragma HLS PIPELINE II = 1
        M3VIT_LEDGER_PIPELINE(RT_FILL, i == 0, 1, 4);
        const int tok = i / TOP_K, k = i % TOP_K;
        if (k < rt.top_k) {
            const int e = int(to_i64(rt.sel[tok][k]));
            qs.tok[fill[e]] = tok_t(tok);
            qs.gate[fill[e]] = rt.gsel[tok][k];
            fill[e]++;
        }
    }
}

}  // namespace m3vit

#endif  // M3VIT_MOE_H
