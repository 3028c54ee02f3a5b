// m3vit_attention.h — multi-head attention on the MAC array with a streaming (online) softmax
// (docs/numerics.md §9).
//
// K and Vᵀ of the layer are on chip (URAM), written there by the K/V stage (m3vit_linear.h). Per query group of MAC_OUT queries and per head:
// for each key block of KEY_BLOCK keys, in increasing key order,
//   q·kᵀ  the group's queries (head slice) are the stationary tile, one key per cycle streams through:
//         MAC_OUT scores per cycle, scaled to base-2 logits z (one key block of z lives on chip);
//   p·v   exp lanes turn the block's z into probability tiles (MAC_OUT queries × MAC_IN keys), computed
//         for the next chunk while the array streams vᵀ rows (one head dim per cycle) against the current;
//   the running max m, sum l and context accumulator acc are rescaled when the max grows.
// The T×T score matrix is never stored and K/V are not re-read per query group.
#ifndef M3VIT_ATTENTION_H
#define M3VIT_ATTENTION_H

#include "m3vit_burst.h"
#include "m3vit_config.h"
#include "m3vit_linear.h"
#include "m3vit_mac.h"
#include "m3vit_prims.h"

namespace m3vit {

// load_q_tile(q, ng, h, hp, wq): the stationary query tile of head h, pass hp (dims hp·MAC_IN …), padded
// with zeros; SLOT_TILE_ROWS rows per cycle, like a weight tile.
inline void load_q_tile(const cfg::qkv_t q[cfg::MAC_OUT][cfg::DIM], int ng, int h, int hp,
                        cfg::mac_w_t wq[cfg::MAC_OUT][cfg::MAC_IN]) {
    using namespace cfg;
ATT_Q_TILE:
    for (int c = 0; c < SLOT_TILE_ROWS; c++) {
#pragma HLS PIPELINE II = 1
        M3VIT_LEDGER_PIPELINE(ATT_Q_TILE, c == 0, 1, 2);
        for (int j = 0; j < SLOT_ROW_TILE_ROWS; j++) {
            const int mo = c * SLOT_ROW_TILE_ROWS + j;
            for (int mi = 0; mi < MAC_IN; mi++) {
                const int d = hp * MAC_IN + mi;
                wq[mo][mi] = (mo < ng && d < HEAD_DIM) ? mac_w_t(q[mo][h * HEAD_DIM + d]) : mac_w_t(0);
            }
        }
    }
}

// p_entry(zb, mnew, e, key0, nb, p): probability tile entry e (key e / MAC_OUT, query e % MAC_OUT) of the
// chunk starting at key0 of a block of nb keys: 2^(z - mnew) in Q.15, 0 past the block.
inline cfg::prob_t p_entry(const cfg::z_t zb[cfg::KEY_BLOCK][cfg::MAC_OUT], const cfg::z_t mnew[cfg::MAC_OUT],
                           int key, int mo, int nb) {
    using namespace cfg;
    return key < nb ? exp2neg<FZ>(i64(zb[key][mo]) - i64(mnew[mo]), EXP2_TABLE) : prob_t(0);
}

// ctx_rescale(a, alpha, v) = RSHR(a · α, 15) + v: the softmax state's rescale when the running max grows
// (docs/numerics.md §9); MAC_OUT lanes, each a ctx_acc × prob product (two DSP48E2 when a > 27 bits).
inline cfg::ctx_acc_t ctx_rescale(cfg::ctx_acc_t a, cfg::prob_t alpha, int64_t v) {
    using namespace cfg;
    return ctx_acc_t(rshr<PROB_FRAC>(i64(i64(a) * i64(alpha))) + i64(v));
}

// attn_head(q, ng, h, kv, acc, sat): one head of one query group: acc[mo][d] and l[mo] = acc[mo][HEAD_DIM]
// after the last key block (the softmax state of docs/numerics.md §9). Key blocks are software-pipelined:
// q·kᵀ of block j runs before p·v of block j - 1, whose last chunk leaves the exp lanes free to fill block j's
// first probability tile; only the first block's first tile is computed with the array idle.
inline void attn_head(const cfg::qkv_t q[cfg::MAC_OUT][cfg::DIM], int ng, int h, const KvOrAcc& kv,
                      cfg::ctx_acc_t acc[cfg::MAC_OUT][cfg::HEAD_DIM + 1], SatCounters& sat) {
    using namespace cfg;
    static z_t zb[2][KEY_BLOCK][MAC_OUT];  // z of two key blocks (q·kᵀ of j while p·v reads j - 1)
#pragma HLS ARRAY_PARTITION variable = zb complete dim = 3
    score_acc_t sacc[KEY_BLOCK][MAC_OUT];
#pragma HLS ARRAY_PARTITION variable = sacc complete dim = 2
    pv_acc_t pv[HEAD_DIM][MAC_OUT];
#pragma HLS ARRAY_PARTITION variable = pv complete dim = 2
    mac_w_t wq[MAC_OUT][MAC_IN], wp[MAC_OUT][MAC_IN], wpn[MAC_OUT][MAC_IN];
#pragma HLS ARRAY_PARTITION variable = wq complete dim = 0
#pragma HLS ARRAY_PARTITION variable = wp complete dim = 0
#pragma HLS ARRAY_PARTITION variable = wpn complete dim = 0
    z_t mnew[2][MAC_OUT], bm[MAC_OUT];  // running max through block j (parity j)
    prob_t alpha[2][MAC_OUT];           // block j's rescale 2^(m_{j-1} - m_j)
    attn_l_t psum[2][MAC_OUT];          // Σ p of block j
#pragma HLS ARRAY_PARTITION variable = mnew complete dim = 0
#pragma HLS ARRAY_PARTITION variable = bm complete
#pragma HLS ARRAY_PARTITION variable = alpha complete dim = 0
#pragma HLS ARRAY_PARTITION variable = psum complete dim = 0
    const int qk_rate = (ARRAY_PACKED && !PK_QK) ? 2 : 1;
    const int pv_rate = (ARRAY_PACKED && !PK_PV) ? 2 : 1;
    const int n_blocks = (TOKENS + KEY_BLOCK - 1) / KEY_BLOCK;
    const int p_cyc = (MAC_OUT * MAC_IN + EXP_LANES - 1) / EXP_LANES;
    const int per_chunk = HEAD_DIM * pv_rate;
    const int chunk_len = per_chunk > p_cyc ? per_chunk : p_cyc;
ATT_BLOCKS:
    for (int jb = 0; jb <= n_blocks; jb++) {
#pragma HLS LOOP_TRIPCOUNT min = 2 max = KEY_BLOCKS + 1
        M3VIT_LEDGER_LOOP(ATT_BLOCKS, jb == 0, 4);
        const int cur = jb & 1, prv = cur ^ 1;
        if (jb < n_blocks) {  // q·kᵀ of block jb
            const int k0 = jb * KEY_BLOCK;
            const int nb = (TOKENS - k0 < KEY_BLOCK) ? TOKENS - k0 : KEY_BLOCK;
        ATT_QK_PASSES:
            for (int hp = 0; hp < HD_PASSES; hp++) {
                M3VIT_LEDGER_LOOP(ATT_QK_PASSES, hp == 0, 2);
                if (HD_PASSES > 1 || jb == 0) load_q_tile(q, ng, h, hp, wq);
            ATT_QK:  // one key per cycle (two when q·k does not pack): MAC_OUT scores
                for (int i = 0; i < nb * qk_rate; i++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT min = 1 max = KEY_BLOCK * 2
                    M3VIT_LEDGER_PIPELINE(ATT_QK, i == 0, 1, MAC_DEPTH);
                    const int t = qk_rate == 2 ? i >> 1 : i;
                    const int ph = qk_rate == 2 ? (i & 1) : -1;
                    mac_a_t av[MAC_IN];  // key k0 + t, the pass's head dims: MAC_IN / KV_PER_WORD words of K
                    for (int wi = 0; wi < MAC_IN / KV_PER_WORD; wi++) {
                        const int d0 = hp * MAC_IN + wi * KV_PER_WORD;
                        qkv_t v[KV_PER_WORD];
                        if (d0 < HEAD_DIM) k_read(kv, k0 + t, h * HEAD_DIM + d0, v);
                        for (int j = 0; j < KV_PER_WORD; j++)
                            av[wi * KV_PER_WORD + j] = d0 < HEAD_DIM ? mac_a_t(v[j]) : mac_a_t(0);
                    }
                    mac_ps_t ps[MAC_OUT];
                    mac_array(wq, av, PK_QK, ph, ps);
                    for (int mo = 0; mo < MAC_OUT; mo++) {
                        if (ph >= 0 && (mo & 1) != ph) continue;
                        const score_acc_t sc = hp == 0 ? score_acc_t(ps[mo]) : score_acc_t(sacc[t][mo] + ps[mo]);
                        if (hp < HD_PASSES - 1) {
                            sacc[t][mo] = sc;
                        } else {
                            uint32_t dummy = 0;
                            const z_t z = z_t(sat_bits<32>(rshr<SH_SCORE>(i64(sc) * i64(C_ATTN)),
                                                           mo < ng ? sat.c[SAT_SCORE] : dummy));
                            zb[cur][t][mo] = z;
                            if (t == 0 || z > bm[mo]) bm[mo] = z;
                        }
                    }
                }
            }
            for (int mo = 0; mo < MAC_OUT; mo++) {
#pragma HLS UNROLL
                const z_t m = mnew[prv][mo];
                mnew[cur][mo] = (jb == 0 || bm[mo] > m) ? bm[mo] : m;
                alpha[cur][mo] = jb == 0 ? prob_t(0) : exp2neg<FZ>(i64(m) - i64(mnew[cur][mo]), EXP2_TABLE);
                psum[cur][mo] = 0;
            }
        }
        if (jb == 0) {
        ATT_P_FIRST:  // block 0's first probability tile: the only one computed with the array idle
            for (int e = 0; e < MAC_OUT * MAC_IN; e += EXP_LANES) {
#pragma HLS PIPELINE II = 1
                M3VIT_LEDGER_PIPELINE(ATT_P_FIRST, e == 0, 1, 6);
                for (int x = 0; x < EXP_LANES; x++) {
                    if (e + x >= MAC_OUT * MAC_IN) break;
                    const int kk = (e + x) / MAC_OUT, mo = (e + x) % MAC_OUT;
                    const prob_t p = p_entry(zb[0], mnew[0], kk, mo, TOKENS < KEY_BLOCK ? TOKENS : KEY_BLOCK);
                    wp[mo][kk] = mac_w_t(p);
                    psum[0][mo] += p;
                }
            }
            continue;
        }
        // p·v of block jb - 1: chunk c of MAC_IN keys; the exp lanes fill the next tile meanwhile (the next
        // chunk, or block jb's first chunk during the last one)
        const int j = jb - 1, pj = j & 1;
        const int k0 = j * KEY_BLOCK;
        const int nb = (TOKENS - k0 < KEY_BLOCK) ? TOKENS - k0 : KEY_BLOCK;
        const int nb_next = (TOKENS - k0 - KEY_BLOCK < KEY_BLOCK) ? TOKENS - k0 - KEY_BLOCK : KEY_BLOCK;
        const bool first = j == 0;
        const int n_chunks = (nb + MAC_IN - 1) / MAC_IN;
        const int last_len = chunk_len > per_chunk ? chunk_len : per_chunk + 1;  // l's rescale after the dims
        int c = 0, dd = 0;
    ATT_PV:
        for (int i = 0; i < (n_chunks - 1) * chunk_len + last_len; i++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT min = 1 max = KEY_BLOCK / MAC_IN * HEAD_DIM * 2 + 1
            M3VIT_LEDGER_PIPELINE(ATT_PV, i == 0, 1, MAC_DEPTH);
            const bool own = c + 1 < n_chunks;  // the next tile: this block's next chunk, or block jb's first
            if (dd < p_cyc && (own || jb < n_blocks)) {
                const int tb = own ? pj : cur;
                for (int x = 0; x < EXP_LANES; x++) {
                    const int e = dd * EXP_LANES + x;
                    const int kk = e / MAC_OUT, mo = e % MAC_OUT;
                    if (e < MAC_OUT * MAC_IN) {
                        const prob_t p = own ? p_entry(zb[tb], mnew[tb], (c + 1) * MAC_IN + kk, mo, nb)
                                             : p_entry(zb[tb], mnew[tb], kk, mo, nb_next);
                        wpn[mo][kk] = mac_w_t(p);
                        psum[tb][mo] += p;
                    }
                }
            }
            // the block's p·v is complete in its last chunk: each finished dim d, then l (one cycle after the
            // dims), is folded into the context accumulator on the same MAC_OUT rescale lanes
            const bool fold = c == n_chunks - 1 && dd <= per_chunk;
            const int d = pv_rate == 2 ? dd >> 1 : dd;
            const int col = dd < per_chunk ? d : HEAD_DIM;
            const int ph = (pv_rate == 2 && dd < per_chunk) ? (dd & 1) : -1;
            ctx_acc_t fold_in[MAC_OUT];
#pragma HLS ARRAY_PARTITION variable = fold_in complete
            if (dd < per_chunk) {
                mac_a_t av[MAC_IN];  // head dim d, the chunk's keys: MAC_IN / KV_PER_WORD words of Vᵀ
                for (int wi = 0; wi < MAC_IN / KV_PER_WORD; wi++) {
                    const int key0 = c * MAC_IN + wi * KV_PER_WORD;
                    qkv_t v[KV_PER_WORD];
                    if (key0 < nb) vt_read(kv, h * HEAD_DIM + d, k0 + key0, v);
                    for (int j = 0; j < KV_PER_WORD; j++)
                        av[wi * KV_PER_WORD + j] = key0 + j < nb ? mac_a_t(v[j]) : mac_a_t(0);
                }
                mac_ps_t ps[MAC_OUT];
                mac_array(wp, av, PK_PV, ph, ps);
                for (int mo = 0; mo < MAC_OUT; mo++) {
                    if (ph >= 0 && (mo & 1) != ph) continue;
                    const pv_acc_t v = c == 0 ? pv_acc_t(ps[mo]) : pv_acc_t(pv[d][mo] + ps[mo]);
                    pv[d][mo] = v;
                    fold_in[mo] = v;
                }
            } else {
                for (int mo = 0; mo < MAC_OUT; mo++) fold_in[mo] = psum[pj][mo];
            }
            if (fold) {
                for (int mo = 0; mo < MAC_OUT; mo++) {
                    if (ph >= 0 && (mo & 1) != ph) continue;
                    acc[mo][col] = first ? ctx_acc_t(fold_in[mo]) : ctx_rescale(acc[mo][col], alpha[pj][mo], fold_in[mo]);
                }
            }
            if (++dd == (c + 1 < n_chunks ? chunk_len : last_len)) {
                dd = 0;
                c++;
                for (int mo = 0; mo < MAC_OUT; mo++)
                    for (int mi = 0; mi < MAC_IN; mi++) wp[mo][mi] = wpn[mo][mi];
            }
        }
    }
}

typedef cfg::qkv_t q_tile_t[cfg::MAC_OUT][cfg::DIM];
typedef cfg::ctx_acc_t head_state_t[cfg::MAC_OUT][cfg::HEAD_DIM + 1];  // acc, and l in the last column

// att_reader(scratch, qs): each query group's q rows (qkv region) into a query tile.
inline void att_reader(const cfg::word_t* scratch, hls::stream_of_blocks<q_tile_t, 2>& qs) {
    using namespace cfg;
    M3VIT_LEDGER_PROCESS("att_reader");
ATT_GROUPS:
    for (int q0 = 0; q0 < TOKENS; q0 += MAC_OUT) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = QUERY_GROUPS
        M3VIT_LEDGER_LOOP(ATT_GROUPS, q0 == 0, 2);
        const int ng = (TOKENS - q0 < MAC_OUT) ? TOKENS - q0 : MAC_OUT;
        hls::write_lock<q_tile_t> q_lock(qs);
        q_tile_t& q = q_lock;
    ATT_Q_ROWS:
        for (int t = 0; t < ng; t++) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = MAC_OUT
            M3VIT_LEDGER_LOOP(ATT_Q_ROWS, t == 0, 2);
            burst_read_elems<QKV_CB>(scratch + SCR_QKV + uint64_t(q0 + t) * STR_QKV3, 0, DIM, q[t]);
        }
    }
}

