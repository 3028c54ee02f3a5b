"""The step list of one image and its timeline: each step's weight loads overlap the previous step's compute
through two ping-pong slots (docs/performance.md §1–§3)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from m3vit.codegen.bits import ceil_div
from m3vit.codegen.config import DesignConfig
from m3vit.codegen.perf.arch import (
    ARCH,
    OPS,
    Arch,
    bias_bytes,
    container_bytes,
    dma_bytes_per_cycle,
    expert_bytes,
    lanes,
    load_cycles,
    op_rate_div,
    weight_bytes,
)
from m3vit.codegen.perf.engine import EngineModel


# ------------------------------------------------------------------------------------ steps
@dataclass(frozen=True)
class Step:
    """One step of the schedule: the weight group(s) it needs and the work done with them.

    ``units`` are busy cycles of each unit during the step (they run concurrently, pipelined);
    ``compute`` = max(units) + ``fill``. ``weight_bytes`` must be in a slot before the step starts;
    ``side_bytes`` (the router weights of an MoE block's attention step) occupy the other slot.
    """

    name: str
    layer: str  # "embed", "block3", ...
    kind: str  # embed, kv, attn, queues, mlp_chunk, expert
    weight_bytes: int
    units: dict[str, int]
    macs: int
    act_bytes: int  # activation bytes moved over the activation port
    fill: int = 0
    side_bytes: int = 0
    startup: int = 0  # cycles of ``compute`` the MAC array waits for its stages' first weight loads

    @property
    def compute(self) -> int:
        return max(self.units.values(), default=0) + self.fill


class _Builder:
    """Builds the step list of one image (one task) for a config; see docs/performance.md §2."""

    def __init__(self, cfg: DesignConfig, arch: Arch) -> None:
        self.cfg, self.arch = cfg, arch
        self.m, self.hw, self.n = cfg.model, cfg.hardware, cfg.numerics
        self.lanes = lanes(cfg)
        self.act_b = container_bytes(self.n.act.bits)
        self.bw = dma_bytes_per_cycle(cfg, arch)
        self.rate = {op: op_rate_div(cfg, op) for op in OPS}
        self.eng = EngineModel(cfg, arch)

    def ma(self, op: str, n_out: int, k_red: int, tiles: Sequence[int]) -> int:
        """MAC-array cycles of a matmul: weight tiles (ot, it) stationary over each token tile."""
        hw, r = self.hw, self.arch.weight_reuse
        per = sum(max(t, r) for t in tiles)
        return ceil_div(n_out, hw.mac_out) * ceil_div(k_red, hw.mac_in) * per * self.rate[op]

    def dma(self, nbytes: int) -> int:
        return math.ceil(nbytes / self.bw) if nbytes > 0 else 0

    def step(self, name: str, layer: str, kind: str, wbytes: int, units: dict[str, int], macs: int,
             act_bytes: int, fill: int = 0, side_bytes: int = 0) -> Step:
        units = {k: v for k, v in units.items() if v > 0}
        if act_bytes:
            units["dma_act"] = self.dma(act_bytes)
        return Step(name, layer, kind, wbytes, units, macs, act_bytes, fill=self.arch.pipeline_depth + fill,
                    side_bytes=side_bytes)

    # -- the steps: the stages of the generated kernels (m3vit.codegen.perf.engine) ----------------------
    def staged(self, name: str, layer: str, kind: str, wbytes: int, mac: int, critical: int, macs: int,
               act_bytes: int, side_bytes: int = 0, startup: int = 0) -> Step:
        """A step of one or more stages run one after another: ``critical`` is the sum of their regions' cycles
        (``startup`` of them waiting for first weight loads), ``mac`` the MAC array's busy cycles within them."""
        return Step(name, layer, kind, wbytes, {"mac": mac, "critical": critical}, macs, act_bytes,
                    side_bytes=side_bytes, startup=startup)

    def embed(self) -> list[Step]:
        m, n = self.m, self.n
        r = self.eng.dense("embed")
        wb, bb = weight_bytes(self.cfg), bias_bytes(self.cfg)
        image = m.num_patches * m.patch_dim * container_bytes(n.input.bits)
        return [self.staged("embed", "embed", "embed", m.dim * (m.patch_dim * wb + bb), r.mac, r.cycles,
                            m.num_patches * m.patch_dim * m.dim, image + 2 * m.num_tokens * m.dim * self.act_b,
                            startup=r.startup)]

    def block(self, b: int, loads: Sequence[int] | None) -> list[Step]:
        m = self.m
        t, d = m.num_tokens, m.dim
        wb, bb = weight_bytes(self.cfg), bias_bytes(self.cfg)
        layer = f"block{b}"
        r = self.eng.dense("kv")
        steps = [self.staged(f"{layer}.kv", layer, "kv", 2 * d * d * wb + 2 * d * bb, r.mac, r.cycles, t * d * 2 * d,
                             t * d * (self.act_b + 3), startup=r.startup)]
        steps.append(self.attention(b))
        if m.is_moe(b):
            steps += self.moe(b, loads)
        else:
            steps += self.mlp(b)
        return steps

    def attention(self, b: int) -> Step:
        """The queries (Q stage), attention on the MAC array, proj + residual and, in MoE blocks, LayerNorm 2
        and the router with its routing lanes: stages run one after another."""
        m = self.m
        t, d, ne = m.num_tokens, m.dim, m.num_experts
        wb, bb = weight_bytes(self.cfg), bias_bytes(self.cfg)
        moe = m.is_moe(b)
        regions = [self.eng.dense("q"), self.eng.dense("proj")] + ([self.eng.dense("router")] if moe else [])
        att = self.eng.attention()
        mac = sum(r.mac for r in regions) + att
        critical = sum(r.cycles for r in regions) + att
        macs = t * d * d * 2 + 2 * t * t * d + (t * d * ne if moe else 0)
        return self.staged(f"block{b}.attn", f"block{b}", "attn", 2 * d * d * wb + 2 * d * bb, mac, critical, macs,
                           4 * t * d * self.act_b, side_bytes=ne * d * wb if moe else 0,
                           startup=sum(r.startup for r in regions))

    def mlp(self, b: int) -> list[Step]:
        m = self.m
        t, d, f = m.num_tokens, m.dim, m.mlp_hidden
        wb, bb = weight_bytes(self.cfg), bias_bytes(self.cfg)
        regions = [self.eng.dense("fc1"), self.eng.dense("fc2")]
        return [self.staged(f"block{b}.mlp", f"block{b}", "mlp_chunk", 2 * d * f * wb + (f + d) * bb,
                            sum(r.mac for r in regions), sum(r.cycles for r in regions), 2 * t * d * f,
                            t * (3 * d + 2 * f) * self.act_b, startup=sum(r.startup for r in regions))]

    def moe(self, b: int, loads: Sequence[int] | None) -> list[Step]:
        m = self.m
        t, ne, k = m.num_tokens, m.num_experts, m.top_k
        counts = balanced_loads(t, ne, k) if loads is None else [int(v) for v in loads]
        # a pruned layer may route with a lower K' (docs/pruning.md): T·K' entries, 1 ≤ K' ≤ K
        if len(counts) != ne or sum(counts) not in range(t, t * k + 1, t):
            raise ValueError(f"block {b}: loads must be {ne} queue lengths summing to T·K' for K' in [1, {k}] "
                             f"(T·K = {t * k}), got {counts}")
        used = sum(1 for n in counts if n > 0)
        steps = [self.queues(b, used)]
        # an empty expert is skipped: no load, no compute
        # each token's output row is written by its last expert's writer: no finalize step
        steps += [self.expert(b, x, n) for x, n in enumerate(counts) if n > 0]
        return steps

    def queues(self, b: int, used: int | None = None) -> Step:
        """Counting sort of the T·K routing entries into per-expert queues (overlaps the first expert's load)."""
        m = self.m
        c = self.eng.queues(m.num_experts if used is None else used)
        return self.staged(f"block{b}.queues", f"block{b}", "queues", 0, 0, c, 0, 0)

    def expert(self, b: int, x: int, n: int) -> Step:
        """Expert ``x`` over a queue of ``n`` tokens: gather, fc1, GELU, fc2, y · g into the accumulator."""
        m = self.m
        d, e = m.dim, m.expert_hidden
        r = self.eng.expert(n)
        return self.staged(f"block{b}.expert{x}", f"block{b}", "expert", expert_bytes(self.cfg), r.mac, r.cycles,
                           2 * n * d * e, n * d * self.act_b)


def expert_step(cfg: DesignConfig, tokens: int, arch: Arch = ARCH) -> Step:
    """The step of one expert over a queue of ``tokens`` tokens (as in an MoE block's expert phase)."""
    return _Builder(cfg, arch).expert(0, 0, tokens)


def queue_step(cfg: DesignConfig, arch: Arch = ARCH) -> Step:
    """The queue-building step that precedes an expert-by-expert phase."""
    return _Builder(cfg, arch).queues(0)


def balanced_loads(tokens: int, experts: int, top_k: int) -> list[int]:
    """A perfectly balanced routing: T·K queue entries spread as evenly as possible over N experts."""
    q, r = divmod(tokens * top_k, experts)
    return [q + (1 if i < r else 0) for i in range(experts)]


def build_steps(cfg: DesignConfig, loads: Mapping[int, Sequence[int]] | None = None, arch: Arch = ARCH) -> list[Step]:
    """The whole image as a step list: embedding, then per block kv, attn (+ router), then queues + experts
    (MoE; each expert's writer finishes the output rows of the tokens it is the last expert of) or MLP chunks.
    ``loads`` maps MoE block index → per-expert queue lengths (default: balanced)."""
    bld = _Builder(cfg, arch)
    steps = bld.embed()
    for b in range(cfg.model.depth):
        steps += bld.block(b, None if loads is None else loads.get(b))
    return steps


# ------------------------------------------------------------------------------------ timeline
@dataclass(frozen=True)
class Timeline:
    """Cycle timeline of a step list under the two-slot weight pipeline.

    Weight groups are assigned to slots in turn; a group's load starts when the weight port is free and
    its slot has been released by the step that used it before; a step computes after the previous step
    and after its own loads. ``stall[i]`` is the time step i waited for weights after the previous step.
    """

    start: list[int]
    end: list[int]
    load_start: list[int]
    load_end: list[int]
    stall: list[int]

    @property
    def total(self) -> int:
        return self.end[-1] if self.end else 0


def run_timeline(cfg: DesignConfig, steps: Sequence[Step], arch: Arch = ARCH, slots: int = 2) -> Timeline:
    """Schedule ``steps`` with ``slots`` weight buffers (2 = ping-pong) and one weight port."""
    start, end, ls, le, stall = [], [], [], [], []
    port_free = 0
    slot_free = [0] * slots
    j = 0
    prev_end = 0
    for st in steps:
        used: list[int] = []
        l0 = l1 = prev_end
        for nbytes in (st.weight_bytes, st.side_bytes):
            if nbytes <= 0:
                continue
            s = j % slots
            a = max(port_free, slot_free[s])
            port_free = a + load_cycles(cfg, nbytes, arch)
            l0 = a if not used else l0
            l1 = port_free
            used.append(s)
            j += 1
        c0 = max(prev_end, l1)
        c1 = c0 + st.compute
        for s in used:
            slot_free[s] = c1
        start.append(c0)
        end.append(c1)
        ls.append(l0 if used else c0)
        le.append(l1 if used else c0)
        stall.append(c0 - prev_end)
        prev_end = c1
    return Timeline(start, end, ls, le, stall)


