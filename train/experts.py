"""Per-task expert pruning: routing statistics, pruning plans and the accuracy / bytes / latency sweep.

``m3vit experts stats CHECKPOINT CONFIG`` counts, per task and MoE layer, how often each expert is selected
and its summed gate weight over a dataset, from the float model and from the golden model (the
accelerator's integer routing), and checks that both select the same experts on at least
:data:`SELECTION_AGREEMENT` of the tokens. ``m3vit experts plan STATS RULE`` turns statistics into a
:class:`PrunePlan` (a small YAML/JSON file); ``m3vit experts sweep`` evaluates a family of plans.

Plan rules (per task and MoE layer, on the golden model's statistics by default):

* ``mass:F`` — keep the fewest experts (most mass first, ties → lower index) whose summed gate weight
  reaches the share F of the layer's total, and at least K;
* ``top:M`` — the M most used experts (selection count), M ≥ K;
* ``mk`` — the K most used experts (M = K);
* ``single`` — the most used expert alone with K = 1: the layer becomes a dense MLP.

A pruned layer routes over its kept experts only (docs/numerics.md §10); see docs/pruning.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch.utils.data import Dataset

from m3vit.codegen.config import DesignConfig, load_config
from m3vit.codegen.perf.arch import bias_bytes, container_bytes, expert_bytes, weight_bytes
from m3vit.errors import run_main
from m3vit.sim.pruning import KeptExperts, PruningError, expert_map
from m3vit.sim.reference import M3ViT, Routing, balance_loss
from m3vit.train.data import build_dataset, get_batch
from m3vit.train.predict import FixedPointPredictor, FloatPredictor, evaluate
from m3vit.train.tasks import HIGHER_IS_BETTER, PRIMARY_METRIC, task_kind

SOURCES = ("float", "fixed")
"""Routing statistics come from the float model and from the golden model (fixed point)."""

SELECTION_AGREEMENT = 0.85
"""Minimum share of tokens, per task and MoE layer, whose selected expert set is the same in the float and
the golden model. Measured on the shipped tiny model over 512 val images: 0.861 to 0.950 per layer. The
routers are well balanced, so many tokens sit near the top-K boundary, and the Q8.8 router weights shift
the logits: rounding only the float model's router weights already gives 0.89 to 0.98 (docs/pruning.md)."""

SHARE_TOLERANCE = 0.07
"""Maximum |float − fixed| share of tokens selecting an expert, per task, layer and expert (measured on the
tiny model over 512 images: at most 0.062)."""

SWEEP_RULES = ("mass:1.0", "mass:0.9", "mass:0.75", "mass:0.5", "mk", "single")
"""The plans ``m3vit experts sweep`` compares with the unpruned model."""


# ------------------------------------------------------------------------------------------ plans
class LayerPlan(BaseModel):
    """The experts one MoE layer keeps for one task, and its top-K (default: the config's)."""

    model_config = ConfigDict(extra="forbid")
    experts: list[int] = Field(min_length=1)
    top_k: int | None = None


class PrunePlan(BaseModel):
    """A per-task pruning plan: task → MoE block index → :class:`LayerPlan`; unlisted layers keep every expert."""

    model_config = ConfigDict(extra="forbid")
    name: str
    config: str | None = None  # the config's name the plan was made for (checked when given)
    rule: str = ""  # how it was made (informative)
    tasks: dict[str, dict[int, LayerPlan]]

    def expert_map(self, cfg: DesignConfig) -> dict[tuple[int, int], KeptExperts]:
        """The validated :data:`m3vit.sim.pruning.ExpertMap` for ``cfg`` (ValueError naming what is wrong)."""
        if self.config is not None and self.config != cfg.name:
            raise PruningError(f"plan {self.name!r} was made for config {self.config!r}, not {cfg.name!r}")
        try:
            return expert_map(cfg, {t: {b: (lp.experts, lp.top_k) for b, lp in layers.items()}
                                    for t, layers in self.tasks.items()})
        except ValueError as err:
            raise PruningError(f"plan {self.name!r}: {err}") from None

    def for_task(self, task: str) -> PrunePlan:
        """This plan restricted to one task (a task-specialised deployment)."""
        return self.model_copy(update={"tasks": {t: v for t, v in self.tasks.items() if t == task}})


