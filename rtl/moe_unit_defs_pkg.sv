// moe_unit_defs_pkg: encodings the moe_unit_* modules share (not configuration: that is moe_unit_pkg).
/* verilator lint_off UNUSEDPARAM */  // shared constants: each module uses some of them
package moe_unit_defs_pkg;
    // read-job kinds: the count table, token rows, a queue, expert weights (b1/w1 or b2/w2)
    localparam logic [1:0] K_CNT = 2'd0, K_X = 2'd1, K_Q = 2'd2, K_W = 2'd3;
    // phases of a call: idle, count-table load, experts, write-back, done (one cycle)
    localparam logic [2:0] P_IDLE = 3'd0, P_CNT = 3'd1, P_EXP = 3'd2, P_OUT = 3'd3, P_DONE = 3'd4;
endpackage
/* verilator lint_on UNUSEDPARAM */
