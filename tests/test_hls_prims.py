"""Per-primitive tests of the HLS kernel library (hls/m3vit_prims.h) against m3vit.sim.fixedpoint.

A small C++ shim exposes ISQRT, RECIP, EXP2NEG, GELU, RSHR and SAT through ctypes; it is compiled
twice, with native integers and with the ap_int types Vitis synthesises, and both must agree with the
golden primitives on random and edge-case operands (hypothesis). The shim turns on the headers' contract
checks (M3VIT_CHECK_CONTRACTS) and counts violated preconditions; Python integers (tests/spec_oracle.py)
are the reference at the edges of each primitive's domain.
"""

from __future__ import annotations

import ctypes
import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from m3vit.codegen.config import load_config
from m3vit.codegen.numerics import constants
from m3vit.sim import fixedpoint as fp
from tests import spec_oracle as oracle
from tests.conftest import REPO_ROOT
from tests.hls_build import build_cached

CFG = load_config("tiny")
K = constants(CFG)
FZ = CFG.numerics.exp_frac_bits
G = K.gelu

SHIM = f"""
#define M3VIT_CHECK_CONTRACTS
#include "m3vit_prims.h"
using namespace m3vit;
struct ContractViolation {{}};
static int g_violations = 0;
// a violated precondition is counted and abandons the call (before any undefined behaviour); the entry
// point then returns -1
void m3vit::contract_violation(const char*) {{ g_violations++; throw ContractViolation(); }}
#define CHECKED(...) try {{ __VA_ARGS__ }} catch (const ContractViolation&) {{ return -1; }}
typedef sint<17>::t prob_t;
typedef sint<{CFG.numerics.hidden.bits}>::t hid_t;
typedef sint<{CFG.numerics.hidden.bits + G.seg_shift + 3}>::t gelu_t;
typedef sint<33>::t w33;
static const prob_t EXP2[{len(K.exp2)}] = {{{", ".join(map(str, K.exp2))}}};
static const hid_t GELU[{len(G.values)}] = {{{", ".join(map(str, G.values))}}};
#define API extern "C" __attribute__((visibility("default")))
API long long p_isqrt(unsigned long long v) {{ CHECKED(return (long long)to_i64(isqrt(u64(v)));) }}
API long long p_recip(unsigned long long v, int* len) {{ CHECKED(i64 r; recip(u64(v), r, *len); return to_i64(r);) }}
API long long p_exp2neg(long long d) {{ CHECKED(return to_i64(exp2neg<{FZ}>(i64(d), EXP2));) }}
API long long p_gelu(long long h) {{
    CHECKED(return to_i64(gelu<{G.lo}, {G.hi}, {G.seg_shift}, gelu_t>(hid_t(h), GELU));)
}}
API long long p_rshr(long long x, int s) {{ CHECKED(return to_i64(rshr_rt<i64>(i64(x), s));) }}
API long long p_rshr33(long long x, int s) {{ CHECKED(return to_i64(rshr_rt<w33>(w33(x), s));) }}
API long long p_rshr13(long long x) {{ CHECKED(return to_i64(rshr<13>(i64(x)));) }}
API long long p_sat16(long long x, unsigned* n) {{ CHECKED(return to_i64(sat_bits<16>(i64(x), *n));) }}
API int p_violations() {{ const int n = g_violations; g_violations = 0; return n; }}
"""


def _build(native: bool) -> ctypes.CDLL:
    flags = ["-O1", "-std=c++14", "-fPIC", "-shared", "-w", *(["-DM3VIT_NATIVE_TYPES"] if native else [])]
    lib = ctypes.CDLL(str(build_cached("libprims.so", SHIM, ("m3vit_prims.h", "m3vit_types.h"), flags)))
    for name in ("p_isqrt", "p_recip", "p_exp2neg", "p_gelu", "p_rshr", "p_rshr33", "p_rshr13", "p_sat16"):
        getattr(lib, name).restype = ctypes.c_longlong
    lib.p_violations.restype = ctypes.c_int
    lib.p_violations.argtypes = []
    lib.p_isqrt.argtypes = [ctypes.c_ulonglong]
    lib.p_recip.argtypes = [ctypes.c_ulonglong, ctypes.POINTER(ctypes.c_int)]
    lib.p_exp2neg.argtypes = [ctypes.c_longlong]
    lib.p_gelu.argtypes = [ctypes.c_longlong]
    lib.p_rshr.argtypes = [ctypes.c_longlong, ctypes.c_int]
    lib.p_rshr33.argtypes = [ctypes.c_longlong, ctypes.c_int]
    lib.p_rshr13.argtypes = [ctypes.c_longlong]
    lib.p_sat16.argtypes = [ctypes.c_longlong, ctypes.POINTER(ctypes.c_uint)]
    return lib


