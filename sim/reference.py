"""PyTorch reference of the M³ViT multi-task Mixture-of-Experts Vision Transformer.

A readable, timm-style float model that the fixed-point golden model, the generated C++ and the RTL are
checked against. One class per block; every tensor shape is written next to the line that makes it.

Structure (``cfg.model`` supplies every size)::

    images [B, C, H, W]
      → PatchEmbed (Conv2d, kernel = stride = patch)          [B, P, dim]     P = gh·gw patches, row-major
      → prepend cls_token, add pos_embed                        [B, T, dim]     T = P + 1
      → Block × depth: x = x + Attention(norm1(x))
                       x = x + Mlp(norm2(x))   (dense)   or   MoEMlp(norm2(x), task)   (cfg.model.is_moe(i))
      → tokens (NO final norm: each task head normalises)      [B, T, dim]
      → TaskHead[task]: drop cls, LayerNorm, Linear → grid, bilinear upsample   [B, channels, H, W]

MoE layers route V-MoE style: logits = x·W_g; softmax over all N experts; keep the top-K experts by logit
(ties → lower expert index); the combine weights are those K probabilities, NOT renormalised. Experts
run sparsely, expert by expert over the queue of tokens routed to each (the accelerator's order).
A layer pruned for a task (:meth:`M3ViT.prune_experts`) routes top-K' over its kept experts only: the
other logits are masked to -∞ before the softmax (docs/numerics.md §10, docs/pruning.md).

State-dict keys follow the public M³ViT checkpoints (without their ``module.backbone.`` prefix):
``patch_embed.proj``, ``cls_token``, ``pos_embed``, ``blocks.{i}.norm1/attn.qkv/attn.proj/norm2``,
``blocks.{i}.mlp.fc1/fc2`` (dense), ``blocks.{i}.mlp.experts.htoh4/h4toh`` ([E, out, in] weights) and
``blocks.{i}.mlp.gate.{t}.w_gate`` ([dim, E], multi-gate) or ``blocks.{i}.mlp.gate.w_gate``
([dim + task_embed_dim, E], task-conditioned, with a backbone-level ``task_embed.fc1/fc2``), and
``heads.{task}.norm/proj``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from m3vit.codegen.config import DesignConfig
from m3vit.sim.pruning import ExpertMap, KeptExperts

__all__ = [
    "BALANCE_LOSS_WEIGHT",
    "Attention",
    "Block",
    "ExpertLinear",
    "Experts",
    "M3ViT",
    "Mlp",
    "MoEMlp",
    "PatchEmbed",
    "ReferenceOutput",
    "Router",
    "Routing",
    "TaskEmbed",
    "TaskHead",
    "balance_loss",
    "build_reference",
    "cv_squared",
    "init_trained_scale",
    "pruned_top_k_route",
    "top_k_route",
]

BALANCE_LOSS_WEIGHT = 0.01
"""Weight of the summed load-balancing loss (the paper's value)."""

CV_EPS = 1e-10
"""Added to mean² in the squared coefficient of variation (keeps an all-zero vector finite)."""


def _float_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype to run a softmax in: at least float32 (float64 stays float64)."""
    return torch.promote_types(dtype, torch.float32)


# ------------------------------------------------------------------------------------------- outputs
@dataclass
class Routing:
    """One MoE layer's routing decision for a batch.

    ``indices[b, t, k]`` is token t's k-th choice (k = 0 is the highest logit; equal logits → lower expert
    first); ``probs[b, t, k]`` its softmax probability over all N experts (the combine weight, not
    renormalised, so ``probs.sum(-1) ≤ 1``); ``logits`` the router logits the decision was taken from
    (including the training noise, when any was added); ``clean_logits`` the same without the noise, and
    ``noise_std`` the noise's standard deviation (0 without noise).
    """

    indices: Tensor  # [B, T, K] int64
    probs: Tensor  # [B, T, K] float
    logits: Tensor  # [B, T, N] float
    clean_logits: Tensor | None = None  # [B, T, N] float; None means equal to ``logits``
    noise_std: float = 0.0


@dataclass
class ReferenceOutput:
    """What :meth:`M3ViT.forward` returns."""

    tokens: Tensor  # [B, T, dim] backbone output (no final norm)
    head: Tensor  # [B, channels, H, W] the task head's output
    aux_loss: Tensor  # [] balance_loss_weight · Σ_MoE-layers balance_loss
    routing: dict[int, Routing]  # block index → routing of that MoE block


# -------------------------------------------------------------------------------------------- blocks
class PatchEmbed(nn.Module):
    """Non-overlapping patches → tokens: a Conv2d with kernel = stride = patch_size."""

    def __init__(self, in_channels: int, patch_size: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        x = self.proj(x)  # [B, dim, gh, gw]
        return x.flatten(2).transpose(1, 2)  # [B, gh·gw, dim], patches in row-major order


class Attention(nn.Module):
    """Standard multi-head self-attention (timm layout).

    The 3·dim outputs of ``qkv`` are [q | k | v], each split into ``num_heads`` contiguous chunks of
    ``head_dim`` (``reshape(B, T, 3, heads, head_dim)``). Scores are scaled by head_dim^-0.5 and the
    softmax runs in (at least) float32.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads = {num_heads} must divide dim = {dim}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape  # [B, T, dim]
        qkv = self.qkv(x).reshape(B, T, 3, self.num_heads, self.head_dim)  # [B, T, 3, heads, hd]
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 × [B, heads, T, hd]
        scores = (q @ k.transpose(-2, -1)) * self.scale  # [B, heads, T, T]
        attn = scores.softmax(dim=-1, dtype=_float_dtype(scores.dtype)).to(v.dtype)  # [B, heads, T, T]
        ctx = attn @ v  # [B, heads, T, hd]
        ctx = ctx.transpose(1, 2).reshape(B, T, C)  # [B, T, dim], heads concatenated
        return self.proj(ctx)  # [B, T, dim]


