"""The ``m3vit`` command line.

Sub-commands are thin wrappers: each parses its arguments, calls one library function and prints a
short summary. Errors that a user can fix (bad config, unknown task, missing tool) print one line
prefixed ``m3vit: error:`` and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np

from m3vit.codegen.config import ConfigError, load_config


def cmd_check(args: argparse.Namespace) -> None:
    """Validate a config and print its derived sizes."""
    cfg = load_config(args.config)
    m, hw = cfg.model, cfg.hardware
    print(f"{cfg.name}: valid (hash {cfg.config_hash()[:12]})")
    print(f"  image {m.image_size[0]}x{m.image_size[1]}, patch {m.patch_size} -> {m.num_tokens} tokens")
    print(f"  dim {m.dim}, depth {m.depth}, heads {m.num_heads} (head dim {m.head_dim}), dense MLP {m.mlp_hidden}")
    print(f"  MoE blocks {sorted(m.moe_block_set)}: {m.num_experts} experts top-{m.top_k}, hidden {m.expert_hidden},"
          f" gate {m.gate}")
    print(f"  tasks: {', '.join(f'{t.name}({t.channels})' for t in m.tasks)}")
    n = cfg.numerics
    print("  formats: " + ", ".join(f"{k} {getattr(n, k)}" for k in
                                    ("input", "act", "norm", "qkv", "hidden", "logit", "weight", "ln_param")))
    print(f"  hardware: {hw.board} ({hw.board_spec.part}) @ {hw.clock_mhz:g} MHz, MAC {hw.mac_in}x{hw.mac_out}")


def cmd_demo(args: argparse.Namespace) -> None:
    """Float reference vs bit-accurate golden model, every task, on a sample image."""
    import torch

    from m3vit.sim.golden import GoldenModel
    from m3vit.sim.quantize import quantize_state_dict
    from m3vit.sim.reference import build_reference

    cfg = load_config(args.config)
    m = cfg.model
    print(f"== {cfg.name}: {m.num_tokens} tokens, depth {m.depth}, {m.num_experts} experts top-{m.top_k}, "
          f"tasks {m.task_names}")
    ref = build_reference(cfg, seed=args.seed)
    q = quantize_state_dict(cfg, ref.state_dict())
    print(f"quantised weights to {cfg.numerics.weight}; weights saturated: {sum(q.saturation.values())}")
    golden = GoldenModel(cfg, q)
    image = np.random.default_rng(args.seed).normal(0, 1, (m.in_channels, *m.image_size))
    image_q = golden.quantize_image(image)
    batch = torch.from_numpy(image[None]).float()
    for task in m.task_names:
        t0 = time.perf_counter()
        res = golden.run(image_q, task)
        dt = time.perf_counter() - t0
        got = res.tokens * cfg.numerics.act.lsb
        with torch.no_grad():
            out = ref(batch, task)
            head = ref.head(torch.from_numpy(got[None]).float(), task)[0]
        want = out.tokens[0].double().numpy()
        cos = float((got * want).sum() / np.linalg.norm(got) / np.linalg.norm(want))
        loads = {i: r.load.tolist() for i, r in res.routing.items()}
        sat = sum(sum(v.values()) for v in res.saturation.values())
        print(f"-- task {task}: golden {dt * 1e3:.1f} ms, cosine vs float {cos:.5f}, saturations {sat}, "
              f"head output {list(head.shape)} range [{head.min():.3f}, {head.max():.3f}]")
        for i, load in loads.items():
            print(f"   block {i} expert load: {load}")


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], None], str]] = {
    "check": (cmd_check, "validate a config (path or preset name) and print its derived sizes"),
    "demo": (cmd_demo, "run the float reference and the bit-accurate golden model for every task"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="m3vit", description="Deploy multi-task Mixture-of-Experts ViTs (M3ViT) on Xilinx FPGAs."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (fn, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("config", nargs="?", default="tiny", help="config file or preset name (default: tiny)")
        if name == "demo":
            p.add_argument("--seed", type=int, default=0, help="seed of the sample weights and image")
        p.set_defaults(func=fn)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ConfigError, ValueError, TypeError, FileNotFoundError) as err:
        print(f"m3vit: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
