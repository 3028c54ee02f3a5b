"""The analytic performance / resource / memory model (m3vit.codegen.perf): rules, invariants, reports."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from m3vit.codegen import perf
from m3vit.codegen.config import load_config, with_overrides

A8 = {"numerics.norm": {"bits": 8, "frac": 5}, "numerics.qkv": {"bits": 8, "frac": 5},
      "numerics.hidden": {"bits": 8, "frac": 4}}
"""8-bit MAC-array activations (the formats the DSE picks for M³ViT-S, cosine ≥ 0.99 at reduced size)."""


@pytest.fixture(scope="module")
def pascal():
    return load_config("m3vit_small_pascal")


@pytest.fixture(scope="module")
def pascal_a8(pascal):
    return with_overrides(pascal, **A8, **{"hardware.mac_out": 64, "hardware.token_tile": 32})


# ------------------------------------------------------------------------------------ rules
def test_dsp_packing_rule() -> None:
    assert perf.macs_per_dsp(8, 8) == 2
    assert perf.macs_per_dsp(4, 8) == 2
    assert perf.macs_per_dsp(8, 16) == 1  # 8-bit weights × 16-bit activations: one DSP per MAC
    assert perf.macs_per_dsp(16, 16) == 1
    assert perf.macs_per_dsp(27, 18) == 1
    assert perf.macs_per_dsp(8, perf.PROB_OPERAND_BITS) == 1  # attention probabilities never pack
    with pytest.raises(ValueError, match="27 x 18"):
        perf.macs_per_dsp(28, 19)


def test_packing_follows_the_formats(pascal, pascal_a8) -> None:
    assert not perf.array_packed(pascal)
    assert all(perf.op_rate_div(pascal, op) == 1 for op in perf.OPS)
    assert perf.array_packed(pascal_a8)
    assert perf.op_rate_div(pascal_a8, "attn_pv") == 2  # 17-bit p on a packed array: half rate
    assert perf.op_rate_div(pascal_a8, "patch_embed") == 2  # 16-bit input pixels
    assert perf.op_rate_div(pascal_a8, "expert_fc1") == perf.op_rate_div(pascal_a8, "attn_qk") == 1
    d = perf.dsp_by_unit(pascal_a8)
    assert d["mac_array"] == 32 * 64 // 2
    assert perf.dsp_by_unit(pascal)["mac_array"] == 32 * 32


def test_mac_counts_match_the_brief(pascal) -> None:
    """M³ViT-S on 1025 tokens is about 31.7 G MAC; top-4 of 16 quarter-size experts = one dense MLP."""
    macs = perf.mac_counts(pascal)
    assert sum(macs.values()) / 1e9 == pytest.approx(31.7, abs=0.1)
    m = pascal.model
    per_dense = macs["mlp_fc1"] / (m.depth - len(m.moe_block_set))
    per_moe = macs["expert_fc1"] / len(m.moe_block_set)
    assert per_dense == per_moe
    # the brief's DSP floor: ~61 ms on all 1,728 DSPs at one MAC per DSP
    assert perf.dsp_floor_s(pascal, 1728) * 1e3 == pytest.approx(61.3, abs=0.1)


def test_dsp_floor_formula(pascal_a8) -> None:
    """floor = Σ MACs_op / (DSPs × MACs-per-DSP_op × f_clk)."""
    f = pascal_a8.hardware.clock_mhz * 1e6
    macs = perf.mac_counts(pascal_a8)
    want = sum(n / perf.op_macs_per_dsp(pascal_a8, op) for op, n in macs.items()) / (1000 * f)
    assert perf.dsp_floor_s(pascal_a8, 1000) == pytest.approx(want, rel=1e-12)
    assert perf.op_macs_per_dsp(pascal_a8, "attn_pv") == 1 and perf.op_macs_per_dsp(pascal_a8, "qkv") == 2


# ------------------------------------------------------------------------------------ model invariants
@pytest.mark.parametrize("name", ["tiny", "vit_tiny_cityscapes", "m3vit_small_pascal", "m3vit_small_nyud"])
def test_latency_is_above_every_bound(name: str) -> None:
    cfg = load_config(name)
    rep = perf.evaluate(cfg)
    busy = rep.unit_busy()
    assert rep.cycles >= busy["mac"]  # the MAC array never does two things at once
    assert rep.cycles >= busy["dma_weights"]  # nor does the weight port
    assert rep.latency_ms > rep.dsp_floor_ms  # no design beats its DSP roofline
    assert 0 < rep.floor_ratio < 1
    assert rep.cycles == sum(e - s + st for s, e, st in zip(rep.timeline.start, rep.timeline.end,
                                                             rep.timeline.stall, strict=True))


def test_every_weight_is_read_once_per_image(pascal) -> None:
    """Balanced routing uses every expert: DDR weight bytes = the whole backbone's weights (one router)."""
    m = pascal.model
    d, f, e, ne = m.dim, m.mlp_hidden, m.expert_hidden, m.num_experts
    wb, bb = 1, 4
    total = d * m.patch_dim * wb + d * bb
    for b in range(m.depth):
        total += 4 * d * d * wb + 4 * d * bb  # qkv, proj
        if m.is_moe(b):
            total += ne * (2 * d * e * wb + (d + e) * bb) + ne * d * wb  # experts + this task's router
        else:
            total += 2 * d * f * wb + (f + d) * bb
    assert perf.evaluate(pascal).weight_ddr_bytes == total


