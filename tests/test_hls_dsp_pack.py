"""Tests of the two-MACs-per-DSP48E2 packing (hls/m3vit_dsp_pack.h) against plain integer products.

A C++ shim, compiled with native integers and with ap_int, runs the exhaustive loops itself (every
(w_hi, w_lo, a) triple of a width pair, every −max/+max operand mix of a run) and compares the unpacked
lanes with plain C++ integer products; Python integers decide which runs must be exact (an independent
statement of the lane bounds) and check the long dot products.
"""

from __future__ import annotations

import ctypes
import itertools
import math
import subprocess

import numpy as np
import pytest

from m3vit.codegen.config import PRESET_DIR, load_config, matmul_shapes
from m3vit.sim.csim import CXX, ap_types_dir
from tests.conftest import REPO_ROOT
from tests.hls_build import build_cached

LANE = 18  # the low lane's width: the high weight sits 18 bits above the low one
PROB_BITS = 17  # attention probabilities, unsigned Q.15 in [0, 2^15] (docs/numerics.md §2)


def _corners(bits: int) -> tuple[int, int]:
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def exact_len(wb: int, ab: int) -> int:
    """Longest run of WB × AB products that two packed lanes hold exactly for every operand (Python
    integers over the operand corners; 0 when the pair does not pack)."""
    if not 2 <= wb <= 8 or ab < 2 or ab > 18:  # the 27-bit pre-adder holds w_hi·2^18 + w_lo up to 8 bits
        return 0
    prods = [w * a for w in _corners(wb) for a in _corners(ab)]
    hi, lo = max(prods), min(prods)
    n = 0
    while (n + 1) * hi <= (1 << (LANE - 1)) - 1 and (n + 1) * lo >= -(1 << (LANE - 1)):
        n += 1
        assert (n * hi) < 1 << 29  # the high lane (P[47:18], 30 bits) is never the binding limit
    return n


def preset_pairs() -> dict[tuple[int, int], list[str]]:
    """(weight-port bits, activation-port bits) of every matmul of every preset → where it occurs."""
    out: dict[tuple[int, int], list[str]] = {}
    for name in sorted(p.stem for p in PRESET_DIR.glob("*.yaml")):
        cfg = load_config(name)
        n = cfg.numerics
        pairs = {mm: (n.weight.bits, getattr(n, src).bits) for mm, (src, _, _) in matmul_shapes(cfg).items()}
        pairs["attn_scores"] = (n.qkv.bits, n.qkv.bits)  # k on the weight port, q shared
        pairs["attn_context"] = (n.qkv.bits, PROB_BITS)  # v on the weight port, p shared
        for mm, pair in pairs.items():
            out.setdefault(pair, []).append(f"{name}.{mm}")
    return out


PRESET_PAIRS = preset_pairs()
EXTRA_PAIRS = [(2, 2), (4, 4), (4, 8), (8, 4), (6, 6), (7, 9), (3, 5), (8, 10)]
PACKED = sorted({p for p in PRESET_PAIRS if exact_len(*p)} | set(EXTRA_PAIRS))
TRAITS = sorted(set(PRESET_PAIRS) | set(PACKED) | {(9, 8), (8, 11)})


