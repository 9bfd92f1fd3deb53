"""Invariants every step prediction must keep, checked over random batches and chips."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import deployment
from tokenfleet.catalog import all_chips, get_chip, get_model
from tokenfleet.catalog.chips import Figure
from tokenfleet.perf import Efficiency, StepModel, batch_shape
from tokenfleet.perf.memory import plan_memory

MODELS = ["llama-3.1-8b", "mixtral-8x7b", "gpt-oss-20b", "deepseek-v3", "qwen3-next-80b-a3b"]
GPU_CHIPS = sorted(c for c, spec in all_chips().items() if spec.family != "sram")

batches = st.lists(st.tuples(st.integers(1, 4096), st.integers(0, 16_000)), min_size=1, max_size=16)


def _shape(model_name: str, seqs: list[tuple[int, int]]):  # type: ignore[no-untyped-def]
    new = [n for n, _ in seqs]
    ctx = [n + c for n, c in seqs]
    return batch_shape(get_model(model_name), new, ctx)


def _scaled(chip_id: str, key: str, factor: float):  # type: ignore[no-untyped-def]
    chip = get_chip(chip_id)
    figures = dict(chip.figures)
    for k in ([key] if key in figures else []) + (["fp8_flops_per_s", "fp4_flops_per_s", "int8_ops_per_s"] if key == "bf16_flops_per_s" else []):
        if k in figures:
            figures[k] = Figure(value=figures[k].value * factor, source="test", date="2026-01-01")
    return chip.model_copy(update={"figures": figures})


@settings(max_examples=60, deadline=None)
@given(model=st.sampled_from(MODELS), chip=st.sampled_from(GPU_CHIPS), seqs=batches, attn_dp=st.booleans())
def test_no_step_beats_its_bytes_over_bandwidth_or_flops_over_peak(model: str, chip: str, seqs: list[tuple[int, int]], attn_dp: bool) -> None:
    m, c = get_model(model), get_chip(chip)
    dep = deployment(chips=8, precision="fp8", attn_dp=attn_dp)
    sm = StepModel(m, c, dep, Efficiency(mem_eff=1.0, compute_eff=1.0, layer_overhead_s=0, moe_layer_overhead_s=0, step_overhead_s=0))
    b = _shape(model, seqs)
    t = sm.step(b)
    assert t.latency_s >= t.bytes / (dep.chips * c.hbm_bytes_per_s) * (1 - 1e-9)
    assert t.latency_s >= t.flops / (dep.chips * c.peak_flops_per_s("fp8")) * (1 - 1e-9)


@settings(max_examples=60, deadline=None)
@given(model=st.sampled_from(MODELS), chip=st.sampled_from(GPU_CHIPS), seqs=batches,
       key=st.sampled_from(["hbm_bytes_per_s", "bf16_flops_per_s", "link_bytes_per_s"]), factor=st.floats(1.0, 8.0))
def test_more_bandwidth_or_compute_never_slows_a_step(model: str, chip: str, seqs: list[tuple[int, int]], key: str, factor: float) -> None:
    m, dep, b = get_model(model), deployment(chips=8, precision="fp8"), _shape(model, seqs)
    base = StepModel(m, get_chip(chip), dep, Efficiency()).step(b).latency_s
    faster = StepModel(m, _scaled(chip, key, factor), dep, Efficiency()).step(b).latency_s
    assert faster <= base * (1 + 1e-12)


@settings(max_examples=60, deadline=None)
@given(model=st.sampled_from(MODELS), seqs=batches, extra=st.tuples(st.integers(1, 4096), st.integers(0, 16_000)))
def test_a_larger_batch_never_lowers_step_time(model: str, seqs: list[tuple[int, int]], extra: tuple[int, int]) -> None:
    sm = StepModel(get_model(model), get_chip("h100-sxm"), deployment(chips=8, precision="fp8"), Efficiency())
    assert sm.step(_shape(model, [*seqs, extra])).latency_s >= sm.step(_shape(model, seqs)).latency_s


def test_vectorised_steps_equal_one_by_one() -> None:
    m = get_model("llama-3.1-8b")
    sm = StepModel(m, get_chip("h100-sxm"), deployment(), Efficiency())
    shapes = [batch_shape(m, [1] * 8, [c] * 8) for c in (100, 1000, 10_000)]
    stacked = replace(shapes[0], **{f: np.array([getattr(s, f) for s in shapes]) for f in ("kv_tokens", "kv_tokens_window", "attn_pairs", "attn_pairs_window")})
    np.testing.assert_allclose(sm.step(stacked).latency_s, [sm.step(s).latency_s for s in shapes])


def test_decode_at_batch_one_is_memory_bound_and_prefill_compute_bound(llama8b_h100: StepModel) -> None:
    m = llama8b_h100.model
    assert llama8b_h100.step(batch_shape(m, [1], [1000])).bound() in ("memory", "overhead")
    assert llama8b_h100.step(batch_shape(m, [8192], [8192])).bound() == "compute"


def test_sram_chip_keeps_weights_on_die_when_they_fit() -> None:
    sm = StepModel(get_model("llama-3.1-8b"), get_chip("cerebras-wse3"), deployment(), Efficiency())
    assert sm.memory.weights_tier == "sram"
    gpu = StepModel(get_model("llama-3.1-8b"), get_chip("h100-sxm"), deployment(), Efficiency())
    assert gpu.memory.weights_tier == "hbm"


@settings(max_examples=60, deadline=None)
@given(model=st.sampled_from(MODELS), chip=st.sampled_from(GPU_CHIPS), seqs=batches, overlaps=st.tuples(st.floats(0, 1), st.floats(0, 1)))
def test_less_overlap_of_compute_and_memory_never_speeds_a_step_nor_beats_the_ideal_roofline(
        model: str, chip: str, seqs: list[tuple[int, int]], overlaps: tuple[float, float]) -> None:
    """overlap = 1 is the ideal per-operator roofline; any less hides less of the shorter leg, so
    the step is slower or equal, and never slower than both legs run back to back."""
    m, dep, b = get_model(model), deployment(chips=8, precision="fp8"), _shape(model, seqs)
    less, more = sorted(overlaps)
    t_less, t_more, ideal, serial = (StepModel(m, get_chip(chip), dep, Efficiency(overlap=o)).step(b).latency_s for o in (less, more, 1.0, 0.0))
    assert ideal * (1 - 1e-12) <= t_more <= t_less * (1 + 1e-12) <= serial * (1 + 1e-12)


@settings(max_examples=60, deadline=None)
@given(model=st.sampled_from(MODELS), chip=st.sampled_from(sorted(all_chips())), seqs=batches,
       layout=st.sampled_from([(8, 8, 1), (8, 2, 4), (16, 4, 4)]), factors=st.tuples(st.floats(0, 10), st.floats(0, 10)))
def test_a_slower_link_never_speeds_a_step_and_free_links_pay_only_bandwidth(
        model: str, chip: str, seqs: list[tuple[int, int]], layout: tuple[int, int, int], factors: tuple[float, float]) -> None:
    """`link_latency_factor` scales the catalog's link latency that each collective step and
    pipeline hop pays: a larger one never makes a step faster, and at 0 a step on several chips
    still pays its collectives' bytes over the links."""
    chips, tp, pp = layout
    m, b = get_model(model), _shape(model, seqs)
    dep = deployment(chips=chips, tp=tp, pp=pp, precision="fp8")
    lo, hi = sorted(factors)
    fast, slow = (StepModel(m, get_chip(chip), dep, Efficiency(link_latency_factor=f)).step(b) for f in (lo, hi))
    assert fast.latency_s <= slow.latency_s * (1 + 1e-12)
    free = StepModel(m, get_chip(chip), dep, Efficiency(link_latency_factor=0.0))
    assert free.comm_s(b) > 0 and free.link_lat == 0.0


