// m3vit_types.h — integer types and AXI-word lane access of the M3ViT accelerator kernels.
//
// Every datapath value is an exact two's-complement integer (docs/numerics.md). Kernels name their
// types through `sint<W>::t` (a signed integer of at least W bits):
//   * synthesis and Vitis C simulation: ap_int<W> — exactly the widths the generator computed;
//   * fast C simulation (-DM3VIT_NATIVE_TYPES, never under __SYNTHESIS__): the smallest native
//     integer holding W bits. The generator proves every intermediate fits its declared width, so both
//     choices compute the same integers; native types let g++ vectorise the MAC loops.
// AXI words: `axi_word<B>::t` is ap_uint<B> (or a plain struct of 64-bit limbs natively); lanes are
// little-endian, lane i of a CB-bit container occupies bits [i·CB, i·CB + CB).
#ifndef M3VIT_TYPES_H
#define M3VIT_TYPES_H

#include <cstddef>
#include <cstdint>
#include <type_traits>

#if defined(__SYNTHESIS__) || !defined(M3VIT_NATIVE_TYPES)
#define M3VIT_AP_TYPES 1
#include <ap_int.h>
#endif

namespace m3vit {

#ifdef M3VIT_AP_TYPES
template <int W>
struct sint {
    typedef ap_int<W> t;
};
template <int W>
struct uint {
    typedef ap_uint<W> t;
};
template <int B>
struct axi_word {
    typedef ap_uint<B> t;
};
#else
template <int W>
struct sint {
    static_assert(W >= 1 && W <= 64, "native C simulation holds at most 64-bit integers");
    typedef typename std::conditional<
        (W <= 8), int8_t,
        typename std::conditional<(W <= 16), int16_t,
                                  typename std::conditional<(W <= 32), int32_t, int64_t>::type>::type>::type t;
};
template <int W>
struct uint {
    static_assert(W >= 1 && W <= 64, "native C simulation holds at most 64-bit integers");
    typedef typename std::conditional<
        (W <= 8), uint8_t,
        typename std::conditional<(W <= 16), uint16_t,
                                  typename std::conditional<(W <= 32), uint32_t, uint64_t>::type>::type>::type t;
};
template <int B>
struct native_word {
    uint64_t limb[B / 64];
};
template <int B>
struct axi_word {
    typedef native_word<B> t;
};
#endif

// The wide scalar type of per-token arithmetic (LayerNorm statistics, softmax state, reciprocals).
// The generator rejects designs whose intermediates need more than 63 bits.
typedef sint<64>::t i64;
typedef uint<64>::t u64;
// R of recip() (m3vit_prims.h): in [2^15, 2^16], so an 18-bit signed operand (one DSP48E2 port).
typedef sint<18>::t recip_t;

// ---------------------------------------------------------------------------------- lane access
// lane_get<CB>(w, i): sign-extended lane i (CB-bit container) of an AXI word. Combinational.
// lane_set<CB>(w, i, v): store the low CB bits of v into lane i. Combinational.
#ifdef M3VIT_AP_TYPES
template <int CB, int B>
inline typename sint<CB>::t lane_get(const ap_uint<B>& w, int i) {
    typename sint<CB>::t v;
    v.range(CB - 1, 0) = w.range(i * CB + CB - 1, i * CB);
    return v;
}
template <int CB, int B, class T>
inline void lane_set(ap_uint<B>& w, int i, T v) {
    typename sint<CB>::t c = v;
    w.range(i * CB + CB - 1, i * CB) = c.range(CB - 1, 0);
}
template <int B>
inline void word_clear(ap_uint<B>& w) {
    w = 0;
}
// Bytes ↔ words (host side of the C simulation only).
template <int B>
inline void word_from_bytes(ap_uint<B>& w, const uint8_t* p) {
    for (int k = 0; k < B / 64; k++) {
        uint64_t q = 0;
        for (int b = 0; b < 8; b++) q |= uint64_t(p[8 * k + b]) << (8 * b);
        w.range(64 * k + 63, 64 * k) = q;
    }
}
template <int B>
inline void word_to_bytes(const ap_uint<B>& w, uint8_t* p) {
    for (int k = 0; k < B / 64; k++) {
        uint64_t q = w.range(64 * k + 63, 64 * k).to_uint64();
        for (int b = 0; b < 8; b++) p[8 * k + b] = uint8_t(q >> (8 * b));
    }
}
#else
template <int CB, int B>
inline typename sint<CB>::t lane_get(const native_word<B>& w, int i) {
    const int bit = i * CB;
    const uint64_t q = w.limb[bit >> 6] >> (bit & 63);
    typedef typename sint<CB>::t T;
    typedef typename uint<CB>::t U;
    return T(U(q));  // two's-complement narrowing (well defined since C++20, the g++ behaviour before)
}
template <int CB, int B, class T>
inline void lane_set(native_word<B>& w, int i, T v) {
    const int bit = i * CB;
    const uint64_t mask = (CB == 64) ? ~uint64_t(0) : ((uint64_t(1) << CB) - 1);
    const uint64_t q = uint64_t(int64_t(v)) & mask;
    uint64_t& limb = w.limb[bit >> 6];
    limb = (limb & ~(mask << (bit & 63))) | (q << (bit & 63));
}
template <int B>
inline void word_clear(native_word<B>& w) {
    for (int k = 0; k < B / 64; k++) w.limb[k] = 0;
}
template <int B>
inline void word_from_bytes(native_word<B>& w, const uint8_t* p) {
    for (int k = 0; k < B / 64; k++) {
        uint64_t q = 0;
        for (int b = 0; b < 8; b++) q |= uint64_t(p[8 * k + b]) << (8 * b);
        w.limb[k] = q;
    }
}
template <int B>
inline void word_to_bytes(const native_word<B>& w, uint8_t* p) {
    for (int k = 0; k < B / 64; k++)
        for (int b = 0; b < 8; b++) p[8 * k + b] = uint8_t(w.limb[k] >> (8 * b));
}
#endif

// word_bits<W>::value: width of an AXI word type; AxiLanes<W, CB>::value: CB-bit lanes per word.
template <class W>
struct word_bits;
#ifdef M3VIT_AP_TYPES
template <int B>
struct word_bits<ap_uint<B> > {
    static const int value = B;
};
#else
template <int B>
struct word_bits<native_word<B> > {
    static const int value = B;
};
#endif
template <class W, int CB>
struct AxiLanes {
    static const int value = word_bits<W>::value / CB;
};

// Conversions to built-in integers for indices and host code (ap types and native alike).
template <class T>
inline int64_t to_i64(const T& v) {
    return int64_t(v);
}

}  // namespace m3vit

#endif  // M3VIT_TYPES_H
