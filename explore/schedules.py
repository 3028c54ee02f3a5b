"""MoE schedules replayed on real routings, and the golden-model runs they come from.

Routings (``golden_routings``) are taken from bit-accurate golden-model runs of every task on random
images and cached under ``build/<name>/routings/`` keyed by everything that decides them (model,
numerics, key-block size, weight seed, images). Four MoE schedules are compared on them
(docs/performance.md §3):

* ``token_by_token``: tokens in order, each token fetches its K experts (no reuse);
* ``all_on_chip``: all N experts of the layer preloaded, every access hits;
* ``lru``: tokens in order through an LRU cache of C experts (a miss fetches the expert);
* ``expert_by_expert``: route all tokens, then each used expert once over its queue, the next one
  prefetched into the other buffer (the accelerator's schedule).

Each schedule's DDR weight traffic is computed twice, by an event-by-event replay (``replay``) and by an
independent closed form (``analytic_fetches``: counts, and LRU stack distances); they agree exactly.
The module also measures the accuracy proxy of a numeric format (``format_accuracy``: cosine of the
golden model vs the float reference at reduced size) and calibrates 8-bit formats.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from m3vit import build_dir
from m3vit.codegen import perf
from m3vit.codegen.config import DesignConfig, with_overrides
from m3vit.sim.inputs import random_image

SCHEDULES = ("token_by_token", "all_on_chip", "lru", "expert_by_expert")
DEFAULT_CACHE_EXPERTS = 2
"""C of the LRU schedule when not given: the two expert buffers of the expert-by-expert design (the
paper's "expert cache, no reordering" baseline has the same on-chip memory)."""


# ------------------------------------------------------------------------------------ golden runs
def _golden_key(cfg: DesignConfig, extra: dict) -> str:
    """Hash of what decides the golden integers: model, numerics, the key-block size, plus ``extra``."""
    data = {"model": cfg.model.model_dump(mode="json"), "numerics": cfg.numerics.model_dump(mode="json"),
            "attn_key_block": cfg.hardware.attn_key_block, **extra}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def random_images(cfg: DesignConfig, images: int, image_seed: int) -> list[np.ndarray]:
    """``images`` normalised float images [C, H, W] ~ N(0, 1), image i from seed image_seed + i."""
    return [random_image(cfg, image_seed + i) for i in range(images)]


@dataclass(frozen=True)
class RoutingSet:
    """Chosen experts of every MoE layer for every task and image: ``experts[task, image, layer]`` is [T, K]."""

    name: str
    tasks: tuple[str, ...]
    blocks: tuple[int, ...]
    num_experts: int
    experts: np.ndarray  # [tasks, images, layers, T, K] int16

    @property
    def images(self) -> int:
        return int(self.experts.shape[1])

    def layer(self, task: int, image: int, layer: int) -> np.ndarray:
        return self.experts[task, image, layer]

    def loads(self) -> np.ndarray:
        """Tokens per expert, [tasks, images, layers, N]."""
        flat = self.experts.reshape(-1, self.experts.shape[-2] * self.experts.shape[-1]).astype(np.int64)
        out = np.zeros((flat.shape[0], self.num_experts), dtype=np.int64)
        for i, r in enumerate(flat):
            out[i] = np.bincount(r, minlength=self.num_experts)
        return out.reshape(*self.experts.shape[:3], self.num_experts)

    def block_loads(self, task: int, image: int) -> dict[int, list[int]]:
        """Per-MoE-block queue lengths of one (task, image), as :func:`m3vit.codegen.perf.evaluate` takes them."""
        ld = self.loads()[task, image]
        return {b: ld[i].tolist() for i, b in enumerate(self.blocks)}


def golden_routings(cfg: DesignConfig, images: int = 1, seed: int = 0, image_seed: int = 100,
                    cache_dir: Path | None = None, progress: bool = False) -> RoutingSet:
    """Routings of every task on ``images`` random images (weights: ``build_reference(cfg, seed)``), cached.

    A full-size M³ViT-S image takes tens of seconds per task in the golden model; the cache file is
    ``build/<name>/routings/routings-<key>.npz`` (the key hashes model, numerics, key block and seeds).
    """
    m = cfg.model
    key = _golden_key(cfg, {"seed": seed, "images": images, "image_seed": image_seed, "what": "routings"})
    cache = (cache_dir or build_dir(cfg.name, "routings")) / f"routings-{key}.npz"
    blocks = tuple(sorted(m.moe_block_set))
    if cache.exists():
        with np.load(cache) as z:
            return RoutingSet(cfg.name, tuple(m.task_names), blocks, m.num_experts, z["experts"])
    from m3vit.sim.golden import GoldenModel
    from m3vit.sim.quantize import quantize_state_dict
    from m3vit.sim.reference import build_reference

    ref = build_reference(cfg, seed=seed)
    golden = GoldenModel(cfg, quantize_state_dict(cfg, ref.state_dict()))
    out = np.zeros((len(m.tasks), images, len(blocks), m.num_tokens, m.top_k), dtype=np.int16)
    for i, img in enumerate(random_images(cfg, images, image_seed)):
        q = golden.quantize_image(img)
        for t, task in enumerate(m.task_names):
            if progress:
                print(f"  golden run {cfg.name}: image {i}, task {task} ...", file=sys.stderr, flush=True)
            res = golden.run(q, t, taps=False)
            for j, b in enumerate(blocks):
                out[t, i, j] = res.routing[b].experts
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, experts=out)
    tmp.replace(cache)
    return RoutingSet(cfg.name, tuple(m.task_names), blocks, m.num_experts, out)


