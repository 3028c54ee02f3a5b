"""Expert routing statistics, pruning plans, the sweep and recovery fine-tuning (m3vit.train.experts)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from m3vit.cli import main as cli_main
from m3vit.codegen.config import DesignConfig, load_config
from m3vit.codegen.perf.arch import container_bytes, expert_bytes
from m3vit.sim.golden import GoldenModel
from m3vit.sim.quantize import quantize_state_dict
from m3vit.sim.reference import balance_loss, top_k_route
from m3vit.train.checkpoint import load_model
from m3vit.train.data import build_dataset, get_batch
from m3vit.train.experts import (
    SOURCES,
    LayerPlan,
    ProgressivePruner,
    PrunePlan,
    RoutingStats,
    evaluate_plan,
    layer_experts,
    load_plan,
    make_plan,
    plot_heatmap,
    routing_stats,
    save_plan,
    stored_weight_bytes,
)
from m3vit.train.train import TrainOptions, train
from tests.conftest import REPO_ROOT

CHECKPOINT = REPO_ROOT / "models" / "tiny.safetensors"


@pytest.fixture(scope="module")
def shipped() -> torch.nn.Module:
    return load_model(CHECKPOINT)


@pytest.fixture(scope="module")
def val(shipped) -> torch.utils.data.Dataset:
    return build_dataset(shipped.cfg, "synthetic", "val", size=8, seed=0)


@pytest.fixture(scope="module")
def stats(shipped, val) -> RoutingStats:
    return routing_stats(shipped, val, limit=6, batch_size=4)


# ------------------------------------------------------------------------------------------ statistics
def test_stats_count_every_selection(shipped, val, stats: RoutingStats) -> None:
    cfg = shipped.cfg
    m = cfg.model
    assert stats.tokens == 6 * m.num_tokens
    assert (stats.count.sum(-1) == stats.tokens * m.top_k).all()  # every token picks K experts in every layer
    assert (stats.mass <= stats.count + 1e-9).all() and (stats.mass.sum(-1) <= stats.tokens + 1e-6).all()
    # the golden counts, recomputed image by image from GoldenModel.run's routing loads
    golden = GoldenModel(cfg, quantize_state_dict(cfg, shipped.state_dict()))
    images = get_batch(val, range(6))["image"].double().numpy()
    for ti, task in enumerate(m.task_names):
        loads = [golden.run(golden.quantize_image(x), task, taps=False).routing for x in images]
        for li, b in enumerate(stats.blocks):
            np.testing.assert_array_equal(stats.count[1, ti, li], sum(r[b].load for r in loads))
            mass = sum(np.bincount(r[b].experts.ravel(), r[b].gates.ravel(), m.num_experts) for r in loads)
            np.testing.assert_allclose(stats.mass[1, ti, li], mass * 2.0**-15)
    # the float counts from the float router on the same images
    with torch.no_grad():
        routing = shipped(get_batch(val, range(6))["image"], 1).routing
    for li, b in enumerate(stats.blocks):
        np.testing.assert_array_equal(stats.count[0, 1, li], np.bincount(routing[b].indices.ravel(), minlength=8))
    assert stats.agrees(), (stats.agreement, stats.share_difference)


def test_stats_json_and_heatmap(stats: RoutingStats, tmp_path: Path) -> None:
    back = RoutingStats.from_json(json.loads(json.dumps(stats.to_json())))
    np.testing.assert_array_equal(back.count, stats.count)
    np.testing.assert_allclose(back.mass, stats.mass, atol=1e-6)
    np.testing.assert_allclose(back.agreement, stats.agreement)
    png = plot_heatmap(stats, tmp_path / "h.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pruned_experts_are_never_selected(shipped, val) -> None:
    plan = PrunePlan(name="p", tasks={"semseg": {1: LayerPlan(experts=[0, 4, 6])},
                                      "depth": {3: LayerPlan(experts=[2], top_k=1)}})
    shipped.prune_experts(plan.expert_map(shipped.cfg))
    try:
        st = routing_stats(shipped, val, limit=2)
    finally:
        shipped.prune_experts(None)
    for s in range(len(SOURCES)):
        assert set(np.flatnonzero(st.count[s, 0, 0])) <= {0, 4, 6}
        assert st.count[s, 1, 1].tolist() == [0, 0, st.tokens, 0, 0, 0, 0, 0]  # K = 1, one expert
        assert np.allclose(st.mass[s, 1, 1, 2], st.tokens)  # its gate is exactly 1


# ------------------------------------------------------------------------------------------ plans
def test_plan_rules() -> None:
    count = np.array([10, 40, 0, 25, 25, 5, 0, 15])
    mass = np.array([4.0, 20.0, 0.0, 10.0, 10.0, 1.0, 0.0, 5.0])  # total 50
    assert layer_experts(count, mass, "mass:1.0", 2) == ([0, 1, 3, 4, 5, 7], 2)  # every expert with mass
    assert layer_experts(count, mass, "mass:0.8", 2) == ([1, 3, 4], 2)  # 20 + 10 + 10 = 40 = 0.8 · 50
    assert layer_experts(count, mass, "mass:0.1", 2) == ([1, 3], 2)  # at least K
    assert layer_experts(count, mass, "top:3", 2) == ([1, 3, 4], 2)  # ties (25, 25) → lower index first
    assert layer_experts(count, mass, "top:4", 2) == ([1, 3, 4, 7], 2)
    assert layer_experts(count, mass, "mk", 2) == ([1, 3], 2)
    assert layer_experts(count, mass, "single", 2) == ([1], 1)
    for rule, msg in [("top:1", "M = 1 must be in [K = 2, N = 8]"), ("mass:0", "share must be in (0, 1]"),
                      ("keep", "unknown plan rule 'keep'")]:
        with pytest.raises(ValueError, match=None) as err:
            layer_experts(count, mass, rule, 2)
        assert msg in str(err.value)


def test_make_plan_and_files(stats: RoutingStats, shipped, tmp_path: Path) -> None:
    cfg = shipped.cfg
    for rule in ("mass:0.9", "mk", "single"):
        plan = make_plan(stats, rule)
        emap = plan.expert_map(cfg)
        assert set(emap) == {(t, b) for t in range(2) for b in stats.blocks}
        for path in (tmp_path / "p.yaml", tmp_path / "p.json"):
            assert load_plan(save_plan(plan, path)) == plan
    single = make_plan(stats, "single").expert_map(cfg)
    assert all(len(k.experts) == 1 and k.top_k == 1 for k in single.values())
    assert all(len(k.experts) == k.top_k == 2 for k in make_plan(stats, "mk").expert_map(cfg).values())


@pytest.mark.parametrize(("text", "message"), [
    ("name: p\ntasks: {semseg: {1: {experts: [3]}}}", "task semseg block 1: keeps 1 expert(s) [3], fewer than top_k"),
    ("name: p\ntasks: {semseg: {0: {experts: [1, 2]}}}", "block 0 is not an MoE layer"),
    ("name: p\ntasks: {depth: {3: {experts: [1, 9]}}}", "task depth block 3: expert 9 out of range [0, 7]"),
    ("name: p\ntasks: {normals: {1: {experts: [1, 2]}}}", "unknown task 'normals'"),
    ("name: p\nconfig: m3vit_small_nyud\ntasks: {}", "made for config 'm3vit_small_nyud', not 'tiny'"),
    ("name: p\ntasks: {depth: {1: {experts: [1, 2], keep: 3}}}", "tasks.depth.1.keep: Extra inputs"),
    ("name: p\ntasks: {depth: {x: {experts: [1, 2]}}}", "tasks.depth.x.[key]"),
    ("tasks: [", "not YAML/JSON"),
])
def test_bad_plans(tmp_path: Path, shipped, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=None) as err:
        load_plan(path).expert_map(shipped.cfg)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_cli_errors_are_one_line(tmp_path: Path, capsys, stats: RoutingStats) -> None:
    (tmp_path / "s.json").write_text(json.dumps(stats.to_json()))
    assert cli_main(["experts", "plan", str(tmp_path / "s.json"), "top:9", "-o", str(tmp_path / "p.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("m3vit: error: rule 'top:9': M = 9 must be in [K = 2, N = 8]") and "\n" not in err
    (tmp_path / "bad.yaml").write_text("name: p\ntasks: {semseg: {2: {experts: [1, 2]}}}")
    assert cli_main(["train", "tiny", "--prune-plan", str(tmp_path / "bad.yaml"), "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("m3vit: error: plan 'p': task semseg: block 2 is not an MoE layer") and "\n" not in err
    assert cli_main(["experts", "plan", str(tmp_path / "s.json"), "mk", "-o", str(tmp_path / "p.yaml")]) == 0
    assert load_plan(tmp_path / "p.yaml").name == "mk"


# ------------------------------------------------------------------------------------------ bytes and sweep
def test_stored_weight_bytes_counts_every_tensor(tiny: DesignConfig) -> None:
    """Against the quantised model's own tensors: each weight/bias/LN/position entry at its container size."""
    from tests.conftest import quantized

    q = quantized(tiny)
    n = tiny.numerics
    wb, bb = container_bytes(n.weight.bits), container_bytes(n.bias_bits)
    lb, ab = container_bytes(n.ln_param.bits), container_bytes(n.act.bits)
    total = q.patch.w.size * wb + q.patch.b.size * bb + q.pos.size * ab
    experts = 0
    for blk in q.blocks:
        total += sum(v.size for v in (blk.norm1.gamma, blk.norm1.beta, blk.norm2.gamma, blk.norm2.beta)) * lb
        total += (blk.qkv.w.size + blk.proj.w.size) * wb + (blk.qkv.b.size + blk.proj.b.size) * bb
        if blk.experts is None:
            total += (blk.fc1.w.size + blk.fc2.w.size) * wb + (blk.fc1.b.size + blk.fc2.b.size) * bb
        else:
            ex = blk.experts
            total += ex.router_w[0].size * wb + ex.router_b[0].size * bb  # one task's router
            experts += (ex.w1.size + ex.w2.size) * wb + (ex.b1.size + ex.b2.size) * bb
    assert stored_weight_bytes(tiny) == {"total": total + experts, "experts": experts}
    kept = stored_weight_bytes(tiny, {1: 3, 3: 1})
    assert kept["experts"] == 4 * expert_bytes(tiny) and kept["total"] == total + kept["experts"]


