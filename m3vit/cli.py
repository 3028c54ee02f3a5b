"""The ``m3vit`` command line.

Sub-commands are thin wrappers: each parses its arguments, calls library functions and prints a short
summary. Errors that a user can fix (bad config, unknown task, corrupt weights, missing tool) print one
line prefixed ``m3vit: error:`` and exit with status 2 (1 when a check or a tool run fails); ``--debug``
shows their traceback. Only the toolkit's own errors and ``OSError`` are reported that way
(:mod:`m3vit.errors`); anything else is a bug and surfaces as a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from m3vit import build_dir
from m3vit.codegen.config import DesignConfig, load_config
from m3vit.codegen.project import find_hls_tool, generate
from m3vit.demo import run_demo, sample_images
from m3vit.errors import DEBUG_FLAG, ArgumentParser, UserError, int_range, one_line, run_main

__all__ = ["UserError", "build_parser", "main"]


def project_dir(cfg: DesignConfig, out: str | None) -> Path:
    """``--out`` if given (a folder, created if missing), else ``build/<name>``."""
    path = Path(out) if out else build_dir(cfg.name)
    if path.exists() and not path.is_dir():
        raise UserError(f"-o/--out {path} is a file; give a folder for the project")
    return path


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


def cmd_lint(args: argparse.Namespace) -> int:
    """Static check of the generated HLS project (libclang): bursts, trip counts, II, m_axi, datapath, resources."""
    from m3vit.codegen.lint import LintError, run_lint

    try:
        report, path = run_lint(args.config, args.project, args.json)
    except LintError as err:
        raise UserError(str(err)) from None
    print(report.table())
    print(f"wrote {path}")
    return 0 if report.ok else 1


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
    """Quantise a model to the config's formats and write the .m3w weights file in the kernel's DDR layout
    (with --prune-plan and --task: a task-specialised file holding only that task's kept experts)."""
    from m3vit.host.weights import pack_model, pruning_manifest

    cfg = load_config(args.config)
    pruning = None
    if (args.prune_plan is None) != (args.task is None):
        raise UserError("--prune-plan and --task go together: a pruned .m3w is specialised to one task")
    if args.prune_plan is not None:
        from m3vit.train.experts import load_plan

        plan = load_plan(args.prune_plan)
        pruning = pruning_manifest(cfg, plan.expert_map(cfg), args.task, plan.name, plan.rule)
    out = Path(args.output)
    if args.model != "random" and out.resolve() == Path(args.model).resolve():
        raise UserError(f"-o {args.output} is the input checkpoint; write the weights to another file (.m3w)")
    if out.is_dir():
        raise UserError(f"-o {args.output} is a directory; give a file name such as {out / (cfg.name + '.m3w')}")
    ref = load_float_model(cfg, args.model, args.seed, args.allow_missing)
    manifest = pack_model(cfg, ref.state_dict(), out, pruning)
    sat = sum(manifest.get("weights_saturated", {}).values())
    if pruning is not None:
        kept = ", ".join(f"block {la['block']}: {len(la['experts'])} of {cfg.model.num_experts}"
                         + (f" (top-{la['top_k']})" if la["top_k"] != cfg.model.top_k else "")
                         for la in pruning["layers"])
        print(f"task {pruning['task']}, plan {pruning['plan']!r}: experts kept {kept}")
    print(f"wrote {args.output}: {manifest['device']['size']} device bytes in {len(manifest['device']['tensors'])} "
          f"tensors, {len(manifest['host']['tensors'])} host tensors, config hash {manifest['config_hash'][:12]}, "
          f"{sat} weights saturated")
    return 0


# ------------------------------------------------------------------------------------------ run
def open_accelerator(args: argparse.Namespace):
    from m3vit.host.driver import Accelerator

    task = getattr(args, "task", None)  # a task-specialised .m3w for another task: refused before the device opens
    if args.bitfile:
        return Accelerator.board(args.bitfile, args.weights, config=args.config, task=task)
    return Accelerator.simulated(args.config, args.weights, task=task)


def load_images(path: str, cfg: DesignConfig) -> np.ndarray:
    """``--images``: a .npy of finite float images [N, C, H, W] (or one [C, H, W]) of the config's size."""
    try:
        images = np.load(path, allow_pickle=False)
    except (ValueError, EOFError) as err:  # numpy's errors for a file that is not a .npy array
        raise UserError(f"--images {path}: not a .npy array file ({one_line(err)})") from None
    if not isinstance(images, np.ndarray):
        raise UserError(f"--images {path}: holds several arrays ({type(images).__name__}); give one .npy array")
    m = cfg.model
    expected = (m.in_channels, *m.image_size)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[1:] != expected or len(images) == 0:
        raise UserError(f"--images {path}: shape {list(images.shape)}; expected [N >= 1, "
                        f"{', '.join(map(str, expected))}] for {cfg.name}")
    if not np.issubdtype(images.dtype, np.floating):
        raise UserError(f"--images {path}: dtype {images.dtype}; expected normalised float images")
    if not np.all(np.isfinite(images)):
        raise UserError(f"--images {path}: contains NaN or inf")
    return images


def check_board_files(cfg: DesignConfig, bitfile: Path) -> None:
    """Before the driver runs: the bitstream and the files ``m3vit bitstream`` writes beside it exist, and the
    bitstream was built from ``cfg`` (full hashes in the message)."""
    if not bitfile.is_file():
        raise UserError(f"--bitfile {bitfile}: no such bitstream file" + (" (it is a folder)" if bitfile.is_dir()
                                                                          else ""))
    for sidecar, what in ((bitfile.with_suffix(".hwh"), "the hardware handoff pynq needs"),
                          (bitfile.with_name("register_map.json"), "the register map"),
                          (bitfile.with_suffix(".json"), "the config hash of the build")):
        if not sidecar.is_file():
            raise UserError(f"--bitfile {bitfile}: {sidecar.name} ({what}) is missing beside it; "
                            f"copy the whole folder `m3vit bitstream` wrote")
    try:
        build_hash = json.loads(bitfile.with_suffix(".json").read_text())["config_hash"]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{bitfile.with_suffix('.json')}: not the JSON {{\"config_hash\": ...}} that "
                        f"`m3vit bitstream` writes") from None
    if build_hash != cfg.config_hash():
        raise UserError(f"--bitfile {bitfile} was built from config hash {build_hash}, but {cfg.name} has "
                        f"{cfg.config_hash()}; give the config the bitstream was built with")


NO_BOARD_HINT = ("pynq finds no FPGA device here: run `m3vit run --bitfile` on the board itself, or set "
                 "PYNQ_REMOTE_DEVICES=<board address> to drive a board over the network (pynq >= 3.1); "
                 "without --bitfile, `m3vit run` uses the digital twin")


def check_board_present() -> None:
    """pynq sees an FPGA device (on the board, or remote through PYNQ_REMOTE_DEVICES)."""
    import pynq

    with warnings.catch_warnings():  # pynq warns "is the XRT environment sourced?" before returning []
        warnings.simplefilter("ignore")
        try:
            devices = pynq.Device.devices
        except RuntimeError as err:
            raise UserError(f"{NO_BOARD_HINT} ({one_line(err)})") from None
    if not devices:
        raise UserError(NO_BOARD_HINT)


def cmd_run(args: argparse.Namespace) -> int:
    """Run sample images through the accelerator (the digital twin, or a board with --bitfile)."""
    cfg = load_config(args.config)
    if args.task is not None:
        try:
            cfg.model.task_index(args.task)
        except ValueError as err:
            raise UserError(f"--task: {err}") from None
    images = load_images(args.images, cfg) if args.images else sample_images(cfg, args.count, args.seed)
    if args.bitfile:
        check_board_files(cfg, Path(args.bitfile))
        check_board_present()
    with open_accelerator(args) as acc:
        tasks = [cfg.model.task_names[cfg.model.task_index(args.task)]] if args.task else cfg.model.task_names
        if args.task is None and acc.weights.pruned_task is not None:  # a task-specialised file runs one task
            tasks = [acc.weights.pruned_task]
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
    env = {**os.environ, "M3VIT_SKIP_COSIM": "1", "M3VIT_SKIP_CSIM": "1"}
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
    "report": ("m3vit.explore.report", "command", "HTML + markdown performance report with plots"),
    "dse": ("m3vit.explore.dse", "command", "design-space exploration: Pareto front, writes the best config"),
    "train": ("m3vit.train.train", "command", "train a model on the synthetic multi-task scenes (DDP under torchrun)"),
    "eval": ("m3vit.train.predict", "eval_command", "task metrics (mIoU, RMSE, edge F-score, Δm), float and fixed"),
    "experts": ("m3vit.train.experts", "command", "per-task expert routing statistics, pruning plans, pruning sweep"),
}
"""Sub-commands whose arguments belong to another module's parser (``m3vit train --help`` shows them): module,
function (raises the toolkit's errors; :func:`main` reports them), help."""


# ------------------------------------------------------------------------------------------ demo
def cmd_demo(args: argparse.Namespace) -> int:
    """Generate, C-simulate and verify the accelerator, then run every task through the driver on the twin."""
    return run_demo(args.config, seed=args.seed)


# ------------------------------------------------------------------------------------------ parser
Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="m3vit",
        description="Deploy multi-task Mixture-of-Experts ViTs (M3ViT) on Xilinx FPGAs: generate the HLS "
                    "accelerator, verify it bit for bit, pack weights, and run it on a board or its digital twin.",
    )
    parser.add_argument(DEBUG_FLAG, action="store_true",
                        help="show the traceback of an error (also accepted after the command)")
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
    p = add("lint", cmd_lint)
    p.add_argument("--project", help="lint this generated project as it is (default: generate build/<name>)")
    p.add_argument("--json", help="where to write the report (default PROJECT/lint.json)")
    p = sub.add_parser("pack", help=cmd_pack.__doc__, description=cmd_pack.__doc__)
    p.add_argument("model", help="checkpoint (.safetensors, or .pt/.pth loaded with weights_only) or 'random'")
    p.add_argument("config", help="config file or preset name")
    p.add_argument("-o", "--output", required=True, help="weights file to write (.m3w)")
    p.add_argument("--seed", type=int, default=0, help="seed for 'random' weights")
    p.add_argument("--allow-missing", action="store_true",
                   help="accept a checkpoint that lacks some tensors (they keep a random initialisation)")
    p.add_argument("--prune-plan", help="pruning plan (YAML/JSON, m3vit experts plan): store only the kept experts")
    p.add_argument("--task", help="with --prune-plan: the one task the file is specialised to (name or index)")
    p.set_defaults(func=cmd_pack)
    p = add("run", cmd_run)
    p.add_argument("weights", help=".m3w weights file (m3vit pack)")
    p.add_argument("--bitfile", help="run on a board: NAME.bit (with NAME.hwh beside it); default: the twin")
    p.add_argument("--task", help="one task, by name or index (default: every task; a pruned .m3w: its task)")
    p.add_argument("--images", help=".npy file of float images [N, C, H, W] (default: sample scenes)")
    p.add_argument("--count", type=int_range(1), default=2, help="number of sample images")
    p.add_argument("--seed", type=int, default=0)
    p = add("bitstream", cmd_bitstream)
    p.add_argument("-o", "--out", help="project directory (default build/<name>)")
    p.add_argument("--jobs", type=int_range(1, 64), default=2, help="Vivado implementation jobs")
    p = add("demo", cmd_demo, default="tiny")
    p.add_argument("--seed", type=int, default=0)
    for name, (_, _, help_text) in DELEGATES.items():  # listed for --help; main() hands them their argv
        sub.add_parser(name, help=help_text, description=help_text, add_help=False)
    return parser


def _dispatch(argv: list[str]) -> int:
    if argv and argv[0] in DELEGATES:
        module, func, _ = DELEGATES[argv[0]]
        mod = __import__(module, fromlist=[func])
        return int(getattr(mod, func)(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    return args.func(args)


def main(argv: Sequence[str] | None = None) -> int:
    """``m3vit COMMAND ...``; returns the exit status (2 and one line on stderr for a user error, 130 on Ctrl-C)."""
    return run_main(_dispatch, argv)


if __name__ == "__main__":
    sys.exit(main())
