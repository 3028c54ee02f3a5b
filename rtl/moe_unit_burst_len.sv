// moe_unit_burst_len: beats of the next AXI burst at addr with rem beats left: at most MAXB, never across a
// 4 KiB page (AXI4 rule).
`default_nettype none

module moe_unit_burst_len #(
    parameter int MAXB = 16,     // beats per burst, ≤ 256
    parameter int BB_LOG2 = 4    // log2(bytes per beat)
) (
    input  wire logic [63:0] addr,
    input  wire logic [31:0] rem,
    output logic      [8:0]  beats
);
    logic [12:0] to_page;
    logic [31:0] n;
    always_comb begin
        to_page = (13'h1000 - {1'b0, addr[11:0]}) >> BB_LOG2;
        n = (rem < 32'(MAXB)) ? rem : 32'(MAXB);
        if ({19'd0, to_page} < n) n = {19'd0, to_page};
        beats = n[8:0];
    end
    wire unused_bits = ^{addr[63:12], n[31:9]};  // only the page offset limits a burst; n ≤ 256
endmodule

`default_nettype wire
