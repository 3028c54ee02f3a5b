// moe_unit_writeback: the output phase. Accumulator words are read one cycle ahead into a 2-word buffer,
// requantised (out = SAT_act(RSHR(A, GF)), docs/numerics.md §11) and sent as BPOW beats each over AW/W
// bursts (never across 4 KiB), so W streams a beat per cycle while the memory accepts it. done is set when
// every beat was sent and every burst acknowledged on B.
`default_nettype none

module moe_unit_writeback
    import moe_unit_pkg::*;
(
    input  wire logic              clk,
    input  wire logic              rst,
    input  wire logic              active,     // phase P_OUT
    input  wire logic [15:0]       ntok,
    input  wire logic [63:0]       out_ptr,
    output logic [31:0]            acc_idx,    // accumulator word to read
    input  wire logic [MO*AB-1:0]  acc_rd,     // the word read a cycle after acc_idx
    output logic                   done,
    output logic [SATW-1:0]        sat,        // act saturations of the word taken this cycle
    output logic                   beat_sent,  // a W beat was accepted
    // AXI4 AW / W / B
    output logic [0:0]             awid,
    output logic [63:0]            awaddr,
    output logic [7:0]             awlen,
    output logic [2:0]             awsize,
    output logic [1:0]             awburst,
    output logic                   awlock,
    output logic [3:0]             awcache,
    output logic [2:0]             awprot,
    output logic [3:0]             awqos,
    output logic                   awvalid,
    input  wire logic              awready,
    output logic [DW-1:0]          wdata,
    output logic [BB-1:0]          wstrb,
    output logic                   wlast,
    output logic                   wvalid,
    input  wire logic              wready,
    input  wire logic              bvalid,
    output logic                   bready
);
    logic [OW_BITS-1:0] ob [0:1];
    logic [1:0]  ob_cnt;
    logic        ob_rp, ob_wp, rd_pend;
    logic [SUBW-1:0] o_sub;
    logic [63:0] aw_addr_q, w_addr_q;
    logic [31:0] aw_rem, w_rem, b_pending, o_sent, o_total;
    logic [8:0]  w_left, aw_beats, w_beats, w_len_now;
    logic        o_started, o_pop, o_issue;
    logic [OW_BITS-1:0] o_word;
    logic [SATW-1:0] o_word_sat;

    moe_unit_burst_len #(.MAXB(MAXB), .BB_LOG2(BB_LOG2)) u_aw_len (.addr(aw_addr_q), .rem(aw_rem), .beats(aw_beats));
    moe_unit_burst_len #(.MAXB(MAXB), .BB_LOG2(BB_LOG2)) u_w_len (.addr(w_addr_q), .rem(w_rem), .beats(w_beats));

    assign awid = 1'b0;
    assign awsize = 3'(BB_LOG2);
    assign awburst = 2'b01;
    assign awlock = 1'b0;
    assign awcache = 4'b0011;
    assign awprot = 3'b000;
    assign awqos = 4'b0000;
    assign wstrb = '1;
    assign bready = 1'b1;
    assign wvalid = active && (ob_cnt != 0);
    assign wdata = ob[ob_rp][o_sub * DW +: DW];
    assign w_len_now = (w_left != 0) ? w_left : w_beats;
    assign wlast = (w_len_now == 9'd1);
    assign beat_sent = wvalid && wready;
    assign o_pop = beat_sent && (o_sub == SUBW'(BPOW - 1));
    assign o_issue = active && o_started && (acc_idx < o_total)
                     && ({1'b0, ob_cnt} + {2'b0, rd_pend} - {2'b0, o_pop} < 3'd2);
    assign done = o_started && o_sent == o_total && aw_rem == 0 && !awvalid && b_pending == 0;

    always_comb begin : b_oword
        logic signed [AB:0] r, half;
        o_word_sat = '0;
        half = (AB+1)'(1 << (GF - 1));
        for (int o = 0; o < MO; o++) begin
            r = {acc_rd[o * AB + AB - 1], acc_rd[o * AB +: AB]};
            r = (r + half) >>> GF;
            if (r > (AB+1)'(YMAX)) begin o_word[o * YC +: YC] = YC'(YMAX); o_word_sat = o_word_sat + 1; end
            else if (r < (AB+1)'(YMIN)) begin o_word[o * YC +: YC] = YC'(YMIN); o_word_sat = o_word_sat + 1; end
            else o_word[o * YC +: YC] = YC'(r);
        end
    end

    always_ff @(posedge clk) begin
        if (rst || !active) begin
            acc_idx <= '0; o_sub <= '0; awvalid <= 1'b0; ob_cnt <= '0; ob_rp <= 1'b0; ob_wp <= 1'b0;
            rd_pend <= 1'b0; o_sent <= '0;
            o_total <= {16'd0, ntok} * OT2; aw_rem <= {16'd0, ntok} * OUT_ROW_BEATS;
            w_rem <= {16'd0, ntok} * OUT_ROW_BEATS;
            aw_addr_q <= out_ptr; w_addr_q <= out_ptr; w_left <= '0; b_pending <= '0; o_started <= 1'b0;
            sat <= '0;
        end else begin
            o_started <= 1'b1;
            // the address channel runs ahead of the data
            if (awvalid && awready) awvalid <= 1'b0;
            if ((!awvalid || awready) && aw_rem != 0 && o_started) begin
                awvalid <= 1'b1;
                awaddr <= aw_addr_q;
                awlen <= 8'(aw_beats - 9'd1);
                aw_addr_q <= aw_addr_q + ({55'd0, aw_beats} << BB_LOG2);
                aw_rem <= aw_rem - {23'd0, aw_beats};
            end
            b_pending <= b_pending + ((awvalid && awready) ? 32'd1 : 32'd0) - ((bvalid && bready) ? 32'd1 : 32'd0);
            // read side: the accumulator word of acc_idx arrives the next cycle
            rd_pend <= o_issue;
            if (o_issue) acc_idx <= acc_idx + 1;
            sat <= rd_pend ? o_word_sat : '0;
            if (rd_pend) begin
                ob[ob_wp] <= o_word;
                ob_wp <= !ob_wp;
            end
            ob_cnt <= ob_cnt + (rd_pend ? 2'd1 : 2'd0) - (o_pop ? 2'd1 : 2'd0);
            // data side
            if (beat_sent) begin
                w_left <= w_len_now - 9'd1;
                w_addr_q <= w_addr_q + 64'(BB);
                w_rem <= w_rem - 1;
                if (o_sub == SUBW'(BPOW - 1)) begin
                    o_sub <= '0; ob_rp <= !ob_rp; o_sent <= o_sent + 1;
                end else begin
                    o_sub <= o_sub + 1;
                end
            end
        end
    end
endmodule

`default_nettype wire
