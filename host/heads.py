"""Task heads on the CPU in numpy (the board image needs no PyTorch).

Same computation as ``m3vit.sim.reference.TaskHead``: drop cls, LayerNorm, per-token linear to the
task's channels, reshape to the patch grid, bilinear upsample (``align_corners=False``) to the image.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from m3vit.codegen.config import DesignConfig


def _bilinear_axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of a 1-D bilinear resize with half-pixel centres (PyTorch's rule)."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    src = np.maximum(src, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def upsample_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``x`` [..., h, w] to ``size`` = (H, W) bilinearly (align_corners=False)."""
    (h, w), (hh, ww) = x.shape[-2:], size
    r0, r1, ry = _bilinear_axis(h, hh)
    c0, c1, cx = _bilinear_axis(w, ww)
    rows = x[..., r0, :] * (1 - ry)[:, None] + x[..., r1, :] * ry[:, None]  # [..., H, w]
    return rows[..., c0] * (1 - cx) + rows[..., c1] * cx


def task_head(cfg: DesignConfig, tokens: np.ndarray, task: str, params: Mapping[str, np.ndarray]) -> np.ndarray:
    """Head output [B, channels, H, W] (float32) of backbone tokens [B, T, dim] (float) for ``task``."""
    m = cfg.model
    x = np.asarray(tokens, dtype=np.float32)[:, 1:]  # [B, P, dim], cls dropped
    p = f"heads.{task}"
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    x = (x - mu) / np.sqrt(var + m.ln_eps) * params[f"{p}.norm.weight"] + params[f"{p}.norm.bias"]
    y = x @ params[f"{p}.proj.weight"].T + params[f"{p}.proj.bias"]  # [B, P, channels]
    gh, gw = m.grid
    y = y.transpose(0, 2, 1).reshape(y.shape[0], -1, gh, gw)
    return upsample_bilinear(y, m.image_size).astype(np.float32)