@pytest.fixture(scope="module", params=[True, False], ids=["native", "ap_int"])
def prims(request) -> ctypes.CDLL:
    lib = _build(request.param)
    lib.native = request.param  # native types hold sint<W> in the next 8/16/32/64-bit integer
    return lib


def _isqrt_ref(v: int) -> int:
    return math.isqrt(v)


def test_isqrt_edges(prims) -> None:
    for base in [0, 1, 2, 3, 4, 15, 16, 17, (1 << 31) - 1, 1 << 31, (1 << 32) - 1]:
        for v in {base * base - 1, base * base, base * base + 1}:
            if 0 <= v < 1 << 63:
                assert prims.p_isqrt(v) == _isqrt_ref(v), v
    assert prims.p_isqrt((1 << 63) - 1) == _isqrt_ref((1 << 63) - 1)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, (1 << 63) - 1))
def test_isqrt(prims, v) -> None:
    assert prims.p_isqrt(v) == _isqrt_ref(v)
    if v < 1 << 53:  # the golden's float-based isqrt is specified below 2^53
        assert prims.p_isqrt(v) == int(fp.isqrt(np.int64(v)))


def _int64_recip_bound() -> int:
    """The largest B such that RECIP's numerator 2^(L+15) + ⌊v/2⌋ stays below 2^63 for every v < 2^B."""
    return max(b for b in range(1, 64) if (1 << (b + 15)) + ((1 << b) - 1) // 2 < 1 << 63)


def _recip_py(v: int) -> tuple[int, int]:
    length = v.bit_length()
    return ((1 << (length + 15)) + v // 2) // v, length  # docs/numerics.md §3, in Python integers


def test_recip_domain_is_stated_once() -> None:
    """The spec, the C++ comment and guard, and the golden model state the same bound: the int64 limit."""
    bound = _int64_recip_bound()
    spec = (REPO_ROOT / "docs" / "numerics.md").read_text()
    header = (REPO_ROOT / "hls" / "m3vit_prims.h").read_text()
    assert re.search(r"\*\*RECIP\(v\)\*\*, `1 ≤ v < 2\^(\d+)`", spec).group(1) == str(bound)
    assert re.search(r"// recip\(v\) for 1 ≤ v < 2\^(\d+)", header).group(1) == str(bound)
    assert re.search(r"M3VIT_REQUIRE\(v >= 1 && v < \(u64\(1\) << (\d+)\)", header).group(1) == str(bound)
    fp.recip(np.int64((1 << bound) - 1))
    for v in (0, 1 << bound):
        with pytest.raises(ValueError, match=rf"1 ≤ v < 2\^{bound}\b"):
            fp.recip(np.int64(v))
        with pytest.raises(ValueError):
            oracle.recip(v)


def test_recip_domain_edges(prims) -> None:
    """v = 1, 2^k - 1, 2^k, 2^k + 1 and 2^B - 1 (B the int64 bound): C++ and golden equal Python integers;
    the C++ guard flags v = 0 and v = 2^B."""
    bound = _int64_recip_bound()
    prims.p_violations()
    edges = {1, (1 << bound) - 1}
    for k in range(1, bound):
        edges |= {(1 << k) - 1, 1 << k, (1 << k) + 1}
    length = ctypes.c_int()
    for v in sorted(edges):
        want = _recip_py(v)
        assert (prims.p_recip(v, ctypes.byref(length)), length.value) == want, v
        assert tuple(int(x) for x in fp.recip(np.int64(v))) == want == oracle.recip(v), v
    assert prims.p_violations() == 0
    for v in (0, 1 << bound):
        prims.p_recip(v, ctypes.byref(length))
        assert prims.p_violations() == 1, v


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.integers(1, (1 << 47) - 1), st.sampled_from([1, 2, 3, 1 << 15, (1 << 16) - 1, (1 << 46) + 1])))
def test_recip(prims, v) -> None:
    length = ctypes.c_int()
    r = prims.p_recip(v, ctypes.byref(length))
    assert (r, length.value) == _recip_py(v)
    want_r, want_l = fp.recip(np.int64(v))
    assert (r, length.value) == (int(want_r), int(want_l))
    assert (1 << 15) <= r <= (1 << 16)
    assert prims.p_violations() == 0


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.integers(-(1 << 34), 0), st.integers(-(40 << FZ), 0)))
def test_exp2neg(prims, d) -> None:
    table = np.asarray(K.exp2, np.int64)
    assert prims.p_exp2neg(d) == int(fp.exp2neg(np.int64(d), table, FZ))
    assert prims.p_violations() == 0


