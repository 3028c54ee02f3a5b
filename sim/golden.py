"""Bit-accurate numpy golden model of the accelerator (docs/numerics.md, one function per section).

``GoldenModel(cfg, qmodel).run(image, task)`` runs the backbone for one image and returns a
:class:`GoldenResult` with the output tokens, the per-layer taps that C simulation and RTL are compared
with, each MoE layer's routing and the saturation report. MoE layers run in the accelerator's order
(route every token → per-expert queues → expert by expert → gate-weighted scatter-accumulate);
``moe_token_by_token`` is the independent second schedule the tests compare it with.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from m3vit.codegen.config import DesignConfig
from m3vit.codegen.numerics import PROB_FRAC, RECIP_FRAC, SCALE_FRAC, constants
from m3vit.sim.fixedpoint import (
    SaturationLog,
    exp2neg,
    exp2neg_flat_table,
    gelu_lut,
    layernorm,
    linear,
    matmul,
    quantize_float,
    recip,
    requantize,
    rshr,
    saturate,
    saturate_bits,
)
from m3vit.sim.pruning import ExpertMap, KeptExperts
from m3vit.sim.quantize import QBlock, QExperts, QLayerNorm, QuantizedModel

SCORE_BITS = 32  # base-2 attention logits z are saturated to a signed 32-bit register


@dataclass(frozen=True)
class Routing:
    """One MoE layer's routing for one image.

    ``experts`` [T, K] chosen experts in rank order (highest logit first, ties → lower index; K' ≤ K columns
    in a pruned layer);
    ``gates`` [T, K] their integer combine weights (PROB_FRAC fraction bits, not renormalised);
    ``logits`` [T, N] router logits in the logit format.
    """

    experts: np.ndarray
    gates: np.ndarray
    logits: np.ndarray

    def queue(self, expert: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokens routed to ``expert`` in ascending order, and their gate weights."""
        tok, slot = np.nonzero(self.experts == expert)
        return tok, self.gates[tok, slot]

    @property
    def load(self) -> np.ndarray:
        """Tokens per expert, [N]."""
        return np.bincount(self.experts.ravel(), minlength=self.logits.shape[1])


@dataclass
class GoldenResult:
    tokens: np.ndarray  # [T, dim] backbone output, act format
    taps: dict[str, np.ndarray] = field(default_factory=dict)
    routing: dict[int, Routing] = field(default_factory=dict)  # block index → routing
    saturation: dict[str, dict[str, int]] = field(default_factory=dict)  # layer → class → count


