"""Design-space exploration: sweep the hardware knobs and numeric formats, keep what fits the board.

``explore(cfg)`` evaluates every combination of ``mac_in``, ``mac_out``, ``token_tile``,
``attn_key_block`` and ``axi_data_bits`` (and each candidate set of numeric formats) with the analytic
model of :mod:`m3vit.codegen.perf`, keeps the designs whose every resource is within 80 % of the board
(the model's own estimate), and returns them with their Pareto fronts (latency vs DSPs, latency vs
on-chip memory) and the best design (lowest latency; ties → fewer DSPs, less memory).

Numeric formats change accuracy, so a format set other than the config's own is only eligible with a
measured accuracy proxy (cosine of the golden model vs the float reference, ``min_cosine``, default 0.99).
The library takes those measurements as an argument; ``main`` (``m3vit dse``) obtains them from
:mod:`m3vit.explore.schedules`, importing it lazily at run time (the measurement needs the golden model).

    m3vit dse m3vit_small_pascal --board zcu104 -o build/m3vit_small_pascal_dse.yaml
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from m3vit import BUILD_ROOT
from m3vit.codegen import perf
from m3vit.codegen.config import BOARDS, ConfigError, DesignConfig, load_config, parse_config, with_overrides
from m3vit.errors import ArgumentParser, UserError, float_range, run_main

SPACE: dict[str, tuple[int, ...]] = {
    "mac_in": (8, 16, 32, 64, 128),
    "mac_out": (8, 16, 32, 48, 64, 96, 128),
    "token_tile": (32, 64, 128),
    "attn_key_block": (32, 64, 128),
    "axi_data_bits": (128, 256),
}
"""The default sweep (hardware knobs of :class:`m3vit.codegen.config.HardwareConfig`)."""

QUICK_SPACE: dict[str, tuple[int, ...]] = {
    "mac_in": (16, 32, 64), "mac_out": (16, 32, 64), "token_tile": (32,), "attn_key_block": (64,),
    "axi_data_bits": (128,),
}
"""A small sweep for tests and quick looks."""

MIN_COSINE = 0.99
LATENCY_TIE = 0.001
"""Designs within 0.1 % of the lowest latency count as equally fast; the cheapest of them is the best."""
CONFIG_FORMATS = "config"
"""Label of the config's own numeric formats (always eligible: they are what the user asked for)."""


@dataclass(frozen=True)
class Design:
    """One evaluated point of the design space."""

    formats: str
    knobs: dict[str, int]
    cfg: DesignConfig
    latency_ms: float
    dsp: int
    on_chip_bytes: int
    resources: perf.Resources
    utilisation: dict[str, float]
    floor_ms: float
    cosine: float | None

    @property
    def floor_ratio(self) -> float:
        return self.floor_ms / self.latency_ms

    def row(self) -> str:
        k = self.knobs
        cos = "" if self.cosine is None else f"{self.cosine:.4f}"
        return (f"{self.formats:8s} {k['mac_in']:4d}x{k['mac_out']:<4d} tt {k['token_tile']:4d} kb "
                f"{k['attn_key_block']:4d} axi {k['axi_data_bits']:3d} | {self.latency_ms:8.2f} ms | "
                f"floor {self.floor_ms:7.2f} ms ({self.floor_ratio:5.1%}) | DSP {self.dsp:5d} | "
                f"{self.on_chip_bytes / perf.MIB:6.3f} MiB | BRAM {self.resources.bram36:4d} URAM "
                f"{self.resources.uram:3d} LUT {self.resources.lut:7d} | cos {cos}")


@dataclass
class DseResult:
    """Every feasible design, the Pareto fronts, the best design and what was rejected and why."""

    board: str
    designs: list[Design]
    rejected: dict[str, int] = field(default_factory=dict)
    format_cosine: dict[str, float | None] = field(default_factory=dict)

    @property
    def best(self) -> Design:
        """The lowest-latency design; among those within ``LATENCY_TIE`` of it, the fewest DSPs, then memory."""
        if not self.designs:
            raise ValueError(f"no design fits {self.board} within the resource limit; rejected: {self.rejected}")
        fastest = min(d.latency_ms for d in self.designs)
        near = [d for d in self.designs if d.latency_ms <= fastest * (1 + LATENCY_TIE)]
        return min(near, key=lambda d: (d.dsp, d.on_chip_bytes, d.latency_ms))

    def front(self, objective: str = "dsp") -> list[Design]:
        """Pareto front of (latency, ``objective``) with objective "dsp" or "memory" (both minimised)."""
        key: Callable[[Design], float] = (lambda d: d.dsp) if objective == "dsp" else (lambda d: d.on_chip_bytes)
        return pareto(self.designs, key)


def pareto(designs: Sequence[Design], key: Callable[[Design], float]) -> list[Design]:
    """Designs not dominated in (latency, key): no other design is at least as good in both and better in one."""
    front: list[Design] = []
    for d in sorted(designs, key=lambda d: (d.latency_ms, key(d))):
        if not front or key(d) < key(front[-1]):
            front.append(d)
    return front


