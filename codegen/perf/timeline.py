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
    mlp_chunk_hidden,
    op_rate_div,
    patch_chunks,
    tile_lengths,
    weight_bytes,
)


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
    kind: str  # embed, kv, attn, queues, mlp_chunk, expert, finalize
    weight_bytes: int
    units: dict[str, int]
    macs: int
    act_bytes: int  # activation bytes moved over the activation port
    fill: int = 0
    side_bytes: int = 0

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

    def finalize_work(self) -> tuple[dict[str, int], int]:
        """Closing a block: x ← SAT(x + REQ(acc)) row by row, LN statistics of the new x (out/ln lanes),
        x read and written over the activation port."""
        t, d = self.m.num_tokens, self.m.dim
        return {"out": t * d // self.lanes.out, "ln_stats": t * d // self.lanes.ln}, 2 * t * d * self.act_b

    # -- the steps ------------------------------------------------------------------------------
    def embed(self) -> list[Step]:
        m, n = self.m, self.n
        wb, bb = weight_bytes(self.cfg), bias_bytes(self.cfg)
        tiles = tile_lengths(m.num_patches, self.hw.token_tile)
        in_b = container_bytes(n.input.bits)
        steps = []
        chunks = patch_chunks(self.cfg)
        for i, rows in enumerate(chunks):
            image = m.num_patches * m.patch_dim * in_b
            pos = m.num_tokens * rows * self.act_b
            out = m.num_tokens * rows * self.act_b * (1 if i == 0 else 2)  # later chunks update written rows
            units = {"mac": self.ma("patch_embed", rows, m.patch_dim, tiles)}
            if i == len(chunks) - 1:
                units["ln_stats"] = m.num_tokens * m.dim // self.lanes.ln
            steps.append(self.step(f"embed.{i}", "embed", "embed", rows * (m.patch_dim * wb + bb), units,
                                   m.num_patches * m.patch_dim * rows, image + pos + out))
        return steps

    def block(self, b: int, loads: Sequence[int] | None) -> list[Step]:
        m, hw, ln = self.m, self.hw, self.lanes
        t, d = m.num_tokens, m.dim
        wb, bb = weight_bytes(self.cfg), bias_bytes(self.cfg)
        layer = f"block{b}"
        tt = tile_lengths(t, hw.token_tile)
        units = {"mac": self.ma("qkv", 2 * d, d, tt), "ln": t * d // ln.ln}
        act = t * d * self.act_b
        if b > 0:
            # the previous block's finalize runs in the same pass, token row by token row: its accumulator
            # row is read just before this block's K,V row overwrites it (they share kv_or_acc)
            fin, fin_act = self.finalize_work()
            units = {k: units.get(k, 0) + fin.get(k, 0) for k in set(units) | set(fin)}
            act = fin_act
        steps = [self.step(f"{layer}.kv", layer, "kv", 2 * d * d * wb + 2 * d * bb, units, t * d * 2 * d, act)]
        steps.append(self.attention(b))
        if m.is_moe(b):
            steps += self.moe(b, loads)
        else:
            steps += self.mlp(b)
        if b == m.depth - 1:
            fin, fin_act = self.finalize_work()
            steps.append(self.step(f"{layer}.finalize", layer, "finalize", 0, fin, 0, fin_act))
        return steps

    def attention(self, b: int) -> Step:
        """Per query group of mac_out tokens: q, q·kᵀ and p·v over every key block, proj, residual; in MoE
        blocks also LN2 and the router (its weights in the other slot) on the finished rows."""
        m, hw, ln = self.m, self.hw, self.lanes
        t, d, h, hd, ne = m.num_tokens, m.dim, m.num_heads, m.head_dim, m.num_experts
        mi, mo, r = hw.mac_in, hw.mac_out, self.arch.weight_reuse
        wb, bb = weight_bytes(self.cfg), bias_bytes(self.cfg)
        qk_div, pv_div = self.rate["attn_qk"], self.rate["attn_pv"]
        blocks = tile_lengths(t, hw.attn_key_block)
        head_passes = ceil_div(h, ln.heads_per_pass)
        moe = m.is_moe(b)
        mac = soft = lnc = rtr = 0
        pv_chunks = sum(ceil_div(nb, mi) for nb in blocks)
        groups = tile_lengths(t, mo)  # query groups: mac_out queries stationary in the array
        for ng in set(groups):
            count = groups.count(ng)
            g_mac = self.ma("qkv", d, d, [ng]) + self.ma("proj", d, d, [ng])
            # q·kᵀ: one key per cycle per (head pass, dim pass), plus loading the stationary q tile
            g_mac += head_passes * ln.hd_passes * (t * qk_div + r)
            # p·v: stationary p tile (mac_out queries × mac_in keys), one vᵀ row (a head dim) per cycle
            g_mac += h * pv_chunks * max(hd, r) * pv_div
            # softmax unit: exp lanes and rescale lanes work concurrently on a block; then the final acc · R
            g_soft = h * sum(max(ceil_div(ng * nb, ln.exp), ceil_div(ng * hd, ln.acc)) for nb in blocks)
            g_soft += h * ceil_div(ng * hd, ln.acc)
            g_ln = ng * d // ln.ln
            if moe:
                g_mac += self.ma("router", ne, d, [ng])
                rtr += count * (ng * (ne + m.top_k) // ln.router)
                g_ln += ng * d // ln.ln
            mac += count * g_mac
            soft += count * g_soft
            lnc += count * g_ln
        macs = t * d * d * 2 + 2 * t * t * d + (t * d * ne if moe else 0)
        # the first key block's exps of a layer cannot overlap anything: one exp pass exposed
        fill = ceil_div(min(mo, t) * min(hw.attn_key_block, t), ln.exp)
        act = 2 * t * d * self.act_b  # read x (LN1 → q, residual), write x'
        return self.step(f"block{b}.attn", f"block{b}", "attn", 2 * d * d * wb + 2 * d * bb,
                         {"mac": mac, "softmax": soft, "ln": lnc, "router": rtr}, macs, act, fill=fill,
                         side_bytes=ne * d * wb if moe else 0)

    def mlp(self, b: int) -> list[Step]:
        m, hw, ln = self.m, self.hw, self.lanes
        t, d = m.num_tokens, m.dim
        c = mlp_chunk_hidden(self.cfg)
        wb, bb = weight_bytes(self.cfg), bias_bytes(self.cfg)
        tt = tile_lengths(t, hw.token_tile)
        steps = []
        for j in range(m.mlp_hidden // c):
            mac = self.ma("mlp_fc1", c, d, tt) + self.ma("mlp_fc2", d, c, tt)
            steps.append(self.step(
                f"block{b}.mlp.{j}", f"block{b}", "mlp_chunk", 2 * d * c * wb + (c + (d if j == 0 else 0)) * bb,
                {"mac": mac, "ln": t * d // ln.ln, "out": t * (c + d) // ln.out}, 2 * t * d * c,
                t * d * self.act_b))
        return steps

    def moe(self, b: int, loads: Sequence[int] | None) -> list[Step]:
        m = self.m
        t, ne, k = m.num_tokens, m.num_experts, m.top_k
        counts = balanced_loads(t, ne, k) if loads is None else [int(v) for v in loads]
        # a pruned layer may route with a lower K' (docs/pruning.md): T·K' entries, 1 ≤ K' ≤ K
        if len(counts) != ne or sum(counts) not in range(t, t * k + 1, t):
            raise ValueError(f"block {b}: loads must be {ne} queue lengths summing to T·K' for K' in [1, {k}] "
                             f"(T·K = {t * k}), got {counts}")
        steps = [self.queues(b)]
        # an empty expert is skipped: no load, no compute
        steps += [self.expert(b, x, n) for x, n in enumerate(counts) if n > 0]
        return steps

    def queues(self, b: int) -> Step:
        """Counting sort of the T·K routing entries into per-expert queues (overlaps the first expert's load)."""
        m = self.m
        return self.step(f"block{b}.queues", f"block{b}", "queues", 0,
                         {"queue": m.num_tokens * m.top_k + m.num_experts}, 0, 0)

    def expert(self, b: int, x: int, n: int) -> Step:
        """Expert ``x`` over a queue of ``n`` tokens: gather + LN2, fc1, GELU, fc2, y · g into the accumulator."""
        m, hw, ln = self.m, self.hw, self.lanes
        d, e = m.dim, m.expert_hidden
        qt = tile_lengths(n, hw.token_tile)
        mac = self.ma("expert_fc1", e, d, qt) + self.ma("expert_fc2", d, e, qt)
        return self.step(f"block{b}.expert{x}", f"block{b}", "expert", expert_bytes(self.cfg),
                         {"mac": mac, "ln": n * d // ln.ln, "out": n * (e + d) // ln.out}, 2 * n * d * e,
                         n * d * self.act_b)


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
    """The whole image as a step list: embedding, then per block kv (+ the previous block's finalize),
    attn (+ router), then queues + experts (MoE) or MLP chunks; the last block ends with a finalize.
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


