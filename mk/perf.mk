# Performance model, design-space exploration and reports. Included by the main Makefile.
#   make perf-report CONFIG=…   HTML + markdown report with plots in build/<name>/report (golden routings, cached)
#   make dse CONFIG=…           sweep knobs and formats; writes the best design to build/<name>_dse.yaml
#   make bench-perf             the model's headline numbers (DSE-best PASCAL/NYUD, schedules vs the paper, RTL vs model);
#                               `make bench` runs it too
.PHONY: perf-report dse bench-perf

bench: bench-perf

bench-perf: install
	$(PY) -m m3vit.explore.bench_perf

perf-report: install
	$(PY) -m m3vit.explore.report $(CONFIG)

dse: install
	$(PY) -m m3vit.explore.dse $(CONFIG) --board zcu104
