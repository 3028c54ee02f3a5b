"""Tests of the PyTorch reference model (m3vit.sim.reference)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from m3vit.codegen.config import DesignConfig, load_config, with_overrides
from m3vit.sim.reference import (
    BALANCE_LOSS_WEIGHT,
    Attention,
    M3ViT,
    MoEMlp,
    ReferenceOutput,
    Routing,
    balance_loss,
    build_reference,
    cv_squared,
    init_trained_scale,
    top_k_route,
)


# --------------------------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def tiny() -> DesignConfig:
    return load_config("tiny")


@pytest.fixture(scope="module")
def tiny_tc(tiny: DesignConfig) -> DesignConfig:
    return with_overrides(tiny, **{"model.gate": "task_conditioned"})


@pytest.fixture(scope="module")
def model(tiny: DesignConfig) -> M3ViT:
    return build_reference(tiny, seed=0)


def images_for(cfg: DesignConfig, batch: int = 2, seed: int = 0, dtype: torch.dtype = torch.float32):
    m = cfg.model
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, m.in_channels, *m.image_size, generator=gen).to(dtype)


def expected_keys(cfg: DesignConfig) -> set[str]:
    m = cfg.model
    keys = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"}
    for i in range(m.depth):
        p = f"blocks.{i}."
        for name in ("norm1", "attn.qkv", "attn.proj", "norm2"):
            keys |= {p + name + ".weight", p + name + ".bias"}
        if m.is_moe(i):
            for name in ("htoh4", "h4toh"):
                keys |= {f"{p}mlp.experts.{name}.weight", f"{p}mlp.experts.{name}.bias"}
            if m.gate == "multi_gate":
                keys |= {f"{p}mlp.gate.{t}.w_gate" for t in range(len(m.tasks))}
            else:
                keys.add(f"{p}mlp.gate.w_gate")
        else:
            keys |= {p + "mlp.fc1.weight", p + "mlp.fc1.bias", p + "mlp.fc2.weight", p + "mlp.fc2.bias"}
    for t in m.task_names:
        keys |= {f"heads.{t}.{layer}.{leaf}" for layer in ("norm", "proj") for leaf in ("weight", "bias")}
    if m.gate == "task_conditioned":
        keys |= {f"task_embed.{layer}.{leaf}" for layer in ("fc1", "fc2") for leaf in ("weight", "bias")}
    return keys


def random_moe(
    dim: int, hidden: int, n: int, k: int, num_tasks: int = 2, seed: int = 0, dtype=torch.float64
) -> MoEMlp:
    """A standalone multi-gate MoE layer with random weights (router at a scale that separates logits)."""
    moe = MoEMlp(dim, hidden, n, k, num_tasks).to(dtype)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in moe.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64).to(dtype) * 0.3)
    return moe


def dense_moe_reference(moe: MoEMlp, x: torch.Tensor, task: int) -> tuple[torch.Tensor, np.ndarray]:
    """Every expert on every token, weighted by a dense combine matrix; top-K by (−logit, index) in numpy."""
    w_gate = moe.gate[task].w_gate
    logits = x @ w_gate  # [B, T, N]
    probs = torch.softmax(logits, dim=-1)  # [B, T, N]
    lg = logits.detach().numpy()
    n, k = lg.shape[-1], moe.top_k
    index_key = np.broadcast_to(np.arange(n), lg.shape)
    order = np.lexsort((index_key, -lg), axis=-1)  # primary −logit, then index
    topk = order[..., :k]  # [B, T, K]
    mask = np.zeros(lg.shape, dtype=bool)
    np.put_along_axis(mask, topk, True, axis=-1)
    combine = probs * torch.from_numpy(mask).to(probs.dtype)  # [B, T, N]
    w1, b1 = moe.experts.htoh4.weight, moe.experts.htoh4.bias  # [N, H, D], [N, H]
    w2, b2 = moe.experts.h4toh.weight, moe.experts.h4toh.bias  # [N, D, H], [N, D]
    h = torch.einsum("btd,ehd->bteh", x, w1) + b1  # [B, T, N, H]
    h = 0.5 * h * (1.0 + torch.erf(h / math.sqrt(2.0)))  # exact GELU
    y = torch.einsum("bteh,edh->bted", h, w2) + b2  # [B, T, N, D]
    return torch.einsum("bte,bted->btd", combine, y), topk


# ------------------------------------------------------------------------------------------ structure
@pytest.mark.parametrize("gate", ["multi_gate", "task_conditioned"])
def test_state_dict_keys_and_shapes(tiny: DesignConfig, gate: str) -> None:
    cfg = with_overrides(tiny, **{"model.gate": gate})
    m = cfg.model
    sd = M3ViT(cfg).state_dict()
    assert set(sd) == expected_keys(cfg)
    moe = min(m.moe_block_set)
    n, e_h, d = m.num_experts, m.expert_hidden, m.dim
    assert sd[f"blocks.{moe}.mlp.experts.htoh4.weight"].shape == (n, e_h, d)
    assert sd[f"blocks.{moe}.mlp.experts.htoh4.bias"].shape == (n, e_h)
    assert sd[f"blocks.{moe}.mlp.experts.h4toh.weight"].shape == (n, d, e_h)
    assert sd[f"blocks.{moe}.mlp.experts.h4toh.bias"].shape == (n, d)
    if gate == "multi_gate":
        assert sd[f"blocks.{moe}.mlp.gate.1.w_gate"].shape == (d, n)
    else:
        assert sd[f"blocks.{moe}.mlp.gate.w_gate"].shape == (d + m.task_embed_dim, n)
        assert sd["task_embed.fc1.weight"].shape == (m.task_embed_dim, len(m.tasks))
        assert sd["task_embed.fc2.weight"].shape == (m.task_embed_dim, m.task_embed_dim)
    assert sd["blocks.0.attn.qkv.weight"].shape == (3 * d, d)
    assert sd["blocks.0.attn.qkv.bias"].shape == (3 * d,)
    assert sd["blocks.0.mlp.fc1.weight"].shape == (m.mlp_hidden, d)
    assert sd["patch_embed.proj.weight"].shape == (d, m.in_channels, m.patch_size, m.patch_size)
    assert sd["cls_token"].shape == (1, 1, d)
    assert sd["pos_embed"].shape == (1, m.num_tokens, d)
    assert sd[f"heads.{m.task_names[0]}.proj.weight"].shape == (m.tasks[0].channels, d)


def test_moe_blocks_follow_config(tiny: DesignConfig) -> None:
    cfg = with_overrides(tiny, **{"model.moe_blocks": [0, 3]})
    model = M3ViT(cfg)
    assert [b.is_moe for b in model.blocks] == [True, False, False, True]


# ------------------------------------------------------------------------------------------- forward
def test_forward_shapes(tiny: DesignConfig) -> None:
    cfg = with_overrides(tiny, **{"model.image_size": [64, 48]})
    m = cfg.model
    model = build_reference(cfg, seed=1)
    images = images_for(cfg, batch=3)
    t = m.num_tokens
    assert t == 8 * 6 + 1
    for task in m.tasks:
        out = model(images, task.name)
        assert isinstance(out, ReferenceOutput)
        assert out.tokens.shape == (3, t, m.dim)
        assert out.head.shape == (3, task.channels, 64, 48)
        assert out.aux_loss.shape == ()
        assert sorted(out.routing) == sorted(m.moe_block_set)
        for r in out.routing.values():
            assert isinstance(r, Routing)
            assert r.indices.shape == (3, t, m.top_k) and r.indices.dtype == torch.int64
            assert r.probs.shape == (3, t, m.top_k)
            assert r.logits.shape == (3, t, m.num_experts)
            # top-k picks K distinct experts, best first
            assert (r.indices.sort(-1).values.diff(dim=-1) > 0).all()
            assert (r.probs.diff(dim=-1) <= 0).all()


def test_backbone_and_head_match_forward(model: M3ViT, tiny: DesignConfig) -> None:
    images = images_for(tiny)
    with torch.no_grad():
        out = model(images, "depth")
        tokens = model.backbone(images, "depth")
        head = model.head(tokens, 1)
        by_index = model(images, 1)
    torch.testing.assert_close(tokens, out.tokens, rtol=0, atol=0)
    torch.testing.assert_close(head, out.head, rtol=0, atol=0)
    torch.testing.assert_close(by_index.head, out.head, rtol=0, atol=0)
    assert model.task_index(np.int64(1)) == 1


def test_forward_matches_manual_composition(model: M3ViT, tiny: DesignConfig) -> None:
    """Embedding, residual structure and head written out by hand from the modules' weights."""
    m = tiny.model
    images = images_for(tiny, batch=2, seed=3)
    task = 0
    with torch.no_grad():
        out = model(images, task)
        pe = model.patch_embed.proj
        p = m.patch_size
        patches = images.unfold(2, p, p).unfold(3, p, p)  # [B, C, gh, gw, p, p]
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(2, m.num_patches, -1)  # row-major patches
        x = patches @ pe.weight.reshape(m.dim, -1).T + pe.bias
        x = torch.cat([model.cls_token.expand(2, -1, -1), x], 1) + model.pos_embed
        for i, blk in enumerate(model.blocks):
            x = x + blk.attn(blk.norm1(x))
            h = blk.norm2(x)
            if blk.is_moe:
                r = out.routing[i]
                y = torch.zeros_like(h)
                for kk in range(m.top_k):
                    for b in range(2):
                        for t in range(m.num_tokens):
                            e = int(r.indices[b, t, kk])
                            fc1 = h[b, t] @ blk.mlp.experts.htoh4.weight[e].T + blk.mlp.experts.htoh4.bias[e]
                            fc2 = nn.functional.gelu(fc1) @ blk.mlp.experts.h4toh.weight[e].T
                            y[b, t] += r.probs[b, t, kk] * (fc2 + blk.mlp.experts.h4toh.bias[e])
                x = x + y
            else:
                x = x + blk.mlp.fc2(nn.functional.gelu(blk.mlp.fc1(h)))
        torch.testing.assert_close(out.tokens, x, rtol=1e-5, atol=1e-5)
        head = model.heads["semseg"]
        grid = head.proj(head.norm(x[:, 1:])).transpose(1, 2).reshape(2, -1, *m.grid)
        up = nn.functional.interpolate(grid, size=m.image_size, mode="bilinear", align_corners=False)
        torch.testing.assert_close(out.head, up, rtol=1e-5, atol=1e-5)


