// moe_unit_counters: the read-only performance and status counters (register map in moe_unit_pkg; meaning
// in m3vit.codegen.rtl.COUNTERS), cleared when the core takes ap_start. Packed 32 bits each, index CNT_*.
`default_nettype none

module moe_unit_counters
    import moe_unit_pkg::*;
    import moe_unit_defs_pkg::*;
(
    input  wire logic                  clk,
    input  wire logic                  rst,
    input  wire logic                  core_start,
    input  wire logic [2:0]            phase,
    input  wire logic [31:0]           num_tokens,    // as written (errors bit 0 when above TMAX)
    input  wire logic [15:0]           ntok,
    input  wire logic                  issue,         // a MAC tile issued
    input  wire logic                  sched_waiting, // the scheduler waits for an expert's queue
    input  wire logic [15:0]           experts_done,
    input  wire logic [15:0]           n_used,
    input  wire logic                  mem_wait,      // the scheduler waits for weights or a token row
    input  wire logic                  beat_read,     // an R beat
    input  wire logic [1:0]            read_kind,     // of that beat's job
    input  wire logic                  count_over,    // a count-table beat has a count above TMAX
    input  wire logic                  beat_written,  // a W beat
    input  wire logic                  s5_v,
    input  wire logic                  s5_layer,
    input  wire logic [SATW-1:0]       s5_sat,
    input  wire logic [SATW-1:0]       out_sat,       // saturations of the final REQ
    input  wire logic                  s6_add,        // S6 holds an fc2 unit
    input  wire logic [15:0]           s6_tok,
    output logic [NUM_COUNTERS*32-1:0] counters
);
    logic [31:0] cnt [0:NUM_COUNTERS-1];
    always_comb for (int c = 0; c < NUM_COUNTERS; c++) counters[c * 32 +: 32] = cnt[c];

    wire exp_phase = (phase == P_EXP);
    always_ff @(posedge clk) begin
        if (rst || core_start) begin
            for (int c = 0; c < NUM_COUNTERS; c++) cnt[c] <= '0;
        end else begin
            if (phase != P_IDLE) cnt[CNT_BUSY_CYCLES] <= cnt[CNT_BUSY_CYCLES] + 1;
            if (issue) cnt[CNT_MAC_CYCLES] <= cnt[CNT_MAC_CYCLES] + 1;
            if (phase == P_CNT || (exp_phase && sched_waiting && experts_done != n_used) || (exp_phase && mem_wait))
                cnt[CNT_STALL_CYCLES] <= cnt[CNT_STALL_CYCLES] + 1;
            if (beat_read) cnt[CNT_BYTES_READ] <= cnt[CNT_BYTES_READ] + BB;
            if (beat_read && read_kind == K_W) cnt[CNT_WEIGHT_BYTES_READ] <= cnt[CNT_WEIGHT_BYTES_READ] + BB;
            if (beat_written) cnt[CNT_BYTES_WRITTEN] <= cnt[CNT_BYTES_WRITTEN] + BB;
            if (s5_v && !s5_layer) cnt[CNT_SAT_HIDDEN] <= cnt[CNT_SAT_HIDDEN] + 32'(s5_sat);
            cnt[CNT_SAT_ACT] <= cnt[CNT_SAT_ACT] + ((s5_v && s5_layer) ? 32'(s5_sat) : 32'd0) + 32'(out_sat);
            if (exp_phase) cnt[CNT_EXPERTS_USED] <= {16'd0, n_used};
            if (exp_phase) cnt[CNT_EXPERT_PHASE_CYCLES] <= cnt[CNT_EXPERT_PHASE_CYCLES] + 1;
            if (phase == P_CNT && num_tokens > TMAX) cnt[CNT_ERRORS][0] <= 1'b1;
            if (beat_read && read_kind == K_CNT && count_over) cnt[CNT_ERRORS][1] <= 1'b1;
            if (s6_add && s6_tok >= ntok) cnt[CNT_ERRORS][2] <= 1'b1;
        end
    end
endmodule

`default_nettype wire
