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
        return pynq.allocate(shape, dtype, cacheable=cacheable)

    def reset(self) -> None:
        """An HLS block has no soft reset: re-download the bitstream (DDR buffers survive)."""
        if self.overlay is None:
            raise RuntimeError("cannot reset: the IP was not opened through open_overlay()")
        self.overlay.download()


def check_hwh_registers(regmap: RegisterMap, hwh_registers: dict[str, dict[str, Any]]) -> None:
    """Every argument the .hwh lists must sit where register_map.json says (pointers as NAME_1 / NAME)."""
    for name, arg in regmap.args.items():
        for key in (name, f"{name}_1"):
            if key in hwh_registers:
                got = int(hwh_registers[key]["address_offset"])
                if got != arg["offset"]:
                    raise RuntimeError(
                        f"register {key!r} is at 0x{got:x} in the .hwh but at 0x{arg['offset']:x} in "
                        f"register_map.json: the bitstream and the generated project disagree"
                    )
                break


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
    check_hwh_registers(regmap, getattr(ip, "_registers", None) or {})
    ip.overlay = overlay
    return ip
