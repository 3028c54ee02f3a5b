// m3vit_linear.h — the matmul engine: every weight matmul of the network (patch embedding, QKV, proj,
// dense MLP, router, experts) runs as a DATAFLOW region of four processes over a list of jobs
// (docs/hls.md, docs/performance.md §1):
//
//   scheduler ─► loader  ── weight slots (stream_of_blocks, 2 = ping-pong) ──► mac ─► y tiles ─► writer
//             └► reader  ── activation tiles (stream_of_blocks, 2) ──────────────┘
//
// A job is one weight group that fits a slot: an output-column chunk of a dense matrix (whole K), or
// one used expert (fc1 + fc2). The loader fetches job j+1's weights (one burst) while the array
// computes job j; an expert with an empty queue is never a job. The reader streams token tiles (LayerNorm
// on the fly, gathers for experts), the writer requantises' epilogues (GELU, residual, MoE gate) and
// writes whole AXI words.
#ifndef M3VIT_LINEAR_H
#define M3VIT_LINEAR_H

#include "m3vit_burst.h"
#include "m3vit_config.h"
#include "m3vit_dataflow.h"
#include "m3vit_kv_or_acc.h"
#include "m3vit_layernorm.h"
#include "m3vit_mac.h"
#include "m3vit_prims.h"

#ifndef __SYNTHESIS__
// C simulation only: how often each expert's weights were fetched (checked by the tests: once per
// layer for a used expert, never for an empty one) and the order of fetch and compute starts and ends,
// as the concurrent loader and mac processes reach them (event = block << 16 | compute << 15 | end << 14
// | slot << 13 | expert). Defined in the top .cpp.
#include <functional>
#include <mutex>
extern uint32_t m3vit_debug_expert_loads[m3vit::cfg::DEPTH][m3vit::cfg::EXPERTS];
extern uint32_t m3vit_debug_events[1 << 16];
extern uint32_t m3vit_debug_n_events;
inline std::mutex& m3vit_debug_mutex() {
    static std::mutex mu;
    return mu;
}
inline void m3vit_note_event(int b, int compute, int end, int slot, int e) {
    std::lock_guard<std::mutex> lock(m3vit_debug_mutex());
    if (m3vit_debug_n_events < (1u << 16))
        m3vit_debug_events[m3vit_debug_n_events++] = uint32_t(b) << 16 | uint32_t(compute) << 15 |
                                                     uint32_t(end) << 14 | uint32_t(slot) << 13 | uint32_t(e);
    if (!compute && !end) m3vit_debug_expert_loads[b][e]++;
}
#define M3VIT_NOTE_EXPERT(b, e, compute, end, slot) m3vit_note_event(b, compute, end, slot, e)
#else
#define M3VIT_NOTE_EXPERT(b, e, compute, end, slot)
#endif

