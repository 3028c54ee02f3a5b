"""Tests of the HLS generator (m3vit.codegen.hls) and of its C simulation (m3vit.sim.csim).

The generated C++ is compiled with g++ against hls4ml's ap_types headers and compared with the numpy
golden model bit for bit: every layer tap, the output tokens and the saturation counters, for every
task of tiny and of each preset at a reduced size, plus the routing cases that break Edge-MoE.
Compiled libraries are cached in build/pytest/csim_cache, so a second `make test` compiles nothing.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from m3vit.codegen.config import ConfigError, DesignConfig, load_config, with_overrides
from m3vit.codegen.guards import MAX_IMAGES
from m3vit.codegen.hls import (
    CSIM_API,
    CSIM_HEADERS,
    KERNEL_HEADERS,
    TOP_ARGS,
    TopArg,
    check_supported,
    generate_project,
    hls_problems,
    register_map,
)
from m3vit.codegen.layout import pack_images, pack_weights, scratch_layout, unpack_tokens
from m3vit.host.csim_device import csim_kernel
from m3vit.host.registers import RegisterMap
from m3vit.host.twin import AP_IDLE, AP_START, CTRL, SimulatedDevice
from m3vit.sim.csim import (
    CXX,
    CsimError,
    CsimLibrary,
    ap_types_dir,
    baseline_project,
    build_csim,
    build_testbench,
    compare_taps,
    random_model,
    run_testbench,
    write_testbench_data,
)
from m3vit.sim.golden import GoldenModel, GoldenResult
from m3vit.sim.inputs import random_quantized_image
from m3vit.sim.quantize import QuantizedModel
from tests.conftest import REPO_ROOT

REDUCED = {"model.image_size": [32, 64], "model.depth": 2, "model.moe_blocks": [1]}
ODD_TILES = {  # partial token tiles and key blocks (17 tokens: 12 + 5, 8 + 8 + 1), padded MAC tiles, hidden
    # widths not multiples of mac_in; tiles stay multiples of the K/V values per kv_or_acc word (4 for 16-bit qkv)
    "hardware.mac_in": 32,
    "hardware.mac_out": 32,
    "hardware.token_tile": 12,
    "hardware.attn_key_block": 8,
    "model.expert_hidden": 40,
    "model.mlp_ratio": 2.5,
}
STRESS = {  # narrow formats so that every saturation class fires (with the edits in _stress_model)
    "numerics.input": {"bits": 12, "frac": 10},
    "numerics.norm": {"bits": 8, "frac": 4},
    "numerics.qkv": {"bits": 16, "frac": 2},
    "numerics.act": {"bits": 12, "frac": 6},
    "numerics.logit": {"bits": 10, "frac": 8},
    "numerics.hidden": {"bits": 12, "frac": 8},
    "numerics.gelu_range_log2": 2,
}


# ------------------------------------------------------------------------------------------ fixtures
@dataclass
class Design:
    """A generated, compiled design with random weights, its golden model and one image."""

    cfg: DesignConfig
    project: Path
    lib: CsimLibrary
    qmodel: QuantizedModel
    packed: np.ndarray
    golden: GoldenModel
    image: np.ndarray

    def rebuild(self, qmodel: QuantizedModel) -> Design:
        """The same compiled design with other weights."""
        return Design(
            self.cfg,
            self.project,
            self.lib,
            qmodel,
            pack_weights(self.cfg, qmodel),
            GoldenModel(self.cfg, qmodel),
            self.image,
        )


@pytest.fixture(scope="session")
def designs(tmp_path_factory):
    """Factory ``designs(preset, **overrides)`` → :class:`Design`, memoised for the session."""
    cache: dict[str, Design] = {}
    root = tmp_path_factory.mktemp("hls")

    def make(preset: str, seed: int = 0, **overrides) -> Design:
        key = f"{preset}-{seed}-{sorted(overrides.items())}"
        if key not in cache:
            cfg = load_config(preset)
            if overrides:
                cfg = with_overrides(cfg, **overrides)
            project = generate_project(cfg, root / f"p{len(cache)}_{cfg.name}")
            lib = build_csim(project, cfg=cfg)
            q = random_model(cfg, seed)
            cache[key] = Design(
                cfg, project, lib, q, pack_weights(cfg, q), GoldenModel(cfg, q), random_quantized_image(cfg, seed)
            )
        return cache[key]

    return make


def assert_bit_exact(d: Design, task: int | str, image: np.ndarray | None = None) -> GoldenResult:
    """Every golden tap, the output tokens and the saturation report equal, layer by layer and in one call."""
    image = d.image if image is None else image
    g = d.golden.run(image, task)
    layered = d.lib.run(d.packed, image, task, taps=True)
    bad = compare_taps(g.taps, layered.taps)
    assert not bad, f"task {task}: taps differ: {bad[:6]}"
    assert set(layered.taps) == set(g.taps)
    np.testing.assert_array_equal(layered.tokens, g.tokens)
    assert layered.saturation == g.saturation
    whole = d.lib.run(None, image, task)
    np.testing.assert_array_equal(whole.tokens, g.tokens)
    assert whole.saturation == g.saturation
    _check_expert_loads(d, g, whole.expert_loads)
    check_expert_schedule(d.lib.expert_events(), {b: [int(e) for e in np.flatnonzero(g.routing[b].load)]
                                                  for b in g.routing})
    return g


def _check_expert_loads(d: Design, g: GoldenResult, loads: np.ndarray) -> None:
    """Each used expert is fetched exactly once per MoE layer; empty experts are never fetched."""
    for b in range(d.cfg.model.depth):
        if b in g.routing:
            np.testing.assert_array_equal(loads[b], (g.routing[b].load > 0).astype(int), err_msg=f"block {b}")
        else:
            assert not loads[b].any()


def check_expert_schedule(events: list[tuple[int, str, int, int]], used: dict[int, list[int]]) -> None:
    """The events of concurrent loader and MAC processes obey the two-slot expert pipeline: per MoE block,
    the used experts (and only they, ascending) are fetched once and computed once, slot j % 2; expert j
    computes only after its fetch ended, and its slot is refilled (fetch j + 2) only after it computed."""
    for b, experts in used.items():
        ev = [(kind, slot, e) for bb, kind, slot, e in events if bb == b]
        for kind in ("fetch", "fetched", "compute", "computed"):
            assert [e for k, _, e in ev if k == kind] == experts, (b, kind)
            assert [s for k, s, _ in ev if k == kind] == [j % 2 for j in range(len(experts))], (b, kind)
        at = {(k, e): i for i, (k, _, e) in enumerate(ev)}
        for j, e in enumerate(experts):
            assert at[("fetched", e)] < at[("compute", e)], f"block {b}: expert {e} computed before its fetch ended"
            if j >= 2:
                assert at[("computed", experts[j - 2])] < at[("fetch", e)], \
                    f"block {b}: slot of expert {e} reused early"


# ------------------------------------------------------------------------------------------ register map
def test_register_map_brief_example() -> None:
    """The real design quoted in the brief: num_images 0x10, next scalar 0x18, pointers 0x20/0x24 and 0x2C."""
    args = (
        TopArg("num_images", "scalar", "unsigned", 32, ""),
        TopArg("task", "scalar", "unsigned", 32, ""),
        TopArg("a", "pointer", "int*", 64, ""),
        TopArg("b", "pointer", "int*", 64, ""),
    )
    regs = {r["name"]: r for r in register_map(args)["args"]}
    assert regs["num_images"]["offset"] == 0x10
    assert regs["task"]["offset"] == 0x18
    assert regs["a"]["data_offsets"] == [0x20, 0x24] and regs["a"]["reserved_offset"] == 0x28
    assert regs["b"]["offset"] == 0x2C


def test_register_map_unsigned_bool_pointer_pointer_unsigned() -> None:
    args = (
        TopArg("n", "scalar", "unsigned", 32, ""),
        TopArg("flag", "scalar", "bool", 1, ""),
        TopArg("src", "pointer", "int*", 64, ""),
        TopArg("dst", "pointer", "int*", 64, ""),
        TopArg("m", "scalar", "unsigned", 32, ""),
    )
    rm = register_map(args)
    got = [(r["name"], r["data_offsets"], r["reserved_offset"], r["size_bytes"]) for r in rm["args"]]
    assert got == [
        ("n", [0x10], 0x14, 8),
        ("flag", [0x18], 0x1C, 8),  # a bool still takes a data word and a reserved word
        ("src", [0x20, 0x24], 0x28, 12),
        ("dst", [0x2C, 0x30], 0x34, 12),
        ("m", [0x38], 0x3C, 8),
    ]
    assert rm["address_range_bytes"] == 0x40
    assert {k: v["offset"] for k, v in rm["control"].items()} == {"ap_ctrl": 0, "gie": 4, "ier": 8, "isr": 12}
    assert rm["control"]["ap_ctrl"]["bits"] == {
        "ap_start": 0,
        "ap_done": 1,
        "ap_idle": 2,
        "ap_ready": 3,
        "auto_restart": 7,
    }


def test_top_register_map_matches_generated_cpp(tmp_path) -> None:
    cfg = load_config("tiny")
    out = generate_project(cfg, tmp_path / "tiny")
    rm = json.loads((out / "register_map.json").read_text())
    assert rm == json.loads(json.dumps(register_map(TOP_ARGS)))
    assert [(r["name"], r["offset"]) for r in rm["args"]] == [
        ("num_images", 0x10),
        ("task", 0x18),
        ("first_layer", 0x20),
        ("last_layer", 0x28),
        ("weights", 0x30),
        ("scratch", 0x3C),
        ("input", 0x48),
        ("output", 0x54),
        ("status", 0x60),  # the output scalar after the pointers: the other offsets are unchanged
    ]
    top = (out / "src" / "m3vit_top.cpp").read_text()
    sig = re.search(r"void m3vit_top\(([^)]*)\)", top).group(1)
    assert [p.split()[-1] for p in sig.split(",")] == [a.name for a in TOP_ARGS]
    sl = scratch_layout(cfg)
    for a in TOP_ARGS:
        assert re.search(rf"s_axilite port = {a.name} bundle = control", top), a.name
        if a.kind == "pointer":
            m = re.search(rf"m_axi port = {a.name} bundle = (\w+) offset = slave depth = (\d+)", top)
            assert m and m.group(1) == a.bundle
            assert int(m.group(2)) > 0
    depth = int(re.search(r"m_axi port = scratch .* depth = (\d+)", top).group(1))
    assert depth * cfg.hardware.axi_data_bits // 8 == sl.total_bytes


# ------------------------------------------------------------------------------------------ generator
def test_generated_project_is_complete(tmp_path) -> None:
    cfg = load_config("tiny")
    out = generate_project(cfg, tmp_path / "proj")
    for rel in [
        "src/m3vit_config.h",
        "src/m3vit_top.h",
        "src/m3vit_top.cpp",
        "tb/tb_m3vit.cpp",
        "tb/m3vit_csim_api.cpp",
        "run_hls.tcl",
        "hls_config.cfg",
        "Makefile",
        "README.md",
        "register_map.json",
        "weight_layout.json",
        *(f"src/{h}" for h in KERNEL_HEADERS),
        *(f"tb/{h}" for h in CSIM_HEADERS),
    ]:
        assert (out / rel).is_file(), rel
    # the C-simulation-only FIFOs and ledger recorder stay out of the synthesised sources
    assert not any((out / "src" / h).exists() for h in CSIM_HEADERS)
    tcl = (out / "run_hls.tcl").read_text()
    for cmd in [
        "open_project",
        "set_top m3vit_top",
        "add_files",
        "add_files -tb",
        "-flow_target vivado",
        f"set_part {cfg.hardware.board_spec.part}",
        "create_clock -period 3.333",
        "csim_design",
        "csynth_design",
        "cosim_design",
        "export_design -format ip_catalog",
    ]:
        assert cmd in tcl, cmd
    cfgfile = (out / "hls_config.cfg").read_text()
    for key in [
        "part=xczu7ev-ffvc1156-2-e",
        "[hls]",
        "flow_target=vivado",
        "syn.top=m3vit_top",
        "syn.file=",
        "tb.file=",
        "package.output.format=ip_catalog",
        "clock=3.333ns",
    ]:
        assert key in cfgfile, key
    # synthesisable C++: no floating point and no hls_math anywhere in the kernel sources
    for f in (out / "src").iterdir():
        code = re.sub(r"//[^\n]*", "", f.read_text())
        assert not re.search(r"\b(float|double|hls_math|std::sqrt|std::exp)\b", code), f.name
    assert "ap_int.h" in (out / "src" / "m3vit_types.h").read_text()
    # the emitted tables are m3vit.codegen.numerics' (never recomputed in C++)
    from m3vit.codegen.numerics import constants

    header = (out / "src" / "m3vit_config.h").read_text()
    exp2 = re.search(r"EXP2_TABLE\[EXP2_N\] = \{([^}]*)\}", header).group(1)
    assert [int(v) for v in exp2.replace("\n", " ").split(",")] == list(constants(cfg).exp2)
    gelu = re.search(r"GELU_TABLE\[GELU_N\] = \{([^}]*)\}", header).group(1)
    assert [int(v) for v in gelu.replace("\n", " ").split(",")] == list(constants(cfg).gelu.values)


def test_generation_is_deterministic(tmp_path) -> None:
    cfg = load_config("tiny")
    a = generate_project(cfg, tmp_path / "a")
    b = generate_project(cfg, tmp_path / "b")
    for f in [
        "src/m3vit_config.h",
        "src/m3vit_top.cpp",
        "tb/tb_m3vit.cpp",
        "register_map.json",
        "weight_layout.json",
    ]:
        assert (a / f).read_text() == (b / f).read_text(), f


def _cfg_values(cfgfile: Path, key: str) -> list[str]:
    """Every value of ``key`` in an HLS config file (keys may repeat)."""
    lines = (ln.strip() for ln in cfgfile.read_text().splitlines())
    return [ln.split("=", 1)[1] for ln in lines if ln.startswith(f"{key}=")]


def test_generated_project_is_relocatable(tmp_path) -> None:
    """A generated project moved elsewhere names neither its first location nor the repository, and its
    testbench builds and passes there: through hls_config.cfg the way Vitis runs it (its flags and files,
    relative to the project; the tb data copied next to the executable) and through its Makefile."""
    cfg = load_config("tiny")
    first = generate_project(cfg, tmp_path / "first" / "proj")
    for f in first.rglob("*"):
        if f.is_file():
            text = f.read_text()
            for where in (str(first.resolve()), str(first), str(REPO_ROOT)):
                assert where not in text, f"{f.relative_to(first)} names {where}"
    moved = tmp_path / "elsewhere" / "proj"
    moved.parent.mkdir()
    shutil.move(first, moved)
    shutil.rmtree(tmp_path / "first")
    q = random_model(cfg, 0)
    image = random_quantized_image(cfg, 0)
    write_testbench_data(moved, cfg, pack_weights(cfg, q), [("t0", 0, image, GoldenModel(cfg, q).run(image, 0))])

    # Vitis C simulation from hls_config.cfg: it adds only its own ap_types headers
    cfgfile = moved / "hls_config.cfg"
    flags = [f for key in ("syn.cflags", "tb.cflags") for v in _cfg_values(cfgfile, key) for f in shlex.split(v)]
    assert not any(f.startswith("-I") for f in flags), flags  # nothing to resolve: includes are file-relative
    files = _cfg_values(cfgfile, "syn.file") + _cfg_values(cfgfile, "tb.file")
    sources = [f for f in files if f.endswith(".cpp")]
    data_files = [f for f in files if not f.endswith(".cpp")]
    assert sources and all((moved / f).exists() for f in files) and not any(Path(f).is_absolute() for f in files)
    run_dir = moved / "hls_component" / "csim" / "build"
    run_dir.mkdir(parents=True)
    exe = run_dir / "csim.exe"
    subprocess.run(
        [CXX, "-O1", "-w", *flags, f"-I{ap_types_dir()}", *(str(moved / f) for f in sources), "-o", str(exe)],
        cwd=moved, check=True,
    )
    for f in data_files:
        shutil.copytree(moved / f, run_dir / f)
    (argv,) = _cfg_values(cfgfile, "csim.argv")
    proc = subprocess.run([str(exe), *shlex.split(argv)], cwd=run_dir, capture_output=True, text=True)
    assert proc.returncode == 0 and "PASS" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]

    # make csim: the generated Makefile, run in the new place
    if shutil.which("make") is None:
        return
    proc = subprocess.run(
        ["make", "csim", f"AP_TYPES={ap_types_dir()}", f"CXX={CXX}", "CXXFLAGS=-O1 -std=c++14 -w"],
        cwd=moved, capture_output=True, text=True,
    )
    assert proc.returncode == 0 and "PASS" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"hardware.mac_in": 256, "hardware.mac_out": 256}, "DSP48E2"),
        (
            {
                "model.dim": 4096,
                "model.num_heads": 16,
                "model.expert_hidden": 4096,
                "hardware.token_tile": 4096,
                "numerics.act": {"bits": 14, "frac": 6},
            },
            "on-chip",
        ),
        (
            {"model.image_size": [256, 256], "numerics.qkv": {"bits": 23, "frac": 10}, "numerics.acc_bits": 52},
            "64-bit register",
        ),
        ({"hardware.token_tile": 5}, "token_tile = 5 is not a multiple of 4"),
        ({"hardware.attn_key_block": 6}, "attn_key_block = 6 is not a multiple of 4"),
    ],
)
def test_rejected_config_writes_nothing(tmp_path, overrides, match) -> None:
    cfg = with_overrides(load_config("tiny"), **overrides)
    assert hls_problems(cfg)
    out = tmp_path / "never"
    with pytest.raises(ConfigError, match=match) as err:
        generate_project(cfg, out)
    assert "\n" not in str(err.value)
    assert not out.exists()
    with pytest.raises(ConfigError):
        check_supported(cfg)


@pytest.mark.parametrize("preset", ["tiny", "vit_tiny_cityscapes", "m3vit_small_pascal", "m3vit_small_nyud"])
def test_presets_are_supported(preset) -> None:
    assert hls_problems(load_config(preset)) == []


def test_make_hls_without_vitis(tmp_path) -> None:
    """Where neither vitis-run nor vitis_hls exists, `make hls` stops with one line naming them."""
    out = generate_project(load_config("tiny"), tmp_path / "proj")
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    if any((Path(p) / t).exists() for p in env["PATH"].split(":") for t in ("vitis-run", "vitis_hls")):
        pytest.skip("Vitis is installed here")
    proc = subprocess.run(["make", "-s", "-C", str(out), "hls"], capture_output=True, text=True, env=env)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if "vitis" in ln]
    assert len(lines) == 1 and "vitis-run" in lines[0] and "vitis_hls" in lines[0]
    proc = subprocess.run(
        [sys.executable, "-m", "m3vit.codegen.project", "tiny", "-o", str(tmp_path / "p2"), "--run"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "vitis-run" in proc.stderr


# ------------------------------------------------------------------------------------------ C simulation
def test_tiny_every_tap_every_task(designs) -> None:
    d = designs("tiny")
    for task in d.cfg.model.task_names:
        assert_bit_exact(d, task)


def test_ping_pong_schedule(designs) -> None:
    """Loader and MAC array run concurrently over two weight slots: each used expert is fetched once and
    computed once in ascending order, empty experts never appear, a slot is refilled only after its expert
    computed, and some expert's fetch overlaps the previous expert's compute (the prefetch really happens)."""
    d = designs("tiny")
    g = d.golden.run(d.image, 0, taps=False)
    d.lib.run(d.packed, d.image, 0)
    events = d.lib.expert_events()
    used = {b: [int(e) for e in np.flatnonzero(g.routing[b].load)] for b in g.routing}
    check_expert_schedule(events, used)
    overlap = 0
    for b, experts in used.items():
        ev = [(kind, e) for bb, kind, _, e in events if bb == b]
        for prev, nxt in itertools.pairwise(experts):
            overlap += ev.index(("fetch", nxt)) < ev.index(("computed", prev))
    assert overlap > 0, "no expert was fetched while the previous one computed"


def test_tiny_several_images_and_task_switch(designs) -> None:
    """num_images > 1 in one call, and switching the task register between calls reloads nothing."""
    d = designs("tiny")
    images = np.stack([d.image, random_quantized_image(d.cfg, 7), random_quantized_image(d.cfg, 8)])
    d.lib.set_weights(d.packed)
    for task in [1, 0, 1]:
        res = d.lib.run(None, images, task)
        for img, got in zip(images, res.tokens, strict=True):
            np.testing.assert_array_equal(got, d.golden.run(img, task, taps=False).tokens)
    golden = [d.golden.run(img, 0, taps=False) for img in images]
    want: dict[str, dict[str, int]] = {}
    for g in golden:
        for layer, counts in g.saturation.items():
            for cls, n in counts.items():
                want.setdefault(layer, {})[cls] = want.get(layer, {}).get(cls, 0) + n
    assert d.lib.run(None, images, 0).saturation == want


def test_tiny_layer_range_from_tokens(designs) -> None:
    """A run may start after the patch embedding: input then holds the tokens entering first_layer."""
    d = designs("tiny")
    g = d.golden.run(d.image, 1)
    res = d.lib.run(d.packed, g.taps["block0.out"], 1, first_layer=2, last_layer=3)
    np.testing.assert_array_equal(res.tokens, g.taps["block2.out"])
    res = d.lib.run(d.packed, d.image, 1, first_layer=0, last_layer=0)
    np.testing.assert_array_equal(res.tokens, g.taps["embed"])
    with pytest.raises(ValueError, match="layer range"):
        d.lib.run(d.packed, d.image, 1, first_layer=2, last_layer=1)


def test_top_on_host_buffers(designs) -> None:
    """CsimLibrary.top works on host-owned DDR images (a simulated device's ap_start), in place."""
    d = designs("tiny")
    depth = d.cfg.model.depth
    sl = scratch_layout(d.cfg)
    scratch = np.zeros(sl.total_bytes, np.uint8)
    out = np.zeros(2 * sl.token_bytes, np.uint8)
    images = np.stack([d.image, random_quantized_image(d.cfg, 9)])
    d.lib.top(2, 1, 0, depth, d.packed, scratch, pack_images(d.cfg, images), out)
    tokens = unpack_tokens(d.cfg, out, 2)
    for img, got in zip(images, tokens, strict=True):
        np.testing.assert_array_equal(got, d.golden.run(img, 1, taps=False).tokens)
    g = d.golden.run(images[1], 1)  # the scratch holds the last image's last block
    for tap in ("norm1", "qkv", "attn", "attn_res", "norm2", "logits", "mlp", "out"):
        name = f"block{depth - 1}.{tap}"
        np.testing.assert_array_equal(sl.tap_region(name).read(scratch), g.taps[name], err_msg=name)


# ------------------------------------------------------------------------------------------ argument guards
U32_MAX = 0xFFFF_FFFF


def expected_status(cfg: DesignConfig, flags: dict[str, int], n: int, task: int, first: int, last: int) -> int:
    """The causes a call must be refused for, transcribed from the requirement (images in [1, MAX_IMAGES],
    task < number of tasks, both layers ≤ depth, first ≤ last), as bits of register_map.json's ``flags``."""
    depth, tasks = cfg.model.depth, len(cfg.model.tasks)
    causes = [name for name, bad in (("images", n < 1 or n > MAX_IMAGES), ("task", task >= tasks),
                                     ("first_layer", first > depth), ("last_layer", last > depth),
                                     ("layer_order", first > last)) if bad]
    return sum(1 << flags[c] for c in causes)


def _bad_calls(cfg: DesignConfig) -> list[tuple[int, int, int, int]]:
    """One call per class of out-of-range argument (edges: max + 1 and the largest 32-bit value), and all at once."""
    depth, tasks = cfg.model.depth, len(cfg.model.tasks)
    return [
        (0, 0, 0, depth), (MAX_IMAGES + 1, 0, 0, depth), (U32_MAX, 0, 0, depth),
        (1, tasks, 0, depth), (1, U32_MAX, 0, depth),
        (1, 0, depth + 1, depth + 1), (1, 0, U32_MAX, depth),
        (1, 0, 0, depth + 1), (1, 0, 1, U32_MAX),
        (1, 0, 3, 2), (1, 0, depth, 0),
        (0, tasks, depth + 1, depth),
    ]


def test_kernel_refuses_out_of_range_calls_touching_no_memory(designs) -> None:
    """Every class of bad argument: the C-simulated kernel's status is exactly the expected causes and the
    weight, scratch, input and output buffers are byte-identical before and after; a good call then runs."""
    d = designs("tiny")
    flags = RegisterMap.load(d.project / "register_map.json").flags("status")
    assert d.lib.sizes["max_images"] == MAX_IMAGES and d.lib.sizes["tasks"] == len(d.cfg.model.tasks)
    sl = scratch_layout(d.cfg)
    rng = np.random.default_rng(5)
    scratch = rng.integers(0, 256, sl.total_bytes, dtype=np.uint8)
    for n, task, first, last in _bad_calls(d.cfg):
        want = expected_status(d.cfg, flags, n, task, first, last)
        assert want, (n, task, first, last)
        images = max(1, min(n, MAX_IMAGES))
        stride = sl.image_bytes if first == 0 else sl.token_bytes
        inp = rng.integers(0, 256, images * stride, dtype=np.uint8)
        out = rng.integers(0, 256, images * sl.token_bytes, dtype=np.uint8)
        weights, before = d.packed.copy(), [scratch.copy(), inp.copy(), out.copy()]
        status = d.lib.top(n, task, first, last, weights, scratch, inp, out)
        assert status == want, f"{(n, task, first, last)}: status 0x{status:x}, expected 0x{want:x}"
        for name, was, now in zip(("scratch", "input", "output"), before, (scratch, inp, out), strict=True):
            assert np.array_equal(was, now), f"{(n, task, first, last)}: the refused call changed {name}"
        assert np.array_equal(weights, d.packed)
    # the same check can fail: a good call (status 0) writes the output and the scratch
    out = rng.integers(0, 256, sl.token_bytes, dtype=np.uint8)
    before = scratch.copy()
    assert d.lib.top(1, 1, 0, d.cfg.model.depth, d.packed, scratch, pack_images(d.cfg, d.image), out) == 0
    np.testing.assert_array_equal(unpack_tokens(d.cfg, out, 1)[0], d.golden.run(d.image, 1, taps=False).tokens)
    assert not np.array_equal(before, scratch)
    with pytest.raises(CsimError, match=r"refused the call \(status 0x2\): task = 2 is outside \[0, 1\]"):
        d.lib.call(1, 2, 0, 1, pack_images(d.cfg, d.image))
    with pytest.raises(ValueError, match="does not fit its 32-bit register"):
        d.lib.call(1, 1 << 32, 0, 1, pack_images(d.cfg, d.image))


def _twin_status(dev: SimulatedDevice, regmap: RegisterMap, n: int, task: int, first: int, last: int) -> int:
    """One call through the twin's registers: write the scalars, ap_start, wait for idle, read ``status``."""
    for name, value in (("num_images", n), ("task", task), ("first_layer", first), ("last_layer", last)):
        dev.write(regmap.offset(name), value)
    dev.write(CTRL, AP_START)
    dev._thread.join()  # the twin runs the kernel on a thread; no polling needed here
    assert dev.read(CTRL) & AP_IDLE and dev.error is None, dev.error
    return dev.read(regmap.offset("status"))


def test_twin_and_csim_guards_agree(designs) -> None:
    """On a grid of (num_images, task, first_layer, last_layer) with edges 0, max, max + 1 and 2^32 - 1, the
    digital twin's guard (Python, before it maps memory) and the C-simulated kernel's give the same status,
    bit for bit, and both equal the expected causes; the twin leaves device memory untouched when it refuses."""
    d = designs("tiny")
    depth, tasks = d.cfg.model.depth, len(d.cfg.model.tasks)
    regmap = RegisterMap.load(d.project / "register_map.json")
    flags = regmap.flags("status")
    dev = SimulatedDevice(csim_kernel(d.lib, regmap))
    sl = scratch_layout(d.cfg)
    buffers = {"weights": d.packed.size, "scratch": sl.total_bytes,
               "input": MAX_IMAGES * max(sl.image_bytes, sl.token_bytes), "output": MAX_IMAGES * sl.token_bytes}
    for name, size in buffers.items():
        buf = dev.allocate((size,), np.uint8)
        if name == "weights":
            buf[:] = d.packed
            buf.flush()
        for i, word in enumerate((buf.device_address & U32_MAX, buf.device_address >> 32)):
            dev.write(regmap.args[name]["data_offsets"][i], word)
    grid = [(n, t, f, la) for n in (0, 1, MAX_IMAGES, MAX_IMAGES + 1, U32_MAX) for t in (0, tasks - 1, tasks, U32_MAX)
            for f in (0, 1, depth, depth + 1, U32_MAX) for la in (0, depth, depth + 1)]
    refused = 0
    for n, task, first, last in grid:
        want = expected_status(d.cfg, flags, n, task, first, last)
        memory = {a: b.copy() for a, b in dev.memory.blocks.items()}
        twin = _twin_status(dev, regmap, n, task, first, last)
        if want:
            assert all(np.array_equal(memory[a], b) for a, b in dev.memory.blocks.items()), (n, task, first, last)
            refused += 1
        images = max(1, min(n, MAX_IMAGES))
        inp = np.zeros(images * (sl.image_bytes if first == 0 else sl.token_bytes), np.uint8)
        csim = d.lib.top(n, task, first, last, d.packed, np.zeros(sl.total_bytes, np.uint8), inp,
                         np.zeros(images * sl.token_bytes, np.uint8))
        assert (twin, csim) == (want, want), f"{(n, task, first, last)}: twin 0x{twin:x}, C-sim 0x{csim:x}, " \
                                             f"expected 0x{want:x}"
    assert 0 < refused < len(grid)



def test_odd_tiles(designs) -> None:
    d = designs("tiny", **ODD_TILES)
    for task in d.cfg.model.task_names:
        assert_bit_exact(d, task)


@pytest.mark.parametrize(
    "preset",
    ["vit_tiny_cityscapes", "m3vit_small_pascal", "m3vit_small_nyud", "m3vit_small_pascal_dse", "m3vit_small_nyud_dse"],
)
def test_presets_reduced(designs, preset) -> None:
    d = designs(preset, **REDUCED)
    assert d.cfg.model.is_moe(1)
    for task in d.cfg.model.task_names:
        assert_bit_exact(d, task)


def _stress_model(d: Design) -> QuantizedModel:
    """Biases at the edge of their format so that act, qkv, hidden, logit and score values saturate."""
    q = random_model(d.cfg, 3)
    big = (1 << (d.cfg.numerics.bias_bits - 1)) - 1
    dim = d.cfg.model.dim
    b0 = q.blocks[0]
    b0.norm1.gamma[::3] = (1 << (d.cfg.numerics.ln_param.bits - 1)) - 1  # LayerNorm output saturates
    b0.qkv.b[:dim:2] = big  # q and k saturate (qkv) in the same lanes → saturated scores
    b0.qkv.b[dim : 2 * dim : 2] = big
    b0.proj.b[::5] = big  # proj output saturates (act)
    b0.fc1.b[::4] = big  # hidden saturates
    q.blocks[1].experts.router_b[:, 2] = big  # expert 2's logit saturates for every token
    q.blocks[1].experts.b2[:, ::7] = -big
    return q


def test_saturation_every_class(designs) -> None:
    d = designs("tiny", **STRESS)
    d = d.rebuild(_stress_model(d))
    rng = np.random.default_rng(5)
    image = rng.integers(-4000, 4000, d.image.shape)  # outside the 12-bit input format
    g = assert_bit_exact(d, 0, image)
    classes = {cls for counts in g.saturation.values() for cls in counts}
    assert classes >= {"input", "act", "norm", "qkv", "hidden", "logit", "score"}, classes


# ------------------------------------------------------------------------------------- routing edge cases
def _routed(d: Design, block_bias: dict[int, np.ndarray], zero_weights: bool = True) -> Design:
    """Router weights zeroed and per-expert logit biases set, so that the routing is chosen by the test."""
    q = random_model(d.cfg, 0)
    for b, bias in block_bias.items():
        ex = q.blocks[b].experts
        if zero_weights:
            ex.router_w[...] = 0
        ex.router_b[...] = bias
    return d.rebuild(q)


def test_one_expert_receives_every_token(designs) -> None:
    d = designs("tiny")
    e = d.cfg.model.num_experts
    bias = np.zeros(e, np.int64)
    bias[5] = 1 << 20  # expert 5 first for every token; the rest tie → expert 0 second
    d = _routed(d, {1: bias, 3: bias})
    for task in d.cfg.model.task_names:
        g = assert_bit_exact(d, task)
        load = g.routing[1].load
        assert load[5] == d.cfg.model.num_tokens and load[0] == d.cfg.model.num_tokens
        assert load.sum() == d.cfg.model.num_tokens * d.cfg.model.top_k


def test_all_experts_but_one_empty(designs) -> None:
    d = designs("tiny", **{"model.top_k": 1})
    bias = np.zeros(d.cfg.model.num_experts, np.int64)
    bias[-1] = 1 << 22
    d = _routed(d, {1: bias, 3: bias})
    g = assert_bit_exact(d, 0)
    for b in (1, 3):
        assert np.count_nonzero(g.routing[b].load) == 1 and g.routing[b].load[-1] == d.cfg.model.num_tokens


def test_tied_logits(designs) -> None:
    d = designs("tiny")
    zero = np.zeros(d.cfg.model.num_experts, np.int64)
    d = _routed(d, {1: zero, 3: zero})
    g = assert_bit_exact(d, 1)
    k = d.cfg.model.top_k
    assert (g.routing[1].experts == np.arange(k)).all(), "ties go to the lower expert index"
    assert (g.routing[1].gates == g.routing[1].gates[0, 0]).all()


def test_partial_ties_and_saturated_logits(designs) -> None:
    """Pairs of equal logits among distinct ones, and logits clamped to the format's maximum."""
    d = designs("tiny")
    e = d.cfg.model.num_experts
    big = (1 << (d.cfg.numerics.bias_bits - 1)) - 1
    bias = np.array([(i // 2) << 18 for i in range(e)], np.int64)
    d1 = _routed(d, {1: bias, 3: bias})
    assert_bit_exact(d1, 0)
    sat = np.zeros(e, np.int64)
    sat[[1, 6]] = big
    d2 = _routed(d, {1: sat, 3: sat}, zero_weights=False)
    g = assert_bit_exact(d2, 0)
    assert g.saturation["block1"]["logit"] >= 2 * d.cfg.model.num_tokens


# ------------------------------------------------------------------------------------------ testbench
def test_standalone_testbench_ap_types(designs) -> None:
    """The generated testbench, built with the ap_int types Vitis synthesises, compares every tap."""
    d = designs("tiny")
    cases = [(f"t{t}", t, d.image, d.golden.run(d.image, t)) for t in range(len(d.cfg.model.tasks))]
    data = write_testbench_data(d.project, d.cfg, d.packed, cases)
    tb = build_testbench(d.project, native=False)
    proc = run_testbench(tb, data)
    assert proc.returncode == 0, proc.stdout[-2000:]
    n_taps = sum(len(c[3].taps) for c in cases)
    # every tap and output of every case, and the refused call of an out-of-range task (status bit "task")
    assert f"PASS: {n_taps + len(cases) + 1} comparisons in {len(cases)} cases, 0 failed" in proc.stdout
    tasks, task_bit = len(d.cfg.model.tasks), RegisterMap.load(d.project / "register_map.json").flags("status")["task"]
    assert f"task {tasks} (out of range): status 0x{1 << task_bit:x}, output untouched: ok" in proc.stdout
    # a corrupted golden file must fail
    path = data / "t0" / "block1.mlp.bin"
    raw = bytearray(path.read_bytes())
    raw[0] ^= 1
    path.write_bytes(bytes(raw))
    proc = run_testbench(tb, data)
    assert proc.returncode == 1 and "block1.mlp" in proc.stdout


def test_cosim_runs_what_can_finish(designs, tmp_path) -> None:
    """run_hls.tcl co-simulates tiny whole and a full-size DSE design through its embedding only; the
    testbench's --through L compares layer L's taps after one call over layers 0 … L."""
    d = designs("tiny")
    assert 'cosim_design -O -argv "$data --no-layers"' in (d.project / "run_hls.tcl").read_text()
    big = generate_project(load_config("m3vit_small_pascal_dse"), tmp_path / "big")
    assert 'cosim_design -O -argv "$data --through 0"' in (big / "run_hls.tcl").read_text()
    cases = [("t0", 0, d.image, d.golden.run(d.image, 0))]
    data = write_testbench_data(d.project, d.cfg, d.packed, cases)
    tb = build_testbench(d.project)
    proc = run_testbench(tb, data, through=1)
    assert proc.returncode == 0 and "layers 0 … 1 in one call: ok" in proc.stdout, proc.stdout[-2000:]
    n_taps = sum(1 for name in cases[0][3].taps if name.startswith("block0."))
    assert f"PASS: {n_taps + 1} comparisons" in proc.stdout, proc.stdout[-500:]
    path = data / "t0" / "block0.out.bin"  # a corrupted tap of layer 1 must fail
    raw = bytearray(path.read_bytes())
    raw[0] ^= 1
    path.write_bytes(bytes(raw))
    proc = run_testbench(tb, data, through=1)
    assert proc.returncode == 1 and "FAIL" in proc.stdout
    assert run_testbench(tb, data, through=9).returncode == 2


def test_dse_preset_with_ap_types(designs) -> None:
    """The 8-bit DSE design compiled with Vitis' real ap_int widths (not native containers): still exact."""
    d = designs("m3vit_small_pascal_dse", **REDUCED)
    lib = build_csim(d.project, native=False, cfg=d.cfg)
    ap = Design(d.cfg, d.project, lib, d.qmodel, d.packed, d.golden, d.image)
    assert_bit_exact(ap, 0)


# ------------------------------------------------------------------------------------------ slow
@pytest.mark.slow
def test_tiny_ap_types_library(designs) -> None:
    d = designs("tiny")
    lib = build_csim(d.project, native=False, cfg=d.cfg)
    ap = Design(d.cfg, d.project, lib, d.qmodel, d.packed, d.golden, d.image)
    for task in d.cfg.model.task_names:
        assert_bit_exact(ap, task)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["vit_tiny_cityscapes", "m3vit_small_nyud"])
def test_presets_full_depth_reduced_image(designs, preset) -> None:
    d = designs(preset, **{"model.image_size": [64, 64]})
    for task in d.cfg.model.task_names:
        assert_bit_exact(d, task)


@pytest.mark.slow
def test_pascal_full_size_one_task(designs) -> None:
    d = designs("m3vit_small_pascal")
    g = d.golden.run(d.image, 0, taps=False)
    res = d.lib.run(d.packed, d.image, 0)
    np.testing.assert_array_equal(res.tokens, g.tokens)
    assert res.saturation == g.saturation
    _check_expert_loads(d, g, res.expert_loads)


def test_repo_hls_headers_are_copied(tmp_path) -> None:
    out = generate_project(load_config("tiny"), tmp_path / "p")
    for h in KERNEL_HEADERS:
        assert (out / "src" / h).read_bytes() == (REPO_ROOT / "hls" / h).read_bytes()


def test_baseline_project_takes_a_revisions_hls_files(tmp_path) -> None:
    """The benchmark's baseline (sim.csim.baseline_project): hls/ files as git has them at a revision (here
    the oldest one with hls/, read with `git cat-file`), today's copy where that revision lacks a file, generated files
    untouched; a revision that does not exist is refused by name."""
    project = generate_project(load_config("tiny"), tmp_path / "p")
    git = ["git", "-C", str(REPO_ROOT)]
    root = subprocess.run([*git, "log", "--reverse", "--format=%H", "--", "hls/m3vit_types.h"], capture_output=True,
                          text=True, check=True).stdout.split()[0]  # the oldest revision with a kernel
    base = baseline_project(project, root, tmp_path / "base")
    files = [("src", h) for h in KERNEL_HEADERS] + [("tb", h) for h in (CSIM_API, *CSIM_HEADERS)]
    differ = 0
    for folder, name in files:
        old = subprocess.run([*git, "cat-file", "blob", f"{root}:hls/{name}"], capture_output=True)
        want = old.stdout if old.returncode == 0 else (project / folder / name).read_bytes()
        assert (base / folder / name).read_bytes() == want, name
        differ += want != (project / folder / name).read_bytes()
    assert differ > 0  # the oldest revision's kernel is not today's
    for name in ("src/m3vit_config.h", "src/m3vit_top.cpp", "weight_layout.json"):
        assert (base / name).read_bytes() == (project / name).read_bytes()
    with pytest.raises(CsimError, match="'no-such-rev' is not a git revision"):
        baseline_project(project, "no-such-rev", tmp_path / "bad")
