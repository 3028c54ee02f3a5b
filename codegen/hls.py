"""Config → a self-contained Vitis HLS project for the M³ViT accelerator (C++, Tcl, testbench, maps).

``generate_project(cfg, out_dir)`` checks that the kernels support ``cfg`` (:func:`hls_problems`),
then writes::

    out_dir/
      src/m3vit_config.h     constexpr sizes, formats, shifts, typedefs, the emitted tables, offsets
      src/m3vit_top.h/.cpp   the top function (interface pragmas from TOP_ARGS)
      src/m3vit_*.h          the kernel library, copied from hls/
      tb/tb_m3vit.cpp        C-simulation testbench: packed weights + images + golden taps from data/
      tb/m3vit_csim_api.cpp  ctypes entry points used by m3vit.sim.csim
      tb/m3vit_csim_*.h      C-simulation-only bounded FIFOs / DATAFLOW threads and the cycle-ledger recorder
      run_hls.tcl            csim → csynth → cosim → export_design -format ip_catalog
      hls_config.cfg         the same for ``v++ -c --mode hls`` / ``vitis-run --config``
      Makefile               ``make csim`` (g++) and ``make hls`` (Vitis)
      register_map.json      s_axilite map (from TOP_ARGS, the same description that writes the C++)
      weight_layout.json     weight, scratch and I/O layouts (m3vit.codegen.layout)
      README.md
      data/                  testbench inputs and golden taps (created empty; written by m3vit.sim.csim)

Every path in the project is relative to ``out_dir`` (the kernel headers are copied, not referenced), so
the folder can be moved or copied anywhere. Nothing is written when the config is rejected. The generator
knows no simulator and no board driver; ``m3vit.sim.csim`` compiles what it writes.
"""

from __future__ import annotations

import importlib.resources
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from m3vit import package_dir
from m3vit.codegen import axilite
from m3vit.codegen.axilite import TopArg
from m3vit.codegen.bits import ceil_div, clog2, container_bits
from m3vit.codegen.config import ConfigError, DesignConfig
from m3vit.codegen.guards import MAX_IMAGES, STATUS_FLAGS
from m3vit.codegen.layout import (
    SAT_CLASSES,
    layer_taps,
    scratch_layout,
    weight_layout,
    write_layout_json,
)
from m3vit.codegen.numerics import PROB_FRAC, SCALE_FRAC, constants
from m3vit.codegen.perf import ARCH, big_memory, buffers, evaluate, maxi_settings, place_buffers
from m3vit.codegen.perf.arch import (
    PROB_BITS,
    array_packed,
    datapath_bits,
    lanes,
    mac_operand_bits,
    op_rate_div,
)
from m3vit.codegen.perf.engine import engine_geometry, kv_or_acc_geometry
from m3vit.codegen.render import template_env

HLS_DIR = package_dir("m3vit.hls")
TEMPLATE_DIR = Path(__file__).resolve().parent / "templates" / "hls"
KERNEL_HEADERS = (
    "m3vit_types.h",
    "m3vit_ledger.h",
    "m3vit_blocks.h",
    "m3vit_dataflow.h",
    "m3vit_prims.h",
    "m3vit_burst.h",
    "m3vit_dsp_pack.h",
    "m3vit_mac.h",
    "m3vit_layernorm.h",
    "m3vit_kv_or_acc.h",
    "m3vit_linear.h",
    "m3vit_attention.h",
    "m3vit_moe.h",
    "m3vit_backbone.h",
)
CSIM_API = "m3vit_csim_api.cpp"
CSIM_HEADERS = ("m3vit_csim_dataflow.h", "m3vit_csim_ledger.h")
"""C-simulation-only headers (bounded FIFOs + threaded DATAFLOW, the ledger recorder), copied into tb/ so they
are never part of the synthesised sources; src/m3vit_dataflow.h and src/m3vit_ledger.h include them when the
C-sim build defines CSIM_DEFINES / LEDGER_DEFINE."""
CSIM_DEFINES = ("M3VIT_CSIM_FIFO",)
"""Macros of every g++ C-simulation build (m3vit.sim.csim, the project Makefile): bounded, blocking FIFOs."""
LEDGER_DEFINE = "M3VIT_LEDGER"
"""The macro of a cycle-ledger C-simulation build (``build_csim(..., ledger=True)``, ``make csim LEDGER=1``):
every labelled loop records its trip counts (a counter per iteration, so it is a build of its own)."""
TOP_NAME = "m3vit_top"
MAX_NATIVE_BITS = 63
"""Every intermediate kept in a 64-bit register must fit 63 bits (the golden model's int64 as well)."""
COSIM_IMAGES = 1
"""Images per call the m_axi ``depth`` pragmas are sized for (the testbench runs one image per call)."""
COSIM_CYCLE_BUDGET = 1_000_000
"""Kernel cycles run_hls.tcl's C/RTL co-simulation may simulate per case (RTL simulation of a design this size
runs on the order of 10³ cycles per second): a larger design co-simulates only its first layers."""


