#!/usr/bin/env bash
# Usage: wheel_check.sh DEV_PYTHON OUT_DIR — see mk/wheel.mk. Runs from the repository root, then from
# OUT_DIR, so nothing of the source tree is importable while the installed wheel is used.
set -euo pipefail
dev_python=$1
out=$2
repo=$(pwd)
rm -rf "$out"
mkdir -p "$out/dist"
"$dev_python" -m pip wheel --quiet --no-deps --no-build-isolation -w "$out/dist" "$repo"
wheel=$(ls "$out"/dist/m3vit_accel-*.whl)
echo "wheel-check: built $(basename "$wheel")"
cd "$out"

"${PY_BOOT:-python3}" -m venv venv-sim
venv-sim/bin/pip install --quiet -c "$repo/constraints.txt" "${wheel}[sim]" hls4ml
venv-sim/bin/m3vit check tiny
venv-sim/bin/m3vit generate tiny -o gen/tiny
M3VIT_BUILD_ROOT="$out/build" venv-sim/bin/m3vit csim tiny -o gen/tiny
echo "wheel-check: [sim] wheel checks, generates and C-simulates tiny"

"${PY_BOOT:-python3}" -m venv venv-board
venv-board/bin/pip install --quiet -c "$repo/constraints.txt" "${wheel}[board]"
venv-board/bin/python - <<'PY'
import importlib.util

from m3vit.codegen.config import load_config
from m3vit.host.driver import Accelerator  # noqa: F401

assert importlib.util.find_spec("torch") is None, "the board extra pulled in torch"
print(f"wheel-check: [board] imports the driver without torch; preset {load_config('tiny').name} loads")
PY
