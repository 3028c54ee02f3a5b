"""cocotb bench of the Vitis-HLS-exported accelerator top (runs only where exported Verilog exists).

The export is looked up in ``$M3VIT_HLS_VERILOG`` or under ``build/<name>/**/impl/verilog``; without one
the test is skipped with that reason. The register map and m_axi bundles are read from the export itself
(``<top>_control_s_axi.v`` and the top's port list), never assumed.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from m3vit import build_dir
from m3vit.codegen.hls import register_map
from m3vit.host.registers import RegisterMap
from m3vit.sim.rtl.runner import prepare_simulator
from tests.conftest import REPO_ROOT


def find_hls_export() -> tuple[Path | None, str]:
    """(directory of exported Verilog, how it was found) or (None, why not)."""
    env = os.environ.get("M3VIT_HLS_VERILOG")
    if env:
        p = Path(env)
        return (
            (p, f"$M3VIT_HLS_VERILOG={p}")
            if list(p.glob("*_control_s_axi.v"))
            else (None, f"$M3VIT_HLS_VERILOG={p} holds no *_control_s_axi.v")
        )
    hits = sorted((REPO_ROOT / "build").glob("*/**/impl/verilog"))  # where `make hls` exports, not build_dir()
    hits = [h for h in hits if list(h.glob("*_control_s_axi.v"))]
    if not hits:
        return (
            None,
            "no Vitis HLS export found (set M3VIT_HLS_VERILOG or export to build/<name>/**/impl/verilog)",
        )
    return hits[0], str(hits[0])


_REG = re.compile(r"^//\s*0x([0-9a-fA-F]+)\s*:\s*Data signal of (\w+)\s*$")


def parse_control_regs(text: str) -> list[dict]:
    """Arguments and their word offsets from the address-map comment of ``*_control_s_axi.v``."""
    args: dict[str, list[int]] = {}
    for line in text.splitlines():
        m = _REG.match(line.strip())
        if m:
            args.setdefault(m.group(2), []).append(int(m.group(1), 16))
    return [
        {"name": n, "offsets": offs, "kind": "pointer" if len(offs) == 2 else "scalar"}
        for n, offs in args.items()
    ]


def test_parse_control_regs() -> None:
    text = """// 0x10 : Data signal of num_tokens
//        bit 31~0 - num_tokens[31:0] (Read/Write)
// 0x14 : reserved
// 0x18 : Data signal of x
//        bit 31~0 - x[31:0] (Read/Write)
// 0x1c : Data signal of x
//        bit 31~0 - x[63:32] (Read/Write)
// 0x20 : reserved"""
    assert parse_control_regs(text) == [
        {"name": "num_tokens", "offsets": [0x10], "kind": "scalar"},
        {"name": "x", "offsets": [0x18, 0x1C], "kind": "pointer"},
    ]


def export_problems(regs: list[dict], bundles: list[str], regmap: dict) -> list[str]:
    """How an export's registers (:func:`parse_control_regs`) and m_axi bundles differ from ``regmap``
    (``codegen.hls.register_map()``, what the driver and register_map.json use); empty when they agree."""
    problems = []
    ours = {a["name"]: a for a in regmap["args"]}
    theirs = {r["name"]: r for r in regs}
    for name in sorted(ours.keys() - theirs.keys()):
        problems.append(f"{name}: in register_map() but not in the export")
    for name in sorted(theirs.keys() - ours.keys()):
        problems.append(f"{name}: in the export but not in register_map()")
    for name in sorted(ours.keys() & theirs.keys()):
        a, r = ours[name], theirs[name]
        if a["data_offsets"] != r["offsets"] or a["kind"] != r["kind"]:
            problems.append(f"{name}: export {r['kind']} at {[hex(o) for o in r['offsets']]}, register_map() "
                            f"{a['kind']} at {[hex(o) for o in a['data_offsets']]}")
    expected_bundles = sorted({a["bundle"] for a in regmap["args"] if a["kind"] == "pointer"})
    if sorted(bundles) != expected_bundles:
        problems.append(f"m_axi bundles: export {sorted(bundles)}, register_map() {expected_bundles}")
    return problems