def load_plan(path: str | Path) -> PrunePlan:
    """Read a plan from YAML or JSON; errors are one line naming the file and the field."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prune plan {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
        return PrunePlan.model_validate(data)
    except yaml.YAMLError as err:
        raise PruningError(f"prune plan {path}: not YAML/JSON ({str(err).splitlines()[0]})") from None
    except ValidationError as err:
        e = err.errors()[0]
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        raise PruningError(f"prune plan {path}: {where}: {e['msg']}") from None


def save_plan(plan: PrunePlan, path: str | Path) -> Path:
    """Write ``plan`` as YAML (``.yaml``/``.yml``) or JSON (anything else)."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = plan.model_dump(mode="json", exclude_none=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False) if path.suffix in (".yaml", ".yml")
                    else json.dumps(data, indent=2) + "\n")
    return path


# ------------------------------------------------------------------------------------------ statistics
@dataclass
class RoutingStats:
    """Selection counts and summed gate weights per (source, task, MoE layer, expert).

    ``count[s, t, l, e]`` tokens that selected expert e; ``mass[s, t, l, e]`` the sum of their combine
    weights (float softmax probability, or golden gate / 2^15); ``agreement[t, l]`` the share of tokens whose
    selected set is the same in both sources. ``tokens`` = images · T per task.
    """

    config: str
    tasks: list[str]
    blocks: list[int]
    num_experts: int
    top_k: int
    images: int
    tokens: int
    count: np.ndarray  # [2, tasks, layers, N] int
    mass: np.ndarray  # [2, tasks, layers, N] float
    agreement: np.ndarray  # [tasks, layers]

    @property
    def share_difference(self) -> float:
        """Largest |float − fixed| share of tokens selecting one expert (over tasks, layers, experts)."""
        return float(np.abs(self.count[0] - self.count[1]).max() / self.tokens)

    def agrees(self) -> bool:
        """Float and fixed routing agree within :data:`SELECTION_AGREEMENT` and :data:`SHARE_TOLERANCE`."""
        return bool(self.agreement.min() >= SELECTION_AGREEMENT and self.share_difference <= SHARE_TOLERANCE)

    def to_json(self) -> dict[str, Any]:
        per_task = {}
        for ti, task in enumerate(self.tasks):
            per_task[task] = {
                str(b): {**{s: {"count": self.count[si, ti, li].tolist(),
                                "mass": [round(float(v), 6) for v in self.mass[si, ti, li]]}
                            for si, s in enumerate(SOURCES)},
                         "selection_agreement": float(self.agreement[ti, li])}
                for li, b in enumerate(self.blocks)
            }
        return {"config": self.config, "num_experts": self.num_experts, "top_k": self.top_k,
                "moe_blocks": self.blocks, "images": self.images, "tokens_per_task": self.tokens,
                "selection_agreement": {"min": float(self.agreement.min()), "required": SELECTION_AGREEMENT},
                "share_difference": {"max": self.share_difference, "allowed": SHARE_TOLERANCE},
                "tasks": per_task}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RoutingStats:
        tasks, blocks = list(data["tasks"]), [int(b) for b in data["moe_blocks"]]
        arr = {k: np.array([[[data["tasks"][t][str(b)][s][k] for b in blocks] for t in tasks] for s in SOURCES])
               for k in ("count", "mass")}
        agreement = np.array([[data["tasks"][t][str(b)]["selection_agreement"] for b in blocks] for t in tasks])
        return cls(data["config"], tasks, blocks, int(data["num_experts"]), int(data["top_k"]), int(data["images"]),
                   int(data["tokens_per_task"]), arr["count"].astype(np.int64), arr["mass"].astype(float), agreement)