def cosim_plan(cfg: DesignConfig) -> tuple[str, str]:
    """(testbench arguments, why) for run_hls.tcl's co-simulation: the whole backbone in one call when its
    modeled cycles fit :data:`COSIM_CYCLE_BUDGET`, else layers 0 … L (``--through L``) for the largest L whose
    cycles fit (at least the embedding)."""
    rep = evaluate(cfg)
    layers = list(rep.by_layer().values())
    total, through = 0, 0
    for i, parts in enumerate(layers):
        total += sum(parts.values())
        if total > COSIM_CYCLE_BUDGET:
            break
        through = i
    else:
        return "--no-layers", f"the whole backbone in one call per case (≈ {total:,} modeled cycles)"
    return (f"--through {through}", f"layers 0 … {through} only: the whole backbone (≈ {rep.cycles:,} "
            f"modeled cycles) would not finish in RTL simulation; m3vit csim checks every layer in C")


def ap_types_dir() -> Path:
    """The Xilinx ap_types headers (ap_int.h, …) inside the installed hls4ml package (never copied or committed)."""
    try:
        root = importlib.resources.files("hls4ml")
    except ModuleNotFoundError:
        raise FileNotFoundError(
            "the ap_types headers come from the hls4ml package, which is not installed: pip install hls4ml"
        ) from None
    path = Path(str(root)) / "templates" / "vivado" / "ap_types"
    if not (path / "ap_int.h").exists():
        raise FileNotFoundError(f"hls4ml is installed but {path}/ap_int.h is missing")
    return path


# ------------------------------------------------------------------------------------ top signature
TOP_ARGS: tuple[TopArg, ...] = (
    TopArg("num_images", "scalar", "unsigned", 32, "images (or token matrices) processed by one start"),
    TopArg("task", "scalar", "unsigned", 32, "task id: selects each MoE layer's router; nothing is reloaded"),
    TopArg(
        "first_layer",
        "scalar",
        "unsigned",
        32,
        "first layer to run (0 = patch embedding, i + 1 = block i); input holds tokens when > 0",
    ),
    TopArg(
        "last_layer", "scalar", "unsigned", 32, "last layer to run, inclusive (depth = the whole backbone)"
    ),
    TopArg(
        "weights",
        "pointer",
        "const m3vit::cfg::word_t*",
        64,
        "packed weights (weight_layout.json)",
        bundle="gmem_w",
        access="r",
    ),
    TopArg(
        "scratch",
        "pointer",
        "m3vit::cfg::word_t*",
        64,
        "activation scratch (weight_layout.json: scratch)",
        bundle="gmem_s",
        access="rw",
    ),
    TopArg(
        "input",
        "pointer",
        "const m3vit::cfg::word_t*",
        64,
        "num_images images (first_layer = 0) or token matrices (act), weight_layout.json: io",
        bundle="gmem_i",
        access="r",
    ),
    TopArg(
        "output",
        "pointer",
        "m3vit::cfg::word_t*",
        64,
        "num_images token matrices (act) after last_layer",
        bundle="gmem_o",
        access="w",
    ),
    TopArg(
        "status",
        "scalar",
        "unsigned&",
        32,
        "0: the call ran; else the call was refused, touching no memory: a mask of STATUS_* bits",
        output=True,
        flags=tuple((f.name, f.bit, f.doc) for f in STATUS_FLAGS),
    ),
)

def register_map(args: tuple[TopArg, ...] | list[TopArg] = TOP_ARGS, top: str = TOP_NAME) -> dict[str, Any]:
    """The s_axilite register map of the top function (:func:`m3vit.codegen.axilite.register_map`)."""
    return axilite.register_map(args, top)


# ------------------------------------------------------------------------------------ derived widths




@dataclass(frozen=True)
class Derived:
    """Everything the templates need that is computed from a config (sizes, widths, shifts, memory)."""

    consts: dict[str, tuple[int, str]]  # name → (value, comment)
    types: dict[str, tuple[int, str]]  # typedef name → (bits, comment)
    wide: dict[str, int]  # products kept in 64-bit registers → bits needed
    onchip_bits: dict[str, int]  # on-chip buffer → bits


