"""The ``m3vit`` command line.

Sub-commands are thin wrappers: each parses its arguments, calls library functions and prints a short
summary. Errors that a user can fix (bad config, unknown task, corrupt weights, missing tool) print one
line prefixed ``m3vit: error:`` and exit with status 2 (1 when a check or a tool run fails).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from m3vit import build_dir
from m3vit.codegen.config import ConfigError, DesignConfig, load_config
from m3vit.codegen.project import find_hls_tool, generate
from m3vit.demo import run_demo, sample_images


class UserError(RuntimeError):
    """A problem the user can fix; printed as one line."""


def project_dir(cfg: DesignConfig, out: str | None) -> Path:
    """``--out`` if given, else ``build/<name>``."""
    return Path(out) if out else build_dir(cfg.name)


# ------------------------------------------------------------------------------------------ check
def cmd_check(args: argparse.Namespace) -> int:
    """Validate a config and print its derived sizes."""
    cfg = load_config(args.config)
    m, hw, n = cfg.model, cfg.hardware, cfg.numerics
    print(f"{cfg.name}: valid (hash {cfg.config_hash()[:12]})")
    print(f"  image {m.image_size[0]}x{m.image_size[1]}, patch {m.patch_size} -> {m.num_tokens} tokens")
    print(f"  dim {m.dim}, depth {m.depth}, heads {m.num_heads} (head dim {m.head_dim}), dense MLP {m.mlp_hidden}")
    print(f"  MoE blocks {sorted(m.moe_block_set)}: {m.num_experts} experts top-{m.top_k}, hidden {m.expert_hidden},"
          f" gate {m.gate}")
    print(f"  tasks: {', '.join(f'{t.name}({t.channels})' for t in m.tasks)}")
    print("  formats: " + ", ".join(f"{k} {getattr(n, k)}" for k in
                                    ("input", "act", "norm", "qkv", "hidden", "logit", "weight", "ln_param")))
    print(f"  hardware: {hw.board} ({hw.board_spec.part}) @ {hw.clock_mhz:g} MHz, MAC {hw.mac_in}x{hw.mac_out}")
    from m3vit.codegen.hls import hls_problems

    problems = hls_problems(cfg)
    for problem in problems:
        print(f"  HLS generator: cannot build this design: {problem}")
    return 1 if problems else 0


# ------------------------------------------------------------------------------------------ generate
def cmd_generate(args: argparse.Namespace) -> int:
    """Write the Vitis HLS project (C++, testbench, run_hls.tcl, register map, layouts) and the Vivado script."""
    cfg = load_config(args.config)
    project = generate(cfg, project_dir(cfg, args.out))
    print(f"generated {project} (HLS project; Vivado script in {project / 'vivado' / 'build_bitstream.tcl'})")
    return 0


def cmd_csim(args: argparse.Namespace) -> int:
    """Compile the generated C++ with g++ and compare every layer of every task with the golden model."""
    from m3vit.sim.csim import main as csim_main

    argv = [args.config, *(["-o", args.out] if args.out else []), *(["--no-layers"] if args.no_layers else []),
            *(["--ledger"] if args.ledger else [])]
    return csim_main(argv)


# ------------------------------------------------------------------------------------------ weights
def load_float_model(cfg: DesignConfig, model: str, seed: int, allow_missing: bool = False):
    """A reference model with the weights of ``model``: a checkpoint file, or ``random`` (trained-scale init).

    A checkpoint that lacks some of the model's tensors (a DeiT file has no experts or routers; a foreign
    file may lack the task heads) is refused unless ``allow_missing``: those tensors would silently keep
    their random initialisation.
    """
    from m3vit.sim.reference import build_reference

    ref = build_reference(cfg, seed=seed)
    if model != "random":
        if not Path(model).is_file():
            raise UserError(f"model file {model!r} does not exist (give a checkpoint, or 'random')")
        from m3vit.train.checkpoint import import_weights

        result = import_weights(ref, model)
        if result.missing and not allow_missing:
            raise UserError(
                f"{model} lacks {len(result.missing)} of the model's tensors (e.g. {result.missing[:3]}); "
                f"pass --allow-missing to keep their random initialisation"
            )
        if result.missing:
            print(f"warning: {len(result.missing)} tensors keep their random initialisation "
                  f"(e.g. {result.missing[:3]})", file=sys.stderr)
    return ref.eval()


def cmd_pack(args: argparse.Namespace) -> int:
    """Quantise a model to the config's formats and write the .m3w weights file in the kernel's DDR layout."""
    from m3vit.host.weights import pack_model

    cfg = load_config(args.config)
    ref = load_float_model(cfg, args.model, args.seed, args.allow_missing)
    manifest = pack_model(cfg, ref.state_dict(), args.output)
    sat = sum(manifest.get("weights_saturated", {}).values())
    print(f"wrote {args.output}: {manifest['device']['size']} device bytes in {len(manifest['device']['tensors'])} "
          f"tensors, {len(manifest['host']['tensors'])} host tensors, config hash {manifest['config_hash'][:12]}, "
          f"{sat} weights saturated")
    return 0


# ------------------------------------------------------------------------------------------ run
def open_accelerator(args: argparse.Namespace):
    from m3vit.host.driver import Accelerator

    if args.bitfile:
        return Accelerator.board(args.bitfile, args.weights, config=args.config)
    return Accelerator.simulated(args.config, args.weights)


def cmd_run(args: argparse.Namespace) -> int:
    """Run sample images through the accelerator (the digital twin, or a board with --bitfile)."""
    cfg = load_config(args.config)
    if args.count < 1:
        raise UserError(f"--count must be at least 1, got {args.count}")
    images = np.load(args.images, allow_pickle=False) if args.images else sample_images(cfg, args.count, args.seed)
    with open_accelerator(args) as acc:
        tasks = [args.task] if args.task else cfg.model.task_names
        for task in tasks:
            t0 = time.perf_counter()
            out = acc.predict(images, task)
            dt = time.perf_counter() - t0
            print(f"task {task}: output {list(out.shape)}, mean {out.mean():+.4f}, std {out.std():.4f} "
                  f"({dt * 1e3:.1f} ms for {len(images)} images, {'board' if args.bitfile else 'twin'})")
            sat = acc.saturation()
            if sat:
                print(f"  saturated values (last image): {sat}")
    return 0


# ------------------------------------------------------------------------------------------ bitstream
def cmd_bitstream(args: argparse.Namespace) -> int:
    """Run Vitis HLS (export) and Vivado (block design → write_bitstream); leaves NAME.bit + NAME.hwh."""
    cfg = load_config(args.config)
    hls_tool = find_hls_tool()
    missing = [what for what, ok in (("vitis-run or vitis_hls (Vitis HLS)", hls_tool),
                                     ("vivado", shutil.which("vivado"))) if not ok]
    if missing:
        raise UserError(f"missing tool: {' and '.join(missing)} not on PATH; source Vitis/Vivado settings64.sh")
    project = generate(cfg, project_dir(cfg, args.out))
    env = {**__import__("os").environ, "M3VIT_SKIP_COSIM": "1", "M3VIT_SKIP_CSIM": "1"}
    if subprocess.call([hls_tool[0], *hls_tool[1]], cwd=project, env=env) != 0:
        raise UserError(f"Vitis HLS failed in {project}; see its log there")
    out = project / "bitstream"
    ip_repo = project / "hls_prj" / "solution1" / "impl" / "ip"
    cmd = ["vivado", "-mode", "batch", "-source", str(project / "vivado" / "build_bitstream.tcl"),
           "-tclargs", str(ip_repo), str(out), str(args.jobs)]
    if subprocess.call(cmd, cwd=project / "vivado") != 0:
        raise UserError(f"Vivado failed; see {project / 'vivado'}")
    write_bitstream_sidecars(cfg, project, out)
    print(f"bitstream: {out / (cfg.name + '.bit')} with {cfg.name}.hwh, .yaml, .json and register_map.json")
    return 0


def write_bitstream_sidecars(cfg: DesignConfig, project: Path, out: Path) -> None:
    """What the driver needs beside NAME.bit/NAME.hwh: the config, its hash and the register map."""
    import yaml

    out.mkdir(parents=True, exist_ok=True)
    (out / f"{cfg.name}.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    (out / f"{cfg.name}.json").write_text(json.dumps({"design": cfg.name, "config_hash": cfg.config_hash()}) + "\n")
    shutil.copyfile(project / "register_map.json", out / "register_map.json")


# ------------------------------------------------------------------------------------------ delegates
DELEGATES = {
    "bench": ("m3vit.explore.bench", "main", "benchmarks printed as ratios measured side by side"),
    "report": ("m3vit.explore.report", "main", "HTML + markdown performance report with plots"),
    "dse": ("m3vit.explore.dse", "main", "design-space exploration: Pareto front, writes the best config"),
    "train": ("m3vit.train.train", "main", "train a model on the synthetic multi-task scenes (DDP under torchrun)"),
    "eval": ("m3vit.train.predict", "eval_main", "task metrics (mIoU, RMSE, edge F-score, Δm), float and fixed"),
}
"""Sub-commands whose arguments belong to another module's parser (``m3vit train --help`` shows them)."""


