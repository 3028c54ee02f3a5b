"""Accuracy report of a trained checkpoint: float vs fixed-point (golden model) vs a trivial predictor.

``python -m m3vit.train.accuracy --checkpoint models/tiny.safetensors --json models/tiny_accuracy.json
--md models/tiny_accuracy.md`` (``make accuracy``) evaluates every task on the held-out synthetic split:

* ``float`` — the PyTorch model;
* ``fixed`` — the backbone through the bit-accurate golden model (the accelerator's integers), the task
  head in float on its dequantised tokens;
* ``trivial`` — the image-independent per-pixel prior of the training split (m3vit.train.predict);

and checks each task's primary metric against :data:`FIXED_TOLERANCE` (fixed vs float). The JSON is
the machine-readable record; the markdown is the same numbers as tables.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from m3vit.train.checkpoint import load_model, read_state_dict
from m3vit.train.data import build_dataset
from m3vit.train.metrics import delta_m, load_baselines
from m3vit.train.predict import FixedPointPredictor, FloatPredictor, TrivialPredictor, evaluate
from m3vit.train.tasks import HIGHER_IS_BETTER, PRIMARY_METRIC, TaskKind, task_kind

FIXED_TOLERANCE: dict[TaskKind, tuple[str, float]] = {
    TaskKind.SEGMENTATION: ("abs", 1.0),  # |mIoU_fixed − mIoU_float| ≤ 1 point
    TaskKind.DEPTH: ("rel", 0.02),  # |rmse_fixed − rmse_float| ≤ 2 % of rmse_float
    TaskKind.NORMALS: ("rel", 0.02),
    TaskKind.SALIENCY: ("abs", 1.0),
    TaskKind.EDGE: ("abs", 1.0),
}
"""How far the fixed-point metric may be from the float one, per task kind: (abs points | rel fraction)."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fixed_check(task: str, float_metrics: Mapping[str, float], fixed_metrics: Mapping[str, float]) -> dict[str, Any]:
    """Compare a task's primary metric, fixed vs float, against :data:`FIXED_TOLERANCE`."""
    kind = task_kind(task)
    name = PRIMARY_METRIC[kind]
    mode, limit = FIXED_TOLERANCE[kind]
    f, q = float(float_metrics[name]), float(fixed_metrics[name])
    diff = q - f if mode == "abs" else (q - f) / f
    return {"metric": name, "float": f, "fixed": q, "mode": mode, "difference": diff, "limit": limit,
            "pass": abs(diff) <= limit}


def build_report(
    checkpoint: str | Path, size: int | None = None, train_size: int | None = None, seed: int = 0,
    baselines: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, Any]:
    """Float, fixed-point and trivial metrics of every task of ``checkpoint`` on the synthetic val split.

    ``size`` / ``train_size`` default to the training run's own ``val_size`` / ``train_size`` (else the
    dataset defaults); ``seed`` is the dataset seed. ``baselines`` (task → single-task metrics) adds Δm.
    """
    checkpoint = Path(checkpoint)
    t0 = time.perf_counter()
    ckpt = read_state_dict(checkpoint)
    model = load_model(checkpoint)
    cfg = model.cfg
    opts = ckpt.metadata.get("options", {})
    size = size if size is not None else opts.get("val_size")
    train_size = train_size if train_size is not None else opts.get("train_size")
    val = build_dataset(cfg, "synthetic", "val", size=size, seed=seed)
    train = build_dataset(cfg, "synthetic", "train", size=train_size, seed=seed)
    fixed = FixedPointPredictor(model)
    results = {
        "float": evaluate(FloatPredictor(model), val, cfg.model.tasks),
        "fixed": evaluate(fixed, val, cfg.model.tasks),
        "trivial": evaluate(TrivialPredictor(cfg, train), val, cfg.model.tasks),
    }
    tasks = {}
    for t in cfg.model.task_names:
        tasks[t] = {mode: results[mode][t] for mode in ("float", "fixed", "trivial")}
        tasks[t]["fixed_vs_float"] = fixed_check(t, results["float"][t], results["fixed"][t])
        name = PRIMARY_METRIC[task_kind(t)]
        better = HIGHER_IS_BETTER[name]
        f, z = results["float"][t][name], results["trivial"][t][name]
        tasks[t]["float_beats_trivial"] = bool(f > z if better else f < z)
    report: dict[str, Any] = {
        "config": cfg.name,
        "config_hash": cfg.config_hash(),
        "checkpoint": checkpoint.name,
        "checkpoint_bytes": checkpoint.stat().st_size,
        "checkpoint_sha256": _sha256(checkpoint),
        "dataset": {"name": "synthetic", "split": "val", "images": len(val), "seed": seed,
                    "trivial_fit_on": f"train ({len(train)} images)"},
        "training": {k: ckpt.metadata[k] for k in ("step", "world_size", "seconds", "lr", "weight_decay")
                     if k in ckpt.metadata}
        | {"options": opts},
        "numerics": {k: str(getattr(cfg.numerics, k)) for k in ("input", "act", "norm", "qkv", "hidden", "weight")},
        "saturations": {"weights": fixed.weight_saturations, "activations": fixed.saturations},
        "tasks": tasks,
        "all_fixed_within_tolerance": all(v["fixed_vs_float"]["pass"] for v in tasks.values()),
    }
    if baselines:
        report["delta_m"] = {m: delta_m(results[m], baselines) for m in ("float", "fixed")}
        report["single_task_baselines"] = {k: dict(v) for k, v in baselines.items()}
    report["eval_seconds"] = round(time.perf_counter() - t0, 1)
    return report


