"""Vitis HLS csynth reports next to the model: the report reader, the loop model of the HLS kernels and
their comparison, loop by loop."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from m3vit.codegen.bits import ceil_div, container_bits
from m3vit.codegen.config import DesignConfig
from m3vit.codegen.layout import EXPERT_MAP_BITS, SAT_CLASSES, scratch_layout
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


PIPELINED = frozenset({
    "COPY", "BURST_READ_ELEMS", "BURST_WRITE_ELEMS", "LOAD_W", "LOAD_B", "MAC_PRELOAD", "MAC_LOOP", "READ_PIXELS",
    "READ_ROW", "LN_READ", "LN_RECIP", "LN_NORM", "WRITE_ROW", "RES_ADD", "KV_STORE",
    "KV_TRANSPOSE", "ROUTE_ROWS", "MOE_ACC", "MOE_REQ", "ACC_CLEAR", "RT_OFFSETS", "RT_FILL", "ATT_Q_TILE",
    "ATT_QK", "ATT_P_FIRST", "ATT_PV", "ATT_FINAL", "ATT_OUT",
})
"""Loop labels the kernels pipeline at II = 1 (the others carry M3VIT_LEDGER_LOOP: not pipelined)."""


def hls_loop_model(cfg: DesignConfig, loads: Mapping[int, Sequence[int]] | None = None,
                   images: int = 1) -> dict[str, LoopModel]:
    """The trip counts and II of every labelled loop of the HLS kernels as written in hls/, for one call of
    the top function over ``images`` images and every layer. ``loads`` maps each MoE block to its experts'
    queue lengths (the routing of the image; default: balanced, as :func:`m3vit.codegen.perf.evaluate`).
    The cycle ledger of a C simulation measures the same loops (tests/test_ledger.py); the stages and jobs are
    :class:`m3vit.codegen.perf.engine.EngineModel`'s."""
    from m3vit.codegen.perf.engine import EngineModel  # engine imports timeline, which csynth's callers use

    m, hw, n = cfg.model, cfg.hardware, cfg.numerics
    e = EngineModel(cfg)
    t, d, mi, mo, tt = m.num_tokens, m.dim, hw.mac_in, hw.mac_out, hw.token_tile
    moe = [b for b in range(m.depth) if m.is_moe(b)]
    queues = {b: [int(q) for q in (balanced_loads(t, m.num_experts, m.top_k) if loads is None or b not in loads
                                   else loads[b])] for b in moe}
    trips: dict[str, set[int]] = {}

    def add(label: str, *vals: int) -> None:
        trips.setdefault(label, set()).update(v for v in vals if v > 0)

    def words(count: int, bits: int) -> int:
        return e.words(count, bits)

    # backbone
    add("SAT_ZERO", m.depth + 1)
    add("IMAGES", images)
    add("LAYERS", m.depth + 1)
    add("COPY", scratch_layout(cfg).token_bytes * 8 // hw.axi_data_bits)
    add("BURST_READ_ELEMS", words(len(SAT_CLASSES), 32))
    add("BURST_WRITE_ELEMS", words(len(SAT_CLASSES), 32))

    stages = ["embed"]
    for b in range(m.depth):
        stages += ["kv", "q", "proj"] + (["router"] if b in moe else ["fc1", "fc2"])
    k_of = {"embed": m.patch_dim, "kv": d, "q": d, "proj": d, "fc1": d, "fc2": m.mlp_hidden, "router": d}
    n_of = {"embed": d, "kv": 3 * d, "q": d, "proj": d, "fc1": m.mlp_hidden, "fc2": d, "router": m.num_experts}
    op_of = {"embed": "patch_embed", "kv": "qkv", "q": "qkv", "proj": "proj", "fc1": "mlp_fc1", "fc2": "mlp_fc2",
             "router": "router"}
    tile_words = mo * mi * container_bits(n.weight.bits) // hw.axi_data_bits
    for st in set(stages):
        it_n = e.it(k_of[st])
        ot0 = d // mo if st == "kv" else 0
        jobs = e.dense_jobs(ot0, e.ot(n_of[st]), it_n)
        rows = m.num_patches if st == "embed" else t
        tiles = tile_lengths(rows, tt)
        for name in ("JOBS_DENSE", "LOADER_JOBS", "MAC_JOBS", "READER_JOBS", "WRITER_JOBS"):
            add(name, len(jobs))
        for name in ("MAC_TILES", "READER_TILES", "WRITER_TILES"):
            add(name, len(tiles))
        add("MAC_PRELOAD", e.tile_rows)
        add("WRITER_ROWS", *tiles)
        ln = st in ("kv", "fc1", "router")
        if ln:
            add("BURST_READ_ELEMS", words(d, n.ln_param.bits))
            add("LN_ROWS", *tiles)
            add("LN_NORM_ROWS", *tiles)
            add("LN_RECIP", *tiles)
            add("LN_NORM", words(d, n.norm.bits))
            add("LN_READ", words(d, n.act.bits))
        else:
            add("READER_ROWS", *tiles)
        for o, ot_n in jobs:
            cols = min(ot_n * mo, n_of[st] - o * mo)
            add("LOAD_W", ot_n * it_n * tile_words)
            add("LOAD_B", words(cols, n.bias_bits))
            add("MAC_LOOP", *(ot_n * it_n * max(nt, e.tile_rows) * e.rate(op_of[st]) for nt in tiles))
            if st in ("kv", "q"):
                add("WRITE_ROW", words(cols, n.qkv.bits))
            if st == "kv":
                add("KV_STORE", ceil_div(cols, mi))
                add("KV_TRANSPOSE", o * mo + cols - max(o * mo, 2 * d))
            if st == "fc1":
                add("WRITE_ROW", words(cols, n.hidden.bits))
            if st == "fc2":
                add("WRITE_ROW", words(cols, n.act.bits))
            if st in ("embed", "proj", "fc2"):
                add("RES_ADD", words(cols, n.act.bits))
        if st == "router":
            add("BURST_READ_ELEMS", words(1 + m.num_experts, EXPERT_MAP_BITS))  # the layer's expert map
            add("WRITE_ROW", words(m.num_experts, n.logit.bits))
            add("ROUTE_ROWS", *tiles)
        if st == "q":
            add("READ_ROW", words(d, n.norm.bits))
        if st == "proj":
            add("READ_ROW", words(d, n.qkv.bits))
        if st == "fc2":
            add("READ_ROW", words(m.mlp_hidden, n.hidden.bits))
        if st == "embed":
            add("BURST_READ_ELEMS", words(d, n.act.bits))
            add("BURST_WRITE_ELEMS", words(d, n.act.bits))
            add("READ_PATCH_ROWS", m.patch_size)
            lanes_in = hw.axi_data_bits // container_bits(n.input.bits)
            skips = {((c * m.image_size[0] + py * m.patch_size + ky) * m.image_size[1] + px * m.patch_size) % lanes_in
                     for c in range(m.in_channels) for py in range(m.grid[0]) for ky in range(m.patch_size)
                     for px in range(m.grid[1])}
            add("READ_PIXELS", *(ceil_div(sk + m.patch_size, lanes_in) for sk in skips))

    # MoE: queues, the experts' jobs (the writer finishes each token's output row after its last expert)
    for b in moe:
        used = [q for q in queues[b] if q > 0]
        add("ACC_CLEAR", t)
        add("RT_OFFSETS", m.num_experts)
        add("RT_FILL", t * m.top_k)
        for name in ("JOBS_EXPERTS", "LOADER_JOBS", "MAC_JOBS", "READER_JOBS", "WRITER_JOBS"):
            add(name, len(used))
        add("LOAD_W", e.ot(m.expert_hidden) * e.it(d) * tile_words, e.ot(d) * e.it(m.expert_hidden) * tile_words)
        add("LOAD_B", words(m.expert_hidden, n.bias_bits), words(d, n.bias_bits))
        add("MAC_PRELOAD", e.tile_rows)
        add("READ_ROW", words(d, n.norm.bits))
        add("MOE_ACC", ceil_div(d, e.lanes.out))
        add("MOE_REQ", words(d, n.act.bits))  # a token's output row, after its last expert
        for q in used:
            tiles = tile_lengths(q, tt)
            for name in ("MAC_TILES", "READER_TILES", "WRITER_TILES"):
                add(name, len(tiles))
            add("READER_ROWS", *tiles)
            add("WRITER_ROWS", *tiles)
            add("MAC_LOOP", *(e.ot(m.expert_hidden) * e.it(d) * max(nt, e.tile_rows) * e.rate("expert_fc1")
                              for nt in tiles))
            add("MAC_LOOP", *(e.ot(d) * e.it(m.expert_hidden) * max(nt, e.tile_rows) * e.rate("expert_fc2")
                              for nt in tiles))

    # attention
    groups = tile_lengths(t, mo)
    blocks = tile_lengths(t, hw.attn_key_block)
    hd_passes = ceil_div(m.head_dim, mi)
    p_cyc = ceil_div(mo * mi, e.lanes.exp)
    per_chunk = m.head_dim * e.rate("attn_pv")
    chunk_len = max(per_chunk, p_cyc)
    last_len = chunk_len if chunk_len > per_chunk else per_chunk + 1  # l's rescale after the dims
    add("ATT_GROUPS", len(groups))
    add("ATT_Q_ROWS", *groups)
    add("ATT_WRITE", *groups)
    add("ATT_FINAL", *groups)
    add("ATT_OUT", *(ng * (m.head_dim // e.lanes.acc) for ng in groups))
    add("ATT_HEADS", m.num_heads)
    add("ATT_OUT_HEADS", m.num_heads)
    add("ATT_BLOCKS", len(blocks) + 1)
    add("ATT_QK_PASSES", hd_passes)
    add("ATT_Q_TILE", e.tile_rows)
    add("ATT_QK", *(nb * e.rate("attn_qk") for nb in blocks))
    add("ATT_P_FIRST", p_cyc)
    add("ATT_PV", *((ceil_div(nb, mi) - 1) * chunk_len + last_len for nb in blocks))
    add("BURST_READ_ELEMS", words(d, n.qkv.bits))
    add("BURST_WRITE_ELEMS", words(d, n.qkv.bits))
    return {label: LoopModel(tuple(sorted(v)), 1 if label in PIPELINED else None, label)
            for label, v in trips.items() if v}


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