def synthetic_routings(cfg: DesignConfig, images: int = 1, seed: int = 0, skew: float = 1.0) -> RoutingSet:
    """Random routings for fast tests: per layer, expert popularity p ~ Dirichlet(skew); each token draws K
    distinct experts with probabilities p (Gumbel top-K), best first."""
    m = cfg.model
    rng = np.random.default_rng(seed)
    blocks = tuple(sorted(m.moe_block_set))
    shape = (len(m.tasks), images, len(blocks))
    p = rng.dirichlet(np.full(m.num_experts, skew), size=shape)  # [..., N]
    keys = np.log(np.maximum(p[..., None, :], 1e-300)) + rng.gumbel(size=(*shape, m.num_tokens, m.num_experts))
    out = np.argsort(-keys, axis=-1, kind="stable")[..., : m.top_k].astype(np.int16)
    return RoutingSet(cfg.name, tuple(m.task_names), blocks, m.num_experts, out)


# ------------------------------------------------------------------------------------ formats
FORMAT_CLASSES = ("norm", "qkv", "hidden")
"""The activation classes that feed the MAC array (besides the 16-bit input of the patch embedding)."""


def activation_ranges(cfg: DesignConfig, seed: int = 0, images: int = 2, image_seed: int = 100,
                      quantile: float = 0.9999) -> dict[str, float]:
    """|value| at ``quantile`` of each MAC-input class in the float reference (LayerNorm outputs; q, k, v and
    the attention context; MLP / expert hidden pre-activations), over every task and image."""
    import torch

    from m3vit.sim.reference import Attention, ExpertLinear, Mlp, build_reference

    ref = build_reference(cfg, seed=seed)
    seen: dict[str, list[np.ndarray]] = {c: [] for c in FORMAT_CLASSES}
    hooks = []

    def grab(cls: str, inputs: bool = False):
        def fn(_mod, inp, out=None):
            v = inp[0] if inputs else out
            seen[cls].append(np.abs(v.detach().double().numpy()).ravel())
        return fn

    for name, mod in ref.named_modules():
        if name.startswith("heads"):
            continue
        if isinstance(mod, torch.nn.LayerNorm):
            hooks.append(mod.register_forward_hook(grab("norm")))
        elif isinstance(mod, Attention):
            hooks.append(mod.qkv.register_forward_hook(grab("qkv")))
            hooks.append(mod.proj.register_forward_pre_hook(grab("qkv", inputs=True)))
        elif isinstance(mod, Mlp):
            hooks.append(mod.fc1.register_forward_hook(grab("hidden")))
        elif isinstance(mod, ExpertLinear) and name.endswith("htoh4"):
            hooks.append(mod.register_forward_hook(grab("hidden")))
    try:
        with torch.no_grad():
            for img in random_images(cfg, images, image_seed):
                for t in range(len(cfg.model.tasks)):
                    ref.backbone(torch.from_numpy(img[None]).float(), t)
    finally:
        for h in hooks:
            h.remove()
    return {c: float(np.quantile(np.concatenate(v), quantile)) for c, v in seen.items()}


