"""Performance report of a design: HTML and markdown with matplotlib plots (docs/performance.md §6).

``write_report(cfg, out_dir)`` models the design (m3vit.codegen.perf) on routings of every task (golden
runs, cached; or balanced / synthetic ones), replays the MoE schedules on them (m3vit.explore.schedules)
and writes into ``out_dir``: ``report.html``, ``report.md`` and four PNG plots —

* ``layers.png``: per-layer latency breakdown (K/V, attention, MLP or experts, finalize, weight stalls);
* ``roofline.png``: each step kind against the design's and the board's DSP roofs and the DDR roofs;
* ``expert_load.png``: tokens per expert for every task and MoE layer (heatmaps);
* ``schedules.png``: DDR expert traffic, on-chip memory and latency of the four schedules (bars), with
  the paper's numbers where it reports them;
* ``pruning.png`` (with ``--sweep SWEEP.json`` from ``m3vit experts sweep``): each task's metric against the
  expert bytes fetched per image and against the modeled latency, one point per pruning plan, with the
  sweep as a table (docs/pruning.md §5).

    m3vit report m3vit_small_pascal -o build/m3vit_small_pascal/report
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from m3vit import build_dir
from m3vit.codegen import perf
from m3vit.codegen.config import DesignConfig, load_config, with_overrides
from m3vit.errors import ArgumentParser, UserError, int_range, run_main
from m3vit.explore import schedules as sch

PLOTS = ("layers", "roofline", "expert_load", "schedules")
KIND_COLORS = {"embed": "#8c564b", "kv": "#1f77b4", "attn": "#ff7f0e", "mlp": "#2ca02c", "finalize": "#9467bd",
               "queues": "#17becf", "expert": "#e377c2", "stall": "#d62728"}


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows (also returned to callers such as the benchmark)."""

    cfg: DesignConfig
    perf: perf.PerfReport  # task 0, image 0
    task_latency_ms: dict[str, float]
    routings: sch.RoutingSet
    routing_source: str
    schedules: list[sch.ScheduleResult]
    sweep: Mapping[str, Any] | None = None  # an `m3vit experts sweep` JSON (load_sweep)


SWEEP_KEYS = ("task", "plan", "experts_kept", "metric", "float", "fixed", "weight_bytes_stored",
              "expert_bytes_fetched_per_image", "latency_ms")


