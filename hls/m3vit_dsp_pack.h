// m3vit_dsp_pack.h — two signed multiplies sharing one operand in one DSP48E2 (the packing of Xilinx
// WP486), written out at the DSP's port widths so that C simulation computes what the DSP computes.
//
// Packing (DSP48E2 ports: A/D into the 27-bit pre-adder, B 18 bits, multiplier 27 × 18 → 45 bits,
// P 48 bits, wrapping):
//   AD = (w_hi << 18) + w_lo           pre-adder, A = w_hi << 18, D = w_lo sign-extended; 27 bits
//   M  = AD · a                        = w_hi·a · 2^18 + w_lo·a; exact in 45 bits
//   P  = P + M  (mod 2^48)             the DSP's accumulator (or the PCIN cascade of a DSP column)
// After n steps P = HI · 2^18 + LO with HI = Σ w_hi·a, LO = Σ w_lo·a. The low lane is the low 18 bits
// read as signed; a negative LO borrows 1 from the high lane, so the correction adds bit 17 back:
//   LO = sext(P[17:0]),   HI = P[47:18] + P[17]        (one 30-bit add, once per run)
// The correction is applied once, when a run is unpacked, not per step: per-step unpacking would need
// two fabric adders per DSP per cycle, while the borrow of a whole run is repaired by the same single
// carry-in (P[17] as the carry of the adder that consumes HI).
//
// Exactness: LO must stay inside the 18-bit signed lane, HI inside 30 bits (P[47:18]), and P itself
// inside 48 bits. With WB-bit weights and AB-bit activations the products lie in
// [-(2^(WB+AB-2) - 2^(min(WB,AB)-1)), 2^(WB+AB-2)], so a run of n products is exact iff
//   n · 2^(WB+AB-2) ≤ 2^17 - 1  and  n · (2^(WB+AB-2) - 2^(min(WB,AB)-1)) ≤ 2^17,
// i.e. n ≤ dsp_pack<WB, AB>::max_len. The low lane is always the binding limit (HI and P have ≥ 11
// spare bits at that length), so P never wraps in an exact run; the wrap is modelled anyway (ap_int<48>
// or an explicit 48-bit sign extension) so that runs past the limit fail exactly as the DSP would.
//   int8 × int8: products in [-16256, 16384]; max_len = 7 (8 × (-128)·(-128) = 2^17 overflows the lane;
//   eight products stay exact when no product is (-128)·(-128)).
//
// Supported operand widths: weights (on A:D) of 2 … 8 bits — the pre-adder holds w_hi·2^18 + w_lo in 27
// bits only up to 8 — and activations (on B) of 2 … 18 - WB bits, so that one product fits the lane:
// int4 … int8 weights with int2 … int8 activations (int8 weights: up to int10 activations, max_len 1).
// Other widths (e.g. 16-bit activations, 17-bit attention probabilities) are refused at compile time;
// such matmuls use one multiply per DSP.
//
// Functions (all inline; II = 1; latency is the DSP's: 1 pre-adder + 1 multiplier + 1 P register, plus
// the 30-bit correction add when unpacking):
//   dsp_pack_ad<WB>(w_hi, w_lo)            the pre-adder output AD (27 bits)
//   dsp_pack_madd<WB, AB>(P, AD, a)        one DSP step: P + AD·a (mod 2^48)
//   dsp_pack_mul<WB, AB>(w_hi, w_lo, a)    a single packed product P = AD·a
//   dsp_pack_unpack(P, hi, lo)             the correction: two signed lanes (30 and 18 bits)
//   dsp_pack_mac<WB, AB>(w_hi, w_lo, a, n, hi, lo)   a run of n ≤ max_len steps, unpacked once at the end;
//                                          n + 3 cycles, II = 1
//   dsp_pack_dot<WB, AB>(w_hi, w_lo, a, n, hi, lo)   any n ≥ 0: packed runs of max_len steps, each
//                                          unpacked into the caller's wide accumulators; n + 4 cycles, II = 1
#ifndef M3VIT_DSP_PACK_H
#define M3VIT_DSP_PACK_H

#include "m3vit_prims.h"
#include "m3vit_types.h"