def test_attention_matches_torch_multihead_attention() -> None:
    """Same weights in nn.MultiheadAttention ([q; k; v] rows, contiguous heads) give the same output."""
    torch.manual_seed(0)
    dim, heads = 24, 4
    attn = Attention(dim, heads).double()
    mha = nn.MultiheadAttention(dim, heads, bias=True, batch_first=True).double()
    with torch.no_grad():
        mha.in_proj_weight.copy_(attn.qkv.weight)
        mha.in_proj_bias.copy_(attn.qkv.bias)
        mha.out_proj.weight.copy_(attn.proj.weight)
        mha.out_proj.bias.copy_(attn.proj.bias)
    x = torch.randn(2, 7, dim, dtype=torch.float64)
    torch.testing.assert_close(attn(x), mha(x, x, x, need_weights=False)[0], rtol=1e-12, atol=1e-12)
    assert attn.scale == (dim // heads) ** -0.5


# ------------------------------------------------------------------------------------------- routing
@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 8),
    k_frac=st.floats(0, 1),
    batch=st.integers(1, 2),
    tokens=st.integers(1, 9),
    dim=st.integers(2, 12),
    hidden=st.integers(1, 10),
    task=st.integers(0, 1),
    seed=st.integers(0, 2**16),
)
def test_sparse_moe_equals_dense(
    n: int, k_frac: float, batch: int, tokens: int, dim: int, hidden: int, task: int, seed: int
) -> None:
    k = max(1, min(n, 1 + int(k_frac * n)))
    moe = random_moe(dim, hidden, n, k, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, tokens, dim, dtype=torch.float64, generator=gen)
    with torch.no_grad():
        out, _, routing = moe(x, task)
        dense, topk = dense_moe_reference(moe, x, task)
    np.testing.assert_array_equal(routing.indices.numpy(), topk)
    torch.testing.assert_close(out, dense, rtol=1e-10, atol=1e-12)


