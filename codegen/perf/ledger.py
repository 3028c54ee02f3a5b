"""The cycle ledger: measured loop trip counts of a C simulation turned into an estimated latency.

In C-simulation builds every labelled loop of the HLS kernels records the trip count of each entry
(``hls/m3vit_ledger.h``), grouped by top-level step (the step names of :func:`m3vit.codegen.perf.build_steps`),
DATAFLOW region and process. :func:`parse_ledger` reads those records; :class:`Ledger` prices them:

* a pipelined loop entry of ``n`` trips costs ``(n - 1) · II + depth`` cycles, with the II of its PIPELINE
  pragma and the pipeline depth the source declares next to it;
* a non-pipelined loop costs ``body`` cycles per iteration (its own control and straight-line code; the
  loops inside it are priced separately);
* a process costs the sum of its loops; the serial part of a step the sum of its processes;
* a DATAFLOW region costs its slowest process plus, per execution, the pipeline fill (deepest pipelined
  loop) of each other process;
* a step is its serial part plus its regions, and an image the sum of its steps.

The trip counts are measured, the cycles are an estimate under those assumptions (the II Vitis achieves,
memory stalls and straight-line code it schedules differently are not measured). Only Vitis' csynth/cosim
report real cycles.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

ASSUMPTIONS = (
    "cycle ledger: trip counts measured in C simulation; cycles ESTIMATED from them with the declared II and "
    "pipeline depth of each loop (pipelined entry = (trips-1)*II + depth, other loops = body cycles per "
    "iteration, dataflow region = slowest process + fill of the others); no memory stalls, no achieved-II check"
)
"""The one-line statement of what the ledger's cycles are (printed with every ledger and stored in its JSON)."""


class LedgerError(ValueError):
    """Ledger records that cannot be read."""


@dataclass(frozen=True)
class LedgerLoop:
    """One loop label of one process: declared schedule and measured trips (``trips``: trip count → entries)."""

    label: str
    ii: int  # 0: not pipelined
    depth: int  # pipeline depth (pipelined loops)
    body: int  # cycles per iteration outside the loops it contains (other loops)
    entries: int
    iterations: int
    trips: dict[int, int]

    @property
    def pipelined(self) -> bool:
        return self.ii > 0

    @property
    def cycles(self) -> int:
        """Estimated cycles of every entry together."""
        if self.pipelined:
            return self.iterations * self.ii + self.entries * (self.depth - self.ii)
        return self.iterations * self.body


@dataclass(frozen=True)
class LedgerProcess:
    """A process (a stage function or a DATAFLOW process) within a step; ``region`` is "" for serial code."""

    step: str
    region: str
    name: str
    loops: tuple[LedgerLoop, ...]

    @property
    def cycles(self) -> int:
        return sum(lp.cycles for lp in self.loops)

    @property
    def fill(self) -> int:
        """Cycles before the process's first output: the depth of its deepest pipelined loop."""
        return max((lp.depth for lp in self.loops if lp.pipelined), default=0)


@dataclass(frozen=True)
class LedgerRegion:
    """One DATAFLOW region of a step: its processes overlap."""

    step: str
    name: str
    executions: int
    processes: tuple[LedgerProcess, ...]

    @property
    def cycles(self) -> int:
        if not self.processes:
            return 0
        slow = max(self.processes, key=lambda p: p.cycles)
        return slow.cycles + self.executions * sum(p.fill for p in self.processes if p is not slow)


_KIND_ORDER = {"kv": 0, "attn": 1, "queues": 2, "expert": 3, "mlp": 4, "finalize": 5}


def step_order(name: str) -> tuple:
    """Sort key of step names in image order: io, embed[.i], block<b>.kv/.attn/.queues/.expert<e>/.mlp/.finalize."""
    if name == "io":
        return (0,)
    if name.startswith("embed"):
        return (1, name)
    m = re.match(r"block(\d+)\.([a-z_]+?)(\d*)(?:\.(\d+))?$", name)
    if not m:
        return (3, name)
    return (2, int(m.group(1)), _KIND_ORDER.get(m.group(2), 9), int(m.group(3) or 0), int(m.group(4) or 0))


