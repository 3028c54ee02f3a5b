"""Checkpoints: safetensors round trip, no pickle, one-line mismatch errors, timm and M3ViT key layouts."""

from __future__ import annotations

import functools
import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from m3vit.codegen.config import load_config, with_overrides
from m3vit.sim.reference import M3ViT, build_reference
from m3vit.train.checkpoint import (
    CheckpointError,
    convert_state_dict,
    import_weights,
    interpolate_pos_embed,
    load_checkpoint,
    load_into,
    load_model,
    load_train_state,
    read_state_dict,
    save_model,
    save_train_state,
)


@pytest.fixture(scope="module")
def dense_cfg():
    """tiny with every MLP dense (no MoE): a plain ViT, what timm / DeiT weights describe."""
    return load_config("tiny", **{"model.moe_blocks": []})


def _images(cfg, n: int = 2, seed: int = 0) -> torch.Tensor:
    m = cfg.model
    return torch.randn(n, m.in_channels, *m.image_size, generator=torch.Generator().manual_seed(seed))


def test_save_load_round_trip(tmp_path: Path, tiny) -> None:
    ref = build_reference(tiny, seed=3)
    path = save_model(tmp_path / "a.safetensors", ref, tiny, {"step": 7})
    ckpt = load_checkpoint(path)
    assert ckpt.config == tiny and ckpt.metadata == {"step": 7}
    model = load_model(path)
    x = _images(tiny)
    with torch.no_grad():
        for task in tiny.model.task_names:
            assert torch.equal(model(x, task).head, ref(x, task).head)
    assert not list(tmp_path.glob("*.tmp"))  # written atomically


def test_weights_only_torch_files(tmp_path: Path, tiny) -> None:
    sd = build_reference(tiny, seed=1).state_dict()
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "w.pth")
    got = read_state_dict(tmp_path / "w.pth")
    assert got.config is None and set(got.state_dict) == set(sd)
    with pytest.raises(CheckpointError, match="no stored config"):
        load_checkpoint(tmp_path / "w.pth")
    model = load_model(tmp_path / "w.pth", tiny)
    assert torch.equal(model.pos_embed, sd["pos_embed"])


