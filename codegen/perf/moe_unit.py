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
    params = layout["params"]
    regions = layout["regions"]
    fc1_rows, fc1_tiles = params["tiles"]["fc1"]
    fc2_rows, fc2_tiles = params["tiles"]["fc2"]
    ring = params["hidden_ring"]
    bus_bytes = params["bus_bytes"]
    cnt_beats = regions["queues"]["entries"]["offset"] // bus_bytes
    x_row = regions["tokens"]["row_bytes"] // bus_bytes
    out_row = regions["out"]["row_bytes"] // bus_bytes
    exp_beats = regions["experts"]["bytes_per_expert"] // bus_bytes
    fields = {f["name"]: f for f in regions["experts"]["fields"]}
    w1_field = fields["w1"]
    a_beats = max(f["offset"] + f["bytes"] for f in (fields["b1"], w1_field)) // bus_bytes  # the first weight job
    w1_first = w1_field["offset"] // bus_bytes  # beats of that job before w1
    row_beats = w1_field["bytes"] // bus_bytes // fc1_rows  # w1 beats per fc1 output row
    w2_field = fields["w2"]
    w2_first = (w2_field["offset"] // bus_bytes) - a_beats  # beats of the second weight job before w2
    row2_beats = w2_field["bytes"] // bus_bytes // fc2_rows
    q_per_beat = params["axi_data_bits"] // 32
    counts = [min(int(count), params["max_tokens"]) for count in counts]
    tokens = min(int(num_tokens), params["max_tokens"])
    if queues is None:
        queues = [[entry * tokens // count for entry in range(count)] if count else [] for count in counts]
    queue_tokens = [[min(int(token), max(tokens - 1, 0)) for token in queue][:count]
                    for queue, count in zip(queues, counts, strict=True) if count > 0]

    def beat_seen(start: int, beat: int) -> int:
        """First cycle a gate on beat ``beat`` (0-based) of a job started at ``start`` lets work through."""
        return start + RTL_JOB + latency + math.ceil(beat / bandwidth) + 1

    def done(start: int, beats: int) -> int:
        """The cycle a job's waiter sees it finished, for a job whose rj_start is visible at ``start``."""
        return start + 1 if beats == 0 else beat_seen(start, beats - 1)

    stall = 0
    exp_start = done(0, cnt_beats) + 1  # P_CNT; the first busy cycle is 0
    clear_done = max(1, tokens * fc2_rows) - 1  # the accumulator clear (one word per cycle) is over
    stall += exp_start
    used = [count for count in counts if count > 0]
    slot_free = [exp_start, exp_start]
    q_ready: list[int] = []  # queue of used expert i on chip
    wa_start: list[int] = []  # its b1/w1 job started
    a_ready: list[int] = []  # b1/w1 on chip
    w2_ready: list[int] = []  # b2/w2 too
    x_start = x_done = -1  # the token load: rj_start visible / finished
    x_early = tokens * x_row < a_beats
    c_free = exp_start  # first cycle the compute engine is back in C_WAIT
    mac_cycles = 0
    computed = 0
    never = math.inf

    def x_row_ready(token: int) -> float:
        return beat_seen(x_start, (token + 1) * x_row - 1) if x_start >= 0 else never

    def w1_row_ready(expert: int, row: int) -> int:
        return min(a_ready[expert], beat_seen(wa_start[expert], w1_first + (row + 1) * row_beats - 1))

    def w2_row_ready(expert: int, row: int) -> int:
        return min(w2_ready[expert], beat_seen(a_ready[expert], w2_first + (row + 1) * row2_beats - 1))

    def compute(expert: int) -> None:
        nonlocal c_free, stall, mac_cycles, computed
        queue_len, entry_tokens = used[expert], queue_tokens[expert]
        compute_start = max(q_ready[expert], c_free, clear_done) + 1
        stall += compute_start - c_free
        hidden_ready = [never] * queue_len  # the hidden vector of a queue entry is back from the pipeline
        fc2_end = [0] * queue_len  # the fc2 wave of an entry finished (its ring slot is free)
        fc2_lo = [0] * queue_len  # the first entry of that wave
        cycle = compute_start

        def entry_ready(entry: int) -> int:
            """Entries are read a bus word per cycle, from C_RUN on into the first ring slots, then as each
            fc2 wave ends into the slots it released (the reader resumes at the window's old end)."""
            first = compute_start + 2 + entry // q_per_beat
            if entry < ring:
                return first
            released = entry - ring  # the entry whose ring slot this one takes
            return max(first,
                       fc2_end[released] + 2 + entry // q_per_beat - (fc2_lo[released] + ring) // q_per_beat)

        def run_unit(cycle: int, mem_ready: float, other_ready: float) -> int:
            """Issue one unit at or after ``cycle``; returns its start and counts the memory-wait cycles."""
            nonlocal stall
            start = int(max(cycle, mem_ready, other_ready))
            stall += max(0, int(min(start, mem_ready)) - cycle)
            return start

        fc1_done = fc2_done = 0
        while fc2_done < queue_len:
            if fc2_done < fc1_done:  # an fc2 wave over every token whose fc1 is done
                wave_first, wave_size, layer = fc2_done, fc1_done - fc2_done, 2
            else:  # an fc1 wave over the new tokens the ring has room for whose rows of x are on chip
                wave_first, layer = fc1_done, 1
                wave_size = min(queue_len - fc1_done, ring - (fc1_done - fc2_done))
                cycle = max(cycle, entry_ready(fc1_done + wave_size - 1))
                cycle = run_unit(cycle, max(x_row_ready(entry_tokens[fc1_done]), w1_row_ready(expert, 0)), 0)
                wave_size = sum(1 for entry in range(fc1_done, fc1_done + wave_size)
                                if x_row_ready(entry_tokens[entry]) <= cycle)
            for row in range(fc2_rows if layer == 2 else fc1_rows):
                for entry in range(wave_first, wave_first + wave_size):
                    if layer == 1:
                        ready = max(x_row_ready(entry_tokens[entry]), w1_row_ready(expert, row))
                        cycle = run_unit(cycle, ready, 0) + fc1_tiles
                        if row == fc1_rows - 1:
                            hidden_ready[entry] = cycle + RTL_PIPE
                    else:
                        cycle = run_unit(cycle, w2_row_ready(expert, row), hidden_ready[entry]) + fc2_tiles
            if layer == 2:
                fc2_end[wave_first:wave_first + wave_size] = [cycle] * wave_size
                fc2_lo[wave_first:wave_first + wave_size] = [wave_first] * wave_size
                fc2_done += wave_size
            else:
                fc1_done += wave_size
        last_issue = cycle - 1
        mac_cycles += queue_len * (fc1_rows * fc1_tiles + fc2_rows * fc2_tiles)
        slot_free[expert % 2] = last_issue + RTL_DRAIN + 1
        c_free = last_issue + RTL_DRAIN
        computed += 1

    cycle = exp_start
    expert = 0
    for count in counts:  # the prefetcher scans the experts in ascending order
        if count == 0:
            cycle += 1
            continue
        while expert >= 2 and computed <= expert - 2:
            compute(computed)
        queue_start = max(cycle + 1, slot_free[expert % 2], x_done) + 1
        q_ready.append(done(queue_start, math.ceil(count / q_per_beat)) + 1)
        weights_start = q_ready[-1]
        if expert == 0 and x_early:  # the token rows go first
            x_start = weights_start
            weights_start = x_done = done(x_start, tokens * x_row) + 1
        wa_start.append(weights_start)
        a_ready.append(done(weights_start, a_beats) + 1)
        w2_ready.append(done(a_ready[-1], exp_beats - a_beats) + 1)
        cycle = w2_ready[-1]
        if expert == 0 and not x_early:  # ... or after b2/w2, behind the compute
            x_start = cycle
            x_done = done(x_start, tokens * x_row)
        expert += 1
    pf_done = cycle + 1
    while computed < len(used):
        compute(computed)
    out_start = max(c_free, pf_done, x_done, clear_done) + 1
    out_end = out_start + (RTL_OUT_START + tokens * out_row + RTL_B_LATENCY if tokens else 2)
    return MoeUnitCycles(busy_cycles=out_end + 1, mac_cycles=mac_cycles, stall_cycles=stall,
                         expert_phase_cycles=out_start - exp_start)
