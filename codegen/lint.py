"""Static check of a generated Vitis HLS project with a real C++ parser (libclang), no Vitis needed.

``lint_project(cfg, project)`` parses ``src/m3vit_top.cpp`` of a project written by
:func:`m3vit.codegen.project.generate` as Vitis HLS would see it (``__SYNTHESIS__`` defined, the kernel
headers and the config header of the project), walks every function reachable from the top function —
template instantiations included, with their concrete types — and checks:

* ``burst``: every access through an m_axi pointer sits in a pipelined loop, is unconditional there and
  unit-stride in the loop's induction variable (the shape Vitis turns into a burst), unless the line (or
  the one above) carries ``// hls-lint: waive burst: <reason>``; waivers are reported with their reason;
* ``tripcount``: every loop whose bound is not a compile-time constant has ``LOOP_TRIPCOUNT``;
* ``ii``: every ``PIPELINE`` names its ``II``;
* ``maxi``: each m_axi ``INTERFACE`` pragma sets ``latency``, ``num_read_outstanding`` /
  ``num_write_outstanding`` and ``max_read_burst_length`` / ``max_write_burst_length`` (as its direction
  needs) and the bundles reach the HP ports the project's Vivado script connects
  (:func:`m3vit.codegen.vivado.assign_hp_ports`);
* ``datapath``: no ``float`` / ``double``, ``hls_math``, recursion, ``new`` / ``malloc``, or ap_int wider
  than 4096 bits;
* ``fit``: the resource inventory — every on-chip array (statics, locals of at least
  :data:`INVENTORY_MIN_BITS`, tables; an ``hls::stream_of_blocks<block, depth>`` is ``depth`` arrays of its
  block type, its C-simulation model's members are never counted) with its ``ARRAY_PARTITION`` /
  ``ARRAY_RESHAPE`` / ``BIND_STORAGE`` pragmas → banks × width × depth → BRAM36 / URAM / LUTRAM by
  :func:`m3vit.codegen.perf.place_buffers` (the rule of ``perf.resources``), and every variable multiplier
  (distinct instantiations × unrolled lanes, after ``ALLOCATION`` limits) → DSP48E2 by
  :func:`m3vit.codegen.perf.macs_per_dsp` — against 80 % of the board, one finding per resource over it;
* ``perf``: the inventory equals ``perf.resources`` (DSP, BRAM36, URAM) for the same config.

What it cannot know (timing, the II Vitis reaches, its real resource counts) is in docs/hls.md. The lint
reads the project and never writes into it except ``lint.json`` (by :func:`write_report`).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from m3vit import build_dir
from m3vit.codegen.bits import ceil_div
from m3vit.codegen.config import ConfigError, DesignConfig, load_config
from m3vit.codegen.hls import TOP_NAME, ap_types_dir
from m3vit.codegen.perf import ARCH, Buffer, buffers, dsps, maxi_settings, place_buffers, resources
from m3vit.codegen.project import generate
from m3vit.codegen.vivado import assign_hp_ports, render_bitstream_tcl

CHECKS = ("burst", "tripcount", "ii", "maxi", "datapath", "fit", "perf")
"""Every check of the lint, in report order."""
INVENTORY_MIN_BITS = 1024
"""Local arrays below this size are registers or a few LUTs, not memories (statics and tables always count)."""
MAX_AP_BITS = 4096
WAIVER = "hls-lint:"
"""A waiver comment: ``// hls-lint: waive <check>: <reason>`` on the line or the line above."""
FIT_RESOURCES = ("dsp", "bram36", "uram")


class LintError(RuntimeError):
    """The folder cannot be linted (not a generated project, missing config header, unparsable C++)."""


# ------------------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class Finding:
    """One problem: ``check`` (one of CHECKS), where (file:line, function) and what."""

    check: str
    where: str
    message: str
    waiver: str | None = None  # the reason of a waiver comment: the finding is reported but does not fail

    def line(self) -> str:
        tail = f" [waived: {self.waiver}]" if self.waiver else ""
        return f"{self.check}: {self.where}: {self.message}{tail}"


@dataclass(frozen=True)
class ArrayUse:
    """An on-chip array of the inventory: ``banks`` memories of ``width`` bits × ``depth`` words."""

    name: str  # function::variable
    elem_bits: int
    dims: tuple[int, ...]
    banks: int
    width: int
    depth: int
    kind: str  # bram / uram / lutram (where place_buffers put it)
    bound: str | None  # BIND_STORAGE impl, if any
    bram36: int
    uram: int
    lutram: int

    @property
    def bits(self) -> int:
        return self.banks * self.width * self.depth


@dataclass(frozen=True)
class MulUse:
    """Variable multipliers of one function instantiation: ``lanes`` products of a × b bits."""

    function: str
    where: str
    a_bits: int
    b_bits: int
    lanes: int
    dsp: int


@dataclass
class LintReport:
    name: str
    project: str
    findings: list[Finding]
    arrays: list[ArrayUse]
    multipliers: list[MulUse]
    totals: dict[str, int]  # dsp, bram36, uram, lutram (LUTs)
    perf: dict[str, int]  # the same from perf.resources
    board: dict[str, int]
    functions: int = 0
    loops: int = 0
    maxi_accesses: int = 0
    seconds: float = 0.0
    walked: tuple[str, ...] = ()  # the kernel functions the walk reached (names, templates included)

    def failures(self, check: str | None = None) -> list[Finding]:
        """Unwaived findings (of one check, or all)."""
        return [f for f in self.findings if f.waiver is None and (check is None or f.check == check)]

    def waived(self) -> list[Finding]:
        return [f for f in self.findings if f.waiver is not None]

    @property
    def ok(self) -> bool:
        return not self.failures()

    def to_json(self) -> dict:
        return {
            "design": self.name, "project": self.project, "ok": self.ok, "seconds": round(self.seconds, 2),
            "checks": {c: len(self.failures(c)) for c in CHECKS},
            "totals": self.totals, "perf_model": self.perf, "board": self.board,
            "utilisation": {k: self.totals[k] / self.board[k] if self.board[k] else None for k in FIT_RESOURCES},
            "findings": [asdict(f) for f in self.findings],
            "arrays": [{**asdict(a), "bits": a.bits} for a in self.arrays],
            "multipliers": [asdict(m) for m in self.multipliers],
            "walked": {"functions": self.functions, "loops": self.loops, "maxi_accesses": self.maxi_accesses},
        }

    def table(self) -> str:
        """The terminal summary: resources vs model and board, the biggest arrays, checks and findings."""
        out = [f"HLS lint of {self.name} ({self.project}): {self.functions} function instances, {self.loops} loops, "
               f"{self.maxi_accesses} m_axi accesses, {self.seconds:.1f} s",
               "", f"{'resource':<10}{'lint':>10}{'perf model':>12}{'board':>10}{'lint/board':>12}",]
        for k in (*FIT_RESOURCES, "lutram"):
            board = self.board.get(k, 0)
            util = f"{100 * self.totals[k] / board:.0f} %" if board else "-"
            out.append(f"{k:<10}{self.totals[k]:>10,}{self.perf.get(k, 0):>12,}{board:>10,}{util:>12}")
        out += ["", "largest on-chip arrays (banks x width x depth -> storage):"]
        for a in sorted(self.arrays, key=lambda a: -(a.bram36 + 8 * a.uram))[:8]:
            out.append(f"  {a.name:<44}{a.banks:>5} x {a.width:>5} x {a.depth:>6}  {a.kind:<6}"
                       f"{a.bram36:>6} BRAM36{a.uram:>5} URAM")
        out += ["", "DSP48E2 by function instance:"]
        by_fn: dict[str, int] = {}
        for m in self.multipliers:
            by_fn[m.function] = by_fn.get(m.function, 0) + m.dsp
        for fn, n in sorted(by_fn.items(), key=lambda kv: -kv[1])[:10]:
            out.append(f"  {fn:<70}{n:>7,}")
        out += ["", "checks: " + ", ".join(f"{c} {'ok' if not self.failures(c) else f'{len(self.failures(c))} FAIL'}"
                                          for c in CHECKS)]
        out += [f"  {f.line()}" for f in self.findings]
        out.append(f"lint {'passed' if self.ok else 'FAILED'}: {len(self.failures())} findings, "
                   f"{len(self.waived())} waived")
        return "\n".join(out)