def load_sweep(path: str | Path, cfg: DesignConfig) -> dict[str, Any]:
    """Read an ``m3vit experts sweep`` JSON for ``cfg``; UserError (one line) naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--sweep {path}: no such file (write one with m3vit experts sweep ... --json {path})")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"--sweep {path}: not JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list) or not data["rows"]:
        raise UserError(f"--sweep {path}: expected an object with a non-empty 'rows' list (m3vit experts sweep)")
    if data.get("config") != cfg.name:
        raise UserError(f"--sweep {path}: a sweep of config {data.get('config')!r}, not {cfg.name!r}")
    for i, row in enumerate(data["rows"]):
        missing = [k for k in SWEEP_KEYS if not isinstance(row, dict) or k not in row]
        if missing:
            raise UserError(f"--sweep {path}: row {i} lacks {missing}")
    return data


def collect(cfg: DesignConfig, routing: str = "golden", images: int = 1, lru_caches: Sequence[int] = (2, 8),
            progress: bool = False) -> ReportData:
    """Model ``cfg`` on routings from ``routing`` ("golden": golden-model runs of every task, cached;
    "synthetic": random routings; "balanced": perfectly balanced queues)."""
    if routing == "golden":
        rs = sch.golden_routings(cfg, images=images, progress=progress)
    elif routing in ("synthetic", "balanced"):
        rs = sch.synthetic_routings(cfg, images=images)
    else:
        raise ValueError(f"routing must be golden, synthetic or balanced, not {routing!r}")
    if routing == "balanced":
        rep = perf.evaluate(cfg)
        lat = {t: rep.latency_ms for t in cfg.model.task_names}
    else:
        rep = perf.evaluate(cfg, rs.block_loads(0, 0))
        lat = {t: float(np.mean([perf.evaluate(cfg, rs.block_loads(i, j)).latency_ms for j in range(rs.images)]))
               for i, t in enumerate(cfg.model.task_names)}
    res = sch.compare_schedules(cfg, rs, lru_caches) if cfg.model.moe_block_set else []
    return ReportData(cfg, rep, lat, rs, routing, res)


# ------------------------------------------------------------------------------------ plots
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_layers(d: ReportData, path: Path) -> Path:
    """Stacked bars: per layer, milliseconds spent in each step kind and waiting for weights."""
    plt = _plt()
    layers = d.perf.by_layer()
    names = list(layers)
    kinds = [k for k in KIND_COLORS if any(k in row for row in layers.values())]
    hz = d.perf.clock_hz
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(names) + 2), 4.2))
    bottom = np.zeros(len(names))
    for k in kinds:
        vals = np.array([layers[n].get(k, 0) / hz * 1e3 for n in names])
        ax.bar(names, vals, bottom=bottom, color=KIND_COLORS[k], label=k)
        bottom += vals
    moe = sorted(d.cfg.model.moe_block_set)
    for i, n in enumerate(names):
        if n.startswith("block") and int(n[5:]) in moe:
            ax.text(i, bottom[i], "MoE", ha="center", va="bottom", fontsize=7)
    ax.set_ylabel("ms")
    ax.set_title(f"{d.cfg.name}: per-layer latency, {d.perf.latency_ms:.2f} ms "
                 f"(task {d.cfg.model.task_names[0]}, {d.routing_source} routing)")
    ax.tick_params(axis="x", rotation=60, labelsize=8)
    ax.set_ylim(0, bottom.max() * 1.12)  # head-room for the "MoE" labels
    ax.legend(fontsize=8, ncol=min(len(kinds), 4), loc="upper center", bbox_to_anchor=(0.5, -0.28), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def roofline_points(rep: perf.PerfReport) -> dict[str, tuple[float, float]]:
    """Per step kind (and the whole image): (MACs per DDR byte, achieved GMAC/s)."""
    acc: dict[str, list[float]] = {}
    for s, st, en, stall in zip(rep.steps, rep.timeline.start, rep.timeline.end, rep.timeline.stall, strict=True):
        if s.macs == 0:
            continue
        kind = {"mlp_chunk": "mlp"}.get(s.kind, s.kind)
        a = acc.setdefault(kind, [0.0, 0.0, 0.0])
        a[0] += s.macs
        a[1] += s.weight_bytes + s.side_bytes + s.act_bytes
        a[2] += en - st + stall
    acc["image"] = [float(rep.total_macs), float(rep.weight_ddr_bytes + rep.act_ddr_bytes), float(rep.cycles)]
    return {k: (m / b, m / (c / rep.clock_hz) / 1e9) for k, (m, b, c) in acc.items() if b and c}


def plot_roofline(d: ReportData, path: Path) -> Path:
    """Roofline: the design's DSP roof, the board's, and the DDR roofs (one HP port, the DDR)."""
    plt = _plt()
    rep, cfg = d.perf, d.cfg
    f = rep.clock_hz
    board = cfg.hardware.board_spec
    mpd = 2 if perf.array_packed(cfg) else 1
    roofs = {
        f"design peak ({rep.resources.dsp_by_unit['mac_array']} array DSPs × {mpd} MAC)":
            rep.resources.dsp_by_unit["mac_array"] * mpd * f / 1e9,
        f"board peak ({board.dsp} DSPs × {mpd} MAC)": board.dsp * mpd * f / 1e9,
    }
    bw_port = perf.dma_bytes_per_cycle(cfg) * f
    bw_ddr = board.ddr_gbytes_per_s * 1e9
    pts = roofline_points(rep)
    xs = np.logspace(-1, 5, 200)
    fig, ax = plt.subplots(figsize=(7, 4.6))
    for (label, peak), style in zip(roofs.items(), ("-", "--"), strict=True):
        ax.plot(xs, np.minimum(peak, xs * bw_ddr / 1e9), "k" + style, lw=1.2, label=label)
    design_peak = next(iter(roofs.values()))
    ax.plot(xs, np.minimum(design_peak, xs * bw_port / 1e9), ":", color="gray", lw=1,
            label=f"one HP port ({bw_port / 1e9:.1f} GB/s)")
    for k, (x, y) in pts.items():
        ax.plot([x], [y], "o" if k != "image" else "*", ms=8 if k != "image" else 14,
                color=KIND_COLORS.get(k, "black"), label=f"{k}: {y:.0f} GMAC/s")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("operational intensity (MAC per DDR byte)")
    ax.set_ylabel("GMAC/s")
    ax.set_ylim(1, max(roofs.values()) * 2)
    ax.set_title(f"{cfg.name}: roofline at {cfg.hardware.clock_mhz:g} MHz")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_expert_load(d: ReportData, path: Path) -> Path:
    """Heatmaps of tokens per expert: one panel per task, MoE layers × experts (mean over images)."""
    plt = _plt()
    rs = d.routings
    loads = rs.loads().mean(axis=1)  # [tasks, layers, N]
    nt = len(rs.tasks)
    cols = min(nt, 3)
    rows = -(-nt // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 0.45 * len(rs.blocks) * rows + 1.6 * rows),
                             squeeze=False)
    vmax = float(loads.max()) if loads.size else 1.0
    im = None
    for i in range(rows * cols):
        ax = axes[i // cols][i % cols]
        if i >= nt:
            ax.axis("off")
            continue
        im = ax.imshow(loads[i], aspect="auto", cmap="viridis", vmin=0, vmax=vmax)
        ax.set_title(f"task {rs.tasks[i]}", fontsize=9)
        ax.set_yticks(range(len(rs.blocks)), [f"block {b}" for b in rs.blocks], fontsize=7)
        ax.set_xticks(range(rs.num_experts), [str(e) for e in range(rs.num_experts)], fontsize=6)
        ax.set_xlabel("expert", fontsize=8)
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.8, label="tokens routed")
    fig.suptitle(f"{d.cfg.name}: expert load ({d.routing_source} routings, T·K = "
                 f"{d.cfg.model.num_tokens * d.cfg.model.top_k} per layer)", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_sweep(d: ReportData, path: Path) -> Path:
    """Per task: fixed-point metric vs expert KiB fetched per image and vs modeled latency, a point per plan."""
    plt = _plt()
    rows = d.sweep["rows"] if d.sweep else []
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(len(tasks), 2, figsize=(10, 3.2 * len(tasks)), squeeze=False, layout="constrained")
    for i, task in enumerate(tasks):
        mine = [r for r in rows if r["task"] == task]
        for ax, key, scale, label in ((axes[i][0], "expert_bytes_fetched_per_image", 1 / 1024,
                                       "expert KiB fetched / image"),
                                      (axes[i][1], "latency_ms", 1e3, "modeled latency (µs)")):
            xs = [r[key] * scale for r in mine]
            ax.plot(xs, [r["fixed"] for r in mine], "o", color="#1f77b4", label="fixed point")
            ax.plot(xs, [r["float"] for r in mine], "x", color="#ff7f0e", label="float")
            for x, r in zip(xs, mine, strict=True):
                ax.annotate(r["plan"], (x, r["fixed"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
            ax.set_xlabel(label, fontsize=8)
            ax.set_ylabel(f"{task} {mine[0]['metric']}", fontsize=8)
            ax.grid(alpha=0.3)
        axes[i][0].legend(fontsize=7)
    fig.suptitle(f"{d.cfg.name}: pruning plans (m3vit experts sweep, {d.sweep.get('images') if d.sweep else 0} "
                 f"images)", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_schedules(d: ReportData, path: Path) -> Path:
    """Bars per schedule: DDR expert traffic, on-chip memory, latency; paper values as red marks."""
    plt = _plt()
    res = d.schedules
    labels = [r.label for r in res]
    paper = sch.PAPER.get(d.cfg.name.removesuffix("_dse"), {})
    panels = [
        ("DDR expert traffic / image (MiB)", [r.ddr_weight_bytes / perf.MIB for r in res], {}),
        ("on-chip memory (MiB)", [r.on_chip_bytes / perf.MIB for r in res],
         {"all_on_chip": paper.get("all_on_chip_mib"), "expert_by_expert": paper.get("ebe_mib"),
          "lru (C=2)": paper.get("ebe_mib")}),
        ("latency (ms)", [r.latency_ms for r in res],
         {"expert_by_expert": paper.get("ebe_ms"), "lru (C=2)": paper.get("cache_ms")}),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    colors = ["#7f7f7f", "#bcbd22", "#17becf", "#1f77b4", "#2ca02c", "#ff7f0e"]
    for ax, (title, vals, marks) in zip(axes, panels, strict=True):
        ax.bar(range(len(vals)), vals, color=colors[: len(vals)])
        for i, v in enumerate(vals):
            ax.text(i, v, f"{v:.3g}", ha="center", va="bottom", fontsize=7)
        for i, lab in enumerate(labels):
            if marks.get(lab) is not None:
                ax.plot([i], [marks[lab]], "r_", ms=22, mew=2.5, label="paper" if i == labels.index(lab) else None)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=9)
        if title.startswith("latency") or title.startswith("DDR"):
            ax.set_yscale("log")
    handles, lbls = axes[2].get_legend_handles_labels()
    if handles:
        axes[2].legend(handles[:1], lbls[:1], fontsize=8)
    fig.suptitle(f"{d.cfg.name}: MoE schedules on {d.routing_source} routings "
                 f"({len(d.routings.tasks)} tasks × {d.routings.images} image(s))", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------ tables
def _md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def summary_rows(d: ReportData) -> list[tuple[str, str]]:
    rep, cfg = d.perf, d.cfg
    r = rep.resources
    util = r.utilisation(cfg.hardware.board_spec)
    n, hw = cfg.numerics, cfg.hardware
    return [
        ("design", f"{cfg.name} on {hw.board} at {hw.clock_mhz:g} MHz"),
        ("MAC array", f"{hw.mac_in} × {hw.mac_out} lanes, "
                      f"{'2 MACs/DSP (packed)' if perf.array_packed(cfg) else '1 MAC/DSP'}"),
        ("knobs", f"token_tile {hw.token_tile}, attn_key_block {hw.attn_key_block}, axi {hw.axi_data_bits} bits"),
        ("formats", ", ".join(f"{k} {getattr(n, k)}" for k in ("input", "act", "norm", "qkv", "hidden", "weight"))),
        ("latency (task 0)", f"{rep.latency_ms:.3f} ms ({rep.cycles:,} cycles)"),
        ("latency per task", ", ".join(f"{t} {v:.3f} ms" for t, v in d.task_latency_ms.items())),
        ("DSP floor (design DSPs)", f"{rep.dsp_floor_ms:.3f} ms — ratio floor/latency {rep.floor_ratio:.1%}"),
        ("DSP floor (MAC array only / whole board)", f"{rep.array_floor_ms:.3f} ms / {rep.board_floor_ms:.3f} ms"),
        ("work", f"{rep.total_macs / 1e9:.2f} GMAC per image"),
        ("on-chip memory", f"{rep.on_chip_mib:.3f} MiB ({rep.on_chip_bytes:,} B)"),
        ("DDR traffic / image", f"weights {rep.weight_ddr_bytes / perf.MIB:.2f} MiB, activations "
                                f"{rep.act_ddr_bytes / perf.MIB:.2f} MiB"),
        ("resources", f"DSP {r.dsp} ({util['dsp']:.0%}), BRAM36 {r.bram36} ({util['bram36']:.0%}), URAM {r.uram} "
                      f"({util['uram']:.0%}), LUT {r.lut} ({util['lut']:.0%}), FF {r.ff} ({util['ff']:.0%})"),
        ("fits (≤ 80 % of every resource)", "yes" if r.fits(cfg.hardware.board_spec) else "NO"),
    ]


def layer_rows(d: ReportData) -> list[list[str]]:
    hz = d.perf.clock_hz
    rows = []
    for name, row in d.perf.by_layer().items():
        total = sum(row.values())
        rows.append([name] + [f"{row.get(k, 0) / hz * 1e3:.3f}" for k in
                              ("kv", "attn", "mlp", "queues", "finalize", "embed", "stall")]
                    + [f"{total / hz * 1e3:.3f}"])
    return rows


def unit_rows(d: ReportData) -> list[list[str]]:
    busy = d.perf.unit_busy()
    return [[k, f"{v:,}", f"{v / d.perf.cycles:.1%}"] for k, v in sorted(busy.items(), key=lambda kv: -kv[1])]


def buffer_rows(d: ReportData) -> list[list[str]]:
    place = d.perf.resources.placement
    return [[b.name, f"{b.bytes:,}", str(b.width), place.get(b.name, ""), b.note] for b in d.perf.buffers]


SWEEP_HEAD = ("task", "plan", "experts kept / layer", "metric", "float", "fixed", "weight KiB stored",
              "expert KiB fetched / image", "modeled latency µs")


def sweep_rows(d: ReportData) -> list[list[str]]:
    """The pruning sweep's rows (docs/pruning.md §5), as ``m3vit experts sweep`` prints them."""
    return [[r["task"], r["plan"], ",".join(str(v) for v in r["experts_kept"].values()), r["metric"],
             f"{r['float']:.4f}", f"{r['fixed']:.4f}", f"{r['weight_bytes_stored'] / 1024:.1f}",
             f"{r['expert_bytes_fetched_per_image'] / 1024:.1f}", f"{r['latency_ms'] * 1e3:.1f}"]
            for r in (d.sweep["rows"] if d.sweep else [])]


