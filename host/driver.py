"""The host driver: one ``Accelerator`` class for the ZCU104 (through pynq) and for the digital twin.

The driver knows the device only through two calls it shares with pynq — ``read/write(offset)`` on the
IP's registers and ``allocate(shape, dtype)`` for cacheable buffers with ``device_address``,
``flush()``, ``invalidate()`` — and the layout/register map written by the generator (never
re-derived). On a board, :meth:`Accelerator.board` opens the overlay with pynq; without one,
:meth:`Accelerator.simulated` runs the very same code against :class:`m3vit.host.twin.SimulatedDevice`,
whose ap_start runs the generated C-simulation library on the buffers this driver allocated.

Weights are uploaded once; ``run(images, task)`` writes the input, the task register and ap_start;
switching tasks writes one register and re-uploads nothing. The driver checks every argument before the
call; the kernel checks them again (its ``status`` register, :mod:`m3vit.codegen.guards`), and a refused
call raises :class:`AcceleratorError` naming the causes.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from m3vit.codegen.config import DesignConfig, load_config
from m3vit.codegen.guards import MAX_IMAGES, STATUS_FLAGS, describe_status
from m3vit.codegen.layout import pack_images, pack_tokens, read_saturation, scratch_layout, unpack_tokens
from m3vit.errors import ToolkitError
from m3vit.host.heads import task_head
from m3vit.host.registers import RegisterMap
from m3vit.host.weights import Weights, WeightsError, load_weights
from m3vit.sim.fixedpoint import SaturationLog, quantize_float

AP_START, AP_DONE, AP_IDLE = 0x1, 0x2, 0x4
CTRL = 0x00


class AcceleratorError(ToolkitError, RuntimeError):
    """The device misbehaved (time-out, kernel error) or the kernel refused a call (its status register)."""


class AcceleratorTimeoutError(AcceleratorError, TimeoutError):
    """ap_done did not rise in time; the message carries a register dump."""


class Device(Protocol):
    """What the driver needs from a device: pynq's DefaultIP register access plus an allocator."""

    def read(self, offset: int) -> int: ...
    def write(self, offset: int, value: int) -> None: ...
    def allocate(self, shape: Any, dtype: Any = ..., cacheable: bool = ...) -> Any: ...
    def reset(self) -> None: ...


