"""The HLS lint (m3vit.codegen.lint): each check on a small hand-written kernel that violates it and one that
passes, the resource inventory against counts worked out by hand, and today's generated projects (tiny and the
reduced PASCAL DSE preset), whose known failures are strict xfails."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest

from m3vit.cli import main
from m3vit.codegen.config import load_config, with_overrides
from m3vit.codegen.lint import CHECKS, LintError, LintReport, lint_project
from m3vit.codegen.perf import maxi_settings, resources
from m3vit.codegen.project import generate

pytest.importorskip("clang.cindex", reason="the HLS lint needs libclang (a dev dependency)")

REDUCED = {"model.image_size": [32, 64], "model.depth": 2, "model.moe_blocks": [1]}  # as tests/test_hls.py
TINY = load_config("tiny")

# The top-level signature of the generated m3vit_top.h, with m_axi pragmas that set everything the lint asks for.
TOP = """#include "m3vit_top.h"
{includes}
using m3vit::cfg::word_t;
{helpers}
void m3vit_top(unsigned num_images, unsigned task, unsigned first_layer, unsigned last_layer,
               const word_t* weights, word_t* scratch, const word_t* input, word_t* output) {{
{pragmas}
#pragma HLS INTERFACE mode = s_axilite port = return bundle = control
{body}
}}
"""
MODEL = maxi_settings()  # what the perf model assumes: the lint requires the pragmas to say the same
READ = (f"num_read_outstanding = {MODEL['num_read_outstanding']} "
        f"max_read_burst_length = {MODEL['max_read_burst_length']}")
WRITE = (f"num_write_outstanding = {MODEL['num_write_outstanding']} "
         f"max_write_burst_length = {MODEL['max_write_burst_length']}")
LATENCY = f"latency = {MODEL['latency']}"


def maxi(port: str, bundle: str, opts: str) -> str:
    return f"#pragma HLS INTERFACE mode = m_axi port = {port} bundle = {bundle} offset = slave {opts}"


W_OPTS = f"{LATENCY} {READ}"

# A kernel every check but the model comparison accepts: a burst copy, a trip-counted variable loop, 64
# variable 16 x 16 products, a constant multiply and a 4-bank array.
CLEAN = """
    static ap_int<16> buf[4][1024];
#pragma HLS ARRAY_PARTITION variable = buf dim = 1 complete
    ap_int<16> x[64], y[64];
#pragma HLS ARRAY_PARTITION variable = x complete
#pragma HLS ARRAY_PARTITION variable = y complete
COPY:
    for (int i = 0; i < 256; i++) {
#pragma HLS PIPELINE II = 1
        output[i] = input[i];
    }
ROWS:
    for (int r = 0; r < int(num_images); r++) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = 4
#pragma HLS PIPELINE II = 1
        ap_int<32> s = 0;
        for (int k = 0; k < 64; k++) s += x[k] * y[k] + x[k] * ap_int<16>(3);
        buf[r & 3][r] = s;
        output[r] = s;
    }