def schedule_rows(d: ReportData) -> list[list[str]]:
    paper = sch.PAPER.get(d.cfg.name.removesuffix("_dse"), {})
    rows = []
    for r in d.schedules:
        p_ms = {"expert_by_expert": paper.get("ebe_ms"), "lru (C=2)": paper.get("cache_ms")}.get(r.label)
        p_mib = {"all_on_chip": paper.get("all_on_chip_mib"), "expert_by_expert": paper.get("ebe_mib"),
                 "lru (C=2)": paper.get("ebe_mib")}.get(r.label)
        rows.append([r.label, f"{r.fetches:.0f}", f"{r.ddr_weight_bytes / perf.MIB:.1f}",
                     f"{r.on_chip_bytes / perf.MIB:.3f}", f"{r.latency_ms:.2f}", f"{r.moe_ms:.2f}",
                     "" if p_mib is None else f"{p_mib:.3f}", "" if p_ms is None else f"{p_ms:.1f}"])
    return rows


LAYER_HEAD = ("layer", "kv", "attn", "mlp/experts", "queues", "finalize", "embed", "stall", "total (ms)")
SCHED_HEAD = ("schedule", "expert fetches / image", "DDR expert traffic (MiB)", "on-chip (MiB)", "latency (ms)",
              "MoE phases (ms)", "paper on-chip (MiB)", "paper latency (ms)")