def test_an_operator_at_its_ridge_point_pays_the_unhidden_share_of_its_shorter_leg() -> None:
    """A decode batch sized so its matmuls' FLOPs and bytes (weights and activations) take equal
    time: with overlap o the matmuls cost (2 - o) x either leg."""
    m, chip = get_model("llama-3.1-8b"), get_chip("h100-sxm")
    lone = Efficiency(mem_eff=1.0, compute_eff=1.0, layer_overhead_s=0, moe_layer_overhead_s=0, step_overhead_s=0)
    sm = StepModel(m, chip, deployment(precision="bf16"), lone)
    one = batch_shape(m, [1] * 1, [1])
    per_token_s = sm.matmul_flops(one) / sm.format_flops_per_s - sm.act_traffic_bytes(one) / chip.hbm_bytes_per_s
    tokens = sm.weight_bytes(one) / chip.hbm_bytes_per_s / per_token_s
    at_ridge = batch_shape(m, [1] * round(tokens), [1] * round(tokens))
    legs = (sm.matmul_flops(at_ridge) / sm.format_flops_per_s,
            (sm.weight_bytes(at_ridge) + sm.act_traffic_bytes(at_ridge)) / chip.hbm_bytes_per_s)
    assert legs[0] == pytest.approx(legs[1], rel=0.01)
    for o in (1.0, 0.5, 0.0):
        t = StepModel(m, chip, deployment(precision="bf16"), replace(lone, overlap=o)).step(at_ridge)
        attention = t.latency_s - (2 - o) * max(legs)
        assert 0 <= attention < 0.05 * max(legs), o


