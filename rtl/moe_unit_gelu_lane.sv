// moe_unit_gelu_lane: one GELU lane, docs/numerics.md §3. Stage A looks the segment up in the table (registered),
// stage B interpolates (combinational from stage A's registers). The table holds 2^SEGMENTS_LOG2 pairs
// {G[i+1], G[i]} of HB-bit values, loaded from MEM_FILE ($readmemh, written by m3vit.codegen.rtl).
`default_nettype none

module moe_unit_gelu_lane #(
    parameter int HB = 16,              // hidden format bits
    parameter int LO = -4096,           // table start (hidden-format integer)
    parameter int HI = 4096,            // table end: h ≥ HI passes h through
    parameter int SEG_SHIFT = 4,        // log2(hidden steps per segment)
    parameter int SEGMENTS_LOG2 = 9,    // log2(segments)
    parameter MEM_FILE = "moe_unit_gelu.mem"  // a string (untyped: Icarus 11 has no string parameters)
) (
    input  wire logic                 clk,
    input  wire logic signed [HB-1:0] h,   // stage A input
    output logic signed      [HB-1:0] g    // stage B output
);
    localparam int UB = SEGMENTS_LOG2 + SEG_SHIFT;  // bits of the offset from LO inside the table
    localparam logic signed [HB:0] LO_X = (HB + 1)'(LO);
    localparam logic signed [HB:0] HI_X = (HB + 1)'(HI);

    logic [2*HB-1:0] table_rom [0:(1 << SEGMENTS_LOG2) - 1];
    initial $readmemh(MEM_FILE, table_rom);

    logic signed [HB:0] hx;
    logic [UB-1:0] u;
    logic [2*HB-1:0] pair;
    logic signed [HB-1:0] y0_q, h_q;
    logic signed [HB:0] dy_q;
    logic [1:0] mode_q;  // 0: below the table -> 0, 1: at/above it -> h, 2: interpolate
    assign hx = {h[HB-1], h};
    assign u = UB'(hx - LO_X);
    assign pair = table_rom[u[UB-1:SEG_SHIFT]];
    always_ff @(posedge clk) begin
        mode_q <= (hx < LO_X) ? 2'd0 : (hx >= HI_X) ? 2'd1 : 2'd2;
        h_q <= h;
        y0_q <= pair[HB-1:0];
        dy_q <= $signed({pair[2*HB-1], pair[2*HB-1:HB]}) - $signed({pair[HB-1], pair[HB-1:0]});
    end

    generate
        if (SEG_SHIFT > 0) begin : g_interp
            logic [SEG_SHIFT-1:0] r_q;  // position inside the segment
            logic signed [HB+SEG_SHIFT+2:0] prod;
            always_ff @(posedge clk) r_q <= u[SEG_SHIFT-1:0];
            assign prod = dy_q * $signed({1'b0, r_q}) + $signed((HB + SEG_SHIFT + 3)'(1 << (SEG_SHIFT - 1)));
            always_comb begin
                case (mode_q)
                    2'd0: g = '0;
                    2'd1: g = h_q;
                    default: g = HB'(y0_q + (prod >>> SEG_SHIFT));
                endcase
            end
        end else begin : g_step
            always_comb begin
                case (mode_q)
                    2'd0: g = '0;
                    2'd1: g = h_q;
                    default: g = y0_q;
                endcase
            end
        end
    endgenerate
endmodule

`default_nettype wire