def render_markdown(d: ReportData, plots: dict[str, Path]) -> str:
    parts = [f"# Performance report: {d.cfg.name}", "",
             "Modeled by `m3vit.codegen.perf` (analytic; see docs/performance.md), routings: "
             f"{d.routing_source} ({len(d.routings.tasks)} tasks × {d.routings.images} image(s)).", "",
             _md_table(("quantity", "value"), summary_rows(d)), ""]
    parts += ["## Per-layer latency", "", f"![layers]({plots['layers'].name})", "",
              _md_table(LAYER_HEAD, layer_rows(d)), ""]
    parts += ["## Roofline", "", f"![roofline]({plots['roofline'].name})", "",
              _md_table(("unit", "busy cycles", "of the image"), unit_rows(d)), ""]
    if "expert_load" in plots:
        parts += ["## Expert load", "", f"![expert load]({plots['expert_load'].name})", ""]
    if "schedules" in plots:
        parts += ["## MoE schedules", "", f"![schedules]({plots['schedules'].name})", "",
                  _md_table(SCHED_HEAD, schedule_rows(d)), ""]
    if "pruning" in plots:
        chosen = ", ".join(f"{t}: {p}" for t, p in (d.sweep or {}).get("chosen", {}).items())
        parts += ["## Expert pruning", "", f"![pruning]({plots['pruning'].name})", "",
                  _md_table(SWEEP_HEAD, sweep_rows(d)), "", *([f"Plan to ship: {chosen}.", ""] if chosen else [])]
    parts += ["## On-chip buffers", "", _md_table(("buffer", "bytes", "port bits", "memory", "what"),
                                                  buffer_rows(d)), ""]
    return "\n".join(parts)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def render_html(d: ReportData, plots: dict[str, Path]) -> str:
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f3f3f3}"
             "img{max-width:100%;border:1px solid #eee}")
    sec = [f"<h1>Performance report: {html.escape(d.cfg.name)}</h1>",
           f"<p>Modeled by <code>m3vit.codegen.perf</code> (analytic; see docs/performance.md); routings: "
           f"{html.escape(d.routing_source)} ({len(d.routings.tasks)} tasks × {d.routings.images} image(s)).</p>",
           _html_table(("quantity", "value"), summary_rows(d)),
           "<h2>Per-layer latency</h2>", f'<img src="{plots["layers"].name}" alt="per-layer latency">',
           _html_table(LAYER_HEAD, layer_rows(d)),
           "<h2>Roofline</h2>", f'<img src="{plots["roofline"].name}" alt="roofline">',
           _html_table(("unit", "busy cycles", "of the image"), unit_rows(d))]
    if "expert_load" in plots:
        sec += ["<h2>Expert load</h2>", f'<img src="{plots["expert_load"].name}" alt="expert load">']
    if "schedules" in plots:
        sec += ["<h2>MoE schedules</h2>", f'<img src="{plots["schedules"].name}" alt="schedules">',
                _html_table(SCHED_HEAD, schedule_rows(d))]
    if "pruning" in plots:
        chosen = ", ".join(f"{t}: {p}" for t, p in (d.sweep or {}).get("chosen", {}).items())
        sec += ["<h2>Expert pruning</h2>", f'<img src="{plots["pruning"].name}" alt="pruning plans">',
                _html_table(SWEEP_HEAD, sweep_rows(d)),
                *([f"<p>Plan to ship: {html.escape(chosen)}.</p>"] if chosen else [])]
    sec += ["<h2>On-chip buffers</h2>",
            _html_table(("buffer", "bytes", "port bits", "memory", "what"), buffer_rows(d))]
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(d.cfg.name)} performance"
            f"</title><style>{style}</style></head><body>{''.join(sec)}</body></html>\n")