def routing_stats(
    model: M3ViT, dataset: Dataset, limit: int | None = None, batch_size: int = 32
) -> RoutingStats:
    """Routing statistics of ``model`` (as pruned, if it is) over the first ``limit`` images of ``dataset``."""
    cfg = model.cfg
    m = cfg.model
    blocks = sorted(m.moe_block_set)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    count = np.zeros((2, len(m.tasks), len(blocks), m.num_experts), np.int64)
    mass = np.zeros(count.shape)
    same = np.zeros((len(m.tasks), len(blocks)), np.int64)
    fixed = FixedPointPredictor(model)
    golden: list[Any] = []
    fixed.on_result = golden.append
    model.eval()
    for lo in range(0, n, batch_size):
        images = get_batch(dataset, range(lo, min(n, lo + batch_size)))["image"]
        for ti, task in enumerate(m.task_names):
            with torch.no_grad():
                routing = model(images, task).routing
            golden.clear()
            fixed.tokens(images, task)
            for li, b in enumerate(blocks):
                idx = routing[b].indices.reshape(-1, routing[b].indices.shape[-1]).numpy()  # [B·T, K']
                np.add.at(count[0, ti, li], idx.ravel(), 1)
                np.add.at(mass[0, ti, li], idx.ravel(), routing[b].probs.reshape(-1).double().numpy())
                g_idx = np.concatenate([r.routing[b].experts for r in golden])  # [B·T, K']
                g_w = np.concatenate([r.routing[b].gates for r in golden])
                np.add.at(count[1, ti, li], g_idx.ravel(), 1)
                np.add.at(mass[1, ti, li], g_idx.ravel(), g_w.ravel() * 2.0**-15)
                same[ti, li] += int((np.sort(idx, axis=1) == np.sort(g_idx, axis=1)).all(axis=1).sum())
    return RoutingStats(cfg.name, m.task_names, blocks, m.num_experts, m.top_k, n, n * m.num_tokens, count, mass,
                        same / (n * m.num_tokens))


def plot_heatmap(stats: RoutingStats, path: str | Path) -> Path:
    """Task × layer × expert heatmap of the selection share (tokens that chose the expert / tokens), float and
    fixed side by side; each cell is annotated with its share of the layer's gate mass in %."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nt, nl, ne = len(stats.tasks), len(stats.blocks), stats.num_experts
    fig, axes = plt.subplots(nt, 2, figsize=(2.5 + 0.55 * ne * 2, 1.0 + (0.5 * nl + 0.9) * nt), squeeze=False,
                             layout="constrained")
    share = stats.count / stats.tokens
    mass_pct = 100 * stats.mass / np.maximum(stats.mass.sum(-1, keepdims=True), 1e-12)
    image = None
    for ti, task in enumerate(stats.tasks):
        for si, src in enumerate(SOURCES):
            ax = axes[ti, si]
            image = ax.imshow(share[si, ti], vmin=0, vmax=share.max(), cmap="viridis", aspect="auto")
            ax.set_title(f"{task} — {src}", fontsize=9)
            ax.set_xticks(range(ne))
            ax.set_yticks(range(nl), [f"block {b}" for b in stats.blocks])
            ax.set_xlabel("expert", fontsize=8)
            for li in range(nl):
                for e in range(ne):
                    ax.text(e, li, f"{mass_pct[si, ti, li, e]:.0f}", ha="center", va="center", fontsize=6,
                            color="white" if share[si, ti, li, e] < 0.6 * share.max() else "black")
    fig.colorbar(image, ax=axes, shrink=0.9, label="share of tokens selecting it")
    fig.suptitle(f"{stats.config}: expert selection over {stats.images} images (cell text: % of the layer's gate "
                 "mass)", fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------ plan rules
def _order(values: np.ndarray) -> list[int]:
    """Experts by decreasing value, ties → lower index."""
    return sorted(range(len(values)), key=lambda e: (-values[e], e))


def layer_experts(count: np.ndarray, mass: np.ndarray, rule: str, top_k: int) -> tuple[list[int], int]:
    """One layer's kept experts (ascending) and top-K under ``rule`` (see the module doc)."""
    kind, _, arg = rule.partition(":")
    if kind == "mass":
        share = float(arg)
        if not 0 < share <= 1:
            raise PruningError(f"rule {rule!r}: the gate-mass share must be in (0, 1]")
        total, kept, acc = float(mass.sum()), [], 0.0
        for e in _order(mass):
            if len(kept) >= top_k and (acc >= share * total * (1 - 1e-9) or mass[e] <= 0):
                break
            kept.append(e)
            acc += float(mass[e])
        return sorted(kept), top_k
    if kind == "top":
        m = int(arg)
        if not top_k <= m <= len(count):
            raise PruningError(f"rule {rule!r}: M = {m} must be in [K = {top_k}, N = {len(count)}]")
        return sorted(_order(count)[:m]), top_k
    if kind == "mk" and not arg:
        return sorted(_order(count)[:top_k]), top_k
    if kind == "single" and not arg:
        return _order(count)[:1], 1
    raise PruningError(f"unknown plan rule {rule!r}; rules are mass:F (0 < F ≤ 1), top:M (M ≥ K), mk, single")


