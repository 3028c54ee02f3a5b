"""The ``.m3w`` weights file: the accelerator's DDR weight image plus a JSON manifest.

Layout of a file::

    0      8 bytes   magic  b"M3W\\x00v002"
    8      4 bytes   little-endian length N of the manifest
    12    32 bytes   SHA-256 of the manifest bytes
    44     N bytes   manifest (UTF-8 JSON, schema :class:`Manifest`)
    ...    zero padding to a 64-byte boundary
    device section   exactly the bytes the kernel reads (``m3vit.codegen.layout.pack_weights``)
    host section     float32 tensors used on the CPU (the task heads), little-endian, concatenated

The manifest records the design name and config hash, every device tensor (name, byte offset, shape,
format, SHA-256) and every host tensor, and the SHA-256 and size of each section. A task-specialised file
(``m3vit pack --prune-plan PLAN --task TASK``) also records ``pruning``: the plan's name and rule, the task
and every MoE layer's kept experts and top-K; its device section stores only those experts (the layout of
``weight_layout(cfg, kept)``) and it runs only that task (:meth:`Weights.check_task`). Its own SHA-256 sits
in the header, so every byte of the file is covered by a checksum (the padding must be zero).
:func:`load_weights` checks all of it against the config (and the bitstream's config hash) before
anything can reach device memory; any mismatch, truncation or corruption is a one-line
:class:`WeightsError`. This module depends on numpy, pydantic and the config/layout only, so it runs on
the board.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from m3vit import __version__
from m3vit.codegen.config import DesignConfig
from m3vit.codegen.layout import weight_layout
from m3vit.errors import ToolkitError
from m3vit.sim.pruning import KeptExperts, kept_experts

MAGIC = b"M3W\x00v002"
OLD_MAGICS = (b"M3W\x00v001",)
HEADER = 12 + 32  # magic, manifest length, manifest SHA-256
ALIGN = 64


class WeightsError(ToolkitError, ValueError):
    """A weights file that does not belong to this design, or is truncated or corrupt."""


# ------------------------------------------------------------------------------------------ manifest schema
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Count = Annotated[int, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DeviceTensor(_Strict):
    """One tensor of the device section (mirrors ``m3vit.codegen.layout`` TensorLayout)."""

    name: str
    offset: Count
    nbytes: Count
    shape: list[Count]
    bits: Count
    frac: int
    container_bits: Count
    order: str
    stored_shape: list[Count]
    sha256: Sha256


class HostTensor(_Strict):
    """One float32 tensor of the host section; ``offset`` in bytes from the section's start."""

    name: str
    dtype: Literal["float32"]
    shape: list[Count]
    offset: Count
    nbytes: Count


class DeviceSection(_Strict):
    size: Count
    sha256: Sha256
    tensors: list[DeviceTensor]


class HostSection(_Strict):
    size: Count
    sha256: Sha256
    tensors: list[HostTensor]


class PrunedLayer(_Strict):
    """One MoE layer of a task-specialised file: the experts it stores (ascending) and its top-K."""

    block: Count
    experts: list[Count]
    top_k: Annotated[int, Field(ge=1)]


class Pruning(_Strict):
    """The plan a task-specialised file was packed with: every MoE layer's kept experts, for one task."""

    plan: str
    rule: str
    task: str
    layers: list[PrunedLayer]


class Manifest(_Strict):
    """The JSON manifest of a ``.m3w`` file; unknown keys and wrong types are refused."""

    format: Literal["m3w"]
    version: Literal[2]
    created_by: str
    design: str
    config_hash: Sha256
    axi_data_bits: Count
    device: DeviceSection
    host: HostSection
    weights_saturated: dict[str, Count] | None = None
    pruning: Pruning | None = None


