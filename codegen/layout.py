"""Memory layouts of the accelerator: the packed weight buffer, the activation scratch and the I/O buffers.

Everything the accelerator reads or writes in DDR is defined here, once; the HLS generator emits these
offsets into the generated C++, the C simulation and the host driver pack and unpack with the functions
below, and ``layout_json`` exports the same facts for tools that do not import Python.

Weight buffer (one m_axi port, ``weights``)
    An ordered list of named tensors (:class:`TensorSpec`). Every tensor starts on an AXI-word boundary
    (``hardware.axi_data_bits``) and holds two's-complement integers in a little-endian container of
    8/16/32/64 bits (the smallest that holds the tensor's format). Matmul weights ``[out, in]`` are
    stored *tiled*: zero-padded to multiples of ``(mac_out, mac_in)`` and ordered
    ``[out/mac_out][in/mac_in][mac_out][mac_in]``, so one burst fills whole MAC-engine tiles. Everything
    else is row-major (2-D tensors with each row padded to whole AXI words).

    Per MoE block, the routers of all tasks follow each other with a constant stride
    (``router_task_stride``: the task register selects one, nothing is reloaded), then the block's expert
    map ``block{i}.expert_map``: ``1 + N`` int32 ``[K', off_0, ..., off_{N-1}]``, the layer's top-K and each
    expert's word offset in the buffer, -1 for a pruned expert (docs/pruning.md §6). The experts themselves
    sit after every other tensor, block after block, each expert's ``w1, b1, w2, b2`` contiguous (one burst
    region, ``expert_bytes``). A full image stores every expert (K' = K, constant ``expert_stride``); a
    task-specialised image (``weight_layout(cfg, kept)``) stores only the kept experts, back to back, so the
    kernel reads everything but the experts at the config's offsets and the experts through the map.

Scratch buffer (m_axi port ``scratch``)
    Row-major activation regions ``[rows][cols]`` (rows padded to whole AXI words) that hold every
    per-layer tensor of the last image processed (the C simulation reads the layer taps from them) and
    the saturation counters ``sat[layer][class]``.

I/O buffers
    ``input``: ``num_images`` images ``[C][H][W]`` in the input format when the run starts at layer 0,
    else ``num_images`` token matrices ``[T][dim]`` (act); ``output``: ``num_images`` token matrices.

This module depends on the config only (dependencies point ``host → sim → codegen``); packing takes
any object shaped like :class:`m3vit.sim.quantize.QuantizedModel`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from m3vit.codegen.bits import ceil_div, container_bits
from m3vit.codegen.config import DesignConfig, FixedFormat

SAT_CLASSES = ("input", "act", "norm", "qkv", "hidden", "logit", "score")
"""Saturation counter classes, in the order of the ``sat`` scratch region's columns (docs/numerics.md §14)."""

TAP_REGIONS = {
    "norm1": "norm1",
    "qkv": "qkv",
    "attn": "attn",
    "attn_res": "attn_res",
    "norm2": "norm2",
    "logits": "logits",
    "mlp": "mlp",
    "out": "x",
}
"""Golden tap suffix (``block{i}.<suffix>``) → scratch region holding it after the block ran."""








def _np_dtype(cbits: int) -> np.dtype:
    return np.dtype({8: "<i1", 16: "<i2", 32: "<i4", 64: "<i8"}[cbits])


