"""Vivado block design and bitstream script for an exported HLS accelerator (ZCU104, ZCU102, KV260).

``write_bitstream_tcl(cfg, out_dir, top, maxi_bundles)`` renders ``build_bitstream.tcl``: the board's
Zynq UltraScale+ PS with the PL clock from the config, the HLS IP, its control port on M_AXI_HPM0_FPD
and each m_axi port through its own SmartConnect to an S_AXI_HP*_FPD port, address assignment, and
implementation to ``write_bitstream``; it copies ``NAME.bit`` and ``NAME.hwh`` side by side.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from m3vit.codegen.config import DesignConfig
from m3vit.codegen.render import template_env

TEMPLATES = Path(__file__).parent / "templates" / "vivado"
HP_PORTS = ("S_AXI_HP0_FPD", "S_AXI_HP1_FPD", "S_AXI_HP2_FPD", "S_AXI_HP3_FPD")
HP_GP_INDEX = {"S_AXI_HP0_FPD": 2, "S_AXI_HP1_FPD": 3, "S_AXI_HP2_FPD": 4, "S_AXI_HP3_FPD": 5}
"""The PS configuration calls S_AXI_HPn_FPD "S_AXI_GP(n+2)" (GP0/GP1 are the HPC ports)."""
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class MaxiPort:
    bundle: str  # the HLS bundle: the IP's port is m_axi_<bundle>
    hp: str  # the PS slave port it is connected to


def assign_hp_ports(bundles: list[str]) -> list[MaxiPort]:
    """Spread m_axi bundles over HP0..HP3 round-robin (more than four share ports through SmartConnects)."""
    for b in bundles:
        if not _NAME.match(b):
            raise ValueError(f"m_axi bundle name {b!r} is not a valid identifier")
    return [MaxiPort(b, HP_PORTS[i % len(HP_PORTS)]) for i, b in enumerate(bundles)]


def render_bitstream_tcl(cfg: DesignConfig, top: str, maxi_bundles: list[str]) -> str:
    if not _NAME.match(top):
        raise ValueError(f"HLS top function name {top!r} is not a valid identifier")
    hw, board = cfg.hardware, cfg.hardware.board_spec
    ports = assign_hp_ports(maxi_bundles)
    used_hp = sorted({p.hp for p in ports}, key=HP_PORTS.index)
    return template_env(TEMPLATES, trim=False).get_template("block_design.tcl.j2").render(
        name=cfg.name, config_hash=cfg.config_hash(), board=hw.board, part=board.part,
        board_part=board.board_part, clock_mhz=f"{hw.clock_mhz:g}", axi_data_bits=hw.axi_data_bits,
        ip_vlnv=f"xilinx.com:hls:{top}:1.0", ip_instance=f"{top}_0", maxi=ports,
        hp_ports=[{"name": hp, "gp": HP_GP_INDEX[hp]} for hp in used_hp],
    )


def write_bitstream_tcl(cfg: DesignConfig, out_dir: str | Path, top: str, maxi_bundles: list[str]) -> Path:
    """Write ``out_dir/build_bitstream.tcl``; returns its path."""
    path = Path(out_dir) / "build_bitstream.tcl"
    text = render_bitstream_tcl(cfg, top, maxi_bundles)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
