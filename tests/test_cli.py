"""The m3vit command line: sub-commands run, and user errors are one line with exit status 2."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from m3vit.cli import build_parser, main
from tests.conftest import REPO_ROOT


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


COMMANDS = (
    "check", "generate", "csim", "lint", "pack", "run", "bitstream", "demo", "bench", "report", "dse", "train", "eval",
    "experts",
)
"""The documented sub-commands (README's flow, docs/deploy.md, the demo), written out independently of the parser."""


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1
    return dict(actions[0].choices)


def test_help_explains_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    """The parser offers exactly the documented commands, and --help gives each its own entry with a help text."""
    assert sorted(_subcommands(build_parser())) == sorted(COMMANDS)
    readme = (REPO_ROOT / "README.md").read_text()
    assert set(re.findall(r"^m3vit (\w+)", readme, re.MULTILINE)) <= set(COMMANDS)
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    listed = re.findall(r"^ {4}(\w+)(?: +|\n {6,})(\S.*)$", out, re.MULTILINE)  # "    name  help" (or help below)
    assert sorted(name for name, _ in listed) == sorted(COMMANDS)
    assert all(len(text) > 10 for _, text in listed)


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


# ------------------------------------------------------------------------------ one-line errors
def _exit_code(argv: list[str]) -> int:
    """``main(argv)``'s exit status, also when argparse exits (a usage error raises SystemExit(2))."""
    try:
        return main(argv)
    except SystemExit as stop:
        return int(stop.code or 0)


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], status: int = 2) -> str:
    assert _exit_code(argv) == status
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["report", "tiny", "--images", "0"], "argument --images: must be an integer in [1, 64], got 0"),
        (["train", "--batch-size", "0"], "argument --batch-size: must be an integer at least 1, got 0"),
        (["train", "--lr", "nan"], "argument --lr: 'nan' is not a finite number"),
        (["train", "--lr", "0"], "argument --lr: must be a finite number > 0"),
        (["train", "--steps", "-1"], "argument --steps: must be an integer at least 1, got -1"),
        (["train", "--task-weight", "semseg=-1"], "argument --task-weight: must be a finite number ≥ 0, got -1"),
        (["train", "--task-weight", "semseg=inf"], "argument --task-weight: 'inf' is not a finite number"),
        (["eval", "tiny", "-c", "x.safetensors", "--limit", "0"], "argument --limit: must be an integer at least 1"),
        (["dse", "tiny", "--limit", "nan"], "argument --limit: 'nan' is not a finite number"),
        (["dse", "tiny", "--min-cosine", "2"], "argument --min-cosine: must be a finite number in [-1, 1], got 2"),
        (["run", "tiny", "w.m3w", "--count", "0"], "argument --count: must be an integer at least 1, got 0"),
        (["check", "tiny", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_numbers_are_refused_naming_the_flag(capsys: pytest.CaptureFixture[str], argv: list[str],
                                                  needle: str) -> None:
    assert needle in _one_line_error(capsys, argv)


def test_directories_and_files_in_the_wrong_place_are_one_line(capsys: pytest.CaptureFixture[str],
                                                                tmp_path: Path) -> None:
    folder, afile = tmp_path / "folder", tmp_path / "afile"
    folder.mkdir()
    afile.write_text("x")
    assert f"config '{folder}' is a directory" in _one_line_error(capsys, ["check", str(folder)])
    assert f"-o/--out {afile} is a file" in _one_line_error(capsys, ["generate", "tiny", "-o", str(afile)])
    assert f"-o/--output {folder} is a folder" in _one_line_error(
        capsys, ["dse", "tiny", "--no-formats", "--quick", "-o", str(folder)])
    assert f"-o/--output {afile} is a file" in _one_line_error(capsys, ["report", "tiny", "-o", str(afile)])
    assert f"--json {folder} is a folder" in _one_line_error(
        capsys, ["eval", "tiny", "-c", str(afile), "--json", str(folder)])


def test_dse_checks_the_name_before_writing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "best.yaml"
    err = _one_line_error(capsys, ["dse", "tiny", "--no-formats", "--quick", "--name", "Bad Name", "-o", str(out)])
    assert "--name" in err and "'Bad Name'" in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "not a .npy array file"),  # an empty file
        (np.zeros((0, 3, 32, 32), np.float32), "shape [0, 3, 32, 32]; expected [N >= 1, 3, 32, 32]"),
        (np.zeros((1, 3, 16, 16), np.float32), "shape [1, 3, 16, 16]"),
        (np.full((1, 3, 32, 32), np.nan, np.float32), "contains NaN or inf"),
        (np.zeros((1, 3, 32, 32), np.complex64), "dtype complex64"),
    ],
)
def test_bad_image_files_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path, content: np.ndarray | None,
                                      needle: str) -> None:
    path = tmp_path / "images.npy"
    if content is None:
        path.write_bytes(b"")
    else:
        np.save(path, content)
    err = _one_line_error(capsys, ["run", "tiny", str(tmp_path / "w.m3w"), "--images", str(path)])
    assert f"--images {path}: {needle}" in err