def markdown(report: Mapping[str, Any]) -> str:
    """The report as markdown tables."""
    ds, tr = report["dataset"], report["training"]
    opts = tr.get("options", {})
    lines = [
        f"# Accuracy of `{report['checkpoint']}` ({report['config']})",
        "",
        f"Held-out split: synthetic `{ds['split']}`, {ds['images']} images (dataset seed {ds['seed']}); the trivial "
        f"predictor is the per-pixel prior of {ds['trivial_fit_on']}. Fixed point = the bit-accurate golden "
        "model of the accelerator for the backbone, the float task head on its tokens.",
        "",
        f"Checkpoint: {report['checkpoint_bytes'] / 1e6:.2f} MB, sha256 `{report['checkpoint_sha256'][:16]}…`, "
        f"trained {tr.get('step', '?')} steps (batch {opts.get('batch_size', '?')}, {opts.get('optimizer', '?')}, "
        f"lr {tr.get('lr', opts.get('lr'))}, {tr.get('world_size', 1)} process(es)"
        + (f", {tr['seconds']:.0f} s" if "seconds" in tr else "") + ").",
        "",
        "| task | metric | float | fixed point | trivial | fixed − float | within tolerance |",
        "|---|---|---:|---:|---:|---:|:---:|",
    ]
    for task, v in report["tasks"].items():
        chk = v["fixed_vs_float"]
        for metric in v["float"]:
            primary = metric == chk["metric"]
            diff = v["fixed"][metric] - v["float"][metric]
            tol = ""
            if primary:
                shown = f"{chk['difference']:+.2%}" if chk["mode"] == "rel" else f"{chk['difference']:+.3f}"
                limit = f"{chk['limit']:.0%}" if chk["mode"] == "rel" else f"{chk['limit']:g} pt"
                tol = f"{'yes' if chk['pass'] else '**no**'} ({shown}, limit {limit})"
            name = f"**{metric}**" if primary else metric
            lines.append(f"| {task} | {name} | {v['float'][metric]:.4f} | {v['fixed'][metric]:.4f} | "
                         f"{v['trivial'][metric]:.4f} | {diff:+.4f} | {tol} |")
    lines += ["", f"Saturated values in the golden model: {report['saturations']['weights']} weights, "
              f"{report['saturations']['activations']} activations (over every image and task).", ""]
    if "delta_m" in report:
        lines += [f"Δm vs single-task baselines: float {report['delta_m']['float']:+.2f} %, fixed "
                  f"{report['delta_m']['fixed']:+.2f} %.", ""]
    lines += ["Regenerate with `make accuracy` (`python -m m3vit.train.accuracy`).", ""]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m m3vit.train.accuracy",
                                description="Float vs fixed-point vs trivial task metrics of a checkpoint.")
    p.add_argument("--checkpoint", "-c", default="models/tiny.safetensors")
    p.add_argument("--json", default=None, help="write the report JSON here")
    p.add_argument("--md", default=None, help="write the markdown report here")
    p.add_argument("--size", type=int, default=None, help="held-out images (default: the training run's)")
    p.add_argument("--seed", type=int, default=0, help="synthetic dataset seed")
    p.add_argument("--baseline", action="append", default=[], metavar="JSON",
                   help="single-task baseline metrics for Δm: {task: {metric: value}} or eval --json output")
    p.add_argument("--check", action="store_true", help="exit 1 unless every task is within FIXED_TOLERANCE")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Write the accuracy report; returns an exit code."""
    args = build_parser().parse_args(argv)
    baselines = load_baselines(args.baseline)
    report = build_report(args.checkpoint, size=args.size, seed=args.seed, baselines=baselines or None)
    text = markdown(report)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if args.md:
        Path(args.md).write_text(text)
    return 0 if report["all_fixed_within_tolerance"] or not args.check else 1


__all__ = ["FIXED_TOLERANCE", "build_report", "fixed_check", "main", "markdown"]

if __name__ == "__main__":
    sys.exit(main())