# ------------------------------------------------------------------------------------------ parsing
def _clang():
    try:
        import clang.cindex as ci
    except ImportError:
        raise LintError("the HLS lint needs libclang: pip install libclang") from None
    lib = ci.conf.lib
    if not getattr(lib, "_m3vit_eval", False):
        lib.clang_Cursor_Evaluate.argtypes = [ci.Cursor]
        lib.clang_Cursor_Evaluate.restype = ctypes.c_void_p
        lib.clang_EvalResult_getKind.argtypes = [ctypes.c_void_p]
        lib.clang_EvalResult_getKind.restype = ctypes.c_int
        lib.clang_EvalResult_getAsLongLong.argtypes = [ctypes.c_void_p]
        lib.clang_EvalResult_getAsLongLong.restype = ctypes.c_longlong
        lib.clang_EvalResult_dispose.argtypes = [ctypes.c_void_p]
        lib.clang_EvalResult_dispose.restype = None
        lib.clang_getCursorBinaryOperatorKind.argtypes = [ci.Cursor]
        lib.clang_getCursorBinaryOperatorKind.restype = ctypes.c_int
        lib.clang_getBinaryOperatorKindSpelling.argtypes = [ctypes.c_int]
        lib.clang_getBinaryOperatorKindSpelling.restype = ci._CXString
        lib.clang_getBinaryOperatorKindSpelling.errcheck = ci._CXString.from_result
        lib._m3vit_eval = True
    return ci


def _system_includes() -> list[str]:
    """The compiler's own headers (stddef.h, …): the libclang wheel ships none, g++/gcc has them."""
    for cc in ("gcc", "g++", "cc"):
        exe = shutil.which(cc)
        if exe:
            path = subprocess.run([exe, "-print-file-name=include"], capture_output=True, text=True).stdout.strip()
            if path and Path(path, "stddef.h").exists():
                return [f"-isystem{path}"]
    return []


def check_project(project: Path, cfg: DesignConfig) -> Path:
    """The project's ``src`` folder, after checking it was generated by this toolkit from ``cfg``."""
    src = project / "src"
    if not project.is_dir():
        raise LintError(f"{project} is not a folder (generate it first: m3vit generate {cfg.name})")
    top = src / f"{TOP_NAME}.cpp"
    header = src / "m3vit_config.h"
    if not top.is_file() or not (project / "register_map.json").is_file():
        raise LintError(f"{project} is not an HLS project generated by m3vit (no src/{top.name} or register_map.json)")
    if not header.is_file():
        raise LintError(f"{project}: the config header src/m3vit_config.h is missing (regenerate the project)")
    text = header.read_text()
    if f'M3VIT_CONFIG_HASH "{cfg.config_hash()}"' not in text:
        raise LintError(f"{project} was not generated from config {cfg.name!r} (its config hash differs; regenerate)")
    return src


def parse_project(src: Path, extra_args: tuple[str, ...] = ()):
    """Parse ``src/m3vit_top.cpp`` as Vitis HLS sees it; returns the libclang translation unit."""
    ci = _clang()
    # ap_int.h's synthesis branch needs Vitis' internal types: include the C-simulation ap types first, then
    # define __SYNTHESIS__ for the kernels (the include guards keep ap_int.h from being read again).
    shim = str(src / "__hls_lint_prelude.h")  # an in-memory file: nothing is written into the project
    prelude = "#undef __SYNTHESIS__\n#include <ap_int.h>\n#define __SYNTHESIS__ 1\n"
    # M3VIT_HLS_LINT: m3vit_dataflow.h gives hls::stream_of_blocks the declarations of src/m3vit_blocks.h,
    # since Vitis' <hls_streamofblocks.h> is not here
    args = ["-x", "c++", "-std=c++14", "-DM3VIT_HLS_LINT", f"-I{src}", f"-I{ap_types_dir()}", *_system_includes(),
            "-include", shim, *extra_args]
    tu = ci.Index.create().parse(str(src / f"{TOP_NAME}.cpp"), args=args, unsaved_files=[(shim, prelude)])
    errors = [d for d in tu.diagnostics if d.severity >= ci.Diagnostic.Error]
    if errors:
        d = errors[0]
        raise LintError(f"{d.location.file}:{d.location.line}: {d.spelling} ({len(errors)} errors)")
    return tu


# ------------------------------------------------------------------------------------------ pragmas
@dataclass(frozen=True)
class Pragma:
    file: str
    line: int
    directive: str  # upper case: PIPELINE, UNROLL, INTERFACE, ...
    options: dict[str, str]  # key → value (lower-case keys); flags map to ""

    def get(self, key: str) -> str | None:
        return self.options.get(key)