def test_sparse_moe_when_one_expert_gets_every_token() -> None:
    """A zero router ties every logit: every token goes to experts 0..K-1 (Edge-MoE's hang case)."""
    moe = random_moe(8, 6, n=5, k=2)
    with torch.no_grad():
        moe.gate[0].w_gate.zero_()
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    with torch.no_grad():
        out, _, routing = moe(x, 0)
        dense, _ = dense_moe_reference(moe, x, 0)
    assert (routing.indices == torch.tensor([0, 1])).all()
    torch.testing.assert_close(routing.probs, torch.full((2, 6, 2), 0.2, dtype=torch.float64))
    torch.testing.assert_close(out, dense, rtol=1e-10, atol=1e-12)


def test_sparse_moe_runs_each_used_expert_once_on_its_queue() -> None:
    moe = random_moe(6, 4, n=6, k=2)
    x = torch.randn(1, 10, 6, dtype=torch.float64)
    calls: list[tuple[int, int]] = []
    forward = moe.experts.forward

    def spy(inp: torch.Tensor, expert: int) -> torch.Tensor:
        calls.append((expert, inp.shape[0]))
        return forward(inp, expert)

    moe.experts.forward = spy  # type: ignore[method-assign]
    with torch.no_grad():
        _, _, routing = moe(x, 0)
    counts = torch.bincount(routing.indices.reshape(-1), minlength=6)
    assert calls == [(e, int(c)) for e, c in enumerate(counts) if c > 0]


