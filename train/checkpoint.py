"""Checkpoints: safetensors files of our model, safe reading of foreign files, and key-layout import.

* :func:`save_model` / :func:`load_checkpoint` / :func:`load_model` — our own files: a safetensors state
  dict (keys of :mod:`m3vit.sim.reference`) whose metadata holds the design config (JSON), its hash and
  free-form training metadata, so a checkpoint knows the config it was trained for.
* :func:`read_state_dict` — any weights file, never through pickle: ``.safetensors`` via safetensors,
  anything else via ``torch.load(weights_only=True)`` (which refuses arbitrary objects).
* :func:`convert_state_dict` — foreign key layouts mapped onto ours:
  ``timm`` (timm / DeiT ``VisionTransformer``: ``patch_embed.proj``, ``blocks.{i}.attn.qkv``, ``…mlp.fc1``,
  ``pos_embed`` interpolated to our grid; the final ``norm`` and classifier ``head`` are dropped) and
  ``m3vit`` (the M³ViT repository: ``module.`` / ``backbone.`` prefixes stripped, experts and per-task gates
  kept, its SETR decoders dropped).
* :func:`load_into` — copies a mapped state dict into a model; a key or shape mismatch is one line naming
  the key, the expected and the found shape.
* :func:`save_train_state` / :func:`load_train_state` — optimizer state and step for ``--resume``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional

from m3vit.codegen.config import DesignConfig
from m3vit.errors import ToolkitError
from m3vit.sim.reference import M3ViT

FORMAT = "m3vit-accel/1"
"""``format`` metadata entry of the files this module writes."""

LAYOUTS = ("auto", "native", "timm", "m3vit")


class CheckpointError(ToolkitError, ValueError):
    """A weights file that cannot be used; ``str(err)`` is one line naming the key or file."""


# ------------------------------------------------------------------------------------------ file I/O
def _safetensors():
    try:
        import safetensors.torch as st
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("checkpoints need the safetensors package: pip install safetensors") from None
    return st


def _write(tensors: Mapping[str, Tensor], path: Path, metadata: dict[str, str]) -> Path:
    """Write a safetensors file atomically (temp file, then rename) with the usual umask permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    _safetensors().save_file(_plain(tensors), str(tmp), metadata=metadata)
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)
    tmp.replace(path)  # never leave a half-written checkpoint behind
    return path


def _plain(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Contiguous, unshared CPU copies (safetensors refuses views that share storage)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}