def _pragmas(tu, path: str) -> tuple[list[Pragma], dict[int, str]]:
    """The ``#pragma HLS`` lines and the comments of one source file, from its token stream."""
    ci = _clang()
    f = tu.get_file(path)
    size = Path(path).stat().st_size
    ext = ci.SourceRange.from_locations(ci.SourceLocation.from_offset(tu, f, 0),
                                        ci.SourceLocation.from_offset(tu, f, size))
    lines: dict[int, list] = {}
    comments: dict[int, str] = {}
    for t in tu.get_tokens(extent=ext):
        if t.kind == ci.TokenKind.COMMENT:
            comments[t.location.line] = t.spelling
        else:
            lines.setdefault(t.location.line, []).append(t.spelling)
    out = []
    for line, toks in sorted(lines.items()):
        if len(toks) >= 4 and toks[0] == "#" and toks[1] == "pragma" and toks[2].upper() == "HLS":
            opts: dict[str, str] = {}
            i = 4
            while i < len(toks):
                key = toks[i].lower()
                if i + 2 < len(toks) and toks[i + 1] == "=":
                    # a value is one token, or a name joined by "::" / "." (variable = qs.tok)
                    j, val = i + 3, toks[i + 2]
                    while j + 1 < len(toks) and toks[j] in ("::", "."):
                        val += toks[j] + toks[j + 1]
                        j += 2
                    opts[key] = val
                    i = j
                else:
                    opts[key] = ""
                    i += 1
            out.append(Pragma(path, line, toks[3].upper(), opts))
    return out, comments


# ------------------------------------------------------------------------------------------ walker
@dataclass
class _Loop:
    cursor: object
    label: str
    pragmas: list[Pragma]
    trip: int | None
    var: str | None  # induction variable (USR of its declaration)

    @property
    def pipelined(self) -> bool:
        return any(p.directive == "PIPELINE" and p.get("off") is None for p in self.pragmas)

    def unroll(self) -> int:
        """Copies of the body this loop makes (1 unless unrolled)."""
        for p in self.pragmas:
            if p.directive == "UNROLL":
                factor = p.get("factor")
                if factor and factor.isdigit():
                    return int(factor)
                return self.trip or 1
        return 1


@dataclass
class _Fn:
    usr: str
    name: str
    pragmas: list[Pragma]
    maxi: dict[str, str]  # declaration USR → m_axi bundle (pointers into DDR)
    replication: int = 1