def derive(cfg: DesignConfig) -> Derived:
    """Sizes, tile counts, shifts and the width of every typed intermediate of the kernels."""
    model, fmt, hardware = cfg.model, cfg.numerics, cfg.hardware
    numeric_consts = constants(cfg)
    mac_out, mac_in = hardware.mac_out, hardware.mac_in
    token_tile, key_block = hardware.token_tile, hardware.attn_key_block
    dim, tokens, head_dim, experts, expert_hidden, mlp_hidden, patch_dim = (
        model.dim,
        model.num_tokens,
        model.head_dim,
        model.num_experts,
        model.expert_hidden,
        model.mlp_hidden,
        model.patch_dim,
    )
    exp_frac, hat_frac = fmt.exp_frac_bits, fmt.ln_hat_frac
    weight_bits = fmt.weight.bits
    gelu_table = numeric_consts.gelu

    def in_tiles(x: int) -> int:
        return ceil_div(x, mac_in)

    def out_tiles(x: int) -> int:
        return ceil_div(x, mac_out)

    def requant_shift(src: str, dst: str) -> int:
        return getattr(fmt, src).frac + fmt.weight.frac - getattr(fmt, dst).frac

    consts: dict[str, tuple[int, str]] = {
        # model
        "DIM": (dim, "embedding dimension"),
        "DEPTH": (model.depth, "transformer blocks"),
        "LAYERS": (model.depth + 1, "layers: 0 = patch embedding, i + 1 = block i"),
        "HEADS": (model.num_heads, "attention heads"),
        "HEAD_DIM": (head_dim, "dim / heads"),
        "TOKENS": (tokens, "patches + cls"),
        "PATCHES": (model.num_patches, "patches"),
        "GRID_H": (model.grid[0], "patch rows"),
        "GRID_W": (model.grid[1], "patch columns"),
        "PATCH": (model.patch_size, "patch side, pixels"),
        "CHANNELS": (model.in_channels, "image channels"),
        "IMG_H": (model.image_size[0], "image height"),
        "IMG_W": (model.image_size[1], "image width"),
        "PATCH_DIM": (patch_dim, "C·P² (patch vector length)"),
        "MLP_HIDDEN": (mlp_hidden, "dense MLP hidden width"),
        "EXPERTS": (experts, "experts per MoE layer"),
        "TOP_K": (model.top_k, "experts per token"),
        "EXPERT_HIDDEN": (expert_hidden, "expert FFN hidden width"),
        "TASKS": (len(model.tasks), "tasks (routers per MoE layer)"),
        "MAX_IMAGES": (MAX_IMAGES, "images one call accepts (m3vit.codegen.guards)"),
        # hardware
        "MAC_IN": (mac_in, "MAC engine input lanes"),
        "MAC_OUT": (mac_out, "MAC engine output lanes"),
        "TOKEN_TILE": (token_tile, "tokens per on-chip tile"),
        "KEY_BLOCK": (key_block, "keys per streaming-softmax block"),
        "AXI_BITS": (hardware.axi_data_bits, "m_axi data width"),
        # tiles and padded sizes
        "IT_DIM": (in_tiles(dim), "in-tiles of dim"),
        "IT_EH": (in_tiles(expert_hidden), "in-tiles of an expert hidden layer"),
        "EH_PO": (out_tiles(expert_hidden) * mac_out, "expert hidden padded to MAC_OUT"),
        "EW1_TILES": (out_tiles(expert_hidden) * in_tiles(dim), "tiles of an expert's fc1"),
        "EW2_TILES": (out_tiles(dim) * in_tiles(expert_hidden), "tiles of an expert's fc2"),
        # formats
        **{
            f"{short}_BITS": (getattr(fmt, c).bits, f"{c} format {getattr(fmt, c)}")
            for short, c in (
                ("IN", "input"),
                ("ACT", "act"),
                ("NORM", "norm"),
                ("QKV", "qkv"),
                ("HID", "hidden"),
                ("LOGIT", "logit"),
                ("W", "weight"),
                ("LNP", "ln_param"),
            )
        },
        "BIAS_BITS": (fmt.bias_bits, "biases (accumulator scale)"),
        "ACC_BITS_CFG": (fmt.acc_bits, "numerics.acc_bits"),
        # shifts (docs/numerics.md §5–§10)
        "SH_PATCH": (requant_shift("input", "act"), "patch embedding requantisation"),
        "SH_QKV": (requant_shift("norm", "qkv"), "qkv requantisation"),
        "SH_PROJ": (requant_shift("qkv", "act"), "proj requantisation"),
        "SH_FC1": (requant_shift("norm", "hidden"), "fc1 / expert fc1"),
        "SH_FC2": (requant_shift("hidden", "act"), "fc2 / expert fc2"),
        "SH_ROUTER": (requant_shift("norm", "logit"), "router logits"),
        "SH_LN": (hat_frac + fmt.ln_param.frac - fmt.norm.frac, "LayerNorm output"),
        "SH_SCORE": (2 * fmt.qkv.frac + SCALE_FRAC - exp_frac, "attention score → base-2 logit"),
        "SH_ROUTER_Z": (fmt.logit.frac + SCALE_FRAC - exp_frac, "router logit difference → base-2 exponent"),
        "FZ": (exp_frac, "exp2 fraction bits (log2 of the table size)"),
        "FH": (hat_frac, "LayerNorm x̂ fraction bits"),
        "PROB_FRAC": (PROB_FRAC, "probabilities, gates: Q.15"),
        # constants
        "C_ATTN": (numeric_consts.attn_scale, "round(log2(e)/sqrt(head_dim) · 2^15)"),
        "C_ROUTER": (numeric_consts.router_scale, "round(log2(e) · 2^15)"),
        "LN_EPS": (numeric_consts.ln_eps, "max(1, round(D²·eps·2^(2·act.frac)))"),
        "GELU_LO": (gelu_table.lo, "first GELU breakpoint (hidden lsbs)"),
        "GELU_HI": (gelu_table.hi, "end of the GELU table"),
        "GELU_SIGMA": (gelu_table.seg_shift, "log2 of the GELU segment width"),
        "GELU_N": (len(gelu_table.values), "GELU breakpoints"),
        "EXP2_N": (len(numeric_consts.exp2), "exp2 table entries"),
    }
    consts.update(_engine_consts(cfg))
    containers = {
        c: container_bits(getattr(fmt, c).bits)
        for c in ("input", "act", "norm", "qkv", "hidden", "logit", "weight", "ln_param")
    }
    consts.update(
        {
            "IN_CB": (containers["input"], "DDR container bits"),
            "ACT_CB": (containers["act"], ""),
            "NORM_CB": (containers["norm"], ""),
            "QKV_CB": (containers["qkv"], ""),
            "HID_CB": (containers["hidden"], ""),
            "LOGIT_CB": (containers["logit"], ""),
            "W_CB": (containers["weight"], ""),
            "LNP_CB": (containers["ln_param"], ""),
            "BIAS_CB": (container_bits(fmt.bias_bits), ""),
        }
    )

    # ------------------------------------------------------------------ typed intermediates (bits)
    input_bits, act_bits, norm_bits, qkv_bits, hidden_bits, logit_bits, lnp_bits = (
        fmt.input.bits,
        fmt.act.bits,
        fmt.norm.bits,
        fmt.qkv.bits,
        fmt.hidden.bits,
        fmt.logit.bits,
        fmt.ln_param.bits,
    )
    acc_need = max(
        [fmt.acc_bits]
        + [
            max(getattr(fmt, src).bits + weight_bits - 1 + clog2(length + 1), fmt.bias_bits) + 1
            for src, length in (
                ("input", patch_dim), ("norm", dim), ("qkv", dim), ("hidden", mlp_hidden), ("hidden", expert_hidden)
            )
        ]
    )
    dp = datapath_bits(cfg)
    xhat_bits = dp.ln_xhat
    ln_y = max(xhat_bits + lnp_bits, lnp_bits + hat_frac + 1) + 1
    ln_y = max(ln_y, consts["SH_LN"][0] + 2)
    score_acc = 2 * qkv_bits + clog2(head_dim)
    attn_l = PROB_FRAC + clog2(tokens + 1) + 2
    ctx_acc = dp.ctx_acc
    types = {
        "in_t": (input_bits, "input pixels"),
        "act_t": (act_bits, "residual stream"),
        "norm_t": (norm_bits, "LayerNorm outputs"),
        "qkv_t": (qkv_bits, "q, k, v, context"),
        "hid_t": (hidden_bits, "hidden layers"),
        "logit_t": (logit_bits, "router logits"),
        "wgt_t": (weight_bits, "matmul weights"),
        "lnp_t": (lnp_bits, "LayerNorm γ, β"),
        "bias_t": (fmt.bias_bits, "biases"),
        "acc_t": (acc_need, "matmul accumulator (exact)"),
        "res_t": (act_bits + 1, "sum of two act values before saturation"),
        "prob_t": (PROB_BITS, "Q.15 probabilities / gates in [0, 2^15 + 1]"),
        "z_t": (32, "base-2 attention logits (saturated to 32 bits)"),
        "psum_in_t": (input_bits + weight_bits + clog2(mac_in), "patch MAC adder tree"),
        "psum_norm_t": (norm_bits + weight_bits + clog2(mac_in), "MAC adder tree on norm inputs"),
        "psum_qkv_t": (qkv_bits + weight_bits + clog2(mac_in), "MAC adder tree on qkv inputs"),
        "psum_hid_t": (hidden_bits + weight_bits + clog2(mac_in), "MAC adder tree on hidden inputs"),
        "qk_prod_t": (2 * qkv_bits, "q·k product"),
        "score_acc_t": (score_acc, "q·k over head_dim"),
        # p ∈ [0, 2^15] (exp2 output): |p·v| ≤ 2^15·2^(qkv.bits-1) needs qkv.bits + 16 bits
        "pv_prod_t": (16 + qkv_bits, "p·v product"),
        "pv_acc_t": (16 + qkv_bits + clog2(key_block), "p·v over one key block"),
        "attn_l_t": (attn_l, "softmax running sum l"),
        "ctx_acc_t": (ctx_acc, "softmax running accumulator"),
        "gelu_t": (hidden_bits + gelu_table.seg_shift + 3, "GELU interpolation"),
        "ln_s1_t": (dp.ln_s1, "LayerNorm S1 = Σ x"),
        "ln_s2_t": (dp.ln_s2, "LayerNorm S2 = Σ x²"),
        "ln_xc_t": (dp.ln_xc, "LayerNorm D·x − S1 (|·| < D·2^act_bits)"),
        "ln_xr_t": (act_bits + clog2(dim) + 1 + 19, "LayerNorm (D·x − S1)·R"),
        "ln_xhat_t": (xhat_bits, "LayerNorm x̂ (|x̂| < 2·sqrt(D)·2^Fh)"),
        "ln_y_t": (ln_y, "LayerNorm x̂·γ + β·2^Fh"),
        "moe_prod_t": (act_bits + 18, "expert output · gate"),
        "moeacc_t": (64, "per-token MoE accumulator"),
        "moe_sum_t": (act_bits + 18 + clog2(model.top_k), "on-chip MoE accumulator Σ y·g (exact)"),
        "tok_t": (dp.tok, "token index"),
        "hits_t": (dp.hits, "experts added to a token's MoE accumulator"),
        **_engine_types(cfg),
        "expert_t": (dp.expert, "expert index"),
    }
    wide = {
        "LayerNorm variance V = D·S2 − S1² + eps": 2 * (act_bits + clog2(dim)) + 1,
        "LayerNorm (D·x − S1)·R": types["ln_xr_t"][0],
        "LayerNorm x̂·γ + β·2^Fh": ln_y,
        "attention score · C_attn": score_acc + 17,
        "attention l · α": attn_l + 17,
        "attention acc · R": ctx_acc + 18,
        "router (logit − max) · C_router": logit_bits + 1 + 17,
        "MoE accumulator Σ y·g": act_bits + 18 + clog2(model.top_k),
        "matmul accumulator": acc_need,
    }
    onchip = {b.name: b.bits for b in buffers(cfg)}
    return Derived(consts=consts, types=types, wide=wide, onchip_bits=onchip)