def step_group(name: str) -> str:
    """A step name without a chunk suffix (``embed.1`` → ``embed``, ``block0.mlp.2`` → ``block0.mlp``)."""
    return re.sub(r"\.\d+$", "", name)


@dataclass(frozen=True)
class Ledger:
    """Every process record of one C-simulation run (``images`` images of design ``design``)."""

    design: str
    clock_mhz: float
    images: int
    processes: tuple[LedgerProcess, ...]
    region_executions: dict[tuple[str, str], int] = field(default_factory=dict)

    # -------------------------------------------------------------------------------- cycles
    def regions(self) -> list[LedgerRegion]:
        """Every (step, region) with processes or executions. A process that switched steps inside a region
        (the experts' jobs) forms a region of its own step, entered 0 times there (its fill counts where the
        region was entered)."""
        keys = set(self.region_executions) | {(p.step, p.region) for p in self.processes if p.region}
        out = []
        for step, name in sorted(keys):
            procs = tuple(p for p in self.processes if p.step == step and p.region == name)
            out.append(LedgerRegion(step, name, self.region_executions.get((step, name), 0), procs))
        return out

    def step_cycles(self) -> dict[str, int]:
        """Estimated cycles per step over the whole run, in image order."""
        cyc: dict[str, int] = {}
        for p in self.processes:
            if not p.region:
                cyc[p.step] = cyc.get(p.step, 0) + p.cycles
        for r in self.regions():
            cyc[r.step] = cyc.get(r.step, 0) + r.cycles
        return {k: cyc[k] for k in sorted(cyc, key=step_order)}

    @property
    def cycles(self) -> float:
        """Estimated cycles per image."""
        return sum(self.step_cycles().values()) / max(1, self.images)

    @property
    def latency_ms(self) -> float:
        """Estimated latency of one image at the design's clock."""
        return self.cycles / (self.clock_mhz * 1e3)

    # -------------------------------------------------------------------------------- trip counts
    def loops(self) -> dict[str, LedgerLoop]:
        """Every label merged over processes and steps (entries, iterations and trip histograms summed)."""
        out: dict[str, LedgerLoop] = {}
        for p in self.processes:
            for lp in p.loops:
                out[lp.label] = _merge(out.get(lp.label), lp)
        return out

    def trip_counts(self) -> dict[str, set[int]]:
        """The distinct executed trip counts of each loop label."""
        return {label: set(lp.trips) for label, lp in self.loops().items()}

    # -------------------------------------------------------------------------------- files
    def to_dict(self) -> dict:
        return {
            "design": self.design,
            "clock_mhz": self.clock_mhz,
            "images": self.images,
            "assumptions": ASSUMPTIONS,
            "image_cycles": self.cycles,
            "image_latency_ms": self.latency_ms,
            "steps": self.step_cycles(),
            "regions": [{"step": s, "region": r, "executions": n}
                        for (s, r), n in sorted(self.region_executions.items())],
            "processes": [
                {"step": p.step, "region": p.region, "name": p.name, "cycles": p.cycles,
                 "loops": [{"label": lp.label, "ii": lp.ii, "depth": lp.depth, "body": lp.body,
                            "entries": lp.entries, "iterations": lp.iterations, "cycles": lp.cycles,
                            "trips": {str(k): v for k, v in sorted(lp.trips.items())}} for lp in p.loops]}
                for p in self.processes
            ],
        }

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path


def _merge(a: LedgerLoop | None, b: LedgerLoop) -> LedgerLoop:
    if a is None:
        return b
    trips = dict(a.trips)
    for k, v in b.trips.items():
        trips[k] = trips.get(k, 0) + v
    return LedgerLoop(a.label, a.ii, a.depth, a.body, a.entries + b.entries, a.iterations + b.iterations, trips)


def _merge_all(loops: Iterable[LedgerLoop]) -> tuple[LedgerLoop, ...]:
    """Loops of one process merged by (label, declared schedule), in first-seen order."""
    out: dict[tuple[str, int, int, int], LedgerLoop] = {}
    for lp in loops:
        key = (lp.label, lp.ii, lp.depth, lp.body)
        out[key] = _merge(out.get(key), lp)
    return tuple(out.values())


