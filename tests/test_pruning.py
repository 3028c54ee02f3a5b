"""The pruned router (docs/numerics.md §10) in the golden model, the float model and the scalar spec oracle.

* golden ``pruned_gates`` == the scalar transcription (tests/spec_oracle.py) bit for bit on random logits;
* golden == the PyTorch ``pruned_top_k_route`` on the same logits: same experts in the same order, gates
  within the spec's 2^-Fz of the float softmax;
* every expert kept == the unpruned router, bit for bit, on whole images;
* one kept expert with K = 1 == a dense MLP of that expert;
* bad expert maps → one-line errors naming the task, block or expert.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from m3vit.codegen.config import DesignConfig
from m3vit.sim.fixedpoint import SaturationLog
from m3vit.sim.golden import GoldenModel
from m3vit.sim.inputs import random_image
from m3vit.sim.pruning import KeptExperts, expert_map, kept_experts
from m3vit.sim.reference import pruned_top_k_route, top_k_route
from tests.conftest import micro_config, quantized, reference
from tests.spec_oracle import SpecOracle

KEEP_SETS = [  # (N = 8 experts) kept experts, top-K
    ((0, 1, 2, 3, 4, 5, 6, 7), 2),
    ((1, 4, 6), 2),
    ((2, 5), 2),  # M = K
    ((3,), 1),  # single expert, dense
    ((0, 2, 3, 7), 1),
]


def _random_logits(rng: np.random.Generator, cfg: DesignConfig, tokens: int) -> np.ndarray:
    """Integer logits [T, N] spanning ±4.0 in the logit format, with deliberate ties in some rows."""
    n = cfg.model.num_experts
    one = 1 << cfg.numerics.logit.frac
    logits = rng.integers(-4 * one, 4 * one, size=(tokens, n), dtype=np.int64)
    logits[: tokens // 4] = rng.integers(-2, 3, size=(tokens // 4, n)) * (one // 2)  # few distinct values: ties
    return logits


@pytest.fixture(scope="module")
def micro8() -> DesignConfig:
    return micro_config(num_experts=8, top_k=2)


@pytest.mark.parametrize(("experts", "top_k"), KEEP_SETS)
def test_pruned_router_matches_spec_oracle(micro8: DesignConfig, experts: tuple[int, ...], top_k: int) -> None:
    golden = GoldenModel(micro8, quantized(micro8))
    oracle = SpecOracle(micro8, quantized(micro8))
    logits = _random_logits(np.random.default_rng(sum(experts) + top_k), micro8, 64)
    sel, gates = golden.pruned_gates(logits, KeptExperts(experts, top_k))
    assert sel.shape == gates.shape == (64, top_k)
    for t in range(64):
        want_sel, want_gates = oracle.pruned_gates([int(v) for v in logits[t]], list(experts), top_k)
        assert sel[t].tolist() == want_sel
        assert gates[t].tolist() == want_gates


@pytest.mark.parametrize(("experts", "top_k"), KEEP_SETS)
def test_pruned_router_matches_torch(micro8: DesignConfig, experts: tuple[int, ...], top_k: int) -> None:
    golden = GoldenModel(micro8, quantized(micro8))
    logits = _random_logits(np.random.default_rng(100 + top_k), micro8, 256)
    kept = KeptExperts(experts, top_k)
    sel, gates = golden.pruned_gates(logits, kept)
    lsb = micro8.numerics.logit.lsb
    idx, probs = pruned_top_k_route(torch.from_numpy(logits * lsb), kept)
    np.testing.assert_array_equal(sel, idx.numpy())  # same experts, same order, ties → lower index
    assert set(np.unique(sel)) <= set(experts)
    err = np.abs(gates * 2.0**-15 - probs.numpy())
    assert err.max() <= 2.0 ** -micro8.numerics.exp_frac_bits
    # the float softmax runs over the kept experts only: the full-softmax probabilities differ when any is pruned
    _, full = top_k_route(torch.from_numpy(logits * lsb), top_k)
    if len(experts) < micro8.model.num_experts:
        assert not torch.allclose(full, probs, atol=2.0 ** -micro8.numerics.exp_frac_bits)


def test_all_kept_is_bit_identical_to_unpruned(tiny: DesignConfig) -> None:
    q = quantized(tiny, seed=3)
    everything = tuple(range(tiny.model.num_experts))
    full = {(t, b): KeptExperts(everything, tiny.model.top_k)
            for t in range(len(tiny.model.tasks)) for b in tiny.model.moe_block_set}
    plain, pruned = GoldenModel(tiny, q), GoldenModel(tiny, q, experts=full)
    logits = _random_logits(np.random.default_rng(5), tiny, 200)
    sel, gates = pruned.pruned_gates(logits, KeptExperts(everything, tiny.model.top_k))
    for task in tiny.model.task_names:
        image = plain.quantize_image(random_image(tiny, seed=11))
        a, b = plain.run(image, task), pruned.run(image, task)
        np.testing.assert_array_equal(a.tokens, b.tokens)
        for blk in a.routing:
            np.testing.assert_array_equal(a.routing[blk].experts, b.routing[blk].experts)
            np.testing.assert_array_equal(a.routing[blk].gates, b.routing[blk].gates)
        assert a.saturation == b.saturation
    # and on random logits: the unpruned route's softmax/top-K equal pruned_gates with all kept
    log = SaturationLog()
    ex = q.blocks[min(tiny.model.moe_block_set)].experts

    shift = tiny.numerics.norm.frac + tiny.numerics.weight.frac - tiny.numerics.logit.frac
    for t in range(0, logits.shape[0], 4):  # one token at a time: zero weights, its logits as router bias
        bias = np.broadcast_to(logits[t] << shift, ex.router_b.shape).copy()
        r = plain.route(np.zeros((1, tiny.model.dim), np.int64),
                        dataclasses.replace(ex, router_w=ex.router_w * 0, router_b=bias), 0, log)
        assert r.logits[0].tolist() == logits[t].tolist()
        assert r.experts[0].tolist() == sel[t].tolist() and r.gates[0].tolist() == gates[t].tolist()


def test_single_expert_is_a_dense_mlp(tiny: DesignConfig) -> None:
    q = quantized(tiny, seed=4)
    blk = min(tiny.model.moe_block_set)
    golden = GoldenModel(tiny, q, experts={(0, blk): KeptExperts((5,), 1)})
    image = golden.quantize_image(random_image(tiny, seed=2))
    res = golden.run(image, 0)
    routing = res.routing[blk]
    assert (routing.experts == 5).all() and (routing.gates == 2**15).all()
    log = SaturationLog()
    dense = golden.expert_ffn(res.taps[f"block{blk}.norm2"], q.blocks[blk].experts, 5, log)
    np.testing.assert_array_equal(res.taps[f"block{blk}.mlp"], dense)


def test_torch_pruned_model(tiny: DesignConfig) -> None:
    ref = reference(tiny, seed=0)
    images = torch.randn(2, 3, *tiny.model.image_size, generator=torch.Generator().manual_seed(0))
    b0, b1 = sorted(tiny.model.moe_block_set)
    full = {(0, b): KeptExperts(tuple(range(tiny.model.num_experts)), tiny.model.top_k) for b in (b0, b1)}
    try:
        want = ref(images, 0)
        got = ref.prune_experts(full)(images, 0)
        torch.testing.assert_close(got.tokens, want.tokens, rtol=0, atol=0)
        ref.prune_experts({(0, b0): KeptExperts((1, 6), 2), (0, b1): KeptExperts((4,), 1)})
        out = ref(images, 0)
        assert set(out.routing[b0].indices.unique().tolist()) <= {1, 6}
        assert out.routing[b1].indices.shape[-1] == 1 and (out.routing[b1].indices == 4).all()
        assert torch.allclose(out.routing[b1].probs, torch.ones(()))  # softmax over one expert
        torch.testing.assert_close(ref(images, 1).tokens, ref.prune_experts(None)(images, 1).tokens, rtol=0, atol=0)
    finally:
        ref.prune_experts(None)


@pytest.mark.parametrize(("task", "block", "experts", "top_k", "message"), [
    ("semseg", 1, [3], None, "task semseg block 1: keeps 1 expert(s) [3], fewer than top_k = 2"),
    ("semseg", 0, [1, 2], None, "task semseg: block 0 is not an MoE layer; MoE blocks are [1, 3]"),
    ("depth", 3, [1, 8], None, "task depth block 3: expert 8 out of range [0, 7]"),
    ("normals", 1, [1, 2], None, "unknown task 'normals'"),
    ("depth", 1, [1, 2], 3, "task depth block 1: top_k 3 must be in [1, 2]"),
    ("depth", 1, [2, 2], None, "repeat an expert"),
])
def test_bad_expert_maps(tiny: DesignConfig, task, block, experts, top_k, message: str) -> None:
    with pytest.raises(ValueError, match=None) as err:
        kept_experts(tiny, task, block, experts, top_k)
    assert message in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError):
        expert_map(tiny, {task: {block: (experts, top_k)}})
