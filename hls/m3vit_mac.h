// m3vit_mac.h — the one MAC array every matmul runs on (docs/numerics.md §5, docs/hls.md).
//
// The array is MAC_OUT × MAC_IN multipliers around a stationary tile W[MO][MI]: each cycle one streamed
// vector a[MI] enters and MO exact dot products ps[mo] = Σ_mi W[mo][mi]·a[mi] leave. It is a single
// function (mac_array, INLINE off) that every matmul loop calls; the top function's ALLOCATION pragma
// limits it to one instance, so the whole design has MO·MI/2 multiplier DSPs.
//
// DSP mapping (m3vit_dsp_pack.h, Xilinx WP486): when both operands of a matmul are ≤ 8 bits (mode
// `packed`), rows 2p and 2p+1 share one DSP48E2 per input lane — their weights sit 18 bits apart on
// the pre-adder, the streamed value on the B port — and runs of PACK_LEN lanes cascade through the P
// accumulators before one unpack; all MO rows per cycle. Otherwise (mode wide: 16-bit inputs of the
// patch embedding, 17-bit probabilities of p·v) each DSP multiplies one W (≤ 27 bits) by one a (≤ 18
// bits): rows with mo ≡ phase (mod 2) per cycle, two cycles per vector. C simulation computes exactly
// this arithmetic, so a packed run that could overflow its lane would fail the bit-exact tests.
#ifndef M3VIT_MAC_H
#define M3VIT_MAC_H

#include "m3vit_config.h"
#include "m3vit_dsp_pack.h"
#include "m3vit_prims.h"

