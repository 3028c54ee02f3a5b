// moe_unit_prefetch: the phases of a call and the prefetcher that keeps the read engine busy.
// P_IDLE -> P_CNT (load the count table) -> P_EXP -> P_OUT (write-back) -> P_DONE -> P_IDLE. In P_EXP the
// prefetcher walks the experts in ascending index; for each with a non-empty queue it fills one of two slots
// (queue, then b1/w1, then b2/w2) while the wave scheduler computes on the other, and sets the slot's
// slot_q / slot_a / slot_full flags as each part is complete (the scheduler releases a slot with slot_clear).
// The token rows are loaded once per call, before the first used expert's b1/w1 when that takes fewer beats,
// else after its b2/w2.
`default_nettype none

module moe_unit_prefetch
    import moe_unit_pkg::*;
    import moe_unit_defs_pkg::*;
(
    input  wire logic          clk,
    input  wire logic          rst,
    input  wire logic          ap_start,
    input  wire logic [31:0]   num_tokens,
    input  wire logic [63:0]   x_ptr,
    input  wire logic [63:0]   queues_ptr,
    input  wire logic [63:0]   weights_ptr,
    input  wire logic [NE*16-1:0] counts,
    input  wire logic [15:0]   n_used,
    input  wire logic [15:0]   experts_done,   // experts the scheduler finished
    input  wire logic          clr_busy,       // the accumulators are being cleared
    input  wire logic          out_done,       // the write-back finished
    input  wire logic          slot_clear,     // the scheduler releases slot slot_clear_sel
    input  wire logic          slot_clear_sel,
    output logic [2:0]         phase,
    output logic [15:0]        ntok,           // tokens of this call, min(num_tokens, TMAX)
    output logic               core_done_pulse,
    // read job for the read engine (taken the cycle job_start is high; one job at a time)
    input  wire logic          job_busy,
    output logic               job_start,
    output logic [1:0]         job_kind,
    output logic [63:0]        job_addr,
    output logic [31:0]        job_beats,
    output logic [31:0]        job_base,
    // slots
    output logic               pf_slot,        // slot being filled
    output logic [1:0]         slot_q,         // the slot's queue is on chip (occupied until released)
    output logic [1:0]         slot_a,         // ... and b1, w1
    output logic [1:0]         slot_full,      // ... and b2, w2
    output logic [31:0]        slot_cnt        // queue length of each slot, {slot 1, slot 0}
);
    localparam logic [2:0] PF_SCAN = 3'd0, PF_SLOT = 3'd1, PF_Q = 3'd2, PF_WA = 3'd3, PF_X = 3'd4, PF_WB = 3'd5;
    localparam int EW = $clog2(NE) > 0 ? $clog2(NE) : 1;
    logic [2:0]  pf_state;
    logic        x_started;    // the token load was started
    logic [15:0] pf_e;         // expert being looked at
    logic        pf_done;
    logic [15:0] pf_count;
    // the token rows go before the first expert's b1/w1 when they take fewer beats (fc1 waves then follow
    // w1 as it arrives), else after its w2/b2, behind the compute
    wire         x_early = {16'd0, ntok} * X_ROW_BEATS < W1_END;
    wire         job_free = !job_start && !job_busy;
    wire  [63:0] expert_addr = weights_ptr + {48'd0, pf_e} * EXP_STRIDE;

    assign pf_count = counts[pf_e[EW-1:0] * 16 +: 16];

    always_ff @(posedge clk) begin
        job_start <= 1'b0;
        core_done_pulse <= 1'b0;
        if (rst) begin
            phase <= P_IDLE; pf_state <= PF_SCAN; slot_q <= '0; slot_a <= '0; slot_full <= '0; pf_slot <= 1'b0;
            pf_e <= '0; pf_done <= 1'b0; ntok <= '0; x_started <= 1'b0;
        end else begin
            if (slot_clear) begin
                slot_q[slot_clear_sel] <= 1'b0; slot_a[slot_clear_sel] <= 1'b0; slot_full[slot_clear_sel] <= 1'b0;
            end
            case (phase)
                P_IDLE: if (ap_start) begin
                    ntok <= (num_tokens > TMAX) ? 16'(TMAX) : num_tokens[15:0];
                    job_start <= 1'b1; job_kind <= K_CNT; job_addr <= queues_ptr; job_beats <= CNT_BEATS;
                    job_base <= '0;
                    phase <= P_CNT;
                end
                P_CNT: if (job_free) begin
                    phase <= P_EXP; pf_state <= PF_SCAN; pf_e <= '0; pf_slot <= 1'b0; pf_done <= 1'b0;
                    slot_q <= '0; slot_a <= '0; slot_full <= '0; x_started <= 1'b0;
                end
                P_EXP: begin
                    case (pf_state)
                        PF_SCAN: if (pf_e == 16'(NE)) pf_done <= 1'b1;
                                 else if (pf_count == 0) pf_e <= pf_e + 1;
                                 else pf_state <= PF_SLOT;
                        PF_SLOT: if (!slot_q[pf_slot] && job_free) begin
                            job_start <= 1'b1; job_kind <= K_Q; job_base <= '0;
                            job_addr <= queues_ptr + CNT_BYTES + {48'd0, pf_e} * QSTRIDE;
                            job_beats <= ({16'd0, pf_count} + QE - 1) / QE;
                            pf_state <= PF_Q;
                        end
                        // the compute engine starts on the queue; its fc1 rows follow w1 as it arrives
                        PF_Q: if (job_free) begin
                            slot_q[pf_slot] <= 1'b1; slot_cnt[pf_slot * 16 +: 16] <= pf_count;
                            job_start <= 1'b1;
                            if (!x_started && x_early) begin
                                x_started <= 1'b1;
                                job_kind <= K_X; job_addr <= x_ptr; job_beats <= {16'd0, ntok} * X_ROW_BEATS;
                                job_base <= '0;
                                pf_state <= PF_X;
                            end else begin
                                job_kind <= K_W; job_addr <= expert_addr; job_beats <= W1_END; job_base <= '0;
                                pf_state <= PF_WA;
                            end
                        end
                        PF_X: if (job_free) begin
                            job_start <= 1'b1;
                            job_kind <= K_W; job_addr <= expert_addr; job_beats <= W1_END; job_base <= '0;
                            pf_state <= PF_WA;
                        end
                        PF_WA: if (job_free) begin
                            slot_a[pf_slot] <= 1'b1;
                            job_start <= 1'b1; job_kind <= K_W; job_addr <= expert_addr + 64'(W1_END * BB);
                            job_beats <= EXP_BEATS - W1_END; job_base <= W1_END;
                            pf_state <= PF_WB;
                        end
                        PF_WB: if (job_free) begin
                            slot_full[pf_slot] <= 1'b1;
                            pf_slot <= !pf_slot; pf_e <= pf_e + 1; pf_state <= PF_SCAN;
                            // too many rows to go first: after w2/b2, behind the compute
                            if (!x_started) begin
                                x_started <= 1'b1;
                                job_start <= 1'b1; job_kind <= K_X; job_addr <= x_ptr;
                                job_beats <= {16'd0, ntok} * X_ROW_BEATS; job_base <= '0;
                            end
                        end
                        default: pf_state <= PF_SCAN;
                    endcase
                    if (experts_done == n_used && pf_done && job_free && !clr_busy) phase <= P_OUT;
                end
                P_OUT: if (out_done) phase <= P_DONE;
                P_DONE: begin core_done_pulse <= 1'b1; phase <= P_IDLE; end
                default: phase <= P_IDLE;
            endcase
        end
    end
endmodule

`default_nettype wire