def test_top_k_tie_break_prefers_lower_index() -> None:
    logits = torch.tensor([[0.0, 1.0, 0.5, 1.0, 1.0], [2.0, -1.0, 2.0, 2.0, 3.0]])
    idx, probs = top_k_route(logits, 2)
    assert idx.tolist() == [[1, 3], [4, 0]]
    idx3, _ = top_k_route(logits, 3)
    assert idx3.tolist() == [[1, 3, 4], [4, 0, 2]]
    torch.testing.assert_close(probs, torch.softmax(logits, -1).gather(-1, idx))
    # a tie between a high and a low expert index must keep the low one even when it is listed last
    idx, _ = top_k_route(torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]]), 1)
    assert idx.tolist() == [[1]]


def test_router_tie_in_a_module_resolves_to_lower_index() -> None:
    """Router columns 6 and 1 are equal and dominate: every token picks [1, 6] (K=2) or [1] (K=1)."""
    dim, n = 8, 8
    for k, want in ((1, [1]), (2, [1, 6])):
        moe = random_moe(dim, 4, n, k)
        u = torch.rand(dim, dtype=torch.float64) + 0.5
        w = -u[:, None].repeat(1, n)
        w[:, 6] = u
        w[:, 1] = u
        with torch.no_grad():
            moe.gate[0].w_gate.copy_(w)
        x = torch.rand(2, 5, dim, dtype=torch.float64) + 0.1  # positive, so x·u > 0 > x·(−u)
        with torch.no_grad():
            _, _, routing = moe(x, 0)
        assert (routing.indices == torch.tensor(want)).all()


