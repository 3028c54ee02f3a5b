"""Float model weights → the integer tensors the accelerator computes with (docs/numerics.md §4).

``quantize_state_dict(cfg, state_dict)`` accepts the PyTorch reference's state dict (tensors or numpy
arrays, keys as in ``m3vit.sim.reference``) and returns a :class:`QuantizedModel`. Weight
pre-processing that needs real numbers (adding cls to the first position embedding, the
task-conditioned router's per-task bias) happens here, on the host, never in the datapath.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from m3vit.codegen.config import DesignConfig, FixedFormat
from m3vit.codegen.numerics import gelu
from m3vit.sim.fixedpoint import SaturationLog, quantize_float


@dataclass(frozen=True)
class QLinear:
    """A linear layer: ``w`` [out, in] in the weight format, ``b`` [out] at accumulator scale."""

    w: np.ndarray
    b: np.ndarray


@dataclass(frozen=True)
class QLayerNorm:
    gamma: np.ndarray  # [dim], ln_param format
    beta: np.ndarray  # [dim], ln_param format


@dataclass(frozen=True)
class QExperts:
    """All N experts of one MoE layer, stacked on axis 0."""

    w1: np.ndarray  # [E, hidden, dim]
    b1: np.ndarray  # [E, hidden]
    w2: np.ndarray  # [E, dim, hidden]
    b2: np.ndarray  # [E, dim]
    router_w: np.ndarray  # [tasks, E, dim]: one router per task (multi_gate) or the shared one repeated
    router_b: np.ndarray  # [tasks, E] at accumulator scale: 0 (multi_gate) or the task-embedding term


@dataclass(frozen=True)
class QBlock:
    norm1: QLayerNorm
    qkv: QLinear
    proj: QLinear
    norm2: QLayerNorm
    fc1: QLinear | None  # dense MLP (None in MoE blocks)
    fc2: QLinear | None
    experts: QExperts | None  # MoE MLP (None in dense blocks)


@dataclass(frozen=True)
class QuantizedModel:
    """Every integer tensor of the backbone; ``saturation`` counts weights clamped while quantising."""

    patch: QLinear  # w [dim, C·P·P] (c, ky, kx order), b [dim]
    pos: np.ndarray  # [tokens, dim] act format; row 0 already holds cls_token + pos_embed[0]
    blocks: list[QBlock]
    saturation: dict[str, int] = field(default_factory=dict)


def _np(t: object) -> np.ndarray:
    if hasattr(t, "detach"):
        t = t.detach().cpu().double().numpy()  # type: ignore[attr-defined]
    return np.asarray(t, dtype=np.float64)


class _Quantizer:
    def __init__(self, cfg: DesignConfig, sd: Mapping[str, object]) -> None:
        self.cfg, self.sd, self.log = cfg, sd, SaturationLog()
        self.log.layer = "weights"

    def get(self, key: str, shape: tuple[int, ...]) -> np.ndarray:
        if key not in self.sd:
            raise KeyError(f"state dict has no {key!r} (expected shape {list(shape)})")
        arr = _np(self.sd[key])
        if arr.shape != shape:
            raise ValueError(f"{key}: shape {list(arr.shape)} does not match the config's {list(shape)}")
        return arr

    def q(self, arr: np.ndarray, fmt: FixedFormat, cls: str) -> np.ndarray:
        return quantize_float(arr, fmt, self.log, cls)

    def bias(self, arr: np.ndarray, in_fmt: FixedFormat, cls: str) -> np.ndarray:
        n = self.cfg.numerics
        acc_scale = FixedFormat(bits=n.bias_bits, frac=in_fmt.frac + n.weight.frac)
        return self.q(arr, acc_scale, cls)

    def linear(self, prefix: str, out: int, inp: int, in_fmt: FixedFormat) -> QLinear:
        w = self.get(f"{prefix}.weight", (out, inp))
        b = self.get(f"{prefix}.bias", (out,))
        return QLinear(self.q(w, self.cfg.numerics.weight, "weight"), self.bias(b, in_fmt, "bias"))

    def layernorm(self, prefix: str) -> QLayerNorm:
        d, fmt = self.cfg.model.dim, self.cfg.numerics.ln_param
        return QLayerNorm(
            self.q(self.get(f"{prefix}.weight", (d,)), fmt, "ln_param"),
            self.q(self.get(f"{prefix}.bias", (d,)), fmt, "ln_param"),
        )

    def experts(self, prefix: str) -> QExperts:
        m, n = self.cfg.model, self.cfg.numerics
        e, d, h, t = m.num_experts, m.dim, m.expert_hidden, len(m.tasks)
        w1 = self.get(f"{prefix}.experts.htoh4.weight", (e, h, d))
        b1 = self.get(f"{prefix}.experts.htoh4.bias", (e, h))
        w2 = self.get(f"{prefix}.experts.h4toh.weight", (e, d, h))
        b2 = self.get(f"{prefix}.experts.h4toh.bias", (e, d))
        if m.gate == "multi_gate":
            wg = np.stack([self.get(f"{prefix}.gate.{i}.w_gate", (d, e)).T for i in range(t)])
            bg = np.zeros((t, e))
        else:
            full = self.get(f"{prefix}.gate.w_gate", (d + m.task_embed_dim, e))
            wg = np.repeat(full[:d].T[None], t, axis=0)
            bg = task_embeddings(self.cfg, self.sd) @ full[d:]  # [tasks, E], real numbers
        return QExperts(
            w1=self.q(w1, n.weight, "weight"), b1=self.bias(b1, n.norm, "bias"),
            w2=self.q(w2, n.weight, "weight"), b2=self.bias(b2, n.hidden, "bias"),
            router_w=self.q(wg, n.weight, "weight"), router_b=self.bias(bg, n.norm, "bias"),
        )


def task_embeddings(cfg: DesignConfig, sd: Mapping[str, object]) -> np.ndarray:
    """Task-conditioned gate: the task-embedding MLP over one-hot task vectors, [tasks, embed_dim]."""
    m = cfg.model
    t, k = len(m.tasks), m.task_embed_dim
    w1, b1 = _np(sd["task_embed.fc1.weight"]), _np(sd["task_embed.fc1.bias"])
    w2, b2 = _np(sd["task_embed.fc2.weight"]), _np(sd["task_embed.fc2.bias"])
    if w1.shape != (k, t) or w2.shape != (k, k):
        raise ValueError(f"task_embed: shapes {list(w1.shape)}, {list(w2.shape)} do not match [{k}, {t}], [{k}, {k}]")
    return np.vectorize(gelu)(np.eye(t) @ w1.T + b1) @ w2.T + b2


def quantize_state_dict(cfg: DesignConfig, state_dict: Mapping[str, object]) -> QuantizedModel:
    """Quantise a reference-model state dict to the config's formats."""
    m, n = cfg.model, cfg.numerics
    qz = _Quantizer(cfg, state_dict)
    conv = qz.get("patch_embed.proj.weight", (m.dim, m.in_channels, m.patch_size, m.patch_size))
    patch = QLinear(
        qz.q(conv.reshape(m.dim, -1), n.weight, "weight"),
        qz.bias(qz.get("patch_embed.proj.bias", (m.dim,)), n.input, "bias"),
    )
    pos = qz.get("pos_embed", (1, m.num_tokens, m.dim))[0].copy()
    pos[0] += qz.get("cls_token", (1, 1, m.dim))[0, 0]
    blocks = []
    for i in range(m.depth):
        p = f"blocks.{i}"
        moe = m.is_moe(i)
        blocks.append(QBlock(
            norm1=qz.layernorm(f"{p}.norm1"),
            qkv=qz.linear(f"{p}.attn.qkv", 3 * m.dim, m.dim, n.norm),
            proj=qz.linear(f"{p}.attn.proj", m.dim, m.dim, n.qkv),
            norm2=qz.layernorm(f"{p}.norm2"),
            fc1=None if moe else qz.linear(f"{p}.mlp.fc1", m.mlp_hidden, m.dim, n.norm),
            fc2=None if moe else qz.linear(f"{p}.mlp.fc2", m.dim, m.mlp_hidden, n.hidden),
            experts=qz.experts(f"{p}.mlp") if moe else None,
        ))
    sat = {cls: c for (_, cls), c in qz.log.counts.items()}
    return QuantizedModel(patch=patch, pos=qz.q(pos, n.act, "act"), blocks=blocks, saturation=sat)