def test_empty_experts_are_skipped(pascal_a8) -> None:
    m = pascal_a8.model
    t, k = m.num_tokens, m.top_k
    skewed = [t] * k + [0] * (m.num_experts - k)  # every token picks experts 0..K-1
    loads = dict.fromkeys(m.moe_block_set, skewed)
    rep = perf.evaluate(pascal_a8, loads)
    base = perf.evaluate(pascal_a8)
    assert base.weight_ddr_bytes - rep.weight_ddr_bytes == 6 * (m.num_experts - k) * perf.expert_bytes(pascal_a8)
    assert sum(s.kind == "expert" for s in rep.steps) == 6 * k
    with pytest.raises(ValueError, match="queue lengths"):
        perf.evaluate(pascal_a8, {1: [1] * m.num_experts})


def test_pruned_layer_loads_with_lower_top_k(tiny) -> None:
    """A pruned layer with K' = 1 (a single kept expert) queues T entries: one expert step of T tokens."""
    m = tiny.model
    t = m.num_tokens
    b = min(m.moe_block_set)
    rep = perf.evaluate(tiny, {b: [0, 0, t] + [0] * (m.num_experts - 3)})
    experts = [s for s in rep.steps if s.kind == "expert" and s.layer == f"block{b}"]
    assert [s.name for s in experts] == [f"block{b}.expert2"]
    assert rep.weight_ddr_bytes < perf.evaluate(tiny).weight_ddr_bytes
    rest = [0] * (m.num_experts - 1)
    for bad in ([t + 1, *rest], [1] * m.num_experts, [t * (m.top_k + 1), *rest]):
        with pytest.raises(ValueError, match="summing to T·K'"):
            perf.evaluate(tiny, {b: bad})


def test_timeline_recurrence_by_hand(tiny) -> None:
    """Three weight steps through two slots: the third load waits for the first step's compute."""
    load = perf.load_cycles(tiny, 1000)
    steps = [perf.Step(f"s{i}", "x", "kv", 1000, {"mac": c}, 0, 0) for i, c in enumerate((5 * load, 10, 10))]
    tl = perf.run_timeline(tiny, steps)
    assert tl.load_start == [0, load, 5 * load + load]  # slot 0 frees when step 0 ends (load + 5·load)
    assert tl.start == [load, 6 * load, 7 * load]
    assert tl.stall == [load, 0, load - 10]
    assert tl.total == 7 * load + 10


def test_on_chip_memory_is_independent_of_n_and_within_target(pascal_a8) -> None:
    for name in ("m3vit_small_pascal", "m3vit_small_nyud"):
        cfg = with_overrides(load_config(name), **A8, **{"hardware.mac_out": 64})
        mem = perf.on_chip_bytes(cfg)
        assert mem / perf.MIB <= 4.84
        t, k = cfg.model.num_tokens, cfg.model.top_k
        for n in (8, 32, 64):
            # only the queue tables (3 words per expert) and the expert index width (≤ 1 byte per T·K entry)
            grow = abs(perf.on_chip_bytes(with_overrides(cfg, **{"model.num_experts": n})) - mem)
            assert grow <= 3 * 4 * 64 + t * k, (name, n, grow)
    # the all-on-chip alternative grows with N
    assert perf.on_chip_bytes(pascal_a8, expert_slots=16) > perf.on_chip_bytes(pascal_a8)