def _engine_consts(cfg: DesignConfig) -> dict[str, tuple[int, str]]:
    """Sizes of the matmul engine (hls/m3vit_linear.h): weight slots, tiles, job counts, packing per op."""
    m, hw, fmt = cfg.model, cfg.hardware, cfg.numerics
    mi, mo, tt, r = hw.mac_in, hw.mac_out, hw.token_tile, ARCH.weight_reuse
    eh = m.expert_hidden

    def ot(x: int) -> int:
        return ceil_div(x, mo)

    has_moe = bool(m.moe_block_set)
    g = engine_geometry(cfg)
    slot_tiles, rows_per, tile_rows = g.slot_tiles, g.rows_per_word, g.tile_rows
    tile_words = mo * mi * container_bits(fmt.weight.bits) // hw.axi_data_bits
    return {
        "ARRAY_PACKED": (int(array_packed(cfg)), "the MAC array packs two MACs per DSP48E2"),
        **{f"PK_{op.upper()}": (int(array_packed(cfg) and op_rate_div(cfg, key) == 1), f"{key} packs")
           for op, key in (("patch", "patch_embed"), ("qkv", "qkv"), ("proj", "proj"), ("fc1", "mlp_fc1"),
                           ("fc2", "mlp_fc2"), ("router", "router"), ("qk", "attn_qk"), ("pv", "attn_pv"))},
        "LN_LANES": (lanes(cfg).ln, "LayerNorm elements per cycle"),
        "WEIGHT_REUSE": (r, "vectors a stationary weight tile serves at least"),
        "SLOT_TILES": (slot_tiles, "weight tiles per slot (the largest weight group)"),
        "SLOT_ROW_TILE_ROWS": (rows_per, "tile rows per slot word"),
        "SLOT_TILE_ROWS": (tile_rows, "slot words per tile = cycles to load a stationary tile"),
        "SLOT_ROWS": (slot_tiles * tile_rows, "slot words"),
        "SLOT_BIAS": (g.slot_bias, "biases per slot"),
        "SLOT_WORDS": (slot_tiles * tile_words, "AXI words of a full slot"),
        "SLOT_BIAS_WORDS": (ceil_div(g.slot_bias * fmt.bias_bits, hw.axi_data_bits), "AXI words of a slot's biases"),
        "OT_EH": (ot(eh), "out-tiles of an expert's hidden layer"),
        "A_COLS": (g.a_cols, "columns of an activation tile (the widest matmul input)"),
        "Y_COLS": (g.y_cols, "columns of an output tile (the widest job output)"),
        "HID_COLS": (g.hid_cols, "columns of an expert's hidden tile"),
        "MAX_JOBS": (max(list(g.jobs.values()) + ([m.num_experts] if has_moe else [])), "jobs per stage"),
        "TOKEN_TILES": (ceil_div(m.num_tokens, tt), "token tiles of all tokens"),
        "MAC_LOOP_MAX": (g.max_tiles_job * max(tt, tile_rows) * 2, "longest MAC_LOOP"),
        "MAC_DEPTH": (ARCH.pipeline_depth, "MAC pipeline fill + drain"),
        "TOKENS_TT": (g.tokens_tt, "tokens padded to key chunks and tiles"),
        "KEY_BLOCKS": (ceil_div(m.num_tokens, hw.attn_key_block), "key blocks"),
        "QUERY_GROUPS": (ceil_div(m.num_tokens, mo), "query groups of MAC_OUT queries"),
        "HD_PASSES": (ceil_div(m.head_dim, mi), "q·k passes over a head's dims"),
        "EXP_LANES": (lanes(cfg).exp, "softmax exp lanes"),
        "OUT_LANES": (lanes(cfg).out, "MoE accumulator lanes"),
        "ATT_OUT_LANES": (lanes(cfg).acc, "attention context lanes (acc · R), a divisor of HEAD_DIM"),
        **{name: (value, what) for name, (value, what) in kv_or_acc_geometry(cfg).items()},
    }


