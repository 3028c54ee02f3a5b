// moe_unit_sink: routes the read engine's data beats by job kind. The count table goes into registers
// (clamped to TMAX); token rows, weight tiles and bias words are assembled from beats into whole words and
// written into their buffers (weights and biases into the slot the prefetcher fills); queue beats go straight
// into the queue buffer. It also counts what has arrived: complete token rows, and the w1 / w2 tiles of the
// slot being filled (the wave scheduler follows them).
`default_nettype none

module moe_unit_sink
    import moe_unit_pkg::*;
    import moe_unit_defs_pkg::*;
(
    input  wire logic              clk,
    input  wire logic              rst,
    input  wire logic              idle,          // between calls: the row counters restart
    input  wire logic              slot_start,    // a new slot's fetch begins: its tile counters restart
    input  wire logic              job_start,     // the read engine takes a job
    input  wire logic [1:0]        kind,
    input  wire logic [31:0]       base,          // K_W: beat index of the job's first beat in the expert record
    input  wire logic [31:0]       beat,
    input  wire logic              beat_valid,
    input  wire logic [DW-1:0]     rdata,
    input  wire logic              pf_slot,       // slot the prefetcher fills
    output logic [NE*16-1:0]       counts,        // queue lengths, clamped to TMAX
    output logic                   count_over,    // a count on this beat exceeds TMAX
    output logic [15:0]            n_used,        // experts with a non-empty queue
    output logic [16:0]            x_rows,        // complete token rows on chip (rows arrive in token order)
    output logic [31:0]            w1_words,      // w1 tiles written into the slot being filled
    output logic [31:0]            w2_words,      // w2 tiles written into the slot being filled
    // buffer write ports (data: word)
    output logic [MAXW-1:0]        word,
    output logic                   wbuf_we,
    output logic [WBUF_A-1:0]      wbuf_wa,
    output logic                   bbuf_we,
    output logic [BBUF_A-1:0]      bbuf_wa,
    output logic                   xbuf_we,
    output logic [XBUF_A-1:0]      xbuf_wa,
    output logic                   qbuf_we,
    output logic [QBUF_A-1:0]      qbuf_wa
);
    // word assembler shared by the token, weight and bias sinks (regions are whole words)
    logic [MAXW-1:0] asm_q;
    logic [SUBW-1:0] asm_sub, bpw;
    logic [31:0]     asm_widx;
    logic [1:0]      w_region;  // 0 w1, 1 b1, 2 w2, 3 b2
    logic            last_in_word, region_end;
    wire  [31:0]     wr_idx = beat + base;  // beat index within the expert record
    always_comb begin
        w_region = (wr_idx < B1_END) ? 2'd1 : (wr_idx < W1_END) ? 2'd0 : (wr_idx < B2_END) ? 2'd3 : 2'd2;
        case (kind)
            K_X: bpw = SUBW'(BPXW);
            K_W: bpw = (w_region[0] == 1'b0) ? SUBW'(BPT) : SUBW'(BPBW);
            default: bpw = SUBW'(1);
        endcase
        last_in_word = (asm_sub == bpw - SUBW'(1));
        region_end = (kind == K_W) && (wr_idx + 1 == B1_END || wr_idx + 1 == W1_END || wr_idx + 1 == B2_END);
        word = asm_q;
        word[asm_sub * DW +: DW] = rdata;
    end
    always_ff @(posedge clk) begin
        if (job_start) begin
            asm_sub <= '0; asm_widx <= '0;
        end else if (beat_valid && (kind == K_X || kind == K_W)) begin
            asm_q <= word;
            if (last_in_word) begin
                asm_sub <= '0;
                asm_widx <= region_end ? 32'd0 : asm_widx + 1;
            end else begin
                asm_sub <= asm_sub + SUBW'(1);
            end
        end
    end

    // count table: expert e sits in lane e % QE of beat e / QE; lengths are clamped to the capacity
    always_ff @(posedge clk) begin
        if (beat_valid && kind == K_CNT) begin
            for (int e = 0; e < NE; e++) begin
                if (beat == 32'(e / QE)) begin
                    counts[e * 16 +: 16] <= (rdata[(e % QE) * 32 +: 32] > TMAX) ? 16'(TMAX)
                                            : rdata[(e % QE) * 32 +: 16];
                end
            end
        end
    end
    always_comb begin
        count_over = 1'b0;
        for (int e = 0; e < NE; e++)
            if (beat == 32'(e / QE) && rdata[(e % QE) * 32 +: 32] > TMAX) count_over = 1'b1;
        n_used = '0;
        for (int e = 0; e < NE; e++) n_used = n_used + ((counts[e * 16 +: 16] != 16'd0) ? 16'd1 : 16'd0);
    end

    // buffer writes
    assign wbuf_we = beat_valid && kind == K_W && (w_region == 2'd0 || w_region == 2'd2) && last_in_word;
    assign wbuf_wa = WBUF_A'({31'd0, pf_slot} * TPE + ((w_region == 2'd2) ? W1T : 0) + asm_widx);
    assign bbuf_we = beat_valid && kind == K_W && (w_region == 2'd1 || w_region == 2'd3) && last_in_word;
    assign bbuf_wa = BBUF_A'({31'd0, pf_slot} * BPE + ((w_region == 2'd3) ? OT1 : 0) + asm_widx);
    assign xbuf_we = beat_valid && kind == K_X && last_in_word;
    assign xbuf_wa = XBUF_A'(asm_widx);
    assign qbuf_we = beat_valid && kind == K_Q;
    assign qbuf_wa = QBUF_A'({31'd0, pf_slot} * QWORDS + beat);

    logic [15:0] x_sub;  // words of the row being written
    always_ff @(posedge clk) begin
        if (rst || idle) begin
            x_rows <= '0; x_sub <= '0;
        end else if (xbuf_we) begin
            if (x_sub == 16'(IT1 - 1)) begin x_sub <= '0; x_rows <= x_rows + 1; end
            else x_sub <= x_sub + 1;
        end
    end
    always_ff @(posedge clk) begin
        if (rst || slot_start) begin
            w1_words <= '0; w2_words <= '0;
        end else if (wbuf_we) begin
            if (w_region == 2'd0) w1_words <= w1_words + 1;
            else w2_words <= w2_words + 1;
        end
    end
endmodule

`default_nettype wire
