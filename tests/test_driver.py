"""The host driver, run through the digital twin (the generated C simulation behind simulated registers)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from m3vit.codegen.config import load_config
from m3vit.codegen.guards import MAX_IMAGES
from m3vit.codegen.layout import pack_images, scratch_layout
from m3vit.host.driver import AP_IDLE, CTRL, Accelerator, AcceleratorError, AcceleratorTimeoutError
from m3vit.host.twin import TwinBuffer
from m3vit.host.weights import WeightsError, load_weights, pack_model
from m3vit.sim.golden import GoldenModel
from m3vit.sim.inputs import random_image
from m3vit.sim.quantize import quantize_state_dict
from tests.conftest import reference


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    cfg = load_config("tiny")
    sd = reference(cfg).state_dict()
    path = tmp_path_factory.mktemp("twin") / "tiny.m3w"
    pack_model(cfg, sd, path)
    golden = GoldenModel(cfg, quantize_state_dict(cfg, sd))
    return cfg, path, golden


@pytest.fixture
def acc(tiny_setup):
    cfg, path, _ = tiny_setup
    with Accelerator.simulated(cfg, path, timeout_s=60) as a:
        yield a


def _images(cfg, n: int, seed: int = 0) -> np.ndarray:
    return np.stack([random_image(cfg, seed + i) for i in range(n)])


def test_every_task_bit_exact_against_golden(acc, tiny_setup) -> None:
    cfg, _, golden = tiny_setup
    images = _images(cfg, 3)
    for task in cfg.model.task_names:
        out = acc.run(images, task, raw=True)
        for b in range(3):
            assert np.array_equal(out[b], golden.run(golden.quantize_image(images[b]), task).tokens)


def test_float_output_and_predict(acc, tiny_setup) -> None:
    cfg, _, golden = tiny_setup
    image = random_image(cfg, 5)
    feats = acc.run(image, "semseg")
    assert feats.dtype == np.float32 and feats.shape == (1, cfg.model.num_tokens, cfg.model.dim)
    np.testing.assert_array_equal(feats[0], golden.run(golden.quantize_image(image), 0).tokens * cfg.numerics.act.lsb)
    heads = acc.predict(image, "semseg")
    assert heads.shape == (1, 5, 32, 32) and np.isfinite(heads).all()


def test_task_switch_writes_only_the_task_register(acc, tiny_setup) -> None:
    cfg, _, _ = tiny_setup
    dev = acc.device
    image = random_image(cfg, 6)
    acc.run(image, "semseg")
    dev.reset_counters()
    acc.run(image, "depth")
    input_bytes = acc._buffers["input"].nbytes
    assert dev.memory.bytes_flushed == input_bytes  # the image, and no weights
    task_off = acc.regmap.offset("task")
    pointer_offs = {o for n in acc.regmap.pointers() for o in acc.regmap.args[n]["data_offsets"]}
    assert dev.register_writes[task_off] == 1
    assert not pointer_offs & set(dev.register_writes)
    dev.reset_counters()
    acc.run(image, "depth")  # same task: the task register is not written at all
    assert dev.register_writes[task_off] == 0


def test_weights_uploaded_once(tiny_setup) -> None:
    cfg, path, _ = tiny_setup
    with Accelerator.simulated(cfg, path) as a:
        uploaded = a.device.memory.bytes_flushed
        assert uploaded == load_weights(path, cfg).device.size
        a.run(random_image(cfg, 1), 0)
        a.run(random_image(cfg, 1), 1)
        assert a.device.memory.bytes_flushed - uploaded == 2 * a._buffers["input"].nbytes


def test_missing_cache_flush_is_visible(acc, tiny_setup, monkeypatch) -> None:
    """The twin really models caches: a driver that skipped flush() would compute on stale data."""
    cfg, _, golden = tiny_setup
    first, second = random_image(cfg, 7), random_image(cfg, 8)
    acc.run(first, 0)
    monkeypatch.setattr(TwinBuffer, "flush", lambda self: None)
    stale = acc.run(second, 0, raw=True)[0]
    assert np.array_equal(stale, golden.run(golden.quantize_image(first), 0).tokens)


def test_timeout_raises_with_register_dump_and_reset_recovers(tiny_setup) -> None:
    cfg, path, golden = tiny_setup
    with Accelerator.simulated(cfg, path, timeout_s=0.2) as a:
        a.device.hang = True
        with pytest.raises(AcceleratorTimeoutError, match=r"did not finish within 0.2 s; registers: ctrl@0x00=0x") as e:
            a.run(random_image(cfg), 0)
        assert "task@0x18" in str(e.value) and "weights@" in str(e.value)
        a.reset()  # recovers: pointers rewritten, weights still in device memory
        a.timeout_s = 60
        assert np.array_equal(a.run(random_image(cfg, 3), 1, raw=True)[0],
                              golden.run(golden.quantize_image(random_image(cfg, 3)), 1).tokens)


def test_bad_inputs(acc, tiny_setup) -> None:
    cfg, _, _ = tiny_setup
    with pytest.raises(ValueError, match=r"expected \[B, 3, 32, 32\]"):
        acc.run(np.zeros((1, 3, 16, 16)), 0)
    with pytest.raises(ValueError, match="unknown task 'sky'"):
        acc.run(random_image(cfg), "sky")
    with pytest.raises(TypeError, match="neither float"):
        acc.run(np.zeros((3, 32, 32), dtype=bool), 0)
    with pytest.raises(TypeError, match="quantized=True"):
        acc.run(np.full((3, 32, 32), 200, dtype=np.uint8), 0)  # a raw 8-bit photo is not the input format
    with pytest.raises(ValueError, match="input format"):
        acc.run(np.full((3, 32, 32), 1 << 20, dtype=np.int64), 0, quantized=True)
    with pytest.raises(ValueError, match="1 <= first <= last <= 4"):
        acc.run_tokens(np.zeros((1, 17, 64), np.int64), 0, first_layer=3, last_layer=2)
    with pytest.raises(ValueError, match="1 <= first"):
        acc.run_tokens(np.zeros((1, 17, 64), np.int64), 0, first_layer=0, last_layer=2)
    with pytest.raises(ValueError, match=r"expected \[B, 17, 64\]"):
        acc.run_tokens(np.zeros((1, 16, 64), np.int64), 0, first_layer=1, last_layer=2)
    with pytest.raises(ValueError, match="NaN"):
        acc.run(np.full((3, 32, 32), np.nan), 0)


def test_corrupt_weights_refused_before_any_device_write(tiny_setup, tmp_path) -> None:
    cfg, path, _ = tiny_setup
    bad = tmp_path / "bad.m3w"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    bad.write_bytes(bytes(data))
    from m3vit.host.csim_device import csim_device

    device, regmap = csim_device(cfg)
    with pytest.raises(WeightsError, match="checksum"):
        Accelerator(cfg, regmap, device, load_weights(bad, cfg))
    assert device.memory.bytes_flushed == 0 and not device.memory.blocks and not device.register_writes
    with pytest.raises(WeightsError):
        Accelerator.simulated(cfg, bad)


def test_threads_share_one_accelerator(acc, tiny_setup) -> None:
    cfg, _, golden = tiny_setup
    images = _images(cfg, 4, seed=20)
    want = {(i, t): golden.run(golden.quantize_image(images[i]), t).tokens for i in range(4) for t in range(2)}
    errors: list[str] = []

    def worker(i: int) -> None:
        for t in (0, 1, 0):
            if not np.array_equal(acc.run(images[i], t, raw=True)[0], want[(i, t)]):
                errors.append(f"image {i} task {t}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors


def test_close_frees_buffers(tiny_setup) -> None:
    cfg, path, _ = tiny_setup
    a = Accelerator.simulated(cfg, path)
    mem = a.device.memory
    assert len(mem.blocks) == 4
    a.close()
    assert not mem.blocks
    with pytest.raises(RuntimeError, match="closed"):
        a.run(random_image(cfg), 0)


def test_benchmark_and_batches(acc, tiny_setup) -> None:
    cfg, _, golden = tiny_setup
    stats = acc.benchmark(n=2, batch=2)
    assert stats["throughput_images_per_s"] > 0 and stats["batch_size"] == 2
    images = _images(cfg, 5, seed=30)  # grows the I/O buffers
    out = acc.run(images, 1, raw=True)
    assert np.array_equal(out[4], golden.run(golden.quantize_image(images[4]), 1).tokens)


def test_layer_range_debug_matches_golden_taps(acc, tiny_setup) -> None:
    cfg, _, golden = tiny_setup
    image = random_image(cfg, 40)
    res = golden.run(golden.quantize_image(image), 1)
    got = acc.run_tokens(res.taps["block0.out"][None], 1, first_layer=2, last_layer=3)
    assert np.array_equal(got[0], res.taps["block2.out"])


def test_quantized_integer_images_equal_float_images(acc, tiny_setup) -> None:
    cfg, _, golden = tiny_setup
    image = random_image(cfg, 50)
    q = golden.quantize_image(image)
    assert np.array_equal(acc.run(q, 0, raw=True, quantized=True), acc.run(image, 0, raw=True))


def test_saturation_is_reported(acc, tiny_setup) -> None:
    cfg, _, golden = tiny_setup
    image = random_image(cfg, 51)
    acc.run(image, 0)
    assert acc.saturation() == golden.run(golden.quantize_image(image), 0).saturation == {}
    loud = image * 50.0  # far outside the input format: pixels clip on the host, activations saturate
    acc.run(loud, 1)
    sat = acc.saturation()
    clipped = int(np.count_nonzero(np.abs(loud * 2**cfg.numerics.input.frac) > 2**15 - 1))
    assert sat["host"]["input"] == clipped > 0
    kernel = {k: v for k, v in sat.items() if k != "host"}
    assert kernel == golden.run(golden.quantize_image(loud), 1).saturation
    stats = acc.benchmark(n=2)
    assert 0 < stats["kernel_ms"] <= stats["runtime_ms"]


class _SlowTwin:
    """A slowed twin: the kernel computes, then holds ap_done back until ``finish`` is set. The driver's
    first poll of a busy kernel raises KeyboardInterrupt (Ctrl-C while waiting for ap_done); later polls of
    a busy kernel set ``finish`` when ``release_on_poll``."""

    def __init__(self, device, monkeypatch, release_on_poll: bool) -> None:
        self.finish = threading.Event()
        self.interrupt = True
        self.release_on_poll = release_on_poll
        kernel, read = device.kernel, device.read

        def slow_kernel(regs, memory) -> None:
            kernel(regs, memory)
            self.finish.wait()

        def read_ctrl(offset: int) -> int:
            value = read(offset)
            if offset == CTRL and not value & AP_IDLE:
                if self.interrupt:
                    self.interrupt = False
                    raise KeyboardInterrupt
                if self.release_on_poll:
                    self.finish.set()
            return value

        monkeypatch.setattr(device, "kernel", slow_kernel)
        monkeypatch.setattr(device, "read", read_ctrl)


def test_run_after_ctrl_c_waits_and_returns_its_own_output(tiny_setup, monkeypatch) -> None:
    """Ctrl-C during the wait for ap_done: the next run waits for the interrupted kernel, then runs its image."""
    cfg, path, golden = tiny_setup
    first, second = random_image(cfg, 60), random_image(cfg, 61)
    with Accelerator.simulated(cfg, path, timeout_s=60) as a:
        slow = _SlowTwin(a.device, monkeypatch, release_on_poll=True)
        with pytest.raises(KeyboardInterrupt):
            a.run(first, 0)
        assert not slow.finish.is_set()  # the interrupted kernel is still running
        out = a.run(second, 1, raw=True)[0]
        assert np.array_equal(out, golden.run(golden.quantize_image(second), 1).tokens)
        assert not np.array_equal(out, golden.run(golden.quantize_image(first), 0).tokens)
        assert a.device.runs == 2
        assert np.array_equal(a.run(first, 0, raw=True)[0], golden.run(golden.quantize_image(first), 0).tokens)


def test_run_after_ctrl_c_times_out_without_touching_the_device_and_reset_recovers(tiny_setup, monkeypatch) -> None:
    """An interrupted kernel that never finishes: the next run times out before writing input or registers."""
    cfg, path, golden = tiny_setup
    image = random_image(cfg, 62)
    with Accelerator.simulated(cfg, path, timeout_s=0.3) as a:
        slow = _SlowTwin(a.device, monkeypatch, release_on_poll=False)
        with pytest.raises(KeyboardInterrupt):
            a.run(random_image(cfg, 63), 0)
        a.device.reset_counters()
        with pytest.raises(AcceleratorTimeoutError, match=r"earlier kernel call \(interrupted or timed out\) did "
                                                          r"not finish within 0.3 s; call reset\(\), then retry; reg"):
            a.run(image, 1)
        assert a.device.memory.bytes_flushed == 0 and not a.device.register_writes
        a.reset()
        slow.finish.set()  # the abandoned run completes after the reset: it must not raise ap_done
        a.timeout_s = 60
        assert np.array_equal(a.run(image, 1, raw=True)[0], golden.run(golden.quantize_image(image), 1).tokens)


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), True, "5"])
def test_bad_timeouts_are_refused(tiny_setup, acc, timeout) -> None:
    cfg, path, _ = tiny_setup
    with pytest.raises(ValueError, match="timeout_s must be a finite number of seconds > 0"):
        Accelerator.simulated(cfg, path, timeout_s=timeout)
    with pytest.raises(ValueError, match="timeout_s must be"):
        acc.timeout_s = timeout


def test_benchmark_refuses_empty_runs(acc) -> None:
    for kwargs in ({"n": 0}, {"n": -3}, {"batch": 0}, {"n": 2.5}):
        with pytest.raises(ValueError, match=r"benchmark (n|batch) must be an integer >= 1"):
            acc.benchmark(**kwargs)


def test_tasks_by_index_as_the_message_promises(acc, tiny_setup) -> None:
    cfg, _, golden = tiny_setup
    image = random_image(cfg, 64)
    want = golden.run(golden.quantize_image(image), 1).tokens
    for task in (1, np.int64(1), np.uint8(1), "1", "depth"):
        assert np.array_equal(acc.run(image, task, raw=True)[0], want), repr(task)
    for bad in ("2", 2, -1, "-1", True, 1.0, "sky"):
        with pytest.raises(ValueError, match=r"unknown task .*indices 0\.\.1"):
            acc.run(image, bad)


# ------------------------------------------------------------------------------------------ kernel guards
def test_host_side_checks_bound_the_image_count(acc, tiny_setup) -> None:
    """The driver refuses an empty batch (and a benchmark or buffer larger than one call takes) before it touches
    the device, and splits more than MAX_IMAGES images into calls of at most MAX_IMAGES."""
    cfg, path, golden = tiny_setup
    writes = sum(acc.device.register_writes.values())
    with pytest.raises(ValueError, match=r"no inputs: the batch has shape \[0, 3, 32, 32\]"):
        acc.run(np.zeros((0, 3, 32, 32), np.float32), 0)
    with pytest.raises(ValueError, match=r"no inputs: the batch has shape \[0, 17, 64\]"):
        acc.run_tokens(np.zeros((0, 17, 64), np.int64), 0, 1, 1)
    with pytest.raises(ValueError, match=rf"benchmark batch {MAX_IMAGES + 1} is more than one kernel call takes"):
        acc.benchmark(n=1, batch=MAX_IMAGES + 1)
    assert sum(acc.device.register_writes.values()) == writes
    with pytest.raises(ValueError, match=rf"max_batch must be an integer in \[1, {MAX_IMAGES}\]"):
        Accelerator.simulated(cfg, path, max_batch=MAX_IMAGES + 1)
    images = np.repeat(_images(cfg, 2, seed=80), [MAX_IMAGES, 1], axis=0)  # MAX_IMAGES + 1: two calls
    runs = acc.device.runs
    out = acc.run(images, 0, raw=True)
    assert acc.device.runs - runs == 2 and out.shape[0] == MAX_IMAGES + 1
    for i in (0, MAX_IMAGES - 1, MAX_IMAGES):
        assert np.array_equal(out[i], golden.run(golden.quantize_image(images[i]), 0).tokens), i
    assert acc._buffers["output"].nbytes == MAX_IMAGES * scratch_layout(cfg).token_bytes


@pytest.mark.parametrize(
    ("num_images", "task", "first", "last", "message"),
    [
        (0, 0, 0, 4, rf"num_images = 0 is outside \[1, {MAX_IMAGES}\]"),
        (MAX_IMAGES + 1, 0, 0, 4, rf"num_images = {MAX_IMAGES + 1} is outside \[1, {MAX_IMAGES}\]"),
        (1, 2, 0, 4, r"task = 2 is outside \[0, 1\] \(2 tasks\)"),
        (1, 0, 0, 5, r"last_layer = 5 is outside \[0, 4\]"),
        (1, 0, 5, 5, r"first_layer = 5 is outside \[0, 4\]; last_layer = 5 is outside \[0, 4\]"),
        (1, 0, 3, 1, r"first_layer = 3 > last_layer = 1"),
    ],
)
def test_kernel_refusal_raises_naming_the_cause(acc, tiny_setup, num_images, task, first, last, message) -> None:
    """Past the host-side checks (``_execute`` is the call itself), the kernel's guard refuses the call; the
    driver reads the status register and raises one line naming the cause and the allowed range. Device
    memory is untouched, and the next good call runs (status 0)."""
    cfg, _, golden = tiny_setup
    image = random_image(cfg, 70)
    acc.run(random_image(cfg, 71), 0)  # output and scratch hold a run's results
    blocks = {name: acc.device.memory.blocks[acc._buffers[name].device_address] for name in ("output", "scratch")}
    before = {name: block.copy() for name, block in blocks.items()}
    with pytest.raises(AcceleratorError, match=rf"^the kernel refused the call \(status 0x[0-9a-f]+\): {message}$"):
        acc._execute(pack_images(cfg, golden.quantize_image(image)[None]), num_images, task, first, last)
    for name, block in blocks.items():
        assert np.array_equal(block, before[name]), f"the refused call changed {name}"
    assert acc.run(image, 1, raw=True)[0].tolist() == golden.run(golden.quantize_image(image), 1).tokens.tolist()
    assert acc.device.read(acc.regmap.offset("status")) == 0


def test_register_map_without_the_status_bits_is_refused(tiny_setup) -> None:
    """A register map from another generator (no status register, or other bits) is refused before any write."""
    cfg, path, _ = tiny_setup
    from m3vit.host.csim_device import csim_device
    from m3vit.host.registers import RegisterMap

    device, regmap = csim_device(cfg)
    no_status = RegisterMap({**regmap.data, "args": [a for a in regmap.data["args"] if a["name"] != "status"]})
    with pytest.raises(AcceleratorError, match="no status register"):
        Accelerator(cfg, no_status, device, load_weights(path, cfg))
    moved = [{**a, "flags": {**a["flags"], "task": {"bit": 7, "doc": ""}}} if a["name"] == "status" else a
             for a in regmap.data["args"]]
    with pytest.raises(AcceleratorError, match="status bits"):
        Accelerator(cfg, RegisterMap({**regmap.data, "args": moved}), device, load_weights(path, cfg))
    assert not device.register_writes and not device.memory.blocks


def test_status_bits_the_driver_does_not_know_are_named(acc, tiny_setup) -> None:
    """A kernel reporting a bit outside the generator's set (another bitstream) is still refused, by number."""
    cfg, _, _ = tiny_setup
    status = acc.regmap.offset("status")
    acc.device.kernel = lambda regs, memory: {status: 1 << 20 | 1 << 1}
    with pytest.raises(AcceleratorError, match=r"status 0x100002\): task = 1 is outside \[0, 1\] \(2 tasks\); "
                                               r"unknown status bits 0x100000"):
        acc.run(random_image(cfg), 1)
