"""The board side of the driver, without a board: pynq binding and .hwh register checks."""

from __future__ import annotations

import ctypes

import numpy as np
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
    def reg(offset: int, doc: str) -> dict:
        return {"address_offset": offset, "size": 32, "access": "read-write", "description": doc}

    regs = {"CTRL": reg(0, "Control signals")}
    for a in register_map()["args"]:
        base = a["name"] + ("_r" if reserved_suffix and a["name"] in ("input", "output") else "")
        if a["kind"] == "pointer":
            regs[f"{base}_1"] = reg(a["data_offsets"][0], f"Data signal of {a['name']}")
            regs[f"{base}_2"] = reg(a["data_offsets"][1], f"Data signal of {a['name']}")
        else:
            regs[base] = reg(a["offset"], f"Data signal of {a['name']}")
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


class _RegisterDevice:
    """A pynq device without a board: pynq's own MMIO (the REGISTER_RW path), DefaultIP and PynqBuffer classes
    run on it, and its registers and memory are the digital twin's (ap_start runs the generated C simulation)."""

    BASE = 0xA000_0000

    def __init__(self, twin) -> None:
        self.twin = twin
        self.allocations: list[dict] = []

    def has_capability(self, name: str) -> bool:
        return name == "REGISTER_RW"

    def read_registers(self, address: int, length: int) -> bytes:
        assert length == 4 and address % 4 == 0
        return self.twin.read(address - self.BASE).to_bytes(4, "little")

    def write_registers(self, address: int, data: bytes) -> None:
        assert len(data) == 4
        self.twin.write(address - self.BASE, int.from_bytes(data, "little"))

    def allocate(self, shape, dtype, **kwargs):
        from pynq.buffer import PynqBuffer

        self.allocations.append(kwargs)
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        address = self.twin.memory.allocate(nbytes)
        return PynqBuffer(shape, dtype, device=self, device_address=address, bo=address,
                          coherent=not kwargs.get("cacheable", False))

    def _host(self, pointer: int, size: int) -> np.ndarray:
        return np.ctypeslib.as_array((ctypes.c_uint8 * size).from_address(pointer))

    def flush(self, bo: int, offset: int, pointer: int, size: int) -> None:
        self.twin.memory.view(bo + offset, size)[:] = self._host(pointer, size)

    def invalidate(self, bo: int, offset: int, pointer: int, size: int) -> None:
        self._host(pointer, size)[:] = self.twin.memory.view(bo + offset, size)


def test_driver_runs_through_pynqs_own_classes(tmp_path) -> None:
    """The board path with pynq's real DefaultIP, MMIO and PynqBuffer (and pynq.allocate): bit-exact results.

    Only the hardware is simulated: a REGISTER_RW device whose registers and memory are the twin's."""
    from m3vit.codegen.config import load_config
    from m3vit.codegen.layout import pack_images
    from m3vit.host.csim_device import csim_device
    from m3vit.host.driver import Accelerator, AcceleratorError
    from m3vit.host.weights import load_weights, pack_model
    from m3vit.sim.golden import GoldenModel
    from m3vit.sim.inputs import random_image
    from m3vit.sim.quantize import quantize_state_dict
    from tests.conftest import reference

    cfg = load_config("tiny")
    sd = reference(cfg).state_dict()
    pack_model(cfg, sd, tmp_path / "tiny.m3w")
    twin, regmap = csim_device(cfg)
    device = _RegisterDevice(twin)
    description = {"device": device, "phys_addr": _RegisterDevice.BASE, "addr_range": 0x1_0000,
                   "registers": _hwh(reserved_suffix=True), "fullpath": "m3vit_top_0", "type": VLNV}
    ip = M3ViTIP(description)
    assert isinstance(ip, pynq.DefaultIP) and isinstance(ip.mmio, pynq.MMIO)
    check_hwh_registers(regmap, ip._registers, "m3vit_top_0")  # what open_overlay does with pynq's parse
    assert ip.register_map.task.address == regmap.offset("task")  # pynq's RegisterMap reads the same offsets
    golden = GoldenModel(cfg, quantize_state_dict(cfg, sd))
    image = random_image(cfg, 70)
    with Accelerator(cfg, regmap, ip, load_weights(tmp_path / "tiny.m3w", cfg), timeout_s=60) as acc:
        for task in (0, 1):
            want = golden.run(golden.quantize_image(image), task).tokens
            assert np.array_equal(acc.run(image, task, raw=True)[0], want)
        # a call past the host-side checks: the status register, read through pynq's MMIO, names the cause
        assert ip.read(regmap.offset("status")) == 0
        with pytest.raises(AcceleratorError, match=r"status 0x2\): task = 2 is outside \[0, 1\]"):
            acc._execute(pack_images(cfg, golden.quantize_image(image)[None]), 1, 2, 0, cfg.model.depth)
        assert ip.read(regmap.offset("status")) == 1 << regmap.flags("status")["task"]
    assert device.allocations and all(a == {"cacheable": True} for a in device.allocations)
    weights_lo = twin.read(regmap.args["weights"]["data_offsets"][0])
    weights_hi = twin.read(regmap.args["weights"]["data_offsets"][1])
    assert (weights_hi << 32 | weights_lo) in twin.memory.blocks
