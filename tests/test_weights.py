"""The .m3w weights file: round trip, and every kind of bad file refused with a one-line error."""

from __future__ import annotations

import json
import struct
from collections import Counter

import numpy as np
import pytest

from m3vit.codegen.config import load_config, with_overrides
from m3vit.codegen.layout import pack_weights, unpack_weights, weight_layout
from m3vit.host.weights import (
    ALIGN,
    HEADER,
    WeightsError,
    encode_manifest,
    load_weights,
    pack_model,
    parse_weights,
)
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


def _manifest(data: bytes) -> dict:
    (n,) = struct.unpack("<I", data[8:12])
    return json.loads(data[HEADER : HEADER + n])


def _header_end(data: bytes) -> int:
    (n,) = struct.unpack("<I", data[8:12])
    return HEADER + n + (-(HEADER + n) % ALIGN)


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
        return data[:HEADER] + b"]" + data[HEADER + 1 :]
    if kind == "old_format":
        return b"M3W\x00v001" + data[8:]
    if kind == "padding":
        b = bytearray(data)
        b[start - 1] = 1
        return bytes(b)
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
        ("bad_manifest", "checksum mismatch in the manifest"),
        ("old_format", "older .m3w format"),
        ("padding", "non-zero padding"),
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
    with pytest.raises(WeightsError, match="re-pack it with this config") as err:
        load_weights(path, other)
    assert cfg.config_hash() in str(err.value) and other.config_hash() in str(err.value)  # full hashes
    with pytest.raises(WeightsError, match="hardware build was made from config hash") as err:
        load_weights(path, cfg, build_hash="0" * 63 + "1")
    assert "0" * 63 + "1" in str(err.value) and cfg.config_hash() in str(err.value)
    with pytest.raises(WeightsError, match="does not exist"):
        load_weights(path.with_name("nope.m3w"), cfg)


def _resigned(data: bytes, edit) -> bytes:
    """The file with its manifest edited by ``edit`` and a matching manifest checksum (deliberate tampering)."""
    manifest = _manifest(data)
    edit(manifest)
    return encode_manifest(manifest) + data[_header_end(data) :]


def _set(path: tuple, value):
    def edit(manifest: dict) -> None:
        node = manifest
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value(node[path[-1]]) if callable(value) else value
    return edit


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (_set(("device", "tensors", 3, "offset"), lambda v: v + 16), "does not match the layout"),
        (_set(("device", "tensors", 3, "frac"), lambda v: v + 1), "does not match the layout"),
        (_set(("host", "tensors", 1, "offset"), lambda v: v + 4), "should be at"),
        (_set(("host", "tensors", 0, "offset"), lambda v: v + 4), "should be at"),
        (_set(("host", "tensors", 2, "shape"), lambda v: v[::-1]), "should have shape"),
        (_set(("host", "tensors", 2, "name"), "heads.semseg.extra"), "do not match the config's task heads"),
        (_set(("host", "tensors", 0, "dtype"), "float16"), r"invalid manifest \(host.tensors.0.dtype"),
        (_set(("host", "tensors", 0, "nbytes"), "256"), r"invalid manifest \(host.tensors.0.nbytes"),
        (_set(("device", "size"), -1), r"invalid manifest \(device.size"),
        (_set(("device", "sha256"), "0" * 63), r"invalid manifest \(device.sha256"),
        (_set(("surprise",), 1), r"invalid manifest \(surprise"),
        (_set(("version",), 1), r"invalid manifest \(version"),
        (_set(("axi_data_bits",), 64), "AXI bus"),
    ],
)
def test_manifest_tampering_is_caught(packed, edit, needle: str) -> None:
    """A manifest edited consistently (checksum recomputed) still has to match the layout and the heads."""
    cfg, _, path, _ = packed
    data = path.read_bytes()
    parse_weights(_resigned(data, lambda m: None), cfg)  # re-encoding alone is fine
    with pytest.raises(WeightsError, match=needle) as err:
        parse_weights(_resigned(data, edit), cfg)
    assert "\n" not in str(err.value)


