"""The generated architecture figure of docs/hls.md."""

from __future__ import annotations

from m3vit.codegen import perf
from m3vit.codegen.config import load_config
from m3vit.explore.hls_figure import cycles_by_kind, draw, step_kind


def test_step_kinds() -> None:
    assert [step_kind(s) for s in ("embed", "block3.expert12", "block0.mlp", "block1.kv", "block11.finalize")] == \
        ["embed", "expert", "mlp", "kv", "finalize"]


def test_cycles_by_kind_sums_every_step_but_io() -> None:
    cfg = load_config("tiny")
    steps = perf.evaluate(cfg).step_cycles()
    kinds = cycles_by_kind({**steps, "io": 10**9})
    assert sum(kinds.values()) == sum(steps.values())


def test_draw_tiny(tmp_path) -> None:
    out = draw(load_config("tiny"), None, tmp_path / "fig.png")
    assert out.stat().st_size > 10_000 and out.read_bytes()[:4] == b"\x89PNG"
