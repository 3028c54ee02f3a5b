"""``make demo`` / ``m3vit demo``: the main job, end to end on one machine, in a few minutes.

1. generate the accelerator (Vitis HLS project + Vivado script) for the config;
2. compile its C simulation with g++ and check it bit for bit against the golden model, every layer of
   every task;
3. pack the weights (the shipped trained model for ``tiny``, trained-scale random weights otherwise);
4. run sample images for every task through the host driver on the digital twin (same code as on the
   board), checking the twin against the golden model and printing the outputs' summary;
5. print the modeled ZCU104 latency of the design and of the paper-size design.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from m3vit import build_dir, package_dir
from m3vit.codegen.config import DesignConfig, load_config

SHIPPED = {"tiny": package_dir("m3vit.models") / "tiny.safetensors"}
"""Trained checkpoints shipped with m3vit, by design name."""


def _shown(path: Path) -> Path:
    """``path`` relative to the current directory when inside it (BUILD_ROOT may be moved elsewhere)."""
    cwd = Path.cwd()
    return path.relative_to(cwd) if path.is_relative_to(cwd) else path


def sample_images(cfg: DesignConfig, n: int, seed: int = 0) -> np.ndarray:
    """Deterministic sample images [n, C, H, W]: the synthetic multi-task scenes when available."""
    try:  # the synthetic scenes need torch, which a board image may lack
        from m3vit.train.data import SyntheticScenes

        return SyntheticScenes(cfg, "test", size=n, seed=seed).images.numpy()
    except (ImportError, ValueError):
        pass
    m = cfg.model
    return np.random.default_rng(seed).normal(0, 1, (n, m.in_channels, *m.image_size)).astype(np.float32)


def _float_model(cfg: DesignConfig, seed: int):
    from m3vit.sim.reference import build_reference

    ref = build_reference(cfg, seed=seed)
    ckpt = SHIPPED.get(cfg.name)
    if ckpt is not None and ckpt.is_file():
        from m3vit.train.checkpoint import import_weights

        import_weights(ref, ckpt)
        return ref.eval(), f"trained checkpoint {_shown(ckpt)}"
    return ref.eval(), f"trained-scale random weights (seed {seed})"


def _twin_metrics(cfg: DesignConfig, acc, ref, seed: int, count: int = 32) -> str:
    """Primary task metrics of the twin's predictions and of the float model on held-out scenes."""
    import torch

    from m3vit.train.data import SyntheticScenes
    from m3vit.train.metrics import make_meter, primary
    from m3vit.train.tasks import predict, task_kind

    data = SyntheticScenes(cfg, "test", size=count, seed=seed)
    parts = []
    for task in cfg.model.tasks:
        meters = {"twin": make_meter(task), "float": make_meter(task)}
        twin = torch.from_numpy(acc.predict(data.images.numpy(), task.name))
        with torch.no_grad():
            flt = ref(data.images, task.name).head
        kind = task_kind(task)
        for name, out in (("twin", twin), ("float", flt)):
            meters[name].update(predict(kind, out), data.targets[task.name])
        (metric, twin_v), (_, float_v) = (primary(task, meters[k].compute()) for k in ("twin", "float"))
        parts.append(f"{task.name} {metric} {twin_v:.2f} (float {float_v:.2f})")
    return ", ".join(parts) + f" over {count} scenes"


def _modeled_latency(cfg: DesignConfig) -> str:
    try:
        from m3vit.codegen.perf import evaluate
    except ImportError:
        return "performance model not available"
    lines = []
    for name in (cfg, "m3vit_small_pascal", "m3vit_small_pascal_dse", "m3vit_small_nyud_dse"):
        c = name if isinstance(name, DesignConfig) else load_config(name)
        r = evaluate(c)
        lines.append(f"{c.name} on {c.hardware.board} @ {c.hardware.clock_mhz:g} MHz: {r.latency_ms:.3f} ms/image "
                     f"(DSP floor {r.dsp_floor_ms:.3f} ms, on-chip {r.on_chip_mib:.2f} MiB, {r.resources.dsp} DSP)")
    return "\n   ".join(lines)


