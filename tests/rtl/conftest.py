"""Fixtures of the RTL tests: simulator builds cached per (config, knobs, simulator) for the session.

The compiled model is also cached on disk under ``build/<name>/sim/<sim>-<digest>`` (keyed by the digest
of the generated sources), so a second session only re-runs the simulations.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from m3vit.codegen.config import load_config
from m3vit.codegen.rtl import RtlKnobs
from m3vit.sim.rtl.runner import SimBuild, build_moe_unit, prepare_simulator


@pytest.fixture(scope="session")
def moe_build() -> Callable[..., SimBuild]:
    """``moe_build(config, sim="verilator", **knobs)`` → a compiled model, built once per session."""
    cache: dict[tuple, SimBuild] = {}

    def get(config: str, sim: str = "verilator", **knobs: int) -> SimBuild:
        reason = prepare_simulator(sim)
        if reason:
            pytest.skip(f"{sim}: {reason}")
        key = (config, sim, tuple(sorted(knobs.items())))
        if key not in cache:
            cache[key] = build_moe_unit(load_config(config), sim, RtlKnobs(**knobs))
        return cache[key]

    return get