class Mlp(nn.Module):
    """Dense transformer MLP: fc1 → exact (erf) GELU → fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))  # [..., dim] → [..., hidden] → [..., dim]


class ExpertLinear(nn.Module):
    """``num_experts`` independent Linear layers stored as one ``weight`` [E, out, in], ``bias`` [E, out]."""

    def __init__(self, num_experts: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_experts, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(num_experts, out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Linear's default initialisation, expert by expert."""
        bound = 1.0 / math.sqrt(self.weight.shape[-1])
        for e in range(self.weight.shape[0]):
            nn.init.kaiming_uniform_(self.weight[e], a=math.sqrt(5))
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor, expert: int) -> Tensor:
        return nn.functional.linear(x, self.weight[expert], self.bias[expert])  # [n, in] → [n, out]


class Experts(nn.Module):
    """The N expert FFNs of one MoE layer; expert e is htoh4[e] → exact GELU → h4toh[e]."""

    def __init__(self, num_experts: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.num_experts = num_experts
        self.htoh4 = ExpertLinear(num_experts, dim, hidden)
        self.act = nn.GELU()
        self.h4toh = ExpertLinear(num_experts, hidden, dim)

    def forward(self, x: Tensor, expert: int) -> Tensor:
        return self.h4toh(self.act(self.htoh4(x, expert)), expert)  # [n, dim] → [n, hidden] → [n, dim]


class Router(nn.Module):
    """A bias-free linear router: logits = x · w_gate, ``w_gate`` [in_features, num_experts].

    Initialised like the M³ViT code's ``NoisyGate_VMoE.reset_parameters``: ``kaiming_uniform_(a=√5)`` on
    the [in_features, num_experts] matrix (PyTorch reads its fan-in from dim 1, so the bound is
    1/√num_experts); :func:`init_trained_scale` gives it trained-scale values.
    """

    def __init__(self, in_features: int, num_experts: int) -> None:
        super().__init__()
        self.w_gate = nn.Parameter(torch.empty(in_features, num_experts))
        nn.init.kaiming_uniform_(self.w_gate, a=math.sqrt(5))

    def forward(self, x: Tensor) -> Tensor:
        dtype = _float_dtype(x.dtype)
        return x.to(dtype) @ self.w_gate.to(dtype)  # [..., in] → [..., N]


class TaskEmbed(nn.Module):
    """Task embedding of the task-conditioned gate: one-hot task → fc1 → GELU → fc2 → [task_embed_dim]."""

    def __init__(self, num_tasks: int, embed_dim: int) -> None:
        super().__init__()
        self.num_tasks = num_tasks
        self.fc1 = nn.Linear(num_tasks, embed_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(embed_dim, embed_dim)

    def forward(self, task: int) -> Tensor:
        one_hot = torch.zeros(self.num_tasks, dtype=self.fc1.weight.dtype, device=self.fc1.weight.device)
        one_hot[task] = 1.0  # [num_tasks]
        return self.fc2(self.act(self.fc1(one_hot)))  # [embed_dim]


# ------------------------------------------------------------------------------------------- routing
def top_k_route(logits: Tensor, top_k: int) -> tuple[Tensor, Tensor]:
    """Top-K experts of each token and their combine weights.

    ``logits`` [..., N] → ``indices`` [..., K] (int64, best first; equal logits → lower expert index first,
    by a stable sort, since ``torch.topk`` does not promise any tie order) and ``probs`` [..., K], the
    softmax over ALL N experts gathered at those indices (not renormalised).
    """
    if not 1 <= top_k <= logits.shape[-1]:
        raise ValueError(f"top_k = {top_k} must be in [1, {logits.shape[-1]}] (the number of experts)")
    probs = logits.softmax(dim=-1, dtype=_float_dtype(logits.dtype))  # [..., N]
    order = torch.sort(logits, dim=-1, descending=True, stable=True).indices  # [..., N]
    indices = order[..., :top_k].contiguous()  # [..., K]
    return indices, probs.gather(-1, indices)


NOISE_EPS = 1e-6
"""Below this noise std the load is a count of routed tokens, as in M³ViT's gate."""


def pruned_top_k_route(logits: Tensor, kept: KeptExperts) -> tuple[Tensor, Tensor]:
    """:func:`top_k_route` of a pruned layer: top-``kept.top_k`` among ``kept.experts`` only.

    The other experts' logits are masked to -∞ before the softmax, so the softmax runs over the kept
    experts (a pruned expert has probability 0 and is never selected; docs/numerics.md §10).
    """
    n = logits.shape[-1]
    if len(kept.experts) < kept.top_k or not all(0 <= e < n for e in kept.experts):
        raise ValueError(f"kept experts {list(kept.experts)} must be at least top_k = {kept.top_k} of [0, {n - 1}]")
    mask = torch.tensor(kept.mask(n), device=logits.device)  # [N]
    return top_k_route(logits.masked_fill(~mask, float("-inf")), kept.top_k)


def cv_squared(v: Tensor) -> Tensor:
    """Squared coefficient of variation var(v) / (mean(v)² + 1e-10) with the unbiased (n − 1) variance,
    like M³ViT's ``cv_squared``; 0 for a single element."""
    v = v.to(_float_dtype(v.dtype))
    if v.numel() == 1:
        return v.new_zeros(())
    return v.var() / (v.mean() ** 2 + CV_EPS)


def _prob_in_top_k(clean: Tensor, noisy: Tensor, noise_std: float, top_values: Tensor, top_k: int) -> Tensor:
    """Per token and expert, the probability (over the noise) that the expert is among the top K.

    M³ViT's ``_prob_in_top_k``, including its quirk: the thresholds are the (K+1)-th and K-th largest
    softmax *probabilities* of the token (``top_values``), compared with raw logits."""
    threshold_if_in = top_values[:, top_k : top_k + 1]  # [tokens, 1]
    threshold_if_out = top_values[:, top_k - 1 : top_k]  # [tokens, 1]
    normal = torch.distributions.Normal(clean.new_zeros(()), clean.new_ones(()))
    prob_if_in = normal.cdf((clean - threshold_if_in) / noise_std)
    prob_if_out = normal.cdf((clean - threshold_if_out) / noise_std)
    return torch.where(noisy > threshold_if_in, prob_if_in, prob_if_out)  # [tokens, N]


def balance_loss(routing: Routing, top_k: int) -> Tensor:
    """Load-balancing loss of one MoE layer in training: cv²(importance) + cv²(load) over the batch's tokens.

    As M³ViT's ``NoisyGate_VMoE``: the gates are the softmax of the (noisy) logits kept at each token's
    top-K experts, zero elsewhere; importance_e = Σ_tokens gate_e. The load is, with noise (std > 1e-6
    and K < N), Σ_tokens P(e in the top K) under the noise (:func:`_prob_in_top_k`), else the number of
    tokens with a non-zero gate for e. cv² uses the unbiased variance. The caller returns 0 in eval mode.
    """
    logits = routing.logits
    n = logits.shape[-1]
    dtype = _float_dtype(logits.dtype)
    noisy = logits.reshape(-1, n).to(dtype)  # [tokens, N]
    probs = noisy.softmax(dim=-1)  # [tokens, N]
    indices = routing.indices.reshape(-1, top_k)  # [tokens, K]
    gates = torch.zeros_like(probs).scatter(1, indices, probs.gather(1, indices))  # [tokens, N]
    importance = gates.sum(0)  # [N]
    if top_k < n and routing.noise_std > NOISE_EPS:
        clean = (routing.clean_logits if routing.clean_logits is not None else logits).reshape(-1, n).to(dtype)
        top_values = probs.topk(top_k + 1, dim=-1).values  # [tokens, K + 1]
        load = _prob_in_top_k(clean, noisy, routing.noise_std, top_values, top_k).sum(0)  # [N]
    else:
        load = (gates > 0).sum(0).to(dtype)  # [N]
    return cv_squared(importance) + cv_squared(load)


class MoEMlp(nn.Module):
    """Mixture-of-experts MLP with V-MoE top-K routing and sparse, expert-by-expert execution.

    ``gate == "multi_gate"``: one router per task (``gate.{t}.w_gate`` [dim, N]); the task index picks it.
    ``gate == "task_conditioned"``: one router ``gate.w_gate`` [dim + task_embed_dim, N] over
    [token ‖ task embedding]; the embedding comes from the backbone's :class:`TaskEmbed`.
    When ``self.training and noise_std > 0`` Gaussian noise of std ``noise_std / N`` is added to the logits.
    """

    def __init__(
        self,
        dim: int,
        hidden: int,
        num_experts: int,
        top_k: int,
        num_tasks: int,
        gate: str = "multi_gate",
        task_embed_dim: int = 0,
        noise_std: float = 0.0,
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k = {top_k} must be in [1, num_experts = {num_experts}]")
        self.num_experts = num_experts
        self.top_k = top_k
        self.gate_kind = gate
        self.noise_std = float(noise_std)
        self.experts = Experts(num_experts, dim, hidden)
        self.kept: dict[int, KeptExperts] = {}  # task index → kept experts of a pruned layer (none: all)
        self.gate: nn.Module
        if gate == "multi_gate":
            self.gate = nn.ModuleList(Router(dim, num_experts) for _ in range(num_tasks))
        elif gate == "task_conditioned":
            self.gate = Router(dim + task_embed_dim, num_experts)
        else:
            raise ValueError(f"gate = {gate!r} must be 'multi_gate' or 'task_conditioned'")

    def router_logits(self, x: Tensor, task: int, task_embedding: Tensor | None = None) -> Tensor:
        """Router logits [B, T, N] of the MLP input ``x`` [B, T, dim] (without the training noise)."""
        if self.gate_kind == "multi_gate":
            logits = self.gate[task](x)  # [B, T, N]
        else:
            if task_embedding is None:
                raise ValueError("a task_conditioned MoE layer needs the task embedding")
            emb = task_embedding.to(x.dtype).expand(*x.shape[:-1], -1)  # [B, T, task_embed_dim]
            logits = self.gate(torch.cat([x, emb], dim=-1))  # [B, T, N]
        return logits

    def route(self, x: Tensor, task: int, task_embedding: Tensor | None = None) -> Routing:
        """Routing of ``x`` [B, T, dim]: top-K indices and probabilities, plus the logits (noisy in training)."""
        clean = self.router_logits(x, task, task_embedding)  # [B, T, N]
        noise_std = self.noise_std / self.num_experts if self.training else 0.0
        logits = clean + torch.randn_like(clean) * noise_std if noise_std > 0 else clean
        if task in self.kept:  # pruned for this task: top-K' over the kept experts, K' = kept.top_k
            indices, probs = pruned_top_k_route(logits, self.kept[task])  # [B, T, K'] each
            return Routing(indices=indices, probs=probs, logits=logits, clean_logits=clean, noise_std=noise_std)
        indices, probs = top_k_route(logits, self.top_k)  # [B, T, K] each
        return Routing(indices=indices, probs=probs, logits=logits, clean_logits=clean, noise_std=noise_std)

    def dispatch(self, x: Tensor, routing: Routing) -> Tensor:
        """Σ_k p_k · expert_k(x), computed expert by expert over each expert's queue of tokens.

        The queue of expert e holds, in ascending token order, every token that chose e; experts with an
        empty queue are skipped. Each expert runs once on its gathered tokens, its outputs are scaled by
        the gate weights and index-added back, so a token accumulates its K contributions in ascending
        expert order.
        """
        B, T, C = x.shape
        flat_x = x.reshape(B * T, C)  # [BT, dim]
        slot_expert = routing.indices.reshape(-1)  # [BT·K], slot s belongs to token s // K
        slot_prob = routing.probs.reshape(-1)  # [BT·K]
        queues = torch.argsort(slot_expert, stable=True)  # [BT·K] slots grouped by expert, tokens ascending
        counts = torch.bincount(slot_expert, minlength=self.num_experts).tolist()  # [N]
        out = torch.zeros_like(flat_x)  # [BT, dim]
        start = 0
        for expert, count in enumerate(counts):
            if count == 0:
                continue
            slots = queues[start : start + count]  # [n]
            start += count
            tokens = slots // routing.indices.shape[-1]  # [n] (a pruned layer may route to K' < K)
            y = self.experts(flat_x[tokens], expert)  # [n, dim]
            y = y * slot_prob[slots].to(y.dtype).unsqueeze(-1)  # [n, dim]
            out.index_add_(0, tokens, y)
        return out.reshape(B, T, C)  # [B, T, dim]

    def forward(
        self, x: Tensor, task: int, task_embedding: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Routing]:
        """``x`` [B, T, dim] → (output [B, T, dim], balance loss [] (0 in eval mode, as M³ViT), routing)."""
        routing = self.route(x, task, task_embedding)
        loss = balance_loss(routing, self.top_k) if self.training else x.new_zeros((), dtype=_float_dtype(x.dtype))
        return self.dispatch(x, routing), loss, routing


class Block(nn.Module):
    """Pre-norm transformer block: x = x + attn(norm1(x)); x = x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp: Mlp | MoEMlp, ln_eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=ln_eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=ln_eps)
        self.mlp = mlp

    @property
    def is_moe(self) -> bool:
        return isinstance(self.mlp, MoEMlp)

    def forward(
        self, x: Tensor, task: int, task_embedding: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None, Routing | None]:
        """``x`` [B, T, dim] → (x [B, T, dim], balance loss or None, routing or None)."""
        x = x + self.attn(self.norm1(x))  # [B, T, dim]
        if isinstance(self.mlp, MoEMlp):
            y, loss, routing = self.mlp(self.norm2(x), task, task_embedding)
            return x + y, loss, routing
        return x + self.mlp(self.norm2(x)), None, None


class TaskHead(nn.Module):
    """Light per-task head: drop cls, LayerNorm, Linear(dim, channels) per token, grid, bilinear upsample."""

    def __init__(
        self,
        dim: int,
        channels: int,
        grid: tuple[int, int],
        image_size: tuple[int, int],
        ln_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.grid = tuple(grid)
        self.image_size = tuple(image_size)
        self.norm = nn.LayerNorm(dim, eps=ln_eps)
        self.proj = nn.Linear(dim, channels)

    def forward(self, tokens: Tensor) -> Tensor:
        B = tokens.shape[0]
        x = self.proj(self.norm(tokens[:, 1:]))  # [B, P, channels], cls dropped
        x = x.transpose(1, 2).reshape(B, -1, *self.grid)  # [B, channels, gh, gw]
        x = nn.functional.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False)
        return x  # [B, channels, H, W]


# ------------------------------------------------------------------------------------------- the model
class M3ViT(nn.Module):
    """The multi-task MoE ViT of ``cfg.model``: backbone + one :class:`TaskHead` per task.

    ``noise_std`` is the router noise σ (std σ/N, training only); ``balance_loss_weight`` scales the sum
    of the MoE layers' balance losses in ``aux_loss``.
    """

    def __init__(
        self, cfg: DesignConfig, *, noise_std: float = 0.0, balance_loss_weight: float = BALANCE_LOSS_WEIGHT
    ) -> None:
        super().__init__()
        m = cfg.model
        self.cfg = cfg
        self.balance_loss_weight = float(balance_loss_weight)
        self.expert_map: dict[tuple[int, int], KeptExperts] = {}  # set by prune_experts (empty: unpruned)
        self.patch_embed = PatchEmbed(m.in_channels, m.patch_size, m.dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, m.dim))  # [1, 1, dim]
        self.pos_embed = nn.Parameter(torch.zeros(1, m.num_tokens, m.dim))  # [1, T, dim]
        self.task_embed = TaskEmbed(len(m.tasks), m.task_embed_dim) if m.gate == "task_conditioned" else None
        blocks = []
        for i in range(m.depth):
            mlp: Mlp | MoEMlp
            if m.is_moe(i):
                mlp = MoEMlp(
                    m.dim, m.expert_hidden, m.num_experts, m.top_k, len(m.tasks),
                    gate=m.gate, task_embed_dim=m.task_embed_dim, noise_std=noise_std,
                )
            else:
                mlp = Mlp(m.dim, m.mlp_hidden)
            blocks.append(Block(m.dim, m.num_heads, mlp, m.ln_eps))
        self.blocks = nn.ModuleList(blocks)
        self.heads = nn.ModuleDict()
        for t in m.tasks:
            try:
                self.heads[t.name] = TaskHead(m.dim, t.channels, m.grid, m.image_size, m.ln_eps)
            except KeyError:
                raise ValueError(f"task name {t.name!r} clashes with an nn.ModuleDict attribute") from None

    # -- input checks -------------------------------------------------------------------------------
    def task_index(self, task: str | int) -> int:
        """Index of ``task`` (a name or an index); ValueError listing the tasks if unknown."""
        return self.cfg.model.task_index(task)

    def _check_images(self, images: object) -> Tensor:
        m = self.cfg.model
        dtype = self.cls_token.dtype
        expected = f"a {dtype} tensor of shape [B, {m.in_channels}, {m.image_size[0]}, {m.image_size[1]}]"
        if not isinstance(images, Tensor):
            got = type(images).__name__
        elif (
            images.dtype != dtype
            or images.dim() != 4
            or images.shape[0] < 1
            or tuple(images.shape[1:]) != (m.in_channels, *m.image_size)
        ):
            got = f"a {images.dtype} tensor of shape {list(images.shape)}"
        else:
            return images
        raise ValueError(f"images must be {expected} with B ≥ 1; got {got}")

    def _check_tokens(self, tokens: object) -> Tensor:
        m = self.cfg.model
        expected = (m.num_tokens, m.dim)
        if isinstance(tokens, Tensor) and tokens.dim() == 3 and tuple(tokens.shape[1:]) == expected:
            return tokens
        got = f"shape {list(tokens.shape)}" if isinstance(tokens, Tensor) else type(tokens).__name__
        raise ValueError(f"tokens must be a tensor of shape [B, {m.num_tokens}, {m.dim}]; got {got}")

    # -- expert pruning -------------------------------------------------------------------------------
    def prune_experts(self, experts: ExpertMap | None) -> M3ViT:
        """Route the MoE layers of ``experts`` ((task, block) → kept experts, :mod:`m3vit.sim.pruning`) over
        their kept experts only; ``None`` or ``{}`` restores full routing. Weights are untouched. Returns self."""
        experts = dict(experts or {})
        for task, b in experts:
            if not (0 <= b < len(self.blocks) and isinstance(self.blocks[b].mlp, MoEMlp)):
                raise ValueError(f"block {b} is not an MoE layer of this model")
            self.task_index(task)
        for b, block in enumerate(self.blocks):
            if isinstance(block.mlp, MoEMlp):
                block.mlp.kept = {t: k for (t, bb), k in experts.items() if bb == b}
        self.expert_map = experts
        return self

    # -- forward ------------------------------------------------------------------------------------
    def _backbone(self, images: Tensor, task: int) -> tuple[Tensor, Tensor, dict[int, Routing]]:
        images = self._check_images(images)
        x = self.patch_embed(images)  # [B, P, dim]
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # [B, 1, dim]
        x = torch.cat([cls, x], dim=1) + self.pos_embed  # [B, T, dim]
        task_embedding = self.task_embed(task) if self.task_embed is not None else None  # [task_embed_dim]
        aux = x.new_zeros((), dtype=_float_dtype(x.dtype))
        routing: dict[int, Routing] = {}
        for i, block in enumerate(self.blocks):
            x, loss, r = block(x, task, task_embedding)  # [B, T, dim]
            if r is not None and loss is not None:
                routing[i] = r
                aux = aux + loss
        return x, aux * self.balance_loss_weight, routing

    def backbone(self, images: Tensor, task: str | int) -> Tensor:
        """Backbone tokens [B, T, dim] of ``images`` [B, C, H, W] for ``task`` (selects the routers)."""
        return self._backbone(images, self.task_index(task))[0]

    def head(self, tokens: Tensor, task: str | int) -> Tensor:
        """The head of ``task`` on backbone ``tokens`` [B, T, dim] → [B, channels, H, W]."""
        name = self.cfg.model.task_names[self.task_index(task)]
        return self.heads[name](self._check_tokens(tokens))

    def forward(self, images: Tensor, task: str | int) -> ReferenceOutput:
        """Run ``task`` on ``images`` [B, C, H, W]: tokens, head output, aux loss and every MoE routing."""
        t = self.task_index(task)
        tokens, aux, routing = self._backbone(images, t)
        head = self.heads[self.cfg.model.task_names[t]](tokens)
        return ReferenceOutput(tokens=tokens, head=head, aux_loss=aux, routing=routing)


# ------------------------------------------------------------------------------------ initialisation
WEIGHT_STD = 0.035  # Linear / conv / expert / router weights, clipped to ±4 std
BIAS_STD = 0.02
LN_WEIGHT_STD = 0.1  # around 1
LN_BIAS_STD = 0.05
EMBED_STD = 0.02  # cls_token, pos_embed
TASK_EMBED_STD = 0.1
CLIP_STDS = 4.0


@torch.no_grad()
def init_trained_scale(model: M3ViT, seed: int) -> M3ViT:
    """Deterministic initialisation at the scale of a trained DeiT/ViT (for realistic fixed-point tests).

    Values are drawn in float64 from one ``torch.Generator(seed)`` in ``named_parameters`` order, so they
    do not depend on the model's dtype or device; every router gets its own draw (tasks differ).
    Raises TypeError for a parameter it has no rule for. Returns ``model``.
    """
    gen = torch.Generator().manual_seed(int(seed))

    def fill(p: Tensor, std: float, mean: float = 0.0, clip: bool = False) -> None:
        v = torch.randn(p.shape, generator=gen, dtype=torch.float64) * std
        if clip:
            v.clamp_(-CLIP_STDS * std, CLIP_STDS * std)
        p.copy_((v + mean).to(dtype=p.dtype, device=p.device))

    modules = dict(model.named_modules())
    for name, p in model.named_parameters():
        owner_name, _, leaf = name.rpartition(".")
        owner = modules[owner_name]
        if name.startswith("task_embed."):
            fill(p, TASK_EMBED_STD)
        elif isinstance(owner, nn.LayerNorm) and leaf == "weight":
            fill(p, LN_WEIGHT_STD, mean=1.0)
        elif isinstance(owner, nn.LayerNorm):
            fill(p, LN_BIAS_STD)
        elif isinstance(owner, (Router, nn.Linear, nn.Conv2d, ExpertLinear)) and leaf in ("weight", "w_gate"):
            fill(p, WEIGHT_STD, clip=True)
        elif isinstance(owner, (nn.Linear, nn.Conv2d, ExpertLinear)):
            fill(p, BIAS_STD)
        elif owner is model and leaf in ("cls_token", "pos_embed"):
            fill(p, EMBED_STD)
        else:
            raise TypeError(f"init_trained_scale has no rule for parameter {name!r}")
    return model


def build_reference(cfg: DesignConfig, seed: int = 0) -> M3ViT:
    """An :class:`M3ViT` for ``cfg``, initialised by :func:`init_trained_scale` and in eval mode."""
    return init_trained_scale(M3ViT(cfg), seed).eval()