def _control_comment(entries: list[tuple[int, str]]) -> str:
    """An address-map comment in the format Vitis HLS writes into ``*_control_s_axi.v``."""
    return "\n".join(f"// 0x{off:02x} : Data signal of {name}\n//        bit 31~0 - {name}[31:0] (Read/Write)"
                     for off, name in entries)


def test_export_comparison_catches_a_moved_register_and_a_missing_bundle() -> None:
    """The comparison itself: an export written by the rule agrees; one register moved or one bundle lost does not."""
    regmap = register_map()
    entries = [(o, a["name"]) for a in regmap["args"] for o in a["data_offsets"]]
    bundles = sorted({a["bundle"] for a in regmap["args"] if a["kind"] == "pointer"})
    assert len(bundles) >= 2 and entries
    assert export_problems(parse_control_regs(_control_comment(entries)), bundles, regmap) == []
    moved = [(o + 8 if name == entries[-1][1] else o, name) for o, name in entries]
    assert any(entries[-1][1] in p for p in export_problems(parse_control_regs(_control_comment(moved)), bundles,
                                                               regmap))
    assert export_problems(parse_control_regs(_control_comment(entries)), bundles[1:], regmap)


def test_hls_export_matches_register_map() -> None:
    """The offsets Vitis HLS assigned (its own address-map comment) are those of register_map.json."""
    vdir, how = find_hls_export()
    if vdir is None:
        pytest.skip(how)
    ctrl = next(vdir.glob("*_control_s_axi.v"))
    top = ctrl.name.removesuffix("_control_s_axi.v")
    bundles = sorted(set(re.findall(r"m_axi_(\w+?)_AWADDR", (vdir / f"{top}.v").read_text())))
    assert export_problems(parse_control_regs(ctrl.read_text()), bundles, register_map(top=top)) == [], how


@pytest.mark.cocotb
def test_hls_exported_top() -> None:
    vdir, how = find_hls_export()
    if vdir is None:
        pytest.skip(how)
    sim = "verilator" if prepare_simulator("verilator") is None else "icarus"
    reason = prepare_simulator(sim)
    if reason:
        pytest.skip(reason)
    from cocotb_tools.runner import get_runner

    ctrl = next(vdir.glob("*_control_s_axi.v"))
    top = ctrl.name.removesuffix("_control_s_axi.v")
    sources = sorted(vdir.glob("*.v")) + sorted(vdir.glob("*.sv"))
    top_text = (vdir / f"{top}.v").read_text()
    bundles = sorted(set(re.findall(r"m_axi_(\w+?)_AWADDR", top_text)))
    regs = parse_control_regs(ctrl.read_text())
    work = build_dir("hls_cocotb", top)
    work.mkdir(parents=True, exist_ok=True)
    runner = get_runner(sim)
    args = ["-Wno-fatal", "-Wno-lint", "-Wno-style"] if sim == "verilator" else ["-g2012"]
    runner.build(
        sources=sources,
        hdl_toplevel=top,
        build_dir=work / sim,
        build_args=args,
        timescale=("1ns", "1ps"),
        log_file=work / "build.log",
    )
    results = work / "results.json"
    runner.test(
        test_module="m3vit.sim.rtl.hls_top_tb",
        hdl_toplevel=top,
        hdl_toplevel_lang="verilog",
        build_dir=work / sim,
        test_dir=work,
        results_xml=str(work / "results.xml"),
        log_file=work / "sim.log",
        extra_env={
            "M3VIT_HLS_REGS": json.dumps(regs),
            "M3VIT_HLS_MAXI": json.dumps(bundles),
            "M3VIT_HLS_RESULTS": str(results),
        },
    )
    res = json.loads(results.read_text())
    assert res["ap_done"], f"{how}: see {work / 'sim.log'}"
    if "status" in res:  # every scalar was 0: the guard refuses num_images = 0 (and only that)
        images_bit = RegisterMap(register_map(top=top)).flags("status")["images"]
        assert res["status"] == 1 << images_bit, f"{how}: status 0x{res['status']:x}; see {work / 'sim.log'}"
