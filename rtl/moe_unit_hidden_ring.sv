// moe_unit_hidden_ring: the hidden vectors of the tokens between their fc1 and fc2 waves, HR ring slots of HID
// elements in HK RAM banks of HG = min(MI, MO) elements. Slot s, segment k (of HG elements) sits in bank
// k % HK at word s * HWPS + k / HK. fc1 writes MO elements per output row (S6), fc2 reads MI per input tile:
// the address is presented at issue and the word (hvec) is valid with the other stage-1 operands.
`default_nettype none

module moe_unit_hidden_ring
    import moe_unit_pkg::*;
(
    input  wire logic                clk,
    // write: an fc1 row of GELU outputs
    input  wire logic                we,
    input  wire logic [RL-1:0]       w_slot,
    input  wire logic [15:0]         w_row,    // fc1 output row (ot)
    input  wire logic [MO*HB-1:0]    w_data,
    // read: an fc2 input tile
    input  wire logic [RL-1:0]       r_slot,
    input  wire logic [15:0]         r_tile,   // fc2 input tile (it)
    output logic [MI*IB-1:0]         hvec      // sign-extended to IB bits
);
    logic [HK-1:0]       hb_we;
    logic [HBANK_A-1:0]  hb_wa [0:HK-1];
    logic [HBANK_A-1:0]  hb_ra [0:HK-1];
    logic [HG*HB-1:0]    hb_wd [0:HK-1];
    logic [HG*HB-1:0]    hb_rd [0:HK-1];
    logic [MI*HB-1:0]    h_word;

    genvar gb;
    generate
        for (gb = 0; gb < HK; gb++) begin : g_bank
            moe_unit_ram #(.W(HG * HB), .D(HBANK_D), .AW(HBANK_A)) u_bank (
                .clk, .we(hb_we[gb]), .waddr(hb_wa[gb]), .wdata(hb_wd[gb]), .raddr(hb_ra[gb]), .rdata(hb_rd[gb]));
            if (MO <= MI) begin : g_w_one
                // one segment per fc1 row: bank ot % HK, word ot / HK
                assign hb_we[gb] = we && (32'(w_row) % HK == gb);
                assign hb_wa[gb] = HBANK_A'(32'(w_slot) * HWPS + 32'(w_row) / HK);
                assign hb_wd[gb] = w_data;
            end else begin : g_w_all
                // HK segments per fc1 row: every bank, word ot
                assign hb_we[gb] = we;
                assign hb_wa[gb] = HBANK_A'(32'(w_slot) * HWPS + 32'(w_row));
                assign hb_wd[gb] = w_data[gb * HG * HB +: HG * HB];
            end
            if (MI <= MO) begin : g_r_one
                // one segment per fc2 tile: bank it % HK, word it / HK
                assign hb_ra[gb] = HBANK_A'(32'(r_slot) * HWPS + 32'(r_tile) / HK);
            end else begin : g_r_all
                assign hb_ra[gb] = HBANK_A'(32'(r_slot) * HWPS + 32'(r_tile));
                assign h_word[gb * HG * HB +: HG * HB] = hb_rd[gb];
            end
        end
        if (MI <= MO) begin : g_r_select
            if (HK > 1) begin : g_banked
                logic [$clog2(HK)-1:0] r_bank;  // bank of the tile being read, registered with the RAM read
                always_ff @(posedge clk) r_bank <= $clog2(HK)'(32'(r_tile) % HK);
                assign h_word = hb_rd[r_bank];
            end else begin : g_single
                assign h_word = hb_rd[0];
            end
        end
    endgenerate

    always_comb
        for (int i = 0; i < MI; i++) hvec[i * IB +: IB] = IB'($signed(h_word[i * HB +: HB]));
endmodule

`default_nettype wire
