"""MoE schedules replayed on real routings (m3vit.explore.schedules): traffic computed two ways, latency, caching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from m3vit.codegen import perf
from m3vit.codegen.config import load_config, with_overrides
from m3vit.explore import schedules as sch
from tests.paper import PAPER_ZCU104, markdown_table

CACHES = (1, 2, 3, 4, 8, 16)


@pytest.fixture(scope="module")
def pascal_small():
    """M³ViT-S PASCAL at 64 × 64 (17 tokens): full depth, 16 experts top-4, five task routers."""
    return with_overrides(load_config("m3vit_small_pascal"), **{"model.image_size": [64, 64]})


@pytest.fixture(scope="module")
def golden_small(pascal_small, tmp_path_factory) -> sch.RoutingSet:
    return sch.golden_routings(pascal_small, images=1, cache_dir=tmp_path_factory.mktemp("routings"))


@pytest.fixture(scope="module")
def golden_tiny(tmp_path_factory) -> sch.RoutingSet:
    return sch.golden_routings(load_config("tiny"), images=2, cache_dir=tmp_path_factory.mktemp("routings"))


def _layers(rs: sch.RoutingSet):
    for t in range(len(rs.tasks)):
        for i in range(rs.images):
            for j in range(len(rs.blocks)):
                yield rs.layer(t, i, j)


# ------------------------------------------------------------------------------------ two ways
@pytest.mark.parametrize("which", ["golden_small", "golden_tiny"])
def test_traffic_replay_equals_analytic_on_golden_routings(which: str, request) -> None:
    rs: sch.RoutingSet = request.getfixturevalue(which)
    assert rs.experts.shape[0] == len(rs.tasks) > 1  # every task
    for experts in _layers(rs):
        for s in sch.SCHEDULES:
            for c in CACHES if s == "lru" else (0,):
                rep = sch.replay(s, experts, rs.num_experts, c)
                assert len(rep.fetches) == sch.analytic_fetches(s, experts, rs.num_experts, c), (s, c)


def test_traffic_replay_equals_analytic_on_synthetic_routings() -> None:
    """Larger, skewed and uniform routings (T = 1025, N = 16 and 64)."""
    for n, skew in ((16, 0.3), (16, 5.0), (64, 1.0)):
        cfg = with_overrides(load_config("m3vit_small_pascal"), **{"model.num_experts": n})
        rs = sch.synthetic_routings(cfg, seed=n, skew=skew)
        experts = rs.layer(0, 0, 0)
        for s in sch.SCHEDULES:
            for c in (2, 8) if s == "lru" else (0,):
                assert len(sch.replay(s, experts, n, c).fetches) == sch.analytic_fetches(s, experts, n, c)


def test_schedule_orderings(golden_small) -> None:
    """Expert-by-expert fetches each used expert once: never more than any token-order schedule."""
    n = golden_small.num_experts
    for experts in _layers(golden_small):
        used = len(np.unique(experts))
        ebe = sch.analytic_fetches("expert_by_expert", experts, n)
        assert ebe == used <= n == sch.analytic_fetches("all_on_chip", experts, n)
        lru = [sch.analytic_fetches("lru", experts, n, c) for c in CACHES]
        assert lru == sorted(lru, reverse=True)  # LRU is a stack algorithm: a bigger cache never misses more
        assert lru[-1] == used  # C = N: only compulsory misses
        assert sch.analytic_fetches("token_by_token", experts, n) == experts.size >= lru[0]


def test_lru_misses_small_cases() -> None:
    assert sch.lru_misses([0, 1, 0, 1], 1) == 4
    assert sch.lru_misses([0, 1, 0, 1], 2) == 2
    assert sch.lru_misses([0, 1, 2, 0], 2) == 4
    assert sch.lru_misses([0, 1, 2, 0], 3) == 3
    assert sch.lru_misses([0, 0, 0], 1) == 1


def test_replay_events_and_buffers() -> None:
    experts = np.array([[0, 1], [1, 2], [0, 2]])
    ebe = sch.replay("expert_by_expert", experts, 4)
    assert ebe.events == [("fetch", 0, 0), ("compute", 0, 2), ("fetch", 1, 1), ("compute", 1, 2),
                          ("fetch", 2, 0), ("compute", 2, 2)]
    lru = sch.replay("lru", experts, 4, cache=2)
    assert lru.fetches == [0, 1, 2, 0]  # accesses 0 1 1 2 0 2
    assert all(0 <= b < 2 for k, _, b in lru.events if k == "fetch")
    with pytest.raises(ValueError, match="unknown schedule"):
        sch.replay("random", experts, 4)


# ------------------------------------------------------------------------------------ latency
def test_expert_by_expert_replay_reproduces_the_perf_model(golden_small, pascal_small) -> None:
    res = {r.label: r for r in sch.compare_schedules(pascal_small, golden_small, lru_caches=(2,))}
    want = np.mean([perf.evaluate(pascal_small, golden_small.block_loads(t, 0)).latency_ms
                    for t in range(len(golden_small.tasks))])
    assert res["expert_by_expert"].latency_ms == pytest.approx(want, rel=1e-12)
    assert res["expert_by_expert"].latency_ms < res["lru (C=2)"].latency_ms < res["token_by_token"].latency_ms
    assert res["expert_by_expert"].on_chip_bytes == res["lru (C=2)"].on_chip_bytes
    assert res["all_on_chip"].on_chip_bytes > res["expert_by_expert"].on_chip_bytes
    e = perf.expert_bytes(pascal_small)
    for r in res.values():
        assert r.ddr_weight_bytes == r.fetches * e


def test_layer_cycles_is_load_bound_when_thrashing(pascal_small) -> None:
    experts = np.array([[0, 1, 2, 3]] * 8)  # a C=2 LRU misses on every access
    rep = sch.replay("lru", experts, 16, cache=2)
    t_load = perf.load_cycles(pascal_small, perf.expert_bytes(pascal_small))
    assert len(rep.fetches) == experts.size
    assert sch.layer_cycles(pascal_small, rep) >= experts.size * t_load


# ------------------------------------------------------------------------------------ golden runs
def test_golden_routings_are_cached(tmp_path: Path) -> None:
    cfg = load_config("tiny")
    a = sch.golden_routings(cfg, images=1, cache_dir=tmp_path)
    files = list(tmp_path.glob("routings-*.npz"))
    assert len(files) == 1
    b = sch.golden_routings(cfg, images=1, cache_dir=tmp_path)
    assert np.array_equal(a.experts, b.experts)
    loads = a.loads()
    assert loads.shape == (2, 1, len(a.blocks), cfg.model.num_experts)
    assert (loads.sum(-1) == cfg.model.num_tokens * cfg.model.top_k).all()
    # another key block size changes the integers, hence the key
    sch.golden_routings(with_overrides(cfg, **{"hardware.attn_key_block": 4}), images=1, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("routings-*.npz"))) == 2


def test_format_accuracy_and_calibration(tmp_path: Path) -> None:
    cfg = load_config("tiny")
    assert sch.format_accuracy(cfg, images=1, cache_dir=tmp_path) >= 0.99
    ov = sch.calibrated_formats(cfg, 8, ("norm", "hidden"),
                                ranges={"norm": 5.0, "qkv": 3.0, "hidden": 3.0})
    assert ov["numerics.norm"] == {"bits": 8, "frac": 4}
    assert ov["numerics.hidden"] == {"bits": 8, "frac": 7 - cfg.numerics.gelu_range_log2}  # GELU range wins
    small = with_overrides(cfg, **ov)  # a valid config
    assert small.numerics.norm.bits == 8


def test_format_table_has_the_paper_columns(golden_small, pascal_small) -> None:
    """Each schedule's row carries its modeled values and, in the paper columns, the paper's own number for
    that schedule (transcribed in tests/paper.py, not taken from the code); other rows leave them empty."""
    rows = sch.compare_schedules(pascal_small, golden_small, lru_caches=(2, 4))
    for design, paper in PAPER_ZCU104.items():
        table = markdown_table(sch.format_table({design: rows}), "schedule")
        assert [r["schedule"] for r in table] == [r.label for r in rows] and {r["design"] for r in table} == {design}
        for cells, r in zip(table, rows, strict=True):
            assert cells["latency (ms)"] == f"{r.latency_ms:.1f}"
            assert cells["on-chip (MiB)"] == f"{r.on_chip_bytes / perf.MIB:.3f}"
            expected_mib, expected_ms = {
                "all_on_chip": (paper["all_on_chip_mib"], ""),
                "expert_by_expert": (paper["ebe_mib"], paper["ebe_ms"]),
                "lru (C=2)": (paper["ebe_mib"], paper["cache_ms"]),  # the paper's cache baseline
            }.get(r.label, ("", ""))
            assert (cells["paper on-chip (MiB)"], cells["paper latency (ms)"]) == (expected_mib, expected_ms), r.label