def calibrated_formats(cfg: DesignConfig, bits: int = 8, classes: Sequence[str] = FORMAT_CLASSES,
                       ranges: dict[str, float] | None = None) -> dict[str, object]:
    """Config overrides giving ``classes`` ``bits``-bit formats whose range covers the measured activations.

    frac = bits − 1 − ⌈log2 r⌉ (r from :func:`activation_ranges`), limited so that the config stays valid:
    the hidden format must hold the GELU table range (the table then gets at most r + 1 + frac segments).
    """
    ranges = ranges or activation_ranges(with_overrides(cfg, **_reduced_size(cfg)))
    n = cfg.numerics
    out: dict[str, object] = {}
    for cls in classes:
        frac = bits - 1 - max(0, math.ceil(math.log2(max(ranges[cls], 1e-9))))
        if cls == "hidden":
            frac = min(frac, bits - 1 - n.gelu_range_log2)
            out["numerics.gelu_segments_log2"] = min(n.gelu_segments_log2, n.gelu_range_log2 + 1 + frac)
        out[f"numerics.{cls}"] = {"bits": bits, "frac": frac}
    return out


def _reduced_size(cfg: DesignConfig, patches: int = 4) -> dict[str, object]:
    """Overrides shrinking the image to ``patches`` × ``patches`` patches (the accuracy-proxy size)."""
    p = cfg.model.patch_size
    h, w = cfg.model.image_size
    return {"model.image_size": [min(h, patches * p), min(w, patches * p)]}


def format_accuracy(cfg: DesignConfig, images: int = 2, seed: int = 0, image_seed: int = 100,
                    patches: int = 4, cache_dir: Path | None = None) -> float:
    """Accuracy proxy of ``cfg``'s numeric formats: the smallest cosine similarity, over every task and
    ``images`` random images, of the golden model's output tokens vs the PyTorch float reference, at a
    reduced image size of ``patches`` × ``patches`` patches (cached under build/<name>/accuracy/)."""
    small = with_overrides(cfg, **_reduced_size(cfg, patches))
    key = _golden_key(small, {"seed": seed, "images": images, "image_seed": image_seed, "what": "cosine"})
    cache = (cache_dir or build_dir(cfg.name, "accuracy")) / f"cosine-{key}.json"
    if cache.exists():
        return float(json.loads(cache.read_text())["min_cosine"])
    import torch

    from m3vit.sim.golden import GoldenModel
    from m3vit.sim.quantize import quantize_state_dict
    from m3vit.sim.reference import build_reference

    ref = build_reference(small, seed=seed)
    golden = GoldenModel(small, quantize_state_dict(small, ref.state_dict()))
    cos = []
    for img in random_images(small, images, image_seed):
        q = golden.quantize_image(img)
        for t in range(len(small.model.tasks)):
            got = golden.run(q, t, taps=False).tokens * small.numerics.act.lsb
            with torch.no_grad():
                want = ref.backbone(torch.from_numpy(img[None]).float(), t)[0].double().numpy()
            cos.append(float((got * want).sum() / np.linalg.norm(got) / np.linalg.norm(want)))
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"min_cosine": min(cos), "cosines": cos, "image_size": small.model.image_size}))
    return min(cos)