class _Walker:
    def __init__(self, tu, src: Path, cfg: DesignConfig):
        self.ci = _clang()
        self.tu, self.src, self.cfg = tu, src.resolve(), cfg
        self.findings: list[Finding] = []
        # elem bits, dims, pragmas, copies (a stream of blocks: its depth in blocks of dims)
        self.arrays: dict[str, tuple[int, tuple[int, ...], list[Pragma], int]] = {}
        self.muls: dict[str, list[tuple[str, int, int, int]]] = {}  # fn usr → (where, a, b, lanes)
        self.fn_names: dict[str, str] = {}
        self.fn_pragmas: dict[str, list[Pragma]] = {}
        self.decls: list[str] = []  # the variables whose initialisers are being visited (innermost last)
        self.replication: dict[str, int] = {}
        self.walked: set[tuple[str, frozenset]] = set()
        self.stack: list[str] = []
        self.pragma_cache: dict[str, tuple[list[Pragma], dict[int, str]]] = {}
        self.loops = 0
        self.maxi_accesses = 0
        self.found: dict[tuple[str, str, str], tuple[set[str], set[str], str | None]] = {}
        self.op_names: dict[int, str] = {}

    # -------------------------------------------------------------------------------- helpers
    def in_kernel(self, cursor) -> bool:
        loc = cursor.location
        return loc.file is not None and Path(loc.file.name).resolve().parent == self.src

    def where(self, cursor) -> str:
        loc = cursor.location
        return f"{Path(loc.file.name).name}:{loc.line}" if loc.file else "?"

    def file_info(self, cursor) -> tuple[list[Pragma], dict[int, str]]:
        path = cursor.location.file.name
        if path not in self.pragma_cache:
            self.pragma_cache[path] = _pragmas(self.tu, path)
        return self.pragma_cache[path]

    def pragmas_in(self, cursor) -> list[Pragma]:
        prag, _ = self.file_info(cursor)
        s, e = cursor.extent.start.line, cursor.extent.end.line
        return [p for p in prag if s <= p.line <= e]

    def waiver(self, cursor, check: str) -> str | None:
        _, comments = self.file_info(cursor)
        for line in (cursor.location.line, cursor.location.line - 1):
            text = comments.get(line, "")
            if WAIVER in text:
                rest = text.split(WAIVER, 1)[1].strip()
                if rest.startswith(f"waive {check}:") and rest.split(":", 1)[1].strip():
                    return rest.split(":", 1)[1].strip()
        return None

    def add(self, check: str, cursor, message: str, fn: str = "", port: str = "") -> None:
        """Record a finding; the instances of one source line (template instantiations, call sites, m_axi
        bundles) are merged into one."""
        key = (check, self.where(cursor), message)
        if key not in self.found:
            self.found[key] = (set(), set(), self.waiver(cursor, check))
        fns, ports, _ = self.found[key]
        fns.add(fn.split("<")[0])
        if port:
            ports.add(port)

    def merged_findings(self) -> list[Finding]:
        out = []
        for (check, where, message), (fns, ports, waiver) in self.found.items():
            tail = f" [{', '.join(sorted(ports))}]" if ports else ""
            out.append(Finding(check, f"{where} ({', '.join(sorted(f for f in fns if f))})", message + tail, waiver))
        return out

    def evaluate(self, cursor) -> int | None:
        """The value of a constant integer expression, or None."""
        lib = self.ci.conf.lib
        res = lib.clang_Cursor_Evaluate(cursor)
        if not res:
            return None
        try:
            return lib.clang_EvalResult_getAsLongLong(res) if lib.clang_EvalResult_getKind(res) == 1 else None
        finally:
            lib.clang_EvalResult_dispose(res)

    def constant(self, cursor) -> bool:
        """Whether an operand is a compile-time constant, also through casts and ap_int constructors."""
        K = self.ci.CursorKind
        c = cursor
        while True:
            if self.evaluate(c) is not None:
                return True
            kids = [k for k in c.get_children() if k.kind not in (K.TYPE_REF, K.TEMPLATE_REF, K.NAMESPACE_REF)]
            if not kids:
                return False
            if c.kind == K.CALL_EXPR:
                ref = c.referenced
                if ref is None or ref.kind != K.CONSTRUCTOR or len(kids) != 1:
                    return False
            elif c.kind not in (K.UNEXPOSED_EXPR, K.PAREN_EXPR, K.CXX_FUNCTIONAL_CAST_EXPR, K.CSTYLE_CAST_EXPR,
                                K.CXX_STATIC_CAST_EXPR):
                return False
            c = kids[-1]  # the cast operand (template arguments of the cast type come first)

    def type_bits(self, ty) -> int | None:
        """Width of an integer type: ap_int<W> / ap_uint<W> → W, built-in integers → their size."""
        can = ty.get_canonical()
        K = self.ci.TypeKind
        if can.kind in (K.RECORD, K.ELABORATED):
            d = can.get_declaration()
            if d.spelling in ("ap_int", "ap_uint", "ap_int_base") and d.get_num_template_arguments() >= 1:
                return int(d.get_template_argument_value(0))
            return None
        if can.kind == K.BOOL:
            return 1
        if can.kind in (K.CHAR_S, K.SCHAR, K.UCHAR, K.CHAR_U, K.SHORT, K.USHORT, K.INT, K.UINT, K.LONG, K.ULONG,
                        K.LONGLONG, K.ULONGLONG):
            return can.get_size() * 8
        return None

    def operand_bits(self, cursor) -> int | None:
        """The narrowest width along an operand's chain of casts and conversions (the bits it really carries)."""
        K = self.ci.CursorKind
        best = self.type_bits(cursor.type)
        c = cursor
        while True:
            kids = [k for k in c.get_children() if k.kind != K.TYPE_REF and k.kind != K.TEMPLATE_REF]
            if c.kind in (K.UNEXPOSED_EXPR, K.PAREN_EXPR, K.CXX_FUNCTIONAL_CAST_EXPR, K.CSTYLE_CAST_EXPR,
                          K.CXX_STATIC_CAST_EXPR, K.CALL_EXPR) and len(kids) == 1:
                if c.kind == K.CALL_EXPR and c.spelling not in ("", *("ap_int", "ap_uint", "ap_int_base")):
                    break
                c = kids[0]
                b = self.type_bits(c.type)
                if b is not None and (best is None or b < best):
                    best = b
            else:
                break
        return best

    def refers(self, cursor) -> Iterator:
        K = self.ci.CursorKind
        if cursor.kind in (K.DECL_REF_EXPR, K.MEMBER_REF_EXPR):
            yield cursor
        for k in cursor.get_children():
            yield from self.refers(k)

    def base_decl(self, cursor):
        """The variable a pointer expression (p, p + k, (p), cast of p) is based on, or None."""
        K = self.ci.CursorKind
        c = cursor
        while True:
            if c.kind == K.DECL_REF_EXPR:
                return c.referenced
            kids = list(c.get_children())
            if c.kind in (K.UNEXPOSED_EXPR, K.PAREN_EXPR, K.CSTYLE_CAST_EXPR, K.CXX_STATIC_CAST_EXPR,
                          K.CXX_CONST_CAST_EXPR) and kids:
                c = kids[-1]
            elif c.kind == K.BINARY_OPERATOR and len(kids) == 2 and self.op(c) in ("+", "-"):
                c = kids[0] if kids[0].type.get_canonical().kind == self.ci.TypeKind.POINTER else kids[1]
            else:
                return None

    def op(self, cursor) -> str:
        """The operator of a binary or compound-assignment operator ("*", "+=", "&&", …), else ""."""
        K = self.ci.CursorKind
        if cursor.kind not in (K.BINARY_OPERATOR, K.COMPOUND_ASSIGNMENT_OPERATOR):
            return ""
        lib = self.ci.conf.lib
        kind = lib.clang_getCursorBinaryOperatorKind(cursor)
        if kind not in self.op_names:
            self.op_names[kind] = lib.clang_getBinaryOperatorKindSpelling(kind) if kind else ""
        return self.op_names[kind]

    # -------------------------------------------------------------------------------- the walk
    def run(self, top) -> None:
        fn = _Fn(top.get_usr(), top.spelling, self.pragmas_in(top), {})
        self.maxi_ports(top, fn)
        self.function(top, fn)

    def maxi_ports(self, top, fn: _Fn) -> None:
        """m_axi interface pragmas of the top function: completeness and the HP ports of their bundles."""
        params = {p.spelling: p for p in top.get_arguments()}
        regmap = json.loads((self.src.parent / "register_map.json").read_text())
        access = {a["name"]: a.get("access", "rw") for a in regmap["args"] if a["kind"] == "pointer"}
        bundles: list[str] = []
        for p in fn.pragmas:
            is_maxi = (p.get("mode") or "").lower() == "m_axi" or "m_axi" in p.options
            if p.directive != "INTERFACE" or not is_maxi:
                continue
            port, bundle = p.get("port"), p.get("bundle") or f"m_axi_{p.get('port')}"
            if port in params:
                fn.maxi[params[port].get_usr() or params[port].spelling] = bundle
            if bundle not in bundles:
                bundles.append(bundle)
            need = ["latency"]
            acc = access.get(port, "rw")
            if "r" in acc:
                need += ["num_read_outstanding", "max_read_burst_length"]
            if "w" in acc:
                need += ["num_write_outstanding", "max_write_burst_length"]
            missing = [k for k in need if p.get(k) in (None, "")]
            where = f"{Path(p.file).name}:{p.line}"
            if missing:
                msg = f"m_axi port {port} (bundle {bundle}) does not set {', '.join(missing)}"
                self.findings.append(Finding("maxi", where, msg))
            model = maxi_settings()
            other = [f"{k} = {p.get(k)} (perf assumes {model[k]})" for k in need
                     if p.get(k) not in (None, "") and p.get(k) != str(model[k])]
            if other:
                self.findings.append(Finding("maxi", where, f"m_axi port {port} (bundle {bundle}) sets "
                                                            f"{', '.join(other)}: the model and the code disagree"))
        expected = [a["bundle"] for a in regmap["args"] if a["kind"] == "pointer"]
        if bundles != expected:
            self.findings.append(Finding("maxi", f"{TOP_NAME}.cpp", f"m_axi bundles {bundles} differ from the "
                                                                    f"register map's {expected}"))
        tcl = self.src.parent / "vivado" / "build_bitstream.tcl"
        ports = ", ".join(f"{p.bundle}->{p.hp}" for p in assign_hp_ports(bundles))
        if not tcl.is_file() or tcl.read_text() != render_bitstream_tcl(self.cfg, top.spelling, bundles):
            self.findings.append(Finding("maxi", "vivado/build_bitstream.tcl",
                                         f"the Vivado script does not connect the kernel's bundles as {ports}"))

    def function(self, fdef, fn: _Fn) -> None:
        key = (fn.usr, frozenset(fn.maxi.items()))
        self.fn_names[fn.usr] = fn.name
        self.fn_pragmas.setdefault(fn.usr, fn.pragmas)
        self.replication[fn.usr] = max(self.replication.get(fn.usr, 1), fn.replication)
        if key in self.walked:
            return
        self.walked.add(key)
        self.stack.append(fn.usr)
        K = self.ci.CursorKind
        for d in (k for k in fdef.get_children() if k.kind == K.PARM_DECL):
            self.check_type(d, fn)
        body = [k for k in fdef.get_children() if k.kind == K.COMPOUND_STMT]
        if body:
            self.visit(body[0], fn, [], [])
        self.stack.pop()

    def visit(self, c, fn: _Fn, loops: list[_Loop], conds: list) -> None:
        K = self.ci.CursorKind
        kind = c.kind
        if kind == K.LABEL_STMT:
            kids = list(c.get_children())
            for k in kids:
                self.visit_loop(k, fn, loops, conds, c.spelling) if k.kind in (K.FOR_STMT, K.WHILE_STMT,
                                                                              K.DO_STMT) else \
                    self.visit(k, fn, loops, conds)
            return
        if kind in (K.FOR_STMT, K.WHILE_STMT, K.DO_STMT):
            self.visit_loop(c, fn, loops, conds, "")
            return
        if kind == K.IF_STMT or kind == K.CONDITIONAL_OPERATOR:
            kids = list(c.get_children())
            self.visit(kids[0], fn, loops, conds)
            for k in kids[1:]:
                self.visit(k, fn, loops, [*conds, (c, len(loops))])
            return
        if kind == K.BINARY_OPERATOR and self.op(c) in ("&&", "||"):
            kids = list(c.get_children())
            self.visit(kids[0], fn, loops, conds)
            self.visit(kids[1], fn, loops, [*conds, (c, len(loops))])
            return
        if kind == K.VAR_DECL:
            self.var_decl(c, fn)
            self.decls.append(c.spelling)
            try:
                for k in c.get_children():
                    self.visit(k, fn, loops, conds)
            finally:
                self.decls.pop()
            return
        elif kind == K.CXX_NEW_EXPR:
            self.add("datapath", c, "dynamic allocation (new)", fn.name)
        elif kind == K.ARRAY_SUBSCRIPT_EXPR or (kind == K.UNARY_OPERATOR and c.type.kind != self.ci.TypeKind.POINTER
                                                 and self.deref(c)):
            self.access(c, fn, loops, conds)
        elif kind == K.DECL_REF_EXPR:
            ref = c.referenced
            if ref is not None and ref.kind == K.VAR_DECL and ref.semantic_parent is not None and \
                    ref.semantic_parent.kind == K.NAMESPACE and self.in_kernel(ref):
                self.table(ref)
        if kind in (K.BINARY_OPERATOR, K.COMPOUND_ASSIGNMENT_OPERATOR) and self.op(c) in ("*", "*="):
            self.multiply(c, list(c.get_children()), fn, loops)
        if kind == K.CALL_EXPR and self.call(c, fn, loops, conds):
            return
        if kind in (K.FLOATING_LITERAL,) or (c.type.get_canonical().kind in
                                             (self.ci.TypeKind.FLOAT, self.ci.TypeKind.DOUBLE,
                                              self.ci.TypeKind.LONGDOUBLE, self.ci.TypeKind.HALF)):
            self.add("datapath", c, f"floating point ({c.type.spelling or 'literal'})", fn.name)
        for k in c.get_children():
            self.visit(k, fn, loops, conds)

    def deref(self, c) -> bool:
        toks = list(c.get_tokens())
        return bool(toks) and toks[0].spelling == "*"

    def visit_loop(self, c, fn: _Fn, loops: list[_Loop], conds: list, label: str) -> None:
        K = self.ci.CursorKind
        self.loops += 1
        inner = [d for d in self.descendants(c) if d.kind in (K.FOR_STMT, K.WHILE_STMT, K.DO_STMT)]
        prag = [p for p in self.pragmas_in(c)
                if not any(d.extent.start.line <= p.line <= d.extent.end.line for d in inner)
                and p.line != c.extent.start.line - 1]
        trip, var, const_bound = None, None, False
        if c.kind == K.FOR_STMT:
            kids = list(c.get_children())
            init = next((k for k in kids if k.kind == K.DECL_STMT), None)
            cond = next((k for k in kids if k.kind == K.BINARY_OPERATOR and self.op(k) in ("<", "<=", "!=")), None)
            if init is not None:
                vd = next(iter(init.get_children()), None)
                var = vd.get_usr() if vd is not None else None
                v0 = self.evaluate(next(iter(vd.get_children()))) if vd is not None and list(vd.get_children()) \
                    else None
            else:
                v0 = None
            if cond is not None:
                _lhs, rhs = list(cond.get_children())
                bound = self.evaluate(rhs)
                const_bound = bound is not None and (v0 is not None or init is None)
                if bound is not None and v0 is not None:
                    trip = ceil_div(max(0, bound - v0 + (1 if self.op(cond) == "<=" else 0)), self.step(kids))
        label = label or f"loop@{self.where(c)}"
        loop = _Loop(c, label, prag, trip, var)
        if not const_bound and not any(p.directive == "LOOP_TRIPCOUNT" for p in prag):
            self.add("tripcount", c, f"loop {label} has a variable bound and no LOOP_TRIPCOUNT", fn.name)
        for p in prag:
            if p.directive == "PIPELINE" and p.get("off") is None and not p.get("ii"):
                self.add("ii", c, f"PIPELINE of loop {label} does not name its II", fn.name)
        if trip is None and any(p.directive == "UNROLL" and not p.get("factor") for p in prag):
            self.add("tripcount", c, f"fully unrolled loop {label} has no constant trip count", fn.name)
        for k in c.get_children():
            self.visit(k, fn, [*loops, loop], conds)

    def step(self, kids: list) -> int:
        """The constant increment of a for loop (`i += c`), 1 for `i++` or anything the lint cannot evaluate."""
        inc = next((k for k in kids if k.kind == self.ci.CursorKind.COMPOUND_ASSIGNMENT_OPERATOR
                    and self.op(k) == "+="), None)
        if inc is None:
            return 1
        value = self.evaluate(list(inc.get_children())[1])
        return value if value is not None and value > 0 else 1

    def descendants(self, c) -> Iterator:
        for k in c.get_children():
            yield k
            yield from self.descendants(k)

    def lanes(self, loops: list[_Loop]) -> int:
        """Copies of a statement: unrolled loops, and every constant loop inside a pipelined loop."""
        n = 1
        in_pipe = False
        for lp in loops:
            if in_pipe:
                n *= lp.trip or 1
            else:
                n *= lp.unroll()
            in_pipe = in_pipe or lp.pipelined
        return n

    # -------------------------------------------------------------------------------- checks
    def check_type(self, decl, fn: _Fn) -> None:
        ty = decl.type
        K = self.ci.TypeKind
        while ty.get_canonical().kind in (K.POINTER, K.LVALUEREFERENCE, K.CONSTANTARRAY, K.INCOMPLETEARRAY):
            can = ty.get_canonical()
            ty = can.get_pointee() if can.kind in (K.POINTER, K.LVALUEREFERENCE) else can.element_type
        can = ty.get_canonical()
        if can.kind in (K.FLOAT, K.DOUBLE, K.LONGDOUBLE, K.HALF):
            self.add("datapath", decl, f"floating point {decl.spelling}: {decl.type.spelling}", fn.name)
        bits = self.type_bits(can)
        if bits is not None and bits > MAX_AP_BITS:
            self.add("datapath", decl, f"{decl.spelling} is {bits} bits wide (at most {MAX_AP_BITS})", fn.name)

    def shape(self, ty) -> tuple[int, tuple[int, ...]] | None:
        """(element bits, dims) of a constant array of integers."""
        K = self.ci.TypeKind
        dims = []
        can = ty.get_canonical()
        while can.kind == K.CONSTANTARRAY:
            dims.append(can.element_count)
            can = can.element_type.get_canonical()
        if not dims:
            return None
        bits = self.type_bits(can)
        return (bits, tuple(dims)) if bits else None

    def var_decl(self, d, fn: _Fn) -> None:
        self.check_type(d, fn)
        K = self.ci.TypeKind
        if d.type.get_canonical().kind == K.POINTER:  # a local pointer into DDR: `const word_t* in = input + k`
            init = [k for k in d.get_children() if k.kind != self.ci.CursorKind.TYPE_REF]
            b = self.base_decl(init[-1]) if init else None
            if b is not None and (b.get_usr() or b.spelling) in fn.maxi:
                fn.maxi[d.get_usr() or d.spelling] = fn.maxi[b.get_usr() or b.spelling]
            return
        static = d.storage_class == self.ci.StorageClass.STATIC
        can = d.type.get_canonical()
        pragmas = [p for p in fn.pragmas if p.get("variable") == d.spelling]
        blocks = self.stream_of_blocks(can)
        if blocks is not None:  # Vitis makes `depth` buffers of the block (a C-sim model's members never count)
            self.arrays[f"{fn.name}::{d.spelling}#{fn.usr}"] = (blocks[0], blocks[1], pragmas, blocks[2])
            return
        if can.kind == K.RECORD and static:
            self.record_arrays(d.spelling, can, fn)
            return
        s = self.shape(d.type)
        if s is None:
            return
        bits = s[0] * math.prod(s[1])
        if static or bits >= INVENTORY_MIN_BITS:
            self.arrays[f"{fn.name}::{d.spelling}#{fn.usr}"] = (s[0], s[1], pragmas, 1)

    def record_arrays(self, path: str, can, fn: _Fn) -> None:
        """The array members of a static struct, nested structs included, each named and bound by its dotted
        path (`#pragma HLS BIND_STORAGE variable = st.kv.k`)."""
        for f in can.get_fields():
            name = f"{path}.{f.spelling}"
            fcan = f.type.get_canonical()
            if fcan.kind == self.ci.TypeKind.RECORD:
                self.record_arrays(name, fcan, fn)
                continue
            s = self.shape(f.type)
            if s:
                pragmas = [p for p in fn.pragmas if p.get("variable") == name]
                self.arrays[f"{fn.name}::{name}#{fn.usr}"] = (s[0], s[1], pragmas, 1)

    def stream_of_blocks(self, can) -> tuple[int, tuple[int, ...], int] | None:
        """(element bits, block dims, depth) of an ``hls::stream_of_blocks<block, depth>`` (depth 2 by default),
        else None."""
        if can.kind != self.ci.TypeKind.RECORD:
            return None
        d = can.get_declaration()
        parent = d.semantic_parent
        if d.spelling != "stream_of_blocks" or parent is None or parent.spelling != "hls":
            return None
        n = d.get_num_template_arguments()
        s = self.shape(d.get_template_argument_type(0)) if n >= 1 else None
        if s is None:
            return None
        return s[0], s[1], int(d.get_template_argument_value(1)) if n >= 2 else 2

    def table(self, ref) -> None:
        s = self.shape(ref.type)
        if s is not None:
            self.arrays[f"cfg::{ref.spelling}#table"] = (s[0], s[1], [], 1)

    def access(self, c, fn: _Fn, loops: list[_Loop], conds: list) -> None:
        kids = list(c.get_children())
        if not kids:
            return
        base = self.base_decl(kids[0])
        if base is None or (base.get_usr() or base.spelling) not in fn.maxi:
            return
        self.maxi_accesses += 1
        bundle = fn.maxi[base.get_usr() or base.spelling]
        pipe = max((i for i, lp in enumerate(loops) if lp.pipelined), default=None)
        what = f"m_axi access {base.spelling}[…]"
        if pipe is None:
            self.add("burst", c, f"{what} is outside any pipelined loop (a single-beat transaction)", fn.name, bundle)
            return
        lp = loops[pipe]
        if any(depth > pipe for _, depth in conds):
            self.add("burst", c, f"{what} is conditional inside pipelined loop {lp.label}", fn.name, bundle)
        if c.kind == self.ci.CursorKind.ARRAY_SUBSCRIPT_EXPR and len(kids) == 2 and \
                not self.unit_stride(kids[1], lp, c):
            self.add("burst", c, f"{what} is not unit-stride in the induction variable of {lp.label}", fn.name,
                     bundle)

    def unit_stride(self, idx, lp: _Loop, access) -> bool:
        """idx is i, i + invariant or invariant + i (i the loop's induction variable), or a counter v++."""
        K = self.ci.CursorKind
        c = idx
        while c.kind in (K.UNEXPOSED_EXPR, K.PAREN_EXPR, K.CSTYLE_CAST_EXPR, K.CXX_FUNCTIONAL_CAST_EXPR) and \
                len(list(c.get_children())) == 1:
            c = next(iter(c.get_children()))
        if c.kind == K.DECL_REF_EXPR:
            return lp.var is not None and c.referenced.get_usr() == lp.var
        if c.kind == K.UNARY_OPERATOR:
            toks = [t.spelling for t in c.get_tokens()]
            return len(toks) == 2 and toks[1] == "++"
        if c.kind == K.BINARY_OPERATOR and self.op(c) == "+":
            a, b = list(c.get_children())
            loop_vars = self.assigned_in(lp.cursor)
            for x, y in ((a, b), (b, a)):
                if self.unit_stride(x, lp, access) and not any(
                        r.referenced is not None and r.referenced.get_usr() in loop_vars for r in self.refers(y)):
                    return True
        return False

    def assigned_in(self, loop) -> set[str]:
        """USRs of the variables a loop writes (its induction variable included)."""
        K = self.ci.CursorKind
        out = set()
        for d in self.descendants(loop):
            if d.kind == K.VAR_DECL:
                out.add(d.get_usr())
            elif d.kind in (K.BINARY_OPERATOR, K.COMPOUND_ASSIGNMENT_OPERATOR, K.UNARY_OPERATOR):
                kids = list(d.get_children())
                if kids and (d.kind != K.BINARY_OPERATOR or self.op(d) == "="):
                    for r in self.refers(kids[0]):
                        if r.referenced is not None:
                            out.add(r.referenced.get_usr())
                            break
        return out

    def multiply(self, c, operands: list, fn: _Fn, loops: list[_Loop]) -> None:
        if len(operands) != 2:
            return
        if any(self.constant(o) for o in operands):
            return  # a constant factor: shift-and-add in LUTs (docs/performance.md §5)
        if self.decls and any(p.directive == "BIND_OP" and p.get("variable") == self.decls[-1]
                              and (p.get("op") or "").lower() == "mul" and (p.get("impl") or "").lower() == "fabric"
                              for p in fn.pragmas):
            return  # BIND_OP impl = fabric: a LUT multiplier
        bits = [self.operand_bits(o) for o in operands]
        if any(b is None for b in bits):
            return
        self.muls.setdefault(fn.usr, []).append((self.where(c), bits[0], bits[1], self.lanes(loops)))

    def call(self, c, fn: _Fn, loops: list[_Loop], conds: list) -> bool:
        """Handle a call: operators of ap types (multipliers), library calls, kernel functions (walked)."""
        K = self.ci.CursorKind
        ref = c.referenced
        if ref is None:
            return False
        name = ref.spelling
        args = [k for k in c.get_children() if k.kind != K.TYPE_REF]
        if name in ("malloc", "calloc", "realloc", "free"):
            self.add("datapath", c, f"dynamic allocation ({name})", fn.name)
        if ref.location.file is not None and Path(ref.location.file.name).name in ("hls_math.h", "cmath", "math.h"):
            self.add("datapath", c, f"math library call {name} ({Path(ref.location.file.name).name})", fn.name)
        if name in ("operator*", "operator*="):
            ops = [k for k in args if k.spelling != name]  # the operands, without the operator's own reference
            self.multiply(c, ops, fn, loops)
            return False
        fdef = ref.get_definition()
        if fdef is None or not self.in_kernel(fdef) or ref.kind not in (K.FUNCTION_DECL,):
            return False
        targs = ",".join(
            str(fdef.get_template_argument_value(i)) if fdef.get_template_argument_kind(i).name == "INTEGRAL"
            else fdef.get_template_argument_type(i).get_canonical().spelling.replace("m3vit::", "")
            for i in range(max(0, fdef.get_num_template_arguments())))
        usr = f"{fdef.get_usr()}<{targs}>"  # one per instantiation
        if usr in self.stack:
            self.add("datapath", c, f"recursion: {name} calls itself (through {len(self.stack)} frames)", fn.name)
            return True
        for a in args:
            self.visit(a, fn, loops, conds)
        # pointer arguments based on an m_axi pointer make the callee's parameter an m_axi pointer
        params = [p for p in fdef.get_children() if p.kind == K.PARM_DECL]
        call_args = [k for k in c.get_children() if k.kind not in (K.TYPE_REF, K.TEMPLATE_REF, K.NAMESPACE_REF)]
        call_args = call_args[-len(params):] if params else []
        maxi = {}
        for p, a in zip(params, call_args, strict=False):
            b = self.base_decl(a)
            if b is not None and (b.get_usr() or b.spelling) in fn.maxi:
                maxi[p.get_usr() or p.spelling] = fn.maxi[b.get_usr() or b.spelling]
        label = f"{name}<{targs}>" if fdef.get_num_template_arguments() > 0 else name
        callee = _Fn(usr, label, self.pragmas_in(fdef), maxi, fn.replication * self.lanes(loops))
        self.function(fdef, callee)
        return True

    # -------------------------------------------------------------------------------- results
    def multipliers(self) -> list[MulUse]:
        """DSP48E2 per function instance after ALLOCATION limits of its callers."""
        limit: dict[str, int] = {}  # function name → instances allowed
        op_limit: dict[str, int] = {}  # function usr → multipliers allowed
        for usr in self.fn_names:
            for p in self.fn_pragmas.get(usr, []):
                if p.directive != "ALLOCATION":
                    continue
                inst, lim = p.get("instances") or "", p.get("limit") or ""
                if not lim.isdigit():
                    continue
                if "function" in p.options or p.get("type") == "function":
                    limit[inst.split("<")[0]] = int(lim)
                elif inst == "mul":
                    op_limit[usr] = int(lim)
        out = []
        counted: dict[str, int] = {}  # function name → instances counted so far
        by_size = sorted(self.muls, key=lambda u: -sum(dsps(a, b, n) for _, a, b, n in self.muls[u]))
        for usr in by_size:
            name = self.fn_names[usr]
            base = name.split("<")[0]
            if base in limit:
                if counted.get(base, 0) >= limit[base]:
                    continue
                counted[base] = counted.get(base, 0) + 1
            rep = self.replication.get(usr, 1)
            budget = op_limit.get(usr)
            for where, a, b, n in self.muls[usr]:
                lanes = n * rep if budget is None else min(n * rep, budget)
                if budget is not None:
                    budget -= lanes
                if lanes > 0:
                    out.append(MulUse(name, where, a, b, lanes, dsps(a, b, lanes)))
        return out


