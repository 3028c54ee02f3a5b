# Deployment: bitstream flow and the weight packer. Included by the main Makefile.
#   make bitstream CONFIG=…                      Vitis HLS export + Vivado → build/<name>/bitstream/<name>.bit/.hwh
#   make pack CONFIG=… MODEL=random|ckpt OUT=…    quantise and pack weights into a .m3w file
.PHONY: bitstream pack

MODEL ?= random
OUT ?= $(or $(M3VIT_BUILD_ROOT),build)/weights.m3w

bitstream: install
	$(VENV)/bin/m3vit bitstream $(CONFIG)

pack: install
	$(VENV)/bin/m3vit pack $(MODEL) $(CONFIG) -o $(OUT)
