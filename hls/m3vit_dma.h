// m3vit_dma.h — moving packed integer lanes between DDR (AXI words) and on-chip arrays.
//
// DDR arrays are little-endian lanes of a CB-bit container (8/16/32/64) packed into AXI words
// (codegen/layout.py). The loops are written element by element with II = 1 and a word reload every
// AXI_LANES elements, the shape Vitis HLS turns into one m_axi burst per call.
#ifndef M3VIT_DMA_H
#define M3VIT_DMA_H

#include "m3vit_ledger.h"
#include "m3vit_types.h"

namespace m3vit {

// dma_read<CB>(base, e0, n, dst): dst[k] = element e0 + k (sign-extended) of the lane array at `base`.
// Any alignment; reads ceil((e0 mod L + n) / L) words, one word per L elements (L = lanes per word).
template <int CB, class W, class T>
void dma_read(const W* base, uint64_t e0, int n, T* dst) {
    const int L = AxiLanes<W, CB>::value;
    if (n <= 0) return;
    uint64_t idx = e0;
    W w = base[idx / L];
DMA_READ:
    for (int k = 0; k < n; k++) {
#pragma HLS PIPELINE II = 1
        M3VIT_LEDGER_PIPELINE(DMA_READ, k == 0, 1, 3);
        const int lane = int(idx % L);
        if (lane == 0 && k > 0) w = base[idx / L];
        dst[k] = T(lane_get<CB>(w, lane));
        idx++;
    }
}

// dma_write<CB>(base, e0, n, src): store n elements at element e0, which must start an AXI word; the
// unused lanes of the last word are written as zeros (rows are padded to whole words).
template <int CB, class W, class T>
void dma_write(W* base, uint64_t e0, int n, const T* src) {
    const int L = AxiLanes<W, CB>::value;
    uint64_t wi = e0 / L;
    W w;
    word_clear(w);
DMA_WRITE:
    for (int k = 0; k < n; k++) {
#pragma HLS PIPELINE II = 1
        M3VIT_LEDGER_PIPELINE(DMA_WRITE, k == 0, 1, 3);
        const int lane = k % L;
        lane_set<CB>(w, lane, src[k]);
        if (lane == L - 1 || k == n - 1) {
            base[wi++] = w;
            word_clear(w);
        }
    }
}

// dma_read_row<CB>(base, e0, n, dst, r): dma_read into row r of a 2-D on-chip array.
template <int CB, class W, class T, int C>
void dma_read_row(const W* base, uint64_t e0, int n, T dst[][C], int r) {
    const int L = AxiLanes<W, CB>::value;
    if (n <= 0) return;
    uint64_t idx = e0;
    W w = base[idx / L];
DMA_READ_ROW:
    for (int k = 0; k < n; k++) {
#pragma HLS PIPELINE II = 1
        M3VIT_LEDGER_PIPELINE(DMA_READ_ROW, k == 0, 1, 3);
        const int lane = int(idx % L);
        if (lane == 0 && k > 0) w = base[idx / L];
        dst[r][k] = T(lane_get<CB>(w, lane));
        idx++;
    }
}

// dma_write_row<CB>(base, e0, n, src, r): dma_write of row r of a 2-D on-chip array.
template <int CB, class W, class T, int C>
void dma_write_row(W* base, uint64_t e0, int n, const T src[][C], int r) {
    const int L = AxiLanes<W, CB>::value;
    uint64_t wi = e0 / L;
    W w;
    word_clear(w);
DMA_WRITE_ROW:
    for (int k = 0; k < n; k++) {
#pragma HLS PIPELINE II = 1
        M3VIT_LEDGER_PIPELINE(DMA_WRITE_ROW, k == 0, 1, 3);
        const int lane = k % L;
        lane_set<CB>(w, lane, src[r][k]);
        if (lane == L - 1 || k == n - 1) {
            base[wi++] = w;
            word_clear(w);
        }
    }
}

}  // namespace m3vit

#endif  // M3VIT_DMA_H