def _engine_types(cfg: DesignConfig) -> dict[str, tuple[int, str]]:
    """Operand types of the shared MAC array."""
    hw = cfg.hardware
    w_bits, v_bits = mac_operand_bits(cfg)
    return {
        "mac_w_t": (w_bits, "stationary operand of the MAC array"),
        "mac_a_t": (v_bits, "streamed operand of the MAC array"),
        "mac_y_t": (v_bits, "requantised MAC array output"),
        "mac_ps_t": (w_bits + v_bits + clog2(hw.mac_in) + 1, "one exact MAC-array dot product"),
    }


# ------------------------------------------------------------------------------------ validation
def hls_problems(cfg: DesignConfig) -> list[str]:
    """Reasons the HLS kernels cannot implement ``cfg`` (empty when they can); each is one line."""
    hw, board = cfg.hardware, cfg.hardware.board_spec
    problems: list[str] = []
    der = derive(cfg)
    c = der.consts
    for name in ("SH_SCORE", "SH_ROUTER_Z"):
        if c[name][0] < 0:
            problems.append(
                f"numerics: the {c[name][1]} needs a left shift of {-c[name][0]} "
                f"(raise qkv/logit.frac or lower exp_frac_bits)"
            )
    for what, bits in der.wide.items():
        if bits > MAX_NATIVE_BITS:
            problems.append(
                f"numerics: {what} needs {bits} bits; the kernels keep it in a 64-bit register "
                f"(≤ {MAX_NATIVE_BITS}); narrow the formats"
            )
    acc = der.types["acc_t"][0]
    for name in ("SH_PATCH", "SH_QKV", "SH_PROJ", "SH_FC1", "SH_FC2", "SH_ROUTER"):
        if c[name][0] > acc - 2:
            problems.append(
                f"numerics: {c[name][1]} shifts by {c[name][0]} bits, more than the "
                f"{acc}-bit accumulator allows"
            )
    kpw = kv_or_acc_geometry(cfg)["KV_PER_WORD"][0]
    for what, v in (("dim", cfg.model.dim), ("head_dim", cfg.model.head_dim), ("mac_in", hw.mac_in),
                    ("mac_out", hw.mac_out), ("token_tile", hw.token_tile), ("attn_key_block", hw.attn_key_block)):
        if v % kpw:
            problems.append(f"hardware: {what} = {v} is not a multiple of {kpw}, the K/V values per word of the "
                            "on-chip K/V buffer (64 bits / the qkv container)")
    if der.types["moe_sum_t"][0] > 36:
        problems.append(f"numerics: the MoE accumulator needs {der.types['moe_sum_t'][0]} bits; the on-chip "
                        "buffer holds two of at most 36 bits per 72-bit word (narrow act)")
    macs = hw.mac_in * hw.mac_out
    per_dsp = 2 if cfg.numerics.weight.bits <= 8 else 1
    if macs > per_dsp * board.dsp:
        problems.append(
            f"hardware: mac_in·mac_out = {hw.mac_in}·{hw.mac_out} = {macs} MACs per cycle exceeds "
            f"{hw.board}'s {board.dsp} DSP48E2"
            + (f" ({per_dsp * board.dsp} with INT8 packing)" if per_dsp == 2 else "")
        )
    placed = place_buffers(buffers(cfg), uram_cap=0)
    for kind, need, have in (("BRAM36", placed.bram36, board.bram36), ("URAM", placed.uram, board.uram)):
        if need > have:
            big = max(der.onchip_bits, key=der.onchip_bits.get)
            problems.append(
                f"hardware: the kernels' on-chip buffers need {need} {kind} but {hw.board} has {have} "
                f"(largest: {big}, {der.onchip_bits[big] / 8 / 2**20:.2f} MiB); "
                "lower token_tile or the model size"
            )
    return problems