"""


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory) -> Path:
    return generate(TINY, tmp_path_factory.mktemp("lint") / "tiny")


def planted(tmp_path: Path, tiny_project: Path, body: str, helpers: str = "", includes: str = "",
            w_opts: str = W_OPTS, o_bundle: str = "gmem_o") -> Path:
    """A copy of the tiny project whose top function is a hand-written kernel."""
    project = tmp_path / "planted"
    shutil.copytree(tiny_project, project)
    pragmas = "\n".join([maxi("weights", "gmem_w", w_opts),
                          maxi("scratch", "gmem_s", f"{LATENCY} {READ} {WRITE}"),
                          maxi("input", "gmem_i", f"{LATENCY} {READ}"),
                          maxi("output", o_bundle, f"{LATENCY} {WRITE}")])
    top = TOP.format(includes=includes, helpers=helpers, body=body, pragmas=pragmas)
    (project / "src" / "m3vit_top.cpp").write_text(top)
    return project


def lint(tmp_path: Path, tiny_project: Path, body: str, model: dict[str, int] | None = None, **kw) -> LintReport:
    return lint_project(TINY, planted(tmp_path, tiny_project, body, **kw), model=model)


def messages(report: LintReport, check: str) -> list[str]:
    return [f.message for f in report.failures(check)]


# ------------------------------------------------------------------------------------------ each check
def test_clean_kernel_passes_every_check(tmp_path, tiny_project) -> None:
    r = lint(tmp_path, tiny_project, CLEAN)
    for check in CHECKS:
        if check != "perf":
            assert r.failures(check) == [], check
    assert r.maxi_accesses == 3 and r.ok is False  # it is not the modeled design: only `perf` fails
    assert {f.check for f in r.failures()} == {"perf"}


@pytest.mark.parametrize(
    ("body", "expect"),
    [
        ("for (int i = 0; i < 64; i++) {\n#pragma HLS PIPELINE II = 1\n output[i] = (i & 1) ? input[i] : word_t(0);"
         "\n}",
         "conditional inside pipelined loop"),
        ("for (int i = 0; i < 64; i++) {\n#pragma HLS PIPELINE II = 1\n output[i] = input[2 * i];\n}",
         "not unit-stride"),
        ("for (int i = 0; i < 64; i++) {\n#pragma HLS PIPELINE II = 1\n output[i] = input[i / 4];\n}",
         "not unit-stride"),
        ("output[0] = word_t(task);", "outside any pipelined loop"),
        ("const word_t* p = input + 8;\nfor (int i = 0; i < 64; i++) {\n#pragma HLS PIPELINE II = 1\n"
         " word_t w = p[i];\n if (i > 3) w = 0;\n output[i + task] = w;\n}", None),
    ],
)
def test_burst(tmp_path, tiny_project, body, expect) -> None:
    r = lint(tmp_path, tiny_project, body)
    found = messages(r, "burst")
    if expect is None:  # unconditional unit-stride accesses, through a local pointer and with an invariant offset
        assert found == [] and r.maxi_accesses == 2
    else:
        assert len(found) == 1 and expect in found[0], found


def test_burst_waiver_is_reported_with_its_reason(tmp_path, tiny_project) -> None:
    body = "// hls-lint: waive burst: one status word per call\noutput[0] = word_t(task);"
    r = lint(tmp_path, tiny_project, body)
    assert r.failures("burst") == []
    (w,) = r.waived()
    assert w.check == "burst" and w.waiver == "one status word per call"
    r = lint(tmp_path / "noreason", tiny_project, "// hls-lint: waive burst:\noutput[0] = word_t(task);")
    assert len(r.failures("burst")) == 1  # a waiver without a reason does not count


@pytest.mark.parametrize(
    ("body", "expect"),
    [
        ("for (int i = 0; i < int(num_images); i++) {\n#pragma HLS PIPELINE II = 1\n output[i] = input[i];\n}",
         "variable bound and no LOOP_TRIPCOUNT"),
        ("int n = task;\nL1: while (n > 0) {\n n--;\n}", "L1 has a variable bound"),
        ("for (int i = 0; i < 64; i++) {\n#pragma HLS PIPELINE\n output[i] = input[i];\n}", "does not name its II"),
    ],
)
def test_tripcount_and_ii(tmp_path, tiny_project, body, expect) -> None:
    r = lint(tmp_path, tiny_project, body)
    found = messages(r, "tripcount") + messages(r, "ii")
    assert len(found) == 1 and expect in found[0], found


def test_maxi_pragmas_and_hp_ports(tmp_path, tiny_project) -> None:
    burst = MODEL["max_read_burst_length"]
    r = lint(tmp_path, tiny_project, "", w_opts=f"{LATENCY} max_read_burst_length = {burst}")
    assert messages(r, "maxi") == ["m_axi port weights (bundle gmem_w) does not set num_read_outstanding"]
    r = lint(tmp_path / "v", tiny_project, "", w_opts=f"latency = 64 {READ}")
    found = messages(r, "maxi")
    assert len(found) == 1 and f"latency = 64 (perf assumes {MODEL['latency']})" in found[0], found
    r = lint(tmp_path / "b", tiny_project, "", o_bundle="gmem_x")
    found = messages(r, "maxi")
    assert any("differ from the register map" in m for m in found), found
    assert any("gmem_x->S_AXI_HP3_FPD" in m for m in found), found


@pytest.mark.parametrize(
    ("body", "helpers", "includes", "expect"),
    [
        ("float f = 0.5f * float(task);\noutput[0] = word_t(int(f));", "", "", "floating point"),
        ("double d = task;\n(void)d;", "", "", "floating point"),
        ("output[0] = fact(int(task));", "inline int fact(int n) { return n > 1 ? n * fact(n - 1) : 1; }", "",
         "recursion"),
        ("int* p = new int[4];\np[0] = 1;", "", "", "dynamic allocation (new)"),
        ("void* p = malloc(16);\n(void)p;", "", "#include <cstdlib>", "dynamic allocation (malloc)"),
        ("ap_uint<5000> wide = 0;\n(void)wide;", "", "", "5000 bits wide"),
        ("", "", '#include "hls_math.h"', "includes hls_math.h"),
    ],
)
def test_datapath(tmp_path, tiny_project, body, helpers, includes, expect) -> None:
    project = planted(tmp_path, tiny_project, body, helpers=helpers, includes=includes)
    (project / "src" / "hls_math.h").write_text("#pragma once\n")  # a stand-in: Vitis' header is not here
    found = messages(lint_project(TINY, project), "datapath")
    assert found and all(expect in m for m in found), found


# ------------------------------------------------------------------------------------------ inventory
def bram36(width: int, depth: int) -> int:
    """BRAM36 of one width x depth memory, worked out from the device's SDP modes (72 x 512 ... 1 x 32768)."""
    modes = [(72, 512), (36, 1024), (18, 2048), (9, 4096), (4, 8192), (2, 16384), (1, 32768)]
    return min(math.ceil(width / w) * math.ceil(depth / d) for w, d in modes)