# ------------------------------------------------------------------------------------------ weights
@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the packed weight buffer.

    ``shape`` is the logical shape; ``stored_shape`` the padded shape as stored (tiled weights:
    ``[out_tiles, in_tiles, mac_out, mac_in]``; row-major 2-D: ``[rows, padded cols]``). ``offset`` and
    ``nbytes`` are in bytes (``nbytes`` includes the padding up to the next AXI word).
    """

    name: str
    shape: tuple[int, ...]
    bits: int
    frac: int
    container_bits: int
    order: str  # "tiled" | "row_major"
    stored_shape: tuple[int, ...]
    offset: int
    nbytes: int

    @property
    def data_bytes(self) -> int:
        """Bytes actually holding (padded) elements, before the AXI-word padding."""
        return int(np.prod(self.stored_shape)) * self.container_bits // 8


EXPERT_MAP_BITS = 32
"""Container of one expert-map entry (K', then each expert's word offset or -1)."""


class WeightLayout:
    """The packed weight buffer of one design; build with :func:`weight_layout`.

    ``kept`` (MoE block → an object with ``experts``, ascending, and ``top_k``, such as
    :class:`m3vit.sim.pruning.KeptExperts`) makes a task-specialised layout holding only those experts;
    blocks not listed keep every expert at the config's top-K.
    """

    def __init__(self, cfg: DesignConfig, kept: Mapping[int, Any] | None = None) -> None:
        self.cfg = cfg
        hw, m = cfg.hardware, cfg.model
        self.word_bytes = hw.axi_data_bits // 8
        self.mac_out, self.mac_in = hw.mac_out, hw.mac_in
        self.kept: dict[int, tuple[tuple[int, ...], int]] = {
            b: (tuple(range(m.num_experts)), m.top_k) for b in sorted(m.moe_block_set)
        }
        for b, k in (kept or {}).items():
            experts, top_k = tuple(int(e) for e in k.experts), int(k.top_k)
            if b not in self.kept:
                raise ValueError(f"block {b!r} is not an MoE layer; MoE blocks are {sorted(self.kept)}")
            if (list(experts) != sorted(set(experts)) or not experts or experts[0] < 0
                    or experts[-1] >= m.num_experts or not 1 <= top_k <= min(m.top_k, len(experts))):
                raise ValueError(f"block {b}: kept experts {list(experts)} with top_k {top_k} must be ascending, "
                                 f"distinct, in [0, {m.num_experts - 1}], at least top_k, top_k in [1, {m.top_k}]")
            self.kept[b] = (experts, top_k)
        self.tensors: list[TensorSpec] = []
        self._cursor = 0
        self._build()
        self.by_name = {t.name: t for t in self.tensors}

    # ----------------------------------------------------------------------------------- building
    def _align(self, n: int) -> int:
        return ceil_div(n, self.word_bytes) * self.word_bytes

    def _add(self, name: str, shape: tuple[int, ...], fmt_bits: int, frac: int, tiled: bool) -> TensorSpec:
        cb = container_bits(fmt_bits)
        if tiled:
            out, inp = shape
            stored: tuple[int, ...] = (
                ceil_div(out, self.mac_out),
                ceil_div(inp, self.mac_in),
                self.mac_out,
                self.mac_in,
            )
        elif len(shape) == 2:
            lanes = self.word_bytes * 8 // cb
            stored = (shape[0], ceil_div(shape[1], lanes) * lanes)
        else:
            stored = shape
        data = int(np.prod(stored)) * cb // 8
        spec = TensorSpec(
            name,
            tuple(shape),
            fmt_bits,
            frac,
            cb,
            "tiled" if tiled else "row_major",
            stored,
            self._cursor,
            self._align(data),
        )
        self.tensors.append(spec)
        self._cursor += spec.nbytes
        return spec

    def _linear(self, prefix: str, out: int, inp: int, in_fmt: FixedFormat) -> None:
        n = self.cfg.numerics
        self._add(f"{prefix}.w", (out, inp), n.weight.bits, n.weight.frac, tiled=True)
        self._add(f"{prefix}.b", (out,), n.bias_bits, in_fmt.frac + n.weight.frac, tiled=False)

    def _layernorm(self, prefix: str) -> None:
        m, p = self.cfg.model, self.cfg.numerics.ln_param
        self._add(f"{prefix}.gamma", (m.dim,), p.bits, p.frac, tiled=False)
        self._add(f"{prefix}.beta", (m.dim,), p.bits, p.frac, tiled=False)

    def _build(self) -> None:
        m, n = self.cfg.model, self.cfg.numerics
        self._linear("patch", m.dim, m.patch_dim, n.input)
        self._add("pos", (m.num_tokens, m.dim), n.act.bits, n.act.frac, tiled=False)
        for i in range(m.depth):
            p = f"block{i}"
            self._layernorm(f"{p}.norm1")
            self._linear(f"{p}.qkv", 3 * m.dim, m.dim, n.norm)
            self._linear(f"{p}.proj", m.dim, m.dim, n.qkv)
            self._layernorm(f"{p}.norm2")
            if m.is_moe(i):
                for t in range(len(m.tasks)):
                    self._linear(f"{p}.router{t}", m.num_experts, m.dim, n.norm)
                self._add(f"{p}.expert_map", (1 + m.num_experts,), EXPERT_MAP_BITS, 0, tiled=False)
            else:
                self._linear(f"{p}.fc1", m.mlp_hidden, m.dim, n.norm)
                self._linear(f"{p}.fc2", m.dim, m.mlp_hidden, n.hidden)
        for i, (experts, _) in self.kept.items():  # the experts last: only their total depends on a plan
            for e in experts:
                self._linear(f"block{i}.expert{e}.fc1", m.expert_hidden, m.dim, n.norm)
                self._linear(f"block{i}.expert{e}.fc2", m.dim, m.expert_hidden, n.hidden)

    # ----------------------------------------------------------------------------------- queries
    @property
    def total_bytes(self) -> int:
        return self._cursor

    @property
    def total_words(self) -> int:
        return self._cursor // self.word_bytes

    def words(self, name: str) -> int:
        """Offset of tensor ``name`` in AXI words."""
        return self.by_name[name].offset // self.word_bytes

    def router_task_stride(self, block: int) -> int:
        """Bytes between task t's and task t+1's router in MoE block ``block`` (0 with one task)."""
        if len(self.cfg.model.tasks) < 2:
            return 0
        return self.by_name[f"block{block}.router1.w"].offset - self.by_name[f"block{block}.router0.w"].offset

    def expert_stride(self, block: int) -> int:
        """Bytes between expert e's and expert e+1's weights in MoE block ``block`` (0 with one expert)."""
        if self.cfg.model.num_experts < 2:
            return 0
        return (
            self.by_name[f"block{block}.expert1.fc1.w"].offset
            - self.by_name[f"block{block}.expert0.fc1.w"].offset
        )

    def expert_bytes(self, block: int) -> int:
        """Bytes of one expert's burst region (w1, b1, w2, b2)."""
        p = f"block{block}.expert{self.kept[block][0][0]}"
        end = self.by_name[f"{p}.fc2.b"]
        return end.offset + end.nbytes - self.by_name[f"{p}.fc1.w"].offset

    @property
    def pruned(self) -> bool:
        """Whether some MoE layer keeps fewer experts (or a lower top-K) than the config."""
        m = self.cfg.model
        return any(len(e) < m.num_experts or k < m.top_k for e, k in self.kept.values())

    def expert_map_row(self, block: int) -> np.ndarray:
        """MoE block ``block``'s expert map: ``[K', off_0, ..., off_{N-1}]``, word offsets, -1 = pruned."""
        experts, top_k = self.kept[block]
        row = np.full(1 + self.cfg.model.num_experts, -1, np.int64)
        row[0] = top_k
        for e in experts:
            row[1 + e] = self.words(f"block{block}.expert{e}.fc1.w")
        if row.max() >= 1 << (EXPERT_MAP_BITS - 1):
            raise ValueError(f"block {block}: expert offsets {row.max()} words do not fit the int32 expert map")
        return row