def _fuzz(data: bytes, cfg, bits) -> Counter:
    """Flip each bit of ``bits`` in turn; count refusals, identical loads and anything else."""
    ref = parse_weights(data, cfg)
    buf = bytearray(data)
    outcome: Counter = Counter()
    for bit in bits:
        buf[bit // 8] ^= 1 << (bit % 8)
        try:
            w = parse_weights(buf, cfg)
        except WeightsError as err:
            outcome["refused"] += 1
            assert "\n" not in str(err)
        except Exception as err:  # anything but WeightsError is a finding
            outcome[f"raised {type(err).__name__}"] += 1
        else:
            same = (np.array_equal(w.device, ref.device) and w.host.keys() == ref.host.keys()
                    and all(w.host[k].tobytes() == ref.host[k].tobytes() for k in ref.host))
            outcome["accepted identical" if same else "accepted different"] += 1
        buf[bit // 8] ^= 1 << (bit % 8)
    return outcome


def _fuzz_bits(data: bytes, manifest_byte_stride: int, data_flips: int) -> list[int]:
    """Every bit of the fixed header and the padding, every bit of every ``manifest_byte_stride``-th manifest
    byte, every bit of each section's first and last byte, and ``data_flips`` bits spread over the sections."""
    (n,) = struct.unpack("<I", data[8:12])
    start = _header_end(data)
    manifest = _manifest(data)
    host_start = start + manifest["device"]["size"]
    byte_set = set(range(HEADER)) | set(range(HEADER + n, start)) | set(range(HEADER, HEADER + n, manifest_byte_stride))
    byte_set |= {start, host_start - 1, host_start, len(data) - 1}
    bits = [8 * b + k for b in sorted(byte_set) for k in range(8)]
    step = max(1, (8 * (len(data) - start)) // data_flips)
    bits += list(range(8 * start + 3, 8 * len(data), step))
    return sorted(set(bits))


def test_every_single_bit_flip_is_refused_or_harmless(packed) -> None:
    """Single-bit flips anywhere in the file: refused with a WeightsError, or loading bit-identical data."""
    cfg, _, path, _ = packed
    data = path.read_bytes()
    bits = _fuzz_bits(data, manifest_byte_stride=5, data_flips=400)
    outcome = _fuzz(data, cfg, bits)
    print(f"bit-flip fuzz: {len(bits)} flips: {dict(outcome)}")
    assert outcome["refused"] + outcome["accepted identical"] == len(bits), dict(outcome)


@pytest.mark.slow
def test_every_manifest_bit_flip_is_refused_or_harmless(packed) -> None:
    """Exhaustive over the header and the manifest (every bit), plus 20,000 bits of the sections."""
    cfg, _, path, _ = packed
    data = path.read_bytes()
    bits = _fuzz_bits(data, manifest_byte_stride=1, data_flips=20_000)
    outcome = _fuzz(data, cfg, bits)
    print(f"bit-flip fuzz: {len(bits)} flips: {dict(outcome)}")
    assert outcome["refused"] + outcome["accepted identical"] == len(bits), dict(outcome)


def test_pack_refuses_non_finite_head_tensors(packed, tmp_path) -> None:
    cfg, sd, _, _ = packed
    for bad in (float("nan"), float("inf")):
        broken = dict(sd)
        broken["heads.depth.proj.bias"] = sd["heads.depth.proj.bias"].clone()
        broken["heads.depth.proj.bias"][0] = bad
        with pytest.raises(WeightsError, match=r"heads\.depth\.proj\.bias holds 1 non-finite"):
            pack_model(cfg, broken, tmp_path / "x.m3w")
    assert not list(tmp_path.iterdir())


def test_a_failed_write_leaves_the_old_file_and_no_temporary(packed, tmp_path, monkeypatch) -> None:
    cfg, sd, path, _ = packed
    target = tmp_path / "w.m3w"
    target.write_bytes(b"previous")

    def broken_replace(src, dst) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", broken_replace)
    with pytest.raises(OSError, match="No space left"):
        pack_model(cfg, sd, target)
    assert target.read_bytes() == b"previous" and sorted(p.name for p in tmp_path.iterdir()) == ["w.m3w"]
    monkeypatch.undo()
    with pytest.raises(WeightsError, match="is a directory"):
        pack_model(cfg, sd, tmp_path)
    pack_model(cfg, sd, target)
    assert target.read_bytes() == path.read_bytes()
