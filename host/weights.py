"""The ``.m3w`` weights file: the accelerator's DDR weight image plus a JSON manifest.

Layout of a file::

    0      8 bytes   magic  b"M3W\\x00v001"
    8      4 bytes   little-endian length N of the manifest
    12     N bytes   manifest (UTF-8 JSON, below)
    ...    zero padding to a 64-byte boundary
    device section   exactly the bytes the kernel reads (``m3vit.codegen.layout.pack_weights``)
    host section     float32 tensors used on the CPU (the task heads), little-endian, concatenated

The manifest records the design name and config hash, every device tensor (name, byte offset, shape,
format, SHA-256) and every host tensor, and the SHA-256 and size of each section.
:func:`load_weights` checks all of it against the config (and the bitstream's config hash) before
anything can reach device memory; any mismatch, truncation or corruption is a one-line
:class:`WeightsError`. This module depends on numpy and the config/layout only, so it runs on the board.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from m3vit import __version__
from m3vit.codegen.config import DesignConfig
from m3vit.codegen.layout import weight_layout

MAGIC = b"M3W\x00v001"
ALIGN = 64


class WeightsError(ValueError):
    """A weights file that does not belong to this design, or is truncated or corrupt."""


@dataclass(frozen=True)
class Weights:
    """A loaded, verified weights file."""

    path: Path | None
    manifest: dict[str, Any]
    device: np.ndarray  # uint8, exactly weight_layout(cfg).total_bytes
    host: dict[str, np.ndarray]  # float32 tensors for the CPU side (task heads)

    @property
    def config_hash(self) -> str:
        return self.manifest["config_hash"]


def _sha(data: bytes | np.ndarray) -> str:
    return hashlib.sha256(memoryview(np.ascontiguousarray(data)).cast("B") if isinstance(data, np.ndarray)
                          else data).hexdigest()


def head_tensors(cfg: DesignConfig, state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The task heads' float weights (``heads.{task}.norm/proj``) from a reference state dict."""
    out = {}
    for task in cfg.model.tasks:
        for part in ("norm.weight", "norm.bias", "proj.weight", "proj.bias"):
            key = f"heads.{task.name}.{part}"
            if key not in state_dict:
                raise WeightsError(f"state dict has no {key!r} (the CPU head of task {task.name!r})")
            value = state_dict[key]
            if hasattr(value, "detach"):
                value = value.detach().cpu().numpy()
            out[key] = np.ascontiguousarray(value, dtype=np.float32)
    return out


def build_weights(
    cfg: DesignConfig, device: np.ndarray, host: Mapping[str, np.ndarray], extra: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], bytes]:
    """Manifest and file bytes for packed device weights and host tensors."""
    lay = weight_layout(cfg)
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
        blob = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        host_entries.append({"name": name, "dtype": "float32", "shape": list(arr.shape), "offset": cursor,
                             "nbytes": len(blob)})
        host_blobs.append(blob)
        cursor += len(blob)
    host_bytes = b"".join(host_blobs)
    manifest = {
        "format": "m3w", "version": 1, "created_by": f"m3vit-accel {__version__}",
        "design": cfg.name, "config_hash": cfg.config_hash(),
        "axi_data_bits": cfg.hardware.axi_data_bits,
        "device": {"size": int(device.size), "sha256": _sha(device), "tensors": tensors},
        "host": {"size": len(host_bytes), "sha256": _sha(host_bytes), "tensors": host_entries},
        **(dict(extra) if extra else {}),
    }
    text = json.dumps(manifest, indent=1).encode()
    head = MAGIC + struct.pack("<I", len(text)) + text
    head += b"\0" * (-len(head) % ALIGN)
    return manifest, head + device.tobytes() + host_bytes


