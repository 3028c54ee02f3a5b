"""Dense-prediction task metrics, Δm against single-task baselines, and the ``eval`` command.

One meter per task kind (:func:`make_meter`); feed it predictions from :func:`m3vit.train.tasks.predict`
and targets in the kind's layout, batch by batch, then ``compute()``:

* segmentation — ``mIoU`` (%, mean over classes present in prediction or target) and ``pixel_acc`` (%),
  from one confusion matrix over the whole split (pixels labelled 255 ignored);
* depth — ``rmse`` (√ of the mean squared error over every valid pixel of the split) and ``abs_rel``;
* normals — ``mean_angle`` / ``median_angle`` (degrees) and ``within_11_25`` (%);
* saliency — ``maxF`` (%, best F-β, β² = 0.3, over thresholds 0.01..0.99) and ``IoU`` (%, at 0.5);
* edge — ``odsF`` (%, F-score at the best fixed threshold for the split); a predicted edge pixel counts as
  correct within ``edge_tolerance`` pixels of a true one and vice versa (matching by dilation, a fast
  stand-in for SEISM's bipartite matching).

Δm (Maninis et al. 2019) = mean over tasks of ±(M_mt − M_st) / M_st · 100, + when higher is better.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional

from m3vit.codegen.config import TaskSpec
from m3vit.errors import UserError, one_line
from m3vit.train.tasks import HIGHER_IS_BETTER, IGNORE_INDEX, PRIMARY_METRIC, TaskKind, check_task, task_kind

THRESHOLDS = np.round(np.linspace(0.01, 0.99, 99), 2)
"""Thresholds of the saliency max-F and the edge ODS F-score."""


class Meter:
    """Accumulates one task's metric over a split: ``update(pred, target)`` per batch, then ``compute()``."""

    def update(self, pred: Tensor, target: Tensor) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        raise NotImplementedError


class SegmentationMeter(Meter):
    """Confusion matrix over ``num_classes`` classes; labels ``ignore_index`` are skipped."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.n, self.ignore = num_classes, ignore_index
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)  # [true, pred]

    def update(self, pred: Tensor, target: Tensor) -> None:
        t, p = target.reshape(-1).long(), pred.reshape(-1).long()
        keep = t != self.ignore
        t, p = t[keep], p[keep]
        if ((t < 0) | (t >= self.n)).any():
            raise ValueError(f"segmentation target has labels outside [0, {self.n}) other than {self.ignore}")
        self.confusion += torch.bincount(t * self.n + p.clamp(0, self.n - 1), minlength=self.n**2).reshape(self.n, -1)

    def compute(self) -> dict[str, float]:
        c = self.confusion.double()
        tp = c.diag()
        union = c.sum(0) + c.sum(1) - tp
        present = union > 0
        miou = (tp[present] / union[present]).mean().item() if present.any() else float("nan")
        acc = (tp.sum() / c.sum()).item() if c.sum() > 0 else float("nan")
        return {"mIoU": 100 * miou, "pixel_acc": 100 * acc}


class DepthMeter(Meter):
    """RMSE and mean absolute relative error over every valid (target > 0) pixel."""

    def __init__(self) -> None:
        self.sq = self.rel = 0.0
        self.count = 0

    def update(self, pred: Tensor, target: Tensor) -> None:
        p, t = pred.double().reshape(-1), target.double().reshape(-1)
        valid = t > 0
        p, t = p[valid], t[valid]
        self.sq += float(((p - t) ** 2).sum())
        self.rel += float(((p - t).abs() / t).sum())
        self.count += int(valid.sum())

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            return {"rmse": float("nan"), "abs_rel": float("nan")}
        return {"rmse": (self.sq / self.count) ** 0.5, "abs_rel": self.rel / self.count}


class NormalsMeter(Meter):
    """Angular error (degrees) between unit normals [B, 3, H, W] over valid (non-zero target) pixels."""

    def __init__(self) -> None:
        self.angles: list[Tensor] = []

    def update(self, pred: Tensor, target: Tensor) -> None:
        valid = target.abs().sum(1) > 0  # [B, H, W]
        p, t = functional.normalize(pred.double(), dim=1), functional.normalize(target.double(), dim=1)
        cos = (p * t).sum(1).clamp(-1, 1)
        self.angles.append(torch.rad2deg(torch.acos(cos[valid])))

    def compute(self) -> dict[str, float]:
        a = torch.cat(self.angles) if self.angles else torch.zeros(0, dtype=torch.float64)
        if a.numel() == 0:
            return {"mean_angle": float("nan"), "median_angle": float("nan"), "within_11_25": float("nan")}
        return {
            "mean_angle": a.mean().item(),
            "median_angle": a.median().item(),
            "within_11_25": 100 * (a < 11.25).double().mean().item(),
        }


class _ThresholdCounts:
    """True-positive / predicted / actual counts at every threshold of :data:`THRESHOLDS`."""

    def __init__(self) -> None:
        self.tp_p = np.zeros(len(THRESHOLDS))  # predicted positives that are correct (precision side)
        self.tp_r = np.zeros(len(THRESHOLDS))  # actual positives that are found (recall side)
        self.pred = np.zeros(len(THRESHOLDS))
        self.true = 0.0

    def f_scores(self, beta2: float) -> np.ndarray:
        precision = np.where(self.pred > 0, self.tp_p / np.maximum(self.pred, 1), 0.0)
        recall = self.tp_r / max(self.true, 1.0)
        denom = beta2 * precision + recall
        return np.where(denom > 0, (1 + beta2) * precision * recall / np.maximum(denom, 1e-12), 0.0)


class SaliencyMeter(Meter):
    """Max F-β (β² = 0.3) over thresholds and IoU at 0.5 of saliency probabilities [B, 1, H, W]."""

    def __init__(self) -> None:
        self.counts = _ThresholdCounts()
        self.inter = self.union = 0.0

    def update(self, pred: Tensor, target: Tensor) -> None:
        p, t = pred.double().reshape(-1), target.reshape(-1) > 0.5
        c = self.counts
        for i, th in enumerate(THRESHOLDS):
            b = p >= th
            c.tp_p[i] += float((b & t).sum())
            c.pred[i] += float(b.sum())
        c.tp_r[:] = c.tp_p
        c.true += float(t.sum())
        b = p >= 0.5
        self.inter += float((b & t).sum())
        self.union += float((b | t).sum())

    def compute(self) -> dict[str, float]:
        iou = self.inter / self.union if self.union > 0 else float("nan")
        return {"maxF": 100 * float(self.counts.f_scores(0.3).max()), "IoU": 100 * iou}


class EdgeMeter(Meter):
    """ODS F-score of edge probabilities [B, 1, H, W], matching within ``tolerance`` pixels."""

    def __init__(self, tolerance: int = 1) -> None:
        self.tol = int(tolerance)
        self.counts = _ThresholdCounts()

    def _dilate(self, x: Tensor) -> Tensor:
        if self.tol == 0:
            return x
        k = 2 * self.tol + 1
        return functional.max_pool2d(x.double(), k, stride=1, padding=self.tol) > 0

    def update(self, pred: Tensor, target: Tensor) -> None:
        p = pred.double().reshape(-1, 1, *pred.shape[-2:])
        t = (target.reshape(-1, 1, *target.shape[-2:]) > 0.5)
        t_near = self._dilate(t)
        c = self.counts
        for i, th in enumerate(THRESHOLDS):
            b = p >= th
            c.tp_p[i] += float((b & t_near).sum())
            c.tp_r[i] += float((t & self._dilate(b)).sum())
            c.pred[i] += float(b.sum())
        c.true += float(t.sum())

    def compute(self) -> dict[str, float]:
        return {"odsF": 100 * float(self.counts.f_scores(1.0).max())}


def make_meter(task: TaskSpec, edge_tolerance: int = 1) -> Meter:
    """The meter of ``task``'s kind."""
    kind = check_task(task)
    if kind is TaskKind.SEGMENTATION:
        return SegmentationMeter(task.channels)
    if kind is TaskKind.DEPTH:
        return DepthMeter()
    if kind is TaskKind.NORMALS:
        return NormalsMeter()
    if kind is TaskKind.SALIENCY:
        return SaliencyMeter()
    return EdgeMeter(edge_tolerance)