namespace m3vit {

// ------------------------------------------------------------------------------------------ stages
// ST_KV computes K and V (into the attention's on-chip buffers), ST_Q the queries: two stages over the
// one QKV matrix, so that each weight group fits a slot.
enum Stage { ST_EMBED = 0, ST_KV, ST_Q, ST_PROJ, ST_FC1, ST_FC2, ST_ROUTER, ST_EXPERTS };

// The geometry and numerics of one stage's matmul (one fact per stage, read by every process).
struct StageInfo {
    int k;        // reduction length
    int n;        // outputs
    int shift;    // requantisation shift
    int obits;    // output format bits
    bool packed;  // both operands ≤ 8 bits: two MACs per DSP
    bool gelu;    // GELU on the outputs (hidden layers)
};

inline StageInfo stage_info(int stage) {
    using namespace cfg;
    StageInfo s;
    s.gelu = false;
    switch (stage) {
        case ST_EMBED: s.k = PATCH_DIM; s.n = DIM; s.shift = SH_PATCH; s.obits = ACT_BITS; s.packed = PK_PATCH; break;
        case ST_KV:
        case ST_Q: s.k = DIM; s.n = 3 * DIM; s.shift = SH_QKV; s.obits = QKV_BITS; s.packed = PK_QKV; break;
        case ST_PROJ: s.k = DIM; s.n = DIM; s.shift = SH_PROJ; s.obits = ACT_BITS; s.packed = PK_PROJ; break;
        case ST_FC1:
            s.k = DIM; s.n = MLP_HIDDEN; s.shift = SH_FC1; s.obits = HID_BITS; s.packed = PK_FC1; s.gelu = true;
            break;
        case ST_FC2: s.k = MLP_HIDDEN; s.n = DIM; s.shift = SH_FC2; s.obits = ACT_BITS; s.packed = PK_FC2; break;
        case ST_ROUTER:
            s.k = DIM; s.n = EXPERTS; s.shift = SH_ROUTER; s.obits = LOGIT_BITS; s.packed = PK_ROUTER; break;
        default:  // experts: fc1 (the second layer's numbers are EXPERT_* constants)
            s.k = DIM; s.n = EXPERT_HIDDEN; s.shift = SH_FC1; s.obits = HID_BITS; s.packed = PK_FC1; s.gelu = true;
            break;
    }
    return s;
}

// Rows (tokens) a stage runs over: the patches for the embedding, every token otherwise.
inline int stage_rows(int stage) { return stage == ST_EMBED ? cfg::PATCHES : cfg::TOKENS; }

// A dense stage's jobs: its out-tiles [dense_ot0, dense_ot1) of the matrix in chunks of at most
// SLOT_TILES / in-tiles out-tiles each. K and V are the QKV matrix's columns DIM … 3·DIM, Q the first DIM.
inline int dense_it(int stage) { return (stage_info(stage).k + cfg::MAC_IN - 1) / cfg::MAC_IN; }
inline int dense_ot0(int stage) { return stage == ST_KV ? cfg::DIM / cfg::MAC_OUT : 0; }
inline int dense_ot1(int stage) {
    const int n = stage == ST_Q ? cfg::DIM : stage_info(stage).n;
    return (n + cfg::MAC_OUT - 1) / cfg::MAC_OUT;
}
inline int dense_otc(int stage) { return cfg::SLOT_TILES / dense_it(stage); }

// The same geometry in weight tiles, compile-time constants per stage (no run-time multiplier): the first
// job's first tile, the tiles of a full job and the stage's end tile (tile = ot·in-tiles + it).
template <int K, int OT0, int OT1>
struct DenseTileGeometry {
    static const int IT = (K + cfg::MAC_IN - 1) / cfg::MAC_IN;
    static const int FIRST = OT0 * IT;
    static const int STEP = (cfg::SLOT_TILES / IT) * IT;
    static const int END = OT1 * IT;
};
struct DenseTiles {
    int first, step, end;
};
template <class G>
inline DenseTiles dense_tiles_of() {
    DenseTiles d;
    d.first = G::FIRST;
    d.step = G::STEP;
    d.end = G::END;
    return d;
}
inline DenseTiles dense_tiles(int stage) {
    using namespace cfg;
    const int ot_d = (DIM + MAC_OUT - 1) / MAC_OUT;
    switch (stage) {
        case ST_EMBED: return dense_tiles_of<DenseTileGeometry<PATCH_DIM, 0, ot_d> >();
        case ST_KV: return dense_tiles_of<DenseTileGeometry<DIM, DIM / MAC_OUT, (3 * DIM + MAC_OUT - 1) / MAC_OUT> >();
        case ST_FC1: return dense_tiles_of<DenseTileGeometry<DIM, 0, (MLP_HIDDEN + MAC_OUT - 1) / MAC_OUT> >();
        case ST_FC2: return dense_tiles_of<DenseTileGeometry<MLP_HIDDEN, 0, ot_d> >();
        case ST_ROUTER: return dense_tiles_of<DenseTileGeometry<DIM, 0, (EXPERTS + MAC_OUT - 1) / MAC_OUT> >();
        default: return dense_tiles_of<DenseTileGeometry<DIM, 0, ot_d> >();  // Q, proj
    }
}

// One job as every process sees it: the output tiles [ot0, ot0 + ot_n) of the stage's matrix, or
// expert `expert` with its queue entries [q0, q0 + n).
struct Job {
    int ot0, ot_n;
    int tile0, tiles;  // dense: the job's weight tiles [tile0, tile0 + tiles) of the matrix (ot0·it, ot_n·it)
    int expert;        // -1 for dense jobs
    int q0, n;         // expert queue range (dense: 0, rows)
    uint64_t base;     // expert jobs: the expert's word offset in the weight image (its expert-map entry)
};

// ------------------------------------------------------------------------------------------ blocks
typedef cfg::wgt_t slot_w_t[cfg::SLOT_ROWS][cfg::SLOT_ROW_TILE_ROWS][cfg::MAC_IN];
typedef cfg::bias_t slot_b_t[cfg::SLOT_BIAS];
typedef cfg::mac_a_t a_tile_t[cfg::TOKEN_TILE][cfg::A_COLS];
typedef cfg::mac_y_t y_tile_t[cfg::TOKEN_TILE][cfg::Y_COLS];
typedef cfg::mac_y_t hid_tile_t[cfg::TOKEN_TILE][cfg::HID_COLS];  // an expert's hidden layer (fc1 → fc2)

// Routing state of one MoE layer (on chip): queues built by route_layer, read by the scheduler.
struct Queues {
    cfg::tok_t tok[cfg::TOKENS * cfg::TOP_K];    // queue entries, expert after expert
    cfg::prob_t gate[cfg::TOKENS * cfg::TOP_K];  // their combine weights (Q.15)
    int start[cfg::EXPERTS + 1];                 // expert e's queue is [start[e], start[e+1])
    int used[cfg::EXPERTS];                      // experts with a non-empty queue, ascending
    int n_used;
};

// The MoE accumulators A[token][c] = Σ y·g (exact, on chip, in kv_or_acc: m3vit_kv_or_acc.h) are written by
// the experts stage's writer, which turns a token's row into the block's output as soon as its last selected
// expert has added to it. hits[token]: the token's experts added so far.
struct MoeAcc {
    cfg::hits_t hits[cfg::TOKENS];
};

// Each token's experts and gates and the experts' queue lengths: written by the router stage's writer.
// The layer's expert map (from the weight image, read before the router stage): which experts the image
// holds (the others are pruned: they take no part in the routing), their word offsets, and K' ≤ TOP_K,
// the selections per token (sel/gsel entries k ≥ top_k are unused).
struct Routing {
    cfg::expert_t sel[cfg::TOKENS][cfg::TOP_K];
    cfg::prob_t gsel[cfg::TOKENS][cfg::TOP_K];
    int count[cfg::EXPERTS];
    bool kept[cfg::EXPERTS];
    uint64_t base[cfg::EXPERTS];
    int top_k;
};

// read_expert_map(weights, b, rt): MoE block b's expert map [K', off_0..off_{N-1}] (int32, off -1 = pruned)
// into rt.kept, rt.base, rt.top_k. One burst of ceil((1 + EXPERTS) / lanes) words.
inline void read_expert_map(const cfg::word_t* weights, int b, Routing& rt) {
    using namespace cfg;
    sint<32>::t row[1 + EXPERTS];
#pragma HLS ARRAY_PARTITION variable = row complete
    burst_read_elems<32>(weights + BLOCK_OFF[b].expert_map, 0, 1 + EXPERTS, row);
    rt.top_k = int(to_i64(row[0]));
    for (int e = 0; e < EXPERTS; e++) {
#pragma HLS UNROLL
        const int64_t off = to_i64(row[1 + e]);
        rt.kept[e] = off >= 0;
        rt.base[e] = off >= 0 ? uint64_t(off) : uint64_t(0);
    }
}

// ------------------------------------------------------------------------------------------ scheduler
// job_list(stage, qs, rt, jobs): the jobs of a stage in order (an expert's weights at its expert-map offset).
inline int job_list(int stage, const Queues& qs, const Routing& rt, Job jobs[cfg::MAX_JOBS]) {
    using namespace cfg;
    int n = 0;
    if (stage == ST_EXPERTS) {
    JOBS_EXPERTS:
        for (int u = 0; u < qs.n_used; u++) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = EXPERTS
            M3VIT_LEDGER_LOOP(JOBS_EXPERTS, u == 0, 2);
            const int e = qs.used[u];
            jobs[n].ot0 = 0;
            jobs[n].ot_n = 0;
            jobs[n].tile0 = 0;
            jobs[n].tiles = EW1_TILES + EW2_TILES;
            jobs[n].expert = e;
            jobs[n].q0 = qs.start[e];
            jobs[n].n = qs.start[e + 1] - qs.start[e];
            jobs[n].base = rt.base[e];
            n++;
        }
        return n;
    }
    const int ot = dense_ot1(stage), otc = dense_otc(stage);
    const DenseTiles dt = dense_tiles(stage);
    int tile0 = dt.first;
JOBS_DENSE:
    for (int o = dense_ot0(stage); o < ot; o += otc) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = MAX_JOBS
        M3VIT_LEDGER_LOOP(JOBS_DENSE, o == dense_ot0(stage), 2);
        jobs[n].ot0 = o;
        jobs[n].ot_n = (ot - o < otc) ? ot - o : otc;
        jobs[n].tile0 = tile0;
        jobs[n].tiles = (dt.end - tile0 < dt.step) ? dt.end - tile0 : dt.step;
        tile0 += dt.step;
        jobs[n].expert = -1;
        jobs[n].base = 0;
        jobs[n].q0 = 0;
        jobs[n].n = stage_rows(stage);
        n++;
    }
    return n;
}

