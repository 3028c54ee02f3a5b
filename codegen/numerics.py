"""Integer constants and lookup tables of the datapath, derived from a config (docs/numerics.md §2).

These are computed once, in Python, when a design is generated; the golden model, the HLS C++ and the
RTL all read them from here (the generators emit them as constant arrays), so floating point never
enters the datapath. Every function is deterministic and exact for the documented ranges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from m3vit.codegen.config import DesignConfig, NumericsConfig

PROB_FRAC = NumericsConfig.PROB_FRAC
SCALE_FRAC = NumericsConfig.SCALE_FRAC
RECIP_FRAC = NumericsConfig.RECIP_FRAC
EXP2_MAX_SHIFT = 31
"""exp2neg clamps its integer shift to this value (any shift ≥ 17 already gives 0)."""
RECIP_DOMAIN_BITS = 47
"""RECIP(v) is defined for 1 ≤ v < 2^47 (docs/numerics.md §3): its numerator 2^(L+15) + ⌊v/2⌋ stays below
2^63 (int64, the golden model) for L = bit_length(v) ≤ 47. The datapath needs v < 2^28."""


def exp2_table(frac_bits: int) -> list[int]:
    """E[j] = round(2^(PROB_FRAC - j / 2^frac_bits)) for j in [0, 2^frac_bits); E[0] = 2^PROB_FRAC."""
    n = 1 << frac_bits
    return [math.floor(2.0 ** (PROB_FRAC - j / n) + 0.5) for j in range(n)]


def gelu(x: float) -> float:
    """Exact GELU, x·Φ(x)."""
    return 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0)))


@dataclass(frozen=True)
class GeluTable:
    """Piecewise-linear GELU over [-2^range_log2, 2^range_log2) in the hidden format.

    ``values[i]`` is GELU at breakpoint i (i = 0 … segments) rounded to the hidden format;
    ``seg_shift`` is the number of hidden-format lsbs per segment, as a power of two.
    """

    values: tuple[int, ...]
    lo: int  # first breakpoint, as a hidden-format integer (= -2^(range_log2 + frac))
    hi: int  # end of the table (= +2^(range_log2 + frac)); inputs ≥ hi pass through unchanged
    seg_shift: int


def gelu_table(n: NumericsConfig) -> GeluTable:
    frac = n.hidden.frac
    span_log2 = n.gelu_range_log2 + 1 + frac  # log2 of the table width in lsbs
    seg_shift = span_log2 - n.gelu_segments_log2
    lo = -(1 << (n.gelu_range_log2 + frac))
    segments = 1 << n.gelu_segments_log2
    vals = []
    for i in range(segments + 1):
        x = (lo + (i << seg_shift)) * 2.0**-frac
        vals.append(min(max(math.floor(gelu(x) * 2.0**frac + 0.5), n.hidden.qmin), n.hidden.qmax))
    return GeluTable(values=tuple(vals), lo=lo, hi=-lo, seg_shift=seg_shift)


@dataclass(frozen=True)
class Constants:
    """Every derived integer constant of a design (see docs/numerics.md for where each one is used)."""

    attn_scale: int  # round(log2(e) / sqrt(head_dim) · 2^SCALE_FRAC)
    router_scale: int  # round(log2(e) · 2^SCALE_FRAC)
    ln_eps: int  # round(D² · eps · 2^(2·act.frac)), at least 1
    exp2: tuple[int, ...]
    gelu: GeluTable


def constants(cfg: DesignConfig) -> Constants:
    m, n = cfg.model, cfg.numerics
    log2e = 1.0 / math.log(2.0)
    return Constants(
        attn_scale=math.floor(log2e / math.sqrt(m.head_dim) * 2**SCALE_FRAC + 0.5),
        router_scale=math.floor(log2e * 2**SCALE_FRAC + 0.5),
        ln_eps=max(1, math.floor(m.dim * m.dim * m.ln_eps * 2.0 ** (2 * n.act.frac) + 0.5)),
        exp2=tuple(exp2_table(n.exp_frac_bits)),
        gelu=gelu_table(n),
    )
