"""The s_axilite register map of a top function, by the Vitis HLS offset rule (one rule for HLS and RTL).

Rules (Vitis HLS, UG1399): 0x00 control, 0x04 global interrupt enable, 0x08 IER, 0x0C ISR, arguments from
0x10 in declaration order; an argument of ≤ 32 bits takes a data word and a reserved (or ``ap_vld``)
word, 8 bytes; one of 33–64 bits (a pointer's address) a low word, a high word and a reserved word,
12 bytes. The HLS generator writes the map of ``m3vit_top`` with it (its output scalar ``status`` carries
``flags``, the meaning of each bit), the RTL generator the map of the MoE unit (whose read-only counters are
output scalars); the host driver and the testbenches read the JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from m3vit.codegen.bits import ceil_div


@dataclass(frozen=True)
class TopArg:
    """One argument of a top function; the C++ signature, pragmas and register map all come from these."""

    name: str
    kind: str  # "scalar" | "pointer"
    ctype: str  # C++ type in the signature
    bits: int  # width of the value in the s_axilite register file (pointers: 64)
    doc: str
    bundle: str = ""  # m_axi bundle (pointers)
    access: str = "r"  # pointers: "r", "w" or "rw" over m_axi
    output: bool = False  # scalars: a read-only register the kernel writes (a counter, a status)
    flags: tuple[tuple[str, int, str], ...] = ()  # output scalars: (name, bit, meaning) of each bit


CONTROL_REGISTERS = {
    "ap_ctrl": {
        "offset": 0x00,
        "bits": {"ap_start": 0, "ap_done": 1, "ap_idle": 2, "ap_ready": 3, "auto_restart": 7},
        "doc": "bit0 ap_start (W/COH), bit1 ap_done (clear on read), bit2 ap_idle, bit3 ap_ready, "
        "bit7 auto_restart",
    },
    "gie": {"offset": 0x04, "doc": "global interrupt enable (bit 0)"},
    "ier": {"offset": 0x08, "doc": "interrupt enable: bit0 ap_done, bit1 ap_ready"},
    "isr": {"offset": 0x0C, "doc": "interrupt status (toggle on write): bit0 ap_done, bit1 ap_ready"},
}
ARGS_BASE = 0x10


def register_map(args: tuple[TopArg, ...] | list[TopArg], top: str) -> dict[str, Any]:
    """The s_axilite register map of top function ``top`` with ``args`` (all in one control bundle).

    Each argument gets ``offset`` (its first data word), ``data_offsets`` (one word per 32 bits),
    ``reserved_offset`` and ``size_bytes``; ``address_range_bytes`` is the end of the map.
    """
    regs = []
    off = ARGS_BASE
    for a in args:
        words = ceil_div(a.bits, 32)
        if words > 2:
            raise ValueError(f"{a.name}: arguments wider than 64 bits are not supported in s_axilite")
        regs.append(
            {
                "name": a.name,
                "kind": a.kind,
                "c_type": a.ctype,
                "bits": a.bits,
                "offset": off,
                "data_offsets": [off + 4 * i for i in range(words)],
                "reserved_offset": off + 4 * words,
                "size_bytes": 4 * (words + 1),
                "doc": a.doc,
                **({"bundle": a.bundle, "access": a.access} if a.kind == "pointer" else {}),
                **({"output": True} if a.output else {}),
                **({"flags": {name: {"bit": bit, "doc": doc} for name, bit, doc in a.flags}} if a.flags else {}),
            }
        )
        off += 4 * (words + 1)
    return {
        "top": top,
        "interface": "s_axilite",
        "bundle": "control",
        "control": CONTROL_REGISTERS,
        "args": regs,
        "address_range_bytes": off,
    }


def offsets(regmap: dict[str, Any]) -> dict[str, int]:
    """Name → byte offset of every register of ``regmap``: the control registers, then the arguments."""
    return {**{name: r["offset"] for name, r in regmap["control"].items()},
            **{a["name"]: a["offset"] for a in regmap["args"]}}
