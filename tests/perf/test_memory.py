"""How much KV cache a chip holds beside the weights, by each serving engine's rule."""

from hypothesis import given
from hypothesis import strategies as st

from tokenfleet.catalog import get_chip, get_model
from tokenfleet.perf.deployment import Deployment
from tokenfleet.perf.memory import KvBudget, plan_memory, runtime_bytes_per_chip
from tokenfleet.serve.config import SchedulerConfig

LLAMA_70B, H100 = get_model("llama-3.1-70b"), get_chip("h100-sxm")
ONE_H100_FP8 = Deployment(chips=1, tp=1, pp=1, weight_precision="fp8", kv_precision="fp8", act_precision="bf16")


def test_tensorrt_llms_share_of_free_memory_leaves_a_nearly_full_gpu_more_cache_than_vllms_share_of_the_device() -> None:
    vllm = plan_memory(LLAMA_70B, H100, ONE_H100_FP8, budget=SchedulerConfig().kv_budget())
    trtllm = plan_memory(LLAMA_70B, H100, ONE_H100_FP8, budget=SchedulerConfig(kv_cache_free_gpu_mem_fraction=0.95).kv_budget())
    # 72.7 GB of FP8 weights (16-bit head) on an 85.5 GB H100: vLLM keeps 10% of the device back,
    # TensorRT-LLM 5% of what is left
    assert 1e9 < vllm.kv_capacity_bytes_per_chip < 4e9
    assert 8e9 < trtllm.kv_capacity_bytes_per_chip < 11e9


def test_a_static_batch_fit_keeps_the_device_share_and_reserves_no_step() -> None:
    plain = plan_memory(LLAMA_70B, H100, ONE_H100_FP8)
    assert plain.kv_capacity_bytes_per_chip == H100.hbm_bytes * 0.9 - plain.weight_bytes_per_chip
    assert runtime_bytes_per_chip(LLAMA_70B, ONE_H100_FP8, KvBudget()) == 0


def test_a_larger_step_reserves_more_runtime_memory_and_leaves_less_cache() -> None:
    small, large = (SchedulerConfig(max_num_batched_tokens=t).kv_budget() for t in (2048, 16384))
    assert runtime_bytes_per_chip(LLAMA_70B, ONE_H100_FP8, large) > runtime_bytes_per_chip(LLAMA_70B, ONE_H100_FP8, small)
    assert (plan_memory(LLAMA_70B, H100, ONE_H100_FP8, budget=large).kv_capacity_tokens
            < plan_memory(LLAMA_70B, H100, ONE_H100_FP8, budget=small).kv_capacity_tokens)


def test_attention_dp_gathers_every_ranks_tokens_into_the_expert_buffers() -> None:
    qwen = get_model("qwen3-235b-a22b")
    tp = Deployment(chips=8, tp=8, pp=1, ep=8, weight_precision="fp8", kv_precision="fp8", act_precision="bf16")
    adp = tp.model_copy(update={"attn_dp": True})
    budget = SchedulerConfig(max_num_batched_tokens=8192).kv_budget()
    assert runtime_bytes_per_chip(qwen, adp, budget) > 4 * runtime_bytes_per_chip(qwen, tp, budget)


def test_a_model_that_only_fits_without_the_runtime_says_it_does_not_fit() -> None:
    # 70B in BF16 on two H100s: 141 GB of weights beside 154 GB at vLLM's 0.9, but not beside the
    # activations of a 64k-token step as well
    two = Deployment(chips=2, tp=2, pp=1)
    assert plan_memory(LLAMA_70B, H100, two).fits
    huge_step = SchedulerConfig(max_num_batched_tokens=65536, max_num_seqs=1024).kv_budget()
    assert not plan_memory(LLAMA_70B, H100, two, budget=huge_step).fits


@given(fraction=st.floats(0.05, 1.0), tokens=st.integers(1, 32768), of_free=st.booleans())
def test_a_larger_share_never_holds_less_cache(fraction: float, tokens: int, of_free: bool) -> None:
    lower = KvBudget(fraction * 0.9, of_free, tokens, 256)
    higher = KvBudget(fraction, of_free, tokens, 256)
    a, b = (plan_memory(LLAMA_70B, H100, ONE_H100_FP8, budget=x) for x in (lower, higher))
    assert b.kv_capacity_tokens >= a.kv_capacity_tokens
    assert b.kv_capacity_bytes_per_chip <= H100.hbm_bytes - b.weight_bytes_per_chip