# ------------------------------------------------------------------------------------ replays
@dataclass(frozen=True)
class Replay:
    """An event-by-event run of one MoE layer under a schedule.

    ``events`` are ("fetch", expert, buffer) — the expert's weights are read from DDR into that on-chip
    buffer — and ("compute", expert, tokens), in execution order.
    """

    schedule: str
    buffers: int
    events: list[tuple[str, int, int]]

    @property
    def fetches(self) -> list[int]:
        return [e for kind, e, _ in self.events if kind == "fetch"]


def _accesses(experts: np.ndarray) -> list[int]:
    """Token-order expert accesses: token 0's K experts in rank order, then token 1's, ..."""
    return [int(e) for e in np.asarray(experts).reshape(-1)]


def replay(schedule: str, experts: np.ndarray, num_experts: int, cache: int = DEFAULT_CACHE_EXPERTS) -> Replay:
    """Simulate ``schedule`` on one layer's routing ``experts`` [T, K], event by event."""
    ev: list[tuple[str, int, int]] = []
    if schedule == "token_by_token":
        for j, e in enumerate(_accesses(experts)):
            ev += [("fetch", e, j % 2), ("compute", e, 1)]
        return Replay(schedule, 2, ev)
    if schedule == "all_on_chip":
        ev += [("fetch", e, e) for e in range(num_experts)]
        ev += [("compute", e, 1) for e in _accesses(experts)]
        return Replay(schedule, num_experts, ev)
    if schedule == "lru":
        if cache < 1:
            raise ValueError(f"an LRU cache needs at least one expert, got C = {cache}")
        lru: OrderedDict[int, int] = OrderedDict()  # expert → buffer, least recently used first
        for e in _accesses(experts):
            if e in lru:
                lru.move_to_end(e)
            else:
                buf = lru.popitem(last=False)[1] if len(lru) == cache else len(lru)
                lru[e] = buf
                ev.append(("fetch", e, buf))
            ev.append(("compute", e, 1))
        return Replay(schedule, cache, ev)
    if schedule == "expert_by_expert":
        queues: dict[int, list[int]] = {e: [] for e in range(num_experts)}
        for t, row in enumerate(np.asarray(experts)):
            for e in row:
                queues[int(e)].append(t)
        j = 0
        for e in range(num_experts):
            if queues[e]:
                ev += [("fetch", e, j % 2), ("compute", e, len(queues[e]))]
                j += 1
        return Replay(schedule, 2, ev)
    raise ValueError(f"unknown schedule {schedule!r}; schedules are {SCHEDULES}")


def lru_misses(accesses: Sequence[int], cache: int) -> int:
    """Misses of an LRU cache of ``cache`` entries, by stack distance: an access hits iff fewer than
    ``cache`` distinct other items were touched since the previous access of the same item."""
    acc = np.asarray(accesses, dtype=np.int64)
    if acc.size == 0:
        return 0
    last = np.full(int(acc.max()) + 1, -1, dtype=np.int64)  # time of each item's latest access
    misses = 0
    for i, e in enumerate(acc.tolist()):
        prev = last[e]
        misses += bool(prev < 0 or np.count_nonzero(last > prev) >= cache)
        last[e] = i
    return misses


def analytic_fetches(schedule: str, experts: np.ndarray, num_experts: int, cache: int = DEFAULT_CACHE_EXPERTS) -> int:
    """Expert fetches of ``schedule`` in closed form (T·K, N, LRU stack distances, number of used experts)."""
    experts = np.asarray(experts)
    if schedule == "token_by_token":
        return int(experts.size)
    if schedule == "all_on_chip":
        return num_experts
    if schedule == "lru":
        return lru_misses(_accesses(experts), cache)
    if schedule == "expert_by_expert":
        return int(np.count_nonzero(np.bincount(experts.reshape(-1), minlength=num_experts)))
    raise ValueError(f"unknown schedule {schedule!r}; schedules are {SCHEDULES}")


