"""BUILD_ROOT: movable with $M3VIT_BUILD_ROOT, and the test session's own (build/pytest), never build/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from m3vit import BUILD_ROOT, build_dir
from m3vit.sim.csim import CACHE_DIR
from tests.conftest import REPO_ROOT

PROBE = (
    "import json, m3vit; from m3vit.sim import csim; "
    "print(json.dumps({'root': str(m3vit.BUILD_ROOT), 'tiny': str(m3vit.build_dir('tiny')), "
    "'cache': str(csim.CACHE_DIR)}))"
)


def _probe(value: str | None, cwd: Path) -> dict[str, Path]:
    """BUILD_ROOT, build_dir('tiny') and the C-simulation cache of a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if k not in ("M3VIT_BUILD_ROOT", "M3VIT_CSIM_CACHE")}
    if value is not None:
        env["M3VIT_BUILD_ROOT"] = value
    proc = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {k: Path(v) for k, v in json.loads(proc.stdout).items()}


def test_session_does_not_write_into_build() -> None:
    """conftest.py moved BUILD_ROOT before m3vit was imported: make demo's build/tiny is out of reach."""
    assert Path(os.environ["M3VIT_BUILD_ROOT"]).resolve() == BUILD_ROOT
    demo_dir = REPO_ROOT / "build" / "tiny"
    assert build_dir("tiny") != demo_dir and not demo_dir.is_relative_to(BUILD_ROOT)
    if "M3VIT_CSIM_CACHE" not in os.environ:
        assert CACHE_DIR == BUILD_ROOT / "csim_cache"


def test_build_root_follows_the_environment(tmp_path: Path) -> None:
    out = tmp_path / "elsewhere"
    got = _probe(str(out), REPO_ROOT)
    assert got == {"root": out.resolve(), "tiny": out.resolve() / "tiny", "cache": out.resolve() / "csim_cache"}
    assert _probe("rel/out", tmp_path)["root"] == (tmp_path / "rel" / "out").resolve()  # from the cwd
    default = tmp_path / "build"  # ./build of the current directory
    for unset in (None, ""):
        assert _probe(unset, tmp_path) == {"root": default, "tiny": default / "tiny", "cache": default / "csim_cache"}


def test_train_default_out_dir_is_under_build_root(tmp_path: Path) -> None:
    """`m3vit train` without --out-dir writes BUILD_ROOT/train/<name>, not ./build/train/<name>."""
    root, cwd = tmp_path / "root", tmp_path / "cwd"
    cwd.mkdir()
    env = {**os.environ, "M3VIT_BUILD_ROOT": str(root)}
    args = ["tiny", "--steps", "1", "--batch-size", "8", "--train-size", "16", "--no-eval", "--no-progress",
            "--threads", "1"]
    proc = subprocess.run([sys.executable, "-m", "m3vit.train.train", *args], env=env, cwd=cwd,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (root / "train" / "tiny" / "model.safetensors").is_file()
    assert not (cwd / "build").exists()
