"""On-chip buffers and FPGA resources (DSP48E2, BRAM36, URAM, LUT, FF) of the modeled design
(docs/performance.md §4–§5)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from m3vit.codegen.bits import ceil_div, container_bits
from m3vit.codegen.config import BoardSpec, DesignConfig
from m3vit.codegen.numerics import SCALE_FRAC, constants
from m3vit.codegen.perf.arch import (
    ARCH,
    BRAM36_SHAPES,
    LUTRAM_MAX_BITS,
    LUTRAM_MAX_DEPTH,
    PROB_BITS,
    RECIP_BITS,
    URAM_BITS,
    URAM_SHAPE,
    Arch,
    array_packed,
    datapath_bits,
    dsps,
    lanes,
    mac_operand_bits,
)
from m3vit.codegen.perf.engine import KVA_WORD_BITS, engine_geometry, kv_or_acc_geometry


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
    bound: str | None = None  # storage kind the kernels bind it to (BIND_STORAGE impl), else placed by rule

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
        k = bound.get(b.name, b.bound)
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


def big_memory(cfg: DesignConfig) -> str:
    """Where the kernels bind their big buffers (kv_or_acc, output and hidden tiles): URAM when the board has
    it, else BRAM (the generated m3vit_config.h's M3VIT_BIG_MEMORY)."""
    return "uram" if cfg.hardware.board_spec.uram else "bram"


def array_buffer(name: str, elem_bits: int, dims: Sequence[int], banks: int = 1, reshape: int = 1,
                 reshape_dim: int = -1, bound: str | None = None, note: str = "") -> Buffer:
    """The buffer of a C array ``elem_bits × dims``, as the HLS lint sizes a declared array: ``banks`` copies
    (a partition or a stream of blocks) and a cyclic ARRAY_RESHAPE by ``reshape`` of dimension ``reshape_dim``
    (ports ``reshape`` elements wide)."""
    dims = list(dims)
    dims[reshape_dim] = ceil_div(dims[reshape_dim], reshape)
    width = elem_bits * reshape
    return Buffer(name, banks * width * math.prod(dims), width, note, banks, bound)


def buffers(cfg: DesignConfig, arch: Arch = ARCH, expert_slots: int = 2) -> list[Buffer]:
    """Every on-chip memory of the generated kernels (hls/), as they declare it: names are the HLS lint's
    (function::variable), shapes and storage bindings the kernels'. Register files (fully partitioned arrays)
    and LUTRAM scratch of the pipelines are not listed. None depends on N (num_experts) beyond its queues'
    offset tables. docs/performance.md §4 describes each."""
    m, hw, n = cfg.model, cfg.hardware, cfg.numerics
    t, d, hd, k, ne = m.num_tokens, m.dim, m.head_dim, m.top_k, m.num_experts
    mi, mo, tt = hw.mac_in, hw.mac_out, hw.token_tile
    dp = datapath_bits(cfg)
    g = engine_geometry(cfg)
    kva = {name: v for name, (v, _what) in kv_or_acc_geometry(cfg).items()}
    ln = lanes(cfg)
    consts = constants(cfg)
    big = big_memory(cfg)
    qkv, act, v_bits = n.qkv.bits, n.act.bits, mac_operand_bits(cfg)[1]
    return [
        array_buffer("run_stage::sw", n.weight.bits, (g.slot_tiles * g.tile_rows, g.rows_per_word, mi),
                     banks=expert_slots, bound="bram",
                     note=f"{expert_slots} weight slots of {g.slot_tiles} mac_out×mac_in tiles (ping-pong)"),
        array_buffer("run_stage::sb", n.bias_bits, (g.slot_bias,), banks=expert_slots, note="the slots' biases"),
        array_buffer("backbone::st.kv.w", KVA_WORD_BITS, (kva["KVA_DEPTH"],), banks=kva["KVA_BANKS"], bound=big,
                     note="kv_or_acc: K and Vᵀ (attention) or the MoE accumulators (experts): never live together"),
        array_buffer("backbone::st.kv.vrows", qkv, (tt, d), note="V rows of a token tile on their way into Vᵀ"),
        array_buffer("run_stage::as", v_bits, (tt, g.a_cols), banks=2, note="activation tiles, x2"),
        array_buffer("run_stage::ys", v_bits, (tt, g.y_cols), banks=2, bound=big, note="output tiles, x2"),
        array_buffer("mac::hidden", v_bits, (tt, g.hid_cols), bound=big, note="an expert's hidden tile"),
        array_buffer("layernorm_tile::xt", act, (tt, d), reshape=ln.ln,
                     note="a token tile's rows while their statistics complete"),
        array_buffer("run_stage::g", n.ln_param.bits, (d,), note="LayerNorm γ"),
        array_buffer("run_stage::be", n.ln_param.bits, (d,), note="LayerNorm β"),
        array_buffer("writer::res", act, (d,), note="the embedding's cls row"),
        array_buffer("stage_attention::qs", qkv, (mo, d), banks=2, note="queries of a query group, x2"),
        array_buffer("stage_attention::hs", dp.ctx_acc, (mo, hd + 1), banks=2,
                     note="softmax state (acc, l) of a (group, head), x2"),
        array_buffer("att_writer::ctx", qkv, (mo, d), reshape=ln.acc, note="context rows of a query group"),
        array_buffer("backbone::st.acc.hits", dp.hits, (t,), note="experts added to each token's accumulator"),
        array_buffer("backbone::st.rt.sel", dp.expert, (t, k), note="each token's experts"),
        array_buffer("backbone::st.rt.gsel", PROB_BITS, (t, k), note="their gates"),
        array_buffer("backbone::st.qs.tok", dp.tok, (t * k,), note="the experts' queues: tokens"),
        array_buffer("backbone::st.qs.gate", PROB_BITS, (t * k,), note="the queues' gates"),
        array_buffer("backbone::st.qs.start", 32, (ne + 1,), note="queue offsets"),
        array_buffer("backbone::st.qs.used", 32, (ne,), note="used experts"),
        array_buffer("backbone::st.rt.count", 32, (ne,), note="queue lengths"),
        array_buffer("cfg::EXP2_TABLE", PROB_BITS, (len(consts.exp2),), note="2^(-f/2^Fz) in Q.15 (ROM)"),
        array_buffer("cfg::GELU_TABLE", n.hidden.bits, (len(consts.gelu.values),), note="GELU breakpoints (ROM)"),
    ]


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
        # x² per act lane while a row arrives, S1², (D·x − S1)·R and x̂·γ per norm lane
        "layernorm": (dsps(fmt.act.bits, fmt.act.bits, act_lanes) + dsps(dp.ln_s1, dp.ln_s1)
                      + dsps(dp.ln_xc, RECIP_BITS, norm_lanes) + dsps(dp.ln_xhat, fmt.ln_param.bits, norm_lanes)),
        "gate": dsps(fmt.act.bits, PROB_BITS, ln.out),  # y · g (MoE)
        "router": dsps(PROB_BITS, RECIP_BITS, m.top_k),  # p · R of the selected experts
    }


def resources(cfg: DesignConfig, arch: Arch = ARCH, expert_slots: int = 2) -> Resources:
    """DSP / BRAM36 / URAM / LUT / FF estimate (docs/performance.md §5 states every coefficient)."""
    hw, m = cfg.hardware, cfg.model
    ln = lanes(cfg)
    dsps = dsp_by_unit(cfg)
    # Vitis puts an array in URAM only when BIND_STORAGE says so: no URAM budget for unbound buffers
    placed = place_buffers(buffers(cfg, arch, expert_slots), uram_cap=0)
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