# ------------------------------------------------------------------------------------ latency
def layer_cycles(cfg: DesignConfig, rep: Replay, arch: perf.Arch = perf.ARCH, preload_overlap: int = 0) -> int:
    """Modeled cycles of one MoE layer's expert phase under a replayed schedule (from the end of the
    attention step, where routing is complete, to the last expert computation).

    Fetches go over one weight port in event order; a fetch into a buffer waits until the last
    computation using that buffer has finished; a computation waits for the previous one and for its
    expert's weights. Compute times are the perf model's expert steps (one token at a time for the
    token-order schedules). Expert-by-expert first builds its queues (perf model's queue step), which
    reproduces the perf model's expert phase exactly. ``all_on_chip`` preloads every expert while the
    attention step (``preload_overlap`` cycles) runs, then batches each expert's tokens (all weights are
    resident, so the order is free).
    """
    t_load = perf.load_cycles(cfg, perf.expert_bytes(cfg), arch)
    if rep.schedule == "all_on_chip":
        exposed = max(0, len(rep.fetches) * t_load - preload_overlap)
        counts: dict[int, int] = {}
        for kind, e, n in rep.events:
            if kind == "compute":
                counts[e] = counts.get(e, 0) + n
        return exposed + sum(perf.expert_step(cfg, n, arch).compute for n in counts.values())
    one = perf.expert_step(cfg, 1, arch).compute
    port = comp_end = 0
    if rep.schedule == "expert_by_expert":
        comp_end = perf.queue_step(cfg, arch).compute
    busy = [0] * rep.buffers  # when the last computation using each buffer ends
    ready: dict[int, int] = {}
    where: dict[int, int] = {}
    for kind, e, arg in rep.events:
        if kind == "fetch":
            start = max(port, busy[arg])
            port = start + t_load
            ready[e], where[e] = port, arg
        else:
            c0 = max(comp_end, ready[e])
            comp_end = c0 + (one if arg == 1 and rep.schedule != "expert_by_expert"
                             else perf.expert_step(cfg, arg, arch).compute)
            busy[where[e]] = comp_end
    return comp_end


@dataclass(frozen=True)
class ScheduleResult:
    """One schedule on one design, averaged over every task and image of a :class:`RoutingSet`."""

    schedule: str
    cache: int  # C for lru, 0 otherwise
    fetches: float  # expert fetches per image (all MoE layers)
    ddr_weight_bytes: float  # expert-weight bytes read per image
    on_chip_bytes: int
    latency_ms: float  # modeled single-task latency (whole image)
    moe_ms: float  # of which the MoE expert phases

    @property
    def label(self) -> str:
        return f"lru (C={self.cache})" if self.schedule == "lru" else self.schedule


def expert_slots(schedule: str, cfg: DesignConfig, cache: int) -> int:
    """Expert-sized weight buffers a schedule keeps on chip (the two ping-pong slots at least)."""
    if schedule == "all_on_chip":
        return max(2, cfg.model.num_experts)
    if schedule == "lru":
        return max(2, cache)
    return 2


def evaluate_with_routing(cfg: DesignConfig, routings: RoutingSet, task: int, image: int,
                          arch: perf.Arch = perf.ARCH) -> tuple[int, dict[int, int], dict[int, int]]:
    """Perf model of one (task, image): total cycles, each MoE block's expert-phase cycles (queues and
    experts, stalls included) and each MoE block's attention-step cycles."""
    rep = perf.evaluate(cfg, routings.block_loads(task, image), arch)
    moe: dict[int, int] = {}
    attn: dict[int, int] = {}
    prev_end = 0
    for s, st, en in zip(rep.steps, rep.timeline.start, rep.timeline.end, strict=True):
        b = int(s.layer[5:]) if s.layer.startswith("block") else -1
        if s.kind in ("queues", "expert"):
            moe[b] = moe.get(b, 0) + en - prev_end
        if s.kind == "attn":
            attn[b] = en - st
        prev_end = en
    return rep.cycles, moe, attn