class _Payload:
    """Unpickling this would run code: it must never be unpickled."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_untrusted_pickles_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"w": _Payload()}, protocol=2))
    with pytest.raises(CheckpointError, match="refused to load") as err:
        read_state_dict(tmp_path / "evil.pt")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "PWNED").exists()
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        read_state_dict(tmp_path / "junk.safetensors")


def test_mismatch_errors_are_one_line(tiny) -> None:
    model = M3ViT(tiny)
    sd = model.state_dict()
    bad = {**sd, "blocks.0.attn.qkv.weight": torch.zeros(3, 4)}
    with pytest.raises(CheckpointError) as err:
        load_into(model, bad)
    assert str(err.value) == "blocks.0.attn.qkv.weight: expected shape [192, 64], found [3, 4]"
    with pytest.raises(CheckpointError, match=r"^missing key cls_token \(expected shape \[1, 1, 64\]"):
        load_into(model, {k: v for k, v in sd.items() if k != "cls_token"})
    with pytest.raises(CheckpointError, match=r"^unexpected key blocks\.9\.norm1\.weight with shape"):
        load_into(model, {**sd, "blocks.9.norm1.weight": torch.zeros(64)})
    missing = load_into(model, {"cls_token": torch.ones(1, 1, 64)}, strict=False)
    assert "pos_embed" in missing and torch.equal(model.cls_token, torch.ones(1, 1, 64))


def test_pos_embed_interpolation() -> None:
    pos = torch.randn(1, 1 + 16, 8)
    assert interpolate_pos_embed(pos, (4, 4)) is pos
    const = torch.cat([torch.randn(1, 1, 8), torch.ones(1, 196, 8) * 0.5], dim=1)
    out = interpolate_pos_embed(const, (4, 6))
    assert out.shape == (1, 25, 8) and torch.equal(out[:, 0], const[:, 0])
    assert torch.allclose(out[:, 1:], torch.full((1, 24, 8), 0.5), atol=1e-5)  # a constant field stays constant
    with pytest.raises(CheckpointError, match="square grid"):
        interpolate_pos_embed(torch.zeros(1, 1 + 15, 8), (4, 4))


def _timm_like(cfg, seed: int = 0, grid: int | None = None) -> dict[str, torch.Tensor]:
    """A timm VisionTransformer state dict built from a dense model of ``cfg`` (identical key names)."""
    sd = dict(build_reference(cfg, seed=seed).state_dict())
    sd = {k: v for k, v in sd.items() if not k.startswith("heads.")}
    d = cfg.model.dim
    sd.update({"norm.weight": torch.ones(d), "norm.bias": torch.zeros(d), "head.weight": torch.zeros(1000, d),
               "head.bias": torch.zeros(1000)})
    if grid is not None:
        sd["pos_embed"] = torch.randn(1, 1 + grid * grid, d)
    return sd


def test_timm_layout(dense_cfg) -> None:
    sd = _timm_like(dense_cfg, grid=14)  # e.g. DeiT at 224 px / patch 16
    res = convert_state_dict(sd, dense_cfg)
    assert res.layout == "timm" and sorted(res.ignored) == ["head.bias", "head.weight", "norm.bias", "norm.weight"]
    assert res.state_dict["pos_embed"].shape == (1, 17, 64)
    assert all(k.startswith("heads.") for k in res.missing)  # only our task heads are not in a classifier ViT
    model = M3ViT(dense_cfg)
    import_weights(model, sd)
    assert torch.equal(model.blocks[1].mlp.fc1.weight, sd["blocks.1.mlp.fc1.weight"])


def test_timm_into_moe_model_keeps_expert_init(tiny, dense_cfg) -> None:
    res = convert_state_dict(_timm_like(dense_cfg), tiny, "timm")
    assert "blocks.1.mlp.fc1.weight" in res.ignored and "blocks.0.mlp.fc1.weight" in res.state_dict
    assert "blocks.1.mlp.experts.htoh4.weight" in res.missing and "blocks.1.mlp.gate.0.w_gate" in res.missing


def test_timm_errors(dense_cfg) -> None:
    sd = _timm_like(dense_cfg)
    with pytest.raises(CheckpointError, match=r"^blocks\.0\.ls1\.gamma: .*layer scale"):
        convert_state_dict({**sd, "blocks.0.ls1.gamma": torch.ones(64)}, dense_cfg, "timm")
    wrong = {**sd, "patch_embed.proj.weight": torch.zeros(64, 3, 16, 16)}
    with pytest.raises(CheckpointError) as err:
        import_weights(M3ViT(dense_cfg), wrong, "timm")
    assert str(err.value) == "patch_embed.proj.weight: expected shape [64, 3, 8, 8], found [64, 3, 16, 16]"
    with pytest.raises(CheckpointError, match=r"^blocks\.4\.norm1\.weight: unexpected key"):
        convert_state_dict({**sd, "blocks.4.norm1.weight": torch.ones(64)}, dense_cfg, "timm")


def test_m3vit_layout_round_trip(tiny) -> None:
    ref = build_reference(tiny, seed=5)
    theirs = {f"module.backbone.{k}": v for k, v in ref.state_dict().items() if not k.startswith("heads.")}
    theirs["module.decoders.semseg.conv_0.weight"] = torch.zeros(8, 64, 3, 3)
    theirs["module.backbone.blocks.1.mlp.gate.0.w_gate_aux"] = torch.zeros(64, 8)
    res = convert_state_dict(theirs, tiny)
    assert res.layout == "m3vit" and len(res.ignored) == 2
    assert res.sources["blocks.1.mlp.experts.htoh4.weight"] == "module.backbone.blocks.1.mlp.experts.htoh4.weight"
    model = M3ViT(tiny)
    model.heads.load_state_dict(ref.heads.state_dict())
    import_weights(model, theirs)
    x = _images(tiny)
    with torch.no_grad():
        assert torch.equal(model.eval()(x, "depth").head, ref(x, "depth").head)
    # an M3ViT file with more experts than the config: the error names both keys and both shapes
    theirs["module.backbone.blocks.1.mlp.experts.htoh4.weight"] = torch.zeros(16, 64, 64)
    with pytest.raises(CheckpointError) as err:
        import_weights(M3ViT(tiny), theirs)
    assert str(err.value) == ("blocks.1.mlp.experts.htoh4.weight (from module.backbone.blocks.1.mlp.experts.htoh4."
                              "weight): expected shape [8, 64, 64], found [16, 64, 64]")


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_train_state_round_trip(tmp_path: Path, kind: str) -> None:
    net = nn.Linear(3, 2)
    opt = (torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9) if kind == "sgd"
           else torch.optim.AdamW(net.parameters(), lr=0.1))
    net(torch.ones(4, 3)).sum().backward()
    opt.step()
    rng = torch.get_rng_state()
    save_train_state(tmp_path / "s.safetensors", opt, 11, {"base_lrs": [0.1]})
    net2 = nn.Linear(3, 2)
    opt2 = (torch.optim.SGD(net2.parameters(), lr=0.5, momentum=0.9) if kind == "sgd"
            else torch.optim.AdamW(net2.parameters(), lr=0.5))
    torch.manual_seed(123)
    step, extra = load_train_state(tmp_path / "s.safetensors", opt2)
    assert step == 11 and extra == {"base_lrs": [0.1]} and opt2.param_groups[0]["lr"] == 0.1
    assert torch.equal(torch.get_rng_state(), rng)
    for a, b in zip(opt.state.values(), opt2.state.values(), strict=True):
        for key in a:
            assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key]))


# ------------------------------------------------------------------------------ timm (optional)
@pytest.mark.timm
def test_timm_vision_transformer_matches_our_dense_model(dense_cfg) -> None:
    """The same weights in timm's VisionTransformer and in our model with MoE disabled: same tokens."""
    timm = pytest.importorskip("timm", reason="timm (which needs torchvision) is not installed; see make test-timm")
    from timm.models.vision_transformer import VisionTransformer

    m = dense_cfg.model
    vit = VisionTransformer(
        img_size=m.image_size, patch_size=m.patch_size, in_chans=m.in_channels, embed_dim=m.dim, depth=m.depth,
        num_heads=m.num_heads, mlp_ratio=m.mlp_ratio, qkv_bias=True, num_classes=0,
        norm_layer=functools.partial(nn.LayerNorm, eps=m.ln_eps),
    ).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in vit.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05 + (1.0 if p.ndim == 1 and p.shape[0] == m.dim else 0))
    model = M3ViT(dense_cfg).eval()
    res = import_weights(model, vit.state_dict(), "timm")
    assert sorted(res.ignored) == ["norm.bias", "norm.weight"], timm.__version__
    x = _images(dense_cfg, 3)
    with torch.no_grad():
        ours = model.backbone(x, 0)
        feats = vit.forward_features(x)  # timm applies its final norm; ours leaves it to the task heads
        want = nn.functional.layer_norm(ours, (m.dim,), vit.norm.weight, vit.norm.bias, m.ln_eps)
    assert torch.allclose(feats, want, atol=1e-4, rtol=1e-4)


@pytest.mark.timm
def test_pos_embed_interpolation_matches_timm() -> None:
    pytest.importorskip("timm", reason="timm (which needs torchvision) is not installed; see make test-timm")
    from timm.layers import resample_abs_pos_embed

    pos = torch.randn(1, 1 + 14 * 14, 32)
    want = resample_abs_pos_embed(pos, new_size=(4, 6), num_prefix_tokens=1)
    assert torch.allclose(interpolate_pos_embed(pos, (4, 6)), want, atol=1e-5)


def test_configs_with_other_gates_round_trip(tmp_path: Path, tiny) -> None:
    cfg = with_overrides(tiny, **{"model.gate": "task_conditioned"})
    ref = build_reference(cfg, seed=2)
    model = load_model(save_model(tmp_path / "tc.safetensors", ref, cfg))
    assert torch.equal(model.blocks[1].mlp.gate.w_gate, ref.blocks[1].mlp.gate.w_gate)
    with pytest.raises(CheckpointError, match="differs from"):
        load_model(tmp_path / "tc.safetensors", tiny)