namespace m3vit {

// Packed operands are at most 8 bits; the longest exact cascade of int8 × int8 products.
static const int PACK_BITS = 8;
static const int PACK_LEN = dsp_pack<PACK_BITS, PACK_BITS>::max_len;

// M3VIT_CSIM_UNROLL: g++ (native-type C simulation) unrolls the next loop completely, as the HLS UNROLL pragma
// inside it tells synthesis to. Unrolled, the lane loop's PACK_LEN cascades are independent dependency
// chains with compile-time run boundaries. Empty for synthesis, the lint, ap_int builds (their compile time
// would grow more than their run time shrinks) and other compilers.
#if defined(__GNUC__) && !defined(__clang__) && !defined(__SYNTHESIS__) && !defined(M3VIT_AP_TYPES)
#define M3VIT_CSIM_UNROLL _Pragma("GCC unroll 64")
#else
#define M3VIT_CSIM_UNROLL
#endif

// mac_rows<PACKING_ARRAY, MODE>(w, a, packed, phase, ps): the array's datapath, for a packing array (1) or one
// multiplier per lane (0); only the design's one is instantiated. MODE is the pre-adder's input select:
// MAC_MODE_RUN (the synthesised multiplexer, chosen by `packed` each cycle), or resolved at compile time
// (MAC_MODE_WIDE / MAC_MODE_PACKED: C simulation only, the same arithmetic without the per-lane select).
static const int MAC_MODE_RUN = -1;
static const int MAC_MODE_WIDE = 0;
static const int MAC_MODE_PACKED = 1;

// A packing array (the primary template; PACKING_ARRAY = 0 is the specialisation below): one DSP48E2 per
// (row pair, lane). Its pre-adder input is the pair's two int8 weights 18 bits apart (packed) or the phase
// row's operand alone (wide); B is the streamed value; P cascades over runs of PACK_LEN lanes and is
// unpacked (or, wide, read whole: such a run never wraps) after each run.
template <int PACKING_ARRAY, int MODE>
inline void mac_rows(const cfg::mac_w_t w[cfg::MAC_OUT][cfg::MAC_IN], const cfg::mac_a_t a[cfg::MAC_IN],
                     bool packed_in, int phase, cfg::mac_ps_t ps[cfg::MAC_OUT]) {
    {
#pragma HLS INLINE
        using namespace cfg;
        typedef sint<PACK_BITS>::t p8;
        const bool packed = MODE == MAC_MODE_RUN ? packed_in : MODE == MAC_MODE_PACKED;
        const int row = phase < 0 ? 0 : phase;
    MAC_PAIRS:
        for (int p = 0; p < MAC_OUT / 2; p++) {
#pragma HLS UNROLL
            const mac_w_t* w_hi = w[2 * p + 1];                   // packed: the A port's row (the high lane)
            const mac_w_t* w_lo = w[2 * p + (packed ? 0 : row)];  // packed: D's row (low lane); wide: the operand
            mac_ps_t hi = 0, lo = 0, one = 0;
            dsp_p_t acc = 0;
            int run = 0;  // lanes already in the current cascade
        MAC_LANES:
            M3VIT_CSIM_UNROLL
            for (int k = 0; k < MAC_IN; k++) {
#pragma HLS UNROLL
                const dsp_ad_t ad = packed ? dsp_pack_ad<PACK_BITS>(p8(w_hi[k]), p8(w_lo[k])) : dsp_ad_t(w_lo[k]);
                acc = dsp_madd(run == 0 ? dsp_p_t(0) : acc, ad, dsp_b_t(a[k]));
                if (++run == PACK_LEN || k == MAC_IN - 1) {  // the end of a cascade
                    run = 0;
                    dsp_hi_t h;
                    dsp_lo_t l;
                    dsp_pack_unpack(acc, h, l);
                    hi += mac_ps_t(h);
                    lo += mac_ps_t(l);
                    one += mac_ps_t(acc);
                }
            }
            if (packed) {
                ps[2 * p + 1] = hi;
                ps[2 * p] = lo;
            } else {
                ps[2 * p + row] = one;
            }
        }
    }
}

// An array that does not pack (weights wider than 8 bits): one multiplier per lane, every row every cycle.
template <>
inline void mac_rows<0, MAC_MODE_RUN>(const cfg::mac_w_t w[cfg::MAC_OUT][cfg::MAC_IN], const cfg::mac_a_t a[cfg::MAC_IN],
                                      bool, int, cfg::mac_ps_t ps[cfg::MAC_OUT]) {
    {
#pragma HLS INLINE
        using namespace cfg;
    MAC_ROWS:
        for (int r = 0; r < MAC_OUT; r++) {
#pragma HLS UNROLL
            mac_ps_t s = 0;
        MAC_WIDE:
            for (int k = 0; k < MAC_IN; k++) {
#pragma HLS UNROLL
                s += mac_ps_t(mac_ps_t(w[r][k]) * a[k]);
            }
            ps[r] = s;
        }
    }
}

// mac_array(w, a, packed, phase, ps): ps[mo] = Σ_mi w[mo][mi]·a[mi] for the rows this cycle computes —
// all MO rows when packed or when the array does not pack at all (ARRAY_PACKED = 0: MO·MI DSPs, phase
// -1), else the rows with mo % 2 == phase (the others are left unchanged).
// Fully pipelined, II = 1: MO·MI/2 DSP48E2 on a packing array.
inline void mac_array(const cfg::mac_w_t w[cfg::MAC_OUT][cfg::MAC_IN], const cfg::mac_a_t a[cfg::MAC_IN],
                      bool packed, int phase, cfg::mac_ps_t ps[cfg::MAC_OUT]) {
#pragma HLS INLINE off
#pragma HLS PIPELINE II = 1
#ifdef __SYNTHESIS__
    mac_rows<cfg::ARRAY_PACKED, MAC_MODE_RUN>(w, a, packed, phase, ps);
#else
    // C simulation: the same datapath with the pre-adder's select resolved once per call instead of per lane
    if (packed)
        mac_rows<cfg::ARRAY_PACKED, cfg::ARRAY_PACKED ? MAC_MODE_PACKED : MAC_MODE_RUN>(w, a, packed, phase, ps);
    else
        mac_rows<cfg::ARRAY_PACKED, cfg::ARRAY_PACKED ? MAC_MODE_WIDE : MAC_MODE_RUN>(w, a, packed, phase, ps);
#endif
}

// req_rt(acc, shift, bits, nsat) = SAT_bits(RSHR(acc, shift)) with run-time shift and width (the
// requantiser behind the array, shared by every matmul): identical to req<S, B> for S = shift, B = bits.
template <class T>
inline T req_rt(T acc, int shift, int bits, uint32_t& nsat) {
    const T r = rshr_rt<T>(acc, shift);
    const T hi = T((T(1) << (bits - 1)) - 1);
    const T lo = T(-hi - 1);
    if (r > hi) {
        nsat++;
        return hi;
    }
    if (r < lo) {
        nsat++;
        return lo;
    }
    return r;
}

}  // namespace m3vit

#endif  // M3VIT_MAC_H
