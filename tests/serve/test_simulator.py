"""The simulator's invariants: conservation, causality, capacity, determinism, and agreement
with the cost model on a static batch."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import deployment
from tokenfleet.catalog import get_chip, get_model
from tokenfleet.errors import TokenfleetError
from tokenfleet.perf import Workload, predict_static
from tokenfleet.perf.step import STATIC_POWER_FRACTION
from tokenfleet.serve import SchedulerConfig, SpecDecode, simulate
from tokenfleet.workload import Trace, load_trace, synthetic

MODEL, CHIP = get_model("llama-3.1-8b"), get_chip("h100-sxm")


def trace_of(arrivals: list[float], inputs: list[int], outputs: list[int], prefix: tuple[tuple[int, ...], ...] | None = None) -> Trace:
    return Trace("t", np.array(arrivals, dtype=float), np.array(inputs), np.array(outputs), prefix)


def run(trace: Trace, **kw: object) -> tuple[dict[str, object], list[dict[str, float]]]:
    buf = io.StringIO()
    cfg = kw.pop("cfg", SchedulerConfig())
    res = simulate(MODEL, CHIP, deployment(), trace, cfg, requests_out=buf, **kw)  # type: ignore[arg-type]
    return res.summary, [json.loads(line) for line in buf.getvalue().splitlines()]


requests = st.lists(st.tuples(st.floats(0, 5), st.integers(1, 3000), st.integers(1, 300)), min_size=1, max_size=40)


@settings(max_examples=25, deadline=None)
@given(reqs=requests, budget=st.sampled_from([64, 512, 8192]), seqs=st.sampled_from([1, 4, 64]), chunked=st.booleans())
def test_every_request_completes_once_with_its_tokens_and_after_it_arrived(reqs: list[tuple[float, int, int]], budget: int, seqs: int,
                                                                           chunked: bool) -> None:
    reqs.sort()
    trace = trace_of(*map(list, zip(*reqs, strict=True)))  # type: ignore[arg-type]
    summary, records = run(trace, cfg=SchedulerConfig(max_num_batched_tokens=budget, max_num_seqs=seqs, chunked_prefill=chunked))
    assert summary["completed"] == len(reqs) == len({r["id"] for r in records})
    assert sorted((r["input_tokens"], r["output_tokens"]) for r in records) == sorted((i, o) for _, i, o in reqs)
    for r in records:
        assert r["arrival_s"] <= r["first_token_s"] <= r["finish_s"]


def test_kv_cache_never_exceeds_capacity_and_preemption_recovers() -> None:
    """A cache for ~3 long requests and 12 arriving at once: preemptions, yet all finish."""
    summary, _ = run(trace_of([0.0] * 12, [2000] * 12, [400] * 12), kv_blocks=3 * 2200 // 16)
    assert summary["completed"] == 12 and summary["preemptions"] > 0
    assert 0.9 < summary["peak_kv_occupancy"] <= 1.0


def test_a_hybrid_models_sequences_each_hold_their_linear_attention_state_in_the_cache() -> None:
    """Qwen3-Next's state (39.5 MB, bf16) costs each running sequence ~1,600 tokens of cache room
    on top of its context, so a cache for 7 bare contexts holds only 2 running sequences."""
    model, dep = get_model("qwen3-next-80b-a3b"), deployment(chips=2, tp=2)
    state_tokens = model.state_bytes(2.0) / model.kv_bytes_per_token(2.0)
    assert 1500 < state_tokens < 1700
    blocks = 7 * 1016 // 16  # seven contexts of 1,000 + one block, were there no state
    res = simulate(model, get_chip("h200-sxm"), dep, trace_of([0.0] * 6, [1000] * 6, [50] * 6), kv_blocks=blocks)
    assert res.summary["completed"] == 6
    held = res.summary["peak_kv_occupancy"] * blocks * 16
    assert held <= blocks * 16 and held >= 2 * (1000 + state_tokens)  # two sequences with their state fit ...
    assert held < 3 * (1000 + state_tokens)  # ... three do not


@settings(max_examples=20, deadline=None)
@given(reqs=requests, blocks=st.integers(210, 400), pp=st.sampled_from([1, 2]))
def test_reserving_the_whole_output_at_admission_never_preempts(reqs: list[tuple[float, int, int]], blocks: int, pp: int) -> None:
    """TensorRT-LLM's GUARANTEED_NO_EVICT: a tight cache admits fewer requests but evicts none."""
    reqs.sort()
    trace = trace_of(*map(list, zip(*reqs, strict=True)))  # type: ignore[arg-type]
    cfg = SchedulerConfig(max_num_batched_tokens=512, max_num_seqs=16, reserve_output_kv=True)
    s = simulate(MODEL, CHIP, deployment(chips=pp, pp=pp), trace, cfg, kv_blocks=blocks).summary
    assert s["completed"] == len(reqs) and s["preemptions"] == 0
    assert s["peak_kv_occupancy"] <= 1.0


