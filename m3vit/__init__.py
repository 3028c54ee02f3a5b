"""m3vit: deploy multi-task Mixture-of-Experts ViTs (M³ViT) on Xilinx FPGAs.

Packages, lowest layer first (each imports only from the layers below it; docs/architecture.md):
``m3vit.codegen`` (config, numerics, layouts, the HLS/RTL/Vivado generators, the performance model),
``m3vit.sim`` (fixed point, quantisation, golden model, PyTorch reference, C and RTL simulation),
then ``m3vit.train`` (data, training, metrics), ``m3vit.explore`` (design-space exploration, schedules,
reports, benchmarks) and ``m3vit.host`` (weights file, PYNQ driver, digital twin), and on top
:mod:`m3vit.cli` and :mod:`m3vit.demo`. Data packages ship with the code: ``m3vit.hls`` (kernel headers),
``m3vit.rtl`` (SystemVerilog), ``m3vit.configs`` (presets) and ``m3vit.models`` (the trained tiny model).

Generated projects, caches and reports go under :data:`BUILD_ROOT`: ``build/`` of the current directory,
or the folder named by the environment variable ``M3VIT_BUILD_ROOT`` (read once, at import; a relative
path is taken from the current directory). The test suite sets it to ``build/pytest`` so that tests
never share folders with ``make demo`` and friends.
"""

import importlib.resources
import os
from pathlib import Path

__version__ = "0.1.0"

BUILD_ENV = "M3VIT_BUILD_ROOT"
"""Environment variable that moves :data:`BUILD_ROOT`."""

BUILD_ROOT = Path(os.environ.get(BUILD_ENV) or "build").expanduser().resolve()
"""Where generated projects, caches and reports go (default ``./build``; ``$M3VIT_BUILD_ROOT``)."""


def build_dir(name: str, *parts: str) -> Path:
    """``BUILD_ROOT/<name>/<parts...>``: the output folder of design ``name`` (a config's ``name``)."""
    return BUILD_ROOT.joinpath(name, *parts)


def package_dir(package: str) -> Path:
    """The folder of a package shipped with m3vit (e.g. ``m3vit.hls``: the kernel headers), in a wheel or a
    source checkout alike."""
    return Path(str(importlib.resources.files(package)))
