"""The exact cycle model of the RTL MoE unit (``rtl/``), validated against cocotb measurements."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


# ------------------------------------------------------------------------------------ the RTL MoE unit
@dataclass(frozen=True)
class MoeUnitCycles:
    """Modeled counters of one call of the RTL MoE unit (the names of its performance registers)."""

    busy_cycles: int  # ap_start to ap_done
    mac_cycles: int  # cycles the MAC array issued a tile
    stall_cycles: int  # count/token loads, and the compute engine waiting for an expert buffer
    expert_phase_cycles: int


RTL_JOB = 4
"""Read job overhead: rj_start → AR valid (2), AR accepted → first beat (latency + 1), last beat → busy low (1)."""
RTL_PIPE = 6
"""Issue → GELU output: the hidden vector of a token is usable 7 cycles after its last fc1 tile issued."""
RTL_DRAIN = 8
"""Last issue → compute engine back in C_WAIT (6-stage pipeline drains, then slot release)."""
RTL_OUT_START, RTL_B_LATENCY = 3, 3
"""Write-back: P_OUT → first W beat; last W beat → B response (AxiRam) → done."""


def moe_unit_cycles(layout: Mapping, counts: Sequence[int], num_tokens: int, latency: int = 0,
                    bandwidth: float = 1.0,
                    queues: Sequence[Sequence[int]] | None = None) -> MoeUnitCycles:
    """Cycles of one call of the RTL MoE unit (rtl/, ``moe_unit_layout.json`` as ``layout``) with ``num_tokens``
    tokens and queue lengths ``counts`` (tokens per expert), on a memory with a read ``latency`` (cycles from
    AR accepted to the first beat) and ``bandwidth`` (R beats per cycle, ≤ 1). ``queues`` (the queued token
    indices per expert, ascending) places each fc1 row behind its token's row of x; without it the queued
    tokens are assumed spread evenly over the call's tokens.

    Follows the unit's FSMs job by job: count table, then per used expert its queue, b1/w1 and b2/w2 (one read
    job at a time, a ping-pong slot per expert) overlapping the compute of the previous expert; the token rows
    are loaded before the first used expert's b1/w1 when they take fewer beats, else after its b2/w2. An
    expert's compute starts on its queue (entries read a bus word per cycle into the hidden ring's slots) and
    runs in waves, one tile per cycle: at each boundary an fc2 wave over every token whose fc1 is done, else
    an fc1 wave over the new tokens the ring (``hidden_ring``) has room for whose rows of x are on chip; a
    wave goes output row by output row, each row waiting for its weight tiles, an fc1 row of a token for its
    row of x, an fc2 row for its hidden vector (RTL_PIPE after its last fc1 tile). Finally the write-back
    streams the outputs at one beat per cycle.
    """
    p = layout["params"]
    regions = layout["regions"]
    ot1, it1 = p["tiles"]["fc1"]
    ot2, it2 = p["tiles"]["fc2"]
    ring = p["hidden_ring"]
    bus = p["bus_bytes"]
    cnt_beats = regions["queues"]["entries"]["offset"] // bus
    x_row = regions["tokens"]["row_bytes"] // bus
    out_row = regions["out"]["row_bytes"] // bus
    exp_beats = regions["experts"]["bytes_per_expert"] // bus
    fields = {f["name"]: f for f in regions["experts"]["fields"]}
    w1 = fields["w1"]
    a_beats = max(f["offset"] + f["bytes"] for f in (fields["b1"], w1)) // bus  # the first weight job
    w1_first = w1["offset"] // bus  # beats of that job before w1
    row_beats = w1["bytes"] // bus // ot1  # w1 beats per fc1 output row
    w2 = fields["w2"]
    w2_first = (w2["offset"] // bus) - a_beats  # beats of the second weight job before w2
    row2_beats = w2["bytes"] // bus // ot2
    q_per_beat = p["axi_data_bits"] // 32
    counts = [min(int(c), p["max_tokens"]) for c in counts]
    tokens = min(int(num_tokens), p["max_tokens"])
    if queues is None:
        queues = [[j * tokens // c for j in range(c)] if c else [] for c in counts]
    toks = [[min(int(t), max(tokens - 1, 0)) for t in q][:c] for q, c in zip(queues, counts, strict=True) if c > 0]

    def beat_seen(start: int, beat: int) -> int:
        """First cycle a gate on beat ``beat`` (0-based) of a job started at ``start`` lets work through."""
        return start + RTL_JOB + latency + math.ceil(beat / bandwidth) + 1

    def done(start: int, beats: int) -> int:
        """The cycle a job's waiter sees it finished, for a job whose rj_start is visible at ``start``."""
        return start + 1 if beats == 0 else beat_seen(start, beats - 1)

    stall = 0
    exp_start = done(0, cnt_beats) + 1  # P_CNT; the first busy cycle is 0
    clr_ok = max(1, tokens * ot2) - 1  # the accumulator clear (one word per cycle) is over
    stall += exp_start
    used = [c for c in counts if c > 0]
    slot_free = [exp_start, exp_start]
    q_ready: list[int] = []  # queue of used expert i on chip
    wa_start: list[int] = []  # its b1/w1 job started
    a_ready: list[int] = []  # b1/w1 on chip
    w2_ready: list[int] = []  # b2/w2 too
    x_start = x_done = -1  # the token load: rj_start visible / finished
    x_early = tokens * x_row < a_beats
    c_free = exp_start  # first cycle the compute engine is back in C_WAIT
    mac = 0
    computed = 0
    never = math.inf

    def x_row_ready(tok: int) -> float:
        return beat_seen(x_start, (tok + 1) * x_row - 1) if x_start >= 0 else never

    def w1_row_ready(i: int, ot: int) -> int:
        return min(a_ready[i], beat_seen(wa_start[i], w1_first + (ot + 1) * row_beats - 1))

    def w2_row_ready(i: int, ot: int) -> int:
        return min(w2_ready[i], beat_seen(a_ready[i], w2_first + (ot + 1) * row2_beats - 1))

    def compute(i: int) -> None:
        nonlocal c_free, stall, mac, computed
        n, tq = used[i], toks[i]
        c0 = max(q_ready[i], c_free, clr_ok) + 1
        stall += c0 - c_free
        h_ok = [never] * n  # the hidden vector of queue entry q is back from the pipeline
        fc2_end = [0] * n  # the fc2 wave of entry q finished (its ring slot is free)
        fc2_lo = [0] * n  # the first entry of that wave
        t = c0

        def entry_ready(j: int) -> int:
            """Entries are read a bus word per cycle, from C_RUN on into the first ring slots, then as each
            fc2 wave ends into the slots it released (the reader resumes at the window's old end)."""
            first = c0 + 2 + j // q_per_beat
            if j < ring:
                return first
            q = j - ring
            return max(first, fc2_end[q] + 2 + j // q_per_beat - (fc2_lo[q] + ring) // q_per_beat)

        def run_unit(t: int, mem_ready: float, other_ready: float) -> int:
            """Issue one unit at or after t; returns its start and counts the memory-wait cycles."""
            nonlocal stall
            start = int(max(t, mem_ready, other_ready))
            stall += max(0, int(min(start, mem_ready)) - t)
            return start

        n1 = n2 = 0
        while n2 < n:
            if n2 < n1:  # an fc2 wave over every token whose fc1 is done
                lo, g, layer = n2, n1 - n2, 2
            else:  # an fc1 wave over the new tokens the ring has room for whose rows of x are on chip
                lo, g, layer = n1, min(n - n1, ring - (n1 - n2)), 1
                t = max(t, entry_ready(n1 + g - 1))
                t = run_unit(t, max(x_row_ready(tq[n1]), w1_row_ready(i, 0)), 0)
                g = sum(1 for q in range(n1, n1 + g) if x_row_ready(tq[q]) <= t)
            for ot in range(ot2 if layer == 2 else ot1):
                for q in range(lo, lo + g):
                    if layer == 1:
                        t = run_unit(t, max(x_row_ready(tq[q]), w1_row_ready(i, ot)), 0) + it1
                        if ot == ot1 - 1:
                            h_ok[q] = t + RTL_PIPE
                    else:
                        t = run_unit(t, w2_row_ready(i, ot), h_ok[q]) + it2
            if layer == 2:
                fc2_end[lo:lo + g] = [t] * g
                fc2_lo[lo:lo + g] = [lo] * g
                n2 += g
            else:
                n1 += g
        last_issue = t - 1
        mac += n * (ot1 * it1 + ot2 * it2)
        slot_free[i % 2] = last_issue + RTL_DRAIN + 1
        c_free = last_issue + RTL_DRAIN
        computed += 1

    t = exp_start
    i = 0
    for c in counts:  # the prefetcher scans the experts in ascending order
        if c == 0:
            t += 1
            continue
        while i >= 2 and computed <= i - 2:
            compute(computed)
        t_q = max(t + 1, slot_free[i % 2], x_done) + 1
        q_ready.append(done(t_q, math.ceil(c / q_per_beat)) + 1)
        t_a = q_ready[-1]
        if i == 0 and x_early:  # the token rows go first
            x_start = t_a
            t_a = x_done = done(x_start, tokens * x_row) + 1
        wa_start.append(t_a)
        a_ready.append(done(t_a, a_beats) + 1)
        w2_ready.append(done(a_ready[-1], exp_beats - a_beats) + 1)
        t = w2_ready[-1]
        if i == 0 and not x_early:  # ... or after b2/w2, behind the compute
            x_start = t
            x_done = done(x_start, tokens * x_row)
        i += 1
    pf_done = t + 1
    while computed < len(used):
        compute(computed)
    out_start = max(c_free, pf_done, x_done, clr_ok) + 1
    out_end = out_start + (RTL_OUT_START + tokens * out_row + RTL_B_LATENCY if tokens else 2)
    return MoeUnitCycles(busy_cycles=out_end + 1, mac_cycles=mac, stall_cycles=stall,
                         expert_phase_cycles=out_start - exp_start)