def run_demo(config: str | Path = "tiny", seed: int = 0, images: int = 2) -> int:
    """Run the demo; returns 0 when every check passed, 1 otherwise."""
    from m3vit.codegen.layout import pack_weights
    from m3vit.codegen.project import generate
    from m3vit.host.driver import Accelerator
    from m3vit.host.weights import pack_model
    from m3vit.sim.csim import build_csim, compare_taps
    from m3vit.sim.golden import GoldenModel
    from m3vit.sim.quantize import quantize_state_dict

    t_start = time.perf_counter()
    cfg = load_config(config)
    m = cfg.model
    out = build_dir(cfg.name)
    print(f"== m3vit demo: {cfg.name} ({m.num_tokens} tokens, depth {m.depth}, {m.num_experts} experts "
               f"top-{m.top_k}, tasks {', '.join(m.task_names)})")
    failures = 0
    project = generate(cfg, out)
    print(f"1. generated {_shown(project)} (HLS C++, testbench, run_hls.tcl, "
          f"vivado/build_bitstream.tcl, register_map.json, weight_layout.json)")

    t0 = time.perf_counter()
    lib = build_csim(project, cfg=cfg)
    ref, source = _float_model(cfg, seed)
    q = quantize_state_dict(cfg, ref.state_dict())
    golden = GoldenModel(cfg, q)
    packed = pack_weights(cfg, q)
    scenes = sample_images(cfg, images, seed)
    image_q = golden.quantize_image(scenes[0])
    taps = 0
    for task in m.task_names:
        g = golden.run(image_q, task)
        res = lib.run(packed, image_q, task, taps=True)
        bad = compare_taps(g.taps, res.taps) + ([] if np.array_equal(res.tokens, g.tokens) else ["tokens"])
        failures += bool(bad)
        taps += len(g.taps)
        if bad:
            print(f"   task {task}: C simulation differs from the golden model at {bad[:5]}")
    print(f"2. C simulation (g++) vs golden model: {'bit-exact' if not failures else 'MISMATCH'} at {taps} "
          f"layer taps over {len(m.task_names)} tasks ({time.perf_counter() - t0:.1f} s incl. compile)")

    weights_path = out / f"{cfg.name}.m3w"
    manifest = pack_model(cfg, ref.state_dict(), weights_path)
    print(f"3. packed {source} -> {_shown(weights_path)} ({manifest['device']['size']} device "
          f"bytes, config hash {manifest['config_hash'][:12]})")

    with Accelerator.simulated(cfg, weights_path, project_dir=project) as acc:
        print(f"4. digital twin: {len(scenes)} sample images per task through the host driver")
        for task in m.task_names:
            raw = acc.run(scenes, task, raw=True)
            same = all(np.array_equal(raw[i], golden.run(golden.quantize_image(scenes[i]), task).tokens)
                       for i in range(len(scenes)))
            failures += not same
            pred = acc.predict(scenes, task)
            print(f"   {task:>12}: output {list(pred.shape)}, mean {pred.mean():+.4f}, std {pred.std():.4f}, "
                  f"range [{pred.min():+.3f}, {pred.max():+.3f}]; twin == golden: {same}")
        if source.startswith("trained"):
            print(f"   held-out task metrics, twin vs float model: {_twin_metrics(cfg, acc, ref, seed)}")
        stats = acc.benchmark(n=3)
        print(f"   twin throughput {stats['throughput_images_per_s']:.1f} images/s (C simulation on this CPU)")

    print("5. modeled latency of the generated HLS kernels (docs/performance.md; each stage's first weight load "
          f"included, which the C-sim cycle ledger does not see):\n   {_modeled_latency(cfg)}")
    print(f"== demo {'passed' if not failures else 'FAILED'} in {time.perf_counter() - t_start:.1f} s")
    return 1 if failures else 0