def _overrides_valid(cfg: DesignConfig, overrides: Mapping[str, object]) -> DesignConfig | None:
    try:
        return with_overrides(cfg, **overrides)
    except ConfigError:
        return None


def explore(cfg: DesignConfig, board: str | None = None, space: Mapping[str, Sequence[int]] = SPACE,
            formats: Mapping[str, Mapping[str, object]] | None = None,
            cosines: Mapping[str, float | None] | None = None, min_cosine: float = MIN_COSINE,
            limit: float = perf.ARCH.util_limit, loads: Mapping[int, Sequence[int]] | None = None,
            arch: perf.Arch = perf.ARCH, check_hls: bool = True) -> DseResult:
    """Sweep ``space`` × ``formats`` for ``cfg`` on ``board`` (default: the config's) and keep what fits.

    ``formats`` maps a label to config overrides of the ``numerics`` section (the config's own formats are
    always included as ``"config"``); a label other than "config" is eligible only when ``cosines[label]``
    ≥ ``min_cosine``. ``loads`` are the MoE queue lengths to model (default balanced). When
    ``check_hls`` and the HLS generator is present, designs it rejects (m3vit.codegen.hls) are dropped.
    """
    board = board or cfg.hardware.board
    base = with_overrides(cfg, **{"hardware.board": board})
    spec = BOARDS[board]
    fmts: dict[str, Mapping[str, object]] = {CONFIG_FORMATS: {}, **(formats or {})}
    cos: dict[str, float | None] = {CONFIG_FORMATS: (cosines or {}).get(CONFIG_FORMATS)}
    rejected: dict[str, int] = {}
    hls_problems = _hls_checker() if check_hls else None
    designs: list[Design] = []
    names = list(space)
    for label, overrides in fmts.items():
        fcfg = _overrides_valid(base, overrides)
        if label != CONFIG_FORMATS:
            cos[label] = (cosines or {}).get(label)
        if fcfg is None:
            rejected[f"{label}: invalid formats"] = 1
            continue
        if label != CONFIG_FORMATS and (cos[label] is None or cos[label] < min_cosine):
            rejected[f"{label}: accuracy proxy below {min_cosine}"] = 1
            continue
        for values in itertools.product(*(space[n] for n in names)):
            knobs = dict(zip(names, values, strict=True))
            c = fcfg.model_copy(update={"hardware": fcfg.hardware.model_copy(update=knobs)})
            res = perf.resources(c, arch)
            util = res.utilisation(spec)
            if any(u > limit for u in util.values()):
                worst = max(util, key=util.get)
                why = f"{label}: {worst} over {limit:.0%}"
                rejected[why] = rejected.get(why, 0) + 1
                continue
            if hls_problems is not None and hls_problems(c):
                rejected[f"{label}: HLS generator rejects"] = rejected.get(f"{label}: HLS generator rejects", 0) + 1
                continue
            rep = perf.evaluate(c, loads, arch)
            designs.append(Design(label, knobs, c, rep.latency_ms, res.dsp, rep.on_chip_bytes, res, util,
                                  rep.dsp_floor_ms, cos[label]))
    return DseResult(board=board, designs=designs, rejected=rejected, format_cosine=cos)


def _hls_checker() -> Callable[[DesignConfig], list[str]] | None:
    """The HLS generator's own feasibility check, when the generator is installed (same layer)."""
    try:
        from m3vit.codegen.hls import hls_problems
    except ImportError:
        return None
    return hls_problems


# ------------------------------------------------------------------------------------ output
def dse_name(cfg: DesignConfig) -> str:
    """Name of the explored design: the config's name + "_dse" (kept a valid 32-character identifier)."""
    return (cfg.name[: 32 - 4] + "_dse") if not cfg.name.endswith("_dse") else cfg.name