namespace m3vit {

// DSP48E2 port widths and the lane offset of the packing.
static const int DSP_AD_BITS = 27;  // pre-adder output / multiplier input
static const int DSP_B_BITS = 18;
static const int DSP_M_BITS = 45;  // multiplier output
static const int DSP_P_BITS = 48;
static const int DSP_PACK_SHIFT = 18;                           // low lane width, offset of the high lane
static const int DSP_PACK_HI_BITS = DSP_P_BITS - DSP_PACK_SHIFT;  // 30

// dsp_pack<WB, AB>: whether WB-bit weights × AB-bit activations pack two to a DSP, and the longest run
// that is exact for every operand value (0 when unsupported).
template <int WB, int AB>
struct dsp_pack {
    static const int64_t prod_max = int64_t(1) << (WB + AB - 2);  // (-2^(WB-1)) · (-2^(AB-1))
    static const int64_t prod_min_abs = prod_max - (int64_t(1) << ((WB < AB ? WB : AB) - 1));
    static const bool supported = WB >= 2 && WB <= 8 && AB >= 2 && WB + AB <= DSP_PACK_SHIFT;
    static const int64_t len_pos = ((int64_t(1) << (DSP_PACK_SHIFT - 1)) - 1) / prod_max;
    static const int64_t len_neg = (int64_t(1) << (DSP_PACK_SHIFT - 1)) / prod_min_abs;
    static const int max_len = supported ? int(len_pos < len_neg ? len_pos : len_neg) : 0;
};

#ifdef M3VIT_AP_TYPES
typedef ap_int<DSP_AD_BITS> dsp_ad_t;
typedef ap_int<DSP_B_BITS> dsp_b_t;
typedef ap_int<DSP_M_BITS> dsp_m_t;
typedef ap_int<DSP_P_BITS> dsp_p_t;
typedef ap_int<DSP_PACK_SHIFT> dsp_lo_t;
typedef ap_int<DSP_PACK_HI_BITS> dsp_hi_t;
#else
// Native C simulation: the same arithmetic in 64-bit integers, wrapped to the port widths explicitly.
typedef int32_t dsp_ad_t;
typedef int32_t dsp_b_t;
typedef int64_t dsp_m_t;
typedef int64_t dsp_p_t;
typedef int32_t dsp_lo_t;
typedef int32_t dsp_hi_t;
template <int W>
inline int64_t dsp_wrap(int64_t v) {  // v mod 2^W as a signed W-bit value
    return int64_t(uint64_t(v) << (64 - W)) >> (64 - W);
}
#endif

template <int WB, int AB>
struct dsp_pack_check {
    static_assert(dsp_pack<WB, AB>::supported,
                  "dsp_pack: unsupported operand widths; weights need 2..8 bits and activations 2..(18 - weight "
                  "bits) bits");
};

// The pre-adder: AD = (w_hi << 18) + w_lo, 27 bits (never wraps for WB ≤ 8). Combinational.
template <int WB>
inline dsp_ad_t dsp_pack_ad(typename sint<WB>::t w_hi, typename sint<WB>::t w_lo) {
#pragma HLS INLINE
    static_assert(WB >= 2 && WB <= 8, "dsp_pack_ad: weights need 2..8 bits");
#ifdef M3VIT_AP_TYPES
    const dsp_ad_t a_port = dsp_ad_t(w_hi) << DSP_PACK_SHIFT;
    const dsp_ad_t d_port = dsp_ad_t(w_lo);
    return dsp_ad_t(a_port + d_port);
#else
    return dsp_ad_t(dsp_wrap<DSP_AD_BITS>(int64_t(w_hi) * (int64_t(1) << DSP_PACK_SHIFT) + int64_t(w_lo)));
#endif
}

// One DSP step with any operands that fit the ports: P + AD · B (mod 2^48), AD ≤ 27 bits, B ≤ 18 bits.
inline dsp_p_t dsp_madd(dsp_p_t p, dsp_ad_t ad, dsp_b_t b) {
#pragma HLS INLINE
#ifdef M3VIT_AP_TYPES
    const dsp_m_t m = ad * b;
    return dsp_p_t(p + m);
#else
    const dsp_m_t m = dsp_wrap<DSP_M_BITS>(int64_t(ad) * int64_t(b));
    return dsp_p_t(dsp_wrap<DSP_P_BITS>(int64_t(p) + m));
#endif
}

// One packed DSP step: P + AD · a (mod 2^48), checked for the packing's operand widths.
template <int WB, int AB>
inline dsp_p_t dsp_pack_madd(dsp_p_t p, dsp_ad_t ad, typename sint<AB>::t a) {
#pragma HLS INLINE
    (void)sizeof(dsp_pack_check<WB, AB>);
    return dsp_madd(p, ad, dsp_b_t(a));
}

// A single packed product: P = (w_hi·2^18 + w_lo) · a.
template <int WB, int AB>
inline dsp_p_t dsp_pack_mul(typename sint<WB>::t w_hi, typename sint<WB>::t w_lo, typename sint<AB>::t a) {
#pragma HLS INLINE
    return dsp_pack_madd<WB, AB>(dsp_p_t(0), dsp_pack_ad<WB>(w_hi, w_lo), a);
}

// The correction: lo = sext(P[17:0]), hi = P[47:18] + P[17] (mod 2^30). Exact when the run that
// produced P was at most max_len long.
inline void dsp_pack_unpack(dsp_p_t p, dsp_hi_t& hi, dsp_lo_t& lo) {
#pragma HLS INLINE
#ifdef M3VIT_AP_TYPES
    lo.range(DSP_PACK_SHIFT - 1, 0) = p.range(DSP_PACK_SHIFT - 1, 0);
    dsp_hi_t top;
    top.range(DSP_PACK_HI_BITS - 1, 0) = p.range(DSP_P_BITS - 1, DSP_PACK_SHIFT);
    hi = dsp_hi_t(top + dsp_hi_t(p[DSP_PACK_SHIFT - 1]));
#else
    lo = dsp_lo_t(dsp_wrap<DSP_PACK_SHIFT>(p));
    hi = dsp_hi_t(dsp_wrap<DSP_PACK_HI_BITS>((int64_t(p) >> DSP_PACK_SHIFT) + ((int64_t(p) >> (DSP_PACK_SHIFT - 1)) & 1)));
#endif
}

// A run of n packed steps (0 ≤ n ≤ max_len), accumulated in P and unpacked once at the end:
// hi = Σ w_hi[k]·a[k], lo = Σ w_lo[k]·a[k]. Latency n + 3 cycles, II = 1 (P's feedback stays in the DSP).
template <int WB, int AB>
inline void dsp_pack_mac(const typename sint<WB>::t* w_hi, const typename sint<WB>::t* w_lo,
                         const typename sint<AB>::t* a, int n, dsp_hi_t& hi, dsp_lo_t& lo) {
    static const int MAX_LEN = dsp_pack<WB, AB>::max_len;
    M3VIT_REQUIRE(n >= 0 && n <= MAX_LEN, "dsp_pack_mac: 0 <= n <= dsp_pack::max_len");
    dsp_p_t p = 0;
DSP_PACK_MAC:
    for (int k = 0; k < n; k++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT min = 1 max = MAX_LEN
        p = dsp_pack_madd<WB, AB>(p, dsp_pack_ad<WB>(w_hi[k], w_lo[k]), a[k]);
    }
    dsp_pack_unpack(p, hi, lo);
}

// A dot product pair of any length n ≥ 0: packed runs of max_len steps, each unpacked (corrected) and
// added into the wide accumulators hi, lo (ACC must hold the full sums, e.g. acc_bits). The accumulators
// are added to, not cleared. Latency n + 4 cycles, II = 1; one unpack per max_len steps.
template <int WB, int AB, class ACC>
inline void dsp_pack_dot(const typename sint<WB>::t* w_hi, const typename sint<WB>::t* w_lo,
                         const typename sint<AB>::t* a, int n, ACC& hi, ACC& lo) {
    const int L = dsp_pack<WB, AB>::max_len;
    (void)sizeof(dsp_pack_check<WB, AB>);
    dsp_p_t p = 0;
    int run = 0;
DSP_PACK_DOT:
    for (int k = 0; k < n; k++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT min = 1 max = 4096
        p = dsp_pack_madd<WB, AB>(run == 0 ? dsp_p_t(0) : p, dsp_pack_ad<WB>(w_hi[k], w_lo[k]), a[k]);
        run++;
        if (run == L || k == n - 1) {
            dsp_hi_t h;
            dsp_lo_t l;
            dsp_pack_unpack(p, h, l);
            hi += h;
            lo += l;
            run = 0;
        }
    }
}

}  // namespace m3vit

#endif  // M3VIT_DSP_PACK_H