@settings(max_examples=60, deadline=None)
@given(model=st.sampled_from([*MODELS, "gpt-oss-120b"]), chip=st.sampled_from(GPU_CHIPS), seqs=batches,
       layout=st.sampled_from([(1, 1, 1), (8, 8, 1), (8, 4, 2), (8, 2, 4)]), overlap=st.sampled_from([1.0, 0.4, 0.0]),
       latency=st.sampled_from([1.0, 0.0, 3.0]), attn_dp=st.booleans())
def test_float_and_array_paths_equal_the_full_step(model: str, chip: str, seqs: list[tuple[int, int]], layout: tuple[int, int, int],
                                                   overlap: float, latency: float, attn_dp: bool) -> None:
    """The simulator's per-step (`scalar`) and decode-run (`latency_energy`) paths are `step`."""
    chips, tp, pp = layout
    m = get_model(model)
    eff = Efficiency(overlap=overlap, link_latency_factor=latency)
    sm = StepModel(m, get_chip(chip), deployment(chips=chips, tp=tp, pp=pp, precision="fp8", attn_dp=attn_dp), eff)
    b = _shape(model, seqs)
    t = sm.step(b)
    args = (b.num_seqs, b.new_tokens, b.kv_tokens, b.kv_tokens_window, b.attn_pairs, b.attn_pairs_window)
    largest = (b.largest_new_tokens, b.largest_kv_tokens, b.largest_attn_pairs)
    assert np.allclose(sm.scalar(*args, *largest), (t.latency_s, t.energy_j), rtol=1e-12)
    # a decode run knows only its sums: each sequence is taken as the mean one
    mean = sm.step(replace(b, largest_new_tokens=0.0, largest_kv_tokens=0.0, largest_attn_pairs=0.0))
    assert np.allclose(sm.scalar(*args), (mean.latency_s, mean.energy_j), rtol=1e-12)
    many = sm.latency_energy(*args[:2], *(np.array([v, v * 2]) for v in args[2:]))
    assert np.allclose([many[0][0], many[1][0]], (mean.latency_s, mean.energy_j), rtol=1e-12)


