"""The package shape: imports point down the layers, no module import cycle, data ship as package data."""

from __future__ import annotations

from m3vit import package_dir
from m3vit.imports import Edge, cycles, import_edges, layer_violations, module_files


def test_every_package_is_scanned() -> None:
    files = module_files()
    for module in ("m3vit.codegen.perf.timeline", "m3vit.sim.rtl.runner", "m3vit.train.train",
                   "m3vit.explore.dse", "m3vit.host.driver", "m3vit.cli", "m3vit.demo"):
        assert module in files, module
    assert any(e.source == "m3vit.cli" and e.target == "m3vit.codegen.config" for e in import_edges())


def test_imports_point_down_the_layers() -> None:
    assert layer_violations(import_edges()) == []


def test_no_import_cycles_even_in_function_level_imports() -> None:
    assert cycles(import_edges()) == []


def test_the_checks_see_planted_violations() -> None:
    """A sideways import, an upward import and a two-module cycle are each reported."""
    planted = [
        Edge("m3vit.sim.golden", "m3vit.train.data", 1),  # up
        Edge("m3vit.host.driver", "m3vit.explore.dse", 2),  # sideways
        Edge("m3vit.codegen.hls", "m3vit.codegen.layout", 3),
        Edge("m3vit.codegen.layout", "m3vit.codegen.hls", 4),
    ]
    assert len(layer_violations(planted)) == 2
    assert cycles(planted) == [["m3vit.codegen.hls", "m3vit.codegen.layout"]]


def test_function_level_imports_are_edges() -> None:
    """An import inside a function is found like one at module level (the scanner walks the whole tree)."""
    edges = [e for e in import_edges() if e.source == "m3vit.host.driver"]
    assert any(e.target == "m3vit.host.csim_device" for e in edges)  # imported lazily in Accelerator.simulated


def test_data_packages_hold_their_files() -> None:
    assert (package_dir("m3vit.hls") / "m3vit_types.h").is_file()
    assert (package_dir("m3vit.configs") / "tiny.yaml").is_file()
    assert (package_dir("m3vit.models") / "tiny.safetensors").is_file()
    assert any(package_dir("m3vit.rtl").rglob("*.sv*"))
