"""RTL generator for the expert-by-expert MoE unit.

The unit's logic is hand-written, parameterised SystemVerilog in ``rtl/`` (package data ``m3vit.rtl``, one
job per module, :data:`MODULES`; ``rtl/README.md`` lists them). ``generate_moe_unit(cfg, out_dir)`` writes
into ``build/<name>/rtl/`` only what a config decides: the parameter package ``moe_unit_pkg.sv`` (rendered
from ``rtl/templates/moe_unit_pkg.sv.j2``: sizes, formats, shifts, AXI and buffer geometry, the register
offsets of :func:`register_map`), the GELU table ``moe_unit_gelu.mem`` (``$readmemh``; the package names it
by absolute path, so Verilator, Icarus and yosys find it from any working directory), copies of the modules
(so the folder is the complete source set, :attr:`GeneratedRtl.sources` in compile order) and
``moe_unit_layout.json``. The JSON is the single description of what the unit reads and writes (memory
regions, offsets, element formats, register map, on-chip buffer sizes); testbenches and host code pack
and unpack memory with :func:`pack_token_rows`, :func:`pack_queues`, :func:`pack_experts` and
:func:`unpack_out`, which read only that description.

Memory layout (every region starts at a pointer aligned to the AXI data width, little-endian):

* ``tokens`` (pointer ``x``): x [T, dim], the norm2 output, one signed element per container.
* ``queues`` (pointer ``queues``): a count table of N uint32 (padded to the bus width), then N queues at
  a fixed stride; queue e holds count[e] uint32 entries ``token << 16 | gate`` in ascending token order,
  gate = the Q.15 combine weight (≤ 2^15) — exactly ``Routing.queue(e)`` of the golden model.
* ``experts`` (pointer ``weights``): per expert, at a fixed stride: b1, w1, b2, w2 (each bias ahead of its
  weights, so an output row can start as soon as its weight tiles arrive). Weights are stored tile-major
  (tiles of mac_out × mac_in, row-major inside a tile, output-row tiles in order) so that one tile is one
  MAC-array operand; biases are plain vectors at accumulator scale.
* ``out`` (pointer ``out``): moe [T, dim] in the act format (= REQ_act(A_t, 15), docs/numerics.md §11).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from m3vit import build_dir, package_dir
from m3vit.codegen import axilite
from m3vit.codegen.axilite import TopArg
from m3vit.codegen.bits import clog2, container_bits, pow2_ceil, round_up
from m3vit.codegen.config import DesignConfig, FixedFormat
from m3vit.codegen.numerics import PROB_FRAC, constants
from m3vit.codegen.render import template_env
from m3vit.errors import ToolkitError

RTL_DIR = package_dir("m3vit.rtl")
TEMPLATE_DIR = RTL_DIR / "templates"
TOP = "moe_unit"
PACKAGE = "moe_unit_pkg"  # the generated parameter package
PACKAGE_TEMPLATE = "moe_unit_pkg.sv.j2"
GELU_MEM = "moe_unit_gelu.mem"  # the generated GELU table
# the hand-written modules (package data m3vit.rtl), in compile order: packages first, the top last
MODULES = (
    "moe_unit_defs_pkg.sv",
    "moe_unit_ram.sv",
    "moe_unit_burst_len.sv",
    "moe_unit_gelu_lane.sv",
    "moe_unit_axil.sv",
    "moe_unit_reader.sv",
    "moe_unit_sink.sv",
    "moe_unit_prefetch.sv",
    "moe_unit_issue.sv",
    "moe_unit_mac.sv",
    "moe_unit_post.sv",
    "moe_unit_hidden_ring.sv",
    "moe_unit_accum.sv",
    "moe_unit_writeback.sv",
    "moe_unit_counters.sv",
    "moe_unit.sv",
)
QUEUE_ENTRY_BITS = 32
GATE_BITS = 16  # a gate is ≤ 2^15, so 16 unsigned bits hold it
COUNT_BITS = 16  # per-expert queue length register (≤ max_tokens ≤ 65535)
PAGE = 4096  # AXI bursts never cross a 4 KiB boundary
POINTERS = ("x", "queues", "weights", "out")
COUNTERS = (
    ("busy_cycles", "cycles from ap_start to ap_done"),
    ("mac_cycles", "cycles in which the MAC array issued a tile"),
    ("stall_cycles", "cycles the MAC array waited for memory (count load, expert w1/b1 not loaded, nothing to "
     "issue while w2/b2 or a token row is on its way)"),
    ("bytes_read", "bytes read over m_axi_gmem"),
    ("weight_bytes_read", "expert-weight bytes read (each used expert once)"),
    ("bytes_written", "bytes written over m_axi_gmem"),
    ("sat_hidden", "hidden-format saturations (expert fc1)"),
    ("sat_act", "act-format saturations (expert fc2 and the final REQ)"),
    ("experts_used", "experts with a non-empty queue"),
    ("expert_phase_cycles", "cycles between the count load and the write-back (prefetch, token load, compute)"),
    ("errors", "bad input, handled without hanging or corrupting: bit 0 num_tokens > max_tokens, bit 1 a queue "
     "count > max_tokens (both clamped), bit 2 a queue entry's token ≥ num_tokens (its result dropped)"),
)
ERROR_BITS = {"num_tokens_clamped": 0, "queue_count_clamped": 1, "token_out_of_range": 2}


class RtlError(ToolkitError, ValueError):
    """The config cannot be mapped onto this RTL (sizes that do not tile); one line naming the knob."""






@dataclass(frozen=True)
class RtlKnobs:
    """Hardware knobs of the unit; ``None`` takes the config's value."""

    mac_in: int | None = None
    mac_out: int | None = None
    axi_data_bits: int | None = None
    max_tokens: int | None = (
        None  # token capacity (on-chip x and accumulator buffers); default T of the model
    )
    max_burst: int = 16  # beats per AXI burst (Vitis' default max_read_burst_length)
    max_outstanding: int = 8  # read bursts in flight
    hidden_ring: int | None = None  # hidden vectors on chip = tokens per wave (power of two); None: derived


