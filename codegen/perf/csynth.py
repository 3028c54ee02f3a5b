"""Vitis HLS csynth reports next to the model: the report reader, the loop model of the HLS kernels and
their comparison, loop by loop."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from m3vit.codegen.bits import ceil_div
from m3vit.codegen.config import DesignConfig
from m3vit.codegen.layout import SAT_CLASSES, scratch_layout
from m3vit.codegen.perf.arch import tile_lengths
from m3vit.codegen.perf.ledger import Ledger, read_ledger
from m3vit.codegen.perf.timeline import balanced_loads


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
    """What the model expects of one loop label of the HLS kernels (hls/*.h): the distinct trip counts its
    entries take over one image (every place the label is instantiated) and its initiation interval
    (None: not pipelined)."""

    trips: tuple[int, ...]
    ii: int | None
    what: str


def hls_loop_model(cfg: DesignConfig, loads: Mapping[int, Sequence[int]] | None = None,
                   images: int = 1) -> dict[str, LoopModel]:
    """The trip counts and II of every labelled loop of the HLS kernels as written in hls/, for one call of
    the top function over ``images`` images and every layer. ``loads`` maps each MoE block to its experts'
    queue lengths (the routing of the image; default: balanced, as :func:`m3vit.codegen.perf.evaluate`).
    The cycle ledger of a C simulation measures the same loops (tests/test_ledger.py)."""
    m, hw = cfg.model, cfg.hardware
    mi, mo, tt, kb = hw.mac_in, hw.mac_out, hw.token_tile, hw.attn_key_block
    t, d, eh, ne, k = m.num_tokens, m.dim, m.expert_hidden, m.num_experts, m.top_k
    moe = [b for b in range(m.depth) if m.is_moe(b)]
    dense = len(moe) < m.depth
    queues = {b: [int(n) for n in (balanced_loads(t, ne, k) if loads is None or b not in loads else loads[b])]
              for b in moe}
    used = [[n for n in queues[b] if n > 0] for b in moe]
    expert_rows = [n for q in used for n in q]
    words = scratch_layout(cfg).token_bytes * 8 // hw.axi_data_bits

    def it(n: int) -> int:
        return ceil_div(n, mi)

    def ot(n: int) -> int:
        return ceil_div(n, mo)

    def tiles(*rows: int) -> tuple[int, ...]:
        return tuple(sorted({x for n in rows for x in tile_lengths(n, tt)}))

    def s(*vals: int) -> tuple[int, ...]:
        return tuple(sorted(set(vals)))

    mats = [(m.patch_dim, d), (d, 3 * d), (d, d)]  # (in, out): patch embedding, qkv, proj
    mats += [(d, m.mlp_hidden), (m.mlp_hidden, d)] if dense else []
    mats += [(d, ne)] if moe else []
    mats += [(d, eh), (eh, d)] if expert_rows else []
    out: dict[str, LoopModel] = {
        # top level and DMA: rows of every on-chip ↔ DDR transfer (bias, γ/β, pos, image segment, saturation)
        "SAT_ZERO": LoopModel((m.depth + 1,), None, "saturation rows cleared (one per layer)"),
        "IMAGES": LoopModel((images,), None, "images of the call"),
        "LAYERS": LoopModel((m.depth + 1,), None, "layers of an image (embedding + blocks)"),
        "COPY": LoopModel((words,), 1, "AXI words of a token matrix (output copy)"),
        "DMA_READ": LoopModel(s(len(SAT_CLASSES), d, m.patch_size, 3 * d, *([m.mlp_hidden] if dense else []),
                                *([ne] if moe else []), *([eh] if expert_rows else [])), 1,
                              "elements of a vector read (biases, LN parameters, pos, image segment, rows)"),
        "DMA_WRITE": LoopModel(s(len(SAT_CLASSES), d), 1, "elements of a vector written"),
        "DMA_READ_ROW": LoopModel(s(d, *([m.mlp_hidden] if dense else [])), 1, "elements of a token row read"),
        "DMA_WRITE_ROW": LoopModel(s(d, 3 * d, *([m.mlp_hidden] if dense else []), *([ne] if moe else [])), 1,
                                   "elements of a token row written"),
        "LOAD_TILES": LoopModel(s(*(ot(n) * it(kk) * mo * mi for kk, n in mats)), 1,
                                "weight lanes of a matrix (one per cycle)"),
        # MAC engine
        "MAC_OT": LoopModel(s(*(ot(n) for _, n in mats)), None, "output tiles per matmul"),
        "MAC_T": LoopModel(tiles(t, m.num_patches, *expert_rows), None, "tokens of a tile"),
        "MAC_IT": LoopModel(s(*(it(kk) for kk, _ in mats)), 1, "in-tiles per output tile and token"),
        # patch embedding
        "EMB_TILES": LoopModel((ceil_div(m.num_patches, tt),), None, "patch tiles"),
        "EMB_GATHER": LoopModel(tiles(m.num_patches), None, "patches of a tile"),
        "EMB_ROWS": LoopModel((m.patch_size,), None, "pixel rows of a patch and channel"),
        "EMB_PIXELS": LoopModel((m.patch_size,), 1, "pixels of a patch row"),
        "EMB_POS": LoopModel(tiles(m.num_patches), None, "tokens of a tile (+ pos)"),
        "EMB_POS_ADD": LoopModel((d,), 1, "elements of a token (+ pos)"),
        # LayerNorm
        "LN_ROWS": LoopModel((t,), None, "rows normalised"),
        "LN_STATS": LoopModel((d,), 1, "S1, S2 of a row"),
        "LN_NORM": LoopModel((d,), 1, "normalised elements of a row"),
        "ISQRT": LoopModel((32,), 1, "digit-by-digit square root"),
        # linear stages and residual
        "LIN_TILES": LoopModel((ceil_div(t, tt),), None, "token tiles of a linear stage"),
        "LIN_LOAD": LoopModel(tiles(t), None, "rows of a tile read"),
        "LIN_STORE": LoopModel(tiles(t), None, "rows of a tile written"),
        "LIN_RES": LoopModel((d,), 1, "residual add of a proj row"),
        "RES_ROWS": LoopModel((t,), None, "residual rows"),
        "RES_ADD": LoopModel((d,), 1, "elements of a residual row"),
        "LIN_GELU": LoopModel((m.mlp_hidden,), 1, "GELU of a hidden row") if dense else None,
        # attention
        "ATT_QTILES": LoopModel((ceil_div(t, tt),), None, "query tiles"),
        "ATT_KBLOCKS": LoopModel((ceil_div(t, kb),), None, "key blocks per query tile"),
        "ATT_HEADS": LoopModel((m.num_heads,), None, "heads per key block"),
        "ATT_QUERIES": LoopModel(tiles(t), None, "queries of a tile per head and key block"),
        "ATT_SCORES": LoopModel(tuple(sorted(set(tile_lengths(t, kb)))), 1, "keys of a block (one score per cycle)"),
        "ATT_PV": LoopModel(tuple(sorted(set(tile_lengths(t, kb)))), 1, "keys of a block (one p·v row per cycle)"),
        "ATT_RESCALE": LoopModel((m.head_dim,), 1, "head dims rescaled by α") if t > kb else None,
        "ATT_FINAL": LoopModel(tiles(t), None, "queries of a tile normalised"),
        "ATT_FINAL_HEADS": LoopModel((m.num_heads,), None, "heads of a query (one RECIP each)"),
        "ATT_OUT": LoopModel((m.head_dim,), 1, "context elements of a head"),
    }
    if moe:
        out.update({
            "RT_TILES": LoopModel((ceil_div(t, tt),), None, "token tiles routed"),
            "RT_TOKENS": LoopModel(tiles(t), None, "tokens of a tile routed"),
            "RT_EXP": LoopModel((ne,), 1, "router softmax over experts"),
            "RT_GATE": LoopModel((ne,), 1, "gate weights"),
            "RT_TOPK": LoopModel((k,), None, "top-K selections of a token"),
            "RT_SCAN": LoopModel((ne,), 1, "experts scanned per selection"),
            "RT_OFFSETS": LoopModel((ne,), None, "queue starts (counting sort)"),
            "RT_FILL": LoopModel((t,), None, "tokens enqueued"),
            "RT_FILL_K": LoopModel((k,), 1, "entries of a token enqueued"),
            "MF_ROWS": LoopModel((t,), None, "MoE finish rows"),
            "MF_REQ": LoopModel((d,), 1, "elements of a finished row"),
        })
    if expert_rows:
        out.update({
            "EX_LOOP": LoopModel(s(*(len(u) for u in used)), None, "used experts of an MoE block"),
            "EX_TILES": LoopModel(s(*(ceil_div(n, tt) for n in expert_rows)), None, "token tiles of a queue"),
            "EX_GATHER": LoopModel(tiles(*expert_rows), None, "queue entries of a tile gathered"),
            "EX_GELU": LoopModel(tiles(*expert_rows), None, "tokens of a tile (GELU of each hidden row)"),
            "EX_GELU_ROW": LoopModel((eh,), 1, "GELU of an expert hidden row"),
            "EX_SCATTER": LoopModel(tiles(*expert_rows), None, "queue entries of a tile accumulated"),
            "EX_ACC": LoopModel((d,), 1, "elements of a gate-weighted accumulation"),
        })
    return {label: lm for label, lm in out.items() if lm is not None}


@dataclass(frozen=True)
class LoopComparison:
    loop: CsynthLoop
    model: LoopModel
    trip_ok: bool | None  # None: the report gives no trip count
    ii_ok: bool | None

    @property
    def ok(self) -> bool:
        return self.trip_ok is not False and self.ii_ok is not False


def csynth_from_ledger(ledger: Ledger) -> CsynthReport:
    """A cycle ledger in the shape of a csynth report: one loop per (process, label) with its measured trip
    range, its estimated cycles as latency, its declared II and pipeline depth (no resources, no clocks
    beyond the design's; the latency is the ledger's image estimate)."""
    loops = []
    by_key: dict[tuple[str, str], list] = {}
    for p in ledger.processes:
        for lp in p.loops:
            by_key.setdefault((p.name, lp.label), []).append(lp)
    for (proc, label), lps in by_key.items():
        trips = [t for lp in lps for t in lp.trips]
        cyc = sum(lp.cycles for lp in lps)
        first = lps[0]
        loops.append(CsynthLoop(
            module=proc, name=label, path=label, trip_count=(min(trips), max(trips)) if trips else None,
            latency=(cyc, cyc), iteration_latency=None, ii=first.ii or None,
            depth=first.depth if first.pipelined else None))
    lat = round(ledger.cycles)
    return CsynthReport(top="m3vit_top", part="", target_clock_ns=1e3 / ledger.clock_mhz, estimated_clock_ns=None,
                        latency=(lat, lat), resources={}, loops=loops)


def compare_csynth(cfg: DesignConfig, report: CsynthReport | Ledger | str | Path,
                   loads: Mapping[int, Sequence[int]] | None = None) -> list[LoopComparison]:
    """Each loop of a csynth report (or of a cycle ledger: a :class:`Ledger` or a ``ledger.json``) that the
    model knows (by label; Vitis suffixes like ``_1`` or ``.2`` ignored) next to the model's trip counts and
    II. ``loads``: the routing the run used (see :func:`hls_loop_model`)."""
    if isinstance(report, Ledger):
        rep = csynth_from_ledger(report)
    elif isinstance(report, CsynthReport):
        rep = report
    elif Path(report).suffix == ".json":
        rep = csynth_from_ledger(read_ledger(report))
    else:
        rep = parse_csynth(report)
    model = hls_loop_model(cfg, loads)
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


