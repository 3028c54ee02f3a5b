"""Tests of the packed weight buffer, scratch and I/O layouts (m3vit.codegen.layout)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from m3vit.codegen.config import DesignConfig, load_config, with_overrides
from m3vit.codegen.layout import (
    SAT_CLASSES,
    container_bits,
    layer_taps,
    layout_json,
    pack_images,
    pack_tokens,
    pack_weights,
    read_saturation,
    scratch_layout,
    tensor_values,
    unpack_tokens,
    unpack_weights,
    weight_layout,
)
from m3vit.sim.quantize import QBlock, QExperts, QLayerNorm, QLinear, QuantizedModel, quantize_state_dict
from m3vit.sim.reference import build_reference

PRESETS = ["tiny", "vit_tiny_cityscapes", "m3vit_small_pascal", "m3vit_small_nyud"]


def _reduced(name: str) -> DesignConfig:
    cfg = load_config(name)
    if name == "tiny":
        return cfg
    return with_overrides(cfg, **{"model.image_size": [32, 64], "model.depth": 2, "model.moe_blocks": [1]})


@pytest.fixture(scope="module", params=PRESETS)
def design(request) -> tuple[DesignConfig, QuantizedModel]:
    cfg = _reduced(request.param)
    return cfg, quantize_state_dict(cfg, build_reference(cfg, 1).state_dict())


def qmodel_from_tensors(cfg: DesignConfig, t: dict[str, np.ndarray]) -> QuantizedModel:
    """Rebuild a QuantizedModel from unpacked layout tensors (the inverse of tensor_values)."""
    m = cfg.model

    def lin(p: str) -> QLinear:
        return QLinear(t[f"{p}.w"], t[f"{p}.b"])

    def ln(p: str) -> QLayerNorm:
        return QLayerNorm(t[f"{p}.gamma"], t[f"{p}.beta"])

    blocks = []
    for i in range(m.depth):
        p = f"block{i}"
        ex = None
        if m.is_moe(i):
            e, tasks = range(m.num_experts), range(len(m.tasks))
            ex = QExperts(
                w1=np.stack([t[f"{p}.expert{j}.fc1.w"] for j in e]),
                b1=np.stack([t[f"{p}.expert{j}.fc1.b"] for j in e]),
                w2=np.stack([t[f"{p}.expert{j}.fc2.w"] for j in e]),
                b2=np.stack([t[f"{p}.expert{j}.fc2.b"] for j in e]),
                router_w=np.stack([t[f"{p}.router{k}.w"] for k in tasks]),
                router_b=np.stack([t[f"{p}.router{k}.b"] for k in tasks]),
            )
        blocks.append(
            QBlock(
                norm1=ln(f"{p}.norm1"),
                qkv=lin(f"{p}.qkv"),
                proj=lin(f"{p}.proj"),
                norm2=ln(f"{p}.norm2"),
                fc1=None if ex else lin(f"{p}.fc1"),
                fc2=None if ex else lin(f"{p}.fc2"),
                experts=ex,
            )
        )
    return QuantizedModel(patch=lin("patch"), pos=t["pos"], blocks=blocks)


# ---------------------------------------------------------------------------------------- weights
def test_offsets_aligned_and_disjoint(design) -> None:
    cfg, _ = design
    lay = weight_layout(cfg)
    word = cfg.hardware.axi_data_bits // 8
    end = 0
    for spec in lay.tensors:
        assert spec.offset % word == 0, spec.name
        assert spec.nbytes % word == 0, spec.name
        assert spec.offset >= end, f"{spec.name} overlaps its predecessor"
        assert spec.data_bytes <= spec.nbytes
        end = spec.offset + spec.nbytes
    assert end == lay.total_bytes
    assert len({s.name for s in lay.tensors}) == len(lay.tensors)


def test_sizes_match_formats(design) -> None:
    cfg, _ = design
    n, hw = cfg.numerics, cfg.hardware
    lay = weight_layout(cfg)
    for spec in lay.tensors:
        assert spec.container_bits == container_bits(spec.bits)
        if spec.name.endswith(".w"):
            assert (spec.bits, spec.frac) == (n.weight.bits, n.weight.frac)
            assert spec.order == "tiled"
            out, inp = spec.shape
            assert spec.stored_shape == (-(-out // hw.mac_out), -(-inp // hw.mac_in), hw.mac_out, hw.mac_in)
        elif spec.name.endswith(".b"):
            assert spec.bits == n.bias_bits
        elif spec.name.endswith((".gamma", ".beta")):
            assert (spec.bits, spec.frac) == (n.ln_param.bits, n.ln_param.frac)
        assert spec.data_bytes == int(np.prod(spec.stored_shape)) * spec.container_bits // 8
    assert lay.by_name["block0.qkv.b"].frac == n.norm.frac + n.weight.frac
    assert lay.by_name["block0.proj.b"].frac == n.qkv.frac + n.weight.frac


def test_round_trip(design) -> None:
    cfg, q = design
    buf = pack_weights(cfg, q)
    assert buf.dtype == np.uint8 and buf.size == weight_layout(cfg).total_bytes
    back = unpack_weights(cfg, buf)
    want = tensor_values(cfg, q)
    assert back.keys() == want.keys()
    for name, value in want.items():
        np.testing.assert_array_equal(back[name], value, err_msg=name)
    # and the QuantizedModel rebuilt from the buffer packs to the same bytes
    np.testing.assert_array_equal(pack_weights(cfg, qmodel_from_tensors(cfg, back)), buf)


def test_padding_is_zero(design) -> None:
    """Bytes between a tensor's data and the next AXI word, and tile padding, are zero."""
    cfg, q = design
    buf = pack_weights(cfg, q)
    for spec in weight_layout(cfg).tensors:
        tail = buf[spec.offset + spec.data_bytes : spec.offset + spec.nbytes]
        assert not tail.any(), spec.name
    spec = weight_layout(cfg).by_name[f"block{min(cfg.model.moe_block_set)}.router0.w"]
    ot, it, mo, mi = spec.stored_shape
    raw = buf[spec.offset : spec.offset + spec.data_bytes].view(np.int8).reshape(ot, it, mo, mi)
    full = raw.transpose(0, 2, 1, 3).reshape(ot * mo, it * mi)
    assert not full[spec.shape[0] :].any() and not full[:, spec.shape[1] :].any()


