"""Analytic performance, resource and memory model of the M³ViT accelerator (docs/performance.md).

``evaluate(cfg)`` models one image of one task on the architecture described in docs/performance.md
and returns a :class:`PerfReport`: cycles per step, per layer and per unit, the weight-load stalls,
DSP / BRAM36 / URAM / LUT / FF estimates, every on-chip buffer in bytes, DDR traffic and the DSP
roofline floor. Everything is computed from the config (sizes, numeric formats, hardware knobs) and
the few micro-architecture constants of :class:`Arch`; nothing is measured. MoE layers take the
per-expert queue lengths of a real routing (``loads``) or, by default, a perfectly balanced one.

The architecture in one paragraph: one MAC array of ``mac_in × mac_out`` lanes does every matmul
(linear layers, q·kᵀ, p·v, router), weight-stationary over a token tile; weights stream from DDR
through two ping-pong slots the size of one expert, so the load of the next weight group overlaps the
compute of the current one (dense MLPs run as ``mlp_hidden / expert_hidden`` expert-shaped chunks);
LayerNorm, GELU, softmax and router units are pipelined behind the array; K, V and the MoE/MLP
accumulator share one on-chip buffer (never live at the same time); the residual stream stays in DDR.

:func:`moe_unit_cycles` is the separate, exact model of the RTL MoE unit (``rtl/``), validated against
cocotb measurements; :func:`parse_csynth` / :func:`compare_csynth` put Vitis HLS reports next to the
model, loop by loop.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from m3vit.codegen.config import BoardSpec, DesignConfig
from m3vit.codegen.layout import container_bits, pow2_ceil
from m3vit.codegen.numerics import PROB_FRAC, SCALE_FRAC

MIB = 1 << 20
BRAM36_BITS = 36 * 1024
URAM_BITS = 288 * 1024
BRAM36_SHAPES = ((72, 512), (36, 1024), (18, 2048), (9, 4096), (4, 8192), (2, 16384), (1, 32768))
"""(width, depth) configurations of a BRAM36 in simple dual-port mode."""
URAM_SHAPE = (72, 4096)
LUTRAM_MAX_BITS = 4096
"""Buffers up to this size are built from LUTs (distributed RAM), not block RAM."""
LUTRAM_MAX_DEPTH = 256
"""Shallow, wide buffers (psums, score blocks) are built from LUTs too, as synthesis does."""


# ------------------------------------------------------------------------------------ assumptions
@dataclass(frozen=True)
class Arch:
    """Micro-architecture constants of the modeled design that are not config knobs (see the docs)."""

    hp_port_bits: int = 128  # S_AXI_HPx_FPD data width; a wider m_axi is narrowed to this by the interconnect
    axi_efficiency: float = 0.85  # sustained fraction of an HP port's peak for long bursts (refresh, turnarounds)
    ddr_latency: int = 120  # cycles from a read request to its first beat (exposed once per transfer)
    burst_beats: int = 16  # beats per m_axi burst (Vitis max_read_burst_length default)
    outstanding: int = 16  # bursts in flight per port (Vitis num_read_outstanding default)
    weight_reuse: int = 16  # minimum tokens per weight-tile read: the weight buffer is tile_bits / this wide
    pipeline_depth: int = 16  # MAC array fill + drain per step (multiplier, adder tree, requantisation)
    max_experts: int = 256  # the queue-offset table is sized for the config's maximum N (so memory ⟂ N)
    util_limit: float = 0.80  # a design fits when every resource is at most this fraction of the board
    acc_container_bits: int = 36  # MoE / MLP accumulators and psums stored in 36-bit containers (2 per 72b word)


ARCH = Arch()


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _tiles(n: int, size: int) -> list[int]:
    """Lengths of the tiles of ``size`` covering ``n`` items (the last one may be short)."""
    if n <= 0:
        return []
    return [size] * (n // size) + ([n % size] if n % size else [])


def _container_bytes(bits: int) -> int:
    return container_bits(bits) // 8


# ------------------------------------------------------------------------------------ DSP packing
PROB_OPERAND_BITS = PROB_FRAC + 3
"""Attention probabilities are unsigned Q.15 values up to 2^15 (17 bits); as a signed DSP operand, 18."""


def macs_per_dsp(a_bits: int, b_bits: int) -> int:
    """MACs one DSP48E2 does per cycle for an ``a_bits`` × ``b_bits`` signed product.

    The rule (Xilinx WP486 "INT8" packing): two products that share one operand fit one DSP48E2 when all
    three operands are ≤ 8 bits — the two 8-bit values sit 18 bits apart on the 27-bit A/D port, the
    shared one on the 18-bit B port, and the low product's sign borrow is corrected after the multiply.
    Otherwise one product per DSP when it fits the 27 × 18 multiplier; wider products are not supported.
    """
    lo, hi = sorted((a_bits, b_bits))
    if hi <= 8:
        return 2
    if lo <= 18 and hi <= 27:
        return 1
    raise ValueError(f"a {a_bits} x {b_bits}-bit product does not fit one DSP48E2 (27 x 18)")


OPS: dict[str, tuple[str, str]] = {
    "patch_embed": ("input", "weight"),
    "qkv": ("norm", "weight"),
    "proj": ("qkv", "weight"),
    "attn_qk": ("qkv", "qkv"),
    "attn_pv": ("prob", "qkv"),
    "mlp_fc1": ("norm", "weight"),
    "mlp_fc2": ("hidden", "weight"),
    "router": ("norm", "weight"),
    "expert_fc1": ("norm", "weight"),
    "expert_fc2": ("hidden", "weight"),
}
"""Every kind of matmul the MAC array runs and the tensor classes of its two operands."""


def operand_bits(cfg: DesignConfig, cls: str) -> int:
    return PROB_OPERAND_BITS if cls == "prob" else getattr(cfg.numerics, cls).bits


def array_packed(cfg: DesignConfig) -> bool:
    """The MAC array packs two lanes per DSP when the dense-MLP/expert operands are all ≤ 8 bits."""
    return all(macs_per_dsp(operand_bits(cfg, a), operand_bits(cfg, b)) == 2
               for a, b in (OPS["mlp_fc1"], OPS["mlp_fc2"]))


def op_rate_div(cfg: DesignConfig, op: str) -> int:
    """Cycles per streamed vector of ``op`` relative to full rate: 2 when the array is packed but this
    op's operands are too wide to pack (each DSP then does one of its two lanes per cycle), else 1."""
    a, b = OPS[op]
    return 2 if array_packed(cfg) and macs_per_dsp(operand_bits(cfg, a), operand_bits(cfg, b)) == 1 else 1


