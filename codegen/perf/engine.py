"""Cycle model of the generated kernels' stages (hls/m3vit_linear.h, m3vit_attention.h, m3vit_moe.h).

Each matmul stage is a DATAFLOW region of four processes (loader, reader, mac, writer) over its jobs; a
region costs its slowest process. The attention is sequential code around the MAC array. Every loop is priced
as the cycle ledger prices it (``perf.ledger``): a pipelined loop entry of ``n`` trips costs
``(n - 1)·II + depth``, a non-pipelined loop ``body`` cycles per iteration, with the II, depth and body the
kernels declare next to each loop. The functions here mirror the loops of the kernels one for one, so the ledger
of a C simulation (measured trip counts) and this model (trip counts from the config and the routing) agree;
tests/test_ledger.py checks it step by step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from m3vit.codegen.bits import ceil_div, container_bits, pow2_ceil
from m3vit.codegen.config import DesignConfig
from m3vit.codegen.perf.arch import ARCH, Arch, array_packed, lanes, op_rate_div, tile_lengths

LN_RECIP_DEPTH = 110
"""Pipeline depth the kernels declare for a LayerNorm row's ISQRT + RECIP (one row per cycle)."""
ROUTE_DEPTH = 96
"""Pipeline depth of the routing lanes (exp2, one division, top-K compare chains)."""
RECIP_DEPTH = 72
"""Pipeline depth of the attention's 1/l divider."""


def pipe(n: int, ii: int = 1, depth: int = 1) -> int:
    """Cycles of one entry of a pipelined loop of ``n`` trips."""
    return (n - 1) * ii + depth if n > 0 else 0


def slot_tiles(cfg: DesignConfig) -> int:
    """Weight tiles (mac_out × mac_in) one slot holds: the largest weight group a job needs (K and V, Q and
    proj chunks, an expert, a dense-MLP chunk, a router), and at least one out-tile of every matrix."""
    m, hw = cfg.model, cfg.hardware
    d, eh = m.dim, m.expert_hidden

    def it(x: int) -> int:
        return ceil_div(x, hw.mac_in)

    def ot(x: int) -> int:
        return ceil_div(x, hw.mac_out)

    has_moe, has_dense = bool(m.moe_block_set), len(m.moe_block_set) < m.depth
    groups = [ot(2 * d) * it(d), ot(d) * it(d), it(m.patch_dim)]
    if has_moe:
        groups += [ot(eh) * it(d) + ot(d) * it(eh), ot(m.num_experts) * it(d)]
    if has_dense:
        groups += [ot(eh) * it(d) + ot(d) * it(eh), it(m.mlp_hidden)]
    return max(groups)


@dataclass(frozen=True)
class EngineGeometry:
    """Sizes of the matmul engine's slots and tiles (hls/m3vit_linear.h), one fact for the generated constants
    (codegen/hls.py) and the model's buffers (perf.buffers)."""

    slot_tiles: int  # weight tiles (mac_out × mac_in) per slot
    tile_rows: int  # slot words per tile = cycles to load a stationary tile
    rows_per_word: int  # tile rows per slot word
    slot_bias: int  # biases per slot
    a_cols: int  # columns of an activation tile (the widest matmul input)
    y_cols: int  # columns of an output tile (the widest job output)
    hid_cols: int  # columns of an expert's hidden tile
    max_tiles_job: int  # weight tiles of the largest matmul of one job
    jobs: dict[str, int]  # dense stage → jobs
    tokens_tt: int  # tokens padded to key chunks and tiles