def _config_constants(src: Path) -> dict[str, int]:
    """The integer constants of the generated m3vit_config.h (`constexpr int NAME = value;`), by name."""
    text = (src / "m3vit_config.h").read_text()
    return {m[1]: int(m[2]) for m in re.finditer(r"constexpr\s+(?:unsigned|int)\s+(\w+)\s*=\s*(-?\d+)\s*;", text)}


def _int_option(value: str | None, consts: dict[str, int], default: int) -> int:
    """A pragma option that is a number or a config constant (`factor = OUT_LANES`); ``default`` otherwise."""
    if value is None:
        return default
    return int(value) if value.isdigit() else consts.get(value, default)


def _banks(elem_bits: int, dims: tuple[int, ...], pragmas: list[Pragma],
           consts: dict[str, int] | None = None) -> tuple[int, int, int] | None:
    """(banks, width, depth) of an array after its ARRAY_PARTITION / ARRAY_RESHAPE pragmas (factors and dims
    may name config constants); None when it is completely partitioned into registers."""
    consts = consts or {}
    dims_l = list(dims)
    banks, width = 1, elem_bits
    for p in pragmas:
        if p.directive not in ("ARRAY_PARTITION", "ARRAY_RESHAPE"):
            continue
        dim = _int_option(p.get("dim"), consts, 1)
        targets = range(len(dims_l)) if dim == 0 else [dim - 1]
        kind = (p.get("type") or next((k for k in ("complete", "cyclic", "block") if k in p.options), "complete"))
        for i in targets:
            if i >= len(dims_l):
                continue
            n = dims_l[i]
            f = n if kind == "complete" else _int_option(p.get("factor"), consts, 1)
            f = max(1, min(f, n))
            if p.directive == "ARRAY_PARTITION":
                banks *= f
            else:
                width *= f
            dims_l[i] = math.ceil(n / f)
    depth = math.prod(dims_l)
    if depth == 1 and banks > 1:
        return None  # registers
    return banks, width, depth


