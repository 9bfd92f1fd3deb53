import json
import math
from pathlib import Path

import pytest

from tokenfleet.catalog import all_models, get_model, parse_config
from tokenfleet.errors import TokenfleetError


@pytest.mark.parametrize("name", all_models())
def test_parameter_counts_match_the_published_figures(name: str) -> None:
    m = get_model(name)
    pub = m.published
    tolerance = lambda figure: max(0.01 * figure, float(pub.get("rounded_to", 0)) / 2)  # noqa: E731
    table = m.vocab_size * m.hidden_size
    excluded = {"input_embedding": table, "embeddings": table * (1 if m.tied_embeddings else 2)}
    active = m.active_params - sum(n for key, n in excluded.items() if pub.get(f"active_excludes_{key}"))
    assert abs(m.total_params - float(pub["total"])) <= tolerance(float(pub["total"])), m.total_params
    assert abs(active - float(pub["active"])) <= tolerance(float(pub["active"])), active


@pytest.mark.parametrize(
    ("name", "total_b", "active_b"),
    [("llama-3.1-70b", 70.6, 70.6), ("deepseek-v3", 671, None), ("mixtral-8x7b", 46.7, 12.9), ("gpt-oss-120b", 116.8, None)],
)
def test_headline_sizes(name: str, total_b: float, active_b: float | None) -> None:
    m = get_model(name)
    assert m.total_params / 1e9 == pytest.approx(total_b, rel=0.01)
    if active_b:
        assert m.active_params / 1e9 == pytest.approx(active_b, rel=0.01)


def test_gqa_kv_bytes_per_token() -> None:
    # Llama-3.1-70B: 80 layers x (K and V) x 8 KV heads x 128 dims x 2 bytes = 327,680 bytes
    assert get_model("llama-3.1-70b").kv_bytes_per_token(2.0) == 80 * 2 * 8 * 128 * 2


def test_mla_caches_the_latent_not_per_head_kv() -> None:
    # DeepSeek-V3: 61 layers x (kv_lora_rank 512 + rope dim 64) x 2 bytes = 70,272 bytes
    m = get_model("deepseek-v3")
    assert m.is_mla
    assert m.kv_bytes_per_token(2.0) == 61 * (512 + 64) * 2


def test_sliding_window_layers_stop_growing() -> None:
    m = get_model("gpt-oss-120b")  # half the layers see only the last 128 tokens
    per_layer = m.kv_elems_per_token_layer * 2
    assert m.kv_bytes(10_000, 2.0) == 18 * 10_000 * per_layer + 18 * 128 * per_layer


def test_moe_layout_dense_first_layers_and_interleaving() -> None:
    assert get_model("deepseek-v3").num_moe_layers == 58  # first_k_dense_replace = 3 of 61
    assert get_model("llama-4-maverick").num_moe_layers == 24  # every second layer of 48
    assert get_model("mixtral-8x7b").num_moe_layers == 32


def test_lookup_by_hf_id_alias_and_case() -> None:
    assert get_model("meta-llama/Llama-3.1-70B").name == "llama-3.1-70b"
    assert get_model("Meta-Llama-3-8B").name == "llama-3-8b"


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(TokenfleetError, match="did you mean 'llama-3.1-70b'"):
        get_model("llama-3.1-70")


def test_text_config_nesting_and_explicit_head_dim() -> None:
    cfg = {"text_config": {"hidden_size": 1024, "num_hidden_layers": 2, "num_attention_heads": 8,
                           "num_key_value_heads": 2, "head_dim": 256, "intermediate_size": 4096, "vocab_size": 1000}}
    m = parse_config(cfg, "toy")
    assert m.qk_head_dim == 256  # not 1024 / 8
    assert m.kv_elems_per_token_layer == 2 * 2 * 256


def test_user_config_file(tmp_path: Path) -> None:
    path = tmp_path / "my-model" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"hidden_size": 512, "num_hidden_layers": 4, "num_attention_heads": 8, "intermediate_size": 2048, "vocab_size": 32000}))
    assert get_model(str(path)).name == "my-model"
    assert get_model(str(path)).context_window_tokens == math.inf  # no max_position_embeddings: no limit enforced


