// m3vit_burst.h — word-wide burst DMA between m_axi buffers and hls::streams, and lane (un)packers.
//
// DDR holds little-endian lanes of a CB-bit container (8/16/32/64) packed into AXI words of B bits
// (codegen/layout.py: lane i of a word occupies bits [i·CB, i·CB + CB)); a run of `count` elements
// starts on a word boundary and occupies ceil(count / L) words, L = B / CB, the tail lanes of the last
// word being padding. The movers never look inside a word: one unconditional, unit-stride read or write
// per cycle, the loop shape Vitis HLS turns into maximal m_axi bursts (split by the interface's
// max_read/write_burst_length, overlapped up to its num_read/write_outstanding). The (un)packers work
// on one whole word per cycle, all L lanes in parallel.
//
//   burst_read<MAX_WORDS>(src, n_words, out)      out ← src[0], …, src[n_words - 1]
//       latency n_words + the m_axi read latency + 2 cycles; II = 1 (one word per cycle)
//   burst_write<MAX_WORDS>(in, dst, n_words)      dst[0 …) ← n_words words of `in`
//       latency n_words + 2 cycles to the last request (plus the write-response latency); II = 1
//   lanes_unpack<CB, MAX_ELEMS>(in, out, count)   each word of `in` → one lanes<T, L> (sign-extended);
//       lanes at element index ≥ count (the last word's padding) are 0. ceil(count / L) words;
//       latency ceil(count / L) + 1 cycles; II = 1 (L elements per cycle)
//   lanes_pack<CB, MAX_ELEMS>(in, out, count)     each lanes<T, L> of `in` → one word; lanes at index ≥
//       count are written as 0 (whatever `in` held there). Same latency and II
//   burst_words<W, CB>(count)                     ceil(count / L): words of a run of count elements
//
// MAX_WORDS / MAX_ELEMS bound the run (LOOP_TRIPCOUNT; a longer run violates the contract). W is
// axi_word<B>::t (ap_uint<B>, or the native word of -DM3VIT_NATIVE_TYPES); CB is 8, 16, 32 or 64.
#ifndef M3VIT_BURST_H
#define M3VIT_BURST_H

#include "m3vit_dataflow.h"

#include "m3vit_ledger.h"
#include "m3vit_prims.h"
#include "m3vit_types.h"

