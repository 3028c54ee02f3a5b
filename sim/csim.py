"""C simulation of the generated HLS project with g++ (no Vitis needed).

``build_csim(project_dir)`` compiles the project's top function and its ctypes entry points
(``tb/m3vit_csim_api.cpp``) into a shared library, against the Xilinx ap_types headers shipped inside the
installed ``hls4ml`` package, and returns a :class:`CsimLibrary`. Libraries are cached under
``BUILD_ROOT/csim_cache/<hash of sources and flags>/`` (``build/`` unless ``$M3VIT_BUILD_ROOT`` moves it) so
each design compiles once.

Two type systems (``native``):

* ``True`` (default, fast): ``-DM3VIT_NATIVE_TYPES`` maps every ``sint<W>`` to the smallest native
  integer holding W bits (exact: the generator bounds every intermediate), so g++ vectorises the MACs.
* ``False``: the ap_int/ap_uint types Vitis HLS synthesises, bit for bit as in Vitis C simulation.

``build_testbench(project_dir)`` builds the project's standalone testbench (``tb/tb_m3vit.cpp``) and
``write_testbench_data`` writes the files it compares against (packed weights, images, golden taps).

``python -m m3vit.sim.csim CONFIG -o build/NAME`` generates the project, builds both, runs every task
through the golden model, the library and the testbench and reports the comparison (``make csim``).
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from m3vit import BUILD_ROOT, build_dir
from m3vit.codegen import perf
from m3vit.codegen.config import DesignConfig, load_config
from m3vit.codegen.guards import MAX_IMAGES, describe_status
from m3vit.codegen.hls import CSIM_DEFINES, LEDGER_DEFINE
from m3vit.codegen.hls import ap_types_dir as hls_ap_types_dir
from m3vit.codegen.layout import (
    layer_taps,
    pack_images,
    pack_tokens,
    read_saturation,
    scratch_layout,
    unpack_tokens,
)
from m3vit.codegen.perf import Ledger, parse_ledger
from m3vit.errors import ToolkitError
from m3vit.sim.inputs import random_quantized_image

CACHE_DIR = Path(os.environ.get("M3VIT_CSIM_CACHE", BUILD_ROOT / "csim_cache"))
"""Compiled libraries and testbenches, one folder per source/flag hash (override: $M3VIT_CSIM_CACHE)."""
CXX = os.environ.get("CXX", "g++")
CXXFLAGS = ("-O2", "-std=c++14", "-fPIC", "-fvisibility=hidden", "-w", "-pthread",
            *(f"-D{d}" for d in CSIM_DEFINES))
"""Every C-simulation build: bounded FIFOs + threaded DATAFLOW (codegen.hls.CSIM_DEFINES); ``ledger=True``
builds add -DM3VIT_LEDGER."""
ABI_VERSION = 2
TOP_SOURCE = "src/m3vit_top.cpp"
API_SOURCE = "tb/m3vit_csim_api.cpp"
TB_SOURCE = "tb/tb_m3vit.cpp"


class CsimError(ToolkitError, RuntimeError):
    """A C-simulation build or run failed; the message names the step and, for builds, the log."""


def ap_types_dir() -> Path:
    """The Xilinx ap_types headers (ap_int.h, …) inside the installed hls4ml package."""
    try:
        return hls_ap_types_dir()
    except FileNotFoundError as err:
        raise CsimError(f"C simulation: {err}") from None


def _sources(project: Path) -> list[Path]:
    return sorted(
        [*(project / "src").glob("*.h"), *(project / "src").glob("*.cpp"), *(project / "tb").glob("*.cpp"),
         *(project / "tb").glob("*.h")]
    )


def _compiler_id() -> str:
    try:
        return subprocess.run(
            [CXX, "--version"], capture_output=True, text=True, check=True
        ).stdout.splitlines()[0]
    except (OSError, subprocess.CalledProcessError):
        raise CsimError(f"C simulation needs a C++ compiler: {CXX!r} was not found (set CXX)") from None


def source_hash(project: Path, *extra: str) -> str:
    """SHA-256 (hex, 20 chars) of the project's C++ sources, the compiler and ``extra`` (flags)."""
    h = hashlib.sha256()
    for p in _sources(project):
        h.update(p.relative_to(project).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    h.update(_compiler_id().encode())
    for e in extra:
        h.update(b"\0" + e.encode())
    return h.hexdigest()[:20]


def _compile(cmd: list[str], target: Path, what: str) -> float:
    """Run a compile command writing ``target`` atomically; returns seconds. Raises CsimError with the log."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    t0 = time.perf_counter()
    proc = subprocess.run([*cmd, "-o", str(tmp)], capture_output=True, text=True)
    secs = time.perf_counter() - t0
    if proc.returncode != 0:
        log = target.with_name(f"{target.name}.log")
        log.write_text(" ".join(cmd) + "\n\n" + proc.stdout + proc.stderr)
        tmp.unlink(missing_ok=True)
        first = next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr.strip()[:200])
        raise CsimError(f"{what} failed to compile: {first} (full log: {log})")
    os.replace(tmp, target)
    return secs


@dataclass
class CsimResult:
    """What one run returns: tokens [n, T, dim] (or [T, dim] for one image), taps, saturation, fetches."""

    tokens: np.ndarray
    taps: dict[str, np.ndarray] = field(default_factory=dict)
    saturation: dict[str, dict[str, int]] = field(default_factory=dict)
    expert_loads: np.ndarray | None = None  # [depth, experts] weight fetches during the run
    seconds: float = 0.0


_LOADED_WEIGHTS: dict[Path, str] = {}
"""Library file → digest of the weights last loaded into it: every CsimLibrary of one file shares the same
loaded copy (ctypes maps it once per process), so an instance skips a reload only when it still holds its own."""


class CsimLibrary:
    """A compiled C-simulation library of one design (load with :func:`build_csim`)."""

    def __init__(self, path: Path, cfg: DesignConfig, native: bool, compile_seconds: float = 0.0,
                 ledger: bool = False) -> None:
        self.path, self.cfg, self.native, self.compile_seconds = Path(path), cfg, native, compile_seconds
        self.ledger = ledger
        lib = ctypes.CDLL(str(self.path))
        lib.m3vit_csim_abi.restype = ctypes.c_int
        if lib.m3vit_csim_abi() != ABI_VERSION:
            raise CsimError(f"{path}: C-simulation ABI {lib.m3vit_csim_abi()} is not {ABI_VERSION}")
        lib.m3vit_csim_design.restype = ctypes.c_char_p
        lib.m3vit_csim_size.restype = ctypes.c_uint64
        lib.m3vit_csim_size.argtypes = [ctypes.c_int]
        lib.m3vit_csim_set_weights.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
        lib.m3vit_csim_run.argtypes = [ctypes.c_uint] * 4 + [ctypes.c_void_p, ctypes.c_uint64] * 2 + [
            ctypes.POINTER(ctypes.c_uint)
        ]
        lib.m3vit_csim_read_scratch.argtypes = [ctypes.c_void_p]
        lib.m3vit_csim_write_scratch.argtypes = [ctypes.c_void_p]
        lib.m3vit_csim_expert_loads.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.m3vit_csim_expert_events.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int]
        lib.m3vit_csim_expert_events.restype = ctypes.c_uint32
        lib.m3vit_csim_error.restype = ctypes.c_char_p
        lib.m3vit_csim_ledger.argtypes = [ctypes.c_char_p, ctypes.c_uint64, ctypes.c_int]
        lib.m3vit_csim_ledger.restype = ctypes.c_uint64
        self._lib = lib
        design = lib.m3vit_csim_design().decode()
        if design != f"{cfg.name}:{cfg.config_hash()}":
            raise CsimError(f"{path} was built for {design}, not {cfg.name}:{cfg.config_hash()}")
        self.sizes = {
            k: int(lib.m3vit_csim_size(i))
            for i, k in enumerate(
                ("weights", "scratch", "image", "tokens", "depth", "experts", "word", "native", "max_images",
                 "tasks")
            )
        }
        sl = scratch_layout(cfg)
        assert self.sizes["scratch"] == sl.total_bytes and self.sizes["image"] == sl.image_bytes
        assert self.sizes["max_images"] == MAX_IMAGES, "the library's MAX_IMAGES is m3vit.codegen.guards'"
        self._weights_key: str | None = None

    # ----------------------------------------------------------------------------------- buffers
    def set_weights(self, packed: np.ndarray | bytes) -> None:
        """Load the packed weight buffer (``m3vit.codegen.layout.pack_weights``, full or task-specialised, which
        is shorter); skipped if unchanged."""
        buf = np.ascontiguousarray(
            np.frombuffer(packed, np.uint8)
            if isinstance(packed, (bytes, bytearray))
            else np.asarray(packed, np.uint8)
        )
        key = hashlib.sha1(buf.data).hexdigest()
        if key == self._weights_key and _LOADED_WEIGHTS.get(self.path) == key:
            return
        if self._lib.m3vit_csim_set_weights(buf.ctypes.data, buf.size) != 0:
            raise CsimError(
                f"weight buffer has {buf.size} bytes; {self.cfg.name} needs a whole number of "
                f"{self.sizes['word']}-byte words, at most {self.sizes['weights']} (a full image)"
            )
        self._weights_key = key
        _LOADED_WEIGHTS[self.path] = key

    def scratch(self) -> np.ndarray:
        """A copy of the scratch buffer (uint8) as the last run left it."""
        out = np.zeros(self.sizes["scratch"], np.uint8)
        self._lib.m3vit_csim_read_scratch(out.ctypes.data)
        return out

    def top(
        self,
        num_images: int,
        task: int,
        first_layer: int,
        last_layer: int,
        weights: np.ndarray,
        scratch: np.ndarray,
        inp: np.ndarray,
        output: np.ndarray,
    ) -> int:
        """The top function on host-owned uint8 buffers, like the IP on DDR: ``scratch`` and ``output``
        are updated in place (a simulated device's ap_start); returns the kernel's ``status`` (0: it ran;
        else the STATUS_* bits of a refused call, m3vit.codegen.guards). Sizes as in weight_layout.json."""
        self.set_weights(weights)
        if scratch.size != self.sizes["scratch"]:
            raise CsimError(
                f"scratch has {scratch.size} bytes; {self.cfg.name} needs {self.sizes['scratch']}"
            )
        self._lib.m3vit_csim_write_scratch(np.ascontiguousarray(scratch, np.uint8).ctypes.data)
        out = np.ascontiguousarray(output, np.uint8).reshape(-1).copy()
        status = self._run(num_images, task, first_layer, last_layer, inp, out)
        output.reshape(-1)[:] = out
        scratch.reshape(-1)[:] = self.scratch()
        return status

    def expert_loads(self, reset: bool = True) -> np.ndarray:
        """Expert weight fetches [depth, experts] since the last reset."""
        out = np.zeros((self.sizes["depth"], max(1, self.sizes["experts"])), np.uint32)
        self._lib.m3vit_csim_expert_loads(out.ctypes.data, int(reset))
        return out.astype(np.int64)

    def expert_events(self, reset: bool = True) -> list[tuple[int, str, int, int]]:
        """The expert-by-expert schedule since the last reset, in the order the concurrent loader and MAC
        processes reached each point: (block, event, slot, expert) with event "fetch" / "fetched" (a weight
        load starts / ends) or "compute" / "computed" (the expert's queue starts / ends on the array)."""
        buf = np.zeros(1 << 16, np.uint32)
        n = self._lib.m3vit_csim_expert_events(buf.ctypes.data, buf.size, int(reset))
        names = {(0, 0): "fetch", (0, 1): "fetched", (1, 0): "compute", (1, 1): "computed"}
        return [
            (int(v) >> 16, names[(int(v) >> 15 & 1, int(v) >> 14 & 1)], int(v) >> 13 & 1, int(v) & 0x1FFF)
            for v in buf[:n]
        ]

    def _run(
        self, num_images: int, task: int, first_layer: int, last_layer: int, inp: np.ndarray, out: np.ndarray
    ) -> int:
        """m3vit_csim_run on ``inp`` and ``out`` (contiguous uint8, ``out`` updated in place); the status."""
        for name, value in (("num_images", num_images), ("task", task), ("first_layer", first_layer),
                            ("last_layer", last_layer)):
            if not 0 <= int(value) <= 0xFFFF_FFFF:
                raise ValueError(f"{name} = {value} does not fit its 32-bit register [0, {0xFFFF_FFFF}]")
        inp = np.ascontiguousarray(inp, np.uint8)
        status = ctypes.c_uint(0)
        rc = self._lib.m3vit_csim_run(
            num_images, task, first_layer, last_layer, inp.ctypes.data, inp.size, out.ctypes.data, out.size,
            ctypes.byref(status),
        )
        if rc == -3:
            raise CsimError(f"C simulation of {self.cfg.name} failed: {self._lib.m3vit_csim_error().decode()}")
        if rc != 0:
            raise CsimError(
                {-1: "no weights loaded (set_weights)", -2: "input/output buffer too small"}.get(rc, rc)
            )
        return int(status.value)

    def call(
        self, num_images: int, task: int, first_layer: int, last_layer: int, inp: np.ndarray
    ) -> np.ndarray:
        """One raw call of the top function; ``inp`` are input-buffer bytes. Returns output bytes; a call the
        kernel refuses (non-zero status) raises CsimError naming the causes."""
        out = np.zeros(max(1, min(num_images, MAX_IMAGES)) * self.sizes["tokens"], np.uint8)
        status = self._run(num_images, task, first_layer, last_layer, inp, out)
        if status:
            raise CsimError(describe_status(self.cfg, status, num_images, task, first_layer, last_layer))
        return out

    def run_ledger(self, weights: np.ndarray | bytes | None, images: np.ndarray, task: int | str
                   ) -> tuple[CsimResult, Ledger]:
        """One whole-image call (every layer) and its cycle ledger: the executed trip count of every
        labelled loop, priced under the declared II and pipeline depths (m3vit.codegen.perf.ledger).
        Needs a library built with ``build_csim(..., ledger=True)``."""
        if not self.ledger:
            raise CsimError(f"{self.path} was built without the cycle ledger: build_csim(..., ledger=True)")
        self.ledger_text(reset=True)
        res = self.run(weights, images, task)
        n = 1 if res.tokens.ndim == 2 else len(res.tokens)
        return res, parse_ledger(self.ledger_text(), self.cfg.name, self.cfg.hardware.clock_mhz, images=n)

    def ledger_text(self, reset: bool = True) -> str:
        """The cycle ledger's raw records since the last reset (tb/m3vit_csim_ledger.h's text lines); parse
        them with ``m3vit.codegen.perf.parse_ledger``."""
        n = int(self._lib.m3vit_csim_ledger(None, 0, 0))
        buf = ctypes.create_string_buffer(n + 1)
        self._lib.m3vit_csim_ledger(buf, n + 1, int(reset))
        return buf.value.decode()

    # ----------------------------------------------------------------------------------- runs
    def run(
        self,
        weights: np.ndarray | bytes | None,
        images: np.ndarray,
        task: int | str,
        first_layer: int = 0,
        last_layer: int | None = None,
        taps: bool = False,
    ) -> CsimResult:
        """Run layers [first_layer, last_layer] (0 = patch embedding, i + 1 = block i; default: all).

        ``images``: input-format integer images [C, H, W] or [n, C, H, W] when ``first_layer`` is 0, else
        act-format tokens [T, dim] or [n, T, dim], 1 ≤ n ≤ MAX_IMAGES (a call the kernel refuses raises
        CsimError naming the cause). With ``taps`` (one input only) the layers run one call
        each, every call fed with the previous one's output, and every golden tap name is read back from the
        scratch buffer after its layer. Returns tokens of the same batch shape as ``images``.
        """
        cfg, m = self.cfg, self.cfg.model
        if weights is not None:
            self.set_weights(weights)
        t = m.task_index(task)
        last = m.depth if last_layer is None else last_layer
        if not 0 <= first_layer <= last <= m.depth:
            raise ValueError(f"layer range [{first_layer}, {last}] is not within [0, {m.depth}]")
        arr = np.asarray(images)
        single = arr.ndim == (3 if first_layer == 0 else 2)
        batch = arr[None] if single else arr
        pack = pack_images if first_layer == 0 else pack_tokens
        self.expert_loads(reset=True)
        self.expert_events(reset=True)
        t0 = time.perf_counter()
        res = CsimResult(tokens=np.empty(0))
        if not taps:
            out = self.call(len(batch), t, first_layer, last, pack(cfg, batch))
            tokens = unpack_tokens(cfg, out, len(batch))
            res.saturation = read_saturation(cfg, self.scratch())
        else:
            if len(batch) != 1:
                raise ValueError("taps=True runs one input at a time")
            sl = scratch_layout(cfg)
            buf = pack(cfg, batch)
            for layer in range(first_layer, last + 1):
                out = self.call(1, t, layer, layer, buf)
                scratch = self.scratch()
                for name in layer_taps(cfg, layer):
                    res.taps[name] = sl.tap_region(name).read(scratch)
                for lname, counts in read_saturation(cfg, scratch).items():
                    res.saturation[lname] = counts
                buf = out
            tokens = unpack_tokens(cfg, buf, 1)
        res.seconds = time.perf_counter() - t0
        res.expert_loads = self.expert_loads(reset=True)
        res.tokens = tokens[0] if single else tokens
        return res


def build_csim(
    project_dir: str | Path,
    native: bool = True,
    cache_dir: str | Path | None = None,
    cfg: DesignConfig | None = None,
    ledger: bool = False,
) -> CsimLibrary:
    """Compile (or reuse from the cache) the C-simulation library of a generated project; ``ledger`` builds
    the cycle-ledger variant (every labelled loop counts its trips: slower, see docs/hls.md).

    ``cfg`` defaults to the config the project was generated from (read back from weight_layout.json's
    design name is not enough, so pass it when the design is not a preset).
    """
    project = Path(project_dir)
    if cfg is None:
        cfg = _project_config(project)
    ap = ap_types_dir()
    flags = [*CXXFLAGS, *(["-DM3VIT_NATIVE_TYPES"] if native else []), *([f"-D{LEDGER_DEFINE}"] if ledger else [])]
    key = source_hash(project, *flags, "lib")
    target = Path(cache_dir or CACHE_DIR) / key / "libm3vit_csim.so"
    secs = 0.0
    if not target.exists():
        cmd = [
            CXX,
            *flags,
            "-shared",
            f"-I{project / 'src'}",
            f"-I{project / 'tb'}",
            f"-I{ap}",
            str(project / TOP_SOURCE),
            str(project / API_SOURCE),
        ]
        secs = _compile(cmd, target, f"C-simulation library of {cfg.name}")
    return CsimLibrary(target, cfg, native, secs, ledger=ledger)


def build_testbench(
    project_dir: str | Path, native: bool = False, cache_dir: str | Path | None = None
) -> Path:
    """Compile the project's standalone testbench (``tb_m3vit DATA_DIR [--no-layers | --through L]``); returns
    its path."""
    project = Path(project_dir)
    ap = ap_types_dir()
    flags = [f for f in CXXFLAGS if f not in ("-fPIC", "-fvisibility=hidden")]
    flags += ["-DM3VIT_NATIVE_TYPES"] if native else []
    key = source_hash(project, *flags, "tb")
    target = Path(cache_dir or CACHE_DIR) / key / "tb_m3vit"
    if not target.exists():
        cmd = [
            CXX,
            *flags,
            f"-I{project / 'src'}",
            f"-I{project / 'tb'}",
            f"-I{ap}",
            str(project / TOP_SOURCE),
            str(project / TB_SOURCE),
        ]
        _compile(cmd, target, "C-simulation testbench")
    local = project / "tb_m3vit"
    shutil.copyfile(target, local)
    local.chmod(0o755)
    return local


def _project_config(project: Path) -> DesignConfig:
    import json

    doc = json.loads((project / "weight_layout.json").read_text())
    cfg = load_config(doc["design"])
    if cfg.config_hash() != doc["config_hash"]:
        raise CsimError(
            f"{project} was generated from a config that is not the preset {doc['design']!r}; pass cfg="
        )
    return cfg


# ------------------------------------------------------------------------------------ testbench data
def write_testbench_data(
    project_dir: str | Path,
    cfg: DesignConfig,
    packed_weights: np.ndarray,
    cases: list[tuple[str, int, np.ndarray, object]],
) -> Path:
    """Write ``data/`` for the testbench: weights.bin, manifest.txt and, per case, the packed input image
    and the golden taps (little-endian int32). ``cases``: (name, task, int image [C, H, W], GoldenResult)."""
    data = Path(project_dir) / "data"
    data.mkdir(parents=True, exist_ok=True)
    np.asarray(packed_weights, np.uint8).tofile(data / "weights.bin")
    lines = []
    for name, task, image, golden in cases:
        (data / name).mkdir(exist_ok=True)
        pack_images(cfg, image).tofile(data / f"{name}.input.bin")
        np.asarray(golden.tokens, "<i4").tofile(data / name / "tokens.bin")
        for tap, value in golden.taps.items():
            np.asarray(value, "<i4").tofile(data / name / f"{tap}.bin")
        lines.append(f"case {name} {task} {name}.input.bin")
    (data / "manifest.txt").write_text("\n".join(lines) + "\n")
    return data


def run_testbench(tb: Path, data: Path, layers: bool = True, through: int | None = None) -> subprocess.CompletedProcess:
    """Run the standalone testbench on ``data`` (``through``: layers 0 … L in one call, as run_hls.tcl's
    co-simulation of a large design); the result's returncode is 0 when everything matched."""
    args = ["--through", str(through)] if through is not None else ([] if layers else ["--no-layers"])
    return subprocess.run([str(tb), str(data), *args], capture_output=True, text=True)


# ------------------------------------------------------------------------------------ comparison
def compare_taps(golden_taps: dict[str, np.ndarray], csim_taps: dict[str, np.ndarray]) -> list[str]:
    """Names of golden taps that the C simulation did not reproduce exactly (missing ones included)."""
    bad = []
    for name, want in golden_taps.items():
        got = csim_taps.get(name)
        if got is None or got.shape != want.shape or not np.array_equal(got, want):
            bad.append(name)
    return bad


def random_model(cfg: DesignConfig, seed: int = 0):
    """A QuantizedModel of random weights at trained scale (m3vit.sim.reference) for tests and demos."""
    from m3vit.sim.quantize import quantize_state_dict
    from m3vit.sim.reference import build_reference

    return quantize_state_dict(cfg, build_reference(cfg, seed).state_dict())


# ------------------------------------------------------------------------------------ benchmark
def bench_csim(
    configs: tuple[str, ...] = ("tiny", "m3vit_small_pascal"), task: int = 0, rounds: int = 3
) -> list[dict[str, float | str]]:
    """Print and return, per design: g++ compile time of the C-simulation library (a fresh build, not
    the cache), and the per-image time of the C simulation next to the golden model's (one image, one
    task, full size; median of ``rounds`` for designs under 100 tokens, one run otherwise)."""
    import statistics

    from m3vit.codegen.hls import generate_project
    from m3vit.codegen.layout import pack_weights
    from m3vit.sim.golden import GoldenModel

    rows: list[dict[str, float | str]] = []
    for name in configs:
        cfg = load_config(name)
        project = generate_project(cfg, build_dir("bench", cfg.name))
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            lib = build_csim(project, cfg=cfg, cache_dir=tmp)
            compile_s = time.perf_counter() - t0
            qmodel = random_model(cfg, 0)
            packed = pack_weights(cfg, qmodel)
            golden = GoldenModel(cfg, qmodel)
            image = random_quantized_image(cfg, 0)
            n = rounds if cfg.model.num_tokens < 100 else 1
            lib.set_weights(packed)
            csim_t, gold_t = [], []
            for _ in range(n):
                res = lib.run(None, image, task)
                csim_t.append(res.seconds)
                t0 = time.perf_counter()
                g = golden.run(image, task, taps=False)
                gold_t.append(time.perf_counter() - t0)
            exact = bool(np.array_equal(res.tokens, g.tokens))
        row = {
            "design": cfg.name,
            "tokens": cfg.model.num_tokens,
            "compile_s": compile_s,
            "csim_s_per_image": statistics.median(csim_t),
            "golden_s_per_image": statistics.median(gold_t),
            "bit_exact": exact,
        }
        rows.append(row)
        print(
            f"[csim] {cfg.name}: {cfg.model.num_tokens} tokens, task {cfg.model.task_names[task]}: "
            f"g++ compile {compile_s:.1f} s, C simulation {row['csim_s_per_image']:.3f} s/image, "
            f"golden model {row['golden_s_per_image']:.3f} s/image, bit-exact {exact}"
        )
    return rows


def baseline_project(project: str | Path, ref: str, dest: str | Path) -> Path:
    """A copy of a generated project at ``dest`` whose files from ``hls/`` (kernel headers, C-sim API and
    headers) are those of git revision ``ref`` of the source checkout (a file that ``ref`` lacks keeps
    today's copy); the generated files (m3vit_config.h, the top and testbench sources) stay. Raises
    CsimError when ``ref`` is not a revision of the checkout that holds ``hls/``."""
    from m3vit.codegen.hls import CSIM_API, CSIM_HEADERS, HLS_DIR, KERNEL_HEADERS

    def git(*args: str) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(["git", "-C", str(HLS_DIR), *args], capture_output=True)
        except OSError:
            raise CsimError("baseline headers need git (not found)") from None

    check = git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if check.returncode != 0:
        raise CsimError(f"baseline {ref!r} is not a git revision of the checkout holding {HLS_DIR}")
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(project, dest)
    files = [("src", h) for h in KERNEL_HEADERS] + [("tb", h) for h in (CSIM_API, *CSIM_HEADERS)]
    for folder, name in files:
        old = git("show", f"{ref}:./{name}")
        if old.returncode == 0:
            (dest / folder / name).write_bytes(old.stdout)
    return dest


def bench_csim_baseline(
    config: str = "m3vit_small_pascal_dse", baseline: str = "main", rounds: int = 1, task: int = 0
) -> dict[str, float | str | bool]:
    """C-simulation CPU seconds per image of the working tree's kernel headers next to git revision
    ``baseline``'s (same generated config, same flags), the two libraries run alternately ``rounds`` times
    in this process; prints the medians and their ratio (CPU time of every thread: the machine may be
    shared). Both must give the same tokens and saturation counts."""
    import statistics

    from m3vit.codegen.hls import generate_project
    from m3vit.codegen.layout import pack_weights

    cfg = load_config(config)
    project = generate_project(cfg, build_dir("bench", cfg.name))
    base = baseline_project(project, baseline, build_dir("bench", f"{cfg.name}@baseline"))
    try:
        libs = {"baseline": build_csim(base, cfg=cfg), "working tree": build_csim(project, cfg=cfg)}
    except CsimError as err:
        raise CsimError(f"{err} (a baseline's headers must match today's generated m3vit_config.h)") from None
    packed = pack_weights(cfg, random_model(cfg, 0))
    image = random_quantized_image(cfg, 0)
    cpu: dict[str, list[float]] = {name: [] for name in libs}
    results: dict[str, CsimResult] = {}
    for lib in libs.values():
        lib.set_weights(packed)
    for _ in range(rounds):
        for name, lib in libs.items():
            t0 = time.process_time()
            results[name] = lib.run(None, image, task)
            cpu[name].append(time.process_time() - t0)
    same = bool(np.array_equal(results["baseline"].tokens, results["working tree"].tokens)
                and results["baseline"].saturation == results["working tree"].saturation)
    old, new = (statistics.median(cpu[name]) for name in libs)
    print(
        f"[csim vs {baseline}] {cfg.name}: {cfg.model.num_tokens} tokens, task {cfg.model.task_names[task]}, "
        f"median of {rounds}: baseline {old:.2f} s CPU/image, working tree {new:.2f} s CPU/image, "
        f"ratio {old / new:.2f}x; same tokens and saturation {same}"
    )
    return {"design": cfg.name, "baseline": baseline, "baseline_cpu_s": old, "cpu_s": new,
            "ratio": old / new, "same": same}


bench = bench_csim
"""``make bench`` entry point (m3vit.explore.bench looks for ``m3vit.sim.csim.bench``)."""


# ------------------------------------------------------------------------------------ CLI
def main(argv: list[str] | None = None) -> int:
    """Generate, compile and C-simulate a design against the golden model for every task."""
    from tqdm import tqdm

    from m3vit.codegen.config import ConfigError
    from m3vit.codegen.hls import generate_project
    from m3vit.codegen.layout import pack_weights
    from m3vit.sim.golden import GoldenModel

    ap = argparse.ArgumentParser(prog="python -m m3vit.sim.csim", description=main.__doc__)
    ap.add_argument("config", help="config file or preset name")
    ap.add_argument("-o", "--out", help="project directory (default build/<name>)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random weights and image")
    ap.add_argument(
        "--ap-types", action="store_true", help="compile with ap_int types instead of native ones"
    )
    ap.add_argument(
        "--no-layers", action="store_true", help="compare the final tokens only (no per-layer taps)"
    )
    ap.add_argument(
        "--ledger",
        action="store_true",
        help="write ledger.json: the cycle ledger of one whole-image call of the first task (trip counts "
        "measured, cycles estimated), printed per step next to perf.evaluate's steps",
    )
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config)
        project = generate_project(cfg, args.out or build_dir(cfg.name))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        t0 = time.perf_counter()
        lib = build_csim(project, native=not args.ap_types, cfg=cfg)
        tb = build_testbench(project, native=not args.ap_types)
        print(f"{project}: compiled in {time.perf_counter() - t0:.1f} s ({lib.path.parent.name})")
    except CsimError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    qmodel = random_model(cfg, args.seed)
    packed = pack_weights(cfg, qmodel)
    golden = GoldenModel(cfg, qmodel)
    image = random_quantized_image(cfg, args.seed)
    failures, cases = 0, []
    for task in tqdm(cfg.model.task_names, desc="tasks", leave=False):
        g = golden.run(image, task)
        res = lib.run(packed, image, task, taps=not args.no_layers)
        bad = compare_taps(g.taps, res.taps) if not args.no_layers else []
        if not np.array_equal(res.tokens, g.tokens):
            bad.append("tokens")
        if res.saturation != g.saturation:
            bad.append("saturation")
        failures += bool(bad)
        tqdm.write(
            f"task {task}: {'FAIL ' + ', '.join(bad[:5]) if bad else 'bit-exact'} "
            f"({len(g.taps) if not args.no_layers else 0} taps, {res.seconds:.2f} s)"
        )
        cases.append((task, cfg.model.task_index(task), image, g))
    data = write_testbench_data(project, cfg, packed, cases)
    proc = run_testbench(tb, data, layers=not args.no_layers)
    print(
        f"testbench: {proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr.strip()}"
    )
    failures += proc.returncode != 0
    if args.ledger:
        try:
            t0 = time.perf_counter()
            led = build_csim(project, native=not args.ap_types, cfg=cfg, ledger=True)
            print(f"ledger build: compiled in {time.perf_counter() - t0:.1f} s ({led.path.parent.name})")
        except CsimError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        failures += not write_ledger_report(led, cfg, packed, image, golden, project)
    return 1 if failures else 0


def write_ledger_report(
    lib: CsimLibrary, cfg: DesignConfig, packed: np.ndarray, image: np.ndarray, golden, project: Path
) -> bool:
    """Run the first task's whole image once for its cycle ledger, write ``project/ledger.json`` and print
    its steps next to ``perf.evaluate``'s (same routing) and whether ``perf.hls_loop_model`` predicted every
    measured trip count. Returns False when the C simulation or the trip-count check fails."""
    task = cfg.model.task_names[0]
    t0 = time.perf_counter()
    try:
        res, ledger = lib.run_ledger(packed, image, task)
    except CsimError as err:
        print(f"error: {err}", file=sys.stderr)
        return False
    secs = time.perf_counter() - t0
    g = golden.run(image, task, taps=False)
    loads = {b: [int(n) for n in r.load] for b, r in g.routing.items()}
    path = ledger.write(project / "ledger.json")
    report = perf.evaluate(cfg, loads)
    print(perf.format_ledger_steps(ledger, report.step_cycles()))
    model = perf.hls_loop_model(cfg, loads)
    measured = ledger.trip_counts()
    bad = [
        f"{label}: measured {sorted(trips)}, model {list(model[label].trips) if label in model else 'none'}"
        for label, trips in sorted(measured.items())
        if label not in model or tuple(sorted(trips)) != model[label].trips
    ]
    bad += [f"{label}: model {list(lm.trips)}, never executed" for label, lm in model.items() if label not in measured]
    print(
        f"ledger: {path} (task {task}, {secs:.1f} s); image {ledger.cycles:,.0f} cycles = {ledger.latency_ms:.2f} ms "
        f"estimated vs perf.evaluate {report.cycles:,} cycles = {report.latency_ms:.2f} ms; trip counts of "
        f"{len(measured)} loop labels {'equal perf.hls_loop_model' if not bad else 'DIFFER: ' + '; '.join(bad)}"
    )
    return not bad and np.array_equal(res.tokens, g.tokens)


__all__ = [
    "CsimError",
    "CsimLibrary",
    "CsimResult",
    "ap_types_dir",
    "bench",
    "bench_csim",
    "build_csim",
    "build_testbench",
    "compare_taps",
    "random_model",
    "run_testbench",
    "write_testbench_data",
]

if __name__ == "__main__":
    raise SystemExit(main())
