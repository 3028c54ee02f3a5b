"""Datasets: the synthetic generator is deterministic and well-formed; the on-disk loaders read fake trees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from m3vit.codegen.config import load_config, with_overrides
from m3vit.train.data import (
    NYUDMT,
    PascalContextMT,
    SyntheticScenes,
    build_dataset,
    edge_map,
    get_batch,
    make_scene,
    normals_from_depth,
)
from m3vit.train.tasks import IGNORE_INDEX, TaskKind, check_task, task_kind

from .conftest import micro_config

ALL_TASKS = [
    {"name": "semseg", "channels": 5}, {"name": "depth", "channels": 1}, {"name": "normals", "channels": 3},
    {"name": "sal", "channels": 1}, {"name": "edge", "channels": 1}, {"name": "human_parts", "channels": 3},
]


@pytest.fixture(scope="module")
def all_tasks_cfg():
    return with_overrides(load_config("tiny"), **{"model.tasks": ALL_TASKS})


def test_task_kinds_are_inferred_from_names_once() -> None:
    assert task_kind("semseg") is TaskKind.SEGMENTATION and task_kind("human_parts") is TaskKind.SEGMENTATION
    assert task_kind("depth") is TaskKind.DEPTH and task_kind("normals") is TaskKind.NORMALS
    assert task_kind("sal") is TaskKind.SALIENCY and task_kind("edge") is TaskKind.EDGE
    with pytest.raises(ValueError, match="'albedo' has no known kind"):
        task_kind("albedo")
    cfg = with_overrides(load_config("tiny"), **{"model.tasks": [{"name": "depth", "channels": 2}]})
    with pytest.raises(ValueError, match="needs 1 channel"):
        check_task(cfg.model.tasks[0])


def test_synthetic_is_deterministic_by_seed_and_split(tiny) -> None:
    a = SyntheticScenes(tiny, "val", size=6, seed=3)
    b = SyntheticScenes(tiny, "val", size=6, seed=3)
    c = SyntheticScenes(tiny, "val", size=6, seed=4)
    d = SyntheticScenes(tiny, "train", size=6, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.targets["depth"], b.targets["depth"])
    assert not torch.equal(a.images, c.images) and not torch.equal(a.images, d.images)
    # a sample does not depend on how many were generated
    assert torch.equal(SyntheticScenes(tiny, "val", size=2, seed=3).images, a.images[:2])


def test_synthetic_targets_are_well_formed(tiny) -> None:
    ds = SyntheticScenes(tiny, "train", size=64)
    assert ds.images.shape == (64, 3, 32, 32) and ds.images.dtype == torch.float32
    inp = tiny.numerics.input
    assert ds.images.abs().max() < inp.qmax * inp.lsb  # fits the accelerator's input format
    seg, depth = ds.targets["semseg"], ds.targets["depth"]
    assert seg.shape == (64, 32, 32) and seg.dtype == torch.int64
    counts = torch.bincount(seg.reshape(-1), minlength=5)
    assert counts.numel() == 5 and (counts > 0).all()  # background and all 4 shape classes occur
    assert 0.6 < counts[0] / counts.sum() < 0.95  # background dominates but shapes are not rare
    assert depth.shape == (64, 1, 32, 32) and (depth > 1).all() and (depth < 10).all()
    sample = ds[5]
    assert set(sample) == {"image", "semseg", "depth"} and torch.equal(sample["image"], ds.images[5])
    assert torch.equal(get_batch(ds, [1, 5])["semseg"][1], seg[5])


def test_every_task_kind_has_a_synthetic_target(all_tasks_cfg) -> None:
    ds = SyntheticScenes(all_tasks_cfg, "val", size=8)
    t = ds.targets
    assert t["normals"].shape == (8, 3, 32, 32)
    assert torch.allclose(t["normals"].norm(dim=1), torch.ones(8, 32, 32), atol=1e-5)
    assert set(t["sal"].unique().tolist()) <= {0.0, 1.0} and set(t["edge"].unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(t["sal"][:, 0] > 0, t["semseg"] > 0)  # salient = any shape
    assert t["human_parts"].max() <= 2  # 3 classes: shape kinds folded onto 1..2
    assert 0 < t["edge"].mean() < 0.2


def test_other_sizes_and_channels() -> None:
    cfg = micro_config(in_channels=1)
    ds = SyntheticScenes(cfg, "test", size=4)
    assert ds.images.shape == (4, 1, 8, 12) and ds.targets["seg"].max() <= 2


def test_scene_helpers() -> None:
    scene = make_scene(np.random.default_rng(0), 16, 24)
    assert scene.image.shape == (3, 16, 24) and scene.depth.shape == (16, 24)
    assert ((scene.instance > 0) == (scene.kind >= 0)).all()
    labels = np.array([[0, 0, 1], [0, 0, 1], [2, 2, 2]])
    assert edge_map(labels).astype(int).tolist() == [[0, 1, 0], [1, 1, 1], [0, 0, 0]]
    n = normals_from_depth(np.ones((4, 4)))
    assert np.allclose(n[2], 1) and np.allclose(n[:2], 0)  # a flat depth map faces the camera


def test_unknown_split_and_dataset(tiny) -> None:
    with pytest.raises(ValueError, match="split 'dev'"):
        SyntheticScenes(tiny, "dev")
    with pytest.raises(ValueError, match="needs a data root"):
        build_dataset(tiny, "nyud", "train")


# ------------------------------------------------------------------------------------ fake trees
def _pil():
    return pytest.importorskip("PIL.Image", reason="Pillow reads the PASCAL/NYUD images")


def _save_png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _pil().fromarray(arr).save(path)


def _save_jpg(path: Path, h: int, w: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    _pil().fromarray(rgb).save(path, quality=95)


def _labels(h: int, w: int) -> np.ndarray:
    lab = np.zeros((h, w), np.uint8)
    lab[: h // 2, : w // 2] = 3
    lab[h // 2 :, w // 2 :] = 7
    return lab


@pytest.fixture
def nyud_tree(tmp_path: Path) -> Path:
    root = tmp_path / "NYUD_MT"
    ids = ["0001", "0002"]
    (root / "gt_sets").mkdir(parents=True)
    (root / "gt_sets" / "val.txt").write_text("\n".join(ids) + "\n")
    for i, name in enumerate(ids):
        _save_jpg(root / "images" / f"{name}.jpg", 48, 64, i)
        lab = _labels(48, 64)
        lab[0, 0] = 0  # unlabelled
        _save_png(root / "segmentation" / f"{name}.png", lab)
        for sub, arr in (("depth", np.full((48, 64), 2.5)), ("edge", (lab == 7).astype(np.float32)),
                         ("normals", np.tile(np.array([0.0, 0.0, 1.0]), (48, 64, 1)))):
            (root / sub).mkdir(exist_ok=True)
            np.save(root / sub / f"{name}.npy", arr)
    return root


def test_nyud_loader(nyud_tree: Path) -> None:
    cfg = with_overrides(load_config("tiny"), **{"model.tasks": [
        {"name": "semseg", "channels": 40}, {"name": "depth", "channels": 1}, {"name": "normals", "channels": 3},
        {"name": "edge", "channels": 1}]})
    ds = build_dataset(cfg, "nyud", "val", root=nyud_tree)
    assert isinstance(ds, NYUDMT) and len(ds) == 2
    s = ds[0]
    assert s["image"].shape == (3, 32, 32) and s["image"].dtype == torch.float32
    seg = s["semseg"]
    assert seg.shape == (32, 32) and seg[0, 0] == IGNORE_INDEX  # 0 → ignore, labels shifted down by one
    assert set(seg.unique().tolist()) == {IGNORE_INDEX, 2, 6}
    assert torch.allclose(s["depth"], torch.full((1, 32, 32), 2.5))
    assert torch.allclose(s["normals"][2], torch.ones(32, 32)) and s["edge"].sum() > 0
    assert get_batch(ds, [0, 1])["depth"].shape == (2, 1, 32, 32)


def test_nyud_loader_errors(nyud_tree: Path, tiny) -> None:
    with pytest.raises(FileNotFoundError, match=r"train\.txt"):
        NYUDMT(nyud_tree, tiny, "train")
    (nyud_tree / "images" / "0002.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"0002\.jpg"):
        NYUDMT(nyud_tree, tiny, "val")
    sal = with_overrides(tiny, **{"model.tasks": [{"name": "sal", "channels": 1}]})
    with pytest.raises(ValueError, match="no saliency"):
        NYUDMT(nyud_tree, sal, "val")


def _human_parts_mat(path: Path, h: int, w: int, with_person: bool) -> None:
    from scipy.io import savemat

    part_dt = [("part_name", object), ("mask", object)]
    obj_dt = [("class", object), ("class_ind", object), ("mask", object), ("parts", object)]
    head, torso = np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)
    head[:4, :4], torso[4:10, :4] = 1, 1
    parts = np.zeros((1, 2), dtype=part_dt)
    parts[0, 0], parts[0, 1] = ("head", head), ("torso", torso)
    objs = np.zeros((1, 1), dtype=obj_dt)
    objs[0, 0] = ("person" if with_person else "dog", np.array([[15 if with_person else 12]]), head | torso, parts)
    anno = np.zeros((1, 1), dtype=[("imname", object), ("objects", object)])
    anno[0, 0] = ("x", objs)
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(str(path), {"anno": anno})


def test_pascal_loader(tmp_path: Path) -> None:
    pytest.importorskip("scipy", reason="PASCAL-Context annotations are .mat files")
    from scipy.io import savemat

    root = tmp_path / "PASCAL_MT"
    ids = ["2008_000001", "2008_000002"]
    (root / "ImageSets" / "Context").mkdir(parents=True)
    (root / "ImageSets" / "Context" / "train.txt").write_text("\n".join(ids))
    h, w = 32, 40
    for i, name in enumerate(ids):
        _save_jpg(root / "JPEGImages" / f"{name}.jpg", h, w, i)
        lab = _labels(h, w)
        lab[-1, -1] = 255
        _save_png(root / "semseg" / "pascal-context" / f"{name}.png", lab)
        normals = np.zeros((h, w, 3), np.uint8)
        normals[..., 2] = 255  # +z
        normals[..., :2] = 128
        _save_png(root / "normals_distill" / f"{name}.png", normals)
        _save_png(root / "sal_distill" / f"{name}.png", (lab > 0).astype(np.uint8) * 255)
        (root / "pascal-context" / "trainval").mkdir(parents=True, exist_ok=True)
        savemat(str(root / "pascal-context" / "trainval" / f"{name}.mat"), {"LabelMap": lab.astype(np.int32)})
        _human_parts_mat(root / "human_parts" / f"{name}.mat", h, w, with_person=i == 0)
    cfg = with_overrides(load_config("tiny"), **{"model.image_size": [32, 40], "model.tasks": [
        {"name": "semseg", "channels": 21}, {"name": "human_parts", "channels": 7},
        {"name": "normals", "channels": 3}, {"name": "sal", "channels": 1}, {"name": "edge", "channels": 1}]})
    ds = PascalContextMT(root, cfg, "train")
    s0, s1 = ds[0], ds[1]
    assert s0["image"].shape == (3, 32, 40)
    assert set(s0["semseg"].unique().tolist()) == {0, 3, 7, 255}
    parts = s0["human_parts"]
    assert (parts[:4, :4] == 1).all() and (parts[4:10, :4] == 2).all() and parts[20:].eq(0).all()
    assert s1["human_parts"].eq(0).all()  # no person: all background
    assert torch.allclose(s0["normals"][2], torch.ones(32, 40), atol=0.02)
    assert torch.equal(s0["sal"][0] > 0, torch.from_numpy(_labels(h, w) > 0))
    edge = s0["edge"][0]
    assert edge[:, 19:21].sum() > 0 and edge[:10, :10].sum() == 0  # at label changes only
    depth_cfg = with_overrides(cfg, **{"model.tasks": [{"name": "depth", "channels": 1}]})
    with pytest.raises(ValueError, match="no depth"):
        PascalContextMT(root, depth_cfg, "train")
    assert len(ds) == 2
