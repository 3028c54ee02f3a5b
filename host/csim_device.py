"""The digital twin's kernel: the generated C-simulation library behind a simulated register file.

On ap_start the twin decodes the argument registers exactly as the IP would (scalars, 64-bit
pointers split into low/high words at the offsets of register_map.json), takes views of the device
memory at those physical addresses, and calls the C-simulated top function on them. A wrong offset, a
badly split pointer, a buffer the driver forgot to flush or to invalidate all show up as wrong results.

The twin applies the kernel's argument guards itself (:func:`m3vit.codegen.guards.call_status`) before it
maps any memory: a refused call sets ``status`` and touches nothing, exactly as the IP does, without calling
the C simulation (whose own guard the tests compare with this one). An accepted call's ``status`` is the
one the C-simulated kernel wrote.
"""

from __future__ import annotations

from pathlib import Path

from m3vit import build_dir
from m3vit.codegen.config import DesignConfig
from m3vit.codegen.guards import call_status
from m3vit.codegen.hls import generate_project
from m3vit.host.registers import RegisterMap
from m3vit.host.twin import PhysicalMemory, SimulatedDevice
from m3vit.sim.csim import CsimLibrary, build_csim


def default_project_dir(cfg: DesignConfig) -> Path:
    return build_dir(cfg.name)


def csim_kernel(lib: CsimLibrary, regmap: RegisterMap):
    """A twin kernel callback running ``lib``'s top function on device memory; it returns the ``status``
    register."""

    def arg(regs: dict[int, int], name: str) -> int:
        offs = regmap.args[name]["data_offsets"]
        return sum(regs.get(o, 0) << (32 * i) for i, o in enumerate(offs))

    status_offset = regmap.offset("status")

    def kernel(regs: dict[int, int], memory: PhysicalMemory) -> dict[int, int]:
        n, task = arg(regs, "num_images"), arg(regs, "task")
        first, last = arg(regs, "first_layer"), arg(regs, "last_layer")
        refused = call_status(lib.cfg, n, task, first, last)
        if refused:
            return {status_offset: refused}
        in_stride = lib.sizes["image"] if first == 0 else lib.sizes["tokens"]
        status = lib.top(
            n, task, first, last,
            # a task-specialised image is shorter than a full one: the kernel reads only what its expert map
            # points to, so the buffer the driver allocated is all it gets
            weights=memory.view(arg(regs, "weights"), min(lib.sizes["weights"], memory.extent(arg(regs, "weights")))),
            scratch=memory.view(arg(regs, "scratch"), lib.sizes["scratch"]),
            inp=memory.view(arg(regs, "input"), n * in_stride),
            output=memory.view(arg(regs, "output"), n * lib.sizes["tokens"]),
        )
        return {status_offset: status}

    return kernel


def csim_device(cfg: DesignConfig, project_dir: str | Path | None = None) -> tuple[SimulatedDevice, RegisterMap]:
    """Generate (if needed) and compile the design's C simulation; return a twin device and its register map."""
    project = Path(project_dir) if project_dir is not None else default_project_dir(cfg)
    generate_project(cfg, project)  # idempotent: unchanged files are left alone, so the build cache hits
    lib = build_csim(project, cfg=cfg)
    regmap = RegisterMap.load(project / "register_map.json")
    names = {a["offset"]: n for n, a in regmap.args.items()}
    return SimulatedDevice(csim_kernel(lib, regmap), names), regmap
