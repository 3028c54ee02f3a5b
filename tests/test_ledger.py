"""The cycle ledger (hls/m3vit_ledger.h recorder, m3vit.codegen.perf.ledger pricing) against the HLS loop model.

The C simulation of the kernels records the trip count of every entry of every labelled loop;
``perf.hls_loop_model`` must predict them exactly (the routing of the image given), and the ledger's estimated
cycles must agree with ``perf.evaluate`` step by step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from m3vit.codegen import perf
from m3vit.codegen.config import DesignConfig, load_config, with_overrides
from m3vit.codegen.hls import generate_project
from m3vit.codegen.layout import pack_weights
from m3vit.sim.csim import CsimLibrary, build_csim, main, random_model
from m3vit.sim.golden import GoldenModel
from m3vit.sim.inputs import random_quantized_image

REDUCED = {"model.image_size": [32, 64], "model.depth": 2, "model.moe_blocks": [1]}  # as tests/test_hls.py
CASES = {"tiny": ("tiny", {}), "pascal_dse_reduced": ("m3vit_small_pascal_dse", REDUCED)}


@dataclass
class Run:
    cfg: DesignConfig
    lib: CsimLibrary
    ledger: perf.Ledger
    loads: dict[int, list[int]]
    exact: bool


@pytest.fixture(scope="session")
def ledger_runs(tmp_path_factory):
    """``ledger_runs(case)`` → one whole-image C simulation with its ledger (memoised per session)."""
    cache: dict[str, Run] = {}
    root = tmp_path_factory.mktemp("ledger")

    def make(case: str) -> Run:
        if case not in cache:
            preset, overrides = CASES.get(case, (case, {}))
            cfg = load_config(preset)
            cfg = with_overrides(cfg, **overrides) if overrides else cfg
            lib = build_csim(generate_project(cfg, root / case), cfg=cfg, ledger=True)
            q = random_model(cfg, 0)
            image = random_quantized_image(cfg, 0)
            res, led = lib.run_ledger(pack_weights(cfg, q), image, 0)
            g = GoldenModel(cfg, q).run(image, 0, taps=False)
            loads = {b: [int(n) for n in r.load] for b, r in g.routing.items()}
            cache[case] = Run(cfg, lib, led, loads, bool(np.array_equal(res.tokens, g.tokens)))
        return cache[case]

    return make


def assert_trip_counts_modelled(run: Run) -> None:
    assert run.exact  # the instrumented kernels still compute the golden model's tokens
    model = perf.hls_loop_model(run.cfg, run.loads)
    measured = run.ledger.trip_counts()
    assert set(measured) == set(model)
    for label, trips in measured.items():
        assert tuple(sorted(trips)) == model[label].trips, label
    # the II each loop declares to the ledger is the one the model assumes (None: not pipelined)
    for label, lp in run.ledger.loops().items():
        assert (lp.ii or None) == model[label].ii, label


@pytest.mark.parametrize("case", list(CASES))
def test_trip_counts_equal_hls_loop_model(ledger_runs, case) -> None:
    assert_trip_counts_modelled(ledger_runs(case))


def test_trip_counts_follow_the_routing(ledger_runs) -> None:
    """The expert loops run once per used expert, over each queue's token tiles: the routing decides them."""
    run = ledger_runs("tiny")
    tt = run.cfg.hardware.token_tile
    queues = [n for q in run.loads.values() for n in q if n > 0]
    lp = run.ledger.loops()
    assert lp["JOBS_EXPERTS"].entries == len(run.loads)
    assert lp["JOBS_EXPERTS"].iterations == len(queues)  # one job per used expert
    dense_tiles = lp["MAC_TILES"].iterations - sum(-(-n // tt) for n in queues)
    assert dense_tiles > 0
    assert lp["ACC_CLEAR"].iterations == run.cfg.model.num_tokens * len(run.loads)
    gathered = sum(queues)
    assert gathered == run.cfg.model.num_tokens * run.cfg.model.top_k * len(run.loads)
    assert lp["MOE_ACC"].entries == gathered  # every queue entry's row is gate-scaled into its accumulator


@pytest.mark.parametrize("case", list(CASES))
def test_steps_are_the_models(ledger_runs, case) -> None:
    """Every step the model schedules appears in the ledger under the same name (chunk suffixes merged)."""
    run = ledger_runs(case)
    model = {perf.ledger.step_group(s) for s in perf.evaluate(run.cfg, run.loads).step_cycles()}
    mine = {perf.ledger.step_group(s) for s in run.ledger.step_cycles()}
    assert model <= mine
    assert mine - model <= {"io"} | {f"block{b}.finalize" for b in range(run.cfg.model.depth)}


def ledger_vs_model(run: Run) -> list[str]:
    """Steps whose ledger cycles (measured trip counts priced with the declared II / depth) differ by more than
    10 % (or 64 cycles) from the model's busy cycles for that step: its cycles minus the waits the ledger cannot
    see (weight stalls and the stages' first loads, ``PerfReport.step_waits``)."""
    rep = perf.evaluate(run.cfg, run.loads)
    model, waits, mine = rep.step_cycles(), rep.step_waits(), run.ledger.step_cycles()
    bad = []
    for step, cycles in model.items():
        busy, got = cycles - waits[step], mine.get(step, 0)
        if abs(got - busy) > max(0.10 * busy, 64):
            bad.append(f"{step}: ledger {got:,} vs model {busy:,}")
    return bad


@pytest.mark.parametrize("case", list(CASES))
def test_ledger_matches_the_model_step_by_step(ledger_runs, case) -> None:
    run = ledger_runs(case)
    assert ledger_vs_model(run) == []
    rep = perf.evaluate(run.cfg, run.loads)
    busy = rep.cycles - sum(rep.step_waits().values())
    assert 0.9 * busy <= run.ledger.cycles - run.ledger.step_cycles().get("io", 0) <= 1.1 * busy


def test_ledger_sees_a_slower_kernel(ledger_runs) -> None:
    """A ledger whose MAC loop ran twice as long as the code declares disagrees with the model."""
    run = ledger_runs("tiny")
    procs = tuple(perf.LedgerProcess(p.step, p.region, p.name, tuple(
        perf.LedgerLoop(lp.label, lp.ii * (2 if lp.label == "MAC_LOOP" else 1), lp.depth, lp.body, lp.entries,
                        lp.iterations, lp.trips) for lp in p.loops)) for p in run.ledger.processes)
    slow = Run(run.cfg, run.lib, perf.Ledger(run.ledger.design, run.ledger.clock_mhz, 1, procs,
                                             run.ledger.region_executions), run.loads, run.exact)
    assert any(".mlp" in b or ".expert" in b or "embed" in b or ".kv" in b for b in ledger_vs_model(slow))


@pytest.mark.slow
def test_full_size_pascal_dse_within_70_ms(ledger_runs) -> None:
    """The full-size design: every step within 10 % of the model, and at most 70 ms per image at 300 MHz."""
    run = ledger_runs("m3vit_small_pascal_dse")
    assert run.exact
    assert ledger_vs_model(run) == []
    assert run.ledger.latency_ms <= 70.0


def test_compare_csynth_accepts_the_ledger(ledger_runs, tmp_path) -> None:
    run = ledger_runs("tiny")
    rows = perf.compare_csynth(run.cfg, run.ledger, run.loads)
    assert {r.loop.name for r in rows} == set(run.ledger.loops())
    assert all(r.ok and r.trip_ok and r.ii_ok is not False for r in rows)
    path = run.ledger.write(tmp_path / "ledger.json")
    again = perf.compare_csynth(run.cfg, path, run.loads)
    assert [(r.loop.module, r.loop.name, r.loop.trip_count, r.loop.latency) for r in again] == \
        [(r.loop.module, r.loop.name, r.loop.trip_count, r.loop.latency) for r in rows]
    rep = perf.csynth_from_ledger(run.ledger)
    assert rep.latency == (round(run.ledger.cycles),) * 2
    assert "| mac | MAC_LOOP |" in perf.format_csynth_comparison(rows)


def test_compare_csynth_sees_a_wrong_trip_count(ledger_runs) -> None:
    """A ledger whose MAC_LOOP ran longer than the model allows is flagged."""
    run = ledger_runs("tiny")
    procs = []
    for p in run.ledger.processes:
        loops = tuple(perf.LedgerLoop(lp.label, lp.ii, lp.depth, lp.body, lp.entries, lp.iterations,
                                      {k + 100: v for k, v in lp.trips.items()} if lp.label == "MAC_LOOP" else lp.trips)
                      for lp in p.loops)
        procs.append(perf.LedgerProcess(p.step, p.region, p.name, loops))
    bad = perf.Ledger(run.ledger.design, run.ledger.clock_mhz, 1, tuple(procs), {})
    rows = perf.compare_csynth(run.cfg, bad, run.loads)
    assert {r.loop.name for r in rows if not r.ok} == {"MAC_LOOP"}


def test_ledger_json_round_trip(ledger_runs, tmp_path) -> None:
    run = ledger_runs("tiny")
    path = run.ledger.write(tmp_path / "ledger.json")
    doc = json.loads(path.read_text())
    assert doc["assumptions"] == perf.LEDGER_ASSUMPTIONS and "ESTIMATED" in doc["assumptions"]
    assert doc["image_cycles"] == run.ledger.cycles
    back = perf.read_ledger(path)
    assert back.step_cycles() == run.ledger.step_cycles() and back.trip_counts() == run.ledger.trip_counts()


def test_pricing_rules() -> None:
    """Hand-written records priced by the documented rules: pipelined entries (trips-1)·II + depth, other loops
    body cycles per iteration, serial processes summed, a loop entry that continues in another step counted
    where it started."""
    text = "\n".join([
        "site\t0\tA\t2\t5\t0", "site\t1\tB\t0\t0\t7",
        "proc\tblock0.kv\t\tp", "loop\t0\t3\t30\t10:3", "loop\t1\t1\t4\t4:1",
        "proc\tblock0.attn\t\tq", "loop\t1\t0\t2\t",
    ])
    led = perf.parse_ledger(text, "t", 100.0)
    assert led.step_cycles() == {"block0.kv": 30 * 2 + 3 * (5 - 2) + 4 * 7, "block0.attn": 2 * 7}
    assert led.trip_counts() == {"A": {10}, "B": {4}}
    assert led.latency_ms == pytest.approx((69 + 28 + 14) / 100e3)
    assert led.loops()["B"].entries == 1 and led.loops()["B"].iterations == 6


@pytest.mark.parametrize("line", ["loop\t9\t1\t1\t1:1", "site\t0\tA\tx\t1\t0", "bogus\t1"])
def test_bad_records_are_one_line_errors(line) -> None:
    with pytest.raises(perf.LedgerError, match="ledger line 1"):
        perf.parse_ledger(line, "t", 100.0)


def test_read_ledger_rejects_other_json(tmp_path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"design": "x"}')
    with pytest.raises(perf.LedgerError, match=r"not a ledger\.json"):
        perf.read_ledger(path)


def test_csim_cli_writes_the_ledger(tmp_path, capsys) -> None:
    assert main(["tiny", "-o", str(tmp_path / "tiny"), "--no-layers", "--ledger"]) == 0
    out = capsys.readouterr().out
    assert "ESTIMATED" in out and "| block0.attn |" in out and "equal perf.hls_loop_model" in out
    led = perf.read_ledger(tmp_path / "tiny" / "ledger.json")
    assert led.design == "tiny" and led.cycles > 0


@pytest.mark.slow
def test_full_size_pascal_dse(ledger_runs) -> None:
    """Full-size m3vit_small_pascal_dse (1025 tokens): trip counts still exactly modelled."""
    run = ledger_runs("m3vit_small_pascal_dse")
    assert_trip_counts_modelled(run)
    print(perf.format_ledger_steps(run.ledger, perf.evaluate(run.cfg, run.loads).step_cycles()))