def check_supported(cfg: DesignConfig) -> None:
    """Raise :class:`ConfigError` (one line) when the kernels cannot implement ``cfg``."""
    problems = hls_problems(cfg)
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(f"{cfg.name}: cannot generate HLS: {problems[0]}{more}")


# ------------------------------------------------------------------------------------ rendering
def _env() -> jinja2.Environment:
    return template_env(TEMPLATE_DIR, hex=lambda v: f"0x{int(v):X}", table=_c_table)


def _c_table(values: list[int] | tuple[int, ...], per_line: int = 16, indent: str = "    ") -> str:
    rows = [", ".join(str(int(x)) for x in values[i : i + per_line]) for i in range(0, len(values), per_line)]
    return (",\n").join(indent + r for r in rows)


def _layout_context(cfg: DesignConfig) -> dict[str, Any]:
    m = cfg.model
    wl, sl = weight_layout(cfg), scratch_layout(cfg)
    wb = wl.word_bytes
    moe_blocks = sorted(m.moe_block_set)

    def w(name: str) -> int:
        return wl.words(name)

    blocks = []
    for i in range(m.depth):
        p = f"block{i}"
        moe = m.is_moe(i)
        blocks.append(
            {
                "index": i,
                "moe": moe,
                "norm1_g": w(f"{p}.norm1.gamma"),
                "norm1_b": w(f"{p}.norm1.beta"),
                "qkv_w": w(f"{p}.qkv.w"),
                "qkv_b": w(f"{p}.qkv.b"),
                "proj_w": w(f"{p}.proj.w"),
                "proj_b": w(f"{p}.proj.b"),
                "norm2_g": w(f"{p}.norm2.gamma"),
                "norm2_b": w(f"{p}.norm2.beta"),
                "fc1_w": 0 if moe else w(f"{p}.fc1.w"),
                "fc1_b": 0 if moe else w(f"{p}.fc1.b"),
                "fc2_w": 0 if moe else w(f"{p}.fc2.w"),
                "fc2_b": 0 if moe else w(f"{p}.fc2.b"),
                "router": w(f"{p}.router0.w") if moe else 0,
                "expert_map": w(f"{p}.expert_map") if moe else 0,
            }
        )
    rel = {
        "ROUTER_TASK_STRIDE": 0,
        "ROUTER_B_REL": 0,
        "EXPERT_B1_REL": 0,
        "EXPERT_W2_REL": 0,
        "EXPERT_B2_REL": 0,
    }
    if moe_blocks:
        strides = {(wl.router_task_stride(i), wl.expert_stride(i)) for i in moe_blocks}
        assert len(strides) == 1, "every MoE block has the same router and expert sizes"
        i = moe_blocks[0]
        p = f"block{i}"
        base_e = w(f"{p}.expert0.fc1.w")
        rel = {
            "ROUTER_TASK_STRIDE": wl.router_task_stride(i) // wb,
            "ROUTER_B_REL": w(f"{p}.router0.b") - w(f"{p}.router0.w"),
            "EXPERT_B1_REL": w(f"{p}.expert0.fc1.b") - base_e,
            "EXPERT_W2_REL": w(f"{p}.expert0.fc2.w") - base_e,
            "EXPERT_B2_REL": w(f"{p}.expert0.fc2.b") - base_e,
        }
    regions = [
        {
            "name": r.name.upper(),
            "offset": r.offset // wb,
            "stride": r.row_stride // wb,
            "rows": r.rows,
            "cols": r.cols,
            "cbits": r.container_bits,
        }
        for r in sl.regions
    ]
    strides = {
        "STR_ACT": sl.by_name["x"].row_stride // wb,
        "STR_NORM": sl.by_name["norm1"].row_stride // wb,
        "STR_QKV3": sl.by_name["qkv"].row_stride // wb,
        "STR_QKVD": sl.by_name["attn"].row_stride // wb,
        "STR_HID": sl.by_name["hidden"].row_stride // wb,
        "STR_LOGIT": sl.by_name["logits"].row_stride // wb,
        "STR_MOEACC": sl.by_name["moe_acc"].row_stride // wb,
        "STR_SAT": sl.by_name["sat"].row_stride // wb,
    }
    taps = []
    for layer in range(m.depth + 1):
        for tap in layer_taps(cfg, layer):
            r = sl.tap_region(tap)
            taps.append(
                {
                    "layer": layer,
                    "name": tap,
                    "offset": r.offset // wb,
                    "rows": r.rows,
                    "cols": r.cols,
                    "stride": r.row_stride // wb,
                    "cbits": r.container_bits,
                }
            )
    return {
        "blocks": blocks,
        "rel": rel,
        "regions": regions,
        "strides": strides,
        "taps": taps,
        "patch_w": w("patch.w"),
        "patch_b": w("patch.b"),
        "pos": w("pos"),
        "pos_stride": wl.by_name["pos"].stored_shape[1] * wl.by_name["pos"].container_bits // 8 // wb,
        "weight_words": wl.total_words,
        "weight_bytes": wl.total_bytes,
        "scratch_words": sl.total_bytes // wb,
        "scratch_bytes": sl.total_bytes,
        "image_words": sl.image_bytes // wb,
        "token_words": sl.token_bytes // wb,
        "word_bytes": wb,
    }