def _delegate(module: str, func: str, argv: list[str]) -> int:
    mod = __import__(module, fromlist=[func])
    return int(getattr(mod, func)(argv) or 0)


# ------------------------------------------------------------------------------------------ demo
def cmd_demo(args: argparse.Namespace) -> int:
    """Generate, C-simulate and verify the accelerator, then run every task through the driver on the twin."""
    return run_demo(args.config, seed=args.seed)


# ------------------------------------------------------------------------------------------ parser
Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="m3vit",
        description="Deploy multi-task Mixture-of-Experts ViTs (M3ViT) on Xilinx FPGAs: generate the HLS "
                    "accelerator, verify it bit for bit, pack weights, and run it on a board or its digital twin.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Handler, config: bool = True, default: str | None = None) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=fn.__doc__.splitlines()[0], description=fn.__doc__)
        if config:
            p.add_argument("config", nargs="?" if default else None, default=default,
                           help="config file or preset name (tiny, vit_tiny_cityscapes, m3vit_small_pascal, "
                                f"m3vit_small_nyud, ...){f'; default {default}' if default else ''}")
        p.set_defaults(func=fn)
        return p

    add("check", cmd_check)
    p = add("generate", cmd_generate)
    p.add_argument("-o", "--out", help="output directory (default build/<name>)")
    p = add("csim", cmd_csim)
    p.add_argument("-o", "--out", help="project directory (default build/<name>)")
    p.add_argument("--no-layers", action="store_true", help="compare final tokens only")
    p.add_argument("--ledger", action="store_true",
                   help="also write build/<name>/ledger.json: measured loop trip counts, estimated cycles per step "
                        "next to perf.evaluate's")
    p = sub.add_parser("pack", help=cmd_pack.__doc__, description=cmd_pack.__doc__)
    p.add_argument("model", help="checkpoint (.safetensors, or .pt/.pth loaded with weights_only) or 'random'")
    p.add_argument("config", help="config file or preset name")
    p.add_argument("-o", "--output", required=True, help="weights file to write (.m3w)")
    p.add_argument("--seed", type=int, default=0, help="seed for 'random' weights")
    p.add_argument("--allow-missing", action="store_true",
                   help="accept a checkpoint that lacks some tensors (they keep a random initialisation)")
    p.set_defaults(func=cmd_pack)
    p = add("run", cmd_run)
    p.add_argument("weights", help=".m3w weights file (m3vit pack)")
    p.add_argument("--bitfile", help="run on a board: NAME.bit (with NAME.hwh beside it); default: the twin")
    p.add_argument("--task", help="one task (default: every task)")
    p.add_argument("--images", help=".npy file of float images [N, C, H, W] (default: sample scenes)")
    p.add_argument("--count", type=int, default=2, help="number of sample images")
    p.add_argument("--seed", type=int, default=0)
    p = add("bitstream", cmd_bitstream)
    p.add_argument("-o", "--out", help="project directory (default build/<name>)")
    p.add_argument("--jobs", type=int, default=2, help="Vivado implementation jobs")
    p = add("demo", cmd_demo, default="tiny")
    p.add_argument("--seed", type=int, default=0)
    for name, (_, _, help_text) in DELEGATES.items():  # listed for --help; main() hands them their argv
        sub.add_parser(name, help=help_text, description=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATES:
        try:
            module, func, _ = DELEGATES[argv[0]]
            return _delegate(module, func, argv[1:])
        except (ConfigError, UserError, ValueError, FileNotFoundError) as err:
            print(f"m3vit: error: {str(err).strip().splitlines()[0]}", file=sys.stderr)
            return 2
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, UserError, ValueError, TypeError, FileNotFoundError, KeyError, RuntimeError) as err:
        # RuntimeError covers AcceleratorError (time-outs, kernel errors) and pynq's "No Devices Found"
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"m3vit: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
