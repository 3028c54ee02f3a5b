# HLS generator, C simulation and Vitis HLS runs. Included by the main Makefile.
#   make hls-generate CONFIG=…   write build/<name>/ (the Vitis HLS project)
#   make csim CONFIG=…           generate, compile with g++, compare every layer of every task with the golden model
#   make hls CONFIG=…            generate, then run run_hls.tcl with vitis-run or vitis_hls (fails if neither exists)
#   make bench-csim              C-simulation compile and per-image times (tiny, m3vit_small_pascal)
#   make bench-csim-baseline [BASELINE=main] [BENCH_CONFIG=…]   C-simulation CPU s/image of the working tree's
#                                kernel headers next to a git revision's, and their ratio
.PHONY: hls-generate csim hls bench-csim bench-csim-baseline

hls-generate: install
	$(PY) -m m3vit.codegen.project $(CONFIG)

csim: install
	$(PY) -m m3vit.sim.csim $(CONFIG)

hls: install
	$(PY) -m m3vit.codegen.project $(CONFIG) --run

bench-csim: install
	$(PY) -c "from m3vit.sim.csim import bench_csim; bench_csim()"

BASELINE ?= main
BENCH_CONFIG ?= m3vit_small_pascal_dse
BENCH_ROUNDS ?= 1
bench-csim-baseline: install
	$(PY) -c "from m3vit.sim.csim import bench_csim_baseline as b; b('$(BENCH_CONFIG)', '$(BASELINE)', $(BENCH_ROUNDS))"

# make hls-lint CONFIG=…        static check of the generated project (libclang): bursts, trip counts, II, m_axi
#                               pragmas, datapath, resource inventory vs the model and the board; writes lint.json
.PHONY: hls-lint
hls-lint: install
	$(VENV)/bin/m3vit lint $(CONFIG)