def project_context(cfg: DesignConfig) -> dict[str, Any]:
    """The jinja2 context of every template (exposed for tests and other generators).

    It holds no path: a generated project refers to its own files relatively, so it can be moved.
    """
    der = derive(cfg)
    k = constants(cfg)
    lay = _layout_context(cfg)
    hw = cfg.hardware
    period = 1000.0 / hw.clock_mhz
    args = []
    for a in TOP_ARGS:
        if a.kind == "pointer":
            depth = {
                "weights": lay["weight_words"],
                "scratch": lay["scratch_words"],
                "input": max(lay["image_words"], lay["token_words"]) * COSIM_IMAGES,
                "output": lay["token_words"] * COSIM_IMAGES,
            }[a.name]
        else:
            depth = 0
        args.append({**a.__dict__, "depth": depth})
    onchip = {name: bits / 8 / 1024 for name, bits in der.onchip_bits.items()}
    cosim_argv, cosim_why = cosim_plan(cfg)
    return {
        "cfg": cfg,
        "name": cfg.name,
        "top": TOP_NAME,
        "config_hash": cfg.config_hash(),
        "consts": der.consts,
        "types": der.types,
        "args": args,
        "exp2_table": list(k.exp2),
        "gelu_table": list(k.gelu.values),
        "sat_classes": list(SAT_CLASSES),
        "layout": lay,
        "part": hw.board_spec.part,
        "board": hw.board,
        "clock_mhz": hw.clock_mhz,
        "period_ns": f"{period:.3f}",
        "kernel_headers": list(KERNEL_HEADERS),
        "onchip_kib": onchip,
        "big_memory": big_memory(cfg),
        "cosim_argv": cosim_argv,
        "cosim_why": cosim_why,
        "onchip_total_mib": sum(der.onchip_bits.values()) / 8 / 2**20,
        "register_map": register_map(),
        "status_flags": list(STATUS_FLAGS),
        "cosim_images": COSIM_IMAGES,
        "maxi_settings": " ".join(f"{k} = {v}" for k, v in maxi_settings().items()),
        "csim_defines": list(CSIM_DEFINES),
        "ledger_define": LEDGER_DEFINE,
    }