def checked_timeout(value: object) -> float:
    """``value`` as a time-out in seconds; ValueError unless it is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"timeout_s must be a finite number of seconds > 0, got {value!r}")
    return float(value)


class Accelerator:
    """Runs the M³ViT backbone on the accelerator; ``predict`` adds the task heads on the CPU.

    Use as a context manager (buffers are freed on exit). All calls are serialised by a lock, so one
    instance can be shared between threads.
    """

    def __init__(
        self, cfg: DesignConfig, regmap: RegisterMap, device: Device, weights: Weights,
        timeout_s: float = 30.0, max_batch: int = 1,
    ) -> None:
        if weights.config_hash != cfg.config_hash():  # before anything is written to the device
            raise WeightsError(f"{weights.path or 'weights'}: packed for design {weights.manifest['design']!r} "
                               f"(config hash {weights.config_hash}), not {cfg.name!r} ({cfg.config_hash()})")
        self.cfg, self.regmap, self.device, self.weights = cfg, regmap, device, weights
        self.timeout_s = timeout_s
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or not 1 <= max_batch <= MAX_IMAGES:
            raise ValueError(f"max_batch must be an integer in [1, {MAX_IMAGES}], got {max_batch!r}")
        if "status" not in regmap.args:
            raise AcceleratorError("register_map.json has no status register: the bitstream was built by an older "
                                   "generator whose kernel cannot report refused calls; rebuild it")
        if regmap.flags("status") != {f.name: f.bit for f in STATUS_FLAGS}:
            raise AcceleratorError(f"register_map.json's status bits {regmap.flags('status')} are not this driver's "
                                   f"{ {f.name: f.bit for f in STATUS_FLAGS} }: rebuild the bitstream")
        self._lock = threading.RLock()
        self._task: int | None = None
        self._in_flight = False  # a kernel run was started and not yet seen finished
        self._host_saturation: dict[str, dict[str, int]] = {}
        self.last_kernel_s = 0.0
        self._closed = False
        self._buffers: dict[str, Any] = {}
        # weights: uploaded once
        wbuf = device.allocate(weights.device.shape, np.uint8, cacheable=True)
        wbuf[:] = weights.device
        wbuf.flush()
        self._buffers["weights"] = wbuf
        self._buffers["scratch"] = device.allocate((scratch_layout(cfg).total_bytes,), np.uint8, cacheable=True)
        self._alloc_io(max_batch)
        for name in ("weights", "scratch"):
            self._write_pointer(name, self._buffers[name].device_address)

    @property
    def timeout_s(self) -> float:
        """Seconds to wait for ap_done (and for an earlier, interrupted call to finish) before giving up."""
        return self._timeout_s

    @timeout_s.setter
    def timeout_s(self, value: float) -> None:
        self._timeout_s = checked_timeout(value)

    # ------------------------------------------------------------------------------ constructors
    @classmethod
    def simulated(
        cls, cfg: DesignConfig | str | Path, weights: Weights | str | Path, project_dir: str | Path | None = None,
        task: str | int | None = None, **kwargs: Any,
    ) -> Accelerator:
        """The digital twin: same driver, a simulated device running the generated C-simulation library.

        ``task``: the task the caller will run, checked against a task-specialised file before the device
        is even built (the driver checks every run's task anyway)."""
        from m3vit.host.csim_device import csim_device

        if "timeout_s" in kwargs:
            checked_timeout(kwargs["timeout_s"])  # before the C simulation is built
        cfg = cfg if isinstance(cfg, DesignConfig) else load_config(cfg)
        w = weights if isinstance(weights, Weights) else load_weights(weights, cfg)
        if task is not None:
            w.check_task(cfg, cfg.model.task_index(task))
        device, regmap = csim_device(cfg, project_dir)
        return cls(cfg, regmap, device, w, **kwargs)

    @classmethod
    def board(
        cls, bitfile: str | Path, weights: str | Path, config: str | Path | None = None,
        task: str | int | None = None, **kwargs: Any,
    ) -> Accelerator:
        """On a PYNQ board (or a PC with ``PYNQ_REMOTE_DEVICES`` set): load ``bitfile`` and its ``.hwh``.

        ``config`` defaults to ``<bitfile stem>.yaml`` beside the bitstream (written by ``make bitstream``);
        the register map is ``register_map.json`` beside it. The weights must carry the bitstream's
        config hash; ``task`` as in :meth:`simulated` (checked before the bitstream is downloaded).
        """
        from m3vit.host.pynq_device import open_overlay

        if "timeout_s" in kwargs:
            checked_timeout(kwargs["timeout_s"])  # before the bitstream is downloaded
        bitfile = Path(bitfile)
        cfg = load_config(config or bitfile.with_suffix(".yaml"))
        regmap = RegisterMap.load(bitfile.with_name("register_map.json"))
        build_hash = json.loads(bitfile.with_suffix(".json").read_text())["config_hash"]
        w = load_weights(weights, cfg, build_hash=build_hash)  # checked before anything touches the device
        if task is not None:
            w.check_task(cfg, cfg.model.task_index(task))
        device = open_overlay(bitfile, regmap)
        return cls(cfg, regmap, device, w, **kwargs)

    # ------------------------------------------------------------------------------ buffers & registers
    def _alloc_io(self, batch: int) -> None:
        for name in ("input", "output"):
            old = self._buffers.pop(name, None)
            if old is not None:
                old.freebuffer()
        lay = scratch_layout(self.cfg)
        self._buffers["input"] = self.device.allocate((batch * lay.image_bytes,), np.uint8, cacheable=True)
        self._buffers["output"] = self.device.allocate((batch * lay.token_bytes,), np.uint8, cacheable=True)
        self._batch = batch
        for name in ("input", "output"):
            self._write_pointer(name, self._buffers[name].device_address)

    def _write_pointer(self, name: str, address: int) -> None:
        off = self.regmap.offset(name)
        self.device.write(off, address & 0xFFFF_FFFF)
        self.device.write(off + 4, address >> 32)

    def _set_scalar(self, name: str, value: int) -> None:
        value = int(value)
        if not 0 <= value <= 0xFFFF_FFFF:
            raise ValueError(f"{name} = {value} does not fit its 32-bit register [0, {0xFFFF_FFFF}]")
        self.device.write(self.regmap.offset(name), value)

    def _execute_batches(self, pack: Callable[..., np.ndarray], data: np.ndarray, task: int, first_layer: int,
                         last_layer: int) -> np.ndarray:
        """Tokens for every input of ``data`` [B, ...], B >= 1, in kernel calls of at most MAX_IMAGES inputs."""
        if data.shape[0] < 1:
            raise ValueError(f"no inputs: the batch has shape {list(data.shape)}; give at least one (B >= 1)")
        return np.concatenate([
            self._execute(pack(self.cfg, data[i : i + MAX_IMAGES]), len(data[i : i + MAX_IMAGES]), task,
                          first_layer, last_layer)
            for i in range(0, data.shape[0], MAX_IMAGES)
        ])

    # ------------------------------------------------------------------------------ inputs
    def _images_to_int(self, images: np.ndarray, quantized: bool) -> np.ndarray:
        m, fmt = self.cfg.model, self.cfg.numerics.input
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        expected = (m.in_channels, *m.image_size)
        if images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(f"images have shape {list(images.shape)}; expected [B, {', '.join(map(str, expected))}] "
                             f"or [{', '.join(map(str, expected))}]")
        if np.issubdtype(images.dtype, np.floating):
            if not np.all(np.isfinite(images)):
                raise ValueError("images contain NaN or inf")
            log = SaturationLog()
            log.layer = "host"
            ints = quantize_float(images, fmt, log, "input")  # docs/numerics.md §4; clipped pixels are counted
            self._host_saturation = log.by_layer()
            return ints
        if np.issubdtype(images.dtype, np.integer) and not np.issubdtype(images.dtype, np.bool_):
            if not quantized:
                raise TypeError(f"integer images ({images.dtype}) are taken as {fmt} values only with quantized=True;"
                                f" pass normalised float images otherwise")
            if images.size and (images.min() < fmt.qmin or images.max() > fmt.qmax):
                raise ValueError(f"integer images must lie in the input format {fmt} range [{fmt.qmin}, {fmt.qmax}]")
            self._host_saturation = {}
            return images.astype(np.int64)
        raise TypeError(f"images dtype {images.dtype} is neither float (normalised) nor integer ({fmt})")

    # ------------------------------------------------------------------------------ running
    def run(self, images: np.ndarray, task: str | int, raw: bool = False, quantized: bool = False) -> np.ndarray:
        """Backbone tokens [B, T, dim] for images [B, C, H, W] or [C, H, W].

        Images are normalised floats (quantised here; clipped pixels are counted, see :meth:`saturation`),
        or, with ``quantized=True``, integers already in the config's input format. Returns floats (the act
        format scaled) or, with ``raw=True``, the integers the kernel wrote. More than MAX_IMAGES (64) images
        run as several kernel calls of at most MAX_IMAGES each.
        """
        t = self.cfg.model.task_index(task)
        self.weights.check_task(self.cfg, t)  # a task-specialised file runs its own task only
        ints = self._images_to_int(images, quantized)
        tokens = self._execute_batches(pack_images, ints, t, 0, self.cfg.model.depth)
        return tokens if raw else tokens.astype(np.float32) * np.float32(self.cfg.numerics.act.lsb)

    def run_tokens(self, tokens: np.ndarray, task: str | int, first_layer: int, last_layer: int) -> np.ndarray:
        """Debug: run layers ``first_layer..last_layer`` (i + 1 = block i) on integer tokens [B, T, dim] (act)."""
        t = self.cfg.model.task_index(task)
        self.weights.check_task(self.cfg, t)
        depth = self.cfg.model.depth
        if not 1 <= first_layer <= last_layer <= depth:
            raise ValueError(f"layer range [{first_layer}, {last_layer}] must satisfy 1 <= first <= last <= {depth} "
                             f"(layer 0, the patch embedding, takes images: use run())")
        tokens = np.asarray(tokens, dtype=np.int64)
        m = self.cfg.model
        if tokens.ndim != 3 or tokens.shape[1:] != (m.num_tokens, m.dim):
            raise ValueError(f"tokens have shape {list(tokens.shape)}; expected [B, {m.num_tokens}, {m.dim}]")
        return self._execute_batches(pack_tokens, tokens, t, first_layer, last_layer)

    def _execute(self, packed: np.ndarray, batch: int, task: int, first_layer: int, last_layer: int) -> np.ndarray:
        """One kernel call on packed input bytes: flush, registers, ap_start, wait, status, invalidate, unpack.

        The arguments are not checked here (the callers do): the kernel's guard refuses what is out of range
        and its status register raises AcceleratorError; tests call this directly to prove it. The buffers
        grow to at most MAX_IMAGES images, the most the kernel accepts."""
        with self._lock:
            self._check_open()
            self._wait_idle()  # before the input buffer or any register is touched
            if self._batch < batch <= MAX_IMAGES:
                self._alloc_io(batch)
            inp, out = self._buffers["input"], self._buffers["output"]
            inp[: packed.size] = packed
            inp.flush()
            if self._task != task:
                self._set_scalar("task", task)  # a task switch is this one register write
                self._task = task
            self._set_scalar("num_images", batch)
            self._set_scalar("first_layer", first_layer)
            self._set_scalar("last_layer", last_layer)
            self._start_and_wait()
            status = self.device.read(self.regmap.offset("status"))
            if status:
                raise AcceleratorError(describe_status(self.cfg, status, batch, task, first_layer, last_layer))
            out.invalidate()
            return unpack_tokens(self.cfg, np.asarray(out), batch)

    def saturation(self) -> dict[str, dict[str, int]]:
        """Saturation counts of the last image the kernel processed (layer → class → count), read from the
        kernel's counters in the scratch buffer, plus ``host`` → ``input`` for pixels clipped while quantising."""
        with self._lock:
            self._check_open()
            scratch = self._buffers["scratch"]
            scratch.invalidate()
            counts = read_saturation(self.cfg, np.asarray(scratch))
        return {**{k: v for k, v in counts.items() if v}, **self._host_saturation}

    def _poll(self, finished: Callable[[int], bool], what: str) -> None:
        """Poll the control register until ``finished(ctrl)``; after ``timeout_s`` an AcceleratorTimeoutError
        whose message is ``what`` (``{t}`` = the time-out) and a register dump."""
        deadline = time.monotonic() + self.timeout_s
        delay = 1e-4
        while True:
            ctrl = self.device.read(CTRL)
            if finished(ctrl):
                return
            if time.monotonic() > deadline:
                raise AcceleratorTimeoutError(f"{what.format(t=f'{self.timeout_s:g}')}; registers: {self._dump(ctrl)}")
            time.sleep(delay)
            delay = min(delay * 2, 0.01)

    def _wait_idle(self) -> None:
        """Wait until the kernel is idle (ap_idle high, ap_start low).

        A call interrupted while waiting for ap_done (Ctrl-C) or timed out leaves its kernel running; its
        results must never be read as the next call's, and its input must not change under it. Reading the
        control register here also clears that run's ap_done (clear-on-read), so the next poll only sees
        the new run's."""
        what = ("an earlier kernel call (interrupted or timed out) did not finish within {t} s; call reset(), then "
                "retry" if self._in_flight else "the kernel was busy (started elsewhere?) and not idle within {t} s")
        self._poll(lambda ctrl: bool(ctrl & AP_IDLE) and not ctrl & AP_START, what)
        self._in_flight = False

    def _start_and_wait(self) -> None:
        t_start = time.perf_counter()
        self._in_flight = True  # cleared only once this run is seen finished (here or by _wait_idle)
        self.device.write(CTRL, AP_START)
        self._poll(lambda ctrl: bool(ctrl & (AP_DONE | AP_IDLE)) and not ctrl & AP_START,
                   "kernel did not finish within {t} s")
        self._in_flight = False
        self.last_kernel_s = time.perf_counter() - t_start
        err = getattr(self.device, "error", None)
        if err is not None:
            self.device.error = None
            raise AcceleratorError(f"the kernel failed: {err}") from err

    def _dump(self, ctrl: int) -> str:
        parts = [f"ctrl@0x00=0x{ctrl:08x}"]
        for name, arg in self.regmap.args.items():
            words = [self.device.read(o) for o in arg["data_offsets"]]
            value = sum(w << (32 * i) for i, w in enumerate(words))
            parts.append(f"{name}@0x{arg['offset']:02x}=0x{value:x}")
        return ", ".join(parts)

    def predict(self, images: np.ndarray, task: str | int) -> np.ndarray:
        """Task output [B, channels, H, W]: backbone on the accelerator, the task head on the CPU."""
        name = self.cfg.model.task_names[self.cfg.model.task_index(task)]
        tokens = self.run(images, name)
        with np.errstate(over="ignore", invalid="ignore"):  # reported below, with the head's name
            out = task_head(self.cfg, tokens, name, self.weights.host)
        if not np.all(np.isfinite(out)):
            bad = int(np.count_nonzero(~np.isfinite(out)))
            raise AcceleratorError(f"the {name} head produced {bad} non-finite values (NaN or inf) of {out.size}; "
                                   f"its weights in the .m3w are too large for float32")
        return out

    def benchmark(self, n: int = 10, batch: int = 1, task: str | int = 0) -> dict[str, float]:
        """Latency and throughput over ``n`` runs of ``batch`` images (like FINN's throughput_test)."""
        for name, value in (("n", n), ("batch", batch)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"benchmark {name} must be an integer >= 1, got {value!r}")
        if batch > MAX_IMAGES:
            raise ValueError(f"benchmark batch {batch} is more than one kernel call takes (MAX_IMAGES = {MAX_IMAGES})")
        m = self.cfg.model
        images = np.zeros((batch, m.in_channels, *m.image_size), np.float32)
        self.run(images, task)  # warm-up, sets the task
        times, kernel = [], []
        for _ in range(n):
            t0 = time.perf_counter()
            self.run(images, task)
            times.append(time.perf_counter() - t0)
            kernel.append(self.last_kernel_s)
        runtime = float(np.mean(times))
        lay = scratch_layout(self.cfg)
        return {
            "runtime_ms": runtime * 1e3, "latency_ms_p50": float(np.median(times)) * 1e3,
            "kernel_ms": float(np.mean(kernel)) * 1e3,  # ap_start → ap_done seen by the poll loop
            "host_overhead_ms": (runtime - float(np.mean(kernel))) * 1e3,  # quantise, pack, flush, invalidate
            "throughput_images_per_s": batch / runtime, "batch_size": batch,
            "dram_in_bandwidth_MBps": batch * lay.image_bytes / runtime / 1e6,
            "dram_out_bandwidth_MBps": batch * lay.token_bytes / runtime / 1e6,
        }

    def reset(self) -> None:
        """Recover after a time-out: reset the device (the twin restarts its kernel; a board re-downloads the
        bitstream), then write the buffer addresses again. Weights stay in DDR and are not re-uploaded."""
        with self._lock:
            self._check_open()
            self.device.reset()
            self._task = None
            self._in_flight = False
            for name in ("weights", "scratch", "input", "output"):
                self._write_pointer(name, self._buffers[name].device_address)

    # ------------------------------------------------------------------------------ lifetime
    def _check_open(self) -> None:
        if self._closed:
            raise AcceleratorError("the accelerator was closed")

    def close(self) -> None:
        with self._lock:
            for buf in self._buffers.values():
                buf.freebuffer()
            self._buffers.clear()
            self._closed = True

    def __enter__(self) -> Accelerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Accelerator", "AcceleratorError", "AcceleratorTimeoutError", "WeightsError"]
