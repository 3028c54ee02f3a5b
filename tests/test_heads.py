"""The numpy task heads (used by the host driver on the board) against the PyTorch reference heads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from m3vit.codegen.config import load_config, with_overrides
from m3vit.host.heads import task_head, upsample_bilinear
from m3vit.host.weights import head_tensors
from tests.conftest import reference


@pytest.mark.parametrize(("size_in", "size_out"), [((4, 4), (32, 32)), ((3, 5), (7, 11)), ((8, 8), (8, 8))])
def test_upsample_matches_torch(size_in: tuple[int, int], size_out: tuple[int, int]) -> None:
    x = np.random.default_rng(0).normal(size=(2, 3, *size_in)).astype(np.float32)
    want = torch.nn.functional.interpolate(torch.from_numpy(x), size=size_out, mode="bilinear", align_corners=False)
    np.testing.assert_allclose(upsample_bilinear(x, size_out), want.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("overrides", [{}, {"model.image_size": [32, 48]}])
def test_task_head_matches_reference(overrides: dict) -> None:
    cfg = with_overrides(load_config("tiny"), **overrides)
    ref = reference(cfg)
    params = head_tensors(cfg, ref.state_dict())
    tokens = np.random.default_rng(1).normal(size=(2, cfg.model.num_tokens, cfg.model.dim)).astype(np.float32)
    for task in cfg.model.task_names:
        with torch.no_grad():
            want = ref.head(torch.from_numpy(tokens), task).numpy()
        np.testing.assert_allclose(task_head(cfg, tokens, task, params), want, rtol=1e-4, atol=1e-4)
