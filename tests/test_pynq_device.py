"""The board side of the driver, without a board: pynq binding and .hwh register checks."""

from __future__ import annotations

import pytest

pynq = pytest.importorskip("pynq", reason="pynq is not installed")

from m3vit.codegen.hls import register_map  # noqa: E402
from m3vit.host.pynq_device import VLNV, M3ViTIP, check_hwh_registers, open_overlay  # noqa: E402
from m3vit.host.registers import RegisterMap  # noqa: E402


def test_driver_is_bound_to_the_generated_ip() -> None:
    from pynq.overlay import _ip_drivers

    assert _ip_drivers[VLNV] is M3ViTIP
    assert f"xilinx.com:hls:{register_map()['top']}:1.0" == VLNV


def _hwh(reserved_suffix: bool = False) -> dict[str, dict]:
    """Registers as pynq parses them from a Vitis HLS .hwh: scalars by name, pointers as NAME_1 / NAME_2;
    with ``reserved_suffix`` HDL reserved words get HLS's ``_r`` (``input_r_1``)."""
    regs = {"CTRL": {"address_offset": 0}}
    for a in register_map()["args"]:
        base = a["name"] + ("_r" if reserved_suffix and a["name"] in ("input", "output") else "")
        if a["kind"] == "pointer":
            regs[f"{base}_1"] = {"address_offset": a["data_offsets"][0]}
            regs[f"{base}_2"] = {"address_offset": a["data_offsets"][1]}
        else:
            regs[base] = {"address_offset": a["offset"]}
    return regs


@pytest.mark.parametrize("reserved_suffix", [False, True])
def test_hwh_register_check_accepts_the_generated_map(reserved_suffix: bool) -> None:
    check_hwh_registers(RegisterMap(register_map()), _hwh(reserved_suffix), "m3vit_top_0")


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda r: r["task"].update(address_offset=r["task"]["address_offset"] + 8),
         r"register 'task' is at 0x20 in the \.hwh but at 0x18"),
        (lambda r: r.pop("task"), r"register 'task' \(argument 'task'\) is not in the \.hwh of m3vit_top_0"),
        (lambda r: r.pop("weights_1"), r"register 'weights_1' \(argument 'weights'\) is not in the \.hwh"),
        (lambda r: r.pop("output_2"), r"register 'output_2' \(the high word of pointer 'output'\) is not in"),
        (lambda r: r["scratch_2"].update(address_offset=r["scratch_2"]["address_offset"] + 4),
         r"register 'scratch_2' is at 0x44 in the \.hwh but at 0x40"),
        (lambda r: r["input_1"].pop("address_offset"), r"register .input_1. in the \.hwh of m3vit_top_0 has no"),
        (lambda r: r.clear(), r"pynq found no registers for m3vit_top_0 in the \.hwh"),
    ],
)
def test_hwh_register_check_is_strict(edit, needle: str) -> None:
    regs = _hwh()
    edit(regs)
    with pytest.raises(RuntimeError, match=needle) as err:
        check_hwh_registers(RegisterMap(register_map()), regs, "m3vit_top_0")
    assert "\n" not in str(err.value)
    with pytest.raises(RuntimeError, match="no registers"):
        check_hwh_registers(RegisterMap(register_map()), None, "m3vit_top_0")


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
