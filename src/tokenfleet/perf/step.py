"""Time, traffic and energy of one engine step: a batch of sequences, each with new tokens to
compute and a context to attend to. Prefill, chunked prefill and decode are the same call.

Each term is a roofline piece with its formula beside it. The roofline is per operator, as in
LLM-Viewer [Yuan et al. 2024]: the matmuls (bound by FLOPs or by weight bytes) and attention
(bound by its FLOPs or by KV bytes) are separate kernels that run one after the other, so a step
costs the sum of the two, not one max over the step's totals (which would let a compute-bound
matmul hide the KV reads of attention). The calibrated `Efficiency` of the chip's family scales
peaks down and adds the fixed costs that rooflines miss. All inputs may be
numpy arrays of equal shape, so the simulator can cost many batch states in one call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from tokenfleet.catalog.chips import PEAK_KEY, ChipSpec
from tokenfleet.catalog.models import ModelSpec
from tokenfleet.perf.deployment import Deployment
from tokenfleet.perf.memory import (
    STATIC_FIT,
    KvBudget,
    MemoryPlan,
    dense_weight_bytes,
    embedding_bytes_per_elem,
    kv_shards,
    plan_memory,
    state_bytes_per_elem,
    state_shards,
)
from tokenfleet.perf.precision import COMPUTE_FORMAT, bytes_per_elem

Num = Any  # a float or a numpy array of floats

#: Share of TDP a chip draws while idle; busy time adds the rest linearly (an estimate; measured
#: H100 idle is 10-15% of TDP, but a serving replica between kernels sits far above idle).
#: A step is charged 1/pp of the replica's idle power (the other micro-batches in flight pay
#: the rest) and the dynamic power of the chips only while they do its roofline work.
STATIC_POWER_FRACTION = 0.5


def idle_power_w(chip: ChipSpec, dep: Deployment) -> float:
    """What a replica draws with nothing to compute (see STATIC_POWER_FRACTION)."""
    return dep.chips * chip.tdp_w * STATIC_POWER_FRACTION


@dataclass(frozen=True)
class Efficiency:
    """Calibrated per hardware family; see `perf/data/efficiency.yaml` and `perf/calibrate.py`."""

    mem_eff: float = 0.8  # achieved / peak memory bandwidth
    compute_eff: float = 0.6  # achieved / peak dense FLOP/s
    layer_overhead_s: float = 10e-6  # fixed cost per transformer layer per step (launches, norms, sync)
    moe_layer_overhead_s: float = 0.0  # extra fixed cost per MoE layer (routing, grouped GEMM set-up)
    step_overhead_s: float = 1e-3  # fixed cost per step (scheduling, sampling, host sync)
    fp4_compute_factor: float = 1.0  # FP4 matmuls reach this share of compute_eff (see calibrate.py)
    fp8_compute_factor: float = 1.0  # FP8 matmuls reach this share of compute_eff (see calibrate.py)
    comm_eff: float = 1.0  # achieved / peak link bandwidth in collectives and pipeline hops
    link_latency_factor: float = 1.0  # achieved / catalog link latency, per collective step and pipeline hop
    overlap: float = 1.0  # share of an operator's shorter roofline leg hidden under the longer (see `_roof`)


@dataclass(frozen=True)
class BatchShape:
    """Sums over the sequences of one step; fields may be numpy arrays (one entry per step)."""

    num_seqs: Num
    new_tokens: Num  # tokens computed this step (all sequences)
    kv_tokens: Num  # context tokens attended in full-attention layers, summed over sequences
    kv_tokens_window: Num  # the same in sliding-window layers (capped at the window)
    attn_pairs: Num  # (query, key) pairs in full-attention layers
    attn_pairs_window: Num  # (query, key) pairs in windowed layers
    # One sequence's largest share of each sum (0: unknown, taken as the mean). Only attention data
    # parallelism reads them: a sequence runs whole on one chip, so its share sets a floor on the
    # busiest chip's work (see `StepModel.dp_spreads`).
    largest_new_tokens: Num = 0.0
    largest_kv_tokens: Num = 0.0
    largest_attn_pairs: Num = 0.0


def _pairs(new: np.ndarray, ctx: np.ndarray, window: float) -> np.ndarray:
    """Causal (query, key) pairs of `new` queries at the end of `ctx` tokens, keys capped at `window`."""
    start = ctx - new  # keys before the first new token
    full = new * start + new * (new + 1) / 2
    if math.isinf(window):
        return np.asarray(full, dtype=float)
    # positions p = start+1 .. ctx each see min(p, window) keys
    below = np.clip(window - start, 0, new)  # queries whose position is <= window
    first = start + 1
    return np.asarray(below * first + below * (below - 1) / 2 + (new - below) * window, dtype=float)


def batch_shape(model: ModelSpec, new_tokens: Any, context_tokens: Any) -> BatchShape:
    """Summarise sequences (`new_tokens[i]` computed now, `context_tokens[i]` total after the step)."""
    new = np.asarray(new_tokens, dtype=float)
    ctx = np.asarray(context_tokens, dtype=float)
    window = float(model_window(model))
    pairs = _pairs(new, ctx, math.inf)
    return BatchShape(
        num_seqs=float(new.size),
        new_tokens=float(new.sum()),
        kv_tokens=float(ctx.sum()),
        kv_tokens_window=float(np.minimum(ctx, window).sum()),
        attn_pairs=float(pairs.sum()),
        attn_pairs_window=float(_pairs(new, ctx, window).sum()),
        largest_new_tokens=float(new.max(initial=0.0)),
        largest_kv_tokens=float(ctx.max(initial=0.0)),
        largest_attn_pairs=float(pairs.max(initial=0.0)),
    )


def model_window(model: ModelSpec) -> float:
    """The one sliding-window size of a model's windowed layers (inf when it has none)."""
    windows = {g.window_tokens for g in model.layer_groups if g.window_tokens is not None}
    return float(max(windows)) if windows else math.inf


