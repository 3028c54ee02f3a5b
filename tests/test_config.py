"""Config loading and validation: presets, derived sizes, one-line errors naming the field."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import yaml

from m3vit.codegen.config import (
    BOARDS,
    PRESET_DIR,
    ConfigError,
    DesignConfig,
    load_config,
    parse_config,
    read_yaml,
    with_overrides,
)

PRESETS = ["tiny", "vit_tiny_cityscapes", "m3vit_small_pascal", "m3vit_small_nyud"]


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load(name: str) -> None:
    cfg = load_config(name)
    assert cfg.name == name
    assert cfg.hardware.board == "zcu104"
    assert load_config(PRESET_DIR / f"{name}.yaml") == cfg


def test_paper_model_dimensions() -> None:
    pascal, nyud = load_config("m3vit_small_pascal").model, load_config("m3vit_small_nyud").model
    assert (pascal.dim, pascal.num_heads, pascal.head_dim, pascal.depth) == (384, 12, 32, 12)
    assert pascal.num_tokens == 1025 and nyud.num_tokens == 1201
    assert sorted(pascal.moe_block_set) == [1, 3, 5, 7, 9, 11]
    assert (pascal.num_experts, pascal.top_k, pascal.expert_hidden, pascal.mlp_hidden) == (16, 4, 384, 1536)
    assert len(pascal.tasks) == 5 and len(nyud.tasks) == 2
    city = load_config("vit_tiny_cityscapes").model
    assert (city.dim, city.num_heads, city.top_k, city.mlp_hidden, city.num_tokens) == (192, 3, 2, 768, 129)


def test_moe_blocks_default_to_odd() -> None:
    cfg = with_overrides(load_config("tiny"), **{"model.depth": 6, "model.moe_blocks": None})
    assert sorted(cfg.model.moe_block_set) == [1, 3, 5]


def test_board_presets() -> None:
    zcu104 = BOARDS["zcu104"]
    assert zcu104.part == "xczu7ev-ffvc1156-2-e" and zcu104.board_part == "xilinx.com:zcu104:part0:1.1"
    assert (zcu104.lut, zcu104.ff, zcu104.dsp, zcu104.bram36, zcu104.uram) == (230_400, 460_800, 1_728, 312, 96)
    assert set(BOARDS) == {"zcu104", "zcu102", "kv260"}


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"model.num_heads": 5}, "num_heads = 5 must divide dim = 64"),
        ({"model.top_k": 9}, "top_k = 9 must be ≤ num_experts = 8"),
        ({"model.image_size": [30, 32]}, "divisible by patch_size = 8"),
        ({"model.dimm": 3}, "unknown field 'model.dimm'"),
        ({"numerics.act.bits": 99}, "numerics.act.bits = 99"),
        ({"hardware.board": "zcu999"}, "hardware.board = 'zcu999'"),
        ({"numerics.acc_bits": 30}, "numerics.acc_bits = 30 is too narrow"),
        ({"numerics.act": {"bits": 16, "frac": 20}}, "act.frac must be ≤ 18"),
        ({"model.moe_blocks": [1, 7]}, "moe_blocks = [1, 7]"),
        ({"model.tasks": [{"name": "Bad Name", "channels": 3}]}, "task name 'Bad Name'"),
        ({"model.tasks": [{"name": "keys", "channels": 3}]}, "reserved"),
        ({"model.tasks": [{"name": "a", "channels": 1}, {"name": "a", "channels": 2}]}, "duplicate"),
        ({"hardware.clock_mhz": 900}, "exceeds zcu104's limit"),
        ({"model.dim": 4096, "model.num_heads": 8}, "needs a 55-bit variance register"),
        ({"name": "x; rm -rf"}, "design name"),
    ],
)
def test_invalid_config_one_line_error(override: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("tiny", **override)
    msg = str(err.value)
    assert needle in msg
    assert "\n" not in msg
    assert "tiny.yaml" in msg


def test_missing_field_and_bad_yaml(tmp_path) -> None:
    with pytest.raises(ConfigError, match="missing required field 'model'"):
        parse_config({"name": "x"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="neither a file nor a preset"):
        load_config("no_such_preset")


def test_task_index_and_hash() -> None:
    cfg = load_config("tiny")
    assert cfg.model.task_index("depth") == 1 and cfg.model.task_index(0) == 0
    with pytest.raises(ValueError, match=r"unknown task 'sky'; tasks are \['semseg', 'depth'\]"):
        cfg.model.task_index("sky")
    with pytest.raises(ValueError, match="unknown task 7"):
        cfg.model.task_index(7)
    assert cfg.config_hash() == load_config("tiny").config_hash()
    assert cfg.config_hash() != with_overrides(cfg, **{"numerics.weight.frac": 7}).config_hash()


# ------------------------------------------------------------------------ strict YAML and strict numbers
def _tiny_variant(tmp_path: Path, old: str, new: str) -> Path:
    """configs/tiny.yaml with one line's text replaced (so the value is read as the YAML a user writes)."""
    text = (PRESET_DIR / "tiny.yaml").read_text()
    assert old in text
    path = tmp_path / "variant.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize("name", sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
def test_every_preset_loads_as_plain_yaml_reads_it(name: str) -> None:
    """The strict loader reads each preset exactly as PyYAML's safe_load + pydantic's lax validation did."""
    text = (PRESET_DIR / f"{name}.yaml").read_text()
    plain = DesignConfig.model_validate(yaml.safe_load(text))
    cfg = load_config(name)
    assert cfg == plain
    assert cfg.config_hash() == plain.config_hash()


