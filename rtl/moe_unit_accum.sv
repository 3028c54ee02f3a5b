// moe_unit_accum: the accumulators A[TMAX, DIM] (AB bits each, MO per word, word t * OT2 + ot). Cleared at
// ap_start (one word per cycle over the call's tokens); in the expert phase an fc2 unit's words are read in
// S5 and written back with y * gate added in S6 (a token outside the call is dropped: errors bit 2); in the
// write-back phase the read port belongs to moe_unit_writeback.
`default_nettype none

module moe_unit_accum
    import moe_unit_pkg::*;
(
    input  wire logic                  clk,
    input  wire logic                  rst,
    input  wire logic                  clear,       // start clearing (ap_start taken)
    input  wire logic [15:0]           ntok,
    output logic                       clr_busy,
    // accumulate (from moe_unit_post)
    input  wire logic [15:0]           s5_tok,
    input  wire logic [15:0]           s5_ot,
    input  wire logic                  s6_add,      // S6 holds an fc2 unit
    input  wire logic [15:0]           s6_tok,
    input  wire logic [15:0]           s6_ot,
    input  wire logic [MO*(YB+17)-1:0] s6_prod,
    // write-back read port
    input  wire logic                  out_phase,
    input  wire logic [31:0]           out_idx,
    output logic [MO*AB-1:0]           rd
);
    logic              we;
    logic [ABUF_A-1:0] wa, ra;
    logic [MO*AB-1:0]  wd;
    logic [31:0]       clr_idx;
    wire               unused_idx = ^out_idx[31:ABUF_A];  // the write-back counts words in 32 bits

    moe_unit_ram #(.W(MO * AB), .D(ABUF_D), .AW(ABUF_A)) u_abuf (
        .clk, .we, .waddr(wa), .wdata(wd), .raddr(ra), .rdata(rd));

    always_comb begin
        if (out_phase) ra = ABUF_A'(out_idx);
        else ra = ABUF_A'({16'd0, s5_tok} * OT2 + s5_ot);
        if (clr_busy) begin
            we = 1'b1; wa = ABUF_A'(clr_idx); wd = '0;
        end else begin
            we = s6_add && s6_tok < ntok;
            wa = ABUF_A'({16'd0, s6_tok} * OT2 + s6_ot);
            for (int o = 0; o < MO; o++)
                wd[o * AB +: AB] = rd[o * AB +: AB] + AB'($signed(s6_prod[o * (YB+17) +: YB+17]));
        end
    end
    always_ff @(posedge clk) begin
        if (rst) begin
            clr_busy <= 1'b0; clr_idx <= '0;
        end else if (clear) begin
            clr_busy <= 1'b1; clr_idx <= '0;
        end else if (clr_busy) begin
            if (clr_idx + 1 >= {16'd0, ntok} * OT2 || ntok == 0) clr_busy <= 1'b0;
            clr_idx <= clr_idx + 1;
        end
    end
endmodule

`default_nettype wire