def test_combine_weights_are_not_renormalised(model: M3ViT, tiny: DesignConfig) -> None:
    m = tiny.model
    assert m.top_k < m.num_experts
    with torch.no_grad():
        out = model(images_for(tiny), "semseg")
    for r in out.routing.values():
        full = torch.softmax(r.logits, dim=-1)
        torch.testing.assert_close(r.probs, full.gather(-1, r.indices))
        assert (r.probs.sum(-1) < 1.0 - 1e-3).all()
        # the chosen experts are the K largest logits
        kth = r.logits.gather(-1, r.indices[..., -1:])
        assert ((r.logits > kth).sum(-1) < m.top_k).all()


def test_top_k_equal_to_num_experts_sums_to_one() -> None:
    logits = torch.randn(3, 4, 6)
    _, probs = top_k_route(logits, 6)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 4))
    with pytest.raises(ValueError, match="top_k"):
        top_k_route(logits, 7)


def test_routers_differ_across_tasks(model: M3ViT, tiny: DesignConfig) -> None:
    images = images_for(tiny)
    with torch.no_grad():
        outs = [model(images, t) for t in tiny.model.task_names]
    for i in tiny.model.moe_block_set:
        gates = model.blocks[i].mlp.gate
        assert not torch.equal(gates[0].w_gate, gates[1].w_gate)
    first = min(tiny.model.moe_block_set)  # same input for every task (nothing task-specific before it)
    assert not torch.equal(outs[0].routing[first].logits, outs[1].routing[first].logits)
    assert not torch.equal(outs[0].routing[first].indices, outs[1].routing[first].indices)
    assert not torch.equal(outs[0].tokens, outs[1].tokens)


# ------------------------------------------------------------------------------------- balance loss
def official_vmoe_gate_loss(
    clean_logits: torch.Tensor, noisy_logits: torch.Tensor, top_k: int, noise_stddev: float, training: bool
) -> torch.Tensor:
    """A transcription of ``NoisyGate_VMoE.forward``'s loss (VITA-Group/M3ViT, models/gate_funs/
    noisy_gate_vmoe.py; no select_idx, no regularisers) for ``[tokens, N]`` logits."""
    tot_expert = clean_logits.shape[1]

    def cv_squared(x):
        eps = 1e-10
        if x.shape[0] == 1:
            return torch.Tensor([0])
        return x.float().var() / (x.float().mean() ** 2 + eps)

    def prob_in_top_k(clean_values, noisy_values, noise_stddev, noisy_top_values):
        batch = clean_values.size(0)
        m = noisy_top_values.size(1)
        top_values_flat = noisy_top_values.flatten()
        threshold_positions_if_in = torch.arange(batch) * m + top_k
        threshold_if_in = torch.unsqueeze(torch.gather(top_values_flat, 0, threshold_positions_if_in), 1)
        is_in = torch.gt(noisy_values, threshold_if_in)
        threshold_positions_if_out = threshold_positions_if_in - 1
        threshold_if_out = torch.unsqueeze(torch.gather(top_values_flat, 0, threshold_positions_if_out), 1)
        normal = torch.distributions.Normal(torch.tensor([0.0]), torch.tensor([1.0]))
        prob_if_in = normal.cdf((clean_values - threshold_if_in) / noise_stddev)
        prob_if_out = normal.cdf((clean_values - threshold_if_out) / noise_stddev)
        return torch.where(is_in, prob_if_in, prob_if_out)

    logits = torch.softmax(noisy_logits, 1)
    top_logits, top_indices = logits.topk(min(top_k + 1, tot_expert), dim=1)
    top_k_logits = top_logits[:, :top_k]
    top_k_indices = top_indices[:, :top_k]
    zeros = torch.zeros_like(logits, requires_grad=True)
    gates = zeros.scatter(1, top_k_indices, top_k_logits)
    if not training:
        return torch.tensor(0.0)
    if top_k < tot_expert and abs(noise_stddev) > 1e-6:
        load = prob_in_top_k(clean_logits, noisy_logits, noise_stddev, top_logits).sum(0)
    else:
        load = (gates > 0).sum(0)
    importance = gates.sum(0)
    return (cv_squared(importance) + cv_squared(load)).reshape(())