def save_model(
    path: str | Path,
    model: nn.Module | Mapping[str, Tensor],
    cfg: DesignConfig,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model``'s state dict (float32) to a safetensors file with the config and ``metadata``."""
    sd = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    sd = {k: v.float() if v.is_floating_point() else v for k, v in _plain(sd).items()}
    meta = {
        "format": FORMAT,
        "config": cfg.model_dump_json(),
        "config_hash": cfg.config_hash(),
        "metadata": json.dumps(dict(metadata or {}), sort_keys=True),
    }
    return _write(sd, Path(path), meta)


@dataclass
class Checkpoint:
    """A loaded weights file: state dict, the config it stores (None for foreign files), metadata."""

    state_dict: dict[str, Tensor]
    config: DesignConfig | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def _unwrap(obj: object, path: Path) -> dict[str, Tensor]:
    for key in ("state_dict", "model", "model_state", "module", "net"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: holds no tensors")
    return tensors


def read_state_dict(path: str | Path) -> Checkpoint:
    """Read any weights file without unpickling arbitrary objects.

    ``.safetensors`` files are read with safetensors (their metadata's config and training metadata are
    returned when we wrote them); other files with ``torch.load(weights_only=True)``, unwrapping a
    ``{"state_dict": …}`` / ``{"model": …}`` container. Raises :class:`CheckpointError` (one line) for a file
    that is missing, unreadable, or needs pickle to load.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        st = _safetensors()
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            sd = st.load_file(str(path))
        except Exception as err:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: not a readable safetensors file ({str(err).splitlines()[0]})") from None
        cfg = DesignConfig.model_validate_json(meta["config"]) if "config" in meta else None
        extra = json.loads(meta["metadata"]) if "metadata" in meta else {}
        return Checkpoint(sd, cfg, extra)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path}: refused to load (only safetensors or weights-only torch files are accepted): {first}"
        ) from None
    return Checkpoint(_unwrap(obj, path))


def load_checkpoint(path: str | Path) -> Checkpoint:
    """One of our checkpoints (``save_model``): state dict, config and metadata; CheckpointError otherwise."""
    ckpt = read_state_dict(path)
    if ckpt.config is None:
        raise CheckpointError(f"{path}: has no stored config (not written by m3vit); import it with convert_state_dict")
    return ckpt


def load_model(path: str | Path, cfg: DesignConfig | None = None) -> M3ViT:
    """An :class:`M3ViT` in eval mode with the weights of checkpoint ``path``.

    ``cfg`` defaults to the config stored in the file; a given ``cfg`` must match its model part.
    """
    ckpt = read_state_dict(path)
    if cfg is None:
        if ckpt.config is None:
            raise CheckpointError(f"{path}: has no stored config; pass the config it was trained for")
        cfg = ckpt.config
    elif ckpt.config is not None and ckpt.config.model != cfg.model:
        raise CheckpointError(
            f"{path}: was trained for model config {ckpt.config.name!r}, which differs from {cfg.name!r}'s model"
        )
    model = M3ViT(cfg)
    load_into(model, ckpt.state_dict, strict=True)
    return model.eval()


# ------------------------------------------------------------------------------------- shape checks
def _shape(t: Tensor | torch.Size | tuple[int, ...]) -> list[int]:
    return list(t.shape) if isinstance(t, Tensor) else list(t)


def load_into(
    model: nn.Module, state_dict: Mapping[str, Tensor], strict: bool = True, sources: Mapping[str, str] | None = None
) -> list[str]:
    """Copy ``state_dict`` into ``model`` after checking every key and shape.

    ``strict``: every model key must be present and no extra key allowed. Otherwise missing keys keep the
    model's values and are returned. ``sources`` (our key → file key) names the original key in errors.
    Raises :class:`CheckpointError` with one line: the key, the expected and the found shape.
    """
    own = model.state_dict()
    sources = sources or {}

    def name(k: str) -> str:
        return f"{k} (from {sources[k]})" if k in sources and sources[k] != k else k

    extra = [k for k in state_dict if k not in own]
    if extra:
        raise CheckpointError(f"unexpected key {name(extra[0])} with shape {_shape(state_dict[extra[0]])}"
                              f" ({len(extra)} unexpected key(s) in all); the model has no such parameter")
    missing = [k for k in own if k not in state_dict]
    if strict and missing:
        raise CheckpointError(f"missing key {missing[0]} (expected shape {_shape(own[missing[0]])}; "
                              f"{len(missing)} missing key(s) in all)")
    for k, v in state_dict.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise CheckpointError(f"{name(k)}: expected shape {_shape(own[k])}, found {_shape(v)}")
        if not v.is_floating_point() and own[k].is_floating_point():
            raise CheckpointError(f"{name(k)}: expected a floating-point tensor, found {v.dtype}")
    with torch.no_grad():
        merged = {**own, **{k: v.to(own[k].dtype) for k, v in state_dict.items()}}
        model.load_state_dict(merged, strict=True)
    return missing


# --------------------------------------------------------------------------------------- key layouts
@dataclass
class ImportResult:
    """A foreign state dict mapped onto our keys.

    ``state_dict`` has our keys (only those found); ``sources`` maps each to the file's key; ``ignored``
    lists file keys with no counterpart (classifier head, final norm, decoders); ``missing`` our keys the
    file does not provide (they keep the model's initialisation).
    """

    state_dict: dict[str, Tensor]
    sources: dict[str, str]
    ignored: list[str]
    missing: list[str]
    layout: str


def interpolate_pos_embed(pos: Tensor, grid: tuple[int, int], num_prefix: int = 1) -> Tensor:
    """Resample position embeddings [1, prefix + h·w, D] (square h = w) to ``grid`` = (gh, gw).

    The prefix tokens (cls) are kept as they are; the grid part is resampled bicubically with
    anti-aliasing (timm's ``resample_abs_pos_embed``). Returns [1, prefix + gh·gw, D].
    """
    prefix, grid_part = pos[:, :num_prefix], pos[:, num_prefix:]
    n = grid_part.shape[1]
    side = math.isqrt(n)
    if side * side != n:
        raise CheckpointError(f"pos_embed: {n} grid positions do not form a square grid")
    if (side, side) == tuple(grid):
        return pos
    dim = pos.shape[-1]
    g = grid_part.reshape(1, side, side, dim).permute(0, 3, 1, 2).float()  # [1, D, side, side]
    g = functional.interpolate(g, size=tuple(grid), mode="bicubic", antialias=True, align_corners=False)
    g = g.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], dim).to(pos.dtype)  # [1, gh·gw, D]
    return torch.cat([prefix, g], dim=1)


_TIMM_UNSUPPORTED = re.compile(r"(\.ls[12]\.|\.[qk]_norm\.|(^|\.)norm_pre\.|^reg_token$|\.attn\.norm\.)")
_TIMM_DROPPED = re.compile(r"^(norm|fc_norm|head|head_dist|pre_logits|attn_pool)(\.|$)|^dist_token$")


def _detect_layout(sd: Mapping[str, Tensor]) -> str:
    keys = list(sd)
    if any(k.startswith(("module.", "backbone.")) for k in keys):
        return "m3vit"
    if any(".mlp.experts." in k or k.startswith("heads.") for k in keys):
        return "native"
    return "timm"


def _map_timm(sd: Mapping[str, Tensor], cfg: DesignConfig, model_keys: set[str]) -> ImportResult:
    out, sources, ignored = {}, {}, []
    m = cfg.model
    for k, v in sd.items():
        if _TIMM_UNSUPPORTED.search(k):
            raise CheckpointError(f"{k}: this timm model uses a feature our ViT does not have (layer scale, "
                                  "qk-norm, pre-norm or register tokens); it cannot be imported")
        if _TIMM_DROPPED.search(k):
            ignored.append(k)
            continue
        if k == "pos_embed":
            prefix = 2 if "dist_token" in sd else 1
            if v.shape[1] == math.isqrt(v.shape[1]) ** 2:  # no_embed_class: no cls position, use zero
                v, prefix = torch.cat([v.new_zeros(1, 1, v.shape[-1]), v], dim=1), 1
            if prefix == 2:  # distilled DeiT: drop the distillation token's position
                v = torch.cat([v[:, :1], v[:, 2:]], dim=1)
            v = interpolate_pos_embed(v, m.grid, num_prefix=1)
        block = re.match(r"blocks\.(\d+)\.mlp\.(fc[12])\.", k)
        if block and m.is_moe(int(block.group(1))):
            ignored.append(k)  # a dense MLP where our model has experts: experts keep their initialisation
            continue
        if k not in model_keys:
            raise CheckpointError(f"{k}: unexpected key in a timm ViT state dict (shape {_shape(v)})")
        out[k], sources[k] = v, k
    return ImportResult(out, sources, ignored, sorted(model_keys - set(out)), "timm")


_M3VIT_DROPPED = re.compile(r"^(decoders?|heads?|decode_head|aux_heads?|task_heads?|norm)(\.|$)|\.w_gate_aux$")


def _map_m3vit(sd: Mapping[str, Tensor], cfg: DesignConfig, model_keys: set[str]) -> ImportResult:
    out, sources, ignored = {}, {}, []
    for k, v in sd.items():
        ours = k.removeprefix("module.")
        if not ours.startswith("backbone."):
            ignored.append(k)  # decoders / heads live outside the backbone in the M3ViT code
            continue
        ours = ours.removeprefix("backbone.")
        if _M3VIT_DROPPED.search(ours):
            ignored.append(k)
            continue
        if ours not in model_keys:
            raise CheckpointError(f"{k}: no counterpart {ours!r} in our model (shape {_shape(v)}); "
                                  "check the config's depth, moe_blocks, gate and tasks")
        out[ours], sources[ours] = v, k
    return ImportResult(out, sources, ignored, sorted(model_keys - set(out)), "m3vit")


def convert_state_dict(sd: Mapping[str, Tensor], cfg: DesignConfig, layout: str = "auto") -> ImportResult:
    """Map a foreign state dict onto the keys of ``M3ViT(cfg)`` (shapes are checked by :func:`load_into`)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r} must be one of {list(LAYOUTS)}")
    model_keys = set(M3ViT(cfg).state_dict())
    layout = _detect_layout(sd) if layout == "auto" else layout
    if layout == "timm":
        return _map_timm(sd, cfg, model_keys)
    if layout == "m3vit":
        return _map_m3vit(sd, cfg, model_keys)
    out = dict(sd)
    return ImportResult(out, {k: k for k in out}, [], sorted(model_keys - set(out)), "native")


def import_weights(model: M3ViT, source: str | Path | Mapping[str, Tensor], layout: str = "auto") -> ImportResult:
    """Load a foreign (or our own) weights file or state dict into ``model``, keeping unmapped keys' init."""
    sd = read_state_dict(source).state_dict if isinstance(source, (str, Path)) else dict(source)
    result = convert_state_dict(sd, model.cfg, layout)
    load_into(model, result.state_dict, strict=False, sources=result.sources)
    return result


# ----------------------------------------------------------------------------------- training state
def save_train_state(path: str | Path, optimizer: torch.optim.Optimizer, step: int, extra: Mapping[str, Any]) -> Path:
    """Optimizer state (tensors in safetensors, the rest as JSON metadata), the step and the torch RNG."""
    state = optimizer.state_dict()
    tensors: dict[str, Tensor] = {"rng.torch": torch.get_rng_state()}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"state.{pid}.{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    meta = {
        "format": FORMAT,
        "step": str(int(step)),
        "param_groups": json.dumps(state["param_groups"]),
        "scalars": json.dumps(scalars),
        "extra": json.dumps(dict(extra), sort_keys=True),
    }
    return _write(tensors, Path(path), meta)


def load_train_state(path: str | Path, optimizer: torch.optim.Optimizer) -> tuple[int, dict[str, Any]]:
    """Restore ``optimizer`` and the torch RNG from :func:`save_train_state`; returns (step, extra)."""
    from safetensors import safe_open

    path = Path(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a training-state file written by m3vit")
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("state."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for pid, entries in json.loads(meta["scalars"]).items():
        state.setdefault(int(pid), {}).update(entries)
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    torch.set_rng_state(tensors["rng.torch"])
    return int(meta["step"]), json.loads(meta["extra"])


__all__ = [
    "FORMAT",
    "LAYOUTS",
    "Checkpoint",
    "CheckpointError",
    "ImportResult",
    "convert_state_dict",
    "import_weights",
    "interpolate_pos_embed",
    "load_checkpoint",
    "load_into",
    "load_model",
    "load_train_state",
    "read_state_dict",
    "save_model",
    "save_train_state",
]