def op_macs_per_dsp(cfg: DesignConfig, op: str) -> int:
    """MACs per DSP per cycle of ``op`` on this design's array (2 only when the array packs and op packs)."""
    return 2 if array_packed(cfg) and op_rate_div(cfg, op) == 1 else 1


# ------------------------------------------------------------------------------------ work counts
def mac_counts(cfg: DesignConfig) -> dict[str, int]:
    """Useful MACs of one image (one task) by matmul kind (padding excluded). Expert MACs do not depend
    on the routing: every token runs exactly K experts."""
    m = cfg.model
    t, d, f, e = m.num_tokens, m.dim, m.mlp_hidden, m.expert_hidden
    n_moe = len(m.moe_block_set)
    n_dense = m.depth - n_moe
    return {
        "patch_embed": m.num_patches * m.patch_dim * d,
        "qkv": m.depth * t * d * 3 * d,
        "proj": m.depth * t * d * d,
        "attn_qk": m.depth * t * t * d,
        "attn_pv": m.depth * t * t * d,
        "mlp_fc1": n_dense * t * d * f,
        "mlp_fc2": n_dense * t * f * d,
        "router": n_moe * t * d * m.num_experts,
        "expert_fc1": n_moe * t * m.top_k * d * e,
        "expert_fc2": n_moe * t * m.top_k * e * d,
    }


def dsp_cycles(cfg: DesignConfig) -> float:
    """DSP-cycles the image needs at this design's packing: Σ_op MACs_op / MACs-per-DSP_op."""
    return sum(n / op_macs_per_dsp(cfg, op) for op, n in mac_counts(cfg).items())


def dsp_floor_s(cfg: DesignConfig, dsps: int) -> float:
    """DSP roofline floor in seconds: DSP-cycles / (dsps × f_clk), i.e. total MACs / (DSPs × MACs/DSP × f)."""
    return dsp_cycles(cfg) / (dsps * cfg.hardware.clock_mhz * 1e6)


# ------------------------------------------------------------------------------------ weights
def bias_bytes(cfg: DesignConfig) -> int:
    return _container_bytes(cfg.numerics.bias_bits)


def weight_bytes(cfg: DesignConfig) -> int:
    return _container_bytes(cfg.numerics.weight.bits)


def expert_bytes(cfg: DesignConfig) -> int:
    """DDR bytes of one expert (W1, b1, W2, b2) = what one expert load moves."""
    m = cfg.model
    return 2 * m.dim * m.expert_hidden * weight_bytes(cfg) + (m.expert_hidden + m.dim) * bias_bytes(cfg)


def mlp_chunk_hidden(cfg: DesignConfig) -> int:
    """Hidden width of one dense-MLP chunk: the dense MLP runs as mlp_hidden / chunk expert-shaped FFNs."""
    m = cfg.model
    e, f = m.expert_hidden, m.mlp_hidden
    return e if e <= f and f % e == 0 else f


def slot_bytes(cfg: DesignConfig) -> int:
    """Capacity of one weight slot: the largest weight group any step needs (an expert, W_k+W_v, W_q+W_proj,
    a dense-MLP chunk, a router); the patch embedding is split into row chunks that fit it."""
    m = cfg.model
    wb, bb = weight_bytes(cfg), bias_bytes(cfg)
    c = mlp_chunk_hidden(cfg)
    groups = [
        expert_bytes(cfg),
        2 * m.dim * m.dim * wb + 2 * m.dim * bb,
        2 * m.dim * c * wb + (c + m.dim) * bb,
        m.num_experts * m.dim * wb,
    ]
    return max(groups)