def _routing(clean: torch.Tensor, noisy: torch.Tensor, top_k: int, noise_std: float) -> Routing:
    indices, probs = top_k_route(noisy, top_k)
    return Routing(indices=indices, probs=probs, logits=noisy, clean_logits=clean, noise_std=noise_std)


@pytest.mark.parametrize("noise", [0.0, 1.0, 4.0])
@pytest.mark.parametrize(("n", "k"), [(2, 1), (4, 1), (4, 2), (8, 2), (16, 3), (16, 16)])
def test_balance_loss_is_the_official_noisy_gate_vmoe(n: int, k: int, noise: float) -> None:
    """Random logits (with the training noise std σ/N when σ > 0) against the transcribed official gate."""
    gen = torch.Generator().manual_seed(n * 100 + k)
    for tokens in (1, 7, 64):
        clean = torch.randn(tokens, n, generator=gen) * 2.0
        std = noise / n
        noisy = clean + torch.randn(tokens, n, generator=gen) * std
        want = official_vmoe_gate_loss(clean, noisy, k, std, training=True)
        got = balance_loss(_routing(clean, noisy, k, std), k)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_balance_loss_hand_computed() -> None:
    """N = 3, K = 1, no noise: importance sums the top-1 gates, load counts tokens; unbiased variance."""
    import statistics

    p = torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.5, 0.3], [0.6, 0.2, 0.2]], dtype=torch.float64)
    logits = p.log()
    idx, _ = top_k_route(logits, 1)
    assert idx.flatten().tolist() == [0, 1, 0]
    importance, load = [0.5 + 0.6, 0.5, 0.0], [2, 1, 0]
    expected = sum(statistics.variance(v) / (statistics.mean(v) ** 2 + 1e-10) for v in (importance, load))
    assert balance_loss(_routing(logits, logits, 1, 0.0), 1).item() == pytest.approx(expected, rel=1e-9)
    assert cv_squared(torch.tensor([2.0, 1.0, 0.0])).item() == pytest.approx(1.0)
    assert cv_squared(torch.zeros(4)).item() == 0.0
    assert cv_squared(torch.tensor([3.0])).item() == 0.0


def test_balance_loss_zero_when_uniform() -> None:
    # importance [p, p] and load [1, 1]
    logits = torch.tensor([[[0.7, -0.2], [-0.2, 0.7]]])
    assert balance_loss(_routing(logits, logits, 1, 0.0), 1).item() == pytest.approx(0.0, abs=1e-12)
    # K = N: every expert gets every token, uniform softmax
    logits = torch.zeros(2, 3, 4)
    assert balance_loss(_routing(logits, logits, 4, 0.0), 4).item() == pytest.approx(0.0, abs=1e-12)


def test_moe_layer_loss_in_training_and_eval(tiny: DesignConfig) -> None:
    """The layer's loss is the official gate's on its own clean and noisy logits in training, 0 in eval."""
    m = tiny.model
    layer = MoEMlp(m.dim, m.expert_hidden, m.num_experts, m.top_k, num_tasks=2, noise_std=1.0)
    x = torch.randn(2, m.num_tokens, m.dim, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(0)
    _, loss, r = layer.train()(x, 1)
    assert r.noise_std == 1.0 / m.num_experts and not torch.equal(r.logits, r.clean_logits)
    want = official_vmoe_gate_loss(r.clean_logits.reshape(-1, m.num_experts), r.logits.reshape(-1, m.num_experts),
                                   m.top_k, r.noise_std, training=True)
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6)
    _, loss, r = layer.eval()(x, 1)
    assert loss.item() == 0.0 and r.noise_std == 0.0 and torch.equal(r.logits, r.clean_logits)


