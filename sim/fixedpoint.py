"""Vectorised numpy implementation of the integer primitives of docs/numerics.md §3.

All tensors are ``np.int64`` arrays holding exact integers. Matmuls go through float64 BLAS, which is
exact because the config validator bounds every sum below 2^52 (``numerics_problems``); the bound is
re-checked here on the actual operands, so a violation fails loudly instead of rounding.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from m3vit.codegen.config import FixedFormat
from m3vit.codegen.numerics import EXP2_MAX_SHIFT, PROB_FRAC, RECIP_DOMAIN_BITS, RECIP_FRAC, GeluTable

EXACT_F64 = 1 << 53


class SaturationLog:
    """Counts saturation events per (layer, tensor class): values that were clamped, never wrapped."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self.layer = "input"

    def add(self, cls: str, n: int) -> None:
        if n:
            self.counts[(self.layer, cls)] += int(n)

    def by_layer(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for (layer, cls), n in sorted(self.counts.items()):
            out.setdefault(layer, {})[cls] = n
        return out

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def rshr(x: np.ndarray, shift: int | np.ndarray) -> np.ndarray:
    """RSHR: round half up, ⌊(x + 2^(s-1)) / 2^s⌋; identity where s = 0 (s may be an array)."""
    x = np.asarray(x, dtype=np.int64)
    s = np.asarray(shift, dtype=np.int64)
    if s.ndim == 0:
        return x if s == 0 else (x + (np.int64(1) << (s - 1))) >> s
    half = np.where(s > 0, np.int64(1) << np.maximum(s - 1, 0), 0)
    return (x + half) >> s


def saturate(x: np.ndarray, fmt: FixedFormat, log: SaturationLog | None = None, cls: str = "") -> np.ndarray:
    """SAT: clamp to the format's range, counting clamped elements under ``cls``."""
    lo, hi = fmt.qmin, fmt.qmax
    if log is not None:
        log.add(cls, np.count_nonzero((x < lo) | (x > hi)))
    return np.clip(x, lo, hi)


def saturate_bits(x: np.ndarray, bits: int, log: SaturationLog | None = None, cls: str = "") -> np.ndarray:
    return saturate(x, FixedFormat(bits=bits, frac=0), log, cls)


def requantize(
    acc: np.ndarray, shift: int | np.ndarray, fmt: FixedFormat, log: SaturationLog | None = None, cls: str = ""
) -> np.ndarray:
    """REQ: SAT_fmt(RSHR(acc, shift))."""
    return saturate(rshr(acc, shift), fmt, log, cls)


def quantize_float(x: np.ndarray, fmt: FixedFormat, log: SaturationLog | None = None, cls: str = "") -> np.ndarray:
    """Host-side float → fixed (Q): SAT(⌊x·2^frac + 1/2⌋), exactly ``ap_fixed<W, W-frac, AP_RND, AP_SAT>``.

    Rounding is exact: y = x·2^frac (a power-of-two scaling, exact in float64) is split into ⌊y⌋ and the
    fraction y - ⌊y⌋ (also exact), which is compared with 1/2; ``floor(y + 0.5)`` in float64 would round
    values just below a half up. Rejects NaN/inf."""
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"cannot quantise non-finite values to {fmt} ({cls or 'tensor'})")
    big = float(1 << 62)  # far outside every format: clipping first keeps the arithmetic finite and exact
    limit = np.ldexp(big, -fmt.frac)
    scaled = np.ldexp(np.clip(x, -limit, limit), fmt.frac)
    whole = np.floor(scaled)
    rounded = whole.astype(np.int64) + (scaled - whole >= 0.5)
    return saturate(rounded, fmt, log, cls)


