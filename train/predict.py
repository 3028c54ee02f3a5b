"""Predictors and split evaluation: float model, fixed-point golden model, and trivial baselines.

A *predictor* maps (images [B, C, H, W], task name) to predictions in the layout of
:func:`m3vit.train.tasks.predict`. :func:`evaluate` runs one over a dataset and returns every task's
metrics (:mod:`m3vit.train.metrics`).

* :class:`FloatPredictor` — the PyTorch reference model.
* :class:`FixedPointPredictor` — the bit-accurate golden model (the accelerator's arithmetic) for the
  backbone, then the task's float head on its tokens (the head runs on the host).
* :class:`TrivialPredictor` — what can be predicted without looking at the image: per pixel, the most
  frequent training label (segmentation) or the mean training target (depth, normals, saliency, edge).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional
from torch.utils.data import Dataset

from m3vit.codegen.config import DesignConfig, TaskSpec, load_config
from m3vit.errors import ArgumentParser, UserError, int_range, run_main
from m3vit.sim.reference import M3ViT
from m3vit.train.data import build_dataset, get_batch
from m3vit.train.metrics import delta_m, load_baselines, make_meter
from m3vit.train.tasks import TaskKind, check_task, predict

Predictor = Callable[[Tensor, str], Tensor]


class FloatPredictor:
    """Predictions of the float model."""

    def __init__(self, model: M3ViT) -> None:
        self.model = model.eval()
        self.kinds = {t.name: check_task(t) for t in model.cfg.model.tasks}

    @torch.no_grad()
    def __call__(self, images: Tensor, task: str) -> Tensor:
        return predict(self.kinds[task], self.model(images, task).head)


class FixedPointPredictor:
    """Backbone by the golden model (integers), head in float on the dequantised tokens.

    A pruned model (:meth:`M3ViT.prune_experts`, applied before construction) is pruned the same way here.

    ``saturations`` counts the values the golden model clamped (act/qkv/... formats) over every call.
    """

    def __init__(self, model: M3ViT) -> None:
        from m3vit.sim.golden import GoldenModel
        from m3vit.sim.quantize import quantize_state_dict

        self.model, self.cfg = model.eval(), model.cfg
        self.kinds = {t.name: check_task(t) for t in self.cfg.model.tasks}
        qmodel = quantize_state_dict(self.cfg, model.state_dict())
        self.weight_saturations = sum(qmodel.saturation.values())
        self.golden = GoldenModel(self.cfg, qmodel, experts=getattr(model, "expert_map", None))
        self.saturations = 0
        self.on_result: Callable[[Any], None] | None = None  # called with each image's GoldenResult

    def tokens(self, images: Tensor, task: str) -> Tensor:
        """Golden-model backbone tokens [B, T, dim] as floats (integer · act lsb)."""
        lsb = self.cfg.numerics.act.lsb
        out = []
        for image in images.double().numpy():
            res = self.golden.run(self.golden.quantize_image(image), task, taps=False)
            self.saturations += sum(sum(v.values()) for v in res.saturation.values())
            if self.on_result is not None:
                self.on_result(res)
            out.append(res.tokens * lsb)
        return torch.from_numpy(np.stack(out)).to(self.model.cls_token.dtype)

    @torch.no_grad()
    def __call__(self, images: Tensor, task: str) -> Tensor:
        return predict(self.kinds[task], self.model.head(self.tokens(images, task), task))


class TrivialPredictor:
    """Image-independent per-pixel prior estimated on a training set (see the module doc)."""

    def __init__(self, cfg: DesignConfig, train: Dataset, batch_size: int = 256) -> None:
        self.kinds = {t.name: check_task(t) for t in cfg.model.tasks}
        channels = {t.name: t.channels for t in cfg.model.tasks}
        sums: dict[str, Tensor] = {}
        n = len(train)
        for lo in range(0, n, batch_size):
            batch = get_batch(train, range(lo, min(n, lo + batch_size)))
            for name, kind in self.kinds.items():
                t = batch[name]
                if kind is TaskKind.SEGMENTATION:  # per-pixel class histogram
                    valid = t < channels[name]
                    s = functional.one_hot(torch.where(valid, t, 0), channels[name]).mul(valid[..., None]).sum(0)
                    s = s.permute(2, 0, 1).double()  # [classes, H, W]
                else:
                    s = t.double().sum(0)
                sums[name] = sums[name] + s if name in sums else s
        self.prior: dict[str, Tensor] = {}
        for name, kind in self.kinds.items():
            if kind is TaskKind.SEGMENTATION:
                self.prior[name] = sums[name].argmax(0)  # [H, W]
            elif kind is TaskKind.NORMALS:
                self.prior[name] = functional.normalize(sums[name], dim=0).float()
            else:
                self.prior[name] = (sums[name] / n).float()

    def __call__(self, images: Tensor, task: str) -> Tensor:
        p = self.prior[task]
        return p.expand(images.shape[0], *p.shape)


def evaluate(
    predictor: Predictor, dataset: Dataset, tasks: Sequence[TaskSpec], batch_size: int = 64,
    limit: int | None = None, edge_tolerance: int = 1,
) -> dict[str, dict[str, float]]:
    """Every task's metrics of ``predictor`` over ``dataset`` (its first ``limit`` samples)."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n < 1:  # metrics of no images would be NaN
        raise UserError(f"no images to evaluate ({len(dataset)} in the dataset, limit {limit})")
    meters = {t.name: make_meter(t, edge_tolerance) for t in tasks}
    for lo in range(0, n, batch_size):
        batch = get_batch(dataset, range(lo, min(n, lo + batch_size)))
        for name, meter in meters.items():
            meter.update(predictor(batch["image"], name), batch[name])
    return {name: meter.compute() for name, meter in meters.items()}


