// m3vit_backbone.h — the transformer block (docs/numerics.md §13) and the backbone driver the top
// function calls: images × layers, with a layer range for per-layer debugging.
//
// Layers are numbered 0 = patch embedding, i + 1 = block i. A run over [first, last] reads images
// from `input` when first = 0, else token matrices (act) entering layer `first`, and writes the tokens
// leaving layer `last` to `output`. After the run the scratch regions hold every tap of the last block
// of the last image, and scratch `sat` holds the saturation counts of each layer (summed over images).
#ifndef M3VIT_BACKBONE_H
#define M3VIT_BACKBONE_H

#include "m3vit_attention.h"
#include "m3vit_config.h"
#include "m3vit_linear.h"
#include "m3vit_moe.h"

namespace m3vit {

// On-chip state shared by the stages: kv_or_acc (K/Vᵀ of the current block, or its MoE accumulators), the
// routing and the expert queues.
struct BlockState {
    KvOrAcc kv;
    Routing rt;
    Queues qs;
    MoeAcc acc;
};

// run_block(b, task, weights, scratch, st, sat): x ← block b(x) on the scratch region x.
inline void run_block(int b, unsigned task, const cfg::word_t* weights, cfg::word_t* scratch, BlockState& st,
                      SatCounters& sat) {
    using namespace cfg;
    // ledger steps: the names of m3vit.codegen.perf's step list (block<b>.kv, .attn, .queues, .expert<e>, ...)
    M3VIT_LEDGER_STEP("kv", -1);
    run_stage(ST_KV, b, task, weights, scratch, scratch, st.qs, st.kv, st.rt, st.acc, sat);
    M3VIT_LEDGER_STEP("attn", -1);
    run_stage(ST_Q, b, task, weights, scratch, scratch, st.qs, st.kv, st.rt, st.acc, sat);
    stage_attention(scratch, st.kv, sat);
    run_stage(ST_PROJ, b, task, weights, scratch, scratch, st.qs, st.kv, st.rt, st.acc, sat);
    if (BLOCK_OFF[b].moe) {
        run_stage(ST_ROUTER, b, task, weights, scratch, scratch, st.qs, st.kv, st.rt, st.acc, sat);
        M3VIT_LEDGER_STEP("queues", -1);
        build_queues(st.rt, st.qs);  // the experts stage's job list and accumulator clear count here too
        run_stage(ST_EXPERTS, b, task, weights, scratch, scratch, st.qs, st.kv, st.rt, st.acc, sat);
    } else {
        M3VIT_LEDGER_STEP("mlp", -1);
        run_stage(ST_FC1, b, task, weights, scratch, scratch, st.qs, st.kv, st.rt, st.acc, sat);
        run_stage(ST_FC2, b, task, weights, scratch, scratch, st.qs, st.kv, st.rt, st.acc, sat);
    }
}

// stage_copy(src, dst, words): a word-for-word burst copy (input tokens → x, x → output). II = 1.
inline void stage_copy(const cfg::word_t* src, cfg::word_t* dst, uint64_t words) {
    M3VIT_LEDGER_PROCESS("stage_copy");
COPY:
    for (uint64_t i = 0; i < words; i++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT min = 1 max = 65536
        M3VIT_LEDGER_PIPELINE(COPY, i == 0, 1, 3);
        dst[i] = src[i];
    }
}

// sat_store(scratch, layer, sat, add): scratch sat[layer][:] (+)= sat.
inline void sat_store(cfg::word_t* scratch, int layer, const SatCounters& sat, bool add) {
    using namespace cfg;
    sint<33>::t row[SAT_NUM];
    burst_read_elems<32>(scratch + SCR_SAT + uint64_t(layer) * STR_SAT, 0, SAT_NUM, row);
    for (int c = 0; c < SAT_NUM; c++) row[c] = add ? sint<33>::t(row[c] + sat.c[c]) : sint<33>::t(0);
    burst_write_elems<32>(scratch + SCR_SAT + uint64_t(layer) * STR_SAT, SAT_NUM, row);
}

// backbone(...): the whole accelerator; see the file comment for the layer range. `status` is written
// first: STATUS_OK and the run, or the OR of the STATUS_* causes (num_images outside [1, MAX_IMAGES],
// task ≥ TASKS, first or last layer > DEPTH, first > last) and a return that touches no memory.
inline void backbone(unsigned num_images, unsigned task, unsigned first_layer, unsigned last_layer,
                     const cfg::word_t* weights, cfg::word_t* scratch, const cfg::word_t* input,
                     cfg::word_t* output, unsigned& status) {
    using namespace cfg;
#pragma HLS ALLOCATION function instances = mac_array limit = 1
    static BlockState st;
#pragma HLS ARRAY_PARTITION variable = st.kv.w complete dim = 1
#pragma HLS BIND_STORAGE variable = st.kv.w type = ram_2p impl = M3VIT_BIG_MEMORY
    const unsigned refused = (num_images == 0 || num_images > unsigned(MAX_IMAGES) ? STATUS_IMAGES : 0u) |
                             (task >= unsigned(TASKS) ? STATUS_TASK : 0u) |
                             (first_layer > unsigned(DEPTH) ? STATUS_FIRST_LAYER : 0u) |
                             (last_layer > unsigned(DEPTH) ? STATUS_LAST_LAYER : 0u) |
                             (first_layer > last_layer ? STATUS_LAYER_ORDER : 0u);
    status = refused;
    if (refused != STATUS_OK) return;
    const unsigned last = last_layer;  // ≤ DEPTH: guarded above
    SatCounters sat;
    sat_clear(sat);
    M3VIT_LEDGER_LAYER(-1);
SAT_ZERO:
    for (int layer = 0; layer <= DEPTH; layer++) {
        M3VIT_LEDGER_LOOP(SAT_ZERO, layer == 0, 2);
        sat_store(scratch, layer, sat, false);
    }
    const cfg::word_t* in = input;  // this image's input; the next one follows at in_words
    const uint64_t in_words = first_layer == 0 ? IMAGE_WORDS : TOKEN_WORDS;
IMAGES:
    for (unsigned img = 0; img < num_images; img++) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = MAX_IMAGES
        M3VIT_LEDGER_LOOP(IMAGES, img == 0, 2);
    LAYERS:
        for (unsigned layer = first_layer; layer <= last; layer++) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = LAYERS
            M3VIT_LEDGER_LAYER(-1);
            M3VIT_LEDGER_LOOP(LAYERS, layer == first_layer, 2);
            sat_clear(sat);
            if (layer == first_layer && layer > 0) stage_copy(in, scratch + SCR_X, TOKEN_WORDS);
            M3VIT_LEDGER_LAYER(layer);
            if (layer == 0) {
                run_stage(ST_EMBED, 0, task, weights, scratch, in, st.qs, st.kv, st.rt, st.acc, sat);
            } else {
                run_block(int(layer) - 1, task, weights, scratch, st, sat);
            }
            M3VIT_LEDGER_LAYER(-1);
            sat_store(scratch, int(layer), sat, true);
        }
        stage_copy(scratch + SCR_X, output + uint64_t(img) * TOKEN_WORDS, TOKEN_WORDS);
        in += in_words;
    }
}

}  // namespace m3vit

#endif  // M3VIT_BACKBONE_H