// ------------------------------------------------------------------------------------------ loader
// The weight group of a job: (word offset, tiles) of up to two tile runs and the bias runs.
struct WeightRun {
    uint64_t w_off;  // words
    int tiles;
    uint64_t b_off;  // words
    int biases;      // elements (a whole number of bias words, padded in DDR)
    int slot_tile;   // first slot tile
    int slot_bias;   // first slot bias
};

// load_run(weights, r, w, b): tiles into the slot rows (one AXI word per cycle, one burst), then biases.
inline void load_run(const cfg::word_t* weights, const WeightRun& r, slot_w_t& w, slot_b_t& b) {
    using namespace cfg;
    const int LW = AXI_BITS / W_CB;                  // weights per word
    const int WPR = MAC_IN / LW;                     // words per tile row
    const int n_words = r.tiles * MAC_OUT * WPR;
    const word_t* src = weights + r.w_off;
    wgt_t row[SLOT_ROW_TILE_ROWS][MAC_IN];
#pragma HLS ARRAY_PARTITION variable = row complete dim = 0
    int k = 0, rr = 0, slot_row = r.slot_tile * SLOT_TILE_ROWS;
LOAD_W:
    for (int i = 0; i < n_words; i++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT min = 1 max = SLOT_WORDS
        M3VIT_LEDGER_PIPELINE(LOAD_W, i == 0, 1, 8);
        const word_t word = src[i];
        for (int l = 0; l < LW; l++) {
#pragma HLS UNROLL
            row[rr][k * LW + l] = wgt_t(lane_get<W_CB>(word, l));
        }
        if (++k == WPR) {
            k = 0;
            if (++rr == SLOT_ROW_TILE_ROWS) {
                rr = 0;
                for (int j = 0; j < SLOT_ROW_TILE_ROWS; j++)
                    for (int m = 0; m < MAC_IN; m++) w[slot_row][j][m] = row[j][m];
                slot_row++;
            }
        }
    }
    const int LB = AXI_BITS / BIAS_CB;
    const int nb_words = burst_words<word_t, BIAS_CB>(r.biases);
    const word_t* bsrc = weights + r.b_off;
LOAD_B:
    for (int i = 0; i < nb_words; i++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT min = 1 max = SLOT_BIAS_WORDS
        M3VIT_LEDGER_PIPELINE(LOAD_B, i == 0, 1, 8);
        const word_t word = bsrc[i];
        for (int l = 0; l < LB; l++) {
#pragma HLS UNROLL
            const int e = i * LB + l;
            if (e < r.biases) b[r.slot_bias + e] = bias_t(lane_get<BIAS_CB>(word, l));
        }
    }
}

// The weight offsets of a stage (block b, task): matrix and bias word offsets.
struct StageWeights {
    uint64_t w, b;
};

inline StageWeights stage_weights(int stage, int b, unsigned task) {
    using namespace cfg;
    StageWeights s;
    if (stage == ST_EMBED) {
        s.w = PATCH_W;
        s.b = PATCH_B;
        return s;
    }
    const BlockOffsets o = BLOCK_OFF[b];
    switch (stage) {
        case ST_KV:
        case ST_Q: s.w = o.qkv_w; s.b = o.qkv_b; break;
        case ST_PROJ: s.w = o.proj_w; s.b = o.proj_b; break;
        case ST_FC1: s.w = o.fc1_w; s.b = o.fc1_b; break;
        case ST_FC2: s.w = o.fc2_w; s.b = o.fc2_b; break;
        case ST_ROUTER:
            s.w = o.router + uint64_t(task) * ROUTER_TASK_STRIDE;
            s.b = s.w + ROUTER_B_REL;
            break;
        default: s.w = 0; s.b = 0; break;  // experts: each job's offset from the block's expert map
    }
    return s;
}

// loader(...): one slot per job, in job order; each used expert's weights are fetched exactly once, from
// its offset in the layer's expert map (a pruned expert is never used, so never fetched).
inline void loader(int stage, int b, unsigned task, const cfg::word_t* weights, const Job jobs[], int n_jobs,
                   hls::stream_of_blocks<slot_w_t, 2>& sw, hls::stream_of_blocks<slot_b_t, 2>& sb) {
    using namespace cfg;
    M3VIT_LEDGER_PROCESS("loader");
    const StageWeights sw0 = stage_weights(stage, b, task);
    const int LW = AXI_BITS / W_CB, LB = AXI_BITS / BIAS_CB;
    const int tile_words = MAC_OUT * MAC_IN / LW;
LOADER_JOBS:
    for (int j = 0; j < n_jobs; j++) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = MAX_JOBS
        M3VIT_LEDGER_LOOP(LOADER_JOBS, j == 0, 4);
        const Job job = jobs[j];
        hls::write_lock<slot_w_t> w(sw);
        hls::write_lock<slot_b_t> bb(sb);
        WeightRun r;
        if (stage == ST_EXPERTS) {
            const uint64_t base = job.base;
            M3VIT_LEDGER_STEP("expert", job.expert);
            M3VIT_NOTE_EXPERT(b, job.expert, 0, 0, j & 1);
            r.w_off = base;
            r.tiles = EW1_TILES;
            r.b_off = base + EXPERT_B1_REL;
            r.biases = EXPERT_HIDDEN;
            r.slot_tile = 0;
            r.slot_bias = 0;
            load_run(weights, r, w, bb);
            r.w_off = base + EXPERT_W2_REL;
            r.tiles = EW2_TILES;
            r.b_off = base + EXPERT_B2_REL;
            r.biases = DIM;
            r.slot_tile = EW1_TILES;
            r.slot_bias = EH_PO;
            load_run(weights, r, w, bb);
            M3VIT_NOTE_EXPERT(b, job.expert, 0, 1, j & 1);
        } else {
            const int n = stage_info(stage).n;
            r.w_off = sw0.w + uint64_t(job.tile0) * tile_words;
            r.tiles = job.tiles;
            r.b_off = sw0.b + uint64_t(job.ot0) * MAC_OUT / LB;
            r.biases = (n - job.ot0 * MAC_OUT < job.ot_n * MAC_OUT) ? n - job.ot0 * MAC_OUT : job.ot_n * MAC_OUT;
            r.slot_tile = 0;
            r.slot_bias = 0;
            load_run(weights, r, w, bb);
        }
    }
}