def weight_layout(cfg: DesignConfig, kept: Mapping[int, Any] | None = None) -> WeightLayout:
    """The packed weight-buffer layout of ``cfg`` (task-specialised with ``kept``, see :class:`WeightLayout`)."""
    return WeightLayout(cfg, kept)


def tensor_values(cfg: DesignConfig, qmodel: Any, kept: Mapping[int, Any] | None = None) -> dict[str, np.ndarray]:
    """Every tensor of a QuantizedModel under its layout name (logical shapes, int64), every expert, and the
    MoE blocks' expert maps of ``weight_layout(cfg, kept)``."""
    m = cfg.model
    out: dict[str, np.ndarray] = {
        "patch.w": qmodel.patch.w,
        "patch.b": qmodel.patch.b,
        "pos": qmodel.pos,
    }
    for i, blk in enumerate(qmodel.blocks):
        p = f"block{i}"
        out.update(
            {
                f"{p}.norm1.gamma": blk.norm1.gamma,
                f"{p}.norm1.beta": blk.norm1.beta,
                f"{p}.qkv.w": blk.qkv.w,
                f"{p}.qkv.b": blk.qkv.b,
                f"{p}.proj.w": blk.proj.w,
                f"{p}.proj.b": blk.proj.b,
                f"{p}.norm2.gamma": blk.norm2.gamma,
                f"{p}.norm2.beta": blk.norm2.beta,
            }
        )
        if m.is_moe(i):
            ex = blk.experts
            for t in range(len(m.tasks)):
                out[f"{p}.router{t}.w"] = ex.router_w[t]
                out[f"{p}.router{t}.b"] = ex.router_b[t]
            for e in range(m.num_experts):
                out[f"{p}.expert{e}.fc1.w"], out[f"{p}.expert{e}.fc1.b"] = ex.w1[e], ex.b1[e]
                out[f"{p}.expert{e}.fc2.w"], out[f"{p}.expert{e}.fc2.b"] = ex.w2[e], ex.b2[e]
        else:
            out.update(
                {
                    f"{p}.fc1.w": blk.fc1.w,
                    f"{p}.fc1.b": blk.fc1.b,
                    f"{p}.fc2.w": blk.fc2.w,
                    f"{p}.fc2.b": blk.fc2.b,
                }
            )
    lay = weight_layout(cfg, kept)
    out.update({f"block{b}.expert_map": lay.expert_map_row(b) for b in lay.kept})
    return {k: np.asarray(v, dtype=np.int64) for k, v in out.items()}


