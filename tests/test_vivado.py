"""The generated Vivado block-design script: structure checked for every board preset."""

from __future__ import annotations

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