// ------------------------------------------------------------------------------------------ reader
// read_row<CB>(src, n, a, t): n elements of a CB-bit lane row into row t of the activation tile;
// one whole AXI word per cycle.
template <int CB>
inline void read_row(const cfg::word_t* src, int n, cfg::mac_a_t a[cfg::TOKEN_TILE][cfg::A_COLS], int t) {
    using namespace cfg;
    const int L = AXI_BITS / CB;
    const int words = burst_words<word_t, CB>(n);
READ_ROW:
    for (int i = 0; i < words; i++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT min = 1 max = A_COLS
        M3VIT_LEDGER_PIPELINE(READ_ROW, i == 0, 1, 4);
        const word_t w = src[i];
        for (int l = 0; l < L; l++) {
#pragma HLS UNROLL
            const int c = i * L + l;
            if (c < n) a[t][c] = mac_a_t(lane_get<CB>(w, l));
        }
    }
}

// read_pixels(image, e0, a, nsat): one patch row of PATCH pixels, a whole AXI word per cycle; pixels outside
// the input format are saturated and counted (the DDR container may hold them).
inline void read_pixels(const cfg::word_t* image, uint64_t e0, cfg::mac_a_t* a, uint32_t& nsat) {
    using namespace cfg;
    const int L = AXI_BITS / IN_CB;
    const uint64_t w0 = e0 / L;
    const int skip = int(e0 % L);
    const int n_words = (skip + PATCH + L - 1) / L;
READ_PIXELS:
    for (int i = 0; i < n_words; i++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT min = 1 max = PATCH
        M3VIT_LEDGER_PIPELINE(READ_PIXELS, i == 0, 1, 4);
        const word_t w = image[w0 + i];
        for (int l = 0; l < L; l++) {
#pragma HLS UNROLL
            const int k = i * L + l - skip;
            if (k >= 0 && k < PATCH) a[k] = mac_a_t(sat_bits<IN_BITS>(i64(lane_get<IN_CB>(w, l)), nsat));
        }
    }
}

// The source region of a stage's activations (LayerNorm input for QKV / FC1 / router).
inline uint64_t stage_src(int stage) {
    using namespace cfg;
    switch (stage) {
        case ST_KV: return SCR_X;
        case ST_Q: return SCR_NORM1;
        case ST_PROJ: return SCR_ATTN;
        case ST_FC2: return SCR_HIDDEN;
        default: return SCR_ATTN_RES;  // FC1, router: LN2 of attn_res
    }
}

// reader(...): every job's token tiles. Dense jobs: LayerNorm rows (QKV: norm1 of x; FC1 / router:
// norm2 of attn_res; the first job also writes the norm tap), or plain rows (proj: attention context,
// FC2: hidden), or image patches (embedding). Experts: the queue's rows of norm2, gathered.
inline void reader(int stage, const cfg::word_t* image, cfg::word_t* scratch, const Queues& qs,
                   const cfg::lnp_t g[cfg::DIM], const cfg::lnp_t be[cfg::DIM], const Job jobs[], int n_jobs,
                   hls::stream_of_blocks<a_tile_t, 2>& as, SatCounters& sat) {
    using namespace cfg;
    M3VIT_LEDGER_PROCESS("reader");
READER_JOBS:
    for (int j = 0; j < n_jobs; j++) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = MAX_JOBS
        M3VIT_LEDGER_LOOP(READER_JOBS, j == 0, 4);
        const Job job = jobs[j];
        if (stage == ST_EXPERTS) M3VIT_LEDGER_STEP("expert", job.expert);
    READER_TILES:
        for (int r0 = 0; r0 < job.n; r0 += TOKEN_TILE) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = TOKEN_TILES
            M3VIT_LEDGER_LOOP(READER_TILES, r0 == 0, 4);
            const int nt = (job.n - r0 < TOKEN_TILE) ? job.n - r0 : TOKEN_TILE;
            hls::write_lock<a_tile_t> a_lock(as);
            a_tile_t& a = a_lock;
            const bool ln = stage == ST_KV || stage == ST_FC1 || stage == ST_ROUTER;
        READER_ROWS:
            for (int t = 0; t < (ln ? 0 : nt); t++) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = TOKEN_TILE
                M3VIT_LEDGER_LOOP(READER_ROWS, t == 0, 2);
                const int r = r0 + t;
                uint32_t again = 0;  // later jobs re-read the same pixels: count their clamps once
                if (stage == ST_EMBED) {
                    const int py = r / GRID_W, px = r % GRID_W;
                    for (int c = 0; c < CHANNELS; c++) {
                    READ_PATCH_ROWS:
                        for (int ky = 0; ky < PATCH; ky++) {
                            M3VIT_LEDGER_LOOP(READ_PATCH_ROWS, ky == 0, 2);
                            const uint64_t row = uint64_t(c) * IMG_H + uint64_t(py) * PATCH + ky;
                            read_pixels(image, row * IMG_W + uint64_t(px) * PATCH, &a[t][(c * PATCH + ky) * PATCH],
                                        j == 0 ? sat.c[SAT_INPUT] : again);
                        }
                    }
                } else if (stage == ST_PROJ) {
                    read_row<QKV_CB>(scratch + SCR_ATTN + uint64_t(r) * STR_QKVD, DIM, a, t);
                } else if (stage == ST_FC2) {
                    read_row<HID_CB>(scratch + SCR_HIDDEN + uint64_t(r) * STR_HID, MLP_HIDDEN, a, t);
                } else if (stage == ST_EXPERTS) {
                    const int tok = int(to_i64(qs.tok[job.q0 + r]));
                    read_row<NORM_CB>(scratch + SCR_NORM2 + uint64_t(tok) * STR_NORM, DIM, a, t);
                } else if (stage == ST_Q) {
                    read_row<NORM_CB>(scratch + SCR_NORM1 + uint64_t(r) * STR_NORM, DIM, a, t);
                }
            }
            if (stage == ST_KV || stage == ST_FC1 || stage == ST_ROUTER) {
                // LayerNorm on the way in (norm1 of x for K/V, norm2 of attn_res otherwise), and its tap
                const uint64_t src = stage == ST_KV ? SCR_X : SCR_ATTN_RES;
                const uint64_t dst = stage == ST_KV ? SCR_NORM1 : SCR_NORM2;
                uint32_t again = 0;  // later jobs recompute the same rows: count clamps once
                layernorm_tile(scratch + src + uint64_t(r0) * STR_ACT, STR_ACT, nt, g, be, a,
                               scratch + dst + uint64_t(r0) * STR_NORM, j == 0 ? sat.c[SAT_NORM] : again);
            }
        }
    }
}

