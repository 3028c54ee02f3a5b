"""Integer helpers shared by every generator and model: divisions, logarithms and containers of bit widths."""

from __future__ import annotations


def ceil_div(a: int, b: int) -> int:
    """⌈a / b⌉ for integers (b > 0)."""
    return -(-a // b)


def round_up(n: int, m: int) -> int:
    """The smallest multiple of ``m`` that is ≥ ``n``."""
    return ceil_div(n, m) * m


def clog2(n: int) -> int:
    """⌈log2 n⌉ for n ≥ 1 (0 for n = 1), as SystemVerilog's ``$clog2``: the bits that index n items."""
    if n < 1:
        raise ValueError(f"clog2 needs n >= 1, got {n}")
    return (int(n) - 1).bit_length()


def pow2_ceil(n: int) -> int:
    """Smallest power of two ≥ ``n`` (1 for n ≤ 1)."""
    return 1 << max(0, n - 1).bit_length()


def container_bits(bits: int) -> int:
    """Smallest power-of-two container (8…64 bits) for a ``bits``-bit two's-complement integer."""
    for c in (8, 16, 32, 64):
        if bits <= c:
            return c
    raise ValueError(f"{bits}-bit values do not fit a 64-bit container")