def make_plan(stats: RoutingStats, rule: str, source: str = "fixed", name: str | None = None) -> PrunePlan:
    """The plan of ``rule`` for every task and MoE layer, from ``source`` ("fixed" or "float") statistics."""
    if source not in SOURCES:
        raise PruningError(f"statistics source {source!r} must be one of {list(SOURCES)}")
    si = SOURCES.index(source)
    tasks: dict[str, dict[int, LayerPlan]] = {}
    for ti, task in enumerate(stats.tasks):
        tasks[task] = {}
        for li, b in enumerate(stats.blocks):
            experts, k = layer_experts(stats.count[si, ti, li], stats.mass[si, ti, li], rule, stats.top_k)
            tasks[task][b] = LayerPlan(experts=experts, top_k=None if k == stats.top_k else k)
    return PrunePlan(name=name or rule.replace(":", "_"), config=stats.config, rule=f"{rule} ({source} statistics)",
                     tasks=tasks)


# ------------------------------------------------------------------------------------------ bytes
def stored_weight_bytes(cfg: DesignConfig, kept: Mapping[int, int] | None = None) -> dict[str, int]:
    """Backbone weight bytes of a one-task deployment, from the config's container sizes (perf.arch):
    every layer's weights and biases, LayerNorm parameters, position embeddings, that task's routers and
    ``kept[block]`` experts per MoE layer (default all N). Returns ``{"total", "experts"}``."""
    m, n = cfg.model, cfg.numerics
    wb, bb = weight_bytes(cfg), bias_bytes(cfg)
    d, c = m.dim, m.in_channels * m.patch_size**2
    total = d * c * wb + d * bb + m.num_tokens * d * container_bytes(n.act.bits)
    experts = 0
    for b in range(m.depth):
        total += 4 * d * container_bytes(n.ln_param.bits) + 4 * d * d * wb + 4 * d * bb  # norms, qkv, proj
        if m.is_moe(b):
            total += m.num_experts * (d * wb + bb)  # the task's router
            experts += (m.num_experts if kept is None else kept.get(b, m.num_experts)) * expert_bytes(cfg)
        else:
            total += 2 * d * m.mlp_hidden * wb + (m.mlp_hidden + d) * bb
    return {"total": total + experts, "experts": experts}


# ------------------------------------------------------------------------------------------ sweep
def _primary(task: str, metrics: Mapping[str, float]) -> tuple[str, float]:
    name = PRIMARY_METRIC[task_kind(task)]
    return name, float(metrics[name])


def evaluate_plan(
    model: M3ViT, plan: PrunePlan | None, task: str, data: Dataset, limit: int | None = None
) -> dict[str, Any]:
    """One task under ``plan`` (None: unpruned): float and fixed metrics, stored / fetched expert bytes and the
    modeled latency (``perf.evaluate`` with each image's golden queue loads, averaged over the images)."""
    from m3vit.codegen import perf

    cfg = model.cfg
    spec = [t for t in cfg.model.tasks if t.name == task]
    emap = plan.for_task(task).expert_map(cfg) if plan is not None else {}
    model.prune_experts(emap)
    try:
        float_metrics = evaluate(FloatPredictor(model), data, spec, limit=limit)[task]
        fixed = FixedPointPredictor(model)
        loads: list[dict[int, list[int]]] = []
        fixed.on_result = lambda res: loads.append({b: r.load.tolist() for b, r in res.routing.items()})
        fixed_metrics = evaluate(fixed, data, spec, limit=limit)[task]
    finally:
        model.prune_experts(None)
    t = cfg.model.task_index(task)
    kept = {b: len(k.experts) for (tt, b), k in emap.items() if tt == t}
    stored = stored_weight_bytes(cfg, kept)
    used = np.mean([sum(int(np.count_nonzero(v)) for v in ld.values()) for ld in loads])
    latency = np.mean([perf.evaluate(cfg, loads=ld).latency_ms for ld in loads])
    metric, f = _primary(task, float_metrics)
    return {
        "plan": plan.name if plan is not None else "full", "task": task, "metric": metric,
        "float": f, "fixed": _primary(task, fixed_metrics)[1],
        "experts_kept": {str(b): kept.get(b, cfg.model.num_experts) for b in sorted(cfg.model.moe_block_set)},
        "weight_bytes_stored": stored["total"], "expert_bytes_stored": stored["experts"],
        "expert_bytes_fetched_per_image": float(used * expert_bytes(cfg)),
        "latency_ms": float(latency), "images": len(loads),
        "float_metrics": float_metrics, "fixed_metrics": fixed_metrics,
    }