// ------------------------------------------------------------------------------------------ mac
// mac_tile(w, bias, a, nt, tile0, n_tiles, it_n, packed, shift, obits, gelu, y, nsat): one token tile
// through the slot's weight tiles [tile0, tile0 + n_tiles) (tile = ot·it_n + it), weight-stationary:
// a tile stays in the array for max(nt, SLOT_TILE_ROWS) vectors (its successor streams into shadow
// registers from the slot meanwhile, SLOT_ROW_TILE_ROWS rows per cycle), the (ot, it, t) nest flattened
// into one II = 1 pipeline, exact partial sums on chip, requantisation (+ GELU) at the last in-tile.
template <class A, class Y>
inline void mac_tile(const slot_w_t& w, const slot_b_t& bias, int bias0, const A& a, int nt, int tile0,
                     int n_tiles, int it_n, int n_valid, bool packed, int shift, int obits, bool use_gelu, Y& y,
                     uint32_t& nsat) {
    using namespace cfg;
    mac_w_t wcur[MAC_OUT][MAC_IN], wnext[MAC_OUT][MAC_IN];
#pragma HLS ARRAY_PARTITION variable = wcur complete dim = 0
#pragma HLS ARRAY_PARTITION variable = wnext complete dim = 0
    acc_t acc[TOKEN_TILE][MAC_OUT];
#pragma HLS ARRAY_PARTITION variable = acc complete dim = 2
    const int rate = (ARRAY_PACKED && !packed) ? 2 : 1;
    const int tl = nt > SLOT_TILE_ROWS ? nt : SLOT_TILE_ROWS;  // vectors per stationary tile
MAC_PRELOAD:
    for (int c = 0; c < SLOT_TILE_ROWS; c++) {
#pragma HLS PIPELINE II = 1
        M3VIT_LEDGER_PIPELINE(MAC_PRELOAD, c == 0, 1, 2);
        for (int j = 0; j < SLOT_ROW_TILE_ROWS; j++)
            for (int m = 0; m < MAC_IN; m++) wcur[c * SLOT_ROW_TILE_ROWS + j][m] = w[tile0 * SLOT_TILE_ROWS + c][j][m];
    }
    int tile = 0, ot = 0, it = 0, t = 0, ph = 0;
MAC_LOOP:  // n_tiles · tl · rate iterations: it ends after the last tile's last vector
    for (int i = 0; i < MAC_LOOP_MAX; i++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT min = 1 max = MAC_LOOP_MAX
#pragma HLS DEPENDENCE variable = acc inter false
        M3VIT_LEDGER_PIPELINE(MAC_LOOP, i == 0, 1, MAC_DEPTH);
        const int cyc = rate == 2 ? 2 * t + ph : t;
        if (cyc < SLOT_TILE_ROWS && tile + 1 < n_tiles) {
            for (int j = 0; j < SLOT_ROW_TILE_ROWS; j++)
                for (int m = 0; m < MAC_IN; m++)
                    wnext[cyc * SLOT_ROW_TILE_ROWS + j][m] = w[(tile0 + tile + 1) * SLOT_TILE_ROWS + cyc][j][m];
        }
        if (t < nt) {
            mac_a_t av[MAC_IN];
            for (int m = 0; m < MAC_IN; m++) av[m] = a[t][it * MAC_IN + m];
            mac_ps_t ps[MAC_OUT];
            mac_array(wcur, av, packed, rate == 1 ? -1 : ph, ps);
            for (int mo = 0; mo < MAC_OUT; mo++) {
                if (rate == 1 || (mo & 1) == ph) {
                    const acc_t s = acc_t((it == 0 ? acc_t(bias[bias0 + ot * MAC_OUT + mo]) : acc[t][mo]) + ps[mo]);
                    if (it == it_n - 1) {
                        uint32_t pad = 0;  // padding outputs (o ≥ n_valid) are never read: not counted
                        acc_t q = req_rt<acc_t>(s, shift, obits, ot * MAC_OUT + mo < n_valid ? nsat : pad);
                        if (use_gelu) q = acc_t(gelu<GELU_LO, GELU_HI, GELU_SIGMA, gelu_t>(hid_t(q), GELU_TABLE));
                        y[t][ot * MAC_OUT + mo] = mac_y_t(q);
                    } else {
                        acc[t][mo] = s;
                    }
                }
            }
        }
        if (++ph == rate) {
            ph = 0;
            if (++t == tl) {
                t = 0;
                tile++;
                for (int mo = 0; mo < MAC_OUT; mo++)
                    for (int m = 0; m < MAC_IN; m++) wcur[mo][m] = wnext[mo][m];
                if (++it == it_n) {
                    it = 0;
                    ot++;
                }
            }
        }
        if (tile == n_tiles) break;
    }
}

// mac(...): each job's token tiles through the array; experts run fc1 → GELU → fc2 with the hidden tile
// on chip. One call site of mac_tile per layer kind, all in this process.
inline void mac(int stage, int b, const Job jobs[], int n_jobs, hls::stream_of_blocks<slot_w_t, 2>& sw,
                hls::stream_of_blocks<slot_b_t, 2>& sb, hls::stream_of_blocks<a_tile_t, 2>& as,
                hls::stream_of_blocks<y_tile_t, 2>& ys, SatCounters& sat) {
    using namespace cfg;
    M3VIT_LEDGER_PROCESS("mac");
    static hid_tile_t hidden;
#pragma HLS BIND_STORAGE variable = hidden type = ram_2p impl = M3VIT_BIG_MEMORY
    const StageInfo si = stage_info(stage);
    const int it1 = (si.k + MAC_IN - 1) / MAC_IN;
MAC_JOBS:
    for (int j = 0; j < n_jobs; j++) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = MAX_JOBS
        M3VIT_LEDGER_LOOP(MAC_JOBS, j == 0, 4);
        const Job job = jobs[j];
        hls::read_lock<slot_w_t> w(sw);
        hls::read_lock<slot_b_t> bias(sb);
        if (stage == ST_EXPERTS) {
            M3VIT_LEDGER_STEP("expert", job.expert);
            M3VIT_NOTE_EXPERT(b, job.expert, 1, 0, j & 1);
        }
    MAC_TILES:
        for (int r0 = 0; r0 < job.n; r0 += TOKEN_TILE) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = TOKEN_TILES
            M3VIT_LEDGER_LOOP(MAC_TILES, r0 == 0, 4);
            const int nt = (job.n - r0 < TOKEN_TILE) ? job.n - r0 : TOKEN_TILE;
            hls::read_lock<a_tile_t> a_lock(as);
            hls::write_lock<y_tile_t> y_lock(ys);
            const a_tile_t& a = a_lock;
            y_tile_t& y = y_lock;
            if (stage == ST_EXPERTS) {  // fc1 (+ GELU) into the on-chip hidden tile, then fc2 from it
                mac_tile(w, bias, 0, a, nt, 0, EW1_TILES, IT_DIM, EXPERT_HIDDEN, si.packed, SH_FC1, HID_BITS, true, hidden,
                         sat.c[SAT_HIDDEN]);
                mac_tile(w, bias, EH_PO, hidden, nt, EW1_TILES, EW2_TILES, IT_EH, DIM, PK_FC2, SH_FC2, ACT_BITS, false, y,
                         sat.c[SAT_ACT]);
            } else {
                mac_tile(w, bias, 0, a, nt, 0, job.tiles, it1, si.n - job.ot0 * MAC_OUT, si.packed, si.shift, si.obits, si.gelu, y,
                         sat.c[stage == ST_KV || stage == ST_Q ? SAT_QKV : stage == ST_FC1 ? SAT_HIDDEN : stage == ST_ROUTER ? SAT_LOGIT
                                                                                                     : SAT_ACT]);
            }
        }
        if (stage == ST_EXPERTS) M3VIT_NOTE_EXPERT(b, job.expert, 1, 1, j & 1);
    }
}