def test_router_init_is_the_official_kaiming_uniform() -> None:
    """w_gate [in, N] ~ U(±1/√N): kaiming_uniform_(a=√5) reads the fan-in from dim 1 of the matrix."""
    torch.manual_seed(0)
    layer = MoEMlp(64, 32, 16, 2, num_tasks=1)
    w = layer.gate[0].w_gate
    bound = 1 / math.sqrt(16)
    assert w.abs().max().item() <= bound and w.abs().max().item() > 0.9 * bound
    assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)


def test_model_aux_loss_is_weighted_sum_over_layers(tiny: DesignConfig) -> None:
    model = init_trained_scale(M3ViT(tiny), seed=0).train()  # no router noise: deterministic
    out = model(images_for(tiny), "depth")
    total = sum(balance_loss(r, tiny.model.top_k) for r in out.routing.values())
    torch.testing.assert_close(out.aux_loss, BALANCE_LOSS_WEIGHT * total)
    assert out.aux_loss.item() > 0
    heavier = init_trained_scale(M3ViT(tiny, balance_loss_weight=1.0), seed=0).train()
    torch.testing.assert_close(heavier(images_for(tiny), "depth").aux_loss, total)
    with torch.no_grad():
        assert model.eval()(images_for(tiny), "depth").aux_loss.item() == 0.0  # as M³ViT: no loss in eval


def test_aux_loss_is_differentiable_through_importance(tiny: DesignConfig) -> None:
    model = build_reference(tiny).train()
    out = model(images_for(tiny), 0)
    out.aux_loss.backward()
    grad = model.blocks[1].mlp.gate[0].w_gate.grad
    assert grad is not None and grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------- noise
def test_router_noise_only_in_training(tiny: DesignConfig) -> None:
    m = tiny.model
    noisy = init_trained_scale(M3ViT(tiny, noise_std=1.0), seed=0)
    images = images_for(tiny, batch=4)
    first = min(m.moe_block_set)
    with torch.no_grad():
        clean = noisy.eval()(images, 0).routing[first].logits
        assert torch.equal(noisy(images, 0).routing[first].logits, clean)
        torch.manual_seed(1)
        a = noisy.train()(images, 0).routing[first].logits
        torch.manual_seed(2)
        b = noisy(images, 0).routing[first].logits
    assert not torch.equal(a, clean) and not torch.equal(a, b)
    assert 0.1 < (a - clean).std().item() < 0.15  # std = noise_std / N = 1/8
    quiet = init_trained_scale(M3ViT(tiny, noise_std=0.0), seed=0).train()
    with torch.no_grad():
        assert torch.equal(quiet(images, 0).routing[first].logits, clean)


# --------------------------------------------------------------------------------- task conditioning
def test_task_conditioned_equals_manual_concatenation(tiny_tc: DesignConfig) -> None:
    m = tiny_tc.model
    model = build_reference(tiny_tc, seed=2)
    images = images_for(tiny_tc)
    first = min(m.moe_block_set)
    captured: list[torch.Tensor] = []
    handle = model.blocks[first].norm2.register_forward_hook(lambda _m, _i, out: captured.append(out))
    logits = []
    with torch.no_grad():
        for task in range(len(m.tasks)):
            out = model(images, task)
            one_hot = nn.functional.one_hot(torch.tensor(task), len(m.tasks)).float()
            te = model.task_embed
            emb = te.fc2(nn.functional.gelu(te.fc1(one_hot)))  # [task_embed_dim]
            assert emb.shape == (m.task_embed_dim,)
            x = captured[-1]  # [B, T, dim]
            cat = torch.cat([x, emb.expand(*x.shape[:2], -1)], dim=-1)
            want = cat @ model.blocks[first].mlp.gate.w_gate
            torch.testing.assert_close(out.routing[first].logits, want, rtol=1e-5, atol=1e-6)
            logits.append(out.routing[first].logits)
    handle.remove()
    assert not torch.equal(logits[0], logits[1])


