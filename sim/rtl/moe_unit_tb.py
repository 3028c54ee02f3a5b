"""cocotb testbench of the MoE unit (top ``moe_unit``, sources from ``generate_moe_unit``), run by
``m3vit.sim.rtl.runner``.

The scenario (``M3VIT_TB_SCENARIO``, an .npz written by the runner) holds the layout JSON, one or more
expert weight sets and a list of cases (tokens, routing, the golden model's expected output and saturation
counts). DDR is an AxiRam with a configurable read latency and bandwidth; the unit is driven through
AxiLiteMaster exactly as a host driver would (pointers, ap_start, interrupt, ap_done/ap_idle, counters).
Per-case results go to ``M3VIT_TB_RESULTS`` (JSON) for the report; every check is also asserted here.
"""

from __future__ import annotations

import itertools
import json
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.queue import Queue
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge, with_timeout
from cocotb.utils import get_sim_time
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster
from cocotbext.axi.axi_ram import AxiRamRead, AxiRamWrite
from cocotbext.axi.constants import AxiBurstType, AxiResp
from cocotbext.axi.memory import Memory

from m3vit.codegen import axilite
from m3vit.codegen.rtl import pack_experts, pack_queues, pack_token_rows, unpack_out, used_expert_weight_bytes
from m3vit.sim.golden import Routing

CLOCK_NS = 10
MEM_BYTES = 1 << 26
PAGE = 4096


