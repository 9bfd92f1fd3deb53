"""Layouts serving engines can run: TP divides the heads on GPUs, one layer per stage at least,
expert parallelism only where there are experts to spread."""

from tokenfleet.catalog import get_chip, get_model
from tokenfleet.perf.auto import layout
from tokenfleet.perf.deployment import Deployment, parallelism_problem, tp_sizes


def test_a_gpu_layout_narrows_tp_until_it_divides_the_heads() -> None:
    # gb200's NVLink domain holds 12 chips, but 64 heads split only 1, 2, 4, 8 ... ways
    dep = layout(get_model("llama-3.1-70b"), get_chip("gb200"), 12)
    assert (dep.tp, dep.pp) == (4, 3)


def test_tpus_and_sram_systems_are_not_held_to_the_gpu_engines_head_rule() -> None:
    m = get_model("llama-3.1-70b")
    assert parallelism_problem(m, get_chip("tpu-v6e"), Deployment(chips=12, tp=12, pp=1)) is None
    assert parallelism_problem(m, get_chip("groq-lpu"), Deployment(chips=800, tp=8, pp=100)) is None  # stages < layers


def test_gpu_problems_name_what_the_model_has() -> None:
    m, h100 = get_model("llama-3.1-70b"), get_chip("h100-sxm")
    assert "64 attention heads" in str(parallelism_problem(m, h100, Deployment(chips=3, tp=3, pp=1)))
    assert "80 layers" in str(parallelism_problem(m, h100, Deployment(chips=88, tp=1, pp=88)))
    assert parallelism_problem(m, h100, Deployment(chips=16, tp=16, pp=1)) is None  # 8 KV heads, replicated twice
    assert tp_sizes(m, h100, 8) == [1, 2, 4, 8]


def test_expert_parallelism_needs_experts_it_can_divide() -> None:
    tpu = get_chip("tpu-v6e")
    assert "is dense" in str(parallelism_problem(get_model("llama-3.1-8b"), tpu, Deployment(chips=2, tp=2, pp=1, ep=2)))
    assert "8 experts" in str(parallelism_problem(get_model("mixtral-8x7b"), tpu, Deployment(chips=6, tp=6, pp=1, ep=3)))
    assert layout(get_model("mixtral-8x7b"), get_chip("h100-sxm"), 8, ep=8).ep == 8


def test_attention_dp_is_for_moe_models_and_splits_sequences_not_heads() -> None:
    h100 = get_chip("h100-sxm")
    dense = Deployment(chips=8, tp=8, pp=1, attn_dp=True)
    assert "mixture-of-experts" in (parallelism_problem(get_model("llama-3.1-70b"), h100, dense) or "")
    # Qwen3-235B has 4 KV heads: TP 8 replicates them; attention DP needs no head rule at all
    assert parallelism_problem(get_model("qwen3-235b-a22b"), h100, Deployment(chips=6, tp=6, pp=1)) is not None
    assert parallelism_problem(get_model("qwen3-235b-a22b"), h100, Deployment(chips=6, tp=6, pp=1, attn_dp=True)) is None
    assert "attention-DP" in Deployment(chips=8, tp=8, pp=1, attn_dp=True).describe()