def _storage(p: Pragma, defines: dict[str, str] | None = None) -> str | None:
    """The storage kind a BIND_STORAGE pragma names (its impl, or the config-header macro it names)."""
    impl = p.get("impl") or ""
    impl = (defines or {}).get(impl, impl).lower()
    return {"bram": "bram", "uram": "uram", "lutram": "lutram", "memory": None}.get(impl)


def _config_defines(src: Path) -> dict[str, str]:
    """The word-valued macros of the generated m3vit_config.h (`#define NAME word`), by name."""
    text = (src / "m3vit_config.h").read_text()
    return {m[1]: m[2] for m in re.finditer(r"^#define\s+(\w+)\s+(\w+)\s*$", text, re.M)}


def lint_project(cfg: DesignConfig, project: str | Path, model: dict[str, int] | None = None) -> LintReport:
    """Lint the generated HLS project of ``cfg`` at ``project`` (raises LintError when it is not one).

    ``model``: the inventory the kernels must have (keys dsp, bram36, uram); default ``perf.resources(cfg)``."""
    t0 = time.perf_counter()
    project = Path(project)
    src = check_project(project, cfg)
    tu = parse_project(src)
    top = next((c for c in tu.cursor.get_children() if c.spelling == TOP_NAME and c.is_definition()), None)
    if top is None:
        raise LintError(f"{src / (TOP_NAME + '.cpp')} defines no function {TOP_NAME}")
    w = _Walker(tu, src, cfg)
    for inc in tu.get_includes():
        if Path(inc.include.name).name == "hls_math.h":
            w.findings.append(Finding("datapath", f"{Path(inc.source.name).name}:{inc.location.line}",
                                      "includes hls_math.h"))
    w.run(top)
    board = cfg.hardware.board_spec
    arrays = _inventory(w, board, _config_constants(src), _config_defines(src))
    muls = w.multipliers()
    totals = {"dsp": sum(m.dsp for m in muls), "bram36": sum(a.bram36 for a in arrays),
              "uram": sum(a.uram for a in arrays), "lutram": sum(a.lutram for a in arrays)}
    if model is None:
        est = resources(cfg)
        model = {"dsp": est.dsp, "bram36": est.bram36, "uram": est.uram,
                 "lutram": sum(b.lutram() for b in _model_lutram(cfg, est))}
    perf = {"lutram": 0, **model}
    board_d = {"dsp": board.dsp, "bram36": board.bram36, "uram": board.uram, "lutram": board.lut}
    findings = w.findings + w.merged_findings()
    for k in FIT_RESOURCES:
        cap = ARCH.util_limit * board_d[k]
        if totals[k] > cap:
            findings.append(Finding("fit", k, f"{totals[k]:,} {k} is {100 * totals[k] / max(board_d[k], 1):.0f} % of "
                                              f"the {cfg.hardware.board} ({board_d[k]:,}; limit "
                                              f"{100 * ARCH.util_limit:.0f} %)"))
    findings += compare_inventory(totals, perf)
    order = {c: i for i, c in enumerate(CHECKS)}
    findings.sort(key=lambda f: order[f.check])
    return LintReport(cfg.name, str(project), findings, arrays, muls, totals, perf, board_d,
                      functions=len(w.walked), loops=w.loops, maxi_accesses=w.maxi_accesses,
                      walked=tuple(sorted({w.fn_names[usr] for usr, _ in w.walked})), seconds=time.perf_counter() - t0)