@dataclass(frozen=True)
class Weights:
    """A loaded, verified weights file."""

    path: Path | None
    manifest: dict[str, Any]
    device: np.ndarray  # uint8, exactly weight_layout(cfg, kept).total_bytes
    host: dict[str, np.ndarray]  # float32 tensors for the CPU side (task heads)

    @property
    def config_hash(self) -> str:
        return self.manifest["config_hash"]

    @property
    def pruned_task(self) -> str | None:
        """The task a task-specialised file was packed for; None for a full file (every task)."""
        p = self.manifest.get("pruning")
        return None if p is None else p["task"]

    def expert_map(self, cfg: DesignConfig) -> dict[tuple[int, int], KeptExperts]:
        """The file's pruned layers as an :data:`m3vit.sim.pruning.ExpertMap` (empty for a full file), for the
        golden model: ``GoldenModel(cfg, q, experts=weights.expert_map(cfg))`` runs what the kernel runs."""
        return pruning_map(cfg, self.manifest.get("pruning"), "weights")[1]

    def check_task(self, cfg: DesignConfig, task: int) -> None:
        """Refuse (one line) a task a task-specialised file was not packed for, before any device write."""
        if self.pruned_task is not None and cfg.model.task_names[task] != self.pruned_task:
            where = f"{self.path}" if self.path else "weights"
            raise WeightsError(f"{where}: pruned for task {self.pruned_task!r} (plan "
                               f"{self.manifest['pruning']['plan']!r}); it cannot run task "
                               f"{cfg.model.task_names[task]!r}: pack a file for that task or an unpruned one")


def pruning_map(
    cfg: DesignConfig, pruning: Mapping[str, Any] | None, source: str
) -> tuple[dict[int, KeptExperts], dict[tuple[int, int], KeptExperts]]:
    """A manifest's ``pruning`` → (MoE block → kept experts, the layout's ``kept``; the golden ExpertMap).

    Every MoE layer must be listed once; refused (WeightsError, one line) for a task the config does not have,
    a block that is not MoE, an expert out of range, fewer experts than top-K."""
    if pruning is None:
        return {}, {}
    m = cfg.model
    task = pruning["task"]
    if task not in m.task_names:
        raise WeightsError(f"{source}: pruned for task {task!r}, which {cfg.name} does not have (tasks "
                           f"{list(m.task_names)})")
    kept: dict[int, KeptExperts] = {}
    emap: dict[tuple[int, int], KeptExperts] = {}
    for layer in pruning["layers"]:
        try:
            key, k = kept_experts(cfg, task, layer["block"], list(layer["experts"]), layer["top_k"])
        except ValueError as err:
            raise WeightsError(f"{source}: pruning map: {err}") from None
        if key[1] in kept:
            raise WeightsError(f"{source}: pruning map lists block {key[1]} twice")
        if list(k.experts) != list(layer["experts"]):
            raise WeightsError(f"{source}: pruning map of block {key[1]}: experts {layer['experts']} are not ascending")
        kept[key[1]] = k
        emap[key] = k
    if sorted(kept) != sorted(m.moe_block_set):
        raise WeightsError(f"{source}: pruning map covers blocks {sorted(kept)}; {cfg.name}'s MoE blocks are "
                           f"{sorted(m.moe_block_set)}")
    return kept, emap


def _sha(data: bytes | np.ndarray) -> str:
    return hashlib.sha256(memoryview(np.ascontiguousarray(data)).cast("B") if isinstance(data, np.ndarray)
                          else data).hexdigest()


def head_shapes(cfg: DesignConfig) -> dict[str, tuple[int, ...]]:
    """Name → shape of every host tensor a file for ``cfg`` carries (the task heads), in file order."""
    dim = cfg.model.dim
    out: dict[str, tuple[int, ...]] = {}
    for task in cfg.model.tasks:
        out[f"heads.{task.name}.norm.weight"] = (dim,)
        out[f"heads.{task.name}.norm.bias"] = (dim,)
        out[f"heads.{task.name}.proj.weight"] = (task.channels, dim)
        out[f"heads.{task.name}.proj.bias"] = (task.channels,)
    return out


