"""The figure of docs/hls.md: the generated kernels' architecture for one design, drawn from the facts the
generator and the performance model use (sizes, buffers, stages), next to the cycles per step of one image —
the cycle ledger of a C simulation when one is given, and the model's.

    python -m m3vit.explore.hls_figure CONFIG [--ledger build/<name>/ledger.json] [-o docs/hls_architecture.png]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from m3vit.codegen import perf
from m3vit.codegen.config import DesignConfig, load_config
from m3vit.codegen.perf.engine import slot_tiles
from m3vit.codegen.perf.ledger import read_ledger

STAGES = ("kv", "attn", "queues", "expert", "mlp", "finalize", "embed")


def step_kind(name: str) -> str:
    """The stage kind of a step name (``block3.expert7`` → ``expert``, ``embed`` → ``embed``)."""
    tail = name.split(".", 1)[1] if "." in name else name
    for k in STAGES:
        if tail.startswith(k):
            return k
    return tail


def cycles_by_kind(steps: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for name, c in steps.items():
        if name != "io":
            out[step_kind(name)] += c
    return dict(out)


def draw(cfg: DesignConfig, ledger_path: Path | None, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    hw, m = cfg.hardware, cfg.model
    res = perf.resources(cfg)
    bufs = {b.name: b for b in perf.buffers(cfg)}
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(15, 6.2), gridspec_kw={"width_ratios": [1.25, 1]})
    ax.set_xlim(0, 12)
    ax.set_ylim(0, 8)
    ax.axis("off")

    def box(x, y, w, h, text, color):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=color, ec="#333", lw=1.2))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=8.5)

    def arrow(a, b, text=""):
        ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=12, lw=1.2, color="#333"))
        if text:
            ax.text((a[0] + b[0]) / 2, (a[1] + b[1]) / 2 + 0.15, text, ha="center", fontsize=7.5, color="#333")

    kib = lambda name: bufs[name].bits // 8192 if name in bufs else 0  # noqa: E731
    box(0.2, 6.3, 2.4, 1.2, "DDR weights\n(m_axi gmem_w)", "#eeeeee")
    box(0.2, 3.4, 2.4, 1.2, "DDR activations\n(m_axi gmem_s)", "#eeeeee")
    box(3.3, 6.3, 2.2, 1.2, "loader\none burst per job", "#cfe2f3")
    box(3.3, 3.4, 2.2, 1.2, "reader\nLayerNorm / gather\nword-wide", "#cfe2f3")
    box(6.2, 6.3, 2.3, 1.2, f"weight slots ×2\n{slot_tiles(cfg)} tiles each\n(stream_of_blocks)", "#fff2cc")
    box(6.2, 4.6, 2.3, 1.2, f"MAC array {hw.mac_out}×{hw.mac_in}\n{res.dsp_by_unit.get('mac_array', 0)} DSP48E2"
        f"\n(one instance)", "#f4cccc")
    box(6.2, 2.9, 2.3, 1.2, "writer\nGELU / residual / gate\nword-wide", "#cfe2f3")
    box(9.2, 5.2, 2.6, 1.4, f"kv_or_acc, {kib('backbone::st.kv.w')} KiB\nK, Vᵀ (attention) or\nMoE accumulators",
        "#d9ead3")
    box(9.2, 3.2, 2.6, 1.4, "routing, queues\n(on chip)", "#d9ead3")
    box(3.3, 0.6, 8.5, 1.3, "stages per block: K/V (LN1) → Q → attention (q·kᵀ, exp lanes, p·v on the array) → "
        "proj + residual\n→ router (LN2) → queues → experts (job = used expert, next one loads meanwhile)"
        "  |  dense: fc1 (LN2) → fc2 + residual", "#f3f3f3")
    arrow((2.6, 6.9), (3.3, 6.9))
    arrow((5.5, 6.9), (6.2, 6.9), "slot j+1")
    arrow((7.35, 6.3), (7.35, 5.8))
    arrow((2.6, 4.0), (3.3, 4.0))
    arrow((5.5, 4.0), (6.2, 5.0), "tiles")
    arrow((7.35, 4.6), (7.35, 4.1), "sums")
    arrow((6.2, 3.5), (2.6, 3.7), "rows")
    arrow((8.5, 3.5), (9.2, 3.8))
    arrow((8.5, 3.3), (9.2, 5.5))
    arrow((9.2, 5.9), (8.5, 5.2))
    ax.set_title(f"{cfg.name}: generated HLS (DATAFLOW per stage)", fontsize=11)

    model = cycles_by_kind(perf.evaluate(cfg).step_cycles())
    kinds = [k for k in STAGES if k in model]
    ys = range(len(kinds))
    clk = hw.clock_mhz * 1e3
    bx.barh([y + 0.2 for y in ys], [model[k] / clk for k in kinds], height=0.4, label="perf.evaluate (model)",
            color="#9fc5e8")
    if ledger_path is not None and ledger_path.exists():
        led = cycles_by_kind(read_ledger(ledger_path).step_cycles())
        bx.barh([y - 0.2 for y in ys], [led.get(k, 0) / clk for k in kinds], height=0.4,
                label="cycle ledger (C-sim trip counts)", color="#e06666")
    bx.set_yticks(list(ys), kinds)
    bx.invert_yaxis()
    bx.set_xlabel(f"ms per image at {hw.clock_mhz:g} MHz")
    bx.legend(loc="lower right", fontsize=8)
    bx.set_title(f"where the time goes ({m.depth} blocks, one image)", fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m m3vit.explore.hls_figure", description=__doc__.split("\n\n")[0])
    ap.add_argument("config", help="config file or preset name")
    ap.add_argument("--ledger", type=Path, help="ledger.json of `m3vit csim CONFIG --ledger`")
    ap.add_argument("-o", "--out", type=Path, default=Path("docs/hls_architecture.png"))
    args = ap.parse_args(argv)
    print(draw(load_config(args.config), args.ledger, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
