"""g++ builds of small C++ testbenches over the kernel headers, cached by content (shared by the HLS tests)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from m3vit import package_dir
from m3vit.sim.csim import CACHE_DIR, CXX, ap_types_dir

HLS_DIR = package_dir("m3vit.hls")


def build_cached(name: str, source: str | Path, headers: Sequence[str], flags: Sequence[str]) -> Path:
    """Compile ``source`` (C++ text, or a file) with ``CXX flags -I hls/ -I ap_types`` into
    ``CACHE_DIR/<name>-<digest>/<name>``; the digest covers the source, the flags and ``headers`` (of hls/),
    so an edit rebuilds and an unchanged build is reused across sessions. Returns the built file."""
    text = Path(source).read_text() if isinstance(source, Path) else source
    digest = hashlib.sha256(
        "\0".join([text, CXX, *flags, *((HLS_DIR / h).read_text() for h in headers)]).encode()
    ).hexdigest()[:20]
    out = CACHE_DIR / f"{name}-{digest}" / name
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        src = source if isinstance(source, Path) else out.with_name(f"{name}.cpp")
        if not isinstance(source, Path):
            src.write_text(text)
        tmp = out.with_name(f".{name}.{os.getpid()}")
        proc = subprocess.run([CXX, *flags, f"-I{HLS_DIR}", f"-I{ap_types_dir()}", str(src), "-o", str(tmp)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-4000:]
        os.replace(tmp, out)
    return out
