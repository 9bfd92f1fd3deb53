"""Where weights and KV cache live (SRAM or HBM), and whether a model fits at all."""

from __future__ import annotations

import math
from dataclasses import dataclass

from tokenfleet.catalog.chips import ChipSpec
from tokenfleet.catalog.models import ModelSpec
from tokenfleet.errors import TokenfleetError
from tokenfleet.perf.deployment import Deployment
from tokenfleet.perf.precision import bytes_per_elem

#: Share of each tier that model data may use; the rest holds the runtime, activations and
#: workspace (vLLM's default `gpu_memory_utilization` is 0.9).
USABLE_FRACTION = 0.9
GB = 1e9


def kv_shards(model: ModelSpec, dep: Deployment) -> int:
    """Chips over which one sequence's KV cache is split: PP stages times distinct KV heads per stage.

    Latent (MLA) caches and KV heads fewer than the TP size are replicated, not split. With
    attention DP each sequence lives whole on one chip of its stage, so the stage's chips split
    the sequences instead and nothing is replicated.
    """
    if dep.attn_dp:
        return dep.pp * dep.tp
    heads_split = 1 if model.is_mla else min(dep.tp, model.num_kv_heads)
    return dep.pp * heads_split


def state_shards(model: ModelSpec, dep: Deployment) -> int:
    """Chips over which one sequence's linear-attention state is split: PP stages times distinct
    value heads per stage (64 heads split 8 ways where 2 KV heads only split 2); with attention DP,
    the stage's chips (each holds its own sequences' state)."""
    if dep.attn_dp:
        return dep.pp * dep.tp
    return dep.pp * min(dep.tp, max(model.linear_value_heads, 1))


def embedding_bytes_per_elem(dep: Deployment) -> float:
    """Quantised checkpoints keep the input embedding and the output head in 16-bit (TensorRT Model
    Optimizer's FP8 and NVFP4 configs leave `*lm_head*` unquantised, as do compressed-tensors FP8
    checkpoints' `ignore: [lm_head]` and MLPerf's quantised submissions): the wider of the weight
    format and the activations'."""
    return max(bytes_per_elem(dep.weight_precision), bytes_per_elem(dep.act_precision))


def dense_weight_bytes(model: ModelSpec, dep: Deployment) -> float:
    """Every weight but the routed experts, in their stored formats (embeddings: see
    `embedding_bytes_per_elem`)."""
    emb = model.embedding_params
    return (model.dense_params - emb) * bytes_per_elem(dep.weight_precision) + emb * embedding_bytes_per_elem(dep)


def weight_bytes_per_chip(model: ModelSpec, dep: Deployment) -> float:
    """Weights one chip holds: 1/chips of the model, or with attention DP all of its stage's
    weights but the routed experts, which its stage splits."""
    experts = model.expert_params_total * bytes_per_elem(dep.weight_precision)
    if dep.attn_dp:
        return dense_weight_bytes(model, dep) / dep.pp + experts / dep.chips
    return (dense_weight_bytes(model, dep) + experts) / dep.chips