def activation_bytes(model: ModelSpec, dep: Deployment) -> tuple[float, float, float]:
    """Bytes the matmuls read and write as activations, summed over a replica's chips: per new
    token in the dense blocks (attention, dense MLP, shared experts), per new token in the routed
    experts, and per sequence in the output head.

    Each block of two matmuls (QKV then output projection; up/gate then down) reads a token's
    hidden vector and writes one back (2 x hidden), and passes its inner width between them
    (its weights / hidden, split over the chips). Tensor parallelism splits the inner width but
    every chip of a stage reads and writes the whole hidden vector; with attention DP a token's
    dense blocks run on one chip. A routed expert is such a block for each of a token's top-k
    experts, on the `tp / ep` chips that split that expert: with experts tensor-parallel, every
    chip streams every routed token's hidden vector in and out, which is what makes fine-grained,
    high top-k MoE layers (Qwen3: top-8 of 128, 94 layers) costly at large batch. Inputs are read
    in the weights' compute format (quantised), outputs written in the activation format, all at
    the weights' tier bandwidth (an upper bound where a small batch's activations stay in cache).
    Elementwise kernels (norms, residuals, activation functions) are left to the fixed per-layer
    overhead: engines fuse most of them into the matmuls."""
    m, h = model, model.hidden_size
    io = (bytes_per_elem(COMPUTE_FORMAT[dep.weight_precision]) + bytes_per_elem(dep.act_precision)) / 2
    copies = 1 if dep.attn_dp else dep.tp  # chips that read and write a dense block's hidden vector

    def block(params: float, chips: float) -> float:
        return 2 * h * chips + params / h

    dense = (m.num_attention_layers * block(m.attn_params_per_layer, copies)
             + m.num_linear_layers * block(m.linear_params_per_layer, copies)
             + m.num_dense_layers * block(m.dense_mlp_params, copies)
             + (m.num_moe_layers * block(m.shared_expert_params, copies) if m.shared_expert_params else 0.0))
    experts = m.num_moe_layers * m.experts_per_token * block(m.expert_params, dep.tp / dep.ep)  # 0 for a dense model
    head = h * copies + m.vocab_size
    return dense * io, experts * io, head * io


