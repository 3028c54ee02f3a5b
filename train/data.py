"""Multi-task datasets: a procedural scene generator and loaders for the PASCAL-Context / NYUD-v2 layouts.

Every dataset yields samples ``{"image": float [C, H, W], task_name: target, ...}`` with targets in the
layout :mod:`m3vit.train.tasks` defines for the task's kind, already at the config's image size.

:class:`SyntheticScenes` draws 1–3 shapes (disc, square, triangle, cross) on a textured, receding
background. Each shape kind has a hue (jittered), apparent size and brightness fall with distance, and a
disc is a shaded dome, so every target is learnable from the image at 32×32:

* segmentation: background 0, shape kind k → class 1 + k mod (classes − 1);
* depth: metres-like, background 3.5–9 (a ground plane receding to a horizon), shapes 2–6 with a dome
  or tilt; every pixel valid;
* normals: from the depth gradient; saliency: the union of the shapes; edge: instance boundaries.

Samples depend only on (seed, split, index): ``numpy.random.default_rng([seed, split_id, index])``.

:class:`PascalContextMT` and :class:`NYUDMT` read the directory layouts of the public multi-task
releases (PASCAL_MT and NYUD_MT, as used by ASTMT, Multi-Task-Learning-PyTorch and M³ViT); they need
Pillow (and SciPy for PASCAL's ``.mat`` files), imported only when such a dataset is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional
from torch.utils.data import Dataset

from m3vit.codegen.config import DesignConfig, TaskSpec
from m3vit.errors import UserError
from m3vit.train.tasks import IGNORE_INDEX, TaskKind, check_task

SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
"""Split → stream id of the synthetic generator (disjoint streams, so the splits never share a scene)."""

DEFAULT_SIZES = {"train": 4096, "val": 512, "test": 512}
"""Synthetic split sizes when none is given."""

SHAPES = ("disc", "square", "triangle", "cross")
SHAPE_COLORS = np.array([[0.9, 0.25, 0.2], [0.2, 0.8, 0.3], [0.25, 0.35, 0.95], [0.95, 0.85, 0.2]])
"""Base RGB colour of each shape kind (jittered per object)."""

PIXEL_MEAN, PIXEL_STD = 0.5, 0.25
"""Synthetic images are made in [0, 1] and normalised as (x − 0.5) / 0.25."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""Normalisation of real photographs (what DeiT / timm weights expect)."""


# ------------------------------------------------------------------------------------ scene generator
@dataclass(frozen=True)
class Scene:
    """One generated scene at full resolution, before it is turned into task targets."""

    image: np.ndarray  # [3, H, W] float32 in [0, 1]
    instance: np.ndarray  # [H, W] int64, 0 = background, i = i-th painted shape
    kind: np.ndarray  # [H, W] int64, -1 = background, else the shape kind index
    depth: np.ndarray  # [H, W] float32, > 0


def _shape_mask(kind: int, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    if kind == 0:  # disc
        return dx**2 + dy**2 <= r**2
    if kind == 1:  # square
        return np.maximum(np.abs(dx), np.abs(dy)) <= 0.85 * r
    if kind == 2:  # upward triangle: apex at dy = -r, base at dy = 0.7 r
        return (dy <= 0.7 * r) & (np.abs(dx) <= (dy + r) * 0.6)
    arm = 0.35 * r  # cross
    return ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r))


