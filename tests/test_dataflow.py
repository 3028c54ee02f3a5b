"""Bounded-FIFO DATAFLOW C simulation (hls/m3vit_dataflow.h, hls/m3vit_csim_dataflow.h) on a hand-written kernel.

tests/csim/dataflow_tb.cpp is compiled with g++ twice per source version (cached in the C-sim cache): with the
C-sim FIFOs + ledger (M3VIT_CSIM_FIFO, M3VIT_LEDGER) and as the synthesis-side macros compile without them
(hls4ml's unbounded hls::stream, processes called in sequence). Each mode runs as a subprocess, so a hang
could never stall the session (the subprocess timeout is only that guard).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from m3vit.codegen import perf
from m3vit.codegen.hls import CSIM_DEFINES, LEDGER_DEFINE
from tests.conftest import REPO_ROOT
from tests.hls_build import build_cached

TB = REPO_ROOT / "tests" / "csim" / "dataflow_tb.cpp"
N = 16  # items through the kernel; join needs b to hold N - 1 of them (the "ok" build declares 15)
HEADERS = ("m3vit_dataflow.h", "m3vit_blocks.h", "m3vit_csim_dataflow.h", "m3vit_ledger.h", "m3vit_csim_ledger.h")
HANG_GUARD_S = 120


def _build(flags: list[str], name: str) -> Path:
    return build_cached(name, TB, HEADERS, ["-O1", "-std=c++14", "-pthread", "-w", *flags])


@pytest.fixture(scope="session")
def fifo_tb() -> Path:
    return _build([f"-D{d}" for d in (*CSIM_DEFINES, LEDGER_DEFINE)], "dataflow_fifo")


@pytest.fixture(scope="session")
def sequential_tb() -> Path:
    return _build([], "dataflow_sequential")


def run(tb: Path, mode: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(tb), mode, str(N)], capture_output=True, text=True, timeout=HANG_GUARD_S,
                          env={**os.environ, **env})


def expected_out() -> list[int]:
    """The kernel's function, in Python: out[i] = 3·in[i] + Σ in, with in[i] = 7i - 5."""
    x = [7 * i - 5 for i in range(N)]
    return [3 * v + sum(x) for v in x]


def outputs(stdout: str) -> list[int]:
    line = next(ln for ln in stdout.splitlines() if ln.startswith("out"))
    return [int(v) for v in line.split()[1:]]


def test_correct_depths_pass(fifo_tb) -> None:
    proc = run(fifo_tb, "ok")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert outputs(proc.stdout) == expected_out()


def test_one_depth_shrunk_deadlocks_naming_the_streams(fifo_tb) -> None:
    proc = run(fifo_tb, "shallow")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    msg = proc.stdout.strip()
    assert msg.startswith("error: dataflow region 'split_join' deadlocked")
    assert "split waits writing full stream 'b' (13/13)" in msg
    assert "join waits reading empty stream 'a' (0/2)" in msg


def test_template_depth_is_the_fifo_depth(fifo_tb) -> None:
    proc = run(fifo_tb, "template")
    assert proc.returncode == 3 and "writing full stream 'b' (2/2)" in proc.stdout


def test_sequential_build_misses_the_shallow_fifo(sequential_tb) -> None:
    """Without the C-sim FIFOs (Vitis-style C simulation) both depths give the right answer: the reason for them."""
    for mode in ("ok", "shallow"):
        proc = run(sequential_tb, mode)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert outputs(proc.stdout) == expected_out()


def test_leftover_data_is_an_error(fifo_tb) -> None:
    proc = run(fifo_tb, "leftover")
    assert proc.returncode == 3
    assert "error: dataflow region 'mismatch' ended with data left in 's' (1 item(s))" in proc.stdout


def test_reading_more_than_written_deadlocks(fifo_tb) -> None:
    proc = run(fifo_tb, "starve")
    assert proc.returncode == 3
    assert "deadlocked: process consume waits reading empty stream 's' (0/64)" in proc.stdout


def test_read_after_the_region_is_an_error(fifo_tb) -> None:
    proc = run(fifo_tb, "after")
    assert proc.returncode == 3
    assert "region ok" in proc.stdout
    assert "read from empty stream 's' outside a running dataflow region" in proc.stdout


def test_no_progress_times_out(fifo_tb) -> None:
    """A process polling empty() never blocks, so only the no-progress timeout can end the region."""
    proc = run(fifo_tb, "spin", M3VIT_DATAFLOW_TIMEOUT_S="1")
    assert proc.returncode == 3
    assert "dataflow region 'spin' made no progress for 1 s" in proc.stdout and "process spin running" in proc.stdout


def test_region_ledger_overlaps_processes(fifo_tb) -> None:
    """The processes of a region record from their own threads; the region costs its slowest process plus the
    fill of the others (the ledger's rule, transcribed here)."""
    proc = run(fifo_tb, "ok")
    text = proc.stdout.split("\n", 1)[1]
    led = perf.parse_ledger(text, "dataflow_tb", 300.0)
    procs = {p.name: p for p in led.processes}
    assert set(procs) == {"split", "join"} and all(p.region == "split_join" for p in procs.values())
    assert led.trip_counts() == {"SPLIT": {N}, "JOIN_SUM": {N}, "JOIN_OUT": {N}}
    split = (N - 1) * 1 + 3  # (trips - 1)·II + depth, depths as declared in dataflow_tb.cpp
    join = ((N - 1) + 2) + ((N - 1) + 4)
    assert procs["split"].cycles == split and procs["join"].cycles == join
    assert led.step_cycles() == {"block0.attn": max(split, join) + 3}
