"""Choose a deployment when the user does not: the smallest one that holds the model and its KV."""

from __future__ import annotations

import math

from tokenfleet.catalog.chips import ChipSpec
from tokenfleet.catalog.models import ModelSpec
from tokenfleet.errors import TokenfleetError
from tokenfleet.perf.deployment import Deployment, parallelism_problem
from tokenfleet.perf.memory import USABLE_FRACTION, deployable_chips, plan_memory, require_fit

#: Largest replica `auto` will consider, in chips.
MAX_AUTO_CHIPS = 16384


def layout(model: ModelSpec, chip: ChipSpec, chips: int, ep: int = 1, **precisions: str) -> Deployment:
    """Tensor parallel inside the chip's scale-up domain, as wide as the model's heads allow (see
    `parallelism_problem`), pipeline stages across domains; experts over up to `ep` chips of a
    stage. Where no layout passes, the widest TP (the caller's check says why it fails)."""
    node = int(chip.get("chips_per_node", 8)) if chip.family == "sram" else chip.scaleup_domain_chips
    shapes = [Deployment(chips=chips, tp=tp, pp=chips // tp, **precisions)
              for tp in sorted(_divisors(math.gcd(chips, max(node, 1))), reverse=True)]
    dep = next((d for d in shapes if parallelism_problem(model, chip, d) is None), shapes[0])
    experts = [dep.model_copy(update={"ep": e}) for e in sorted(_divisors(math.gcd(ep, dep.tp)), reverse=True)]
    return next((d for d in experts if parallelism_problem(model, chip, d) is None), dep)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _candidate_counts(chip: ChipSpec, min_chips: int) -> list[int]:
    start = deployable_chips(chip, min_chips)
    if chip.family == "sram":  # sold and served as whole nodes
        node = max(int(chip.get("chips_per_node", 1)), 1)
        return list(range(start, MAX_AUTO_CHIPS + 1, node))[:256] or [start]
    return [2**i for i in range(13) if start <= 2**i <= MAX_AUTO_CHIPS]


def auto_deployment(model: ModelSpec, chip: ChipSpec, sequences: float = 0.0, context_tokens: float = 0.0, attn_dp: bool = False,
                    **precisions: str) -> Deployment:
    """The fewest chips (powers of two on GPUs and TPUs, whole nodes on SRAM systems) that fit the
    weights and the cache of `sequences` sequences of `context_tokens` each; with `attn_dp`, laid
    out with attention data parallelism (see `Deployment`)."""
    probe = Deployment(chips=1, tp=1, pp=1, **precisions)
    one = plan_memory(model, chip, probe, sequences, context_tokens)
    per_chip = (chip.sram_bytes if chip.weights_on_chip else 0.0) + chip.hbm_bytes
    lower = max(1, math.floor(one.needed_bytes / max(per_chip * USABLE_FRACTION, 1.0)))
    dep = probe
    for chips in _candidate_counts(chip, lower):
        dep = layout(model, chip, chips, 1, **precisions)
        if attn_dp:
            dep = dep.model_copy(update={"attn_dp": True})
        if parallelism_problem(model, chip, dep) is None and plan_memory(model, chip, dep, sequences, context_tokens).fits:
            return dep
    require_fit(plan_memory(model, chip, dep, sequences, context_tokens), dep, chip, model, sequences, context_tokens)
    raise TokenfleetError(f"{model.name} does not fit on up to {MAX_AUTO_CHIPS} x {chip.id}")