def test_inventory_by_hand(tmp_path, tiny_project) -> None:
    r = lint(tmp_path, tiny_project, CLEAN)
    (buf,) = [a for a in r.arrays if a.name.endswith("::buf")]
    assert (buf.banks, buf.width, buf.depth, buf.kind) == (4, 16, 1024, "bram")
    assert buf.bram36 == 4 * bram36(16, 1024) == 4
    # 64 lanes of x[k]·y[k] (16 x 16: one DSP each); x[k]·3 is a constant multiply (LUTs)
    assert r.totals["dsp"] == 64 and r.totals["uram"] == 0 and r.totals["bram36"] == 4


@pytest.mark.parametrize(
    ("decl", "lanes_expr", "dsp"),
    [
        ("ap_int<8> x[64], y[64];", "x[k] * y[k]", 32),  # 8 x 8: two products per DSP48E2 (WP486 packing)
        ("ap_int<27> x[64]; ap_int<18> y[64];", "x[k] * y[k]", 64),  # the largest that fits one DSP
        ("ap_int<64> x[4], y[4];", "x[k] * y[k]", 4 * 3 * 4),  # 64 x 64: ceil(64/27) x ceil(64/18) each
    ],
)
def test_dsp_packing(tmp_path, tiny_project, decl, lanes_expr, dsp) -> None:
    n = 4 if "64>" in decl else 64
    body = (f"{decl}\n#pragma HLS ARRAY_PARTITION variable = x complete\n#pragma HLS ARRAY_PARTITION variable = y "
            f"complete\nap_int<128> s = 0;\nfor (int k = 0; k < {n}; k++) {{\n#pragma HLS UNROLL\n"
            f" s += {lanes_expr};\n}}\noutput[0] = s;")
    assert lint(tmp_path, tiny_project, body).totals["dsp"] == dsp


@pytest.mark.parametrize(("start", "bound", "step"), [(0, 64, 7), (0, 63, 7), (3, 64, 8), (0, 64, 1)])
def test_strided_unrolled_loop_counts_its_iterations(tmp_path, tiny_project, start, bound, step) -> None:
    """`for (i = start; i < bound; i += step)` runs ceil((bound - start) / step) times: one 16 x 16 DSP each."""
    body = (f"ap_int<16> x[64], y[64];\n#pragma HLS ARRAY_PARTITION variable = x complete\n"
            f"#pragma HLS ARRAY_PARTITION variable = y complete\nap_int<40> s = 0;\n"
            f"for (int k = {start}; k < {bound}; k += {step}) {{\n#pragma HLS UNROLL\n s += x[k] * y[k];\n}}\n"
            f"output[0] = s;")
    r = lint(tmp_path, tiny_project, body)
    assert r.totals["dsp"] == len(range(start, bound, step)) and r.failures("tripcount") == []