def test_attention_is_its_own_kernel_so_compute_bound_matmuls_do_not_hide_kv_reads() -> None:
    """Per-operator roofline: a step pays max(matmul FLOPs, weight bytes) plus max(attention
    FLOPs, KV bytes); one max over the totals would let a big prefill chunk hide the KV reads."""
    m = get_model("llama-3.1-8b")
    peak = Efficiency(mem_eff=1.0, compute_eff=1.0, layer_overhead_s=0, moe_layer_overhead_s=0, step_overhead_s=0)
    sm = StepModel(m, get_chip("h100-sxm"), deployment(), peak)
    b = batch_shape(m, [4096] + [1] * 16, [4096] + [16_000] * 16)  # a prefill chunk beside 16 long decodes
    t = sm.step(b)
    one_max = max(t.compute_s, t.memory_s)
    assert t.compute_s > t.memory_s  # the totals alone would call this step compute-bound ...
    assert t.latency_s == pytest.approx(max(t.compute_s - sm.attn_flops(b) / sm.format_flops_per_s, t.weight_memory_s + t.act_memory_s)
                                        + max(sm.attn_flops(b) / sm.format_flops_per_s, t.kv_memory_s))
    assert t.latency_s > one_max * 1.05  # ... yet the KV reads of attention still cost time


def test_narrow_formats_run_at_their_fitted_share_of_compute_efficiency_where_the_chip_has_them() -> None:
    """FP4 and FP8 matmuls each run at their own fitted share of compute_eff; other formats, and a
    narrow format on a chip without its tensor cores (FP4 weights on an H100 compute in FP8), do
    not, nor does the output head, which stays 16-bit beside narrow weights."""
    m = get_model("llama-3.3-70b")
    prefill = batch_shape(m, [8192], [8192])  # compute-bound
    factors = Efficiency(step_overhead_s=0, layer_overhead_s=0, fp4_compute_factor=0.8, fp8_compute_factor=1.25)
    for chip, precision, slower in (("b200", "fp4", 1 / 0.8), ("b200", "fp8", 1 / 1.25), ("b200", "bf16", 1.0),
                                    ("h100-sxm", "fp4", 1.0), ("h100-sxm", "fp8", 1 / 1.25)):
        dep = deployment(precision=precision)
        sm = StepModel(m, get_chip(chip), dep, Efficiency(step_overhead_s=0, layer_overhead_s=0))
        head_s = sm.head_flops(prefill) / (sm.head_flops_per_s * sm.eff.compute_eff)
        scaled = StepModel(m, get_chip(chip), dep, factors).step(prefill)
        assert scaled.compute_s - head_s == pytest.approx((sm.step(prefill).compute_s - head_s) * slower), (chip, precision)


def test_collectives_move_bytes_at_the_fitted_share_of_link_bandwidth() -> None:
    """Halving comm_eff doubles the bandwidth part of a step's communication; its latency part stays."""
    m = get_model("llama-3.1-70b")
    dep = deployment(chips=8, tp=8, precision="fp8")
    full, half = (StepModel(m, get_chip("h100-sxm"), dep, Efficiency(comm_eff=e)) for e in (1.0, 0.5))
    big, tiny = batch_shape(m, [8192], [8192]), batch_shape(m, [1], [1])
    latency_only = full.comm_s(tiny)
    assert half.comm_s(big) - latency_only == pytest.approx(2 * (full.comm_s(big) - latency_only), rel=1e-3)
    assert half.step(big).latency_s > full.step(big).latency_s


def test_no_fit_runs_above_a_peak_and_a_user_fit_that_would_is_refused() -> None:
    """Every shipped kind's (and stack's) shares of peak compute, per format, bandwidth and links
    lie in (0, 1]; a user's fit with FP8 matmuls above peak is refused in one line naming it."""
    from tokenfleet.errors import TokenfleetError
    from tokenfleet.perf.efficiency import (
        beyond_peak,
        efficiency_from_dict,
        load_efficiency,
        parse_efficiency,
    )

    for kind, entry in load_efficiency()["kinds"].items():
        for params in (entry["params"], *(stack["params"] for stack in entry.get("stacks", {}).values())):
            assert beyond_peak(efficiency_from_dict(params)) == "", kind
    with pytest.raises(TokenfleetError, match="kinds.nvidia compute_eff x fp8_compute_factor = 1.2 is outside"):
        parse_efficiency("kinds: {nvidia: {params: {compute_eff: 0.8, fp8_compute_factor: 1.5}}}", "mine.yaml")
    with pytest.raises(TokenfleetError, match="kinds.nvidia overlap = 1.5 is outside"):
        parse_efficiency("kinds: {nvidia: {params: {overlap: 1.5}}}", "mine.yaml")
    with pytest.raises(TokenfleetError, match="kinds.nvidia link_latency_factor = -0.5 is below 0"):
        parse_efficiency("kinds: {nvidia: {params: {link_latency_factor: -0.5}}}", "mine.yaml")


