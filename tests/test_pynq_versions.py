"""The board driver against each PYNQ release a ZCU104 image ships (3.0.1, 3.1.x) and the one pip resolves (4.0).

The default suite runs ``tests/test_pynq_device.py`` with the installed pynq (4.x). This slow test builds a
venv per release (cached under the build root) holding only that pynq and its dependencies; the rest of
the toolkit and pytest come from the project's venv, appended after it on ``sys.path``, and runs the same
tests there: pynq's real DefaultIP, MMIO, RegisterMap, PynqBuffer and ``allocate`` of that release.
"""

from __future__ import annotations

import os
import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest

from m3vit import build_dir

REPO_ROOT = Path(__file__).resolve().parents[1]


def pynq_venv(version: str) -> Path:
    """A venv with ``pynq==version`` whose path continues into this interpreter's site-packages."""
    root = build_dir(f"pynq-{version}-venv")
    python = root / "bin" / "python"
    stamp = root / ".installed"
    if not stamp.is_file():
        venv.create(root, with_pip=True, clear=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"pynq=={version}",
                        "-c", str(REPO_ROOT / "constraints.txt")], check=True, capture_output=True, text=True)
        site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                              check=True, capture_output=True, text=True).stdout.strip()
        ours = sysconfig.get_path("purelib")
        (Path(site) / "zz_m3vit_project.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
        stamp.write_text(version)
    return python


@pytest.mark.slow
@pytest.mark.parametrize("version", ["3.0.1", "3.1.2"])
def test_board_driver_against_pynq_release(version: str) -> None:
    python = pynq_venv(version)
    found = subprocess.run([str(python), "-c", "import importlib.metadata as m, pynq; print(m.version('pynq'), "
                            "pynq.__file__)"], check=True, capture_output=True, text=True).stdout.split()
    assert found[0] == version and str(python.parents[1]) in found[1], found
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                           str(REPO_ROOT / "tests" / "test_pynq_device.py")],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout and "failed" not in proc.stdout, proc.stdout

