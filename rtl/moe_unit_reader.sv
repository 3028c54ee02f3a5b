// moe_unit_reader: the AXI4 read engine of m_axi_gmem. One job at a time (start address, beats, kind, base);
// bursts of up to MAXB beats (never across 4 KiB) are issued ahead, up to MAXOUT in flight. Data beats arrive
// in order and are numbered (beat) for the sinks, which take every beat in the cycle it arrives.
`default_nettype none

module moe_unit_reader #(
    parameter int DW = 128,      // data bits
    parameter int MAXB = 16,     // beats per burst
    parameter int MAXOUT = 8     // bursts in flight (≤ 255)
) (
    input  wire logic          clk,
    input  wire logic          rst,
    // job: taken when start is high (the previous job must have finished)
    input  wire logic          start,
    input  wire logic [63:0]   start_addr,
    input  wire logic [31:0]   start_beats,
    input  wire logic [1:0]    start_kind,
    input  wire logic [31:0]   start_base,
    output logic               busy,        // the job's beats are not all in
    output logic [1:0]         kind,        // of the current job
    output logic [31:0]        base,        // of the current job
    output logic [31:0]        beat,        // index of the beat on R within the job
    output logic               beat_valid,  // a beat is on R (rdata) this cycle
    // AXI4 AR / R
    output logic [0:0]         arid,
    output logic [63:0]        araddr,
    output logic [7:0]         arlen,
    output logic [2:0]         arsize,
    output logic [1:0]         arburst,
    output logic               arlock,
    output logic [3:0]         arcache,
    output logic [2:0]         arprot,
    output logic [3:0]         arqos,
    output logic               arvalid,
    input  wire logic          arready,
    input  wire logic          rvalid,
    input  wire logic          rlast,
    output logic               rready
);
    localparam int BB_LOG2 = $clog2(DW / 8);
    logic [31:0] total;
    logic [63:0] ar_addr_q;
    logic [31:0] ar_rem;
    logic [8:0]  ar_beats_q, next_beats;
    logic [7:0]  outstanding;
    wire         ar_fire = arvalid && arready;
    wire         r_done_burst = beat_valid && rlast;

    moe_unit_burst_len #(.MAXB(MAXB), .BB_LOG2(BB_LOG2)) u_len (.addr(ar_addr_q), .rem(ar_rem), .beats(next_beats));

    assign beat_valid = rvalid && rready;
    assign arid = 1'b0;
    assign arlen = 8'(ar_beats_q - 9'd1);
    assign arsize = 3'(BB_LOG2);
    assign arburst = 2'b01;
    assign arlock = 1'b0;
    assign arcache = 4'b0011;
    assign arprot = 3'b000;
    assign arqos = 4'b0000;
    assign rready = 1'b1;  // every sink writes a RAM or register in the same cycle

    always_ff @(posedge clk) begin
        if (rst) begin
            busy <= 1'b0; arvalid <= 1'b0; ar_rem <= '0; outstanding <= '0; beat <= '0;
            kind <= '0; total <= '0; base <= '0;
        end else begin
            if (start) begin
                busy <= (start_beats != 0); kind <= start_kind; total <= start_beats; base <= start_base;
                ar_addr_q <= start_addr; ar_rem <= start_beats; beat <= '0;
            end else begin
                if (ar_fire) arvalid <= 1'b0;
                if (!arvalid && ar_rem != 0 && (outstanding + (ar_fire ? 8'd1 : 8'd0)) < 8'(MAXOUT)) begin
                    arvalid <= 1'b1;
                    araddr <= ar_addr_q;
                    ar_beats_q <= next_beats;
                    ar_addr_q <= ar_addr_q + ({55'd0, next_beats} << BB_LOG2);
                    ar_rem <= ar_rem - {23'd0, next_beats};
                end
                if (beat_valid) begin
                    beat <= beat + 1;
                    if (beat + 1 == total) busy <= 1'b0;
                end
            end
            outstanding <= outstanding + (ar_fire ? 8'd1 : 8'd0) - (r_done_burst ? 8'd1 : 8'd0);
        end
    end
endmodule

`default_nettype wire