// ------------------------------------------------------------------------------------------ writer
// write_row<CB>(dst, n, v): n elements as CB-bit lanes, whole AXI words (padding lanes zero).
template <int CB, class T>
inline void write_row(cfg::word_t* dst, int n, const T* v) {
    using namespace cfg;
    const int L = AXI_BITS / CB;
    const int words = burst_words<word_t, CB>(n);
WRITE_ROW:
    for (int i = 0; i < words; i++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT min = 1 max = Y_COLS
        M3VIT_LEDGER_PIPELINE(WRITE_ROW, i == 0, 1, 4);
        word_t w;
        word_clear(w);
        for (int l = 0; l < L; l++) {
#pragma HLS UNROLL
            const int c = i * L + l;
            lane_set<CB>(w, l, c < n ? to_i64(v[c]) : int64_t(0));
        }
        dst[i] = w;
    }
}

// kv_store_row(y, c0, nc, tok, t, kv): output columns c0 … c0 + nc of token tok's QKV row: K columns into
// K (kv_or_acc, whole words), V columns into row t of the tile's transposition buffer; MAC_IN lanes per cycle.
// c0, nc, DIM are multiples of KV_PER_WORD (hls_problems), so a word is all K, all V or all Q.
inline void kv_store_row(const cfg::mac_y_t* y, int c0, int nc, int tok, int t, KvOrAcc& kv) {
    using namespace cfg;
KV_STORE:
    for (int c = 0; c < nc; c += MAC_IN) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT min = 1 max = Y_COLS / MAC_IN
        M3VIT_LEDGER_PIPELINE(KV_STORE, c == 0, 1, 3);
        for (int wi = 0; wi < MAC_IN / KV_PER_WORD; wi++) {
#pragma HLS UNROLL
            const int c1 = c + wi * KV_PER_WORD, col = c0 + c1;
            const bool in = c1 < nc;  // nc is a multiple of KV_PER_WORD: the word is all in or all out
            qkv_t v[KV_PER_WORD];
            for (int j = 0; j < KV_PER_WORD; j++) v[j] = in ? qkv_t(y[c1 + j]) : qkv_t(0);
            if (in && col >= DIM && col < 2 * DIM) k_write(kv, tok, col - DIM, v);
            if (in && col >= 2 * DIM && col < 3 * DIM)
                for (int j = 0; j < KV_PER_WORD; j++) kv.vrows[t][col - 2 * DIM + j] = v[j];
        }
    }
}

// kv_transpose_tile(c0, nc, r0, nt, kv): the tile's V columns into rows of Vᵀ: a row's TOKEN_TILE keys (zero
// past nt) in KV_TRANSPOSE_PASSES cycles of at most KVA_BANKS words.
inline void kv_transpose_tile(int c0, int nc, int r0, int nt, KvOrAcc& kv) {
    using namespace cfg;
    const int v0 = c0 > 2 * DIM ? c0 : 2 * DIM;
    const int words = TOKEN_TILE / KV_PER_WORD;
    int col = v0, pass = 0;
KV_TRANSPOSE:
    for (int i = 0; i < (c0 + nc - v0) * KV_TRANSPOSE_PASSES; i++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT min = 1 max = DIM * KV_TRANSPOSE_PASSES
        M3VIT_LEDGER_PIPELINE(KV_TRANSPOSE, i == 0, 1, 3);
        for (int wi = 0; wi < KVA_BANKS; wi++) {
#pragma HLS UNROLL
            const int w = pass * KVA_BANKS + wi, t0 = w * KV_PER_WORD;
            if (w < words) {
                qkv_t v[KV_PER_WORD];
                for (int j = 0; j < KV_PER_WORD; j++) v[j] = t0 + j < nt ? kv.vrows[t0 + j][col - 2 * DIM] : qkv_t(0);
                vt_write(kv, col - 2 * DIM, r0 + t0, v);
            }
        }
        if (++pass == KV_TRANSPOSE_PASSES) {
            pass = 0;
            col++;
        }
    }
}

// route_token(lg, rt, tok): softmax gates over the kept experts of one logit row and the top-K' kept experts
// by logit (ties → lower expert index), into rt.sel[tok], rt.gsel[tok], and the experts' queue counts;
// pruned experts take no part, as if their logit were -inf (docs/numerics.md §10). Every expert lane works
// in parallel (unrolled); one token per cycle when pipelined.
inline void route_token(const cfg::mac_y_t* lg_row, Routing& rt, int tok) {
    using namespace cfg;
    logit_t lg[EXPERTS];
    prob_t p[EXPERTS];
    bool chosen[EXPERTS];
#pragma HLS ARRAY_PARTITION variable = lg complete
#pragma HLS ARRAY_PARTITION variable = p complete
#pragma HLS ARRAY_PARTITION variable = chosen complete
    logit_t mx = 0;
    bool any = false;
    for (int e = 0; e < EXPERTS; e++) {
#pragma HLS UNROLL
        lg[e] = logit_t(lg_row[e]);
        if (rt.kept[e] && (!any || lg[e] > mx)) mx = lg[e];
        any = any || rt.kept[e];
        chosen[e] = !rt.kept[e];  // a pruned expert is never selected
    }
    i64 sum = 0;
    for (int e = 0; e < EXPERTS; e++) {
#pragma HLS UNROLL
        const i64 z = rshr<SH_ROUTER_Z>(i64(i64(lg[e]) - i64(mx)) * i64(C_ROUTER));
        p[e] = rt.kept[e] ? prob_t(exp2neg<FZ>(z, EXP2_TABLE)) : prob_t(0);
        sum += p[e];
    }
    i64 r;
    int len;
    recip(u64(sum), r, len);  // sum ≥ 2^15: the max kept logit contributes 2^15
    for (int k = 0; k < TOP_K; k++) {
#pragma HLS UNROLL
        if (k < rt.top_k) {  // K' ≤ TOP_K selections; the map keeps at least K' experts
            int best = -1;
            for (int e = 0; e < EXPERTS; e++) {
#pragma HLS UNROLL
                // strict '>' while scanning upwards: among equal logits the lower index wins
                if (!chosen[e] && (best < 0 || lg[e] > lg[best])) best = e;
            }
            chosen[best] = true;
            rt.sel[tok][k] = expert_t(best);
            rt.gsel[tok][k] = prob_t(rshr_rt<i64>(i64(p[best]) * i64(recip_t(r)), len));
            rt.count[best]++;
        }
    }
}

