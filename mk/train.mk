# Training and accuracy (docs/training.md): the shipped tiny checkpoint and its float-vs-fixed report.
# Included by the main Makefile (PY, PYTEST_ARGS and the install target come from there).

TINY_CKPT   ?= models/tiny.safetensors
TRAIN_DIR   ?= $(or $(M3VIT_BUILD_ROOT),build)/train/tiny
# The recipe of the shipped checkpoint (docs/training.md); TRAIN_ARGS adds or overrides flags.
TINY_RECIPE := --steps 2000 --batch-size 32 --optimizer adamw --lr 1e-3 --train-size 8192
TRAIN_ARGS  ?=

.PHONY: train-tiny baselines-tiny accuracy test-timm

# Train the tiny model from scratch (about 5-10 minutes on 2 cores) and install it as the shipped checkpoint.
train-tiny: install
	$(PY) -m m3vit.train.train tiny --out-dir $(TRAIN_DIR) $(TINY_RECIPE) $(TRAIN_ARGS)
	cp $(TRAIN_DIR)/model.safetensors $(TINY_CKPT)

# Single-task baselines for Δm: the same recipe, one task each; their held-out float metrics are kept in
# models/tiny_single_task.json (the two checkpoints stay in build/).
baselines-tiny: install
	$(PY) -m m3vit.train.train tiny --tasks semseg --out-dir $(TRAIN_DIR)_semseg $(TINY_RECIPE) $(TRAIN_ARGS)
	$(PY) -m m3vit.train.train tiny --tasks depth --out-dir $(TRAIN_DIR)_depth $(TINY_RECIPE) $(TRAIN_ARGS)
	$(PY) -m m3vit.train.predict --checkpoint $(TRAIN_DIR)_semseg/model.safetensors --json $(TRAIN_DIR)_semseg/eval.json
	$(PY) -m m3vit.train.predict --checkpoint $(TRAIN_DIR)_depth/model.safetensors --json $(TRAIN_DIR)_depth/eval.json
	$(PY) -c 'import json, sys; from m3vit.train.metrics import load_baselines; \
		print(json.dumps(load_baselines(sys.argv[1:]), indent=2))' \
		$(TRAIN_DIR)_semseg/eval.json $(TRAIN_DIR)_depth/eval.json > models/tiny_single_task.json

# Float vs fixed-point (golden model) vs trivial task metrics of the shipped checkpoint, on the held-out split
# (with Δm against models/tiny_single_task.json when it exists).
accuracy: install
	$(PY) -m m3vit.train.accuracy --checkpoint $(TINY_CKPT) --json models/tiny_accuracy.json \
		--md models/tiny_accuracy.md --check $(if $(wildcard models/tiny_single_task.json),--baseline models/tiny_single_task.json)

# timm equivalence checks; they skip unless timm (and a torchvision matching torch 2.13) is installed.
test-timm: install
	$(PY) -m pytest -m timm -rs $(PYTEST_ARGS)