def sweep(
    model: M3ViT, stats: RoutingStats, data: Dataset, rules: Sequence[str] = SWEEP_RULES,
    limit: int | None = None, source: str = "fixed",
) -> list[dict[str, Any]]:
    """Every task under the unpruned model and each plan of ``rules`` (see :func:`evaluate_plan`)."""
    plans: list[PrunePlan | None] = [None, *(make_plan(stats, r, source) for r in rules)]
    return [evaluate_plan(model, p, task, data, limit) for task in model.cfg.model.task_names for p in plans]


def hardware_sweep(cfg: DesignConfig, images: int = 2, rules: Sequence[str] = SWEEP_RULES,
                   seed: int = 0) -> list[dict[str, Any]]:
    """The sweep's hardware columns for a design without a trained model: random trained-scale weights
    (:func:`m3vit.sim.csim.random_model`), plans from the golden routing statistics of ``images`` random
    images per task, and per task and plan the weight bytes stored, the expert bytes fetched per image and
    the modeled latency with each image's golden queue loads (the pruned router of docs/numerics.md §10).
    Task metrics are not meaningful on random weights and are not reported."""
    from m3vit.codegen import perf
    from m3vit.sim.csim import random_model
    from m3vit.sim.golden import GoldenModel
    from m3vit.sim.inputs import random_quantized_image

    m = cfg.model
    blocks = sorted(m.moe_block_set)
    q = random_model(cfg, seed)
    imgs = [random_quantized_image(cfg, seed + i) for i in range(images)]
    count = np.zeros((2, len(m.tasks), len(blocks), m.num_experts), np.int64)
    mass = np.zeros(count.shape)
    golden = GoldenModel(cfg, q)
    for ti in range(len(m.tasks)):
        for img in imgs:
            res = golden.run(img, ti, taps=False)
            for li, b in enumerate(blocks):
                r = res.routing[b]
                np.add.at(count[:, ti, li], (slice(None), r.experts.ravel()), 1)
                np.add.at(mass[:, ti, li], (slice(None), r.experts.ravel()), r.gates.ravel() * 2.0**-15)
    stats = RoutingStats(cfg.name, m.task_names, blocks, m.num_experts, m.top_k, images, images * m.num_tokens,
                         count, mass, np.ones((len(m.tasks), len(blocks))))
    rows = []
    for plan in [None, *(make_plan(stats, r, "fixed") for r in rules)]:
        for ti, task in enumerate(m.task_names):
            emap = plan.for_task(task).expert_map(cfg) if plan is not None else {}
            g = GoldenModel(cfg, q, experts=emap)
            loads = [{b: r.load.tolist() for b, r in g.run(img, ti, taps=False).routing.items()} for img in imgs]
            kept = {b: len(k.experts) for (tt, b), k in emap.items() if tt == ti}
            stored = stored_weight_bytes(cfg, kept)
            used = np.mean([sum(int(np.count_nonzero(v)) for v in ld.values()) for ld in loads])
            rows.append({
                "plan": plan.name if plan is not None else "full", "task": task,
                "experts_kept": {str(b): kept.get(b, m.num_experts) for b in blocks},
                "weight_bytes_stored": stored["total"], "expert_bytes_stored": stored["experts"],
                "expert_bytes_fetched_per_image": float(used * expert_bytes(cfg)),
                "latency_ms": float(np.mean([perf.evaluate(cfg, loads=ld).latency_ms for ld in loads])),
                "images": images,
            })
    return rows


def hardware_sweep_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """:func:`hardware_sweep` as a markdown table."""
    out = ["| task | plan | experts kept / layer | weight KiB stored | expert KiB fetched / image "
           "| modeled latency ms |", "|---|---|---|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['task']} | {r['plan']} | {','.join(str(v) for v in r['experts_kept'].values())} | "
                   f"{r['weight_bytes_stored'] / 1024:.1f} | {r['expert_bytes_fetched_per_image'] / 1024:.1f} | "
                   f"{r['latency_ms']:.2f} |")
    return "\n".join(out)