class _LatencyRamRead(AxiRamRead):
    """AxiRam read side whose bursts return their first beat ``latency`` cycles after AR is accepted.

    ARs are accepted without limit (a DDR controller queues them), so the latency of back-to-back bursts
    overlaps as it does on a real memory port.
    """

    latency = 0
    _acceptor = None

    def _handle_reset(self, state) -> None:
        # the acceptor is a second task: stop it with the data task, or a stale one would steal ARs
        if state and self._acceptor is not None:
            self._acceptor.cancel()
            self._acceptor = None
        super()._handle_reset(state)

    async def _process_read(self) -> None:
        pending: Queue = Queue()

        async def accept() -> None:
            while True:
                ar = await self.ar_channel.recv()
                await pending.put((get_sim_time(unit="ns") // CLOCK_NS, ar))

        if self._acceptor is not None:
            self._acceptor.cancel()
        self._acceptor = cocotb.start_soon(accept())
        while True:
            t_accept, ar = await pending.get()
            wait = t_accept + self.latency - get_sim_time(unit="ns") // CLOCK_NS
            if wait > 0:
                await ClockCycles(self.clock, int(wait))
            await self._send_burst(ar)

    async def _send_burst(self, ar) -> None:
        addr, length = int(ar.araddr), int(ar.arlen) + 1
        size = int(ar.arsize)
        assert int(getattr(ar, "arburst", AxiBurstType.INCR)) == AxiBurstType.INCR
        num_bytes = 2**size
        assert num_bytes == self.byte_lanes, "the unit always reads full bus words"
        assert PAGE - (addr & (PAGE - 1)) >= num_bytes * length, f"burst at {addr:#x} x{length} crosses 4 KiB"
        for n in range(length):
            r = self.r_channel._transaction_obj()
            r.rid = int(getattr(ar, "arid", 0))
            r.rlast = n == length - 1
            r.rresp = AxiResp.OKAY
            r.rdata = int.from_bytes(await self._read(addr + n * num_bytes, num_bytes), "little")
            await self.r_channel.send(r)


class DdrModel(Memory):
    """AxiRam-like DDR: shared memory, read latency (cycles) and read bandwidth (beats per cycle ≤ 1)."""

    def __init__(self, dut, prefix: str, latency: int, bandwidth: float) -> None:
        super().__init__(MEM_BYTES)
        bus = AxiBus.from_prefix(dut, prefix)
        self.write_if = AxiRamWrite(
            bus.write, dut.ap_clk, dut.ap_rst_n, reset_active_level=False, mem=self.mem
        )
        self.read_if = _LatencyRamRead(
            bus.read, dut.ap_clk, dut.ap_rst_n, reset_active_level=False, mem=self.mem
        )
        self.read_if.latency = latency
        if bandwidth < 1.0:
            self.read_if.r_channel.set_pause_generator(_throttle(bandwidth))


def _throttle(fraction: float):
    """Pause pattern giving ``fraction`` of the cycles to R beats (credit based, evenly spread)."""
    credit = 0.0
    for _ in itertools.count():
        credit += fraction
        if credit >= 1.0:
            credit -= 1.0
            yield False
        else:
            yield True


class Regs:
    """Register access by name, through the layout's register map."""

    def __init__(self, axil: AxiLiteMaster, layout: dict) -> None:
        self.axil = axil
        regmap = layout["registers"]
        self.offset = axilite.offsets(regmap)
        self.words = {a["name"]: len(a["data_offsets"]) for a in regmap["args"]}
        self.ctrl_bits = regmap["control"]["ap_ctrl"]["bits"]

    async def write(self, name: str, value: int) -> None:
        await self.axil.write_dword(self.offset[name], value & 0xFFFFFFFF)
        if self.words.get(name) == 2:
            await self.axil.write_dword(self.offset[name] + 4, (value >> 32) & 0xFFFFFFFF)

    async def read(self, name: str) -> int:
        return await self.axil.read_dword(self.offset[name])

    def bit(self, name: str) -> int:
        return 1 << self.ctrl_bits[name]


def _alloc(cursor: list[int], nbytes: int, misalign: int = 0) -> int:
    """Next 4 KiB-aligned address (+ ``misalign`` bytes, to exercise burst splitting at page ends)."""
    addr = -(-cursor[0] // PAGE) * PAGE + misalign
    cursor[0] = addr + max(nbytes, 1)
    assert cursor[0] <= MEM_BYTES, "scenario does not fit the simulated DDR"
    return addr


def _load_scenario(path: str) -> tuple[dict, list[dict], list[dict], dict]:
    z = np.load(path, allow_pickle=False)
    layout = json.loads(str(z["layout_json"]))
    meta = json.loads(str(z["meta_json"]))
    weights = [{k: z[f"w{s}_{k}"] for k in ("w1", "b1", "w2", "b2")} for s in range(meta["weight_sets"])]
    cases = []
    for i, c in enumerate(meta["cases"]):
        cases.append(
            {
                **c,
                "x": z[f"c{i}_x"],
                "experts": z[f"c{i}_experts"],
                "gates": z[f"c{i}_gates"],
                "expected": z[f"c{i}_expected"],
            }
        )
    return layout, weights, cases, meta


@cocotb.test()
async def moe_unit_cases(dut) -> None:
    """Every case of the scenario: bit-exact output, exact weight bytes, counters, back to idle."""
    await run_cases(dut)


async def run_cases(dut) -> None:
    """The body of :func:`moe_unit_cases` (callable from other benches, e.g. with extra monitors)."""
    layout, weight_sets, cases, meta = _load_scenario(os.environ["M3VIT_TB_SCENARIO"])
    p = layout["params"]
    mem = meta["memory"]
    dut.ap_rst_n.value = 0
    cocotb.start_soon(Clock(dut.ap_clk, CLOCK_NS, unit="ns").start())
    await ClockCycles(dut.ap_clk, 2)  # bus models start in reset (Icarus shows X, not 0, at time 0)
    ddr = DdrModel(dut, "m_axi_gmem", latency=int(mem["latency"]), bandwidth=float(mem["bandwidth"]))
    axil = AxiLiteMaster(
        AxiLiteBus.from_prefix(dut, "s_axi_control"), dut.ap_clk, dut.ap_rst_n, reset_active_level=False
    )
    regs = Regs(axil, layout)
    await ClockCycles(dut.ap_clk, 5)
    dut.ap_rst_n.value = 1
    await ClockCycles(dut.ap_clk, 2)

    ctrl = await regs.read("ap_ctrl")
    assert ctrl & regs.bit("ap_idle"), f"not idle after reset (ctrl={ctrl:#x})"

    cursor = [PAGE]
    bus = p["bus_bytes"]
    w_addr = []
    for s, w in enumerate(weight_sets):
        blob = pack_experts(layout, w["w1"], w["b1"], w["w2"], w["b2"])
        addr = _alloc(cursor, len(blob), misalign=bus * (3 + s))  # expert regions straddle 4 KiB pages
        ddr.write(addr, blob)
        w_addr.append(addr)
    tmax = p["max_tokens"]
    x_addr = _alloc(cursor, tmax * layout["regions"]["tokens"]["row_bytes"], misalign=bus)
    q_addr = _alloc(cursor, layout["regions"]["queues"]["bytes"], misalign=2 * bus)
    o_addr = _alloc(cursor, tmax * layout["regions"]["out"]["row_bytes"], misalign=5 * bus)

    await regs.write("gie", 1)
    await regs.write("ier", 1)  # interrupt on ap_done
    results = []
    failures = []
    for case in cases:
        t = int(case["x"].shape[0])
        routing = Routing(
            experts=case["experts"], gates=case["gates"], logits=np.zeros((t, p["num_experts"]))
        )
        queues = [routing.queue(e) for e in range(p["num_experts"])]
        counts = [len(q[0]) for q in queues]
        if t:
            ddr.write(x_addr, pack_token_rows(layout, case["x"]))
        ddr.write(q_addr, pack_queues(layout, queues))
        for e, n in case.get("count_override") or []:  # a corrupt count table
            ddr.write(q_addr + 4 * e, int(n).to_bytes(4, "little"))
        reg_t = t if case.get("num_tokens_reg") is None else int(case["num_tokens_reg"])
        n_out = min(reg_t, tmax)  # the rows the unit owns
        out_bytes = n_out * layout["regions"]["out"]["row_bytes"]
        ddr.write(o_addr, b"\xa5" * max(out_bytes, 1))  # a pattern the unit must overwrite

        await regs.write("num_tokens", reg_t)
        await regs.write("x", x_addr)
        await regs.write("queues", q_addr)
        await regs.write("weights", w_addr[case["weight_set"]])
        await regs.write("out", o_addr)
        t0 = get_sim_time(unit="ns")
        await regs.write("ap_ctrl", regs.bit("ap_start"))
        budget = int(case.get("timeout_cycles", 2_000_000))
        if not dut.interrupt.value:
            await with_timeout(RisingEdge(dut.interrupt), budget * CLOCK_NS, "ns")
        wall = int((get_sim_time(unit="ns") - t0) // CLOCK_NS)
        await FallingEdge(dut.ap_clk)
        ctrl = await regs.read("ap_ctrl")
        ctrl_again = await regs.read("ap_ctrl")
        await regs.write("isr", 1)  # toggle-on-write clears the done status
        assert not dut.interrupt.value, "interrupt did not clear after the ISR write"
        counters = {a["name"]: await regs.read(a["name"]) for a in layout["registers"]["args"] if a.get("output")}
        got = unpack_out(layout, ddr.read(o_addr, max(out_bytes, 1)), n_out)
        exp = case["expected"][:n_out]
        mismatch = int(np.count_nonzero(got != exp))
        expected_w = used_expert_weight_bytes(layout, counts)
        checks = {
            "output_bit_exact": mismatch == 0,
            "ap_done": bool(ctrl & regs.bit("ap_done")),
            "ap_idle": bool(ctrl & regs.bit("ap_idle")) and bool(ctrl_again & regs.bit("ap_idle")),
            "ap_done_clear_on_read": not (ctrl_again & regs.bit("ap_done")),
            "weight_bytes_exact": counters["weight_bytes_read"] == expected_w,
            "bytes_written": counters["bytes_written"] == out_bytes,
            "experts_used": counters["experts_used"] == int(np.count_nonzero(counts)),
            "sat_hidden": case["sat_hidden"] < 0 or counters["sat_hidden"] == case["sat_hidden"],
            "sat_act": case["sat_act"] < 0 or counters["sat_act"] == case["sat_act"],
            "errors": counters["errors"] == int(case.get("errors", 0)),
        }
        res = {
            "label": case["label"],
            "num_tokens": t,
            "queue_lengths": counts,
            "wall_cycles": wall,
            "counters": counters,
            "expected_weight_bytes": expected_w,
            "mismatches": mismatch,
            "useful_macs": int(sum(counts)) * 2 * p["dim"] * p["hidden"],
            "checks": checks,
        }
        results.append(res)
        bad = [k for k, v in checks.items() if not v]
        dut._log.info(
            "case %-28s T=%4d cycles=%7d mac=%7d stall=%6d weight_bytes=%d/%d %s",
            case["label"],
            t,
            counters["busy_cycles"],
            counters["mac_cycles"],
            counters["stall_cycles"],
            counters["weight_bytes_read"],
            expected_w,
            "OK" if not bad else f"FAILED {bad}",
        )
        if bad:
            failures.append(
                f"{case['label']}: {bad} (mismatches {mismatch}, counters {counters}, "
                f"sat expected {case['sat_hidden']}/{case['sat_act']})"
            )
            if mismatch:
                idx = np.argwhere(got != exp)[:5]
                dut._log.error(
                    "first mismatches (token, dim, got, expected): %s",
                    [(int(a), int(b), int(got[a, b]), int(exp[a, b])) for a, b in idx],
                )
    out = os.environ.get("M3VIT_TB_RESULTS")
    if out:
        with open(out, "w") as f:
            json.dump({"memory": mem, "cases": results}, f, indent=1)
    assert not failures, "; ".join(failures)


__all__ = ["DdrModel", "Regs", "moe_unit_cases", "run_cases"]