def _inverse(rate: float) -> float:
    """1 / rate; a missing tier or unit (rate 0) is infinitely slow, as `step` computes it."""
    return 1.0 / rate if rate > 0 else math.inf


@dataclass(frozen=True)
class StepTime:
    """One step's time and its parts; seconds, bytes and joules for the whole replica."""

    latency_s: Num  # first layer in to last layer out
    interval_s: Num  # time between successive steps with `pp` micro-batches in flight
    compute_s: Num
    weight_memory_s: Num
    act_memory_s: Num  # the matmuls' activations in and out
    kv_memory_s: Num
    comm_s: Num
    overhead_s: Num
    flops: Num
    bytes: Num
    energy_j: Num  # one micro-batch's share: 1/pp of the replica's idle power over the step + its work's dynamic energy

    @property
    def memory_s(self) -> Num:
        return self.weight_memory_s + self.act_memory_s + self.kv_memory_s

    def bound(self) -> str:
        """What dominates this step: memory, compute, communication or fixed overhead."""
        parts = {
            "memory": float(np.mean(self.memory_s)),
            "compute": float(np.mean(self.compute_s)),
            "communication": float(np.mean(self.comm_s)),
            "overhead": float(np.mean(self.overhead_s)),
        }
        return max(parts, key=lambda k: parts[k])


def _roof(compute_s: Num, memory_s: Num, overlap: float) -> Num:
    """One operator's time from its compute and memory legs: the longer leg plus the part of the
    shorter one not hidden under it. overlap = 1 is the ideal roofline (max); below 1 an operator
    near its ridge point, where both legs are long, runs slower than either roofline alone, as
    measured GEMMs do (they reach both peaks only far from the ridge; see calibrate.HELD)."""
    return compute_s + memory_s - overlap * np.minimum(compute_s, memory_s)


