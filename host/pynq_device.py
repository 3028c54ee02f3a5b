"""The board side of the driver: pynq's own classes (``Overlay``, ``DefaultIP``, ``allocate``).

Imported only by :meth:`m3vit.host.driver.Accelerator.board`; depends on nothing but pynq and numpy,
so it runs on a PYNQ image as is. To drive a board from a PC, set ``PYNQ_REMOTE_DEVICES=<board ip>``
before importing pynq: the same calls go over gRPC (see docs/deploy.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pynq

from m3vit.host.registers import RegisterMap

VLNV = "xilinx.com:hls:m3vit_top:1.0"


class M3ViTIP(pynq.DefaultIP):
    """pynq binds this driver to every instance of the generated HLS IP (by VLNV)."""

    bindto: ClassVar[list[str]] = [VLNV]

    overlay: pynq.Overlay | None = None

    def allocate(self, shape: Any, dtype: Any = np.uint8, cacheable: bool = True) -> Any:
        """A ``pynq.PynqBuffer`` on this IP's device (``pynq.allocate``; same signature in PYNQ 3.0–4.0)."""
        return pynq.allocate(shape, dtype, target=self.device, cacheable=cacheable)

    def reset(self) -> None:
        """An HLS block has no soft reset: re-download the bitstream (DDR buffers survive)."""
        if self.overlay is None:
            raise RuntimeError("cannot reset: the IP was not opened through open_overlay()")
        self.overlay.download()


def hwh_register_names(name: str, kind: str) -> list[tuple[str, ...]]:
    """The .hwh register names an argument may have, one tuple per naming (scalars: NAME; 64-bit pointers:
    NAME_1 low word, NAME_2 high word). Vitis HLS appends ``_r`` to names that are HDL reserved words
    (``input`` → ``input_r_1``/``input_r_2``)."""
    return [((base,) if kind == "scalar" else (f"{base}_1", f"{base}_2")) for base in (name, f"{name}_r")]


def check_hwh_registers(
    regmap: RegisterMap, hwh_registers: dict[str, dict[str, Any]] | None, ip: str = "the IP"
) -> None:
    """Every argument of register_map.json must be in the .hwh, at the same offsets (a pointer's low and high
    word both); anything else is a one-line RuntimeError naming the register."""
    if not hwh_registers:
        raise RuntimeError(f"pynq found no registers for {ip} in the .hwh; cannot check them against "
                           f"register_map.json (is the .hwh the one written with this bitstream?)")
    for name, arg in regmap.args.items():
        candidates = hwh_register_names(name, arg["kind"])
        keys = next((keys for keys in candidates if keys[0] in hwh_registers), None)
        if keys is None:
            raise RuntimeError(f"register {candidates[0][0]!r} (argument {name!r}) is not in the .hwh of {ip}: the "
                               f"bitstream was not built from this generated project")
        for key, want in zip(keys, arg["data_offsets"], strict=True):
            if key not in hwh_registers:
                raise RuntimeError(f"register {key!r} (the high word of pointer {name!r}) is not in the .hwh of "
                                   f"{ip}: the bitstream was not built from this generated project")
            try:
                got = int(hwh_registers[key]["address_offset"])
            except (KeyError, TypeError, ValueError):
                raise RuntimeError(f"register {key!r} in the .hwh of {ip} has no address offset") from None
            if got != want:
                raise RuntimeError(
                    f"register {key!r} is at 0x{got:x} in the .hwh but at 0x{want:x} in "
                    f"register_map.json: the bitstream and the generated project disagree"
                )


def open_overlay(bitfile: str | Path, regmap: RegisterMap) -> M3ViTIP:
    """Download ``bitfile`` and return the accelerator IP's driver (also the buffer allocator)."""
    bitfile = Path(bitfile)
    if not bitfile.is_file():
        raise FileNotFoundError(f"bitstream {str(bitfile)!r} does not exist")
    hwh = bitfile.with_suffix(".hwh")
    if not hwh.is_file():
        raise FileNotFoundError(f"{hwh.name} is missing: pynq needs the .hwh beside {bitfile.name}")
    overlay = pynq.Overlay(str(bitfile))
    name = f"{regmap.top}_0"
    ip = getattr(overlay, name, None)
    if not isinstance(ip, M3ViTIP):
        raise RuntimeError(f"the overlay has no {VLNV} instance named {name!r}; IPs: {sorted(overlay.ip_dict)}")
    check_hwh_registers(regmap, getattr(ip, "_registers", None), name)
    ip.overlay = overlay
    return ip