def head_tensors(cfg: DesignConfig, state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The task heads' float weights (``heads.{task}.norm/proj``) from a reference state dict.

    Every tensor must have its head's shape and hold finite values only."""
    out = {}
    for key, shape in head_shapes(cfg).items():
        task = key.split(".")[1]
        if key not in state_dict:
            raise WeightsError(f"state dict has no {key!r} (the CPU head of task {task!r})")
        value = state_dict[key]
        if hasattr(value, "detach"):
            value = value.detach().cpu().float().numpy()
        arr = np.ascontiguousarray(value, dtype=np.float32)
        if arr.shape != shape:
            raise WeightsError(f"{key} has shape {list(arr.shape)}; task {task!r} needs {list(shape)}")
        out[key] = arr
    return out


def build_weights(
    cfg: DesignConfig, device: np.ndarray, host: Mapping[str, np.ndarray], extra: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], bytes]:
    """Manifest and file bytes for packed device weights and host tensors (``extra["pruning"]``: a
    task-specialised device image, see :class:`Pruning`)."""
    lay = weight_layout(cfg, pruning_map(cfg, (extra or {}).get("pruning"), "weights")[0])
    device = np.ascontiguousarray(device, dtype=np.uint8)
    if device.size != lay.total_bytes:
        raise WeightsError(f"device image has {device.size} bytes; {cfg.name}'s layout needs {lay.total_bytes}")
    tensors = []
    for t in lay.tensors:
        tensors.append({
            "name": t.name, "offset": t.offset, "nbytes": t.nbytes, "shape": list(t.shape), "bits": t.bits,
            "frac": t.frac, "container_bits": t.container_bits, "order": t.order,
            "stored_shape": list(t.stored_shape),
            "sha256": _sha(device[t.offset : t.offset + t.nbytes]),
        })
    host_entries, host_blobs, cursor = [], [], 0
    for name, arr in host.items():
        arr = np.asarray(arr)
        if not np.all(np.isfinite(arr)):
            raise WeightsError(f"host tensor {name!r} holds NaN or inf; only finite weights can be packed")
        blob = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        host_entries.append({"name": name, "dtype": "float32", "shape": list(arr.shape), "offset": cursor,
                             "nbytes": len(blob)})
        host_blobs.append(blob)
        cursor += len(blob)
    host_bytes = b"".join(host_blobs)
    manifest = {
        "format": "m3w", "version": 2, "created_by": f"m3vit-accel {__version__}",
        "design": cfg.name, "config_hash": cfg.config_hash(),
        "axi_data_bits": cfg.hardware.axi_data_bits,
        "device": {"size": int(device.size), "sha256": _sha(device), "tensors": tensors},
        "host": {"size": len(host_bytes), "sha256": _sha(host_bytes), "tensors": host_entries},
        **(dict(extra) if extra else {}),
    }
    try:
        Manifest.model_validate(manifest)
    except ValidationError as err:
        raise WeightsError(f"cannot write a valid manifest: {_first_error(err)}") from None
    return manifest, encode_manifest(manifest) + device.tobytes() + host_bytes


def encode_manifest(manifest: Mapping[str, Any]) -> bytes:
    """The file's header: magic, manifest length, manifest SHA-256, manifest, zero padding to 64 bytes."""
    text = json.dumps(manifest, indent=1).encode()
    head = MAGIC + struct.pack("<I", len(text)) + hashlib.sha256(text).digest() + text
    return head + b"\0" * (-len(head) % ALIGN)


def save_weights(
    path: str | Path, cfg: DesignConfig, device: np.ndarray, host: Mapping[str, np.ndarray],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write a ``.m3w`` file atomically (to a temporary file beside it, then renamed); returns the manifest."""
    manifest, data = build_weights(cfg, device, host, extra)
    write_atomically(path, data)
    return manifest


def write_atomically(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder (removed on any failure)."""
    import os
    import tempfile

    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"output {str(path)!r} is a directory; give a file name such as model.m3w")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WeightsError(f"cannot create the folder of {str(path)!r}: {err.strerror}") from None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _first_error(err: ValidationError) -> str:
    e = err.errors()[0]
    where = ".".join(str(p) for p in e["loc"]) or "manifest"
    return f"{where}: {e['msg']}"


