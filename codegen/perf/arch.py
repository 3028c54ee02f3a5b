"""Assumptions of the performance model: micro-architecture constants (:class:`Arch`), DSP packing,
work counts, weight sizes, the DDR model and the side units' lanes (docs/performance.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from m3vit.codegen.bits import ceil_div, clog2, container_bits, pow2_ceil
from m3vit.codegen.config import DesignConfig
from m3vit.codegen.numerics import PROB_FRAC

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


def maxi_settings(arch: Arch = ARCH) -> dict[str, int]:
    """The m_axi interface settings the model assumes, as the HLS top function's INTERFACE pragmas write them
    (one fact: the generator and the lint both read this)."""
    return {
        "latency": arch.ddr_latency,
        "num_read_outstanding": arch.outstanding,
        "num_write_outstanding": arch.outstanding,
        "max_read_burst_length": arch.burst_beats,
        "max_write_burst_length": arch.burst_beats,
    }


def tile_lengths(n: int, size: int) -> list[int]:
    """Lengths of the tiles of ``size`` covering ``n`` items (the last one may be short)."""
    if n <= 0:
        return []
    return [size] * (n // size) + ([n % size] if n % size else [])


def container_bytes(bits: int) -> int:
    """Bytes of the power-of-two container of a ``bits``-bit integer."""
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


def dsps(a_bits: int, b_bits: int, lanes: int = 1) -> int:
    """DSP48E2 for ``lanes`` products of a × b bits: :func:`macs_per_dsp` products per DSP when they fit one
    27 × 18 multiplier; a wider product is split into ⌈hi/27⌉·⌈lo/18⌉ DSPs."""
    try:
        return math.ceil(lanes / macs_per_dsp(a_bits, b_bits))
    except ValueError:
        lo, hi = sorted((a_bits, b_bits))
        return lanes * math.ceil(hi / 27) * math.ceil(lo / 18)


PROB_BITS = PROB_FRAC + 2
"""Signed width of a Q.15 probability or gate in [0, 2^15 + 1] (prob_t)."""
RECIP_BITS = 18
"""Signed width of R = recip(v) ∈ [2^15, 2^16] (docs/numerics.md §3): one 18-bit DSP port."""


@dataclass(frozen=True)
class DatapathBits:
    """Widths (signed bits) of the side units' operands: the kernels' typedefs (codegen/hls.py) and the
    resource model's multipliers read them from here."""

    ctx_acc: int  # softmax context accumulator (ctx_acc_t)
    ln_s1: int  # LayerNorm S1 = Σ x
    ln_s2: int  # LayerNorm S2 = Σ x²
    ln_xc: int  # LayerNorm D·x − S1
    ln_xhat: int  # LayerNorm x̂
    tok: int  # a token index
    expert: int  # an expert index
    hits: int  # experts added to a token's MoE accumulator (0 … K)


def datapath_bits(cfg: DesignConfig) -> DatapathBits:
    m, fmt = cfg.model, cfg.numerics
    act, dim = fmt.act.bits, m.dim
    lg_dim = clog2(dim)
    return DatapathBits(
        ctx_acc=17 + fmt.qkv.bits + clog2(m.num_tokens) + 1,
        ln_s1=act + lg_dim + 1,
        ln_s2=2 * act + lg_dim,
        ln_xc=act + lg_dim + 1,  # |D·x − S1| < D·2^act
        ln_xhat=math.ceil(math.log2(math.sqrt(dim))) + fmt.ln_hat_frac + 2,  # |x̂| < 2·sqrt(D)·2^Fh
        tok=clog2(m.num_tokens + 1) + 1,
        expert=clog2(m.num_experts + 1) + 1,
        hits=clog2(m.top_k + 1) + 1,
    )


def mac_operand_bits(cfg: DesignConfig) -> tuple[int, int]:
    """(stationary, streamed) operand widths of the shared MAC array: the widest of the values each side
    carries (weights, queries or probabilities; pixels, norm, qkv, hidden, act or logits)."""
    fmt = cfg.numerics
    w_bits = max(fmt.weight.bits, fmt.qkv.bits, PROB_OPERAND_BITS)
    v_bits = max(fmt.input.bits, fmt.norm.bits, fmt.qkv.bits, fmt.hidden.bits, fmt.act.bits, fmt.logit.bits)
    return w_bits, v_bits


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
    return container_bytes(cfg.numerics.bias_bits)


def weight_bytes(cfg: DesignConfig) -> int:
    return container_bytes(cfg.numerics.weight.bits)


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
    return tile_lengths(m.dim, per)


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
    exp: int  # attention exp2 lanes: a probability tile (mac_out × mac_in) in mac_in / 2 cycles
    acc: int  # attention context lanes (acc · R in the context writer): a divisor of head_dim
    router: int  # router softmax multipliers
    heads_per_pass: int  # heads the array reduces at once in q·kᵀ (split adder tree)
    hd_passes: int  # passes over one head's dims when mac_in < head_dim


def lanes(cfg: DesignConfig) -> Lanes:
    m, hw = cfg.model, cfg.hardware
    mi, mo = hw.mac_in, hw.mac_out
    hd = m.head_dim
    hp = mi // hd if mi >= hd else 1
    hd_passes = 1 if mi >= hd else ceil_div(hd, mi)
    min_it = min(ceil_div(m.dim, mi), ceil_div(m.expert_hidden, mi))
    blk = min(hw.attn_key_block, m.num_tokens)
    pv_div = op_rate_div(cfg, "attn_pv")
    per_block = blk * hd_passes * op_rate_div(cfg, "attn_qk") + ceil_div(blk, mi) * hd * pv_div
    return Lanes(
        ln=max(1, mi // 4),
        out=pow2_ceil(ceil_div(mo, min_it)),
        exp=2 * mo * hp,
        acc=max(x for x in range(1, hd + 1) if hd % x == 0 and x <= max(1, ceil_div(mo * hd, per_block))),
        router=max(1, ceil_div(m.num_experts + m.top_k, ceil_div(m.num_experts, mo) * ceil_div(m.dim, mi))),
        heads_per_pass=hp,
        hd_passes=hd_passes,
    )