def sweep_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The sweep as a markdown table."""
    lines = ["| task | plan | experts kept / layer | metric | float | fixed | weight KiB stored | "
             "expert KiB fetched / image | modeled latency µs |", "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        kept = ",".join(str(v) for v in r["experts_kept"].values())
        lines.append(f"| {r['task']} | {r['plan']} | {kept} | {r['metric']} | {r['float']:.4f} | {r['fixed']:.4f} | "
                     f"{r['weight_bytes_stored'] / 1024:.1f} | {r['expert_bytes_fetched_per_image'] / 1024:.1f} | "
                     f"{r['latency_ms'] * 1e3:.1f} |")
    return "\n".join(lines)


def choose_plan(rows: Sequence[Mapping[str, Any]], task: str, tolerance: float = 0.01) -> str:
    """The plan with the fewest fetched expert bytes whose fixed-point metric is within ``tolerance``
    (relative) of the unpruned model's — or no worse; "full" when no plan qualifies."""
    mine = [r for r in rows if r["task"] == task]
    base = next(r for r in mine if r["plan"] == "full")
    higher = HIGHER_IS_BETTER[base["metric"]]

    def ok(r: Mapping[str, Any]) -> bool:
        loss = (base["fixed"] - r["fixed"]) if higher else (r["fixed"] - base["fixed"])
        return loss <= tolerance * abs(base["fixed"])

    return min((r for r in mine if ok(r)), key=lambda r: (r["expert_bytes_fetched_per_image"], r["latency_ms"]))[
        "plan"]


# ------------------------------------------------------------------------------------------ fine-tuning
class ProgressivePruner:
    """Recovery fine-tuning towards a plan: the plan's pruned experts are dropped in ``stages`` steps, spread
    evenly over the first ``until`` share of ``steps`` optimizer steps; at each stage, per task and layer, the
    least-used of the experts still to drop go first (gate mass routed to them since the previous stage,
    ties → higher index). A layer routes top-min(K, kept) until it reaches the plan, then the plan's top-K.

    :meth:`aux` is the load-balancing loss adapted to pruning: cv²(importance) + cv²(load) over each MoE
    layer's currently kept experts only (the softmax over the kept experts, as the pruned router has it).
    """

    def __init__(self, model: M3ViT, target: Mapping[tuple[int, int], KeptExperts], steps: int, stages: int = 3,
                 until: float = 0.5, balance_weight: float = 0.01) -> None:
        if stages < 1 or not 0 < until <= 1:
            raise PruningError(f"prune stages {stages} must be ≥ 1 and the drop window {until} in (0, 1]")
        m = model.cfg.model
        self.model, self.target, self.top_k, self.n = model, dict(target), m.top_k, m.num_experts
        self.stages, self.balance_weight = stages, float(balance_weight)
        self.drop_at = [max(1, round(steps * until * (j + 1) / stages)) for j in range(stages)]
        self.kept = {key: list(range(self.n)) for key in self.target}
        self.usage = {key: torch.zeros(self.n, dtype=torch.float64) for key in self.target}
        self.stage = 0
        self.apply()

    def current(self) -> dict[tuple[int, int], KeptExperts]:
        """The expert map of the current stage."""
        out = {}
        for key, kept in self.kept.items():
            final = tuple(kept) == self.target[key].experts
            out[key] = KeptExperts(tuple(kept), self.target[key].top_k if final else min(self.top_k, len(kept)))
        return out

    def apply(self) -> None:
        self.model.prune_experts(self.current())

    def observe(self, task: int, routing: Mapping[int, Any]) -> None:
        """Accumulate the gate mass each expert received in one forward pass of ``task``."""
        for b, r in routing.items():
            if (task, b) in self.usage:
                self.usage[(task, b)].index_add_(0, r.indices.detach().reshape(-1).cpu(),
                                                 r.probs.detach().reshape(-1).double().cpu())

    def step(self, done: int, world: int = 1) -> bool:
        """After ``done`` optimizer steps: run every stage that is due; True when experts were dropped."""
        dropped = False
        while self.stage < self.stages and done >= self.drop_at[self.stage]:
            self.stage += 1
            for key, usage in self.usage.items():
                if world > 1:
                    import torch.distributed as dist

                    dist.all_reduce(usage)  # every process drops the same experts
                pending = [e for e in self.kept[key] if e not in self.target[key].experts]
                total = self.n - len(self.target[key].experts)
                count = len(pending) - (total - round(total * self.stage / self.stages))
                for e in sorted(pending, key=lambda e: (float(usage[e]), -e))[:count]:
                    self.kept[key].remove(e)
                    dropped = True
                usage.zero_()
            self.apply()
        return dropped

    def finish(self) -> None:
        """Drop whatever is left (the model then routes exactly as the plan says)."""
        self.step(self.drop_at[-1])

    def aux(self, task: int, routing: Mapping[int, Any]) -> torch.Tensor:
        """Σ over MoE layers of the balance loss (:func:`m3vit.sim.reference.balance_loss`, M³ViT's definition)
        restricted to the kept experts: the logits of the kept experts only, the routed indices renumbered
        among them (all N when the layer is not pruned)."""
        total = torch.zeros((), dtype=torch.float32)
        for b, r in routing.items():
            kept = torch.tensor(self.kept.get((task, b), range(self.n)), device=r.logits.device)
            position = torch.full((self.n,), -1, dtype=torch.long, device=kept.device)
            position[kept] = torch.arange(len(kept), device=kept.device)
            top_k = r.indices.shape[-1]
            clean = r.clean_logits.index_select(-1, kept) if r.clean_logits is not None else None
            kept_routing = Routing(indices=position[r.indices], probs=r.probs, logits=r.logits.index_select(-1, kept),
                                   clean_logits=clean, noise_std=r.noise_std)
            total = total + balance_loss(kept_routing, top_k).float()
        return total