def save_weights(
    path: str | Path, cfg: DesignConfig, device: np.ndarray, host: Mapping[str, np.ndarray],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write a ``.m3w`` file atomically (to a temporary name, then renamed); returns the manifest."""
    manifest, data = build_weights(cfg, device, host, extra)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return manifest


def parse_weights(data: bytes, cfg: DesignConfig, build_hash: str | None = None, source: str = "weights") -> Weights:
    """Verify and split the bytes of a ``.m3w`` file; raises WeightsError naming what is wrong."""
    if len(data) < 12 or data[:8] != MAGIC:
        raise WeightsError(f"{source}: not an m3vit weights file (bad magic; expected {MAGIC!r})")
    (n,) = struct.unpack("<I", data[8:12])
    if 12 + n > len(data):
        raise WeightsError(f"{source}: truncated: manifest of {n} bytes but the file has {len(data)}")
    try:
        manifest = json.loads(data[12 : 12 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WeightsError(f"{source}: corrupt manifest ({err})") from None
    if manifest.get("format") != "m3w" or manifest.get("version") != 1:
        raise WeightsError(f"{source}: unsupported format {manifest.get('format')!r} v{manifest.get('version')!r}")
    if manifest.get("config_hash") != cfg.config_hash():
        theirs = str(manifest.get("config_hash"))[:12]
        raise WeightsError(
            f"{source}: built for design {manifest.get('design')!r} (config hash {theirs}), not for "
            f"{cfg.name!r} ({cfg.config_hash()[:12]}); re-pack it with this config"
        )
    if build_hash is not None and build_hash != cfg.config_hash():
        raise WeightsError(
            f"{source}: the hardware build was made from config hash {build_hash[:12]}, the weights from "
            f"{cfg.config_hash()[:12]}; use the config the bitstream was built with"
        )
    start = 12 + n + (-(12 + n) % ALIGN)
    try:
        dev_size, host_size = int(manifest["device"]["size"]), int(manifest["host"]["size"])
        dev_tensors, host_tensors = manifest["device"]["tensors"], manifest["host"]["tensors"]
    except (KeyError, TypeError, ValueError) as err:
        raise WeightsError(f"{source}: corrupt manifest (missing or bad {err})") from None
    if len(data) != start + dev_size + host_size:
        raise WeightsError(
            f"{source}: truncated or padded: {len(data)} bytes, the manifest describes {start + dev_size + host_size}"
        )
    lay = weight_layout(cfg)
    if dev_size != lay.total_bytes:
        raise WeightsError(f"{source}: device section of {dev_size} bytes; {cfg.name}'s layout needs {lay.total_bytes}")
    device = np.frombuffer(data, np.uint8, dev_size, start)
    if _sha(device) != manifest["device"]["sha256"]:
        bad = [t["name"] for t in dev_tensors
               if _sha(device[t["offset"] : t["offset"] + t["nbytes"]]) != t["sha256"]]
        raise WeightsError(f"{source}: checksum mismatch in the device section (corrupt tensors: {bad[:5]})")
    if len(dev_tensors) != len(lay.tensors):
        raise WeightsError(f"{source}: the manifest lists {len(dev_tensors)} device tensors; the layout has "
                           f"{len(lay.tensors)}")
    for t, spec in zip(dev_tensors, lay.tensors, strict=True):
        if (t["name"], t["offset"], tuple(t["shape"])) != (spec.name, spec.offset, spec.shape):
            raise WeightsError(f"{source}: tensor {t['name']!r} at {t['offset']} does not match the layout's "
                               f"{spec.name!r} at {spec.offset}")
    host_raw = data[start + dev_size :]
    if _sha(host_raw) != manifest["host"]["sha256"]:
        raise WeightsError(f"{source}: checksum mismatch in the host section")
    host = {
        e["name"]: np.frombuffer(host_raw, "<f4", int(np.prod(e["shape"])), e["offset"]).reshape(e["shape"])
        for e in host_tensors
    }
    for task in cfg.model.tasks:  # the CPU heads must match the config's tasks
        for key, shape in ((f"heads.{task.name}.proj.weight", (task.channels, cfg.model.dim)),
                           (f"heads.{task.name}.norm.weight", (cfg.model.dim,))):
            if key not in host or host[key].shape != shape:
                found = list(host[key].shape) if key in host else "nothing"
                raise WeightsError(f"{source}: host tensor {key!r} should have shape {list(shape)}, found {found}")
    return Weights(path=None, manifest=manifest, device=device.copy(), host=host)


def load_weights(path: str | Path, cfg: DesignConfig, build_hash: str | None = None) -> Weights:
    """Read and verify a ``.m3w`` file for ``cfg`` (and a bitstream built with ``build_hash``)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} does not exist")
    w = parse_weights(path.read_bytes(), cfg, build_hash, source=str(path))
    return Weights(path=path, manifest=w.manifest, device=w.device, host=w.host)


def pack_model(cfg: DesignConfig, state_dict: Mapping[str, Any], out: str | Path) -> dict[str, Any]:
    """Quantise a reference-layout state dict to ``cfg``'s formats and write ``out`` (.m3w)."""
    from m3vit.codegen.layout import pack_weights
    from m3vit.sim.quantize import quantize_state_dict

    q = quantize_state_dict(cfg, state_dict)
    return save_weights(out, cfg, pack_weights(cfg, q), head_tensors(cfg, state_dict),
                        extra={"weights_saturated": q.saturation})
