// moe_unit_axil: the s_axi_control slave (AXI4-Lite) and the control registers, with Vitis HLS semantics:
// ap_ctrl (ap_start, ap_done and ap_ready clear on read, ap_idle, auto_restart), GIE, IER, ISR (toggle on
// write), num_tokens, the four 64-bit pointers and the read-only counters. Offsets: moe_unit_pkg (REG_*).
`default_nettype none

module moe_unit_axil
    import moe_unit_pkg::*;
(
    input  wire logic                 clk,
    input  wire logic                 rst,
    // AXI4-Lite
    input  wire logic [RAW-1:0]       awaddr,
    input  wire logic                 awvalid,
    output logic                      awready,
    input  wire logic [31:0]          wdata,
    input  wire logic [3:0]           wstrb,
    input  wire logic                 wvalid,
    output logic                      wready,
    output logic [1:0]                bresp,
    output logic                      bvalid,
    input  wire logic                 bready,
    input  wire logic [RAW-1:0]       araddr,
    input  wire logic                 arvalid,
    output logic                      arready,
    output logic [31:0]               rdata,
    output logic [1:0]                rresp,
    output logic                      rvalid,
    input  wire logic                 rready,
    output logic                      irq,        // interrupt: GIE and a pending ISR bit
    // core handshake
    input  wire logic                 core_idle,
    input  wire logic                 core_start,       // the core takes ap_start this cycle
    input  wire logic                 core_done_pulse,  // the call finished
    output logic                      ap_start,
    output logic [31:0]               num_tokens,
    output logic [63:0]               x_ptr,
    output logic [63:0]               queues_ptr,
    output logic [63:0]               weights_ptr,
    output logic [63:0]               out_ptr,
    input  wire logic [NUM_COUNTERS*32-1:0] counters
);
    logic           ap_done_r, ap_ready_r, auto_restart_r, gie_r;
    logic [1:0]     ier_r, isr_r;
    logic           aw_have, w_have;
    logic [RAW-1:0] awaddr_q;
    logic [31:0]    w_data_q;
    logic [3:0]     w_strb_q;
    wire  [31:0]    wmask = {{8{w_strb_q[3]}}, {8{w_strb_q[2]}}, {8{w_strb_q[1]}}, {8{w_strb_q[0]}}};
    wire            do_write = aw_have && w_have && !bvalid;

    assign awready = !aw_have;
    assign wready  = !w_have;
    assign bresp   = 2'b00;
    assign rresp   = 2'b00;
    assign arready = !rvalid;
    assign irq = gie_r && |isr_r;

    function automatic logic [31:0] merge(input logic [31:0] old, input logic [31:0] val, input logic [31:0] mask);
        merge = (old & ~mask) | (val & mask);
    endfunction

    logic [31:0] rd_mux;
    always_comb begin
        case (araddr)
            REG_AP_CTRL: rd_mux = {24'd0, auto_restart_r, 3'd0, ap_ready_r, core_idle, ap_done_r, ap_start};
            REG_GIE: rd_mux = {31'd0, gie_r};
            REG_IER: rd_mux = {30'd0, ier_r};
            REG_ISR: rd_mux = {30'd0, isr_r};
            REG_NUM_TOKENS: rd_mux = num_tokens;
            REG_X: rd_mux = x_ptr[31:0];
            REG_X + 4: rd_mux = x_ptr[63:32];
            REG_QUEUES: rd_mux = queues_ptr[31:0];
            REG_QUEUES + 4: rd_mux = queues_ptr[63:32];
            REG_WEIGHTS: rd_mux = weights_ptr[31:0];
            REG_WEIGHTS + 4: rd_mux = weights_ptr[63:32];
            REG_OUT: rd_mux = out_ptr[31:0];
            REG_OUT + 4: rd_mux = out_ptr[63:32];
            default: rd_mux = 32'd0;
        endcase
        for (int c = 0; c < NUM_COUNTERS; c++)
            if (araddr == REG_COUNTERS[c * RAW +: RAW]) rd_mux = counters[c * 32 +: 32];
    end

    always_ff @(posedge clk) begin
        if (rst) begin
            aw_have <= 1'b0; w_have <= 1'b0;
            bvalid <= 1'b0; rvalid <= 1'b0; rdata <= '0;
            ap_start <= 1'b0; ap_done_r <= 1'b0; ap_ready_r <= 1'b0; auto_restart_r <= 1'b0;
            gie_r <= 1'b0; ier_r <= '0; isr_r <= '0;
            num_tokens <= '0; x_ptr <= '0; queues_ptr <= '0; weights_ptr <= '0; out_ptr <= '0;
        end else begin
            if (awvalid && !aw_have) begin aw_have <= 1'b1; awaddr_q <= awaddr; end
            if (wvalid && !w_have) begin w_have <= 1'b1; w_data_q <= wdata; w_strb_q <= wstrb; end
            if (bvalid && bready) bvalid <= 1'b0;
            if (rvalid && rready) rvalid <= 1'b0;
            // the core accepted ap_start: it stays set only with auto_restart (Vitis behaviour)
            if (core_start && !auto_restart_r) ap_start <= 1'b0;
            if (core_done_pulse) begin
                ap_done_r <= 1'b1; ap_ready_r <= 1'b1;
                if (ier_r[0]) isr_r[0] <= 1'b1;
                if (ier_r[1]) isr_r[1] <= 1'b1;
            end
            if (do_write) begin
                aw_have <= 1'b0; w_have <= 1'b0; bvalid <= 1'b1;
                case (awaddr_q)
                    REG_AP_CTRL: begin
                        if (w_strb_q[0]) begin
                            if (w_data_q[0]) ap_start <= 1'b1;
                            auto_restart_r <= w_data_q[7];
                        end
                    end
                    REG_GIE: if (w_strb_q[0]) gie_r <= w_data_q[0];
                    REG_IER: if (w_strb_q[0]) ier_r <= w_data_q[1:0];
                    REG_ISR: if (w_strb_q[0]) isr_r <= isr_r ^ w_data_q[1:0];
                    REG_NUM_TOKENS: num_tokens <= merge(num_tokens, w_data_q, wmask);
                    REG_X: x_ptr[31:0] <= merge(x_ptr[31:0], w_data_q, wmask);
                    REG_X + 4: x_ptr[63:32] <= merge(x_ptr[63:32], w_data_q, wmask);
                    REG_QUEUES: queues_ptr[31:0] <= merge(queues_ptr[31:0], w_data_q, wmask);
                    REG_QUEUES + 4: queues_ptr[63:32] <= merge(queues_ptr[63:32], w_data_q, wmask);
                    REG_WEIGHTS: weights_ptr[31:0] <= merge(weights_ptr[31:0], w_data_q, wmask);
                    REG_WEIGHTS + 4: weights_ptr[63:32] <= merge(weights_ptr[63:32], w_data_q, wmask);
                    REG_OUT: out_ptr[31:0] <= merge(out_ptr[31:0], w_data_q, wmask);
                    REG_OUT + 4: out_ptr[63:32] <= merge(out_ptr[63:32], w_data_q, wmask);
                    default: ;
                endcase
            end
            if (arvalid && !rvalid) begin
                rvalid <= 1'b1;
                rdata <= rd_mux;
                if (araddr == REG_AP_CTRL) begin
                    // clear-on-read, unless the same cycle sets them again
                    if (!core_done_pulse) begin ap_done_r <= 1'b0; ap_ready_r <= 1'b0; end
                end
            end
        end
    end
endmodule

`default_nettype wire