def test_block_ram_mapping() -> None:
    assert perf.Buffer("a", 72 * 512, 72).bram36() == 1
    assert perf.Buffer("a", 36 * 1024, 36).bram36() == 1
    assert perf.Buffer("a", 144 * 512, 144).bram36() == 2  # width-bound
    assert perf.Buffer("a", 72 * 4096, 72).uram() == 1
    assert perf.Buffer("a", 72 * 4097, 72).uram() == 2
    assert perf.Buffer("a", 7 * 64, 7).lutram() == 8


def test_resources_fit_and_preset_choices(pascal, pascal_a8) -> None:
    r = perf.resources(pascal_a8)
    assert r.fits(pascal_a8.hardware.board_spec)
    assert r.dsp == sum(r.dsp_by_unit.values())
    assert set(r.placement.values()) <= {"bram", "uram", "lutram"}
    assert r.placement["backbone::st.kv.w"] == "uram"  # kv_or_acc
    util = r.utilisation(pascal_a8.hardware.board_spec)
    assert all(0 <= u <= perf.ARCH.util_limit for u in util.values())


def _naf_weight(c: int) -> int:
    """Non-zero digits of the non-adjacent form (the canonical signed-digit form), by the closed form
    popcount(3c XOR c) — the NAF's digits are the bits where c and 3c differ, halved in position — so the
    oracle does not share the digit-by-digit loop of ``perf.csd_digits``."""
    return bin((3 * abs(c)) ^ abs(c)).count("1")


def test_csd_digits() -> None:
    assert [perf.csd_digits(c) for c in (0, 1, 3, 7, 15)] == [0, 1, 2, 2, 2]
    assert perf.csd_digits(0b1010101) == 4
    for c in (47274, 8357, 11819, 0xFFFF, 12345):
        assert perf.csd_digits(c) == _naf_weight(c)


def test_weight_ports_and_bandwidth(pascal) -> None:
    bpc = perf.dma_bytes_per_cycle(pascal)
    assert bpc == pytest.approx(16 * perf.ARCH.axi_efficiency)  # one 128-bit HP port
    wide = with_overrides(pascal, **{"hardware.axi_data_bits": 512})
    assert perf.dma_bytes_per_cycle(wide) == bpc  # the HP port, not the m_axi width, is the limit
    assert perf.load_cycles(pascal, 0) == 0
    assert perf.load_cycles(pascal, 1600) == perf.ARCH.ddr_latency + math.ceil(1600 / bpc)
    # burst model: 2 bursts of 16 beats in flight cannot hide a 120-cycle latency
    few = dataclasses.replace(perf.ARCH, outstanding=2)
    assert perf.dma_bytes_per_cycle(pascal, few) == pytest.approx(bpc * 32 / (120 + 16))


# ------------------------------------------------------------------------------------ csynth reports
CSYNTH = """<profile>
  <ReportVersion><Version>2023.2</Version></ReportVersion>
  <UserAssignments><unit>ns</unit><Part>xczu7ev-ffvc1156-2-e</Part><TopModelName>m3vit_top</TopModelName>
    <TargetClockPeriod>3.33</TargetClockPeriod></UserAssignments>
  <PerformanceEstimates>
    <SummaryOfTimingAnalysis><unit>ns</unit><EstimatedClockPeriod>2.950</EstimatedClockPeriod></SummaryOfTimingAnalysis>
    <SummaryOfOverallLatency><Worst-caseLatency>1000 ~ 2000</Worst-caseLatency></SummaryOfOverallLatency>
    <SummaryOfLoopLatency>
      <ATT_GROUPS><TripCount>{qtiles}</TripCount><Latency>undef</Latency><IterationLatency>undef</IterationLatency>
        <ATT_BLOCKS><TripCount>{kb}</TripCount><Latency>3 ~ 70</Latency><PipelineII>1</PipelineII>
          <PipelineDepth>7</PipelineDepth></ATT_BLOCKS>
      </ATT_GROUPS>
      <MAC_PRELOAD_1><TripCount>{it}</TripCount><Latency>20</Latency><PipelineII>2</PipelineII>
        <PipelineDepth>9</PipelineDepth></MAC_PRELOAD_1>
      <VITIS_LOOP_12_1><TripCount>undef</TripCount></VITIS_LOOP_12_1>
    </SummaryOfLoopLatency>
  </PerformanceEstimates>
  <AreaEstimates><Resources><BRAM_18K>100</BRAM_18K><AVAIL_BRAM>624</AVAIL_BRAM><DSP>512</DSP><FF>9000</FF>
    <LUT>12000</LUT><URAM>8</URAM></Resources></AreaEstimates>
  <ModuleInformation><Module><Name>loader</Name><PerformanceEstimates><SummaryOfLoopLatency>
    <LOAD_W><TripCount>{lt}</TripCount><Latency>{lt}</Latency><PipelineII>1</PipelineII></LOAD_W>
  </SummaryOfLoopLatency></PerformanceEstimates></Module></ModuleInformation>
</profile>"""