// residual_row(res, y, n, dst, nsat): dst = SAT_act(res + y) for n act lanes, one AXI word per cycle.
inline void residual_row(const cfg::word_t* res, const cfg::mac_y_t* y, int n, cfg::word_t* dst, uint32_t& nsat) {
    using namespace cfg;
    const int L = AXI_BITS / ACT_CB;
    const int words = burst_words<word_t, ACT_CB>(n);
RES_ADD:
    for (int i = 0; i < words; i++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT min = 1 max = Y_COLS
        M3VIT_LEDGER_PIPELINE(RES_ADD, i == 0, 1, 4);
        const word_t rw = res[i];
        word_t w;
        word_clear(w);
        for (int l = 0; l < L; l++) {
#pragma HLS UNROLL
            const int c = i * L + l;
            if (c < n) {
                const res_t v = res_t(res_t(act_t(lane_get<ACT_CB>(rw, l))) + res_t(y[c]));
                lane_set<ACT_CB>(w, l, to_i64(sat_bits<ACT_BITS>(v, nsat)));
            }
        }
        dst[i] = w;
    }
}

// moe_output(a, res, m, x, nsat): an MoE block's output for one element (docs/numerics.md §11): the MoE
// value m = REQ_act(A, 15) and the block output x = SAT_act(attn_res + m); clamps count in nsat.
inline void moe_output(cfg::moe_sum_t a, cfg::act_t res, cfg::act_t& m, cfg::act_t& x, uint32_t& nsat) {
    using namespace cfg;
    m = act_t(req<PROB_FRAC, ACT_BITS>(i64(a), nsat));
    x = act_t(sat_bits<ACT_BITS>(res_t(res_t(res) + res_t(m)), nsat));
}

// moe_final_row(kv, tok, res, mlp, x, nsat): mlp = REQ_act(A, 15) and x = SAT_act(attn_res + mlp) for token
// tok's accumulator row, one AXI word of each per cycle.
inline void moe_final_row(const KvOrAcc& kv, int tok, const cfg::word_t* res, cfg::word_t* mlp, cfg::word_t* x,
                          uint32_t& nsat) {
    using namespace cfg;
    const int L = AXI_BITS / ACT_CB;
    const int words = (DIM + L - 1) / L;  // a compile-time constant
MOE_REQ:
    for (int i = 0; i < words; i++) {
#pragma HLS PIPELINE II = 1
        M3VIT_LEDGER_PIPELINE(MOE_REQ, i == 0, 1, 4);
        const word_t rw = res[i];
        word_t wm, wx;
        word_clear(wm);
        word_clear(wx);
        for (int l = 0; l < L; l++) {
#pragma HLS UNROLL
            const int c = i * L + l;
            if (c < DIM) {
                act_t m, x;
                moe_output(kva_acc(acc_word(kv, tok, c >> 1), c & 1), act_t(lane_get<ACT_CB>(rw, l)), m, x, nsat);
                lane_set<ACT_CB>(wm, l, to_i64(m));
                lane_set<ACT_CB>(wx, l, to_i64(x));
            }
        }
        mlp[i] = wm;
        x[i] = wx;
    }
}