def make_scene(rng: np.random.Generator, height: int, width: int) -> Scene:
    """Draw one scene of ``height`` × ``width`` pixels from ``rng``."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    u, v = xx / width, yy / height  # [H, W] in (0, 1)
    # background: a ground plane from the horizon (far) to the bottom edge (near), textured by two gratings
    far, near, horizon = rng.uniform(7.0, 9.0), rng.uniform(3.5, 5.0), rng.uniform(-0.2, 0.35)
    t = np.clip((v - horizon) / (1.0 - horizon), 0.0, 1.0)
    depth = far + (near - far) * t
    tint = rng.uniform(0.3, 0.55) + rng.uniform(-0.06, 0.06, 3)
    texture = np.zeros_like(u)
    for _ in range(2):
        f, theta, phase = rng.uniform(2.0, 7.0), rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
        texture += rng.uniform(0.03, 0.08) * np.sin(2 * np.pi * f * (np.cos(theta) * u + np.sin(theta) * v) + phase)
    fog = 1.2 - 0.06 * depth  # farther → darker
    image = (tint[:, None, None] + texture[None]) * fog[None]  # [3, H, W]
    instance = np.zeros((height, width), np.int64)
    kind_map = np.full((height, width), -1, np.int64)

    n = int(rng.integers(1, 4))
    objects = []
    for _ in range(n):
        kind, z = int(rng.integers(0, len(SHAPES))), rng.uniform(2.0, 6.0)
        r = max(min(height, width) * rng.uniform(0.5, 0.75) / z, 2.0)  # apparent size ∝ 1 / distance
        cx, cy = rng.uniform(0.15, 0.85) * width, rng.uniform(0.15, 0.85) * height
        jitter = rng.uniform(0.8, 1.1, 3)
        tilt = rng.uniform(-1.0, 1.0, 2)
        objects.append((z, kind, r, cx, cy, jitter, tilt))
    objects.sort(key=lambda o: -o[0])  # paint far to near: nearer shapes occlude
    for i, (z, kind, r, cx, cy, jitter, tilt) in enumerate(objects, start=1):
        dx, dy = xx - cx, yy - cy
        mask = _shape_mask(kind, dx, dy, r)
        if not mask.any():
            continue
        rho2 = np.clip((dx**2 + dy**2) / r**2, 0.0, 1.0)
        if kind == 0:  # a dome: nearer in the middle, shaded
            dz, shade = -0.6 * np.sqrt(1.0 - rho2), 0.7 + 0.3 * np.sqrt(1.0 - rho2)
        elif kind == 3:
            dz, shade = np.zeros_like(u), np.ones_like(u)
        else:  # a tilted plane
            dz, shade = 0.35 * (tilt[0] * dx + tilt[1] * dy) / r, np.ones_like(u)
        bright = np.clip(1.35 - 0.12 * z, 0.5, 1.2)
        color = SHAPE_COLORS[kind] * jitter * bright  # [3]
        layer = color[:, None, None] * shade[None] + 0.3 * texture[None]
        image = np.where(mask[None], layer, image)
        depth = np.where(mask, z + dz, depth)
        instance[mask], kind_map[mask] = i, kind
    image = image + rng.normal(0.0, 0.03, image.shape)
    return Scene(
        image=np.clip(image, 0.0, 1.0).astype(np.float32),
        instance=instance,
        kind=kind_map,
        depth=depth.astype(np.float32),
    )


def edge_map(labels: np.ndarray) -> np.ndarray:
    """1 where a pixel's label differs from its right or lower neighbour (1-pixel boundaries), [H, W]."""
    e = np.zeros(labels.shape, bool)
    e[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    e[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return e


def normals_from_depth(depth: np.ndarray) -> np.ndarray:
    """Unit surface normals [3, H, W] of a depth map [H, W] (x right, y down, z toward the camera)."""
    gy, gx = np.gradient(depth.astype(np.float64))
    k = depth.shape[0] / 4.0  # depth change per quarter image ↔ unit slope
    n = np.stack([-gx * k, -gy * k, np.ones_like(gx)])
    return (n / np.linalg.norm(n, axis=0, keepdims=True)).astype(np.float32)


def scene_targets(scene: Scene, tasks: Sequence[TaskSpec]) -> dict[str, np.ndarray]:
    """The target of every task, in the layout of its kind (m3vit.train.tasks)."""
    out: dict[str, np.ndarray] = {}
    for t in tasks:
        kind = check_task(t)
        if kind is TaskKind.SEGMENTATION:
            out[t.name] = np.where(scene.kind >= 0, 1 + scene.kind % (t.channels - 1), 0).astype(np.int64)
        elif kind is TaskKind.DEPTH:
            out[t.name] = scene.depth[None]
        elif kind is TaskKind.NORMALS:
            out[t.name] = normals_from_depth(scene.depth)
        elif kind is TaskKind.SALIENCY:
            out[t.name] = (scene.instance > 0)[None].astype(np.float32)
        else:
            out[t.name] = edge_map(scene.instance)[None].astype(np.float32)
    return out


def _to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """An RGB image [3, H, W] as ``channels`` channels (grey for 1, RGB cycled beyond 3)."""
    if channels == 3:
        return image
    if channels == 1:
        return image.mean(0, keepdims=True)
    return image[np.arange(channels) % 3]


class SyntheticScenes(Dataset):
    """Procedural multi-task scenes for ``cfg``'s tasks and image size; held in memory as tensors.

    ``split`` is train / val / test; ``size`` defaults to :data:`DEFAULT_SIZES`. Deterministic in
    (seed, split, index); generating 4096 scenes of 32×32 takes about a second.
    """

    def __init__(self, cfg: DesignConfig, split: str = "train", size: int | None = None, seed: int = 0) -> None:
        if split not in SPLIT_IDS:
            raise UserError(f"split {split!r} must be one of {sorted(SPLIT_IDS)}")
        m = cfg.model
        self.tasks = list(m.tasks)
        self.kinds = {t.name: check_task(t) for t in self.tasks}
        self.split, self.seed = split, int(seed)
        n = DEFAULT_SIZES[split] if size is None else int(size)
        h, w = m.image_size
        images, targets = [], {t.name: [] for t in self.tasks}
        for i in range(n):
            scene = make_scene(np.random.default_rng([self.seed, SPLIT_IDS[split], i]), h, w)
            images.append(_to_channels((scene.image - PIXEL_MEAN) / PIXEL_STD, m.in_channels))
            for name, target in scene_targets(scene, self.tasks).items():
                targets[name].append(target)
        self.images = torch.from_numpy(np.stack(images).astype(np.float32))  # [N, C, H, W]
        self.targets = {k: torch.from_numpy(np.stack(v)) for k, v in targets.items()}

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"image": self.images[index], **{k: v[index] for k, v in self.targets.items()}}

    def batch(self, indices: Tensor | Sequence[int]) -> dict[str, Tensor]:
        """Samples ``indices`` stacked into a batch (fast path used by the training loop)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return {"image": self.images[idx], **{k: v[idx] for k, v in self.targets.items()}}


def get_batch(dataset: Dataset, indices: Tensor | Sequence[int]) -> dict[str, Tensor]:
    """Stack samples ``indices`` of any dataset of this module into a batch dictionary."""
    if hasattr(dataset, "batch"):
        return dataset.batch(indices)
    items = [dataset[int(i)] for i in indices]
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


# ------------------------------------------------------------------------------- real datasets on disk
def _pil():
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - depends on the environment
        raise UserError("reading PASCAL-Context / NYUD-v2 images needs Pillow: pip install pillow") from None
    return Image


def _loadmat(path: Path) -> dict:
    try:
        from scipy.io import loadmat
    except ImportError:  # pragma: no cover - depends on the environment
        raise UserError("reading PASCAL-Context .mat annotations needs SciPy: pip install scipy") from None
    return loadmat(str(path))


def _read_png(path: Path) -> np.ndarray:
    return np.asarray(_pil().open(path))


def _resize(x: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """Resize [C, H, W] (or [H, W]) to ``size`` with torch: ``nearest`` for labels, ``bilinear`` else."""
    if x.shape[-2:] == tuple(size):
        return x
    t = torch.from_numpy(np.ascontiguousarray(x)).to(torch.float64)
    t = t[None, None] if t.dim() == 2 else t[None]
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    t = functional.interpolate(t, size=tuple(size), mode=mode, **kwargs)[0]
    return t[0].numpy() if x.ndim == 2 else t.numpy()


class _FolderMT(Dataset):
    """Common part of the on-disk layouts: split files, image reading, resizing, normalisation."""

    image_dir: str
    split_dir: str
    image_ext = ".jpg"

    def __init__(self, root: str | Path, cfg: DesignConfig, split: str = "val") -> None:
        self.root = Path(root)
        self.cfg = cfg
        self.tasks = list(cfg.model.tasks)
        self.kinds = {t.name: check_task(t) for t in self.tasks}
        split_file = self.root / self.split_dir / f"{split}.txt"
        if not split_file.is_file():
            raise FileNotFoundError(f"{type(self).__name__}: split file {split_file} does not exist")
        self.ids = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
        for name in self.kinds:
            self._source(name)  # unknown tasks fail at construction, not in the middle of training
        missing = [i for i in self.ids if not (self.root / self.image_dir / f"{i}{self.image_ext}").is_file()]
        if missing:
            raise FileNotFoundError(
                f"{type(self).__name__}: {len(missing)} image(s) of split {split!r} missing, e.g. "
                f"{self.root / self.image_dir / (missing[0] + self.image_ext)}"
            )

    def __len__(self) -> int:
        return len(self.ids)

    def _source(self, task: str) -> str:
        raise NotImplementedError

    def _load(self, task: str, image_id: str) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        image_id = self.ids[index]
        size = self.cfg.model.image_size
        rgb = np.asarray(_pil().open(self.root / self.image_dir / f"{image_id}{self.image_ext}").convert("RGB"))
        img = rgb.astype(np.float64).transpose(2, 0, 1) / 255.0
        img = (img - np.array(IMAGENET_MEAN)[:, None, None]) / np.array(IMAGENET_STD)[:, None, None]
        img = _to_channels(_resize(img, size, "bilinear"), self.cfg.model.in_channels)
        sample = {"image": torch.from_numpy(img.astype(np.float32))}
        for t in self.tasks:
            kind = self.kinds[t.name]
            raw = self._load(t.name, image_id)
            if kind is TaskKind.SEGMENTATION:
                sample[t.name] = torch.from_numpy(_resize(raw, size, "nearest").astype(np.int64))
            elif kind is TaskKind.NORMALS:
                n = _resize(raw, size, "bilinear")
                norm = np.linalg.norm(n, axis=0, keepdims=True)
                sample[t.name] = torch.from_numpy(np.where(norm > 0, n / np.maximum(norm, 1e-12), 0).astype(np.float32))
            else:  # depth, saliency, edge: one channel, nearest (keeps invalid = 0 and binary maps binary)
                sample[t.name] = torch.from_numpy(_resize(raw, size, "nearest")[None].astype(np.float32))
        return sample


class PascalContextMT(_FolderMT):
    """PASCAL-Context multi-task layout (``PASCAL_MT``)::

        JPEGImages/{id}.jpg                 image
        ImageSets/Context/{split}.txt       ids of a split (train, val)
        semseg/pascal-context/{id}.png      semseg labels (or semseg/VOC12/{id}.png), 255 = ignore
        human_parts/{id}.mat                PASCAL-Part 'anno' struct (person = class 15)
        normals_distill/{id}.png            normals, RGB 0..255 → 2·x/255 − 1
        sal_distill/{id}.png                saliency, 0..255 → (x / 255 > 0.5)
        pascal-context/trainval/{id}.mat    'LabelMap' → edges at label changes

    Human parts use the 6-part grouping (7 classes with background) of ASTMT; an image with no person is
    all background. Edges are label-change pixels of LabelMap, not thinned further.
    """

    image_dir = "JPEGImages"
    split_dir = "ImageSets/Context"

    HUMAN_PARTS_6: ClassVar[dict[str, int]] = {
        "hair": 1, "head": 1, "lear": 1, "lebrow": 1, "leye": 1, "mouth": 1, "nose": 1, "rear": 1, "rebrow": 1,
        "reye": 1, "neck": 2, "torso": 2, "luarm": 3, "ruarm": 3, "llarm": 4, "rlarm": 4, "lhand": 4, "rhand": 4,
        "luleg": 5, "ruleg": 5, "llleg": 6, "rlleg": 6, "lfoot": 6, "rfoot": 6,
    }
    PERSON = 15

    def _source(self, task: str) -> str:
        kind = self.kinds[task]
        if kind is TaskKind.SEGMENTATION:
            return "human_parts" if "part" in task else "semseg"
        if kind is TaskKind.DEPTH:
            raise UserError("PASCAL-Context has no depth task; use NYUDMT for depth")
        return {TaskKind.NORMALS: "normals", TaskKind.SALIENCY: "sal", TaskKind.EDGE: "edge"}[kind]

    def _load(self, task: str, image_id: str) -> np.ndarray:
        source = self._source(task)
        if source == "semseg":
            for sub in ("VOC12", "pascal-context"):
                p = self.root / "semseg" / sub / f"{image_id}.png"
                if p.is_file():
                    return _read_png(p).astype(np.int64)
            raise FileNotFoundError(f"no semseg label for {image_id} under {self.root / 'semseg'}")
        if source == "human_parts":
            return self._human_parts(image_id)
        if source == "normals":
            rgb = _read_png(self.root / "normals_distill" / f"{image_id}.png")[..., :3]
            return (2.0 * rgb / 255.0 - 1.0).transpose(2, 0, 1)
        if source == "sal":
            sal = _read_png(self.root / "sal_distill" / f"{image_id}.png").astype(np.float64)
            return (sal[..., 0] if sal.ndim == 3 else sal) / 255.0 > 0.5
        labels = _loadmat(self.root / "pascal-context" / "trainval" / f"{image_id}.mat")["LabelMap"]
        e = edge_map(labels)
        e[1:, :] |= labels[1:, :] != labels[:-1, :]  # both sides of a vertical change, like a Laplacian
        e[:, 1:] |= labels[:, 1:] != labels[:, :-1]
        return e

    def _human_parts(self, image_id: str) -> np.ndarray:
        objects = _loadmat(self.root / "human_parts" / f"{image_id}.mat")["anno"][0][0][1][0]
        target = None
        for obj in objects:
            if int(np.asarray(obj[1]).ravel()[0]) != self.PERSON or np.asarray(obj[3]).size == 0:
                continue
            if target is None:
                target = np.zeros(np.asarray(obj[2]).shape, np.int64)
            for part in obj[3][0]:
                name = str(np.asarray(part[0]).ravel()[0])
                target[np.asarray(part[1]).astype(bool)] = self.HUMAN_PARTS_6[name]
        if target is None:
            rgb = _pil().open(self.root / self.image_dir / f"{image_id}{self.image_ext}")
            target = np.zeros((rgb.height, rgb.width), np.int64)
        return target


class NYUDMT(_FolderMT):
    """NYUD-v2 multi-task layout (``NYUD_MT``)::

        images/{id}.jpg            image
        gt_sets/{split}.txt        ids of a split (train, val)
        segmentation/{id}.png      40 classes as 1..40, 0 = unlabelled → labels 0..39, 255 = ignore
        depth/{id}.npy             metres [H, W], 0 = invalid
        normals/{id}.npy           [H, W, 3] in [-1, 1]
        edge/{id}.npy              [H, W] in {0, 1}
    """

    image_dir = "images"
    split_dir = "gt_sets"

    def _source(self, task: str) -> str:
        kind = self.kinds[task]
        if kind is TaskKind.SALIENCY:
            raise UserError("NYUD-v2 has no saliency task")
        return {TaskKind.SEGMENTATION: "segmentation", TaskKind.DEPTH: "depth", TaskKind.NORMALS: "normals",
                TaskKind.EDGE: "edge"}[kind]

    def _load(self, task: str, image_id: str) -> np.ndarray:
        source = self._source(task)
        if source == "segmentation":
            raw = _read_png(self.root / "segmentation" / f"{image_id}.png").astype(np.int64)
            return np.where(raw == 0, IGNORE_INDEX, raw - 1)
        arr = np.load(self.root / source / f"{image_id}.npy", allow_pickle=False).astype(np.float64)
        return arr.transpose(2, 0, 1) if source == "normals" else arr


DATASETS = ("synthetic", "pascal", "nyud")


def build_dataset(
    cfg: DesignConfig, kind: str = "synthetic", split: str = "train", root: str | Path | None = None,
    size: int | None = None, seed: int = 0,
) -> Dataset:
    """A dataset by name: ``synthetic`` (size, seed) or ``pascal`` / ``nyud`` (read from ``root``)."""
    if kind == "synthetic":
        return SyntheticScenes(cfg, split, size=size, seed=seed)
    if kind not in DATASETS:
        raise UserError(f"dataset {kind!r} must be one of {list(DATASETS)}")
    if root is None:
        raise UserError(f"dataset {kind!r} needs a data root (--data-root)")
    return (PascalContextMT if kind == "pascal" else NYUDMT)(root, cfg, split)


__all__ = [
    "DATASETS",
    "NYUDMT",
    "PascalContextMT",
    "Scene",
    "SyntheticScenes",
    "build_dataset",
    "edge_map",
    "get_batch",
    "make_scene",
    "normals_from_depth",
    "scene_targets",
]
