// m3vit_kv_or_acc.h — kv_or_acc: the one on-chip buffer (URAM) that holds K and Vᵀ of a block while its
// attention needs them and the MoE accumulators while its experts run (docs/performance.md §4). They are never
// live together: the K/V stage writes K, Vᵀ; the attention reads them; the experts' writer overwrites the same
// words with the accumulators (a token's row is assigned by its first expert), and turns each token's row into
// the block output after its last expert, before the next block's K/V stage writes again.
//
// KVA_BANKS banks (cyclic) of 72-bit words; a word holds KV_PER_WORD K or V values (bits 0 … 63) or two
// accumulators (36 bits each). Word g lives in bank g mod KVA_BANKS at address g / KVA_BANKS, so the
// consecutive words one cycle touches (a MAC_IN slice of a K row or Vᵀ row, a lane group of an accumulator
// row) sit in distinct banks. Layout (words): K row t at t·KVA_K_ROW, Vᵀ row d at KVA_V_BASE + d·KVA_V_ROW,
// accumulator row t at t·KVA_A_ROW.
#ifndef M3VIT_KV_OR_ACC_H
#define M3VIT_KV_OR_ACC_H

#include "m3vit_config.h"
#include "m3vit_types.h"

namespace m3vit {

#ifdef M3VIT_AP_TYPES
typedef ap_uint<72> kva_word_t;
#else
struct kva_word_t {  // C simulation: the same contents, unpacked (values in lo; the second accumulator in hi)
    uint64_t lo;
    int64_t hi;
};
#endif

struct KvOrAcc {
    kva_word_t w[cfg::KVA_BANKS][cfg::KVA_DEPTH];
    cfg::qkv_t vrows[cfg::TOKEN_TILE][cfg::DIM];  // V rows of one token tile on their way into Vᵀ
};

inline const kva_word_t& kva_word(const KvOrAcc& s, int g) {
    return s.w[g & (cfg::KVA_BANKS - 1)][g >> cfg::KVA_LOG_BANKS];
}
inline kva_word_t& kva_word(KvOrAcc& s, int g) { return s.w[g & (cfg::KVA_BANKS - 1)][g >> cfg::KVA_LOG_BANKS]; }

// kva_values / kva_pack: the KV_PER_WORD K or V values of a word (sign-extended QKV_CB-bit lanes).
inline void kva_values(const kva_word_t& w, cfg::qkv_t v[cfg::KV_PER_WORD]) {
    using namespace cfg;
    for (int j = 0; j < KV_PER_WORD; j++) {
#pragma HLS UNROLL
#ifdef M3VIT_AP_TYPES
        v[j] = qkv_t(typename sint<QKV_CB>::t(w.range(QKV_CB * j + QKV_CB - 1, QKV_CB * j)));
#else
        v[j] = qkv_t(typename sint<QKV_CB>::t(typename uint<QKV_CB>::t(w.lo >> (QKV_CB * j))));
#endif
    }
}
inline kva_word_t kva_pack(const cfg::qkv_t v[cfg::KV_PER_WORD]) {
    using namespace cfg;
    kva_word_t w;
#ifdef M3VIT_AP_TYPES
    w = 0;
    for (int j = 0; j < KV_PER_WORD; j++) {
#pragma HLS UNROLL
        w.range(QKV_CB * j + QKV_CB - 1, QKV_CB * j) = typename uint<QKV_CB>::t(v[j]);
    }
#else
    w.lo = 0;
    w.hi = 0;
    for (int j = 0; j < KV_PER_WORD; j++) w.lo |= uint64_t(typename uint<QKV_CB>::t(v[j])) << (QKV_CB * j);
#endif
    return w;
}

// kva_acc / kva_set_acc: accumulator h (0, 1) of a word.
inline cfg::moe_sum_t kva_acc(const kva_word_t& w, int h) {
#ifdef M3VIT_AP_TYPES
    return cfg::moe_sum_t(ap_int<36>(h ? w.range(71, 36) : w.range(35, 0)));
#else
    return cfg::moe_sum_t(h ? w.hi : int64_t(w.lo));
#endif
}
inline void kva_set_acc(kva_word_t& w, int h, cfg::moe_sum_t v) {
#ifdef M3VIT_AP_TYPES
    if (h)
        w.range(71, 36) = ap_uint<36>(ap_int<36>(v));
    else
        w.range(35, 0) = ap_uint<36>(ap_int<36>(v));
#else
    if (h)
        w.hi = int64_t(v);
    else
        w.lo = uint64_t(int64_t(v));
#endif
}

// K row `tok`, columns c … c + KV_PER_WORD (c a multiple of KV_PER_WORD).
inline void k_read(const KvOrAcc& s, int tok, int c, cfg::qkv_t v[cfg::KV_PER_WORD]) {
    kva_values(kva_word(s, tok * cfg::KVA_K_ROW + c / cfg::KV_PER_WORD), v);
}
inline void k_write(KvOrAcc& s, int tok, int c, const cfg::qkv_t v[cfg::KV_PER_WORD]) {
    kva_word(s, tok * cfg::KVA_K_ROW + c / cfg::KV_PER_WORD) = kva_pack(v);
}
// Vᵀ row d (head dim), keys key … key + KV_PER_WORD (key a multiple of KV_PER_WORD).
inline void vt_read(const KvOrAcc& s, int d, int key, cfg::qkv_t v[cfg::KV_PER_WORD]) {
    kva_values(kva_word(s, cfg::KVA_V_BASE + d * cfg::KVA_V_ROW + key / cfg::KV_PER_WORD), v);
}
inline void vt_write(KvOrAcc& s, int d, int key, const cfg::qkv_t v[cfg::KV_PER_WORD]) {
    kva_word(s, cfg::KVA_V_BASE + d * cfg::KVA_V_ROW + key / cfg::KV_PER_WORD) = kva_pack(v);
}
// The word of token tok's accumulator row that holds columns 2·i and 2·i + 1.
inline const kva_word_t& acc_word(const KvOrAcc& s, int tok, int i) { return kva_word(s, tok * cfg::KVA_A_ROW + i); }
inline kva_word_t& acc_word(KvOrAcc& s, int tok, int i) { return kva_word(s, tok * cfg::KVA_A_ROW + i); }

}  // namespace m3vit

#endif  // M3VIT_KV_OR_ACC_H