def _shim() -> str:
    lines = [
        "#define M3VIT_CHECK_CONTRACTS",
        '#include "m3vit_dsp_pack.h"',
        "#include <vector>",
        "using namespace m3vit;",
        "static int g_violations = 0;",
        "void m3vit::contract_violation(const char*) { g_violations++; }",
        '#define API extern "C" __attribute__((visibility("default")))',
        r"""
typedef long long ll;
// Every (w_hi, w_lo, a): o = {cases, hi wrong, lo wrong, cases where P >> 18 alone misses hi}.
template <int WB, int AB>
static void exhaustive(ll* o) {
    typedef typename sint<WB>::t W;
    typedef typename sint<AB>::t A;
    const int wmin = -(1 << (WB - 1)), wmax = (1 << (WB - 1)) - 1;
    const int amin = -(1 << (AB - 1)), amax = (1 << (AB - 1)) - 1;
    for (int k = 0; k < 4; k++) o[k] = 0;
    for (int wh = wmin; wh <= wmax; wh++)
        for (int wl = wmin; wl <= wmax; wl++)
            for (int a = amin; a <= amax; a++) {
                const dsp_p_t p = dsp_pack_mul<WB, AB>(W(wh), W(wl), A(a));
                dsp_hi_t h;
                dsp_lo_t l;
                dsp_pack_unpack(p, h, l);
                o[0]++;
                o[1] += to_i64(h) != ll(wh) * a;
                o[2] += to_i64(l) != ll(wl) * a;
                o[3] += (to_i64(p) >> 18) != ll(wh) * a;
            }
}
// One run of n steps through dsp_pack_mac against plain integer sums; adds to o[1] / o[2] when a lane
// is wrong, to o[3] when the true low sum leaves the 18-bit lane.
template <int WB, int AB>
static void run_check(const int* wh, const int* wl, const int* a, int n, ll* o) {
    typedef typename sint<WB>::t W;
    typedef typename sint<AB>::t A;
    W sh_h[16], sh_l[16];
    A sh_a[16];
    std::vector<W> vh, vl;
    std::vector<A> va;
    W* ph = sh_h;
    W* pl = sh_l;
    A* pa = sh_a;
    if (n > 16) {  // short runs (the operand mixes) stay off the heap
        vh.resize(n), vl.resize(n), va.resize(n);
        ph = vh.data(), pl = vl.data(), pa = va.data();
    }
    ll sh = 0, sl = 0;
    for (int k = 0; k < n; k++) {
        ph[k] = W(wh[k]);
        pl[k] = W(wl[k]);
        pa[k] = A(a[k]);
        sh += ll(wh[k]) * a[k];
        sl += ll(wl[k]) * a[k];
    }
    dsp_hi_t h;
    dsp_lo_t l;
    dsp_pack_mac<WB, AB>(ph, pl, pa, n, h, l);
    o[0]++;
    o[1] += to_i64(h) != sh;
    o[2] += to_i64(l) != sl;
    o[3] += sl < -(1 << 17) || sl > (1 << 17) - 1;
}
// Mixes of the operand extremes (w_hi, w_lo, a each at min or max; corner c = bit 0 w_hi, bit 1 w_lo,
// bit 2 a) over runs of n <= 8 steps: every sequence (8^n runs) when `ordered`, else every multiset
// (non-decreasing corner sequences; P's modular sum does not depend on the order).
template <int WB, int AB>
static void mixes(int n, int ordered, ll* o) {
    const int w[2] = {-(1 << (WB - 1)), (1 << (WB - 1)) - 1};
    const int x[2] = {-(1 << (AB - 1)), (1 << (AB - 1)) - 1};
    int wh[16], wl[16], a[16];
    for (int k = 0; k < 4; k++) o[k] = 0;
    for (ll code = 0; code < (ll(1) << (3 * n)); code++) {
        bool sorted = true;
        for (int k = 0; k < n; k++) {
            const int c = int(code >> (3 * k)) & 7;
            if (k > 0 && c < (int(code >> (3 * k - 3)) & 7)) sorted = false;
            wh[k] = w[c & 1];
            wl[k] = w[(c >> 1) & 1];
            a[k] = x[c >> 2];
        }
        if (ordered || sorted) run_check<WB, AB>(wh, wl, a, n, o);
    }
}
// The 8 constant runs (corner c repeated n times): ok[c] = 1 when both lanes are exact.
template <int WB, int AB>
static void corners(int n, int* ok) {
    const int w[2] = {-(1 << (WB - 1)), (1 << (WB - 1)) - 1};
    const int x[2] = {-(1 << (AB - 1)), (1 << (AB - 1)) - 1};
    for (int c = 0; c < 8; c++) {
        std::vector<int> wh(n, w[c & 1]), wl(n, w[(c >> 1) & 1]), a(n, x[c >> 2]);
        ll o[4] = {0, 0, 0, 0};
        run_check<WB, AB>(wh.data(), wl.data(), a.data(), n, o);
        ok[c] = o[1] == 0 && o[2] == 0;
    }
}
// Any-length dot product pair through dsp_pack_dot into 48-bit accumulators.
template <int WB, int AB>
static void dot(const int* wh, const int* wl, const int* a, int n, ll* hi, ll* lo) {
    typedef typename sint<WB>::t W;
    typedef typename sint<AB>::t A;
    std::vector<W> vh(n + 1), vl(n + 1);
    std::vector<A> va(n + 1);
    for (int k = 0; k < n; k++) {
        vh[k] = W(wh[k]);
        vl[k] = W(wl[k]);
        va[k] = A(a[k]);
    }
    typename sint<48>::t h = *hi, l = *lo;
    dsp_pack_dot<WB, AB>(vh.data(), vl.data(), va.data(), n, h, l);
    *hi = to_i64(h);
    *lo = to_i64(l);
}
API int violations() { const int n = g_violations; g_violations = 0; return n; }
""",
    ]
    for wb, ab in TRAITS:
        s = f"{wb}_{ab}"
        lines.append(f"API int max_len_{s}() {{ return dsp_pack<{wb}, {ab}>::max_len; }}")
        lines.append(f"API int supported_{s}() {{ return dsp_pack<{wb}, {ab}>::supported; }}")
    for wb, ab in PACKED:
        s = f"{wb}_{ab}"
        lines += [
            f"API void exhaustive_{s}(ll* o) {{ exhaustive<{wb}, {ab}>(o); }}",
            f"API void mixes_{s}(int n, int ordered, ll* o) {{ mixes<{wb}, {ab}>(n, ordered, o); }}",
            f"API void corners_{s}(int n, int* ok) {{ corners<{wb}, {ab}>(n, ok); }}",
            f"API void run_{s}(const int* wh, const int* wl, const int* a, int n, ll* o) "
            f"{{ o[0] = o[1] = o[2] = o[3] = 0; run_check<{wb}, {ab}>(wh, wl, a, n, o); }}",
            f"API void dot_{s}(const int* wh, const int* wl, const int* a, int n, ll* hi, ll* lo) "
            f"{{ dot<{wb}, {ab}>(wh, wl, a, n, hi, lo); }}",
        ]
    return "\n".join(lines) + "\n"