def patch_chunks(cfg: DesignConfig) -> list[int]:
    """Output rows of the patch-embedding weight per slot-sized chunk."""
    m = cfg.model
    row = m.patch_dim * weight_bytes(cfg) + bias_bytes(cfg)
    per = max(1, slot_bytes(cfg) // row)
    return _tiles(m.dim, per)


# ------------------------------------------------------------------------------------ DDR model
def dma_bytes_per_cycle(cfg: DesignConfig, arch: Arch = ARCH) -> float:
    """Sustained bytes per PL clock cycle of one m_axi port (one HP port), capped by the DDR.

    Burst model: a transfer is split into bursts of ``burst_beats``; with ``outstanding`` bursts in flight the
    read latency is hidden when outstanding · burst_beats ≥ latency, otherwise the port delivers
    outstanding · burst_beats beats per (latency + burst_beats) cycles."""
    hw = cfg.hardware
    window = arch.outstanding * arch.burst_beats
    hidden = min(1.0, window / (arch.ddr_latency + arch.burst_beats))
    port = min(hw.axi_data_bits, arch.hp_port_bits) / 8 * arch.axi_efficiency * hidden
    ddr = hw.board_spec.ddr_gbytes_per_s * 1e9 / (hw.clock_mhz * 1e6)
    return min(port, ddr)


def load_cycles(cfg: DesignConfig, nbytes: int, arch: Arch = ARCH) -> int:
    """Cycles to move ``nbytes`` over one port: first-beat latency + bytes / sustained rate."""
    if nbytes <= 0:
        return 0
    return arch.ddr_latency + math.ceil(nbytes / dma_bytes_per_cycle(cfg, arch))


# ------------------------------------------------------------------------------------ side units
@dataclass(frozen=True)
class Lanes:
    """Lane counts of the units pipelined behind the MAC array (each chosen to keep up with it)."""

    ln: int  # LayerNorm normalise lanes (and as many squarers for the statistics)
    out: int  # requantise / GELU / gate-multiply / residual lanes behind the array's outputs
    exp: int  # attention score-scale + exp2 lanes (one per score the array emits per cycle)
    acc: int  # attention accumulator rescale (x α) / final (x R) lanes
    router: int  # router softmax multipliers
    heads_per_pass: int  # heads the array reduces at once in q·kᵀ (split adder tree)
    hd_passes: int  # passes over one head's dims when mac_in < head_dim


def lanes(cfg: DesignConfig) -> Lanes:
    m, hw = cfg.model, cfg.hardware
    mi, mo = hw.mac_in, hw.mac_out
    hd = m.head_dim
    hp = mi // hd if mi >= hd else 1
    hd_passes = 1 if mi >= hd else _cdiv(hd, mi)
    min_it = min(_cdiv(m.dim, mi), _cdiv(m.expert_hidden, mi))
    blk = min(hw.attn_key_block, m.num_tokens)
    pv_div = op_rate_div(cfg, "attn_pv")
    per_block = blk * hd_passes * op_rate_div(cfg, "attn_qk") + _cdiv(blk, mi) * hd * pv_div
    return Lanes(
        ln=max(1, mi // 4),
        out=pow2_ceil(_cdiv(mo, min_it)),
        exp=mo * hp,
        acc=max(1, _cdiv(mo * hd, per_block)),
        router=max(1, _cdiv(m.num_experts + m.top_k, _cdiv(m.num_experts, mo) * _cdiv(m.dim, mi))),
        heads_per_pass=hp,
        hd_passes=hd_passes,
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
        self.act_b = _container_bytes(self.n.act.bits)
        self.bw = dma_bytes_per_cycle(cfg, arch)
        self.rate = {op: op_rate_div(cfg, op) for op in OPS}

    def ma(self, op: str, n_out: int, k_red: int, tiles: Sequence[int]) -> int:
        """MAC-array cycles of a matmul: weight tiles (ot, it) stationary over each token tile."""
        hw, r = self.hw, self.arch.weight_reuse
        per = sum(max(t, r) for t in tiles)
        return _cdiv(n_out, hw.mac_out) * _cdiv(k_red, hw.mac_in) * per * self.rate[op]

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
        tiles = _tiles(m.num_patches, self.hw.token_tile)
        in_b = _container_bytes(n.input.bits)
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
        tt = _tiles(t, hw.token_tile)
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
        blocks = _tiles(t, hw.attn_key_block)
        head_passes = _cdiv(h, ln.heads_per_pass)
        moe = m.is_moe(b)
        mac = soft = lnc = rtr = 0
        pv_chunks = sum(_cdiv(nb, mi) for nb in blocks)
        groups = _tiles(t, mo)  # query groups: mac_out queries stationary in the array
        for ng in set(groups):
            count = groups.count(ng)
            g_mac = self.ma("qkv", d, d, [ng]) + self.ma("proj", d, d, [ng])
            # q·kᵀ: one key per cycle per (head pass, dim pass), plus loading the stationary q tile
            g_mac += head_passes * ln.hd_passes * (t * qk_div + r)
            # p·v: stationary p tile (mac_out queries × mac_in keys), one vᵀ row (a head dim) per cycle
            g_mac += h * pv_chunks * max(hd, r) * pv_div
            # softmax unit: exp lanes and rescale lanes work concurrently on a block; then the final acc · R
            g_soft = h * sum(max(_cdiv(ng * nb, ln.exp), _cdiv(ng * hd, ln.acc)) for nb in blocks)
            g_soft += h * _cdiv(ng * hd, ln.acc)
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
        fill = _cdiv(min(mo, t) * min(hw.attn_key_block, t), ln.exp)
        act = 2 * t * d * self.act_b  # read x (LN1 → q, residual), write x'
        return self.step(f"block{b}.attn", f"block{b}", "attn", 2 * d * d * wb + 2 * d * bb,
                         {"mac": mac, "softmax": soft, "ln": lnc, "router": rtr}, macs, act, fill=fill,
                         side_bytes=ne * d * wb if moe else 0)

    def mlp(self, b: int) -> list[Step]:
        m, hw, ln = self.m, self.hw, self.lanes
        t, d = m.num_tokens, m.dim
        c = mlp_chunk_hidden(self.cfg)
        wb, bb = weight_bytes(self.cfg), bias_bytes(self.cfg)
        tt = _tiles(t, hw.token_tile)
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
        if len(counts) != ne or sum(counts) != t * k:
            raise ValueError(f"block {b}: loads must be {ne} queue lengths summing to T·K = {t * k}, got {counts}")
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
        qt = _tiles(n, hw.token_tile)
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


# ------------------------------------------------------------------------------------ memory
@dataclass(frozen=True)
class Buffer:
    """An on-chip buffer: ``bits`` stored, read/written ``width`` bits per cycle (its port width)."""

    name: str
    bits: int
    width: int
    note: str = ""

    @property
    def bytes(self) -> int:
        return _cdiv(self.bits, 8)

    @property
    def depth(self) -> int:
        return _cdiv(self.bits, self.width)

    def bram36(self) -> int:
        """BRAM36 blocks for this width and depth (best SDP aspect ratio)."""
        return min(_cdiv(self.width, w) * _cdiv(self.depth, d) for w, d in BRAM36_SHAPES)

    def uram(self) -> int:
        w, d = URAM_SHAPE
        return _cdiv(self.width, w) * _cdiv(self.depth, d)

    def lutram(self) -> int:
        """LUTs as simple dual-port distributed RAM (RAM64M8: 7 bits × 64 words per 8 LUTs)."""
        return _cdiv(self.width * _cdiv(self.depth, 64) * 8, 7)


def buffers(cfg: DesignConfig, arch: Arch = ARCH, expert_slots: int = 2) -> list[Buffer]:
    """Every on-chip buffer of the design (docs/performance.md §4). None depends on N (num_experts):
    router weights stream through the weight slots, logits reuse the psum buffer and the queue tables hold
    T·K entries plus an offset table sized for ``arch.max_experts``."""
    m, hw, n = cfg.model, cfg.hardware, cfg.numerics
    t, d, hd, k = m.num_tokens, m.dim, m.head_dim, m.top_k
    mi, mo, tt = hw.mac_in, hw.mac_out, hw.token_tile
    ln = lanes(cfg)
    acc_c = arch.acc_container_bits
    wbits = 8 * weight_bytes(cfg)
    qkv_b, norm_b, hid_b, act_b = n.qkv.bits, n.norm.bits, n.hidden.bits, n.act.bits
    c = mlp_chunk_hidden(cfg)
    hid_w = max(m.expert_hidden, c)
    ctx_acc = PROB_FRAC + n.qkv.bits + math.ceil(math.log2(t + 1)) + 1  # |acc| < T·2^15·2^(qkv.bits-1)
    z_bits = 32
    idx_bits = max(8, math.ceil(math.log2(t)))
    tile_q = max(tt, mo)
    kv = 2 * t * d * qkv_b
    macc = t * d * acc_c
    out = [
        Buffer("weight_slots", expert_slots * slot_bytes(cfg) * 8, mi * mo * wbits // arch.weight_reuse,
               f"{expert_slots} slots of {slot_bytes(cfg)} B; a mac_out×mac_in tile every {arch.weight_reuse} cycles"),
        Buffer("kv_or_acc", max(kv, macc), max(mi * qkv_b, ln.out * acc_c),
               "K,V (attention) or the MoE/MLP accumulator (MLP phase): never live together"),
        Buffer("norm_tile", 2 * tile_q * d * norm_b, mi * norm_b, "LayerNorm output tile, double-buffered"),
        Buffer("q_tile", mo * d * qkv_b, mi * qkv_b, "queries of one query group"),
        Buffer("ctx_tile", mo * d * qkv_b, mi * qkv_b, "attention context of one query group"),
        Buffer("attn_state", 2 * mo * (hd * ctx_acc + 2 * 32), ln.acc * ctx_acc, "m, l, acc of (group, head), x2"),
        Buffer("score_block", 2 * mo * hw.attn_key_block * (z_bits + PROB_OPERAND_BITS), ln.exp * z_bits,
               "z and p of one key block, double-buffered"),
        Buffer("hidden_tile", 2 * tt * hid_w * hid_b, mi * hid_b, "expert / MLP-chunk hidden tile, x2"),
        Buffer("psum", 2 * tt * mo * acc_c, mo * acc_c, "partial sums of a token tile (also router logits), x2"),
        Buffer("x_tile", 2 * tile_q * d * act_b, max(ln.ln, ln.out) * act_b, "residual-stream tile from DDR, x2"),
        Buffer("ln_stats", t * (2 * (act_b + math.ceil(math.log2(d)) + 1) + 17 + 6), 64,
               "per-token S1, R, L of the next LayerNorm (LN2 on the fly for gathered tokens)"),
        Buffer("routing", t * k * (idx_bits + 16 + 16), 64, "per-token experts + gates, and the T·K queue"),
        Buffer("queue_offsets", (arch.max_experts + 1) * 16, 16, "sized for the largest N the config allows"),
    ]
    return [b for b in out if b.bits > 0]


def on_chip_bytes(cfg: DesignConfig, arch: Arch = ARCH, expert_slots: int = 2) -> int:
    """Logical on-chip memory in bytes (sum of buffer contents, before block-RAM rounding)."""
    return sum(b.bytes for b in buffers(cfg, arch, expert_slots))


# ------------------------------------------------------------------------------------ resources
@dataclass(frozen=True)
class Resources:
    """Estimated resources; ``placement`` maps each buffer to "uram", "bram" or "lutram"."""

    dsp: int
    bram36: int
    uram: int
    lut: int
    ff: int
    dsp_by_unit: dict[str, int]
    placement: dict[str, str]

    def utilisation(self, board: BoardSpec) -> dict[str, float]:
        return {"dsp": self.dsp / board.dsp, "bram36": self.bram36 / board.bram36,
                "uram": self.uram / board.uram if board.uram else (0.0 if self.uram == 0 else math.inf),
                "lut": self.lut / board.lut, "ff": self.ff / board.ff}

    def fits(self, board: BoardSpec, limit: float = ARCH.util_limit) -> bool:
        return all(u <= limit for u in self.utilisation(board).values())


ROUTER_SCALE = math.floor(math.log2(math.e) * 2**SCALE_FRAC + 0.5)
"""C_router of docs/numerics.md §2 (log2 e in Q.15)."""


def constants_attn_scale(cfg: DesignConfig) -> int:
    """C_attn of docs/numerics.md §2: log2(e) / sqrt(head_dim) in Q.15."""
    return math.floor(math.log2(math.e) / math.sqrt(cfg.model.head_dim) * 2**SCALE_FRAC + 0.5)


def csd_digits(c: int) -> int:
    """Non-zero digits of ``c`` in canonical signed-digit form: a constant multiply by shift-and-add
    needs one adder fewer than this."""
    c, n = abs(c), 0
    while c:
        if c & 1:
            c -= 2 - (c & 3)  # digit +1 when c ≡ 1 (mod 4), −1 when c ≡ 3
            n += 1
        c >>= 1
    return n


def score_bits(cfg: DesignConfig) -> int:
    """Width of an attention score s = q·k (exact)."""
    return 2 * (cfg.numerics.qkv.bits - 1) + math.ceil(math.log2(cfg.model.head_dim + 1)) + 1


def dsp_by_unit(cfg: DesignConfig) -> dict[str, int]:
    """DSP48E2 per unit: the MAC array (2 lanes per DSP when packed) and the variable multipliers of the side
    units. Multiplies by a design constant (s · C_attn, (logit − m) · C_router) are shift-and-add in LUTs."""
    hw = cfg.hardware
    ln = lanes(cfg)
    lanes_ma = hw.mac_in * hw.mac_out
    return {
        "mac_array": lanes_ma // 2 if array_packed(cfg) else lanes_ma,
        "attn_rescale": 2 * ln.acc,  # acc · α and acc · R (≈ 42-bit × 17-bit: two DSPs)
        "layernorm": 3 * ln.ln,  # x², (D·x − S1) · R, x̂ · γ
        "gelu": ln.out,  # (G[i+1] − G[i]) · r
        "gate": ln.out,  # y · g (MoE) — the dense-MLP path bypasses it
        "router": ln.router,  # p · R
    }


def resources(cfg: DesignConfig, arch: Arch = ARCH, expert_slots: int = 2) -> Resources:
    """DSP / BRAM36 / URAM / LUT / FF estimate (docs/performance.md §5 states every coefficient)."""
    hw, m = cfg.hardware, cfg.model
    board = hw.board_spec
    ln = lanes(cfg)
    dsps = dsp_by_unit(cfg)
    uram_cap = math.floor(arch.util_limit * board.uram)
    bram = uram = lutram = 0
    placement: dict[str, str] = {}
    # big, deep buffers first into URAM while it lasts; everything else into BRAM36 (small ones into LUTs)
    bufs = sorted(buffers(cfg, arch, expert_slots), key=lambda b: -b.bits)
    for b in bufs:
        if b.bits <= LUTRAM_MAX_BITS or b.depth <= LUTRAM_MAX_DEPTH:
            placement[b.name] = "lutram"
            lutram += b.lutram()
        elif b.bits >= URAM_BITS and uram + b.uram() <= uram_cap and 8 * b.uram() <= 2 * b.bram36():
            # a URAM holds 8 BRAM36 worth of bits; wide, shallow buffers waste most of it
            placement[b.name] = "uram"
            uram += b.uram()
        else:
            placement[b.name] = "bram"
            bram += b.bram36()
    lanes_ma = hw.mac_in * hw.mac_out
    axi_scale = hw.axi_data_bits / 128
    lut = (
        16 * lanes_ma  # adder trees / packing correction behind the DSPs
        + 40 * hw.mac_out  # accumulate, requantise and saturate per output row
        + 2 * int(3000 * axi_scale)  # two m_axi masters (weights, activations) with their FIFOs
        + 1200  # s_axilite and control registers
        + 8000  # sequencer, address generators, queue builder
        + 90 * ln.exp  # exp2 table (LUTRAM) + max / subtract per score lane
        + ln.exp * (csd_digits(constants_attn_scale(cfg)) - 1) * (score_bits(cfg) + SCALE_FRAC)
        + ln.router * (csd_digits(ROUTER_SCALE) - 1) * (cfg.numerics.logit.bits + SCALE_FRAC + 1)
        + 60 * ln.acc + 60 * ln.ln + 120 * ln.out + 150 * ln.router
        + 3 * 1500  # three sequential ISQRT/RECIP dividers (LayerNorm, attention, router)
        + 400 * m.top_k  # top-K comparator network
        + lutram
        + 12 * (bram + uram)  # output muxes of cascaded block RAMs
    )
    ff = (
        24 * lanes_ma + 60 * hw.mac_out + 2 * int(4500 * axi_scale) + 12000
        + 80 * ln.exp + 100 * (ln.acc + ln.ln + ln.out + ln.router) + 3 * 800
    )
    return Resources(dsp=sum(dsps.values()), bram36=bram, uram=uram, lut=lut, ff=ff, dsp_by_unit=dsps,
                     placement=placement)


# ------------------------------------------------------------------------------------ the report
@dataclass(frozen=True)
class PerfReport:
    """Everything :func:`evaluate` models for one image of one task (cycles at ``clock_mhz``)."""

    cfg: DesignConfig
    steps: list[Step]
    timeline: Timeline
    resources: Resources
    buffers: list[Buffer]
    macs: dict[str, int]
    arch: Arch = field(default=ARCH)

    @property
    def cycles(self) -> int:
        return self.timeline.total

    @property
    def clock_hz(self) -> float:
        return self.cfg.hardware.clock_mhz * 1e6

    @property
    def latency_ms(self) -> float:
        return self.cycles / self.clock_hz * 1e3

    @property
    def total_macs(self) -> int:
        return sum(self.macs.values())

    @property
    def dsp_floor_ms(self) -> float:
        """Roofline floor on this design's own DSPs (all of them, side units included)."""
        return dsp_floor_s(self.cfg, self.resources.dsp) * 1e3

    @property
    def array_floor_ms(self) -> float:
        """Roofline floor on the MAC array's DSPs only."""
        return dsp_floor_s(self.cfg, self.resources.dsp_by_unit["mac_array"]) * 1e3

    @property
    def board_floor_ms(self) -> float:
        """Roofline floor on every DSP of the board at this design's packing."""
        return dsp_floor_s(self.cfg, self.cfg.hardware.board_spec.dsp) * 1e3

    @property
    def floor_ratio(self) -> float:
        """DSP floor / modeled latency (1.0 = every DSP busy every cycle)."""
        return self.dsp_floor_ms / self.latency_ms

    @property
    def on_chip_bytes(self) -> int:
        return sum(b.bytes for b in self.buffers)

    @property
    def on_chip_mib(self) -> float:
        return self.on_chip_bytes / MIB

    @property
    def weight_ddr_bytes(self) -> int:
        return sum(s.weight_bytes + s.side_bytes for s in self.steps)

    @property
    def act_ddr_bytes(self) -> int:
        return sum(s.act_bytes for s in self.steps)

    def unit_busy(self) -> dict[str, int]:
        """Busy cycles per unit over the image (MAC array, softmax, LayerNorm, ..., both DMA ports)."""
        busy: dict[str, int] = {}
        for s in self.steps:
            for k, v in s.units.items():
                busy[k] = busy.get(k, 0) + v
        busy["dma_weights"] = sum(self.timeline.load_end[i] - self.timeline.load_start[i]
                                  for i in range(len(self.steps)))
        return busy

    def by_layer(self) -> dict[str, dict[str, int]]:
        """Cycles per layer split by step kind, plus ``stall`` (waiting for weights)."""
        out: dict[str, dict[str, int]] = {}
        for s, st, en, sl in zip(self.steps, self.timeline.start, self.timeline.end, self.timeline.stall,
                                 strict=True):
            row = out.setdefault(s.layer, {})
            kind = "mlp" if s.kind in ("mlp_chunk", "expert", "router") else s.kind
            row[kind] = row.get(kind, 0) + (en - st)
            row["stall"] = row.get("stall", 0) + sl
        return out

    def summary(self) -> dict[str, float]:
        r = self.resources
        return {
            "latency_ms": self.latency_ms, "cycles": float(self.cycles), "dsp_floor_ms": self.dsp_floor_ms,
            "floor_ratio": self.floor_ratio, "board_floor_ms": self.board_floor_ms,
            "on_chip_mib": self.on_chip_mib, "dsp": float(r.dsp), "bram36": float(r.bram36),
            "uram": float(r.uram), "lut": float(r.lut), "ff": float(r.ff),
            "weight_ddr_mib": self.weight_ddr_bytes / MIB, "act_ddr_mib": self.act_ddr_bytes / MIB,
            "gmacs": self.total_macs / 1e9,
        }


def evaluate(cfg: DesignConfig, loads: Mapping[int, Sequence[int]] | None = None, arch: Arch = ARCH) -> PerfReport:
    """Model one image of one task; ``loads`` = per-MoE-block queue lengths of a routing (default balanced)."""
    steps = build_steps(cfg, loads, arch)
    return PerfReport(cfg=cfg, steps=steps, timeline=run_timeline(cfg, steps, arch),
                      resources=resources(cfg, arch), buffers=buffers(cfg, arch), macs=mac_counts(cfg), arch=arch)


# ------------------------------------------------------------------------------------ Vitis reports
@dataclass(frozen=True)
class CsynthLoop:
    """One loop of a Vitis HLS csynth report; ranges are (min, max), None where the report says undef."""

    module: str
    name: str
    path: str  # enclosing loops, "OUTER/INNER"
    trip_count: tuple[int, int] | None
    latency: tuple[int, int] | None
    iteration_latency: tuple[int, int] | None
    ii: int | None
    depth: int | None


@dataclass(frozen=True)
class CsynthReport:
    """What :func:`parse_csynth` reads from a ``csynth.xml``."""

    top: str
    part: str
    target_clock_ns: float | None
    estimated_clock_ns: float | None
    latency: tuple[int, int] | None
    resources: dict[str, int]
    loops: list[CsynthLoop]


_LOOP_FIELDS = {"TripCount", "Latency", "IterationLatency", "PipelineII", "PipelineDepth", "Slack",
                "AbsoluteTimeLatency", "InstanceList", "Name", "PipelineType"}


def _range(text: str | None) -> tuple[int, int] | None:
    """"12" → (12, 12); "1 ~ 1024" → (1, 1024); "undef", "-", "" → None."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split("~")]
    try:
        vals = [int(float(p)) for p in parts]
    except ValueError:
        return None
    return (min(vals), max(vals))


def _loops(elem: ET.Element, module: str, prefix: str) -> list[CsynthLoop]:
    out = []
    for child in elem:
        if child.tag in _LOOP_FIELDS:
            continue
        name = child.findtext("Name") or child.tag
        ii = _range(child.findtext("PipelineII"))
        depth = _range(child.findtext("PipelineDepth"))
        path = f"{prefix}/{name}" if prefix else name
        out.append(CsynthLoop(
            module=module, name=name, path=path, trip_count=_range(child.findtext("TripCount")),
            latency=_range(child.findtext("Latency")), iteration_latency=_range(child.findtext("IterationLatency")),
            ii=None if ii is None else ii[1], depth=None if depth is None else depth[1]))
        out += _loops(child, module, path)
    return out


def parse_csynth(path: str | Path) -> CsynthReport:
    """Read a Vitis HLS ``csynth.xml`` (solution/syn/report/): top, clocks, latency, resources and every loop
    of the top and of each module (``ModuleInformation``), nested loops included."""
    root = ET.parse(path).getroot()
    top = root.findtext("UserAssignments/TopModelName") or ""
    perf_el = root.find("PerformanceEstimates")
    loops: list[CsynthLoop] = []
    if perf_el is not None and perf_el.find("SummaryOfLoopLatency") is not None:
        loops += _loops(perf_el.find("SummaryOfLoopLatency"), top, "")
    for mod in root.findall("ModuleInformation/Module"):
        mname = mod.findtext("Name") or ""
        sol = mod.find("PerformanceEstimates/SummaryOfLoopLatency")
        if sol is not None and mname != top:
            loops += _loops(sol, mname, "")
    res_el = root.find("AreaEstimates/Resources")
    resources: dict[str, int] = {}
    if res_el is not None:
        for child in res_el:
            if child.tag.startswith(("AVAIL_", "UTIL_")):
                continue
            v = _range(child.text)
            if v is not None:
                resources["DSP" if child.tag == "DSP48E" else child.tag] = v[1]

    def _f(text: str | None) -> float | None:
        try:
            return float(text) if text is not None else None
        except ValueError:
            return None

    return CsynthReport(
        top=top, part=root.findtext("UserAssignments/Part") or "",
        target_clock_ns=_f(root.findtext("UserAssignments/TargetClockPeriod")),
        estimated_clock_ns=_f(root.findtext("PerformanceEstimates/SummaryOfTimingAnalysis/EstimatedClockPeriod")),
        latency=_range(root.findtext("PerformanceEstimates/SummaryOfOverallLatency/Worst-caseLatency")),
        resources=resources, loops=loops)


@dataclass(frozen=True)
class LoopModel:
    """What the model expects of one loop label of the HLS kernels (hls/*.h): its possible trip counts
    (one per place the label is instantiated) and its initiation interval."""

    trips: tuple[int, ...]
    ii: int | None
    what: str


def hls_loop_model(cfg: DesignConfig) -> dict[str, LoopModel]:
    """Expected trip counts and II of the labelled loops of the HLS kernels as written in hls/ (their
    maximum trip count where the count depends on run-time data such as a queue length)."""
    m, hw = cfg.model, cfg.hardware
    mi, mo, tt, kb = hw.mac_in, hw.mac_out, hw.token_tile, hw.attn_key_block
    t, d, e = m.num_tokens, m.dim, m.expert_hidden

    def it(k: int) -> int:
        return _cdiv(k, mi)

    def ot(n: int) -> int:
        return _cdiv(n, mo)

    lin = [(m.patch_dim, d), (d, 3 * d), (d, d), (d, m.mlp_hidden), (m.mlp_hidden, d), (d, m.num_experts)]
    exp = [(d, e), (e, d)]
    mats = lin + (exp if m.moe_block_set else [])
    return {
        "MAC_IT": LoopModel(tuple(sorted({it(k) for k, _ in mats})), 1, "in-tiles per output tile and token"),
        "MAC_OT": LoopModel(tuple(sorted({ot(n) for _, n in mats})), None, "output tiles per matmul"),
        "MAC_T": LoopModel((tt,), None, "tokens of a tile"),
        "LOAD_TILES": LoopModel(tuple(sorted({ot(n) * it(k) * mo * mi for k, n in mats})), 1,
                                "weight lanes per load (one per cycle)"),
        "LIN_TILES": LoopModel((_cdiv(t, tt), _cdiv(m.num_patches, tt)), None, "token tiles of a linear stage"),
        "ATT_QTILES": LoopModel((_cdiv(t, tt),), None, "query tiles"),
        "ATT_KBLOCKS": LoopModel((_cdiv(t, kb),), None, "key blocks per query tile"),
        "ATT_SCORES": LoopModel((min(kb, t),), 1, "keys of a block (one score per cycle)"),
        "ATT_PV": LoopModel((min(kb, t),), 1, "keys of a block (one p·v row per cycle)"),
        "ATT_RESCALE": LoopModel((m.head_dim,), 1, "head dims rescaled by α"),
        "RT_EXP": LoopModel((m.num_experts,), 1, "router softmax over experts"),
        "RT_GATE": LoopModel((m.num_experts,), 1, "gate weights"),
        "EX_TILES": LoopModel((_cdiv(t, tt),), None, "token tiles of the longest possible queue"),
        "EX_LOOP": LoopModel((m.num_experts,), None, "used experts (at most N)"),
        "RT_TILES": LoopModel((_cdiv(t, tt),), None, "token tiles routed"),
        "EMB_TILES": LoopModel((_cdiv(m.num_patches, tt),), None, "patch tiles"),
        "LN_ROWS": LoopModel((t,), None, "rows normalised"),
        "LN_STATS": LoopModel((d,), 1, "S1, S2 of a row"),
        "LN_NORM": LoopModel((d,), 1, "normalised elements of a row"),
        "LIN_GELU": LoopModel((m.mlp_hidden,), 1, "GELU of a hidden row"),
        "EX_GELU": LoopModel((tt,), None, "tokens of a tile (GELU of each hidden row, pipelined inside)"),
        "RES_ROWS": LoopModel((t,), None, "residual rows"),
        "MF_ROWS": LoopModel((t,), None, "MoE finish rows"),
        "ISQRT": LoopModel((32,), 1, "digit-by-digit square root"),
    }


@dataclass(frozen=True)
class LoopComparison:
    loop: CsynthLoop
    model: LoopModel
    trip_ok: bool | None  # None: the report gives no trip count
    ii_ok: bool | None

    @property
    def ok(self) -> bool:
        return self.trip_ok is not False and self.ii_ok is not False


def compare_csynth(cfg: DesignConfig, report: CsynthReport | str | Path) -> list[LoopComparison]:
    """Each loop of a csynth report that the model knows (by label; Vitis suffixes like ``_1`` or ``.2``
    ignored) next to the model's trip counts and II."""
    rep = report if isinstance(report, CsynthReport) else parse_csynth(report)
    model = hls_loop_model(cfg)
    out = []
    for lp in rep.loops:
        label = lp.name.split(".")[0]
        key = label if label in model else label.rsplit("_", 1)[0] if label.rsplit("_", 1)[0] in model else None
        if key is None:
            continue
        lm = model[key]
        trip_ok = None if lp.trip_count is None else (lp.trip_count[1] in lm.trips or lp.trip_count[1] <= max(lm.trips))
        ii_ok = None if lm.ii is None or lp.ii is None else lp.ii == lm.ii
        out.append(LoopComparison(lp, lm, trip_ok, ii_ok))
    return out


def format_csynth_comparison(rows: Sequence[LoopComparison]) -> str:
    """Markdown table of :func:`compare_csynth`."""
    lines = ["| module | loop | report trips | model trips | report II | model II | report latency | ok |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lp = r.loop
        tc = "undef" if lp.trip_count is None else f"{lp.trip_count[0]}~{lp.trip_count[1]}"
        lat = "undef" if lp.latency is None else f"{lp.latency[0]}~{lp.latency[1]}"
        lines.append(f"| {lp.module} | {lp.path} | {tc} | {', '.join(map(str, r.model.trips))} | "
                     f"{'' if lp.ii is None else lp.ii} | {'' if r.model.ii is None else r.model.ii} | {lat} | "
                     f"{'yes' if r.ok else 'NO'} |")
    return "\n".join(lines)


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