def state_bytes_per_elem(dep: Deployment) -> float:
    """Linear-attention state is kept in the activation format, not the KV-cache one (vLLM's
    `mamba_ssm_cache_dtype` defaults to the model dtype even with an FP8 KV cache)."""
    return bytes_per_elem(dep.act_precision)


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per chip by tier, where each kind of data lives, and the room left for KV cache."""

    weights_tier: str  # "sram" or "hbm"
    kv_tier: str
    weight_bytes_per_chip: float
    kv_bytes_per_chip: float  # KV the workload asked to hold
    kv_capacity_bytes_per_chip: float  # KV (and linear-attention state) the tier can still hold after the weights
    kv_capacity_tokens: float  # tokens of context the whole replica can cache
    needed_bytes: float  # whole replica: weights + requested KV and state
    available_bytes: float  # whole replica, usable part of every tier
    state_bytes_per_chip: float = 0.0  # linear-attention state of the sequences asked for
    state_tokens_per_seq: float = 0.0  # one sequence's state, in tokens of KV-cache room it takes

    @property
    def fits(self) -> bool:
        return (self.needed_bytes <= self.available_bytes
                and self.kv_bytes_per_chip + self.state_bytes_per_chip <= self.kv_capacity_bytes_per_chip)


def plan_memory(model: ModelSpec, chip: ChipSpec, dep: Deployment, sequences: float = 0.0, context_tokens: float = 0.0) -> MemoryPlan:
    """Place weights and the cache of `sequences` running sequences of `context_tokens` each (their
    KV and any linear-attention state); SRAM first on SRAM-first chips."""
    weights = weight_bytes_per_chip(model, dep)
    # with attention DP each sequence lives whole on one chip: count every chip of a stage as the
    # busiest, which holds ceil(sequences / tp)
    held = math.ceil(sequences / dep.tp - 1e-9) * dep.tp if dep.attn_dp else sequences
    kv = held * model.kv_bytes(context_tokens, bytes_per_elem(dep.kv_precision)) / kv_shards(model, dep)
    kv_per_token = model.kv_bytes_per_token(bytes_per_elem(dep.kv_precision)) / kv_shards(model, dep)
    state_per_seq = model.state_bytes(state_bytes_per_elem(dep)) / state_shards(model, dep)
    cache = kv + held * state_per_seq  # what the KV tier must hold
    sram = chip.sram_bytes * USABLE_FRACTION if chip.weights_on_chip else 0.0
    hbm = chip.hbm_bytes * USABLE_FRACTION
    if (sram >= weights and sram - weights >= cache) or hbm == 0:  # SRAM-only chips: the one tier, fitting or not
        weights_tier, kv_tier, room = "sram", "sram", sram - weights
    elif sram >= weights:
        weights_tier, kv_tier, room = "sram", "hbm", hbm
    else:
        weights_tier, kv_tier, room = "hbm", "hbm", hbm - weights
    return MemoryPlan(
        weights_tier=weights_tier,
        kv_tier=kv_tier,
        weight_bytes_per_chip=weights,
        kv_bytes_per_chip=kv,
        kv_capacity_bytes_per_chip=max(room, 0.0),
        kv_capacity_tokens=max(room, 0.0) / kv_per_token if kv_per_token else float("inf"),
        needed_bytes=(weights + cache) * dep.chips,
        available_bytes=(sram if weights_tier == "sram" else 0.0) * dep.chips + (hbm if "hbm" in (weights_tier, kv_tier) else 0.0) * dep.chips,
        state_bytes_per_chip=held * state_per_seq,
        state_tokens_per_seq=state_per_seq / kv_per_token if kv_per_token else 0.0,
    )


def require_fit(plan: MemoryPlan, dep: Deployment, chip: ChipSpec, model: ModelSpec | None = None,
                sequences: float = 0.0, context_tokens: float = 0.0) -> None:
    """Raise a one-line error saying by how much a deployment misses and what would fix it. With
    attention DP (and the `model` given) the fix is searched, not scaled: every chip holds the
    non-expert weights whole, so more chips only thin the experts and the cache."""
    if plan.fits:
        return
    need, have = plan.needed_bytes / GB, plan.available_bytes / GB
    narrower = {"bf16": "fp8", "fp16": "fp8", "fp8": "fp4", "int8": "int4"}.get(dep.weight_precision)
    precision = f"--precision {narrower}" if narrower else ""
    more = (_attention_dp_chips(model, chip, dep, sequences, context_tokens) if dep.attn_dp and model is not None
            else max(2, int(-(-dep.chips * need // max(have, 1e-9)))))
    if more is not None:
        hint = f"use --chips {more}" + (f" or {precision}" if precision else "")
    else:  # attention DP on any number of chips: the non-expert weights alone overflow one
        assert model is not None
        dense_gb = dense_weight_bytes(model, dep) / dep.pp / GB
        hint = (f"under attention DP every chip holds the {dense_gb:,.1f} GB of non-expert weights"
                f"{'' if dep.pp == 1 else ' of its stage'}: drop --attn-dp" + (f" or use {precision}" if precision else ""))
    raise TokenfleetError(
        f"does not fit: needs {need:,.1f} GB, has {have:,.1f} GB usable on {dep.chips} x {chip.id}: {hint}"
    )


def _attention_dp_chips(model: ModelSpec, chip: ChipSpec, dep: Deployment, sequences: float, context_tokens: float) -> int | None:
    """The fewest chips (the stage doubled, up to 1,024 a stage) on which the attention-DP layout
    fits; None where no count does."""
    tp = dep.tp * 2
    while tp <= 1024:
        wider = dep.model_copy(update={"chips": tp * dep.pp, "tp": tp})
        if plan_memory(model, chip, wider, sequences, context_tokens).fits:
            return wider.chips
        tp *= 2
    return None