@settings(max_examples=20, deadline=None)
@given(reqs=requests, blocks=st.integers(210, 400), budget=st.sampled_from([256, 512]))
def test_pipeline_micro_batches_sharing_a_tight_cache_all_finish(reqs: list[tuple[float, int, int]], blocks: int, budget: int) -> None:
    """Four micro-batch engines share one small KV cache: a lone prompt that cannot grow while
    its siblings hold the cache yields it instead of preempting and re-admitting itself forever."""
    reqs.sort()
    trace = trace_of(*map(list, zip(*reqs, strict=True)))  # type: ignore[arg-type]
    cfg = SchedulerConfig(max_num_batched_tokens=budget, max_num_seqs=16)
    res = simulate(MODEL, CHIP, deployment(chips=4, pp=4), trace, cfg, kv_blocks=blocks)
    assert res.summary["completed"] == len(reqs)
    assert res.summary["peak_kv_occupancy"] <= 1.0


def test_micro_batches_whose_long_prompts_fit_the_cache_only_one_at_a_time_all_finish() -> None:
    """Four micro-batch engines, a 2,600-2,900-token prompt each, a shared cache of 3,440 tokens:
    the newest request in the whole cache is preempted, so the oldest always progresses (each
    engine preempting its own newest let them evict themselves in turn forever)."""
    trace = trace_of([0.0, 0.01, 0.02, 0.03], [2800, 2700, 2600, 2900], [50] * 4)
    cfg = SchedulerConfig(max_num_batched_tokens=512, max_num_seqs=16)
    s = simulate(MODEL, CHIP, deployment(chips=4, pp=4), trace, cfg, kv_blocks=215).summary
    assert s["completed"] == 4 and s["preemptions"] > 0


def test_a_request_with_resident_kv_only_decodes() -> None:
    """Moved from a prefill pool: no prompt to compute, and the same decode steps as at home."""
    home, _ = run(trace_of([0.0], [3000], [200]))
    res = simulate(MODEL, CHIP, deployment(), trace_of([0.0], [3000], [200]), kv_resident=np.array([True]))
    assert res.summary["mean_ttft_ms"] == 0.0
    assert res.summary["mean_e2el_ms"] == pytest.approx(home["mean_e2el_ms"] - home["mean_ttft_ms"], rel=0.01)
    with pytest.raises(TokenfleetError, match="output_tokens >= 2"):
        simulate(MODEL, CHIP, deployment(), trace_of([0.0], [3000], [1]), kv_resident=np.array([True]))


@pytest.mark.parametrize("pp", [1, 4])
def test_energy_lies_between_idle_and_full_power_over_the_run(pp: int) -> None:
    """Micro-batch engines of a pipeline share its power: never more than chips x TDP x time."""
    dep = deployment(chips=4, pp=pp)
    s = simulate(MODEL, CHIP, dep, synthetic(400, 20.0, load_trace("azure-conv"), seed=1)).summary
    full_j = dep.chips * CHIP.tdp_w * s["duration_s"]
    assert full_j * STATIC_POWER_FRACTION <= s["energy_j"] <= full_j


