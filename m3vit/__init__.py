"""m3vit: deploy multi-task Mixture-of-Experts ViTs (M³ViT) on Xilinx FPGAs.

Sub-packages (each maps onto a top-level folder of the repository):
``m3vit.codegen`` (config, layout, generators), ``m3vit.sim`` (PyTorch reference, numpy golden
model, simulators) and ``m3vit.host`` (PYNQ driver, CLI). Dependencies point one way:
host → sim → codegen.
"""

from pathlib import Path

__version__ = "0.1.0"

REPO_ROOT = Path(__file__).resolve().parent.parent
"""Root of the source tree (editable installs): holds ``configs/``, ``hls/`` and ``rtl/``."""

BUILD_ROOT = REPO_ROOT / "build"
"""Where generated projects, caches and reports go (ignored by git)."""


def build_dir(name: str, *parts: str) -> Path:
    """``build/<name>/<parts...>``: the output folder of design ``name`` (a config's ``name``)."""
    return BUILD_ROOT.joinpath(name, *parts)
