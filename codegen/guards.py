"""The top function's argument guards: the bits of its ``status`` register and the ranges it accepts.

The kernel checks its scalar arguments before it touches memory; any out of range makes it write a non-zero
``status`` (one bit per cause, :data:`STATUS_FLAGS`) and return. The generator emits the bits and
:data:`MAX_IMAGES` into ``m3vit_config.h`` and ``register_map.json`` (the ``flags`` of ``status``); the
digital twin applies :func:`call_status`, and the driver names the causes with :func:`describe_status`.
"""

from __future__ import annotations

from dataclasses import dataclass

from m3vit.codegen.config import DesignConfig

MAX_IMAGES = 64
"""Images one kernel call accepts (``num_images`` in [1, MAX_IMAGES]). The driver's input and output buffers
hold at most this many images: MAX_IMAGES · (image + token bytes) is 177 MB for m3vit_small_nyud (2.8 MB per
image), a fraction of the ZCU104's 2 GiB PS DDR, while the kernel never addresses past what the driver can
allocate. The m_axi ``depth`` pragmas are unrelated (they size C/RTL co-simulation, one image)."""


@dataclass(frozen=True)
class StatusFlag:
    """One cause of a refused call: its bit in ``status`` and what it means."""

    name: str  # key in register_map.json and in messages
    bit: int
    doc: str

    @property
    def mask(self) -> int:
        return 1 << self.bit

    @property
    def cpp_name(self) -> str:
        """The constant in ``m3vit_config.h``: STATUS_<NAME>."""
        return f"STATUS_{self.name.upper()}"


STATUS_FLAGS: tuple[StatusFlag, ...] = (
    StatusFlag("images", 0, f"num_images is 0 or more than MAX_IMAGES = {MAX_IMAGES}"),
    StatusFlag("task", 1, "task >= TASKS (the config's task count)"),
    StatusFlag("first_layer", 2, "first_layer > DEPTH"),
    StatusFlag("last_layer", 3, "last_layer > DEPTH"),
    StatusFlag("layer_order", 4, "first_layer > last_layer"),
)
"""The status bits, in bit order; ``status = 0`` means the call ran."""
FLAG = {f.name: f for f in STATUS_FLAGS}


def call_status(cfg: DesignConfig, num_images: int, task: int, first_layer: int, last_layer: int) -> int:
    """The ``status`` the kernel of ``cfg`` writes for these arguments (0: it runs them)."""
    depth, tasks = cfg.model.depth, len(cfg.model.tasks)
    refused = {
        "images": not 1 <= num_images <= MAX_IMAGES,
        "task": task >= tasks,
        "first_layer": first_layer > depth,
        "last_layer": last_layer > depth,
        "layer_order": first_layer > last_layer,
    }
    return sum(FLAG[name].mask for name, bad in refused.items() if bad)


def describe_status(
    cfg: DesignConfig, status: int, num_images: int, task: int, first_layer: int, last_layer: int
) -> str:
    """One line naming every cause set in ``status``, with the value given and the range allowed."""
    depth, tasks = cfg.model.depth, len(cfg.model.tasks)
    causes = {
        "images": f"num_images = {num_images} is outside [1, {MAX_IMAGES}]",
        "task": f"task = {task} is outside [0, {tasks - 1}] ({tasks} tasks)",
        "first_layer": f"first_layer = {first_layer} is outside [0, {depth}]",
        "last_layer": f"last_layer = {last_layer} is outside [0, {depth}]",
        "layer_order": f"first_layer = {first_layer} > last_layer = {last_layer}",
    }
    parts = [causes[f.name] for f in STATUS_FLAGS if status & f.mask]
    unknown = status & ~sum(f.mask for f in STATUS_FLAGS)
    if unknown:
        parts.append(f"unknown status bits 0x{unknown:x} (the bitstream is not from this generator)")
    return f"the kernel refused the call (status 0x{status:x}): " + "; ".join(parts)
