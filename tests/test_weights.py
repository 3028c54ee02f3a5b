"""The .m3w weights file: round trip, and every kind of bad file refused with a one-line error."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from m3vit.codegen.config import load_config, with_overrides
from m3vit.codegen.layout import pack_weights, unpack_weights, weight_layout
from m3vit.host.weights import ALIGN, MAGIC, WeightsError, load_weights, pack_model, parse_weights
from m3vit.sim.quantize import quantize_state_dict
from tests.conftest import reference


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    cfg = load_config("tiny")
    sd = reference(cfg).state_dict()
    path = tmp_path_factory.mktemp("w") / "tiny.m3w"
    manifest = pack_model(cfg, sd, path)
    return cfg, sd, path, manifest


def test_round_trip(packed) -> None:
    cfg, sd, path, manifest = packed
    w = load_weights(path, cfg)
    q = quantize_state_dict(cfg, sd)
    assert np.array_equal(w.device, pack_weights(cfg, q))
    assert w.device.size == weight_layout(cfg).total_bytes
    assert unpack_weights(cfg, w.device)["block1.expert3.fc1.w"].tolist() == q.blocks[1].experts.w1[3].tolist()
    np.testing.assert_array_equal(w.host["heads.depth.proj.weight"], sd["heads.depth.proj.weight"].numpy())
    assert manifest["config_hash"] == cfg.config_hash()
    names = [t["name"] for t in manifest["device"]["tensors"]]
    assert names == [t.name for t in weight_layout(cfg).tensors]
    assert all(t["offset"] % (cfg.hardware.axi_data_bits // 8) == 0 for t in manifest["device"]["tensors"])
    assert all(len(t["sha256"]) == 64 for t in manifest["device"]["tensors"])


def _header_end(data: bytes) -> int:
    (n,) = struct.unpack("<I", data[8:12])
    return 12 + n + (-(12 + n) % ALIGN)


def _corrupt(data: bytes, kind: str) -> bytes:
    start = _header_end(data)
    if kind == "truncated":
        return data[:-7]
    if kind == "padded":
        return data + b"\0" * 16
    if kind == "bitflip_device":
        b = bytearray(data)
        b[start + 100] ^= 0x10
        return bytes(b)
    if kind == "bitflip_host":
        b = bytearray(data)
        b[-3] ^= 0x01
        return bytes(b)
    if kind == "bad_magic":
        return b"PK\x03\x04" + data[4:]
    if kind == "bad_manifest":
        return data[:12] + b"]" + data[13:]
    if kind == "empty":
        return b""
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "needle"),
    [
        ("truncated", "truncated"),
        ("padded", "truncated or padded"),
        ("bitflip_device", "checksum mismatch in the device section"),
        ("bitflip_host", "checksum mismatch in the host section"),
        ("bad_magic", "bad magic"),
        ("bad_manifest", "corrupt manifest"),
        ("empty", "bad magic"),
    ],
)
def test_corrupt_files_are_refused(packed, kind: str, needle: str) -> None:
    cfg, _, path, _ = packed
    data = _corrupt(path.read_bytes(), kind)
    with pytest.raises(WeightsError, match=needle) as err:
        parse_weights(data, cfg, source="x.m3w")
    assert "\n" not in str(err.value)


def test_wrong_design_and_wrong_build_are_refused(packed) -> None:
    cfg, _, path, _ = packed
    other = with_overrides(cfg, **{"numerics.weight.frac": 7})
    with pytest.raises(WeightsError, match="re-pack it with this config"):
        load_weights(path, other)
    with pytest.raises(WeightsError, match="hardware build was made from config hash"):
        load_weights(path, cfg, build_hash="0" * 64)
    with pytest.raises(WeightsError, match="does not exist"):
        load_weights(path.with_name("nope.m3w"), cfg)


def test_manifest_tampering_is_caught(packed) -> None:
    """A manifest edited to point a tensor elsewhere no longer matches the layout."""
    cfg, _, path, _ = packed
    data = path.read_bytes()
    (n,) = struct.unpack("<I", data[8:12])
    manifest = json.loads(data[12 : 12 + n])
    manifest["device"]["tensors"][3]["offset"] += 16
    text = json.dumps(manifest, indent=1).encode()
    head = MAGIC + struct.pack("<I", len(text)) + text
    head += b"\0" * (-len(head) % ALIGN)
    with pytest.raises(WeightsError, match="does not match the layout"):
        parse_weights(head + data[_header_end(data) :], cfg)
