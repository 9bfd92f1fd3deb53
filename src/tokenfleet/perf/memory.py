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
#: What a serving process holds on each device before any tensor of its own: CUDA context, cuBLAS
#: and NCCL workspaces. An estimate (an idle PyTorch process shows ~0.5 GiB in `nvidia-smi` on
#: Hopper); it counts where an engine sizes its cache from the memory left free (TensorRT-LLM),
#: not where it takes a share of the whole device (vLLM's share leaves it room).
PROCESS_CONTEXT_BYTES = 0.5 * 2**30
#: Logits are computed in FP32 for the sequences a step samples from.
LOGIT_BYTES = 4


@dataclass(frozen=True)
class KvBudget:
    """How a serving engine sizes its KV cache out of each chip's off-chip memory.

    vLLM (`gpu_memory_utilization`): a share of the whole device, from which the weights and the
    peak activations of one step (profiled at `step_tokens` tokens and `step_seqs` sampled
    sequences) are taken. TensorRT-LLM (`kv_cache_free_gpu_mem_fraction`, `of_free`): a share of
    what is left free once the weights, the process and the runtime buffers for such a step are
    allocated. The two differ most where the weights nearly fill the device: a 70B FP8 model on one
    H100 gets ~4 GB of cache under vLLM's 0.9 and ~9 GB under TensorRT-LLM's 0.95. The default
    (no step) is the device share alone, for a static batch's fit."""

    fraction: float = USABLE_FRACTION
    of_free: bool = False
    step_tokens: int = 0
    step_seqs: int = 0


#: The rule a static batch's fit uses: the device share alone, no step reserved.
STATIC_FIT = KvBudget()


def runtime_bytes_per_chip(model: ModelSpec, dep: Deployment, budget: KvBudget) -> float:
    """Peak activation memory of one step of `budget.step_tokens` tokens on one chip, plus its FP32
    logits, plus the process's own context where the engine counts from free memory. An estimate:
    the widest block's tensors (its hidden vector in and out and its inner width, split as the
    weights are) for every token the chip computes; layers run one at a time, so one block counts."""
    process = PROCESS_CONTEXT_BYTES if budget.of_free else 0.0
    if not budget.step_tokens:
        return process
    m, h = model, model.hidden_size
    tokens = budget.step_tokens
    split = 1 if dep.attn_dp else dep.tp  # attention DP: a rank's dense blocks run its own tokens whole
    widest = max(m.attn_params_per_layer, m.dense_mlp_params, m.linear_params_per_layer) / h / split
    # routed experts: with attention DP the stage's ranks gather their tokens first; engines size a
    # chip's expert buffers for every token's top-k landing on its experts, each (token, expert)
    # pair's hidden vector permuted in and out and its inner width split tp / ep ways (vLLM's
    # fused_moe intermediate caches: tokens x top-k x (2I, I, hidden); TensorRT-LLM's MoE workspace)
    seen = tokens * (dep.tp if dep.attn_dp else 1)
    pair = 2 * h + (m.expert_params / h) / (dep.tp / dep.ep)
    experts = seen * (2 * h + m.experts_per_token * pair) if m.num_experts else 0.0
    block = max(tokens * (2 * h + widest), experts)
    logits = budget.step_seqs * m.vocab_size * LOGIT_BYTES
    return block * bytes_per_elem(dep.act_precision) + logits + process


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


def plan_memory(model: ModelSpec, chip: ChipSpec, dep: Deployment, sequences: float = 0.0, context_tokens: float = 0.0,
                budget: KvBudget = STATIC_FIT) -> MemoryPlan:
    """Place weights and the cache of `sequences` running sequences of `context_tokens` each (their
    KV and any linear-attention state); SRAM first on SRAM-first chips. Off-chip memory is shared
    out by the serving engine's rule (`budget`)."""
    weights = weight_bytes_per_chip(model, dep)
    # with attention DP each sequence lives whole on one chip: count every chip of a stage as the
    # busiest, which holds ceil(sequences / tp)
    held = math.ceil(sequences / dep.tp - 1e-9) * dep.tp if dep.attn_dp else sequences
    kv = held * model.kv_bytes(context_tokens, bytes_per_elem(dep.kv_precision)) / kv_shards(model, dep)
    kv_per_token = model.kv_bytes_per_token(bytes_per_elem(dep.kv_precision)) / kv_shards(model, dep)
    state_per_seq = model.state_bytes(state_bytes_per_elem(dep)) / state_shards(model, dep)
    cache = kv + held * state_per_seq  # what the KV tier must hold
    sram = chip.sram_bytes * USABLE_FRACTION if chip.weights_on_chip else 0.0
    if (sram >= weights and sram - weights >= cache) or chip.hbm_bytes == 0:  # SRAM-only chips: the one tier, fitting or not
        weights_tier, kv_tier, room = "sram", "sram", sram - weights
        hbm = 0.0  # no off-chip tier in use
    elif sram >= weights:
        weights_tier, kv_tier = "sram", "hbm"
        hbm = room = _hbm_share(chip, model, dep, budget, 0.0)
    else:
        weights_tier, kv_tier = "hbm", "hbm"
        hbm = _hbm_share(chip, model, dep, budget, weights)
        room = hbm - weights
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


def _hbm_share(chip: ChipSpec, model: ModelSpec, dep: Deployment, budget: KvBudget, weights: float) -> float:
    """Off-chip bytes per chip that weights (`weights` of them live there) and cache may take."""
    runtime = runtime_bytes_per_chip(model, dep, budget)
    if budget.of_free:
        return weights + budget.fraction * (chip.hbm_bytes - runtime - weights)
    return chip.hbm_bytes * budget.fraction - runtime


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
            else deployable_chips(chip, max(2, int(-(-dep.chips * need // max(have, 1e-9))))))
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


def deployable_chips(chip: ChipSpec, chips: int) -> int:
    """`chips` rounded up to a count deployments come in (`auto` starts its search there): a power
    of two on GPUs and TPUs (11 H100s would run a model as TP1 x PP11; 16 run it as TP8 x PP2),
    whole nodes on SRAM systems."""
    if chip.family == "sram":
        node = max(int(chip.get("chips_per_node", 1)), 1)
        return -(-chips // node) * node
    return 1 << (chips - 1).bit_length()


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