def write_report(cfg: DesignConfig, out_dir: str | Path, routing: str = "golden", images: int = 1,
                 progress: bool = False, data: ReportData | None = None,
                 sweep: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Write report.html, report.md and the PNG plots into ``out_dir``; returns their paths (a dense model
    has no expert-load and schedule plots; ``sweep``, a :func:`load_sweep` result, adds the pruning plot)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    d = data or collect(cfg, routing, images, progress=progress)
    if sweep is not None:
        d = ReportData(d.cfg, d.perf, d.task_latency_ms, d.routings, d.routing_source, d.schedules, sweep)
    plots = {"layers": plot_layers(d, out / "layers.png"), "roofline": plot_roofline(d, out / "roofline.png")}
    if d.routings.blocks:  # a dense model has no routing to show
        plots["expert_load"] = plot_expert_load(d, out / "expert_load.png")
        plots["schedules"] = plot_schedules(d, out / "schedules.png")
    if d.sweep:
        plots["pruning"] = plot_sweep(d, out / "pruning.png")
    (out / "report.md").write_text(render_markdown(d, plots))
    (out / "report.html").write_text(render_html(d, plots))
    return {"html": out / "report.html", "markdown": out / "report.md", **plots}


def command(argv: Sequence[str]) -> int:
    """``m3vit report``: write the report; raises the toolkit's errors (see :func:`main`)."""
    ap = ArgumentParser(prog="m3vit report", description="Write the HTML + markdown performance report "
                                 "(analytic model, schedule comparison, plots) of a design.")
    ap.add_argument("config", help="config file or preset name")
    ap.add_argument("-o", "--output", default=None, help="output folder (default: build/<name>/report)")
    ap.add_argument("--routing", default="golden", choices=("golden", "synthetic", "balanced"),
                    help="where MoE routings come from (golden: golden-model runs of every task, cached)")
    ap.add_argument("--images", type=int_range(1, 64), default=1, help="random images per task for the routings")
    ap.add_argument("--image-size", type=int_range(1, 8192), nargs=2, metavar=("H", "W"), default=None,
                    help="override the image size (a quick look at a reduced size)")
    ap.add_argument("--sweep", default=None, help="add the pruning trade-off: a sweep JSON of m3vit experts sweep "
                    "(e.g. build/experts/<name>/sweep.json)")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    sweep = load_sweep(args.sweep, cfg) if args.sweep else None  # checked before the (slow) model runs
    if args.image_size:
        cfg = with_overrides(cfg, **{"model.image_size": list(args.image_size)})
    out = Path(args.output) if args.output else build_dir(cfg.name, "report")
    if out.exists() and not out.is_dir():
        raise UserError(f"-o/--output {out} is a file; give the folder to write the report into")
    paths = write_report(cfg, out, args.routing, args.images, progress=True, sweep=sweep)
    print(f"wrote {paths['html']} and {paths['markdown']} ({len(paths) - 2} plots)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """:func:`command` with user errors as one line (exit status 2) and ``--debug``."""
    return run_main(command, argv)


if __name__ == "__main__":
    raise SystemExit(main())
