"""The m3vit command line: sub-commands run, and user errors are one line with exit status 2."""

from __future__ import annotations

import pytest

from m3vit.host.cli import main


def test_check_prints_derived_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "m3vit_small_pascal"]) == 0
    out = capsys.readouterr().out
    assert "1025 tokens" in out and "head dim 32" in out and "xczu7ev-ffvc1156-2-e" in out


def test_demo_runs_every_task(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "task semseg" in out and "task depth" in out and "cosine vs float 0.99" in out


def test_bad_config_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nmodel: {image_size: [32, 32], num_heads: 5, dim: 64, tasks: [{name: a, channels: 1}]}\n")
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("m3vit: error:") and "num_heads = 5" in err and "\n" not in err