def test_experts_contiguous_and_routers_strided(design) -> None:
    cfg, _ = design
    m = cfg.model
    lay = weight_layout(cfg)
    for i in sorted(m.moe_block_set):
        stride, size = lay.expert_stride(i), lay.expert_bytes(i)
        base = lay.by_name[f"block{i}.expert0.fc1.w"].offset
        for e in range(m.num_experts):
            names = [f"block{i}.expert{e}.{s}" for s in ("fc1.w", "fc1.b", "fc2.w", "fc2.b")]
            specs = [lay.by_name[nm] for nm in names]
            assert specs[0].offset == base + e * stride
            for a, b in itertools.pairwise(specs):
                assert b.offset == a.offset + a.nbytes, "w1, b1, w2, b2 of one expert are one burst region"
            assert specs[-1].offset + specs[-1].nbytes - specs[0].offset == size
        r0 = lay.by_name[f"block{i}.router0.w"].offset
        for t in range(len(m.tasks)):
            assert lay.by_name[f"block{i}.router{t}.w"].offset == r0 + t * lay.router_task_stride(i)


def test_tiled_order(design) -> None:
    """Element (o, i) of a tiled matrix sits at tile (o // mo, i // mi), lane (o % mo, i % mi)."""
    cfg, q = design
    hw = cfg.hardware
    lay = weight_layout(cfg)
    spec = lay.by_name["block0.qkv.w"]
    buf = pack_weights(cfg, q)
    raw = buf[spec.offset : spec.offset + spec.data_bytes].view(np.int8)
    w = q.blocks[0].qkv.w
    it = spec.stored_shape[1]
    rng = np.random.default_rng(0)
    for o, i in zip(rng.integers(0, w.shape[0], 50), rng.integers(0, w.shape[1], 50), strict=True):
        k = (
            ((o // hw.mac_out) * it + i // hw.mac_in) * hw.mac_out * hw.mac_in
            + (o % hw.mac_out) * hw.mac_in
            + i % hw.mac_in
        )
        assert raw[k] == w[o, i]


def test_pack_rejects_out_of_range() -> None:
    cfg = load_config("tiny")
    q = quantize_state_dict(cfg, build_reference(cfg, 0).state_dict())
    q.blocks[0].qkv.w[0, 0] = 1000  # does not fit Q8.8
    with pytest.raises(ValueError, match=r"block0\.qkv\.w"):
        pack_weights(cfg, q)
    with pytest.raises(ValueError, match="needs"):
        unpack_weights(cfg, np.zeros(10, np.uint8))


def test_layout_json(design, tmp_path) -> None:
    cfg, _ = design
    doc = layout_json(cfg)
    json.dumps(doc)  # serialisable
    lay = weight_layout(cfg)
    assert doc["weights"]["total_bytes"] == lay.total_bytes
    assert [t["name"] for t in doc["weights"]["tensors"]] == [t.name for t in lay.tensors]
    assert set(doc["weights"]["moe_blocks"]) == {f"block{i}" for i in cfg.model.moe_block_set}
    assert doc["scratch"]["sat_classes"] == list(SAT_CLASSES)
    assert doc["config_hash"] == cfg.config_hash()


# ---------------------------------------------------------------------------------------- scratch / io
def test_scratch_regions(design) -> None:
    cfg, _ = design
    sl = scratch_layout(cfg)
    word = cfg.hardware.axi_data_bits // 8
    end = 0
    for r in sl.regions:
        assert r.offset % word == 0 and r.row_stride % word == 0
        assert r.offset >= end
        assert r.row_stride * 8 >= r.cols * r.container_bits
        end = r.offset + r.nbytes
    assert end == sl.total_bytes
    for layer in range(cfg.model.depth + 1):
        for tap in layer_taps(cfg, layer):
            region = sl.tap_region(tap)
            assert region.rows == cfg.model.num_tokens


def test_io_round_trip(design) -> None:
    cfg, _ = design
    m = cfg.model
    rng = np.random.default_rng(3)
    tokens = rng.integers(cfg.numerics.act.qmin, cfg.numerics.act.qmax + 1, (2, m.num_tokens, m.dim))
    np.testing.assert_array_equal(unpack_tokens(cfg, pack_tokens(cfg, tokens), 2), tokens)
    images = rng.integers(-3000, 3000, (2, m.in_channels, *m.image_size))
    buf = pack_images(cfg, images)
    sl = scratch_layout(cfg)
    assert buf.size == 2 * sl.image_bytes
    np.testing.assert_array_equal(
        sl.image.read(buf, base=sl.image_bytes).reshape(images.shape[1:]), images[1]
    )
    with pytest.raises(ValueError, match="act format"):
        pack_tokens(cfg, tokens + cfg.numerics.act.qmax)


def test_read_saturation_layout() -> None:
    cfg = load_config("tiny")
    sl = scratch_layout(cfg)
    scratch = np.zeros(sl.total_bytes, np.uint8)
    counts = np.zeros((cfg.model.depth + 1, len(SAT_CLASSES)), np.int64)
    counts[0, SAT_CLASSES.index("input")] = 3
    counts[2, SAT_CLASSES.index("score")] = 7
    sl.by_name["sat"].write(scratch, counts)
    assert read_saturation(cfg, scratch) == {"embed": {"input": 3}, "block1": {"score": 7}}