def engine_geometry(cfg: DesignConfig, arch: Arch = ARCH) -> EngineGeometry:
    m, hw = cfg.model, cfg.hardware
    mi, mo, tt = hw.mac_in, hw.mac_out, hw.token_tile
    d, eh, f = m.dim, m.expert_hidden, m.mlp_hidden

    def it(x: int) -> int:
        return ceil_div(x, mi)

    def ot(x: int) -> int:
        return ceil_div(x, mo)

    has_moe, has_dense = bool(m.moe_block_set), len(m.moe_block_set) < m.depth
    st = slot_tiles(cfg)
    dense = {"patch": (m.patch_dim, d), "qkv": (d, 3 * d), "proj": (d, d)}
    if has_dense:
        dense |= {"fc1": (d, f), "fc2": (f, d)}
    if has_moe:
        dense |= {"router": (d, m.num_experts)}
    otc = {k: st // it(kk) for k, (kk, _n) in dense.items()}
    rows_per = max(1, mo // arch.weight_reuse)
    return EngineGeometry(
        slot_tiles=st,
        tile_rows=mo // rows_per,
        rows_per_word=rows_per,
        slot_bias=max([min(otc[k], ot(n)) * mo for k, (_kk, n) in dense.items()]
                      + ([ot(eh) * mo + ot(d) * mo] if has_moe else [])),
        a_cols=max([it(kk) * mi for kk, _n in dense.values()] + ([it(d) * mi] if has_moe else [])),
        y_cols=max([min(otc[k], ot(n)) * mo for k, (_kk, n) in dense.items()] + ([ot(d) * mo] if has_moe else [])),
        hid_cols=max(ot(eh) * mo, it(eh) * mi) if has_moe else mo,
        max_tiles_job=max([min(otc[k], ot(n)) * it(kk) for k, (kk, n) in dense.items()]
                          + ([ot(eh) * it(d), ot(d) * it(eh)] if has_moe else [])),
        jobs={k: ceil_div(ot(n), otc[k]) for k, (_kk, n) in dense.items()},
        tokens_tt=ceil_div(m.num_tokens, max(mi, tt)) * max(mi, tt),
    )


KVA_WORD_BITS = 72
"""Word of the kv_or_acc buffer: a URAM288 row (72 bits): KV_PER_WORD K/V values or two 36-bit accumulators."""


def kv_or_acc_geometry(cfg: DesignConfig) -> dict[str, tuple[int, str]]:
    """The kv_or_acc buffer's geometry (hls/m3vit_kv_or_acc.h), name → (value, what): K and Vᵀ of a block, or
    its MoE accumulators, in KVA_BANKS cyclic banks of 72-bit words, enough banks for the widest access of
    one cycle (a MAC_IN slice of K or Vᵀ, a group of accumulator lanes, an AXI word of act lanes)."""
    m, hw, fmt = cfg.model, cfg.hardware, cfg.numerics
    t, d = m.num_tokens, m.dim
    kpw = 64 // container_bits(fmt.qkv.bits)
    act_lanes = hw.axi_data_bits // container_bits(fmt.act.bits)
    banks = pow2_ceil(max(ceil_div(hw.mac_in, kpw), ceil_div(lanes(cfg).out, 2), ceil_div(act_lanes, 2)))
    k_row, v_row, a_row = ceil_div(d, kpw), ceil_div(engine_geometry(cfg).tokens_tt, kpw), ceil_div(d, 2)
    v_base = t * k_row
    words = max(v_base + d * v_row, t * a_row)
    return {
        "KV_PER_WORD": (kpw, "K/V values per kv_or_acc word"),
        "KVA_BANKS": (banks, "kv_or_acc banks"),
        "KVA_LOG_BANKS": (banks.bit_length() - 1, "log2 of the banks"),
        "KVA_K_ROW": (k_row, "words of a K row"),
        "KVA_V_ROW": (v_row, "words of a Vᵀ row"),
        "KVA_V_BASE": (v_base, "first word of Vᵀ"),
        "KVA_A_ROW": (a_row, "words of an accumulator row"),
        "KVA_DEPTH": (ceil_div(words, banks), "words per bank"),
        "KV_TRANSPOSE_PASSES": (ceil_div(ceil_div(hw.token_tile, kpw), banks), "cycles per Vᵀ row of a token tile"),
    }


@dataclass(frozen=True)
class Region:
    """Busy cycles of the processes of one stage's DATAFLOW region. ``startup``: the first job's weight load,
    which the MAC array waits for (a stage's loader starts with its region; nothing prefetches across stages)."""

    loader: int
    reader: int
    mac: int
    writer: int
    startup: int = 0
    overhead: int = 0  # the stage's serial code (job list, LayerNorm parameters) and the other processes' fills

    @property
    def busy(self) -> int:
        """The slowest process and the overhead: what the cycle ledger prices a stage at (no start-up)."""
        return max(self.loader, self.reader, self.mac, self.writer) + self.overhead

    @property
    def cycles(self) -> int:
        return self.busy + self.startup


class EngineModel:
    """The kernels' stages of one design, priced loop by loop."""

    def __init__(self, cfg: DesignConfig, arch: Arch = ARCH) -> None:
        self.cfg, self.arch = cfg, arch
        m, hw, n = cfg.model, cfg.hardware, cfg.numerics
        self.m, self.hw, self.n = m, hw, n
        self.mi, self.mo, self.tt = hw.mac_in, hw.mac_out, hw.token_tile
        self.rows_per = max(1, self.mo // arch.weight_reuse)
        self.tile_rows = self.mo // self.rows_per  # cycles to load a stationary tile
        self.slot = slot_tiles(cfg)
        self.axi = hw.axi_data_bits
        self.depth = arch.pipeline_depth
        self.lanes = lanes(cfg)
        self.packed = array_packed(cfg)

    # -- helpers --------------------------------------------------------------------------------
    def words(self, count: int, bits: int) -> int:
        """AXI words of ``count`` lanes of a ``bits``-bit format's container."""
        return ceil_div(count * container_bits(bits), self.axi)

    def rate(self, op: str) -> int:
        return op_rate_div(self.cfg, op)

    def it(self, k: int) -> int:
        return ceil_div(k, self.mi)

    def ot(self, n: int) -> int:
        return ceil_div(n, self.mo)

    def mac_tile(self, nt: int, ot_n: int, it_n: int, rate: int) -> int:
        """mac_tile: the stationary-tile preload and the flattened (ot, it, t) loop."""
        return pipe(self.tile_rows, 1, 2) + pipe(ot_n * it_n * max(nt, self.tile_rows) * rate, 1, self.depth)

    def loader(self, tiles: int, biases: int) -> int:
        w = tiles * self.mo * self.mi * container_bits(self.n.weight.bits) // self.axi
        return pipe(w, 1, 8) + pipe(ceil_div(biases * container_bits(self.n.bias_bits), self.axi), 1, 8)

    def ln_tile(self, nt: int) -> int:
        """layernorm_tile: rows in with their statistics, ISQRT/RECIP per row, normalise + tap."""
        d = self.m.dim
        wa, wn = self.words(d, self.n.act.bits), self.words(d, self.n.norm.bits)
        return nt * (2 + pipe(wa, 1, 6)) + pipe(nt, 1, LN_RECIP_DEPTH) + nt * (2 + pipe(wn, 1, 12))

    # -- dense stages ---------------------------------------------------------------------------
    def dense_jobs(self, ot0: int, ot1: int, it_n: int) -> list[tuple[int, int]]:
        otc = self.slot // it_n
        return [(o, min(otc, ot1 - o)) for o in range(ot0, ot1, otc)]

    def dense(self, stage: str) -> Region:
        """One dense stage over every token (or patch): ``embed``, ``kv``, ``q``, ``proj``, ``fc1``, ``fc2``,
        ``router``."""
        m, n, d = self.m, self.n, self.m.dim
        k_in, n_out, op = {
            "embed": (m.patch_dim, d, "patch_embed"), "kv": (d, 3 * d, "qkv"), "q": (d, 3 * d, "qkv"),
            "proj": (d, d, "proj"), "fc1": (d, m.mlp_hidden, "mlp_fc1"), "fc2": (m.mlp_hidden, d, "mlp_fc2"),
            "router": (d, m.num_experts, "router"),
        }[stage]
        it_n = self.it(k_in)
        ot0 = d // self.mo if stage == "kv" else 0
        ot1 = self.ot(d) if stage == "q" else self.ot(n_out)
        rows = m.num_patches if stage == "embed" else m.num_tokens
        tiles = tile_lengths(rows, self.tt)
        rate = self.rate(op)
        loader = reader = mac = writer = startup = 0
        for o, ot_n in self.dense_jobs(ot0, ot1, it_n):
            cols = min(ot_n * self.mo, (d if stage == "q" else n_out) - o * self.mo)
            job_load = self.loader(ot_n * it_n, cols)
            startup = startup or job_load
            loader += 4 + job_load
            mac += 4 + sum(4 + self.mac_tile(nt, ot_n, it_n, rate) for nt in tiles)
            reader += 4 + sum(4 + self.read_tile(stage, nt) for nt in tiles)
            writer += 4 + sum(4 + self.write_tile(stage, nt, o * self.mo, cols) for nt in tiles)
        if stage == "embed":  # the cls row
            writer += 2 * pipe(self.words(d, n.act.bits), 1, 4)
        ln = stage in ("kv", "fc1", "router")
        n_jobs = len(self.dense_jobs(ot0, ot1, it_n))
        serial = 2 * n_jobs + (2 * pipe(self.words(d, n.ln_param.bits), 1, 4) if ln else 0)
        # a DATAFLOW region costs its slowest process plus the pipeline fill (deepest loop) of each other one
        fills = {"loader": (loader, 8), "reader": (reader, LN_RECIP_DEPTH if ln else 4), "mac": (mac, self.depth),
                 "writer": (writer, ROUTE_DEPTH if stage == "router" else 4)}
        slow = max(fills, key=lambda k: fills[k][0])
        overhead = serial + sum(f for k, (_c, f) in fills.items() if k != slow)
        return Region(loader, reader, mac, writer, startup, overhead)

    def read_tile(self, stage: str, nt: int) -> int:
        m, n, d = self.m, self.n, self.m.dim
        if stage in ("kv", "fc1", "router"):
            return self.ln_tile(nt)
        if stage == "embed":
            in_words = self.words(m.patch_size, n.input.bits)
            return nt * (2 + m.in_channels * m.patch_size * (2 + pipe(in_words, 1, 4)))
        w = {"q": self.words(d, n.norm.bits), "proj": self.words(d, n.qkv.bits),
             "fc2": self.words(m.mlp_hidden, n.hidden.bits)}[stage]
        return nt * (2 + pipe(w, 1, 4))

    def write_tile(self, stage: str, nt: int, c0: int, cols: int) -> int:
        n, d = self.n, self.m.dim
        if stage in ("kv", "q"):
            row = pipe(self.words(cols, n.qkv.bits), 1, 4)
            if stage == "kv":
                row += pipe(ceil_div(cols, self.mi), 1, 3)
                v_cols = c0 + cols - max(c0, 2 * d)
                return nt * (4 + row) + pipe(v_cols, 1, 3)
            return nt * (4 + row)
        if stage == "fc1":
            return nt * (4 + pipe(self.words(cols, n.hidden.bits), 1, 4))
        if stage == "router":
            return nt * (4 + pipe(self.words(cols, n.logit.bits), 1, 4)) + pipe(nt, 1, ROUTE_DEPTH)
        act = pipe(self.words(cols, n.act.bits), 1, 4)
        return nt * (4 + act * (2 if stage == "fc2" else 1))

    # -- experts --------------------------------------------------------------------------------
    def expert(self, queue: int, finals: int | None = None) -> Region:
        """One used expert's job: its weights, the gathered rows, fc1 → GELU → fc2, y·g into the accumulators,
        and the output rows of the ``finals`` tokens whose last selected expert this is (default: queue / K,
        a balanced routing's share; the writer is never the slowest process of the region)."""
        n, d, eh = self.n, self.m.dim, self.m.expert_hidden
        tiles = tile_lengths(queue, self.tt)
        loader = 4 + self.loader(self.ot(eh) * self.it(d), eh) + self.loader(self.ot(d) * self.it(eh), d)
        mac = 4 + sum(4 + self.mac_tile(nt, self.ot(eh), self.it(d), self.rate("expert_fc1"))
                      + self.mac_tile(nt, self.ot(d), self.it(eh), self.rate("expert_fc2")) for nt in tiles)
        reader = 4 + sum(4 + nt * (2 + pipe(self.words(d, n.norm.bits), 1, 4)) for nt in tiles)
        finals = ceil_div(queue, self.m.top_k) if finals is None else finals
        writer = (4 + sum(4 + nt * (4 + pipe(ceil_div(d, self.lanes.out), 1, 4)) for nt in tiles)
                  + finals * pipe(self.words(d, n.act.bits), 1, 4))
        return Region(loader, reader, mac, writer)

    def queues(self, used: int) -> int:
        """build_queues (offsets, the counting sort), the job list and the accumulators' clear."""
        m = self.m
        return pipe(m.num_experts, 1, 3) + pipe(m.num_tokens * m.top_k, 1, 4) + 2 * used + pipe(m.num_tokens, 1, 2)

    # -- attention ------------------------------------------------------------------------------
    def attention(self) -> int:
        """stage_attention: a DATAFLOW region of query reader, attention on the MAC array (per query group and
        head, q·kᵀ and p·v of every key block) and context writer; its slowest process."""
        m, n, hw = self.m, self.n, self.hw
        t, d, hd = m.num_tokens, m.dim, m.head_dim
        hd_passes = ceil_div(hd, self.mi)
        qk_rate, pv_rate = self.rate("attn_qk"), self.rate("attn_pv")
        exp = self.lanes.exp
        p_cyc = ceil_div(self.mo * self.mi, exp)
        q_tile = pipe(self.tile_rows, 1, 2)
        blocks = tile_lengths(t, hw.attn_key_block)
        per_chunk = hd * pv_rate
        chunk_len = max(per_chunk, p_cyc)
        last_len = chunk_len if chunk_len > per_chunk else per_chunk + 1  # l's rescale after the dims
        # key blocks software-pipelined: q·kᵀ of j, then p·v of j - 1; one exposed first probability tile
        head = 4 + (q_tile if hd_passes == 1 else 0) + 4 * (len(blocks) + 1) + pipe(p_cyc, 1, 6)
        for nb in blocks:
            head += hd_passes * (2 + pipe(nb * qk_rate, 1, self.depth)) + (q_tile * hd_passes if hd_passes > 1 else 0)
            head += pipe((ceil_div(nb, self.mi) - 1) * chunk_len + last_len, 1, self.depth)
        qw = self.words(d, n.qkv.bits)
        reader = compute = writer = 0
        for ng in tile_lengths(t, self.mo):
            reader += 2 + ng * (2 + pipe(qw, 1, 4))
            compute += 2 + m.num_heads * head
            writer += (2 + m.num_heads * (4 + pipe(ng, 1, RECIP_DEPTH) + pipe(ng * (hd // self.lanes.acc), 1, 4))
                       + ng * (2 + pipe(qw, 1, 4)))
        # the slowest process plus the fills of the other two (query reader 4, divider 72)
        return max(reader, compute, writer) + 4 + RECIP_DEPTH


def expert_regions(cfg: DesignConfig, queues: Sequence[int], arch: Arch = ARCH) -> list[Region]:
    """The regions of the used experts of one MoE layer (empty queues are no job)."""
    e = EngineModel(cfg, arch)
    return [e.expert(q) for q in queues if q > 0]
