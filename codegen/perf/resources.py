"""On-chip buffers and FPGA resources (DSP48E2, BRAM36, URAM, LUT, FF) of the modeled design
(docs/performance.md §4–§5)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from m3vit.codegen.bits import ceil_div, container_bits
from m3vit.codegen.config import BoardSpec, DesignConfig
from m3vit.codegen.numerics import PROB_FRAC, SCALE_FRAC
from m3vit.codegen.perf.arch import (
    ARCH,
    BRAM36_SHAPES,
    LUTRAM_MAX_BITS,
    LUTRAM_MAX_DEPTH,
    PROB_BITS,
    PROB_OPERAND_BITS,
    RECIP_BITS,
    URAM_BITS,
    URAM_SHAPE,
    Arch,
    array_packed,
    datapath_bits,
    dsps,
    lanes,
    mlp_chunk_hidden,
    slot_bytes,
    weight_bytes,
)


# ------------------------------------------------------------------------------------ memory
@dataclass(frozen=True)
class Buffer:
    """An on-chip buffer: ``bits`` stored in ``banks`` equal memories, each read/written ``width`` bits per cycle
    (its port width). The model's buffers are single memories; the HLS lint's partitioned arrays have banks."""

    name: str
    bits: int
    width: int
    note: str = ""
    banks: int = 1

    @property
    def bytes(self) -> int:
        return ceil_div(self.bits, 8)

    @property
    def bank_bits(self) -> int:
        return ceil_div(self.bits, self.banks)

    @property
    def depth(self) -> int:
        """Words per bank."""
        return ceil_div(self.bank_bits, self.width)

    def bram36(self) -> int:
        """BRAM36 blocks for this width and depth (best SDP aspect ratio), every bank its own."""
        return self.banks * min(ceil_div(self.width, w) * ceil_div(self.depth, d) for w, d in BRAM36_SHAPES)

    def uram(self) -> int:
        w, d = URAM_SHAPE
        return self.banks * ceil_div(self.width, w) * ceil_div(self.depth, d)

    def lutram(self) -> int:
        """LUTs as simple dual-port distributed RAM (RAM64M8: 7 bits × 64 words per 8 LUTs)."""
        return self.banks * ceil_div(self.width * ceil_div(self.depth, 64) * 8, 7)


STORAGE_KINDS = ("bram", "uram", "lutram")


@dataclass(frozen=True)
class Placement:
    """Where each buffer went ("bram", "uram" or "lutram") and the blocks / LUTs that takes."""

    kind: dict[str, str]
    bram36: int
    uram: int
    lutram: int


def place_buffers(bufs: list[Buffer], uram_cap: int, bound: dict[str, str] | None = None) -> Placement:
    """The one storage rule (docs/performance.md §5), shared by :func:`resources` and the HLS lint.

    Largest buffers first: a buffer named in ``bound`` (an HLS ``BIND_STORAGE impl``) goes where it is bound;
    otherwise small (≤ LUTRAM_MAX_BITS per bank) or shallow (≤ LUTRAM_MAX_DEPTH words) ones into LUTRAM,
    big deep ones into URAM while ``uram_cap`` blocks last and their URAMs hold at most twice the capacity of
    the BRAM36s they would otherwise need, the rest into BRAM36."""
    bound = bound or {}
    for name, kind in bound.items():
        if kind not in STORAGE_KINDS:
            raise ValueError(f"buffer {name!r}: storage kind {kind!r} is not one of {', '.join(STORAGE_KINDS)}")
    bram = uram = lutram = 0
    kind: dict[str, str] = {}
    for b in sorted(bufs, key=lambda b: -b.bits):
        k = bound.get(b.name)
        if k is None:
            if b.bank_bits <= LUTRAM_MAX_BITS or b.depth <= LUTRAM_MAX_DEPTH:
                k = "lutram"
            elif b.bank_bits >= URAM_BITS and uram + b.uram() <= uram_cap and 8 * b.uram() <= 2 * b.bram36():
                # a URAM holds 8 BRAM36 worth of bits; wide, shallow buffers waste most of it
                k = "uram"
            else:
                k = "bram"
        kind[b.name] = k
        if k == "lutram":
            lutram += b.lutram()
        elif k == "uram":
            uram += b.uram()
        else:
            bram += b.bram36()
    return Placement(kind, bram, uram, lutram)


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
    """DSP48E2 per unit, as the kernels (hls/) instantiate them: the MAC array (2 lanes per DSP when packed) and
    the variable multipliers of the side units at their lanes and operand widths (:func:`dsps`). Multiplies by
    a design constant (s · C_attn, (logit − m) · C_router, D · x) are shift-and-add in LUTs, and GELU's narrow
    interpolation product is bound to LUTs (BIND_OP impl = fabric)."""
    hw, m, fmt = cfg.hardware, cfg.model, cfg.numerics
    ln = lanes(cfg)
    dp = datapath_bits(cfg)
    lanes_ma = hw.mac_in * hw.mac_out
    act_lanes = hw.axi_data_bits // container_bits(fmt.act.bits)
    norm_lanes = hw.axi_data_bits // container_bits(fmt.norm.bits)
    return {
        "mac_array": lanes_ma // 2 if array_packed(cfg) else lanes_ma,
        # ctx_rescale: acc · α on MAC_OUT lanes; the context writer's acc · R on ATT_OUT_LANES lanes
        "attn_rescale": dsps(dp.ctx_acc, PROB_BITS, hw.mac_out),
        "attn_ctx": dsps(dp.ctx_acc, RECIP_BITS, ln.acc),
        # x² while a row arrives (plain read and finishing read), S1², (D·x − S1)·R and x̂·γ per norm lane
        "layernorm": (2 * dsps(fmt.act.bits, fmt.act.bits, act_lanes) + dsps(dp.ln_s1, dp.ln_s1)
                      + dsps(dp.ln_xc, RECIP_BITS, norm_lanes) + dsps(dp.ln_xhat, fmt.ln_param.bits, norm_lanes)),
        "gate": dsps(fmt.act.bits, PROB_BITS, ln.out),  # y · g (MoE)
        "router": dsps(PROB_BITS, RECIP_BITS, m.top_k),  # p · R of the selected experts
    }


def resources(cfg: DesignConfig, arch: Arch = ARCH, expert_slots: int = 2) -> Resources:
    """DSP / BRAM36 / URAM / LUT / FF estimate (docs/performance.md §5 states every coefficient)."""
    hw, m = cfg.hardware, cfg.model
    board = hw.board_spec
    ln = lanes(cfg)
    dsps = dsp_by_unit(cfg)
    placed = place_buffers(buffers(cfg, arch, expert_slots), math.floor(arch.util_limit * board.uram))
    bram, uram, lutram = placed.bram36, placed.uram, placed.lutram
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
                     placement=placed.kind)


