"""A literal, scalar transcription of docs/numerics.md with Python integers: the tests' oracle.

Deliberately naive (nested loops, no numpy tricks, no float64 matmuls, no flattened tables, the
streaming softmax written per query and per key block exactly as the spec's pseudo-code), so that it
shares no implementation with ``m3vit.sim.golden``. Only usable on tiny shapes.
"""

from __future__ import annotations

import math

from m3vit.codegen.config import DesignConfig, FixedFormat
from m3vit.codegen.numerics import GeluTable, constants


def rshr(x: int, s: int) -> int:
    return x if s == 0 else (x + (1 << (s - 1))) >> s


def sat(x: int, f: FixedFormat, counts: dict[str, int] | None = None, cls: str = "") -> int:
    y = min(max(x, f.qmin), f.qmax)
    if counts is not None and y != x:
        counts[cls] = counts.get(cls, 0) + 1
    return y


def recip(v: int) -> tuple[int, int]:
    if not 1 <= v < 2**47:
        raise ValueError("RECIP is defined for 1 ≤ v < 2^47")
    length = v.bit_length()
    return (2 ** (length + 15) + v // 2) // v, length


def exp2neg(d: int, table: tuple[int, ...], fz: int) -> int:
    u = -d
    n = min(u >> fz, 31)
    return rshr(table[u & ((1 << fz) - 1)], n)


def gelu(h: int, t: GeluTable) -> int:
    if h < t.lo:
        return 0
    if h >= t.hi:
        return h
    u = h - t.lo
    i, r = u >> t.seg_shift, u & ((1 << t.seg_shift) - 1)
    return t.values[i] + rshr((t.values[i + 1] - t.values[i]) * r, t.seg_shift)


class SpecOracle:
    """Runs one image through the backbone, one scalar at a time."""

    def __init__(self, cfg: DesignConfig, q) -> None:
        self.cfg, self.q, self.k = cfg, q, constants(cfg)
        self.counts: dict[str, int] = {}

    def linear(self, a: list[int], w, b, fin: FixedFormat, fout: FixedFormat, cls: str) -> list[int]:
        shift = fin.frac + self.cfg.numerics.weight.frac - fout.frac
        return [
            sat(rshr(sum(int(a[i]) * int(w[o][i]) for i in range(len(a))) + int(b[o]), shift), fout,
                self.counts, cls)
            for o in range(len(w))
        ]

    def gelu(self, h: int) -> int:
        return gelu(h, self.k.gelu)

    def layernorm(self, x: list[int], gamma, beta) -> list[int]:
        n = self.cfg.numerics
        d = len(x)
        s1 = sum(x)
        s2 = sum(v * v for v in x)
        s = math.isqrt(d * s2 - s1 * s1 + self.k.ln_eps)
        r, length = recip(s)
        fh = n.ln_hat_frac
        out = []
        for i, v in enumerate(x):
            xhat = rshr((d * v - s1) * r, length + 15 - fh)
            acc = xhat * int(gamma[i]) + (int(beta[i]) << fh)
            out.append(sat(rshr(acc, fh + n.ln_param.frac - n.norm.frac), n.norm, self.counts, "norm"))
        return out

    def attention(self, qkv: list[list[int]]) -> list[list[int]]:
        m, n, hw = self.cfg.model, self.cfg.numerics, self.cfg.hardware
        t_count, d, hd, fz = len(qkv), m.dim, m.head_dim, n.exp_frac_bits
        table = self.k.exp2
        ctx = [[0] * d for _ in range(t_count)]
        for h in range(m.num_heads):
            for t in range(t_count):
                q = qkv[t][h * hd : (h + 1) * hd]
                mx = None
                l_sum = 0
                acc = [0] * hd
                for lo in range(0, t_count, hw.attn_key_block):
                    keys = range(lo, min(lo + hw.attn_key_block, t_count))
                    zs = {}
                    for j in keys:
                        k = qkv[j][d + h * hd : d + (h + 1) * hd]
                        s = sum(q[i] * k[i] for i in range(hd))
                        z = rshr(s * self.k.attn_scale, 2 * n.qkv.frac + 15 - fz)
                        zs[j] = min(max(z, -(2**31)), 2**31 - 1)
                    m_new = max(zs.values()) if mx is None else max(mx, *zs.values())
                    if mx is not None:
                        alpha = exp2neg(mx - m_new, table, fz)
                        l_sum = rshr(l_sum * alpha, 15)
                        acc = [rshr(a * alpha, 15) for a in acc]
                    for j in keys:
                        p = exp2neg(zs[j] - m_new, table, fz)
                        l_sum += p
                        v = qkv[j][2 * d + h * hd : 2 * d + (h + 1) * hd]
                        acc = [acc[i] + p * v[i] for i in range(hd)]
                    mx = m_new
                r, length = recip(l_sum)
                for i in range(hd):
                    ctx[t][h * hd + i] = sat(rshr(acc[i] * r, length + 15), n.qkv, self.counts, "qkv")
        return ctx

    def route(self, x: list[int], ex, task: int) -> tuple[list[int], list[int], list[int]]:
        m, n = self.cfg.model, self.cfg.numerics
        logits = self.linear(x, ex.router_w[task], ex.router_b[task], n.norm, n.logit, "logit")
        mx = max(logits)
        shift = n.logit.frac + 15 - n.exp_frac_bits
        p = [exp2neg(rshr((lg - mx) * self.k.router_scale, shift), self.k.exp2, n.exp_frac_bits) for lg in logits]
        r, length = recip(sum(p))
        g = [rshr(pe * r, length) for pe in p]
        order = sorted(range(m.num_experts), key=lambda e: (-logits[e], e))[: m.top_k]
        return order, [g[e] for e in order], logits

    def pruned_gates(self, logits: list[int], kept: list[int], top_k: int) -> tuple[list[int], list[int]]:
        """§10's pruned router on one token's integer logits: the top_k kept experts and their gates."""
        n = self.cfg.numerics
        mx = max(logits[e] for e in kept)
        shift = n.logit.frac + 15 - n.exp_frac_bits
        p = {e: exp2neg(rshr((logits[e] - mx) * self.k.router_scale, shift), self.k.exp2, n.exp_frac_bits)
             for e in kept}
        r, length = recip(sum(p.values()))
        order = sorted(kept, key=lambda e: (-logits[e], e))[:top_k]
        return order, [rshr(p[e] * r, length) for e in order]

    def expert(self, x: list[int], ex, e: int) -> list[int]:
        n = self.cfg.numerics
        h = [self.gelu(v) for v in self.linear(x, ex.w1[e], ex.b1[e], n.norm, n.hidden, "hidden")]
        return self.linear(h, ex.w2[e], ex.b2[e], n.hidden, n.act, "act")

    def residual(self, xs: list[list[int]], ys: list[list[int]]) -> list[list[int]]:
        act = self.cfg.numerics.act
        rows = zip(xs, ys, strict=True)
        return [[sat(a + b, act, self.counts, "act") for a, b in zip(x, y, strict=True)] for x, y in rows]

    def run(self, image, task: int) -> tuple[list[list[int]], dict[str, list[list[int]]]]:
        """Returns the output tokens and the taps (same names as the golden model)."""
        m, n = self.cfg.model, self.cfg.numerics
        c, p = m.in_channels, m.patch_size
        gh, gw = m.grid
        taps: dict[str, list[list[int]]] = {}
        img = [[[sat(int(image[ch][y][x]), n.input, self.counts, "input") for x in range(m.image_size[1])]
                for y in range(m.image_size[0])] for ch in range(c)]
        xs = [[int(v) for v in self.q.pos[0]]]
        for py in range(gh):
            for px in range(gw):
                a = [img[ch][py * p + ky][px * p + kx] for ch in range(c) for ky in range(p) for kx in range(p)]
                e = self.linear(a, self.q.patch.w, self.q.patch.b, n.input, n.act, "act")
                pos = self.q.pos[1 + py * gw + px]
                xs.append([sat(e[i] + int(pos[i]), n.act, self.counts, "act") for i in range(m.dim)])
        taps["embed"] = xs
        for bi, blk in enumerate(self.q.blocks):
            n1 = [self.layernorm(x, blk.norm1.gamma, blk.norm1.beta) for x in xs]
            qkv = [self.linear(v, blk.qkv.w, blk.qkv.b, n.norm, n.qkv, "qkv") for v in n1]
            ctx = self.attention(qkv)
            proj = [self.linear(v, blk.proj.w, blk.proj.b, n.qkv, n.act, "act") for v in ctx]
            xs = self.residual(xs, proj)
            taps[f"block{bi}.attn_res"] = xs
            n2 = [self.layernorm(x, blk.norm2.gamma, blk.norm2.beta) for x in xs]
            if blk.experts is not None:
                ys = []
                for v in n2:
                    experts, gates, _ = self.route(v, blk.experts, task)
                    acc = [0] * m.dim
                    for e, g in zip(experts, gates, strict=True):
                        acc = [a + yv * g for a, yv in zip(acc, self.expert(v, blk.experts, e), strict=True)]
                    ys.append([sat(rshr(a, 15), n.act, self.counts, "act") for a in acc])
            else:
                ys = []
                for v in n2:
                    h = [self.gelu(u) for u in self.linear(v, blk.fc1.w, blk.fc1.b, n.norm, n.hidden, "hidden")]
                    ys.append(self.linear(h, blk.fc2.w, blk.fc2.b, n.hidden, n.act, "act"))
            taps[f"block{bi}.mlp"] = ys
            xs = self.residual(xs, ys)
            taps[f"block{bi}.out"] = xs
        return xs, taps