def test_a_hybrids_linear_layers_read_and_write_a_fixed_state_per_sequence_not_a_growing_cache() -> None:
    """Qwen3-Next: 36 Gated DeltaNet layers and 12 attention layers. A decode step's cache traffic
    is the attention layers' KV (growing with context) plus each sequence's state, twice."""
    m = get_model("qwen3-next-80b-a3b")
    sm = StepModel(m, get_chip("h200-sxm"), deployment(chips=2, tp=2), Efficiency())
    short, long = batch_shape(m, [1] * 8, [1000] * 8), batch_shape(m, [1] * 8, [2000] * 8)
    kv_per_token = m.kv_bytes_per_token(2.0)
    assert kv_per_token == 12 * 2 * 2 * 256 * 2.0  # only the 12 attention layers cache K and V
    assert sm.state_bytes(short) == sm.state_bytes(long) == 2 * 8 * m.state_bytes(2.0)
    assert sm.kv_bytes(long) - sm.kv_bytes(short) == pytest.approx(8 * 1000 * kv_per_token)
    assert sm.step(long).bytes - sm.step(short).bytes == pytest.approx(8 * 1000 * kv_per_token)
    assert sm.attn_flops(batch_shape(m, [1], [1])) > 36 * m.linear_flops_per_token_layer  # the recurrence is charged


# --- attention data parallelism -------------------------------------------------------------------
def test_attention_dp_holds_a_latent_cache_once_and_every_chip_all_but_the_experts() -> None:
    """DeepSeek-V3 on 8 H200s: tensor parallelism replicates the MLA latent cache on every chip;
    attention DP keeps each sequence on one chip, so the replica holds ~8x the tokens in the room
    left, while each chip stores the whole non-expert part of the model."""
    m, chip = get_model("deepseek-v3"), get_chip("h200-sxm")
    tp, adp = deployment(chips=8, precision="fp8"), deployment(chips=8, precision="fp8", attn_dp=True)
    a, b = plan_memory(m, chip, tp), plan_memory(m, chip, adp)
    dense_bytes = m.dense_params + m.embedding_params  # fp8: 1 byte, embeddings and head 2
    assert b.weight_bytes_per_chip - a.weight_bytes_per_chip == pytest.approx(dense_bytes * (1 - 1 / 8))
    per_token_tp, per_token_adp = a.kv_capacity_bytes_per_chip / a.kv_capacity_tokens, b.kv_capacity_bytes_per_chip / b.kv_capacity_tokens
    assert per_token_tp == pytest.approx(8 * per_token_adp)
    assert b.kv_capacity_tokens > 4 * a.kv_capacity_tokens
    # and a step reads each sequence's latent once, not on every chip
    decode = batch_shape(m, [1] * 64, [4000] * 64)
    assert StepModel(m, chip, adp, Efficiency()).step(decode).kv_memory_s == pytest.approx(StepModel(m, chip, tp, Efficiency()).step(decode).kv_memory_s / 8)