def test_evaluate_plan(shipped, val) -> None:
    cfg = shipped.cfg
    full = evaluate_plan(shipped, None, "depth", val, limit=3)
    plan = PrunePlan(name="one", tasks={"depth": {b: LayerPlan(experts=[b], top_k=1) for b in (1, 3)},
                                        "semseg": {1: LayerPlan(experts=[0, 1])}})
    one = evaluate_plan(shipped, plan, "depth", val, limit=3)
    assert full["plan"] == "full" and one["plan"] == "one" and full["images"] == one["images"] == 3
    assert full["experts_kept"] == {"1": 8, "3": 8} and one["experts_kept"] == {"1": 1, "3": 1}
    assert one["expert_bytes_fetched_per_image"] == 2 * expert_bytes(cfg)  # one expert per layer, each once
    assert full["expert_bytes_fetched_per_image"] > 4 * expert_bytes(cfg)
    assert one["weight_bytes_stored"] == full["weight_bytes_stored"] - 14 * expert_bytes(cfg)
    assert one["latency_ms"] < full["latency_ms"]
    assert shipped.expert_map == {}  # the model is left unpruned
    assert one["metric"] == "rmse" and one["float"] != full["float"]


# ------------------------------------------------------------------------------------------ fine-tuning
def test_progressive_pruner_drops_least_used_first(shipped) -> None:
    cfg = shipped.cfg
    target = PrunePlan(name="t", tasks={"depth": {1: LayerPlan(experts=[0, 5])}}).expert_map(cfg)
    pruner = ProgressivePruner(shipped, target, steps=100, stages=3, until=0.6)
    try:
        assert pruner.drop_at == [20, 40, 60]
        assert pruner.current()[(1, 1)].experts == tuple(range(8))
        usage = torch.tensor([9.0, 1.0, 7.0, 3.0, 6.0, 0.0, 2.0, 8.0])  # experts 1, 6 least used among 1,2,3,4,6,7
        logits = torch.log(usage + 1).expand(1, 4, 8)
        indices = torch.arange(8).reshape(1, 4, 2)  # every expert once
        from m3vit.sim.reference import Routing

        pruner.usage[(1, 1)] += usage
        assert not pruner.step(19)
        assert pruner.step(20)  # stage 1: drop round(6/3) = 2 of the 6
        assert pruner.kept[(1, 1)] == [0, 2, 3, 4, 5, 7]
        assert shipped.blocks[1].mlp.kept[1].experts == (0, 2, 3, 4, 5, 7)
        pruner.finish()
        assert pruner.kept[(1, 1)] == [0, 5] and shipped.blocks[1].mlp.kept[1].top_k == 2
        # adapted balance loss == the ordinary balance loss of the kept experts' logits
        r = Routing(indices=indices, probs=torch.ones(1, 4, 2), logits=logits)
        kept_logits = logits[..., [0, 5]]
        want = balance_loss(Routing(indices=top_k_route(kept_logits, 2)[0], probs=torch.ones(1, 4, 2),
                                    logits=kept_logits), 2)
        kept_r = Routing(indices=torch.tensor([[[0, 5]] * 4]), probs=torch.ones(1, 4, 2), logits=logits)
        torch.testing.assert_close(pruner.aux(1, {1: kept_r}), want.float())
        torch.testing.assert_close(pruner.aux(0, {3: r}), balance_loss(r, 2).float())
    finally:
        shipped.prune_experts(None)