def test_task_conditioned_layer_requires_embedding() -> None:
    moe = MoEMlp(8, 8, 4, 2, num_tasks=2, gate="task_conditioned", task_embed_dim=3)
    with pytest.raises(ValueError, match="task embedding"):
        moe(torch.randn(1, 2, 8), 0)
    with pytest.raises(ValueError, match="gate"):
        MoEMlp(8, 8, 4, 2, num_tasks=2, gate="per_task")


# --------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "bad",
    [
        torch.zeros(2, 3, 32, 16),
        torch.zeros(2, 1, 32, 32),
        torch.zeros(3, 32, 32),
        torch.zeros(0, 3, 32, 32),
        torch.zeros(2, 3, 32, 32, dtype=torch.int64),
        torch.zeros(2, 3, 32, 32, dtype=torch.float64),
        np.zeros((2, 3, 32, 32), dtype=np.float32),
    ],
    ids=["width", "channels", "rank", "empty", "int", "float64", "numpy"],
)
def test_bad_images_raise(model: M3ViT, bad: object) -> None:
    with pytest.raises(ValueError) as err:
        model(bad, "semseg")
    msg = str(err.value)
    assert "\n" not in msg
    assert "[B, 3, 32, 32]" in msg and "torch.float32" in msg


@pytest.mark.parametrize("task", ["segm", 2, -1, True, 1.0])
def test_unknown_task_raises(model: M3ViT, tiny: DesignConfig, task: object) -> None:
    images = images_for(tiny)
    with pytest.raises(ValueError, match="semseg") as err:
        model(images, task)
    assert "depth" in str(err.value)
    with pytest.raises(ValueError, match="semseg"):
        model.backbone(images, task)


def test_head_rejects_bad_tokens(model: M3ViT) -> None:
    with pytest.raises(ValueError, match=r"\[B, 17, 64\]"):
        model.head(torch.zeros(1, 16, 64), "semseg")


# ---------------------------------------------------------------------------------------- initialisation
def test_init_is_deterministic_and_trained_scale(tiny: DesignConfig) -> None:
    a = build_reference(tiny, seed=7).state_dict()
    b = build_reference(tiny, seed=7).state_dict()
    c = build_reference(tiny, seed=8).state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["blocks.0.attn.qkv.weight"], c["blocks.0.attn.qkv.weight"])

    lim = 4 * 0.035 + 1e-7
    qkv = a["blocks.0.attn.qkv.weight"]
    assert qkv.abs().max() <= lim and qkv.std().item() == pytest.approx(0.035, rel=0.1)
    experts = a["blocks.1.mlp.experts.htoh4.weight"]
    assert experts.abs().max() <= lim and experts.std().item() == pytest.approx(0.035, rel=0.1)
    assert a["blocks.1.mlp.gate.0.w_gate"].abs().max() <= lim
    assert a["blocks.0.mlp.fc1.bias"].std().item() == pytest.approx(0.02, rel=0.25)
    ln = torch.cat([a[f"blocks.{i}.norm1.weight"] for i in range(4)])
    assert ln.mean().item() == pytest.approx(1.0, abs=0.03) and ln.std().item() == pytest.approx(0.1, rel=0.2)
    assert a["pos_embed"].std().item() == pytest.approx(0.02, rel=0.2)
    assert not torch.equal(a["blocks.1.mlp.gate.0.w_gate"], a["blocks.1.mlp.gate.1.w_gate"])


def test_build_reference_is_eval_and_dtype_independent(tiny: DesignConfig, tiny_tc: DesignConfig) -> None:
    model = build_reference(tiny_tc, seed=3)
    assert not model.training and not any(mod.training for mod in model.modules())
    assert model.task_embed is not None
    assert model.task_embed.fc1.weight.std().item() == pytest.approx(0.1, rel=0.5)
    f32 = build_reference(tiny, seed=3)
    f64 = init_trained_scale(M3ViT(tiny).double(), seed=3)
    for (name, p32), p64 in zip(f32.named_parameters(), f64.parameters(), strict=True):
        assert torch.equal(p32, p64.float()), name
