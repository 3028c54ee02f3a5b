# m3vit-accel: every target creates and uses .venv itself.
PY_BOOT ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
STAMP   := $(VENV)/.installed
CONFIG  ?= configs/tiny.yaml
PYTEST_ARGS ?=

.PHONY: install test test-slow lint demo bench clean

# Feature fragments (HLS, RTL, deployment) add their own targets.
-include mk/*.mk

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PY_BOOT) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel
	$(PIP) install -c constraints.txt -e '.[dev]'
	touch $(STAMP)

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest -m "not slow and not timm" $(PYTEST_ARGS)

test-slow: install
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check .

demo: install
	$(VENV)/bin/m3vit demo $(CONFIG)

bench: install
	$(PY) -m m3vit.explore.bench

clean:
	rm -rf build .pytest_cache .ruff_cache
