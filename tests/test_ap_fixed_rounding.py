"""Host-side float → fixed (``quantize_float``) against ``ap_fixed<W, I, AP_RND, AP_SAT>`` compiled by g++.

The oracle is Xilinx's own ap_fixed (hls4ml's ap_types headers): one small C++ program, compiled once per
test session, reads ``format-index value`` lines (values as C99 hex floats, so no digit is lost) and prints
the raw integer of the ap_fixed it constructs from the double. Values are adversarial: exact halves, one
ulp either side of them, the integers and their neighbours, the format's edges, far out of range, tiny.
"""

from __future__ import annotations

import math
import subprocess

import numpy as np
import pytest

from m3vit.codegen.config import PRESET_DIR, FixedFormat, load_config
from m3vit.sim.csim import CXX, ap_types_dir
from m3vit.sim.fixedpoint import quantize_float

PROGRAM = r"""
#include <ap_fixed.h>
#include <cstdio>
#include <cstdlib>

template <int W, int I> long long quantize(double x) {
    ap_fixed<W, I, AP_RND, AP_SAT> v = x;
    ap_int<W> raw;
    raw.range(W - 1, 0) = v.range(W - 1, 0);
    return raw.to_int64();
}

int main() {
    int index;
    char text[128];
    while (std::scanf("%d %127s", &index, text) == 2) {
        double x = std::strtod(text, nullptr);
        long long q = 0;
        switch (index) {
%CASES%
            default: return 2;
        }
        std::printf("%lld\n", q);
    }
    return 0;
}
"""


def preset_formats() -> list[FixedFormat]:
    """Every fixed-point format of every preset: each tensor class, and each bias scale (input frac + weight)."""
    found: set[tuple[int, int]] = set()
    for path in sorted(PRESET_DIR.glob("*.yaml")):
        n = load_config(path).numerics
        fmts = [getattr(n, field) for field in type(n).model_fields if isinstance(getattr(n, field), FixedFormat)]
        found |= {(f.bits, f.frac) for f in fmts}
        found |= {(n.bias_bits, f.frac + n.weight.frac) for f in fmts if n.bias_bits <= 32}
    return [FixedFormat(bits=b, frac=f) for b, f in sorted(found)]


EXTRA = [FixedFormat(bits=b, frac=f) for b, f in ((2, 0), (2, 40), (32, 0), (32, 31), (8, -4), (12, -16), (24, 40))]
FORMATS = preset_formats() + [f for f in EXTRA if f not in preset_formats()]


@pytest.fixture(scope="session")
def ap_fixed_oracle(tmp_path_factory):
    """A function (format, values) → ap_fixed raw integers, backed by one compiled program."""
    cases = "\n".join(f"            case {i}: q = quantize<{f.bits}, {f.bits - f.frac}>(x); break;"
                      for i, f in enumerate(FORMATS))
    folder = tmp_path_factory.mktemp("ap_fixed")
    (folder / "rnd.cpp").write_text(PROGRAM.replace("%CASES%", cases))
    exe = folder / "rnd"
    subprocess.run([CXX, "-O1", "-std=c++14", "-w", f"-I{ap_types_dir()}", str(folder / "rnd.cpp"), "-o", str(exe)],
                   check=True, capture_output=True, text=True)

    def run(fmt: FixedFormat, values: np.ndarray) -> list[int]:
        index = FORMATS.index(fmt)
        lines = "".join(f"{index} {float(v).hex()}\n" for v in values)
        out = subprocess.run([str(exe)], input=lines, check=True, capture_output=True, text=True).stdout.split()
        assert len(out) == len(values)
        return [int(v) for v in out]

    return run


def adversarial_values(fmt: FixedFormat, rng: np.random.Generator) -> np.ndarray:
    """Halves, integers and one ulp either side, near zero, the edges of the range and beyond, random."""
    lo, hi = fmt.qmin, fmt.qmax
    ks = {-2, -1, 0, 1, 2, lo - 2, lo - 1, lo, lo + 1, hi - 1, hi, hi + 1, hi + 2}
    ks |= {int(k) for k in rng.integers(lo, hi + 1, 40)}
    points = []
    for k in sorted(ks):
        for centre in (math.ldexp(k, -fmt.frac), math.ldexp(k + 0.5, -fmt.frac)):
            points += [centre, math.nextafter(centre, -math.inf), math.nextafter(centre, math.inf)]
            points += [math.nextafter(math.nextafter(centre, -math.inf), -math.inf)]
    points += [0.0, -0.0, 5e-324, -5e-324, 1e-300, -1e-300, 1e300, -1e300, 1.7e308, -1.7e308,
               math.ldexp(1, 62), -math.ldexp(1, 62), math.ldexp(1, 70), -math.ldexp(1, 70)]
    points += list(rng.normal(0, math.ldexp(abs(hi), -fmt.frac), 40))
    return np.array(points, dtype=np.float64)


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_quantize_float_equals_ap_fixed_rnd_sat(fmt: FixedFormat, ap_fixed_oracle) -> None:
    values = adversarial_values(fmt, np.random.default_rng(fmt.bits * 100 + fmt.frac))
    got = quantize_float(values, fmt).tolist()
    want = ap_fixed_oracle(fmt, values)
    bad = [(v.hex(), g, w) for v, g, w in zip(values.tolist(), got, want, strict=True) if g != w]
    assert not bad, f"{len(bad)} of {len(values)} differ from ap_fixed (value, ours, ap_fixed): {bad[:5]}"


def test_just_below_a_half_rounds_down() -> None:
    """y = 1/2 − 2^-54: float64 ``floor(y + 0.5)`` gives 1; the exact rounding gives 0."""
    y = math.nextafter(0.5, 0.0)
    assert math.floor(y + 0.5) == 1  # the float formula's error this guards against
    assert quantize_float(np.array([y, -y, 0.5, -0.5]), FixedFormat(bits=8, frac=0)).tolist() == [0, 0, 1, 0]