def test_unknown_task_names_the_flag(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = _one_line_error(capsys, ["run", "tiny", str(tmp_path / "w.m3w"), "--task", "sky"])
    assert err.startswith("m3vit: error: --task: unknown task 'sky'")


def test_build_root_under_a_file_is_one_line(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    env = {**os.environ, "M3VIT_BUILD_ROOT": str(afile / "build")}
    proc = subprocess.run([sys.executable, "-m", "m3vit.cli", "generate", "tiny"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert "\n" not in err and "Not a directory" in err and f"M3VIT_BUILD_ROOT={afile / 'build'}" in err


def test_ctrl_c_exits_130_with_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import m3vit.cli
    import m3vit.train.train

    def interrupted(*args: object, **kwargs: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(m3vit.cli, "run_demo", interrupted)
    assert _one_line_error(capsys, ["demo", "tiny"], 130) == "m3vit: interrupted (Ctrl-C)"
    monkeypatch.setattr(m3vit.train.train, "train", interrupted)
    assert _one_line_error(capsys, ["train", "tiny"], 130) == "m3vit: interrupted (Ctrl-C)"
    with pytest.raises(KeyboardInterrupt):
        main(["--debug", "demo", "tiny"])


@pytest.mark.parametrize("bug", [KeyError("offset"), TypeError("unsupported operand"), ValueError("need at least")])
def test_programming_errors_surface_as_tracebacks(monkeypatch: pytest.MonkeyPatch, bug: Exception) -> None:
    import m3vit.cli

    def broken(*args: object, **kwargs: object) -> int:
        raise bug

    monkeypatch.setattr(m3vit.cli, "run_demo", broken)
    with pytest.raises(type(bug)):
        main(["demo", "tiny"])


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    from m3vit.codegen.config import ConfigError

    assert "neither a file nor a preset" in _one_line_error(capsys, ["check", "no_such_preset"])
    for argv in (["--debug", "check", "no_such_preset"], ["check", "no_such_preset", "--debug"],
                 ["eval", "no_such_preset", "-c", "x", "--debug"]):
        with pytest.raises(ConfigError):
            main(argv)


# ------------------------------------------------------------------------------ board path
@pytest.fixture
def bitstream_folder(tmp_path: Path) -> Path:
    """What ``m3vit bitstream`` leaves for tiny (with stand-ins for the .bit and .hwh): returns NAME.bit."""
    from m3vit.cli import write_bitstream_sidecars
    from m3vit.codegen.config import load_config
    from m3vit.codegen.project import generate

    cfg = load_config("tiny")
    project = generate(cfg, tmp_path / "proj")
    out = tmp_path / "bitstream"
    write_bitstream_sidecars(cfg, project, out)
    (out / "tiny.bit").write_bytes(b"\0" * 16)
    (out / "tiny.hwh").write_text("<MODULES/>")
    return out / "tiny.bit"


def test_board_run_names_the_missing_file(capsys: pytest.CaptureFixture[str], bitstream_folder: Path) -> None:
    weights = str(bitstream_folder.parent / "w.m3w")
    missing = bitstream_folder.with_name("other.bit")
    err = _one_line_error(capsys, ["run", "tiny", weights, "--bitfile", str(missing)])
    assert f"--bitfile {missing}: no such bitstream file" in err and "register_map" not in err
    bitstream_folder.with_suffix(".hwh").unlink()
    assert "tiny.hwh (the hardware handoff pynq needs) is missing" in _one_line_error(
        capsys, ["run", "tiny", weights, "--bitfile", str(bitstream_folder)])


def test_board_run_prints_full_hashes(capsys: pytest.CaptureFixture[str], bitstream_folder: Path) -> None:
    from m3vit.codegen.config import load_config

    other = "ab" * 32  # differs from the config's hash, but not in its first 12 characters only
    bitstream_folder.with_suffix(".json").write_text(json.dumps({"design": "tiny", "config_hash": other}))
    err = _one_line_error(capsys, ["run", "tiny", "w.m3w", "--bitfile", str(bitstream_folder)])
    assert other in err and load_config("tiny").config_hash() in err


def test_board_run_without_a_board_says_what_to_do(capsys: pytest.CaptureFixture[str], bitstream_folder: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine has no FPGA: pynq's probe finds no device, and the message says how to reach one."""
    import pynq

    monkeypatch.delenv("PYNQ_REMOTE_DEVICES", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if pynq.Device.devices:
            pytest.skip("pynq sees a device here")
    err = _one_line_error(capsys, ["run", "tiny", "w.m3w", "--bitfile", str(bitstream_folder)])
    assert "PYNQ_REMOTE_DEVICES" in err and "on the board" in err and "No Devices Found" not in err
