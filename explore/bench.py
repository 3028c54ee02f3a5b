"""Benchmarks printed by ``make bench``: ratios measured side by side in one run.

Timings on shared machines are noisy, so every comparison interleaves its contenders over several
rounds and reports medians and their ratio; nothing here is a pass/fail threshold.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from m3vit.codegen.config import load_config
from m3vit.errors import ArgumentParser, int_range
from m3vit.sim.golden import GoldenModel
from m3vit.sim.quantize import quantize_state_dict
from m3vit.sim.reference import build_reference


def interleaved(contenders: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median wall time (s) of each contender, run alternately ``rounds`` times after one warm-up."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for fn in contenders.values():
        fn()
    for _ in range(rounds):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def golden_vs_pytorch(config: str = "m3vit_small_pascal", rounds: int = 3, task: int = 0) -> dict[str, float]:
    """Golden model vs PyTorch float for one image of ``config`` (one task); prints and returns times."""
    cfg = load_config(config)
    ref = build_reference(cfg, seed=0)
    golden = GoldenModel(cfg, quantize_state_dict(cfg, ref.state_dict()))
    image = np.random.default_rng(0).normal(0, 1, (cfg.model.in_channels, *cfg.model.image_size))
    image_q = golden.quantize_image(image)
    batch = torch.from_numpy(image[None]).float()

    threads = torch.get_num_threads()

    def run_torch(n: int) -> Callable[[], object]:
        def run() -> object:
            torch.set_num_threads(n)  # OpenMP with 2 threads can be far slower than 1 on a busy machine
            try:
                with torch.no_grad():
                    return ref.backbone(batch, task)
            finally:
                torch.set_num_threads(threads)

        return run

    contenders = {f"pytorch_float_{n}t": run_torch(n) for n in sorted({1, threads})}
    contenders["golden_int"] = lambda: golden.run(image_q, task, taps=False)
    times = interleaved(contenders, rounds)
    best = min((v, k) for k, v in times.items() if k.startswith("pytorch"))
    ratio = times["golden_int"] / best[0]
    torch_times = ", ".join(f"{k.removeprefix('pytorch_float_')} {v:.3f} s" for k, v in times.items()
                            if k.startswith("pytorch"))
    print(
        f"[golden vs pytorch] {config}: {cfg.model.num_tokens} tokens, task {cfg.model.task_names[task]}, "
        f"median of {rounds}: pytorch float by threads ({torch_times}), golden {times['golden_int']:.3f} s, "
        f"ratio to the fastest pytorch {ratio:.2f}x (target <= 3x)"
    )
    return {**times, "ratio": ratio}


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="m3vit bench", description="m3vit benchmarks (ratios measured side by side)")
    parser.add_argument("--config", default="m3vit_small_pascal")
    parser.add_argument("--rounds", type=int_range(1), default=3)
    args = parser.parse_args(argv)
    golden_vs_pytorch(args.config, args.rounds)
    for extra in _extra_benches():
        extra()


def _extra_benches() -> list[Callable[[], object]]:
    """Benchmarks contributed by other modules (C simulation, RTL), when they are present."""
    benches: list[Callable[[], object]] = []
    try:
        from m3vit.sim.csim import bench as csim_bench
    except ImportError:
        pass
    else:
        benches.append(csim_bench)
    return benches


if __name__ == "__main__":
    main()
