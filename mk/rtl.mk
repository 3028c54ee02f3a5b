# RTL MoE unit: generated SystemVerilog, cocotb benches on Verilator/Icarus, yosys estimate.
#   make rtl     - write build/<name>/rtl/ for $(CONFIG): moe_unit_pkg.sv (parameters), moe_unit_gelu.mem,
#                  the hand-written modules (copied from rtl/) and moe_unit_layout.json
#   make cocotb  - every cocotb test (slow ones included), then build/<name>/rtl_report.json (printed)
#   make synth   - the yosys synthesis test (synth_xilinx -family xcup); slow, kept out of `make test`
.PHONY: rtl cocotb synth

rtl: install
	$(PY) -c "import sys; from m3vit.codegen.config import load_config; \
	from m3vit.codegen.rtl import generate_moe_unit; print(generate_moe_unit(load_config(sys.argv[1])).out_dir)" \
	$(CONFIG)

cocotb: install
	$(PY) -m pytest tests/rtl -m "cocotb" $(PYTEST_ARGS)
	$(PY) -m m3vit.explore.rtl_report --config $(CONFIG)

synth: install
	$(PY) -m pytest tests/rtl -m synth $(PYTEST_ARGS)
