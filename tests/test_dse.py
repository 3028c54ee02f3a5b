"""Design-space exploration (m3vit.explore.dse): designs fit the board by the model's own estimate."""

from __future__ import annotations

from pathlib import Path

import pytest

from m3vit.codegen import perf
from m3vit.codegen.config import BOARDS, load_config
from m3vit.explore import dse
from tests.test_perf import A8


@pytest.fixture(scope="module")
def pascal():
    return load_config("m3vit_small_pascal")


@pytest.fixture(scope="module")
def quick(pascal) -> dse.DseResult:
    return dse.explore(pascal, "zcu104", dse.QUICK_SPACE, {"a8": A8, "bad": A8}, {"a8": 0.995, "bad": 0.98})


def test_every_kept_design_fits_the_board(quick) -> None:
    spec = BOARDS["zcu104"]
    assert quick.designs
    for d in quick.designs:
        res = perf.resources(d.cfg)  # re-estimated from the design's own config
        assert res.fits(spec, 0.80)
        assert all(u <= 0.80 for u in res.utilisation(spec).values())
        assert d.latency_ms == perf.evaluate(d.cfg).latency_ms
    assert any("over 80%" in why for why in quick.rejected)  # the sweep did reach beyond the board


def test_formats_need_the_accuracy_proxy(pascal, quick) -> None:
    assert {d.formats for d in quick.designs} == {"config", "a8"}
    assert "bad: accuracy proxy below 0.99" in quick.rejected
    unmeasured = dse.explore(pascal, "zcu104", {k: v[:1] for k, v in dse.QUICK_SPACE.items()}, {"a8": A8})
    assert {d.formats for d in unmeasured.designs} == {"config"}


def test_pareto_fronts_are_not_dominated(quick) -> None:
    for objective, key in (("dsp", lambda d: d.dsp), ("memory", lambda d: d.on_chip_bytes)):
        front = quick.front(objective)
        assert front[0].latency_ms == min(d.latency_ms for d in quick.designs)
        for f in front:
            assert not any((d.latency_ms <= f.latency_ms and key(d) < key(f)) or
                           (d.latency_ms < f.latency_ms and key(d) <= key(f)) for d in quick.designs)
    best = quick.best
    fastest = min(d.latency_ms for d in quick.designs)
    assert best.latency_ms <= fastest * (1 + dse.LATENCY_TIE)


def test_best_design_is_written_ready_for_generate(quick, tmp_path: Path) -> None:
    best = quick.best
    path = dse.write_config(best, tmp_path / "best.yaml")
    back = load_config(path)
    assert back.name == "m3vit_small_pascal_dse"
    assert back.hardware == best.cfg.hardware and back.numerics == best.cfg.numerics and back.model == best.cfg.model
    assert path.read_text().startswith("# Written by `m3vit dse`")
    hls = pytest.importorskip("m3vit.codegen.hls")
    assert hls.hls_problems(back) == []


def test_full_sweep_meets_the_targets(pascal) -> None:
    """With 8-bit MAC-array activations eligible (their proxy is measured in bench/slow tests), the model's
    best M³ViT-S PASCAL design (the generated kernels, stage start-ups included) is ≤ 69 ms at ≥ 70 % of its
    DSP floor, in ≤ 4.84 MiB that N does not change."""
    res = dse.explore(pascal, "zcu104", dse.SPACE, {"a8": A8}, {"a8": 0.995})
    best = res.best
    assert best.latency_ms <= 69.0
    # stages run one after another (LN, each stage's first weight load, attention's softmax lanes): ≈ 71 %
    assert best.floor_ratio >= 0.70
    assert best.on_chip_bytes / perf.MIB <= 4.84
    assert best.resources.fits(BOARDS["zcu104"])


def test_cli_writes_the_best_design(tmp_path: Path, capsys) -> None:
    out = tmp_path / "tiny_dse.yaml"
    assert dse.main(["tiny", "--board", "zcu104", "--no-formats", "--quick", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Pareto front, latency vs DSP" in text and "-- best:" in text
    assert load_config(out).name == "tiny_dse"
    assert dse.main(["no_such_preset", "--no-formats"]) == 2


@pytest.mark.slow
def test_dse_with_measured_formats(pascal, tmp_path: Path) -> None:
    """The real flow: calibrate 8-bit formats, measure their accuracy proxy, explore, check the targets."""
    formats, cosines = dse.format_study(pascal, progress=False)
    assert all(c >= 0.99 for c in cosines.values())
    res = dse.explore(pascal, "zcu104", dse.SPACE, formats, cosines)
    assert res.best.latency_ms <= 69.0 and res.best.floor_ratio >= 0.70
    assert perf.on_chip_bytes(res.best.cfg) / perf.MIB <= 4.84