SHIM = _shim()
HEADERS = ("m3vit_dsp_pack.h", "m3vit_prims.h", "m3vit_types.h")


def _build(native: bool) -> ctypes.CDLL:
    flags = ["-O2", "-std=c++14", "-fPIC", "-shared", "-w", *(["-DM3VIT_NATIVE_TYPES"] if native else [])]
    lib = ctypes.CDLL(str(build_cached("libdsp_pack.so", SHIM, HEADERS, flags)))
    lib.native = native
    return lib


@pytest.fixture(scope="module", params=[True, False], ids=["native", "ap_int"])
def lib(request) -> ctypes.CDLL:
    return _build(request.param)


def _counts(fn, *args) -> tuple[int, int, int, int]:
    o = (ctypes.c_longlong * 4)()
    fn(*args, o)
    return tuple(o)


def test_exact_len_of_int8() -> None:
    """The oracle itself: int8 × int8 products lie in [-16256, 16384]; 7 fit the 18-bit lane, 8 do not."""
    assert exact_len(8, 8) == 7
    assert 7 * 128 * 128 <= (1 << 17) - 1 < 8 * 128 * 128
    assert exact_len(8, 10) == 1 and exact_len(8, 11) == 0 and exact_len(9, 8) == 0


@pytest.mark.parametrize("pair", TRAITS, ids=[f"w{w}a{a}" for w, a in TRAITS])
def test_traits_match_lane_bounds(lib, pair) -> None:
    wb, ab = pair
    s = f"{wb}_{ab}"
    assert getattr(lib, f"max_len_{s}")() == exact_len(wb, ab)
    assert bool(getattr(lib, f"supported_{s}")()) == (exact_len(wb, ab) > 0)


def test_preset_widths_are_covered() -> None:
    """Every preset's matmul widths are either packable (and then tested exhaustively below) or refused:
    the DSE presets' 8-bit weights × 8-bit norm/qkv/hidden pack, 16-bit activations and probabilities do
    not."""
    for pair in PRESET_PAIRS:
        assert (pair in PACKED) == (exact_len(*pair) > 0), (pair, PRESET_PAIRS[pair])
    assert (8, 8) in PRESET_PAIRS and "m3vit_small_pascal_dse.fc2" in PRESET_PAIRS[(8, 8)]
    assert exact_len(8, 16) == 0 and "m3vit_small_pascal.qkv" in PRESET_PAIRS[(8, 16)]


