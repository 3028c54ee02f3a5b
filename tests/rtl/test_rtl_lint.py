"""``verilator --lint-only -Wall`` of every hand-written module of the MoE unit, on several generated variants
(the variants take different ``generate`` branches: banked hidden rings, bus widths, array sizes).

The sources carry no waivers but a few narrow ``lint_off`` comments (each says why); a warning fails the test.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from m3vit.codegen.config import load_config
from m3vit.codegen.rtl import MODULES, PACKAGE, RtlKnobs, generate_moe_unit
from m3vit.sim.rtl.runner import prepare_simulator

VARIANTS = {
    "tiny": {},
    "tiny_mac8x16_ring2": {"mac_in": 8, "mac_out": 16, "hidden_ring": 2},
    "tiny_mac16x8": {"mac_in": 16, "mac_out": 8},
    "tiny_axi512_mac32_t64": {"axi_data_bits": 512, "mac_in": 32, "mac_out": 32, "max_tokens": 64},
}


def _lint(sources: list[Path], top: str) -> str:
    proc = subprocess.run(["verilator", "--lint-only", "-Wall", "--top-module", top, *map(str, sources)],
                          capture_output=True, text=True, check=False)
    return "" if proc.returncode == 0 and "%Warning" not in proc.stderr else proc.stderr


@pytest.fixture(scope="module")
def verilator() -> None:
    reason = prepare_simulator("verilator")
    if reason:
        pytest.skip(f"verilator: {reason}")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_module_lints_clean(verilator, tmp_path: Path, variant: str) -> None:
    rtl = generate_moe_unit(load_config("tiny"), tmp_path, RtlKnobs(**VARIANTS[variant]))
    assert rtl.sources[0].name == f"{PACKAGE}.sv" and [s.name for s in rtl.sources[1:]] == list(MODULES)
    # the whole unit from its top; on the default variant also each module as its own top (unused ports and
    # the parameterised modules' defaults)
    tops = [s.stem for s in rtl.sources if not s.stem.endswith("pkg")] if variant == "tiny" else [rtl.top]
    problems = {top: out for top in tops if (out := _lint(list(rtl.sources), top))}
    assert not problems, "\n".join(f"[{t}]\n{o}" for t, o in problems.items())


def test_lint_catches_a_width_mismatch(verilator, tmp_path: Path) -> None:
    """The check is not vacuous: a truncating assignment in a module fails it."""
    rtl = generate_moe_unit(load_config("tiny"), tmp_path)
    ram = tmp_path / "moe_unit_ram.sv"
    ram.write_text(ram.read_text().replace("rdata <= mem[raddr];", "rdata <= {1'b0, mem[raddr]};"))
    assert "WIDTH" in _lint(list(rtl.sources), "moe_unit_ram")
