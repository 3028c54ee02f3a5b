# m3vit-accel: every target creates and uses .venv itself.
PY_BOOT ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
STAMP   := $(VENV)/.installed
CONFIG  ?= configs/tiny.yaml
PYTEST_ARGS ?=

.PHONY: install test test-slow lint demo bench architecture hls-figure clean

# Feature fragments (HLS, RTL, deployment) add their own targets.
-include mk/*.mk

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@command -v iverilog >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iverilog; } ; } || \
		echo "note: Icarus Verilog (apt-get install iverilog) is missing: its RTL test will be skipped"
	$(PY_BOOT) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel
	$(PIP) install -c constraints.txt -e '.[dev]'
	touch $(STAMP)

test: install
	$(PY) -m ruff check .
	$(MAKE) --no-print-directory wheel-check
	$(PY) -m pytest -m "not slow and not timm" $(PYTEST_ARGS)

test-slow: install
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check .

demo: install
	$(VENV)/bin/m3vit demo $(CONFIG)

bench: install
	$(PY) -m m3vit.explore.bench

# The package graph of docs/architecture.md (fails on an upward import or a cycle).
architecture: install
	$(PY) -m m3vit.imports --figure docs/architecture.png

# The figure of docs/hls.md (architecture + cycles per step; the ledger of `m3vit csim NAME --ledger` if present).
FIG_CONFIG ?= m3vit_small_pascal_dse
hls-figure: install
	$(PY) -m m3vit.explore.hls_figure $(FIG_CONFIG) --ledger build/$(FIG_CONFIG)/ledger.json -o docs/hls_architecture.png

clean:
	rm -rf build .pytest_cache .ruff_cache