def primary(task: TaskSpec | str, metrics: Mapping[str, float]) -> tuple[str, float]:
    """(name, value) of the task's primary metric from its metric dictionary."""
    name = PRIMARY_METRIC[task_kind(task)]
    return name, float(metrics[name])


def delta_m(multi: Mapping[str, Mapping[str, float]], single: Mapping[str, Mapping[str, float]]) -> float:
    """Δm (%) of multi-task metrics against single-task baselines, over the tasks' primary metrics.

    ``multi`` and ``single`` map task name → metric dictionary; only tasks in both count (ValueError if
    none). Positive Δm = the multi-task model is better on average.
    """
    tasks = [t for t in multi if t in single]
    if not tasks:
        raise UserError(f"no task in common between {sorted(multi)} and the baselines {sorted(single)}")
    terms = []
    for t in tasks:
        name, m = primary(t, multi[t])
        if name not in single[t]:
            raise UserError(f"the baseline of task {t!r} lacks its primary metric {name!r} (has {sorted(single[t])})")
        s = float(single[t][name])
        sign = 1.0 if HIGHER_IS_BETTER[name] else -1.0
        terms.append(sign * (m - s) / s * 100.0)
    return float(np.mean(terms))


def load_baselines(paths: Sequence[str | Path]) -> dict[str, dict[str, float]]:
    """Single-task baseline metrics from JSON files, merged: each file is ``{task: {metric: value}}`` or
    the ``--json`` output of ``eval`` (its ``float`` part is used); UserError naming the file otherwise."""
    out: dict[str, dict[str, float]] = {}
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
        except ValueError as err:
            raise UserError(f"--baseline {path}: not JSON ({one_line(err)})") from None
        if isinstance(data, dict) and isinstance(data.get("float"), dict):
            data = data["float"]
        valid = isinstance(data, dict) and all(
            isinstance(m, dict) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in m.values())
            for m in data.values()
        )
        if not valid:
            raise UserError(f"--baseline {path}: expected {{task: {{metric: number}}}} or an `m3vit eval --json` file")
        out.update({task: {k: float(v) for k, v in m.items()} for task, m in data.items()})
    return out


__all__ = [
    "THRESHOLDS",
    "DepthMeter",
    "EdgeMeter",
    "Meter",
    "NormalsMeter",
    "SaliencyMeter",
    "SegmentationMeter",
    "delta_m",
    "load_baselines",
    "make_meter",
    "primary",
]
