"""Property tests of every fixed-point primitive (m3vit.sim.fixedpoint) against Python integers."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from m3vit.codegen.config import FixedFormat, NumericsConfig
from m3vit.codegen.numerics import exp2_table, gelu_table
from m3vit.sim import fixedpoint as fp
from tests.spec_oracle import exp2neg as exp2neg_oracle
from tests.spec_oracle import gelu as gelu_oracle
from tests.spec_oracle import recip as recip_oracle
from tests.spec_oracle import rshr as rshr_oracle

I48 = st.integers(-(2**47), 2**47 - 1)
formats = st.builds(lambda b, f: FixedFormat(bits=b, frac=f), st.integers(2, 32), st.integers(-8, 24))


@given(st.lists(I48, min_size=1, max_size=40), st.integers(0, 40))
def test_rshr_is_round_half_up(xs: list[int], s: int) -> None:
    got = fp.rshr(np.array(xs, dtype=np.int64), s)
    for x, g in zip(xs, got, strict=True):
        want = x if s == 0 else math.floor(x / 2**s + 0.5) if abs(x) < 2**50 else rshr_oracle(x, s)
        assert int(g) == rshr_oracle(x, s) == want


def test_rshr_ties_and_array_shifts() -> None:
    assert fp.rshr(np.array([1, 3, -1, -3, 2, -2]), 1).tolist() == [1, 2, 0, -1, 1, -1]  # halves go up
    shifts = np.array([0, 1, 2, 3])
    assert fp.rshr(np.array([5, 5, 5, 5]), shifts).tolist() == [5, 3, 1, 1]


@given(formats, st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=30))
def test_saturate_clamps_and_counts(fmt: FixedFormat, xs: list[int]) -> None:
    log = fp.SaturationLog()
    got = fp.saturate(np.array(xs, dtype=np.int64), fmt, log, "act")
    lo, hi = -(2 ** (fmt.bits - 1)), 2 ** (fmt.bits - 1) - 1
    assert got.tolist() == [min(max(x, lo), hi) for x in xs]
    assert log.total == sum(1 for x in xs if x < lo or x > hi)


def test_saturate_extremes_never_wrap() -> None:
    fmt = FixedFormat(bits=16, frac=8)
    log = fp.SaturationLog()
    got = fp.requantize(np.array([2**40, -(2**40), 32767 << 4, (32767 << 4) + 8, -(32768 << 4) - 9]), 4, fmt, log, "x")
    assert got.tolist() == [32767, -32768, 32767, 32767, -32768]
    assert log.total == 4


@given(formats, st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=30))
def test_quantize_float_round_half_up_saturating(fmt: FixedFormat, xs: list[float]) -> None:
    """Against exact rational arithmetic (a float64 ``floor(y + 0.5)`` rounds 1/2 − 2^-54 up)."""
    got = fp.quantize_float(np.array(xs), fmt)
    for x, g in zip(xs, got, strict=True):
        want = math.floor(Fraction(x) * Fraction(2) ** fmt.frac + Fraction(1, 2))
        assert int(g) == min(max(want, fmt.qmin), fmt.qmax)


def test_quantize_rejects_nan() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        fp.quantize_float(np.array([1.0, np.nan]), FixedFormat(bits=8, frac=4))


@given(st.lists(st.integers(0, 2**52), min_size=1, max_size=30))
def test_isqrt_exact(vs: list[int]) -> None:
    assert fp.isqrt(np.array(vs, dtype=np.int64)).tolist() == [math.isqrt(v) for v in vs]


def test_isqrt_perfect_squares_and_neighbours() -> None:
    vs = [k * k + d for k in (1, 2**13, 2**20 - 1, 2**26 - 1) for d in (-1, 0, 1) if k * k + d >= 0]
    assert fp.isqrt(np.array(vs, dtype=np.int64)).tolist() == [math.isqrt(v) for v in vs]


@given(st.lists(st.integers(1, 2**40), min_size=1, max_size=30))
def test_recip_matches_integer_division(vs: list[int]) -> None:
    r, length = fp.recip(np.array(vs, dtype=np.int64))
    for v, ri, li in zip(vs, r, length, strict=True):
        assert (int(ri), int(li)) == recip_oracle(v)
        assert 2**15 <= ri <= 2**16
        assert abs(int(ri) / 2 ** (int(li) + 15) - 1 / v) <= 2.0 ** -(int(li) + 15)  # within half... one lsb


def test_recip_rejects_zero() -> None:
    with pytest.raises(ValueError):
        fp.recip(np.array([0]))


@pytest.mark.parametrize("fz", [4, 8, 10])
def test_exp2_table_and_exp2neg(fz: int) -> None:
    table = exp2_table(fz)
    assert table[0] == 2**15 and all(2**14 < e <= 2**15 for e in table)
    assert all(a >= b for a, b in itertools.pairwise(table))  # monotone
    t = np.array(table, dtype=np.int64)
    ds = np.arange(-(40 << fz), 1)
    got = fp.exp2neg(ds, t, fz)
    flat = fp.exp2neg_flat_table(t, fz)
    assert got.tolist() == [exp2neg_oracle(int(d), tuple(table), fz) for d in ds]
    assert flat[np.minimum(-ds, flat.size - 1)].tolist() == got.tolist()
    # 2^(d/2^fz) to within one Q.15 lsb plus the table's rounding
    assert np.all(np.abs(got / 2**15 - 2.0 ** (ds / 2**fz)) <= 1.5 * 2**-15)


def test_gelu_lut_matches_scalar_definition_everywhere() -> None:
    n = NumericsConfig()
    t = gelu_table(n)
    vals = np.array(t.values, dtype=np.int64)
    hs = np.arange(n.hidden.qmin, n.hidden.qmax + 1, dtype=np.int64)  # every 16-bit input
    got = fp.gelu_lut(hs, t, vals)
    assert got.tolist() == [gelu_oracle(int(h), t) for h in hs]
    x = hs / 2**n.hidden.frac
    exact = 0.5 * x * (1 + np.array([math.erf(v / math.sqrt(2)) for v in x]))
    assert np.max(np.abs(got / 2**n.hidden.frac - exact)[np.abs(x) < 8]) < 2e-3  # table + interpolation error


@settings(max_examples=60)
@given(st.integers(0, 2**31), st.integers(2, 40), st.integers(-3000, 3000))
def test_layernorm_matches_python_integers(seed: int, d: int, spread: int) -> None:
    n = NumericsConfig()
    rng = np.random.default_rng(seed)
    x = rng.integers(-(2**15), 2**15, (3, d)) // max(1, abs(spread))
    x[2] = n.act.qmax if spread % 2 else n.act.qmin  # constant row: zero variance
    gamma = rng.integers(-(2**15), 2**15, d)
    beta = rng.integers(-(2**15), 2**15, d)
    eps = 1 + seed % 1000
    log = fp.SaturationLog()
    got = fp.layernorm(x, gamma, beta, eps, n.ln_hat_frac, n.ln_param.frac, n.norm, log, "norm")
    count = 0
    for row in range(3):
        xs = [int(v) for v in x[row]]
        s1, s2 = sum(xs), sum(v * v for v in xs)
        r, length = recip_oracle(math.isqrt(d * s2 - s1 * s1 + eps))
        for i in range(d):
            xhat = rshr_oracle((d * xs[i] - s1) * r, length + 15 - n.ln_hat_frac)
            y = rshr_oracle(xhat * int(gamma[i]) + (int(beta[i]) << n.ln_hat_frac),
                            n.ln_hat_frac + n.ln_param.frac - n.norm.frac)
            count += not n.norm.qmin <= y <= n.norm.qmax
            assert int(got[row, i]) == min(max(y, n.norm.qmin), n.norm.qmax)
    assert log.total == count


@given(st.integers(0, 2**31), st.integers(1, 1600))
def test_matmul_exact_against_python_ints(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(-(2**15), 2**15, (2, k))
    w = rng.integers(-(2**7), 2**7, (3, k))
    a[0, :] = -(2**15)  # extremes: the largest possible sums
    w[0, :] = -(2**7)
    got = fp.matmul(a, w)
    want = [[sum(int(a[i, j]) * int(w[o, j]) for j in range(k)) for o in range(3)] for i in range(2)]
    assert got.tolist() == want


def test_matmul_refuses_inexact_operands() -> None:
    a = np.full((1, 4096), 2**24, dtype=np.int64)
    with pytest.raises(OverflowError, match="2\\^53"):
        fp.matmul(a, a)
