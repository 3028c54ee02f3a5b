"""The m3vit command line: sub-commands run, and user errors are one line with exit status 2."""

from __future__ import annotations

import pytest

from m3vit.cli import main


def test_check_prints_derived_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "m3vit_small_pascal"]) == 0
    out = capsys.readouterr().out
    assert "1025 tokens" in out and "head dim 32" in out and "xczu7ev-ffvc1156-2-e" in out


def test_demo_runs_every_task(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "bit-exact at" in out and "twin == golden: True" in out and "demo passed" in out


def test_bad_config_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nmodel: {image_size: [32, 32], num_heads: 5, dim: 64, tasks: [{name: a, channels: 1}]}\n")
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("m3vit: error:") and "num_heads = 5" in err and "\n" not in err


def test_generate_pack_run_on_the_twin(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    assert main(["generate", "tiny", "-o", str(tmp_path / "proj")]) == 0
    assert (tmp_path / "proj" / "vivado" / "build_bitstream.tcl").is_file()
    weights = tmp_path / "tiny.m3w"
    assert main(["pack", "random", "tiny", "-o", str(weights)]) == 0
    assert weights.is_file()
    assert main(["run", "tiny", str(weights), "--count", "1"]) == 0
    out = capsys.readouterr().out
    assert "task semseg: output [1, 5, 32, 32]" in out and "twin" in out


def test_user_errors_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    assert main(["pack", str(tmp_path / "missing.safetensors"), "tiny", "-o", str(tmp_path / "x.m3w")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.m3w"
    bad.write_bytes(b"garbage")
    assert main(["run", "tiny", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("m3vit: error:") and "bad magic" in err and "\n" not in err


def test_bitstream_without_tools_names_what_is_missing(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert main(["bitstream", "tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing tool: vitis-run or vitis_hls (Vitis HLS) and vivado not on PATH" in err and "\n" not in err


def test_help_explains_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("generate", "csim", "pack", "run", "bench", "report", "dse", "train", "eval", "bitstream", "demo"):
        assert cmd in out


def test_check_reports_designs_the_generator_cannot_build(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    cfg = tmp_path / "wide.yaml"
    cfg.write_text("name: wide\nmodel: {image_size: [256, 256], patch_size: 8, dim: 64, num_heads: 4, depth: 2,\n"
                   "  num_experts: 4, top_k: 2, expert_hidden: 64, tasks: [{name: a, channels: 1}]}\n"
                   "numerics: {qkv: {bits: 23, frac: 10}, acc_bits: 52}\n")
    assert main(["check", str(cfg)]) == 1
    assert "HLS generator: cannot build this design" in capsys.readouterr().out


def test_pack_refuses_partial_checkpoints(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    from safetensors.torch import save_file

    from m3vit.codegen.config import load_config
    from tests.conftest import reference

    sd = {k: v.contiguous() for k, v in reference(load_config("tiny")).state_dict().items() if "experts" not in k}
    save_file(sd, str(tmp_path / "partial.safetensors"))
    out = tmp_path / "p.m3w"
    assert main(["pack", str(tmp_path / "partial.safetensors"), "tiny", "-o", str(out)]) == 2
    assert "lacks" in capsys.readouterr().err and not out.exists()
    assert main(["pack", str(tmp_path / "partial.safetensors"), "tiny", "-o", str(out), "--allow-missing"]) == 0
    assert out.exists()