def test_same_seed_gives_byte_identical_json() -> None:
    lengths = load_trace("azure-conv")
    a = run(synthetic(300, 5.0, lengths, seed=7))[0]
    b = run(synthetic(300, 5.0, lengths, seed=7))[0]
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_static_batch_matches_the_cost_model() -> None:
    """B identical requests at t=0 with an unlimited token budget is exactly `predict`."""
    b, i, o = 8, 1000, 200
    summary, _ = run(trace_of([0.0] * b, [i] * b, [o] * b), cfg=SchedulerConfig(max_num_batched_tokens=b * i))
    pred = predict_static(MODEL, CHIP, deployment(), Workload(b, i, o))
    assert summary["mean_ttft_ms"] / 1e3 == pytest.approx(pred.ttft_s, rel=0.01)  # histogram bins: 0.64%
    assert summary["mean_tpot_ms"] / 1e3 == pytest.approx(pred.tpot_s, rel=1e-6)


@pytest.mark.parametrize(("k", "a"), [(3, 0.8), (1, 0.5), (6, 0.9)])
def test_a_speculative_static_batch_matches_the_cost_model(k: int, a: float) -> None:
    """Both count ceil((O-1)/e) steps of k+1 verified tokens, each costed once, drafting on top."""
    b, i, o = 4, 800, 300
    spec = SpecDecode(draft_tokens=k, acceptance_rate=a)
    summary, _ = run(trace_of([0.0] * b, [i] * b, [o] * b), cfg=SchedulerConfig(max_num_batched_tokens=b * i, spec=spec))
    pred = predict_static(MODEL, CHIP, deployment(), Workload(b, i, o), spec=spec)
    plain = predict_static(MODEL, CHIP, deployment(), Workload(b, i, o))
    assert summary["mean_tpot_ms"] / 1e3 == pytest.approx(pred.tpot_s, rel=1e-6)
    assert summary["mean_ttft_ms"] / 1e3 == pytest.approx(pred.ttft_s, rel=0.01)  # the prompt step drafts nothing
    assert pred.tpot_s < plain.tpot_s and pred.ttft_s == plain.ttft_s
    assert pred.breakdown_decode_s["total_s"] == pytest.approx(pred.tpot_s * (o - 1), rel=1e-9)


def test_without_chunked_prefill_prompts_fill_whole_prefill_only_steps_up_to_the_budget() -> None:
    """vLLM V0: four 1,000-token prompts under a 2,048-token budget take two identical
    prefill-only steps (the first two requests' decoding waits for the second), where chunked
    prefill mixes the second pair's prompts into the first pair's first decode step."""
    trace = trace_of([0.0] * 4, [1000] * 4, [50] * 4)
    _, v0 = run(trace, cfg=SchedulerConfig(max_num_batched_tokens=2048, chunked_prefill=False))
    ttft = sorted(r["first_token_s"] for r in v0)
    assert ttft[0] == ttft[1] and ttft[2] == ttft[3] == pytest.approx(2 * ttft[0], rel=1e-12)
    _, mixed = run(trace, cfg=SchedulerConfig(max_num_batched_tokens=2048))
    assert sorted(r["first_token_s"] for r in mixed)[2] > 2 * ttft[0]  # its second step also decodes two


def test_without_chunked_prefill_running_requests_wait_out_a_newcomers_whole_prompt() -> None:
    """A decoding request pays a newcomer's 6,000-token prefill as one long gap between two of its
    tokens (p99 ITL), and the newcomer's first token comes after at most one decode step's wait."""
    trace = trace_of([0.0, 0.05], [100, 6000], [40, 10])
    prefill_s = predict_static(MODEL, CHIP, deployment(), Workload(1, 6000, 1)).ttft_s
    summary, records = run(trace, cfg=SchedulerConfig(chunked_prefill=False))
    alone, _ = run(trace_of([0.0], [100], [40]), cfg=SchedulerConfig(chunked_prefill=False))
    first, newcomer = sorted(records, key=lambda r: r["id"])
    assert prefill_s <= newcomer["first_token_s"] - newcomer["arrival_s"] < prefill_s + alone["mean_tpot_ms"] / 1e3 * 1.5
    assert summary["p99_itl_ms"] / 1e3 > prefill_s  # one gap of the first request holds the whole prefill
    assert first["finish_s"] - alone["mean_e2el_ms"] / 1e3 > prefill_s