def compare_inventory(totals: dict[str, int], model: dict[str, int]) -> list[Finding]:
    """One ``perf`` finding per resource (DSP, BRAM36, URAM) where the lint's count differs from the model's."""
    return [Finding("perf", k, f"lint counts {totals[k]:,} {k}, the performance model {model[k]:,}")
            for k in FIT_RESOURCES if totals[k] != model[k]]


def _model_lutram(cfg: DesignConfig, model) -> list[Buffer]:
    return [b for b in buffers(cfg) if model.placement.get(b.name) == "lutram"]


def _inventory(w: _Walker, board, consts: dict[str, int], defines: dict[str, str]) -> list[ArrayUse]:
    bufs: list[Buffer] = []
    bound: dict[str, str] = {}
    meta = {}
    for key, (elem_bits, dims, pragmas, copies) in sorted(w.arrays.items()):
        shape = _banks(elem_bits, dims, pragmas, consts)
        if shape is None:
            continue
        banks, width, depth = shape
        banks *= copies
        name = key.split("#")[0]
        if any(m[0] == name for m in meta.values()):
            name = f"{name}#{len(meta)}"
        b = Buffer(name, banks * width * depth, width, banks=banks)
        bufs.append(b)
        meta[name] = (name, elem_bits, dims, banks, width, depth)
        for p in pragmas:
            if p.directive == "BIND_STORAGE" and _storage(p, defines):
                bound[name] = _storage(p, defines)
    # Vitis never chooses URAM by itself: an array goes there only when BIND_STORAGE says so
    placed = place_buffers(bufs, uram_cap=0, bound=bound)
    out = []
    for b in bufs:
        _, elem_bits, dims, banks, width, depth = meta[b.name]
        kind = placed.kind[b.name]
        out.append(ArrayUse(b.name, elem_bits, dims, banks, width, depth, kind, bound.get(b.name),
                            b.bram36() if kind == "bram" else 0, b.uram() if kind == "uram" else 0,
                            b.lutram() if kind == "lutram" else 0))
    return out