def _check_exhaustive(lib, pair) -> None:
    wb, ab = pair
    cases, bad_hi, bad_lo, uncorrected = _counts(getattr(lib, f"exhaustive_{wb}_{ab}"))
    nw, na = 1 << wb, 1 << ab
    assert (cases, bad_hi, bad_lo) == (nw * nw * na, 0, 0)
    neg_lo = sum(1 for w in range(-nw // 2, nw // 2) for a in range(-na // 2, na // 2) if w * a < 0)
    assert uncorrected == nw * neg_lo


BIG = 1 << 24  # operand triples above which the ap_int build is slow (≈ 20 s for int8 × int10)
SMALL_PACKED = [p for p in PACKED if 1 << (2 * p[0] + p[1]) <= BIG]
BIG_PACKED = [p for p in PACKED if p not in SMALL_PACKED]


@pytest.mark.parametrize("pair", SMALL_PACKED, ids=[f"w{w}a{a}" for w, a in SMALL_PACKED])
def test_single_product_exhaustive(lib, pair) -> None:
    """Every (w_hi, w_lo, a): both unpacked lanes equal the integer products; the borrow correction is
    needed exactly when the low product is negative (so a missing correction would fail)."""
    _check_exhaustive(lib, pair)


@pytest.mark.parametrize("pair", BIG_PACKED, ids=[f"w{w}a{a}" for w, a in BIG_PACKED])
def test_single_product_exhaustive_wide_native(pair) -> None:
    """The same for the widest pairs (int8 × int10: 67 M triples) with native types."""
    _check_exhaustive(_build(native=True), pair)


@pytest.mark.slow
@pytest.mark.parametrize("pair", BIG_PACKED, ids=[f"w{w}a{a}" for w, a in BIG_PACKED])
def test_single_product_exhaustive_wide_ap_int(pair) -> None:
    """The same for the widest pairs with ap_int."""
    _check_exhaustive(_build(native=False), pair)


def _mix_breaks(wb: int, ab: int, n: int, ordered: bool) -> tuple[int, int]:
    """(runs, runs whose low-lane sum leaves the 18-bit lane) over the operand extremes (Python integers):
    all multisets of n corners, or all 8^n corner sequences (each multiset weighted by its orderings)."""
    w, x = _corners(wb), _corners(ab)
    lo_term = [w[(c >> 1) & 1] * x[c >> 2] for c in range(8)]
    total = bad = 0
    for run in itertools.combinations_with_replacement(range(8), n):
        weight = math.factorial(n) // math.prod(math.factorial(run.count(c)) for c in set(run)) if ordered else 1
        total += weight
        bad += weight * (not -(1 << 17) <= sum(lo_term[c] for c in run) <= (1 << 17) - 1)
    return total, bad


MIX_PAIRS = [p for p in PACKED if exact_len(*p) <= 7]


def _check_mixes(lib, pair, ordered: bool) -> None:
    wb, ab = pair
    n = exact_len(wb, ab)
    mixes = getattr(lib, f"mixes_{wb}_{ab}")
    lib.violations()
    total, bad = _mix_breaks(wb, ab, n, ordered)
    assert bad == 0
    assert _counts(mixes, n, int(ordered)) == (total, 0, 0, 0)
    assert lib.violations() == 0
    total, bad = _mix_breaks(wb, ab, n + 1, ordered)
    assert bad > 0
    assert _counts(mixes, n + 1, int(ordered)) == (total, bad, bad, bad)
    assert lib.violations() == total  # every over-long run is flagged by the contract


@pytest.mark.parametrize("pair", MIX_PAIRS, ids=[f"w{w}a{a}" for w, a in MIX_PAIRS])
def test_all_extreme_mixes(lib, pair) -> None:
    """Every multiset of min/max operand triples at the exact limit is exact in both lanes; one step past
    it, exactly the runs whose low sum leaves the lane fail — in both lanes (the high one inherits a wrong
    borrow). Native types also run every ordering (8^n sequences)."""
    _check_mixes(lib, pair, ordered=False)
    if lib.native:
        _check_mixes(lib, pair, ordered=True)


@pytest.mark.slow
@pytest.mark.parametrize("pair", MIX_PAIRS, ids=[f"w{w}a{a}" for w, a in MIX_PAIRS])
def test_all_extreme_mix_orderings_ap_int(pair) -> None:
    """Every ordering of the extreme operand mixes with ap_int (≈ 30 s per pair)."""
    lib = _build(native=False)
    _check_mixes(lib, pair, ordered=True)


@pytest.mark.parametrize("pair", PACKED, ids=[f"w{w}a{a}" for w, a in PACKED])
def test_constant_runs_at_the_limit(lib, pair) -> None:
    """A run repeating one extreme triple is the worst case of each sign: all 8 are exact at max_len; one
    step past it, the ones whose low sum leaves the lane (Python) break."""
    wb, ab = pair
    n = exact_len(wb, ab)
    ok = (ctypes.c_int * 8)()
    corners = getattr(lib, f"corners_{wb}_{ab}")
    corners(n, ok)
    assert list(ok) == [1] * 8
    w, x = _corners(wb), _corners(ab)
    want = [int(-(1 << 17) <= (n + 1) * w[(c >> 1) & 1] * x[c >> 2] <= (1 << 17) - 1) for c in range(8)]
    assert 0 in want
    corners(n + 1, ok)
    assert list(ok) == want
    lib.violations()


def _ints(values) -> ctypes.Array:
    arr = np.ascontiguousarray(values, dtype=np.int32)
    return arr.ctypes.data_as(ctypes.POINTER(ctypes.c_int)), arr


@pytest.mark.parametrize("pair", PACKED, ids=[f"w{w}a{a}" for w, a in PACKED])
def test_long_dot_products(lib, pair) -> None:
    """dsp_pack_dot over the presets' K (dim 384, patch_dim 768, hidden 1536) and around max_len: random and
    all-extreme operands equal Python dot products; the accumulators are added to."""
    wb, ab = pair
    rng = np.random.default_rng(wb * 100 + ab)
    (wmin, wmax), (amin, amax) = _corners(wb), _corners(ab)
    dot = getattr(lib, f"dot_{wb}_{ab}")
    m = exact_len(wb, ab)
    for n in sorted({0, 1, m - 1, m, m + 1, 2 * m, 2 * m + 1, 384, 768, 1536}):
        cases = [
            (rng.integers(wmin, wmax + 1, n), rng.integers(wmin, wmax + 1, n), rng.integers(amin, amax + 1, n)),
            (np.full(n, wmin), np.full(n, wmin), np.full(n, amin)),
            (np.full(n, wmax), np.full(n, wmin), np.full(n, amax)),
        ]
        for wh, wl, a in cases:
            hi, lo = ctypes.c_longlong(5), ctypes.c_longlong(-3)
            (ph, _h), (pl, _l), (pa, _a) = _ints(wh), _ints(wl), _ints(a)
            dot(ph, pl, pa, n, ctypes.byref(hi), ctypes.byref(lo))
            want_hi = 5 + sum(int(u) * int(v) for u, v in zip(wh, a, strict=True))
            want_lo = -3 + sum(int(u) * int(v) for u, v in zip(wl, a, strict=True))
            assert (hi.value, lo.value) == (want_hi, want_lo), (n, wh[:3], wl[:3], a[:3])


def test_run_shorter_than_limit_random(lib) -> None:
    """dsp_pack_mac on random int8 runs of every length up to the limit equals integer sums."""
    rng = np.random.default_rng(7)
    run = lib.run_8_8
    lib.violations()
    for _ in range(2000):
        n = int(rng.integers(0, exact_len(8, 8) + 1))
        wh, wl, a = (rng.integers(-128, 128, n) for _ in range(3))
        (ph, _h), (pl, _l), (pa, _a) = _ints(wh), _ints(wl), _ints(a)
        assert _counts(run, ph, pl, pa, n) == (1, 0, 0, 0)
    assert lib.violations() == 0


@pytest.mark.parametrize("call", ["dsp_pack_mul<8, 16>(0, 0, 0)", "dsp_pack_mul<9, 8>(0, 0, 0)"])
def test_unsupported_widths_do_not_compile(tmp_path, call) -> None:
    """Widths that do not pack are refused at compile time with a message naming the allowed widths."""
    src = tmp_path / "bad.cpp"
    src.write_text(f'#include "m3vit_dsp_pack.h"\nusing namespace m3vit;\nvoid f() {{ {call}; }}\n')
    res = subprocess.run(
        [CXX, "-std=c++14", "-fsyntax-only", f"-I{REPO_ROOT / 'hls'}", f"-I{ap_types_dir()}", str(src)],
        capture_output=True,
        text=True,
    )
    assert res.returncode != 0
    assert "weights need 2..8 bits" in res.stderr