def _to_stored(spec: TensorSpec, value: np.ndarray) -> np.ndarray:
    """Logical tensor → its stored (padded, possibly tiled) arrangement."""
    if value.shape != spec.shape:
        raise ValueError(
            f"{spec.name}: shape {list(value.shape)} does not match the layout's {list(spec.shape)}"
        )
    lo, hi = -(1 << (spec.bits - 1)), (1 << (spec.bits - 1)) - 1
    if value.size and (value.min() < lo or value.max() > hi):
        raise ValueError(f"{spec.name}: values outside the {spec.bits}-bit format [{lo}, {hi}]")
    if spec.order == "tiled":
        ot, it, mo, mi = spec.stored_shape
        pad = np.zeros((ot * mo, it * mi), np.int64)
        pad[: spec.shape[0], : spec.shape[1]] = value
        return pad.reshape(ot, mo, it, mi).transpose(0, 2, 1, 3)
    if len(spec.shape) == 2:
        pad = np.zeros(spec.stored_shape, np.int64)
        pad[:, : spec.shape[1]] = value
        return pad
    return value


def _from_stored(spec: TensorSpec, stored: np.ndarray) -> np.ndarray:
    if spec.order == "tiled":
        ot, it, mo, mi = spec.stored_shape
        full = stored.reshape(ot, it, mo, mi).transpose(0, 2, 1, 3).reshape(ot * mo, it * mi)
        return full[: spec.shape[0], : spec.shape[1]]
    if len(spec.shape) == 2:
        return stored.reshape(spec.stored_shape)[:, : spec.shape[1]]
    return stored.reshape(spec.shape)