class StepModel:
    """Step costs of one model on one deployment of one chip; constants are computed once."""

    def __init__(self, model: ModelSpec, chip: ChipSpec, dep: Deployment, eff: Efficiency, sequences: float = 0.0,
                 context_tokens: float = 0.0, budget: KvBudget = STATIC_FIT):
        self.model, self.chip, self.dep, self.eff = model, chip, dep, eff
        self.memory: MemoryPlan = plan_memory(model, chip, dep, sequences, context_tokens, budget)
        w_bytes = bytes_per_elem(dep.weight_precision)
        self.kv_elem_bytes = bytes_per_elem(dep.kv_precision)
        self.act_bytes = bytes_per_elem(dep.act_precision)
        self.window = model_window(model)
        full_layers = sum(g.count for g in model.layer_groups if g.window_tokens is None and not g.linear)
        self.full_layers, self.window_layers = full_layers, model.num_attention_layers - full_layers
        self.linear_layers = model.num_linear_layers
        self.state_bytes_per_seq = model.state_bytes(state_bytes_per_elem(dep))
        self.state_shards = state_shards(model, dep)
        # weights every step reads in full (with attention DP, on every chip of a stage), and one routed expert of every MoE layer
        # (the input embedding is looked up, not read whole; the output head is, in 16-bit: see embedding_bytes_per_elem)
        input_table = 0 if model.tied_embeddings else model.vocab_size * model.hidden_size * embedding_bytes_per_elem(dep)
        self.dense_weight_bytes = (dense_weight_bytes(model, dep) - input_table) * (dep.tp if dep.attn_dp else 1)
        self.expert_flops_per_token = 2 * model.num_moe_layers * model.experts_per_token * model.expert_params
        self.act_bytes_per_token, self.act_bytes_per_expert_token, self.act_bytes_per_seq = activation_bytes(model, dep)
        self.expert_bytes_per_layer = model.num_experts * model.expert_params * w_bytes
        compute_format = COMPUTE_FORMAT[dep.weight_precision]
        # the fitted share of a narrow format's own peak, where the chip has that format's tensor cores
        native = chip.peak_key(compute_format) == PEAK_KEY.get(compute_format)
        format_factor = {"fp4": eff.fp4_compute_factor, "fp8": eff.fp8_compute_factor}.get(compute_format, 1.0) if native else 1.0
        self.format_flops_per_s = chip.peak_flops_per_s(compute_format) * format_factor  # before compute_eff
        # the output head computes in its own (16-bit) format where the other weights are narrower
        head_wider = embedding_bytes_per_elem(dep) > w_bytes
        self.head_flops_per_s = chip.peak_flops_per_s(COMPUTE_FORMAT[dep.act_precision]) if head_wider else self.format_flops_per_s
        self.weight_bw = chip.sram_bytes_per_s if self.memory.weights_tier == "sram" else chip.hbm_bytes_per_s
        self.kv_bw = chip.sram_bytes_per_s if self.memory.kv_tier == "sram" else chip.hbm_bytes_per_s
        self.kv_shards = kv_shards(model, dep)
        self.link_bw = (chip.link_bytes_per_s or 1e9) * eff.comm_eff
        self.link_lat = chip.link_latency_s * eff.link_latency_factor
        self._scalar = self._scalar_coefficients()

    # --- roofline terms (whole replica, then per chip) -----------------------------------
    def flops(self, b: BatchShape) -> Num:
        return self.matmul_flops(b) + self.attn_flops(b)

    def matmul_flops(self, b: BatchShape) -> Num:
        """2 FLOPs per weight per token (the output head only for one token per sequence)."""
        m = self.model
        per_token = 2 * (m.matmul_params_per_token - m.vocab_size * m.hidden_size)
        return per_token * b.new_tokens + self.head_flops(b)

    def head_flops(self, b: BatchShape) -> Num:
        """The output head's part of `matmul_flops`: one token per sequence."""
        return 2 * self.model.vocab_size * self.model.hidden_size * b.num_seqs

    def attn_flops(self, b: BatchShape) -> Num:
        """2 * heads * (d_qk + d_v) per (query, key) pair per attention layer [Kaplan et al. 2020];
        linear-attention layers a fixed amount per token instead (see `_gated_deltanet`)."""
        m = self.model
        pairs = m.attn_flops_per_pair * (self.full_layers * b.attn_pairs + self.window_layers * b.attn_pairs_window)
        return pairs + self.linear_layers * m.linear_flops_per_token_layer * b.new_tokens

    def dp_spread(self, num_seqs: Num, total: Num = 1.0, largest: Num = 0.0) -> Num:
        """How much longer than an even split over its stage a step's data-parallel work takes (its
        dense matmuls, attention or KV reads, summing to `total`): with attention DP each sequence
        runs whole on one chip, so the busiest chip does at least the largest sequence's part
        (`largest`; where unknown, 0, the mean sequence's): a batch of fewer sequences than the
        stage has chips leaves chips idle, and one long prompt chunk is computed by one chip while
        the others wait for it at the next MoE layer. An engine that balances its ranks perfectly
        gets this floor. 1 without attention DP."""
        if not self.dep.attn_dp:
            return 1.0
        per_seq = np.maximum(largest, total / np.maximum(num_seqs, 1.0))
        return np.maximum(1.0, self.dep.tp * per_seq / np.maximum(total, 1e-300))

    def dp_spreads(self, b: BatchShape) -> tuple[Num, Num, Num]:
        """`dp_spread` of the step's new tokens (dense matmuls), attention pairs and KV reads."""
        return (self.dp_spread(b.num_seqs, b.new_tokens, b.largest_new_tokens),
                self.dp_spread(b.num_seqs, b.attn_pairs, b.largest_attn_pairs),
                self.dp_spread(b.num_seqs, b.kv_tokens, b.largest_kv_tokens))

    def experts_touched(self, tokens: Num) -> Num:
        """Expected distinct experts per MoE layer hit by `tokens` tokens routing top-k of E uniformly."""
        m = self.model
        if not m.is_moe:
            return 0.0
        return m.num_experts * (1.0 - (1.0 - m.experts_per_token / m.num_experts) ** tokens)

    def weight_bytes(self, b: BatchShape) -> Num:
        m = self.model
        touched = self.experts_touched(b.new_tokens) / max(m.num_experts, 1)
        return self.dense_weight_bytes + m.num_moe_layers * self.expert_bytes_per_layer * touched

    def kv_bytes(self, b: BatchShape) -> Num:
        """Read every cached token of every attention layer once, write the new ones."""
        per_tok_layer = self.model.kv_elems_per_token_layer * self.kv_elem_bytes
        read = self.full_layers * b.kv_tokens + self.window_layers * b.kv_tokens_window
        return per_tok_layer * (read + self.model.num_attention_layers * b.new_tokens)

    def act_traffic_bytes(self, b: BatchShape) -> Num:
        """The matmuls' activation traffic (see `activation_bytes`)."""
        return (self.act_bytes_per_token + self.act_bytes_per_expert_token) * b.new_tokens + self.act_bytes_per_seq * b.num_seqs

    def state_bytes(self, b: BatchShape) -> Num:
        """Each sequence's linear-attention state, read and written back once per step."""
        return 2 * self.state_bytes_per_seq * b.num_seqs

    def comm_s(self, b: BatchShape) -> Num:
        """Per stage: TP all-reduces (2 per layer, ring: 2(t-1)/t of the bytes) and, with EP, an
        all-to-all dispatch and combine per MoE layer; each collective pays 2*log2(n) link latencies.
        With attention DP only the MoE layers communicate: an all-gather of the stage's tokens and a
        reduce-scatter of the results (an all-reduce's bytes) where experts are TP-split, else the
        all-to-all."""
        m, d = self.model, self.dep
        msg = b.new_tokens * m.hidden_size * self.act_bytes
        layers = m.num_layers / d.pp
        moe_layers = m.num_moe_layers / d.pp
        t = 0.0 * msg
        if d.tp > 1:
            if d.attn_dp:
                reduces = moe_layers if d.ep == 1 else 0.0
            else:
                reduces = 2 * layers - (moe_layers if d.ep > 1 else 0)
            t = t + reduces * (2 * (d.tp - 1) / d.tp * msg / self.link_bw + 2 * math.log2(d.tp) * self.link_lat)
        if d.ep > 1:
            a2a = 2 * m.experts_per_token * msg * (d.ep - 1) / d.ep / d.ep
            t = t + moe_layers * 2 * (a2a / self.link_bw + 2 * math.log2(d.ep) * self.link_lat)
        return t

    def hop_s(self, b: BatchShape) -> Num:
        """Send activations from one pipeline stage to the next."""
        return b.new_tokens * self.model.hidden_size * self.act_bytes / self.link_bw + self.link_lat

    def _scalar_coefficients(self) -> tuple[float, ...]:
        """`step`'s formulas folded into constants, so `scalar` is a few float operations."""
        m, d, e = self.model, self.dep, self.eff
        one = BatchShape(0.0, 1.0, 0.0, 0.0, 0.0, 0.0)
        comm0 = float(self.comm_s(BatchShape(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)))
        kv_bw = self.kv_bw * e.mem_eff * self.kv_shards  # no tier for KV (a chip without HBM): infinitely slow
        per_kv_byte = self.model.kv_elems_per_token_layer * self.kv_elem_bytes * _inverse(kv_bw)
        state_bw = self.kv_bw * e.mem_eff * self.state_shards
        inv_compute = _inverse(d.chips * self.format_flops_per_s * e.compute_eff)
        per_weight_byte = _inverse(d.chips * self.weight_bw * e.mem_eff)  # weights and activations share the tier
        return (
            (2 * (m.matmul_params_per_token - m.vocab_size * m.hidden_size) - self.expert_flops_per_token) * inv_compute,  # per new token, but routed experts
            self.expert_flops_per_token * inv_compute,  # per new token, routed experts (no DP spread)
            2 * m.vocab_size * m.hidden_size * _inverse(d.chips * self.head_flops_per_s * e.compute_eff),  # per sequence (output head)
            m.attn_flops_per_pair * self.full_layers * inv_compute,  # per full-attention pair
            m.attn_flops_per_pair * self.window_layers * inv_compute,  # per windowed pair
            self.linear_layers * m.linear_flops_per_token_layer * inv_compute,  # linear attention, per new token
            per_weight_byte,
            self.act_bytes_per_token * per_weight_byte,  # activations, per new token (dense blocks)
            self.act_bytes_per_expert_token * per_weight_byte,  # ... routed experts (no DP spread)
            self.act_bytes_per_seq * per_weight_byte,  # ... per sequence (output head)
            per_kv_byte * self.full_layers, per_kv_byte * self.window_layers, per_kv_byte * m.num_attention_layers,
            2 * self.state_bytes_per_seq * _inverse(state_bw) if self.state_bytes_per_seq else 0.0,  # per sequence
            comm0, float(self.comm_s(one)) - comm0,  # communication: fixed + per new token
            (e.layer_overhead_s * m.num_layers + e.moe_layer_overhead_s * m.num_moe_layers) / d.pp,
            float(self.hop_s(one)) - self.link_lat if d.pp > 1 else 0.0,
            d.chips * self.chip.tdp_w,
            # MoE: all experts' bytes x the share touched, 1 - (1 - k/E)^tokens (see experts_touched)
            m.num_moe_layers * self.expert_bytes_per_layer if m.is_moe else 0.0,
            1.0 - m.experts_per_token / m.num_experts if m.is_moe else 1.0,
        )

    def scalar(self, num_seqs: float, new_tokens: float, kv_tokens: float, kv_tokens_window: float,
               attn_pairs: float, attn_pairs_window: float, largest_new_tokens: float = 0.0,
               largest_kv_tokens: float = 0.0, largest_attn_pairs: float = 0.0) -> tuple[float, float]:
        """(latency_s, energy_j) of one step from plain floats: `step` without numpy, for the
        simulator's per-step path (a test pins the two to each other)."""
        tok, tok_exp, seq, pair, pair_w, lin, wb, act, act_exp, act_seq, kvf, kvw, kvn, state, comm0, comm1, fixed, hop1, watts, experts, miss = self._scalar
        d = self.dep
        spread = spread_attn = spread_kv = 1.0
        if d.attn_dp:  # dp_spreads in plain floats
            seqs = max(num_seqs, 1.0)
            spread = max(1.0, d.tp * max(largest_new_tokens, new_tokens / seqs) / max(new_tokens, 1e-300))
            spread_attn = max(1.0, d.tp * max(largest_attn_pairs, attn_pairs / seqs) / max(attn_pairs, 1e-300))
            spread_kv = max(1.0, d.tp * max(largest_kv_tokens, kv_tokens / seqs) / max(kv_tokens, 1e-300))
        matmul = (tok * new_tokens + seq * num_seqs) * spread + tok_exp * new_tokens
        weights = ((self.dense_weight_bytes + (experts * (1.0 - miss**new_tokens) if experts else 0.0)) * wb
                   + (act * new_tokens + act_seq * num_seqs) * spread + act_exp * new_tokens)
        attn = (pair * attn_pairs + pair_w * attn_pairs_window) * spread_attn + lin * new_tokens * spread
        kv = (kvf * kv_tokens + kvw * kv_tokens_window + kvn * new_tokens + state * num_seqs) * spread_kv
        hidden = self.eff.overlap  # `_roof` twice, in plain floats (numpy's minimum would dominate this path)
        roof = (matmul + weights - hidden * (weights if matmul > weights else matmul)
                + attn + kv - hidden * (kv if attn > kv else attn))
        stage = roof + comm0 + comm1 * new_tokens + fixed
        hop = hop1 * new_tokens + self.link_lat if d.pp > 1 else 0.0
        latency = d.pp * stage + (d.pp - 1) * hop + self.eff.step_overhead_s
        return latency, watts * (STATIC_POWER_FRACTION / d.pp * latency + (1 - STATIC_POWER_FRACTION) * roof)

    def latency_energy(self, num_seqs: float, new_tokens: float, kv_tokens: np.ndarray, kv_tokens_window: np.ndarray,
                       attn_pairs: np.ndarray, attn_pairs_window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`scalar` over arrays of contexts at a fixed batch (a run of decode steps)."""
        tok, tok_exp, seq, pair, pair_w, lin, wb, act, act_exp, act_seq, kvf, kvw, kvn, state, comm0, comm1, fixed, hop1, watts, experts, miss = self._scalar
        d = self.dep
        spread = float(self.dp_spread(num_seqs))  # decodes alike: each sequence one token, the mean context
        matmul = (tok * new_tokens + seq * num_seqs) * spread + tok_exp * new_tokens
        weights = ((self.dense_weight_bytes + (experts * (1.0 - miss**new_tokens) if experts else 0.0)) * wb
                   + (act * new_tokens + act_seq * num_seqs) * spread + act_exp * new_tokens)
        attn = (pair * attn_pairs + pair_w * attn_pairs_window + lin * new_tokens) * spread
        kv = (kvn * new_tokens + kvf * kv_tokens + kvw * kv_tokens_window + state * num_seqs) * spread
        roof = _roof(matmul, weights, self.eff.overlap) + _roof(attn, kv, self.eff.overlap)
        stage = roof + (comm0 + comm1 * new_tokens + fixed)
        hop = hop1 * new_tokens + self.link_lat if d.pp > 1 else 0.0
        latency = d.pp * stage + ((d.pp - 1) * hop + self.eff.step_overhead_s)
        return latency, watts * (STATIC_POWER_FRACTION / d.pp * latency + (1 - STATIC_POWER_FRACTION) * roof)

    def step(self, b: BatchShape) -> StepTime:
        """Cost one step; with arrays in `b`, cost many at once."""
        m, d, e = self.model, self.dep, self.eff
        per_stage = d.chips  # each chip holds 1/tp of 1/pp of the model
        rate = per_stage * self.format_flops_per_s * e.compute_eff
        matmul_flops, attn_flops = self.matmul_flops(b), self.attn_flops(b)
        (spread, spread_attn, spread_kv), expert_flops = self.dp_spreads(b), self.expert_flops_per_token * b.new_tokens
        linear_flops = self.linear_layers * m.linear_flops_per_token_layer * b.new_tokens  # per token, like the matmuls
        head_flops = self.head_flops(b)
        matmul = ((matmul_flops - expert_flops - head_flops) * spread + expert_flops) / rate
        matmul = matmul + head_flops * spread / (per_stage * self.head_flops_per_s * e.compute_eff)
        attn = ((attn_flops - linear_flops) * spread_attn + linear_flops * spread) / rate
        w_bytes, kv, state = self.weight_bytes(b), self.kv_bytes(b), self.state_bytes(b)
        weight_mem = w_bytes / per_stage / (self.weight_bw * e.mem_eff)
        expert_act = self.act_bytes_per_expert_token * b.new_tokens
        act = self.act_traffic_bytes(b)
        act_mem = ((act - expert_act) * spread + expert_act) / per_stage / (self.weight_bw * e.mem_eff)
        kv_mem = (kv / self.kv_shards + state / self.state_shards) * spread_kv / (self.kv_bw * e.mem_eff)
        roof = _roof(matmul, weight_mem + act_mem, e.overlap) + _roof(attn, kv_mem, e.overlap)  # per-operator roofline
        flops, compute = matmul_flops + attn_flops, matmul + attn
        comm = self.comm_s(b)
        fixed = (e.layer_overhead_s * m.num_layers + e.moe_layer_overhead_s * m.num_moe_layers) / d.pp
        stage = roof + comm + fixed
        hop = self.hop_s(b) if d.pp > 1 else 0.0 * stage
        latency = d.pp * stage + (d.pp - 1) * hop + e.step_overhead_s
        interval = stage + hop + e.step_overhead_s / d.pp
        watts = d.chips * self.chip.tdp_w
        return StepTime(
            latency_s=latency,
            interval_s=interval,
            compute_s=compute * d.pp,
            weight_memory_s=weight_mem * d.pp,
            act_memory_s=act_mem * d.pp,
            kv_memory_s=kv_mem * d.pp,
            comm_s=comm * d.pp + (d.pp - 1) * hop,
            overhead_s=fixed * d.pp + e.step_overhead_s,
            flops=flops,
            bytes=w_bytes + act + kv + state,
            energy_j=watts * (STATIC_POWER_FRACTION / d.pp * latency + (1 - STATIC_POWER_FRACTION) * roof),
        )
