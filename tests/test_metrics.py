"""Task metrics against hand-computed values, Δm, the trivial predictor and the eval command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from m3vit.codegen.config import TaskSpec, load_config
from m3vit.sim.reference import build_reference
from m3vit.train.checkpoint import save_model
from m3vit.train.data import SyntheticScenes
from m3vit.train.metrics import (
    DepthMeter,
    EdgeMeter,
    NormalsMeter,
    SaliencyMeter,
    SegmentationMeter,
    delta_m,
    make_meter,
)
from m3vit.train.predict import TrivialPredictor, eval_main, evaluate


def test_miou_by_hand() -> None:
    m = SegmentationMeter(3)
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 0, 2]])
    m.update(pred, target)
    # class 0: tp 1, fp 1 (a 2 predicted as 0), fn 1 → 1/3; class 1: tp 2, fp 1 → 2/3; class 2: tp 1, fn 1 → 1/2
    got = m.compute()
    assert got["mIoU"] == pytest.approx(100 * (1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert got["pixel_acc"] == pytest.approx(100 * 4 / 6)
    perfect = SegmentationMeter(5)
    perfect.update(target.clamp(max=2), target.clamp(max=2))
    assert perfect.compute()["mIoU"] == 100  # classes 3, 4 absent from both: not counted
    with pytest.raises(ValueError, match="outside"):
        perfect.update(torch.zeros(2), torch.tensor([0, 7]))


def test_depth_normals_saliency_edges_by_hand() -> None:
    d = DepthMeter()
    d.update(torch.tensor([1.0, 2.0, 5.0, 9.0]), torch.tensor([2.0, 2.0, 4.0, 0.0]))  # last pixel invalid
    assert d.compute()["rmse"] == pytest.approx(math.sqrt(2 / 3))
    assert d.compute()["abs_rel"] == pytest.approx((0.5 + 0 + 0.25) / 3)

    n = NormalsMeter()
    z = torch.zeros(1, 3, 1, 2)
    z[0, 2] = 1
    x = torch.zeros(1, 3, 1, 2)
    x[0, 0, 0, 0], x[0, 2, 0, 1] = 1, 3  # 90° off, then same direction (not unit)
    n.update(x, z)
    assert n.compute()["mean_angle"] == pytest.approx(45.0) and n.compute()["within_11_25"] == 50

    s = SaliencyMeter()
    t = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    s.update(torch.tensor([[0.1, 0.9, 0.8, 0.2]]), t)
    assert s.compute()["maxF"] == pytest.approx(100) and s.compute()["IoU"] == 100

    gt = torch.zeros(1, 1, 8, 8)
    gt[0, 0, :, 3] = 1
    shifted = torch.roll(gt, 1, dims=-1)  # one pixel off
    assert _edge(shifted, gt, 1) == pytest.approx(100)
    assert _edge(shifted, gt, 0) == 0
    half = gt.clone()
    half[0, 0, 4:] = 0
    assert _edge(half, gt, 0) == pytest.approx(100 * 2 * 0.5 / 1.5)  # precision 1, recall 1/2


def _edge(pred: torch.Tensor, target: torch.Tensor, tol: int) -> float:
    m = EdgeMeter(tol)
    m.update(pred, target)
    return m.compute()["odsF"]


def test_delta_m() -> None:
    single = {"semseg": {"mIoU": 50.0}, "depth": {"rmse": 1.0}}
    assert delta_m({"semseg": {"mIoU": 55.0}, "depth": {"rmse": 1.1}}, single) == pytest.approx((10 - 10) / 2)
    assert delta_m({"semseg": {"mIoU": 55.0}, "depth": {"rmse": 0.9}}, single) == pytest.approx(10)
    with pytest.raises(ValueError, match="no task in common"):
        delta_m({"normals": {"mean_angle": 1.0}}, single)


def test_meter_per_kind() -> None:
    assert isinstance(make_meter(TaskSpec(name="human_parts", channels=7)), SegmentationMeter)
    assert isinstance(make_meter(TaskSpec(name="edge", channels=1)), EdgeMeter)
    with pytest.raises(ValueError, match="no known kind"):
        make_meter(TaskSpec(name="albedo", channels=3))


def test_trivial_predictor_is_the_per_pixel_prior(tiny) -> None:
    train, val = SyntheticScenes(tiny, "train", size=128), SyntheticScenes(tiny, "val", size=64)
    trivial = TrivialPredictor(tiny, train)
    assert torch.equal(trivial.prior["semseg"], torch.zeros(32, 32, dtype=torch.long))  # background everywhere
    assert torch.allclose(trivial.prior["depth"], train.targets["depth"].mean(0), atol=1e-5)
    metrics = evaluate(trivial, val, tiny.model.tasks)
    assert 10 < metrics["semseg"]["mIoU"] < 20  # background IoU / 5 classes
    assert metrics["depth"]["rmse"] > 0.5


def test_eval_command(tmp_path: Path, tiny, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = save_model(tmp_path / "m.safetensors", build_reference(tiny, seed=0), tiny)
    base = tmp_path / "single.json"
    base.write_text(json.dumps({"semseg": {"mIoU": 50.0}, "depth": {"rmse": 2.0}}))
    out = tmp_path / "metrics.json"
    args = ["--checkpoint", str(ckpt), "--size", "8", "--fixed", "--baseline", str(base), "--json", str(out)]
    assert eval_main(args) == 0
    text = capsys.readouterr().out
    assert "float semseg: mIoU" in text and "fixed depth: rmse" in text and "Δm" in text
    report = json.loads(out.read_text())
    assert report["images"] == 8 and set(report["fixed"]) == {"semseg", "depth"}
    assert set(report["delta_m"]) == {"float", "fixed"}
    assert eval_main(["tiny", "--checkpoint", str(tmp_path / "missing.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_eval_rejects_a_checkpoint_of_another_config(tmp_path: Path, tiny) -> None:
    other = load_config("tiny", **{"model.depth": 2})
    ckpt = save_model(tmp_path / "m.safetensors", build_reference(other, seed=0), other)
    assert eval_main(["tiny", "--checkpoint", str(ckpt), "--size", "2"]) == 2
