"""Multi-task M³ViT training: ``m3vit train CONFIG`` / ``python -m m3vit.train.train CONFIG``.

Each step runs the backbone once per task on the same images (multi-gate: task t's routers; the experts
are shared) and minimises Σ_t w_t · L_t + the load-balancing loss (0.01 · Σ_MoE layers cv²(importance) +
cv²(load), per task pass). Losses per task kind come from :mod:`m3vit.train.tasks`.

* SGD (momentum 0.9) with the poly schedule lr·(1 − step/steps)^0.9 by default, AdamW as an option,
  optional linear warm-up; no weight decay on norms, biases and embeddings.
* ``--clip-to-format`` (on by default) keeps every backbone weight inside its fixed-point format after
  each step, so quantising the trained model never saturates a weight.
* Checkpoints (safetensors) in ``--out-dir``: ``model.safetensors`` (weights + config + metadata) and
  ``train_state.safetensors`` (optimizer, step, RNG); ``--resume`` continues from them exactly.
* Multi-process data parallel with ``torch.distributed`` (gloo on CPU) when launched by torchrun::

      python -m torch.distributed.run --standalone --nproc_per_node 2 -m m3vit.train.train tiny

  ``--batch-size`` is the *global* batch: each of the W processes takes its 1/W slice of the same
  global batch, and DDP averages the gradients, so W processes follow the 1-process run (up to the
  balance loss, which each process computes over its own tokens, and float summation order).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from m3vit import build_dir
from m3vit.codegen.config import DesignConfig, FixedFormat, load_config, with_overrides
from m3vit.errors import ArgumentParser, UserError, float_range, int_range, run_main
from m3vit.sim.reference import BALANCE_LOSS_WEIGHT, ExpertLinear, M3ViT, Router, TaskHead
from m3vit.train.data import DATASETS, build_dataset, get_batch
from m3vit.train.tasks import TaskKind, check_task, task_loss

DEFAULT_LR = {"sgd": 0.05, "adamw": 1e-3}
DEFAULT_WEIGHT_DECAY = {"sgd": 1e-4, "adamw": 0.05}


@dataclass
class TrainOptions:
    """Everything a training run depends on (the CLI flags of ``m3vit train``)."""

    config: str = "tiny"
    out_dir: str | None = None  # default build_dir("train", <config name>): build/train/<config name>
    steps: int = 3000
    batch_size: int = 64  # global, over all processes
    optimizer: str = "sgd"  # sgd | adamw
    lr: float | None = None  # default DEFAULT_LR[optimizer]
    momentum: float = 0.9
    weight_decay: float | None = None  # default DEFAULT_WEIGHT_DECAY[optimizer]
    poly_power: float = 0.9
    warmup_steps: int = 0
    grad_clip: float | None = 1.0  # max global gradient norm (None = off)
    seed: int = 0  # model initialisation and data order
    dataset: str = "synthetic"
    data_root: str | None = None
    data_seed: int = 0
    train_size: int | None = None  # synthetic: number of training scenes
    val_size: int | None = None  # synthetic: number of held-out scenes for evaluation
    tasks: list[str] | None = None  # train only these tasks (e.g. a single-task baseline)
    task_weights: dict[str, float] = field(default_factory=dict)  # default 1 per task
    gate: str | None = None  # override the config's gate (multi_gate | task_conditioned)
    balance_weight: float = BALANCE_LOSS_WEIGHT
    noise_std: float = 0.0  # router noise σ (std σ/N), training only
    clip_to_format: bool = True
    init: str | None = None  # weights to start from (timm / DeiT / M3ViT / ours)
    init_layout: str = "auto"
    eval_every: int = 0  # 0: evaluate at the end only
    eval: bool = True
    ckpt_every: int = 500
    log_every: int = 10
    resume: bool = False
    stop_at: int | None = None  # stop (with a checkpoint) at this step, to continue later with resume
    progress: bool | None = None  # default: when stderr is a terminal
    threads: int | None = None  # torch threads per process (default 1: tiny matmuls gain little from more)
    prune_plan: str | None = None  # recovery fine-tuning towards this pruning plan (m3vit.train.experts)
    prune_stages: int = 3  # the plan's pruned experts are dropped in this many steps ...
    prune_until: float = 0.5  # ... spread over this share of the steps
    prune_balance: str = "kept"  # kept: balance loss over the kept experts; off: no balance loss


@dataclass
class TrainResult:
    """Outcome of :func:`train` (on every rank; ``metrics`` only on rank 0)."""

    config: DesignConfig
    out_dir: Path
    log: list[dict[str, Any]]
    metrics: dict[str, dict[str, float]] | None
    seconds: float
    step: int
    metrics_before: dict[str, dict[str, float]] | None = None  # pruned model before fine-tuning (--prune-plan)


# -------------------------------------------------------------------------------------------- model
def training_config(opts: TrainOptions) -> DesignConfig:
    """The config as trained: the named config with the ``--gate`` and ``--tasks`` overrides applied."""
    cfg = load_config(opts.config)
    overrides: dict[str, object] = {}
    if opts.gate is not None:
        overrides["model.gate"] = opts.gate
    if opts.tasks:
        by_name = {t.name: t for t in cfg.model.tasks}
        unknown = [t for t in opts.tasks if t not in by_name]
        if unknown:
            raise UserError(f"--tasks {unknown} not in the config's tasks {list(by_name)}")
        overrides["model.tasks"] = [by_name[t].model_dump() for t in opts.tasks]
    return with_overrides(cfg, **overrides) if overrides else cfg


@torch.no_grad()
def init_for_training(model: M3ViT, seed: int) -> M3ViT:
    """ViT-style initialisation from ``seed``: truncated-normal (std 0.02) weights, zero biases, unit
    LayerNorms, small random routers (so tokens do not all tie at the start)."""
    gen = torch.Generator().manual_seed(int(seed))

    def normal(p: Tensor, std: float) -> None:
        p.copy_((torch.randn(p.shape, generator=gen) * std).clamp(-2 * std, 2 * std))

    modules = dict(model.named_modules())
    for name, p in model.named_parameters():
        owner_name, _, leaf = name.rpartition(".")
        owner = modules[owner_name]
        if isinstance(owner, nn.LayerNorm):
            p.fill_(1.0 if leaf == "weight" else 0.0)
        elif leaf in ("weight", "w_gate", "cls_token", "pos_embed"):
            normal(p, 0.02)
        else:
            p.zero_()
    return model


def fixed_point_limits(model: M3ViT) -> list[tuple[Tensor, float, float]]:
    """(parameter, lo, hi) for each backbone tensor the fixed-point model stores in a narrow format:
    matmul weights (weight format) and LayerNorm γ/β (ln_param format). Heads run in float: not listed."""
    n = model.cfg.numerics

    def rng(fmt: FixedFormat) -> tuple[float, float]:
        return fmt.qmin * fmt.lsb, fmt.qmax * fmt.lsb

    out = []
    for name, module in model.named_modules():
        if name.startswith("heads.") or isinstance(module, TaskHead) or name.startswith("task_embed"):
            continue
        if isinstance(module, nn.LayerNorm):
            out += [(module.weight, *rng(n.ln_param)), (module.bias, *rng(n.ln_param))]
        elif isinstance(module, (nn.Linear, ExpertLinear)) or (isinstance(module, nn.Conv2d) and name.endswith("proj")):
            out.append((module.weight, *rng(n.weight)))
        elif isinstance(module, Router):
            out.append((module.w_gate, *rng(n.weight)))
    return out


class MultiTaskLoss(nn.Module):
    """Runs the model once per task and returns (total loss, per-task losses [tasks], balance loss)."""

    def __init__(self, model: M3ViT, weights: Mapping[str, float], pruner: Any = None) -> None:
        super().__init__()
        self.model = model
        self.pruner = pruner  # a ProgressivePruner: adapted balance loss and usage counts of pruned layers
        self.kinds: dict[str, TaskKind] = {t.name: check_task(t) for t in model.cfg.model.tasks}
        unknown = [t for t in weights if t not in self.kinds]
        if unknown:
            raise UserError(f"--task-weight for unknown task(s) {unknown}; tasks are {list(self.kinds)}")
        self.weights = {t: float(weights.get(t, 1.0)) for t in self.kinds}

    def forward(self, images: Tensor, targets: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        losses, aux = [], images.new_zeros(())
        total = images.new_zeros(())
        for task, kind in self.kinds.items():
            out = self.model(images, task)
            loss = task_loss(kind, out.head, targets[task])
            losses.append(loss)
            aux = aux + out.aux_loss
            if self.pruner is not None:
                t = self.model.cfg.model.task_index(task)
                self.pruner.observe(t, out.routing)
                aux = aux + self.pruner.balance_weight * self.pruner.aux(t, out.routing).to(aux.dtype)
            total = total + self.weights[task] * loss
        return total + aux, torch.stack(losses), aux


# ----------------------------------------------------------------------------------------- schedule
def learning_rate(base: float, step: int, steps: int, power: float = 0.9, warmup: int = 0) -> float:
    """Poly schedule base·(1 − step/steps)^power, after a linear warm-up of ``warmup`` steps."""
    if warmup > 0 and step < warmup:
        return base * (step + 1) / warmup
    return base * max(0.0, 1.0 - step / max(1, steps)) ** power


def build_optimizer(model: nn.Module, opts: TrainOptions) -> torch.optim.Optimizer:
    """SGD or AdamW; norms, biases, cls/pos embeddings get no weight decay."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith(("cls_token", "pos_embed")) or ".norm" in name else decay).append(p)
    lr = DEFAULT_LR[opts.optimizer] if opts.lr is None else opts.lr
    wd = DEFAULT_WEIGHT_DECAY[opts.optimizer] if opts.weight_decay is None else opts.weight_decay
    groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
    if opts.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=opts.momentum)
    if opts.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))
    raise ValueError(f"optimizer {opts.optimizer!r} must be 'sgd' or 'adamw'")