// att_compute(kv, qs, hs, sat): every head of every query group on the MAC array.
inline void att_compute(const KvOrAcc& kv, hls::stream_of_blocks<q_tile_t, 2>& qs,
                        hls::stream_of_blocks<head_state_t, 2>& hs, SatCounters& sat) {
    using namespace cfg;
    M3VIT_LEDGER_PROCESS("att_compute");
ATT_GROUPS:
    for (int q0 = 0; q0 < TOKENS; q0 += MAC_OUT) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = QUERY_GROUPS
        M3VIT_LEDGER_LOOP(ATT_GROUPS, q0 == 0, 2);
        const int ng = (TOKENS - q0 < MAC_OUT) ? TOKENS - q0 : MAC_OUT;
        hls::read_lock<q_tile_t> q_lock(qs);
        const q_tile_t& q = q_lock;
    ATT_HEADS:
        for (int h = 0; h < HEADS; h++) {
            M3VIT_LEDGER_LOOP(ATT_HEADS, h == 0, 4);
            hls::write_lock<head_state_t> h_lock(hs);
            head_state_t& st = h_lock;
            attn_head(q, ng, h, kv, st, sat);
        }
    }
}

// att_writer(scratch, hs, sat): per head, 1 / l per query (a pipelined divider) and ctx = acc · R (ATT_OUT_LANES
// lanes per cycle); the group's context rows to DDR (region attn). The context saturates (class qkv).
inline void att_writer(cfg::word_t* scratch, hls::stream_of_blocks<head_state_t, 2>& hs, SatCounters& sat) {
    using namespace cfg;
    M3VIT_LEDGER_PROCESS("att_writer");
    static qkv_t ctx[MAC_OUT][DIM];
#pragma HLS ARRAY_RESHAPE variable = ctx cyclic factor = ATT_OUT_LANES dim = 2
    recip_t rq[MAC_OUT];  // R of each query's 1/l, and its shift
    int rs[MAC_OUT];
ATT_GROUPS:
    for (int q0 = 0; q0 < TOKENS; q0 += MAC_OUT) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = QUERY_GROUPS
        M3VIT_LEDGER_LOOP(ATT_GROUPS, q0 == 0, 2);
        const int ng = (TOKENS - q0 < MAC_OUT) ? TOKENS - q0 : MAC_OUT;
    ATT_OUT_HEADS:
        for (int h = 0; h < HEADS; h++) {
            M3VIT_LEDGER_LOOP(ATT_OUT_HEADS, h == 0, 4);
            hls::read_lock<head_state_t> h_lock(hs);
            const head_state_t& st = h_lock;
        ATT_FINAL:  // 1 / l per query: a pipelined divider, one query per cycle
            for (int t = 0; t < ng; t++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT min = 1 max = MAC_OUT
                M3VIT_LEDGER_PIPELINE(ATT_FINAL, t == 0, 1, 72);
                i64 r;
                int len;
                recip(u64(st[t][HEAD_DIM]), r, len);  // l ≥ 2^15: the max key contributes 2^15
                rq[t] = recip_t(r);
                rs[t] = len + 15;
            }
        ATT_OUT:  // ctx = acc · R, ATT_OUT_LANES dims per cycle
            for (int i = 0; i < ng * (HEAD_DIM / ATT_OUT_LANES); i++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT min = 1 max = MAC_OUT * HEAD_DIM / ATT_OUT_LANES
                M3VIT_LEDGER_PIPELINE(ATT_OUT, i == 0, 1, 4);
                const int t = i / (HEAD_DIM / ATT_OUT_LANES), d0 = (i % (HEAD_DIM / ATT_OUT_LANES)) * ATT_OUT_LANES;
                for (int l = 0; l < ATT_OUT_LANES; l++) {
                    const i64 prod = i64(st[t][d0 + l]) * i64(rq[t]);
                    ctx[t][h * HEAD_DIM + d0 + l] = qkv_t(sat_bits<QKV_BITS>(rshr_rt<i64>(prod, rs[t]), sat.c[SAT_QKV]));
                }
            }
        }
    ATT_WRITE:
        for (int t = 0; t < ng; t++) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = MAC_OUT
            M3VIT_LEDGER_LOOP(ATT_WRITE, t == 0, 2);
            burst_write_elems<QKV_CB>(scratch + SCR_ATTN + uint64_t(q0 + t) * STR_QKVD, DIM, ctx[t]);
        }
    }
}