def matmul(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Exact integer ``a @ w.T`` (w in PyTorch [out, in] layout) via float64 BLAS.

    Raises if the operands could make a sum reach 2^53 (then float64 would round).
    """
    k = a.shape[-1]
    bound = int(np.abs(a).max(initial=0)) * int(np.abs(w).max(initial=0)) * k
    if bound >= EXACT_F64:
        raise OverflowError(f"matmul bound {bound} ≥ 2^53: float64 accumulation would not be exact")
    return (a.astype(np.float64) @ w.T.astype(np.float64)).astype(np.int64)


def linear(
    a: np.ndarray, w: np.ndarray, b: np.ndarray, shift: int, fmt: FixedFormat,
    log: SaturationLog | None = None, cls: str = "",
) -> np.ndarray:
    """LINEAR: REQ_fmt(Σ a·w + b, shift) with b already at accumulator scale."""
    return requantize(matmul(a, w) + b, shift, fmt, log, cls)


def bit_length(v: np.ndarray) -> np.ndarray:
    """Exact bit length of positive integers below 2^53."""
    _, e = np.frexp(np.asarray(v, dtype=np.float64))
    return e.astype(np.int64)


def isqrt(v: np.ndarray) -> np.ndarray:
    """ISQRT: ⌊√v⌋ exactly, for 0 ≤ v < 2^53."""
    v = np.asarray(v, dtype=np.int64)
    s = np.floor(np.sqrt(v.astype(np.float64))).astype(np.int64)
    s = np.where(s * s > v, s - 1, s)
    s = np.where((s + 1) * (s + 1) <= v, s + 1, s)
    return s


def recip(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RECIP: for 1 ≤ v < 2^47, L = bit_length(v), R = ⌊(2^(L+15) + ⌊v/2⌋) / v⌋ ∈ [2^15, 2^16]."""
    v = np.asarray(v, dtype=np.int64)
    if np.any(v < 1) or np.any(v >= 1 << RECIP_DOMAIN_BITS):
        raise ValueError(
            f"RECIP needs 1 ≤ v < 2^{RECIP_DOMAIN_BITS} (its 2^(L+15) numerator is kept in 63 bits)"
        )
    length = bit_length(v)
    r = ((np.int64(1) << (length + RECIP_FRAC)) + (v >> 1)) // v
    return r, length


def exp2neg(d: np.ndarray, table: np.ndarray, frac_bits: int) -> np.ndarray:
    """EXP2NEG: 2^(d / 2^frac_bits) for d ≤ 0 with PROB_FRAC fraction bits, by table and shift."""
    u = -np.asarray(d, dtype=np.int64)
    n = np.minimum(u >> frac_bits, EXP2_MAX_SHIFT)
    f = u & ((1 << frac_bits) - 1)
    return rshr(table[f], n)


def exp2neg_flat_table(table: np.ndarray, frac_bits: int) -> np.ndarray:
    """EXP2NEG for every u = -d in [0, 17·2^frac_bits], as one table; the last entry (0) serves all larger u.

    Any shift n ≥ 17 maps every table entry (≤ 2^15) to 0, so ``flat[min(-d, len-1)]`` equals
    ``exp2neg(d)`` everywhere: one gather instead of six array passes.
    """
    u = np.arange(17 * (1 << frac_bits) + 1, dtype=np.int64)
    return exp2neg(-u, table, frac_bits)


def gelu_lut(h: np.ndarray, t: GeluTable, values: np.ndarray) -> np.ndarray:
    """GELU by linear interpolation between table breakpoints (hidden format in and out)."""
    h = np.asarray(h, dtype=np.int64)
    u = np.clip(h, t.lo, t.hi - 1) - t.lo
    i = u >> t.seg_shift
    r = u & ((1 << t.seg_shift) - 1)
    y0, y1 = values[i], values[i + 1]
    g = y0 + rshr((y1 - y0) * r, t.seg_shift)
    return np.where(h < t.lo, 0, np.where(h >= t.hi, h, g))


def layernorm(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: int, hat_frac: int, param_frac: int,
    fmt: FixedFormat, log: SaturationLog | None = None, cls: str = "",
) -> np.ndarray:
    """LAYERNORM over the last axis (docs/numerics.md §6): exact integer mean/variance, ISQRT, RECIP."""
    d = x.shape[-1]
    s1 = x.sum(axis=-1, keepdims=True)
    s2 = (x * x).sum(axis=-1, keepdims=True)
    v = d * s2 - s1 * s1 + eps
    r, length = recip(isqrt(v))
    xhat = rshr((d * x - s1) * r, length + RECIP_FRAC - hat_frac)
    return requantize(xhat * gamma + (beta << hat_frac), hat_frac + param_frac - fmt.frac, fmt, log, cls)


__all__ = [
    "PROB_FRAC",
    "SaturationLog",
    "bit_length",
    "exp2neg",
    "gelu_lut",
    "isqrt",
    "layernorm",
    "linear",
    "matmul",
    "quantize_float",
    "recip",
    "requantize",
    "rshr",
    "saturate",
    "saturate_bits",
]