def batch_indices(n: int, batch: int, step: int, seed: int) -> Tensor:
    """Dataset indices of the global batch of ``step``: epochs are seeded permutations, last partial
    batch dropped."""
    per_epoch = n // batch
    if per_epoch == 0:
        raise UserError(f"the training set has {n} samples, fewer than one batch of {batch} "
                        f"(--train-size, --batch-size)")
    epoch, j = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed) * 1_000_003 + epoch))
    return perm[j * batch : (j + 1) * batch]


# ------------------------------------------------------------------------------------- distribution
def _dist_env() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world


def _all_mean(x: Tensor, world: int) -> Tensor:
    if world > 1:
        x = x.clone()
        dist.all_reduce(x)
        x /= world
    return x


# ---------------------------------------------------------------------------------------- training
def train(opts: TrainOptions) -> TrainResult:
    """Train (or resume) a model as ``opts`` says; returns the loss log and the held-out metrics."""
    from tqdm import tqdm

    from m3vit.train.checkpoint import (
        import_weights,
        load_into,
        load_train_state,
        read_state_dict,
        save_model,
        save_train_state,
    )
    from m3vit.train.predict import FloatPredictor, evaluate

    rank, world = _dist_env()
    threads, rng = torch.get_num_threads(), torch.get_rng_state()  # restored for in-process callers
    started_dist = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
        started_dist = True
    try:
        torch.set_num_threads(opts.threads or 1)
        if opts.batch_size % world:
            raise UserError(f"--batch-size {opts.batch_size} must be divisible by the {world} processes")
        cfg = training_config(opts)
        torch.manual_seed(opts.seed + rank)  # router noise (the weights are drawn by init_for_training)
        out_dir = Path(opts.out_dir) if opts.out_dir else build_dir("train", cfg.name)
        out_dir.mkdir(parents=True, exist_ok=True)
        model = init_for_training(M3ViT(cfg, noise_std=opts.noise_std, balance_loss_weight=opts.balance_weight),
                                  opts.seed)
        if opts.init:
            report = import_weights(model, opts.init, opts.init_layout)
            if rank == 0:
                print(f"init from {opts.init} ({report.layout}): {len(report.state_dict)} tensors loaded, "
                      f"{len(report.missing)} kept their initialisation, {len(report.ignored)} ignored")
        limits = fixed_point_limits(model) if opts.clip_to_format else []
        pruner, plan = None, None
        if opts.prune_plan:
            from m3vit.train.experts import ProgressivePruner, load_plan

            if opts.prune_balance not in ("kept", "off"):
                raise ValueError(f"--prune-balance {opts.prune_balance!r} must be 'kept' or 'off'")
            plan = load_plan(opts.prune_plan)
            pruner = ProgressivePruner(model, plan.expert_map(cfg), opts.steps, opts.prune_stages, opts.prune_until,
                                       opts.balance_weight if opts.prune_balance == "kept" else 0.0)
            model.balance_loss_weight = 0.0  # replaced by the pruner's balance loss over the kept experts
        net = MultiTaskLoss(model, opts.task_weights, pruner)
        optimizer = build_optimizer(model, opts)
        base_lrs = [g["lr"] for g in optimizer.param_groups]

        start, log, before = 0, [], 0.0  # before: training seconds of earlier (resumed) runs
        state_path, model_path, log_path = out_dir / "train_state.safetensors", out_dir / "model.safetensors", \
            out_dir / "log.jsonl"
        if opts.resume and state_path.is_file():
            if pruner is not None:
                raise ValueError("--resume is not supported with --prune-plan (the drop order is not checkpointed)")
            load_into(model, read_state_dict(model_path).state_dict, strict=True)
            start, extra = load_train_state(state_path, optimizer)
            base_lrs, before = extra["base_lrs"], float(extra.get("seconds", 0.0))
            if rank == 0 and log_path.is_file():  # drop what the interrupted run logged after its checkpoint
                log = [r for r in map(json.loads, log_path.read_text().splitlines()) if r.get("step", -1) < start]
                log_path.write_text("".join(json.dumps(r) + "\n" for r in log))
        elif rank == 0 and log_path.exists():
            log_path.unlink()
        ddp: nn.Module = net
        if world > 1:
            ddp = nn.parallel.DistributedDataParallel(net, find_unused_parameters=True)

        data = build_dataset(cfg, opts.dataset, "train", root=opts.data_root, size=opts.train_size,
                             seed=opts.data_seed)
        local = opts.batch_size // world
        names = list(net.kinds)
        meta = {"options": asdict(opts), "world_size": world, "lr": base_lrs[0],
                "weight_decay": optimizer.param_groups[0]["weight_decay"]}
        if plan is not None:
            meta["prune_plan"] = plan.model_dump(mode="json")

        def checkpoint(step: int, metrics: dict | None = None) -> None:
            if rank != 0:
                return
            seconds = round(before + time.perf_counter() - t0, 1)
            save_model(model_path, model, cfg, {**meta, "step": step, "seconds": seconds,
                                                **({"val": metrics} if metrics else {})})
            save_train_state(state_path, optimizer, step, {"base_lrs": base_lrs, "seconds": seconds})

        def validate() -> dict[str, dict[str, float]]:
            model.eval()
            val = build_dataset(cfg, opts.dataset, "val", root=opts.data_root, size=opts.val_size, seed=opts.data_seed)
            metrics = evaluate(FloatPredictor(model), val, cfg.model.tasks)
            model.train()
            return metrics

        metrics_before = None
        if pruner is not None and rank == 0 and opts.eval and start == 0:
            model.prune_experts(pruner.target)  # the plan applied to the starting weights, no fine-tuning
            metrics_before = validate()
            pruner.apply()
        show = opts.progress if opts.progress is not None else sys.stderr.isatty()
        bar = tqdm(total=opts.steps, initial=start, disable=not show or rank != 0, desc=f"train {cfg.name}",
                   dynamic_ncols=True)
        t0 = time.perf_counter()
        metrics = None
        model.train()
        with (log_path.open("a") if rank == 0 else open(os.devnull, "w")) as log_file:
            end = opts.steps if opts.stop_at is None else max(start, min(opts.stop_at, opts.steps))
            for step in range(start, end):
                for g, base in zip(optimizer.param_groups, base_lrs, strict=True):
                    g["lr"] = learning_rate(base, step, opts.steps, opts.poly_power, opts.warmup_steps)
                idx = batch_indices(len(data), opts.batch_size, step, opts.seed)[rank * local : (rank + 1) * local]
                batch = get_batch(data, idx)
                total, losses, aux = ddp(batch["image"], {k: batch[k] for k in names})
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                if opts.grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), opts.grad_clip)
                optimizer.step()
                if limits:
                    with torch.no_grad():
                        for p, lo, hi in limits:
                            p.clamp_(lo, hi)
                stats = _all_mean(torch.cat([total.detach()[None], losses.detach(), aux.detach()[None]]), world)
                if not math.isfinite(float(stats[0])):
                    raise UserError(f"loss became {float(stats[0])} at step {step}; lower --lr")
                rec = {"step": step, "lr": optimizer.param_groups[0]["lr"], "loss": float(stats[0]),
                       **{f"loss_{n}": float(v) for n, v in zip(names, stats[1:-1], strict=True)},
                       "aux": float(stats[-1]), "time": round(time.perf_counter() - t0, 3)}
                log.append(rec)
                if step % opts.log_every == 0 or step == opts.steps - 1:
                    log_file.write(json.dumps(rec) + "\n")
                    log_file.flush()
                bar.update(1)
                bar.set_postfix(loss=f"{rec['loss']:.4f}", refresh=False)
                done = step + 1
                if pruner is not None and pruner.step(done, world):
                    bar.write(f"step {done}: experts kept " + ", ".join(
                        f"{cfg.model.task_names[t]}/block{b} {len(k)}" for (t, b), k in sorted(pruner.kept.items())))
                if opts.eval_every and done % opts.eval_every == 0 and done < opts.steps and rank == 0:
                    metrics = validate()
                    bar.write(f"step {done}: " + _summary(metrics))
                if opts.ckpt_every and done % opts.ckpt_every == 0 and done < opts.steps:
                    checkpoint(done)
        bar.close()
        seconds = time.perf_counter() - t0
        if pruner is not None and end == opts.steps:
            pruner.finish()
        if rank == 0 and opts.eval and end == opts.steps:
            metrics = validate()
        checkpoint(end, metrics)
        if world > 1:
            dist.barrier()
        return TrainResult(cfg, out_dir, log, metrics if rank == 0 else None, seconds, end, metrics_before)
    finally:
        torch.set_num_threads(threads)
        torch.set_rng_state(rng)
        if started_dist:
            dist.destroy_process_group()


