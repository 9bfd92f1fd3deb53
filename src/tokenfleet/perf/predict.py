"""Request-level predictions for a static batch: B identical requests start together on an idle
replica; one prefill step, then one decode step per output token (with speculative decoding, per
expected accepted tokens, as the simulator counts them). This is what `predict`, `compare` and the
`static` and `per_user` validation rows use."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tokenfleet.catalog.chips import ChipSpec
from tokenfleet.catalog.models import ModelSpec
from tokenfleet.catalog.pricing import chip_hour_usd
from tokenfleet.errors import TokenfleetError
from tokenfleet.perf.deployment import Deployment
from tokenfleet.perf.efficiency import calibration_for
from tokenfleet.perf.memory import MemoryPlan, require_fit
from tokenfleet.perf.speculative import SpecDecode
from tokenfleet.perf.step import (
    BatchShape,
    Efficiency,
    StepModel,
    StepTime,
    batch_shape,
    idle_power_w,
    model_window,
)

NO_SPEC = SpecDecode()


@dataclass(frozen=True)
class Workload:
    """B identical requests of `input_tokens` prompt and `output_tokens` generated tokens."""

    batch: int
    input_tokens: int
    output_tokens: int

    def __post_init__(self) -> None:
        for name in ("batch", "input_tokens", "output_tokens"):
            if getattr(self, name) <= 0:
                raise TokenfleetError(f"--{name.replace('_tokens', '')} must be a positive integer, got {getattr(self, name)}")


@dataclass(frozen=True)
class Prediction:
    """A static-batch run: latencies, throughputs, cost, energy, the band and what bounds it."""

    model: str
    hardware: str
    deployment: str
    chips: int
    batch: int
    input_tokens: int
    output_tokens: int
    ttft_s: float
    tpot_s: float
    e2e_s: float
    output_tok_s_per_user: float
    output_tok_s_total: float
    output_tok_s_per_chip: float
    total_tok_s: float
    usd_per_mtok: float
    joules_per_token: float
    bound: str
    band_factor: float  # ~80% of calibration rows lie within [x / band_factor, x * band_factor]
    weights_tier: str
    kv_tier: str
    memory_gb_per_chip: float
    memory_capacity_gb_per_chip: float
    breakdown_decode_s: dict[str, float]
    breakdown_prefill_s: dict[str, float]
    decode_tokens_per_step: float = 1.0  # expected tokens per sequence and decode step (speculative decoding: > 1)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _breakdown(t: StepTime) -> dict[str, float]:
    """Each part summed over the steps; a part that is the same every step (weights, fixed
    overheads) comes back as one number and counts once per step."""
    steps = np.shape(t.latency_s)

    def total(x: Any) -> float:
        return float(np.sum(np.broadcast_to(x, steps)))

    return {
        "compute_s": total(t.compute_s),
        "weight_memory_s": total(t.weight_memory_s),
        "activation_memory_s": total(t.act_memory_s),
        "kv_memory_s": total(t.kv_memory_s),
        "communication_s": total(t.comm_s),
        "overhead_s": total(t.overhead_s),
        "total_s": total(t.latency_s),
    }


def _with_drafting(parts: dict[str, float], spec: SpecDecode) -> dict[str, float]:
    """The target model's decode parts, plus what drafting adds on top of them."""
    if not spec.draft_tokens:
        return parts
    draft = parts["total_s"] * (spec.draft_factor - 1)
    return {**parts, "drafting_s": draft, "total_s": parts["total_s"] + draft}


def decode_shapes(model: ModelSpec, work: Workload, spec: SpecDecode = NO_SPEC) -> BatchShape:
    """The decode steps of a static batch as one vectorised BatchShape: O-1 of them, or with
    speculation ceil((O-1) / e), each verifying k+1 tokens per sequence and growing the context
    by the e tokens it accepts on average."""
    e, t = spec.tokens_per_step, spec.verified_tokens
    steps = max(math.ceil((work.output_tokens - 1) / e - 1e-9), 1)
    ctx = work.input_tokens + e * np.arange(1, steps + 1, dtype=float)
    b = float(work.batch)
    capped = np.minimum(ctx, model_window(model))
    pairs_lost = t * (t - 1) / 2  # the verified tokens attend to each other causally
    return BatchShape(
        num_seqs=b,
        new_tokens=b * t,
        kv_tokens=b * ctx,
        kv_tokens_window=b * capped,
        attn_pairs=b * (t * ctx - pairs_lost),
        attn_pairs_window=b * (t * capped - pairs_lost),
    )