class GoldenModel:
    """The accelerator's arithmetic, exactly. One instance per (config, quantised weights).

    ``experts`` (optional) prunes MoE layers per task: (task, block) → the kept experts and top-K, routed by
    the pruned-router rule of docs/numerics.md §10; layers without an entry route as usual.
    """

    def __init__(self, cfg: DesignConfig, qmodel: QuantizedModel, experts: ExpertMap | None = None) -> None:
        self.cfg, self.q = cfg, qmodel
        self.experts: dict[tuple[int, int], KeptExperts] = dict(experts or {})
        self.k = constants(cfg)
        self._exp2 = np.asarray(self.k.exp2, dtype=np.int64)
        self._gelu = np.asarray(self.k.gelu.values, dtype=np.int64)
        gt = self.k.gelu
        # GELU of every in-range h, when that table is small enough (2^14 entries by default)
        self._gelu_flat = (
            gelu_lut(np.arange(gt.lo, gt.hi, dtype=np.int64), gt, self._gelu) if gt.hi - gt.lo <= 1 << 20 else None
        )
        self._exp2_flat = exp2neg_flat_table(self._exp2, cfg.numerics.exp_frac_bits)
        self._exp2_flat_f = self._exp2_flat.astype(np.float64)

    # ------------------------------------------------------------------------------------ input
    def quantize_image(self, image: np.ndarray) -> np.ndarray:
        """Host side: a normalised float image [C, H, W] → the input format (saturating)."""
        image = np.asarray(image)
        self._check_shape(image)
        if not np.issubdtype(image.dtype, np.floating):
            raise TypeError(f"quantize_image expects a float image, got dtype {image.dtype}")
        return quantize_float(image, self.cfg.numerics.input)

    def _check_shape(self, image: np.ndarray) -> None:
        m = self.cfg.model
        expected = (m.in_channels, *m.image_size)
        if image.shape != expected:
            raise ValueError(f"image has shape {list(image.shape)}; expected [C, H, W] = {list(expected)}")

    # ------------------------------------------------------------------------------------ run
    def run(self, image: np.ndarray, task: str | int, taps: bool = True) -> GoldenResult:
        """Run the backbone on one input-format integer image [C, H, W] for ``task``."""
        image = np.asarray(image)
        self._check_shape(image)
        if not np.issubdtype(image.dtype, np.integer):
            raise TypeError(
                f"image dtype {image.dtype} is not an integer type; quantise floats with quantize_image()"
            )
        t = self.cfg.model.task_index(task)
        log = SaturationLog()
        res = GoldenResult(tokens=np.empty(0))
        record = (lambda k, v: res.taps.__setitem__(k, v)) if taps else (lambda k, v: None)

        log.layer = "embed"
        x = self.patch_embed(saturate(image.astype(np.int64), self.cfg.numerics.input, log, "input"), log)
        record("embed", x)
        for i, blk in enumerate(self.q.blocks):
            log.layer = f"block{i}"
            x = self.block(i, blk, x, t, log, record, res)
        res.tokens = x
        res.saturation = log.by_layer()
        return res

    # ------------------------------------------------------------------------------------ §5
    def patch_embed(self, image: np.ndarray, log: SaturationLog) -> np.ndarray:
        m, n = self.cfg.model, self.cfg.numerics
        c, p = m.in_channels, m.patch_size
        gh, gw = m.grid
        patches = image.reshape(c, gh, p, gw, p).transpose(1, 3, 0, 2, 4).reshape(gh * gw, c * p * p)
        shift = n.input.frac + n.weight.frac - n.act.frac
        e = linear(patches, self.q.patch.w, self.q.patch.b, shift, n.act, log, "act")
        x = np.concatenate([np.zeros((1, m.dim), np.int64), e]) + self.q.pos
        x[0] = self.q.pos[0]
        return saturate(x, n.act, log, "act")

    # ------------------------------------------------------------------------------------ §13
    def block(self, i: int, blk: QBlock, x: np.ndarray, task: int, log: SaturationLog, record, res) -> np.ndarray:
        n = self.cfg.numerics
        n1 = self.layernorm(x, blk.norm1, log)
        record(f"block{i}.norm1", n1)
        qkv = linear(n1, blk.qkv.w, blk.qkv.b, n.norm.frac + n.weight.frac - n.qkv.frac, n.qkv, log, "qkv")
        record(f"block{i}.qkv", qkv)
        ctx = self.attention(qkv, log)
        record(f"block{i}.attn", ctx)
        a = linear(ctx, blk.proj.w, blk.proj.b, n.qkv.frac + n.weight.frac - n.act.frac, n.act, log, "act")
        x = saturate(x + a, n.act, log, "act")
        record(f"block{i}.attn_res", x)
        n2 = self.layernorm(x, blk.norm2, log)
        record(f"block{i}.norm2", n2)
        if blk.experts is not None:
            routing = self.route(n2, blk.experts, task, log, self.experts.get((task, i)))
            res.routing[i] = routing
            record(f"block{i}.logits", routing.logits)
            y = self.moe_expert_by_expert(n2, blk.experts, routing, log)
        else:
            h = self.gelu(linear(n2, blk.fc1.w, blk.fc1.b, self._shift("norm", "hidden"), n.hidden, log, "hidden"))
            y = linear(h, blk.fc2.w, blk.fc2.b, self._shift("hidden", "act"), n.act, log, "act")
        record(f"block{i}.mlp", y)
        x = saturate(x + y, n.act, log, "act")
        record(f"block{i}.out", x)
        return x

    def _shift(self, src: str, dst: str) -> int:
        n = self.cfg.numerics
        return getattr(n, src).frac + n.weight.frac - getattr(n, dst).frac

    # ------------------------------------------------------------------------------------ §6, §7
    def layernorm(self, x: np.ndarray, ln: QLayerNorm, log: SaturationLog) -> np.ndarray:
        n = self.cfg.numerics
        return layernorm(x, ln.gamma, ln.beta, self.k.ln_eps, n.ln_hat_frac, n.ln_param.frac, n.norm, log, "norm")

    def gelu(self, h: np.ndarray) -> np.ndarray:
        """§8, through a table of GELU(h) for every in-range h (equal to gelu_lut, one gather)."""
        lo, hi = self.k.gelu.lo, self.k.gelu.hi
        if self._gelu_flat is None:
            return gelu_lut(h, self.k.gelu, self._gelu)
        g = self._gelu_flat[np.clip(h, lo, hi - 1) - lo]
        return np.where(h < lo, 0, np.where(h >= hi, h, g))

    # ------------------------------------------------------------------------------------ §9
    def attention(self, qkv: np.ndarray, log: SaturationLog) -> np.ndarray:
        """Streaming softmax attention over key blocks (§9), all heads and queries at once.

        Exact integers are carried in float64 where every value stays below 2^53 (scores, base-2
        logits, probabilities, p·v partial sums): that lets BLAS do the products without rounding.
        """
        m, n = self.cfg.model, self.cfg.numerics
        t, d, h, hd = qkv.shape[0], m.dim, m.num_heads, m.head_dim
        fz, bk = n.exp_frac_bits, self.cfg.hardware.attn_key_block
        heads = np.ascontiguousarray(qkv.reshape(t, 3, h, hd).transpose(1, 2, 0, 3), dtype=np.float64)
        q, v = heads[0], heads[2]  # [H, T, hd]
        k_t = np.ascontiguousarray(heads[1].transpose(0, 2, 1))  # [H, hd, T]
        shift = 2 * n.qkv.frac + SCALE_FRAC - fz
        zscale = self.k.attn_scale * 2.0**-shift  # s·C·2^-shift is exact: < 2^53 significant bits
        z_bound = (1 << (2 * (n.qkv.bits - 1))) * hd * self.k.attn_scale / 2.0**shift + 1
        z_can_saturate = z_bound >= 2 ** (SCORE_BITS - 1)
        sc_exact = (1 << (2 * (n.qkv.bits - 1))) * hd * self.k.attn_scale < 2**53
        lim = self._exp2_flat.size - 1
        l_acc = acc = m_run = None
        for lo in range(0, t, bk):
            z = np.matmul(q, k_t[:, :, lo : lo + bk])  # scores s, [H, T, B]
            if sc_exact:
                z *= zscale
                z += 0.5
                np.floor(z, out=z)  # z = RSHR(s·C, shift)
            else:  # s·C may reach 2^53: take the product in int64 (the HLS generator bounds it by 2^63)
                z = rshr(z.astype(np.int64) * self.k.attn_scale, shift).astype(np.float64)
            if z_can_saturate:
                z = saturate_bits(z.astype(np.int64), SCORE_BITS, log, "score").astype(np.float64)
            m_new = z.max(axis=-1, keepdims=True)
            if m_run is not None:
                np.maximum(m_new, m_run, out=m_new)
            np.subtract(m_new, z, out=z)  # u = m - z ≥ 0
            np.minimum(z, lim, out=z)
            p = self._exp2_flat_f[z.astype(np.intp)]  # EXP2NEG(z - m)
            ps = p.sum(axis=-1, keepdims=True).astype(np.int64)
            pv = np.matmul(p, v[:, lo : lo + bk]).astype(np.int64)
            if m_run is None:
                l_acc, acc = ps, pv
            else:
                alpha = self._exp2_flat[np.minimum(m_new - m_run, lim).astype(np.intp)]
                l_acc = rshr(l_acc * alpha, PROB_FRAC) + ps
                acc = rshr(acc * alpha, PROB_FRAC) + pv
            m_run = m_new
        r, length = recip(l_acc)
        o = requantize(acc * r, length + RECIP_FRAC, n.qkv, log, "qkv")  # [H, T, hd]
        return o.transpose(1, 0, 2).reshape(t, d)

    # ------------------------------------------------------------------------------------ §10
    def route(
        self, x: np.ndarray, ex: QExperts, task: int, log: SaturationLog, keep: KeptExperts | None = None
    ) -> Routing:
        """Router: logits, softmax over all N by exp2 table, top-K by logit (ties → lower index).

        With ``keep`` the layer is pruned: softmax and top-``keep.top_k`` over the kept experts only
        (:meth:`pruned_gates`)."""
        m, n = self.cfg.model, self.cfg.numerics
        logits = linear(x, ex.router_w[task], ex.router_b[task], self._shift("norm", "logit"), n.logit, log, "logit")
        if keep is not None:
            experts, gates = self.pruned_gates(logits, keep)
            return Routing(experts=experts, gates=gates, logits=logits)
        z = rshr((logits - logits.max(axis=1, keepdims=True)) * self.k.router_scale,
                 n.logit.frac + SCALE_FRAC - n.exp_frac_bits)
        p = exp2neg(z, self._exp2, n.exp_frac_bits)
        r, length = recip(p.sum(axis=1, keepdims=True))
        gates = rshr(p * r, length + RECIP_FRAC - PROB_FRAC)
        # stable sort on -logit keeps ties in ascending expert order
        experts = np.argsort(-logits, axis=1, kind="stable")[:, : m.top_k]
        return Routing(experts=experts, gates=np.take_along_axis(gates, experts, axis=1), logits=logits)

    def pruned_gates(self, logits: np.ndarray, keep: KeptExperts) -> tuple[np.ndarray, np.ndarray]:
        """§10's pruned router on integer ``logits`` [T, N]: experts [T, K'] and gates [T, K'] (K' = keep.top_k).

        Pruned experts take no part: the max, the exp2 sum and the top-K run over the kept experts only
        (as if their logits were -∞); with every expert kept this equals the unpruned router bit for bit.
        """
        n = self.cfg.numerics
        kept = np.asarray(keep.mask(logits.shape[1]))  # [N]
        # any kept logit serves as the masked-out value: it never exceeds the kept max nor enters the sum
        lmax = np.where(kept, logits, logits[:, [keep.experts[0]]]).max(axis=1, keepdims=True)
        z = rshr(np.where(kept, logits - lmax, 0) * self.k.router_scale, n.logit.frac + SCALE_FRAC - n.exp_frac_bits)
        p = np.where(kept, exp2neg(z, self._exp2, n.exp_frac_bits), 0)
        r, length = recip(p.sum(axis=1, keepdims=True))
        gates = rshr(p * r, length + RECIP_FRAC - PROB_FRAC)
        # stable sort of the kept experts' -logit keeps ties in ascending expert order
        cols = np.asarray(keep.experts)
        order = np.argsort(-logits[:, cols], axis=1, kind="stable")[:, : keep.top_k]
        experts = cols[order]
        return experts, np.take_along_axis(gates, experts, axis=1)

    # ------------------------------------------------------------------------------------ §11
    def expert_ffn(self, x: np.ndarray, ex: QExperts, e: int, log: SaturationLog) -> np.ndarray:
        n = self.cfg.numerics
        h = self.gelu(linear(x, ex.w1[e], ex.b1[e], self._shift("norm", "hidden"), n.hidden, log, "hidden"))
        return linear(h, ex.w2[e], ex.b2[e], self._shift("hidden", "act"), n.act, log, "act")

    def moe_expert_by_expert(self, x: np.ndarray, ex: QExperts, routing: Routing, log: SaturationLog) -> np.ndarray:
        """The accelerator's schedule: each used expert once, over its whole queue."""
        acc = np.zeros_like(x)
        for e in range(self.cfg.model.num_experts):
            tok, g = routing.queue(e)
            if tok.size == 0:
                continue  # empty experts are skipped: their weights are never fetched
            acc[tok] += self.expert_ffn(x[tok], ex, e, log) * g[:, None]
        return saturate(rshr(acc, PROB_FRAC), self.cfg.numerics.act, log, "act")

    def moe_token_by_token(self, x: np.ndarray, ex: QExperts, routing: Routing, log: SaturationLog) -> np.ndarray:
        """Second schedule for cross-checking: token by token, each token's K experts in rank order."""
        out = np.empty_like(x)
        for t in range(x.shape[0]):
            acc = np.zeros(x.shape[1], np.int64)
            for e, g in zip(routing.experts[t], routing.gates[t], strict=True):
                acc += self.expert_ffn(x[t : t + 1], ex, int(e), log)[0] * int(g)
            out[t] = saturate(rshr(acc, PROB_FRAC), self.cfg.numerics.act, log, "act")
        return out


__all__ = ["GoldenModel", "GoldenResult", "Routing", "matmul"]
