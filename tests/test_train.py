"""Training: schedule, data order, fixed-point clipping, exact resume, the CLI, and 2-process DDP ≡ 1 process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from m3vit.sim.quantize import quantize_state_dict
from m3vit.sim.reference import M3ViT
from m3vit.train.checkpoint import load_checkpoint, load_model
from m3vit.train.train import (
    MultiTaskLoss,
    TrainOptions,
    batch_indices,
    fixed_point_limits,
    learning_rate,
    main,
    train,
    training_config,
)

SMALL = {"train_size": 64, "batch_size": 16, "eval": False, "progress": False, "log_every": 1, "threads": 1}
"""A few-second run: 64 scenes, global batch 16."""


def _log(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "log.jsonl").read_text().splitlines()]


def _losses(out_dir: Path) -> list[float]:
    return [entry["loss"] for entry in _log(out_dir)]


def test_poly_schedule_and_warmup() -> None:
    assert learning_rate(0.1, 0, 100) == 0.1
    assert learning_rate(0.1, 50, 100) == pytest.approx(0.1 * 0.5**0.9)
    assert learning_rate(0.1, 100, 100) == 0.0
    assert learning_rate(0.1, 0, 100, warmup=10) == pytest.approx(0.01)
    assert learning_rate(0.1, 9, 100, warmup=10) == pytest.approx(0.1)


def test_batches_are_seeded_epochs() -> None:
    first = torch.cat([batch_indices(40, 8, s, seed=1) for s in range(5)])
    assert sorted(first.tolist()) == list(range(40))  # one epoch visits every sample once
    assert torch.equal(batch_indices(40, 8, 3, seed=1), batch_indices(40, 8, 3, seed=1))
    assert not torch.equal(batch_indices(40, 8, 5, seed=1), first[:8])  # the next epoch is reshuffled
    with pytest.raises(ValueError, match="fewer than one batch"):
        batch_indices(4, 8, 0, seed=0)


def test_fixed_point_limits_cover_every_quantised_weight(tiny) -> None:
    model = M3ViT(tiny)
    limits = fixed_point_limits(model)
    q = quantize_state_dict(tiny, model.state_dict())
    # patch, per block: qkv, proj and (fc1, fc2) or (htoh4, h4toh, one router per task); LayerNorms separately
    n_moe = len(tiny.model.moe_block_set)
    matmuls = 1 + 2 * tiny.model.depth + 2 * (tiny.model.depth - n_moe) + n_moe * (2 + len(tiny.model.tasks))
    assert len([x for x in limits if x[2] == 0.49609375]) == matmuls
    assert len(limits) == matmuls + 4 * tiny.model.depth
    assert all(not any(p is h for h in model.heads.parameters()) for p, _, _ in limits)
    assert q.blocks  # the formats the limits come from are the ones quantize uses


def test_multi_task_loss_and_options(tiny) -> None:
    model = M3ViT(tiny)
    with pytest.raises(ValueError, match="unknown task"):
        MultiTaskLoss(model, {"normals": 1.0})
    cfg = training_config(TrainOptions(tasks=["depth"], gate="task_conditioned"))
    assert cfg.model.task_names == ["depth"] and cfg.model.gate == "task_conditioned"
    with pytest.raises(ValueError, match="not in the config"):
        training_config(TrainOptions(tasks=["edge"]))


def test_short_run_learns_and_clips(tmp_path: Path) -> None:
    res = train(TrainOptions(steps=30, out_dir=str(tmp_path), optimizer="adamw", lr=3e-3, **SMALL))
    losses = [r["loss"] for r in res.log]
    assert len(losses) == 30 and sum(losses[-5:]) < 0.8 * sum(losses[:5])
    model = load_model(tmp_path / "model.safetensors")
    for p, lo, hi in fixed_point_limits(model):
        assert lo <= p.min() and p.max() <= hi
    q = quantize_state_dict(model.cfg, model.state_dict())
    assert sum(q.saturation.values()) == 0  # no weight saturates when quantised
    meta = load_checkpoint(tmp_path / "model.safetensors").metadata
    assert meta["step"] == 30 and meta["options"]["optimizer"] == "adamw"


def test_resume_continues_exactly(tmp_path: Path) -> None:
    opts = {"steps": 6, "ckpt_every": 100, "noise_std": 1.0, **SMALL}  # router noise: the RNG must resume too
    train(TrainOptions(out_dir=str(tmp_path / "a"), **opts))
    train(TrainOptions(out_dir=str(tmp_path / "b"), stop_at=3, **opts))
    assert load_checkpoint(tmp_path / "b" / "model.safetensors").metadata["step"] == 3
    train(TrainOptions(out_dir=str(tmp_path / "b"), resume=True, **opts))
    a = load_model(tmp_path / "a" / "model.safetensors").state_dict()
    b = load_model(tmp_path / "b" / "model.safetensors").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")


def test_task_conditioned_single_task_sgd(tmp_path: Path) -> None:
    res = train(TrainOptions(steps=3, out_dir=str(tmp_path), gate="task_conditioned", tasks=["semseg"],
                             task_weights={"semseg": 2.0}, **SMALL))
    assert res.config.model.gate == "task_conditioned" and "loss_semseg" in res.log[-1]
    assert "loss_depth" not in res.log[-1]


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["tiny", "--steps", "2", "--batch-size", "8", "--train-size", "16", "--val-size", "8",
            "--out-dir", str(tmp_path), "--no-progress", "--task-weight", "depth=0.5", "--optimizer", "adamw"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "2 steps" in out and "held-out: semseg: mIoU" in out
    assert main(["tiny", "--steps", "2", "--batch-size", "8", "--train-size", "16", "--task-weight",
                 "edge=1", "--out-dir", str(tmp_path)]) == 2
    assert "unknown task" in capsys.readouterr().err


def test_two_process_ddp_matches_one_process(tmp_path: Path) -> None:
    """torchrun, 2 CPU processes on gloo, global batch 16 → same loss curve as 1 process with batch 16.

    They differ only by the balance loss (each process computes cv² over its own tokens, and M³ViT's loss
    over the sparse top-K gates varies between halves of a batch) and float summation order: over 8 steps
    the weighted task losses (total − balance) agree to 1e-3 relative (measured ≤ 2e-4), the balance losses
    to 20 % (measured ≤ 8 %).
    """
    args = ["--steps", "8", "--batch-size", "16", "--train-size", "64", "--no-eval", "--no-progress",
            "--log-every", "1", "--optimizer", "adamw", "--lr", "2e-3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
           "-m", "m3vit.train.train", "tiny", "--out-dir", str(tmp_path / "ddp"), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert main(["tiny", "--out-dir", str(tmp_path / "one"), *args]) == 0
    ddp, one = _log(tmp_path / "ddp"), _log(tmp_path / "one")
    assert len(ddp) == len(one) == 8
    assert one[-1]["loss"] < one[0]["loss"] and ddp[-1]["loss"] < ddp[0]["loss"]
    for a, b in zip(ddp, one, strict=True):
        assert a["loss"] - a["aux"] == pytest.approx(b["loss"] - b["aux"], rel=1e-3)
        assert a["aux"] == pytest.approx(b["aux"], rel=0.2)
    assert load_checkpoint(tmp_path / "ddp" / "model.safetensors").metadata["world_size"] == 2