def write_report(report: LintReport, path: str | Path) -> Path:
    """Write ``lint.json`` (the report; the project's sources are never touched)."""
    path = Path(path)
    path.write_text(json.dumps(report.to_json(), indent=1) + "\n")
    return path


def run_lint(config: str, project: str | None = None, json_out: str | None = None) -> tuple[LintReport, Path]:
    """Lint the generated project of ``config``: ``project`` as it is, or else ``build/<name>`` freshly generated.
    Writes ``lint.json`` into the project (or ``json_out``); returns the report and the JSON path."""
    cfg = load_config(config)
    folder = Path(project) if project else build_dir(cfg.name)
    if project is None:
        generate(cfg, folder)
    report = lint_project(cfg, folder)
    return report, write_report(report, json_out or folder / "lint.json")


def main(argv: list[str] | None = None) -> int:
    """``python -m m3vit.codegen.lint CONFIG [--project DIR] [--json FILE]``: exit 1 when a check fails."""
    ap = argparse.ArgumentParser(prog="python -m m3vit.codegen.lint", description=__doc__.splitlines()[0])
    ap.add_argument("config", help="config file or preset name")
    ap.add_argument("--project", help="lint this generated project as it is (default: generate build/<name>)")
    ap.add_argument("--json", help="where to write the report (default PROJECT/lint.json)")
    args = ap.parse_args(argv)
    try:
        report, path = run_lint(args.config, args.project, args.json)
    except (ConfigError, LintError, FileNotFoundError) as err:
        print(f"error: {str(err).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    print(report.table())
    print(f"wrote {path}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