def test_prune_plan_fine_tuning_smoke(tmp_path: Path, stats: RoutingStats) -> None:
    plan = save_plan(make_plan(stats, "mk"), tmp_path / "mk.yaml")
    opts = TrainOptions(config="tiny", out_dir=str(tmp_path / "ft"), steps=4, batch_size=4, train_size=8,
                        val_size=4, init=str(CHECKPOINT), prune_plan=str(plan), prune_stages=2, ckpt_every=0,
                        optimizer="adamw", lr=1e-4, log_every=1)
    result = train(opts)
    assert result.step == 4 and result.metrics_before and result.metrics
    assert set(result.metrics_before) == set(result.metrics) == {"semseg", "depth"}
    ckpt = load_model(tmp_path / "ft" / "model.safetensors")
    from m3vit.train.checkpoint import read_state_dict

    meta = read_state_dict(tmp_path / "ft" / "model.safetensors").metadata
    assert PrunePlan.model_validate(meta["prune_plan"]) == load_plan(plan)
    images = torch.randn(2, 3, 32, 32)
    ckpt.prune_experts(load_plan(plan).expert_map(ckpt.cfg))
    for task in ckpt.cfg.model.task_names:
        for b, r in ckpt(images, task).routing.items():
            assert set(r.indices.unique().tolist()) <= set(load_plan(plan).tasks[task][b].experts)
    assert np.isfinite([rec["aux"] for rec in result.log]).all()