def compare_schedules(cfg: DesignConfig, routings: RoutingSet, lru_caches: Sequence[int] = (2, 8),
                      arch: perf.Arch = perf.ARCH) -> list[ScheduleResult]:
    """DDR weight traffic, on-chip memory and modeled latency of each schedule on real routings, averaged
    over every task and image (one LRU row per cache size in ``lru_caches``).

    Latency = the perf model's image latency with the MoE expert phases replaced by the schedule's
    replayed timeline (for expert-by-expert this is the perf model itself)."""
    m = cfg.model
    runs = [(sched, 0) for sched in ("token_by_token", "all_on_chip")]
    runs += [("lru", c) for c in lru_caches] + [("expert_by_expert", 0)]
    base = {(t, i): evaluate_with_routing(cfg, routings, t, i, arch)
            for t in range(len(routings.tasks)) for i in range(routings.images)}
    ebytes = perf.expert_bytes(cfg)
    hz = cfg.hardware.clock_mhz * 1e3
    results = []
    for sched, c in runs:
        fetch_sum = lat_sum = moe_sum = 0.0
        for (t, i), (total, moe_ebe, attn) in base.items():
            moe = 0
            for j, b in enumerate(routings.blocks):
                r = replay(sched, routings.layer(t, i, j), m.num_experts, c)
                fetch_sum += len(r.fetches)
                moe += layer_cycles(cfg, r, arch, preload_overlap=attn[b])
            lat_sum += total - sum(moe_ebe.values()) + moe
            moe_sum += moe
        n = len(base)
        results.append(ScheduleResult(
            schedule=sched, cache=c, fetches=fetch_sum / n, ddr_weight_bytes=fetch_sum / n * ebytes,
            on_chip_bytes=perf.on_chip_bytes(cfg, arch, expert_slots(sched, cfg, c)),
            latency_ms=lat_sum / n / hz, moe_ms=moe_sum / n / hz))
    return results


PAPER = {
    "m3vit_small_pascal": {"all_on_chip_mib": 11.610, "ebe_mib": 4.840, "cache_ms": 637.5, "ebe_ms": 69.0,
                           "dense_ms": 68.9},
    "m3vit_small_nyud": {"all_on_chip_mib": 11.610, "ebe_mib": 4.840, "cache_ms": 750.6, "ebe_ms": 84.5,
                         "dense_ms": 84.4},
}
"""The paper's ZCU104 numbers (M³ViT, NeurIPS 2022): on-chip memory and single-task latency."""


def format_table(rows: dict[str, list[ScheduleResult]]) -> str:
    """Markdown table: schedule × design with traffic, memory, latency, and the paper's numbers."""
    lines = ["| schedule | design | expert fetches / image | DDR expert traffic (MiB) | on-chip (MiB) "
             "| latency (ms) | paper on-chip (MiB) | paper latency (ms) |", "|---|---|---|---|---|---|---|---|"]
    for name, res in rows.items():
        paper = PAPER.get(name.removesuffix("_dse"), {})
        for r in res:
            paper_row = r.schedule == "expert_by_expert" or (r.schedule == "lru" and r.cache == 2)
            p_mib = {"all_on_chip": paper.get("all_on_chip_mib"), "expert_by_expert": paper.get("ebe_mib"),
                     "lru": paper.get("ebe_mib") if paper_row else None}.get(r.schedule)
            p_ms = {"expert_by_expert": paper.get("ebe_ms"),
                    "lru": paper.get("cache_ms") if paper_row else None}.get(r.schedule)
            lines.append(
                f"| {r.label} | {name} | {r.fetches:.0f} | {r.ddr_weight_bytes / perf.MIB:.1f} | "
                f"{r.on_chip_bytes / perf.MIB:.3f} | {r.latency_ms:.1f} | "
                f"{'' if p_mib is None else f'{p_mib:.3f}'} | {'' if p_ms is None else f'{p_ms:.1f}'} |")
    return "\n".join(lines)