def parse_weights(data: bytes, cfg: DesignConfig, build_hash: str | None = None, source: str = "weights") -> Weights:
    """Verify and split the bytes of a ``.m3w`` file; raises WeightsError naming what is wrong."""
    if data[:8] in OLD_MAGICS:
        raise WeightsError(f"{source}: an older .m3w format (without a manifest checksum); re-pack it with m3vit pack")
    if len(data) < HEADER or data[:8] != MAGIC:
        raise WeightsError(f"{source}: not an m3vit weights file (bad magic; expected {MAGIC!r})")
    (n,) = struct.unpack("<I", data[8:12])
    if HEADER + n > len(data):
        raise WeightsError(f"{source}: truncated: manifest of {n} bytes but the file has {len(data)}")
    text = data[HEADER : HEADER + n]
    if hashlib.sha256(text).digest() != data[12:HEADER]:
        raise WeightsError(f"{source}: checksum mismatch in the manifest (the file is corrupt)")
    try:
        raw_manifest = json.loads(text)
        manifest_model = Manifest.model_validate(raw_manifest)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WeightsError(f"{source}: corrupt manifest ({err})") from None
    except ValidationError as err:
        raise WeightsError(f"{source}: invalid manifest ({_first_error(err)})") from None
    man = manifest_model
    if man.config_hash != cfg.config_hash():
        raise WeightsError(
            f"{source}: built for design {man.design!r} (config hash {man.config_hash}), not for "
            f"{cfg.name!r} ({cfg.config_hash()}); re-pack it with this config"
        )
    if build_hash is not None and build_hash != cfg.config_hash():
        raise WeightsError(
            f"{source}: the hardware build was made from config hash {build_hash}, the weights from "
            f"{cfg.config_hash()}; use the config the bitstream was built with"
        )
    if man.axi_data_bits != cfg.hardware.axi_data_bits:
        raise WeightsError(f"{source}: packed for a {man.axi_data_bits}-bit AXI bus; {cfg.name} has "
                           f"{cfg.hardware.axi_data_bits}")
    kept = pruning_map(cfg, raw_manifest.get("pruning"), source)[0]
    start = HEADER + n + (-(HEADER + n) % ALIGN)
    if any(data[HEADER + n : start]):
        raise WeightsError(f"{source}: non-zero padding after the manifest (the file is corrupt)")
    dev_size, host_size = man.device.size, man.host.size
    if len(data) != start + dev_size + host_size:
        raise WeightsError(
            f"{source}: truncated or padded: {len(data)} bytes, the manifest describes {start + dev_size + host_size}"
        )
    lay = weight_layout(cfg, kept)
    if dev_size != lay.total_bytes:
        raise WeightsError(f"{source}: device section of {dev_size} bytes; {cfg.name}'s layout needs {lay.total_bytes}")
    if len(man.device.tensors) != len(lay.tensors):
        raise WeightsError(f"{source}: the manifest lists {len(man.device.tensors)} device tensors; the layout has "
                           f"{len(lay.tensors)}")
    for t, spec in zip(man.device.tensors, lay.tensors, strict=True):
        want = (spec.name, spec.offset, spec.nbytes, list(spec.shape), spec.bits, spec.frac, spec.container_bits,
                spec.order, list(spec.stored_shape))
        got = (t.name, t.offset, t.nbytes, t.shape, t.bits, t.frac, t.container_bits, t.order, t.stored_shape)
        if got != want:
            raise WeightsError(f"{source}: tensor {t.name!r} at {t.offset} does not match the layout's "
                               f"{spec.name!r} at {spec.offset}")
    device = np.frombuffer(data, np.uint8, dev_size, start)
    if _sha(device) != man.device.sha256:
        bad = [t.name for t in man.device.tensors if _sha(device[t.offset : t.offset + t.nbytes]) != t.sha256]
        raise WeightsError(f"{source}: checksum mismatch in the device section (corrupt tensors: {bad[:5]})")
    host_raw = data[start + dev_size :]
    if _sha(host_raw) != man.host.sha256:
        raise WeightsError(f"{source}: checksum mismatch in the host section")
    host = _host_tensors(man.host, head_shapes(cfg), host_raw, source)
    return Weights(path=None, manifest=raw_manifest, device=device.copy(), host=host)