def test_bind_storage_and_allocation(tmp_path, tiny_project) -> None:
    helpers = """
template <int N>
ap_int<40> dot(const ap_int<16> x[64], const ap_int<16> y[64]) {
    ap_int<40> s = 0;
    for (int k = 0; k < 64; k++) {
#pragma HLS UNROLL
        s += x[k] * y[k] + N;
    }
    return s;
}"""
    body = """
    static ap_int<64> big[2][8192];
#pragma HLS ARRAY_PARTITION variable = big dim = 1 complete
#pragma HLS BIND_STORAGE variable = big type = ram_2p impl = uram
#pragma HLS ALLOCATION function instances = dot limit = 1
    ap_int<16> x[64], y[64];
#pragma HLS ARRAY_PARTITION variable = x complete
#pragma HLS ARRAY_PARTITION variable = y complete
    big[0][task] = dot<1>(x, y) + dot<2>(x, y) + dot<3>(x, y);
    output[0] = big[1][task];
"""
    r = lint(tmp_path, tiny_project, body, helpers=helpers)
    (big,) = [a for a in r.arrays if a.name.endswith("::big")]
    # each bank 64 x 8192: a URAM is 72 x 4096, so two per bank
    assert (big.kind, big.bound, big.banks, big.uram, big.bram36) == ("uram", "uram", 2, 4, 0)
    assert r.totals["dsp"] == 64  # three instantiations of dot, ALLOCATION keeps one: 64 lanes of 16 x 16


