"""Per-task expert maps of a pruned model: which experts each MoE layer keeps, and its top-K.

An :data:`ExpertMap` maps ``(task index, block index)`` to the :class:`KeptExperts` of that MoE layer for that
task; a layer without an entry keeps every expert at the config's top-K. The float model
(:meth:`m3vit.sim.reference.M3ViT.prune_experts`) and the golden model (``GoldenModel(..., experts=...)``)
route over the kept experts only, by the rule of docs/numerics.md §10 ("Pruned router"). Plans that
produce a map (by gate mass, top-M, M = K, single expert) live in :mod:`m3vit.train.experts`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from m3vit.codegen.config import DesignConfig
from m3vit.errors import ToolkitError


class PruningError(ToolkitError, ValueError):
    """A pruning plan the model cannot take (one line naming the task, block and expert)."""


@dataclass(frozen=True)
class KeptExperts:
    """The experts one MoE layer keeps for one task (ascending, distinct) and the layer's top-K (≤ len)."""

    experts: tuple[int, ...]
    top_k: int

    def mask(self, num_experts: int) -> list[bool]:
        """``[N]`` booleans, True for a kept expert."""
        kept = set(self.experts)
        return [e in kept for e in range(num_experts)]


ExpertMap = Mapping[tuple[int, int], KeptExperts]
"""(task index, block index) → kept experts of that MoE layer for that task."""


def kept_experts(
    cfg: DesignConfig, task: str | int, block: int, experts: Sequence[int], top_k: int | None = None
) -> tuple[tuple[int, int], KeptExperts]:
    """Validate one layer's kept experts; returns the :data:`ExpertMap` entry ``((task, block), kept)``.

    ``top_k`` defaults to the config's K and may be lowered (K = 1 with one kept expert is a dense MLP).
    Raises ValueError (one line naming the task, block or expert) for an unknown task, a block that is not
    MoE, an expert out of range or repeated, a top-K outside [1, config K], or fewer kept experts than K.
    """
    m = cfg.model
    t = m.task_index(task)
    name = m.task_names[t]
    if isinstance(block, bool) or not isinstance(block, int) or not m.is_moe(block):
        raise PruningError(
            f"task {name}: block {block!r} is not an MoE layer; MoE blocks are {sorted(m.moe_block_set)}"
        )
    k = m.top_k if top_k is None else top_k
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= m.top_k:
        raise PruningError(f"task {name} block {block}: top_k {k!r} must be in [1, {m.top_k}] (the config's top_k)")
    bad = [e for e in experts if isinstance(e, bool) or not isinstance(e, int) or not 0 <= e < m.num_experts]
    if bad:
        raise PruningError(f"task {name} block {block}: expert {bad[0]!r} out of range [0, {m.num_experts - 1}]")
    if len(set(experts)) != len(experts):
        raise PruningError(f"task {name} block {block}: experts {list(experts)} repeat an expert")
    if len(experts) < k:
        raise PruningError(f"task {name} block {block}: keeps {len(experts)} expert(s) {sorted(experts)}, "
                         f"fewer than top_k = {k}")
    return (t, block), KeptExperts(tuple(sorted(experts)), k)


def expert_map(
    cfg: DesignConfig, layers: Mapping[str | int, Mapping[int, tuple[Sequence[int], int | None]]]
) -> dict[tuple[int, int], KeptExperts]:
    """``{task: {block: (experts, top_k or None)}}`` → a validated :data:`ExpertMap` (see :func:`kept_experts`)."""
    out: dict[tuple[int, int], KeptExperts] = {}
    for task, blocks in layers.items():
        for block, (experts, top_k) in blocks.items():
            key, kept = kept_experts(cfg, task, block, list(experts), top_k)
            out[key] = kept
    return out


__all__ = ["ExpertMap", "KeptExperts", "expert_map", "kept_experts"]
