// m3vit_prims.h — the shared integer primitives of docs/numerics.md §1 and §3.
//
// Each function is a small combinational or short sequential operator; all are exact for the
// operand widths the generator declares (it proves the bounds, docs/numerics.md states them).
// No floating point, no hls_math.
#ifndef M3VIT_PRIMS_H
#define M3VIT_PRIMS_H

#include "m3vit_ledger.h"
#include "m3vit_types.h"

namespace m3vit {

// ----------------------------------------------------------------------------------------- contracts
// M3VIT_REQUIRE(cond, what): a precondition of a primitive. Compiled out (and never synthesised) unless
// the includer defines M3VIT_CHECK_CONTRACTS and m3vit::contract_violation(), which is then called with
// `what` for every violated precondition (tests/test_hls_prims.py counts them).
#if defined(M3VIT_CHECK_CONTRACTS) && !defined(__SYNTHESIS__)
void contract_violation(const char* what);
#define M3VIT_REQUIRE(cond, what) ((cond) ? (void)0 : ::m3vit::contract_violation(what))
#else
#define M3VIT_REQUIRE(cond, what) ((void)0)
#endif

// type_bits<T>::value: width(T), the W of ap_int<W> / ap_uint<W>, or the bits of a native integer.
template <class T>
struct type_bits {
    static const int value = int(sizeof(T)) * 8;
};
#ifdef M3VIT_AP_TYPES
template <int W>
struct type_bits<ap_int<W> > {
    static const int value = W;
};
template <int W>
struct type_bits<ap_uint<W> > {
    static const int value = W;
};
#endif

// type_max<T>(): the largest value of a signed T of at most 64 bits, 2^(width(T) - 1) - 1.
template <class T>
inline int64_t type_max() {
    return int64_t((uint64_t(1) << (type_bits<T>::value - 1)) - 1);
}

// ------------------------------------------------------------------------------- saturation counters
// One counter per tensor class (docs/numerics.md §14), in the order of the scratch `sat` region.
enum SatClass { SAT_INPUT = 0, SAT_ACT, SAT_NORM, SAT_QKV, SAT_HIDDEN, SAT_LOGIT, SAT_SCORE, SAT_NUM };

struct SatCounters {
    uint32_t c[SAT_NUM];
};

inline void sat_clear(SatCounters& s) {
    for (int i = 0; i < SAT_NUM; i++) {
#pragma HLS UNROLL
        s.c[i] = 0;
    }
}

// ---------------------------------------------------------------------------------------- RSHR
// rshr<S>(x) = (x + 2^(S-1)) >> S, x for S = 0: round half up. T must hold x + 2^(S-1).
// Latency: one adder, combinational.
template <int S, class T>
inline T rshr(T x) {
    if (S == 0) return x;
    return T((x + (T(1) << (S > 0 ? S - 1 : 0))) >> S);
}

// rshr_rt<T>(x, s): the same with a run-time shift (a barrel shifter). Contract, for a signed T of at
// most 64 bits: 0 ≤ s ≤ width(T) - 2 (width = type_bits) and x + 2^(s-1) ≤ max(T) (a native T does not
// widen the sum). s = width(T) - 1 would still be exact while the sum fits, but leaves no spare bit; the
// contract keeps one. Checked under M3VIT_CHECK_CONTRACTS.
template <class T>
inline T rshr_rt(T x, int s) {
    M3VIT_REQUIRE(s >= 0 && s <= type_bits<T>::value - 2 &&
                      (s == 0 || to_i64(x) <= type_max<T>() - (int64_t(1) << (s - 1))),
                  "rshr_rt: 0 <= s <= width(T) - 2 and x + 2^(s-1) <= max(T)");
    if (s == 0) return x;
    return T((x + (T(1) << (s - 1))) >> s);
}

// ----------------------------------------------------------------------------------------- SAT
// sat_bits<B>(x, n) = min(max(x, -2^(B-1)), 2^(B-1) - 1); increments n when it clamps. Never wraps.
template <int B, class T>
inline T sat_bits(T x, uint32_t& n) {
    const int64_t hi = (int64_t(1) << (B - 1)) - 1;
    const int64_t lo = -hi - 1;
    if (x > hi) {
        n++;
        return T(hi);
    }
    if (x < lo) {
        n++;
        return T(lo);
    }
    return x;
}

// req<S, B>(acc, n) = SAT_B(RSHR(acc, S)): requantisation of an accumulator.
template <int S, int B, class T>
inline T req(T acc, uint32_t& n) {
    return sat_bits<B>(rshr<S>(acc), n);
}

// --------------------------------------------------------------------------------------- ISQRT
// isqrt_digit(v, res, bit): one digit step of the restoring square root (one result bit).
inline void isqrt_digit(u64& v, u64& res, u64& bit) {
    const u64 trial = res + bit;
    if (v >= trial) {
        v -= trial;
        res = (res >> 1) + bit;
    } else {
        res = res >> 1;
    }
    bit = bit >> 2;
}

// isqrt(v) = floor(sqrt(v)) for 0 ≤ v < 2^63: restoring digit-by-digit square root, one result bit per
// iteration (32 iterations, II = 1 each).
inline u64 isqrt(u64 v) {
    u64 res = 0;
    u64 bit = u64(1) << 62;
ISQRT:
    for (int i = 0; i < 32; i++) {
#pragma HLS PIPELINE II = 1
        M3VIT_LEDGER_PIPELINE(ISQRT, i == 0, 1, 2);
        isqrt_digit(v, res, bit);
    }
    return res;
}

// isqrt_unrolled(v): isqrt(v), the same 32 digit steps unrolled into one combinational chain, for a
// caller that pipelines one square root per cycle (LayerNorm rows).
inline u64 isqrt_unrolled(u64 v) {
    u64 res = 0;
    u64 bit = u64(1) << 62;
    for (int i = 0; i < 32; i++) {
#pragma HLS UNROLL
        isqrt_digit(v, res, bit);
    }
    return res;
}

// bit_length(v): index of the highest set bit plus one (0 for v = 0). A priority encoder.
inline int bit_length(u64 v) {
#ifndef M3VIT_AP_TYPES
    return v ? 64 - __builtin_clzll(v) : 0;
#else
    int n = 0;
BITLEN:
    for (int b = 0; b < 64; b++) {
#pragma HLS UNROLL
        if (v[b]) n = b + 1;
    }
    return n;
#endif
}

// --------------------------------------------------------------------------------------- RECIP
// recip(v) for 1 ≤ v < 2^47 (docs/numerics.md §3; the datapath needs v < 2^28): L = bit_length(v),
// R = floor((2^(L+15) + floor(v/2)) / v) ∈ [2^15, 2^16], so R·2^-(L+15) ≈ 1/v. The u64 numerator would
// even hold L = 48, but the spec's domain is the golden model's, whose int64 numerator needs L + 15 ≤ 62.
// One sequential divider; used once per token or softmax row.
inline void recip(u64 v, i64& R, int& L) {
    M3VIT_REQUIRE(v >= 1 && v < (u64(1) << 47), "recip: 1 <= v < 2^47");
    L = bit_length(v);
    const u64 num = (u64(1) << (L + 15)) + (v >> 1);
    R = i64(num / v);
}

// ------------------------------------------------------------------------------------- EXP2NEG
// exp2neg<FZ>(d, E) = RSHR(E[f], n) with u = -d, n = min(u >> FZ, 31), f = u mod 2^FZ: 2^(d/2^FZ) in
// Q.15 for d ≤ 0. One table read and a shifter; II = 1.
template <int FZ, class P>
inline P exp2neg(i64 d, const P table[]) {
    const i64 u = -d;
    i64 n = u >> FZ;
    if (n > 31) n = 31;
    const int f = int(to_i64(u & i64((1 << FZ) - 1)));
    typedef sint<33>::t w33;  // rshr_rt's contract: n ≤ 31 = 33 - 2, and E + 2^30 ≤ 2^15 + 2^30 < 2^32
    return P(rshr_rt<w33>(w33(table[f]), int(to_i64(n))));
}

// ---------------------------------------------------------------------------------------- GELU
// gelu(h): piecewise-linear GELU of docs/numerics.md §3 on the hidden format; LO/HI are the table's
// ends, SIGMA log2 of its segment width, G the 2^S + 1 breakpoints, GT a type holding (ΔG)·r.
// One table read pair and one LUT multiply; II = 1.
template <int64_t LO, int64_t HI, int SIGMA, class GT, class H>
inline H gelu(H h, const H table[]) {
    if (h < LO) return H(0);
    if (h >= HI) return h;
    const GT u = GT(h) - GT(LO);
    const int i = int(to_i64(u >> SIGMA));
    const GT r = u & GT((int64_t(1) << SIGMA) - 1);
    const GT g0 = table[i];
    const GT g1 = table[i + 1];
    const GT step = GT((g1 - g0) * r);  // a narrow product: LUTs, so that the GELU lanes take no DSP48E2
#pragma HLS BIND_OP variable = step op = mul impl = fabric
    return H(g0 + rshr<SIGMA>(step));
}

}  // namespace m3vit

#endif  // M3VIT_PRIMS_H
