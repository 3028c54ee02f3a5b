"""What a task *is*, decided once from its name: its kind, loss, prediction and target layout.

Every other module (data, training, metrics, accuracy) asks :func:`task_kind` instead of matching task
names itself. Kinds and their conventions (targets are per image; a batch adds a leading B):

=============  ==============================  ==============================  ============================
kind           task names                      target                          training loss
=============  ==============================  ==============================  ============================
segmentation   semseg, seg, human_parts, parts int64 [H, W], 255 = ignore      cross-entropy
depth          depth                           float [1, H, W], ≤ 0 = invalid  L1 over valid pixels
normals        normals, normal                 float [3, H, W] unit, 0 = none  L1 of unit vectors (valid)
saliency       saliency, sal                   float [1, H, W] in {0, 1}       BCE with logits
edge           edge, edges                     float [1, H, W] in {0, 1}       class-balanced BCE
=============  ==============================  ==============================  ============================
"""

from __future__ import annotations

from enum import Enum

import torch
from torch import Tensor
from torch.nn import functional

from m3vit.codegen.config import ConfigError, TaskSpec

IGNORE_INDEX = 255
"""Segmentation label that is ignored by the loss and the metrics."""


class TaskKind(str, Enum):
    """The kind of a dense-prediction task (see the module table)."""

    SEGMENTATION = "segmentation"
    DEPTH = "depth"
    NORMALS = "normals"
    SALIENCY = "saliency"
    EDGE = "edge"


TASK_KINDS: dict[str, TaskKind] = {
    "semseg": TaskKind.SEGMENTATION,
    "seg": TaskKind.SEGMENTATION,
    "human_parts": TaskKind.SEGMENTATION,
    "parts": TaskKind.SEGMENTATION,
    "depth": TaskKind.DEPTH,
    "normals": TaskKind.NORMALS,
    "normal": TaskKind.NORMALS,
    "saliency": TaskKind.SALIENCY,
    "sal": TaskKind.SALIENCY,
    "edge": TaskKind.EDGE,
    "edges": TaskKind.EDGE,
}
"""Task name → kind: the one place where a task's meaning is inferred from its name."""

REQUIRED_CHANNELS: dict[TaskKind, int | None] = {
    TaskKind.SEGMENTATION: None,  # = number of classes, at least 2
    TaskKind.DEPTH: 1,
    TaskKind.NORMALS: 3,
    TaskKind.SALIENCY: 1,
    TaskKind.EDGE: 1,
}

HIGHER_IS_BETTER: dict[str, bool] = {
    "mIoU": True, "pixel_acc": True, "rmse": False, "abs_rel": False, "mean_angle": False,
    "median_angle": False, "within_11_25": True, "maxF": True, "IoU": True, "odsF": True,
}
"""Direction of every metric :mod:`m3vit.train.metrics` reports (used by Δm)."""

PRIMARY_METRIC: dict[TaskKind, str] = {
    TaskKind.SEGMENTATION: "mIoU",
    TaskKind.DEPTH: "rmse",
    TaskKind.NORMALS: "mean_angle",
    TaskKind.SALIENCY: "maxF",
    TaskKind.EDGE: "odsF",
}
"""The metric that represents each kind in Δm and in summaries."""


def task_kind(task: str | TaskSpec) -> TaskKind:
    """Kind of a task (a name or a TaskSpec); ValueError naming the known task names otherwise."""
    name = task.name if isinstance(task, TaskSpec) else task
    try:
        return TASK_KINDS[name]
    except KeyError:
        raise ConfigError(
            f"task {name!r} has no known kind; name tasks after one of {sorted(TASK_KINDS)} (see m3vit.train.tasks)"
        ) from None


def check_task(task: TaskSpec) -> TaskKind:
    """The task's kind, after checking its channel count fits that kind (ValueError otherwise)."""
    kind = task_kind(task)
    need = REQUIRED_CHANNELS[kind]
    if need is None and task.channels < 2:
        raise ConfigError(f"task {task.name!r} ({kind.value}) needs ≥ 2 channels (classes); got {task.channels}")
    if need is not None and task.channels != need:
        raise ConfigError(f"task {task.name!r} ({kind.value}) needs {need} channel(s); got {task.channels}")
    return kind


# ------------------------------------------------------------------------------------------- losses
def _valid_depth(target: Tensor) -> Tensor:
    return target > 0


def _valid_normals(target: Tensor) -> Tensor:
    return target.abs().sum(1, keepdim=True) > 0  # [B, 1, H, W]


def task_loss(kind: TaskKind, out: Tensor, target: Tensor) -> Tensor:
    """Training loss of one task: head output ``out`` [B, ch, H, W] against a batch of targets."""
    if kind is TaskKind.SEGMENTATION:
        return functional.cross_entropy(out.float(), target.long(), ignore_index=IGNORE_INDEX)
    if kind is TaskKind.DEPTH:
        valid = _valid_depth(target)
        return (out - target).abs()[valid].mean() if valid.any() else out.sum() * 0
    if kind is TaskKind.NORMALS:
        valid = _valid_normals(target).expand_as(out)
        pred = functional.normalize(out, dim=1)
        return (pred - target).abs()[valid].mean() if valid.any() else out.sum() * 0
    if kind is TaskKind.SALIENCY:
        return functional.binary_cross_entropy_with_logits(out, target.float())
    if kind is TaskKind.EDGE:
        # edges are rare: weight positives by the fraction of negatives (and vice versa), per batch
        t = target.float()
        pos = t.mean().clamp(1e-3, 1 - 1e-3)
        weight = torch.where(t > 0.5, 1 - pos, pos)
        return functional.binary_cross_entropy_with_logits(out, t, weight=weight) * 2
    raise AssertionError(kind)


def predict(kind: TaskKind, out: Tensor) -> Tensor:
    """Head output [B, ch, H, W] → prediction: labels [B, H, W], depth [B, 1, H, W], unit normals, or
    probabilities in [0, 1] (saliency, edge)."""
    if kind is TaskKind.SEGMENTATION:
        return out.argmax(1)
    if kind is TaskKind.DEPTH:
        return out
    if kind is TaskKind.NORMALS:
        return functional.normalize(out, dim=1)
    return torch.sigmoid(out)


__all__ = [
    "HIGHER_IS_BETTER",
    "IGNORE_INDEX",
    "PRIMARY_METRIC",
    "TASK_KINDS",
    "TaskKind",
    "check_task",
    "predict",
    "task_kind",
    "task_loss",
]