def evaluate_checkpoint(
    checkpoint: str | Path, config: str | Path | DesignConfig | None = None, dataset: str = "synthetic",
    data_root: str | Path | None = None, split: str = "val", size: int | None = None, seed: int = 0,
    limit: int | None = None, fixed: bool = False, batch_size: int = 64,
) -> dict[str, Any]:
    """Float (and, with ``fixed``, golden-model) metrics of a checkpoint: ``{"float": …, "fixed": …}``."""
    from m3vit.train.checkpoint import load_model

    cfg = load_config(config) if isinstance(config, (str, Path)) else config
    model = load_model(checkpoint, cfg)
    cfg = model.cfg
    data = build_dataset(cfg, dataset, split, root=data_root, size=size, seed=seed)
    report: dict[str, Any] = {
        "config": cfg.name, "checkpoint": str(checkpoint), "dataset": dataset, "split": split,
        "images": len(data) if limit is None else min(limit, len(data)),
        "float": evaluate(FloatPredictor(model), data, cfg.model.tasks, batch_size, limit),
    }
    if fixed:
        fp = FixedPointPredictor(model)
        report["fixed"] = evaluate(fp, data, cfg.model.tasks, batch_size, limit)
        report["saturations"] = {"weights": fp.weight_saturations, "activations": fp.saturations}
    return report


# ------------------------------------------------------------------------------------------ eval CLI
def build_eval_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="m3vit eval",
        description="Task metrics of a checkpoint on a held-out split (float, fixed-point golden model, or both).",
    )
    p.add_argument("config", nargs="?", default=None,
                   help="config file or preset (default: the one stored in the checkpoint)")
    p.add_argument("--checkpoint", "-c", required=True, help="model weights (.safetensors, or a weights-only .pt)")
    p.add_argument("--dataset", default="synthetic", choices=["synthetic", "pascal", "nyud"])
    p.add_argument("--data-root", default=None, help="dataset folder (pascal / nyud)")
    p.add_argument("--split", default="val")
    p.add_argument("--size", type=int_range(1), default=None,
                   help="synthetic split size (default: the split's default)")
    p.add_argument("--seed", type=int, default=0, help="synthetic dataset seed")
    p.add_argument("--limit", type=int_range(1), default=None, help="evaluate only the first N images")
    p.add_argument("--fixed", action="store_true", help="also evaluate the bit-accurate fixed-point golden model")
    p.add_argument("--baseline", action="append", default=[], metavar="JSON",
                   help="single-task baseline metrics for Δm: a JSON {task: {metric: value}} or an eval --json "
                   "output (repeatable)")
    p.add_argument("--json", default=None, help="write the metrics to this JSON file")
    p.add_argument("--batch-size", type=int_range(1), default=64)
    return p


def eval_command(argv: Sequence[str]) -> int:
    """``m3vit eval``: print (and optionally save) per-task metrics of a checkpoint; raises the toolkit's errors."""
    args = build_eval_parser().parse_args(argv)
    if args.json and Path(args.json).is_dir():
        raise UserError(f"--json {args.json} is a folder; give the JSON file to write")
    baselines = load_baselines(args.baseline)
    report = evaluate_checkpoint(
        args.checkpoint, config=args.config, dataset=args.dataset, data_root=args.data_root,
        split=args.split, size=args.size, seed=args.seed, limit=args.limit, fixed=args.fixed,
        batch_size=args.batch_size,
    )
    for mode in ("float", "fixed"):
        if mode not in report:
            continue
        for task, metrics in report[mode].items():
            shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
            print(f"{mode:5s} {task}: {shown}")
        if baselines:
            dm = delta_m(report[mode], baselines)
            report.setdefault("delta_m", {})[mode] = dm
            print(f"{mode:5s} Δm vs single-task baselines: {dm:+.2f} %")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def eval_main(argv: Sequence[str] | None = None) -> int:
    """:func:`eval_command` with user errors as one line (exit status 2) and ``--debug``."""
    return run_main(eval_command, argv)


__all__ = [
    "FixedPointPredictor",
    "FloatPredictor",
    "Predictor",
    "TrivialPredictor",
    "evaluate",
    "evaluate_checkpoint",
]
