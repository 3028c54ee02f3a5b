"""Deterministic random inputs for tests, benchmarks and the C-simulation testbench."""

from __future__ import annotations

import numpy as np

from m3vit.codegen.config import DesignConfig
from m3vit.sim.fixedpoint import quantize_float


def random_image(cfg: DesignConfig, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    """A normalised float image [C, H, W] ~ N(0, scale²) from ``numpy.random.default_rng(seed)``."""
    m = cfg.model
    return np.random.default_rng(seed).normal(0.0, scale, (m.in_channels, *m.image_size))


def random_quantized_image(cfg: DesignConfig, seed: int = 0) -> np.ndarray:
    """:func:`random_image` quantised to the input format: [C, H, W] int64."""
    return quantize_float(random_image(cfg, seed), cfg.numerics.input)