HIDDEN_RING_MAX = 32  # the derived ring covers an expert's w2 fetch with up to this many tokens' fc1 work


def derived_hidden_ring(w2_beats: int, fc1_pass_cycles: int, tmax: int) -> int:
    """Ring depth (tokens per wave) whose fc1 work covers the fetch of an expert's b2/w2 (what the first
    expert's fc2 waits for), as a power of two in [2, HIDDEN_RING_MAX], no deeper than the token capacity."""
    want = pow2_ceil(-(-w2_beats // fc1_pass_cycles) + 2)
    return max(2, min(want, HIDDEN_RING_MAX, pow2_ceil(tmax)))


def register_map() -> dict[str, Any]:
    """The unit's s_axilite map (:func:`m3vit.codegen.axilite.register_map`): ``num_tokens``, the four
    64-bit pointers, then the read-only counters as output scalars."""
    args = [TopArg("num_tokens", "scalar", "unsigned", 32, "tokens of this call (≤ max_tokens)")]
    args += [TopArg(p, "pointer", "void*", 64, f"{p} region (moe_unit_layout.json)", bundle="gmem",
                    access="w" if p == "out" else "r") for p in POINTERS]
    args += [TopArg(name, "scalar", "unsigned", 32, desc, output=True) for name, desc in COUNTERS]
    return axilite.register_map(args, TOP)


def _fmt(f: FixedFormat) -> dict[str, int]:
    return {"bits": f.bits, "frac": f.frac, "container_bits": container_bits(f.bits)}


DEFAULT_KNOBS = RtlKnobs()


def _token_rows(pointer: str, dim: int, bits: int, container: int) -> dict[str, Any]:
    """A ``[num_tokens, dim]`` row-major region of ``bits``-bit values in ``container``-bit lanes."""
    return {"pointer": pointer, "shape": ["num_tokens", dim], "element_bits": bits, "container_bits": container,
            "row_bytes": dim * container // 8}


def moe_layout(cfg: DesignConfig, knobs: RtlKnobs = DEFAULT_KNOBS) -> dict[str, Any]:
    """Everything the RTL, the testbench and a host need to agree on, as JSON-able data."""
    m, n, hw = cfg.model, cfg.numerics, cfg.hardware
    mi = knobs.mac_in or hw.mac_in
    mo = knobs.mac_out or hw.mac_out
    dw = knobs.axi_data_bits or hw.axi_data_bits
    tmax = knobs.max_tokens or m.num_tokens
    d, h, ne = m.dim, m.expert_hidden, m.num_experts
    bus = dw // 8
    problems = []
    for what, size in (("dim", d), ("expert_hidden", h)):
        for knob, val in (("mac_in", mi), ("mac_out", mo)):
            if size % val:
                problems.append(f"model.{what} = {size} must be a multiple of hardware.{knob} = {val}")
    wc, xc, yc = (container_bits(b) for b in (n.weight.bits, n.norm.bits, n.act.bits))
    bc = container_bits(n.bias_bits)
    words = {
        "weight tile (mac_out·mac_in weights)": mo * mi * wc,
        "bias word (mac_out biases)": mo * bc,
        "token word (mac_in elements)": mi * xc,
        "output word (mac_out elements)": mo * yc,
    }
    for what, bits in words.items():
        if bits % dw:
            problems.append(
                f"a {what} of {bits} bits must be a multiple of hardware.axi_data_bits = {dw}; "
                "enlarge mac_in/mac_out or narrow the bus"
            )
    if not 1 <= tmax <= (1 << 16) - 1:
        problems.append(f"max_tokens = {tmax} must lie in [1, 65535] (16-bit token index in queue entries)")
    if not 1 <= knobs.max_outstanding <= 255:
        problems.append(f"max_outstanding = {knobs.max_outstanding} must lie in [1, 255]")
    if not 1 <= knobs.max_burst <= 256:
        problems.append(f"max_burst = {knobs.max_burst} must lie in [1, 256] (AXI4 INCR)")
    if h > 0xFFFF or d > 0xFFFF:
        problems.append("dim and expert_hidden must be below 65536")
    if max(mi, mo) % min(mi, mo):
        problems.append(f"one of hardware.mac_in = {mi} and hardware.mac_out = {mo} must divide the other "
                        "(banked hidden buffer)")
    ring = knobs.hidden_ring
    if ring is not None and (ring < 2 or ring & (ring - 1) or ring > 1024):
        problems.append(f"hidden_ring = {ring} must be a power of two in [2, 1024]")
    if problems:
        raise RtlError(f"{cfg.name}: " + "; ".join(problems))

    it1, ot1, it2, ot2 = d // mi, h // mo, h // mi, d // mo
    w1_bytes, w2_bytes = h * d * wc // 8, d * h * wc // 8
    b1_bytes, b2_bytes = h * bc // 8, d * bc // 8
    expert_bytes = w1_bytes + b1_bytes + w2_bytes + b2_bytes  # multiples of the bus width (checked above)
    count_bytes = round_up(ne * 4, bus)
    queue_stride = round_up(tmax * 4, bus)
    k = constants(cfg)
    gl = k.gelu
    tile_bits, bword_bits = mo * mi * wc, mo * bc
    if ring is None:
        ring = derived_hidden_ring((w2_bytes + b2_bytes) // bus, ot1 * it1, tmax)
    acc_bits = n.act.bits + GATE_BITS + clog2(m.top_k) + 1  # |A_t| < K·2^(act.bits-1)·2^15, plus sign
    fields = []
    off = 0
    # each bias ahead of its weights: an fc1 output row can start as soon as its w1 tiles have arrived
    for name, nbytes, shape, kind in (
        ("b1", b1_bytes, [h], "bias"),
        ("w1", w1_bytes, [h, d], "weight"),
        ("b2", b2_bytes, [d], "bias"),
        ("w2", w2_bytes, [d, h], "weight"),
    ):
        f: dict[str, Any] = {"name": name, "offset": off, "bytes": nbytes, "shape": shape}
        if kind == "weight":
            f.update(
                element_bits=n.weight.bits,
                container_bits=wc,
                order="tiled",
                tile=[mo, mi],
                tile_grid=[shape[0] // mo, shape[1] // mi],
                index="W[ro·tr + r, co·tc + c] at ((ro·grid_cols + co)·tr + r)·tc + c; [tr, tc] = tile",
            )
        else:
            f.update(element_bits=n.bias_bits, container_bits=bc, order="linear")
        fields.append(f)
        off += nbytes
    buffers = {
        "weight_buffer_bits": 2 * ((ot1 * it1 + ot2 * it2) * tile_bits + (ot1 + ot2) * bword_bits),
        "queue_buffer_bits": 2 * queue_stride * 8,
        "token_buffer_bits": tmax * d * xc,
        "accumulator_buffer_bits": tmax * d * acc_bits,
        "hidden_buffer_bits": ring * h * n.hidden.bits,
        "queue_entry_ring_bits": ring * QUEUE_ENTRY_BITS,
        "count_register_bits": ne * COUNT_BITS,
    }
    return {
        "top": TOP,
        "design": cfg.name,
        "config_hash": cfg.config_hash(),
        "params": {
            "dim": d,
            "hidden": h,
            "num_experts": ne,
            "top_k": m.top_k,
            "max_tokens": tmax,
            "mac_in": mi,
            "mac_out": mo,
            "axi_data_bits": dw,
            "bus_bytes": bus,
            "axi_addr_bits": 64,
            "max_burst": knobs.max_burst,
            "max_outstanding": knobs.max_outstanding,
            "hidden_ring": ring,
            "acc_bits": n.acc_bits,
            "moe_acc_bits": acc_bits,
            "shift_fc1": n.norm.frac + n.weight.frac - n.hidden.frac,
            "shift_fc2": n.hidden.frac + n.weight.frac - n.act.frac,
            "gate_frac": PROB_FRAC,
            "gelu": {
                "lo": gl.lo,
                "hi": gl.hi,
                "seg_shift": gl.seg_shift,
                "segments_log2": n.gelu_segments_log2,
            },
            "tiles": {"fc1": [ot1, it1], "fc2": [ot2, it2]},
        },
        "formats": {
            "x": _fmt(n.norm),
            "weight": _fmt(n.weight),
            "hidden": _fmt(n.hidden),
            "out": _fmt(n.act),
            "bias": {"bits": n.bias_bits, "frac": None, "container_bits": bc},
        },
        "regions": {
            "tokens": _token_rows("x", d, n.norm.bits, xc),
            "queues": {
                "pointer": "queues",
                "bytes": count_bytes + ne * queue_stride,
                "counts": {"offset": 0, "length": ne, "element_bits": 32},
                "entries": {
                    "offset": count_bytes,
                    "stride_bytes": queue_stride,
                    "entry_bits": 32,
                    "token_lsb": GATE_BITS,
                    "gate_lsb": 0,
                    "gate_bits": GATE_BITS,
                },
            },
            "experts": {
                "pointer": "weights",
                "stride_bytes": round_up(expert_bytes, bus),
                "bytes_per_expert": expert_bytes,
                "fields": fields,
            },
            "out": _token_rows("out", d, n.act.bits, yc),
        },
        "registers": register_map(),
        "on_chip": buffers,
    }


# ------------------------------------------------------------------------------------------- packing
def _le_bytes(a: np.ndarray, container_bits: int) -> bytes:
    return np.asarray(a, dtype=np.int64).astype(f"<i{container_bits // 8}").tobytes()


def pack_token_rows(layout: Mapping[str, Any], x: np.ndarray) -> bytes:
    """x [T, dim] (norm format integers) → the ``tokens`` region."""
    r = layout["regions"]["tokens"]
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != r["shape"][1]:
        raise ValueError(f"tokens must be [T, {r['shape'][1]}], got {list(x.shape)}")
    return _le_bytes(x, r["container_bits"])


def pack_queues(layout: Mapping[str, Any], queues: list[tuple[np.ndarray, np.ndarray]]) -> bytes:
    """Per-expert (tokens, gates) lists, e.g. ``[routing.queue(e) for e in range(N)]`` → ``queues`` region."""
    q = layout["regions"]["queues"]
    ent = q["entries"]
    ne = q["counts"]["length"]
    if len(queues) != ne:
        raise ValueError(f"need {ne} queues, got {len(queues)}")
    buf = bytearray(q["bytes"])
    cap = ent["stride_bytes"] // 4
    for e, (tok, gate) in enumerate(queues):
        tok, gate = np.asarray(tok, np.int64), np.asarray(gate, np.int64)
        if tok.size > cap:
            raise ValueError(f"queue {e} has {tok.size} entries; the unit holds at most {cap}")
        if (
            np.any(gate < 0)
            or np.any(gate >= 1 << ent["gate_bits"])
            or np.any(tok < 0)
            or np.any(tok >= 1 << 16)
        ):
            raise ValueError(f"queue {e}: gates must lie in [0, 2^{ent['gate_bits']}), tokens in [0, 65536)")
        buf[4 * e : 4 * e + 4] = int(tok.size).to_bytes(4, "little")
        words = (tok << ent["token_lsb"]) | (gate << ent["gate_lsb"])
        start = ent["offset"] + e * ent["stride_bytes"]
        buf[start : start + 4 * tok.size] = words.astype("<u4").tobytes()
    return bytes(buf)


def _tile(w: np.ndarray, tile: list[int]) -> np.ndarray:
    rows, cols = w.shape
    tr, tc = tile
    return w.reshape(rows // tr, tr, cols // tc, tc).transpose(0, 2, 1, 3).reshape(-1)


def pack_experts(
    layout: Mapping[str, Any], w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray
) -> bytes:
    """All experts' [E, ...] integer tensors (``QExperts`` fields) → the ``experts`` region."""
    r = layout["regions"]["experts"]
    ne = layout["params"]["num_experts"]
    tensors = {"w1": w1, "b1": b1, "w2": w2, "b2": b2}
    buf = bytearray(ne * r["stride_bytes"])
    for e in range(ne):
        base = e * r["stride_bytes"]
        for f in r["fields"]:
            t = np.asarray(tensors[f["name"]][e])
            if list(t.shape) != f["shape"]:
                raise ValueError(f"{f['name']}[{e}] has shape {list(t.shape)}, expected {f['shape']}")
            flat = _tile(t, f["tile"]) if f["order"] == "tiled" else t.reshape(-1)
            data = _le_bytes(flat, f["container_bits"])
            assert len(data) == f["bytes"]
            buf[base + f["offset"] : base + f["offset"] + f["bytes"]] = data
    return bytes(buf)


def unpack_out(layout: Mapping[str, Any], data: bytes, num_tokens: int) -> np.ndarray:
    """The ``out`` region → moe [T, dim] as int64."""
    r = layout["regions"]["out"]
    arr = np.frombuffer(data[: num_tokens * r["row_bytes"]], dtype=f"<i{r['container_bits'] // 8}")
    return arr.astype(np.int64).reshape(num_tokens, r["shape"][1])


def used_expert_weight_bytes(layout: Mapping[str, Any], counts: list[int] | np.ndarray) -> int:
    """Weight bytes the unit must read for these queue lengths: every used expert exactly once."""
    return int(np.count_nonzero(np.asarray(counts))) * layout["regions"]["experts"]["bytes_per_expert"]


# ------------------------------------------------------------------------------------------- generation
@dataclass(frozen=True)
class GeneratedRtl:
    """What :func:`generate_moe_unit` wrote."""

    out_dir: Path
    sources: tuple[Path, ...]
    layout_path: Path
    layout: dict[str, Any]
    top: str
    digest: str  # SHA-256 of every file written (keys simulator builds)
    gelu_mem: Path  # the GELU table the package points the lanes at


def _template_context(cfg: DesignConfig, layout: dict[str, Any]) -> dict[str, Any]:
    """The values of the parameter package (names as in ``moe_unit_pkg``) and the GELU pairs."""
    p, n = layout["params"], cfg.numerics
    k = constants(cfg)
    reg_off = axilite.offsets(layout["registers"])
    qe = p["axi_data_bits"] // QUEUE_ENTRY_BITS
    ot1, it1 = p["tiles"]["fc1"]
    ot2, it2 = p["tiles"]["fc2"]
    mi, mo, dw = p["mac_in"], p["mac_out"], p["axi_data_bits"]
    f = layout["formats"]
    ex = layout["regions"]["experts"]
    beats = {fld["name"]: fld["bytes"] // p["bus_bytes"] for fld in ex["fields"]}
    gl = k.gelu
    table = list(gl.values)
    hb = n.hidden.bits
    pairs = [
        ((table[i + 1] & ((1 << hb) - 1)) << hb) | (table[i] & ((1 << hb) - 1)) for i in range(len(table) - 1)
    ]
    qbytes = layout["regions"]["queues"]
    ctx = {
        "cfg_name": cfg.name,
        "config_hash": layout["config_hash"],
        "top": layout["top"],
        "NE": p["num_experts"],
        "TMAX": p["max_tokens"],
        "DIM": p["dim"],
        "HID": p["hidden"],
        "MI": mi,
        "MO": mo,
        "DW": dw,
        "BB": p["bus_bytes"],
        "BB_LOG2": int(math.log2(p["bus_bytes"])),
        "IT1": it1,
        "OT1": ot1,
        "IT2": it2,
        "OT2": ot2,
        "W1T": ot1 * it1,
        "W2T": ot2 * it2,
        "TPE": ot1 * it1 + ot2 * it2,
        "BPE": ot1 + ot2,
        "WB": n.weight.bits,
        "WC": f["weight"]["container_bits"],
        "XB": n.norm.bits,
        "XC": f["x"]["container_bits"],
        "HB": hb,
        "YB": n.act.bits,
        "YC": f["out"]["container_bits"],
        "BBITS": n.bias_bits,
        "BC": f["bias"]["container_bits"],
        "ACC": n.acc_bits,
        "AB": p["moe_acc_bits"],
        "IB": max(n.norm.bits, n.hidden.bits),
        "SH1": p["shift_fc1"],
        "SH2": p["shift_fc2"],
        "GF": PROB_FRAC,
        "HMIN": n.hidden.qmin,
        "HMAX": n.hidden.qmax,
        "YMIN": n.act.qmin,
        "YMAX": n.act.qmax,
        "G_LO": gl.lo,
        "G_HI": gl.hi,
        "G_SIG": gl.seg_shift,
        "G_SEGL": n.gelu_segments_log2,
        "G_PAIRS": pairs,
        "G_UB": n.gelu_segments_log2 + gl.seg_shift,
        "TILE_BITS": mo * mi * f["weight"]["container_bits"],
        "BW_BITS": mo * f["bias"]["container_bits"],
        "XW_BITS": mi * f["x"]["container_bits"],
        "OW_BITS": mo * f["out"]["container_bits"],
        "QE": qe,
        "QE_LOG2": int(math.log2(qe)),
        "QWORDS": qbytes["entries"]["stride_bytes"] // p["bus_bytes"],
        "CNT_BEATS": qbytes["entries"]["offset"] // p["bus_bytes"],
        "CNT_BYTES": qbytes["entries"]["offset"],
        "QSTRIDE": qbytes["entries"]["stride_bytes"],
        "EXP_STRIDE": ex["stride_bytes"],
        "W1_BEATS": beats["w1"],
        "B1_BEATS": beats["b1"],
        "W2_BEATS": beats["w2"],
        "B2_BEATS": beats["b2"],
        "EXP_BEATS": ex["bytes_per_expert"] // p["bus_bytes"],
        "MAXB": p["max_burst"],
        "MAXOUT": p["max_outstanding"],
        "REG": reg_off,
        "COUNTERS": [c for c, _ in COUNTERS],
        "RAW": 8,
    }
    g = min(mi, mo)
    ctx["HRING"] = p["hidden_ring"]
    ctx["HG"] = g  # hidden-buffer bank width (elements)
    ctx["HK"] = max(mi, mo) // g  # banks
    ctx["HWPS"] = p["hidden"] // max(mi, mo)  # words per ring slot in each bank
    ctx["MAXW"] = max(ctx["TILE_BITS"], ctx["BW_BITS"], ctx["XW_BITS"])
    ctx["BPT"] = ctx["TILE_BITS"] // dw
    ctx["BPBW"] = ctx["BW_BITS"] // dw
    ctx["BPXW"] = ctx["XW_BITS"] // dw
    ctx["BPOW"] = ctx["OW_BITS"] // dw
    ctx["X_ROW_BEATS"] = it1 * ctx["BPXW"]
    ctx["OUT_ROW_BEATS"] = ot2 * ctx["BPOW"]
    ctx["SUBW"] = clog2(max(ctx["BPT"], ctx["BPBW"], ctx["BPXW"], ctx["BPOW"])) + 1
    ctx["SATW"] = clog2(mo + 1)
    ctx["PB"] = ctx["WB"] + ctx["IB"]
    ctx["SB"] = ctx["PB"] + clog2(mi) + 1
    return ctx


def render_moe_unit(cfg: DesignConfig, layout: dict[str, Any], gelu_mem: str = GELU_MEM) -> str:
    """The parameter package ``moe_unit_pkg`` of this config and layout (SystemVerilog text); ``gelu_mem`` is the
    path the GELU lanes load their table from (``$readmemh``)."""
    ctx = _template_context(cfg, layout)
    ctx["GELU_MEM"] = gelu_mem
    return template_env(TEMPLATE_DIR).get_template(PACKAGE_TEMPLATE).render(**ctx)


def render_gelu_mem(cfg: DesignConfig, layout: dict[str, Any]) -> str:
    """The GELU table as a ``$readmemh`` file: line i holds the pair {G[i+1], G[i]} (hidden-format bits each)."""
    hb = cfg.numerics.hidden.bits
    return "".join(f"{pair:0{-(-2 * hb // 4)}x}\n" for pair in _template_context(cfg, layout)["G_PAIRS"])


def default_out_dir(cfg: DesignConfig) -> Path:
    return build_dir(cfg.name, "rtl")


def _write_if_changed(path: Path, body: str) -> None:
    # rewrite only on change so that make and simulator caches see stable timestamps
    if not path.exists() or path.read_text() != body:
        path.write_text(body)


def generate_moe_unit(
    cfg: DesignConfig, out_dir: str | Path | None = None, knobs: RtlKnobs = DEFAULT_KNOBS
) -> GeneratedRtl:
    """Write the unit for ``cfg`` into ``out_dir`` (default ``build/<name>/rtl``): the parameter package, the
    GELU table, copies of the hand-written modules and the layout JSON; returns the files."""
    out = Path(out_dir) if out_dir is not None else default_out_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    layout = moe_layout(cfg, knobs)
    mem_path = (out / GELU_MEM).resolve()
    bodies = {
        f"{PACKAGE}.sv": render_moe_unit(cfg, layout, mem_path.as_posix()),
        GELU_MEM: render_gelu_mem(cfg, layout),
        **{name: (RTL_DIR / name).read_text() for name in MODULES},
        f"{TOP}_layout.json": json.dumps(layout, indent=1),
    }
    digest = hashlib.sha256()
    for name, body in bodies.items():
        _write_if_changed(out / name, body)
        digest.update(name.encode() + b"\0" + body.encode() + b"\0")
    sources = tuple(out / name for name in (f"{PACKAGE}.sv", *MODULES))
    return GeneratedRtl(out_dir=out, sources=sources, layout_path=out / f"{TOP}_layout.json", layout=layout,
                        top=TOP, digest=digest.hexdigest(), gelu_mem=mem_path)


__all__ = [
    "DEFAULT_KNOBS",
    "TOP",
    "GeneratedRtl",
    "RtlError",
    "RtlKnobs",
    "default_out_dir",
    "generate_moe_unit",
    "moe_layout",
    "pack_experts",
    "pack_queues",
    "pack_token_rows",
    "register_map",
    "render_gelu_mem",
    "render_moe_unit",
    "unpack_out",
    "used_expert_weight_bytes",
]
