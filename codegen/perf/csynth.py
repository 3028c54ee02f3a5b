"""Vitis HLS csynth reports next to the model: the report reader, the loop model of the HLS kernels and
their comparison, loop by loop."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from m3vit.codegen.bits import ceil_div
from m3vit.codegen.config import DesignConfig


# ------------------------------------------------------------------------------------ Vitis reports
@dataclass(frozen=True)
class CsynthLoop:
    """One loop of a Vitis HLS csynth report; ranges are (min, max), None where the report says undef."""

    module: str
    name: str
    path: str  # enclosing loops, "OUTER/INNER"
    trip_count: tuple[int, int] | None
    latency: tuple[int, int] | None
    iteration_latency: tuple[int, int] | None
    ii: int | None
    depth: int | None


@dataclass(frozen=True)
class CsynthReport:
    """What :func:`parse_csynth` reads from a ``csynth.xml``."""

    top: str
    part: str
    target_clock_ns: float | None
    estimated_clock_ns: float | None
    latency: tuple[int, int] | None
    resources: dict[str, int]
    loops: list[CsynthLoop]


_LOOP_FIELDS = {"TripCount", "Latency", "IterationLatency", "PipelineII", "PipelineDepth", "Slack",
                "AbsoluteTimeLatency", "InstanceList", "Name", "PipelineType"}


def _range(text: str | None) -> tuple[int, int] | None:
    """"12" → (12, 12); "1 ~ 1024" → (1, 1024); "undef", "-", "" → None."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split("~")]
    try:
        vals = [int(float(p)) for p in parts]
    except ValueError:
        return None
    return (min(vals), max(vals))


def _loops(elem: ET.Element, module: str, prefix: str) -> list[CsynthLoop]:
    out = []
    for child in elem:
        if child.tag in _LOOP_FIELDS:
            continue
        name = child.findtext("Name") or child.tag
        ii = _range(child.findtext("PipelineII"))
        depth = _range(child.findtext("PipelineDepth"))
        path = f"{prefix}/{name}" if prefix else name
        out.append(CsynthLoop(
            module=module, name=name, path=path, trip_count=_range(child.findtext("TripCount")),
            latency=_range(child.findtext("Latency")), iteration_latency=_range(child.findtext("IterationLatency")),
            ii=None if ii is None else ii[1], depth=None if depth is None else depth[1]))
        out += _loops(child, module, path)
    return out


def parse_csynth(path: str | Path) -> CsynthReport:
    """Read a Vitis HLS ``csynth.xml`` (solution/syn/report/): top, clocks, latency, resources and every loop
    of the top and of each module (``ModuleInformation``), nested loops included."""
    root = ET.parse(path).getroot()
    top = root.findtext("UserAssignments/TopModelName") or ""
    perf_el = root.find("PerformanceEstimates")
    loops: list[CsynthLoop] = []
    if perf_el is not None and perf_el.find("SummaryOfLoopLatency") is not None:
        loops += _loops(perf_el.find("SummaryOfLoopLatency"), top, "")
    for mod in root.findall("ModuleInformation/Module"):
        mname = mod.findtext("Name") or ""
        sol = mod.find("PerformanceEstimates/SummaryOfLoopLatency")
        if sol is not None and mname != top:
            loops += _loops(sol, mname, "")
    res_el = root.find("AreaEstimates/Resources")
    resources: dict[str, int] = {}
    if res_el is not None:
        for child in res_el:
            if child.tag.startswith(("AVAIL_", "UTIL_")):
                continue
            v = _range(child.text)
            if v is not None:
                resources["DSP" if child.tag == "DSP48E" else child.tag] = v[1]

    def _f(text: str | None) -> float | None:
        try:
            return float(text) if text is not None else None
        except ValueError:
            return None

    return CsynthReport(
        top=top, part=root.findtext("UserAssignments/Part") or "",
        target_clock_ns=_f(root.findtext("UserAssignments/TargetClockPeriod")),
        estimated_clock_ns=_f(root.findtext("PerformanceEstimates/SummaryOfTimingAnalysis/EstimatedClockPeriod")),
        latency=_range(root.findtext("PerformanceEstimates/SummaryOfOverallLatency/Worst-caseLatency")),
        resources=resources, loops=loops)


@dataclass(frozen=True)
class LoopModel:
    """What the model expects of one loop label of the HLS kernels (hls/*.h): its possible trip counts
    (one per place the label is instantiated) and its initiation interval."""

    trips: tuple[int, ...]
    ii: int | None
    what: str