# ------------------------------------------------------------------------------------------ CLI
def _model_and_data(args: argparse.Namespace) -> tuple[M3ViT, Dataset]:
    from m3vit.train.checkpoint import load_model

    cfg = load_config(args.config)
    model = load_model(args.checkpoint, cfg)
    data = build_dataset(cfg, "synthetic", args.split, size=args.size, seed=args.data_seed)
    return model, data


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="model weights (.safetensors), e.g. models/tiny.safetensors")
    p.add_argument("config", help="config file or preset name, e.g. tiny")
    p.add_argument("--images", type=int, default=256, help="images of the synthetic split to use (default 256)")
    p.add_argument("--split", default="val", help="synthetic split (default val)")
    p.add_argument("--size", type=int, default=None, help="synthetic split size (default: the split's default)")
    p.add_argument("--data-seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="m3vit experts", description="Per-task expert routing statistics, pruning "
                                "plans and the pruning sweep (docs/pruning.md).")
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    s = sub.add_parser("stats", help="selection counts and gate mass per task, layer and expert (float and fixed)")
    _common(s)
    s.add_argument("--json", default=None, help="statistics JSON (default build/experts/<config>/stats.json)")
    s.add_argument("--heatmap", default=None, help="heatmap PNG (default next to the JSON)")
    s = sub.add_parser("plan", help="a pruning plan from statistics: RULE = mass:F, top:M, mk or single")
    s.add_argument("stats", help="statistics JSON written by 'm3vit experts stats'")
    s.add_argument("rule", help="mass:F (keep share F of the gate mass), top:M, mk (M = K) or single (K = 1)")
    s.add_argument("-o", "--output", required=True, help="plan file to write (.yaml or .json)")
    s.add_argument("--source", choices=SOURCES, default="fixed", help="statistics to plan from (default fixed)")
    s.add_argument("--name", default=None, help="plan name (default from the rule)")
    s = sub.add_parser("sweep", help="metric float/fixed, weight bytes and modeled latency for a family of plans")
    _common(s)
    s.add_argument("--rules", nargs="+", default=list(SWEEP_RULES), help=f"plan rules (default {SWEEP_RULES})")
    s.add_argument("--source", choices=SOURCES, default="fixed")
    s.add_argument("--json", default=None, help="sweep JSON (default build/experts/<config>/sweep.json)")
    s.add_argument("--plans-dir", default=None, help="also write each plan here as YAML")
    s = sub.add_parser("hw-sweep", help="the sweep's hardware columns on random trained-scale weights (no "
                       "checkpoint: bytes stored and fetched, modeled latency; no task metrics)")
    s.add_argument("config", help="config file or preset name, e.g. m3vit_small_pascal_dse")
    s.add_argument("--images", type=int, default=2, help="random images per task (default 2)")
    s.add_argument("--rules", nargs="+", default=list(SWEEP_RULES), help=f"plan rules (default {SWEEP_RULES})")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json", default=None, help="JSON (default build/experts/<config>/hw_sweep.json)")
    return p


