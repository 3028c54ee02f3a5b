"""``evaluate(cfg)``: the whole model of one image (steps, timeline, resources, buffers) as a :class:`PerfReport`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from m3vit.codegen.config import DesignConfig
from m3vit.codegen.perf.arch import ARCH, MIB, Arch, dsp_floor_s, mac_counts
from m3vit.codegen.perf.resources import Buffer, Resources, buffers, resources
from m3vit.codegen.perf.timeline import Step, Timeline, build_steps, run_timeline


# ------------------------------------------------------------------------------------ the report
@dataclass(frozen=True)
class PerfReport:
    """Everything :func:`evaluate` models for one image of one task (cycles at ``clock_mhz``)."""

    cfg: DesignConfig
    steps: list[Step]
    timeline: Timeline
    resources: Resources
    buffers: list[Buffer]
    macs: dict[str, int]
    arch: Arch = field(default=ARCH)

    @property
    def cycles(self) -> int:
        return self.timeline.total

    @property
    def clock_hz(self) -> float:
        return self.cfg.hardware.clock_mhz * 1e6

    @property
    def latency_ms(self) -> float:
        return self.cycles / self.clock_hz * 1e3

    @property
    def total_macs(self) -> int:
        return sum(self.macs.values())

    @property
    def dsp_floor_ms(self) -> float:
        """Roofline floor on this design's own DSPs (all of them, side units included)."""
        return dsp_floor_s(self.cfg, self.resources.dsp) * 1e3

    @property
    def array_floor_ms(self) -> float:
        """Roofline floor on the MAC array's DSPs only."""
        return dsp_floor_s(self.cfg, self.resources.dsp_by_unit["mac_array"]) * 1e3

    @property
    def board_floor_ms(self) -> float:
        """Roofline floor on every DSP of the board at this design's packing."""
        return dsp_floor_s(self.cfg, self.cfg.hardware.board_spec.dsp) * 1e3

    @property
    def floor_ratio(self) -> float:
        """DSP floor / modeled latency (1.0 = every DSP busy every cycle)."""
        return self.dsp_floor_ms / self.latency_ms

    @property
    def on_chip_bytes(self) -> int:
        return sum(b.bytes for b in self.buffers)

    @property
    def on_chip_mib(self) -> float:
        return self.on_chip_bytes / MIB

    @property
    def weight_ddr_bytes(self) -> int:
        return sum(s.weight_bytes + s.side_bytes for s in self.steps)

    @property
    def act_ddr_bytes(self) -> int:
        return sum(s.act_bytes for s in self.steps)

    def step_cycles(self) -> dict[str, int]:
        """Cycles of each step in the timeline, its stall (waiting for weights) included; they sum to ``cycles``."""
        out: dict[str, int] = {}
        prev = 0
        for s, end in zip(self.steps, self.timeline.end, strict=True):
            out[s.name] = out.get(s.name, 0) + end - prev
            prev = end
        return out

    def step_waits(self) -> dict[str, int]:
        """Cycles of each step spent waiting rather than computing: its stall for weights (timeline) and the
        start-up of its stages (the first job's weight load the MAC array waits for). The cycle ledger prices
        a DATAFLOW region by its slowest process and sees neither; ``step_cycles - step_waits`` is what it
        measures."""
        out: dict[str, int] = {}
        for s, stall in zip(self.steps, self.timeline.stall, strict=True):
            out[s.name] = out.get(s.name, 0) + stall + s.startup
        return out

    def unit_busy(self) -> dict[str, int]:
        """Busy cycles per unit over the image (MAC array, softmax, LayerNorm, ..., both DMA ports)."""
        busy: dict[str, int] = {}
        for s in self.steps:
            for k, v in s.units.items():
                busy[k] = busy.get(k, 0) + v
        busy["dma_weights"] = sum(self.timeline.load_end[i] - self.timeline.load_start[i]
                                  for i in range(len(self.steps)))
        return busy

    def by_layer(self) -> dict[str, dict[str, int]]:
        """Cycles per layer split by step kind, plus ``stall`` (waiting for weights)."""
        out: dict[str, dict[str, int]] = {}
        for s, st, en, sl in zip(self.steps, self.timeline.start, self.timeline.end, self.timeline.stall,
                                 strict=True):
            row = out.setdefault(s.layer, {})
            kind = "mlp" if s.kind in ("mlp_chunk", "expert", "router") else s.kind
            row[kind] = row.get(kind, 0) + (en - st)
            row["stall"] = row.get("stall", 0) + sl
        return out

    def summary(self) -> dict[str, float]:
        r = self.resources
        return {
            "latency_ms": self.latency_ms, "cycles": float(self.cycles), "dsp_floor_ms": self.dsp_floor_ms,
            "floor_ratio": self.floor_ratio, "board_floor_ms": self.board_floor_ms,
            "on_chip_mib": self.on_chip_mib, "dsp": float(r.dsp), "bram36": float(r.bram36),
            "uram": float(r.uram), "lut": float(r.lut), "ff": float(r.ff),
            "weight_ddr_mib": self.weight_ddr_bytes / MIB, "act_ddr_mib": self.act_ddr_bytes / MIB,
            "gmacs": self.total_macs / 1e9,
        }


def evaluate(cfg: DesignConfig, loads: Mapping[int, Sequence[int]] | None = None, arch: Arch = ARCH) -> PerfReport:
    """Model one image of one task; ``loads`` = per-MoE-block queue lengths of a routing (default balanced)."""
    steps = build_steps(cfg, loads, arch)
    return PerfReport(cfg=cfg, steps=steps, timeline=run_timeline(cfg, steps, arch),
                      resources=resources(cfg, arch), buffers=buffers(cfg, arch), macs=mac_counts(cfg), arch=arch)