def test_parse_and_compare_csynth(tmp_path: Path, tiny) -> None:
    m, hw = tiny.model, tiny.hardware
    groups = math.ceil(m.num_tokens / hw.mac_out)  # attention query groups
    blocks = math.ceil(m.num_tokens / hw.attn_key_block) + 1  # key blocks, software-pipelined: one more step
    tile_rows = hw.mac_out  # tiny: mac_out ≤ weight_reuse, one tile row per slot word → mac_out cycles
    # the K/V job's weights: out-tiles dim … 3·dim of the QKV matrix, all in-tiles, 8-bit lanes in AXI words
    lt = (2 * m.dim // hw.mac_out) * math.ceil(m.dim / hw.mac_in) * hw.mac_out * hw.mac_in * 8 // hw.axi_data_bits
    path = tmp_path / "csynth.xml"
    path.write_text(CSYNTH.format(qtiles=groups, kb=blocks, it=tile_rows, lt=lt))
    rep = perf.parse_csynth(path)
    assert rep.top == "m3vit_top" and rep.target_clock_ns == pytest.approx(3.33)
    assert rep.latency == (1000, 2000)
    assert rep.resources == {"BRAM_18K": 100, "DSP": 512, "FF": 9000, "LUT": 12000, "URAM": 8}
    names = {lp.path: lp for lp in rep.loops}
    assert names["ATT_GROUPS/ATT_BLOCKS"].trip_count == (blocks, blocks)
    assert names["ATT_GROUPS/ATT_BLOCKS"].ii == 1 and names["ATT_GROUPS/ATT_BLOCKS"].depth == 7
    assert names["VITIS_LOOP_12_1"].trip_count is None
    assert names["LOAD_W"].module == "loader"
    rows = {r.loop.name: r for r in perf.compare_csynth(tiny, rep)}
    assert set(rows) == {"ATT_GROUPS", "ATT_BLOCKS", "MAC_PRELOAD_1", "LOAD_W"}
    assert rows["ATT_GROUPS"].ok and rows["ATT_BLOCKS"].ok and rows["LOAD_W"].ok  # no II to compare for a loop
    assert rows["MAC_PRELOAD_1"].trip_ok and rows["MAC_PRELOAD_1"].ii_ok is False  # II 2 where the model says 1
    table = perf.format_csynth_comparison(list(rows.values()))
    assert "| loader | LOAD_W |" in table and "NO |" in table


# ------------------------------------------------------------------------------------ the RTL MoE unit
def _rtl_or_skip(config: str, profile: str, knobs: dict[str, int], **kw):
    pytest.importorskip("cocotb_tools")
    from m3vit.explore.bench_perf import rtl_vs_model
    from m3vit.sim.rtl.runner import prepare_simulator

    reason = prepare_simulator("verilator")
    if reason:
        pytest.skip(f"verilator: {reason}")
    return rtl_vs_model(config, profile, knobs, **kw)


def _model_agrees(c) -> None:
    """Busy cycles within 1 %, MAC cycles equal, stall cycles within 1 % of the busy cycles."""
    assert abs(c.error) <= 0.01, (c.label, c.measured, c.modeled)
    assert c.modeled.mac_cycles == c.measured["mac_cycles"]
    assert abs(c.modeled.stall_cycles - c.measured["stall_cycles"]) <= 0.01 * c.measured["busy_cycles"] + 2, (
        c.label, c.measured, c.modeled)


def test_moe_unit_model_matches_rtl_fast() -> None:
    """tiny on the 16×16 array, 128-bit AXI, ZCU104 memory profile: random routings and the edge cases."""
    cases = _rtl_or_skip("tiny", "zcu104", {}, seed=12, rand=2, edge=True)
    assert len(cases) >= 5
    for c in cases:
        _model_agrees(c)
    assert {"single_token", "all_tokens_one_expert", "no_tokens"} <= {c.label for c in cases}


def test_moe_unit_model_matches_rtl_late_tokens_and_many_waves() -> None:
    """128 tokens on tiny: the token rows go after the first expert's b2/w2 (fc1 waves take only the tokens
    whose rows are in) and an 8-vector ring splits each expert into several waves."""
    from m3vit.explore.bench_perf import RTL_VARIANTS

    config, profile, knobs = RTL_VARIANTS["tiny 16x16 axi128 T128 ring8"]
    cases = _rtl_or_skip(config, profile, knobs, seed=14, rand=2, edge=False)
    assert cases and all(max(c.counts) > knobs["hidden_ring"] for c in cases)
    for c in cases:
        _model_agrees(c)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["tiny 16x16 axi128 congested", "tiny 8x8 axi128 zcu104",
                                     "tiny 32x32 axi256 zcu104", "cityscapes 32x32 axi128 zcu104"])
