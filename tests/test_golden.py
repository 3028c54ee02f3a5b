"""The numpy golden model against independent references.

* the scalar Python-integer transcription of docs/numerics.md (tests/spec_oracle.py): bit for bit;
* the PyTorch float reference on the same weights: cosine similarity of the final tokens;
* a second MoE schedule (token by token): bit for bit.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from m3vit.codegen.config import DesignConfig, load_config, with_overrides
from m3vit.sim.fixedpoint import SaturationLog
from m3vit.sim.golden import GoldenModel
from m3vit.sim.inputs import random_image
from m3vit.sim.quantize import QuantizedModel
from tests.conftest import micro_config, quantized, reference
from tests.spec_oracle import SpecOracle

REDUCED = {
    "tiny": {},
    "vit_tiny_cityscapes": {"model.image_size": [64, 128]},
    "m3vit_small_pascal": {"model.image_size": [64, 64]},
    "m3vit_small_nyud": {"model.image_size": [48, 64]},
    "m3vit_small_pascal_dse": {"model.image_size": [64, 64]},  # 8-bit activations into the MAC array
    "m3vit_small_nyud_dse": {"model.image_size": [48, 64]},
}


def _sum_by_class(sat: dict[str, dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for layer in sat.values():
        for cls, n in layer.items():
            if cls != "score":
                out[cls] = out.get(cls, 0) + n
    return out


def _check_against_oracle(cfg: DesignConfig, q: QuantizedModel, image_int: np.ndarray, task: int) -> None:
    res = GoldenModel(cfg, q).run(image_int, task)
    oracle = SpecOracle(cfg, q)
    tokens, taps = oracle.run(image_int, task)
    for name, want in taps.items():
        assert res.taps[name].tolist() == want, name
    assert res.tokens.tolist() == tokens
    assert _sum_by_class(res.saturation) == oracle.counts


# ------------------------------------------------------------------------------------- bit exactness
@pytest.mark.parametrize("gate", ["multi_gate", "task_conditioned"])
@pytest.mark.parametrize("task", [0, 1])
def test_golden_equals_spec_oracle(gate: str, task: int) -> None:
    cfg = micro_config(gate=gate)
    q = quantized(cfg, seed=3)
    g = GoldenModel(cfg, q)
    for seed, scale in ((1, 1.0), (2, 2.5)):
        _check_against_oracle(cfg, q, g.quantize_image(random_image(cfg, seed, scale)), task)


def test_golden_equals_oracle_when_everything_saturates() -> None:
    """Huge inputs and weights: every class saturates, nothing wraps, counts agree with the oracle."""
    cfg = micro_config()
    q = quantized(cfg, seed=4)
    blocks = [dataclasses.replace(b, proj=dataclasses.replace(b.proj, b=b.proj.b * 5000)) for b in q.blocks]
    loud = dataclasses.replace(q, blocks=blocks)
    g = GoldenModel(cfg, loud)
    image = g.quantize_image(random_image(cfg, 5, scale=40.0)) * 3  # beyond the input format: run() saturates
    res = g.run(image, 0)
    assert res.saturation["embed"]["input"] > 0
    assert any("act" in layer for layer in res.saturation.values())
    act = cfg.numerics.act
    assert res.tokens.min() >= act.qmin and res.tokens.max() <= act.qmax
    _check_against_oracle(cfg, loud, image, 0)


@pytest.mark.parametrize("key_block", [1, 3, 7, 64])
def test_attention_key_block_sizes(key_block: int) -> None:
    """Streaming softmax for blocks of 1 key, uneven blocks, and one block holding every key."""
    cfg = with_overrides(micro_config(), **{"hardware.attn_key_block": key_block})
    q = quantized(cfg, seed=6)
    _check_against_oracle(cfg, q, GoldenModel(cfg, q).quantize_image(random_image(cfg, 7)), 1)


# ------------------------------------------------------------------------------------- vs float
@pytest.mark.parametrize("name", list(REDUCED))
def test_golden_tracks_pytorch_float(name: str) -> None:
    cfg = load_config(name, **REDUCED[name])
    ref, q = reference(cfg), quantized(cfg)
    g = GoldenModel(cfg, q)
    image = random_image(cfg, seed=11)
    for task in cfg.model.task_names:
        with torch.no_grad():
            want = ref.backbone(torch.from_numpy(image[None]).float(), task)[0].double().numpy()
        got = g.run(g.quantize_image(image), task, taps=False).tokens * cfg.numerics.act.lsb
        cos = float((got * want).sum() / np.linalg.norm(got) / np.linalg.norm(want))
        assert cos >= 0.99, f"{name}/{task}: cosine {cos:.4f}"


# ------------------------------------------------------------------------------------- MoE schedules
@pytest.mark.parametrize("name", ["tiny", "vit_tiny_cityscapes"])
def test_expert_order_equals_token_order(name: str) -> None:
    cfg = load_config(name, **REDUCED[name])
    q = quantized(cfg)
    g = GoldenModel(cfg, q)
    for task in range(len(cfg.model.tasks)):
        res = g.run(g.quantize_image(random_image(cfg, 13)), task)
        assert res.routing, "config has no MoE block"
        for i, routing in res.routing.items():
            x = res.taps[f"block{i}.norm2"]
            ex = q.blocks[i].experts
            token_order = g.moe_token_by_token(x, ex, routing, SaturationLog())
            assert np.array_equal(token_order, res.taps[f"block{i}.mlp"])
            assert np.array_equal(g.moe_expert_by_expert(x, ex, routing, SaturationLog()), token_order)


def _with_router(q: QuantizedModel, weight: float | None, bias: np.ndarray) -> QuantizedModel:
    """A copy of q whose routers all have the given weight scale (0 → logits = bias) and bias."""
    blocks = []
    for b in q.blocks:
        if b.experts is not None:
            w = b.experts.router_w * 0 if weight == 0 else b.experts.router_w
            router_b = np.broadcast_to(bias, b.experts.router_b.shape).copy()
            ex = dataclasses.replace(b.experts, router_w=w, router_b=router_b)
            b = dataclasses.replace(b, experts=ex)
        blocks.append(b)
    return dataclasses.replace(q, blocks=blocks)


def test_every_token_to_one_expert() -> None:
    cfg = micro_config(top_k=1)
    n = cfg.model.num_experts
    bias = np.zeros(n, np.int64)
    bias[2] = 1 << 30  # expert 2's logit saturates high; every other expert is empty
    q = _with_router(quantized(cfg, seed=8), 0, bias)
    g = GoldenModel(cfg, q)
    image = g.quantize_image(random_image(cfg, 9))
    res = g.run(image, 0)
    for routing in res.routing.values():
        assert routing.load.tolist() == [0, 0, cfg.model.num_tokens, 0]
        assert (routing.gates == 2**15).all()  # softmax of one dominant expert is exactly 1.0
    _check_against_oracle(cfg, q, image, 0)


def test_tied_logits_lower_index_wins() -> None:
    cfg = micro_config()  # N = 4, K = 2
    q = _with_router(quantized(cfg, seed=10), 0, np.zeros(4, np.int64))
    g = GoldenModel(cfg, q)
    image = g.quantize_image(random_image(cfg, 11))
    res = g.run(image, 1)
    for routing in res.routing.values():
        assert (routing.experts == [0, 1]).all()
        assert (routing.gates == 2**15 // 4).all()  # uniform softmax over all N, not renormalised over K
        assert routing.load.tolist() == [cfg.model.num_tokens] * 2 + [0, 0]
    _check_against_oracle(cfg, q, image, 1)
    # a partial tie at the top: experts 3 and 1 share the largest logit → 1 then 3
    q2 = _with_router(quantized(cfg, seed=10), 0, np.array([0, 5 << 20, -(1 << 20), 5 << 20]))
    res2 = GoldenModel(cfg, q2).run(image, 0)
    for routing in res2.routing.values():
        assert (routing.experts == [1, 3]).all()
        assert routing.gates[0, 0] == routing.gates[0, 1]


def test_tasks_route_differently() -> None:
    cfg = load_config("tiny")
    q = quantized(cfg)
    g = GoldenModel(cfg, q)
    image = g.quantize_image(random_image(cfg, 12))
    a, b = g.run(image, "semseg"), g.run(image, "depth")
    assert np.array_equal(a.taps["block1.norm2"], b.taps["block1.norm2"])  # same input to the first MoE layer
    assert not np.array_equal(a.routing[1].experts, b.routing[1].experts)
    assert not np.array_equal(a.tokens, b.tokens)


def test_routing_queues_are_consistent() -> None:
    cfg = load_config("tiny")
    g = GoldenModel(cfg, quantized(cfg))
    res = g.run(g.quantize_image(random_image(cfg, 14)), 0)
    for routing in res.routing.values():
        queued = sum(routing.queue(e)[0].size for e in range(cfg.model.num_experts))
        assert queued == cfg.model.num_tokens * cfg.model.top_k == routing.load.sum()
        for e in range(cfg.model.num_experts):
            tok, gates = routing.queue(e)
            assert np.all(np.diff(tok) > 0)  # ascending token order, no duplicates
            assert np.all((gates >= 0) & (gates <= 2**15))
        assert np.all(routing.gates.sum(axis=1) <= 2**15 + cfg.model.top_k)  # not renormalised


# ------------------------------------------------------------------------------------- bad input
def test_bad_inputs_are_refused(tiny: DesignConfig) -> None:
    g = GoldenModel(tiny, quantized(tiny))
    good = g.quantize_image(random_image(tiny))
    with pytest.raises(ValueError, match=r"expected \[C, H, W\] = \[3, 32, 32\]"):
        g.run(good[:, :16], 0)
    with pytest.raises(TypeError, match="quantize_image"):
        g.run(good.astype(np.float32), 0)
    with pytest.raises(ValueError, match=r"unknown task 'sky'; tasks are \['semseg', 'depth'\]"):
        g.run(good, "sky")
    with pytest.raises(TypeError, match="float image"):
        g.quantize_image(good)
    with pytest.raises(ValueError, match="expected"):
        g.quantize_image(np.zeros((32, 32, 3)))


@pytest.mark.parametrize("seed", range(4))
def test_attention_kernel_equals_oracle_on_wide_inputs(seed: int) -> None:
    """The streaming softmax alone, on 40 tokens whose running max rises block after block."""
    cfg = with_overrides(micro_config(), **{"hardware.attn_key_block": 3, "model.image_size": [4, 4 * 39]})
    rng = np.random.default_rng(seed)
    t, d = cfg.model.num_tokens, cfg.model.dim
    qkv = rng.integers(-(2**13), 2**13, (t, 3 * d))
    qkv[:, d : 2 * d] = qkv[:, d : 2 * d] * np.linspace(0.05, 1.0, t)[:, None]  # later keys score higher
    got = GoldenModel(cfg, quantized(micro_config())).attention(qkv, SaturationLog())
    oracle = SpecOracle(cfg, None)
    assert got.tolist() == oracle.attention(qkv.tolist())