def pack_weights(cfg: DesignConfig, qmodel: Any, kept: Mapping[int, Any] | None = None) -> np.ndarray:
    """Pack a QuantizedModel into the weight buffer: a ``uint8`` array of ``weight_layout(cfg, kept).total_bytes``
    (``kept``: MoE block → kept experts and top-K of a task-specialised image; pruned experts are not stored).

    Raises ValueError when a tensor's shape or values do not fit the layout.
    """
    lay = weight_layout(cfg, kept)
    values = tensor_values(cfg, qmodel, kept)
    buf = np.zeros(lay.total_bytes, np.uint8)
    for spec in lay.tensors:
        stored = _to_stored(spec, values[spec.name]).astype(_np_dtype(spec.container_bits))
        raw = stored.reshape(-1).view(np.uint8)
        buf[spec.offset : spec.offset + raw.size] = raw
    return buf


def unpack_weights(
    cfg: DesignConfig, buf: np.ndarray | bytes, kept: Mapping[int, Any] | None = None
) -> dict[str, np.ndarray]:
    """Inverse of :func:`pack_weights`: layout name → logical int64 tensor (the stored experts only)."""
    lay = weight_layout(cfg, kept)
    raw = (
        np.frombuffer(bytes(buf), np.uint8)
        if isinstance(buf, (bytes, bytearray))
        else np.asarray(buf, np.uint8)
    )
    if raw.size != lay.total_bytes:
        raise ValueError(
            f"weight buffer has {raw.size} bytes; the layout of {cfg.name} needs {lay.total_bytes}"
        )
    out = {}
    for spec in lay.tensors:
        chunk = raw[spec.offset : spec.offset + spec.data_bytes].view(_np_dtype(spec.container_bits))
        out[spec.name] = _from_stored(spec, chunk.astype(np.int64))
    return out


