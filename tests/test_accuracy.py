"""The shipped tiny checkpoint and its accuracy report: small, current, fixed point within tolerance."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from m3vit.codegen.config import load_config
from m3vit.train.accuracy import build_report, fixed_check, markdown
from m3vit.train.checkpoint import load_checkpoint, load_model
from m3vit.train.data import SyntheticScenes
from m3vit.train.predict import FixedPointPredictor, FloatPredictor
from tests.conftest import REPO_ROOT

CKPT = REPO_ROOT / "models" / "tiny.safetensors"
REPORT = REPO_ROOT / "models" / "tiny_accuracy.json"


@pytest.fixture(scope="module")
def report() -> dict:
    return json.loads(REPORT.read_text())


def test_shipped_checkpoint_is_small_and_for_the_tiny_preset() -> None:
    assert CKPT.stat().st_size <= 5 * 1024 * 1024
    ckpt = load_checkpoint(CKPT)
    tiny = load_config("tiny")
    # what the weights and the fixed-point results depend on (other hardware knobs change neither)
    retrain = "configs/tiny.yaml changed: retrain with `make train-tiny accuracy`"
    assert ckpt.config.model == tiny.model and ckpt.config.numerics == tiny.numerics, retrain
    assert ckpt.config.hardware.attn_key_block == tiny.hardware.attn_key_block, retrain  # sets softmax rounding
    assert ckpt.metadata["step"] == ckpt.metadata["options"]["steps"]


def test_report_matches_the_shipped_file(report: dict) -> None:
    assert report["checkpoint_sha256"] == hashlib.sha256(CKPT.read_bytes()).hexdigest(), "run `make accuracy`"
    assert report["config_hash"] == load_checkpoint(CKPT).config.config_hash()
    assert (REPO_ROOT / "models" / "tiny_accuracy.md").read_text() == markdown(report)


def test_fixed_point_within_tolerance_and_float_beats_trivial(report: dict) -> None:
    seg, depth = report["tasks"]["semseg"], report["tasks"]["depth"]
    assert abs(seg["fixed"]["mIoU"] - seg["float"]["mIoU"]) <= 1.0
    assert abs(depth["fixed"]["rmse"] - depth["float"]["rmse"]) <= 0.02 * depth["float"]["rmse"]
    assert report["all_fixed_within_tolerance"]
    assert seg["float"]["mIoU"] > seg["trivial"]["mIoU"] + 30  # clearly above the per-pixel prior
    assert depth["float"]["rmse"] < 0.75 * depth["trivial"]["rmse"]
    assert report["saturations"] == {"weights": 0, "activations": 0}


def test_float_and_fixed_agree_on_a_few_images() -> None:
    model = load_model(CKPT)
    val = SyntheticScenes(model.cfg, "val", size=8)
    fl, fx = FloatPredictor(model), FixedPointPredictor(model)
    seg_f, seg_q = fl(val.images, "semseg"), fx(val.images, "semseg")
    assert (seg_f == seg_q).double().mean() > 0.98
    d_f, d_q = fl(val.images, "depth"), fx(val.images, "depth")
    assert torch.allclose(d_f, d_q, atol=0.1)
    assert fx.saturations == 0


def test_fixed_check() -> None:
    ok = fixed_check("semseg", {"mIoU": 60.0}, {"mIoU": 59.2})
    assert ok["pass"] and ok["difference"] == pytest.approx(-0.8)
    bad = fixed_check("depth", {"rmse": 1.0}, {"rmse": 1.03})
    assert not bad["pass"] and bad["difference"] == pytest.approx(0.03)


@pytest.mark.slow
def test_report_regenerates_exactly(report: dict) -> None:
    fresh = build_report(CKPT)
    for task, v in report["tasks"].items():
        for mode in ("float", "fixed", "trivial"):
            for metric, value in v[mode].items():
                assert fresh["tasks"][task][mode][metric] == pytest.approx(value, rel=1e-9, abs=1e-9), (task, mode)
