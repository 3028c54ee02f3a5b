// moe_unit_ram: simple dual-port RAM, one write port and one registered read port (infers BRAM / LUTRAM).
`default_nettype none

module moe_unit_ram #(
    parameter int W = 8,                                // word bits
    parameter int D = 2,                                // words
    parameter int AW = (D > 1) ? $clog2(D) : 1          // address bits
) (
    input  wire logic          clk,
    input  wire logic          we,
    input  wire logic [AW-1:0] waddr,
    input  wire logic [W-1:0]  wdata,
    input  wire logic [AW-1:0] raddr,
    output logic      [W-1:0]  rdata
);
    logic [W-1:0] mem [0:D-1];
    always_ff @(posedge clk) begin
        if (we) mem[waddr] <= wdata;
        rdata <= mem[raddr];
    end
endmodule

`default_nettype wire