// writer(...): dense stages store their outputs (QKV, FC1 hidden, router logits) or add the residual
// (embedding: + position; proj: + x → attn_res; FC2: mlp tap and attn_res + mlp → x). Experts: every
// result row times its gate into the token's exact accumulator (on chip); after a token's last expert its
// MoE output mlp = REQ(A, 15) and block output x = SAT(attn_res + mlp).
inline void writer(int stage, const cfg::word_t* weights, cfg::word_t* scratch, const Queues& qs,
                   KvOrAcc& kv, Routing& rt, MoeAcc& acc, const Job jobs[], int n_jobs,
                   hls::stream_of_blocks<y_tile_t, 2>& ys, SatCounters& sat) {
    using namespace cfg;
    M3VIT_LEDGER_PROCESS("writer");
    act_t res[DIM];
    if (stage == ST_EMBED) {  // cls token: row 0 is pos[0] (cls + pos[0], quantised on the host)
        burst_read_elems<ACT_CB>(weights + POS, 0, DIM, res);
        burst_write_elems<ACT_CB>(scratch + SCR_X, DIM, res);
    }
    if (stage == ST_EXPERTS) {
    ACC_CLEAR:
        for (int t = 0; t < TOKENS; t++) {
#pragma HLS PIPELINE II = 1
            M3VIT_LEDGER_PIPELINE(ACC_CLEAR, t == 0, 1, 2);
            acc.hits[t] = 0;
        }
    }
WRITER_JOBS:
    for (int j = 0; j < n_jobs; j++) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = MAX_JOBS
        M3VIT_LEDGER_LOOP(WRITER_JOBS, j == 0, 4);
        const Job job = jobs[j];
        if (stage == ST_EXPERTS) M3VIT_LEDGER_STEP("expert", job.expert);
        const int c0 = job.ot0 * MAC_OUT;
        const int n_out = stage == ST_Q ? DIM : stage_info(stage).n;
        const int nc = stage == ST_EXPERTS ? DIM : (n_out - c0 < job.ot_n * MAC_OUT) ? n_out - c0 : job.ot_n * MAC_OUT;
    WRITER_TILES:
        for (int r0 = 0; r0 < job.n; r0 += TOKEN_TILE) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = TOKEN_TILES
            M3VIT_LEDGER_LOOP(WRITER_TILES, r0 == 0, 4);
            const int nt = (job.n - r0 < TOKEN_TILE) ? job.n - r0 : TOKEN_TILE;
            hls::read_lock<y_tile_t> y(ys);
        WRITER_ROWS:
            for (int t = 0; t < nt; t++) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = TOKEN_TILE
                M3VIT_LEDGER_LOOP(WRITER_ROWS, t == 0, 4);
                const int r = r0 + t;
                if (stage == ST_EXPERTS) {
                    const int tok = int(to_i64(qs.tok[job.q0 + r]));
                    const prob_t g = qs.gate[job.q0 + r];
                    const hits_t hits = acc.hits[tok];
                    const bool first = hits == 0;
                    acc.hits[tok] = hits_t(hits + 1);
                MOE_ACC:  // OUT_LANES gate products per cycle into the token's accumulator row (two per word)
                    for (int c0 = 0; c0 < DIM; c0 += OUT_LANES) {
#pragma HLS PIPELINE II = 1
                        M3VIT_LEDGER_PIPELINE(MOE_ACC, c0 == 0, 1, 4);
                        for (int wi = 0; wi < (OUT_LANES + 1) / 2; wi++) {  // the words lanes c0 … c0 + OUT_LANES touch
#pragma HLS UNROLL
                            const int i = (c0 >> 1) + wi;  // the word of columns 2i, 2i + 1
                            if (2 * i < DIM && 2 * i < c0 + OUT_LANES) {
                                kva_word_t& aw = acc_word(kv, tok, i);
                                kva_word_t nw = aw;
                                for (int h = 0; h < 2; h++) {
                                    const int c = 2 * i + h;
                                    if (c >= c0 && c < c0 + OUT_LANES && c < DIM) {
                                        const moe_sum_t p = moe_sum_t(moe_prod_t(moe_prod_t(y[t][c]) * g));
                                        kva_set_acc(nw, h, first ? p : moe_sum_t(kva_acc(aw, h) + p));
                                    }
                                }
                                aw = nw;
                            }
                        }
                    }
                    if (hits + 1 == rt.top_k)  // the token's last (K'-th) expert: the block's output row
                        moe_final_row(kv, tok, scratch + SCR_ATTN_RES + uint64_t(tok) * STR_ACT,
                                      scratch + SCR_MLP + uint64_t(tok) * STR_ACT, scratch + SCR_X + uint64_t(tok) * STR_ACT,
                                      sat.c[SAT_ACT]);
                    continue;
                }
                const mac_y_t* row = &y[t][0];
                if (stage == ST_KV || stage == ST_Q) {  // the qkv tap (and the queries the attention reads)
                    write_row<QKV_CB>(scratch + SCR_QKV + uint64_t(r) * STR_QKV3 + c0 / (AXI_BITS / QKV_CB), nc, row);
                    if (stage == ST_KV) kv_store_row(row, c0, nc, r, t, kv);
                } else if (stage == ST_FC1) {
                    write_row<HID_CB>(scratch + SCR_HIDDEN + uint64_t(r) * STR_HID + c0 / (AXI_BITS / HID_CB), nc, row);
                } else if (stage == ST_ROUTER) {
                    write_row<LOGIT_CB>(scratch + SCR_LOGITS + uint64_t(r) * STR_LOGIT, nc, row);
                } else {
                    // residual: embedding + pos (row 1 + p), proj: x + y → attn_res, FC2: attn_res + y → x
                    const int tok = stage == ST_EMBED ? 1 + r : r;
                    const word_t* rsrc = stage == ST_EMBED ? weights + POS + uint64_t(tok) * POS_STRIDE
                                         : stage == ST_PROJ ? scratch + SCR_X + uint64_t(tok) * STR_ACT
                                                            : scratch + SCR_ATTN_RES + uint64_t(tok) * STR_ACT;
                    const int ca = c0 / (AXI_BITS / ACT_CB);
                    const uint64_t dst = stage == ST_PROJ ? SCR_ATTN_RES : SCR_X;
                    if (stage == ST_FC2) write_row<ACT_CB>(scratch + SCR_MLP + uint64_t(tok) * STR_ACT + ca, nc, row);
                    residual_row(rsrc + ca, row, nc, scratch + dst + uint64_t(tok) * STR_ACT + ca, sat.c[SAT_ACT]);
                }
            }
            if (stage == ST_KV) kv_transpose_tile(c0, nc, r0, nt, kv);
            if (stage == ST_ROUTER) {
            ROUTE_ROWS:  // the routing lanes: one token per cycle
                for (int t = 0; t < nt; t++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT min = 1 max = TOKEN_TILE
                    M3VIT_LEDGER_PIPELINE(ROUTE_ROWS, t == 0, 1, 96);
                    route_token(&y[t][0], rt, r0 + t);
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------ engine
// run_stage(stage, b, task, ...): one stage as a DATAFLOW region (jobs from the routing for experts).
// Saturation counts of the processes are summed into `sat` after the region.
inline void run_stage(int stage, int b, unsigned task, const cfg::word_t* weights, cfg::word_t* scratch,
                      const cfg::word_t* image, const Queues& qs, KvOrAcc& kv, Routing& rt, MoeAcc& acc,
                      SatCounters& sat) {
    using namespace cfg;
    Job jobs[MAX_JOBS];
    const int n_jobs = job_list(stage, qs, rt, jobs);
    if (stage == ST_ROUTER) {
        read_expert_map(weights, b, rt);
        for (int e = 0; e < EXPERTS; e++) rt.count[e] = 0;
    }
    lnp_t g[DIM], be[DIM];
    if (stage == ST_KV || stage == ST_FC1 || stage == ST_ROUTER) {
        const BlockOffsets o = BLOCK_OFF[b];
        burst_read_elems<LNP_CB>(weights + (stage == ST_KV ? o.norm1_g : o.norm2_g), 0, DIM, g);
        burst_read_elems<LNP_CB>(weights + (stage == ST_KV ? o.norm1_b : o.norm2_b), 0, DIM, be);
    }
    SatCounters s_rd, s_mac, s_wr;
    sat_clear(s_rd);
    sat_clear(s_mac);
    sat_clear(s_wr);
    hls::stream_of_blocks<slot_w_t, 2> sw;  // the two weight slots (ping-pong)
    hls::stream_of_blocks<slot_b_t, 2> sb;
    hls::stream_of_blocks<a_tile_t, 2> as;  // activation tiles
    hls::stream_of_blocks<y_tile_t, 2> ys;  // output tiles
    M3VIT_BLOCKS_NAME(sw);
    M3VIT_BLOCKS_NAME(sb);
    M3VIT_BLOCKS_NAME(as);
    M3VIT_BLOCKS_NAME(ys);
#pragma HLS BIND_STORAGE variable = sw type = ram_2p impl = bram
#pragma HLS BIND_STORAGE variable = ys type = ram_2p impl = M3VIT_BIG_MEMORY
    static const char* const names[] = {"embed", "kv", "q", "proj", "fc1", "fc2", "router", "experts"};
    M3VIT_DATAFLOW_REGION(names[stage]) {
        M3VIT_PROCESS(loader, stage, b, task, weights, jobs, n_jobs, sw, sb);
        M3VIT_PROCESS(reader, stage, image, scratch, qs, g, be, jobs, n_jobs, as, s_rd);
        M3VIT_PROCESS(mac, stage, b, jobs, n_jobs, sw, sb, as, ys, s_mac);
        M3VIT_PROCESS(writer, stage, weights, scratch, qs, kv, rt, acc, jobs, n_jobs, ys, s_wr);
    }
    for (int c = 0; c < SAT_NUM; c++) sat.c[c] += s_rd.c[c] + s_mac.c[c] + s_wr.c[c];
}

}  // namespace m3vit

#endif  // M3VIT_LINEAR_H