def hls_loop_model(cfg: DesignConfig) -> dict[str, LoopModel]:
    """Expected trip counts and II of the labelled loops of the HLS kernels as written in hls/ (their
    maximum trip count where the count depends on run-time data such as a queue length)."""
    m, hw = cfg.model, cfg.hardware
    mi, mo, tt, kb = hw.mac_in, hw.mac_out, hw.token_tile, hw.attn_key_block
    t, d, e = m.num_tokens, m.dim, m.expert_hidden

    def it(k: int) -> int:
        return ceil_div(k, mi)

    def ot(n: int) -> int:
        return ceil_div(n, mo)

    lin = [(m.patch_dim, d), (d, 3 * d), (d, d), (d, m.mlp_hidden), (m.mlp_hidden, d), (d, m.num_experts)]
    exp = [(d, e), (e, d)]
    mats = lin + (exp if m.moe_block_set else [])
    return {
        "MAC_IT": LoopModel(tuple(sorted({it(k) for k, _ in mats})), 1, "in-tiles per output tile and token"),
        "MAC_OT": LoopModel(tuple(sorted({ot(n) for _, n in mats})), None, "output tiles per matmul"),
        "MAC_T": LoopModel((tt,), None, "tokens of a tile"),
        "LOAD_TILES": LoopModel(tuple(sorted({ot(n) * it(k) * mo * mi for k, n in mats})), 1,
                                "weight lanes per load (one per cycle)"),
        "LIN_TILES": LoopModel((ceil_div(t, tt), ceil_div(m.num_patches, tt)), None, "token tiles of a linear stage"),
        "ATT_QTILES": LoopModel((ceil_div(t, tt),), None, "query tiles"),
        "ATT_KBLOCKS": LoopModel((ceil_div(t, kb),), None, "key blocks per query tile"),
        "ATT_SCORES": LoopModel((min(kb, t),), 1, "keys of a block (one score per cycle)"),
        "ATT_PV": LoopModel((min(kb, t),), 1, "keys of a block (one p·v row per cycle)"),
        "ATT_RESCALE": LoopModel((m.head_dim,), 1, "head dims rescaled by α"),
        "RT_EXP": LoopModel((m.num_experts,), 1, "router softmax over experts"),
        "RT_GATE": LoopModel((m.num_experts,), 1, "gate weights"),
        "EX_TILES": LoopModel((ceil_div(t, tt),), None, "token tiles of the longest possible queue"),
        "EX_LOOP": LoopModel((m.num_experts,), None, "used experts (at most N)"),
        "RT_TILES": LoopModel((ceil_div(t, tt),), None, "token tiles routed"),
        "EMB_TILES": LoopModel((ceil_div(m.num_patches, tt),), None, "patch tiles"),
        "LN_ROWS": LoopModel((t,), None, "rows normalised"),
        "LN_STATS": LoopModel((d,), 1, "S1, S2 of a row"),
        "LN_NORM": LoopModel((d,), 1, "normalised elements of a row"),
        "LIN_GELU": LoopModel((m.mlp_hidden,), 1, "GELU of a hidden row"),
        "EX_GELU": LoopModel((tt,), None, "tokens of a tile (GELU of each hidden row, pipelined inside)"),
        "RES_ROWS": LoopModel((t,), None, "residual rows"),
        "MF_ROWS": LoopModel((t,), None, "MoE finish rows"),
        "ISQRT": LoopModel((32,), 1, "digit-by-digit square root"),
    }


@dataclass(frozen=True)
class LoopComparison:
    loop: CsynthLoop
    model: LoopModel
    trip_ok: bool | None  # None: the report gives no trip count
    ii_ok: bool | None

    @property
    def ok(self) -> bool:
        return self.trip_ok is not False and self.ii_ok is not False


def compare_csynth(cfg: DesignConfig, report: CsynthReport | str | Path) -> list[LoopComparison]:
    """Each loop of a csynth report that the model knows (by label; Vitis suffixes like ``_1`` or ``.2``
    ignored) next to the model's trip counts and II."""
    rep = report if isinstance(report, CsynthReport) else parse_csynth(report)
    model = hls_loop_model(cfg)
    out = []
    for lp in rep.loops:
        label = lp.name.split(".")[0]
        key = label if label in model else label.rsplit("_", 1)[0] if label.rsplit("_", 1)[0] in model else None
        if key is None:
            continue
        lm = model[key]
        trip_ok = None if lp.trip_count is None else (lp.trip_count[1] in lm.trips or lp.trip_count[1] <= max(lm.trips))
        ii_ok = None if lm.ii is None or lp.ii is None else lp.ii == lm.ii
        out.append(LoopComparison(lp, lm, trip_ok, ii_ok))
    return out


def format_csynth_comparison(rows: Sequence[LoopComparison]) -> str:
    """Markdown table of :func:`compare_csynth`."""
    lines = ["| module | loop | report trips | model trips | report II | model II | report latency | ok |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lp = r.loop
        tc = "undef" if lp.trip_count is None else f"{lp.trip_count[0]}~{lp.trip_count[1]}"
        lat = "undef" if lp.latency is None else f"{lp.latency[0]}~{lp.latency[1]}"
        lines.append(f"| {lp.module} | {lp.path} | {tc} | {', '.join(map(str, r.model.trips))} | "
                     f"{'' if lp.ii is None else lp.ii} | {'' if r.model.ii is None else r.model.ii} | {lat} | "
                     f"{'yes' if r.ok else 'NO'} |")
    return "\n".join(lines)