def _summary(metrics: Mapping[str, Mapping[str, float]]) -> str:
    return "; ".join(f"{t}: " + ", ".join(f"{k} {v:.4g}" for k, v in m.items()) for t, m in metrics.items())


# --------------------------------------------------------------------------------------------- CLI
def _task_weight(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"task weight {text!r} must be NAME=VALUE")
    return name, float_range(0.0)(value)


def build_parser() -> argparse.ArgumentParser:
    d = TrainOptions()
    p = ArgumentParser(prog="m3vit train", description="Train an M3ViT multi-task MoE model (see "
                                "docs/training.md). Launch with torchrun for multi-process data parallelism.")
    p.add_argument("config", nargs="?", default=d.config, help="config file or preset name (default: tiny)")
    p.add_argument("--out-dir", default=None, help="checkpoints and log (default: build/train/<config name>)")
    p.add_argument("--steps", type=int_range(1), default=d.steps, help=f"optimizer steps (default {d.steps})")
    p.add_argument("--batch-size", type=int_range(1), default=d.batch_size, help="global batch size over all processes")
    p.add_argument("--optimizer", choices=["sgd", "adamw"], default=d.optimizer)
    p.add_argument("--lr", type=float_range(0.0, low_open=True), default=None,
                   help=f"base learning rate (default {DEFAULT_LR})")
    p.add_argument("--momentum", type=float_range(0.0, 1.0), default=d.momentum)
    p.add_argument("--weight-decay", type=float_range(0.0), default=None, help=f"default {DEFAULT_WEIGHT_DECAY}")
    p.add_argument("--poly-power", type=float_range(0.0), default=d.poly_power)
    p.add_argument("--warmup-steps", type=int_range(0), default=d.warmup_steps)
    p.add_argument("--grad-clip", type=float_range(0.0), default=d.grad_clip, help="max gradient norm (0 = off)")
    p.add_argument("--seed", type=int, default=d.seed, help="model initialisation and data order")
    p.add_argument("--dataset", choices=list(DATASETS), default=d.dataset)
    p.add_argument("--data-root", default=None, help="dataset folder (pascal / nyud)")
    p.add_argument("--data-seed", type=int, default=d.data_seed, help="synthetic dataset seed")
    p.add_argument("--train-size", type=int_range(1), default=None, help="synthetic training scenes (default 4096)")
    p.add_argument("--val-size", type=int_range(1), default=None, help="synthetic held-out scenes (default 512)")
    p.add_argument("--tasks", nargs="+", default=None, help="train only these tasks (single-task baselines)")
    p.add_argument("--task-weight", type=_task_weight, action="append", default=[], metavar="TASK=W",
                   help="loss weight of a task (default 1; repeatable)")
    p.add_argument("--gate", choices=["multi_gate", "task_conditioned"], default=None,
                   help="override the config's gate")
    p.add_argument("--balance-weight", type=float_range(0.0), default=d.balance_weight,
                   help="load-balancing loss weight")
    p.add_argument("--noise-std", type=float_range(0.0), default=d.noise_std,
                   help="router noise σ (std σ/N), training only")
    p.add_argument("--no-clip-to-format", dest="clip_to_format", action="store_false",
                   help="do not keep backbone weights inside their fixed-point formats")
    p.add_argument("--init", default=None, help="start from these weights (timm/DeiT, M3ViT or ours)")
    p.add_argument("--init-layout", choices=["auto", "native", "timm", "m3vit"], default="auto")
    p.add_argument("--eval-every", type=int_range(0), default=d.eval_every,
                   help="evaluate every N steps (0: at the end)")
    p.add_argument("--no-eval", dest="eval", action="store_false", help="skip the final held-out evaluation")
    p.add_argument("--ckpt-every", type=int_range(1), default=d.ckpt_every, help="checkpoint every N steps")
    p.add_argument("--log-every", type=int_range(1), default=d.log_every, help="write log.jsonl every N steps")
    p.add_argument("--resume", action="store_true", help="continue from --out-dir's checkpoint if there is one")
    p.add_argument("--stop-at", type=int_range(1), default=None, metavar="STEP",
                   help="stop at this step (writing a checkpoint); continue later with --resume")
    p.add_argument("--progress", dest="progress", action="store_true", default=None, help="show a progress bar")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--threads", type=int_range(1, 256), default=None, help="torch threads per process")
    p.add_argument("--prune-plan", default=None, metavar="PLAN",
                   help="recovery fine-tuning towards this pruning plan (YAML/JSON, m3vit experts plan); start "
                   "from a trained model with --init")
    p.add_argument("--prune-stages", type=int_range(1, 64), default=d.prune_stages,
                   help="drop the plan's pruned experts in this many steps, least used first")
    p.add_argument("--prune-until", type=float_range(0, 1, low_open=True), default=d.prune_until,
                   help="share of --steps over which the drops are spread (default 0.5)")
    p.add_argument("--prune-balance", choices=["kept", "off"], default=d.prune_balance,
                   help="balance loss over the kept experts (default) or none")
    return p


