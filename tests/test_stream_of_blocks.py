"""hls::stream_of_blocks in C simulation (hls/m3vit_blocks.h, hls/m3vit_csim_dataflow.h) on a loader → compute pair.

tests/csim/blocks_tb.cpp is built like tests/csim/dataflow_tb.cpp: with the bounded model (M3VIT_CSIM_FIFO, one
thread per process, plus the ledger) and with the sequential, unbounded one (processes called in order). The
consumer's per-block checksums are compared with the same checksums computed here from the loader's pattern;
the event log (lock acquired / about to be released, per block) shows how far the producer runs ahead.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from m3vit.codegen import perf
from m3vit.codegen.hls import CSIM_DEFINES, LEDGER_DEFINE
from m3vit.sim.csim import CXX, ap_types_dir
from tests.conftest import REPO_ROOT
from tests.hls_build import HLS_DIR, build_cached

TB = REPO_ROOT / "tests" / "csim" / "blocks_tb.cpp"
HEADERS = ("m3vit_dataflow.h", "m3vit_blocks.h", "m3vit_csim_dataflow.h", "m3vit_ledger.h", "m3vit_csim_ledger.h")
ROWS, COLS = 256, 300  # the block type of blocks_tb.cpp: int[ROWS][COLS]
HANG_GUARD_S = 120
MASK32, MASK64 = 2**32 - 1, 2**64 - 1


@pytest.fixture(scope="module")
def builds() -> dict[str, Path]:
    flags = ["-O1", "-std=c++14", "-pthread", "-w"]
    return {"fifo": build_cached("blocks_fifo", TB, HEADERS, [*flags, *(f"-D{d}" for d in (*CSIM_DEFINES,
                                                                                          LEDGER_DEFINE))]),
            "sequential": build_cached("blocks_sequential", TB, HEADERS, flags)}


def run(tb: Path, mode: str, depth: int, n: int) -> subprocess.CompletedProcess:
    return subprocess.run([str(tb), mode, str(depth), str(n)], capture_output=True, text=True, timeout=HANG_GUARD_S)


def field(stdout: str, key: str) -> list[str]:
    line = next(ln for ln in stdout.splitlines() if ln.split(" ")[0] == key)
    return line.split()[1:]


def reference_checksums(n: int) -> list[int]:
    """Σ (r·COLS + c + 1)·pattern(j, r, c) mod 2^64 per block j, with blocks_tb.cpp's pattern in Python integers."""
    idx = np.arange(ROWS * COLS, dtype=np.uint64)
    out = []
    for j in range(n):
        p = np.uint64((j * 2654435761) & MASK32) ^ ((idx * np.uint64(40503) + np.uint64(j)) & np.uint64(MASK32))
        out.append(sum(int(w) * int(v) for w, v in zip(idx + np.uint64(1), p, strict=True)) & MASK64)
    return out


def events(stdout: str) -> list[tuple[str, int]]:
    return [(e[:2], int(e[2:])) for e in field(stdout, "events")]


def check_protocol(ev: list[tuple[str, int]], n: int) -> None:
    """Every block is written, then read, in order: W+j < W-j < R+j < R-j, blocks 0..n-1 in sequence."""
    pos = {e: i for i, e in enumerate(ev)}
    assert len(pos) == len(ev) == 4 * n
    for j in range(n):
        assert pos[("W+", j)] < pos[("W-", j)] < pos[("R+", j)] < pos[("R-", j)]
        if j:
            assert pos[("W+", j - 1)] < pos[("W+", j)] and pos[("R+", j - 1)] < pos[("R+", j)]


@pytest.mark.parametrize("mode", ["fifo", "sequential"])
@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("n", [0, 1, 2, 5])
def test_consumer_sees_the_produced_blocks_in_order(builds, mode, depth, n) -> None:
    proc = run(builds[mode], "pair", depth, n)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [int(v) for v in field(proc.stdout, "out")] == reference_checksums(n)
    ev = events(proc.stdout)
    check_protocol(ev, n)
    allocated = int(field(proc.stdout, "allocated")[0])
    if mode == "sequential":  # unbounded: the loader wrote every block before compute ran
        assert allocated == n and [k for k, _ in ev] == ["W+", "W-"] * n + ["R+", "R-"] * n
    else:
        assert allocated <= depth and (allocated > 0) == (n > 0)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_bounded_producer_is_never_more_than_depth_blocks_ahead(builds, depth) -> None:
    """Acquiring block j needs a free block: at most `depth` blocks acquired and not yet released by the reader.
    The log records an acquire after it happened and a release before it happens, so this cannot pass by luck."""
    n = 6
    proc = run(builds["fifo"], "pair", depth, n)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ev = events(proc.stdout)
    check_protocol(ev, n)
    for i, (kind, j) in enumerate(ev):
        if kind == "W+":
            released = sum(1 for k, _ in ev[:i] if k == "R-")
            assert j + 1 - released <= depth, (depth, ev)


def test_depth_one_never_overlaps(builds) -> None:
    proc = run(builds["fifo"], "pair", 1, 5)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert events(proc.stdout) == [(k, j) for j in range(5) for k in ("W+", "W-", "R+", "R-")]