def test_hardware_sweep_on_random_weights(tmp_path, capsys) -> None:
    """The hardware columns without a checkpoint: bytes from the config, used experts from the golden routing."""
    from m3vit.sim.csim import random_model
    from m3vit.sim.inputs import random_quantized_image
    from m3vit.train.experts import hardware_sweep

    cfg = load_config("tiny")
    rows = hardware_sweep(cfg, images=1, rules=("mk", "single"))
    blocks = sorted(cfg.model.moe_block_set)
    eb = expert_bytes(cfg)
    assert {(r["task"], r["plan"]) for r in rows} == {(t, p) for t in cfg.model.task_names
                                                       for p in ("full", "mk", "single")}
    golden = GoldenModel(cfg, random_model(cfg, 0))
    img = random_quantized_image(cfg, 0)
    for r in rows:
        ti = cfg.model.task_index(r["task"])
        if r["plan"] == "full":  # every expert with a non-empty queue is fetched once
            used = sum(int(np.count_nonzero(v.load)) for v in golden.run(img, ti, taps=False).routing.values())
            assert r["expert_bytes_fetched_per_image"] == used * eb
            assert r["expert_bytes_stored"] == len(blocks) * cfg.model.num_experts * eb
        if r["plan"] == "single":
            assert r["expert_bytes_fetched_per_image"] == r["expert_bytes_stored"] == len(blocks) * eb
        if r["plan"] == "mk":
            assert set(r["experts_kept"].values()) == {cfg.model.top_k}
    full = {r["task"]: r["latency_ms"] for r in rows if r["plan"] == "full"}
    assert all(r["latency_ms"] < full[r["task"]] for r in rows if r["plan"] == "single")
    assert cli_main(["experts", "hw-sweep", "tiny", "--images", "1", "--rules", "single",
                     "--json", str(tmp_path / "hw.json")]) == 0
    assert "| semseg | single |" in capsys.readouterr().out
    assert json.loads((tmp_path / "hw.json").read_text())["rows"]
