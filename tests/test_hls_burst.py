"""Tests of the word-wide burst DMA and lane (un)packers (hls/m3vit_burst.h) against the layout packers.

A C++ shim, compiled with native integers and with ap_int, runs one round trip per call: words from a
byte buffer → burst_read → lanes_unpack → (returned lanes) and given lanes → lanes_pack → burst_write →
bytes. The reference is numpy packing through m3vit.codegen.layout (a Region's little-endian lanes with
rows padded to whole AXI words, and the tiled weight buffer of pack_weights).
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from m3vit.codegen.bits import ceil_div
from m3vit.codegen.layout import Region, pack_weights, unpack_weights, weight_layout
from tests.conftest import quantized
from tests.hls_build import build_cached

WORD_BITS = (128, 256, 512)
CONTAINERS = (8, 16, 32, 64)
MAX_ELEMS = 1 << 16
HEADERS = ("m3vit_burst.h", "m3vit_prims.h", "m3vit_types.h")

SHIM = (
    r"""
#define M3VIT_CHECK_CONTRACTS
#include "m3vit_burst.h"
#include <vector>
using namespace m3vit;
static int g_violations = 0;
void m3vit::contract_violation(const char*) { g_violations++; }
#define API extern "C" __attribute__((visibility("default")))
typedef long long ll;
// One round trip of a run of `count` elements; returns the number of words moved (-1 when a stream is
// left non-empty or burst_write touched a word past the run).
template <int B, int CB>
static int roundtrip(const uint8_t* src, int count, ll* lanes_out, const ll* lanes_in, uint8_t* dst) {
    typedef typename axi_word<B>::t W;
    typedef typename sint<CB>::t T;
    const int L = B / CB;
    const int MAX_WORDS = """
    + str(MAX_ELEMS)
    + r""" / L;
    const int nw = burst_words<W, CB>(count);
    std::vector<W> mem(nw), out(nw + 1);
    for (int i = 0; i < nw; i++) word_from_bytes(mem[i], src + i * (B / 8));
    uint8_t sentinel[B / 8];
    for (int b = 0; b < B / 8; b++) sentinel[b] = uint8_t(0xA5 + b);
    word_from_bytes(out[nw], sentinel);
    hls::stream<W> words_in, words_out;
    hls::stream<lanes<T, B / CB> > lanes_read, lanes_write;
    burst_read<MAX_WORDS>(mem.data(), nw, words_in);
    lanes_unpack<CB, """
    + str(MAX_ELEMS)
    + r""">(words_in, lanes_read, count);
    for (int i = 0; i < nw; i++) {
        const lanes<T, B / CB> v = lanes_read.read();
        for (int k = 0; k < L; k++) lanes_out[i * L + k] = to_i64(v.v[k]);
    }
    for (int i = 0; i < nw; i++) {
        lanes<T, B / CB> v;
        for (int k = 0; k < L; k++) v.v[k] = T(lanes_in[i * L + k]);
        lanes_write.write(v);
    }
    lanes_pack<CB, """
    + str(MAX_ELEMS)
    + r""">(lanes_write, words_out, count);
    burst_write<MAX_WORDS>(words_out, out.data(), nw);
    for (int i = 0; i < nw; i++) word_to_bytes(out[i], dst + i * (B / 8));
    uint8_t tail[B / 8];
    word_to_bytes(out[nw], tail);
    for (int b = 0; b < B / 8; b++)
        if (tail[b] != sentinel[b]) return -1;
    if (!words_in.empty() || !words_out.empty() || !lanes_read.empty() || !lanes_write.empty()) return -1;
    return nw;
}
API int violations() { const int n = g_violations; g_violations = 0; return n; }
"""
    + "\n".join(
        f"API int roundtrip_{b}_{cb}(const uint8_t* s, int n, ll* lo, const ll* li, uint8_t* d) "
        f"{{ return roundtrip<{b}, {cb}>(s, n, lo, li, d); }}"
        for b in WORD_BITS
        for cb in CONTAINERS
    )
    + "\n"
)


def _build(native: bool) -> ctypes.CDLL:
    flags = ["-O1", "-std=c++14", "-fPIC", "-shared", "-w", *(["-DM3VIT_NATIVE_TYPES"] if native else [])]
    return ctypes.CDLL(str(build_cached("libburst.so", SHIM, HEADERS, flags)))


@pytest.fixture(scope="module", params=[True, False], ids=["native", "ap_int"])
def lib(request) -> ctypes.CDLL:
    return _build(request.param)


def _roundtrip(lib, word_bits: int, cb: int, src: np.ndarray, count: int, lanes_in: np.ndarray):
    """Run the shim: (words moved, unpacked lanes [n_words · L], packed bytes)."""
    lanes = word_bits // cb
    n_lanes = max(1, ceil_div(count, lanes)) * lanes
    src = np.ascontiguousarray(src, np.uint8)
    lanes_out = np.zeros(n_lanes, np.int64)
    lanes_in = np.ascontiguousarray(lanes_in, np.int64)
    dst = np.zeros(max(src.size, word_bits // 8), np.uint8)
    u8, i64 = ctypes.POINTER(ctypes.c_uint8), ctypes.POINTER(ctypes.c_longlong)
    run = getattr(lib, f"roundtrip_{word_bits}_{cb}")
    nw = run(
        src.ctypes.data_as(u8),
        count,
        lanes_out.ctypes.data_as(i64),
        lanes_in.ctypes.data_as(i64),
        dst.ctypes.data_as(u8),
    )
    return nw, lanes_out, dst[: src.size]


def _run_region(count: int, cb: int, word_bits: int) -> Region:
    """The layout's row-major region of one row of `count` CB-bit elements, padded to whole words."""
    stride = ceil_div(count * cb // 8, word_bits // 8) * (word_bits // 8)
    return Region("run", 1, count, cb, cb, 0, stride, stride)


@pytest.mark.parametrize("word_bits", WORD_BITS)
@pytest.mark.parametrize("cb", CONTAINERS)
def test_roundtrip_matches_layout_packing(lib, word_bits, cb) -> None:
    """Unpacked lanes equal the values the layout packed (padding lanes 0 even when memory holds garbage
    there); packed words equal the layout's bytes (tail lanes 0 whatever the lanes held); exactly
    ceil(count / L) words move, and the stored run reads back through Region.read."""
    lanes = word_bits // cb
    rng = np.random.default_rng(word_bits * 100 + cb)
    lo, hi = -(1 << (cb - 1)), (1 << (cb - 1)) - 1
    lib.violations()
    for count in sorted({1, lanes - 1, lanes, lanes + 1, 2 * lanes - 1, 5 * lanes + 3, 37} - {0}):
        values = rng.integers(lo, hi, count, endpoint=True, dtype=np.int64)
        values[:2] = [lo, hi][: min(2, count)]
        region = _run_region(count, cb, word_bits)
        want = np.zeros(region.nbytes, np.uint8)
        region.write(want, values[None, :])
        src = want.copy()
        src[count * cb // 8 :] = rng.integers(0, 256, src.size - count * cb // 8, dtype=np.uint8)  # garbage pad
        n_words = ceil_div(count, lanes)
        lanes_in = rng.integers(lo, hi, n_words * lanes, endpoint=True, dtype=np.int64)
        lanes_in[:count] = values
        nw, lanes_out, dst = _roundtrip(lib, word_bits, cb, src, count, lanes_in)
        assert nw == n_words == region.row_stride * 8 // word_bits, count
        assert np.array_equal(lanes_out[:count], values), count
        assert not lanes_out[count:].any(), count
        assert np.array_equal(dst, want), count
        assert np.array_equal(region.read(dst)[0], values), count
    assert lib.violations() == 0


@pytest.mark.parametrize("word_bits", WORD_BITS)
def test_empty_run_moves_nothing(lib, word_bits) -> None:
    nw, _, _ = _roundtrip(lib, word_bits, 8, np.zeros(0, np.uint8), 0, np.zeros(word_bits // 8, np.int64))
    assert nw == 0
    assert lib.violations() == 0


def test_run_longer_than_bound_is_flagged(lib) -> None:
    """A run beyond MAX_ELEMS violates the unpacker's and packer's contracts (and the movers')."""
    lanes = 512 // 64
    count = MAX_ELEMS + 1
    n_words = ceil_div(count, lanes)
    lib.violations()
    nw, _, _ = _roundtrip(lib, 512, 64, np.zeros(n_words * 64, np.uint8), count, np.zeros(n_words * lanes))
    assert nw == n_words
    assert lib.violations() == 4


def test_tiled_weights_stream_as_whole_words(lib, tiny) -> None:
    """A tiled weight tensor of pack_weights (tiny: 8-bit weights, 128-bit words) read as one burst and
    unpacked gives its [out/mac_out][in/mac_in][mac_out][mac_in] tiles in order, zero-padded; packing the
    tiles back writes the same bytes."""
    buf = pack_weights(tiny, quantized(tiny))
    spec = weight_layout(tiny).by_name["block0.fc2.w"]
    logical = unpack_weights(tiny, buf)[spec.name]
    ot, it, mo, mi = spec.stored_shape
    padded = np.zeros((ot * mo, it * mi), np.int64)
    padded[: logical.shape[0], : logical.shape[1]] = logical
    tiles = padded.reshape(ot, mo, it, mi).transpose(0, 2, 1, 3).reshape(-1)
    word_bits = tiny.hardware.axi_data_bits
    count = tiles.size
    src = buf[spec.offset : spec.offset + spec.nbytes]
    lanes = word_bits // spec.container_bits
    lanes_in = np.zeros(ceil_div(count, lanes) * lanes, np.int64)
    lanes_in[:count] = tiles
    nw, lanes_out, dst = _roundtrip(lib, word_bits, spec.container_bits, src, count, lanes_in)
    assert nw * word_bits // 8 == spec.nbytes
    assert np.array_equal(lanes_out[:count], tiles)
    assert np.array_equal(dst, src)
    assert logical.any() and (logical < 0).any()
