// moe_unit_issue: the wave scheduler; issues one MAC tile per cycle.
// An expert's work is a sequence of waves, one tile per cycle. A wave runs one layer over a group of tokens
// output row by output row: ot over OT, then the group's tokens, then the input tile it over IT (a unit = one
// token's output row = IT tiles). So a wave follows its weights as they arrive (output row ot needs its IT
// tiles): fc1 waves start on the queue while w1 streams in, fc2 waves while w2 does. Each unit also waits for
// its token's row of x (fc1) or hidden vector (fc2). At a boundary: an fc2 wave over every token whose fc1 is
// done, else an fc1 wave over as many new tokens as the hidden ring (HR vectors) has room for. Queue entries
// (token << 16 | gate) are read from the queue buffer into a ring of HR registers as fc2 waves free them.
// Outputs the buffer read addresses of the issued tile and, a cycle later, its stage-1 tag.
`default_nettype none

module moe_unit_issue
    import moe_unit_pkg::*;
(
    input  wire logic              clk,
    input  wire logic              rst,
    input  wire logic              active,        // phase P_EXP
    input  wire logic [15:0]       ntok,
    input  wire logic [15:0]       n_used,
    input  wire logic              clr_busy,
    input  wire logic              pf_slot,
    input  wire logic [1:0]        slot_q,
    input  wire logic [1:0]        slot_a,
    input  wire logic [1:0]        slot_full,
    input  wire logic [31:0]       slot_cnt,
    input  wire logic [31:0]       w1_words,
    input  wire logic [31:0]       w2_words,
    input  wire logic [16:0]       x_rows,
    input  wire logic [DW-1:0]     qbuf_rd,
    input  wire logic              h_set,         // the hidden vector of ring slot h_set_sel is complete
    input  wire logic [RL-1:0]     h_set_sel,
    input  wire logic              pipe_busy,     // tiles are still in the MAC pipeline
    output logic [15:0]            experts_done,
    output logic                   slot_clear,
    output logic                   slot_clear_sel,
    output logic                   waiting,       // between experts
    output logic                   issue,         // a tile is issued this cycle
    output logic                   mem_wait,      // nothing issued because weights or a token row are on their way
    // buffer read addresses of the tile issued this cycle
    output logic [WBUF_A-1:0]      wbuf_ra,
    output logic [BBUF_A-1:0]      bbuf_ra,
    output logic [XBUF_A-1:0]      xbuf_ra,
    output logic [QBUF_A-1:0]      qbuf_ra,
    output logic [RL-1:0]          h_slot,        // fc2: ring slot of the tile's token
    output logic [15:0]            h_tile,        // fc2: input tile
    // stage 1 (registered at issue)
    output logic                   s1_v,
    output logic                   s1_first,      // first input tile of a unit (adds the bias)
    output logic                   s1_last,       // last input tile of a unit
    output logic [TAGW-1:0]        s1_tag
);
    localparam logic [1:0] C_WAIT = 2'd0, C_RUN = 2'd1, C_DRAIN = 2'd2;
    localparam int QE_LOG2 = $clog2(QE);
    logic [1:0]  cstate;
    logic        cs;            // slot being computed on
    logic [16:0] c_n;           // queue length of the current expert
    logic [15:0] c_ot, c_it;    // output row and input tile being issued
    logic [16:0] c_q;           // token of the wave being issued (offset from c_lo)
    logic [16:0] c_lo, c_g;     // the wave's first queue index and its number of tokens
    logic        c_inpass;      // a wave is being issued
    logic        c_layer;       // 0: fc1, 1: fc2
    logic [HR-1:0] h_ready;     // ring slot holds the finished hidden vector of its token
    logic [31:0] tg [0:HR-1];   // queue entries of the tokens not yet through fc2, by ring slot
    logic [16:0] j_rd, j_end, ent_loaded;
    logic [16:0] n1, n2, n2f;   // tokens whose fc1 / fc2 wave has started; fc2 waves finished
    logic        q_pend;
    logic [16:0] q_lo, q_hi;
    logic        fc2_next, fc1_room, ent_ok, unit_ok, unit_mem, x_ok, w_ok, d_layer;
    logic [16:0] d_g, d_gmax;   // tokens of a wave started now; at most (fc1)
    logic [16:0] gx;            // fc1: new tokens whose row of x is on chip
    logic [RL-1:0] g_off;
    logic [16:0] u_qi;          // queue index of the unit at hand
    logic [31:0] u_tg;
    logic [15:0] u_ot, n_it, n_ot;
    always_comb begin
        fc2_next = (n2 < n1);
        fc1_room = (n1 < c_n) && (n1 - n2 < 17'(HR));
        d_layer = fc2_next;
        // an fc1 wave takes the new tokens the ring has room for whose rows of x are on chip (while x still
        // streams in, small waves leave room for fc2 waves in between)
        d_gmax = (c_n - n1 < 17'(HR) - (n1 - n2)) ? c_n - n1 : 17'(HR) - (n1 - n2);
        ent_ok = ent_loaded >= n1 + d_gmax;
        gx = '0;
        for (int r = 0; r < HR; r++) begin  // slot r holds entry n1 + ((r - n1) mod HR)
            g_off = RL'(r) - n1[RL-1:0];
            if (17'(g_off) < d_gmax && ({1'b0, tg[r][31:16]} < x_rows || x_rows >= {1'b0, ntok})) gx = gx + 1;
        end
        d_g = fc2_next ? n1 - n2 : gx;
        // the unit at hand: (c_lo + c_q, c_ot) inside a wave, else the first unit of the next wave
        u_qi = c_inpass ? c_lo + c_q : (fc2_next ? n2 : n1);
        u_ot = c_inpass ? c_ot : 16'd0;
        u_tg = tg[u_qi[RL-1:0]];
        // fc1: the token's row of x (rows arrive in token order); both: the output row's weight tiles
        x_ok = {1'b0, u_tg[31:16]} < x_rows || x_rows >= {1'b0, ntok};
        if (c_inpass ? c_layer : d_layer)
            w_ok = slot_full[cs] || (pf_slot == cs && w2_words >= ({16'd0, u_ot} + 32'd1) * IT2);
        else
            w_ok = slot_a[cs] || (pf_slot == cs && w1_words >= ({16'd0, u_ot} + 32'd1) * IT1);
        if (c_inpass ? c_layer : d_layer) begin
            unit_ok = w_ok && h_ready[u_qi[RL-1:0]];
            unit_mem = !w_ok;
        end else begin
            unit_ok = w_ok && x_ok;
            unit_mem = !w_ok || !x_ok;
        end
        if (c_inpass) issue = c_it != 0 || unit_ok;
        else issue = (fc2_next || (fc1_room && ent_ok)) && unit_ok;
        issue = issue && (cstate == C_RUN);
        mem_wait = (cstate == C_RUN) && !issue && unit_mem && (c_inpass || fc2_next || (fc1_room && ent_ok));
        n_it = (c_inpass ? c_layer : d_layer) ? 16'(IT2) : 16'(IT1);
        n_ot = (c_inpass ? c_layer : d_layer) ? 16'(OT2) : 16'(OT1);
        // queue-entry reader: the rest of the current bus word, into the ring slots finished fc2 waves released
        j_end = ((j_rd >> QE_LOG2) + 17'd1) << QE_LOG2;
        if (c_n < j_end) j_end = c_n;
        if (n2f + 17'(HR) < j_end) j_end = n2f + 17'(HR);
    end
    wire        i_layer = c_inpass ? c_layer : d_layer;
    wire [16:0] i_g     = c_inpass ? c_g : d_g;
    wire [15:0] i_tok   = u_tg[31:16];
    wire [15:0] i_gate  = u_tg[15:0];
    wire [RL-1:0] i_slot = u_qi[RL-1:0];
    wire        i_first = (c_it == 0);
    wire        i_last  = (c_it == n_it - 1);
    wire        i_hlast = !i_layer && i_last && c_ot == 16'(OT1 - 1);  // a token's last fc1 tile
    wire        i_plast = i_last && c_ot == n_ot - 1 && c_q == i_g - 1;  // the wave's last tile

    assign wbuf_ra = WBUF_A'({31'd0, cs} * TPE + (i_layer ? W1T + 32'(c_ot) * IT2 : 32'(c_ot) * IT1) + 32'(c_it));
    assign bbuf_ra = BBUF_A'({31'd0, cs} * BPE + (i_layer ? OT1 : 0) + c_ot);
    assign xbuf_ra = XBUF_A'({16'd0, i_tok} * IT1 + c_it);
    assign qbuf_ra = QBUF_A'({31'd0, cs} * QWORDS + 32'(j_rd >> QE_LOG2));
    assign h_slot = i_slot;
    assign h_tile = c_it;
    assign waiting = (cstate == C_WAIT);

    always_ff @(posedge clk) begin
        if (rst) begin
            s1_v <= 1'b0;
        end else begin
            s1_v <= issue;
            s1_first <= i_first; s1_last <= i_last;
            s1_tag <= {i_layer, i_hlast, i_slot, c_ot, i_tok, i_gate};
        end
    end

    always_ff @(posedge clk) begin : b_issue
        logic [RL-1:0] off;
        logic [16:0] jj;
        slot_clear <= 1'b0;
        if (rst || !active) begin
            cstate <= C_WAIT; cs <= 1'b0; experts_done <= '0; c_inpass <= 1'b0; h_ready <= '0; q_pend <= 1'b0;
        end else begin
            q_pend <= 1'b0;
            if (cstate == C_RUN && j_rd < j_end) begin
                q_pend <= 1'b1; q_lo <= j_rd; q_hi <= j_end; j_rd <= j_end;
            end
            if (q_pend) begin
                for (int l = 0; l < QE; l++) begin
                    jj = 17'(((q_lo >> QE_LOG2) << QE_LOG2) + 17'(l));
                    if (jj >= q_lo && jj < q_hi) tg[jj[RL-1:0]] <= qbuf_rd[l * 32 +: 32];
                end
                ent_loaded <= q_hi;
            end
            if (h_set) h_ready[h_set_sel] <= 1'b1;
            case (cstate)
                C_WAIT: if (experts_done != n_used && slot_q[cs] && !clr_busy) begin
                    cstate <= C_RUN; c_n <= {1'b0, slot_cnt[cs * 16 +: 16]}; c_ot <= '0; c_it <= '0; c_q <= '0;
                    c_inpass <= 1'b0; j_rd <= '0; ent_loaded <= '0; n1 <= '0; n2 <= '0; n2f <= '0;
                    q_pend <= 1'b0; h_ready <= '0;
                end
                C_RUN: if (issue) begin
                    if (!c_inpass) begin
                        c_inpass <= 1'b1; c_layer <= d_layer; c_g <= d_g;
                        if (d_layer) begin
                            c_lo <= n2; n2 <= n1;
                        end else begin
                            c_lo <= n1; n1 <= n1 + d_g;
                            for (int r = 0; r < HR; r++) begin  // the wave's slots: not finished yet
                                off = RL'(r) - n1[RL-1:0];
                                if (17'(off) < d_g) h_ready[r] <= 1'b0;
                            end
                        end
                    end
                    if (i_plast) begin
                        c_inpass <= 1'b0; c_ot <= '0; c_it <= '0; c_q <= '0;
                        if (i_layer) begin
                            n2f <= u_qi + 1;
                            if (u_qi == c_n - 1) cstate <= C_DRAIN;  // fc2 of the last token
                        end
                    end else if (!i_last) begin
                        c_it <= c_it + 1;
                    end else begin
                        c_it <= '0;
                        if (c_q == i_g - 1) begin c_q <= '0; c_ot <= c_ot + 1; end
                        else c_q <= c_q + 1;
                    end
                end
                C_DRAIN: if (!pipe_busy && !s1_v) begin
                    slot_clear <= 1'b1; slot_clear_sel <= cs; cs <= !cs; experts_done <= experts_done + 1;
                    cstate <= C_WAIT;
                end
                default: cstate <= C_WAIT;
            endcase
        end
    end
endmodule

`default_nettype wire