def test_littles_law_on_a_long_steady_run() -> None:
    trace = synthetic(3000, 4.0, load_trace("azure-conv"), seed=3)
    summary, records = run(trace)
    arrive = np.array([r["arrival_s"] for r in records])
    finish = np.array([r["finish_s"] for r in records])
    t0, t1 = np.quantile(arrive, 0.2), np.quantile(arrive, 0.8)  # steady middle of the run
    probes = np.linspace(t0, t1, 2000)
    in_system = np.array([((arrive <= t) & (finish > t)).sum() for t in probes]).mean()
    window = (arrive >= t0) & (arrive < t1)
    lam, w = window.sum() / (t1 - t0), (finish - arrive)[window].mean()
    assert in_system == pytest.approx(lam * w, rel=0.05)


def test_prefix_caching_skips_prefill_of_resident_blocks() -> None:
    shared = tuple(range(8))
    trace = trace_of([0.0, 5.0], [4096, 4096], [10, 10], (shared, shared))
    summary, records = run(trace)
    assert records[1]["prefix_hit_tokens"] == 4095 and summary["prefix_hit_rate"] == 0.5
    assert summary["prefix_hit_token_share"] == 4095 / 8192  # of all prompt tokens, as vLLM counts hits
    assert records[1]["first_token_s"] - records[1]["arrival_s"] < records[0]["first_token_s"]


def test_a_hybrid_reuses_a_prefix_only_in_whole_prefill_steps_as_vllm_align_mode_checkpoints_it() -> None:
    """Qwen3-Next's linear layers resume only from a checkpointed state (one per prefill step end):
    with 1,024-token steps, 2.5 shared blocks of 512 give 1,024 reusable tokens; with 8,192-token
    steps, a 4,096-token prompt's prefix is never reusable (vLLM issue #51250: 0% hits)."""
    model, dep, chip = get_model("qwen3-next-80b-a3b"), deployment(chips=2, tp=2), get_chip("h200-sxm")
    trace = trace_of([0.0, 5.0], [1280, 1280], [10, 10], ((1, 2, 3), (1, 2, 3)))
    for budget, reused in ((1024, 1024), (8192, 0)):
        buf = io.StringIO()
        simulate(model, chip, dep, trace, SchedulerConfig(max_num_batched_tokens=budget), requests_out=buf)
        second = [json.loads(line) for line in buf.getvalue().splitlines()][1]
        assert second["prefix_hit_tokens"] == reused


def test_speculative_decoding_speeds_up_decode() -> None:
    trace = trace_of([0.0], [500], [400])
    plain, _ = run(trace)
    spec, _ = run(trace, cfg=SchedulerConfig(spec=SpecDecode(draft_tokens=3, acceptance_rate=0.8)))
    assert spec["mean_e2el_ms"] < plain["mean_e2el_ms"]


@pytest.mark.parametrize("router", ["round-robin", "least-outstanding-tokens", "prefix-affinity"])
def test_routers_spread_work_over_replicas(router: str) -> None:
    summary, _ = run(synthetic(200, 20.0, load_trace("azure-code"), seed=1), replicas=3, router=router)
    assert summary["completed"] == 200 and summary["chips"] == 3


def test_prefix_affinity_partitions_prefixes_too_many_for_one_cache() -> None:
    """64 shared 16k-token prefixes do not fit one H100's cache beside Llama-3.1-8B, but a quarter
    of them does: routing each group to its own engine keeps them resident, spreading requests
    blindly evicts them. (Block ids are structured, g x 10^6 + j: the router must still spread
    them over all engines.)"""
    from tokenfleet.workload.traces import shared_prefixes

    n = 1500
    base = synthetic(n, 6.0, Trace("l", np.zeros(1), np.array([20_000]), np.array([100])), seed=2)
    trace = Trace("shared", base.arrival_s, base.input_tokens, base.output_tokens,
                  shared_prefixes(base.input_tokens, 16_384, 64, np.random.default_rng(0)))
    spread, _ = run(trace, replicas=4, router="round-robin")
    affine, records = run(trace, replicas=4, router="prefix-affinity")
    assert affine["prefix_hit_token_share"] > spread["prefix_hit_token_share"] + 0.2
    assert affine["mean_ttft_ms"] < spread["mean_ttft_ms"] and affine["completed"] == n
    assert affine["utilisation"] > 0.5  # all four engines work, not one