def test_struct_members_are_arrays_with_their_pragmas(tmp_path, tiny_project) -> None:
    """A static struct's array members, nested ones too, are named and bound by their dotted path; a pragma
    factor may name a config constant (tiny: MAC_IN = 16)."""
    helpers = """
struct Inner { ap_int<8> k[64][256]; };
struct Outer { Inner in; ap_int<16> a[4096]; };"""
    body = """
    static Outer st;
#pragma HLS BIND_STORAGE variable = st.in.k type = ram_2p impl = uram
#pragma HLS ARRAY_RESHAPE variable = st.in.k cyclic factor = MAC_IN dim = 2
    st.in.k[task][num_images] = 1;
    st.a[task] = st.in.k[num_images][task];
    output[0] = st.a[num_images];
"""
    r = lint(tmp_path, tiny_project, body, helpers=helpers)
    (k,) = [a for a in r.arrays if a.name.endswith("::st.in.k")]
    mac_in = TINY.hardware.mac_in
    # 8 x mac_in bits wide, 64 x 256 / mac_in deep: URAM words are 72 bits, 4096 deep
    assert (k.kind, k.bound, k.width, k.depth) == ("uram", "uram", 8 * mac_in, 64 * 256 // mac_in)
    assert k.uram == math.ceil(8 * mac_in / 72) * math.ceil(64 * 256 / mac_in / 4096)
    (a,) = [a for a in r.arrays if a.name.endswith("::st.a")]
    assert (a.kind, a.width, a.depth, a.bram36) == ("bram", 16, 4096, bram36(16, 4096))


def test_planted_inventory_mismatch_is_caught(tmp_path, tiny_project) -> None:
    """The comparison with the model: equal counts pass; one extra multiplier lane or array is named."""
    by_hand = {"dsp": 64, "bram36": 4, "uram": 0}
    r = lint(tmp_path, tiny_project, CLEAN, model=by_hand)
    assert r.failures("perf") == [] and r.ok
    planted_body = CLEAN.replace("x[k] * ap_int<16>(3)", "x[k] * y[63 - k]").replace(
        "static ap_int<16> buf[4][1024];", "static ap_int<16> buf[4][1024];\n    static ap_int<16> extra[4096];\n"
                                           "    extra[task] = 1;\n    output[1] = extra[num_images];")
    r = lint(tmp_path / "b", tiny_project, planted_body, model=by_hand)
    assert sorted(messages(r, "perf")) == ["lint counts 128 dsp, the performance model 64",
                                           f"lint counts {4 + bram36(16, 4096)} bram36, the performance model 4"]


# A loader → compute DATAFLOW pair handing weight slots over through hls::stream_of_blocks (m3vit_dataflow.h):
# the lint parses it with the C-sim model's declarations (no Vitis header here).
BLOCKS_HELPERS = """
typedef ap_int<16> slot_t[64][512];
void loader(const word_t* w, hls::stream_of_blocks<slot_t>& slots, int n) {
LOAD:
    for (int e = 0; e < n; e++) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = 8
        hls::write_lock<slot_t> slot(slots);
    FILL:
        for (int i = 0; i < 64 * 512; i++) {
#pragma HLS PIPELINE II = 1
            slot[i / 512][i % 512] = w[i];
        }
    }
}
void compute(hls::stream_of_blocks<slot_t>& slots, word_t* out, int n) {
    ap_int<32> s = 0;
USE:
    for (int e = 0; e < n; e++) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = 8
        hls::read_lock<slot_t> slot(slots);
    SUM:
        for (int i = 0; i < 512; i++) {
#pragma HLS PIPELINE II = 1
            s += slot[e & 63][i];
        }
    }
OUT:
    for (int i = 0; i < 1; i++) {
#pragma HLS PIPELINE II = 1
        out[i] = s;
    }
}"""


@pytest.mark.parametrize(("decl", "bind", "copies"), [("hls::stream_of_blocks<slot_t, 3>", False, 3),
                                                        ("hls::stream_of_blocks<slot_t>", True, 2)])
def test_stream_of_blocks_counts_depth_blocks(tmp_path, tiny_project, decl, bind, copies) -> None:
    """A stream of blocks is `depth` memories of its block type (Vitis' buffers); the model's containers are not
    arrays, and every check but the model comparison passes."""
    body = (f"    {decl} slots;\n    M3VIT_BLOCKS_NAME(slots);\n"
            + ("#pragma HLS BIND_STORAGE variable = slots type = ram_2p impl = uram\n" if bind else "")
            + "    M3VIT_DATAFLOW_REGION(\"moe\") {\n"
              "        M3VIT_PROCESS(loader, weights, slots, int(num_images));\n"
              "        M3VIT_PROCESS(compute, slots, output, int(num_images));\n    }\n")
    r = lint(tmp_path, tiny_project, body, helpers=BLOCKS_HELPERS, includes='#include "m3vit_dataflow.h"')
    assert [f for f in r.failures() if f.check != "perf"] == []
    (slots,) = r.arrays
    assert slots.name == "m3vit_top::slots" and (slots.banks, slots.width, slots.depth) == (copies, 16, 64 * 512)
    if bind:  # a URAM is 72 x 4096: 8 per 16 x 32768 buffer
        assert (slots.kind, slots.uram, slots.bram36) == ("uram", copies * 8, 0)
    else:
        assert (slots.kind, slots.bram36, slots.uram) == ("bram", copies * bram36(16, 64 * 512), 0)


def test_fit_one_line_per_resource_over_the_board(tmp_path, tiny_project) -> None:
    def body(lanes: int) -> str:  # `lanes` variable 16 x 16 products: one DSP each
        return (f"ap_int<16> x[{lanes}];\n#pragma HLS ARRAY_PARTITION variable = x complete\nap_int<48> s = 0;\n"
                f"for (int k = 0; k < {lanes}; k++) {{\n#pragma HLS UNROLL\n s += x[k] * x[{lanes - 1} - k];\n}}\n"
                "output[0] = s;")

    limit = math.floor(0.8 * TINY.hardware.board_spec.dsp)
    r = lint(tmp_path, tiny_project, body(limit + 1))
    assert r.totals["dsp"] == limit + 1
    (f,) = r.failures("fit")
    assert f.where == "dsp" and f"{limit + 1:,} dsp" in f.message
    assert lint(tmp_path / "b", tiny_project, body(limit)).failures("fit") == []


# ------------------------------------------------------------------------------------------ bad input
def tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def test_bad_input_is_one_line(tmp_path, tiny_project) -> None:
    with pytest.raises(LintError, match="not an HLS project generated by m3vit"):
        lint_project(TINY, tmp_path)
    with pytest.raises(LintError, match="is not a folder"):
        lint_project(TINY, tmp_path / "missing")
    broken = tmp_path / "noheader"
    shutil.copytree(tiny_project, broken)
    (broken / "src" / "m3vit_config.h").unlink()
    with pytest.raises(LintError, match=r"config header src/m3vit_config\.h is missing"):
        lint_project(TINY, broken)
    other = with_overrides(TINY, **{"hardware.mac_in": 8})
    with pytest.raises(LintError, match="not generated from config"):
        lint_project(other, tiny_project)


# ------------------------------------------------------------------------------------------ today's kernels
TODAY = ["tiny", "m3vit_small_pascal_dse@reduced", "m3vit_small_pascal_dse", "m3vit_small_nyud_dse"]
"""Generated designs every check must pass on: tiny, a reduced DSE preset, and both DSE presets at full size
(the ZCU104 targets: their inventories fit 80 % of the board and equal perf.resources)."""


def _today_config(preset: str):
    if preset == "tiny":
        return load_config("tiny")
    name, _, size = preset.partition("@")
    return with_overrides(load_config(name), **REDUCED) if size == "reduced" else load_config(name)


@pytest.fixture(scope="module")
def today(tmp_path_factory) -> dict[str, LintReport]:
    cache: dict[str, LintReport] = {}

    def get(preset: str) -> LintReport:
        if preset not in cache:
            cfg = _today_config(preset)
            cache[preset] = lint_project(cfg, generate(cfg, tmp_path_factory.mktemp("today") / cfg.name))
        return cache[preset]

    return get


@pytest.mark.parametrize(("preset", "check"), [(p, c) for p in TODAY for c in CHECKS])
def test_today_generated_project(today, preset, check) -> None:
    assert [f.line() for f in today(preset).failures(check)] == []


@pytest.mark.parametrize("preset", ["m3vit_small_pascal_dse", "m3vit_small_nyud_dse"])
def test_dse_presets_fit_and_equal_the_model(today, preset) -> None:
    """The numbers behind the fit and perf verdicts, against the board and perf.resources computed here."""
    cfg = load_config(preset)
    r = today(preset)
    board, model = cfg.hardware.board_spec, resources(cfg)
    assert (r.totals["dsp"], r.totals["bram36"], r.totals["uram"]) == (model.dsp, model.bram36, model.uram)
    for k, cap in (("dsp", board.dsp), ("bram36", board.bram36), ("uram", board.uram)):
        assert 0 < r.totals[k] <= 0.8 * cap, (k, r.totals[k], cap)
    (kv,) = [a for a in r.arrays if a.name == "backbone::st.kv.w"]  # K, Vᵀ and the accumulators share it
    assert (kv.kind, kv.width) == ("uram", 72)


@pytest.mark.parametrize("preset", ["tiny", "m3vit_small_pascal_dse@reduced"])
def test_today_walk_reaches_every_stage(today, preset) -> None:
    r = today(preset)
    walked = {name.split("<")[0] for name in r.walked}
    assert {"backbone", "run_stage", "run_block", "mac_array", "mac_tile", "layernorm_tile", "stage_attention",
            "attn_head", "att_writer", "loader", "reader", "mac", "writer", "build_queues", "route_token",
            "gelu"} <= walked, sorted(walked)
    names = {m.function.split("<")[0] for m in r.multipliers} | {a.name.split("::")[0].split("<")[0]
                                                                 for a in r.arrays}
    assert {"mac_tile", "layernorm_tile", "attn_head", "run_stage"} <= names
    assert names & {"dsp_madd", "mac_rows"}  # the array's multipliers: packed DSPs, or one per lane (tiny)
    assert r.maxi_accesses > 10 and not r.waived()


def test_today_inventory_sees_one_mac_array(today) -> None:
    """Independent of the verdict: one MAC array, MAC_OUT x MAC_IN / 2 DSP48E2 when it packs two int8 MACs."""
    cfg = with_overrides(load_config("m3vit_small_pascal_dse"), **REDUCED)
    r = today("m3vit_small_pascal_dse@reduced")
    mo, mi = cfg.hardware.mac_out, cfg.hardware.mac_in
    # one multiply per (row pair, lane): packed pairs and wide products share it (the pre-adder input selects)
    dsp = [m for m in r.multipliers if m.function.startswith("dsp_madd")]
    assert sum(m.dsp for m in dsp) == mo // 2 * mi
    assert not [m for m in r.multipliers if m.function.startswith(("mac_array", "mac_rows", "dsp_pack_madd"))]
    (sw,) = [a for a in r.arrays if a.name == "run_stage::sw"]
    assert (sw.banks, sw.kind, sw.bound) == (2, "bram", "bram")  # two weight slots (stream_of_blocks depth 2)


def test_cli_lint(tmp_path, tiny_project, capsys) -> None:
    project = tmp_path / "tiny"
    shutil.copytree(tiny_project, project)
    before = tree_digest(project)
    assert main(["lint", "tiny", "--project", str(project), "--json", str(tmp_path / "lint.json")]) == 0
    out = capsys.readouterr().out
    assert "resource" in out and "bram36" in out and "lint passed" in out
    assert tree_digest(project) == before  # the lint never edits the project
    data = json.loads((tmp_path / "lint.json").read_text())
    assert data["ok"] is True and data["checks"]["ii"] == 0 and data["checks"]["perf"] == 0
    # a design over the board fails the fit check: exit 1
    big = tmp_path / "big"
    assert main(["lint", "m3vit_small_pascal", "--project", str(generate(load_config("m3vit_small_pascal"), big))]) == 1
    assert "lint FAILED" in capsys.readouterr().out
    assert main(["lint", "tiny", "--project", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("m3vit: error:") and "\n" not in err