def test_exp2neg_edges(prims) -> None:
    table = np.asarray(K.exp2, np.int64)
    for d in [0, -1, -(1 << FZ), -(16 << FZ), -(17 << FZ) + 1, -(31 << FZ), -(32 << FZ), -(1 << 33)]:
        assert prims.p_exp2neg(d) == int(fp.exp2neg(np.int64(d), table, FZ)), d
    assert prims.p_exp2neg(0) == 1 << 15


def test_exp2neg_largest_shifts(prims) -> None:
    """Every table entry at integer shifts n = 15 … 33 (clamped to 31) against Python integers, with the
    shift inside rshr_rt's contract (n = 31 is the largest shift the softmax applies)."""
    prims.p_violations()
    for n in range(15, 34):
        for f in range(1 << FZ):
            d = -((n << FZ) + f)
            want = oracle.exp2neg(d, K.exp2, FZ)
            assert want == oracle.rshr(K.exp2[f], min(n, 31))
            assert prims.p_exp2neg(d) == want, (n, f)
    assert prims.p_violations() == 0


def test_rshr_rt_contract_edges(prims) -> None:
    """rshr_rt on exp2neg's 33-bit type (natively int64): exact against Python integers for shifts up to
    s = width - 2 with x + 2^(s-1) up to max; one step beyond either edge is flagged."""
    width = 64 if prims.native else 33
    top = (1 << (width - 1)) - 1
    prims.p_violations()
    for s in [*range(28, 32), width - 3, width - 2]:
        half = 1 << (s - 1)
        for x in (-top - 1, -half, -1, 0, 1, 1 << 15, (1 << 15) + half, top - half):
            assert prims.p_rshr33(x, s) == oracle.rshr(x, s), (x, s)
    assert prims.p_violations() == 0
    prims.p_rshr33(0, width - 1)
    assert prims.p_violations() == 1
    prims.p_rshr33(top - (1 << 30) + 1, 31)
    assert prims.p_violations() == 1


@settings(max_examples=300, deadline=None)
@given(st.integers(CFG.numerics.hidden.qmin, CFG.numerics.hidden.qmax))
def test_gelu(prims, h) -> None:
    assert prims.p_gelu(h) == int(fp.gelu_lut(np.int64(h), G, np.asarray(G.values, np.int64)))


def test_gelu_edges(prims) -> None:
    vals = np.asarray(G.values, np.int64)
    for h in [
        G.lo - 1,
        G.lo,
        G.lo + 1,
        -1,
        0,
        1,
        G.hi - 1,
        G.hi,
        G.hi + 1,
        CFG.numerics.hidden.qmin,
        CFG.numerics.hidden.qmax,
    ]:
        assert prims.p_gelu(h) == int(fp.gelu_lut(np.int64(h), G, vals)), h


@settings(max_examples=300, deadline=None)
@given(st.integers(-(1 << 50), 1 << 50), st.integers(0, 40))
def test_rshr(prims, x, s) -> None:
    assert prims.p_rshr(x, s) == int(fp.rshr(np.int64(x), s))
    assert prims.p_rshr13(x) == int(fp.rshr(np.int64(x), 13))
    assert prims.p_violations() == 0


def test_rshr_rounds_half_up(prims) -> None:
    assert [prims.p_rshr(v, 1) for v in (-3, -2, -1, 0, 1, 2, 3)] == [-1, -1, 0, 0, 1, 1, 2]


@settings(max_examples=200, deadline=None)
@given(st.integers(-(1 << 40), 1 << 40))
def test_sat(prims, x) -> None:
    n = ctypes.c_uint(0)
    got = prims.p_sat16(x, ctypes.byref(n))
    log = fp.SaturationLog()
    want = int(fp.saturate_bits(np.int64(x), 16, log, "act"))
    assert got == want and n.value == log.total