def test_duplicate_key_is_refused_with_its_line(tmp_path: Path) -> None:
    path = _tiny_variant(tmp_path, "  depth: 4\n", "  depth: 4\n  dim: 32\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    lines = path.read_text().splitlines()
    first, second = [i + 1 for i, line in enumerate(lines) if line.strip().startswith("dim:")]
    msg = str(err.value)
    assert f"variant.yaml:{second}:" in msg and f"first given on line {first}" in msg and "'dim'" in msg
    assert "\n" not in msg


def test_merge_key_override_is_not_a_duplicate() -> None:
    data = read_yaml("base: &b {bits: 8, frac: 4}\nact:\n  <<: *b\n  frac: 6\n", "<text>")
    assert data["act"] == {"bits": 8, "frac": 6}


def test_yaml_syntax_error_keeps_line_and_column(tmp_path: Path) -> None:
    path = _tiny_variant(tmp_path, "  num_experts: 8\n", "  num_experts: 8\n bad: [1\n")
    line = path.read_text().splitlines().index(" bad: [1") + 1
    with pytest.raises(ConfigError, match=rf"variant\.yaml:{line}:\d+: not valid YAML") as err:
        load_config(path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ("num_heads: 4", "num_heads: true", "model.num_heads = True: Input should be a valid integer"),
        ("num_heads: 4", "num_heads: 4.0", "model.num_heads = 4.0"),
        ("num_heads: 4", "num_heads: '4'", "model.num_heads = '4'"),
        ("channels: 5", "channels: yes", "model.tasks.0.channels = True"),
        ("image_size: [32, 32]", "image_size: [true, 32]", "model.image_size.0 = True"),
        ("mlp_ratio: 4", "mlp_ratio: true", "model.mlp_ratio = True"),
        ("clock_mhz: 300", "clock_mhz: '300'", "hardware.clock_mhz = '300'"),
        ("clock_mhz: 300", "clock_mhz: on", "hardware.clock_mhz = True"),
        ("attn_key_block: 8", "attn_key_block: 8\n  axi_data_bits: 128.0", "hardware.axi_data_bits = 128.0"),
        ("attn_key_block: 8", "attn_key_block: 8\n  axi_data_bits: true", "hardware.axi_data_bits = True"),
        ("top_k: 2", "top_k: 2\n  moe_blocks: [1, false]", "model.moe_blocks.1 = False"),
    ],
)
def test_no_silent_type_coercion(tmp_path: Path, old: str, new: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(_tiny_variant(tmp_path, old, new))
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ("clock_mhz: 300", "clock_mhz: 1e-300", "hardware.clock_mhz = 1e-300: Input should be greater than or equal"),
        ("clock_mhz: 300", "clock_mhz: .nan", "hardware.clock_mhz = nan: Input should be a finite number"),
        ("clock_mhz: 300", "clock_mhz: -.inf", "hardware.clock_mhz = -inf"),
        ("mlp_ratio: 4", "mlp_ratio: 1e-300", "model.mlp_ratio = 1e-300"),
        ("gate: multi_gate", "gate: multi_gate\n  ln_eps: 1e-300", "model.ln_eps = 1e-300"),
        ("image_size: [32, 32]", "image_size: [32, 1e9]", "model.image_size.1 = 1000000000.0"),
        ("image_size: [32, 32]", "image_size: [32, 1000000000]", "model.image_size.1 = 1000000000"),
        ("top_k: 2", "top_k: 2\n  moe_blocks: [1, -1]", "model.moe_blocks.1 = -1"),
    ],
)
def test_numbers_out_of_bounds_are_refused(tmp_path: Path, old: str, new: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(_tiny_variant(tmp_path, old, new))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_yaml_1_2_exponent_is_a_number(tmp_path: Path) -> None:
    cfg = load_config(_tiny_variant(tmp_path, "gate: multi_gate", "gate: multi_gate\n  ln_eps: 1e-5"))
    assert cfg.model.ln_eps == 1e-5


def _numbers_in_schema(node: object, defs: dict, where: str = "") -> typing.Iterator[tuple[str, dict]]:
    """(dotted path, schema) of every integer/number node of a JSON schema, following $ref into $defs."""
    if isinstance(node, dict):
        if "$ref" in node:
            yield from _numbers_in_schema(defs[node["$ref"].split("/")[-1]], defs, where)
            return
        if node.get("type") in ("integer", "number") and "enum" not in node and "const" not in node:
            yield where, node
        for key, value in node.items():
            if key == "properties":
                for name, sub in value.items():
                    yield from _numbers_in_schema(sub, defs, f"{where}.{name}".lstrip("."))
            elif key in ("items", "prefixItems", "anyOf", "allOf", "oneOf"):
                yield from _numbers_in_schema(value, defs, f"{where}[]")
    elif isinstance(node, list):
        for item in node:
            yield from _numbers_in_schema(item, defs, where)


def test_every_number_of_a_design_has_both_bounds() -> None:
    """A config number without a lower and an upper bound would reach the generators unchecked."""
    schema = DesignConfig.model_json_schema()
    numbers = list(_numbers_in_schema(schema, schema["$defs"]))
    names = {name for name, _ in numbers}
    assert {"hardware.clock_mhz", "model.image_size[]", "model.moe_blocks[][]", "numerics.act.bits"} <= names
    for name, node in numbers:
        assert {"minimum", "exclusiveMinimum"} & node.keys(), f"{name} has no lower bound: {node}"
        assert {"maximum", "exclusiveMaximum"} & node.keys(), f"{name} has no upper bound: {node}"
