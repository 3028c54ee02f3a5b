"""The generated MoE unit against the golden model (``GoldenModel.moe_expert_by_expert``), bit for bit.

Each simulation runs several cases through one compiled model (m3vit.sim.rtl.moe_unit_tb checks outputs,
counters and the return to idle, and raises on any difference). Fast tests cover ``tiny`` and the
``vit_tiny_cityscapes`` dimensions on Verilator and a small ``tiny`` variant on Icarus; the slow ones run
the full edge-case set at cityscapes size and the memory-profile sweep.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from m3vit import package_dir
from m3vit.codegen.config import load_config, with_overrides
from m3vit.codegen.numerics import constants
from m3vit.codegen.rtl import (
    ERROR_BITS,
    MODULES,
    RtlError,
    RtlKnobs,
    moe_layout,
    pack_experts,
    pack_queues,
    pack_token_rows,
    render_gelu_mem,
    render_moe_unit,
    unpack_out,
    used_expert_weight_bytes,
)
from m3vit.sim.golden import Routing
from m3vit.sim.rtl.runner import (
    PROFILES,
    CaseSet,
    SimulationFailedError,
    balanced_routing,
    build_cases,
    golden_moe,
    random_tokens,
    run_moe_bench,
    summarize,
)
from m3vit.sim.rtl.runner import Case as MoeCase


def _check(results: dict, layout: dict) -> dict:
    s = summarize(results, layout)
    assert s["all_bit_exact"] and s["all_checks_passed"], json.dumps(s, indent=1)
    assert s["weight_bytes_exact"]
    return s


# ------------------------------------------------------------------------------------------- layout
def test_register_map_follows_vitis_rules() -> None:
    regmap = moe_layout(load_config("tiny"))["registers"]
    regs = {**regmap["control"], **{a["name"]: a for a in regmap["args"]}}
    assert [regs[n]["offset"] for n in ("ap_ctrl", "gie", "ier", "isr")] == [0x00, 0x04, 0x08, 0x0C]
    assert regs["num_tokens"]["offset"] == 0x10  # 32-bit scalar: 8 bytes
    assert [regs[p]["offset"] for p in ("x", "queues", "weights", "out")] == [
        0x18,
        0x24,
        0x30,
        0x3C,
    ]  # 12 each
    assert regs["busy_cycles"]["offset"] == 0x48 and regs["busy_cycles"]["output"]
    assert regs["ap_ctrl"]["bits"] == {
        "ap_start": 0,
        "ap_done": 1,
        "ap_idle": 2,
        "ap_ready": 3,
        "auto_restart": 7,
    }


def test_weight_buffer_is_two_experts_whatever_n() -> None:
    cfg = load_config("vit_tiny_cityscapes")
    bits = {
        n: moe_layout(with_overrides(cfg, **{"model.num_experts": n}))["on_chip"]["weight_buffer_bits"]
        for n in (8, 16, 32, 64)
    }
    m = cfg.model
    one_expert = 2 * m.dim * m.expert_hidden * 8 + (m.dim + m.expert_hidden) * 32
    assert set(bits.values()) == {2 * one_expert}


def test_layout_regions_are_bus_aligned_and_packers_round_trip() -> None:
    cfg = load_config("tiny")
    lay = moe_layout(cfg)
    bus = lay["params"]["bus_bytes"]
    ex = lay["regions"]["experts"]
    assert ex["stride_bytes"] % bus == 0 and all(f["offset"] % bus == 0 for f in ex["fields"])
    rng = np.random.default_rng(0)
    m = cfg.model
    e, d, h = m.num_experts, m.dim, m.expert_hidden
    w1, w2 = rng.integers(-128, 128, (e, h, d)), rng.integers(-128, 128, (e, d, h))
    b1, b2 = rng.integers(-(1 << 31), 1 << 31, (e, h)), rng.integers(-(1 << 31), 1 << 31, (e, d))
    blob = pack_experts(lay, w1, b1, w2, b2)
    mo, mi = lay["params"]["mac_out"], lay["params"]["mac_in"]
    # element (o, i) of w1 sits in tile (o // mo, i // mi), row o % mo, column i % mi
    o, i = 37, 21
    tile = (o // mo) * (d // mi) + i // mi
    field = {f["name"]: f for f in ex["fields"]}
    assert [f["name"] for f in ex["fields"]] == ["b1", "w1", "b2", "w2"]  # each bias ahead of its weights
    off = field["w1"]["offset"] + tile * mo * mi + (o % mo) * mi + i % mi
    assert np.int8(blob[off]) == w1[0, o, i]
    b1_off = field["b1"]["offset"] + ex["stride_bytes"] * 3
    assert int.from_bytes(blob[b1_off : b1_off + 4], "little", signed=True) == b1[3, 0]
    x = random_tokens(cfg, rng, 5)
    assert pack_token_rows(lay, x) == x.astype("<i2").tobytes()
    assert np.array_equal(unpack_out(lay, x.astype("<i2").tobytes(), 5), x)
    experts, gates = np.array([[1, 2], [2, 0]]), np.array([[100, 32768], [7, 9]])
    r = Routing(experts=experts, gates=gates, logits=np.zeros((2, e)))
    q = pack_queues(lay, [r.queue(k) for k in range(e)])
    ent = lay["regions"]["queues"]["entries"]
    assert int.from_bytes(q[8:12], "little") == 2  # expert 2 has tokens 0 and 1
    start = ent["offset"] + 2 * ent["stride_bytes"]
    assert [int.from_bytes(q[start + 4 * j : start + 4 * j + 4], "little") for j in range(2)] == [
        (0 << 16) | 32768,
        (1 << 16) | 7,
    ]
    assert used_expert_weight_bytes(lay, [1, 0, 2]) == 2 * ex["bytes_per_expert"]


def test_sizes_that_do_not_tile_are_rejected() -> None:
    cfg = load_config("tiny")
    with pytest.raises(RtlError, match="mac_in"):
        moe_layout(cfg, RtlKnobs(mac_in=24))
    with pytest.raises(RtlError, match="axi_data_bits"):
        moe_layout(cfg, RtlKnobs(mac_in=4, mac_out=4))


def test_hidden_ring_knob_is_checked_and_sized() -> None:
    """The ring must be a power of two ≥ 2; the derived one holds enough tokens for their fc1 work to cover the
    b2/w2 fetch."""
    cfg = load_config("vit_tiny_cityscapes")
    for bad in (1, 3, 48):
        with pytest.raises(RtlError, match="hidden_ring"):
            moe_layout(cfg, RtlKnobs(hidden_ring=bad))
    with pytest.raises(RtlError, match="divide the other"):  # 48 and 64 both tile dim 192 and hidden 384
        moe_layout(cfg, RtlKnobs(mac_in=48, mac_out=64))
    for bits in (128, 512):
        lay = moe_layout(cfg, RtlKnobs(axi_data_bits=bits))
        p = lay["params"]
        ring = p["hidden_ring"]
        w2_beats = sum(f["bytes"] for f in lay["regions"]["experts"]["fields"] if f["name"] in ("w2", "b2"))
        w2_beats //= p["bus_bytes"]
        fc1_pass = p["tiles"]["fc1"][0] * p["tiles"]["fc1"][1]
        assert ring & (ring - 1) == 0 and 2 <= ring <= 32
        assert (ring - 2) * fc1_pass >= w2_beats or ring == 32
        assert lay["on_chip"]["hidden_buffer_bits"] == ring * p["hidden"] * cfg.numerics.hidden.bits


def test_counter_widths_follow_the_array() -> None:
    """A 64×64 array on a 64-bit bus needs 512 beats per weight tile: the beat counters must hold that."""
    cfg = load_config("tiny")
    knobs = RtlKnobs(mac_in=64, mac_out=64, axi_data_bits=64)
    sv = render_moe_unit(cfg, moe_layout(cfg, knobs))
    assert "BPT = 512," in sv and "SUBW = 10;" in sv and "SATW = 7;" in sv


def test_gelu_table_and_shifts_come_from_numerics() -> None:
    cfg = load_config("tiny")
    lay = moe_layout(cfg)
    sv = render_moe_unit(cfg, lay)
    mem = render_gelu_mem(cfg, lay).splitlines()
    g = constants(cfg).gelu
    hb = cfg.numerics.hidden.bits
    mask = (1 << hb) - 1
    assert len(mem) == 1 << cfg.numerics.gelu_segments_log2 == len(g.values) - 1
    for i in (0, 1, len(g.values) // 2, len(g.values) - 2):
        pair = ((g.values[i + 1] & mask) << hb) | (g.values[i] & mask)
        assert int(mem[i], 16) == pair and len(mem[i]) == 2 * hb // 4
    assert f"LO = {g.lo};" in sv and f"HI = {g.hi};" in sv
    modules = [(package_dir("m3vit.rtl") / m).read_text() for m in MODULES]
    assert not any(p in text for text in (sv, *modules) for p in ("RAMB", "DSP48", "FDRE", "LUT6", "(* ram_style"))


# ------------------------------------------------------------------------------------------- simulation
@pytest.mark.cocotb
def test_tiny_bit_exact_verilator(moe_build) -> None:
    """tiny (16×16 MACs, 128-bit AXI): model routings, random routings and every edge case."""
    b = moe_build("tiny")
    cases = build_cases(load_config("tiny"), seed=1, real=2, rand=3, edge=True)
    results = run_moe_bench(b, cases, PROFILES["zcu104"], "pytest_tiny")
    s = _check(results, b.layout)
    labels = {c["label"] for c in s["per_case"]}
    assert {"all_tokens_one_expert", "all_experts_but_one_empty", "single_token", "no_tokens"} <= labels
    # ping-pong: expert 2's weights stream in while expert 1 computes. Serialised, the expert phase would
    # last at least every fetch plus every compute; overlapped it saves about one of them. The expert phase
    # also holds the token load (after expert 1's weights), which both bounds count.
    (same,) = [c for c in results["cases"] if c["label"] == "same_k_experts_all_tokens"]
    k = same["counters"]
    bus = b.layout["params"]["bus_bytes"]
    fetch_cycles = k["weight_bytes_read"] // bus
    x_cycles = same["num_tokens"] * b.layout["regions"]["tokens"]["row_bytes"] // bus
    assert k["experts_used"] == 2
    serial = fetch_cycles + x_cycles + k["mac_cycles"]  # fetch e0, load x, compute e0, fetch e1, compute e1
    overlapped = fetch_cycles // 2 + x_cycles + k["mac_cycles"] + 4 * PROFILES["zcu104"].latency + 128
    assert overlapped < serial
    assert k["expert_phase_cycles"] < overlapped, (k["expert_phase_cycles"], overlapped, serial)


@pytest.mark.cocotb
def test_cityscapes_bit_exact_verilator(moe_build) -> None:
    """vit_tiny_cityscapes dimensions (dim 192, hidden 384, 16 experts, 129 tokens) on the 32×32 array."""
    cfg = load_config("vit_tiny_cityscapes")
    b = moe_build("vit_tiny_cityscapes")
    cases = build_cases(cfg, seed=2, real=1, rand=2, edge=True)
    keep = ("random", "img", "single_token", "all_experts_but_one_empty", "no_tokens")
    cases.cases = [c for c in cases.cases if c.label.startswith(keep)]  # the full edge set runs when slow
    _check(run_moe_bench(b, cases, PROFILES["zcu104"], "pytest_cityscapes"), b.layout)


@pytest.mark.cocotb
@pytest.mark.parametrize(("mac_in", "mac_out", "ring"), [(8, 16, 2), (16, 8, None)])
def test_banked_hidden_ring_bit_exact(moe_build, mac_in: int, mac_out: int, ring: int | None) -> None:
    """Unequal arrays bank the hidden ring (fc1 writes mac_out, fc2 reads mac_in elements); a ring of two
    hidden vectors (fc1 at most two tokens ahead of fc2) still gives the same result."""
    cfg = load_config("tiny")
    knobs = {"mac_in": mac_in, "mac_out": mac_out} | ({"hidden_ring": ring} if ring else {})
    b = moe_build("tiny", **knobs)
    assert b.layout["params"]["hidden_ring"] == (ring or b.layout["params"]["hidden_ring"]) >= 2
    cases = build_cases(cfg, seed=8, real=1, rand=2, edge=True)
    _check(run_moe_bench(b, cases, PROFILES["zcu104"], f"pytest_banked_{mac_in}x{mac_out}"), b.layout)


@pytest.mark.cocotb
def test_tiny_bit_exact_icarus(moe_build) -> None:
    """The same RTL on Icarus (8×8 MACs to keep the 4-state simulation short); skipped without iverilog."""
    cfg = load_config("tiny")
    b = moe_build("tiny", "icarus", mac_in=8, mac_out=8)
    rng = np.random.default_rng(3)
    full = build_cases(cfg, seed=3, real=0, rand=0, edge=True)
    cases = [c for c in full.cases if c.label in ("single_token", "no_tokens")]
    x = random_tokens(cfg, rng, 3)
    experts, gates = balanced_routing(cfg, 3, 3, rng)
    extra = MoeCase("three_tokens_three_experts", x, experts, gates, weight_set=len(full.weight_sets) - 1)
    extra.expected, extra.sat_hidden, extra.sat_act = golden_moe(cfg, full.weight_sets[-1], x, experts, gates)
    cs = CaseSet(weight_sets=full.weight_sets, cases=[*cases, extra])
    _check(run_moe_bench(b, cs, PROFILES["ideal"], "pytest_icarus"), b.layout)


@pytest.mark.cocotb
def test_memory_latency_and_backpressure(moe_build) -> None:
    """Long read latency and half bandwidth (R beats paused) change timing, never the result."""
    cfg = load_config("tiny")
    b = moe_build("tiny")
    cases = build_cases(cfg, seed=4, real=0, rand=2, edge=False)
    fast = _check(run_moe_bench(b, cases, PROFILES["ideal"], "pytest_ideal"), b.layout)
    slow = _check(run_moe_bench(b, cases, PROFILES["congested"], "pytest_congested"), b.layout)
    assert slow["total_cycles"] > fast["total_cycles"]
    assert slow["mac_cycles"] == fast["mac_cycles"]  # the MAC schedule is the same, only stalls grow


@pytest.mark.cocotb
def test_bad_input_is_flagged_and_corrupts_nothing(moe_build) -> None:
    """num_tokens above the capacity, a count table entry above it, queue entries past num_tokens: the unit
    clamps or drops, sets the matching ``errors`` bit, finishes, and every row it owns is still exact."""
    cfg = load_config("tiny")
    b = moe_build("tiny")
    tmax = b.layout["params"]["max_tokens"]
    rng = np.random.default_rng(9)
    base = build_cases(cfg, seed=9, real=0, rand=0, edge=False)
    ws = base.weight_sets[0]

    def case(label: str, t: int, **bad) -> MoeCase:
        x = random_tokens(cfg, rng, t)
        experts, gates = balanced_routing(cfg, t, 4, rng)
        c = MoeCase(label, x, experts, gates, **bad)
        c.expected, c.sat_hidden, c.sat_act = golden_moe(cfg, ws, x, experts, gates)
        return c

    bit = {k: 1 << v for k, v in ERROR_BITS.items()}
    over = case("num_tokens_above_capacity", tmax, num_tokens_reg=tmax + 5, errors=bit["num_tokens_clamped"])
    past = case("entries_past_num_tokens", 12, num_tokens_reg=9, errors=bit["token_out_of_range"])
    past.sat_hidden = past.sat_act = -1  # the dropped tokens were computed: their saturations count
    counts = case("count_above_capacity", 10, errors=bit["queue_count_clamped"])
    used = int(counts.experts[0, 0])
    counts.count_override = ((used, tmax + 100),)  # the padding entries read are token 0 with gate 0
    counts.sat_hidden = counts.sat_act = -1
    good = case("a_good_call_after_them", 11)
    res = run_moe_bench(b, CaseSet(weight_sets=[ws], cases=[over, past, counts, good]), PROFILES["zcu104"],
                        "pytest_bad_input")
    _check(res, b.layout)
    assert [c["counters"]["errors"] for c in res["cases"]] == [1, 4, 2, 0]


@pytest.mark.cocotb
def test_bench_fails_on_a_wrong_result(moe_build) -> None:
    """The bench is not vacuous: a one-lsb error in the expectation fails the simulation."""
    cfg = load_config("tiny")
    b = moe_build("tiny")
    cases = build_cases(cfg, seed=5, real=0, rand=0, edge=True)
    cases.cases = [c for c in cases.cases if c.label == "single_token"]
    cases.cases[0].expected = cases.cases[0].expected.copy()
    cases.cases[0].expected[0, 3] += 1
    with pytest.raises(SimulationFailedError, match="output_bit_exact"):
        run_moe_bench(b, cases, PROFILES["ideal"], "pytest_mutant")


@pytest.mark.slow
@pytest.mark.cocotb
def test_cityscapes_all_edge_cases_and_routings(moe_build) -> None:
    """Every edge case and three model routings at cityscapes size, on a congested memory."""
    cfg = load_config("vit_tiny_cityscapes")
    b = moe_build("vit_tiny_cityscapes")
    cases = build_cases(cfg, seed=6, real=3, rand=3, edge=True)
    _check(run_moe_bench(b, cases, PROFILES["congested"], "pytest_cityscapes_full"), b.layout)


@pytest.mark.slow
@pytest.mark.cocotb
def test_wide_bus_and_token_capacity_variant(moe_build) -> None:
    """Another generated variant: 512-bit AXI, 32×32 MAC array, capacity of 64 tokens (several images)."""
    cfg = load_config("tiny")
    b = moe_build("tiny", axi_data_bits=512, mac_out=32, mac_in=32, max_tokens=64)
    cases = build_cases(cfg, seed=7, real=0, rand=3, edge=True, max_tokens=64)
    _check(run_moe_bench(b, cases, PROFILES["zcu104"], "pytest_wide"), b.layout)