@pytest.mark.parametrize(
    ("text", "message"),
    [("{not json", "not valid JSON"), ('{"hidden_size": 512}', "num_hidden_layers"), ("[1, 2]", "JSON object"),
     ('{"hidden_size": 512, "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 3, "intermediate_size": 2048, '
      '"vocab_size": 32000}', r"num_attention_heads \(8\) must be a multiple of num_key_value_heads \(3\)"),
     ('{"hidden_size": 512, "num_hidden_layers": 4, "num_attention_heads": 8, "intermediate_size": 2048, "vocab_size": 32000, '
      '"num_local_experts": 8}', "needs 'num_experts_per_tok' between 1 and its 8 experts")],
)
def test_malformed_config_gets_one_clear_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(TokenfleetError, match=message):
        get_model(str(path))


HYBRID = {"hidden_size": 2048, "num_hidden_layers": 8, "num_attention_heads": 16, "num_key_value_heads": 2,
          "head_dim": 256, "intermediate_size": 5120, "vocab_size": 151936, "model_type": "qwen3_next",
          "full_attention_interval": 4, "linear_num_key_heads": 16, "linear_num_value_heads": 32,
          "linear_key_head_dim": 128, "linear_value_head_dim": 128, "linear_conv_kernel_dim": 4}


def test_a_gated_deltanet_hybrid_caches_kv_only_in_its_attention_layers() -> None:
    """Qwen3-Next's layout: three Gated DeltaNet layers, then one gated softmax-attention layer."""
    m = parse_config(HYBRID, "hybrid")
    assert (m.num_linear_layers, m.num_attention_layers) == (6, 2)
    assert m.kv_bytes_per_token(2.0) == 2 * (2 * 2 * 256) * 2.0  # two attention layers, K and V of 2 heads
    assert m.kv_bytes(1000, 2.0) == 1000 * m.kv_bytes_per_token(2.0)
    state = 32 * 128 * 128 + (2 * 16 * 128 + 32 * 128) * 3  # per layer: 32 heads x 128 x 128, conv tail
    assert m.state_bytes(2.0) == 6 * state * 2.0  # fixed, whatever the context
    same_as_listed = parse_config({**HYBRID, "layer_types": ["linear_attention"] * 3 + ["full_attention"] + ["linear_attention"] * 3 + ["full_attention"]}, "h")
    assert same_as_listed.layer_groups == m.layer_groups
    ungated = parse_config({**HYBRID, "attn_output_gate": False}, "h")
    assert m.total_params - ungated.total_params == 2 * 2048 * 16 * 256  # the gate doubles q_proj in 2 layers


def test_a_config_with_no_attention_layer_at_all_is_refused() -> None:
    with pytest.raises(TokenfleetError, match="every layer is linear attention"):
        parse_config({**HYBRID, "layer_types": ["linear_attention"] * 8}, "all-linear")


def test_a_hybrid_config_missing_a_linear_attention_field_names_it(tmp_path: Path) -> None:
    cfg = {k: v for k, v in HYBRID.items() if k != "linear_num_value_heads"}
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"text_config": cfg}))
    with pytest.raises(TokenfleetError, match="need field 'linear_num_value_heads'"):
        get_model(str(path))


@pytest.mark.parametrize("extra", [{"model_type": "jamba", "mamba_d_state": 16}, {"layer_types": ["mamba", "attention"] * 2}])
def test_state_space_configs_are_refused_not_misread(tmp_path: Path, extra: dict[str, object]) -> None:
    cfg = {"hidden_size": 2048, "num_hidden_layers": 4, "num_attention_heads": 16, "num_key_value_heads": 2,
           "head_dim": 256, "intermediate_size": 5120, "vocab_size": 151936, **extra}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(TokenfleetError, match="state-space layers .* not modelled yet"):
        get_model(str(path))
