// moe_unit_mac: the MAC array, MO outputs x MI inputs per cycle. S2: MO*MI products of a weight tile with MI
// inputs (the token's x for fc1, its hidden vector for fc2), S3: MO adder trees, S4: MO accumulators, which
// start from the bias on a unit's first input tile; s4_v marks a finished unit (its last input tile).
`default_nettype none

module moe_unit_mac
    import moe_unit_pkg::*;
(
    input  wire logic                 clk,
    input  wire logic                 rst,
    input  wire logic                 s1_v,
    input  wire logic                 s1_first,
    input  wire logic                 s1_last,
    input  wire logic [TAGW-1:0]      s1_tag,   // MSB: layer (0 fc1, 1 fc2)
    input  wire logic [TILE_BITS-1:0] wbuf_rd,  // weight tile, row-major MO x MI, WC-bit containers
    input  wire logic [BW_BITS-1:0]   bbuf_rd,  // MO biases
    input  wire logic [XW_BITS-1:0]   xbuf_rd,  // MI token elements (fc1)
    input  wire logic [MI*IB-1:0]     hvec,     // MI hidden elements (fc2), sign-extended to IB bits
    output logic                      busy,     // a tile is in S2..S4
    output logic                      s4_v,
    output logic [TAGW-1:0]           s4_tag,
    output logic [MO*ACC-1:0]         acc
);
    logic [PB-1:0]      s2_prod [0:MO*MI-1];
    logic [BW_BITS-1:0] s2_bias, s3_bias;
    logic               s2_v, s2_first, s2_last;
    logic [TAGW-1:0]    s2_tag, s3_tag;
    logic [SB-1:0]      s3_sum [0:MO-1];
    logic               s3_v, s3_first, s3_last;
    wire                s1_layer = s1_tag[TAGW-1];

    always_ff @(posedge clk) begin
        s2_v <= s1_v && !rst;
        s2_first <= s1_first; s2_last <= s1_last; s2_tag <= s1_tag; s2_bias <= bbuf_rd;
        for (int o = 0; o < MO; o++) begin
            for (int i = 0; i < MI; i++) begin
                s2_prod[o * MI + i] <= PB'($signed(wbuf_rd[(o * MI + i) * WC +: WB]))
                    * PB'(s1_layer ? $signed(hvec[i * IB +: IB]) : IB'($signed(xbuf_rd[i * XC +: XB])));
            end
        end
    end

    always_ff @(posedge clk) begin : b_s3
        logic signed [SB-1:0] s;
        s3_v <= s2_v && !rst;
        s3_first <= s2_first; s3_last <= s2_last; s3_tag <= s2_tag; s3_bias <= s2_bias;
        for (int o = 0; o < MO; o++) begin
            s = '0;
            for (int i = 0; i < MI; i++) s = s + SB'($signed(s2_prod[o * MI + i]));
            s3_sum[o] <= s;
        end
    end

    always_ff @(posedge clk) begin
        s4_v <= s3_v && s3_last && !rst;
        s4_tag <= s3_tag;
        if (s3_v) begin
            for (int o = 0; o < MO; o++) begin
                acc[o * ACC +: ACC] <= (s3_first ? ACC'($signed(s3_bias[o * BC +: BBITS])) : acc[o * ACC +: ACC])
                                       + ACC'($signed(s3_sum[o]));
            end
        end
    end
    assign busy = s2_v || s3_v || s4_v;
endmodule

`default_nettype wire
