"""A simulated device with the shape of a PYNQ board: registers, physical memory, cacheable buffers.

The host driver (:mod:`m3vit.host.driver`) talks to this exactly as it talks to pynq:

* ``read(offset)`` / ``write(offset, value)`` on 32-bit AXI-Lite registers (like ``DefaultIP``);
* ``allocate(shape, dtype)`` returns a numpy array with ``device_address``, ``flush()``,
  ``invalidate()`` and ``freebuffer()`` (like ``pynq.allocate(..., cacheable=True)``).

Device memory is separate from the host arrays, as with a CPU cache in front of DDR: the kernel sees
only what was flushed, and the host sees the kernel's results only after ``invalidate()``. Forgetting
either is a visible bug here, as it would be on the board. Writing ap_start runs the kernel callback on
a background thread (ap_idle low, then ap_done and ap_idle high), so polling and time-outs are real; the
registers the callback returns (the kernel's output scalars, e.g. ``status``) are set when it finishes.
Counters record every byte flushed to device memory and every register write.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

CTRL = 0x00
AP_START, AP_DONE, AP_IDLE, AP_READY = 0x1, 0x2, 0x4, 0x8


class PhysicalMemory:
    """Device DDR: byte arrays at physical addresses (4 KiB-aligned, starting at ``base``)."""

    def __init__(self, base: int = 0x1000_0000) -> None:
        self._next = base
        self.blocks: dict[int, np.ndarray] = {}
        self.bytes_flushed = 0
        self.bytes_invalidated = 0

    def allocate(self, nbytes: int) -> int:
        addr = self._next
        self.blocks[addr] = np.zeros(max(nbytes, 1), np.uint8)
        self._next += (max(nbytes, 1) + 0xFFF) & ~0xFFF
        return addr

    def free(self, addr: int) -> None:
        self.blocks.pop(addr, None)

    def extent(self, addr: int) -> int:
        """Bytes from ``addr`` to the end of the allocation holding it (0 outside every allocation)."""
        for base, block in self.blocks.items():
            if base <= addr < base + block.size:
                return base + block.size - addr
        return 0

    def view(self, addr: int, nbytes: int) -> np.ndarray:
        """A writable uint8 view of ``nbytes`` of device memory at ``addr`` (must lie in one allocation)."""
        for base, block in self.blocks.items():
            if base <= addr and addr + nbytes <= base + block.size:
                return block[addr - base : addr - base + nbytes]
        raise MemoryError(f"device access at 0x{addr:x}+{nbytes} is outside every allocated buffer")


class TwinBuffer(np.ndarray):
    """A host-side numpy array backed by a device allocation (like ``pynq.buffer.PynqBuffer``)."""

    device_address: int
    _memory: PhysicalMemory | None

    def flush(self) -> None:
        """Host → device (clean the cache lines)."""
        mem = self._require()
        raw = np.ascontiguousarray(self).view(np.uint8).reshape(-1)
        mem.view(self.device_address, raw.size)[:] = raw
        mem.bytes_flushed += raw.size

    def invalidate(self) -> None:
        """Device → host (drop the cache lines)."""
        mem = self._require()
        raw = self.view(np.uint8).reshape(-1)
        raw[:] = mem.view(self.device_address, raw.size)
        mem.bytes_invalidated += raw.size

    def freebuffer(self) -> None:
        if getattr(self, "_memory", None) is not None:
            self._memory.free(self.device_address)
            self._memory = None

    close = freebuffer

    def _require(self) -> PhysicalMemory:
        if getattr(self, "_memory", None) is None:
            raise RuntimeError("buffer was freed")
        return self._memory

    @property
    def physical_address(self) -> int:
        return self.device_address


Kernel = Callable[[dict[int, int], PhysicalMemory], dict[int, int] | None]
"""A kernel callback: given the register file (offset → 32-bit value) and device memory, compute; it may
return output registers (offset → 32-bit value) the device sets before ap_done."""


class SimulatedDevice:
    """Registers + memory + a kernel that runs on ap_start. ``hang=True`` makes it never finish."""

    def __init__(self, kernel: Kernel, register_names: dict[int, str] | None = None) -> None:
        self.kernel = kernel
        self.memory = PhysicalMemory()
        self.registers: dict[int, int] = {CTRL: AP_IDLE}
        self.register_names = register_names or {}
        self.register_writes: Counter[int] = Counter()
        self.hang = False
        self.runs = 0
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._generation = 0  # bumped by reset(): a run started before it no longer touches the registers

    # ---------------------------------------------------------------------------- pynq-like API
    def allocate(self, shape: Any, dtype: Any = np.uint8, cacheable: bool = True) -> TwinBuffer:
        del cacheable  # the twin always behaves like a cacheable buffer: flush/invalidate are required
        host = np.zeros(shape, dtype)
        buf = host.view(TwinBuffer)
        buf.device_address = self.memory.allocate(host.nbytes)
        buf._memory = self.memory
        return buf

    def read(self, offset: int) -> int:
        with self._lock:
            value = self.registers.get(offset, 0)
            if offset == CTRL and value & AP_DONE:
                self.registers[CTRL] = value & ~AP_DONE  # ap_done is clear-on-read
            return value

    def write(self, offset: int, value: int) -> None:
        if offset % 4:
            raise ValueError(f"unaligned register write at 0x{offset:x}")
        with self._lock:
            self.register_writes[offset] += 1
            if offset == CTRL and value & AP_START:
                if not self.registers[CTRL] & AP_IDLE:
                    return  # ap_start while busy is ignored, as in HLS blocks
                self.registers[CTRL] = (self.registers[CTRL] & ~(AP_IDLE | AP_DONE)) | AP_START
                self._thread = threading.Thread(target=self._run, args=(self._generation,), daemon=True)
                self._thread.start()
                return
            self.registers[offset] = value & 0xFFFF_FFFF

    # ---------------------------------------------------------------------------- kernel thread
    def _run(self, generation: int) -> None:
        if self.hang:
            return  # never finishes: the driver must time out
        outputs: dict[int, int] = {}
        try:
            outputs = self.kernel(dict(self.registers), self.memory) or {}
        except BaseException as err:  # surfaced to the driver through .error
            if generation == self._generation:
                self.error = err
        with self._lock:
            if generation != self._generation:
                return  # abandoned by a reset: its completion must not look like a later run's
            self.runs += 1
            for offset, value in outputs.items():
                self.registers[offset] = value & 0xFFFF_FFFF
            self.registers[CTRL] = (self.registers[CTRL] & ~AP_START) | AP_DONE | AP_IDLE | AP_READY

    def reset(self) -> None:
        """Like a PL reset: registers cleared and idle; a hung or running kernel run is abandoned (it no longer
        sets ap_done; a C simulation already under way still finishes writing its output). Memory is kept."""
        with self._lock:
            self._generation += 1
            self.hang = False
            self.error = None
            self.registers = {CTRL: AP_IDLE}

    def reset_counters(self) -> None:
        self.memory.bytes_flushed = self.memory.bytes_invalidated = 0
        self.register_writes.clear()
