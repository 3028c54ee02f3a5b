"""Task-specialised deployment (docs/pruning.md §6): a pruned weight image with its per-layer expert map.

C simulation == golden model (same ExpertMap) bit for bit on every tap, the tokens and the saturation counters,
for every task of tiny and of a reduced preset, with plans that keep exactly K experts and a single expert
(K' = 1) in some layers — all on one C-simulation build per config (the map comes from the weight image). The
C simulation's fetch counters and event log show pruned experts are never fetched; the packed image holds
none of their bytes; the driver refuses a pruned .m3w for another task or config before any device write.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from m3vit.codegen.bits import ceil_div, container_bits
from m3vit.codegen.config import DesignConfig, load_config, with_overrides
from m3vit.codegen.layout import pack_weights, unpack_weights, weight_layout
from m3vit.host.driver import Accelerator
from m3vit.host.weights import (
    WeightsError,
    encode_manifest,
    load_weights,
    pack_model,
    parse_weights,
    pruning_manifest,
)
from m3vit.sim.csim import compare_taps
from m3vit.sim.golden import GoldenModel
from m3vit.sim.inputs import random_image
from m3vit.sim.pruning import KeptExperts, expert_map
from m3vit.sim.quantize import quantize_state_dict
from tests.conftest import reference
from tests.test_hls import REDUCED, Design, check_expert_schedule, designs  # noqa: F401  (the session's C-sim builds)


def plans(cfg: DesignConfig) -> dict[str, dict]:
    """Per-task expert maps {task: {block: (experts, top_k)}}: different experts per task; the first MoE layer
    keeps exactly K experts, the last a single expert (K' = 1), or several experts with K' = 1 and K' = K."""
    m = cfg.model
    n, k, moe = m.num_experts, m.top_k, sorted(m.moe_block_set)
    out: dict[str, dict] = {"k_and_single": {}, "wide_k1": {}}
    for t, task in enumerate(m.task_names):
        exact_k = [(t + 3 * j) % n for j in range(k)]
        layers = {moe[0]: (exact_k, None)}
        layers[moe[-1]] = ([(5 * t + 1) % n], 1) if len(moe) > 1 else layers[moe[0]]
        out["k_and_single"][task] = layers
        wide = sorted({(t + 2 * j + 1) % n for j in range(max(k + 1, n // 2))})
        out["wide_k1"][task] = {moe[0]: (wide, 1), **({moe[-1]: (list(range(n - 1)), None)} if len(moe) > 1 else {})}
    if len(moe) == 1:  # one MoE layer: the single-expert case gets its own plan
        out["single"] = {task: {moe[0]: ([(2 * t + 1) % n], 1)} for t, task in enumerate(m.task_names)}
    return out


def region_bytes(cfg: DesignConfig) -> int:
    """Bytes of one expert's stored weights (fc1 w + b, fc2 w + b), each tensor padded to whole AXI words,
    computed from the config alone (not from the layout)."""
    m, n, hw = cfg.model, cfg.numerics, cfg.hardware
    word = hw.axi_data_bits // 8

    def tiled(out: int, inp: int) -> int:
        tiles = ceil_div(out, hw.mac_out) * ceil_div(inp, hw.mac_in) * hw.mac_out * hw.mac_in
        return ceil_div(tiles * container_bits(n.weight.bits) // 8, word) * word

    def bias(count: int) -> int:
        return ceil_div(count * container_bits(n.bias_bits) // 8, word) * word

    return (tiled(m.expert_hidden, m.dim) + bias(m.expert_hidden) + tiled(m.dim, m.expert_hidden) + bias(m.dim))


def run_pruned(d: Design, task: str, layers: dict) -> None:
    """One task under one plan: golden with the map == C simulation fed the pruned image, and fetches."""
    cfg = d.cfg
    t = cfg.model.task_index(task)
    emap = expert_map(cfg, {task: layers})
    kept = {b: k for (_, b), k in emap.items()}
    packed = pack_weights(cfg, d.qmodel, kept)
    pruned_experts = sum(cfg.model.num_experts - len(k.experts) for k in kept.values())
    assert packed.size == d.packed.size - pruned_experts * region_bytes(cfg)
    g = GoldenModel(cfg, d.qmodel, experts=emap).run(d.image, t)
    layered = d.lib.run(packed, d.image, t, taps=True)
    bad = compare_taps(g.taps, layered.taps)
    assert not bad, f"{task}: taps differ: {bad[:6]}"
    assert set(layered.taps) == set(g.taps)
    np.testing.assert_array_equal(layered.tokens, g.tokens)
    assert layered.saturation == g.saturation
    whole = d.lib.run(packed, d.image, t)
    np.testing.assert_array_equal(whole.tokens, g.tokens)
    assert whole.saturation == g.saturation
    for b, k in kept.items():
        load = g.routing[b].load
        assert g.routing[b].experts.shape[1] == k.top_k
        assert not load[[e for e in range(cfg.model.num_experts) if e not in k.experts]].any()
        np.testing.assert_array_equal(whole.expert_loads[b], (load > 0).astype(int), err_msg=f"block {b}")
    events = d.lib.expert_events()
    check_expert_schedule(events, {b: [int(e) for e in np.flatnonzero(g.routing[b].load)] for b in g.routing})
    fetched = {(b, e) for b, kind, _, e in events if kind == "fetch"}
    assert all(e in kept[b].experts for b, e in fetched), "a pruned expert was fetched"


def run_every_plan(d) -> None:
    """:func:`run_pruned` for every plan of :func:`plans` and every task, failures naming the plan and task."""
    for name, plan in plans(d.cfg).items():
        for task, layers in plan.items():
            try:
                run_pruned(d, task, layers)
            except AssertionError as err:
                raise AssertionError(f"plan {name}, task {task}: {err}") from None


def test_tiny_every_task_every_plan(designs) -> None:  # noqa: F811
    run_every_plan(designs("tiny"))


def test_reduced_preset_every_task(designs) -> None:  # noqa: F811
    run_every_plan(designs("m3vit_small_pascal_dse", **REDUCED))


def test_full_map_is_todays_image(tiny) -> None:
    """Every expert kept at the config's K: the same bytes as the unpruned image, the map [K, contiguous]."""
    from tests.conftest import quantized

    q = quantized(tiny)
    full = {b: KeptExperts(tuple(range(tiny.model.num_experts)), tiny.model.top_k) for b in tiny.model.moe_block_set}
    assert np.array_equal(pack_weights(tiny, q, full), pack_weights(tiny, q))
    lay = weight_layout(tiny)
    assert not lay.pruned
    for b in tiny.model.moe_block_set:
        row = unpack_weights(tiny, pack_weights(tiny, q))[f"block{b}.expert_map"]
        stride = region_bytes(tiny) // lay.word_bytes
        assert row[0] == tiny.model.top_k
        assert np.array_equal(np.diff(row[1:]), np.full(tiny.model.num_experts - 1, stride))


# ------------------------------------------------------------------------------------------ the .m3w and the host
@pytest.fixture(scope="module")
def pruned_file(tmp_path_factory):
    cfg = load_config("tiny")
    sd = reference(cfg).state_dict()
    layers = plans(cfg)["k_and_single"]["depth"]
    emap = expert_map(cfg, {"depth": layers})
    path = tmp_path_factory.mktemp("pruned") / "tiny_depth.m3w"
    manifest = pack_model(cfg, sd, path, pruning_manifest(cfg, emap, "depth", "test_plan", "hand-made"))
    return cfg, sd, emap, path, manifest


def test_manifest_records_the_plan(pruned_file) -> None:
    cfg, sd, emap, path, manifest = pruned_file
    p = manifest["pruning"]
    assert (p["plan"], p["rule"], p["task"]) == ("test_plan", "hand-made", "depth")
    assert {la["block"]: (tuple(la["experts"]), la["top_k"]) for la in p["layers"]} == \
        {b: (k.experts, k.top_k) for (_, b), k in emap.items()}
    w = load_weights(path, cfg)
    assert w.pruned_task == "depth" and w.expert_map(cfg) == emap
    names = {t["name"] for t in manifest["device"]["tensors"]}
    for (_, b), k in emap.items():
        for e in range(cfg.model.num_experts):
            assert (f"block{b}.expert{e}.fc1.w" in names) == (e in k.experts)
    pruned = sum(cfg.model.num_experts - len(k.experts) for k in emap.values())
    assert w.device.size == weight_layout(cfg).total_bytes - pruned * region_bytes(cfg)
    # the kept experts' values are the quantised model's
    q = quantize_state_dict(cfg, sd)
    back = unpack_weights(cfg, w.device, {b: k for (_, b), k in emap.items()})
    for (_, b), k in emap.items():
        for e in k.experts:
            assert np.array_equal(back[f"block{b}.expert{e}.fc2.w"], q.blocks[b].experts.w2[e])


def test_twin_runs_the_pruned_task(pruned_file) -> None:
    cfg, sd, emap, path, _ = pruned_file
    emap_file = load_weights(path, cfg).expert_map(cfg)  # the twin's golden model runs the manifest's map
    assert emap_file == emap
    golden = GoldenModel(cfg, quantize_state_dict(cfg, sd), experts=emap_file)
    images = np.stack([random_image(cfg, 20 + i) for i in range(2)])
    with Accelerator.simulated(cfg, path, timeout_s=60) as acc:
        out = acc.run(images, "depth", raw=True)
        for i in range(2):
            assert np.array_equal(out[i], golden.run(golden.quantize_image(images[i]), "depth").tokens)


def test_twin_refuses_another_task_before_any_write(pruned_file) -> None:
    cfg, _, _, path, _ = pruned_file
    with Accelerator.simulated(cfg, path, timeout_s=60) as acc:
        acc.device.reset_counters()
        for call in (lambda: acc.run(random_image(cfg, 1), "semseg"),
                     lambda: acc.run_tokens(np.zeros((1, cfg.model.num_tokens, cfg.model.dim), np.int64), 0, 1, 1)):
            with pytest.raises(WeightsError, match=r"pruned for task 'depth'.*cannot run task 'semseg'") as err:
                call()
            assert "\n" not in str(err.value)
        assert acc.device.memory.bytes_flushed == 0 and not acc.device.register_writes


def test_twin_refuses_another_task_before_the_device_exists(pruned_file, monkeypatch) -> None:
    import m3vit.host.csim_device

    cfg, _, _, path, _ = pruned_file

    def no_device(*args, **kwargs):
        raise AssertionError("the device was built for a refused task")

    monkeypatch.setattr(m3vit.host.csim_device, "csim_device", no_device)
    with pytest.raises(WeightsError, match=r"pruned for task 'depth'.*cannot run task 'semseg'"):
        Accelerator.simulated(cfg, path, task="semseg")
    with pytest.raises(AssertionError, match="device was built"):  # the right task goes on to build it
        Accelerator.simulated(cfg, path, task=1)


def test_refuses_another_config_before_any_write(pruned_file) -> None:
    cfg, _, _, path, _ = pruned_file
    other = with_overrides(cfg, **{"model.top_k": 1})
    with pytest.raises(WeightsError, match="re-pack it with this config") as err:
        load_weights(path, other)
    assert "\n" not in str(err.value)
    # a Weights object of another config handed to the driver: refused before the device sees a byte
    from m3vit.host.csim_device import csim_device

    device, regmap = csim_device(cfg)
    w = load_weights(path, cfg)
    with pytest.raises(WeightsError, match="not 'tiny'"):
        Accelerator(cfg, regmap, device, type(w)(w.path, {**w.manifest, "config_hash": "0" * 64, "design": "x"},
                                                  w.device, w.host))
    assert not device.memory.blocks and not device.register_writes


def _with_pruning(data: bytes, pruning: dict) -> bytes:
    """The file with its manifest's pruning entry replaced (checksums recomputed, sections unchanged)."""
    n = int.from_bytes(data[8:12], "little")
    manifest = json.loads(data[44 : 44 + n])
    start = 44 + n + (-(44 + n) % 64)
    return encode_manifest({**manifest, "pruning": pruning}) + data[start:]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: {**p, "task": "normals"}, "pruned for task 'normals', which tiny does not have"),
        (lambda p: {**p, "layers": p["layers"][:1]}, "pruning map covers blocks"),
        (lambda p: {**p, "layers": [{**p["layers"][0], "block": 0}, *p["layers"][1:]]}, "block 0 is not an MoE layer"),
        (lambda p: {**p, "layers": [{**p["layers"][0], "experts": [1]}, *p["layers"][1:]]}, "fewer than top_k"),
        (lambda p: {**p, "layers": [{**p["layers"][0], "experts": [9, 1]}, *p["layers"][1:]]}, "out of range"),
        (lambda p: None, "device section of"),
    ],
)
def test_bad_pruning_manifest(pruned_file, edit, message) -> None:
    cfg, _, _, path, manifest = pruned_file
    data = _with_pruning(path.read_bytes(), edit(manifest["pruning"]))
    with pytest.raises(WeightsError, match=message) as err:
        parse_weights(data, cfg)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------ the command line
def test_cli_pack_prune_plan_and_run(capsys, tmp_path) -> None:
    from safetensors.torch import save_file

    from m3vit.cli import main

    cfg = load_config("tiny")
    ckpt = tmp_path / "tiny.safetensors"
    save_file({k: v.detach().clone().contiguous() for k, v in reference(cfg).state_dict().items()}, str(ckpt))
    plan = tmp_path / "plan.yaml"
    plan.write_text("name: semseg_small\nconfig: tiny\nrule: by hand\ntasks:\n"
                    "  semseg:\n    1: {experts: [2, 6]}\n    3: {experts: [4], top_k: 1}\n"
                    "  depth:\n    1: {experts: [0, 1, 2]}\n")
    out = tmp_path / "semseg.m3w"
    assert main(["pack", str(ckpt), "tiny", "-o", str(out), "--prune-plan", str(plan), "--task", "semseg"]) == 0
    assert "task semseg, plan 'semseg_small': experts kept block 1: 2 of 8, block 3: 1 of 8 (top-1)" in \
        capsys.readouterr().out
    w = load_weights(out, cfg)
    assert w.expert_map(cfg) == expert_map(cfg, {"semseg": {1: ([2, 6], None), 3: ([4], 1)}})
    assert w.device.size == weight_layout(cfg).total_bytes - 13 * region_bytes(cfg)
    assert main(["run", "tiny", str(out), "--count", "1"]) == 0  # default: the file's own task only
    printed = capsys.readouterr().out
    assert "task semseg: output" in printed and "task depth" not in printed
    assert main(["run", "tiny", str(out), "--count", "1", "--task", "depth"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("m3vit: error:") and "\n" not in err and "pruned for task 'semseg'" in err
    for bad, message in ((["--prune-plan", str(plan)], "go together"), (["--task", "semseg"], "go together"),
                         (["--prune-plan", str(plan), "--task", "normals"], "normals")):
        assert main(["pack", str(ckpt), "tiny", "-o", str(tmp_path / "x.m3w"), *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and message in err, err
    assert not (tmp_path / "x.m3w").exists()