def test_bad_inputs() -> None:
    with pytest.raises(TokenfleetError, match="unknown router 'fastest'; choose one of"):
        run(trace_of([0.0], [10], [10]), router="fastest")
    with pytest.raises(TokenfleetError, match="unknown SLO metric 'p99_latency_ms'"):
        run(trace_of([0.0], [10], [10]), slo={"p99_latency_ms": "<=5"})
    with pytest.raises(TokenfleetError, match="must look like"):
        run(trace_of([0.0], [10], [10]), slo={"p99_ttft_ms": "fast"})
    with pytest.raises(TokenfleetError, match="needs .* tokens of KV cache"):
        run(trace_of([0.0], [100_000], [10]), kv_blocks=64)
    with pytest.raises(TokenfleetError, match="every request of trace 't' exceeds llama-3.1-8b's 131,072-token context"):
        run(trace_of([0.0], [10_000_000], [10]))


def test_a_request_longer_than_the_context_window_is_refused_and_counted_as_vllm_does() -> None:
    # 131,072 tokens is llama-3.1-8b's context: the second request's prompt + output is one over
    trace = trace_of([0.0, 0.1, 0.2], [1000, 131_000, 500], [10, 73, 10])
    summary, records = run(trace, slo={"p99_ttft_ms": "<=60000"})
    assert (summary["completed"], summary["failed"]) == (2, 1)
    assert sorted(r["id"] for r in records) == [0, 1, 2]  # every request is accounted for once
    assert [r for r in records if "failed" in r][0]["id"] == 1
    assert summary["goodput_fraction"] == pytest.approx(2 / 3)  # a refused request is not good


def test_a_pipeline_stage_takes_micro_batches_in_turn() -> None:
    """Two stages: a step alone takes its latency; one behind a heavy step leaves the last stage
    after it; steady identical steps from both micro-batches keep two in flight."""
    from tokenfleet.serve.replica import Pipeline

    alone = Pipeline(2)
    assert alone.book(0.0, 4.0) == 4.0
    heavy_first = Pipeline(2)
    heavy_first.book(0.0, 8.0)  # stages busy 0-4 and 4-8
    assert heavy_first.book(0.0, 2.0) == pytest.approx(8.0 + 1.0)  # waits at each stage, leaves after the heavy one
    steady = Pipeline(2)
    done = [steady.book(ready, 4.0) + ready for ready in (0.0, 0.0, 4.0, 6.0, 8.0, 10.0)]
    assert done == pytest.approx([4.0, 6.0, 8.0, 10.0, 12.0, 14.0])  # a step every 2 s: two micro-batches in flight


def test_a_decode_in_a_pipeline_waits_for_a_siblings_long_prompt() -> None:
    """Round robin puts a short request and a 30,000-token prompt on the two micro-batches of a
    PP2 replica: the short one's decode steps queue behind each prompt chunk at every stage, so it
    finishes only after the prompt's first token (independent engines would finish it first)."""
    trace = trace_of([0.0, 0.0], [100, 30_000], [20, 2])
    buf = io.StringIO()
    simulate(MODEL, CHIP, deployment(chips=2, pp=2), trace, SchedulerConfig(), requests_out=buf)
    short, long = sorted((json.loads(line) for line in buf.getvalue().splitlines()), key=lambda r: r["id"])
    assert short["finish_s"] > long["first_token_s"]


@pytest.mark.parametrize(("per_micro_batch", "first_round"), [(False, 4), (True, 8)])
def test_the_sequence_cap_applies_to_the_replica_or_to_each_micro_batch(per_micro_batch: bool, first_round: int) -> None:
    """vLLM's max_num_seqs caps a pipelined replica; TensorRT-LLM's max_batch_size caps each of
    its micro-batches: 8 requests at once on PP2 with a cap of 4 start 4 or all 8 at once."""
    trace = trace_of([0.0] * 8, [200] * 8, [100] * 8)
    buf = io.StringIO()
    cfg = SchedulerConfig(max_num_seqs=4, seqs_per_micro_batch=per_micro_batch)
    simulate(MODEL, CHIP, deployment(chips=2, pp=2), trace, cfg, requests_out=buf)
    records = [json.loads(line) for line in buf.getvalue().splitlines()]
    first_finish = min(r["finish_s"] for r in records)
    assert sum(r["first_token_s"] < first_finish for r in records) == first_round