def step_model(model: ModelSpec, chip: ChipSpec, dep: Deployment, work: Workload, eff: Efficiency | None = None) -> StepModel:
    return StepModel(model, chip, dep, eff or calibration_for(chip).efficiency, work.batch, work.input_tokens + work.output_tokens)


def check_context(model: ModelSpec, work: Workload) -> None:
    """Engines refuse a request longer than the model's context window; so do we."""
    if work.input_tokens + work.output_tokens > model.context_window_tokens:
        raise TokenfleetError(f"{work.input_tokens:,} input + {work.output_tokens:,} output tokens exceed {model.name}'s "
                              f"{model.max_context_tokens:,}-token context window: shorten --input or --output")


def predict_static(model: ModelSpec, chip: ChipSpec, dep: Deployment, work: Workload, eff: Efficiency | None = None,
                   spec: SpecDecode = NO_SPEC) -> Prediction:
    """Predict one static batch; raises a one-line error if the model's context window or the
    deployment cannot hold it."""
    check_context(model, work)
    sm = step_model(model, chip, dep, work, eff)
    require_fit(sm.memory, dep, chip, model, work.batch, work.input_tokens + work.output_tokens)
    prefill = sm.step(batch_shape(model, [work.input_tokens] * work.batch, [work.input_tokens] * work.batch))
    decode = sm.step(decode_shapes(model, work, spec)) if work.output_tokens > 1 else None
    ttft = float(prefill.latency_s)
    decode_s = float(np.sum(decode.latency_s)) * spec.draft_factor if decode is not None else 0.0
    e2e = ttft + decode_s
    tpot = decode_s / (work.output_tokens - 1) if work.output_tokens > 1 else 0.0
    out_tokens = work.batch * work.output_tokens
    energy = float(prefill.energy_j) + (float(np.sum(decode.energy_j)) * spec.draft_factor if decode is not None else 0.0)
    energy += idle_power_w(chip, dep) * e2e * (dep.pp - 1) / dep.pp  # one batch: the other micro-batch slots sit idle
    band = float(np.exp(calibration_for(chip).band_log))
    return Prediction(
        model=model.name,
        hardware=chip.id,
        deployment=dep.describe(),
        chips=dep.chips,
        batch=work.batch,
        input_tokens=work.input_tokens,
        output_tokens=work.output_tokens,
        ttft_s=ttft,
        tpot_s=tpot,
        e2e_s=e2e,
        output_tok_s_per_user=1.0 / tpot if tpot > 0 else work.output_tokens / e2e,
        output_tok_s_total=out_tokens / e2e,
        output_tok_s_per_chip=out_tokens / e2e / dep.chips,
        total_tok_s=work.batch * (work.input_tokens + work.output_tokens) / e2e,
        usd_per_mtok=chip_hour_usd(chip) * dep.chips * e2e / 3600 / out_tokens * 1e6,
        joules_per_token=energy / out_tokens,
        bound=(decode or prefill).bound(),
        band_factor=band,
        weights_tier=sm.memory.weights_tier,
        kv_tier=sm.memory.kv_tier,
        memory_gb_per_chip=_used_gb(sm.memory),
        memory_capacity_gb_per_chip=_capacity_gb(chip, sm.memory),
        breakdown_decode_s=_with_drafting(_breakdown(decode), spec) if decode is not None else {},
        breakdown_prefill_s=_breakdown(prefill),
        decode_tokens_per_step=spec.tokens_per_step,
    )


def _used_gb(mem: MemoryPlan) -> float:
    return (mem.weight_bytes_per_chip + mem.kv_bytes_per_chip + mem.state_bytes_per_chip) / 1e9


def _capacity_gb(chip: ChipSpec, mem: MemoryPlan) -> float:
    tiers = {mem.weights_tier, mem.kv_tier}
    return (chip.sram_bytes * ("sram" in tiers) + chip.hbm_bytes * ("hbm" in tiers)) / 1e9
