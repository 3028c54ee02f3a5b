"""The emitted constants and tables against the formulas of docs/numerics.md §2, computed independently
(high-precision mpmath, literals worked out by hand) — every implementation reads these tables."""

from __future__ import annotations

import mpmath
import pytest

from m3vit.codegen.config import NumericsConfig, load_config, with_overrides
from m3vit.codegen.numerics import constants, exp2_table, gelu_table

mpmath.mp.dps = 40


def _round_half_up(x: mpmath.mpf) -> int:
    return int(mpmath.floor(x + mpmath.mpf("0.5")))


@pytest.mark.parametrize("fz", [4, 8, 10])
def test_exp2_table_entries(fz: int) -> None:
    want = [_round_half_up(mpmath.power(2, 15 - mpmath.mpf(j) / 2**fz)) for j in range(2**fz)]
    assert exp2_table(fz) == want
    assert want[0] == 32768 and want[2**fz // 2] == 23170  # 2^14.5 = 23170.475


def test_scale_constants() -> None:
    tiny, pascal = load_config("tiny"), load_config("m3vit_small_pascal")
    assert constants(pascal).router_scale == 47274  # log2(e)·2^15 = 47274.09
    assert constants(pascal).attn_scale == 8357  # log2(e)/√32·2^15 = 8357.08
    assert constants(tiny).attn_scale == 11819  # log2(e)/√16·2^15 = 11818.52
    assert constants(pascal).ln_eps == 9664  # 384²·1e-6·2^16 = 9663.68
    assert constants(tiny).ln_eps == 268  # 64²·1e-6·2^16 = 268.44
    tiny_eps = with_overrides(tiny, **{"model.ln_eps": 1e-12})
    assert constants(tiny_eps).ln_eps == 1  # clamped to at least 1


def test_gelu_table_against_mpmath() -> None:
    n = NumericsConfig()
    t = gelu_table(n)
    frac = n.hidden.frac
    assert (t.lo, t.hi, t.seg_shift) == (-8 * 2**frac, 8 * 2**frac, 6)  # [-8, 8) in 256 segments of 64 lsbs
    for i, value in enumerate(t.values):
        x = mpmath.mpf(t.lo + i * 2**t.seg_shift) / 2**frac
        exact = x * (1 + mpmath.erf(x / mpmath.sqrt(2))) / 2
        assert value == min(max(_round_half_up(exact * 2**frac), n.hidden.qmin), n.hidden.qmax), i