namespace m3vit {

// The L lanes of one AXI word, as a single stream element (one word per cycle).
template <class T, int L>
struct lanes {
    T v[L];
};

// ceil(count / L): words holding a run of count CB-bit elements.
template <class W, int CB>
inline int burst_words(int count) {
#pragma HLS INLINE
    const int L = AxiLanes<W, CB>::value;
    return (count + L - 1) / L;
}

template <int MAX_WORDS, class W>
void burst_read(const W* src, int n_words, hls::stream<W>& out) {
    M3VIT_REQUIRE(n_words >= 0 && n_words <= MAX_WORDS, "burst_read: 0 <= n_words <= MAX_WORDS");
BURST_READ:
    for (int i = 0; i < n_words; i++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT min = 1 max = MAX_WORDS
        out.write(src[i]);
    }
}

template <int MAX_WORDS, class W>
void burst_write(hls::stream<W>& in, W* dst, int n_words) {
    M3VIT_REQUIRE(n_words >= 0 && n_words <= MAX_WORDS, "burst_write: 0 <= n_words <= MAX_WORDS");
BURST_WRITE:
    for (int i = 0; i < n_words; i++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT min = 1 max = MAX_WORDS
        dst[i] = in.read();
    }
}

template <int CB, int MAX_ELEMS, class W, class T>
void lanes_unpack(hls::stream<W>& in, hls::stream<lanes<T, AxiLanes<W, CB>::value> >& out, int count) {
    static const int L = AxiLanes<W, CB>::value;
    static const int MAX_WORDS = (MAX_ELEMS + L - 1) / L;
    static_assert((CB == 8 || CB == 16 || CB == 32 || CB == 64) && word_bits<W>::value % CB == 0,
                  "lanes_unpack: CB must be a container of 8/16/32/64 bits dividing the AXI word");
    M3VIT_REQUIRE(count >= 0 && count <= MAX_ELEMS, "lanes_unpack: 0 <= count <= MAX_ELEMS");
    const int n_words = burst_words<W, CB>(count);
LANES_UNPACK:
    for (int i = 0; i < n_words; i++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT min = 1 max = MAX_WORDS
        const W w = in.read();
        const int valid = count - i * L;  // lanes of this word inside the run (≥ L except for the last)
        lanes<T, L> out_lanes;
#pragma HLS ARRAY_PARTITION variable = out_lanes.v complete
        for (int k = 0; k < L; k++) {
#pragma HLS UNROLL
            out_lanes.v[k] = k < valid ? T(lane_get<CB>(w, k)) : T(0);
        }
        out.write(out_lanes);
    }
}

template <int CB, int MAX_ELEMS, class W, class T>
void lanes_pack(hls::stream<lanes<T, AxiLanes<W, CB>::value> >& in, hls::stream<W>& out, int count) {
    static const int L = AxiLanes<W, CB>::value;
    static const int MAX_WORDS = (MAX_ELEMS + L - 1) / L;
    static_assert((CB == 8 || CB == 16 || CB == 32 || CB == 64) && word_bits<W>::value % CB == 0,
                  "lanes_pack: CB must be a container of 8/16/32/64 bits dividing the AXI word");
    M3VIT_REQUIRE(count >= 0 && count <= MAX_ELEMS, "lanes_pack: 0 <= count <= MAX_ELEMS");
    const int n_words = burst_words<W, CB>(count);
LANES_PACK:
    for (int i = 0; i < n_words; i++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT min = 1 max = MAX_WORDS
        const lanes<T, L> in_lanes = in.read();
        const int valid = count - i * L;
        W w;
        word_clear(w);
        for (int k = 0; k < L; k++) {
#pragma HLS UNROLL
            lane_set<CB>(w, k, k < valid ? in_lanes.v[k] : T(0));
        }
        out.write(w);
    }
}

// burst_read_elems<CB>(base, e0, n, dst): dst[k] = element e0 + k (sign-extended) of the lane array at
// base; any alignment. One unconditional unit-stride word read per cycle, all L lanes unpacked in
// parallel; ceil((e0 mod L + n) / L) words.
template <int CB, class W, class T>
inline void burst_read_elems(const W* base, uint64_t e0, int n, T* dst) {
    const int L = AxiLanes<W, CB>::value;
    const uint64_t w0 = e0 / L;
    const int skip = int(e0 % L);
    const int n_words = (skip + n + L - 1) / L;
BURST_READ_ELEMS:
    for (int i = 0; i < n_words; i++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT min = 1 max = 512
        M3VIT_LEDGER_PIPELINE(BURST_READ_ELEMS, i == 0, 1, 4);
        const W w = base[w0 + i];
        for (int l = 0; l < L; l++) {
#pragma HLS UNROLL
            const int k = i * L + l - skip;
            if (k >= 0 && k < n) dst[k] = T(lane_get<CB>(w, l));
        }
    }
}

// burst_write_elems<CB>(base, n, src): n elements from word base on, whole words (padding lanes 0).
template <int CB, class W, class T>
inline void burst_write_elems(W* base, int n, const T* src) {
    const int L = AxiLanes<W, CB>::value;
    const int n_words = (n + L - 1) / L;
BURST_WRITE_ELEMS:
    for (int i = 0; i < n_words; i++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT min = 1 max = 512
        M3VIT_LEDGER_PIPELINE(BURST_WRITE_ELEMS, i == 0, 1, 4);
        W w;
        word_clear(w);
        for (int l = 0; l < L; l++) {
#pragma HLS UNROLL
            const int k = i * L + l;
            lane_set<CB>(w, l, k < n ? to_i64(src[k]) : int64_t(0));
        }
        base[i] = w;
    }
}

}  // namespace m3vit

#endif  // M3VIT_BURST_H
