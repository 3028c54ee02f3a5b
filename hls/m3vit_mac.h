// m3vit_mac.h — the tiled MAC engine shared by every matmul (docs/numerics.md §5).
//
// Weights live on chip as tiles w[ot·IT + it][MO][MI] (the packed layout of codegen/layout.py, so a
// DDR burst fills whole tiles); activations as a token tile a[TT][KP] (KP = IT·MI, padded columns are
// multiplied by zero weights). One call computes y[t][o] = REQ(Σ_i a[t][i]·W[o][i] + b[o]) for a
// whole token tile. The sum is exact (acc type of acc_bits), so the tile order is free.
#ifndef M3VIT_MAC_H
#define M3VIT_MAC_H

#include "m3vit_dma.h"
#include "m3vit_prims.h"

namespace m3vit {

// load_tiles<CB>(base, ntiles, w): ntiles·MO·MI weight lanes from DDR into the tile buffer.
// One AXI word per cycle (II = 1 per element, a word every AXI/CB elements); one burst.
template <int CB, int MO, int MI, class W, class T>
void load_tiles(const W* base, int ntiles, T w[][MO][MI]) {
    const int L = AxiLanes<W, CB>::value;
    const int n = ntiles * MO * MI;
    W word;
LOAD_TILES:
    for (int k = 0; k < n; k++) {
#pragma HLS PIPELINE II = 1
        M3VIT_LEDGER_PIPELINE(LOAD_TILES, k == 0, 1, 4);
        if (k % L == 0) word = base[k / L];
        w[k / (MO * MI)][(k / MI) % MO][k % MI] = T(lane_get<CB>(word, k % L));
    }
}

// mac_engine<...>(a, nt, w, bias, it_n, n_out, y, nsat)
//   a      [TT][KP]   activation tile, rows t < nt valid
//   w      [OT·IT][MO][MI] on-chip weight tiles (IT = it_n in-tiles per out-tile)
//   bias   [n_out]    at accumulator scale
//   y      [TT][NP]   y[t][o] = SAT_OB(RSHR(acc, SHIFT)) for o < n_out; every clamp counts in nsat
// Schedule: ot × t × it with the it loop pipelined at II = 1: MO·MI multipliers and MO adder trees
// (PS holds one tree's sum, ACC the running sum). Latency ≈ ceil(n_out/MO) · nt · it_n cycles.
template <int MO, int MI, int TT, int KP, int NP, int SHIFT, int OB, class PS, class ACC, class A, class WT,
          class B, class O>
void mac_engine(const A a[TT][KP], int nt, const WT w[][MO][MI], const B bias[], int it_n, int n_out,
                O y[TT][NP], uint32_t& nsat) {
    const int ot_n = (n_out + MO - 1) / MO;
MAC_OT:
    for (int ot = 0; ot < ot_n; ot++) {
        M3VIT_LEDGER_LOOP(MAC_OT, ot == 0, 2);
    MAC_T:
        for (int t = 0; t < nt; t++) {
            // MAC_INIT reads MO biases and MAC_OUT writes MO outputs through two RAM ports: MO cycles
            M3VIT_LEDGER_LOOP(MAC_T, t == 0, MO + 4);
            ACC acc[MO];
#pragma HLS ARRAY_PARTITION variable = acc complete
        MAC_INIT:
            for (int mo = 0; mo < MO; mo++) {
#pragma HLS UNROLL
                const int o = ot * MO + mo;
                acc[mo] = (o < n_out) ? ACC(bias[o]) : ACC(0);
            }
        MAC_IT:
            for (int it = 0; it < it_n; it++) {
#pragma HLS PIPELINE II = 1
            M3VIT_LEDGER_PIPELINE(MAC_IT, it == 0, 1, 10);
                const int tile = ot * it_n + it;
            MAC_MO:
                for (int mo = 0; mo < MO; mo++) {
#pragma HLS UNROLL
                    PS ps = 0;
                MAC_MI:
                    for (int mi = 0; mi < MI; mi++) {
#pragma HLS UNROLL
                        ps += PS(a[t][it * MI + mi]) * w[tile][mo][mi];
                    }
                    acc[mo] += ps;
                }
            }
        MAC_OUT:
            for (int mo = 0; mo < MO; mo++) {
#pragma HLS UNROLL
                const int o = ot * MO + mo;
                if (o < n_out) y[t][o] = O(req<SHIFT, OB>(acc[mo], nsat));
            }
        }
    }
}

}  // namespace m3vit

#endif  // M3VIT_MAC_H
