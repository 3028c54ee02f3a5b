"""The generated Vivado block-design script: structure checked for every board preset."""

from __future__ import annotations

import json
import re

import pytest

from m3vit.codegen.config import BOARDS, load_config, with_overrides
from m3vit.codegen.project import generate
from m3vit.codegen.vivado import assign_hp_ports, render_bitstream_tcl

BUNDLES = ["gmem_w", "gmem_s", "gmem_i", "gmem_o"]


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_block_design_structure(board: str) -> None:
    cfg = with_overrides(load_config("tiny"), **{"hardware.board": board, "hardware.clock_mhz": 250})
    tcl = render_bitstream_tcl(cfg, "m3vit_top", BUNDLES)
    spec = BOARDS[board]
    assert f"create_project tiny_vivado $proj_dir -part {spec.part} -force" in tcl
    assert f"set_property board_part {spec.board_part} [current_project]" in tcl
    assert "create_bd_cell -type ip -vlnv xilinx.com:ip:zynq_ultra_ps_e zynq_ultra_ps_e_0" in tcl
    assert "CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ {250}" in tcl
    assert "create_bd_cell -type ip -vlnv xilinx.com:hls:m3vit_top:1.0 m3vit_top_0" in tcl
    assert "Master {/zynq_ultra_ps_e_0/M_AXI_HPM0_FPD} Slave {/m3vit_top_0/s_axi_control}" in tcl
    for i, bundle in enumerate(BUNDLES):
        hp = f"S_AXI_HP{i}_FPD"
        assert f"Master {{/m3vit_top_0/m_axi_{bundle}}} Slave {{/zynq_ultra_ps_e_0/{hp}}}" in tcl
        assert f"CONFIG.PSU__USE__S_AXI_GP{i + 2} {{1}}" in tcl  # HPn is the PS's S_AXI_GP(n+2)
        assert f"CONFIG.PSU__SAXIGP{i + 2}__DATA_WIDTH {{128}}" in tcl
    assert tcl.count("intc_ip {New AXI SmartConnect}") == 1 + len(BUNDLES)
    for step in ("assign_bd_address", "validate_bd_design", "make_wrapper",
                 "launch_runs impl_1 -to_step write_bitstream", "wait_on_run impl_1"):
        assert step in tcl
    assert "tiny.bit" in tcl and "tiny.hwh" in tcl and "hw_handoff" in tcl
    assert tcl.count("{") == tcl.count("}")  # balanced Tcl braces


def test_hp_assignment_round_robin_and_names() -> None:
    ports = assign_hp_ports([f"b{i}" for i in range(6)])
    assert [p.hp for p in ports] == ["S_AXI_HP0_FPD", "S_AXI_HP1_FPD", "S_AXI_HP2_FPD", "S_AXI_HP3_FPD",
                                     "S_AXI_HP0_FPD", "S_AXI_HP1_FPD"]
    with pytest.raises(ValueError, match="not a valid identifier"):
        assign_hp_ports(["ok", "bad name; exec"])
    with pytest.raises(ValueError, match="not a valid identifier"):
        render_bitstream_tcl(load_config("tiny"), "top]; exit", BUNDLES)


def test_generate_writes_script_from_the_register_map(tmp_path) -> None:
    cfg = load_config("tiny")
    project = generate(cfg, tmp_path / "tiny")
    tcl = (project / "vivado" / "build_bitstream.tcl").read_text()
    bundles = re.findall(r"m_axi_(\w+)\}", tcl)
    assert len(bundles) == 4 and len(set(bundles)) == 4
    assert "xilinx.com:hls:m3vit_top:1.0" in tcl


PARTS = {  # board → (device part, Vivado board part), from the boards' Xilinx user guides
    "zcu104": ("xczu7ev-ffvc1156-2-e", "xilinx.com:zcu104:part0:1.1"),
    "zcu102": ("xczu9eg-ffvb1156-2-e", "xilinx.com:zcu102:part0:3.4"),
    "kv260": ("xck26-sfvc784-2LV-c", "xilinx.com:kv260_som:part0:1.4"),
}
HP_TO_GP = {"S_AXI_HP0_FPD": 2, "S_AXI_HP1_FPD": 3, "S_AXI_HP2_FPD": 4, "S_AXI_HP3_FPD": 5}
"""Zynq UltraScale+ PS naming (UG1085): the full-power HP slave n is PSU__*S_AXI_GP(n+2)."""


@pytest.mark.parametrize(("board", "clock", "axi"), [("zcu104", 300, 128), ("zcu102", 187.5, 256), ("kv260", 250, 64)])
def test_rendered_tcl_matches_config_and_register_map(tmp_path, board: str, clock: float, axi: int) -> None:
    """The generated script, read as Tcl settings, against the config and the project's register_map.json:
    part and board, the PL clock (= the HLS clock), the IP named by the map's top, and each m_axi bundle of
    the map on its own enabled HP port of the configured width."""
    cfg = with_overrides(load_config("tiny"), **{"hardware.board": board, "hardware.clock_mhz": clock,
                                                 "hardware.axi_data_bits": axi})
    project = generate(cfg, tmp_path / board)
    tcl = (project / "vivado" / "build_bitstream.tcl").read_text()
    regmap = json.loads((project / "register_map.json").read_text())
    top, bundles = regmap["top"], [a["bundle"] for a in regmap["args"] if a["kind"] == "pointer"]

    assert re.findall(r"-part (\S+)", tcl) == [PARTS[board][0]]
    assert re.findall(r"set_property board_part (\S+)", tcl) == [PARTS[board][1]]
    freqs = re.findall(r"PL0_REF_CTRL__FREQMHZ \{([^}]*)\}", tcl)
    assert len(freqs) == 1 and float(freqs[0]) == clock
    hls_period = re.findall(r"create_clock -period (\S+)", (project / "run_hls.tcl").read_text())
    assert len(hls_period) == 1 and abs(1000.0 / float(hls_period[0]) - clock) < 0.05  # HLS and PL agree

    assert re.findall(r"create_bd_cell -type ip -vlnv xilinx\.com:hls:(\w+):1\.0 (\w+)", tcl) == [(top, f"{top}_0")]
    assert f"Slave {{/{top}_0/s_axi_control}}" in tcl
    links = re.findall(rf"Master \{{/{top}_0/m_axi_(\w+)\}} Slave \{{/zynq_ultra_ps_e_0/(S_AXI_HP\d_FPD)\}}", tcl)
    assert sorted(b for b, _ in links) == sorted(bundles) and len(bundles) >= 2
    hp_used = {hp for _, hp in links}
    assert len(hp_used) == min(len(bundles), len(HP_TO_GP))  # bundles spread over the HP ports
    enabled = dict(re.findall(r"PSU__USE__S_AXI_GP(\d) \{(\d)\}", tcl))
    assert {int(gp) for gp, on in enabled.items() if on == "1"} == {HP_TO_GP[hp] for hp in hp_used}
    widths = dict(re.findall(r"PSU__SAXIGP(\d)__DATA_WIDTH \{(\d+)\}", tcl))
    assert {int(gp): int(w) for gp, w in widths.items()} == {HP_TO_GP[hp]: axi for hp in hp_used}