def test_attention_dp_communicates_only_around_the_moe_layers() -> None:
    """Llama-4-Maverick alternates dense and MoE layers: tensor parallelism all-reduces twice per
    layer; attention DP gathers and scatters the tokens once per MoE layer, a quarter of the bytes."""
    m, chip = get_model("llama-4-maverick"), get_chip("h100-sxm")
    free = Efficiency(link_latency_factor=0.0)
    b = batch_shape(m, [512] * 8, [2048] * 8)
    tp = StepModel(m, chip, deployment(chips=8, precision="fp8"), free).comm_s(b)
    adp = StepModel(m, chip, deployment(chips=8, precision="fp8", attn_dp=True), free).comm_s(b)
    assert adp == pytest.approx(tp * m.num_moe_layers / (2 * m.num_layers))


def test_attention_dp_leaves_chips_idle_below_one_sequence_each() -> None:
    """One long prompt runs its dense layers on one chip under attention DP, so its prefill takes
    longer than under tensor parallelism; with a sequence for every chip the split is even."""
    m, chip = get_model("deepseek-v3"), get_chip("h200-sxm")
    tp = StepModel(m, chip, deployment(chips=8, precision="fp8"), Efficiency())
    adp = StepModel(m, chip, deployment(chips=8, precision="fp8", attn_dp=True), Efficiency())
    one_prompt = batch_shape(m, [8000], [8000])
    assert adp.step(one_prompt).compute_s > 4 * tp.step(one_prompt).compute_s
    eight_prompts = batch_shape(m, [1000] * 8, [1000] * 8)
    assert adp.step(eight_prompts).compute_s == pytest.approx(tp.step(eight_prompts).compute_s)
    assert adp.dp_spread(1) == 8 and adp.dp_spread(8) == adp.dp_spread(300) == 1 and tp.dp_spread(1) == 1


def test_tensor_parallel_experts_stream_every_routed_token_through_every_chip() -> None:
    """With its experts split tensor-parallel, every chip of a stage reads and writes the hidden
    vector of each (token, expert) pair; expert parallelism sends each pair to one chip. For
    Qwen3-235B (top-8 of 128, 94 MoE layers) on 8 chips that is 7 x 2 x hidden more elements per
    pair and layer, and at a large decode batch a visible share of the step."""
    m, chip = get_model("qwen3-235b-a22b"), get_chip("h200-sxm")
    tp, ep = (StepModel(m, chip, deployment(chips=8, precision="fp8", ep=e), Efficiency()) for e in (1, 8))
    io_bytes = (1.0 + 2.0) / 2  # fp8 inputs, 16-bit outputs
    pairs = m.num_moe_layers * m.experts_per_token
    assert tp.act_bytes_per_expert_token - ep.act_bytes_per_expert_token == pytest.approx(pairs * 2 * m.hidden_size * 7 * io_bytes)
    decode = batch_shape(m, [1] * 2048, [2000] * 2048)
    t = tp.step(decode)
    assert t.act_memory_s > 0.2 * t.weight_memory_s
    assert t.bytes == pytest.approx(tp.weight_bytes(decode) + tp.act_traffic_bytes(decode) + tp.kv_bytes(decode))


def test_attention_dp_waits_for_the_chip_that_computes_the_longest_prompt_chunk() -> None:
    """A sequence runs whole on one chip under attention DP, so a step holding one 8,000-token
    prompt chunk beside 64 decodes takes at least as long as that chunk alone on one chip; the
    same tokens as eight 1,000-token chunks spread evenly."""
    m, chip = get_model("qwen3-235b-a22b"), get_chip("h200-sxm")
    adp = StepModel(m, chip, deployment(chips=8, precision="fp8", attn_dp=True), Efficiency())
    one_chunk = batch_shape(m, [8000] + [1] * 64, [8000] + [3000] * 64)
    eight_chunks = batch_shape(m, [1000] * 8 + [1] * 64, [8000] * 8 + [3000] * 64)
    alone = batch_shape(m, [8000], [8000])
    assert adp.step(one_chunk).latency_s >= adp.step(alone).latency_s
    assert adp.step(one_chunk).compute_s > 2 * adp.step(eight_chunks).compute_s
    spreads = adp.dp_spreads(one_chunk)
    assert spreads[0] == pytest.approx(8 * 8000 / one_chunk.new_tokens)
