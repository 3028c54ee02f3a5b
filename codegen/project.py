"""The whole generated project of a config: the Vitis HLS project and the Vivado bitstream script.

``generate(cfg, out)`` is the one entry point that ``m3vit generate``, ``make hls-generate``, ``m3vit
bitstream`` and the demo call. ``python -m m3vit.codegen.project CONFIG [-o DIR] [--run]`` generates, and
with ``--run`` runs ``run_hls.tcl`` with Vitis HLS.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from m3vit import build_dir
from m3vit.codegen.config import ConfigError, DesignConfig, load_config
from m3vit.codegen.hls import generate_project
from m3vit.codegen.vivado import write_bitstream_tcl


def generate(cfg: DesignConfig, out: str | Path | None = None) -> Path:
    """Write the HLS project of ``cfg`` into ``out`` (default ``build/<name>``) and the Vivado script into
    its ``vivado/``; returns the project folder. A rejected config raises ConfigError and writes nothing."""
    project = generate_project(cfg, out if out is not None else build_dir(cfg.name))
    regmap = json.loads((project / "register_map.json").read_text())
    bundles = [a["bundle"] for a in regmap["args"] if a["kind"] == "pointer"]
    write_bitstream_tcl(cfg, project / "vivado", regmap["top"], bundles)
    return project


def find_hls_tool() -> tuple[str, list[str]] | None:
    """The Vitis HLS launcher on PATH and its arguments for run_hls.tcl, or None."""
    if shutil.which("vitis-run"):
        return "vitis-run", ["--mode", "hls", "--tcl", "run_hls.tcl"]
    if shutil.which("vitis_hls"):
        return "vitis_hls", ["-f", "run_hls.tcl"]
    return None


def main(argv: list[str] | None = None) -> int:
    """``python -m m3vit.codegen.project CONFIG [-o DIR] [--run]``: generate (and optionally run Vitis HLS)."""
    ap = argparse.ArgumentParser(prog="python -m m3vit.codegen.project", description=__doc__.splitlines()[0])
    ap.add_argument("config", help="config file or preset name")
    ap.add_argument("-o", "--out", help="output directory (default build/<name>)")
    ap.add_argument("--run", action="store_true", help="run run_hls.tcl with vitis-run or vitis_hls")
    args = ap.parse_args(argv)
    try:
        out = generate(load_config(args.config), args.out)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"generated {out} (HLS project; Vivado script in {out / 'vivado' / 'build_bitstream.tcl'})")
    if args.run:
        tool = find_hls_tool()
        if tool is None:
            print(
                "error: neither vitis-run (Vitis 2023.2+) nor vitis_hls (Vitis HLS ≤ 2023.1) is on PATH; "
                "source Vitis' settings64.sh",
                file=sys.stderr,
            )
            return 1
        return subprocess.call([tool[0], *tool[1]], cwd=out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
