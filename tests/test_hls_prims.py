"""Per-primitive tests of the HLS kernel library (hls/m3vit_prims.h) against m3vit.sim.fixedpoint.

A small C++ shim exposes ISQRT, RECIP, EXP2NEG, GELU, RSHR and SAT through ctypes; it is compiled
twice, with native integers and with the ap_int types Vitis synthesises, and both must agree with the
golden primitives on random and edge-case operands (hypothesis).
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from m3vit import REPO_ROOT
from m3vit.codegen.config import load_config
from m3vit.codegen.numerics import constants
from m3vit.sim import fixedpoint as fp
from m3vit.sim.csim import CACHE_DIR, CXX, ap_types_dir

CFG = load_config("tiny")
K = constants(CFG)
FZ = CFG.numerics.exp_frac_bits
G = K.gelu

SHIM = f"""
#include "m3vit_prims.h"
using namespace m3vit;
typedef sint<17>::t prob_t;
typedef sint<{CFG.numerics.hidden.bits}>::t hid_t;
typedef sint<{CFG.numerics.hidden.bits + G.seg_shift + 3}>::t gelu_t;
static const prob_t EXP2[{len(K.exp2)}] = {{{", ".join(map(str, K.exp2))}}};
static const hid_t GELU[{len(G.values)}] = {{{", ".join(map(str, G.values))}}};
#define API extern "C" __attribute__((visibility("default")))
API long long p_isqrt(unsigned long long v) {{ return (long long)to_i64(isqrt(u64(v))); }}
API long long p_recip(unsigned long long v, int* len) {{ i64 r; recip(u64(v), r, *len); return to_i64(r); }}
API long long p_exp2neg(long long d) {{ return to_i64(exp2neg<{FZ}>(i64(d), EXP2)); }}
API long long p_gelu(long long h) {{
    return to_i64(gelu<{G.lo}, {G.hi}, {G.seg_shift}, gelu_t>(hid_t(h), GELU));
}}
API long long p_rshr(long long x, int s) {{ return to_i64(rshr_rt<i64>(i64(x), s)); }}
API long long p_rshr13(long long x) {{ return to_i64(rshr<13>(i64(x))); }}
API long long p_sat16(long long x, unsigned* n) {{ return to_i64(sat_bits<16>(i64(x), *n)); }}
"""


def _build(native: bool) -> ctypes.CDLL:
    flags = ["-O1", "-std=c++14", "-fPIC", "-shared", "-w", *(["-DM3VIT_NATIVE_TYPES"] if native else [])]
    src_hash = hashlib.sha256(
        (
            SHIM
            + " ".join(flags)
            + (REPO_ROOT / "hls" / "m3vit_prims.h").read_text()
            + (REPO_ROOT / "hls" / "m3vit_types.h").read_text()
        ).encode()
    ).hexdigest()[:20]
    out = CACHE_DIR / f"prims-{src_hash}" / "libprims.so"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        src = out.with_suffix(".cpp")
        src.write_text(SHIM)
        tmp = out.with_name(f".libprims.{os.getpid()}.so")
        subprocess.run(
            [CXX, *flags, f"-I{REPO_ROOT / 'hls'}", f"-I{ap_types_dir()}", str(src), "-o", str(tmp)],
            check=True,
        )
        os.replace(tmp, out)
    lib = ctypes.CDLL(str(out))
    for name in ("p_isqrt", "p_recip", "p_exp2neg", "p_gelu", "p_rshr", "p_rshr13", "p_sat16"):
        getattr(lib, name).restype = ctypes.c_longlong
    lib.p_isqrt.argtypes = [ctypes.c_ulonglong]
    lib.p_recip.argtypes = [ctypes.c_ulonglong, ctypes.POINTER(ctypes.c_int)]
    lib.p_exp2neg.argtypes = [ctypes.c_longlong]
    lib.p_gelu.argtypes = [ctypes.c_longlong]
    lib.p_rshr.argtypes = [ctypes.c_longlong, ctypes.c_int]
    lib.p_rshr13.argtypes = [ctypes.c_longlong]
    lib.p_sat16.argtypes = [ctypes.c_longlong, ctypes.POINTER(ctypes.c_uint)]
    return lib


@pytest.fixture(scope="module", params=[True, False], ids=["native", "ap_int"])
def prims(request) -> ctypes.CDLL:
    return _build(request.param)


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


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.integers(1, (1 << 48) - 1), st.sampled_from([1, 2, 3, 1 << 15, (1 << 16) - 1, (1 << 47) + 1])
    )
)
def test_recip(prims, v) -> None:
    length = ctypes.c_int()
    r = prims.p_recip(v, ctypes.byref(length))
    exact_l = v.bit_length()
    assert (r, length.value) == (((1 << (exact_l + 15)) + v // 2) // v, exact_l)  # docs/numerics.md §3
    if v < 1 << 47:  # the golden computes 2^(L+15) in int64, so it is exact below 2^47 only
        want_r, want_l = fp.recip(np.int64(v))
        assert (r, length.value) == (int(want_r), int(want_l))
    assert (1 << 15) <= r <= (1 << 16)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.integers(-(1 << 34), 0), st.integers(-(40 << FZ), 0)))
def test_exp2neg(prims, d) -> None:
    table = np.asarray(K.exp2, np.int64)
    assert prims.p_exp2neg(d) == int(fp.exp2neg(np.int64(d), table, FZ))


def test_exp2neg_edges(prims) -> None:
    table = np.asarray(K.exp2, np.int64)
    for d in [0, -1, -(1 << FZ), -(16 << FZ), -(17 << FZ) + 1, -(31 << FZ), -(32 << FZ), -(1 << 33)]:
        assert prims.p_exp2neg(d) == int(fp.exp2neg(np.int64(d), table, FZ)), d
    assert prims.p_exp2neg(0) == 1 << 15


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
