"""m3vit: deploy multi-task Mixture-of-Experts ViTs (M³ViT) on Xilinx FPGAs.

Sub-packages (each maps onto a top-level folder of the repository):
``m3vit.codegen`` (config, layout, generators), ``m3vit.sim`` (PyTorch reference, numpy golden
model, simulators) and ``m3vit.host`` (PYNQ driver, CLI). Dependencies point one way:
host → sim → codegen.

Generated projects, caches and reports go under :data:`BUILD_ROOT`: ``build/`` of the source tree, or
the folder named by the environment variable ``M3VIT_BUILD_ROOT`` (read once, at import; a relative
path is taken from the current directory). The test suite sets it to ``build/pytest`` so that tests
never share folders with ``make demo`` and friends.
"""

import os
from pathlib import Path

__version__ = "0.1.0"

REPO_ROOT = Path(__file__).resolve().parent.parent
"""Root of the source tree (editable installs): holds ``configs/``, ``hls/`` and ``rtl/``."""

BUILD_ENV = "M3VIT_BUILD_ROOT"
"""Environment variable that moves :data:`BUILD_ROOT`."""

BUILD_ROOT = Path(os.environ.get(BUILD_ENV) or REPO_ROOT / "build").expanduser().resolve()
"""Where generated projects, caches and reports go (default ``build/``, ignored by git; ``$M3VIT_BUILD_ROOT``)."""


def build_dir(name: str, *parts: str) -> Path:
    """``BUILD_ROOT/<name>/<parts...>``: the output folder of design ``name`` (a config's ``name``)."""
    return BUILD_ROOT.joinpath(name, *parts)