def command(argv: Sequence[str] | None = None) -> int:
    """``m3vit experts stats|plan|sweep``; returns an exit code, raises the toolkit's errors."""
    from m3vit import build_dir

    args = build_parser().parse_args(argv)
    if args.action == "plan":
        stats = RoutingStats.from_json(json.loads(Path(args.stats).read_text()))
        plan = make_plan(stats, args.rule, args.source, args.name)
        save_plan(plan, args.output)
        for task, layers in plan.tasks.items():
            print(f"{task}: " + "; ".join(f"block {b} keeps {lp.experts}" + (f" (top-{lp.top_k})" if lp.top_k else "")
                                         for b, lp in layers.items()))
        print(f"wrote {args.output}")
        return 0
    if args.images < 1:
        raise PruningError(f"--images must be at least 1, got {args.images}")
    if args.action == "hw-sweep":
        cfg = load_config(args.config)
        rows = hardware_sweep(cfg, args.images, args.rules, args.seed)
        path = Path(args.json) if args.json else build_dir("experts", cfg.name) / "hw_sweep.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"config": cfg.name, "weights": f"random trained-scale (seed {args.seed})",
                                    "images": args.images, "rows": rows}, indent=1) + "\n")
        print(hardware_sweep_table(rows))
        print(f"wrote {path} (random weights: the plans and bytes are real, task metrics are not reported)")
        return 0
    model, data = _model_and_data(args)
    out = build_dir("experts", model.cfg.name)
    stats = routing_stats(model, data, limit=args.images)
    if args.action == "stats":
        path = Path(args.json) if args.json else out / "stats.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**stats.to_json(), "checkpoint": str(args.checkpoint)}, indent=1) + "\n")
        png = plot_heatmap(stats, args.heatmap or path.with_suffix(".png"))
        for ti, task in enumerate(stats.tasks):
            for li, b in enumerate(stats.blocks):
                share = stats.count[1, ti, li] / stats.tokens
                print(f"{task} block {b}: selected share {np.round(share, 3).tolist()} "
                      f"(float/fixed agree on {stats.agreement[ti, li]:.2%} of tokens)")
        print(f"wrote {path} and {png}")
        print(f"float vs fixed: selected sets agree on ≥ {stats.agreement.min():.2%} of every layer's tokens "
              f"(required {SELECTION_AGREEMENT:.0%}); expert shares differ by ≤ {stats.share_difference:.3f} "
              f"(allowed {SHARE_TOLERANCE})")
        return 0 if stats.agrees() else 1
    rows = sweep(model, stats, data, args.rules, limit=args.images, source=args.source)
    if args.plans_dir:
        for rule in args.rules:
            save_plan(make_plan(stats, rule, args.source), Path(args.plans_dir) / f"{rule.replace(':', '_')}.yaml")
    choice = {t: choose_plan(rows, t) for t in model.cfg.model.task_names}
    path = Path(args.json) if args.json else out / "sweep.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"config": model.cfg.name, "checkpoint": str(args.checkpoint), "images": args.images,
                                "rows": rows, "chosen": choice}, indent=1) + "\n")
    print(sweep_table(rows))
    print("plan to ship (fewest fetched expert bytes within 1 % of the unpruned fixed-point metric): "
          + ", ".join(f"{t}: {p}" for t, p in choice.items()))
    print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m m3vit.train.experts``: :func:`command` with one-line errors."""
    return run_main(command, argv, prog="m3vit experts")


__all__ = [
    "SELECTION_AGREEMENT",
    "SHARE_TOLERANCE",
    "SWEEP_RULES",
    "LayerPlan",
    "ProgressivePruner",
    "PrunePlan",
    "RoutingStats",
    "choose_plan",
    "command",
    "evaluate_plan",
    "hardware_sweep",
    "layer_experts",
    "load_plan",
    "main",
    "make_plan",
    "plot_heatmap",
    "routing_stats",
    "save_plan",
    "stored_weight_bytes",
    "sweep",
    "sweep_table",
]

if __name__ == "__main__":
    sys.exit(main())
