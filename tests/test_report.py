"""The performance report (m3vit.explore.report) renders: HTML, markdown and valid PNG plots."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from m3vit.codegen.config import load_config, with_overrides
from m3vit.explore import report
from tests.paper import PAPER_ZCU104, markdown_table

pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_png(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 200 and height > 150
    assert data[-8:-4] == b"IEND"
    import matplotlib.image

    img = matplotlib.image.imread(path)  # decodes every chunk (CRC and zlib checked)
    assert img.shape[:2] == (height, width)
    assert img.std() > 0  # not a blank canvas
    return width, height


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("report")
    return report.write_report(load_config("tiny"), out, routing="golden")


def test_report_files_and_plots(tiny_report) -> None:
    assert set(tiny_report) == {"html", "markdown", *report.PLOTS}
    for name in report.PLOTS:
        _check_png(tiny_report[name])
    html = tiny_report["html"].read_text()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    for name in report.PLOTS:
        assert f'src="{name}.png"' in html
    md = tiny_report["markdown"].read_text()
    assert md.startswith("# Performance report: tiny")
    for name in report.PLOTS:
        assert f"({name}.png)" in md
    assert "| expert_by_expert |" in md and "| block3 |" in md and "run_stage::sw" in md


def test_report_cli_reduced_pascal(tmp_path: Path, capsys) -> None:
    assert report.main(["m3vit_small_pascal", "--image-size", "64", "64", "--routing", "synthetic",
                        "-o", str(tmp_path)]) == 0
    assert "wrote" in capsys.readouterr().out
    for name in report.PLOTS:
        _check_png(tmp_path / f"{name}.png")
    md = (tmp_path / "report.md").read_text()
    paper = PAPER_ZCU104["m3vit_small_pascal"]
    rows = {r["schedule"]: r for r in markdown_table(md, "schedule")}
    # the paper's numbers sit in the rows of the schedules they measured, next to the modeled values
    assert rows["lru (C=2)"]["paper latency (ms)"] == paper["cache_ms"]
    assert rows["expert_by_expert"]["paper latency (ms)"] == paper["ebe_ms"]
    assert rows["all_on_chip"]["paper on-chip (MiB)"] == paper["all_on_chip_mib"]
    assert all(float(r["latency (ms)"]) > 0 for r in rows.values())
    assert report.main(["no_such_preset"]) == 2


def test_report_of_a_dense_model_has_no_schedules(tmp_path: Path) -> None:
    dense = with_overrides(load_config("tiny"), **{"model.moe_blocks": []})
    paths = report.write_report(dense, tmp_path, routing="balanced")
    assert set(paths) == {"html", "markdown", "layers", "roofline"}
    assert "MoE schedules" not in paths["markdown"].read_text()
    for name in ("layers", "roofline"):
        _check_png(paths[name])


def test_roofline_points_are_below_the_roofs() -> None:
    cfg = load_config("tiny")
    d = report.collect(cfg, routing="balanced")
    peak = d.perf.resources.dsp_by_unit["mac_array"] * cfg.hardware.clock_mhz * 1e6 / 1e9
    for _kind, (intensity, gmacs) in report.roofline_points(d.perf).items():
        assert intensity > 0 and 0 < gmacs <= peak


def _sweep_rows() -> list[dict]:
    rows = []
    for task, metric, base in (("semseg", "mIoU", 60.0), ("depth", "rmse", 0.9)):
        for i, plan in enumerate(("full", "mass_0.75", "single")):
            rows.append({"task": task, "plan": plan, "experts_kept": {"1": 8 - 3 * i, "3": 8 - 3 * i + (i == 2)},
                         "metric": metric, "float": base - i, "fixed": base - i - 0.25,
                         "weight_bytes_stored": 300_000 - 50_000 * i,
                         "expert_bytes_fetched_per_image": 130_000 / (i + 1),
                         "latency_ms": 0.12 - 0.01 * i})
    return rows


def test_report_with_pruning_sweep(tmp_path: Path, capsys) -> None:
    import json

    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"config": "tiny", "images": 4, "rows": _sweep_rows(),
                                 "chosen": {"semseg": "mass_0.75", "depth": "full"}}))
    out = tmp_path / "rep"
    assert report.main(["tiny", "--routing", "balanced", "--sweep", str(sweep), "-o", str(out)]) == 0
    assert "(5 plots)" in capsys.readouterr().out
    _check_png(out / "pruning.png")
    md = (out / "report.md").read_text()
    assert "(pruning.png)" in md and 'src="pruning.png"' in (out / "report.html").read_text()
    table = {(r["task"], r["plan"]): r for r in markdown_table(md, "task")}
    assert len(table) == 6
    for r in _sweep_rows():
        got = table[(r["task"], r["plan"])]
        assert got["experts kept / layer"] == f"{r['experts_kept']['1']},{r['experts_kept']['3']}"
        assert float(got["fixed"]) == pytest.approx(r["fixed"], abs=1e-4)
        assert float(got["expert KiB fetched / image"]) == pytest.approx(r["expert_bytes_fetched_per_image"] / 1024,
                                                                         abs=0.05)
        assert float(got["modeled latency µs"]) == pytest.approx(r["latency_ms"] * 1000, abs=0.05)
    assert "Plan to ship: semseg: mass_0.75, depth: full." in md


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("not json", "not JSON"),
        ('{"config": "tiny", "rows": []}', "non-empty 'rows'"),
        ('{"config": "m3vit_small_pascal", "rows": [{}]}', "not 'tiny'"),
        ('{"config": "tiny", "rows": [{"task": "semseg"}]}', "row 0 lacks"),
    ],
)
def test_report_refuses_bad_sweep(tmp_path: Path, capsys, content, message) -> None:
    sweep = tmp_path / "sweep.json"
    if content is not None:
        sweep.write_text(content)
    assert report.main(["tiny", "--routing", "balanced", "--sweep", str(sweep), "-o", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "rep").exists()