def test_depth_two_writes_the_next_block_while_one_is_read(builds) -> None:
    """Compute holds block j until the loader reports block j+1 written (stream 'ack'): only a ping-pong pair
    can do that; with one block the pair deadlocks and the report names both channels."""
    n = 5
    proc = run(builds["fifo"], "overlap", 2, n)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [int(v) for v in field(proc.stdout, "out")] == reference_checksums(n)
    ev = events(proc.stdout)
    check_protocol(ev, n)
    pos = {e: i for i, e in enumerate(ev)}
    # block j+1 was written (its release follows the W- entry) before block j's read lock let go
    assert all(pos[("W-", j + 1)] < pos[("R-", j)] for j in range(n - 1))
    proc = run(builds["fifo"], "overlap", 1, n)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    msg = proc.stdout.strip()
    assert msg.startswith("error: dataflow region 'load_compute' deadlocked:")
    assert "process loader waits writing full stream_of_blocks 'slots' (0 written, 1 locked/1)" in msg
    assert "process compute waits reading empty stream 'ack' (0/2)" in msg


@pytest.mark.parametrize("depth", [1, 2])
def test_reading_one_block_too_many_names_the_stream(builds, depth) -> None:
    proc = run(builds["fifo"], "starve", depth, 3)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert (f"error: dataflow region 'load_compute' deadlocked: process compute waits reading empty "
            f"stream_of_blocks 'slots' (0 written, 0 locked/{depth})") in proc.stdout
    proc = run(builds["sequential"], "starve", depth, 3)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "error: read_lock on empty stream_of_blocks 'slots': no written block" in proc.stdout


@pytest.mark.parametrize("depth", [1, 2])
def test_writing_one_block_too_many_is_a_leftover(builds, depth) -> None:
    proc = run(builds["fifo"], "leftover", depth, 3)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "error: dataflow region 'load_compute' ended with data left in 'slots' (1 block(s))" in proc.stdout


@pytest.mark.parametrize("mode", ["fifo", "sequential"])
def test_nested_locks_and_reads_outside_a_region_are_errors(builds, mode) -> None:
    proc = run(builds[mode], "nested", 2, 1)
    assert proc.returncode == 3
    assert "stream_of_blocks 'slots': write_lock while another write_lock on it is held" in proc.stdout
    proc = run(builds[mode], "outside", 2, 1)
    assert proc.returncode == 3
    assert "error: read_lock on empty stream_of_blocks 'slots'" in proc.stdout


def test_ledger_records_the_loops_inside_locks(builds) -> None:
    """The ledger build (threads + M3VIT_LEDGER): both processes record their loops, run inside lock scopes."""
    n = 3
    proc = run(builds["fifo"], "pair", 2, n)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = "".join(ln + "\n" for ln in proc.stdout.splitlines() if ln.split("\t")[0] in ("site", "region", "proc",
                                                                                           "loop"))
    led = perf.parse_ledger(text, "blocks_tb", 300.0)
    procs = {p.name: p for p in led.processes}
    assert set(procs) == {"loader", "compute"} and all(p.region == "load_compute" for p in procs.values())
    assert led.trip_counts() == {"LOAD": {n}, "FILL_R": {ROWS}, "FILL_C": {COLS}, "COMPUTE": {n}, "SUM_R": {ROWS},
                                 "SUM_C": {COLS}}


@pytest.mark.parametrize(
    ("defines", "expect"),
    [
        ([], "model"),  # plain g++ over hls4ml's headers: the sequential model
        (["M3VIT_CSIM_FIFO"], "bounded"),
        (["__VITIS_HLS__"], "vitis"),  # Vitis' C simulation and synthesis
        (["__SYNTHESIS__"], "vitis"),
        (["__SYNTHESIS__", "M3VIT_HLS_LINT"], "model"),  # the libclang lint (Vitis' header is absent)
    ],
)
def test_each_build_gets_one_implementation(tmp_path, defines, expect) -> None:
    """m3vit_dataflow.h picks Vitis' header (here a stand-in that defines a marker) only for Vitis builds, and never
    together with the model, so the hls:: names are defined once."""
    (tmp_path / "hls_streamofblocks.h").write_text("#define VITIS_STREAMOFBLOCKS_STAND_IN 1\n")
    (tmp_path / "t.cpp").write_text('#include "m3vit_dataflow.h"\n')
    proc = subprocess.run([CXX, "-E", "-dM", "-std=c++14", *(f"-D{d}" for d in defines), f"-I{HLS_DIR}",
                           f"-I{ap_types_dir()}", f"-I{tmp_path}", str(tmp_path / "t.cpp")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    macros = {ln.split()[1] for ln in proc.stdout.splitlines() if ln.startswith("#define ")}
    got = {"vitis": "VITIS_STREAMOFBLOCKS_STAND_IN" in macros, "model": "M3VIT_BLOCKS_H" in macros,
           "bounded": "M3VIT_CSIM_DATAFLOW_H" in macros}
    assert got == {"vitis": expect == "vitis", "model": expect in ("model", "bounded"), "bounded": expect == "bounded"}