def options_from_args(argv: Sequence[str] | None = None) -> TrainOptions:
    """Parse ``m3vit train`` arguments into :class:`TrainOptions`."""
    a = build_parser().parse_args(argv)
    values = {k: v for k, v in vars(a).items() if k != "task_weight"}
    values["task_weights"] = dict(a.task_weight)
    values["grad_clip"] = a.grad_clip or None
    return TrainOptions(**values)


def command(argv: Sequence[str]) -> int:
    """``m3vit train``: train, print the held-out metrics; raises the toolkit's errors (see :func:`main`)."""
    opts = options_from_args(argv)
    result = train(opts)
    if _dist_env()[0] == 0:
        last = result.log[-1] if result.log else {}
        print(f"{result.config.name}: {result.step} steps in {result.seconds:.1f} s, final loss "
              f"{last.get('loss', float('nan')):.4f}; checkpoint {result.out_dir / 'model.safetensors'}")
        if result.metrics_before:
            print("held-out, plan applied before fine-tuning: " + _summary(result.metrics_before))
        if result.metrics:
            label = "held-out, after fine-tuning: " if result.metrics_before else "held-out: "
            print(label + _summary(result.metrics))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """:func:`command` with user errors as one line (exit status 2) and ``--debug``: ``python -m m3vit.train.train``."""
    return run_main(command, argv)


__all__ = [
    "MultiTaskLoss",
    "TrainOptions",
    "TrainResult",
    "batch_indices",
    "build_optimizer",
    "build_parser",
    "command",
    "fixed_point_limits",
    "init_for_training",
    "learning_rate",
    "main",
    "options_from_args",
    "train",
    "training_config",
]

if __name__ == "__main__":
    sys.exit(main())