def _host_tensors(
    section: HostSection, expected: Mapping[str, tuple[int, ...]], raw: bytes, source: str
) -> dict[str, np.ndarray]:
    """Host tensors of a verified section: exactly the expected names and shapes, packed back to back."""
    names = [e.name for e in section.tensors]
    if sorted(names) != sorted(expected) or len(set(names)) != len(names):
        missing = sorted(set(expected) - set(names))
        extra = sorted(set(names) - set(expected))
        raise WeightsError(f"{source}: host tensors do not match the config's task heads (missing {missing[:3]}, "
                           f"unexpected {extra[:3]})")
    host, cursor = {}, 0
    for e in section.tensors:
        shape = expected[e.name]
        if tuple(e.shape) != shape:
            raise WeightsError(f"{source}: host tensor {e.name!r} should have shape {list(shape)}, found {e.shape}")
        if e.offset != cursor or e.nbytes != 4 * math.prod(shape):
            raise WeightsError(f"{source}: host tensor {e.name!r} at byte {e.offset} ({e.nbytes} bytes) should be at "
                               f"{cursor} ({4 * math.prod(shape)} bytes)")
        arr = np.frombuffer(raw, "<f4", math.prod(shape), e.offset).reshape(shape).astype(np.float32)
        if not np.all(np.isfinite(arr)):
            raise WeightsError(f"{source}: host tensor {e.name!r} holds NaN or inf")
        host[e.name] = arr
        cursor += e.nbytes
    if cursor != section.size:
        raise WeightsError(f"{source}: the host section has {section.size} bytes; its tensors cover {cursor}")
    return host


def load_weights(path: str | Path, cfg: DesignConfig, build_hash: str | None = None) -> Weights:
    """Read and verify a ``.m3w`` file for ``cfg`` (and a bitstream built with ``build_hash``)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} does not exist")
    w = parse_weights(path.read_bytes(), cfg, build_hash, source=str(path))
    return Weights(path=path, manifest=w.manifest, device=w.device, host=w.host)


def pruning_manifest(
    cfg: DesignConfig, emap: Mapping[tuple[int, int], KeptExperts], task: str | int, plan: str, rule: str = ""
) -> dict[str, Any]:
    """The manifest's ``pruning`` entry of a file for ``task`` under the expert map ``emap`` (every MoE layer
    listed: a layer the map does not name keeps every expert at the config's top-K)."""
    m = cfg.model
    try:
        t = m.task_index(task)
    except (KeyError, ValueError, IndexError) as err:
        raise WeightsError(str(err)) from None
    layers = []
    for b in sorted(m.moe_block_set):
        k = emap.get((t, b), KeptExperts(tuple(range(m.num_experts)), m.top_k))
        layers.append({"block": b, "experts": list(k.experts), "top_k": k.top_k})
    return {"plan": plan, "rule": rule, "task": m.task_names[t], "layers": layers}


def pack_model(
    cfg: DesignConfig, state_dict: Mapping[str, Any], out: str | Path, pruning: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Quantise a reference-layout state dict to ``cfg``'s formats and write ``out`` (.m3w); with ``pruning``
    (:func:`pruning_manifest`) a task-specialised file holding only the kept experts."""
    from m3vit.codegen.layout import pack_weights
    from m3vit.sim.quantize import quantize_state_dict

    for key, value in state_dict.items():  # backbone and CPU heads alike: a NaN is named before any work
        arr = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value, dtype=np.float64)
        if not np.all(np.isfinite(arr)):
            bad = int(np.count_nonzero(~np.isfinite(arr)))
            raise WeightsError(f"{key} holds {bad} non-finite values (NaN or inf); only finite weights can be packed")
    kept = pruning_map(cfg, pruning, "pruning plan")[0]
    q = quantize_state_dict(cfg, state_dict)
    extra: dict[str, Any] = {"weights_saturated": q.saturation}
    if pruning is not None:
        extra["pruning"] = dict(pruning)
    return save_weights(out, cfg, pack_weights(cfg, q, kept), head_tensors(cfg, state_dict), extra=extra)
