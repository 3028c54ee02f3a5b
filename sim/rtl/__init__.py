"""RTL simulation: the cocotb runner and the testbenches of the MoE unit and the exported HLS top."""
