// moe_unit_post: post-processing of a finished unit. S5: REQ of the MO accumulators to the hidden format
// (fc1, shift SH1) or the act format (fc2, shift SH2), saturating and counting saturations. S6: fc1 through
// MO GELU lanes (g, written into the hidden ring), fc2 times the token's gate (prod, added to its
// accumulators by moe_unit_accum).
`default_nettype none

module moe_unit_post
    import moe_unit_pkg::*;
(
    input  wire logic                clk,
    input  wire logic                rst,
    input  wire logic                s4_v,
    input  wire logic [TAGW-1:0]     s4_tag,
    input  wire logic [MO*ACC-1:0]   acc,
    output logic                     busy,      // a unit is in S5 or S6
    // S5
    output logic                     s5_v,
    output logic                     s5_layer,
    output logic [SATW-1:0]          s5_sat,    // saturations of this unit
    output logic [15:0]              s5_ot,
    output logic [15:0]              s5_tok,
    // S6
    output logic                     s6_v,
    output logic                     s6_layer,
    output logic                     s6_hlast,  // a token's last fc1 row: its hidden vector is complete
    output logic [RL-1:0]            s6_hsel,
    output logic [15:0]              s6_ot,
    output logic [15:0]              s6_tok,
    output logic [MO*HB-1:0]         g,         // fc1: GELU of the row
    output logic [MO*(YB+17)-1:0]    prod       // fc2: y * gate
);
    localparam int QB = (HB > YB) ? HB : YB;
    logic signed [QB-1:0] s5_q [0:MO-1];
    logic [TAGW-1:0] s5_tag;
    logic            s5_hlast;
    logic [RL-1:0]   s5_hsel;
    logic [15:0]     s5_gate;
    assign {s5_layer, s5_hlast, s5_hsel, s5_ot, s5_tok, s5_gate} = s5_tag;
    wire s4_layer = s4_tag[TAGW-1];

    // RSHR of an accumulator (round half up); the half is signed so that >>> stays arithmetic
    function automatic logic signed [ACC:0] rshr_acc(input logic signed [ACC-1:0] a, input int s);
        logic signed [ACC:0] ax, half;
        ax = {a[ACC-1], a};
        half = (s == 0) ? '0 : (ACC+1)'(64'd1 << (s - 1));
        rshr_acc = (ax + half) >>> s;
    endfunction

    always_ff @(posedge clk) begin : b_s5
        logic signed [ACC:0] r;
        logic [SATW-1:0] nsat;
        s5_v <= s4_v && !rst;
        s5_tag <= s4_tag;
        nsat = '0;
        for (int o = 0; o < MO; o++) begin
            if (s4_layer) begin
                r = rshr_acc(acc[o * ACC +: ACC], SH2);
                if (r > (ACC+1)'(YMAX)) begin s5_q[o] <= QB'(YMAX); nsat = nsat + 1; end
                else if (r < (ACC+1)'(YMIN)) begin s5_q[o] <= QB'(YMIN); nsat = nsat + 1; end
                else s5_q[o] <= QB'(r);
            end else begin
                r = rshr_acc(acc[o * ACC +: ACC], SH1);
                if (r > (ACC+1)'(HMAX)) begin s5_q[o] <= QB'(HMAX); nsat = nsat + 1; end
                else if (r < (ACC+1)'(HMIN)) begin s5_q[o] <= QB'(HMIN); nsat = nsat + 1; end
                else s5_q[o] <= QB'(r);
            end
        end
        s5_sat <= nsat;
    end

    genvar go;
    generate
        for (go = 0; go < MO; go++) begin : g_gelu
            moe_unit_gelu_lane #(.HB(HB), .LO(GELU_LO), .HI(GELU_HI), .SEG_SHIFT(GELU_SEG_SHIFT),
                                 .SEGMENTS_LOG2(GELU_SEGMENTS_LOG2), .MEM_FILE(GELU_MEM))
                u_gelu (.clk, .h(HB'(s5_q[go])), .g(g[go * HB +: HB]));
        end
    endgenerate

    always_ff @(posedge clk) begin
        s6_v <= s5_v && !rst;
        s6_layer <= s5_layer; s6_hsel <= s5_hsel; s6_hlast <= s5_hlast; s6_ot <= s5_ot; s6_tok <= s5_tok;
        for (int o = 0; o < MO; o++) prod[o * (YB+17) +: YB+17] <= $signed(s5_q[o]) * $signed({1'b0, s5_gate});
    end
    assign busy = s5_v || s6_v;
endmodule

`default_nettype wire
