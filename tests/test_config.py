"""Config loading and validation: presets, derived sizes, one-line errors naming the field."""

from __future__ import annotations

import pytest

from m3vit.codegen.config import (
    BOARDS,
    PRESET_DIR,
    ConfigError,
    load_config,
    parse_config,
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