def test_gpu_pipelines_share_their_stages_and_sram_pipelines_stream() -> None:
    """A PP replica on GPUs books its micro-batches on shared stages; an SRAM system's pipeline
    keeps independent micro-batch engines (we assume it streams activations between stages)."""
    from tokenfleet.perf.auto import auto_deployment
    from tokenfleet.serve.metrics import Metrics
    from tokenfleet.serve.simulate import build_engines

    gpu = build_engines(MODEL, CHIP, deployment(chips=2, pp=2), SchedulerConfig(), 1, Metrics(None, None))
    assert len(gpu) == 2 and gpu[0].pipeline is not None and gpu[0].pipeline is gpu[1].pipeline
    groq = get_chip("groq-lpu")
    dep = auto_deployment(MODEL, groq)
    assert dep.pp > 1
    sram = build_engines(MODEL, groq, dep, SchedulerConfig(), 1, Metrics(None, None))
    assert all(e.pipeline is None for e in sram)


def test_attention_dp_applies_the_caps_to_each_rank_and_a_prompt_chunk_to_one() -> None:
    """With attention DP each of a stage's ranks schedules its own sequences, as vLLM's
    data-parallel engines and TensorRT-LLM's attention-DP ranks do: on 8 chips a cap of 4
    sequences and 512 tokens starts 32 requests at once, and no prompt computes more than one
    rank's 512 tokens in a step."""
    qwen, h200 = get_model("qwen3-235b-a22b"), get_chip("h200-sxm")
    trace = trace_of([0.0] * 40, [2000] * 40, [50] * 40)
    buf = io.StringIO()
    cfg = SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=512)
    simulate(qwen, h200, deployment(chips=8, precision="fp8", attn_dp=True), trace, cfg, requests_out=buf)
    records = [json.loads(line) for line in buf.getvalue().splitlines()]
    first_finish = min(r["finish_s"] for r in records)
    assert sum(r["first_token_s"] < first_finish for r in records) == 32
    # 2,000-token prompts in chunks of at most 512: the first token after four steps
    steps_to_first = min(r["first_token_s"] for r in records)
    one_chunk = simulate(qwen, h200, deployment(chips=8, precision="fp8", attn_dp=True), trace_of([0.0], [512], [1]), cfg).summary
    assert steps_to_first > 3 * one_chunk["mean_ttft_ms"] / 1e3


def test_under_attention_dp_a_request_must_fit_one_ranks_share_of_the_cache() -> None:
    """A sequence's KV cache lives whole on one chip under attention DP: with 16,000 tokens of
    cache over 8 ranks, a 3,000-token request fits the replica but no rank."""
    qwen, h200 = get_model("qwen3-235b-a22b"), get_chip("h200-sxm")
    trace = trace_of([0.0], [2900], [100])
    simulate(qwen, h200, deployment(chips=8, precision="fp8"), trace, kv_blocks=1000)  # tensor parallel: fits
    with pytest.raises(TokenfleetError, match="one attention-DP rank holds 2,000"):
        simulate(qwen, h200, deployment(chips=8, precision="fp8", attn_dp=True), trace, kv_blocks=1000)


def test_an_engine_that_sizes_its_cache_from_free_memory_runs_a_nearly_full_gpu_at_a_larger_batch() -> None:
    # Llama-3.1-70B in FP8 on one H100 leaves ~2.5 GB of cache at vLLM's 0.9 of the device, ~9 GB
    # at TensorRT-LLM's 0.95 of what weights and runtime leave: a saturated run batches more
    model = get_model("llama-3.1-70b")
    dep = deployment(precision="fp8")
    trace = trace_of([0.0] * 120, [1000] * 120, [200] * 120)
    vllm, trtllm = (simulate(model, CHIP, dep, trace, SchedulerConfig(**kw)).summary  # type: ignore[arg-type]
                    for kw in ({}, {"kv_cache_free_gpu_mem_fraction": 0.95}))
    assert vllm["completed"] == trtllm["completed"] == 120
    assert trtllm["output_throughput"] > 1.5 * vllm["output_throughput"]