OUTPUTS = {
    "src/m3vit_config.h": "m3vit_config.h.j2",
    "src/m3vit_top.h": "m3vit_top.h.j2",
    "src/m3vit_top.cpp": "m3vit_top.cpp.j2",
    "tb/tb_m3vit.cpp": "tb_m3vit.cpp.j2",
    "run_hls.tcl": "run_hls.tcl.j2",
    "hls_config.cfg": "hls_config.cfg.j2",
    "Makefile": "Makefile.j2",
    "README.md": "README.md.j2",
}


def render_project(cfg: DesignConfig) -> dict[str, str]:
    """Every generated text file of the project: relative path → content (nothing written)."""
    env = _env()
    ctx = project_context(cfg)
    files = {path: env.get_template(tpl).render(**ctx) for path, tpl in OUTPUTS.items()}
    files["register_map.json"] = json.dumps(ctx["register_map"], indent=1) + "\n"
    return files


def generate_project(cfg: DesignConfig, out_dir: str | Path) -> Path:
    """Write the Vitis HLS project of ``cfg`` into ``out_dir`` and return it.

    The config is validated first (:func:`check_supported`): a rejected config raises ConfigError and
    writes nothing. Existing generated files are overwritten; ``data/`` (testbench inputs, a testbench
    file of hls_config.cfg) is created empty or kept. The project is self-contained and relocatable: the
    kernel headers are copied into ``src/`` and no generated file holds an absolute path.
    """
    check_supported(cfg)
    out = Path(out_dir)
    files = render_project(cfg)  # render everything before touching the disk
    for rel, text in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:  # keep mtimes for make and caches
            path.write_text(text)
    for header in KERNEL_HEADERS:
        _copy_if_changed(HLS_DIR / header, out / "src" / header)
    for name in (CSIM_API, *CSIM_HEADERS):
        _copy_if_changed(HLS_DIR / name, out / "tb" / name)
    (out / "data").mkdir(exist_ok=True)
    write_layout_json(cfg, out / "weight_layout.json")
    return out


def _copy_if_changed(src: Path, dst: Path) -> None:
    if not dst.exists() or dst.read_bytes() != src.read_bytes():
        shutil.copyfile(src, dst)