// stage_attention(scratch, kv, sat): ctx (region attn) = softmax(q·kᵀ) v per head, from the queries (qkv
// region) and the on-chip K, Vᵀ: a DATAFLOW region of query reader, MAC-array attention and context writer.
// Scores saturate to 32 bits (class score), the context to the qkv format (class qkv).
inline void stage_attention(cfg::word_t* scratch, const KvOrAcc& kv, SatCounters& sat) {
    using namespace cfg;
    SatCounters s_c, s_w;
    sat_clear(s_c);
    sat_clear(s_w);
    hls::stream_of_blocks<q_tile_t, 2> qs;
    hls::stream_of_blocks<head_state_t, 2> hs;
    M3VIT_BLOCKS_NAME(qs);
    M3VIT_BLOCKS_NAME(hs);
    M3VIT_DATAFLOW_REGION("attention") {
        M3VIT_PROCESS(att_reader, scratch, qs);
        M3VIT_PROCESS(att_compute, kv, qs, hs, s_c);
        M3VIT_PROCESS(att_writer, scratch, hs, s_w);
    }
    for (int c = 0; c < SAT_NUM; c++) sat.c[c] += s_c.c[c] + s_w.c[c];
}

}  // namespace m3vit

#endif  // M3VIT_ATTENTION_H
