"""The board side of the driver, without a board: pynq binding and .hwh register checks."""

from __future__ import annotations

import json

import pytest

pynq = pytest.importorskip("pynq", reason="pynq is not installed")

from m3vit.codegen.hls import register_map  # noqa: E402
from m3vit.host.pynq_device import VLNV, M3ViTIP, check_hwh_registers, open_overlay  # noqa: E402
from m3vit.host.registers import RegisterMap  # noqa: E402


def test_driver_is_bound_to_the_generated_ip() -> None:
    from pynq.overlay import _ip_drivers

    assert _ip_drivers[VLNV] is M3ViTIP
    assert f"xilinx.com:hls:{register_map()['top']}:1.0" == VLNV


def test_hwh_register_check() -> None:
    regmap = RegisterMap(json.loads(json.dumps(register_map())))
    hwh = {a["name"] + ("_1" if a["kind"] == "pointer" else ""): {"address_offset": a["offset"]}
           for a in register_map()["args"]}
    check_hwh_registers(regmap, hwh)  # agrees
    hwh["task"]["address_offset"] += 8
    with pytest.raises(RuntimeError, match=r"register .task. is at 0x20 in the \.hwh but at 0x18"):
        check_hwh_registers(regmap, hwh)


def test_missing_bitstream_files_are_named(tmp_path) -> None:
    regmap = RegisterMap(register_map())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_overlay(tmp_path / "x.bit", regmap)
    (tmp_path / "x.bit").write_bytes(b"\0")
    with pytest.raises(FileNotFoundError, match=r"x\.hwh is missing: pynq needs the \.hwh beside x\.bit"):
        open_overlay(tmp_path / "x.bit", regmap)


def test_board_side_imports_without_torch() -> None:
    """The board image has no PyTorch: the driver, weights loader and heads must not need it."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None; sys.modules['safetensors'] = None; "
            "import m3vit.host.driver, m3vit.host.weights, m3vit.host.heads, m3vit.host.pynq_device; "
            "from m3vit.demo import sample_images; from m3vit.codegen.config import load_config; "
            "print(sample_images(load_config('tiny'), 1).shape)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(1, 3, 32, 32)"
