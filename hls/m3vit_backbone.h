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
#include "m3vit_embed.h"
#include "m3vit_layernorm.h"
#include "m3vit_linear.h"
#include "m3vit_moe.h"

namespace m3vit {

// run_block(b, task, weights, scratch, wbuf, bbuf, sat): x ← block b(x) on the scratch region x.
inline void run_block(int b, unsigned task, const cfg::word_t* weights, cfg::word_t* scratch,
                      cfg::wgt_t wbuf[][cfg::MAC_OUT][cfg::MAC_IN], cfg::bias_t bbuf[], SatCounters& sat) {
    using namespace cfg;
    static Queues qs;
    const BlockOffsets o = BLOCK_OFF[b];
    // ledger steps: the names of m3vit.codegen.perf's step list (block<b>.kv, .attn, .queues, .expert<e>, ...)
    M3VIT_LEDGER_STEP("kv", -1);
    stage_layernorm(weights, o.norm1_g, o.norm1_b, scratch, SCR_X, SCR_NORM1, TOKENS, sat);
    stage_linear<norm_t, NORM_CB, DIM, psum_norm_t, qkv_t, QKV_CB, QKV_BITS, 3 * DIM, SH_QKV, false, false>(
        weights, o.qkv_w, o.qkv_b, scratch, SCR_NORM1, STR_NORM, SCR_QKV, STR_QKV3, 0, TOKENS, wbuf, bbuf,
        sat.c[SAT_QKV]);
    M3VIT_LEDGER_STEP("attn", -1);
    stage_attention(scratch, sat);
    stage_linear<qkv_t, QKV_CB, DIM, psum_qkv_t, act_t, ACT_CB, ACT_BITS, DIM, SH_PROJ, false, true>(
        weights, o.proj_w, o.proj_b, scratch, SCR_ATTN, STR_QKVD, SCR_ATTN_RES, STR_ACT, SCR_X, TOKENS, wbuf, bbuf,
        sat.c[SAT_ACT]);
    stage_layernorm(weights, o.norm2_g, o.norm2_b, scratch, SCR_ATTN_RES, SCR_NORM2, TOKENS, sat);
    if (o.moe) {
        stage_router(weights, o.router + uint64_t(task) * ROUTER_TASK_STRIDE, scratch, wbuf, bbuf, qs, sat);
        stage_experts(b, weights, o.experts, scratch, qs, sat);
        M3VIT_LEDGER_STEP("finalize", -1);
        stage_moe_finish(scratch, sat);
    } else {
        M3VIT_LEDGER_STEP("mlp", -1);
        stage_linear<norm_t, NORM_CB, DIM, psum_norm_t, hid_t, HID_CB, HID_BITS, MLP_HIDDEN, SH_FC1, true, false>(
            weights, o.fc1_w, o.fc1_b, scratch, SCR_NORM2, STR_NORM, SCR_HIDDEN, STR_HID, 0, TOKENS, wbuf, bbuf,
            sat.c[SAT_HIDDEN]);
        stage_linear<hid_t, HID_CB, MLP_HIDDEN, psum_hid_t, act_t, ACT_CB, ACT_BITS, DIM, SH_FC2, false, false>(
            weights, o.fc2_w, o.fc2_b, scratch, SCR_HIDDEN, STR_HID, SCR_MLP, STR_ACT, 0, TOKENS, wbuf, bbuf,
            sat.c[SAT_ACT]);
        M3VIT_LEDGER_STEP("finalize", -1);
    }
    stage_residual(scratch, SCR_ATTN_RES, SCR_MLP, SCR_X, TOKENS, sat.c[SAT_ACT]);
}

// sat_store(scratch, layer, sat, add): scratch sat[layer][:] (+)= sat.
inline void sat_store(cfg::word_t* scratch, int layer, const SatCounters& sat, bool add) {
    using namespace cfg;
    sint<33>::t row[SAT_NUM];
    dma_read<32>(scratch + SCR_SAT + uint64_t(layer) * STR_SAT, 0, SAT_NUM, row);
    for (int c = 0; c < SAT_NUM; c++) row[c] = add ? sint<33>::t(row[c] + sat.c[c]) : sint<33>::t(0);
    dma_write<32>(scratch + SCR_SAT + uint64_t(layer) * STR_SAT, 0, SAT_NUM, row);
}

// backbone(...): the whole accelerator; see the file comment for the layer range. `status` is written
// first: STATUS_OK and the run, or the OR of the STATUS_* causes (num_images outside [1, MAX_IMAGES],
// task ≥ TASKS, first or last layer > DEPTH, first > last) and a return that touches no memory.
inline void backbone(unsigned num_images, unsigned task, unsigned first_layer, unsigned last_layer,
                     const cfg::word_t* weights, cfg::word_t* scratch, const cfg::word_t* input,
                     cfg::word_t* output, unsigned& status) {
    using namespace cfg;
    static wgt_t wbuf[WBUF_TILES][MAC_OUT][MAC_IN];
    static bias_t bbuf[WBUF_OUT];
#pragma HLS ARRAY_PARTITION variable = wbuf dim = 2 complete
#pragma HLS ARRAY_RESHAPE variable = wbuf dim = 3 complete
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
IMAGES:
    for (unsigned img = 0; img < num_images; img++) {
        M3VIT_LEDGER_LOOP(IMAGES, img == 0, 2);
        const cfg::word_t* in = input + uint64_t(img) * (first_layer == 0 ? IMAGE_WORDS : TOKEN_WORDS);
    LAYERS:
        for (unsigned layer = first_layer; layer <= last; layer++) {
            M3VIT_LEDGER_LAYER(-1);
            M3VIT_LEDGER_LOOP(LAYERS, layer == first_layer, 2);
            sat_clear(sat);
            if (layer == first_layer && layer > 0) stage_copy(in, scratch + SCR_X, TOKEN_WORDS);
            M3VIT_LEDGER_LAYER(layer);
            if (layer == 0) {
                stage_embed(weights, in, scratch, wbuf, bbuf, sat);
            } else {
                run_block(int(layer) - 1, task, weights, scratch, wbuf, bbuf, sat);
            }
            M3VIT_LEDGER_LAYER(-1);
            sat_store(scratch, int(layer), sat, true);
        }
        stage_copy(scratch + SCR_X, output + uint64_t(img) * TOKEN_WORDS, TOKEN_WORDS);
    }
}

}  // namespace m3vit

#endif  // M3VIT_BACKBONE_H
