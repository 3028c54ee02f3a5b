# The installable package: build the wheel and use it the way a user or a board would (no source tree).
#   make wheel-check   build dist/*.whl, install it into two fresh venvs under build/wheel/ and use them:
#                      [sim]: m3vit check / generate / csim of tiny; [board] alone (no torch): import the driver
.PHONY: wheel-check

WHEEL_DIR := $(or $(M3VIT_BUILD_ROOT),build)/wheel

wheel-check: install
	PY_BOOT=$(PY_BOOT) bash mk/wheel_check.sh $(abspath $(PY)) $(abspath $(WHEEL_DIR))