def parse_ledger(text: str, design: str, clock_mhz: float, images: int = 1) -> Ledger:
    """Read the recorder's text lines (``tb/m3vit_csim_ledger.h``: site / region / proc / loop, tab-separated)."""
    sites: dict[int, tuple[str, int, int, int]] = {}
    regions: dict[tuple[str, str], int] = {}
    procs: list[tuple[tuple[str, str, str], list[LedgerLoop]]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line:
            continue
        f = line.split("\t")
        try:
            if f[0] == "site":
                sites[int(f[1])] = (f[2], int(f[3]), int(f[4]), int(f[5]))
            elif f[0] == "region":
                regions[(f[1], f[2])] = int(f[3])
            elif f[0] == "proc":
                procs.append(((f[1], f[2], f[3]), []))
            elif f[0] == "loop":
                label, ii, depth, body = sites[int(f[1])]
                trips = {int(k): int(v) for k, v in (h.split(":") for h in f[4].split(",") if h)}
                procs[-1][1].append(LedgerLoop(label, ii, depth, body, int(f[2]), int(f[3]), trips))
            else:
                raise LedgerError(f"unknown record {f[0]!r}")
        except (IndexError, KeyError, ValueError) as err:
            raise LedgerError(f"ledger line {n} is not a site/region/proc/loop record: {line!r} ({err})") from None
    processes = tuple(LedgerProcess(s, r, p, _merge_all(loops)) for (s, r, p), loops in procs if loops)
    return Ledger(design, clock_mhz, images, processes, regions)


def read_ledger(path: str | Path) -> Ledger:
    """Load a ``ledger.json`` written by :meth:`Ledger.write`."""
    try:
        doc = json.loads(Path(path).read_text())
        procs = tuple(
            LedgerProcess(p["step"], p["region"], p["name"], tuple(
                LedgerLoop(lp["label"], lp["ii"], lp["depth"], lp["body"], lp["entries"], lp["iterations"],
                           {int(k): v for k, v in lp["trips"].items()}) for lp in p["loops"]))
            for p in doc["processes"])
        regions = {(r["step"], r["region"]): r["executions"] for r in doc["regions"]}
        return Ledger(doc["design"], doc["clock_mhz"], doc["images"], procs, regions)
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise LedgerError(f"{path} is not a ledger.json written by m3vit csim --ledger ({err})") from None


def format_ledger_steps(ledger: Ledger, model_steps: dict[str, int] | None = None) -> str:
    """Markdown table: estimated cycles per step, next to a model's cycles per step (chunked steps such as
    ``embed.0``/``embed.1`` merged) when given, with the image totals and the latency at the clock."""
    mine: dict[str, float] = {}
    for k, v in ledger.step_cycles().items():
        mine[step_group(k)] = mine.get(step_group(k), 0) + v / max(1, ledger.images)
    model: dict[str, float] = {}
    for k, v in (model_steps or {}).items():
        model[step_group(k)] = model.get(step_group(k), 0) + v
    names = sorted(set(mine) | set(model), key=step_order)
    head = "| step | ledger cycles | model cycles | ledger / model |" if model_steps is not None else \
        "| step | ledger cycles |"
    lines = [f"_{ASSUMPTIONS}_", "", head, "|---|---|---|---|" if model_steps is not None else "|---|---|"]

    def cell(d: dict[str, float], k: str) -> str:
        return f"{d[k]:,.0f}" if k in d else "—"

    for k in names:
        if model_steps is None:
            lines.append(f"| {k} | {cell(mine, k)} |")
        else:
            ratio = f"{mine[k] / model[k]:.2f}" if k in mine and k in model and model[k] else ""
            lines.append(f"| {k} | {cell(mine, k)} | {cell(model, k)} | {ratio} |")
    tot, mtot = sum(mine.values()), sum(model.values())
    ms = ledger.latency_ms
    if model_steps is None:
        lines.append(f"| **image** | {tot:,.0f} ({ms:.2f} ms at {ledger.clock_mhz:g} MHz) |")
    else:
        mms = mtot / (ledger.clock_mhz * 1e3)
        lines.append(f"| **image** | {tot:,.0f} ({ms:.2f} ms) | {mtot:,.0f} ({mms:.2f} ms) | "
                     f"{tot / mtot if mtot else float('nan'):.2f} |")
    return "\n".join(lines)