def write_config(d: Design, path: str | Path, name: str | None = None) -> Path:
    """Write design ``d`` as a YAML config ready for ``generate`` (a header comment records the model)."""
    path = Path(path)
    cfg = parse_config({**d.cfg.model_dump(), "name": name or dse_name(d.cfg)}, "--name")  # before writing
    data = cfg.model_dump(mode="json")
    cos = "not measured" if d.cosine is None else f"{d.cosine:.4f}"
    header = (
        f"# Written by `m3vit dse` (m3vit.explore.dse): the lowest-latency design within "
        f"{perf.ARCH.util_limit:.0%} of every {d.cfg.hardware.board} resource.\n"
        f"# Modeled (m3vit.codegen.perf, balanced routing, the generated kernels): {d.latency_ms:.2f} ms per "
        f"image and task at "
        f"{d.cfg.hardware.clock_mhz:g} MHz; DSP floor {d.floor_ms:.2f} ms ({d.floor_ratio:.1%});\n"
        f"# on-chip {d.on_chip_bytes / perf.MIB:.3f} MiB; DSP {d.dsp}, BRAM36 {d.resources.bram36}, URAM "
        f"{d.resources.uram}, LUT {d.resources.lut}, FF {d.resources.ff}.\n"
        f"# Numeric formats '{d.formats}': accuracy proxy (min cosine vs float at reduced size) {cos}.\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(data, sort_keys=False))
    load_config(path)  # the written file must load back as a valid config
    return path


def format_front(res: DseResult, objective: str = "dsp", limit: int = 12) -> str:
    front = res.front(objective)
    step = max(1, len(front) // limit)
    shown = front[::step] if len(front) > limit else front
    if shown and shown[-1] is not front[-1]:
        shown.append(front[-1])
    return "\n".join(d.row() for d in shown)


# ------------------------------------------------------------------------------------ CLI
def format_study(cfg: DesignConfig, progress: bool = True) -> tuple[dict[str, dict], dict[str, float]]:
    """Candidate 8-bit activation formats calibrated on the float reference, with their accuracy proxies.

    Runs the PyTorch reference and the golden model at reduced image size (m3vit.explore.schedules)."""
    from m3vit.explore import schedules  # imported here: only the format study needs the golden model

    small = with_overrides(cfg, **schedules._reduced_size(cfg))
    ranges = schedules.activation_ranges(small)
    formats = {
        "a8": schedules.calibrated_formats(cfg, 8, ("norm", "qkv", "hidden"), ranges),
        "a8_mlp": schedules.calibrated_formats(cfg, 8, ("norm", "hidden"), ranges),
    }
    cosines = {CONFIG_FORMATS: schedules.format_accuracy(cfg)}
    for label, ov in formats.items():
        c = _overrides_valid(cfg, ov)
        cosines[label] = schedules.format_accuracy(c) if c is not None else float("nan")
        if progress:
            print(f"  formats {label}: {_describe(ov)} → min cosine {cosines[label]:.5f}", file=sys.stderr)
    return formats, cosines


def _describe(overrides: Mapping[str, object]) -> str:
    parts = []
    for k, v in overrides.items():
        if isinstance(v, dict):
            parts.append(f"{k.split('.')[-1]} Q{v['bits']}.{v['frac']}")
    return ", ".join(parts)


def command(argv: Sequence[str]) -> int:
    """``m3vit dse``: explore and write the best design; raises the toolkit's errors (see :func:`main`)."""
    ap = ArgumentParser(prog="m3vit dse", description="Design-space exploration with the analytic "
                                 "performance model; writes the best design as a config.")
    ap.add_argument("config", help="config file or preset name")
    ap.add_argument("--board", default=None, choices=sorted(BOARDS), help="target board (default: the config's)")
    ap.add_argument("-o", "--output", default=None, help="where to write the best design (default: "
                    "build/<name>_dse.yaml)")
    ap.add_argument("--name", default=None, help="design name of the written config (default: <name>_dse)")
    ap.add_argument("--no-formats", action="store_true", help="keep the config's numeric formats")
    ap.add_argument("--min-cosine", type=float_range(-1.0, 1.0), default=MIN_COSINE,
                    help="accuracy-proxy threshold of a format")
    ap.add_argument("--quick", action="store_true", help="a small sweep")
    ap.add_argument("--limit", type=float_range(0.0, 1.0, low_open=True), default=perf.ARCH.util_limit,
                    help="max fraction of each resource")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    out = Path(args.output) if args.output else BUILD_ROOT / f"{dse_name(cfg)}.yaml"
    if out.is_dir():
        raise UserError(f"-o/--output {out} is a folder; give the .yaml file to write")
    if args.name is not None:  # refused now, not after the exploration
        parse_config({**cfg.model_dump(), "name": args.name}, "--name")
    formats: dict[str, dict] = {}
    cosines: dict[str, float] = {}
    if not args.no_formats:
        print("measuring the accuracy proxy of candidate formats (golden vs float, reduced size) ...",
              file=sys.stderr)
        formats, cosines = format_study(cfg)
    res = explore(cfg, args.board, QUICK_SPACE if args.quick else SPACE, formats, cosines, args.min_cosine,
                  args.limit)
    print(f"== {cfg.name} on {res.board}: {len(res.designs)} designs fit within {args.limit:.0%} of every resource")
    for why, n in sorted(res.rejected.items()):
        print(f"   rejected {n:5d}: {why}")
    for label, c in res.format_cosine.items():
        print(f"   formats {label}: accuracy proxy {'not measured' if c is None else f'{c:.5f}'}")
    print("-- Pareto front, latency vs DSP:")
    print(format_front(res, "dsp"))
    print("-- Pareto front, latency vs on-chip memory:")
    print(format_front(res, "memory"))
    best = res.best
    print("-- best:")
    print(best.row())
    write_config(best, out, args.name)
    print(f"wrote {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """:func:`command` with user errors as one line (exit status 2) and ``--debug``."""
    return run_main(command, argv)


if __name__ == "__main__":
    raise SystemExit(main())
