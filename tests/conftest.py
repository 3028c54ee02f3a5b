"""Shared fixtures: small configs and quantised models built once per session.

Before anything imports m3vit, ``M3VIT_BUILD_ROOT`` is pointed at ``build/pytest`` (unless the user set
it), so tests never write into the folders ``make demo`` uses; it is a fixed folder, so compiled C
simulations and other caches are reused from one run to the next.
"""

from __future__ import annotations

import os
from pathlib import Path

# set before the imports below load m3vit (m3vit.BUILD_ROOT reads it once)
if not os.environ.get("M3VIT_BUILD_ROOT"):
    os.environ["M3VIT_BUILD_ROOT"] = str(Path(__file__).resolve().parent.parent / "build" / "pytest")

import functools

import pytest
from hypothesis import settings

from m3vit.codegen.config import DesignConfig, load_config, parse_config
from m3vit.sim.quantize import QuantizedModel, quantize_state_dict
from m3vit.sim.reference import build_reference

REPO_ROOT = Path(__file__).resolve().parent.parent
"""The source checkout the tests run in (tests may read its files; package code never does)."""

settings.register_profile("repeatable", derandomize=True, database=None)
settings.load_profile("repeatable")  # the same examples on every run and machine (no .hypothesis/ state)

MICRO = {
    "name": "micro",
    "model": {
        "image_size": [8, 12], "patch_size": 4, "dim": 16, "depth": 2, "num_heads": 2, "mlp_ratio": 2,
        "num_experts": 4, "top_k": 2, "expert_hidden": 12,
        "tasks": [{"name": "seg", "channels": 3}, {"name": "depth", "channels": 1}],
    },
    "hardware": {"attn_key_block": 2, "mac_in": 4, "mac_out": 4, "token_tile": 4},
}
"""7 tokens, 2 heads, key blocks of 2 (the last one short): small enough for the scalar spec oracle."""


def micro_config(**model_overrides: object) -> DesignConfig:
    data = {**MICRO, "model": {**MICRO["model"], **model_overrides}}
    return parse_config(data, "micro")


@functools.cache
def reference_and_qmodel(cfg_json: str, seed: int):
    cfg = DesignConfig.model_validate_json(cfg_json)
    ref = build_reference(cfg, seed=seed)
    return ref, quantize_state_dict(cfg, ref.state_dict())


def quantized(cfg: DesignConfig, seed: int = 0) -> QuantizedModel:
    """The reference model at trained scale for ``cfg``, quantised (cached per config and seed)."""
    return reference_and_qmodel(cfg.model_dump_json(), seed)[1]


def reference(cfg: DesignConfig, seed: int = 0):
    return reference_and_qmodel(cfg.model_dump_json(), seed)[0]


@pytest.fixture(scope="session")
def tiny() -> DesignConfig:
    return load_config("tiny")


@pytest.fixture(scope="session")
def micro() -> DesignConfig:
    return micro_config()