def test_moe_unit_model_matches_rtl_sizes(variant: str) -> None:
    """Other array sizes, bus widths, a congested memory (long latency, half bandwidth) and model routings."""
    from m3vit.explore.bench_perf import RTL_VARIANTS
    from m3vit.sim.rtl.runner import build_cases

    config, profile, knobs = RTL_VARIANTS[variant]
    real = 1 if config == "vit_tiny_cityscapes" else 0
    cases = _rtl_or_skip(config, profile, knobs, seed=13, real=real)
    # every case the bench builds came back from the simulator (an empty list would agree vacuously)
    built = build_cases(load_config(config), seed=13, real=real, rand=2, edge=True, max_tokens=knobs.get("max_tokens"))
    assert len(cases) == len(built.cases) >= 2 + real + 3
    assert {"single_token", "all_tokens_one_expert", "no_tokens"} <= {c.label for c in cases}
    for c in cases:
        _model_agrees(c)


def test_moe_unit_model_properties() -> None:
    """Without a simulator: the modeled unit's cycles grow with latency and queue length, never below the MACs."""
    from m3vit.codegen.rtl import moe_layout

    lay = moe_layout(load_config("tiny"))
    counts = [4, 3, 2, 3, 3, 8, 4, 7]
    fast = perf.moe_unit_cycles(lay, counts, 17)
    slow = perf.moe_unit_cycles(lay, counts, 17, latency=120, bandwidth=0.5)
    assert slow.busy_cycles > fast.busy_cycles and slow.mac_cycles == fast.mac_cycles == 34 * 32
    assert fast.busy_cycles > fast.mac_cycles + fast.stall_cycles
    empty = perf.moe_unit_cycles(lay, [0] * 8, 0)
    assert empty.mac_cycles == 0 and empty.busy_cycles < 100
    assert perf.moe_unit_cycles(lay, [17] + [0] * 7, 17).busy_cycles < fast.busy_cycles  # one expert load


def test_moe_unit_waves_hide_the_first_experts_fetch() -> None:
    """Waves follow the weights as they arrive (the model follows the RTL cycle for cycle, tests above): with
    8 experts of 32 tokens on a 512-bit bus the stalls are about the token rows plus a little of w1 (the old
    token-by-token schedule waited for the whole w1 and more), and a two-vector ring (waves of two tokens)
    stalls for most of w2 as well."""
    from m3vit.codegen.rtl import RtlKnobs, moe_layout

    cfg = load_config("vit_tiny_cityscapes")
    counts = [32] * 8 + [0] * 8
    deep = moe_layout(cfg, RtlKnobs(axi_data_bits=512))
    shallow = moe_layout(cfg, RtlKnobs(axi_data_bits=512, hidden_ring=2))
    a, b = (perf.moe_unit_cycles(lay, counts, 129, latency=40) for lay in (deep, shallow))
    bus = deep["params"]["bus_bytes"]
    fields = {f["name"]: f["bytes"] for f in deep["regions"]["experts"]["fields"]}
    w1_beats, w2_beats = (fields["w1"] + fields["b1"]) // bus, (fields["w2"] + fields["b2"]) // bus
    x_beats = 129 * deep["regions"]["tokens"]["row_bytes"] // bus
    assert a.mac_cycles == b.mac_cycles
    assert a.stall_cycles < x_beats + w1_beats // 2
    assert b.stall_cycles - a.stall_cycles > w2_beats // 2
    assert a.busy_cycles < b.busy_cycles