# ------------------------------------------------------------------------------------------ scratch
@dataclass(frozen=True)
class Region:
    """A row-major ``[rows][cols]`` region of the scratch (or I/O) buffer; rows padded to AXI words."""

    name: str
    rows: int
    cols: int
    bits: int
    container_bits: int
    offset: int  # bytes
    row_stride: int  # bytes
    nbytes: int

    def read(self, buf: np.ndarray, base: int = 0) -> np.ndarray:
        """The region's ``[rows, cols]`` int64 values from a byte buffer (``base`` added to the offset)."""
        start = base + self.offset
        raw = np.asarray(buf, np.uint8)[start : start + self.rows * self.row_stride]
        rows = raw.reshape(self.rows, self.row_stride)[:, : self.cols * self.container_bits // 8]
        return np.ascontiguousarray(rows).view(_np_dtype(self.container_bits)).astype(np.int64)

    def write(self, buf: np.ndarray, values: np.ndarray, base: int = 0) -> None:
        """Store ``[rows, cols]`` integers into the region (range-checked against the container)."""
        values = np.asarray(values, np.int64)
        if values.shape != (self.rows, self.cols):
            raise ValueError(f"{self.name}: shape {list(values.shape)} is not [{self.rows}, {self.cols}]")
        lo, hi = -(1 << (self.container_bits - 1)), (1 << (self.container_bits - 1)) - 1
        if values.size and (values.min() < lo or values.max() > hi):
            raise ValueError(
                f"{self.name}: values outside the {self.container_bits}-bit container [{lo}, {hi}]"
            )
        lanes = self.row_stride * 8 // self.container_bits
        pad = np.zeros((self.rows, lanes), _np_dtype(self.container_bits))
        pad[:, : self.cols] = values
        start = base + self.offset
        buf[start : start + self.rows * self.row_stride] = pad.reshape(-1).view(np.uint8)


class ScratchLayout:
    """The activation scratch buffer (and the per-image I/O strides) of one design."""

    def __init__(self, cfg: DesignConfig) -> None:
        self.cfg = cfg
        m, n = cfg.model, cfg.numerics
        self.word_bytes = cfg.hardware.axi_data_bits // 8
        t, d = m.num_tokens, m.dim
        self.regions: list[Region] = []
        self._cursor = 0
        self._add("x", t, d, n.act.bits)  # block input / output (tap "embed", "block{i}.out")
        self._add("attn_res", t, d, n.act.bits)
        self._add("norm1", t, d, n.norm.bits)
        self._add("qkv", t, 3 * d, n.qkv.bits)
        self._add("attn", t, d, n.qkv.bits)
        self._add("norm2", t, d, n.norm.bits)
        self._add("hidden", t, m.mlp_hidden, n.hidden.bits)
        self._add("logits", t, m.num_experts, n.logit.bits)
        self._add("mlp", t, d, n.act.bits)
        self._add("moe_acc", t, d, 64)
        self._add("sat", m.depth + 1, len(SAT_CLASSES), 32)
        self.by_name = {r.name: r for r in self.regions}
        # I/O: one image, or one token matrix, per stride
        self.image = self._region(
            "image", 1, m.in_channels * m.image_size[0] * m.image_size[1], n.input.bits, 0
        )
        self.tokens = self._region("tokens", t, d, n.act.bits, 0)

    def _region(self, name: str, rows: int, cols: int, bits: int, offset: int) -> Region:
        cb = container_bits(bits)
        stride = ceil_div(cols * cb // 8, self.word_bytes) * self.word_bytes
        return Region(name, rows, cols, bits, cb, offset, stride, rows * stride)

    def _add(self, name: str, rows: int, cols: int, bits: int) -> None:
        r = self._region(name, rows, cols, bits, self._cursor)
        self.regions.append(r)
        self._cursor += r.nbytes

    @property
    def total_bytes(self) -> int:
        return self._cursor

    @property
    def image_bytes(self) -> int:
        """Stride of one image in the ``input`` buffer when a run starts at layer 0."""
        return self.image.nbytes

    @property
    def token_bytes(self) -> int:
        """Stride of one token matrix in ``input`` (runs starting after layer 0) and ``output``."""
        return self.tokens.nbytes

    def tap_region(self, tap: str) -> Region:
        """The scratch region holding tap ``tap`` ("embed" or "block{i}.<suffix>") after its layer ran."""
        if tap == "embed":
            return self.by_name["x"]
        return self.by_name[TAP_REGIONS[tap.split(".", 1)[1]]]


def scratch_layout(cfg: DesignConfig) -> ScratchLayout:
    return ScratchLayout(cfg)


def layer_taps(cfg: DesignConfig, layer: int) -> list[str]:
    """Golden tap names produced by ``layer`` (0 = patch embedding, i + 1 = block i)."""
    if layer == 0:
        return ["embed"]
    i = layer - 1
    names = ["norm1", "qkv", "attn", "attn_res", "norm2", "logits", "mlp", "out"]
    if not cfg.model.is_moe(i):
        names.remove("logits")
    return [f"block{i}.{s}" for s in names]


# ---------------------------------------------------------------------------------------------- I/O
def pack_images(cfg: DesignConfig, images: np.ndarray) -> np.ndarray:
    """Input-format integer images ``[n, C, H, W]`` (or one ``[C, H, W]``) → the ``input`` buffer bytes.

    Pixels must fit the DDR container (8/16/32 bits); values outside the input format itself are allowed
    and saturated (and counted) by the accelerator, as docs/numerics.md §6 specifies.
    """
    sl = scratch_layout(cfg)
    images = np.asarray(images, np.int64)
    if images.ndim == 3:
        images = images[None]
    m = cfg.model
    if images.shape[1:] != (m.in_channels, *m.image_size):
        raise ValueError(
            f"images have shape {list(images.shape)}; expected [n, {m.in_channels}, "
            f"{m.image_size[0]}, {m.image_size[1]}]"
        )
    buf = np.zeros(images.shape[0] * sl.image_bytes, np.uint8)
    for i, img in enumerate(images):
        sl.image.write(buf, img.reshape(1, -1), base=i * sl.image_bytes)
    return buf


def pack_tokens(cfg: DesignConfig, tokens: np.ndarray) -> np.ndarray:
    """Act-format tokens ``[n, T, dim]`` (or one ``[T, dim]``) → ``input``/``output`` buffer bytes."""
    sl = scratch_layout(cfg)
    tokens = np.asarray(tokens, np.int64)
    if tokens.ndim == 2:
        tokens = tokens[None]
    act = cfg.numerics.act
    if tokens.size and (tokens.min() < act.qmin or tokens.max() > act.qmax):
        raise ValueError(f"tokens outside the act format {act} [{act.qmin}, {act.qmax}]")
    buf = np.zeros(tokens.shape[0] * sl.token_bytes, np.uint8)
    for i, tok in enumerate(tokens):
        sl.tokens.write(buf, tok, base=i * sl.token_bytes)
    return buf


def unpack_tokens(cfg: DesignConfig, buf: np.ndarray, num_images: int) -> np.ndarray:
    """``output`` buffer bytes → act-format tokens ``[num_images, T, dim]`` (int64)."""
    sl = scratch_layout(cfg)
    return np.stack([sl.tokens.read(buf, base=i * sl.token_bytes) for i in range(num_images)])


def read_saturation(cfg: DesignConfig, scratch: np.ndarray) -> dict[str, dict[str, int]]:
    """The ``sat`` region as the golden model reports it: layer → class → count (non-zero only)."""
    counts = scratch_layout(cfg).by_name["sat"].read(scratch) % (1 << 32)  # unsigned 32-bit counters
    out: dict[str, dict[str, int]] = {}
    for layer, row in enumerate(counts):
        name = "embed" if layer == 0 else f"block{layer - 1}"
        for cls, c in zip(SAT_CLASSES, row, strict=True):
            if c:
                out.setdefault(name, {})[cls] = int(c)
    return out


# -------------------------------------------------------------------------------------------- JSON
def layout_json(cfg: DesignConfig) -> dict[str, Any]:
    """Weight, scratch and I/O layouts as a JSON-serialisable dict (byte offsets)."""
    m = cfg.model
    wl, sl = weight_layout(cfg), scratch_layout(cfg)
    moe = {}
    for i in sorted(m.moe_block_set):
        moe[f"block{i}"] = {
            "router_base": wl.by_name[f"block{i}.router0.w"].offset,
            "router_task_stride": wl.router_task_stride(i),
            "expert_map": wl.by_name[f"block{i}.expert_map"].offset,
            "expert_base": wl.by_name[f"block{i}.expert0.fc1.w"].offset,
            "expert_stride": wl.expert_stride(i),
            "expert_bytes": wl.expert_bytes(i),
        }
    return {
        "design": cfg.name,
        "config_hash": cfg.config_hash(),
        "axi_data_bits": cfg.hardware.axi_data_bits,
        "alignment_bytes": wl.word_bytes,
        "endianness": "little",
        "tile": {
            "mac_out": wl.mac_out,
            "mac_in": wl.mac_in,
            "order": "[out/mac_out][in/mac_in][mac_out][mac_in], zero-padded",
        },
        "weights": {
            "total_bytes": wl.total_bytes,
            "tensors": [asdict(t) for t in wl.tensors],
            "moe_blocks": moe,
        },
        "scratch": {
            "total_bytes": sl.total_bytes,
            "regions": [asdict(r) for r in sl.regions],
            "sat_classes": list(SAT_CLASSES),
        },
        "io": {
            "input_image": asdict(sl.image) | {"stride_bytes": sl.image_bytes},
            "input_tokens": asdict(sl.tokens) | {"stride_bytes": sl.token_bytes},
            "output_tokens": asdict(sl.tokens) | {"stride_bytes": sl.token_bytes},
        },
    }


def write_layout_json(cfg: DesignConfig, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(layout_json(cfg), indent=1) + "\n")
    return path


__all__ = [
    "EXPERT_MAP_BITS",
    "SAT_CLASSES",
    "TAP_REGIONS",
    "Region",
    "ScratchLayout",
    "TensorSpec",
    "WeightLayout",
    "container_bits",
    "layer_taps",
    "layout_json",
    "pack_images",
    "pack_tokens",
    "pack_weights",
    "read_saturation",
    "scratch_layout",
    "tensor_values",
    "unpack_tokens",
    "unpack_weights",
    "weight_layout",
    "write_layout_json",
]
